"""Administration of people and organisations: organisations and their sites and grants,
accounts and roles, password resets, API keys, identity providers, and the audit log.

Who may do what: a platform admin (admin of the platform office) everything; an
organisation's admin the people whose every role is in organisations they administer,
their organisation's keys and grants of its own sites, and the audit rows that concern
their organisation; anyone signed in their own keys. Everything that changes something
writes one audit row. Someone out of reach is "not found", as another site's alert is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tidefield.server.security import audit, organisations, people, sessions
from tidefield.server.security.api_keys import (
    KeyInfo,
    Principal,
    Scope,
    create_key,
    key_infos,
)
from tidefield.server.web.deps import ConnDep, SignedIn, client_address, get_principal

from ..models import ERRORS, NOT_FOUND
from ..query_params import aware

router = APIRouter(tags=["people"], responses={
    **ERRORS, **NOT_FOUND,
    409: ERRORS[422] | {"description": "it conflicts with what exists (a name taken, "
                                       "your own admin role or account)"}})

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
RoleName = Literal["viewer", "operator", "admin"]
SiteId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


def _signed_in(principal: SignedIn) -> Principal:
    return get_principal(principal)


# --- models ---------------------------------------------------------------------------------

class OrganisationOut(BaseModel):
    id: int
    slug: str
    name: str
    platform: bool
    sites: int = Field(description="sites it owns")
    granted: int = Field(description="sites of others it may read")
    people: int


class NewOrganisation(BaseModel):
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$", examples=["hq-lab"])]
    name: Annotated[str, Field(min_length=1, max_length=200)]


class SiteList(BaseModel):
    sites: Annotated[list[Annotated[str, Field(max_length=64)]],
                     Field(min_length=1, max_length=1000)]


class Grants(BaseModel):
    organisation_id: int
    sites: list[str]


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    email: str | None
    must_change_password: bool
    totp_enabled: bool
    disabled: bool
    created_at: datetime
    roles: dict[str, RoleName] = Field(description="organisation id -> role")


class NewUser(BaseModel):
    username: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._@-]{1,63}$")]
    display_name: Annotated[str, Field(max_length=200)] = ""
    email: Annotated[str | None, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")] = None
    organisation_id: Annotated[int, Field(ge=1, le=2**31 - 1)]
    role: RoleName


class CreatedUser(BaseModel):
    user: UserOut
    temporary_password: str = Field(description="shown once; to be changed at first sign-in")


class RoleChange(BaseModel):
    role: RoleName


class TemporaryPassword(BaseModel):
    temporary_password: str = Field(description="shown once; to be changed at first sign-in")
    sessions_ended: int


class KeyOut(BaseModel):
    prefix: str
    name: str
    scopes: list[str]
    sites: list[str] | None
    organisation_id: int | None = Field(description="owner, when an organisation")
    user_id: int | None = Field(description="owner, when a person")
    created_at: datetime
    revoked: bool


class NewKey(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scopes: Annotated[list[Literal["read", "ingest", "operate", "admin"]],
                      Field(min_length=1, max_length=4)]
    sites: Annotated[list[Annotated[str, Field(max_length=64)]] | None,
                     Field(max_length=1000)] = None
    organisation_id: Annotated[int | None, Field(
        ge=1, le=2**31 - 1, description="owner organisation (you must administer it); "
                                        "none: the key is yours")] = None


class CreatedKey(BaseModel):
    key: str = Field(description="shown once")
    info: KeyOut


class NewProvider(BaseModel):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$")]
    issuer: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=500)]
    client_id: Annotated[str, Field(min_length=1, max_length=500)]
    client_secret: Annotated[str, Field(min_length=1, max_length=500)]
    default_role: RoleName | None = Field(
        None, description="role given to someone the provider signs in who has no account "
                          "yet (none: only people with an account, matched by e-mail)")


class ProviderOut(BaseModel):
    name: str
    organisation_id: int
    issuer: str
    client_id: str
    default_role: RoleName | None


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    actor_user_id: int | None
    action: str
    target: str
    source_address: str | None
    before: dict | list | str | int | float | bool | None
    after: dict | list | str | int | float | bool | None


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


# --- who may -------------------------------------------------------------------------------

def _administered(principal: Principal) -> list[int] | None:
    """Organisations it administers (None: all, a platform admin); 403 when none."""
    if principal.platform_admin:
        return None
    if not principal.admin_of:
        raise HTTPException(403, "only an organisation's admins may do this")
    return sorted(principal.admin_of)


def _check_admin_of(principal: Principal, organisation_id: int) -> None:
    administered = _administered(principal)
    if administered is not None and organisation_id not in administered:
        raise HTTPException(403, f"you do not administer organisation {organisation_id}")


def _platform_admin(principal: Principal) -> None:
    if not principal.platform_admin:
        raise HTTPException(403, "only the platform office's admins may do this")


def _managed_user(conn: ConnDep, principal: Principal, user_id: int) -> people.User:
    administered = _administered(principal)
    user = people.get_user(conn, user_id)
    if user is None or (administered is not None
                        and not set(user.roles) & set(administered)):
        raise HTTPException(404, f"no user {user_id}")
    if administered is not None and not set(user.roles) <= set(administered):
        raise HTTPException(403, f"{user.username} also belongs to an organisation you do "
                                 f"not administer")
    return user


def _organisation(conn: ConnDep, organisation_id: int) -> organisations.Organisation:
    found = organisations.list_organisations(conn, [organisation_id])
    if not found:
        raise HTTPException(404, f"no organisation {organisation_id}")
    return found[0]


def _org_out(o: organisations.Organisation) -> OrganisationOut:
    return OrganisationOut(id=o.id, slug=o.slug, name=o.name, platform=o.platform,
                           sites=o.sites, granted=o.granted, people=o.people)


def _user_out(user: people.User) -> UserOut:
    return UserOut(id=user.id, username=user.username, display_name=user.display_name,
                   email=user.email, must_change_password=user.must_change_password,
                   totp_enabled=user.totp_enabled, disabled=user.disabled_at is not None,
                   created_at=user.created_at,
                   roles={str(k): v for k, v in user.roles.items()})


def _key_out(key: KeyInfo) -> KeyOut:
    return KeyOut(prefix=key.prefix, name=key.name, scopes=key.scopes, sites=key.sites,
                  organisation_id=key.organisation_id, user_id=key.user_id,
                  created_at=key.created_at,
                  revoked=key.revoked_at is not None)


# --- organisations -------------------------------------------------------------------------

@router.get("/organisations", response_model=list[OrganisationOut],
            summary="Organisations: all for platform admins, else your own")
def list_orgs(conn: ConnDep, principal: SignedIn) -> list[OrganisationOut]:
    principal = _signed_in(principal)
    ids = None if principal.platform_admin else sorted(principal.organisations)
    return [_org_out(o) for o in organisations.list_organisations(conn, ids)]


@router.post("/organisations", response_model=OrganisationOut, status_code=201,
             summary="Create an organisation (platform admins)")
def create_org(body: NewOrganisation, request: Request, conn: ConnDep,
               principal: SignedIn) -> OrganisationOut:
    principal = _signed_in(principal)
    _platform_admin(principal)
    with conn.transaction():
        try:
            org_id = organisations.create_organisation(conn, body.slug, body.name)
        except people.AccountError as exc:
            raise HTTPException(409, str(exc)) from None
        audit.record(conn, actor=principal, action="organisation.created",
                     target=f"organisation:{body.slug}", organisations=[org_id],
                     after={"slug": body.slug, "name": body.name},
                     source_address=client_address(request))
    return _org_out(_organisation(conn, org_id))


@router.post("/organisations/{organisation_id}/sites", response_model=OrganisationOut,
             summary="Give sites to an organisation (platform admins)")
def assign_sites(organisation_id: Id, body: SiteList, request: Request, conn: ConnDep,
                 principal: SignedIn) -> OrganisationOut:
    principal = _signed_in(principal)
    _platform_admin(principal)
    _organisation(conn, organisation_id)
    with conn.transaction():
        try:
            before = organisations.assign_sites(conn, organisation_id, body.sites)
        except people.AccountError as exc:
            raise HTTPException(422, str(exc)) from None
        for site_id, owner in sorted(before.items()):
            if owner != organisation_id:
                audit.record(conn, actor=principal, action="site.moved",
                             target=f"site:{site_id}", site_id=site_id,
                             organisations=[owner], before={"organisation_id": owner},
                             after={"organisation_id": organisation_id},
                             source_address=client_address(request))
    return _org_out(_organisation(conn, organisation_id))


@router.get("/organisations/{organisation_id}/grants", response_model=Grants,
            summary="Sites of others the organisation may read")
def list_grants(organisation_id: Id, conn: ConnDep, principal: SignedIn) -> Grants:
    principal = _signed_in(principal)
    if not principal.platform_admin and organisation_id not in principal.organisations:
        raise HTTPException(404, f"no organisation {organisation_id}")
    return Grants(organisation_id=organisation_id,
                  sites=organisations.grants(conn, organisation_id))


def _grant_change(conn: ConnDep, principal: Principal, organisation_id: int,
                  site_id: str) -> int:
    """The site's owner, when the principal may grant or withdraw it."""
    _organisation(conn, organisation_id)
    owner = organisations.organisation_of_site(conn, site_id)
    if owner is None or not (principal.platform_admin or owner in principal.admin_of):
        raise HTTPException(404 if owner is None or not principal.may_see(site_id) else 403,
                            f"only admins of site {site_id}'s organisation may grant it")
    return owner


