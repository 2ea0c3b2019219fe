"""Dependencies that routes declare: a database connection and the authenticated key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import APIKeyHeader

from tidefield.server.security.api_keys import Principal, Scope, authenticate

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="a key from `tidefield keys create`")


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


def get_principal(conn: ConnDep, key: Annotated[str | None, Depends(API_KEY_HEADER)] = None,
                  authorization: Annotated[str | None, Header()] = None) -> Principal:
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise HTTPException(401, "an API key is required (header X-API-Key)",
                            headers={"WWW-Authenticate": "ApiKey"})
    principal = authenticate(conn, key)
    if principal is None:
        raise HTTPException(401, "the API key is unknown or revoked",
                            headers={"WWW-Authenticate": "ApiKey"})
    return principal


def require(scope: Scope) -> Callable[[Principal], Principal]:
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.may(scope):
            raise HTTPException(403, f"this key lacks the {scope} scope")
        return principal
    return check


Reader = Annotated[Principal, Depends(require(Scope.READ))]
Operator = Annotated[Principal, Depends(require(Scope.OPERATE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
Ingester = Annotated[Principal, Depends(require(Scope.INGEST))]


def check_site(principal: Principal, site_id: str) -> None:
    if not principal.may_see(site_id):
        raise HTTPException(403, f"this key may not read site {site_id}")
