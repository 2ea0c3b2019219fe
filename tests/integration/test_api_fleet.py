"""The fleet through the API, against a real database: sites and devices created, edited,
moved and retired by the admins of their organisation; bad input answered with a clear
4xx; every change audited with what it was before and after; the registry CSV out and
back in; broker logins handed out once with the agent's config file, and revoked."""

from __future__ import annotations

import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, two_companies
from tidefield.protocol.registry import parse_sites
from tidefield.server.api.app import create_app
from tidefield.server.security.passwords import verify_password
from tidefield.server.settings import ApiSettings

NEW_SITE = {"id": "gh-901", "name_zh": "测试温室", "name_en": "Test greenhouse",
            "kind": "greenhouse", "domain": "agriculture", "district": "jimo",
            "lat": 36.4, "lon": 120.4}


@pytest.fixture
def world(db_url, tmp_path):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
    settings = ApiSettings(database_url=db_url, data_dir=tmp_path,
                           mqtt_url="mqtt://svc_api:x@127.0.0.1:18830")
    with TestClient(create_app(settings)) as client:
        headers = {}
        for name in ("alice", "anna", "vera", "bob", "root"):
            token = client.post("/api/v1/auth/sign-in", json={
                "username": name, "password": PASSWORD}).json()["token"]
            headers[name] = {"Authorization": f"Bearer {token}"}
        yield {"url": db_url, "client": client, "c": companies, "h": headers,
               "tmp": tmp_path}


def audit_rows(url: str, action: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT actor, target, before, after FROM audit_log "
                            "WHERE action = %s ORDER BY id", (action,)).fetchall()


def error(response) -> str:
    return response.json()["error"]["message"]


def test_an_admin_creates_a_site_with_its_templates_devices_and_it_is_audited(world):
    client, alice = world["client"], world["h"]["alice"]
    made = client.post("/api/v1/fleet/sites", headers=alice, json=NEW_SITE)
    assert made.status_code == 201, made.text
    site = made.json()
    assert site["organisation_id"] == world["c"].a_org and not site["retired"]
    assert site["devices"] == ["gh-901-climate", "gh-901-gw", "gh-901-soil", "gh-901-soilph"]
    with psycopg.connect(world["url"]) as conn:
        metrics = {r[0] for r in conn.execute(
            "SELECT metric FROM series WHERE device_id = 'gh-901-soil'")}
    assert metrics == {"soil_moisture", "soil_temperature", "soil_ec"}
    # readable at once through the existing read routes
    assert client.get("/api/v1/sites/gh-901", headers=alice).status_code == 200
    [(actor, target, before, after)] = audit_rows(world["url"], "site.created")
    assert (actor, target, before) == ("alice", "site:gh-901", None)
    assert after["name_en"] == "Test greenhouse"


def test_a_duplicate_site_id_is_409(world):
    client, alice = world["client"], world["h"]["alice"]
    answer = client.post("/api/v1/fleet/sites", headers=alice,
                         json={**NEW_SITE, "id": world["c"].a_sites[0]})
    assert answer.status_code == 409 and "exists already" in error(answer)


def test_a_bad_site_names_the_field(world):
    client, alice = world["client"], world["h"]["alice"]
    answer = client.post("/api/v1/fleet/sites", headers=alice,
                         json={**NEW_SITE, "kind": "cage_farm"})
    assert answer.status_code == 422 and "domain" in error(answer)
    answer = client.post("/api/v1/fleet/sites", headers=alice, json={**NEW_SITE, "lat": 12.0})
    assert answer.status_code == 422 and "'lat'" in error(answer)


def test_editing_a_site_keeps_its_kind_and_is_audited(world):
    client, alice = world["client"], world["h"]["alice"]
    site = world["c"].a_sites[0]
    changed = client.patch(f"/api/v1/fleet/sites/{site}", headers=alice,
                           json={"name_en": "Renamed", "lat": 36.5})
    assert changed.status_code == 200, changed.text
    assert changed.json()["name_en"] == "Renamed"
    [(_, target, before, after)] = audit_rows(world["url"], "site.changed")
    assert target == f"site:{site}" and before["name_en"] != "Renamed"
    assert after["name_en"] == "Renamed" and after["lat"] == 36.5
    refused = client.patch(f"/api/v1/fleet/sites/{site}", headers=alice,
                           json={"kind": "orchard"})
    assert refused.status_code == 422 and "kind" in error(refused)


