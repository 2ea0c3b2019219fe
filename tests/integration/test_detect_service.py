"""`tidefield detect run` against a real database and broker, on a firmware-sim scenario:
six cage farms over four days with an injected hypoxia at oc-021 (seed 4: from about
hour 63 to hour 82) and sensor faults.

The service runs as the platform runs it (`python -m tidefield.cli detect run`),
with `--until` so it stops once the scenario is scored."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from tidefield.protocol import mqtt
from tidefield.protocol.codec import decode_alert
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import ALL_ALERTS, parse_topic
from tidefield.server.backfill import backfill
from tidefield.sim.fleet import Fleet
from tidefield.sim.scenario import scenario_plan

SEED = 4
SITES = ("oc-021", "oc-022", "oc-023", "oc-024", "oc-025", "oc-026")
START = datetime(2025, 7, 1, tzinfo=UTC)
END = START + timedelta(days=4)
HYPOXIA_SITE = "oc-021"
# small steps, so a stop lands in the middle of the stream with many steps on each side
SERVICE_ENV = {"TIDEFIELD_DETECT_STEP_MINUTES": "30", "TIDEFIELD_LOG_LEVEL": "INFO"}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    plan = scenario_plan(_ms(START), _ms(END), faults_per_series=1.0, events_per_site=8.0,
                         event_kinds=("hypoxia",))
    sites = [s for s in load_sites() if s.id in SITES]
    return Fleet(sites, seed=SEED, plan=plan)


@pytest.fixture
def scenario_db(db_url, fleet) -> str:
    backfill(db_url, fleet, _ms(START), _ms(END))
    return db_url


def hypoxia_events(fleet) -> list[tuple[int, int]]:
    """(start, end) of each hypoxia injected at oc-021, in time order (seed 4: one in the
    first day, one from about hour 63 to hour 82)."""
    events: dict[str, list] = {}
    for lb in fleet.labels(_ms(START), _ms(END)):
        if lb.kind == "hypoxia" and lb.site_id == HYPOXIA_SITE:
            events.setdefault(lb.event_id, []).append(lb)
    spans = sorted((min(lb.start_ms for lb in g), max(lb.end_ms for lb in g))
                   for g in events.values())
    assert len(spans) == 2, "the scenario must inject two hypoxias at oc-021"
    return spans


class Service:
    """One `tidefield detect run` process."""

    def __init__(self, db_url: str, log_dir: Path, *, until: datetime,
                 mqtt_url: str | None = None) -> None:
        env = {**os.environ, "TIDEFIELD_DATABASE_URL": db_url, **SERVICE_ENV}
        env.pop("TIDEFIELD_MQTT_URL", None)
        if mqtt_url:
            env["TIDEFIELD_MQTT_URL"] = mqtt_url
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"detector-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidefield.cli", "detect", "run",
             "--since", START.isoformat(), "--until", until.isoformat()],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self, timeout: float = 300) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log.close()
        return code

    def output(self) -> str:
        return self.log_path.read_text()[-4000:]

    def signal(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)


def run_to(db_url: str, tmp_path: Path, until: datetime, mqtt_url: str | None = None) -> None:
    service = Service(db_url, tmp_path, until=until, mqtt_url=mqtt_url)
    code = service.wait()
    assert code == 0, service.output()


def watermark(db_url: str) -> datetime | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT watermark FROM detector_checkpoints WHERE partition = '0/1'"
                           ).fetchone()
    return row[0] if row else None


def wait_for_watermark(db_url: str, service: Service, beyond: datetime,
                       timeout: float = 300) -> datetime:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert service.proc.poll() is None, service.output()
        mark = watermark(db_url)
        if mark is not None and mark > beyond:
            return mark
        time.sleep(0.05)
    raise TimeoutError(f"watermark did not pass {beyond}: {service.output()}")


class Subscriber:
    """Collects alert notices from the broker (our own decoded type, never paho's)."""

    def __init__(self, broker) -> None:
        self.notices = []
        self.problems = []
        self._ready = threading.Event()
        address = mqtt.parse_mqtt_url(broker.url)
        self.client = mqtt.new_client(f"test-alerts-{time.monotonic_ns()}", address)
        self.client.on_connect = lambda c, *a: c.subscribe(ALL_ALERTS, qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        mqtt.connect(self.client, address, clean_start=True)
        self.client.loop_start()
        assert self._ready.wait(10), "no SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        message = mqtt.to_message(msg)
        try:
            self.notices.append(decode_alert(message.payload, message.content_type,
                                             topic=parse_topic(message.topic)))
        except Exception as exc:  # a bad notice is the test's failure, kept to report
            self.problems.append((message.topic, exc))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_hypoxia_alert_opens_updates_closes_and_is_published(scenario_db, fleet, broker,
                                                             tmp_path):
    first, (label_start, label_end) = hypoxia_events(fleet)
    subscriber = Subscriber(broker)
    try:
        # first run: up to the middle of the hypoxia, where the alert is open (its label
        # begins with the calm, hot day before it: the middle from the crossing on)
        crossing = max(lb.crossing_ms for lb in fleet.labels(_ms(START), _ms(END))
                       if lb.kind == "hypoxia" and lb.site_id == HYPOXIA_SITE)
        assert label_start < crossing < label_end
        middle = datetime.fromtimestamp((crossing + label_end) / 2000, tz=UTC)
        run_to(scenario_db, tmp_path, middle, broker.url)
        with psycopg.connect(scenario_db) as conn:
            rows = conn.execute(
                "SELECT id, state, opened_at, closed_at, value, peak_value FROM alerts "
                "WHERE site_id = %s AND rule = 'hypoxia' ORDER BY opened_at",
                (HYPOXIA_SITE,)).fetchall()
            # one alert per episode: the first hypoxia's, closed, and this one, open
            assert len(rows) == 2, rows
            assert rows[0][1] == "closed"
            assert first[0] <= _ms(rows[0][2]) and _ms(rows[0][3]) <= first[1] + 3_600_000 * 3
            alert_id, state, opened_at, _, value, peak = rows[1]
            assert state == "open"
            assert label_start <= _ms(opened_at) <= label_end
            assert value < 3.6 and peak < 3.0
            # an operator acknowledges it, as the API does
            conn.execute("""UPDATE alerts SET state = 'acknowledged', acknowledged_by = 'night',
                              acknowledged_at = now(), ack_comment = 'aerators on'
                            WHERE id = %s""", (alert_id,))
            conn.execute("INSERT INTO alert_events (alert_id, action, actor, note) "
                         "VALUES (%s, 'acknowledged', 'night', 'aerators on')", (alert_id,))
            conn.commit()
        # second run: to the end; the same alert is updated and closed, ack kept
        run_to(scenario_db, tmp_path, END, broker.url)
        with psycopg.connect(scenario_db) as conn:
            rows = conn.execute(
                """SELECT id, state, closed_at, updated_at, value, peak_value, acknowledged_by,
                          ack_comment, acknowledged_at IS NOT NULL, category, severity
                   FROM alerts WHERE site_id = %s AND rule = 'hypoxia' AND opened_at > %s""",
                (HYPOXIA_SITE, START + timedelta(days=2))).fetchall()
            assert len(rows) == 1, rows
            (same_id, state, closed_at, updated_at, value2, peak2, by, comment, acked,
             category, severity) = rows[0]
            assert same_id == alert_id
            assert (state, by, comment, acked) == ("closed", "night", "aerators on", True)
            assert (category, severity) == ("event", "critical")
            assert _ms(updated_at) > _ms(middle) - 3_600_000
            assert closed_at > updated_at
            assert _ms(closed_at) <= label_end + 3 * 3_600_000
            assert peak2 <= peak and value2 >= 3.0  # cleared above the clear level
            history = conn.execute(
                "SELECT action, actor FROM alert_events WHERE alert_id = %s ORDER BY id",
                (alert_id,)).fetchall()
            actions = [a for a, _ in history]
            assert actions[0] == "opened" and actions[-1] == "closed"
            assert "updated" in actions and ("acknowledged" in actions)
            assert {actor for a, actor in history if a != "acknowledged"} == {"detector"}
            # the other cage farms had no hypoxia injected: no hypoxia alert there
            others = conn.execute("SELECT count(*) FROM alerts WHERE rule = 'hypoxia' AND "
                                  "site_id <> %s", (HYPOXIA_SITE,)).fetchone()[0]
            injected = {lb.site_id for lb in fleet.labels(_ms(START), _ms(END))
                        if lb.kind == "hypoxia"}
            assert others == 0 or injected - {HYPOXIA_SITE}
            # anomalies: stored, with their category, and every injected out-of-range
            # fault found
            anomalies = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE category = 'fault'), min(score) "
                "FROM anomalies").fetchone()
            assert anomalies[0] > 0 and anomalies[1] > 0 and anomalies[2] >= 0.5
            events = dict(conn.execute(
                """SELECT e.id, e.action FROM alert_events e JOIN alerts a ON a.id = e.alert_id
                   WHERE e.actor = 'detector'""").fetchall())
            published = conn.execute("SELECT published_event_id FROM detector_checkpoints"
                                     ).fetchone()[0]
        # every detector event reached the subscriber, in order, with its alert
        deadline = time.monotonic() + 10
        while len({n.event_id for n in subscriber.notices}) < len(events) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert not subscriber.problems
        seen = {n.event_id: n for n in subscriber.notices}
        assert set(seen) == set(events)
        assert published == max(events)
        mine = [n for n in subscriber.notices if n.alert_id == alert_id]
        assert str(mine[0].action) == "opened"
        assert str(mine[-1].action) == "closed" and mine[-1].closed_ms == _ms(closed_at)
        assert all(n.site == HYPOXIA_SITE and n.rule == "hypoxia" for n in mine)
    finally:
        subscriber.close()


