"""Schemathesis against the API's own OpenAPI schema, over a real server and database:
no input it generates may cause a 5xx or a response that breaks the schema."""

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
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    try:
        yield base, key
    finally:
        proc.terminate()
        stderr = proc.communicate(timeout=10)[1].decode(errors="replace")
        assert "Traceback" not in stderr, stderr[-3000:]


def test_no_server_errors_and_responses_match_the_schema(api_server):
    base, key = api_server
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
