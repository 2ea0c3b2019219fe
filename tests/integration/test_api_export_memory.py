"""An export of a million readings streams with flat memory in the API process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from tidefield.server.db import binary
from tidefield.server.embedded import free_port
from tidefield.server.security.api_keys import Scope, create_key

ROWS = 1_000_000


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_of_a_million_readings_streams_in_flat_memory(db_url, fmt):
    with psycopg.connect(db_url) as conn:
        site = "ag-001"
        ids = [r[0] for r in conn.execute(
            "SELECT s.id FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = %s ORDER BY s.id", (site,))]
        n = np.arange(ROWS)
        sid = np.array(ids, dtype=np.int32)[n % len(ids)]
        start = int(time.time() * 1000) - 200 * 86_400_000
        tms = start + (n // len(ids)) * 60_000
        with conn.cursor() as cur, cur.copy("COPY readings FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(binary.encode([(sid, "int4"), (binary.ms_to_pg_us(tms), "timestamptz"),
                                      (np.random.default_rng(0).random(ROWS), "float8")]))
        conn.commit()
        key = create_key(conn, "lab", [Scope.READ])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api", "--port",
                             str(port)], env={**os.environ, "TIDEFIELD_DATABASE_URL": db_url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # warm up (imports, pool, first query) before taking the baseline
        httpx.get(f"{base}/api/v1/export", headers={"X-API-Key": key},
                  params={"site": site, "format": fmt, "start": "2026-01-01T00:00:00Z",
                          "end": "2026-01-01T00:01:00Z"})
        baseline = _peak_rss_mb(proc.pid)
        received = 0
        params = {"site": site, "format": fmt,
                  "start": datetime.fromtimestamp(start / 1000 - 86_400, UTC).isoformat(),
                  "end": datetime.now(UTC).isoformat()}
        with httpx.stream("GET", f"{base}/api/v1/export", params=params, timeout=300,
                          headers={"X-API-Key": key}) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += len(chunk)
        growth = _peak_rss_mb(proc.pid) - baseline
    finally:
        proc.terminate()
        proc.wait(10)
    size_mb = received / 1e6
    print(f"{fmt}: {size_mb:.0f} MB streamed, peak RSS grew {growth:.1f} MB")
    assert size_mb > (40 if fmt == "csv" else 3)  # the whole export went through
    assert growth < 50  # ... in memory that does not grow with it (the CSV is 84 MB)
