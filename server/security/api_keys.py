"""API keys: created and revoked by `tidefield keys ...`, checked on every request.

A key reads ``tf_<prefix>_<secret>``: the prefix finds the row, the secret's SHA-256 must
match. Only the hash is stored; the key itself is shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

import psycopg


class Scope(StrEnum):
    READ = "read"
    INGEST = "ingest"
    OPERATE = "operate"  # act on alerts (acknowledge)
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: int
    name: str
    scopes: frozenset[Scope]
    sites: frozenset[str] | None  # None: every site

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_see(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites

    @property
    def site_list(self) -> list[str] | None:
        """The sites as a SQL array parameter: None (no limit) or a sorted list."""
        return sorted(self.sites) if self.sites is not None else None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_key(conn: psycopg.Connection, name: str, scopes: list[Scope],
               sites: list[str] | None = None) -> str:
    """Store a new key and return it (the only time it is seen)."""
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if sites:
        known = {r[0] for r in conn.execute("SELECT id FROM sites WHERE id = ANY(%s)",
                                            (sites,))}
        unknown = sorted(set(sites) - known)
        if unknown:
            raise ValueError(f"unknown sites: {', '.join(unknown)}")
    prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    conn.execute("INSERT INTO api_keys (prefix, secret_hash, name, scopes, sites) "
                 "VALUES (%s, %s, %s, %s, %s)",
                 (prefix, _hash(secret), name, [str(s) for s in scopes], sites or None))
    conn.commit()
    return f"tf_{prefix}_{secret}"


def revoke_key(conn: psycopg.Connection, prefix_or_name: str) -> int:
    count = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL "
                         "AND (prefix = %s OR name = %s)",
                         (prefix_or_name, prefix_or_name)).rowcount
    conn.commit()
    return count


def list_keys(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT prefix, name, scopes, sites, created_at, revoked_at "
                        "FROM api_keys ORDER BY id").fetchall()


def authenticate(conn: psycopg.Connection, key: str) -> Principal | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "tf":
        return None
    row = conn.execute("SELECT id, secret_hash, name, scopes, sites FROM api_keys "
                       "WHERE prefix = %s AND revoked_at IS NULL", (parts[1],)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[1]), _hash(parts[2])):
        return None
    return Principal(row[0], row[2], frozenset(Scope(s) for s in row[3]),
                     frozenset(row[4]) if row[4] is not None else None)
