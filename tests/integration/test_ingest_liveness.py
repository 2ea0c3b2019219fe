"""No silent death (issue 17): a worker thread that dies takes its process down, /healthz
says so (503 naming the loop) until it goes, the process is restarted and nothing is lost
or doubled; a partition whose writer is held is reported stalled by /healthz, /metrics
and `tidefield status`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import psycopg

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import load_sites
from tidefield.server.platform import STATE_FILE
from tidefield.server.status import collect, render

from ..support.processes import IngestService
from .test_ingest_service import _raw_publish

MIN = 60_000
CRASH_ONCE = Path(__file__).parent.parent / "support" / "crash_once"


def _messages(sites, per_device: int, now: int) -> list[tuple[str, bytes]]:
    out = []
    for seq in range(per_device):
        for site in sites:
            for device in site.devices:
                out.append((f"tf/v1/{site.id}/{device.id}/up", json.dumps(
                    {"v": 1, "site": site.id, "device": device.id, "seq": seq,
                     "readings": [{"m": device.template.metrics[0], "t": now - seq * MIN,
                                   "v": sum(METRICS[device.template.metrics[0]].typical) / 2}]}
                ).encode()))
    return out


def _counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM ingest_batches), (SELECT count(*) FROM readings), "
            "(SELECT count(*) FROM ingest_rejects)").fetchone()


def test_a_dying_worker_thread_exits_the_process_and_nothing_is_lost(db_url, own_broker,
                                                                     tmp_path):
    sites = [s for s in load_sites() if s.kind == "cage_farm"][:3]
    crash_device = sites[0].devices[0].id
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(CRASH_ONCE),
                                                        os.environ.get("PYTHONPATH")])),
           "TEST_CRASH_ONCE_MARKER": str(tmp_path / "crashed"),
           "TEST_CRASH_ONCE_DEVICE": crash_device}
    service = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=2,
                            extra_env=env)
    seen: list[tuple[int, dict]] = []
    polling = threading.Event()

    def poll() -> None:
        while not polling.is_set():
            try:
                answer = httpx.get(f"{service.url}/healthz", timeout=2)
                seen.append((answer.status_code, answer.json()))
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.02)

    try:
        service.wait_healthy()
        before = set(service.worker_pids())
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        messages = _messages(sites, 10, int(time.time() * 1000))
        _raw_publish(own_broker.url, messages)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _counts(db_url)[0] < len(messages):
            time.sleep(0.5)
        time.sleep(2)  # anything doubled would show now
        polling.set()
        poller.join(5)
        after = set(service.worker_pids())
        log = service.log_path.read_text()
    finally:
        service.stop()
    assert (tmp_path / "crashed").exists()
    assert _counts(db_url) == (len(messages), len(messages), 0), log[-3000:]
    assert len(before - after) == 1 and len(after) == 2, (before, after)  # one restarted
    dying = [body for code, body in seen if code == 503]
    assert dying, "no 503 while the worker was going"
    problems = " ".join(p for body in dying for p in body["problems"])
    assert "loop ingest-mqtt-prepare died: Crash: injected" in problems
    assert "thread ingest-mqtt-prepare died" in log


def test_a_held_writer_is_reported_stalled(db_url, own_broker, tmp_path):
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    service = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1,
                            extra_env={"TIDEFIELD_INGEST_STALL_AFTER_S": "3"})
    data_dir = tmp_path / "up"
    data_dir.mkdir()
    (data_dir / STATE_FILE).write_text(json.dumps({  # as `tidefield up` would write it
        "supervisor_pid": os.getpid(), "database_url": db_url,
        "children": {"ingest": {"state": "running", "pid": service.proc.pid,
                                "url": service.url}}}))
    holder = psycopg.connect(db_url)
    try:
        service.wait_healthy()
        holder.execute("LOCK TABLE ingest_batches IN EXCLUSIVE MODE")  # writers wait, readers not
        started = time.monotonic()
        _raw_publish(own_broker.url, _messages([site], 1, int(time.time() * 1000)))
        answer = httpx.get(f"{service.url}/healthz", timeout=5)
        while answer.status_code == 200 and time.monotonic() - started < 30:
            time.sleep(0.2)
            answer = httpx.get(f"{service.url}/healthz", timeout=5)
        took = time.monotonic() - started
        time.sleep(1)  # the gauges are refreshed every half second
        metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
        report = collect(data_dir)
        holder.rollback()  # the writer goes on
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and \
                httpx.get(f"{service.url}/healthz", timeout=5).status_code != 200:
            time.sleep(0.2)
        healthy_again = httpx.get(f"{service.url}/healthz", timeout=5)
    finally:
        holder.close()
        service.stop()
    assert answer.status_code == 503 and took < 30, (answer.text, took)
    body = answer.json()
    assert body["stalled"] is True and body["oldest_uncommitted_s"] > 3
    assert any(p.startswith("partition 0 stalled") for p in body["problems"]), body
    assert 'tidefield_ingest_stalled{partition="0"} 1.0' in metrics
    assert report["ingest_stalled"] == ["0"], report
    assert "partition 0 stalled" in render(report)
    assert healthy_again.status_code == 200, healthy_again.text
    assert healthy_again.json()["stalled"] is False
