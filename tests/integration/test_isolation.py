"""Isolation over every route of the API: a person (or a key) of company A gets nothing of
company B, whatever the route. The routes are read from the app itself, so a route added
without a case here fails ``test_every_route_has_a_case``, and every case is run for a
person signed in and for an organisation's key.

"Nothing" means: a request aimed at one of B's objects answers 403 or 404 (the route's
convention), and an answer that lists things names none of B's sites, devices, people
or keys. A site of B that A was granted is readable and nothing more.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests.support.people import PASSWORD, two_companies
from tidefield.protocol.codec import encode_batch
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import up_topic
from tidefield.server.api.app import create_app
from tidefield.server.api.sta.entities import ENTITY_SETS
from tidefield.server.ingest.pipeline import Envelope
from tidefield.server.notify import store as notify_store
from tidefield.server.notify.routing import ContactIn, GroupIn, RouteIn
from tidefield.server.settings import ApiSettings

from .test_ingest_store import write

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture(scope="module")
def world(pg_cluster, template_db):
    name = "isolation_module"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    url = pg_cluster.url(name)
    with psycopg.connect(url) as conn:
        companies = two_companies(conn)
    sites = {s.id: s for s in load_sites()}
    a, b, bg = companies.a_sites[0], companies.b_hidden[0], companies.granted
    now = ms(datetime.now(UTC))
    envelopes = []
    for site_id in (a, b, bg):
        device = sites[site_id].devices[0]
        metric = device.template.metrics[0]
        envelopes.append(Envelope(up_topic(site_id, device.id), encode_batch(Batch(
            site_id, device.id, 0, tuple(Reading(metric, ms(T0) + i * 60_000, 1.0 + i)
                                         for i in range(30)))), None, now))
    write(url, envelopes, now_ms=now)
    with psycopg.connect(url) as conn:
        series = {site_id: conn.execute(
            "SELECT s.id FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = %s ORDER BY s.id LIMIT 1", (site_id,)).fetchone()[0]
            for site_id in (a, b, bg)}
        alerts = {site_id: conn.execute(
            """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                                   updated_at) VALUES (%s, 'hypoxia', 'event', 'critical',
                                   'DO low', now(), now()) RETURNING id""",
            (site_id,)).fetchone()[0] for site_id in (a, b, bg)}
        # a suggested response on each alert (the detector's, as migration 0017 stores it)
        suggested = {site_id: conn.execute(
            """INSERT INTO alert_responses (alert_id, site_id, device_id, actuator, duration_s,
                                            command_id, reason, suggested_at)
               VALUES (%s, %s, %s, 'aerator', 600, %s, 'suggest mode', now()) RETURNING id""",
            (alerts[site_id], site_id, sites[site_id].devices[0].id,
             f"resp-isolation-{site_id}")).fetchone()[0] for site_id in (a, b, bg)}
        # B's notifications: a contact, group and route (ids 1: nothing else has any),
        # and a delivery about its hidden site in the log
        b_contact = notify_store.save_contact(conn, companies.b_org, ContactIn(
            name="b-secret-crew", url="tfhook://127.0.0.1:9/?secret=bbbbbbbbbbbbbbbbbbbb"))
        b_group = notify_store.save_group(conn, companies.b_org, GroupIn(
            name="b-secret-group", members=["b-secret-crew"]))
        b_route = notify_store.save_route(conn, companies.b_org, RouteIn(
            name="b-secret-route", group="b-secret-group"))
        assert (b_contact, b_group, b_route) == (1, 1, 1)
        delivery = conn.execute(
            "INSERT INTO notify_deliveries (key, contact_id, alert_id, kind) "
            "VALUES ('b-key', %s, %s, 'opened') RETURNING id",
            (b_contact, alerts[b])).fetchone()[0]
        conn.execute("INSERT INTO notify_attempts (delivery_id, ok, latency_ms) "
                     "VALUES (%s, true, 1)", (delivery,))
        # an incident of B's hidden sites (id 1)
        b_alert2 = conn.execute(
            """INSERT INTO alerts (site_id, rule, category, severity, message, opened_at,
                                   updated_at) VALUES (%s, 'hypoxia', 'event', 'critical',
                                   'DO low', now(), now()) RETURNING id""",
            (companies.b_hidden[1],)).fetchone()[0]
        assert conn.execute("INSERT INTO notify_incidents (organisation_id, rule, opened_at, "
                            "joined_at) VALUES (%s, 'hypoxia', now(), now()) RETURNING id",
                            (companies.b_org,)).fetchone()[0] == 1
        conn.execute("INSERT INTO notify_incident_alerts (alert_id, incident_id) "
                     "VALUES (%s, 1), (%s, 1)", (alerts[b], b_alert2))
        conn.execute("INSERT INTO anomalies (series_id, time, value, score, component, "
                     "category) VALUES (%s, %s, 1, 0.9, 'spike', 'fault'), "
                     "(%s, %s, 1, 0.9, 'spike', 'fault')",
                     (series[b], T0, series[a], T0))
        window = conn.execute(
            "INSERT INTO maintenance_windows (site_id, starts_at, ends_at, created_by) "
            "VALUES (%s, now(), now() + interval '1 day', 'bob') RETURNING id",
            (b,)).fetchone()[0]
        # what only B has: its hidden sites, their devices, its people and keys
        b_devices = [r[0] for r in conn.execute(
            "SELECT id FROM devices WHERE site_id = ANY(%s)", (companies.b_hidden,))]
        models_b = {r[0] for r in conn.execute(
            "SELECT DISTINCT model FROM devices WHERE site_id = ANY(%s)",
            (companies.b_hidden,))}
        models_a = {r[0] for r in conn.execute(
            "SELECT DISTINCT model FROM devices WHERE site_id = ANY(%s)",
            ([*companies.a_sites, bg],))}
        metrics_b = {r[0] for r in conn.execute(
            "SELECT DISTINCT s.metric FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = ANY(%s)", (companies.b_hidden,))}
        metrics_a = {r[0] for r in conn.execute(
            "SELECT DISTINCT s.metric FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = ANY(%s)", ([*companies.a_sites, bg],))}
    app = create_app(ApiSettings(database_url=url))
    with TestClient(app) as client:
        tokens = {}
        for person in ("alice", "bob", "vera"):
            answer = client.post("/api/v1/auth/sign-in",
                                 json={"username": person, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
            tokens[person] = answer.json()["token"]
        # bob signs in and acts, so the audit log has rows about B
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        assert client.post(f"/api/v1/alerts/{alerts[b]}/acknowledge", headers=bob,
                           json={"comment": "B's own"}).status_code == 200
        bob_key_prefix = companies.keys["bob"].split("_")[1]
        markers = set(companies.b_hidden) | set(b_devices) | {"company-b", bob_key_prefix,
                                                             "bob's script", '"bob"',
                                                             "b-secret", "bbbbbbbbbb"}
        yield {"app": app, "client": client, "companies": companies, "tokens": tokens,
               "a": a, "b": b, "bg": bg, "series": series, "alerts": alerts,
               "responses": suggested, "url": url,
               "b_device": sites[b].devices[0].id, "bg_device": sites[bg].devices[0].id,
               "markers": markers, "bob_key_prefix": bob_key_prefix, "window": window,
               "b_only_sensor": _slug(sorted(models_b - models_a)[0])
               if models_b - models_a else None,
               "b_only_metric": sorted(metrics_b - metrics_a)[0]
               if metrics_b - metrics_a else None}
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _slug(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


# --- the cases -------------------------------------------------------------------------------

def api_routes(app) -> list[tuple[str, APIRoute]]:
    """Every API route of the app with its full path (FastAPI >= 0.13x keeps included
    routers as such; ``iter_route_contexts`` walks them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into app.routes
        return [(r.path, r) for r in app.routes if isinstance(r, APIRoute)]
    return [(c.path, c.original_route) for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute)]