@router.put("/organisations/{organisation_id}/grants/{site_id}", response_model=Grants,
            summary="Let the organisation read a site of yours")
def add_grant(organisation_id: Id, site_id: SiteId, request: Request, conn: ConnDep,
              principal: SignedIn) -> Grants:
    principal = _signed_in(principal)
    owner = _grant_change(conn, principal, organisation_id, site_id)
    with conn.transaction():
        try:
            added = organisations.grant(conn, organisation_id, site_id)
        except people.AccountError as exc:
            raise HTTPException(422, str(exc)) from None
        if added:
            audit.record(conn, actor=principal, action="grant.added", target=f"site:{site_id}",
                         organisations=[owner, organisation_id],
                         after={"organisation_id": organisation_id, "access": "read"},
                         source_address=client_address(request))
    return Grants(organisation_id=organisation_id,
                  sites=organisations.grants(conn, organisation_id))


@router.delete("/organisations/{organisation_id}/grants/{site_id}", response_model=Grants,
               summary="Withdraw a grant")
def remove_grant(organisation_id: Id, site_id: SiteId, request: Request, conn: ConnDep,
                 principal: SignedIn) -> Grants:
    principal = _signed_in(principal)
    owner = _grant_change(conn, principal, organisation_id, site_id)
    with conn.transaction():
        if organisations.revoke_grant(conn, organisation_id, site_id):
            audit.record(conn, actor=principal, action="grant.removed",
                         target=f"site:{site_id}", organisations=[owner, organisation_id],
                         before={"organisation_id": organisation_id, "access": "read"},
                         source_address=client_address(request))
    return Grants(organisation_id=organisation_id,
                  sites=organisations.grants(conn, organisation_id))


