"""Every auditable action writes exactly one audit row naming the person (or, from the
command line, the operating-system user) who did it. Sign-in failures, locks, sign-out,
password changes and resets and the second factor are checked in test_sign_in.py."""

from __future__ import annotations

import getpass

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.support.people import PASSWORD, two_companies
from tidefield.cli import app as cli
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
        alert = conn.execute(
            """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                                   updated_at) VALUES (%s, 'frost_risk', 'event', 'warning',
                                   'cold', now(), now()) RETURNING id""",
            (companies.a_sites[0],)).fetchone()[0]
        conn.commit()
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        tokens = {name: client.post("/api/v1/auth/sign-in", json={
            "username": name, "password": PASSWORD}).json()["token"]
            for name in ("alice", "anna", "root")}
        yield {"url": db_url, "client": client, "companies": companies, "alert": alert,
               "headers": {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}}


class Audit:
    """Rows of one action written while the block runs."""

    def __init__(self, url: str, action: str) -> None:
        self.url, self.action = url, action

    def _ids(self) -> set[int]:
        with psycopg.connect(self.url) as conn:
            return {r[0] for r in conn.execute("SELECT id FROM audit_log WHERE action = %s",
                                               (self.action,))}

    def __enter__(self) -> Audit:
        self.before = self._ids()
        return self

    def __exit__(self, *exc: object) -> None:
        new = sorted(self._ids() - self.before)
        with psycopg.connect(self.url) as conn:
            self.rows = conn.execute(
                "SELECT actor, actor_user_id, target, before, after, source_address "
                "FROM audit_log WHERE id = ANY(%s) ORDER BY id", (new,)).fetchall()

    @property
    def one(self) -> tuple:
        assert len(self.rows) == 1, self.rows
        return self.rows[0]


def test_a_successful_sign_in(world):
    with Audit(world["url"], "sign_in.succeeded") as audit:
        world["client"].post("/api/v1/auth/sign-in",
                             json={"username": "vera", "password": PASSWORD})
    actor, user_id, target, _, after, address = audit.one
    assert (actor, user_id, target) == ("vera", world["companies"].users["vera"], "user:vera")
    assert after["method"] == "password" and address == "testclient"


def test_an_acknowledgement(world):
    with Audit(world["url"], "alert.acknowledged") as audit:
        answer = world["client"].post(f"/api/v1/alerts/{world['alert']}/acknowledge",
                                      headers=world["headers"]["anna"],
                                      json={"comment": "checking the heaters"})
        assert answer.status_code == 200 and answer.json()["acknowledged_by"] == "anna"
    actor, user_id, target, before, after, _ = audit.one
    assert (actor, user_id) == ("anna", world["companies"].users["anna"])
    assert target == f"alert:{world['alert']}" and before == {"state": "open"}
    assert after == {"state": "acknowledged", "comment": "checking the heaters"}


def test_a_sites_rules_changed_by_its_admin_and_refused_to_an_operator(world):
    site = world["companies"].a_sites[0]
    with Audit(world["url"], "rules.changed") as audit:
        refused = world["client"].put(f"/api/v1/rules/sites/{site}",
                                      headers=world["headers"]["anna"],
                                      json={"rules": {"frost_risk": {"threshold": -2.0}}})
        assert refused.status_code == 403, refused.text
        for threshold in (-2.0, -2.5):
            answer = world["client"].put(f"/api/v1/rules/sites/{site}",
                                         headers=world["headers"]["alice"],
                                         json={"rules": {"frost_risk": {"threshold": threshold}}})
            assert answer.status_code == 200, answer.text
    assert len(audit.rows) == 2
    actor, user_id, target, before, after, address = audit.rows[1]
    assert (actor, user_id, target) == ("alice", world["companies"].users["alice"],
                                        f"site:{site}")
    assert before == {"version": 1, "rules": {"frost_risk": {"threshold": -2.0}}}
    assert after == {"version": 2, "rules": {"frost_risk": {"threshold": -2.5}}}
    assert address == "testclient"


def test_a_key_made_and_revoked_over_the_api(world):
    client, alice = world["client"], world["headers"]["alice"]
    with Audit(world["url"], "api_key.created") as made:
        created = client.post("/api/v1/keys", headers=alice, json={
            "name": "greenhouse gateway", "scopes": ["ingest"],
            "organisation_id": world["companies"].a_org})
        assert created.status_code == 201
    prefix = created.json()["info"]["prefix"]
    assert made.one[0] == "alice" and made.one[2] == f"key:{prefix}"
    assert made.one[4]["scopes"] == ["ingest"]
    with Audit(world["url"], "api_key.revoked") as revoked:
        assert client.post(f"/api/v1/keys/{prefix}/revoke",
                           headers=alice).json()["revoked"] is True
    assert revoked.one[0] == "alice" and revoked.one[2] == f"key:{prefix}"


def test_a_role_given_changed_and_taken_away(world):
    client, alice, companies = world["client"], world["headers"]["alice"], world["companies"]
    with Audit(world["url"], "user.created") as created, \
            Audit(world["url"], "role.changed") as given:
        answer = client.post("/api/v1/users", headers=alice, json={
            "username": "nightshift", "organisation_id": companies.a_org, "role": "viewer"})
        assert answer.status_code == 201
    user_id = answer.json()["user"]["id"]
    assert created.one[0] == "alice" and given.one[4] == {
        "organisation_id": companies.a_org, "role": "viewer"}
    with Audit(world["url"], "role.changed") as changed:
        client.put(f"/api/v1/users/{user_id}/roles/{companies.a_org}", headers=alice,
                   json={"role": "operator"})
    assert changed.one[3]["role"] == "viewer" and changed.one[4]["role"] == "operator"
    with Audit(world["url"], "role.removed") as removed:
        client.delete(f"/api/v1/users/{user_id}/roles/{companies.a_org}", headers=alice)
    assert removed.one[0] == "alice" and removed.one[3]["role"] == "operator"


