"""The database: schema migrations, the registry tables, retention, binary COPY."""

from __future__ import annotations

from typing import Any

import psycopg

Row = tuple[Any, ...]  # a row as psycopg returns it (tuple rows)


def scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The one value of a query that always answers one row (an aggregate, SHOW ...)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query answered no row")
    return row[0]


def one_row(cursor: psycopg.Cursor[Any]) -> Row:
    """The one row of a query that always answers one (an aggregate, a function call)."""
    row = cursor.fetchone()
    if row is None:
        raise LookupError("the query answered no row")
    return row


class AutocommitConnection:
    """One autocommit connection, opened on first use and again after it was lost, so a
    long-lived helper (ingest's device directory, its attempt counter) survives a database
    restart without a reconnect loop of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