# --- people --------------------------------------------------------------------------------

@router.get("/users", response_model=list[UserOut],
            summary="People of the organisations you administer")
def list_users(conn: ConnDep, principal: SignedIn) -> list[UserOut]:
    administered = _administered(_signed_in(principal))
    return [_user_out(u) for u in people.list_users(conn, administered)]


@router.post("/users", response_model=CreatedUser, status_code=201,
             summary="Create an account with a role (its password is shown once)")
def create_user(body: NewUser, request: Request, conn: ConnDep,
                principal: SignedIn) -> CreatedUser:
    principal = _signed_in(principal)
    _check_admin_of(principal, body.organisation_id)
    _organisation(conn, body.organisation_id)
    password = people.temporary_password()
    address = client_address(request)
    with conn.transaction():
        try:
            user_id = people.create_user(conn, body.username, password=password,
                                         display_name=body.display_name, email=body.email)
        except people.AccountError as exc:
            raise HTTPException(409, str(exc)) from None
        people.set_role(conn, user_id, body.organisation_id, body.role)
        audit.record(conn, actor=principal, action="user.created",
                     target=f"user:{body.username}", organisations=[body.organisation_id],
                     after={"display_name": body.display_name, "email": body.email},
                     source_address=address)
        audit.record(conn, actor=principal, action="role.changed",
                     target=f"user:{body.username}", organisations=[body.organisation_id],
                     before={"organisation_id": body.organisation_id, "role": None},
                     after={"organisation_id": body.organisation_id, "role": body.role},
                     source_address=address)
    user = people.get_user(conn, user_id)
    assert user is not None
    return CreatedUser(user=_user_out(user), temporary_password=password)