def test_an_unknown_template_is_422_naming_the_templates(world):
    client, alice = world["client"], world["h"]["alice"]
    answer = client.post("/api/v1/fleet/devices", headers=alice,
                         json={"site_id": world["c"].a_sites[0], "template": "sonde"})
    assert answer.status_code == 422
    assert "unknown template 'sonde'" in error(answer) and "climate" in error(answer)


def test_a_device_is_added_and_a_duplicate_id_is_409(world):
    client, alice = world["client"], world["h"]["alice"]
    site = world["c"].a_sites[0]
    made = client.post("/api/v1/fleet/devices", headers=alice,
                       json={"site_id": site, "template": "soil", "id": f"{site}-soil2"})
    assert made.status_code == 201, made.text
    assert made.json()["model"].startswith("RS-485 soil")
    [(_, target, before, after)] = audit_rows(world["url"], "device.created")
    assert target == f"device:{site}-soil2" and before is None and after["site_id"] == site
    again = client.post("/api/v1/fleet/devices", headers=alice,
                        json={"site_id": site, "template": "soil", "id": f"{site}-soil2"})
    assert again.status_code == 409 and "exists already" in error(again)
    # the default id is the registry's own {site}-{template}, which the registry has
    default = client.post("/api/v1/fleet/devices", headers=alice,
                          json={"site_id": site, "template": "soil"})
    assert default.status_code == 409


def test_editing_a_device(world):
    client, alice = world["client"], world["h"]["alice"]
    device = f"{world['c'].a_sites[0]}-soil"
    changed = client.patch(f"/api/v1/fleet/devices/{device}", headers=alice,
                           json={"interval_s": 120})
    assert changed.status_code == 200 and changed.json()["interval_s"] == 120
    [(_, _, before, after)] = audit_rows(world["url"], "device.changed")
    assert before["interval_s"] == 300 and after["interval_s"] == 120
    assert client.patch(f"/api/v1/fleet/devices/{device}", headers=alice,
                        json={"interval_s": 0}).status_code == 422


def test_a_device_moves_within_its_organisation_with_its_history(world):
    client, alice = world["client"], world["h"]["alice"]
    first, second = world["c"].a_sites[:2]
    device = f"{first}-soil"
    moved = client.post(f"/api/v1/fleet/devices/{device}/move", headers=alice,
                        json={"site_id": second})
    assert moved.status_code == 200, moved.text
    assert moved.json()["site_id"] == second
    listed = client.get("/api/v1/devices", params={"site": second}, headers=alice).json()
    assert device in {d["id"] for d in listed["items"]}
    [(_, _, before, after)] = audit_rows(world["url"], "device.moved")
    assert before["site_id"] == first and after["site_id"] == second


def test_moving_to_a_site_of_another_organisation_is_refused(world):
    client, alice, c = world["client"], world["h"]["alice"], world["c"]
    device = f"{c.a_sites[0]}-soil"
    # a site of B that A may read (granted): not A's to put devices on
    answer = client.post(f"/api/v1/fleet/devices/{device}/move", headers=alice,
                         json={"site_id": c.granted})
    assert answer.status_code == 409 and "another organisation" in error(answer)
    # one A may not even read: not found
    hidden = client.post(f"/api/v1/fleet/devices/{device}/move", headers=alice,
                         json={"site_id": c.b_hidden[0]})
    assert hidden.status_code == 404
    # even a platform admin keeps a device in its organisation
    root = client.post(f"/api/v1/fleet/devices/{device}/move", headers=world["h"]["root"],
                       json={"site_id": c.b_sites[0]})
    assert root.status_code == 409
    assert audit_rows(world["url"], "device.moved") == []


