"""API keys: created and revoked by `tidefield keys ...`, checked on every request.

A key reads ``tf_<prefix>_<secret>``: the prefix finds the row, the secret's SHA-256 must
match. Only the hash is stored; the key itself is shown once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
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
    """Who is asking, and where each scope applies.

    ``sites`` is what it may read (None: every site); ``acts_on`` what it may do beyond
    reading, scope by scope (a scope missing: nowhere; None: every site). A person's
    rights come from their roles in organisations (``security.access``), a key's from
    its scopes and site limit within its owner's (``security.access``)."""

    key_id: int | None
    name: str
    scopes: frozenset[Scope]
    sites: frozenset[str] | None  # None: every site
    user_id: int | None = None
    session_id: int | None = None
    organisations: frozenset[int] = frozenset()  # the person's (or key owner's) organisations
    acts_on: Mapping[Scope, frozenset[str] | None] | None = None  # None: ``sites`` for each scope
    admin_of: frozenset[int] = frozenset()  # organisations whose people and keys it manages
    platform_admin: bool = False
    must_change_password: bool = False

    def may(self, scope: Scope) -> bool:
        """Whether it holds ``scope`` anywhere (admin implies every other scope)."""
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def may_see(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites

    def may_act(self, scope: Scope, site_id: str) -> bool:
        """Whether it may use ``scope`` on this site (reading: ``may_see``)."""
        if not self.may(scope):
            return False
        if scope is Scope.READ or self.acts_on is None:
            return self.may_see(site_id)
        for held in (scope, Scope.ADMIN):
            if held in self.acts_on:
                limit = self.acts_on[held]
                if limit is None or site_id in limit:
                    return True
        return False

    @property
    def site_list(self) -> list[str] | None:
        """The sites as a SQL array parameter: None (no limit) or a sorted list."""
        return sorted(self.sites) if self.sites is not None else None


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


PLATFORM_ORGANISATION_ID = 1  # made by migration 0010; sees every site


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    prefix: str
    name: str
    scopes: list[str]
    sites: list[str] | None
    organisation_id: int | None
    user_id: int | None
    created_at: object
    revoked_at: object


def create_key(conn: psycopg.Connection, name: str, scopes: list[Scope],
               sites: list[str] | None = None, *, organisation_id: int | None = None,
               user_id: int | None = None, commit: bool = True) -> str:
    """Store a new key and return it (the only time it is seen). Its owner is a person
    (``user_id``) or an organisation (default: the platform office). ``commit=False``:
    in the caller's transaction."""
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if organisation_id is not None and user_id is not None:
        raise ValueError("a key has one owner: an organisation or a person")
    if user_id is None and organisation_id is None:
        organisation_id = PLATFORM_ORGANISATION_ID
    if sites:
        known = {r[0] for r in conn.execute("SELECT id FROM sites WHERE id = ANY(%s)",
                                            (sites,))}
        unknown = sorted(set(sites) - known)
        if unknown:
            raise ValueError(f"unknown sites: {', '.join(unknown)}")
    prefix, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    conn.execute("INSERT INTO api_keys (prefix, secret_hash, name, scopes, sites, "
                 "organisation_id, user_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 (prefix, _hash(secret), name, [str(s) for s in scopes], sites or None,
                  organisation_id, user_id))
    if commit:
        conn.commit()
    return f"tf_{prefix}_{secret}"


def key_prefix(key: str) -> str:
    """A key's prefix from the key itself, or the text as given (a prefix or a name)."""
    parts = key.split("_")
    return parts[1] if key.startswith("tf_") and len(parts) >= 3 else key


def revoke_key(conn: psycopg.Connection, prefix_or_name: str) -> int:
    count = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL "
                         "AND (prefix = %s OR name = %s)",
                         (prefix_or_name, prefix_or_name)).rowcount
    conn.commit()
    return count


def list_keys(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT prefix, name, scopes, sites, created_at, revoked_at "
                        "FROM api_keys ORDER BY id").fetchall()


def key_infos(conn: psycopg.Connection, *, organisations: list[int] | None = None,
              user_id: int | None = None, prefix: str | None = None,
              include_revoked: bool = False) -> list[KeyInfo]:
    """Keys owned by one of ``organisations`` or by people of them (None: every key), or
    by one person (``user_id``)."""
    rows = conn.execute(
        """SELECT k.id, k.prefix, k.name, k.scopes, k.sites, k.organisation_id, k.user_id,
                  k.created_at, k.revoked_at FROM api_keys k
           WHERE (%(all)s OR k.revoked_at IS NULL)
             AND (%(prefix)s::text IS NULL OR k.prefix = %(prefix)s)
             AND (%(user)s::int IS NULL OR k.user_id = %(user)s)
             AND (%(orgs)s::int[] IS NULL OR k.organisation_id = ANY(%(orgs)s)
                  OR k.user_id IN (SELECT user_id FROM memberships
                                   WHERE organisation_id = ANY(%(orgs)s)))
           ORDER BY k.id""",
        {"all": include_revoked, "prefix": prefix, "user": user_id,
         "orgs": organisations}).fetchall()
    return [KeyInfo(*row) for row in rows]


def authenticate(conn: psycopg.Connection, key: str) -> Principal | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "tf":
        return None
    row = conn.execute("SELECT id, secret_hash, name, scopes, sites, organisation_id, user_id "
                       "FROM api_keys WHERE prefix = %s AND revoked_at IS NULL",
                       (parts[1],)).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[1]), _hash(parts[2])):
        return None
    if row[6] is not None and conn.execute(
            "SELECT 1 FROM users WHERE id = %s AND disabled_at IS NULL",
            (row[6],)).fetchone() is None:
        return None  # the key of a person who was disabled acts no more
    from .access import key_principal  # access builds on this module's Principal

    return key_principal(conn, key_id=row[0], name=row[2],
                         scopes=[Scope(s) for s in row[3]],
                         site_limit=frozenset(row[4]) if row[4] is not None else None,
                         organisation_id=row[5], user_id=row[6])