def routes(app) -> list[tuple[str, str]]:
    out = [(method, path) for path, route in api_routes(app)
           for method in sorted(route.methods)]
    assert len(out) > 40, out
    return out


# Routes that answer without a credential and hold no site data: health, metrics, and
# single sign-on (the providers a sign-in page offers, the way to one and back).
PUBLIC = {("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/api/v1/auth/providers"),
          ("GET", "/api/v1/auth/oidc/{name}/login"),
          ("GET", "/api/v1/auth/oidc/{name}/callback")}
# Routes about the caller only (no path or body can name anything of B): answered and
# searched for B's markers like any list. Sign-out is run last, on a session of its own.
SELF = {("GET", "/api/v1/auth/me"), ("POST", "/api/v1/auth/sign-in"),
        ("POST", "/api/v1/auth/sign-out"), ("POST", "/api/v1/auth/password"),
        ("POST", "/api/v1/auth/totp/setup"), ("POST", "/api/v1/auth/totp"),
        ("POST", "/api/v1/auth/totp/remove"), ("POST", "/api/v1/auth/oidc/redeem")}


def path_values(w: dict, path: str) -> list[str]:
    """The path with B's objects in its parameters (one or more variants)."""
    sta = re.match(r"^/sta/v1\.1/(\w+)\(\{id\}\)", path)
    values: dict[str, list[str]] = {
        "site_id": [w["b"]], "site": [w["b"]], "device_id": [w["b_device"]],
        "device": [w["b_device"]], "series_id": [str(w["series"][w["b"]])],
        "alert_id": [str(w["alerts"][w["b"]])],
        "response_id": [str(w["responses"][w["b"]])],
        "user_id": [str(w["companies"].users["bob"])],
        "organisation_id": [str(w["companies"].b_org)], "prefix": [w["bob_key_prefix"]],
        # B's notification contact, group and route all have id 1; a token nobody holds
        "item_id": ["1"], "kind": ["contacts", "groups", "routes"], "incident_id": ["1"],
        "token": ["not-a-token-of-anyone-0123456789"],
        "window_id": [str(w["window"])]}
    if path.startswith("/api/v1/rules/"):
        values["kind"] = ["cage_farm"]  # a kind's rules: platform admins only
    if sta:
        entity = sta.group(1)
        ids = {"Things": f"'{w['b_device']}'", "Locations": f"'{w['b']}'",
               "Datastreams": str(w["series"][w["b"]]),
               "Observations": f"'{w['series'][w['b']]}:{ms(T0)}'",
               "Sensors": f"'{w['b_only_sensor']}'" if w["b_only_sensor"] else None,
               "ObservedProperties": f"'{w['b_only_metric']}'" if w["b_only_metric"]
               else None}
        if ids[entity] is None:
            return []  # nothing of that kind is B's alone
        values["id"] = [ids[entity]]
        values["navigation"] = list(ENTITY_SETS[entity].navigations)
    names = re.findall(r"\{(\w+)\}", path)
    variants = [path]
    for name in names:
        assert name in values, f"{path}: no value of B for {{{name}}}; add one to path_values"
        variants = [v.replace("{" + name + "}", value, 1) for v in variants
                    for value in values[name]]
    return variants


