"""Organisations and people for tests: two companies that must not see each other, a
grant between them, and accounts with passwords that need no change."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from tidefield.server.security import organisations, people
from tidefield.server.security.api_keys import Scope, create_key

PASSWORD = "correct horse battery staple"


@dataclass
class TwoCompanies:
    a_org: int
    b_org: int
    a_sites: list[str]
    b_sites: list[str]
    granted: str  # a site of B that A may read
    users: dict[str, int] = field(default_factory=dict)  # name -> id
    keys: dict[str, str] = field(default_factory=dict)  # name -> key

    @property
    def b_hidden(self) -> list[str]:
        """B's sites that A may not read."""
        return [s for s in self.b_sites if s != self.granted]


def add_person(conn: psycopg.Connection, username: str, roles: dict[int, str], *,
               password: str = PASSWORD, must_change: bool = False) -> int:
    user_id = people.create_user(conn, username, password=password,
                                 display_name=username.title(),
                                 must_change_password=must_change)
    for org, role in roles.items():
        people.set_role(conn, user_id, org, role)
    conn.commit()
    return user_id


def two_companies(conn: psycopg.Connection, *, a_kind: str = "greenhouse",
                  b_kind: str = "cage_farm") -> TwoCompanies:
    """Company A owns every site of ``a_kind``, B every site of ``b_kind``; A may read B's
    second site. People: alice (A admin), anna (A operator), vera (A viewer), bob (B admin),
    root (platform admin). Keys: A's organisation key (every scope), bob's own key."""
    a = organisations.create_organisation(conn, "company-a", "Company A")
    b = organisations.create_organisation(conn, "company-b", "Company B")
    a_sites = [r[0] for r in conn.execute("SELECT id FROM sites WHERE kind = %s ORDER BY id",
                                          (a_kind,))]
    b_sites = [r[0] for r in conn.execute("SELECT id FROM sites WHERE kind = %s ORDER BY id",
                                          (b_kind,))]
    organisations.assign_sites(conn, a, a_sites)
    organisations.assign_sites(conn, b, b_sites)
    organisations.grant(conn, a, b_sites[1])
    conn.commit()
    world = TwoCompanies(a, b, a_sites, b_sites, b_sites[1])
    for name, roles in (("alice", {a: "admin"}), ("anna", {a: "operator"}),
                        ("vera", {a: "viewer"}), ("bob", {b: "admin"}),
                        ("root", {1: "admin"})):
        world.users[name] = add_person(conn, name, roles)
    world.keys["a_org"] = create_key(conn, "company-a gateway",
                                     [Scope.READ, Scope.INGEST, Scope.OPERATE, Scope.ADMIN],
                                     organisation_id=a)
    world.keys["bob"] = create_key(conn, "bob's script", [Scope.READ],
                                   user_id=world.users["bob"])
    return world


def session_token(api_url: str, username: str, password: str = PASSWORD) -> str:
    """Sign in over HTTP, as the dashboards do, and return the session's token."""
    import httpx

    answer = httpx.post(f"{api_url}/api/v1/auth/sign-in",
                        json={"username": username, "password": password}, timeout=30)
    answer.raise_for_status()
    return answer.json()["token"]