@router.put("/users/{user_id}/roles/{organisation_id}", response_model=UserOut,
            summary="Give someone a role in an organisation you administer")
def set_role(user_id: Id, organisation_id: Id, body: RoleChange, request: Request,
             conn: ConnDep, principal: SignedIn) -> UserOut:
    principal = _signed_in(principal)
    _check_admin_of(principal, organisation_id)
    _organisation(conn, organisation_id)
    user = people.get_user(conn, user_id)
    if user is None:
        raise HTTPException(404, f"no user {user_id}")
    if user.roles and not principal.platform_admin:
        _managed_user(conn, principal, user_id)
    with conn.transaction():
        before = people.set_role(conn, user_id, organisation_id, body.role)
        if before != body.role:
            audit.record(conn, actor=principal, action="role.changed",
                         target=f"user:{user.username}", organisations=[organisation_id],
                         before={"organisation_id": organisation_id, "role": before},
                         after={"organisation_id": organisation_id, "role": body.role},
                         source_address=client_address(request))
    changed = people.get_user(conn, user_id)
    assert changed is not None
    return _user_out(changed)


@router.delete("/users/{user_id}/roles/{organisation_id}", response_model=UserOut,
               summary="Take someone's role in an organisation away")
def remove_role(user_id: Id, organisation_id: Id, request: Request, conn: ConnDep,
                principal: SignedIn) -> UserOut:
    principal = _signed_in(principal)
    _check_admin_of(principal, organisation_id)
    user = _managed_user(conn, principal, user_id)
    if principal.user_id == user_id and organisation_id in principal.admin_of \
            and user.roles.get(organisation_id) == "admin":
        raise HTTPException(409, "you cannot remove your own admin role; ask another admin")
    with conn.transaction():
        before = people.set_role(conn, user_id, organisation_id, None)
        if before is not None:
            audit.record(conn, actor=principal, action="role.removed",
                         target=f"user:{user.username}", organisations=[organisation_id],
                         before={"organisation_id": organisation_id, "role": before},
                         after={"organisation_id": organisation_id, "role": None},
                         source_address=client_address(request))
    changed = people.get_user(conn, user_id)
    assert changed is not None
    return _user_out(changed)


@router.post("/users/{user_id}/password-reset", response_model=TemporaryPassword,
             summary="Reset someone's password: a temporary one, their sessions end")
def reset_password(user_id: Id, request: Request, conn: ConnDep,
                   principal: SignedIn) -> TemporaryPassword:
    principal = _signed_in(principal)
    user = _managed_user(conn, principal, user_id)
    password = people.temporary_password()
    with conn.transaction():
        people.set_password(conn, user_id, password, must_change=True)
        ended = sessions.end_sessions(conn, user_id, "password reset by an admin")
        conn.execute("DELETE FROM sign_in_throttle WHERE subject = %s",
                     (f"user:{user.username}",))
        audit.record(conn, actor=principal, action="password.reset",
                     target=f"user:{user.username}", organisations=list(user.roles),
                     after={"sessions_ended": ended}, source_address=client_address(request))
    return TemporaryPassword(temporary_password=password, sessions_ended=ended)


@router.post("/users/{user_id}/disable", response_model=UserOut,
             summary="Disable an account: its sessions and keys stop working")
def disable_user(user_id: Id, request: Request, conn: ConnDep,
                 principal: SignedIn) -> UserOut:
    return _set_disabled(user_id, True, request, conn, _signed_in(principal))


@router.post("/users/{user_id}/enable", response_model=UserOut, summary="Enable an account")
def enable_user(user_id: Id, request: Request, conn: ConnDep,
                principal: SignedIn) -> UserOut:
    return _set_disabled(user_id, False, request, conn, _signed_in(principal))


