"""One row of a query that always returns one (an aggregate, a function call): what the
operations read from PostgreSQL's own views and functions."""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.abc import Params

Query = LiteralString | sql.Composed


def one(conn: psycopg.Connection, query: Query, params: Params | None = None) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    if row is None:  # an aggregate or a SELECT of functions always has its row
        raise psycopg.DataError(f"no row from {query!r}")
    return row


def scalar(conn: psycopg.Connection, query: Query, params: Params | None = None) -> Any:
    return one(conn, query, params)[0]
