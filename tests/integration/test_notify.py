"""The notifier against real receivers: the robots' HTTP APIs (as their docs describe
them), a real SMTP server, the signed webhook; escalation, reminders, quiet hours,
digests, incidents and acknowledge links, each driven by the notifier's own clock."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest

from tests.support.notify import (
    MailBox,
    NotifierProcess,
    RobotReceiver,
    alert_event,
    open_alert,
    wait_until,
)
from tidefield.server.embedded.ports import free_port
from tidefield.server.notify import store
from tidefield.server.notify.routing import ContactIn, GroupIn, RouteIn
from tidefield.server.notify.service import Notifier
from tidefield.server.notify.sink import WebhookSink
from tidefield.server.settings import NotifierSettings


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def robots() -> Iterator[RobotReceiver]:
    receiver = RobotReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def hooks() -> Iterator[tuple[WebhookSink, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []
    sink = WebhookSink(secrets.token_urlsafe(24), got.append).start()
    yield sink, got
    sink.stop()


def settings(db_url: str, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {"database_url": db_url, "notify_incident_minutes": 0,
                              "notify_max_age_minutes": 0,
                              "notify_retry_initial_s": 0.2, "notify_retry_max_s": 1.0}
    values.update(overrides)
    return NotifierSettings(**values)


def configure(conn: psycopg.Connection, contacts: dict[str, dict[str, Any]],
              routes: list[dict[str, Any]], org: int = 1) -> dict[str, int]:
    ids = {name: store.save_contact(conn, org, ContactIn(name=name, **values))
           for name, values in contacts.items()}
    groups = {route["group"] for route in routes}
    members = {group: [name for name in contacts
                       if group == "all" or name.startswith(group)] for group in groups}
    for group in groups:
        store.save_group(conn, org, GroupIn(name=group, members=members[group]))
    for index, route in enumerate(routes):
        store.save_route(conn, org, RouteIn(name=f"route{index}", **route))
    conn.commit()
    return ids


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def started(cfg: NotifierSettings, clock: Clock | None = None) -> Notifier:
    notifier = Notifier(cfg, clock=clock or Clock())
    await notifier.connect()
    return notifier


async def step(notifier: Notifier) -> int:
    while await notifier.plan_once():
        pass
    return await notifier.send_all_due()


def some_sites(conn: psycopg.Connection, n: int, kind: str = "cage_farm") -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM sites WHERE kind = %s ORDER BY id "
                                       "LIMIT %s", (kind, n))]


def test_every_channel_receives_the_alert_in_its_documented_shape(db_url, robots, hooks):
    sink, got = hooks
    mail = MailBox()
    robots.dingtalk_secrets["dtoken"] = "SECdingtalksecret0123456789"
    try:
        with psycopg.connect(db_url) as conn:
            configure(conn, {
                "wecom": {"url": "wecombot://wecomkey123/", "language": "zh"},
                "dingtalk": {"url": "dingtalk://SECdingtalksecret0123456789@dtoken/",
                             "language": "zh"},
                "feishu": {"url": "feishu://feishutoken123/", "language": "en"},
                "mail": {"url": f"mailto://127.0.0.1:{mail.port}?from=tf@example.com"
                                "&to=crew@example.com", "language": "en"},
                "hook": {"url": sink.url, "language": "en"},
                "sms": {"url": f"smseagle://smstoken123@127.0.0.1:"
                               f"{robots.url.rsplit(':', 1)[1]}/+8613800000000",
                        "language": "zh"},
            }, [{"group": "all"}])
            site = some_sites(conn, 1)[0]
            name_zh, name_en = conn.execute("SELECT name_zh, name_en FROM sites WHERE id = %s",
                                            (site,)).fetchone()

        async def scenario() -> int:
            notifier = await started(settings(db_url, notify_robot_gateway=robots.url))
            with psycopg.connect(db_url) as conn:
                open_alert(conn, site)
            try:
                return await step(notifier)
            finally:
                await notifier.close()

        assert run(scenario()) == 6
        assert robots.problems == []
        by_robot = {m.robot: m for m in robots.messages}
        assert set(by_robot) == {"wecom", "dingtalk", "feishu", "sms"}
        assert by_robot["sms"].text.startswith("+8613800000000: ")
        assert name_zh in by_robot["sms"].text
        assert by_robot["wecom"].token == "wecomkey123"
        assert name_zh in by_robot["wecom"].text and "严重" in by_robot["wecom"].text
        assert name_zh in by_robot["dingtalk"].text
        assert name_en in by_robot["feishu"].text and "critical" in by_robot["feishu"].text
        assert len(mail.messages) == 1 and mail.messages[0][1] == ["crew@example.com"]
        assert sink.refused == 0 and len(got) == 1
        assert got[0]["site"] == site and got[0]["kind"] == "opened"
        assert got[0]["ack_url"].startswith("http://127.0.0.1:8080/api/v1/notifications/ack/")
        with psycopg.connect(db_url) as conn:
            statuses = conn.execute("SELECT status, count(*) FROM notify_deliveries "
                                    "GROUP BY status").fetchall()
            assert statuses == [("sent", 6)]
            assert conn.execute("SELECT count(*) FROM notify_attempts WHERE ok").fetchone()[0] == 6
    finally:
        mail.stop()


def test_a_wrong_webhook_secret_is_refused_and_retried_not_dropped(db_url, hooks):
    sink, got = hooks
    wrong = sink.url.replace(sink.secret, "x" * 24)
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": wrong}}, [{"group": "all"}])
        site = some_sites(conn, 1)[0]

    async def scenario() -> None:
        notifier = await started(settings(db_url))
        try:
            with psycopg.connect(db_url) as conn:
                open_alert(conn, site)
            assert await step(notifier) == 0
        finally:
            await notifier.close()

    run(scenario())
    assert sink.refused == 1 and got == []
    with psycopg.connect(db_url) as conn:
        status, attempts = conn.execute("SELECT status, attempts FROM notify_deliveries"
                                        ).fetchone()
        error = conn.execute("SELECT error FROM notify_attempts").fetchone()[0]
    assert (status, attempts) == ("pending", 1)
    assert "401" in error and sink.secret not in error and "x" * 24 not in error


# --- outages and crashes: the real `tidefield notify run` ---------------------------------

# The outage is 2 minutes; the test's is this long (TIDEFIELD_TEST_NOTIFY_DOWN_S),
# which exercises the same path: failed attempts, doubling backoff up to the retry cap,
# every message kept, sent in order when the receiver is back.
DOWN_S = float(os.environ.get("TIDEFIELD_TEST_NOTIFY_DOWN_S", "20"))


def _fast(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"notify_poll_s": 0.1, "notify_retry_initial_s": 0.5,
                              "notify_retry_max_s": 2, "notify_update_every_minutes": 0,
                              "notify_incident_minutes": 0, "notify_tick_s": 60}
    values.update(overrides)
    return values


def _kinds_by_alert(got: list[dict[str, Any]]) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = {}
    for item in got:
        seen.setdefault(item["alert_id"], []).append(item["kind"])
    return seen


def test_a_channel_down_then_back_gets_every_notification_once_in_order(db_url, tmp_path):
    got: list[dict[str, Any]] = []
    secret = secrets.token_urlsafe(24)
    sink = WebhookSink(secret, got.append).start()
    port = sink.port
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all"}])
        sites = some_sites(conn, 20, kind="greenhouse") + some_sites(conn, 20)
    metrics_port = free_port()
    notifier = NotifierProcess(db_url, tmp_path / "notify.log",
                               **_fast(notify_metrics_port=metrics_port))
    try:
        notifier.wait_started(db_url)
        with psycopg.connect(db_url, autocommit=True) as conn:
            first = [open_alert(conn, site) for site in sites[:10]]
        wait_until(lambda: len(got) == 10, 30, "the first openings")
        sink.stop()  # the channel goes down
        down_at = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as conn:
            for alert_id in first:
                alert_event(conn, alert_id, "updated")
                alert_event(conn, alert_id, "closed")
            later = [open_alert(conn, site) for site in sites[10:20]]
            for alert_id in later:
                alert_event(conn, alert_id, "updated")
                alert_event(conn, alert_id, "closed")
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))
        with psycopg.connect(db_url) as conn:
            failures = conn.execute("SELECT count(*) FROM notify_attempts WHERE NOT ok"
                                    ).fetchone()[0]
        assert failures > 0 and len(got) == 10
        back = WebhookSink(secret, got.append, port=port).start()  # and back
        try:
            wait_until(lambda: len(got) == 60, 60, "every notification after the outage")
            time.sleep(1)
            assert len(got) == 60
            assert back.received == len(back.seen)  # no message arrived twice
            keys = [item["key"] for item in got]
            assert len(set(keys)) == len(keys)
            kinds = _kinds_by_alert(got)
            assert sorted(kinds) == sorted(first + later)
            assert all(k == ["opened", "updated", "closed"] for k in kinds.values()), kinds
            assert notifier.alive()
            # the failures were counted, and the metrics name the channel, not its secret
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            failed = re.search(r'tidefield_notify_failed_total\{channel="tfhook://127.0.0.1"\}'
                               r" (\d+)", metrics)
            assert failed and int(float(failed.group(1))) == failures
            assert secret not in metrics
        finally:
            back.stop()
    finally:
        notifier.stop()
    log = (tmp_path / "notify.log").read_text()
    assert "message not taken; will retry" in log and secret not in log


def test_kill_9_mid_burst_loses_nothing_and_repeats_nothing(db_url, tmp_path):
    got: list[dict[str, Any]] = []

    def slow_receiver(item: dict[str, Any]) -> None:
        time.sleep(0.02)  # a receiver that takes its time, so the kill lands mid-burst
        got.append(item)

    sink = WebhookSink(secrets.token_urlsafe(24), slow_receiver).start()
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all"}])
        sites = [r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id LIMIT 200")]
    settings = _fast(notify_concurrency=2)
    notifier = NotifierProcess(db_url, tmp_path / "notify1.log", **settings)
    try:
        notifier.wait_started(db_url)
        with psycopg.connect(db_url) as conn:
            alerts = []
            for chunk in range(0, 200, 20):
                alerts += [open_alert(conn, site) for site in sites[chunk:chunk + 20]]
                conn.commit()
        wait_until(lambda: len(got) >= 40, 60, "part of the burst")
        notifier.kill()  # kill -9, mid-burst
        assert len(got) < 200
        notifier.stop()
        time.sleep(0.5)  # requests already in the receiver finish
        with psycopg.connect(db_url) as conn:
            pending = {r[0] for r in conn.execute(
                "SELECT key FROM notify_deliveries WHERE status = 'pending'")}
        # sent, but killed before the notifier recorded it: the only ones it may repeat
        unrecorded = pending & set(sink.seen)
        notifier = NotifierProcess(db_url, tmp_path / "notify2.log", **settings)
        try:
            wait_until(lambda: len(got) == 200, 90, "the rest of the burst")
        except TimeoutError as exc:  # say what was left and where, should it ever happen
            with psycopg.connect(db_url) as conn:
                left = conn.execute(
                    "SELECT status, attempts, due_at > now(), count(*) FROM notify_deliveries "
                    "WHERE status <> 'sent' GROUP BY 1, 2, 3").fetchall()
                behind = conn.execute(
                    "SELECT count(*) FROM alert_events e, notify_cursor c "
                    "WHERE (e.tx, e.id) > (c.tx, c.event_id)").fetchone()[0]
            logs = [(tmp_path / f"notify{n}.log").read_text()[-3000:] for n in (1, 2)]
            raise AssertionError(f"{exc}: {len(got)} received; not sent: {left}; events "
                                 f"behind the cursor: {behind}\n" + "\n".join(logs)) from None
        time.sleep(1)
        assert sorted(item["alert_id"] for item in got) == sorted(alerts)  # none lost
        keys = [item["key"] for item in got]
        assert len(set(keys)) == len(keys)  # none acted on twice
        # at-least-once transport: exactly what was sent but not recorded came again
        assert sink.received - len(sink.seen) == len(unrecorded)
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM notify_deliveries WHERE status <> "
                                "'sent'").fetchone()[0] == 0
    finally:
        notifier.stop()
        sink.stop()


# --- escalation, reminders, quiet hours, digests, incidents, acknowledge links ------------

@pytest.fixture
def two_sinks() -> Iterator[dict[str, tuple[WebhookSink, list[dict[str, Any]]]]]:
    made = {}
    for name in ("duty", "boss"):
        got: list[dict[str, Any]] = []
        made[name] = (WebhookSink(secrets.token_urlsafe(24), got.append).start(), got)
    yield made
    for sink, _ in made.values():
        sink.stop()


def _drive(db_url: str, clock: Clock, script: Any, **overrides: Any) -> None:
    """Run ``script(notifier)`` (a coroutine function) against a notifier on ``clock``."""
    async def scenario() -> None:
        notifier = await started(settings(db_url, **overrides), clock)
        try:
            await script(notifier)
        finally:
            await notifier.close()
    run(scenario())


async def _tick_and_send(notifier: Notifier) -> int:
    await notifier.tick()
    return await step(notifier)


def test_an_unacknowledged_alert_escalates_to_the_next_tier(db_url, two_sinks):
    duty, boss = two_sinks["duty"], two_sinks["boss"]
    with psycopg.connect(db_url) as conn:
        configure(conn, {"duty-phone": {"url": duty[0].url}, "boss-phone": {"url": boss[0].url}},
                  [{"group": "duty", "escalate_after_minutes": 15},
                   {"group": "boss", "tier": 1}])
        site, other = some_sites(conn, 2)
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            left = open_alert(conn, site)
            acked = open_alert(conn, other)
        assert await step(notifier) == 2
        assert len(duty[1]) == 2 and boss[1] == []
        clock.advance(minutes=10)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE alerts SET state = 'acknowledged' WHERE id = %s", (acked,))
        assert await _tick_and_send(notifier) == 0  # not yet: 15 minutes
        clock.advance(minutes=6)
        assert await _tick_and_send(notifier) == 1
        assert [(m["alert_id"], m["kind"], m["tier"]) for m in boss[1]] == [
            (left, "escalation", 1)]
        clock.advance(minutes=30)
        assert await _tick_and_send(notifier) == 0  # once per tier

    _drive(db_url, clock, script)


def test_reminders_repeat_until_someone_acknowledges(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all",
                                                        "remind_every_minutes": 30}])
        site = some_sites(conn, 1)[0]
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            alert_id = open_alert(conn, site)
        assert await step(notifier) == 1
        clock.advance(minutes=20)
        assert await _tick_and_send(notifier) == 0
        clock.advance(minutes=11)
        assert await _tick_and_send(notifier) == 1
        clock.advance(minutes=31)
        assert await _tick_and_send(notifier) == 1
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE alerts SET state = 'acknowledged' WHERE id = %s", (alert_id,))
        clock.advance(minutes=31)
        assert await _tick_and_send(notifier) == 0

    _drive(db_url, clock, script)
    assert [m["kind"] for m in got] == ["opened", "reminder", "reminder"]


def test_quiet_hours_hold_a_warning_until_morning_but_not_a_critical_alert(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url, "quiet_hours": "22:00-07:00",
                                  "timezone": "Asia/Shanghai"}}, [{"group": "all"}])
        warn_site, critical_site = some_sites(conn, 2)
    shanghai = ZoneInfo("Asia/Shanghai")
    clock = Clock()
    night = datetime.now(shanghai).replace(hour=23, minute=30, second=0, microsecond=0)
    clock.now = night.astimezone(UTC)

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            warning = open_alert(conn, warn_site, severity="warning")
            critical = open_alert(conn, critical_site, severity="critical")
        assert await step(notifier) == 1
        assert [m["alert_id"] for m in got] == [critical]
        clock.advance(hours=7)  # 06:30: still quiet
        assert await step(notifier) == 0
        clock.advance(minutes=31)  # 07:01
        assert await step(notifier) == 1
        assert [m["alert_id"] for m in got] == [critical, warning]

    _drive(db_url, clock, script)


def test_low_severity_alerts_go_as_an_hourly_digest(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}},
                  [{"group": "all", "severities": ["info"], "digest": "hourly"}])
        sites = some_sites(conn, 3)
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            alerts = [open_alert(conn, site, severity="info", category="fault",
                                 rule="sensor_fault") for site in sites]
            open_alert(conn, sites[0], severity="warning")  # matches no route
        assert await step(notifier) == 0
        clock.advance(minutes=30)
        assert await _tick_and_send(notifier) == 0
        clock.advance(minutes=31)
        assert await _tick_and_send(notifier) == 1
        assert got[0]["kind"] == "digest"
        assert [item["alert_id"] for item in got[0]["items"]] == alerts
        clock.advance(hours=2)
        assert await _tick_and_send(notifier) == 0

    _drive(db_url, clock, script)


def _cluster(conn: psycopg.Connection, km: float) -> tuple[list[str], str]:
    """Five sites within ``km`` of the first, and one farther than 3 km from all."""
    rows = conn.execute("SELECT id, lat, lon FROM sites ORDER BY id").fetchall()
    for anchor in rows:
        near = [r for r in rows if r is not anchor and _km(anchor, r) <= km]
        if len(near) >= 5:
            members = [anchor, *near[:5]]
            far = [r for r in rows if all(_km(m, r) > 3 * km for m in members)]
            if far:
                return [m[0] for m in members], far[0][0]
    raise AssertionError("no cluster of sites in the registry")


def _km(a: Any, b: Any) -> float:
    return store.distance_km(a[1], a[2], b[1], b[2])


def test_alerts_of_one_rule_opening_close_together_are_one_incident(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url, "language": "en"}}, [{"group": "all"}])
        members, far = _cluster(conn, 20)
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            first = [open_alert(conn, site, rule="frost_risk", severity="warning")
                     for site in members[:5]]
            lone = open_alert(conn, far, rule="frost_risk", severity="warning")
        assert await step(notifier) == 2  # one incident of five sites, one lone site
        incident = next(m for m in got if m["alert_id"] != lone)
        assert incident["alert_id"] == first[0] and len(incident["incident_sites"]) == 5
        assert "5" in incident["title"]
        clock.advance(minutes=2)
        with psycopg.connect(db_url, autocommit=True) as conn:
            open_alert(conn, members[5], rule="frost_risk", severity="warning")
        assert await step(notifier) == 0  # an incident's update waits its interval
        clock.advance(minutes=30)
        assert await step(notifier) == 1
        assert len(got[-1]["incident_sites"]) == 6
        # sites clearing: one message per interval, saying how many are still active
        with psycopg.connect(db_url, autocommit=True) as conn:
            for alert_id in first[:3]:
                alert_event(conn, alert_id, "closed")
        assert await step(notifier) == 1
        assert got[-1]["kind"] == "closed" and len(got[-1]["incident_sites"]) == 3
        assert "3 sites still active" in got[-1]["title"]
        with psycopg.connect(db_url, autocommit=True) as conn:
            rest = conn.execute("SELECT alert_id FROM notify_incident_alerts WHERE "
                                "alert_id <> ALL(%s)", ([*first[:3], lone],)).fetchall()
            for (alert_id,) in rest:
                alert_event(conn, alert_id, "closed")
        assert await step(notifier) == 0  # waits for the interval
        clock.advance(minutes=31)
        assert await step(notifier) == 1
        assert got[-1]["kind"] == "closed" and got[-1]["incident_sites"] == []
        assert got[-1]["title"] == "Cleared: Incident frost_risk"

    _drive(db_url, clock, script, notify_incident_minutes=30, notify_incident_km=20)


def test_the_acknowledge_link_works_once_and_not_after_it_expires(db_url, hooks):
    from fastapi.testclient import TestClient

    from tidefield.server.api.app import create_app
    from tidefield.server.settings import ApiSettings

    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all"}])
        site, other = some_sites(conn, 2)
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            open_alert(conn, site)
        assert await step(notifier) == 1
        clock.advance(hours=-25)  # this one's link expired an hour ago
        with psycopg.connect(db_url, autocommit=True) as conn:
            open_alert(conn, other)
        assert await step(notifier) == 1

    _drive(db_url, clock, script)
    fresh, stale = (m["ack_url"].split("8080", 1)[1] for m in got)
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        page = client.get(fresh)
        assert page.status_code == 200 and "<form method=post>" in page.text
        first = client.post(fresh)
        assert first.status_code == 200, first.text
        again = client.post(fresh)
        assert again.status_code == 410 and "used" in again.text
        expired = client.post(stale)
        assert expired.status_code == 410 and "expired" in expired.text
        assert client.post(fresh[:-4] + "AAAA").status_code == 404
    with psycopg.connect(db_url) as conn:
        state, by, via = conn.execute(
            "SELECT state, acknowledged_by, acknowledged_via FROM alerts WHERE id = %s",
            (got[0]["alert_id"],)).fetchone()
        assert (state, by, via) == ("acknowledged", "contact:hook", "tfhook://127.0.0.1")
        assert conn.execute("SELECT state FROM alerts WHERE id = %s",
                            (got[1]["alert_id"],)).fetchone()[0] == "open"
        audit_rows = conn.execute("SELECT actor FROM audit_log WHERE action = "
                                  "'alert.acknowledged'").fetchall()
        assert audit_rows == [("contact:hook",)]


def test_history_the_detector_replays_is_not_news(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all"}])
        old_site, new_site = some_sites(conn, 2)

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            old = open_alert(conn, old_site)
            conn.execute("UPDATE alert_events SET at = now() - interval '3 hours' "
                         "WHERE alert_id = %s", (old,))
            fresh = open_alert(conn, new_site)
        assert await step(notifier) == 1
        assert [m["alert_id"] for m in got] == [fresh]

    _drive(db_url, Clock(), script, notify_max_age_minutes=60)


def test_a_second_notifier_on_the_same_database_waits_its_turn(db_url):
    from tidefield.server.notify.service import NotifierBusy

    async def scenario() -> None:
        first = await started(settings(db_url))
        second = Notifier(settings(db_url))
        try:
            with pytest.raises(NotifierBusy):
                await second.connect()
            await first.close()
            await second.connect()  # the lock went with the first's connection
        finally:
            await second.close()
            await first.close()

    run(scenario())


def test_routes_as_configuration_are_checked_then_loaded_and_audited(db_url, tmp_path):
    from typer.testing import CliRunner

    from tidefield.cli import app as cli

    good = tmp_path / "notify.yaml"
    good.write_text(
        "organisation: platform\n"
        "contacts:\n"
        "  - {name: duty, url: 'dingtalk://SECsecret0123456789@accesstoken/',"
        " quiet_hours: '22:00-07:00'}\n"
        "groups:\n  - {name: operators, members: [duty]}\n"
        "routes:\n  - {name: events, group: operators, categories: [event],"
        " escalate_after_minutes: 15}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("contacts:\n  - {name: duty, url: 'tfhook://h/?secret=SHORTSECRET'}\n"
                   "routes:\n  - {name: x, group: g, severities: [urgent]}\n")
    runner = CliRunner()
    checked = runner.invoke(cli, ["notify", "check", str(good)])
    assert checked.exit_code == 0 and "valid (1 contacts, 1 groups, 1 routes)" in checked.output
    refused = runner.invoke(cli, ["notify", "check", str(bad)])
    assert refused.exit_code == 2
    assert "contacts.0.url" in refused.output and "routes.0.severities.0" in refused.output
    assert "SHORTSECRET" not in refused.output
    loaded = runner.invoke(cli, ["notify", "load", str(good), "--database-url", db_url])
    assert loaded.exit_code == 0, loaded.output
    listed = runner.invoke(cli, ["notify", "check", "--database-url", db_url])
    assert "contact duty" in listed.output and "dingtalk://" in listed.output
    assert "SECsecret" not in listed.output
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM notify_routes").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = "
                            "'notify.config_loaded'").fetchone()[0] == 1


def test_a_flapping_alert_is_told_once_per_interval_with_a_count(db_url, hooks):
    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url, "language": "en"}}, [{"group": "all"}])
        site = some_sites(conn, 1)[0]
    clock = Clock()

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            alert_id = open_alert(conn, site)
        assert await step(notifier) == 1
        for _ in range(3):
            clock.advance(minutes=5)
            with psycopg.connect(db_url, autocommit=True) as conn:
                alert_event(conn, alert_id, "updated")
            assert await step(notifier) == 0  # held back: within the interval
        clock.advance(minutes=16)
        with psycopg.connect(db_url, autocommit=True) as conn:
            alert_event(conn, alert_id, "updated")
        assert await step(notifier) == 1
        assert got[-1]["kind"] == "updated" and got[-1]["updates"] == 4

    _drive(db_url, clock, script, notify_update_every_minutes=30)


def test_a_suggestion_comes_with_a_one_time_confirm_link_that_runs_it(db_url, hooks):
    """The message of an alert whose response is suggested carries a confirm link (the ack
    link's machinery: one token, hashed, expiring, used once); following it issues the
    response's command as the contact. The two links are not interchangeable."""
    from fastapi.testclient import TestClient

    from tests.integration.test_detect_responses import suggest
    from tidefield.server.api.app import create_app
    from tidefield.server.settings import ApiSettings

    sink, got = hooks
    with psycopg.connect(db_url) as conn:
        configure(conn, {"hook": {"url": sink.url}}, [{"group": "all"}])
        (site,) = some_sites(conn, 1)
    clock = Clock()
    made = {}

    async def script(notifier: Notifier) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            made["op"], made["decision"] = suggest(conn, site, int(time.time() * 1000) - 60_000)
        assert await step(notifier) >= 1

    _drive(db_url, clock, script)
    opened = next(m for m in got if m["kind"] == "opened")
    (link,) = opened["confirm_links"]
    assert link["what"] == f"aerator on for 240 min at {site}-gw"
    assert link["url"].startswith("http://127.0.0.1:8080/api/v1/notifications/confirm/")
    confirm = link["url"].split("8080", 1)[1]
    ack = opened["ack_url"].split("8080", 1)[1]
    with TestClient(create_app(ApiSettings(database_url=db_url))) as client:
        page = client.get(confirm)
        assert page.status_code == 200 and "<form method=post>" in page.text
        assert "aerator on for 240 min" in page.text
        assert client.post(confirm.replace("/confirm/", "/ack/")).status_code == 404
        assert client.post(ack.replace("/ack/", "/confirm/")).status_code == 404
        first = client.post(confirm)
        assert first.status_code == 200 and "Suggested action run" in first.text
        again = client.post(confirm)
        assert again.status_code == 410 and "used" in again.text
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT id, issued_by FROM device_commands").fetchall() == [
            (made["decision"].command_id, "contact:hook")]
        assert conn.execute(
            "SELECT state, confirmed_by, confirmed_via FROM alert_responses "
            "WHERE alert_id = %s", (made["op"].alert.id,)).fetchone() == (
            "confirmed", "contact:hook", "tfhook://127.0.0.1")
        assert conn.execute("SELECT actor FROM audit_log WHERE action = "
                            "'alert.response_confirmed'").fetchall() == [("contact:hook",)]
        # running the aerator is not acknowledging: the alert is still open
        assert conn.execute("SELECT state FROM alerts WHERE id = %s",
                            (made["op"].alert.id,)).fetchone()[0] == "open"