def test_a_template_the_target_kind_lacks_is_refused(world):
    client, root = world["client"], world["h"]["root"]
    with psycopg.connect(world["url"]) as conn:
        orchard = conn.execute("SELECT id FROM sites WHERE kind = 'orchard' AND "
                               "organisation_id = 1 ORDER BY id LIMIT 1").fetchone()[0]
        field_crop = conn.execute("SELECT id FROM sites WHERE kind = 'port_terminal' AND "
                                  "organisation_id = 1 ORDER BY id LIMIT 1").fetchone()[0]
    answer = client.post(f"/api/v1/fleet/devices/{orchard}-leaf/move", headers=root,
                         json={"site_id": field_crop})
    assert answer.status_code == 422 and "unknown template 'leaf'" in error(answer)


def test_retiring_keeps_history_and_retiring_twice_is_409(world):
    client, alice = world["client"], world["h"]["alice"]
    device = f"{world['c'].a_sites[0]}-soilph"
    with psycopg.connect(world["url"]) as conn:
        series = conn.execute("SELECT id FROM series WHERE device_id = %s",
                              (device,)).fetchone()[0]
        conn.execute("INSERT INTO readings VALUES (%s, now() - interval '1 hour', 6.5)",
                     (series,))
    retired = client.post(f"/api/v1/fleet/devices/{device}/retire", headers=alice)
    assert retired.status_code == 200 and retired.json()["retired"] is True
    shown = client.get(f"/api/v1/devices/{device}", headers=alice).json()
    assert shown["retired"] is True
    readings = client.get(f"/api/v1/series/{series}/readings", headers=alice,
                          params={"bucket": "raw"})
    assert readings.status_code == 200 and len(readings.json()["points"]) == 1
    health = client.get("/api/v1/fleet/health", headers=alice).json()
    assert device not in {h["device_id"] for h in health}
    again = client.post(f"/api/v1/fleet/devices/{device}/retire", headers=alice)
    assert again.status_code == 409 and "retired already" in error(again)
    [(_, _, before, after)] = audit_rows(world["url"], "device.retired")
    assert before["retired"] is False and after["retired"] is True


def test_retiring_a_site_retires_its_devices(world):
    client, alice = world["client"], world["h"]["alice"]
    site = world["c"].a_sites[-1]
    answer = client.post(f"/api/v1/fleet/sites/{site}/retire", headers=alice)
    assert answer.status_code == 200 and answer.json()["retired"]
    with psycopg.connect(world["url"]) as conn:
        assert conn.execute("SELECT count(*) FROM devices WHERE site_id = %s AND "
                            "retired_at IS NULL", (site,)).fetchone()[0] == 0
    assert client.post(f"/api/v1/fleet/sites/{site}/retire",
                       headers=alice).status_code == 409
    csv_text = client.get("/api/v1/fleet/registry.csv", headers=alice).text
    assert site not in csv_text
    overview = client.get("/api/v1/overview", headers=alice).json()
    assert site not in {s["site_id"] for s in overview["sites"]}
    assert len(overview["sites"]) == len(world["c"].a_sites)  # the rest, and B's granted


def test_only_admins_of_the_sites_organisation_change_it(world):
    client, h, c = world["client"], world["h"], world["c"]
    device = f"{c.a_sites[0]}-soil"
    assert client.post(f"/api/v1/fleet/devices/{device}/retire",
                       headers=h["anna"]).status_code == 403  # operator
    assert client.post(f"/api/v1/fleet/devices/{device}/retire",
                       headers=h["vera"]).status_code == 403  # viewer
    assert client.post(f"/api/v1/fleet/devices/{device}/retire",
                       headers=h["bob"]).status_code == 404  # B's admin: not even seen
    granted = client.patch(f"/api/v1/fleet/sites/{c.granted}", headers=h["alice"],
                           json={"name_en": "mine now?"})
    assert granted.status_code == 403 and "read it only" in error(granted)


