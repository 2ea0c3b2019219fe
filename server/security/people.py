"""People: accounts, their passwords (argon2id), their optional second factor (TOTP), and
their roles in organisations.

Passwords are hashed with argon2-cffi's ``PasswordHasher``: argon2id with OWASP's
recommended minimum (19 MiB, 2 passes, 1 lane) rather than the library's 64 MiB, 3 passes,
4 lanes, since the platform runs on small machines where a burst of sign-ins (or of
guesses, before the lock-out) must not starve ingest; a hash made with other parameters
is replaced at the next sign-in.
A new account, and one whose password an admin reset, must choose a new password at its
first sign-in (``must_change_password``). Every change here is written to the audit log
by the caller that knows who asked (the API's routes, the CLI).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .access import ROLES

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this bounds the work per attempt
TOTP_ISSUER = "Tidefield"

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verified when no such account exists, so that a sign-in takes as long either way.
_ABSENT_HASH = _hasher.hash(secrets.token_urlsafe(24))


class AccountError(ValueError):
    """A request about accounts that cannot be done as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    display_name: str
    email: str | None
    must_change_password: bool
    totp_enabled: bool
    created_at: datetime
    disabled_at: datetime | None
    roles: dict[int, str]  # organisation id -> role


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Whether ``password`` matches; always does the same work, hash or none."""
    try:
        return _hasher.verify(password_hash or _ABSENT_HASH, password) and \
            password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def check_new_password(password: str, username: str, *,
                       min_length: int = MIN_PASSWORD_LENGTH) -> None:
    if len(password) < min_length:
        raise AccountError(f"a password needs at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise AccountError("a password may not contain the user name")


def temporary_password() -> str:
    """A password an admin hands over, to be changed at the first sign-in."""
    return secrets.token_urlsafe(12)


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise AccountError("a user name is 2-64 characters of a-z, 0-9, '.', '_', '@' or "
                           "'-', starting with a letter or digit")
    return username


def _user(conn: psycopg.Connection, where: str, value: object) -> User | None:
    row = conn.execute(
        f"""SELECT u.id, u.username, u.display_name, u.email, u.must_change_password,
                   u.totp_secret IS NOT NULL, u.created_at, u.disabled_at,
                   coalesce(jsonb_object_agg(m.organisation_id, m.role)
                            FILTER (WHERE m.user_id IS NOT NULL), '{{}}')
            FROM users u LEFT JOIN memberships m ON m.user_id = u.id
            WHERE {where} GROUP BY u.id""", (value,)).fetchone()
    if row is None:
        return None
    return User(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                roles={int(k): v for k, v in row[8].items()})


def get_user(conn: psycopg.Connection, user_id: int) -> User | None:
    return _user(conn, "u.id = %s", user_id)


def find_user(conn: psycopg.Connection, username: str) -> User | None:
    return _user(conn, "u.username = %s", username.lower())


def list_users(conn: psycopg.Connection, organisations: list[int] | None) -> list[User]:
    """People with a role in one of ``organisations`` (None: everyone)."""
    ids = [r[0] for r in conn.execute(
        "SELECT u.id FROM users u WHERE %(orgs)s::int[] IS NULL OR EXISTS ("
        "SELECT 1 FROM memberships m WHERE m.user_id = u.id "
        "AND m.organisation_id = ANY(%(orgs)s)) ORDER BY u.username",
        {"orgs": organisations})]
    return [u for u in (get_user(conn, i) for i in ids) if u is not None]


def create_user(conn: psycopg.Connection, username: str, *, password: str | None = None,
                display_name: str = "", email: str | None = None,
                must_change_password: bool = True) -> int:
    """A new account; ``password`` None: single sign-on only (no password sign-in)."""
    username = check_username(username.lower())
    if password is not None:
        check_new_password(password, username, min_length=1 if must_change_password
                           else MIN_PASSWORD_LENGTH)
    try:
        row = conn.execute(
            "INSERT INTO users (username, display_name, email, password_hash, "
            "must_change_password) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (username, display_name, email,
             hash_password(password) if password is not None else None,
             must_change_password)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise AccountError(f"there is already an account {username!r} (or that "
                           f"e-mail address)") from None
    assert row is not None
    return int(row[0])


def set_role(conn: psycopg.Connection, user_id: int, organisation_id: int,
             role: str | None) -> str | None:
    """Give the person ``role`` in the organisation (None: take every role there away);
    returns the role held before."""
    if role is not None and role not in ROLES:
        raise AccountError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    before = conn.execute("SELECT role FROM memberships WHERE user_id = %s AND "
                          "organisation_id = %s FOR UPDATE",
                          (user_id, organisation_id)).fetchone()
    if role is None:
        conn.execute("DELETE FROM memberships WHERE user_id = %s AND organisation_id = %s",
                     (user_id, organisation_id))
    else:
        conn.execute("INSERT INTO memberships (user_id, organisation_id, role) "
                     "VALUES (%s, %s, %s) ON CONFLICT (user_id, organisation_id) "
                     "DO UPDATE SET role = excluded.role", (user_id, organisation_id, role))
    return before[0] if before else None


def set_password(conn: psycopg.Connection, user_id: int, password: str, *,
                 must_change: bool) -> None:
    conn.execute("UPDATE users SET password_hash = %s, must_change_password = %s, "
                 "password_changed_at = now() WHERE id = %s",
                 (hash_password(password), must_change, user_id))


def set_disabled(conn: psycopg.Connection, user_id: int, disabled: bool) -> None:
    conn.execute("UPDATE users SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, "
                 "now()) END WHERE id = %s", (disabled, user_id))


# --- second factor ------------------------------------------------------------------------

def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str) -> str:
    """What an authenticator app scans (as a QR code) or takes typed in."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, *, at: float | None = None) -> int | None:
    """The time step ``code`` is valid for (the current one, or one either side, for
    clocks that drift), or None."""
    import time

    if not (code.isdigit() and len(code) == 6):
        return None
    try:
        totp = pyotp.TOTP(secret)
        totp.byte_secret()
    except (ValueError, TypeError):  # pyotp refuses a short or malformed secret
        return None
    now = time.time() if at is None else at
    for drift in (0, -1, 1):
        moment = now + drift * totp.interval
        if secrets.compare_digest(totp.at(moment), code):
            return int(moment // totp.interval)
    return None


def use_totp(conn: psycopg.Connection, user_id: int, secret: str, code: str) -> bool:
    """Whether ``code`` is good now and not used before (each code signs in once)."""
    step = totp_step(secret, code)
    if step is None:
        return False
    return conn.execute("UPDATE users SET totp_last_step = %s WHERE id = %s AND "
                        "(totp_last_step IS NULL OR totp_last_step < %s)",
                        (step, user_id, step)).rowcount == 1


def set_totp(conn: psycopg.Connection, user_id: int, secret: str | None) -> None:
    conn.execute("UPDATE users SET totp_secret = %s, totp_last_step = NULL WHERE id = %s",
                 (secret, user_id))
