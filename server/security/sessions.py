"""Signing in and out: sessions, and the lock-out that makes guessing passwords useless.

A session token reads ``tfs_<secret>``; only its SHA-256 is stored (the token is shown
once, at sign-in). A session ends at its expiry, after ``idle`` without use, at sign-out,
when its person changes their password (every other session of theirs), when an admin
resets the password or disables the account (all of them).

Lock-out: failed sign-ins are counted per user name and per address (``sign_in_throttle``)
over a window; at the limit the name (or address) is refused for a while, the right
password included. A user name with no account is counted and locked exactly like one
with an account, and a password is always checked against an argon2 hash (a stand-in
when there is no account), so neither the answers nor their timing tell whether an
account exists.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

import psycopg

from . import audit, people
from .access import user_principal
from .api_keys import Principal

TOKEN_PREFIX = "tfs_"
LAST_SEEN_EVERY = timedelta(seconds=60)  # a session's last use is written at most this often


@dataclass(frozen=True, slots=True)
class SignInPolicy:
    session_hours: float = 12.0
    idle_minutes: float = 60.0
    account_failures: int = 10
    address_failures: int = 100
    window_minutes: float = 15.0
    lock_minutes: float = 15.0


class SignInRefused(Exception):
    """A sign-in that did not succeed. ``status``: 401 (wrong name, password or code),
    423 (locked for ``retry_after_s``); ``code_required``: the password was right and a
    one-time code is needed."""

    def __init__(self, message: str, *, status: int = 401, retry_after_s: int | None = None,
                 code_required: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.code_required = code_required


WRONG = "wrong user name, password or one-time code"


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    session_id: int
    user_id: int
    username: str
    must_change_password: bool
    expires_at: object


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _subjects(username: str, address: str | None) -> list[str]:
    return [f"user:{username}"] + ([f"address:{address}"] if address else [])


def locked_for(conn: psycopg.Connection, username: str, address: str | None) -> int | None:
    """Seconds the name or the address stays locked, or None."""
    row = conn.execute(
        "SELECT ceil(extract(epoch FROM max(locked_until) - now()))::int "
        "FROM sign_in_throttle WHERE subject = ANY(%s) AND locked_until > now()",
        (_subjects(username, address),)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _count_failure(conn: psycopg.Connection, subject: str, limit: int,
                   policy: SignInPolicy) -> None:
    window = timedelta(minutes=policy.window_minutes)
    row = conn.execute(
        """INSERT INTO sign_in_throttle AS t (subject, failures, window_started)
           VALUES (%(subject)s, 1, now())
           ON CONFLICT (subject) DO UPDATE SET
             failures = CASE WHEN t.window_started < now() - %(window)s THEN 1
                             ELSE t.failures + 1 END,
             window_started = CASE WHEN t.window_started < now() - %(window)s THEN now()
                                   ELSE t.window_started END
           RETURNING failures""", {"subject": subject, "window": window}).fetchone()
    if row is not None and row[0] >= limit:
        conn.execute("UPDATE sign_in_throttle SET locked_until = now() + %s, failures = 0, "
                     "window_started = now() WHERE subject = %s",
                     (timedelta(minutes=policy.lock_minutes), subject))


def _failed(conn: psycopg.Connection, username: str, address: str | None,
            policy: SignInPolicy, user_id: int | None, reason: str) -> None:
    _count_failure(conn, f"user:{username}", policy.account_failures, policy)
    if address:
        _count_failure(conn, f"address:{address}", policy.address_failures, policy)
    audit.record(conn, actor=username, action="sign_in.failed", target=f"user:{username}",
                 source_address=address, after={"reason": reason},
                 organisations=_organisations(conn, user_id))


def _organisations(conn: psycopg.Connection, user_id: int | None) -> list[int]:
    if user_id is None:
        return []
    return [r[0] for r in conn.execute(
        "SELECT organisation_id FROM memberships WHERE user_id = %s", (user_id,))]


def sign_in(conn: psycopg.Connection, username: str, password: str, *,
            code: str | None = None, address: str | None = None,
            policy: SignInPolicy = SignInPolicy()) -> NewSession:
    """Check a password sign-in and open a session, or raise ``SignInRefused``. Writes
    the audit row either way; ``conn`` should be in autocommit mode (a refusal must
    still count)."""
    name = username.strip().lower()[:64]
    locked = locked_for(conn, name, address)
    if locked is not None:
        audit.record(conn, actor=name, action="sign_in.locked", target=f"user:{name}",
                     source_address=address)
        raise SignInRefused(f"too many failed sign-ins: try again in {locked} s",
                            status=423, retry_after_s=locked)
    row = conn.execute("SELECT id, password_hash, disabled_at IS NOT NULL, totp_secret, "
                       "must_change_password FROM users WHERE username = %s",
                       (name,)).fetchone()
    password_hash = row[1] if row else None
    good = people.verify_password(password[:people.MAX_PASSWORD_LENGTH], password_hash)
    if not good or row is None or row[2]:
        _failed(conn, name, address, policy, row[0] if row else None,
                "disabled" if good and row else "password")
        raise SignInRefused(WRONG)
    user_id, totp_secret = int(row[0]), row[3]
    if totp_secret is not None:
        if not code:
            raise SignInRefused("a one-time code from your authenticator app is required",
                                code_required=True)
        if not people.use_totp(conn, user_id, totp_secret, code.strip()):
            _failed(conn, name, address, policy, user_id, "code")
            raise SignInRefused(WRONG)
    if password_hash is not None and people.needs_rehash(password_hash):
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s",
                     (people.hash_password(password), user_id))
    conn.execute("DELETE FROM sign_in_throttle WHERE subject = %s", (f"user:{name}",))
    session = open_session(conn, user_id, name, method="password", address=address,
                           policy=policy, must_change_password=bool(row[4]))
    audit.record(conn, actor=user_principal(conn, user_id, name),
                 action="sign_in.succeeded", target=f"user:{name}", source_address=address,
                 after={"method": "password", "session": session.session_id})
    return session


def open_session(conn: psycopg.Connection, user_id: int, username: str, *, method: str,
                 address: str | None, policy: SignInPolicy,
                 must_change_password: bool = False) -> NewSession:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO sessions (token_hash, user_id, method, expires_at, source_address) "
        "VALUES (%s, %s, %s, now() + %s, %s) RETURNING id, expires_at",
        (_hash(token), user_id, method, timedelta(hours=policy.session_hours),
         address)).fetchone()
    assert row is not None
    return NewSession(token, int(row[0]), user_id, username, must_change_password, row[1])


def authenticate(conn: psycopg.Connection, token: str, *,
                 policy: SignInPolicy = SignInPolicy()) -> Principal | None:
    """The person a live session token belongs to, or None (unknown, expired, idle too
    long, ended, or the account disabled)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = conn.execute(
        """SELECT s.id, u.id, u.username, u.must_change_password,
                  s.last_seen_at < now() - %(every)s
           FROM sessions s JOIN users u ON u.id = s.user_id
           WHERE s.token_hash = %(hash)s AND s.ended_at IS NULL AND s.expires_at > now()
             AND s.last_seen_at > now() - %(idle)s AND u.disabled_at IS NULL""",
        {"hash": _hash(token), "every": LAST_SEEN_EVERY,
         "idle": timedelta(minutes=policy.idle_minutes)}).fetchone()
    if row is None:
        return None
    if row[4]:
        conn.execute("UPDATE sessions SET last_seen_at = now() WHERE id = %s", (row[0],))
    return user_principal(conn, row[1], row[2], session_id=row[0],
                          must_change_password=row[3])


