"""Shared pieces of the benchmarks: private services and a results table."""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tidefield.protocol.registry import load_sites
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import MosquittoBroker, PostgresCluster


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


@contextmanager
def private_database(conf: dict[str, str] | None = None):
    """A tuned private cluster with the schema and the registry; yields (cluster, url)."""
    cluster = PostgresCluster(scratch("tidefield-bench-pg-"), conf=conf)
    cluster.start()
    try:
        url = cluster.create_database("bench")
        migrate(url)
        with psycopg.connect(url) as conn:
            load_registry(conn, load_sites())
        yield cluster, url
    finally:
        cluster.destroy()


@contextmanager
def private_broker():
    with MosquittoBroker(scratch("tidefield-bench-mqtt-")) as broker:
        yield broker


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (one that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]