def _set_disabled(user_id: int, disabled: bool, request: Request, conn: ConnDep,
                  principal: Principal) -> UserOut:
    user = _managed_user(conn, principal, user_id)
    if disabled and principal.user_id == user_id:
        raise HTTPException(409, "you cannot disable your own account")
    with conn.transaction():
        people.set_disabled(conn, user_id, disabled)
        if disabled:
            sessions.end_sessions(conn, user_id, "account disabled")
        if (user.disabled_at is not None) != disabled:
            audit.record(conn, actor=principal,
                         action="user.disabled" if disabled else "user.enabled",
                         target=f"user:{user.username}", organisations=list(user.roles),
                         source_address=client_address(request))
    changed = people.get_user(conn, user_id)
    assert changed is not None
    return _user_out(changed)


# --- keys ----------------------------------------------------------------------------------

@router.get("/keys", response_model=list[KeyOut],
            summary="API keys: yours, and those of organisations you administer")
def list_keys(conn: ConnDep, principal: SignedIn,
              include_revoked: bool = False) -> list[KeyOut]:
    principal = _signed_in(principal)
    if principal.platform_admin:
        keys = key_infos(conn, include_revoked=include_revoked)
    else:
        keys = key_infos(conn, organisations=sorted(principal.admin_of),
                         include_revoked=include_revoked) if principal.admin_of else []
        if principal.user_id is not None:
            keys += key_infos(conn, user_id=principal.user_id,
                              include_revoked=include_revoked)
    unique = {k.prefix: k for k in keys}  # an admin's own key is listed once
    return [_key_out(k) for k in unique.values()]


@router.post("/keys", response_model=CreatedKey, status_code=201,
             summary="Create an API key for yourself or an organisation you administer")
def new_key(body: NewKey, request: Request, conn: ConnDep,
            principal: SignedIn) -> CreatedKey:
    principal = _signed_in(principal)
    if body.organisation_id is not None:
        _check_admin_of(principal, body.organisation_id)
        _organisation(conn, body.organisation_id)
        owner = {"organisation_id": body.organisation_id}
    elif principal.user_id is not None:
        owner = {"user_id": principal.user_id}
    else:
        raise HTTPException(422, "a key can make keys only for an organisation it "
                                 "administers: give organisation_id")
    with conn.transaction():
        try:
            key = create_key(conn, body.name, [Scope(s) for s in body.scopes], body.sites,
                             commit=False, **owner)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        prefix = key.split("_")[1]
        audit.record(conn, actor=principal, action="api_key.created", target=f"key:{prefix}",
                     organisations=[body.organisation_id] if body.organisation_id else (),
                     after={"name": body.name, "scopes": body.scopes, "sites": body.sites,
                            **owner}, source_address=client_address(request))
    (info,) = key_infos(conn, prefix=prefix)
    return CreatedKey(key=key, info=_key_out(info))


@router.post("/keys/{prefix}/revoke", response_model=KeyOut, summary="Revoke an API key")
def revoke_key(prefix: Annotated[str, Path(pattern=r"^[0-9a-f]{8}$")], request: Request,
               conn: ConnDep, principal: SignedIn) -> KeyOut:
    principal = _signed_in(principal)
    found = key_infos(conn, prefix=prefix)
    key = found[0] if found else None
    owners: set[int] = set()
    if key is not None and key.user_id is not None:
        owner_user = people.get_user(conn, key.user_id)
        owners = set(owner_user.roles) if owner_user else set()
    allowed = key is not None and (
        principal.platform_admin
        or (key.user_id is not None and key.user_id == principal.user_id)
        or (key.organisation_id is not None and key.organisation_id in principal.admin_of)
        or (key.user_id is not None and bool(owners) and owners <= principal.admin_of))
    if key is None or not allowed:
        raise HTTPException(404, f"no active key {prefix}")
    with conn.transaction():
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s "
                     "AND revoked_at IS NULL", (prefix,))
        audit.record(conn, actor=principal, action="api_key.revoked", target=f"key:{prefix}",
                     organisations=sorted(owners | ({key.organisation_id}
                                                    if key.organisation_id else set())),
                     before={"name": key.name, "scopes": key.scopes},
                     source_address=client_address(request))
    (info,) = key_infos(conn, prefix=prefix, include_revoked=True)
    return _key_out(info)


# --- identity providers --------------------------------------------------------------------

@router.get("/organisations/{organisation_id}/identity-providers",
            response_model=list[ProviderOut], summary="The organisation's single sign-on")