def bodies(w: dict) -> dict[tuple[str, str], Any]:
    """A body aimed at B for each route that takes one."""
    c = w["companies"]
    return {
        ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): {"comment": "not mine"},
        ("POST", "/api/v1/ingest/{site}/{device}"): None,
        ("POST", "/api/v1/organisations"): {"slug": "company-b", "name": "B again"},
        ("POST", "/api/v1/organisations/{organisation_id}/sites"): {"sites": [w["a"]]},
        ("PUT", "/api/v1/organisations/{organisation_id}/grants/{site_id}"): None,
        ("DELETE", "/api/v1/organisations/{organisation_id}/grants/{site_id}"): None,
        ("POST", "/api/v1/users"): {"username": "mole", "organisation_id": c.b_org,
                                    "role": "admin"},
        ("PUT", "/api/v1/users/{user_id}/roles/{organisation_id}"): {"role": "viewer"},
        ("DELETE", "/api/v1/users/{user_id}/roles/{organisation_id}"): None,
        ("POST", "/api/v1/users/{user_id}/password-reset"): None,
        ("POST", "/api/v1/users/{user_id}/disable"): None,
        ("POST", "/api/v1/users/{user_id}/enable"): None,
        ("POST", "/api/v1/keys"): {"name": "into b", "scopes": ["read"],
                                   "organisation_id": c.b_org},
        ("POST", "/api/v1/keys/{prefix}/revoke"): None,
        ("PUT", "/api/v1/devices/{device_id}/config"): {"settings": {"interval_s": 5}},
        ("POST", "/api/v1/devices/{device_id}/commands"): {
            "action": "set", "actuator": "aerator", "state": "on"},
        ("PUT", "/api/v1/rules/sites/{site_id}"): {"rules": {"hypoxia": {"threshold": 9}}},
        ("PUT", "/api/v1/rules/kinds/{kind}"): {"rules": {"hypoxia": {"threshold": 9}}},
        ("POST", "/api/v1/rules/backtest"): {"sites": [w["b"]], "days": 1},
        ("POST", "/api/v1/organisations/{organisation_id}/identity-providers"): {
            "name": "b-idp", "issuer": "http://127.0.0.1:1", "client_id": "x",
            "client_secret": "y"},
        ("POST", "/api/v1/notifications/contacts"): {
            "name": "mole", "url": "tfhook://127.0.0.1:9/?secret=xxxxxxxxxxxxxxxxxxxx",
            "organisation_id": c.b_org},
        ("PUT", "/api/v1/notifications/contacts/{item_id}"): {
            "name": "mole", "url": "tfhook://127.0.0.1:9/?secret=xxxxxxxxxxxxxxxxxxxx"},
        ("POST", "/api/v1/notifications/groups"): {"name": "mole", "organisation_id": c.b_org},
        ("PUT", "/api/v1/notifications/groups/{item_id}"): {"name": "mole"},
        ("POST", "/api/v1/notifications/routes"): {"name": "mole", "group": "b-secret-group",
                                                   "organisation_id": c.b_org},
        ("PUT", "/api/v1/notifications/routes/{item_id}"): {"name": "mole",
                                                            "group": "b-secret-group"},
        ("DELETE", "/api/v1/notifications/{kind}/{item_id}"): None,
        ("POST", "/api/v1/notifications/ack/{token}"): None,
        ("POST", "/api/v1/notifications/confirm/{token}"): None,
        ("POST", "/api/v1/alerts/{alert_id}/responses/{response_id}/confirm"): None,
        ("POST", "/api/v1/notifications/incidents/{incident_id}/acknowledge"): {
            "comment": "not mine"},
        # the fleet: B's sites and devices, named in the path or the body
        ("POST", "/api/v1/fleet/sites"): {
            "id": "oc-999", "name_zh": "乙", "name_en": "B's new", "kind": "cage_farm",
            "domain": "ocean", "district": "huangdao", "lat": 35.9, "lon": 120.2,
            "organisation_id": c.b_org},
        ("PATCH", "/api/v1/fleet/sites/{site_id}"): {"name_en": "taken over"},
        ("POST", "/api/v1/fleet/sites/{site_id}/retire"): None,
        ("POST", "/api/v1/fleet/registry"): None,
        ("POST", "/api/v1/fleet/devices"): {"site_id": w["b"], "template": "sonde",
                                            "id": "b-planted"},
        ("PATCH", "/api/v1/fleet/devices/{device_id}"): {"interval_s": 60},
        ("POST", "/api/v1/fleet/devices/{device_id}/move"): {"site_id": w["a"]},
        ("POST", "/api/v1/fleet/devices/{device_id}/retire"): None,
        ("POST", "/api/v1/fleet/devices/{device_id}/credentials"): None,
        ("DELETE", "/api/v1/fleet/devices/{device_id}/credentials"): None,
        ("POST", "/api/v1/maintenance"): {"site_id": w["b"],
                                          "ends_at": "2030-01-01T00:00:00Z"},
        ("POST", "/api/v1/maintenance/{window_id}/end"): None,
        ("POST", "/api/v1/alerts/{alert_id}/feedback"): {"verdict": "false_alarm",
                                                         "note": "not mine"},
    }


