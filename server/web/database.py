"""The app's connection pool, and whether the database answers (for ``/healthz``)."""

from __future__ import annotations

from psycopg_pool import ConnectionPool


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
