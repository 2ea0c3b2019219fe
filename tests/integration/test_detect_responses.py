"""Automatic responses on the real database: an opened warning at a site in automatic
mode becomes one device command (issued once, whatever the replays) and notes in the
alert's history; a suggestion and a catch-up's past alert only notes."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

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


# --- suggestions an operator confirms -----------------------------------------------------

def suggest(conn, site: str, at_ms: int, rule: str = "hypoxia_forecast"):
    """An alert opened at ``site`` and its response suggested, as the detector's step does
    it (bundled rules: suggest mode): (op, decision), committed."""
    alert = Alert(AlertKey(site, rule, None, None), "forecast", "warning",
                  "dissolved oxygen forecast under 3 mg/L", at_ms, at_ms, 0.9, 0.9)
    op = AlertOp("opened", alert, at_ms, 0.9)
    sink = DatabaseSink(60_000)
    sink.apply([op])
    (decision,) = ResponsePlanner(load_rules(), {site: "cage_farm"}).decide([op])
    with conn.transaction():
        sink.flush(conn)
        assert responses.record(conn, [decision], at_ms + 1000) == 0
    return op, decision


def test_a_suggestion_is_stored_to_be_confirmed_and_expires_with_its_alert(db_url):
    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        op, decision = suggest(conn, SITE, now - 60_000)
        (stored,) = responses.stored_responses(conn, op.alert.id)
        assert (stored.site_id, stored.device_id, stored.actuator, stored.duration_s,
                stored.command_id, stored.reason, stored.state) == (
            SITE, f"{SITE}-gw", "aerator", 240 * 60, decision.command_id, "suggest mode",
            "suggested")
        op.alert.closed_ms = now
        _store(conn, [AlertOp("closed", op.alert, now, 0.1)])
        (expired,) = responses.stored_responses(conn, op.alert.id)
        assert expired.state == "expired"
        assert int(expired.ended_at.timestamp() * 1000) == now
        with conn.transaction(), pytest.raises(responses.ConfirmRefused, match="closed"):
            responses.confirm(conn, stored.id, actor="anna", via="api")
        assert conn.execute("SELECT count(*) FROM device_commands").fetchone()[0] == 0


def test_confirming_issues_the_automatic_command_once_and_supersedes_the_rest(db_url):
    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        forecast, decision = suggest(conn, SITE, now - 120_000)
        hypoxia, _ = suggest(conn, SITE, now - 60_000, rule="hypoxia")  # aerators too
        (first,) = responses.stored_responses(conn, forecast.alert.id)
        (second,) = responses.stored_responses(conn, hypoxia.alert.id)
        with conn.transaction():
            done, issued = responses.confirm(conn, first.id, actor="anna", via="api")
        assert issued and done.state == "confirmed" and done.confirmed_by == "anna"
        with conn.transaction():  # a second tap, or the message's link after the dashboard
            again, issued = responses.confirm(conn, first.id, actor="otto", via="tfhook")
        assert not issued and again.confirmed_by == "anna"
        rows = conn.execute("SELECT id, device_id, action, params, state, issued_by, "
                            "expires_at - issued_at FROM device_commands").fetchall()
        # the command an automatic run issues (the test above), by the operator
        assert [r[:6] for r in rows] == [(decision.command_id, f"{SITE}-gw", "set", {
            "actuator": "aerator", "state": "on", "duration_s": 240 * 60}, "pending", "anna")]
        assert rows[0][6].total_seconds() == responses.COMMAND_EXPIRY_S
        (superseded,) = responses.stored_responses(conn, hypoxia.alert.id)
        assert (superseded.state, superseded.superseded_by) == ("superseded",
                                                                decision.command_id)
        with conn.transaction(), pytest.raises(responses.ConfirmRefused, match="superseded"):
            responses.confirm(conn, second.id, actor="anna", via="api")
        notes = [n for (n,) in conn.execute(
            "SELECT note FROM alert_events WHERE alert_id = %s AND actor = 'anna'",
            (forecast.alert.id,))]
        assert notes == [f"suggested response confirmed through api: aerator on for 240 min "
                         f"at {SITE}-gw (command {decision.command_id})"]


def test_an_automatic_run_supersedes_a_waiting_suggestion(db_url, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sites:\n  {SITE}: {{hypoxia: {{response_mode: automatic}}}}\n")
    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        forecast, _ = suggest(conn, SITE, now - 120_000)
        alert = Alert(AlertKey(SITE, "hypoxia", None, None), "event", "critical", "DO low",
                      now - 60_000, now - 60_000, 2.0, 2.0)
        op = AlertOp("opened", alert, now - 60_000, 2.0)
        _store(conn, [op])
        decisions = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"}).decide([op])
        with conn.transaction():
            assert responses.record(conn, decisions, now) == 1
        (waiting,) = responses.stored_responses(conn, forecast.alert.id)
        assert (waiting.state, waiting.superseded_by) == ("superseded",
                                                          decisions[0].command_id)


def test_a_restarted_detector_remembers_the_runs_in_the_command_table(db_url, tmp_path):
    """The cool-down memory is rebuilt from device_commands: a new planner that remembers
    does not run the aerator again; one that did not would (the failure it prevents)."""
    from tidefield.server.detect import store

    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sites:\n  {SITE}: {{hypoxia_forecast: {{response_mode: automatic}}}}\n")
    now = int(time.time() * 1000)
    with psycopg.connect(db_url) as conn:
        first = _warning(now - 60_000)
        _store(conn, [first])
        with conn.transaction():
            decisions = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"}).decide([first])
            assert responses.record(conn, decisions, now) == 1
        # a failed command never ran: it must not count
        conn.execute("INSERT INTO device_commands (id, device_id, site_id, action, params, "
                     "state, issued_at, expires_at, issued_by) VALUES ('failed-run-1', %s, %s,"
                     " 'set', %s, 'failed', now(), now() + interval '1 hour', 'anna')",
                     (f"{SITE}-gw", SITE, Jsonb({"actuator": "frost_fan", "state": "on",
                                                 "duration_s": 3600})))
        runs = store.actuator_runs(conn, [SITE, "oc-001"], now - 86_400_000)
        (run,) = runs
        assert run[:2] == (SITE, "aerator")
        assert abs(run[2] - (now + 240 * 60_000)) < 60_000
        # the detector restarted; the warning closes and opens again within the run
        again = _warning(now + 30 * 60_000)
        forgetful = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"})
        assert forgetful.decide([again])[0].automatic
        restarted = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"})
        for site, actuator, end_ms in runs:
            restarted.remember(site, actuator, end_ms)
        (held,) = restarted.decide([again])
        assert not held.automatic and held.reason == "already running"
        (cooling,) = restarted.decide([_warning(now + 250 * 60_000)])
        assert not cooling.automatic and cooling.reason == "cool-down"


def test_the_detector_service_rebuilds_its_cool_down_memory_on_start_and_poll(db_url,
                                                                               tmp_path):
    """The service itself: started after an automatic run was issued, its planner holds the
    aerator (no second run inside the first); a run confirmed while it runs is picked up
    at the next rules poll."""
    import zlib

    from tidefield.server.detect.service import DetectorService
    from tidefield.server.detect.store import Partition
    from tidefield.server.settings import DetectorSettings

    rules = tmp_path / "rules.yaml"
    rules.write_text(f"sites:\n  {SITE}: {{hypoxia_forecast: {{response_mode: automatic}}}}\n")
    now = int(time.time() * 1000)
    count = 64  # a partition of a few sites, oc-021's among them: a quick start
    partition = Partition(zlib.crc32(SITE.encode()) % count, count)
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = _warning(now - 60_000)
        _store(conn, [first])
        with conn.transaction():
            decisions = ResponsePlanner(load_rules(rules), {SITE: "cage_farm"}).decide([first])
            assert responses.record(conn, decisions, now) == 1
        service = DetectorService(DetectorSettings(database_url=db_url, detect_rules=rules),
                                  partition, since_ms=now - 3_600_000)
        session = service._start(conn)
        assert session.responses is not None
        (held,) = session.responses.decide([_warning(now + 60_000)])
        assert not held.automatic and held.reason == "already running"
        # a frost fan switched on (an operator confirming, say) after the service started
        conn.execute("INSERT INTO device_commands (id, device_id, site_id, action, params, "
                     "issued_at, expires_at, issued_by) VALUES ('resp-confirmed-0001', %s, %s,"
                     " 'set', %s, now(), now() + interval '15 minutes', 'anna')",
                     (f"{SITE}-gw", SITE, Jsonb({"actuator": "frost_fan", "state": "on",
                                                 "duration_s": 3600})))
        assert (SITE, "frost_fan") not in session.responses.runs
        session.next_rules_check = 0.0
        service._follow_rules(conn, session)
        assert abs(session.responses.runs[(SITE, "frost_fan")] - (now + 3_600_000)) < 60_000
