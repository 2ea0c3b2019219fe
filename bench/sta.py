"""SensorThings paging on a realistic table: keyset nextLinks against OFFSET paging.

    .venv/bin/python bench/sta.py [--days 7] [--requests 50] [--explain]

Loads every series of the 250 sites for --days (as bench/api.py does), starts
`tidefield api`, and times over HTTP with a read key:

  1. a deep page of one Datastream's Observations (page 10 of 1,000 by phenomenonTime)
     reached through @iot.nextLink, against the same page asked with $skip=9000;
  2. a deep page of all Observations (the default order, Datastream then time, 1,000
     rows after the first million) through the $skiptoken a client paging there holds,
     against the same rows by SQL OFFSET on readings (what offset paging costs, without
     even HTTP);
  3. the latest Observation of every Datastream of one Thing by $expand, against
     /api/v1/sites/{site}/latest (a whole site, the same LATERAL probes);
  4. the 100 newest Observations of the whole fleet ($orderby=phenomenonTime desc),
     against the same question in plain SQL on readings.

Prints p50 and p99 per query and the ratio baseline / SensorThings (above 1: faster).
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
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import load, pct, timed
from bench.common import private_database, table
from tidefield.server.api.sta.options import encode_skiptoken
from tidefield.server.embedded import free_port
from tidefield.server.security.api_keys import Scope, create_key

PAGE = 1000
DEEP = 10  # the page number timed (fewer when --days holds fewer pages)
FLEET_DEPTH = 1_000_000


def nth_link(client: httpx.Client, url: str, params: dict, n: int) -> str:
    """The nextLink that leads to page n (1-based), as a client paging there holds it."""
    page = client.get(url, params=params).raise_for_status().json()
    for _ in range(n - 2):
        page = client.get(page["@iot.nextLink"]).raise_for_status().json()
    return page["@iot.nextLink"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--explain", action="store_true",
                        help="log the plans of the SensorThings queries (auto_explain)")
    args = parser.parse_args()
    conf = {"shared_buffers": "512MB", "max_wal_size": "4GB"}
    if args.explain:
        conf.update({"session_preload_libraries": "auto_explain",
                     "auto_explain.log_min_duration": "20ms",
                     "auto_explain.log_analyze": "on",
                     "auto_explain.log_level": "warning"})
    with private_database(conf) as (cluster, url):
        total = load(url, args.days)
        with psycopg.connect(url) as conn:
            key = create_key(conn, "bench", [Scope.READ])
            site, device, sid = conn.execute(
                "SELECT d.site_id, d.id, s.id FROM series s JOIN devices d "
                "ON d.id = s.device_id WHERE d.interval_s = 60 ORDER BY s.id LIMIT 1"
            ).fetchone()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api", "--port",
                                 str(port)], env={**os.environ, "TIDEFIELD_DATABASE_URL": url})
        base = f"http://127.0.0.1:{port}"
        sta = f"{base}/sta/v1.1"
        rows = []
        deep = max(2, min(DEEP, args.days * 1440 // PAGE))
        try:
            client = httpx.Client(headers={"X-API-Key": key}, timeout=120)
            raw = psycopg.connect(url, autocommit=True)
            for _ in range(150):
                try:
                    client.get(f"{base}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            by_time = {"$top": str(PAGE), "$orderby": "phenomenonTime"}
            stream = f"{sta}/Datastreams({sid})/Observations"
            stream_link = nth_link(client, stream, by_time, deep)
            # the token after row `depth` is that row's sort keys (see query.py)
            depth = min(FLEET_DEPTH, total // 2)
            last = raw.execute("SELECT series_id, time FROM readings ORDER BY series_id, "
                               "time OFFSET %s LIMIT 1", (depth - 1,)).fetchone()
            fleet_link = f"{sta}/Observations?$top={PAGE}&$skiptoken=" + encode_skiptoken(
                [last[0], last[1].isoformat()])
            latest = {"$expand": "Datastreams($expand=Observations($top=1;"
                                 "$orderby=phenomenonTime desc))"}
            cases = {
                f"one Datastream, page {deep} of {PAGE}": (
                    lambda: client.get(stream_link).raise_for_status(),
                    f"$skip={(deep - 1) * PAGE} (HTTP)",
                    lambda: client.get(stream, params={
                        **by_time, "$skip": str((deep - 1) * PAGE)}).raise_for_status()),
                f"all Observations, {PAGE} after {depth:,}": (
                    lambda: client.get(fleet_link).raise_for_status(),
                    "SQL OFFSET on readings",
                    lambda: raw.execute(
                        "SELECT series_id, time, value FROM readings ORDER BY series_id, "
                        "time LIMIT %s OFFSET %s", (PAGE, depth)).fetchall()),
                "latest of each Datastream of a Thing": (
                    lambda: client.get(f"{sta}/Things('{device}')",
                                       params=latest).raise_for_status(),
                    "/api/v1 site latest",
                    lambda: client.get(f"{base}/api/v1/sites/{site}/latest"
                                       ).raise_for_status()),
                "100 newest of the fleet": (
                    lambda: client.get(f"{sta}/Observations", params={
                        "$top": "100", "$orderby": "phenomenonTime desc"}).raise_for_status(),
                    "SQL ORDER BY time DESC",
                    lambda: raw.execute("SELECT series_id, time, value FROM readings "
                                        "ORDER BY time DESC, series_id LIMIT 100").fetchall()),
            }
            for name, (fn, baseline_name, baseline) in cases.items():
                timed(fn, 3)
                ours = timed(fn, args.requests)
                timed(baseline, 2)
                theirs = timed(baseline, max(5, args.requests // 5))
                rows.append((name, f"{pct(ours, 50):.1f}", f"{pct(ours, 99):.1f}",
                             baseline_name, f"{statistics.median(theirs):.1f}",
                             f"{statistics.median(theirs) / pct(ours, 50):.1f}"))
        finally:
            proc.terminate()
            proc.wait(10)
        if args.explain:  # the cluster goes with the context: show its plans first
            print(cluster.log_file.read_text(errors="replace"), file=sys.stderr)
    print(f"{total:,} readings, {args.days} days, 250 sites")
    print(table(rows, ("query", "STA p50 ms", "STA p99 ms", "baseline", "baseline p50 ms",
                       "baseline / STA")))


if __name__ == "__main__":
    main()
