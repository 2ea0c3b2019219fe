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
