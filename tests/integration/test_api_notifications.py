"""The notification routes: contacts, groups and routes validated, audited, kept to the
caller's organisation; a contact's URL (its secrets) never comes back; incidents
acknowledged as a whole."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, two_companies
from tidefield.server.api.app import create_app
from tidefield.server.settings import ApiSettings

SECRET = "SECs3cr3ttoken0123456789"


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url) as conn:
        companies = two_companies(conn)
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        tokens = {name: client.post("/api/v1/auth/sign-in", json={
            "username": name, "password": PASSWORD}).json()["token"]
            for name in ("alice", "anna", "bob")}
        yield {"url": db_url, "client": client, "companies": companies,
               "h": {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}}


def test_an_admin_configures_routing_and_every_change_is_audited(world):
    client, h = world["client"], world["h"]
    site = world["companies"].a_sites[0]
    made = client.post("/api/v1/notifications/contacts", headers=h["alice"], json={
        "name": "duty", "url": f"dingtalk://{SECRET}@robottoken/", "quiet_hours": "22:00-07:00"})
    assert made.status_code == 201, made.text
    assert SECRET not in made.text and made.json()["channel"] == "dingtalk://"
    group = client.post("/api/v1/notifications/groups", headers=h["alice"],
                        json={"name": "operators", "members": ["duty"]})
    assert group.status_code == 201 and group.json()["members"] == ["duty"]
    route = client.post("/api/v1/notifications/routes", headers=h["alice"], json={
        "name": "events", "group": "operators", "categories": ["event"], "site_ids": [site],
        "escalate_after_minutes": 15})
    assert route.status_code == 201, route.text
    listed = client.get("/api/v1/notifications/contacts", headers=h["anna"])
    assert [c["name"] for c in listed.json()] == ["duty"] and SECRET not in listed.text
    assert client.get("/api/v1/notifications/contacts", headers=h["bob"]).json() == []
    with psycopg.connect(world["url"]) as conn:
        rows = conn.execute("SELECT action, actor, after::text FROM audit_log "
                            "WHERE action LIKE 'notify.%' ORDER BY id").fetchall()
    assert [r[:2] for r in rows] == [("notify.contact_created", "alice"),
                                     ("notify.group_created", "alice"),
                                     ("notify.route_created", "alice")]
    assert all(SECRET not in r[2] for r in rows)
    gone = client.delete(f"/api/v1/notifications/routes/{route.json()['id']}",
                         headers=h["alice"])
    assert gone.status_code == 204


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "url": "nonsense"}, "url"),
    ({"name": "x", "url": "tfhook://127.0.0.1:9/?secret=short"}, "url"),
    ({"name": "x", "url": "tfhook://127.0.0.1:9/?secret=long-enough-secret",
      "quiet_hours": "25:00-07:00"}, "quiet_hours"),
    ({"name": "x", "url": "tfhook://127.0.0.1:9/?secret=long-enough-secret",
      "timezone": "Mars/Olympus"}, "timezone"),
    ({"name": "", "url": "tfhook://127.0.0.1:9/?secret=long-enough-secret"}, "name"),
])
def test_a_bad_contact_is_refused_with_the_field_and_without_echoing_secrets(world, body,
                                                                            field):
    answer = world["client"].post("/api/v1/notifications/contacts", headers=world["h"]["alice"],
                                  json=body)
    assert answer.status_code == 422 and field in answer.text
    assert "long-enough-secret" not in answer.text or field == "url"


def test_a_route_may_name_only_its_organisations_sites_and_operators_may_not_change(world):
    client, h = world["client"], world["h"]
    client.post("/api/v1/notifications/contacts", headers=h["alice"], json={
        "name": "duty", "url": "tfhook://127.0.0.1:9/?secret=long-enough-secret"})
    client.post("/api/v1/notifications/groups", headers=h["alice"],
                json={"name": "operators", "members": ["duty"]})
    foreign = client.post("/api/v1/notifications/routes", headers=h["alice"], json={
        "name": "theirs", "group": "operators",
        "site_ids": [world["companies"].b_sites[0]]})
    assert foreign.status_code == 422 and "not a site of organisation" in foreign.text
    assert client.post("/api/v1/notifications/routes", headers=h["anna"], json={
        "name": "mine", "group": "operators"}).status_code == 403


def test_an_incident_is_acknowledged_as_a_whole(world):
    client, h = world["client"], world["h"]
    sites = world["companies"].a_sites[:3]
    with psycopg.connect(world["url"]) as conn:
        alerts = [conn.execute(
            """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                                   updated_at) VALUES (%s, 'frost_risk', 'event', 'warning',
                                   'cold', now(), now()) RETURNING id""", (s,)).fetchone()[0]
            for s in sites]
        incident = conn.execute("INSERT INTO notify_incidents (organisation_id, rule, "
                                "opened_at, joined_at) VALUES (%s, 'frost_risk', now(), now()) "
                                "RETURNING id", (world["companies"].a_org,)).fetchone()[0]
        conn.execute("INSERT INTO notify_incident_alerts SELECT unnest(%s::bigint[]), %s",
                     (alerts, incident))
    listed = client.get("/api/v1/notifications/incidents", headers=h["anna"]).json()
    assert [i["id"] for i in listed] == [incident] and len(listed[0]["alerts"]) == 3
    assert client.get("/api/v1/notifications/incidents", headers=h["bob"]).json() == []
    done = client.post(f"/api/v1/notifications/incidents/{incident}/acknowledge",
                       headers=h["anna"], json={"comment": "frost fans on"})
    assert done.status_code == 200, done.text
    assert {a["state"] for a in done.json()["alerts"]} == {"acknowledged"}
    assert client.post(f"/api/v1/notifications/incidents/{incident}/acknowledge",
                       headers=h["anna"], json={}).status_code == 409
    with psycopg.connect(world["url"]) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = "
                            "'alert.acknowledged' AND actor = 'anna'").fetchone()[0] == 3