def _snapshot(db_url: str):
    with psycopg.connect(db_url) as conn:
        anomalies = conn.execute(
            "SELECT series_id, time, value, score, component, category FROM anomalies "
            "ORDER BY series_id, time").fetchall()
        alerts = conn.execute(
            """SELECT site_id, device_id, series_id, rule, category, severity, state, message,
                      opened_at, updated_at, closed_at, value, peak_value
               FROM alerts ORDER BY site_id, rule, series_id, opened_at""").fetchall()
        events = conn.execute(
            """SELECT a.site_id, a.rule, a.series_id, a.opened_at, e.at, e.action, e.actor,
                      e.value
               FROM alert_events e JOIN alerts a ON a.id = e.alert_id
               ORDER BY a.site_id, a.rule, a.series_id, a.opened_at, e.at, e.id""").fetchall()
    nan = "NaN"  # NaN != NaN; compare it as a marker
    anomalies = [tuple(nan if isinstance(v, float) and math.isnan(v) else v for v in row)
                 for row in anomalies]
    return anomalies, alerts, events


def _reset(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        # CASCADE: and whatever refers to alerts (feedback, incidents, deliveries)
        conn.execute("TRUNCATE anomalies, alert_events, alerts, detector_checkpoints CASCADE")


def test_restart_after_sigterm_and_kill_equals_an_uninterrupted_run(scenario_db, tmp_path):
    run_to(scenario_db, tmp_path, END)
    expected = _snapshot(scenario_db)
    anomalies, alerts, events = expected
    # enough of each that equality says something (the injected faults and hypoxias)
    assert len(anomalies) >= 20 and len(alerts) >= 3 and len(events) > len(alerts)
    _reset(scenario_db)

    # SIGTERM a third of the way in: it stops cleanly after a committed step
    service = Service(scenario_db, tmp_path, until=END)
    wait_for_watermark(scenario_db, service, START + timedelta(days=1, hours=7))
    service.signal(signal.SIGTERM)
    assert service.wait(60) == 0, service.output()
    stopped_at = watermark(scenario_db)
    assert START + timedelta(days=1) < stopped_at < END

    # restart, then kill -9 mid-stream: the step in flight is rolled back
    service = Service(scenario_db, tmp_path, until=END)
    wait_for_watermark(scenario_db, service, stopped_at + timedelta(hours=20))
    service.signal(signal.SIGKILL)
    service.wait(60)
    killed_at = watermark(scenario_db)
    assert stopped_at < killed_at < END

    run_to(scenario_db, tmp_path, END)
    got = _snapshot(scenario_db)
    assert got[0] == anomalies
    assert got[1] == alerts
    assert got[2] == events


def test_backlog_delivered_late_is_scored_and_ends_the_silence(scenario_db, tmp_path):
    """A device's readings of the last 12 hours arrive only after the detector moved on
    (an edge agent flushing its queue): the silence opened a no-data alert; the backlog,
    far behind the watermark, is found, scored and closes it."""
    with psycopg.connect(scenario_db) as conn:
        sid = conn.execute("SELECT id FROM series WHERE device_id = 'oc-022-sonde' "
                           "ORDER BY id LIMIT 1").fetchone()[0]
        held = conn.execute(
            "DELETE FROM readings WHERE series_id = %s AND time >= %s RETURNING time, value",
            (sid, END - timedelta(hours=12))).fetchall()
    assert len(held) > 10
    run_to(scenario_db, tmp_path, END)
    with psycopg.connect(scenario_db) as conn:
        silent = conn.execute("SELECT id, state FROM alerts WHERE rule = 'no_data' AND "
                              "series_id = %s", (sid,)).fetchall()
        assert [s for _, s in silent] == ["open"]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (series_id, time, value) VALUES (%s, %s, %s)",
                            [(sid, t, v) for t, v in held])
        conn.commit()
    # a later run (the live service would do the same at its next step)
    run_to(scenario_db, tmp_path, END + timedelta(minutes=2))
    with psycopg.connect(scenario_db) as conn:
        state, closed_at = conn.execute("SELECT state, closed_at FROM alerts WHERE id = %s",
                                        (silent[0][0],)).fetchone()
        assert state == "closed"
        assert END - timedelta(hours=12) <= closed_at <= END - timedelta(hours=11)
