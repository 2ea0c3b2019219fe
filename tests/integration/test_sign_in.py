"""Signing in against the real API and database: lock-out, what timing tells, sessions,
forced password changes, resets and the second factor."""

from __future__ import annotations

import re
import statistics
import time

import psycopg
import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, add_person, two_companies
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings


def api(db_url: str, **settings) -> TestClient:
    return TestClient(create_app(ApiSettings(database_url=db_url, **settings)))


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
    return {"url": db_url, "companies": companies}


def sign_in(client: TestClient, username: str, password: str = PASSWORD, **extra):
    return client.post("/api/v1/auth/sign-in",
                       json={"username": username, "password": password, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(url: str, action: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT actor, actor_user_id, target, source_address FROM audit_log "
                            "WHERE action = %s ORDER BY id", (action,)).fetchall()


# --- brute force ---------------------------------------------------------------------------

def test_twenty_wrong_passwords_lock_the_account_and_the_right_one_is_refused(world):
    with api(world["url"]) as client:
        codes = [sign_in(client, "anna", f"guess number {i}").status_code for i in range(20)]
        # the first ten are wrong passwords; from then on the name is locked
        assert codes[:10] == [401] * 10 and set(codes[10:]) == {423}
        right = sign_in(client, "anna")
        assert right.status_code == 423
        assert 800 <= int(right.headers["Retry-After"]) <= 900  # 15 minutes
        assert "try again" in right.json()["error"]["message"]
        # another person is not locked out by anna's attacker
        assert sign_in(client, "alice").status_code == 200
        # once the lock has run out (its end moved into the past), the password works
        with psycopg.connect(world["url"]) as conn:
            conn.execute("UPDATE sign_in_throttle SET locked_until = now() - interval '1 s' "
                         "WHERE subject = 'user:anna'")
        assert sign_in(client, "anna").status_code == 200
    assert len(audit_rows(world["url"], "sign_in.failed")) == 10
    locked = audit_rows(world["url"], "sign_in.locked")
    assert len(locked) == 11 and {row[0] for row in locked} == {"anna"}


def test_a_name_without_an_account_locks_exactly_like_one_with_an_account(world):
    with api(world["url"]) as client:
        real = [sign_in(client, "anna", "wrong").status_code for _ in range(12)]
        ghost = [sign_in(client, "nobody-here", "wrong").status_code for _ in range(12)]
        assert real == ghost == [401] * 10 + [423] * 2
        answers = [sign_in(client, name, "wrong").json()["error"]
                   for name in ("anna", "nobody-here")]
        assert answers[0]["status"] == answers[1]["status"] == 423
        assert re.sub(r"\d+", "N", answers[0]["message"]) == \
            re.sub(r"\d+", "N", answers[1]["message"])


def test_failures_from_one_address_lock_the_address(world):
    with api(world["url"], sign_in_address_failures=15,
             trusted_proxies=["testclient"]) as client:
        attacker = {"X-Forwarded-For": "203.0.113.9"}
        codes = [client.post("/api/v1/auth/sign-in", headers=attacker, json={
            "username": f"name{i}", "password": "x"}).status_code for i in range(16)]
        assert codes[:15] == [401] * 15 and codes[15] == 423
        # anna from that address is refused; anna from elsewhere signs in
        assert client.post("/api/v1/auth/sign-in", headers=attacker, json={
            "username": "anna", "password": PASSWORD}).status_code == 423
        assert client.post("/api/v1/auth/sign-in", headers={"X-Forwarded-For": "198.51.100.4"},
                           json={"username": "anna", "password": PASSWORD}).status_code == 200
    # the audit log has the caller's address, as the trusted proxy forwarded it
    assert {row[3] for row in audit_rows(world["url"], "sign_in.failed")} == {"203.0.113.9"}


def test_timing_does_not_tell_whether_an_account_exists(world):
    """Wrong passwords for an account and for a name with none, interleaved: the medians
    differ by less than a fifth (argon2 is checked against a stand-in hash)."""
    with api(world["url"], sign_in_account_failures=1000,
             sign_in_address_failures=100_000) as client:
        sign_in(client, "anna", "warm up")
        sign_in(client, "ghost", "warm up")
        real, ghost = [], []
        for i in range(15):
            for name, sink in (("anna", real), (f"ghost{i}", ghost)):
                started = time.perf_counter()
                assert sign_in(client, name, "not the password").status_code == 401
                sink.append(time.perf_counter() - started)
    real_ms, ghost_ms = statistics.median(real) * 1000, statistics.median(ghost) * 1000
    print(f"median wrong-password sign-in: account {real_ms:.1f} ms, "
          f"no account {ghost_ms:.1f} ms")
    assert real_ms > 5  # argon2 did run
    assert abs(real_ms - ghost_ms) < 0.2 * max(real_ms, ghost_ms)


# --- sessions ------------------------------------------------------------------------------

def test_expired_idle_and_signed_out_sessions_are_refused(world):
    with api(world["url"]) as client:
        tokens = [sign_in(client, "anna").json()["token"] for _ in range(3)]
        for token in tokens:
            assert client.get("/api/v1/sites", headers=bearer(token)).status_code == 200
        with psycopg.connect(world["url"]) as conn:
            conn.execute("UPDATE sessions SET expires_at = now() - interval '1 s' "
                         "WHERE id = (SELECT min(id) FROM sessions)")
            conn.execute("UPDATE sessions SET last_seen_at = now() - interval '2 hours' "
                         "WHERE id = (SELECT min(id) + 1 FROM sessions)")
        assert client.post("/api/v1/auth/sign-out", headers=bearer(tokens[2])).status_code \
            == 204
        for token in tokens:
            refused = client.get("/api/v1/sites", headers=bearer(token))
            assert refused.status_code == 401
            assert refused.json()["error"]["message"].startswith("the session has ended")
    assert [row[0] for row in audit_rows(world["url"], "sign_out")] == ["anna"]


def test_the_session_cookie_works_for_a_browser_and_sign_out_clears_it(world):
    with api(world["url"]) as client:
        answer = sign_in(client, "anna")
        cookie = answer.headers["set-cookie"]
        assert "tidefield_session=" in cookie and "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert client.get("/api/v1/auth/me").json()["username"] == "anna"  # by cookie
        assert client.post("/api/v1/auth/sign-out").status_code == 204
        assert client.get("/api/v1/auth/me").status_code == 401


def test_a_password_change_ends_the_other_sessions(world):
    with api(world["url"]) as client:
        laptop = sign_in(client, "anna").json()["token"]
        phone = sign_in(client, "anna").json()["token"]
        changed = client.post("/api/v1/auth/password", headers=bearer(laptop), json={
            "current_password": PASSWORD, "new_password": "a much better passphrase"})
        assert changed.status_code == 204
        assert client.get("/api/v1/auth/me", headers=bearer(laptop)).status_code == 200
        assert client.get("/api/v1/auth/me", headers=bearer(phone)).status_code == 401
        assert sign_in(client, "anna").status_code == 401
        assert sign_in(client, "anna", "a much better passphrase").status_code == 200
        weak = client.post("/api/v1/auth/password", headers=bearer(laptop), json={
            "current_password": "a much better passphrase", "new_password": "short"})
        assert weak.status_code == 422 and "at least 12" in weak.text
    (row,) = audit_rows(world["url"], "password.changed")
    assert row[0] == "anna" and row[1] == world["companies"].users["anna"]


def test_the_first_sign_in_must_choose_a_new_password(world):
    with psycopg.connect(world["url"]) as conn:
        add_person(conn, "newcomer", {world["companies"].a_org: "viewer"},
                   password="temporary-1", must_change=True)
    with api(world["url"]) as client:
        answer = sign_in(client, "newcomer", "temporary-1").json()
        assert answer["must_change_password"] is True
        headers = bearer(answer["token"])
        blocked = client.get("/api/v1/sites", headers=headers)
        assert blocked.status_code == 403 and "new password" in blocked.text
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
        assert client.post("/api/v1/auth/password", headers=headers, json={
            "current_password": "temporary-1",
            "new_password": "my own long phrase"}).status_code == 204
        assert client.get("/api/v1/sites", headers=headers).status_code == 200


def test_an_admin_resets_a_password_and_the_persons_sessions_end(world):
    companies = world["companies"]
    with api(world["url"]) as client:
        anna = sign_in(client, "anna").json()["token"]
        alice = bearer(sign_in(client, "alice").json()["token"])
        reset = client.post(f"/api/v1/users/{companies.users['anna']}/password-reset",
                            headers=alice)
        assert reset.status_code == 200 and reset.json()["sessions_ended"] == 1
        assert client.get("/api/v1/auth/me", headers=bearer(anna)).status_code == 401
        fresh = sign_in(client, "anna", reset.json()["temporary_password"]).json()
        assert fresh["must_change_password"] is True
        # bob administers B, not A: anna is "not found" for him
        bob = bearer(sign_in(client, "bob").json()["token"])
        assert client.post(f"/api/v1/users/{companies.users['anna']}/password-reset",
                           headers=bob).status_code == 404
    (row,) = audit_rows(world["url"], "password.reset")
    assert row[0] == "alice" and row[2] == "user:anna"


def test_the_second_factor(world):
    with api(world["url"]) as client:
        headers = bearer(sign_in(client, "anna").json()["token"])
        setup = client.post("/api/v1/auth/totp/setup", headers=headers).json()
        totp = pyotp.TOTP(setup["secret"])
        assert setup["uri"].startswith("otpauth://totp/Tidefield:anna")
        wrong = client.post("/api/v1/auth/totp", headers=headers,
                            json={"secret": setup["secret"], "code": "000000"
                                  if totp.now() != "000000" else "111111"})
        assert wrong.status_code == 422
        assert client.post("/api/v1/auth/totp", headers=headers, json={
            "secret": setup["secret"], "code": totp.now()}).status_code == 204
        needs = sign_in(client, "anna")
        assert needs.status_code == 401 and "one-time code" in needs.text
        code = totp.now()
        assert sign_in(client, "anna", code=code).status_code == 200
        assert sign_in(client, "anna", code=code).status_code == 401  # a code is good once
        assert client.post("/api/v1/auth/totp/remove", headers=headers,
                           json={"password": PASSWORD}).status_code == 204
        assert sign_in(client, "anna").status_code == 200
    assert len(audit_rows(world["url"], "totp.enabled")) == 1
    assert len(audit_rows(world["url"], "totp.disabled")) == 1


def test_a_disabled_account_and_its_keys_stop_working(world):
    companies = world["companies"]
    with api(world["url"]) as client:
        bob_session = sign_in(client, "bob").json()["token"]
        root = bearer(sign_in(client, "root").json()["token"])
        assert client.post(f"/api/v1/users/{companies.users['bob']}/disable",
                           headers=root).json()["disabled"] is True
        assert client.get("/api/v1/auth/me", headers=bearer(bob_session)).status_code == 401
        assert client.get("/api/v1/sites", headers={"X-API-Key": companies.keys["bob"]}
                          ).status_code == 401
        assert sign_in(client, "bob").status_code == 401
