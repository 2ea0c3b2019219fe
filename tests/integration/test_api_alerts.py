"""Alerts, anomalies and the overview, against rows the tests insert themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tidefield.server.security.api_keys import Scope, create_key

from .test_api import api, get  # noqa: F401  (the fixture: sites A and B, keys, readings)

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def _alert(conn, site, rule, *, state="open", severity="warning", category="event",
           opened=T0, device=None, series=None, value=None) -> int:
    closed = opened + timedelta(hours=1) if state == "closed" else None
    alert_id = conn.execute(
        """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity, state,
                               message, opened_at, updated_at, closed_at, value, peak_value)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (site, device, series, rule, category, severity, state, f"{rule} at {site}", opened,
         opened, closed, value, value)).fetchone()[0]
    conn.execute("INSERT INTO alert_events (alert_id, at, action, actor, value) "
                 "VALUES (%s, %s, 'opened', 'detector', %s)", (alert_id, opened, value))
    return alert_id


@pytest.fixture
def alerts(api, db_url):  # noqa: F811
    a, b = api["a"].id, api["b"].id
    with psycopg.connect(db_url) as conn:
        ids = {
            "a_hypoxia": _alert(conn, a, "hypoxia", severity="critical", value=2.1,
                                opened=T0 + timedelta(hours=1)),
            "a_fault": _alert(conn, a, "sensor_fault", category="fault",
                              device=api["device"].id, series=api["series_a"],
                              opened=T0 + timedelta(hours=2)),
            "a_closed": _alert(conn, a, "frost_risk", state="closed",
                               opened=T0 - timedelta(days=2)),
            "b_storm": _alert(conn, b, "storm_wind", severity="critical",
                              opened=T0 + timedelta(hours=3)),
        }
        api["keys"]["operator"] = create_key(conn, "night-shift", [Scope.READ, Scope.OPERATE])
        api["keys"]["operator_a"] = create_key(conn, "farm-a", [Scope.READ, Scope.OPERATE],
                                               [a])
    return ids


def post(api, path, key, body):  # noqa: F811
    return api["client"].post(f"/api/v1{path}", json=body,
                              headers={"X-API-Key": api["keys"][key]})


def test_alerts_list_with_filters_and_paging(api, alerts):  # noqa: F811
    def ids(**params):
        response = get(api, "/alerts", **params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    every = [alerts[k] for k in ("b_storm", "a_closed", "a_fault", "a_hypoxia")]
    assert ids() == sorted(every, reverse=True)  # newest first
    assert set(ids(state="active")) == {alerts["a_hypoxia"], alerts["a_fault"],
                                        alerts["b_storm"]}
    assert ids(state="closed") == [alerts["a_closed"]]
    assert set(ids(site=api["a"].id)) == {alerts["a_hypoxia"], alerts["a_fault"],
                                          alerts["a_closed"]}
    assert ids(category="fault") == [alerts["a_fault"]]
    assert set(ids(severity="critical")) == {alerts["a_hypoxia"], alerts["b_storm"]}
    assert ids(rule="hypoxia") == [alerts["a_hypoxia"]]
    # since: still active then, or closed after; until: opened before
    assert alerts["a_closed"] not in ids(since=T0.isoformat())
    assert ids(until=(T0 + timedelta(hours=1)).isoformat()) == [alerts["a_closed"]]
    # paging: two at a time, no overlap, nothing missed
    seen, cursor = [], None
    while True:
        page = get(api, "/alerts", limit=2, **({"cursor": cursor} if cursor else {})).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(every, reverse=True)
    one = get(api, "/alerts", rule="hypoxia").json()["items"][0]
    assert one["value"] == 2.1 and one["state"] == "open" and one["category"] == "event"
    assert one["opened_at"] == "2026-11-20T01:00:00Z"


def test_bad_alert_parameters_are_422(api, alerts):  # noqa: F811
    for params in ({"state": "sleepy"}, {"cursor": "abc"}, {"since": "2026-11-20T00:00:00"},
                   {"limit": 0}, {"severity": "apocalyptic"}):
        response = get(api, "/alerts", **params)
        assert response.status_code == 422, params
        assert response.json()["error"]["message"]


def test_a_site_limited_key_sees_no_alert_of_another_site(api, alerts):  # noqa: F811
    listed = get(api, "/alerts", key="a_only").json()["items"]
    assert {item["site_id"] for item in listed} == {api["a"].id}
    assert get(api, f"/alerts/{alerts['b_storm']}", key="a_only").status_code == 404
    assert get(api, "/alerts", key="a_only", site=api["b"].id).status_code == 403
    overview = get(api, "/overview", key="a_only").json()
    assert [s["site_id"] for s in overview["sites"]] == [api["a"].id]
    assert overview["open_alerts_by_severity"] == {"info": 0, "warning": 1, "critical": 1}
    assert post(api, f"/alerts/{alerts['b_storm']}/acknowledge", "operator_a",
                {}).status_code == 404


def test_one_alert_with_its_history(api, alerts):  # noqa: F811
    response = get(api, f"/alerts/{alerts['a_fault']}")
    assert response.status_code == 200
    body = response.json()
    assert body["rule"] == "sensor_fault" and body["device_id"] == api["device"].id
    assert body["series_id"] == api["series_a"]
    assert [(h["action"], h["actor"]) for h in body["history"]] == [("opened", "detector")]
    assert get(api, "/alerts/999999").status_code == 404
    assert get(api, "/alerts/0").status_code == 422


def test_acknowledging_records_who_and_when(api, alerts, db_url):  # noqa: F811
    target = alerts["a_hypoxia"]
    assert post(api, f"/alerts/{target}/acknowledge", "all", {}).status_code == 403
    before = datetime.now(UTC)
    response = post(api, f"/alerts/{target}/acknowledge", "operator",
                    {"comment": "  aerators on  "})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "acknowledged" and body["acknowledged_by"] == "night-shift"
    assert body["ack_comment"] == "aerators on"
    assert [h["action"] for h in body["history"]] == ["opened", "acknowledged"]
    with psycopg.connect(db_url) as conn:
        state, by, at = conn.execute("SELECT state, acknowledged_by, acknowledged_at "
                                     "FROM alerts WHERE id = %s", (target,)).fetchone()
    assert (state, by) == ("acknowledged", "night-shift")
    assert before - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)
    again = post(api, f"/alerts/{target}/acknowledge", "operator", {})
    assert again.status_code == 409 and "night-shift" in again.json()["error"]["message"]
    closed = post(api, f"/alerts/{alerts['a_closed']}/acknowledge", "operator", {})
    assert closed.status_code == 409
    too_long = post(api, f"/alerts/{alerts['a_fault']}/acknowledge", "operator",
                    {"comment": "x" * 2001})
    assert too_long.status_code == 422
    assert get(api, f"/alerts/{alerts['a_fault']}").json()["state"] == "open"


