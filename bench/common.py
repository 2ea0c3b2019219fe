"""Shared pieces of the benchmarks: private services and a results table."""

from __future__ import annotations

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
