"""The app's connection pools, and whether the database answers (for ``/healthz``).

Reads may go to a replica (``TIDEFIELD_DATABASE_READ_URL``, a streaming standby):
``ReadPool`` hands its connections to the read-only routes while it answers, and the
primary's while it does not, warning once when it goes away and once when it is back,
and counting every read it sent to the primary instead. A replica found down is tried
again every ``REPLICA_RETRY_S``, so an outage costs one connect timeout per interval,
not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from prometheus_client import Counter, Gauge
from psycopg_pool import ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

REPLICA_RETRY_S = 5.0
REPLICA_CONNECT_TIMEOUT_S = 2.0

READ_FALLBACKS = Counter("tidefield_api_read_fallbacks_total",
                         "Reads sent to the primary because the replica did not answer")
READ_FROM_REPLICA = Gauge("tidefield_api_read_replica_in_use",
                          "1 while reads go to the replica, 0 while they go to the primary")


def open_pool(database_url: str, max_size: int) -> ConnectionPool:
    """Autocommit connections: a route that writes commits its own transaction."""
    return ConnectionPool(database_url, min_size=1, max_size=max_size, open=True,
                          kwargs={"autocommit": True})


def database_problem(pool: ConnectionPool, timeout_s: float = 2.0) -> str | None:
    """None when ``SELECT 1`` answers within ``timeout_s``, else what went wrong."""
    try:
        with pool.connection(timeout=timeout_s) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure to answer is "unreachable" here
        return f"database unreachable: {type(exc).__name__}"
    return None


def failure_reason(exc: psycopg.Error) -> str:
    """What a failed write says about the database, for /healthz: a full disk, other
    exhausted resources, or the database gone."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    state = getattr(exc, "sqlstate", None) or ""
    if state == "53100":
        return f"database disk full: {first}"
    if state.startswith("53"):
        return f"database out of resources ({state}): {first}"
    return f"database unavailable: {first}"


class ReadPool:
    """Connections for read-only routes: the replica's, else the primary's."""

    def __init__(self, primary: ConnectionPool, replica_url: str | None,
                 max_size: int) -> None:
        self.primary = primary
        self.replica = None if replica_url is None else ConnectionPool(
            replica_url, min_size=0, max_size=max_size, open=True,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": int(REPLICA_CONNECT_TIMEOUT_S)})
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        READ_FROM_REPLICA.set(1.0 if self.replica is not None else 0.0)

    @property
    def replica_down(self) -> bool:
        return self._down_since is not None

    @contextmanager
    def connection(self) -> Iterator[tuple[psycopg.Connection, str]]:
        """A connection and where it goes: ``replica`` or ``primary``."""
        conn = self._replica_connection()
        if conn is None or self.replica is None:
            if self.replica is not None:
                READ_FALLBACKS.inc()
            with self.primary.connection() as primary_conn:
                yield primary_conn, "primary"
            return
        try:
            yield conn, "replica"
        finally:
            self.replica.putconn(conn)

    def _replica_connection(self) -> psycopg.Connection | None:
        if self.replica is None or time.monotonic() < self._retry_at:
            return None
        try:
            conn = self.replica.getconn(timeout=REPLICA_CONNECT_TIMEOUT_S)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self._went_down(exc)
            return None
        self._came_back()
        return conn

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + REPLICA_RETRY_S
            if self._down_since is None:
                self._down_since = time.monotonic()
                READ_FROM_REPLICA.set(0.0)
                log.warning("the read replica does not answer (%s); reading from the primary "
                            "until it does", type(exc).__name__)

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                log.warning("the read replica answers again after %.0f s; reading from it",
                            time.monotonic() - self._down_since)
                self._down_since = None
                READ_FROM_REPLICA.set(1.0)

    def problem(self) -> str | None:
        """For /healthz: why reads go to the primary (None: they go where configured)."""
        if self._down_since is None:
            return None
        return (f"read replica down for {time.monotonic() - self._down_since:.0f} s: reads "
                f"go to the primary")

    def close(self) -> None:
        if self.replica is not None:
            self.replica.close()
