"""Retention and compression, run by a scheduler inside the ingest service.

Hypertables lose whole chunks with ``drop_chunks`` (cheap: a file unlink, no vacuum);
plain tables lose old rows with DELETE. Native compression of older ``readings`` chunks is
turned on only when ``timescaledb.license`` is ``timescale``: the Apache-2 edition that
Debian builds refuses it, and everything works without it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from tidefield.server.db import scalar

if TYPE_CHECKING:
    from tidefield.server.settings import RetentionGroup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    readings_days: int = 400
    rollup_5m_days: int = 800
    rollup_1h_days: int = 0  # 0: keep forever
    rejects_days: int = 90
    batches_days: int = 30

    @classmethod
    def from_settings(cls, settings: RetentionGroup) -> RetentionPolicy:
        return cls(settings.retention_readings_days, settings.retention_rollup_5m_days,
                   settings.retention_rollup_1h_days, settings.retention_rejects_days,
                   settings.retention_batches_days)


def apply_retention(conn: psycopg.Connection, policy: RetentionPolicy) -> dict[str, int]:
    """Drop what is older than the policy; return what went, per table."""
    dropped: dict[str, int] = {}
    for table, days in (("readings", policy.readings_days),
                        ("readings_5m", policy.rollup_5m_days),
                        ("readings_1h", policy.rollup_1h_days)):
        if days:
            rows = conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s * INTERVAL "
                                "'1 day')", (table, days)).fetchall()
            dropped[table] = len(rows)
    for table, column, days in (("ingest_rejects", "received_at", policy.rejects_days),
                                ("ingest_batches", "received_at", policy.batches_days)):
        if days:
            dropped[table] = conn.execute(
                f"DELETE FROM {table} WHERE {column} < now() - %s * INTERVAL '1 day'",
                (days,)).rowcount
    conn.commit()
    return dropped


def compression_available(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn.execute("SHOW timescaledb.license")) == "timescale")


def enable_compression(conn: psycopg.Connection, after_days: int) -> bool:
    """Compress readings chunks older than ``after_days`` when the license allows."""
    if not compression_available(conn):
        log.info("TimescaleDB Apache-2 edition: native compression is not available")
        return False
    conn.execute("ALTER TABLE readings SET (timescaledb.compress, "
                 "timescaledb.compress_segmentby = 'series_id', "
                 "timescaledb.compress_orderby = 'time DESC')")
    conn.execute("SELECT add_compression_policy('readings', %s * INTERVAL '1 day', "
                 "if_not_exists => true)", (after_days,))
    conn.commit()
    return True


class RetentionScheduler:
    """Applies the policy every ``interval_s`` in a daemon thread until stopped."""

    def __init__(self, url: str, policy: RetentionPolicy, interval_s: float) -> None:
        self.url, self.policy, self.interval_s = url, policy, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url) as conn:
                    dropped = apply_retention(conn, self.policy)
                if any(dropped.values()):
                    log.info("retention applied", extra=dropped)
            except psycopg.Error as exc:
                log.warning("retention failed; will try again", extra={"error": str(exc)})
            self._stop.wait(self.interval_s)
