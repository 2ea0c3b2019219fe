"""Device configuration and commands over the API: who may, what is stored, what the
audit log says (server/api/routes/control.py; the delivery is in test_control_e2e.py)."""

from __future__ import annotations

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
        site = companies.a_sites[0]
        device = conn.execute("SELECT id FROM devices WHERE site_id = %s ORDER BY id LIMIT 1",
                              (site,)).fetchone()[0]
        conn.commit()
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        headers = {}
        for name in ("anna", "vera", "bob"):
            token = client.post("/api/v1/auth/sign-in", json={
                "username": name, "password": PASSWORD}).json()["token"]
            headers[name] = {"Authorization": f"Bearer {token}"}
        yield {"url": db_url, "client": client, "site": site, "device": device,
               "granted_device": None, "companies": companies, "headers": headers}


def _audit(url: str, action: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT actor, target, before, after, source_address "
                            "FROM audit_log WHERE action = %s ORDER BY id", (action,)).fetchall()


def test_an_operator_configures_a_device_and_each_change_is_audited(world):
    client, device = world["client"], world["device"]
    anna = world["headers"]["anna"]
    first = client.put(f"/api/v1/devices/{device}/config", headers=anna,
                       json={"settings": {"interval_s": 30, "log_level": "INFO"}})
    assert first.status_code == 200, first.text
    assert first.json()["desired_version"] == 1
    second = client.put(f"/api/v1/devices/{device}/config", headers=anna,
                        json={"settings": {"interval_s": 10}})
    body = second.json()
    assert (body["desired_version"], body["desired"]) == (2, {"interval_s": 10.0})
    assert body["in_sync"] is False and body["reported_version"] is None
    assert body["difference"] == {"interval_s": {"desired": 10.0, "reported": None}}
    rows = _audit(world["url"], "device.configured")
    assert [(r[0], r[1]) for r in rows] == [("anna", f"device:{device}")] * 2
    assert rows[1][2]["version"] == 1 and rows[1][3] == {"version": 2,
                                                         "settings": {"interval_s": 10.0}}
    assert rows[1][4]  # from where
    refused = client.put(f"/api/v1/devices/{device}/config", headers=anna,
                         json={"settings": {"interval_s": -5}})
    assert refused.status_code == 422 and "interval_s" in refused.text
    assert len(_audit(world["url"], "device.configured")) == 2


def test_an_operator_commands_and_the_history_lists_it(world):
    client, device = world["client"], world["device"]
    anna = world["headers"]["anna"]
    sent = client.post(f"/api/v1/devices/{device}/commands", headers=anna, json={
        "action": "set", "actuator": "valve", "state": "on", "duration_s": 600,
        "expires_in_s": 120})
    assert sent.status_code == 201, sent.text
    command = sent.json()
    assert command["state"] == "pending" and command["issued_by"] == "anna"
    assert command["params"] == {"actuator": "valve", "state": "on", "duration_s": 600.0}
    history = client.get(f"/api/v1/devices/{device}/commands", headers=anna).json()
    assert [c["id"] for c in history] == [command["id"]]
    site = client.get(f"/api/v1/sites/{world['site']}/control", headers=anna).json()
    assert [c["id"] for c in site["commands"]] == [command["id"]]
    assert device in {d["device_id"] for d in site["devices"]}
    rows = _audit(world["url"], "device.commanded")
    assert [(r[0], r[1]) for r in rows] == [("anna", f"command:{command['id']}")]
    bad = client.post(f"/api/v1/devices/{device}/commands", headers=anna,
                      json={"action": "set", "actuator": "valve"})
    assert bad.status_code == 422 and "state" in bad.text


