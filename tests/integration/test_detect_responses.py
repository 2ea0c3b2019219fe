"""Automatic responses on the real database: an opened warning at a site in automatic
mode becomes one device command (issued once, whatever the replays) and notes in the
alert's history; a suggestion and a catch-up's past alert only notes."""

from __future__ import annotations

import time

import psycopg

from tidefield.server.detect import responses
from tidefield.server.detect.alerts import Alert, AlertKey, AlertOp
from tidefield.server.detect.responses import ResponsePlanner
from tidefield.server.detect.rules import load_rules
from tidefield.server.detect.store import DatabaseSink

SITE = "oc-021"


def _warning(at_ms: int) -> AlertOp:
    alert = Alert(AlertKey(SITE, "hypoxia_forecast", None, None), "forecast", "warning",
                  "dissolved oxygen forecast under 3 mg/L", at_ms, at_ms, 0.9, 0.9)
    return AlertOp("opened", alert, at_ms, 0.9)


def _store(conn, ops) -> None:
    sink = DatabaseSink(60_000)
    sink.apply(ops)
    with conn.transaction():
        sink.flush(conn)


def test_an_automatic_warning_issues_one_command_and_notes_it(db_url, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sites:\n  {SITE}: {{hypoxia_forecast: {{response_mode: automatic}}}}\n")
    now = int(time.time() * 1000)
    op = _warning(now - 60_000)
    with psycopg.connect(db_url) as conn:
        _store(conn, [op])
        planner = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"})
        decisions = planner.decide([op])
        with conn.transaction():
            assert responses.record(conn, decisions, now) == 1
        with conn.transaction():  # the same step replayed (a crash before the checkpoint)
            assert responses.record(conn, decisions, now) == 0
        rows = conn.execute("SELECT device_id, action, params, state, issued_by "
                            "FROM device_commands WHERE site_id = %s", (SITE,)).fetchall()
        assert rows == [(f"{SITE}-gw", "set", {"actuator": "aerator", "state": "on",
                                               "duration_s": 240 * 60}, "pending",
                         "detector:hypoxia_forecast")]
        notes = [n for (n,) in conn.execute(
            "SELECT note FROM alert_events WHERE alert_id = %s AND action = 'updated' "
            "ORDER BY id", (op.alert.id,))]
        assert notes and notes[0].startswith("automatic response: aerator on for 240 min")
        assert decisions[0].command_id in notes[0]


def test_suggestions_and_past_alerts_only_note(db_url, tmp_path):
    now = int(time.time() * 1000)
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sites:\n  {SITE}: {{hypoxia_forecast: {{response_mode: automatic}}}}\n")
    with psycopg.connect(db_url) as conn:
        # suggest mode (the bundled default)
        suggested = _warning(now - 60_000)
        _store(conn, [suggested])
        with conn.transaction():
            decisions = ResponsePlanner(load_rules(), {SITE: "cage_farm"}).decide([suggested])
            assert responses.record(conn, decisions, now) == 0
        (note,) = conn.execute("SELECT note FROM alert_events WHERE alert_id = %s AND "
                               "action = 'updated'", (suggested.alert.id,)).fetchone()
        assert note.startswith("suggested response: aerator on for 240 min")
        assert "suggest mode" in note
        # automatic, but an alert of yesterday met while catching up on history
        closing = AlertOp("closed", suggested.alert, now, 0.1)
        suggested.alert.closed_ms = now
        _store(conn, [closing])
        past = _warning(now - 86_400_000)
        _store(conn, [past])
        with conn.transaction():
            decisions = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"}).decide([past])
            assert decisions[0].automatic
            assert responses.record(conn, decisions, now) == 0
        (note,) = conn.execute("SELECT note FROM alert_events WHERE alert_id = %s AND "
                               "action = 'updated'", (past.alert.id,)).fetchone()
        assert note.startswith("automatic response not issued: the alert is from the past")
        assert conn.execute("SELECT count(*) FROM device_commands").fetchone()[0] == 0