def test_disabling_and_enabling_an_account(world):
    client, alice, companies = world["client"], world["headers"]["alice"], world["companies"]
    with Audit(world["url"], "user.disabled") as disabled:
        client.post(f"/api/v1/users/{companies.users['vera']}/disable", headers=alice)
    with Audit(world["url"], "user.enabled") as enabled:
        client.post(f"/api/v1/users/{companies.users['vera']}/enable", headers=alice)
    assert disabled.one[:3] == enabled.one[:3] == ("alice", companies.users["alice"],
                                                   "user:vera")


def test_organisations_sites_and_grants(world):
    client, root, companies = world["client"], world["headers"]["root"], world["companies"]
    with Audit(world["url"], "organisation.created") as created:
        org = client.post("/api/v1/organisations", headers=root,
                          json={"slug": "ocean-lab", "name": "Ocean lab"}).json()["id"]
    assert created.one[0] == "root"
    site = companies.b_sites[-1]
    with Audit(world["url"], "site.moved") as moved:
        client.post(f"/api/v1/organisations/{org}/sites", headers=root,
                    json={"sites": [site]})
    assert moved.one[3] == {"organisation_id": companies.b_org}
    assert moved.one[4] == {"organisation_id": org}
    grant = f"/api/v1/organisations/{companies.a_org}/grants/{site}"
    with Audit(world["url"], "grant.added") as added:
        assert client.put(grant, headers=root).status_code == 200
    with Audit(world["url"], "grant.removed") as removed:
        assert client.delete(grant, headers=root).status_code == 200
    assert added.one[2] == removed.one[2] == f"site:{site}"


def test_an_identity_provider_added(world):
    with Audit(world["url"], "identity_provider.added") as added:
        answer = world["client"].post(
            f"/api/v1/organisations/{world['companies'].a_org}/identity-providers",
            headers=world["headers"]["alice"],
            json={"name": "a-idp", "issuer": "http://127.0.0.1:9/", "client_id": "tidefield",
                  "client_secret": "s3cret"})
        assert answer.status_code == 201 and "s3cret" not in answer.text
    assert added.one[0] == "alice" and "s3cret" not in str(added.one)


def test_keys_and_device_logins_from_the_command_line(world, tmp_path):
    runner = CliRunner()
    env = {"TIDEFIELD_DATABASE_URL": world["url"], "TIDEFIELD_DATA_DIR": str(tmp_path)}
    me = f"cli:{getpass.getuser()}"
    with Audit(world["url"], "api_key.created") as made:
        result = runner.invoke(cli, ["keys", "create", "lab", "--scope", "read", "--org",
                                     "company-a"], env=env)
        assert result.exit_code == 0, result.output
    assert made.one[0] == me and made.one[4]["organisation_id"] == world["companies"].a_org
    with Audit(world["url"], "api_key.revoked") as revoked:
        assert runner.invoke(cli, ["keys", "revoke", result.output.strip()],
                             env=env).exit_code == 0
    assert revoked.one[0] == me
    site = world["companies"].a_sites[0]
    with psycopg.connect(world["url"]) as conn:
        device = conn.execute("SELECT id FROM devices WHERE site_id = %s ORDER BY id LIMIT 1",
                              (site,)).fetchone()[0]
    with Audit(world["url"], "device.provisioned") as provisioned:
        result = runner.invoke(cli, ["devices", "provision", site, device], env=env)
        assert result.exit_code == 0, result.output
    assert provisioned.one[0] == me and provisioned.one[2] == f"device:{device}"
    assert "password" not in str(provisioned.one[4])
    with Audit(world["url"], "device.revoked") as gone:
        assert runner.invoke(cli, ["devices", "revoke", device], env=env).exit_code == 0
    assert gone.one[0] == me
    # the device's organisation's admins read both rows
    with psycopg.connect(world["url"]) as conn:
        orgs = conn.execute("SELECT organisation_ids FROM audit_log WHERE target = %s",
                            (f"device:{device}",)).fetchall()
    assert orgs == [([world["companies"].a_org],)] * 2


def test_an_admin_reads_the_log_of_their_organisation_only_and_exports_it(world):
    client = world["client"]
    client.post(f"/api/v1/alerts/{world['alert']}/acknowledge",
                headers=world["headers"]["anna"], json={"comment": "ok"})
    page = client.get("/api/v1/audit", headers=world["headers"]["alice"],
                      params={"action": "sign_in.*"}).json()
    assert {i["actor"] for i in page["items"]} == {"alice", "anna"}  # not root's sign-in
    assert client.get("/api/v1/audit", headers=world["headers"]["anna"]).status_code == 403
    every = client.get("/api/v1/audit", headers=world["headers"]["root"],
                       params={"action": "sign_in.*"}).json()
    assert {i["actor"] for i in every["items"]} == {"alice", "anna", "root"}
    csv = client.get("/api/v1/audit/export", headers=world["headers"]["alice"])
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "id,at,actor,action,target,source_address,before,after"
    assert any(",anna,alert.acknowledged," in line for line in lines)