def test_every_route_has_a_case(world):
    cases = bodies(world)
    for method, path in routes(world["app"]):
        if (method, path) in PUBLIC | SELF or method == "GET":
            continue
        assert (method, path) in cases, f"{method} {path} has no isolation case here"


def _credentials(world: dict) -> dict[str, dict[str, str]]:
    return {"alice (admin of A, signed in)": {
                "Authorization": f"Bearer {world['tokens']['alice']}"},
            "A's organisation key": {"X-API-Key": world["companies"].keys["a_org"]}}


def _check_answer(response, markers: set[str], what: str) -> None:
    if response.status_code in (403, 404):
        return
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    text = response.text
    leaked = sorted(m for m in markers if m in text)
    assert not leaked, f"{what} answered {response.status_code} with B's {leaked}"


@pytest.mark.parametrize("who", ["alice (admin of A, signed in)", "A's organisation key"])
def test_a_caller_of_company_a_gets_nothing_of_company_b(world, who):
    client, headers = world["client"], _credentials(world)[who]
    cases = bodies(world)
    checked = 0
    for method, path in routes(world["app"]):
        if (method, path) in PUBLIC or path == "/api/v1/auth/sign-out":
            continue
        targets = path_values(world, path)
        for target in targets:
            kwargs: dict[str, Any] = {"headers": headers}
            body = cases.get((method, path))
            if path.startswith("/api/v1/ingest/"):
                kwargs["content"] = encode_batch(Batch(world["b"], world["b_device"], 9, (
                    Reading("water_temperature", ms(T0), 12.0),)))
            elif body is not None:
                kwargs["json"] = body
            elif (method, path) in SELF and method == "POST":
                kwargs["json"] = {}
            response = client.request(method, target, **kwargs)
            what = f"{who}: {method} {target}"
            if "{" in path:  # aimed at one of B's objects
                assert response.status_code in (403, 404), \
                    f"{what} answered {response.status_code}: {response.text[:300]}"
            elif method != "GET" and (method, path) not in SELF:
                assert response.status_code in (403, 404, 409, 422), \
                    f"{what} answered {response.status_code}: {response.text[:300]}"
            _check_answer(response, world["markers"], what)
            checked += 1
            if method == "GET" and "{" not in path and path.startswith("/api/v1/") \
                    and "site" in _query_names(world["app"], path):
                narrowed = client.get(target, params={"site": world["b"]}, headers=headers)
                assert narrowed.status_code in (403, 404), f"{what}?site=B"
    assert checked > 40


