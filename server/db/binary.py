"""PostgreSQL binary COPY, built with NumPy: a whole batch becomes one bytes object
without a Python loop per row, so loading runs at the speed of the COPY itself.

Binary COPY format: a fixed header, then per row an int16 field count and, per field, an
int32 byte length followed by the value in network byte order; an int16 -1 ends it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# PostgreSQL counts timestamps in microseconds from 2000-01-01 UTC.
PG_EPOCH_MS = 946_684_800_000

_WIRE = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}


def ms_to_pg_us(time_ms: np.ndarray) -> np.ndarray:
    return (np.asarray(time_ms, dtype=np.int64) - PG_EPOCH_MS) * 1000


def pg_us_to_ms(pg_us: np.ndarray) -> np.ndarray:
    return np.asarray(pg_us, dtype=np.int64) // 1000 + PG_EPOCH_MS


def encode(columns: list[tuple[np.ndarray, str]]) -> bytes:
    """Encode equal-length columns; each is (values, pg type). Timestamps are given in
    PostgreSQL microseconds (see ms_to_pg_us). No NULLs: Tidefield's rows have none."""
    n = len(columns[0][0])
    rows = np.empty(n, dtype=_row_dtype([pgtype for _, pgtype in columns]))
    rows["count"] = len(columns)
    for i, (values, pgtype) in enumerate(columns):
        if len(values) != n:
            raise ValueError("columns differ in length")
        rows[f"len{i}"] = np.dtype(_WIRE[pgtype]).itemsize
        rows[f"val{i}"] = values
    return HEADER + rows.tobytes() + TRAILER


def _row_dtype(pgtypes: list[str]) -> np.dtype:
    fields = [("count", ">i2")]
    for i, pgtype in enumerate(pgtypes):
        fields += [(f"len{i}", ">i4"), (f"val{i}", _WIRE[pgtype])]
    return np.dtype(fields)


def row_width(pgtypes: list[str]) -> int:
    """Bytes per row: fixed, since every type here has a fixed size and no NULLs."""
    return _row_dtype(pgtypes).itemsize


def decode_rows(body: bytes, pgtypes: list[str]) -> list[np.ndarray]:
    """Rows of binary COPY output (no header, no trailer), column by column."""
    rows = np.frombuffer(body, dtype=_row_dtype(pgtypes))
    return [rows[f"val{i}"].astype(_WIRE[t].replace(">", "<")) for i, t in enumerate(pgtypes)]


def decode(data: bytes, pgtypes: list[str]) -> list[np.ndarray]:
    """The inverse of encode, for binary COPY TO output of NULL-free rows."""
    return decode_rows(data[len(HEADER):len(data) - len(TRAILER)], pgtypes)


_SEND = {"int4": "int4send", "int8": "int8send", "float8": "float8send",
         "timestamptz": "timestamptz_send"}


def fetch_columns(conn: psycopg.Connection, query: str, params: Sequence[Any] | Mapping[str, Any],
                  columns: list[tuple[str, str]]
                  ) -> list[np.ndarray]:
    """The rows of ``query`` as NumPy columns, in one round trip: the server packs each
    column into one bytea with the type's binary send function (``string_agg``), so no
    row ever becomes a Python object. (Binary COPY out arrives one message per row, which
    psycopg hands over one at a time: about ten times slower for a million rows.)

    ``columns`` names each column of ``query`` with its type (timestamps come back in
    PostgreSQL microseconds, see pg_us_to_ms). Row order is not kept: sort the arrays.
    """
    packed = ", ".join(f"string_agg({_SEND[pgtype]}(q.{name}), '')" for name, pgtype in columns)
    with conn.cursor(binary=True) as cur:
        row = cur.execute(f"SELECT {packed} FROM ({query}) AS q", params).fetchone()
    assert row is not None  # an aggregate without GROUP BY answers one row
    return [np.frombuffer(data or b"", dtype=_WIRE[pgtype]).astype(_WIRE[pgtype][1:])
            for data, (_, pgtype) in zip(row, columns, strict=True)]