def test_the_registry_csv_goes_out_and_back_in(world):
    client, alice = world["client"], world["h"]["alice"]
    text = client.get("/api/v1/fleet/registry.csv", headers=alice).text
    sites = parse_sites(text)
    assert {s.id for s in sites} == set(world["c"].a_sites) | {world["c"].granted}
    own = "\n".join(line for line in text.splitlines()
                    if not line.startswith(world["c"].granted)) + "\n"
    new_row = "gh-902,新温室,New greenhouse,greenhouse,agriculture,jimo,36.40000,120.40000\n"
    answer = client.post("/api/v1/fleet/registry", headers={**alice,
                         "Content-Type": "text/csv"}, content=(own + new_row).encode())
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == ["gh-902"]
    assert len(answer.json()["updated"]) == len(world["c"].a_sites)
    with psycopg.connect(world["url"]) as conn:
        assert conn.execute("SELECT organisation_id FROM sites WHERE id = 'gh-902'"
                            ).fetchone()[0] == world["c"].a_org
        assert conn.execute("SELECT count(*) FROM devices WHERE site_id = 'gh-902'"
                            ).fetchone()[0] == 4
    # B's granted site is A's to read, not to load
    refused = client.post("/api/v1/fleet/registry", headers={**alice,
                          "Content-Type": "text/csv"}, content=text.encode())
    assert refused.status_code == 409 and world["c"].granted in error(refused)
    bad = client.post("/api/v1/fleet/registry", headers={**alice,
                      "Content-Type": "text/csv"}, content=b"id,name\nx,y\n")
    assert bad.status_code == 422 and "header" in error(bad)


def test_provisioning_shows_the_password_once_with_the_agent_config(world):
    client, alice = world["client"], world["h"]["alice"]
    site = world["c"].a_sites[0]
    device = f"{site}-gw"
    made = client.post(f"/api/v1/fleet/devices/{device}/credentials", headers=alice)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["username"] == device and len(body["password"]) >= 20
    config = yaml.safe_load(body["agent_config"])
    assert config["site"] == site
    assert config["broker"] == {"url": "mqtt://127.0.0.1:18830", "username": device,
                                "password": body["password"]}
    with psycopg.connect(world["url"]) as conn:
        stored = conn.execute("SELECT password_hash FROM mqtt_credentials WHERE username = %s "
                              "AND revoked_at IS NULL", (device,)).fetchone()[0]
    assert body["password"] not in stored and verify_password(body["password"], stored)
    # the broker's config file now holds the login (no broker runs: written for its start)
    assert device in (world["tmp"] / "mosquitto" / "dynamic-security.json").read_text()
    again = client.post(f"/api/v1/fleet/devices/{device}/credentials", headers=alice)
    assert again.status_code == 409 and "rotate=true" in error(again)
    rotated = client.post(f"/api/v1/fleet/devices/{device}/credentials",
                          params={"rotate": "true"}, headers=alice)
    assert rotated.status_code == 201 and rotated.json()["password"] != body["password"]
    revoked = client.delete(f"/api/v1/fleet/devices/{device}/credentials", headers=alice)
    assert revoked.status_code == 200 and revoked.json()["revoked"] == 1
    assert client.delete(f"/api/v1/fleet/devices/{device}/credentials",
                         headers=alice).status_code == 409
    actions = [r[3] for r in audit_rows(world["url"], "device.provisioned")]
    assert actions == [{"username": device, "rotated": False},
                       {"username": device, "rotated": True}]
    assert all(body["password"] not in str(r) for r in audit_rows(world["url"],
                                                                   "device.provisioned"))
    assert len(audit_rows(world["url"], "device.revoked")) == 1


