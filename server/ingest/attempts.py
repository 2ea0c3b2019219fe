"""The poison quarantine's counter: how many times ingest started on a message that the
broker delivered again (it was in flight, unacknowledged, when the process died).

Only redelivered messages are counted. Every start is counted (``attempts``): one
started once before goes on in a window with the others, so that a restart stays fast.
One started more often goes alone, and those starts alone are counted too (``alone``):
the worker first writes and acknowledges everything before it, then counts the start
and commits the count (so the crash it may cause cannot undo it), then processes it. A
crash alone is that message's own; the poison limit applies to those. Once the message
is committed its counts are forgotten. A database that is
unreachable or out of space (SQLSTATE class 53) raises before the count commits, so it
never counts against a message.
"""

from __future__ import annotations

import psycopg

from tidefield.server.db import AutocommitConnection, scalar


class Attempts:
    """The counter, on an autocommit connection of its own (each call commits)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = AutocommitConnection(url)

    def _connection(self) -> psycopg.Connection:
        return self._db.get()

    def close(self) -> None:
        self._db.close()

    def begin(self, messages: list[tuple[bytes, str]]) -> dict[bytes, int]:
        """Count one more start of each (fingerprint, topic); how many there have been,
        this one too."""
        if not messages:
            return {}
        rows = self._connection().execute(
            "INSERT INTO ingest_attempts (fingerprint, topic, attempts) "
            "SELECT f, t, 1 FROM unnest(%b::bytea[], %b::text[]) AS m(f, t) "
            "ON CONFLICT (fingerprint) DO UPDATE "
            "SET attempts = ingest_attempts.attempts + 1, last_at = now() "
            "RETURNING fingerprint, attempts",
            ([fp for fp, _ in messages], [topic for _, topic in messages])).fetchall()
        return {bytes(fp): int(n) for fp, n in rows}

    def begin_alone(self, fingerprint: bytes) -> int:
        """Count one more start of this message alone; how many there have been."""
        return int(scalar(self._connection().execute(
            "UPDATE ingest_attempts SET alone = alone + 1, last_at = now() "
            "WHERE fingerprint = %s RETURNING alone", (fingerprint,))))

    def forget(self, fingerprints: list[bytes]) -> None:
        self._connection().execute(
            "DELETE FROM ingest_attempts WHERE fingerprint = ANY(%b::bytea[])",
            (fingerprints,))
