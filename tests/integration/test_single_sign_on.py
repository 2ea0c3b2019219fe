"""Single sign-on against a local OpenID provider (oidc-provider-mock, an Authlib-based
provider run in a thread of the test): the whole authorization-code flow over HTTP, the
hand-off to the dashboards, and the refusals."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import httpx
import oidc_provider_mock
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, two_companies
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings

DASHBOARD = "http://127.0.0.1:8501"


@pytest.fixture(scope="module")
def provider_url():
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def world(db_url, provider_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
        conn.execute("UPDATE users SET email = 'anna@company-a.example' WHERE username = 'anna'")
        conn.commit()
    with TestClient(create_app(ApiSettings(database_url=db_url)),
                    follow_redirects=False) as client:
        alice = client.post("/api/v1/auth/sign-in", json={
            "username": "alice", "password": PASSWORD}).json()["token"]
        added = client.post(f"/api/v1/organisations/{companies.a_org}/identity-providers",
                            headers={"Authorization": f"Bearer {alice}"},
                            json={"name": "a-login", "issuer": provider_url,
                                  "client_id": "tidefield", "client_secret": "not-a-secret"})
        assert added.status_code == 201, added.text
        yield {"url": db_url, "client": client, "provider": provider_url,
               "companies": companies}


def through_provider(world, subject: str, email: str, *, return_to: str | None = DASHBOARD):
    """A browser's trip: the API sends it to the provider, the person signs in there as
    ``subject``, the provider sends it back to the API's callback."""
    client = world["client"]
    assert httpx.put(f"{world['provider']}/users/{quote(subject)}",
                     json={"email": email, "name": subject.title()}).status_code == 204
    params = {"return_to": return_to} if return_to else {}
    start = client.get("/api/v1/auth/oidc/a-login/login", params=params)
    assert start.status_code == 302, start.text
    to_provider = start.headers["location"]
    assert to_provider.startswith(world["provider"])
    query = parse_qs(urlsplit(to_provider).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"][0]
    authorised = httpx.post(to_provider, data={"sub": subject, "action": "allow"})
    assert authorised.status_code == 302, authorised.text
    back = urlsplit(authorised.headers["location"])
    assert back.path == "/api/v1/auth/oidc/a-login/callback"
    return client.get(f"{back.path}?{back.query}")


def test_a_known_person_signs_in_and_the_dashboard_gets_a_session(world):
    client = world["client"]
    answer = through_provider(world, "anna-sub-1", "anna@company-a.example")
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(DASHBOARD + "/?sign_in=") or \
        location.startswith(DASHBOARD + "?sign_in=")
    handoff = parse_qs(urlsplit(location).query)["sign_in"][0]
    assert not handoff.startswith("tfs_")  # a one-time code, not the session's token
    session = client.post("/api/v1/auth/oidc/redeem", json={"code": handoff})
    assert session.status_code == 200, session.text
    me = client.get("/api/v1/auth/me",
                    headers={"Authorization": f"Bearer {session.json()['token']}"}).json()
    assert me["username"] == "anna" and me["roles"][0]["role"] == "operator"
    # the code works once
    assert client.post("/api/v1/auth/oidc/redeem", json={"code": handoff}).status_code == 401
    # the subject is linked: the next sign-in finds anna by it, whatever the e-mail says
    again = through_provider(world, "anna-sub-1", "changed@elsewhere.example",
                             return_to=None)
    assert again.status_code == 200 and again.json()["me"]["username"] == "anna"
    with psycopg.connect(world["url"]) as conn:
        methods = [r[0] for r in conn.execute(
            "SELECT after->>'method' FROM audit_log WHERE action = 'sign_in.succeeded' "
            "AND actor = 'anna' ORDER BY id")]
    assert methods == ["oidc:a-login", "oidc:a-login"]


def test_an_unknown_person_is_refused_unless_the_provider_gives_a_role(world):
    refused = through_provider(world, "stranger", "stranger@company-a.example")
    assert refused.status_code == 403 and "no account" in refused.text
    with psycopg.connect(world["url"]) as conn:
        reason = conn.execute("SELECT after->>'reason' FROM audit_log "
                              "WHERE action = 'sign_in.failed'").fetchone()[0]
        assert "no account for stranger@company-a.example" in reason
        conn.execute("UPDATE identity_providers SET default_role = 'viewer'")
    welcomed = through_provider(world, "stranger", "stranger@company-a.example",
                                return_to=None)
    assert welcomed.status_code == 200
    me = welcomed.json()["me"]
    assert me["username"] == "stranger@company-a.example"
    assert [(r["organisation"], r["role"]) for r in me["roles"]] == [("company-a", "viewer")]
    # and sees company A's sites only
    assert set(me["sites"]) == {*world["companies"].a_sites, world["companies"].granted}


def test_a_person_of_another_organisation_is_not_matched_by_e_mail(world):
    with psycopg.connect(world["url"]) as conn:
        conn.execute("UPDATE users SET email = 'bob@company-b.example' WHERE username = 'bob'")
    refused = through_provider(world, "bob-sub", "bob@company-b.example")
    assert refused.status_code == 403


def test_a_replayed_or_forged_callback_is_refused(world):
    client = world["client"]
    assert client.get("/api/v1/auth/oidc/a-login/callback",
                      params={"state": "made-up", "code": "x"}).status_code == 400
    refused = client.get("/api/v1/auth/oidc/a-login/login",
                         params={"return_to": "https://evil.example/steal"})
    assert refused.status_code == 422 and "not an allowed origin" in refused.text
    assert client.get("/api/v1/auth/providers").json() == [
        {"name": "a-login", "label": "Company A"}]


def test_the_dashboards_offer_the_provider_and_take_the_code(world, monkeypatch):
    """The sign-in page links to the provider; coming back with ?sign_in=<code>, the
    dashboards trade it for a session and open, signed in."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import tidefield.dashboards
    from tests.support.dashboards import ApiServer
    from tidefield.dashboards import data

    app = str(Path(tidefield.dashboards.__file__).parent / "app.py")
    answer = through_provider(world, "anna-sub-3", "anna@company-a.example")
    handoff = parse_qs(urlsplit(answer.headers["location"]).query)["sign_in"][0]
    with ApiServer(world["url"]) as api:
        monkeypatch.setenv("TIDEFIELD_API_URL", api.url)
        monkeypatch.setenv("TIDEFIELD_DASHBOARD_LANGUAGE", "en")
        data.clear_all()
        try:
            signed_out = AppTest.from_file(app, default_timeout=60)
            signed_out.run()
            (button,) = signed_out.get("link_button")
            assert button.proto.label == "Sign in with Company A"
            assert button.proto.url.startswith(f"{api.url}/api/v1/auth/oidc/a-login/login?")
            at = AppTest.from_file(app, default_timeout=60)
            at.query_params["sign_in"] = handoff
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            assert at.title[0].value == "Site overview"
            assert "Signed in as Anna" in [c.value for c in at.sidebar.caption]
        finally:
            data.clear_all()
