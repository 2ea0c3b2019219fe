"""Dependencies that routes declare: a database connection, and who is asking.

A caller is a person with a session (``Authorization: Bearer tfs_...`` or the session
cookie that sign-in sets) or an API key (``X-API-Key: tf_...``, or as a bearer token).
What each may do, site by site, is the ``Principal``'s (``server.security.access``).
A person who must change their password may do nothing else until they have
(``SignedIn`` routes excepted: who am I, change password, sign out).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import APIKeyCookie, APIKeyHeader

from tidefield.server.security import sessions
from tidefield.server.security.api_keys import Principal, Scope, authenticate

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="a key from `tidefield keys create`")
SESSION_COOKIE = "tidefield_session"
SESSION_COOKIE_SCHEME = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                                     description="set by POST /api/v1/auth/sign-in")
NO_CREDENTIAL = ("an API key is required (header X-API-Key), or a session: sign in at "
                 "POST /api/v1/auth/sign-in")


def get_conn(request: Request) -> Iterator[psycopg.Connection]:
    with request.app.state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]

READ_SOURCE_HEADER = "X-Tidefield-Read-From"


def get_read_conn(request: Request) -> Iterator[psycopg.Connection]:
    """For routes that only read: the replica's connection when there is one and it
    answers, else the primary's (``server.web.database.ReadPool``); the app's middleware
    says which in the response's ``X-Tidefield-Read-From`` (``request.state.read_from``)."""
    with request.app.state.read_pool.connection() as (conn, source):
        request.state.read_from = source
        yield conn


ReadConnDep = Annotated[psycopg.Connection, Depends(get_read_conn)]


def client_address(request: Request) -> str | None:
    """The caller's address: the peer's, or, when the peer is a trusted proxy (the
    dashboards, a reverse proxy), the first address of its X-Forwarded-For."""
    peer = request.client.host if request.client else None
    trusted = getattr(request.app.state, "trusted_proxies", ())
    forwarded = request.headers.get("x-forwarded-for")
    if peer in trusted and forwarded:
        first = forwarded.split(",")[0].strip()
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            return peer
    return peer


def sign_in_policy(request: Request) -> sessions.SignInPolicy:
    return getattr(request.app.state, "sign_in_policy", None) or sessions.SignInPolicy()


def _caller(request: Request, conn: ConnDep,
            key: Annotated[str | None, Depends(API_KEY_HEADER)] = None,
            cookie: Annotated[str | None, Depends(SESSION_COOKIE_SCHEME)] = None,
            authorization: Annotated[str | None, Header()] = None) -> Principal:
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    key = key or cookie
    if not key:
        raise HTTPException(401, NO_CREDENTIAL, headers={"WWW-Authenticate": "ApiKey"})
    if key.startswith(sessions.TOKEN_PREFIX):
        principal = sessions.authenticate(conn, key, policy=sign_in_policy(request))
        if principal is None:
            raise HTTPException(401, "the session has ended or expired: sign in again",
                                headers={"WWW-Authenticate": "Bearer"})
        return principal
    principal = authenticate(conn, key)
    if principal is None:
        raise HTTPException(401, "the API key is unknown or revoked",
                            headers={"WWW-Authenticate": "ApiKey"})
    return principal


SignedIn = Annotated[Principal, Depends(_caller)]


def get_principal(principal: SignedIn) -> Principal:
    if principal.must_change_password:
        raise HTTPException(403, "choose a new password first (POST /api/v1/auth/password)")
    return principal


def require(scope: Scope) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.may(scope):
            raise HTTPException(403, f"this key lacks the {scope} scope" if principal.user_id
                                is None else f"your roles do not allow {scope}")
        return principal
    return check


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Operator = Annotated[Principal, Depends(require(Scope.OPERATE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Ingester = Annotated[Principal, Depends(require(Scope.INGEST))]


def check_site(principal: Principal, site_id: str) -> None:
    if not principal.may_see(site_id):
        raise HTTPException(403, f"this key may not read site {site_id}"
                            if principal.user_id is None
                            else f"you may not read site {site_id}")


def check_act(principal: Principal, scope: Scope, site_id: str) -> None:
    """403 unless ``scope`` applies to this site."""
    if not principal.may_act(scope, site_id):
        raise HTTPException(403, f"no {scope} right on site {site_id}")
