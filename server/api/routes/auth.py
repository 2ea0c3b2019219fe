"""Signing in and out, and what a person does for themselves: who am I, a new password,
a second factor. Single sign-on (OpenID Connect) is in ``routes/sso.py``.

Sign-in answers the session token once, in the body (for the dashboards and scripts,
which send it as ``Authorization: Bearer``) and as an HTTP-only cookie (for a browser
calling the API itself). Every outcome is in the audit log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field

from tidefield.server.security import audit, people, sessions
from tidefield.server.security.access import memberships_of
from tidefield.server.security.organisations import list_organisations
from tidefield.server.web.deps import (
    SESSION_COOKIE,
    ConnDep,
    SignedIn,
    client_address,
    sign_in_policy,
)

from ..models import ERRORS

router = APIRouter(prefix="/auth", tags=["sign-in"], responses={
    **ERRORS, 400: ERRORS[422] | {"description": "an API key has no session, password or "
                                                "second factor"}})

Username = Annotated[str, Field(min_length=1, max_length=64, examples=["alice"])]
Password = Annotated[str, Field(min_length=1, max_length=people.MAX_PASSWORD_LENGTH)]


class SignIn(BaseModel):
    username: Username
    password: Password
    code: Annotated[str | None, Field(max_length=6, pattern=r"^\d{6}$",
                                      description="the authenticator app's one-time code, "
                                                  "for accounts with a second factor")] = None


class Role(BaseModel):
    organisation_id: int
    organisation: str = Field(description="the organisation's short name")
    name: str
    platform: bool = Field(description="the platform office: sees every site")
    role: Literal["viewer", "operator", "admin"]


class Me(BaseModel):
    user_id: int | None = Field(description="null for an API key")
    username: str
    display_name: str = ""
    must_change_password: bool
    totp_enabled: bool = False
    scopes: list[str]
    roles: list[Role]
    sites: list[str] | None = Field(description="the sites it may read; null: every site")
    platform_admin: bool
    administers: list[int] = Field(description="organisations whose people and keys it "
                                               "manages")


class SessionOut(BaseModel):
    token: str = Field(description="send as `Authorization: Bearer <token>`; shown once")
    expires_at: datetime
    must_change_password: bool = Field(description="only /auth/me, /auth/password and "
                                                   "/auth/sign-out answer until it is changed")
    me: Me


class PasswordChange(BaseModel):
    current_password: Password
    new_password: Password


class TotpSetup(BaseModel):
    secret: str = Field(description="base32; give it to the authenticator app")
    uri: str = Field(description="otpauth:// URI (what a QR code holds)")


class TotpConfirm(BaseModel):
    secret: Annotated[str, Field(min_length=32, max_length=64, pattern=r"^[A-Z2-7]+=*$",
                                 description="as /auth/totp/setup gave it (160 bits)")]
    code: Annotated[str, Field(pattern=r"^\d{6}$")]


class TotpRemove(BaseModel):
    password: Password


def me_of(conn: ConnDep, principal: SignedIn) -> Me:
    roles: list[Role] = []
    display, totp = "", False
    if principal.user_id is not None:
        orgs = {o.id: o for o in list_organisations(conn)}
        roles = [Role(organisation_id=m.organisation_id, organisation=orgs[m.organisation_id]
                      .slug, name=orgs[m.organisation_id].name, platform=m.platform,
                      role=m.role)
                 for m in memberships_of(conn, principal.user_id)]
        user = people.get_user(conn, principal.user_id)
        if user is not None:
            display, totp = user.display_name, user.totp_enabled
    return Me(user_id=principal.user_id, username=principal.name, display_name=display,
              must_change_password=principal.must_change_password, totp_enabled=totp,
              scopes=sorted(principal.scopes), roles=roles, sites=principal.site_list,
              platform_admin=principal.platform_admin,
              administers=sorted(principal.admin_of))


def session_answer(request: Request, response: Response, conn: ConnDep,
                   session: sessions.NewSession) -> SessionOut:
    """The body and cookie of a new session."""
    principal = sessions.authenticate(conn, session.token, policy=sign_in_policy(request))
    assert principal is not None  # just opened
    policy = sign_in_policy(request)
    response.set_cookie(SESSION_COOKIE, session.token, max_age=int(policy.session_hours * 3600),
                        httponly=True, samesite="strict",
                        secure=getattr(request.app.state, "session_cookie_secure", False))
    return SessionOut(token=session.token, expires_at=session.expires_at,
                      must_change_password=session.must_change_password,
                      me=me_of(conn, principal))


@router.post("/sign-in", response_model=SessionOut, summary="Sign in with a password",
             responses={401: ERRORS[401] | {"description": "wrong name, password or code"},
                        423: ERRORS[401] | {"description": "locked after too many failures; "
                                                           "see Retry-After"}})
def sign_in(body: SignIn, request: Request, response: Response, conn: ConnDep) -> SessionOut:
    try:
        session = sessions.sign_in(conn, body.username, body.password, code=body.code,
                                   address=client_address(request),
                                   policy=sign_in_policy(request))
    except sessions.SignInRefused as refused:
        headers = ({"Retry-After": str(refused.retry_after_s)}
                   if refused.retry_after_s else {"WWW-Authenticate": "Bearer"})
        raise HTTPException(refused.status, refused.message, headers=headers) from None
    return session_answer(request, response, conn, session)


@router.post("/sign-out", status_code=204, summary="End this session")
def sign_out(request: Request, response: Response, conn: ConnDep,
             principal: SignedIn) -> Response:
    if principal.session_id is None:
        raise HTTPException(400, "an API key has no session; revoke it instead")
    sessions.end_session(conn, principal.session_id, "signed out")
    audit.record(conn, actor=principal, action="sign_out", target=f"user:{principal.name}",
                 source_address=client_address(request))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/me", response_model=Me, summary="Who is signed in, and where they may act")
def me(conn: ConnDep, principal: SignedIn) -> Me:
    return me_of(conn, principal)


def _person(principal: SignedIn) -> int:
    if principal.user_id is None:
        raise HTTPException(400, "an API key has no password or second factor")
    return principal.user_id


@router.post("/password", status_code=204,
             summary="Change your password (ends your other sessions)")
def change_password(body: PasswordChange, request: Request, conn: ConnDep,
                    principal: SignedIn) -> Response:
    _person(principal)
    try:
        sessions.change_password(conn, principal, body.current_password, body.new_password,
                                 address=client_address(request))
    except people.AccountError as exc:
        raise HTTPException(422, str(exc)) from None
    return Response(status_code=204)


@router.post("/totp/setup", response_model=TotpSetup,
             summary="A new second-factor secret to confirm (nothing is stored yet)")
def totp_setup(principal: SignedIn) -> TotpSetup:
    _person(principal)
    secret = people.new_totp_secret()
    return TotpSetup(secret=secret, uri=people.totp_uri(secret, principal.name))


@router.post("/totp", status_code=204,
             summary="Turn the second factor on with a code the app shows for the secret")
def totp_enable(body: TotpConfirm, request: Request, conn: ConnDep,
                principal: SignedIn) -> Response:
    user_id = _person(principal)
    if people.totp_step(body.secret, body.code) is None:
        raise HTTPException(422, "the code does not match the secret; check the app's clock")
    people.set_totp(conn, user_id, body.secret)
    audit.record(conn, actor=principal, action="totp.enabled", target=f"user:{principal.name}",
                 source_address=client_address(request))
    return Response(status_code=204)


@router.post("/totp/remove", status_code=204, summary="Turn the second factor off")
def totp_disable(body: TotpRemove, request: Request, conn: ConnDep,
                 principal: SignedIn) -> Response:
    user_id = _person(principal)
    row = conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,)).fetchone()
    if row is None or not people.verify_password(body.password, row[0]):
        raise HTTPException(422, "the password is wrong")
    people.set_totp(conn, user_id, None)
    audit.record(conn, actor=principal, action="totp.disabled",
                 target=f"user:{principal.name}", source_address=client_address(request))
    return Response(status_code=204)
