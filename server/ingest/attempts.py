"""The poison quarantine's counter: how many times ingest started on a message that the
broker delivered again (it was in flight, unacknowledged, when the process died).

Only redelivered messages are counted, one at a time, so the count is that message's
own: the worker first writes and acknowledges everything before it, then counts the
attempt and commits the count (so the crash it may cause cannot undo it), then processes
the message alone. Once it is committed the count is forgotten. A database that is
unreachable or out of space (SQLSTATE class 53) raises before the count commits, so it
never counts against a message.
"""

from __future__ import annotations

import psycopg

from tidefield.server.db import scalar


class Attempts:
    """The counter, on an autocommit connection of its own (each call commits)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def begin(self, fingerprint: bytes, topic: str) -> int:
        """Count one more start of this message; how many there have been, this one too."""
        return int(scalar(self._connection().execute(
            "INSERT INTO ingest_attempts (fingerprint, topic, attempts) VALUES (%s, %s, 1) "
            "ON CONFLICT (fingerprint) DO UPDATE "
            "SET attempts = ingest_attempts.attempts + 1, last_at = now() "
            "RETURNING attempts", (fingerprint, topic))))

    def forget(self, fingerprint: bytes) -> None:
        self._connection().execute("DELETE FROM ingest_attempts WHERE fingerprint = %s",
                                   (fingerprint,))