def list_providers(organisation_id: Id, conn: ConnDep,
                   principal: SignedIn) -> list[ProviderOut]:
    _check_admin_of(_signed_in(principal), organisation_id)
    rows = conn.execute("SELECT name, organisation_id, issuer, client_id, default_role "
                        "FROM identity_providers WHERE organisation_id = %s ORDER BY name",
                        (organisation_id,)).fetchall()
    return [ProviderOut(name=r[0], organisation_id=r[1], issuer=r[2], client_id=r[3],
                        default_role=r[4]) for r in rows]


@router.post("/organisations/{organisation_id}/identity-providers",
             response_model=ProviderOut, status_code=201,
             summary="Add an OpenID Connect provider for the organisation's people")
def add_provider(organisation_id: Id, body: NewProvider, request: Request, conn: ConnDep,
                 principal: SignedIn) -> ProviderOut:
    principal = _signed_in(principal)
    _check_admin_of(principal, organisation_id)
    _organisation(conn, organisation_id)
    with conn.transaction():
        try:
            conn.execute("INSERT INTO identity_providers (name, organisation_id, issuer, "
                         "client_id, client_secret, default_role) "
                         "VALUES (%s, %s, %s, %s, %s, %s)",
                         (body.name, organisation_id, body.issuer.rstrip("/"), body.client_id,
                          body.client_secret, body.default_role))
        except Exception as exc:  # a unique name: psycopg's UniqueViolation
            if "unique" not in str(exc).lower():
                raise
            raise HTTPException(409, f"there is already a provider {body.name!r}") from None
        audit.record(conn, actor=principal, action="identity_provider.added",
                     target=f"identity_provider:{body.name}", organisations=[organisation_id],
                     after={"issuer": body.issuer, "client_id": body.client_id,
                            "default_role": body.default_role},
                     source_address=client_address(request))
    return ProviderOut(name=body.name, organisation_id=organisation_id,
                       issuer=body.issuer.rstrip("/"), client_id=body.client_id,
                       default_role=body.default_role)


# --- audit log -----------------------------------------------------------------------------

def _audit_filters(action: str | None, actor: str | None, target: str | None,
                   since: datetime | None, until: datetime | None) -> dict:
    return {"action": action, "actor": actor, "target": target,
            "since": aware(since, "since") if since else None,
            "until": aware(until, "until") if until else None}


ActionFilter = Annotated[str | None, Query(
    max_length=100, pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$",
    description="an action, or a family: `sign_in.*`", examples=["sign_in.*"])]
Text = Annotated[str | None, Query(max_length=200)]


@router.get("/audit", response_model=AuditPage,
            summary="The audit log, newest first (admins: rows about their organisations)")
def audit_log(conn: ConnDep, principal: SignedIn, action: ActionFilter = None,
              actor: Text = None, target: Text = None, since: datetime | None = None,
              until: datetime | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None
              ) -> AuditPage:
    administered = _administered(_signed_in(principal))
    rows = audit.entries(conn, organisations=administered, limit=limit + 1,
                         before_id=int(cursor) if cursor else None,
                         **_audit_filters(action, actor, target, since, until))
    items = [AuditOut(id=r.id, at=r.at, actor=r.actor, actor_user_id=r.actor_user_id,
                      action=r.action, target=r.target, source_address=r.source_address,
                      before=r.before, after=r.after) for r in rows[:limit]]
    return AuditPage(items=items,
                     next_cursor=str(items[-1].id) if len(rows) > limit else None)


EXPORT_MAX_ROWS = 100_000


@router.get("/audit/export", summary="The audit log as CSV (the same filters)",
            responses={200: {"content": {"text/csv": {}},
                             "description": "id, at, actor, action, target, "
                                            "source_address, before, after"}})
def audit_export(conn: ConnDep, principal: SignedIn, action: ActionFilter = None,
                 actor: Text = None, target: Text = None, since: datetime | None = None,
                 until: datetime | None = None) -> StreamingResponse:
    administered = _administered(_signed_in(principal))
    rows = audit.entries(conn, organisations=administered, limit=EXPORT_MAX_ROWS,
                         **_audit_filters(action, actor, target, since, until))

    def body() -> Iterator[bytes]:
        for chunk in audit.csv_lines(rows):
            yield chunk.encode()

    return StreamingResponse(body(), media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="tidefield-audit.csv"'})
