"""Single sign-on with an organisation's OpenID Connect provider (authorization code flow
with PKCE): Authlib's OAuth 2 client trades the code for tokens, joserfc (Authlib's JOSE
library) checks the ID token's signature against the provider's published keys, and its
issuer, audience, expiry and nonce.

1. ``begin``: a sign-in in flight (``oidc_sign_ins``: state, nonce, PKCE verifier, where
   to return) and the provider's authorization URL to send the browser to.
2. ``finish``: the provider sent the browser back with a code; the ID token says who
   signed in. A person is found by the provider's subject (linked at an earlier sign-in)
   or by e-mail among the provider's organisation's people (and linked); else, when the
   provider has a ``default_role``, an account is made with that role; else refused.
3. With a ``return_to`` (the dashboards), the browser goes back there with a one-time
   code (``handoff``), which the dashboards trade for a session (``redeem``) within
   ``HANDOFF_TTL``: no session token ever travels in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg

from . import audit, people
from .sessions import NewSession, SignInPolicy, open_session

DISCOVERY_TTL_S = 300.0
HANDOFF_TTL = timedelta(minutes=10)
HTTP_TIMEOUT_S = 10.0
SCOPES = "openid email profile"

_discovery: dict[str, tuple[float, dict[str, Any]]] = {}


class SsoError(Exception):
    """A single sign-on that cannot go on; ``status`` is the HTTP answer (400: a bad or
    stale request, 403: nobody to sign in as, 502: the provider failed)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


@dataclass(frozen=True, slots=True)
class Provider:
    id: int
    name: str
    organisation_id: int
    issuer: str
    client_id: str
    client_secret: str
    default_role: str | None


def provider(conn: psycopg.Connection, name: str) -> Provider | None:
    row = conn.execute("SELECT id, name, organisation_id, issuer, client_id, client_secret, "
                       "default_role FROM identity_providers WHERE name = %s",
                       (name,)).fetchone()
    return Provider(*row) if row else None


def listed(conn: psycopg.Connection) -> list[dict[str, str]]:
    """What a sign-in page offers: each provider's name and its organisation's name."""
    return [{"name": r[0], "label": r[1]} for r in conn.execute(
        "SELECT p.name, o.name FROM identity_providers p "
        "JOIN organisations o ON o.id = p.organisation_id ORDER BY o.name, p.name")]


def discovery(issuer: str) -> dict[str, Any]:
    """The provider's metadata (``/.well-known/openid-configuration``), kept a while."""
    kept = _discovery.get(issuer)
    if kept and time.monotonic() - kept[0] < DISCOVERY_TTL_S:
        return kept[1]
    try:
        answer = httpx.get(f"{issuer}/.well-known/openid-configuration",
                           timeout=HTTP_TIMEOUT_S)
        answer.raise_for_status()
        metadata = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoError(f"the identity provider at {issuer} did not answer: {exc}",
                       502) from exc
    if metadata.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
        raise SsoError(f"the provider at {issuer} names another issuer "
                       f"({metadata.get('issuer')!r})", 502)
    _discovery[issuer] = (time.monotonic(), metadata)
    return metadata


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def begin(conn: psycopg.Connection, found: Provider, redirect_uri: str,
          return_to: str | None) -> str:
    """Record a sign-in in flight; the URL to send the browser to."""
    metadata = discovery(found.issuer)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    conn.execute("DELETE FROM oidc_sign_ins WHERE created_at < now() - %s", (HANDOFF_TTL,))
    conn.execute("INSERT INTO oidc_sign_ins (state, provider_id, nonce, code_verifier, "
                 "return_to) VALUES (%s, %s, %s, %s, %s)",
                 (state, found.id, nonce, verifier, return_to))
    query = urlencode({"response_type": "code", "client_id": found.client_id,
                       "redirect_uri": redirect_uri, "scope": SCOPES, "state": state,
                       "nonce": nonce, "code_challenge": _challenge(verifier),
                       "code_challenge_method": "S256"})
    return f"{metadata['authorization_endpoint']}?{query}"


def _claims(found: Provider, metadata: dict[str, Any], code: str, verifier: str,
            redirect_uri: str, nonce: str) -> dict[str, Any]:
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    try:
        with OAuth2Client(found.client_id, found.client_secret,
                          redirect_uri=redirect_uri, timeout=HTTP_TIMEOUT_S) as client:
            token = client.fetch_token(metadata["token_endpoint"], code=code,
                                       code_verifier=verifier,
                                       grant_type="authorization_code")
        keys = httpx.get(metadata["jwks_uri"], timeout=HTTP_TIMEOUT_S)
        keys.raise_for_status()
        key_set = KeySet.import_key_set(keys.json())
    except Exception as exc:  # any failure of the provider's exchange: Authlib, httpx, JSON
        raise SsoError(f"the identity provider refused the sign-in: {exc}", 502) from exc
    if "id_token" not in token:
        raise SsoError("the identity provider sent no ID token", 502)
    try:
        decoded = jwt.decode(token["id_token"], key_set)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": metadata["issuer"]},
            aud={"essential": True, "value": found.client_id},
            sub={"essential": True}, exp={"essential": True},
            nonce={"essential": True, "value": nonce}).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise SsoError(f"the ID token is not valid: {exc}", 502) from exc
    return dict(decoded.claims)