def _query_names(app, path: str) -> set[str]:
    for full_path, route in api_routes(app):
        if full_path == path:
            return {p.name for p in route.dependant.query_params}
    return set()


def test_a_granted_site_is_readable_and_nothing_more(world):
    client = world["client"]
    anna = client.post("/api/v1/auth/sign-in",
                       json={"username": "anna", "password": PASSWORD}).json()["token"]
    for headers in ({"Authorization": f"Bearer {anna}"},
                    {"X-API-Key": world["companies"].keys["a_org"]}):
        bg = world["bg"]
        assert client.get(f"/api/v1/sites/{bg}", headers=headers).status_code == 200
        listed = client.get("/api/v1/sites", params={"limit": 1000}, headers=headers).json()
        ids = {s["id"] for s in listed["items"]}
        assert ids == set(world["companies"].a_sites) | {bg}
        alert = world["alerts"][bg]
        assert client.get(f"/api/v1/alerts/{alert}", headers=headers).status_code == 200
        refused = client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=headers,
                              json={"comment": "not ours to act on"})
        assert refused.status_code == 403 and "read only" in refused.text
        ingest = client.post(f"/api/v1/ingest/{bg}/{world['bg_device']}", headers=headers,
                             content=encode_batch(Batch(bg, world["bg_device"], 9, (
                                 Reading("water_temperature", ms(T0), 12.0),))))
        assert ingest.status_code == 403
        sta = client.get(f"/sta/v1.1/Locations('{bg}')", headers=headers)
        assert sta.status_code == 200


