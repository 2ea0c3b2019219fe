"""What a person or a key may do, site by site: the one place where roles become rights.

A role in an organisation gives scopes (``ROLE_SCOPES``): viewer reads; operator also
acts on alerts (``operate``); admin also manages devices, rules, keys and people
(``admin``). Where a scope applies:

- in the platform office (``organisations.platform``): every site;
- elsewhere, reading: the organisation's own sites and those granted to it;
  anything more: its own sites only (a grant is read access, nothing else).

A person holds the union over their memberships. A key owned by an organisation holds its
scopes on that organisation's sites (as a member with those rights would), narrowed to
the key's own site list; a key owned by a person holds, of its scopes, what the person
holds now (so a role taken away is taken from the person's keys too), narrowed likewise.
``ingest`` (keys only) applies where ``operate`` would: an organisation's own sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg

from .api_keys import Principal, Scope

ROLES = ("viewer", "operator", "admin")
ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    "viewer": frozenset({Scope.READ}),
    "operator": frozenset({Scope.READ, Scope.OPERATE}),
    "admin": frozenset({Scope.READ, Scope.OPERATE, Scope.ADMIN}),
}

Sites = frozenset[str] | None  # None: every site


@dataclass(frozen=True, slots=True)
class Membership:
    organisation_id: int
    role: str
    platform: bool


def _union(a: Sites, b: Sites) -> Sites:
    return None if a is None or b is None else a | b


def _narrow(a: Sites, b: Sites) -> Sites:
    if a is None:
        return b
    return a if b is None else a & b


def organisation_sites(conn: psycopg.Connection, organisation_ids: Iterable[int]
                       ) -> dict[int, tuple[frozenset[str], frozenset[str]]]:
    """For each organisation: (its own sites, the sites granted to it)."""
    ids = sorted(set(organisation_ids))
    own: dict[int, set[str]] = {i: set() for i in ids}
    granted: dict[int, set[str]] = {i: set() for i in ids}
    for org, site, is_own in conn.execute(
            """SELECT organisation_id, id, true FROM sites WHERE organisation_id = ANY(%(ids)s)
               UNION ALL
               SELECT organisation_id, site_id, false FROM site_grants
               WHERE organisation_id = ANY(%(ids)s)""", {"ids": ids}):
        (own if is_own else granted)[org].add(site)
    return {i: (frozenset(own[i]), frozenset(granted[i])) for i in ids}


def rights(conn: psycopg.Connection, memberships: Iterable[Membership]
           ) -> dict[Scope, Sites]:
    """Scope -> where it applies, for these memberships (a scope missing: nowhere)."""
    memberships = list(memberships)
    sites = organisation_sites(conn, [m.organisation_id for m in memberships
                                      if not m.platform])
    out: dict[Scope, Sites] = {}
    for m in memberships:
        own, granted = sites.get(m.organisation_id, (frozenset(), frozenset()))
        for scope in ROLE_SCOPES[m.role]:
            where: Sites = None if m.platform else own | granted if scope is Scope.READ \
                else own
            out[scope] = _union(out[scope], where) if scope in out else where
    return out


def memberships_of(conn: psycopg.Connection, user_id: int) -> list[Membership]:
    return [Membership(*row) for row in conn.execute(
        "SELECT m.organisation_id, m.role, o.platform FROM memberships m "
        "JOIN organisations o ON o.id = m.organisation_id WHERE m.user_id = %s "
        "ORDER BY m.organisation_id", (user_id,))]


def _principal(name: str, held: Mapping[Scope, Sites], *, key_id: int | None = None,
               user_id: int | None = None, session_id: int | None = None,
               memberships: list[Membership], must_change_password: bool = False
               ) -> Principal:
    return Principal(
        key_id=key_id, name=name, scopes=frozenset(held),
        sites=held.get(Scope.READ, frozenset()), user_id=user_id, session_id=session_id,
        organisations=frozenset(m.organisation_id for m in memberships),
        acts_on=dict(held),
        admin_of=frozenset(m.organisation_id for m in memberships if m.role == "admin"),
        platform_admin=any(m.platform and m.role == "admin" for m in memberships),
        must_change_password=must_change_password)


def user_principal(conn: psycopg.Connection, user_id: int, username: str, *,
                   session_id: int | None = None,
                   must_change_password: bool = False) -> Principal:
    memberships = memberships_of(conn, user_id)
    return _principal(username, rights(conn, memberships), user_id=user_id,
                      session_id=session_id, memberships=memberships,
                      must_change_password=must_change_password)


def key_principal(conn: psycopg.Connection, *, key_id: int, name: str,
                  scopes: Iterable[Scope], site_limit: Sites,
                  organisation_id: int | None, user_id: int | None) -> Principal:
    """The rights of a key: see the module's docstring."""
    scopes = set(scopes)
    if Scope.ADMIN in scopes:  # an admin key may do what each lesser scope allows
        scopes |= {Scope.READ, Scope.OPERATE}
    if user_id is not None:
        memberships = memberships_of(conn, user_id)
        owner = rights(conn, memberships)
        if Scope.OPERATE in owner:
            owner[Scope.INGEST] = owner[Scope.OPERATE]
    else:
        assert organisation_id is not None  # the table's check: one owner
        row = conn.execute("SELECT platform FROM organisations WHERE id = %s",
                           (organisation_id,)).fetchone()
        platform = bool(row and row[0])
        memberships = [Membership(organisation_id, "admin", platform)]
        owner = rights(conn, memberships)
        owner[Scope.INGEST] = owner[Scope.OPERATE]
    held = {scope: _narrow(owner[scope], site_limit) for scope in scopes if scope in owner}
    principal = _principal(name, held, key_id=key_id, memberships=memberships)
    # a key acts for its owner but administers nobody unless it has the admin scope
    if Scope.ADMIN not in scopes:
        principal = _replace_admin(principal)
    return principal


def _replace_admin(principal: Principal) -> Principal:
    from dataclasses import replace

    return replace(principal, admin_of=frozenset(), platform_admin=False)