def test_a_viewer_and_another_company_may_not_command(world):
    client, device = world["client"], world["device"]
    body = {"action": "set", "actuator": "valve", "state": "on"}
    vera = client.post(f"/api/v1/devices/{device}/commands", headers=world["headers"]["vera"],
                       json=body)
    assert vera.status_code == 403
    assert client.get(f"/api/v1/devices/{device}/config",
                      headers=world["headers"]["vera"]).status_code == 200
    bob = client.post(f"/api/v1/devices/{device}/commands", headers=world["headers"]["bob"],
                      json=body)
    assert bob.status_code in (403, 404)
    assert _audit(world["url"], "device.commanded") == []


def test_a_site_only_granted_for_reading_is_not_commanded(world):
    client = world["client"]
    granted = world["companies"].granted
    with psycopg.connect(world["url"]) as conn:
        device = conn.execute("SELECT id FROM devices WHERE site_id = %s LIMIT 1",
                              (granted,)).fetchone()[0]
    anna = world["headers"]["anna"]
    assert client.get(f"/api/v1/devices/{device}/config", headers=anna).status_code == 200
    refused = client.post(f"/api/v1/devices/{device}/commands", headers=anna,
                          json={"action": "reboot"})
    assert refused.status_code == 403


def test_the_cli_configures_and_commands_with_an_audit_row(world):
    runner = CliRunner()
    device, env = world["device"], {"TIDEFIELD_DATABASE_URL": world["url"]}
    result = runner.invoke(cli, ["devices", "config", device, "--set", "interval_s=15",
                                 "--set", 'metrics=["air_temperature"]'], env=env)
    assert result.exit_code == 0, result.output
    assert '"desired_version": 1' in result.output
    result = runner.invoke(cli, ["devices", "command", device, "set", "--param",
                                 "actuator=fan", "--param", "state=on"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("cmd-") and " pending " in result.output
    bad = runner.invoke(cli, ["devices", "command", device, "explode"], env=env)
    assert bad.exit_code == 2 and "unknown action" in bad.output
    assert [r[0] for r in _audit(world["url"], "device.configured")] == [
        f"cli:{__import__('getpass').getuser()}"]
    assert len(_audit(world["url"], "device.commanded")) == 1


def test_a_release_is_offered_in_stages_and_the_fleet_view_counts_versions(world, tmp_path):
    import json

    from tidefield.protocol.control import ReportedConfig, Settings
    from tidefield.server.control import store

    url, runner = world["url"], CliRunner()
    env = {"TIDEFIELD_DATABASE_URL": url}
    sites = world["companies"].a_sites[:3]
    with psycopg.connect(url) as conn:
        gateways = [r[0] for r in conn.execute(
            "SELECT id FROM devices WHERE template = 'gw' AND site_id = ANY(%s) ORDER BY "
            "site_id", (sites,))]
        # the first gateway already runs the release
        store.record_reported(conn, reported=ReportedConfig(
            sites[0], gateways[0], 0, Settings(), 1, agent_version="0.2.0"))
    manifest = tmp_path / "release.json"
    manifest.write_text(json.dumps({"version": "0.2.0", "url": "https://p.example/r.whl",
                                    "sha256": "a" * 64, "signature": "c2ln"}))
    args = ["releases", "offer", str(manifest), *[a for s in sites for a in ("--site", s)]]
    stage1 = runner.invoke(cli, [*args, "--first", "1"], env=env)
    assert stage1.exit_code == 0, stage1.output
    assert f"to 1 gateway(s): {gateways[1]}" in stage1.output
    again = runner.invoke(cli, [*args, "--first", "1"], env=env)
    assert "to 0 gateway(s)" in again.output  # stage 1 is full
    stage2 = runner.invoke(cli, args, env=env)
    assert f"to 1 gateway(s): {gateways[2]}" in stage2.output
    anna = world["headers"]["anna"]
    versions = world["client"].get("/api/v1/fleet/versions", headers=anna).json()
    by_version = {v["version"]: v for v in versions}
    assert by_version["0.2.0"]["gateways"] == 1 and by_version["0.2.0"]["sites"] == [sites[0]]
    assert all(s in world["companies"].a_sites or s == world["companies"].granted
               for v in versions for s in v["sites"])  # only sites anna may read
