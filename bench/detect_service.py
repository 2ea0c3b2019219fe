"""The detector service's catch-up rate from the database, against reading the same rows
alone, in the same run.

    .venv/bin/python bench/detect_service.py [--hours 24]

``--hours`` of the whole firmware-sim fleet (250 sites, 2,793 series, about 110,000
readings an hour, faults and events injected) are written to a private PostgreSQL; then

1. baseline: the rows read back hour by hour the way the service reads them (one round
   trip per window, each column packed by the server), and nothing else: the limit;
2. ``DetectorService`` from an empty checkpoint to the last reading, as
   ``tidefield detect run --since ... --until ...`` runs it: reading, scoring, rules,
   alerts, anomalies, and a checkpoint committed with every step.

`tidefield up` writes 7 days (about 19 million readings) before the detector starts, so
the catch-up time there is about 19 M / the rate below. The database shares the
machine's two cores with the detector.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import private_database
from tidefield.protocol.units import HOUR_MS
from tidefield.server.backfill import backfill
from tidefield.server.detect.service import DetectorService
from tidefield.server.detect.store import read_window
from tidefield.server.settings import DetectorSettings
from tidefield.sim.events import InjectionPlan
from tidefield.sim.fleet import Fleet

START_MS = 1_751_328_000_000  # 2025-07-01T00:00Z
CONF = {"shared_buffers": "512MB", "max_wal_size": "4GB", "synchronous_commit": "off"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    end = START_MS + int(args.hours * HOUR_MS)
    with private_database(CONF) as (_, url):
        print(f"writing {args.hours:g} h of the fleet to a private database ...", flush=True)
        backfill(url, Fleet(seed=1, plan=InjectionPlan()), START_MS, end)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE readings")
            ids = [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id")]
            began = time.perf_counter()
            n_raw = 0
            for t in range(START_MS, end, HOUR_MS):
                n_raw += len(read_window(conn, ids, t, t + HOUR_MS))
            raw_s = time.perf_counter() - began
        service = DetectorService(DetectorSettings(database_url=url), since_ms=START_MS,
                                  until_ms=end)
        began = time.perf_counter()
        service.run(threading.Event())
        service_s = time.perf_counter() - began
    scored = service.readings_scored
    print(f"reading the rows alone   {n_raw / raw_s / 1e3:8.0f} k readings/s  "
          f"({n_raw:,} in {raw_s:.1f} s)")
    print(f"DetectorService          {scored / service_s / 1e3:8.0f} k readings/s  "
          f"({scored:,} in {service_s:.1f} s, of which scoring, rules and alerts "
          f"{service.busy_s:.1f} s); ratio to reading alone "
          f"{(scored / service_s) / (n_raw / raw_s):.2f}")
    print(f"7 days of the fleet (19 M readings) would take about "
          f"{19e6 / (scored / service_s):.0f} s")


if __name__ == "__main__":
    main()
