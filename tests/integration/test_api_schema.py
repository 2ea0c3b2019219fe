"""Schemathesis against the API's own OpenAPI schema, over a real server and database:
no input it generates may cause a 5xx or a response that breaks the schema; and signed in
as a viewer, no request it makes may change anything."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.people import add_person, session_token
from tidefield.server.embedded import free_port
from tidefield.server.security.api_keys import Scope, create_key


@pytest.fixture(scope="module")
def api_server(pg_cluster, template_db):
    name = "schemathesis_api"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    url = pg_cluster.url(name)
    with psycopg.connect(url) as conn:
        key = create_key(conn, "schemathesis", [Scope.READ, Scope.INGEST, Scope.OPERATE])
        add_person(conn, "watcher", {1: "viewer"})  # the platform office's: every site
        # a few alerts, so that acknowledging and reading one hit real rows
        conn.execute("""INSERT INTO alerts (site_id, rule, category, severity, message,
                                            opened_at, updated_at)
                        SELECT id, 'hypoxia', 'event', 'critical', 'DO low', now(), now()
                        FROM sites ORDER BY id LIMIT 5""")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api",
                             "--port", str(port)],
                            env={**os.environ, "TIDEFIELD_DATABASE_URL": url},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # a loaded machine imports slowly
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, \
            "the API did not start: " + (proc.stderr.read().decode()[-3000:]
                                         if proc.poll() is not None else "timeout")
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    # the schema is built at its first request (FastAPI keeps it): built here, with time
    # to spare on a loaded machine, so schemathesis's own short timeout finds it ready
    httpx.get(f"{base}/openapi.json", timeout=180).raise_for_status()
    try:
        yield base, key, url
    finally:
        proc.terminate()
        stderr = proc.communicate(timeout=10)[1].decode(errors="replace")
        assert "Traceback" not in stderr, stderr[-3000:]


def test_no_server_errors_and_responses_match_the_schema(api_server):
    base, key, _ = api_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(headers={"X-API-Key": key}, timeout=30)
            case.validate_response(response, checks=checks)

        run()


# What a viewer may change: only their own sign-in state (a new session, a second-factor
# secret to confirm, which stores nothing). Signing out is left out: it would end the
# session the run uses.
# Self-service only: signing in, one's own second factor, and keys for one's own scripts
# (which act with no more than their owner's rights: test_isolation's
# test_a_viewers_own_key_has_no_more_rights_than_the_viewer).
VIEWER_MAY_POST = {"/api/v1/auth/sign-in", "/api/v1/auth/totp/setup",
                   "/api/v1/auth/oidc/redeem", "/api/v1/keys"}
# Everything a change would show in.
STATE = {
    "alerts acknowledged": "SELECT count(*) FROM alerts WHERE state <> 'open'",
    "alert events": "SELECT count(*) FROM alert_events",
    "readings": "SELECT count(*) FROM readings",
    "rejects": "SELECT count(*) FROM ingest_rejects",
    "keys": "SELECT count(*), count(revoked_at) FROM api_keys "
            "WHERE user_id IS DISTINCT FROM (SELECT id FROM users WHERE username = 'watcher')",
    "people": "SELECT count(*), count(disabled_at), sum(length(password_hash)), "
              "count(totp_secret) FROM users",
    "roles": "SELECT count(*), string_agg(role, ',' ORDER BY user_id, organisation_id) "
             "FROM memberships",
    "organisations": "SELECT count(*) FROM organisations",
    "site owners": "SELECT string_agg(organisation_id::text, ',' ORDER BY id) FROM sites",
    "grants": "SELECT count(*) FROM site_grants",
    "identity providers": "SELECT count(*) FROM identity_providers",
    "changes audited": "SELECT count(*) FROM audit_log WHERE action NOT LIKE 'sign_in.%' "
                       "AND NOT (action = 'api_key.created' AND actor_user_id = "
                       "(SELECT id FROM users WHERE username = 'watcher'))",
}


def _state(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchone() for name, query in STATE.items()}


VIEWER_EXAMPLES = 12  # per operation: every route is tried, within the suite's budget


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_viewer_can_change_nothing_and_never_causes_a_5xx(api_server):
    base, _, url = api_server
    token = session_token(base, "watcher")
    before = _state(url)
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    changed_by: list[str] = []
    def run_as_viewer(operation) -> None:
        path = operation.path

        @given(case=operation.as_strategy())
        @settings(max_examples=VIEWER_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            case.validate_response(response, checks=[not_a_server_error])
            if case.method.upper() != "GET" and response.status_code < 300 \
                    and path not in VIEWER_MAY_POST:
                changed_by.append(f"{case.method} {case.formatted_path} "
                                  f"-> {response.status_code}")

        run()

    for operation in operations:
        if operation.path != "/api/v1/auth/sign-out":
            run_as_viewer(operation)
    assert not changed_by, changed_by
    assert _state(url) == before
    # and the session was the viewer's all along
    me = httpx.get(f"{base}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["roles"][0]["role"] == "viewer"
