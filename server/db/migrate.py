"""Numbered SQL migrations, applied in order, each in its own transaction, once.

``migrations/NNNN_name.sql`` files are applied in number order. Applied ones are recorded
in ``schema_migrations`` with a checksum, so an edited migration is caught instead of
silently diverging. An advisory lock lets several processes start at once.

Forward only: a migration is never undone or edited, and a database that has migrations
this build does not know (made by a newer release) is refused rather than run by older
code. tests/integration/test_upgrade.py upgrades a database made by the first release,
with data in it, to the current schema.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7469_6465  # "tide"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    folder = resources.files("tidefield.server.db.migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a number: {versions}")
    return found


def migrate(url: str) -> list[Migration]:
    """Apply what is missing; return the migrations applied by this call."""
    applied_now = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                              version integer PRIMARY KEY, name text NOT NULL,
                              checksum text NOT NULL,
                              applied_at timestamptz NOT NULL DEFAULT now())""")
            done: dict[int, str] = dict(conn.execute(
                "SELECT version, checksum FROM schema_migrations").fetchall())
            known = available()
            newer = sorted(set(done) - {m.version for m in known})
            if newer:
                raise MigrationError(
                    f"the database has migrations this build does not know "
                    f"({', '.join(f'{v:04d}' for v in newer)}): it was upgraded by a newer "
                    f"release; run that release (migrations go forward only)")
            for migration in known:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            f"after it was applied; add a new migration instead")
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)
                    conn.execute("INSERT INTO schema_migrations (version, name, checksum) "
                                 "VALUES (%s, %s, %s)",
                                 (migration.version, migration.name, migration.checksum))
                log.info("applied migration %04d_%s", migration.version, migration.name)
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
