"""API latency on a realistic table: 250 sites, 30 days, about 50 million readings.

    .venv/bin/python bench/api.py [--days 30] [--requests 200]

Loads the readings by binary COPY (and the rollups from them, as ingest would have kept
them), starts `tidefield api`, then times, over HTTP with a read key:
  1. one site's latest values;
  2. one site's last 24 h of one series at 5-minute buckets (from the rollups);
  3. 30 days of one series at 1-hour buckets (from the rollups);
and the same questions answered from raw rows (the baseline), printing p50, p99 and the
ratio raw / API for each. Then the API's throughput: requests/s of the first question
from one client, and from ``--clients`` clients at once (threads, each its own
connection), with the ratio to one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_database, table
from tidefield.server.db import binary
from tidefield.server.embedded import free_port
from tidefield.server.security.api_keys import Scope, create_key

MIN = 60_000


def load(url: str, days: int) -> int:
    """One reading per series per minute (sonde, climate) or per its interval."""
    with psycopg.connect(url) as conn:
        series = conn.execute("SELECT s.id, d.interval_s FROM series s "
                              "JOIN devices d ON d.id = s.device_id ORDER BY s.id").fetchall()
        end = int(time.time() * 1000) // MIN * MIN
        start = end - days * 86_400_000
        rng = np.random.default_rng(3)
        total = 0
        step = 86_400_000  # a day at a time: one chunk per transaction
        for day_start in range(start, end, step):
            parts_s, parts_t = [], []
            for sid, interval_s in series:
                times = np.arange(day_start, day_start + step, interval_s * 1000, dtype=np.int64)
                parts_s.append(np.full(len(times), sid, np.int32))
                parts_t.append(times)
            sid = np.concatenate(parts_s)
            tms = np.concatenate(parts_t)
            val = rng.normal(20, 5, len(sid))
            with conn.cursor() as cur, cur.copy("COPY readings FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(binary.encode([(sid, "int4"), (binary.ms_to_pg_us(tms), "timestamptz"),
                                        (val, "float8")]))
            conn.commit()
            total += len(sid)
            print(f"\rloaded {total:,} readings", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        for name, width in (("readings_5m", "5 minutes"), ("readings_1h", "1 hour")):
            conn.execute(f"""INSERT INTO {name} SELECT series_id, time_bucket('{width}', time),
                             count(*), sum(value), min(value), max(value), last(value, time),
                             max(time) FROM readings GROUP BY 1, 2""")
            conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    return total


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def throughput(url: str, key: str, clients: int, seconds: float) -> float:
    """Requests/s that ``clients`` threads, each with its own connection, get answered."""
    import threading

    done = [0] * clients
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(headers={"X-API-Key": key}, timeout=60) as http:
            while not stop.is_set():
                http.get(url).raise_for_status()
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - began)


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--api-workers", type=int, default=1, help="API processes")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long each throughput run lasts")
    args = parser.parse_args()
    with private_database() as (_, url):
        total = load(url, args.days)
        with psycopg.connect(url) as conn:
            key = create_key(conn, "bench", [Scope.READ])
            site, sid = conn.execute(
                "SELECT d.site_id, s.id FROM series s JOIN devices d ON d.id = s.device_id "
                "WHERE s.metric = 'dissolved_oxygen' ORDER BY s.id LIMIT 1").fetchone()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api", "--port",
                                 str(port)], env={**os.environ, "TIDEFIELD_DATABASE_URL": url,
                                      "TIDEFIELD_API_WORKERS": str(args.api_workers)})
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            client = httpx.Client(headers={"X-API-Key": key}, timeout=60)
            for _ in range(100):
                try:
                    client.get(f"{base}/sites/{site}")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            now = time.time()
            day = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400)),
                   "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}
            month = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                            time.gmtime(now - args.days * 86400)),
                     "end": day["end"]}
            api = {
                "site latest": lambda: client.get(f"{base}/sites/{site}/latest").raise_for_status(),
                "24 h at 5 min": lambda: client.get(f"{base}/series/{sid}/readings",
                                                    params={**day, "bucket": "5m"}
                                                    ).raise_for_status(),
                f"{args.days} d at 1 h": lambda: client.get(
                    f"{base}/series/{sid}/readings", params={**month, "bucket": "1h"}
                ).raise_for_status(),
            }
            raw_conn = psycopg.connect(url, autocommit=True)
            raw = {
                "site latest": lambda: raw_conn.execute(
                    "SELECT DISTINCT ON (r.series_id) r.series_id, r.time, r.value "
                    "FROM readings r JOIN series s ON s.id = r.series_id JOIN devices d "
                    "ON d.id = s.device_id WHERE d.site_id = %s "
                    "ORDER BY r.series_id, r.time DESC", (site,)).fetchall(),
                "24 h at 5 min": lambda: raw_conn.execute(
                    "SELECT time_bucket('5 minutes', time), count(*), avg(value), min(value), "
                    "max(value), last(value, time) FROM readings WHERE series_id = %s AND "
                    "time >= now() - INTERVAL '1 day' GROUP BY 1 ORDER BY 1", (sid,)).fetchall(),
                f"{args.days} d at 1 h": lambda: raw_conn.execute(
                    "SELECT time_bucket('1 hour', time), count(*), avg(value), min(value), "
                    "max(value), last(value, time) FROM readings WHERE series_id = %s AND "
                    "time >= now() - %s * INTERVAL '1 day' GROUP BY 1 ORDER BY 1",
                    (sid, args.days)).fetchall(),
            }
            rows = []
            for name, fn in api.items():
                timed(fn, 5)  # warm up
                a = timed(fn, args.requests)
                timed(raw[name], 3)
                r = timed(raw[name], max(10, args.requests // 10))
                raw_p50 = statistics.median(r)
                rows.append((name, f"{pct(a, 50):.1f}", f"{pct(a, 99):.1f}",
                             f"{raw_p50:.1f}", f"{raw_p50 / pct(a, 50):.1f}"))
            single = throughput(f"{base}/sites/{site}/latest", key, 1, args.seconds)
            many = throughput(f"{base}/sites/{site}/latest", key, args.clients, args.seconds)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"{total:,} readings, {args.days} days, 250 sites")
    print(table(rows, ("query", "API p50 ms", "API p99 ms", "raw rows p50 ms",
                       "raw / API")))
    print(f"site latest, requests/s, {args.api_workers} API processes: 1 client "
          f"{single:,.0f}; {args.clients} clients "
          f"{many:,.0f} (ratio {many / single:.2f}); {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
