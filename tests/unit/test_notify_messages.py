"""Messages people can act on, in their language; the webhook's signature; what of a
contact's URL may be shown."""

from __future__ import annotations

from datetime import UTC, datetime

from tidefield.server.notify.channels import describe, sign, verify
from tidefield.server.notify.messages import Due, render

OPENED = datetime(2026, 12, 5, 19, 5, tzinfo=UTC)  # 03:05 in Qingdao


def due(**overrides: object) -> Due:
    values: dict[str, object] = {
        "delivery_id": 1, "key": "e1:c1", "kind": "opened", "tier": 0, "contact_id": 1,
        "url": "tfhook://h/?secret=x", "language": "zh", "alert_id": 7, "site_id": "oc-003",
        "site_name": "崂山网箱 3 号", "rule": "hypoxia", "category": "event",
        "severity": "critical", "state": "open", "text": "溶解氧 2.4 mg/L，低于 3.0 mg/L",
        "opened_at": OPENED, "value": 2.4, "peak": 2.1, "trend": (4.8, 2.4)}
    values.update(overrides)
    return Due(**values)  # type: ignore[arg-type]


def test_a_chinese_message_says_where_what_how_bad_since_when_the_trend_and_what_to_do():
    message = render(due(), dashboard_url="http://dash", ack_url="http://api/ack/T")
    assert message.title == "[严重] 告警: 崂山网箱 3 号 · hypoxia"
    for part in ("溶解氧 2.4 mg/L", "当前值 2.4", "峰值 2.1", "开始于 2026-12-06 03:05",
                 "近一小时: 4.8 → 2.4 (下降)", "现场事件：请采取行动",
                 "站点页面: http://dash/site?site=oc-003", "确认: http://api/ack/T"):
        assert part in message.text, part
    assert message.data["key"] == "e1:c1" and message.data["ack_url"] == "http://api/ack/T"


def test_an_english_fault_says_check_the_sensor_and_a_steady_trend():
    message = render(due(language="en", category="fault", severity="warning",
                         trend=(10.0, 10.1)), dashboard_url="http://dash", ack_url=None)
    assert message.title.startswith("[warning] Alert:")
    assert "Sensor fault: check the sensor" in message.text
    assert "last hour: 10 → 10.1 (steady)" in message.text
    assert "Acknowledge" not in message.text


def test_an_incident_lists_its_sites_in_one_message():
    message = render(due(language="en", incident_id=3, rule="frost_risk",
                         incident_sites=["Tea A", "Tea B", "Tea C"]),
                     dashboard_url="http://dash", ack_url=None)
    assert message.title == "[critical] Incident frost_risk: 3 sites"
    assert "Tea A, Tea B, Tea C" in message.text


def test_a_digest_lists_its_items():
    message = render(due(kind="digest", items=[
        {"site_name": "A", "rule": "sensor_fault", "action": "opened", "at": "10:00"},
        {"site_name": "B", "rule": "no_data", "action": "closed", "at": "10:30"}]),
        dashboard_url="http://dash", ack_url=None)
    assert message.title == "告警摘要 (2)" and message.text.count("\n") == 1


def test_the_webhook_signature_covers_timestamp_and_body_and_refuses_replays():
    body = b'{"key":"e1:c1"}'
    signature = sign("a-secret-of-enough-length", "1800000000", body)
    assert verify("a-secret-of-enough-length", "1800000000", body, signature, now=1800000010)
    assert not verify("a-secret-of-enough-length", "1800000000", body + b" ", signature,
                      now=1800000010)
    assert not verify("another-secret-entirely", "1800000000", body, signature,
                      now=1800000010)
    assert not verify("a-secret-of-enough-length", "1800000000", body, signature,
                      now=1800000000 + 301)  # replayed later


def test_only_scheme_and_host_of_a_contact_url_are_shown():
    assert describe("dingtalk://SECsecret@token/") == "dingtalk://"
    assert describe("wecombot://thekey/") == "wecombot://"
    assert describe("mailtos://user:pw@smtp.example.com?to=a@b") == "mailtos://smtp.example.com"
    assert describe("tfhook://127.0.0.1:9/?secret=abc") == "tfhook://127.0.0.1"