def _person(conn: psycopg.Connection, found: Provider, claims: dict[str, Any]) -> int:
    subject = str(claims["sub"])
    row = conn.execute("SELECT user_id FROM external_identities WHERE provider_id = %s "
                       "AND subject = %s", (found.id, subject)).fetchone()
    if row:
        return int(row[0])
    email = str(claims.get("email") or "").strip().lower()
    if not email or claims.get("email_verified") is False:
        raise SsoError("the identity provider gave no verified e-mail address", 403)
    row = conn.execute("SELECT u.id FROM users u JOIN memberships m ON m.user_id = u.id "
                       "WHERE lower(u.email) = %s AND m.organisation_id = %s",
                       (email, found.organisation_id)).fetchone()
    if row is None:
        if found.default_role is None:
            raise SsoError(f"no account for {email} in this organisation; ask its admin",
                           403)
        username = _free_username(conn, email)
        user_id = people.create_user(conn, username, email=email,
                                     display_name=str(claims.get("name") or ""),
                                     must_change_password=False)
        people.set_role(conn, user_id, found.organisation_id, found.default_role)
        audit.record(conn, actor=f"sso:{found.name}", action="user.created",
                     target=f"user:{username}", organisations=[found.organisation_id],
                     after={"email": email, "role": found.default_role})
    else:
        user_id = int(row[0])
    conn.execute("INSERT INTO external_identities (provider_id, subject, user_id) "
                 "VALUES (%s, %s, %s)", (found.id, subject, user_id))
    return user_id


def _free_username(conn: psycopg.Connection, email: str) -> str:
    base = re.sub(r"[^a-z0-9._@-]", "-", email)[:60].strip("-.") or "user"
    name, n = base, 1
    while people.find_user(conn, name) is not None:
        n += 1
        name = f"{base[:56]}-{n}"
    return name


@dataclass(frozen=True, slots=True)
class Finished:
    user_id: int
    username: str
    return_to: str | None
    handoff: str | None  # the one-time code, when there is somewhere to return to


def finish(conn: psycopg.Connection, name: str, state: str, code: str, redirect_uri: str,
           *, address: str | None) -> Finished:
    """The provider's answer: who signed in (audited either way)."""
    row = conn.execute(
        "DELETE FROM oidc_sign_ins WHERE state = %s AND handoff_hash IS NULL "
        "AND created_at > now() - %s RETURNING provider_id, nonce, code_verifier, return_to",
        (state, HANDOFF_TTL)).fetchone()
    found = provider(conn, name)
    if row is None or found is None or found.id != row[0]:
        raise SsoError("this sign-in is unknown or stale: start again")
    try:
        claims = _claims(found, discovery(found.issuer), code, row[2], redirect_uri, row[1])
        with conn.transaction():
            user_id = _person(conn, found, claims)
            user = people.get_user(conn, user_id)
            assert user is not None
            if user.disabled_at is not None:
                raise SsoError("this account is disabled", 403)
    except SsoError as exc:
        audit.record(conn, actor=f"sso:{found.name}", action="sign_in.failed",
                     target=f"identity_provider:{found.name}", source_address=address,
                     organisations=[found.organisation_id],
                     after={"reason": exc.message, "method": f"oidc:{found.name}"})
        raise
    handoff = None
    if row[3]:
        handoff = secrets.token_urlsafe(32)
        conn.execute("INSERT INTO oidc_sign_ins (state, provider_id, nonce, code_verifier, "
                     "return_to, user_id, handoff_hash) VALUES (%s, %s, '', '', %s, %s, %s)",
                     (secrets.token_urlsafe(24), found.id, row[3], user_id,
                      hashlib.sha256(handoff.encode()).digest()))
    return Finished(user_id, user.username, row[3], handoff)


def open_sso_session(conn: psycopg.Connection, user_id: int, provider_name: str, *,
                     address: str | None, policy: SignInPolicy) -> NewSession:
    from .access import user_principal

    user = people.get_user(conn, user_id)
    assert user is not None
    session = open_session(conn, user_id, user.username, method=f"oidc:{provider_name}",
                           address=address, policy=policy)
    audit.record(conn, actor=user_principal(conn, user_id, user.username),
                 action="sign_in.succeeded", target=f"user:{user.username}",
                 source_address=address,
                 after={"method": f"oidc:{provider_name}", "session": session.session_id})
    return session


def redeem(conn: psycopg.Connection, handoff: str, *, address: str | None,
           policy: SignInPolicy) -> NewSession:
    """Trade a one-time code for a session (once, within ``HANDOFF_TTL``)."""
    row = conn.execute(
        "UPDATE oidc_sign_ins s SET redeemed_at = now() FROM identity_providers p "
        "WHERE s.handoff_hash = %s AND s.redeemed_at IS NULL AND p.id = s.provider_id "
        "AND s.created_at > now() - %s RETURNING s.user_id, p.name",
        (hashlib.sha256(handoff.encode()).digest(), HANDOFF_TTL)).fetchone()
    if row is None:
        raise SsoError("this sign-in code is unknown, used or stale: sign in again", 401)
    return open_sso_session(conn, int(row[0]), row[1], address=address, policy=policy)
