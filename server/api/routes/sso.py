"""Single sign-on through an organisation's OpenID Connect provider (the flow is in
``server.security.oidc``): the providers a sign-in page offers, the way there, the way
back, and the dashboards' trade of a one-time code for a session."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from tidefield.server.security import oidc
from tidefield.server.web.deps import ConnDep, client_address, sign_in_policy

from ..models import ERRORS
from .auth import SessionOut, session_answer

router = APIRouter(prefix="/auth", tags=["sign-in"], responses={
    **ERRORS,
    400: ERRORS[422] | {"description": "a stale or unknown sign-in"},
    403: ERRORS[422] | {"description": "nobody to sign in as"},
    404: ERRORS[422] | {"description": "no such provider"},
    502: ERRORS[422] | {"description": "the identity provider failed"}})

ProviderName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")]


class ProviderOption(BaseModel):
    name: str = Field(description="the provider's short name (in the login URL)")
    label: str = Field(description="its organisation's name")


class Handoff(BaseModel):
    code: Annotated[str, Field(min_length=20, max_length=100)]


def _callback_url(request: Request, name: str) -> str:
    base = getattr(request.app.state, "api_public_url", None) or str(request.base_url)
    return f"{base.rstrip('/')}/api/v1/auth/oidc/{name}/callback"


def _sso_error(exc: oidc.SsoError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


@router.get("/providers", response_model=list[ProviderOption],
            summary="Single sign-on offered on the sign-in page (no credential needed)")
def providers(conn: ConnDep) -> list[ProviderOption]:
    return [ProviderOption(**p) for p in oidc.listed(conn)]


@router.get("/oidc/{name}/login", status_code=302, response_class=RedirectResponse,
            summary="Start a single sign-on: to the organisation's identity provider",
            responses={302: {"description": "to the identity provider"}})
def login(name: ProviderName, request: Request, conn: ConnDep,
          return_to: Annotated[str | None, Query(
              max_length=500, description="where to send the browser back (an allowed "
                                          "origin: TIDEFIELD_SSO_RETURN_ORIGINS)")] = None
          ) -> RedirectResponse:
    if return_to is not None:
        parts = urlsplit(return_to)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in getattr(request.app.state, "sso_return_origins", frozenset()):
            raise HTTPException(422, f"return_to: {origin} is not an allowed origin")
    found = oidc.provider(conn, name)
    if found is None:
        raise HTTPException(404, f"no identity provider {name!r}")
    try:
        url = oidc.begin(conn, found, _callback_url(request, name), return_to)
    except oidc.SsoError as exc:
        raise _sso_error(exc) from None
    return RedirectResponse(url, status_code=302)


@router.get("/oidc/{name}/callback", response_model=SessionOut,
            summary="Where the identity provider sends the browser back",
            responses={302: {"description": "back to return_to with ?sign_in=<code>"}})
def callback(name: ProviderName, request: Request, response: Response, conn: ConnDep,
             state: Annotated[str, Query(max_length=200)],
             code: Annotated[str, Query(max_length=2000)]) -> SessionOut | RedirectResponse:
    address = client_address(request)
    try:
        finished = oidc.finish(conn, name, state, code, _callback_url(request, name),
                               address=address)
        if finished.handoff and finished.return_to:
            separator = "&" if "?" in finished.return_to else "?"
            return RedirectResponse(
                f"{finished.return_to}{separator}{urlencode({'sign_in': finished.handoff})}",
                status_code=302)
        session = oidc.open_sso_session(conn, finished.user_id, name, address=address,
                                        policy=sign_in_policy(request))
    except oidc.SsoError as exc:
        raise _sso_error(exc) from None
    return session_answer(request, response, conn, session)


@router.post("/oidc/redeem", response_model=SessionOut,
             summary="Trade a single sign-on's one-time code for a session (dashboards)")
def redeem(body: Handoff, request: Request, response: Response,
           conn: ConnDep) -> SessionOut:
    try:
        session = oidc.redeem(conn, body.code, address=client_address(request),
                              policy=sign_in_policy(request))
    except oidc.SsoError as exc:
        raise _sso_error(exc) from None
    return session_answer(request, response, conn, session)
