"""From an alert opened in the database to the webhook receiving it: latency at a steady
rate, and the notifier's CPU per notification, against a one-at-a-time baseline measured
in the same run.

    .venv/bin/python bench/notify.py [--rate 100] [--seconds 20]

A producer opens ``--rate`` alerts a second (ten per transaction, each with its 'opened'
event, as the detector writes them) in a private PostgreSQL; ``tidefield notify run`` in a
subprocess plans and sends them to a signed-webhook receiver in this process, which
stamps each arrival. Latency: arrival minus the producer's commit. CPU: the notifier
process's user+system time (/proc) over the run, per notification received.

1. baseline: the same notifier with ``notify_batch=1`` and ``notify_concurrency=1``: one
   alert planned per transaction, one message in flight (what a per-alert planner with
   serial sends does);
2. the notifier as shipped (set-based plan of up to 500 events, concurrent sends).

Both share the machine's cores with PostgreSQL, the producer and the receiver.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_database, table
from tidefield.server.notify import store
from tidefield.server.notify.routing import ContactIn, GroupIn, RouteIn
from tidefield.server.notify.sink import WebhookSink

PER_TRANSACTION = 10


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(url: str, label: str, rate: float, seconds: float, extra: dict[str, str],
            run_index: int) -> tuple[Any, ...]:
    arrived: dict[int, float] = {}
    committed: dict[int, float] = {}
    sink = WebhookSink(secrets.token_urlsafe(24),
                       lambda data: arrived.setdefault(data["alert_id"], time.time())).start()
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM notify_contacts")
        conn.execute("DELETE FROM notify_groups")
        store.save_contact(conn, 1, ContactIn(name="bench", url=sink.url))
        store.save_group(conn, 1, GroupIn(name="bench", members=["bench"]))
        store.save_route(conn, 1, RouteIn(name="bench", group="bench"))
        conn.execute("DELETE FROM notify_cursor")
    env = {**os.environ, "TIDEFIELD_DATABASE_URL": url, "TIDEFIELD_NOTIFY_POLL_S": "0.1",
           "TIDEFIELD_LOG_LEVEL": "WARNING", **extra}
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "notify", "run"], env=env,
                            start_new_session=True)
    try:
        # started: its cursor set (alerts opened before that are history, not news)
        deadline = time.monotonic() + 120
        with psycopg.connect(url, autocommit=True) as conn:
            while not conn.execute("SELECT count(*) FROM notify_cursor").fetchone()[0]:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the notifier did not start")
                time.sleep(0.1)
        cpu_before = cpu_seconds(proc.pid)
        with psycopg.connect(url, autocommit=True) as conn:
            sites = [r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id")]
            total = int(rate * seconds)
            interval = PER_TRANSACTION / rate
            start = time.monotonic()
            for n in range(0, total, PER_TRANSACTION):
                target = start + (n // PER_TRANSACTION) * interval
                time.sleep(max(0.0, target - time.monotonic()))
                with conn.transaction():
                    ids = [conn.execute(
                        """WITH a AS (INSERT INTO alerts (site_id, rule, category, severity,
                                          message, opened_at, updated_at)
                                      VALUES (%s, %s, 'event', 'critical', 'bench', now(),
                                              now()) RETURNING id)
                           INSERT INTO alert_events (alert_id, action, actor)
                           SELECT id, 'opened', 'detector' FROM a RETURNING alert_id""",
                        (sites[(n + i) % len(sites)], f"bench_{run_index}_{n + i}")
                    ).fetchone()[0] for i in range(PER_TRANSACTION)]
                now = time.time()
                for alert_id in ids:
                    committed[alert_id] = now
            produced_s = time.monotonic() - start
        deadline = time.monotonic() + 120
        while len(arrived) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.terminate()
        proc.wait(30)
        sink.stop()
    latencies = sorted(arrived[a] - committed[a] for a in committed if a in arrived)
    lost = total - len(latencies)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies \
            else float("nan")

    return (label, f"{total / produced_s:.0f}/s", len(latencies), lost,
            f"{pct(0.5) * 1000:.0f}", f"{pct(0.99) * 1000:.0f}", f"{latencies[-1] * 1000:.0f}"
            if latencies else "-", f"{cpu / max(1, len(latencies)) * 1000:.2f}", pct(0.99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="alerts opened a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with private_database() as (_cluster, url):
        rows = [one_run(url, "baseline: 1 alert/plan, 1 in flight", args.rate, args.seconds,
                        {"TIDEFIELD_NOTIFY_BATCH": "1", "TIDEFIELD_NOTIFY_CONCURRENCY": "1"},
                        0),
                one_run(url, "notifier (set-based plan, concurrent)", args.rate, args.seconds,
                        {}, 1)]
    print(table([r[:-1] for r in rows], ("run", "offered", "received", "lost", "p50 ms",
                                         "p99 ms", "max ms", "CPU ms/notification")))
    baseline, ours = rows[0][-1], rows[1][-1]
    print(f"\np99 latency: {ours * 1000:.0f} ms (target < 2000 ms); "
          f"baseline/notifier p99 ratio: {baseline / ours:.1f}x")


if __name__ == "__main__":
    main()