def test_without_the_grant_the_site_is_gone(world):
    client, companies = world["client"], world["companies"]
    root = client.post("/api/v1/auth/sign-in",
                       json={"username": "root", "password": PASSWORD}).json()["token"]
    admin = {"Authorization": f"Bearer {root}"}
    alice = {"Authorization": f"Bearer {world['tokens']['alice']}"}
    bg = world["bg"]
    path = f"/api/v1/organisations/{companies.a_org}/grants/{bg}"
    try:
        assert client.delete(path, headers=admin).json()["sites"] == []
        assert client.get(f"/api/v1/sites/{bg}", headers=alice).status_code == 403
        assert client.get(f"/api/v1/alerts/{world['alerts'][bg]}",
                          headers=alice).status_code == 404
        assert client.get(f"/sta/v1.1/Locations('{bg}')", headers=alice).status_code in (403,
                                                                                          404)
        confirm = (f"/api/v1/alerts/{world['alerts'][bg]}/responses/"
                   f"{world['responses'][bg]}/confirm")
        assert client.post(confirm, headers=alice).status_code == 404
    finally:
        assert client.put(path, headers=admin).json()["sites"] == [bg]


def test_a_viewer_reads_and_cannot_acknowledge(world):
    client = world["client"]
    vera = {"Authorization": f"Bearer {world['tokens']['vera']}"}
    alert = world["alerts"][world["a"]]
    assert client.get(f"/api/v1/alerts/{alert}", headers=vera).status_code == 200
    refused = client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=vera,
                          json={"comment": "viewer"})
    assert refused.status_code == 403
    assert client.get("/api/v1/users", headers=vera).status_code == 403


def test_a_viewers_own_key_has_no_more_rights_than_the_viewer(world):
    """A person may make keys for their own scripts (as with personal access tokens); the
    key acts with at most its owner's rights, whatever scopes it was given."""
    client = world["client"]
    vera = {"Authorization": f"Bearer {world['tokens']['vera']}"}
    made = client.post("/api/v1/keys", headers=vera, json={
        "name": "vera's script", "scopes": ["read", "operate", "admin"]})
    assert made.status_code == 201, made.text
    key = {"X-API-Key": made.json()["key"]}
    alert = world["alerts"][world["a"]]
    assert client.get(f"/api/v1/alerts/{alert}", headers=key).status_code == 200
    assert client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=key,
                       json={"comment": "through a key"}).status_code == 403
    assert client.get("/api/v1/users", headers=key).status_code == 403
    assert client.post("/api/v1/keys", headers=key, json={
        "name": "a key's key", "scopes": ["read"]}).status_code in (403, 422)


def test_confirming_a_suggested_response_needs_the_operate_right_on_its_site(world):
    """Company A's people and key cannot run B's aerators: not on B's hidden site (404, the
    every-route test), not on the site B granted A for reading (403), not as A's viewer
    (403); A's operator can on A's own site (the control that the refusals are refusals)."""
    client, a, bg = world["client"], world["a"], world["bg"]

    def confirm(site: str) -> str:
        return (f"/api/v1/alerts/{world['alerts'][site]}/responses/"
                f"{world['responses'][site]}/confirm")

    alice = {"Authorization": f"Bearer {world['tokens']['alice']}"}
    key = {"X-API-Key": world["companies"].keys["a_org"]}
    vera = {"Authorization": f"Bearer {world['tokens']['vera']}"}
    for headers in (alice, key):
        granted = client.post(confirm(bg), headers=headers)
        assert granted.status_code == 403 and "read only" in granted.text
        listed = client.get(f"/api/v1/alerts/{world['alerts'][bg]}/responses", headers=headers)
        assert listed.status_code == 200 and listed.json()[0]["state"] == "suggested"
    assert client.post(confirm(a), headers=vera).status_code == 403
    anna = client.post("/api/v1/auth/sign-in",
                       json={"username": "anna", "password": PASSWORD}).json()["token"]
    done = client.post(confirm(a), headers={"Authorization": f"Bearer {anna}"})
    assert done.status_code == 200, done.text
    assert done.json()["confirmed_by"] == "anna"
    with psycopg.connect(world["url"]) as conn:
        issued = conn.execute("SELECT site_id FROM device_commands "
                              "WHERE id LIKE 'resp-isolation-%'").fetchall()
    assert issued == [(a,)]