def end_session(conn: psycopg.Connection, session_id: int, because: str) -> bool:
    return conn.execute("UPDATE sessions SET ended_at = now(), ended_because = %s "
                        "WHERE id = %s AND ended_at IS NULL",
                        (because, session_id)).rowcount == 1


def end_sessions(conn: psycopg.Connection, user_id: int, because: str, *,
                 keep: int | None = None) -> int:
    """End every live session of the person but ``keep``; returns how many ended."""
    return conn.execute("UPDATE sessions SET ended_at = now(), ended_because = %s "
                        "WHERE user_id = %s AND ended_at IS NULL AND id IS DISTINCT FROM %s",
                        (because, user_id, keep)).rowcount


def change_password(conn: psycopg.Connection, principal: Principal, current: str, new: str,
                    *, address: str | None = None) -> int:
    """The person changes their own password: the current one is checked, every other
    session of theirs ends. Returns how many sessions ended."""
    assert principal.user_id is not None
    row = conn.execute("SELECT password_hash FROM users WHERE id = %s",
                       (principal.user_id,)).fetchone()
    if row is None or not people.verify_password(current, row[0]):
        raise people.AccountError("the current password is wrong")
    if current == new:
        raise people.AccountError("the new password must differ from the current one")
    people.check_new_password(new, principal.name)
    with conn.transaction():
        people.set_password(conn, principal.user_id, new, must_change=False)
        ended = end_sessions(conn, principal.user_id, "password changed",
                             keep=principal.session_id)
        audit.record(conn, actor=principal, action="password.changed",
                     target=f"user:{principal.name}", source_address=address,
                     after={"other_sessions_ended": ended})
    return ended