def test_a_login_from_the_api_works_on_a_running_broker_and_revocation_cuts_it_off(db_url):
    """The whole path with a real Mosquitto enforcing the logins: provisioned through the
    API (the broker told through its admin API, no restart), used by a client as the agent
    config says, moved with its device, and revoked."""
    from tests.support.people import add_person

    from .test_security import ACCEPTED, BAD_LOGIN, NOT_AUTHORIZED, Probe, _start_secured

    stack = _start_secured(db_url, devices=[])
    try:
        with psycopg.connect(db_url) as conn:
            add_person(conn, "root", {1: "admin"})
        settings = ApiSettings(database_url=db_url, mqtt_url=stack.broker.url,
                               broker_auth_dir=stack.files.directory,
                               broker_admin_url=stack.url("svc_admin"))
        with TestClient(create_app(settings)) as client:
            token = client.post("/api/v1/auth/sign-in", json={
                "username": "root", "password": PASSWORD}).json()["token"]
            root = {"Authorization": f"Bearer {token}"}
            made = client.post("/api/v1/fleet/devices/ag-005-soil/credentials", headers=root)
            assert made.status_code == 201, made.text
            assert made.json()["broker_updated"] is True
            broker = yaml.safe_load(made.json()["agent_config"])["broker"]
            scheme, rest = broker["url"].split("://")
            device = Probe(f"{scheme}://{broker['username']}:{broker['password']}@{rest}")
            assert device.connect() == 0
            assert device.publish("tf/v1/ag-005/ag-005-soil/up", b"{}") in ACCEPTED
            assert device.publish("tf/v1/ag-006/ag-005-soil/up", b"{}") == NOT_AUTHORIZED
            moved = client.post("/api/v1/fleet/devices/ag-005-soil/move", headers=root,
                                json={"site_id": "ag-006"})
            assert moved.status_code == 200, moved.text
            assert device.publish("tf/v1/ag-006/ag-005-soil/up", b"{}") in ACCEPTED
            assert device.publish("tf/v1/ag-005/ag-005-soil/up", b"{}") == NOT_AUTHORIZED
            revoked = client.delete("/api/v1/fleet/devices/ag-005-soil/credentials",
                                    headers=root)
            assert revoked.status_code == 200
            assert device.disconnected.wait(10), "a revoked device stays connected"
            again = Probe(f"{scheme}://{broker['username']}:{broker['password']}@{rest}")
            assert again.connect() in BAD_LOGIN
    finally:
        stack.broker.stop()


def test_ingest_follows_a_moved_device_without_a_restart(world):
    """Ingest caches which site each device is at; a device an admin moved speaks for its
    new site at once (its old site's topic is refused as any other site's is)."""
    from tidefield.server.ingest.directory import DeviceDirectory

    first, second = world["c"].a_sites[:2]
    directory = DeviceDirectory(world["url"])
    try:
        directory.load_all()
        assert directory.device(f"{first}-soil", first).site_id == first
        moved = world["client"].post(f"/api/v1/fleet/devices/{first}-soil/move",
                                     headers=world["h"]["alice"], json={"site_id": second})
        assert moved.status_code == 200
        assert directory.device(f"{first}-soil", second).site_id == second
        assert directory.device(f"{first}-soil", first).site_id == second  # so: refused
    finally:
        directory.close()


def test_registry_load_keeps_working_and_leaves_an_operators_move_alone(world):
    """`tidefield registry load` upserts the bundled registry as before; a device an admin
    moved stays where they put it, and a site made through the API stays as it is."""
    from typer.testing import CliRunner

    from tidefield.cli import app as cli

    client, alice = world["client"], world["h"]["alice"]
    first, second = world["c"].a_sites[:2]
    assert client.post("/api/v1/fleet/sites", headers=alice, json=NEW_SITE).status_code == 201
    assert client.post(f"/api/v1/fleet/devices/{first}-soil/move", headers=alice,
                       json={"site_id": second}).status_code == 200
    result = CliRunner().invoke(cli, ["registry", "load", "--database-url", world["url"]])
    assert result.exit_code == 0, result.output
    assert "registry: 250 sites" in result.output
    with psycopg.connect(world["url"]) as conn:
        assert conn.execute("SELECT site_id FROM devices WHERE id = %s",
                            (f"{first}-soil",)).fetchone()[0] == second
        assert conn.execute("SELECT count(*) FROM devices WHERE site_id = 'gh-901'"
                            ).fetchone()[0] == 4