def test_confirm_links_go_only_to_contacts_of_the_organisation_owning_the_site(db_url):
    """A contact of another organisation (one granted the site for reading, say) may be
    told of the alert, but gets no link that runs the site's machines."""
    from tests.integration.test_detect_responses import suggest
    from tidefield.server.security.organisations import create_organisation

    with psycopg.connect(db_url) as conn:
        (site,) = some_sites(conn, 1)
        (owner,) = conn.execute("SELECT organisation_id FROM sites WHERE id = %s",
                                (site,)).fetchone()
        other = create_organisation(conn, "other-farm", "Other farm")
        own = store.save_contact(conn, owner, ContactIn(
            name="own", url="tfhook://127.0.0.1:9/?secret=" + "o" * 20))
        stranger = store.save_contact(conn, other, ContactIn(
            name="stranger", url="tfhook://127.0.0.1:9/?secret=" + "s" * 20))
        conn.commit()
        op, _ = suggest(conn, site, int(time.time() * 1000) - 60_000)

    async def waiting() -> list[store.Waiting]:
        async with await psycopg.AsyncConnection.connect(db_url) as aconn:
            return await store.waiting_responses(aconn, [(op.alert.id, own),
                                                         (op.alert.id, stranger)])

    found = run(waiting())
    assert [(w.alert_id, w.contact_id) for w in found] == [(op.alert.id, own)]
    with psycopg.connect(db_url) as conn:  # closed: nothing waits any more
        conn.execute("UPDATE alerts SET state = 'closed', closed_at = now() WHERE id = %s",
                     (op.alert.id,))
    assert run(waiting()) == []
