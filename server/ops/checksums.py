"""What a restore check compares: row counts and checksums of the newest chunks of the
readings and their rollups, and the row counts of the registry, taken at a moment a
restore can reach exactly.

The moment is a named restore point (``pg_create_restore_point``), written while the
compared tables are locked against writes (SHARE mode: readers go on, ingest waits), so
the database at the restore point holds exactly the rows that were summed: every write
committed before the lock is in the sums and in the WAL before the point, and none
commits between the sums and the point. Restoring the backup to that point and summing
the same ranges again must give the same numbers; anything else is a restore that lost
or changed data.

Checksums are order-free: the sum of the first 64 bits of each row's md5, so the scan
order (and compression of a chunk) does not matter, while a lost, added or altered row
changes the sum. Rows are rendered in UTC with exact floats, the same on any server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from tidefield.server.db import one_row, scalar

# Hypertables whose newest chunks are summed, and small tables counted in full. Locking
# is in this order, the order ingest writes them in (readings, then its rollups).
SUMMED = ("readings", "readings_5m", "readings_1h")
COUNTED = ("metrics", "sites", "devices", "series")
LOCK_TIMEOUT = "60s"  # ingest waits this long at most, once per backup


@dataclass(frozen=True, slots=True)
class ChunkSum:
    """Rows of ``table`` with ``start <= column < end`` (a chunk's range): how many, and
    their checksum (a decimal string: the sum outgrows 64 bits)."""

    table: str
    column: str
    start: str  # ISO 8601, UTC
    end: str
    rows: int
    checksum: str


@dataclass(frozen=True, slots=True)
class Mark:
    """The sums taken at ``restore_point`` in ``database``."""

    restore_point: str
    database: str
    taken_at: str
    chunks: tuple[ChunkSum, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Mark:
        raw = json.loads(text)
        return cls(raw["restore_point"], raw["database"], raw["taken_at"],
                   tuple(ChunkSum(**chunk) for chunk in raw["chunks"]), raw["counts"])

    @property
    def rows(self) -> int:
        return sum(chunk.rows for chunk in self.chunks)


def _session_for_sums(conn: psycopg.Connection) -> None:
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    conn.execute("SET LOCAL extra_float_digits = 1")  # shortest exact text of a float


def newest_chunks(conn: psycopg.Connection, per_table: int) -> list[tuple[str, str, datetime,
                                                                           datetime]]:
    """(table, time column, start, end) of the ``per_table`` newest chunks of each summed
    hypertable that exists."""
    rows = conn.execute(
        "SELECT hypertable_name, primary_dimension, range_start, range_end FROM ("
        "  SELECT hypertable_name, primary_dimension, range_start, range_end, row_number() "
        "  OVER (PARTITION BY hypertable_name ORDER BY range_start DESC) AS newest "
        "  FROM timescaledb_information.chunks WHERE hypertable_schema = 'public' "
        "  AND hypertable_name = ANY(%s)) c "
        "WHERE newest <= %s ORDER BY hypertable_name, range_start",
        (list(SUMMED), per_table)).fetchall()
    return [(table, column, start, end) for table, column, start, end in rows]


def chunk_sum(conn: psycopg.Connection, table: str, column: str, start: datetime | str,
              end: datetime | str) -> ChunkSum:
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint"
        "::numeric), 0)::text FROM {table} t WHERE {column} >= %s AND {column} < %s"
    ).format(table=sql.Identifier(table), column=sql.Identifier(column))
    rows, checksum = one_row(conn.execute(query, (start, end)))
    as_text = [v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v
               for v in (start, end)]
    return ChunkSum(table, column, as_text[0], as_text[1], rows, checksum)


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {table: scalar(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table)))) for table in COUNTED}


def take_mark(conn: psycopg.Connection, restore_point: str, per_table: int) -> Mark:
    """Lock, sum, write the restore point, commit (which lets writers go on)."""
    database = conn.info.dbname
    with conn.transaction():
        _session_for_sums(conn)
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(
            sql.SQL(", ").join(map(sql.Identifier, (*SUMMED, *COUNTED)))))
        chunks = tuple(chunk_sum(conn, *chunk) for chunk in newest_chunks(conn, per_table))
        counts = _counts(conn)
        conn.execute("SELECT pg_create_restore_point(%s)", (restore_point,))
        taken_at = scalar(conn.execute("SELECT now()"))
    return Mark(restore_point, database, taken_at.astimezone(UTC).isoformat(), chunks, counts)


def differences(conn: psycopg.Connection, mark: Mark) -> list[str]:
    """What the database ``conn`` holds differently from ``mark`` (empty: the same)."""
    found = []
    with conn.transaction():
        _session_for_sums(conn)
        for expected in mark.chunks:
            got = chunk_sum(conn, expected.table, expected.column, expected.start,
                            expected.end)
            if (got.rows, got.checksum) != (expected.rows, expected.checksum):
                found.append(f"{expected.table} [{expected.start}, {expected.end}): "
                             f"{got.rows} rows (checksum {got.checksum}), expected "
                             f"{expected.rows} (checksum {expected.checksum})")
        for table, rows in _counts(conn).items():
            if rows != mark.counts.get(table):
                found.append(f"{table}: {rows} rows, expected {mark.counts.get(table)}")
    return found