def test_anomalies_filters_paging_and_missing_values(api, db_url):  # noqa: F811
    a, b = api["series_a"], api["series_b"]
    rows = [(a, T0 + timedelta(minutes=m), float(m), 0.5 + m / 100, "spike", "fault")
            for m in range(10)]
    rows += [(b, T0 + timedelta(minutes=5), float("nan"), 0.99, "range", "fault"),
             (b, T0 + timedelta(minutes=7), 3.0, 0.8, "seasonal", "event")]
    with psycopg.connect(db_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO anomalies (series_id, time, value, score, component, category) "
            "VALUES (%s, %s, %s, %s, %s, %s)", rows)
    span = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
    every = get(api, "/anomalies", **span).json()["items"]
    assert len(every) == 12
    assert [i["time"] for i in every] == sorted((i["time"] for i in every), reverse=True)
    missing = next(i for i in every if i["component"] == "range")
    assert missing["value"] is None and missing["site_id"] == api["b"].id
    assert {i["series_id"] for i in get(api, "/anomalies", site=api["a"].id,
                                        **span).json()["items"]} == {a}
    assert [i["component"] for i in get(api, "/anomalies", category="event",
                                         **span).json()["items"]] == ["seasonal"]
    assert len(get(api, "/anomalies", min_score=0.55, series=a, **span).json()["items"]) == 5
    # pages of 3 across the instant both series share (minute 5 and 7): all, once
    seen, cursor = [], None
    while True:
        page = get(api, "/anomalies", limit=3, **span, **({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        seen += [(i["series_id"], i["time"]) for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted((i["series_id"], i["time"]) for i in every)
    assert len(set(seen)) == 12
    site_a_only = get(api, "/anomalies", key="a_only", **span).json()["items"]
    assert {i["site_id"] for i in site_a_only} == {api["a"].id}
    assert get(api, "/anomalies", cursor="12:x").status_code == 422


def test_overview_states_and_counts(api, alerts, db_url):  # noqa: F811
    a, b = api["a"], api["b"]
    quiet = next(s for s in ("ag-001", "ag-002", "ag-003") if s not in (a.id, b.id))
    with psycopg.connect(db_url) as conn:
        # every device of B and of the quiet site online; A's first device offline by will
        conn.execute("""INSERT INTO device_status (device_id, state, state_changed, last_seen)
                        SELECT id, 'online', now(), now() FROM devices
                        WHERE site_id = ANY(%s)
                        ON CONFLICT (device_id) DO UPDATE SET state = 'online',
                          state_changed = now(), last_seen = now()""", ([b.id, quiet],))
        conn.execute("""INSERT INTO device_status (device_id, state, state_changed, last_seen)
                        VALUES (%s, 'offline', now(), now() - interval '1 minute')
                        ON CONFLICT (device_id) DO UPDATE SET state = 'offline',
                          state_changed = now(), last_seen = now() - interval '1 minute'""",
                     (a.devices[0].id,))
        devices_of = dict(conn.execute("SELECT site_id, count(*) FROM devices GROUP BY site_id"))
        stored = conn.execute("SELECT sum(readings) FROM ingest_batches "
                              "WHERE received_at > now() - interval '60 seconds'").fetchone()[0]
    response = get(api, "/overview")
    assert response.status_code == 200, response.text
    body = response.json()
    by_site = {s["site_id"]: s for s in body["sites"]}
    assert len(by_site) == 250
    assert by_site[b.id]["state"] == "alert" and by_site[b.id]["open_alerts"] == 1
    assert by_site[b.id]["devices_online"] == devices_of[b.id]
    assert by_site[quiet] == {"site_id": quiet, "state": "ok", "open_alerts": 0,
                              "devices_online": devices_of[quiet], "devices_offline": 0}
    # A: an alert, but no device online -> offline wins (nothing there reports at all)
    assert by_site[a.id]["state"] == "offline" and by_site[a.id]["open_alerts"] == 2
    assert by_site[a.id]["devices_offline"] == devices_of[a.id]
    assert body["devices_online"] == devices_of[b.id] + devices_of[quiet]
    assert body["devices_offline"] == sum(devices_of.values()) - body["devices_online"]
    assert body["open_alerts_by_severity"] == {"info": 0, "warning": 1, "critical": 2}
    assert body["readings_per_second"] == pytest.approx((stored or 0) / 60)
    assert stored == 181  # the fixture's two messages, just stored


def test_confirming_a_suggested_response_issues_its_command_once(api, alerts, db_url):  # noqa: F811
    """Listed to readers; confirmed by the operate right only (read: 403, another site's
    key: 404), once (a second confirm answers the same command), audited; a closed
    alert's suggestion is refused (409)."""
    import time

    from tests.integration.test_detect_responses import suggest

    site = api["b"].id
    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        op, decision = suggest(conn, site, now - 60_000)
        closing, _ = suggest(conn, site, now - 60_000, rule="hypoxia")
    alert_id = op.alert.id
    listed = get(api, f"/alerts/{alert_id}/responses")
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()
    assert (item["actuator"], item["duration_s"], item["state"], item["command_id"],
            item["command_state"]) == ("aerator", 240 * 60, "suggested",
                                       decision.command_id, None)
    assert get(api, f"/alerts/{alert_id}/responses", key="a_only").status_code == 404
    path = f"/alerts/{alert_id}/responses/{item['id']}/confirm"
    assert post(api, path, "all", {}).status_code == 403
    assert post(api, path, "operator_a", {}).status_code == 404
    assert post(api, f"/alerts/{alerts['a_hypoxia']}/responses/{item['id']}/confirm",
                "operator", {}).status_code == 404  # not that alert's response
    done = post(api, path, "operator", {})
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["state"], body["confirmed_by"], body["confirmed_via"],
            body["command_state"]) == ("confirmed", "night-shift", "api", "pending")
    again = post(api, path, "operator", {})
    assert again.status_code == 200 and again.json()["confirmed_at"] == body["confirmed_at"]
    with psycopg.connect(db_url) as conn:
        commands = conn.execute("SELECT id, params, issued_by FROM device_commands").fetchall()
        assert commands == [(decision.command_id, {"actuator": "aerator", "state": "on",
                                                   "duration_s": 240 * 60}, "night-shift")]
        audited = conn.execute("SELECT actor, target, after->>'command' FROM audit_log "
                               "WHERE action = 'alert.response_confirmed'").fetchall()
        assert audited == [("night-shift", f"alert:{alert_id}", decision.command_id)]
        # the other suggestion was superseded by this run; close its alert: still refused
        conn.execute("UPDATE alerts SET state = 'closed', closed_at = now() WHERE id = %s",
                     (closing.alert.id,))
    (other,) = get(api, f"/alerts/{closing.alert.id}/responses").json()
    assert other["state"] == "superseded"
    refused = post(api, f"/alerts/{closing.alert.id}/responses/{other['id']}/confirm",
                   "operator", {})
    assert refused.status_code == 409


def test_a_closed_alerts_suggestion_is_refused(api, alerts, db_url):  # noqa: F811
    import time

    from tests.integration.test_detect_responses import suggest

    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        op, _ = suggest(conn, api["b"].id, now - 60_000)
        conn.execute("UPDATE alerts SET state = 'closed', closed_at = now() WHERE id = %s",
                     (op.alert.id,))
    (item,) = get(api, f"/alerts/{op.alert.id}/responses").json()
    assert item["state"] == "expired" and item["ended_at"] is not None
    refused = post(api, f"/alerts/{op.alert.id}/responses/{item['id']}/confirm",
                   "operator", {})
    assert refused.status_code == 409 and "closed" in refused.json()["error"]["message"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM device_commands").fetchone()[0] == 0
