"""What a message says, in Chinese or English per contact: the site, what happened, value
and peak, since when, what it is (a sensor fault: check the sensor; an event: act), a
link to the site page and, while the alert is open, the acknowledge link; while a
suggested response waits, its confirm link.

Pure functions of a ``Due`` row (no database, no network), so tests call them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from .channels import Message

_TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "opened": "告警", "updated": "告警更新", "acknowledged": "已确认", "closed": "已恢复",
        "reminder": "提醒：告警仍未确认", "escalation": "升级：告警无人确认",
        "digest": "告警摘要", "incident": "事件",
        "fault": "传感器故障：请检查传感器", "event": "现场事件：请采取行动",
        "value": "当前值", "peak": "峰值", "since": "开始于", "ack": "确认",
        "confirm": "执行建议操作",
        "site": "站点页面", "by": "确认人", "sites": "个站点", "severity": "级别",
        "trend": "近一小时", "rising": "上升", "falling": "下降", "steady": "平稳",
        "still": "仍在告警", "updates": "自上次通知以来更新 {n} 次",
        "info": "提示", "warning": "警告", "critical": "严重",
    },
    "en": {
        "opened": "Alert", "updated": "Alert update", "acknowledged": "Acknowledged",
        "closed": "Cleared", "reminder": "Reminder: alert not acknowledged",
        "escalation": "Escalated: nobody acknowledged", "digest": "Alert digest",
        "incident": "Incident",
        "fault": "Sensor fault: check the sensor", "event": "Real event: act",
        "value": "value", "peak": "peak", "since": "since", "ack": "Acknowledge",
        "confirm": "Run suggested action",
        "site": "Site page", "by": "by", "sites": "sites", "severity": "severity",
        "trend": "last hour", "rising": "rising", "falling": "falling", "steady": "steady",
        "still": "still active", "updates": "{n} updates since the last message",
        "info": "info", "warning": "warning", "critical": "critical",
    },
}
_LOCAL = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery due now, with what its message needs (``store.due_deliveries``)."""

    delivery_id: int
    key: str
    kind: str
    tier: int
    contact_id: int
    url: str
    language: str
    attempts: int = 0
    alert_id: int | None = None
    site_id: str | None = None
    site_name: str | None = None
    rule: str | None = None
    category: str | None = None
    severity: str | None = None
    state: str | None = None
    text: str | None = None
    opened_at: datetime | None = None
    value: float | None = None
    peak: float | None = None
    acknowledged_by: str | None = None
    incident_id: int | None = None
    incident_sites: list[str] = field(default_factory=list)  # those still active
    incident_size: int = 0  # every site that joined it
    updates: int = 0  # an 'updated' message: the updates it stands for
    items: list[dict[str, Any]] = field(default_factory=list)  # a digest's alerts
    trend: tuple[float, float] | None = None  # the series' first and latest of the last hour


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _trend(trend: tuple[float, float] | None, words: dict[str, str]) -> str:
    if trend is None:
        return ""
    first, last = trend
    change = last - first
    # a change within 2 % of the level (or of 1 unit near zero) reads as steady
    word = "steady" if abs(change) <= 0.02 * max(abs(first), 1.0) else \
        "rising" if change > 0 else "falling"
    return f"{words['trend']}: {_number(first)} → {_number(last)} ({words[word]})"


def render(due: Due, *, dashboard_url: str, ack_url: str | None,
           confirm_links: list[tuple[str, str]] | None = None) -> Message:
    """``confirm_links``: (what, one-time URL) of each suggested response waiting."""
    words = _TEXT.get(due.language, _TEXT["en"])
    if due.kind == "digest":
        lines = [f"{item['site_name']} · {item['rule']} · {words.get(item['action'], '')} · "
                 f"{item['at']}" for item in due.items]
        title = f"{words['digest']} ({len(due.items)})"
        return Message(due.key, title, "\n".join(lines),
                       {"key": due.key, "kind": "digest", "items": due.items})
    opened = due.opened_at.astimezone(_LOCAL).strftime("%Y-%m-%d %H:%M") \
        if due.opened_at else ""
    site = due.site_name or due.site_id or ""
    head = words.get(due.kind, due.kind)
    severity = words.get(due.severity or "", due.severity or "")
    if due.incident_id is not None and due.incident_size > 1 and due.kind == "closed":
        remaining = len(due.incident_sites)
        title = (f"{head}: {words['incident']} {due.rule}" + (
            f" ({remaining} {words['sites']} {words['still']})" if remaining else ""))
        where = ", ".join(due.incident_sites[:20]) + (" …" if remaining > 20 else "")
    elif due.incident_id is not None and len(due.incident_sites) > 1 and due.kind in (
            "opened", "updated", "reminder", "escalation"):
        title = (f"[{severity}] {words['incident']} {due.rule}: "
                 f"{len(due.incident_sites)} {words['sites']}")
        where = ", ".join(due.incident_sites[:20]) + (" …" if len(due.incident_sites) > 20
                                                      else "")
    else:
        title = f"[{severity}] {head}: {site} · {due.rule}"
        where = site
    lines = [where, due.text or "",
             f"{words['value']} {_number(due.value)}, {words['peak']} {_number(due.peak)}; "
             f"{words['since']} {opened}",
             _trend(due.trend, words),
             words.get(due.category or "", "")]
    if due.kind == "updated" and due.updates > 1:
        lines.append(words["updates"].format(n=due.updates))
    if due.kind == "acknowledged" and due.acknowledged_by:
        lines.append(f"{words['by']} {due.acknowledged_by}")
    site_link = f"{dashboard_url.rstrip('/')}/site?site={due.site_id}"
    lines.append(f"{words['site']}: {site_link}")
    if ack_url:
        lines.append(f"{words['ack']}: {ack_url}")
    for what, url in confirm_links or []:
        lines.append(f"{words['confirm']} ({what}): {url}")
    data = {"key": due.key, "kind": due.kind, "tier": due.tier, "alert_id": due.alert_id,
            "site": due.site_id, "site_name": site, "rule": due.rule,
            "category": due.category, "severity": due.severity, "state": due.state,
            "message": due.text, "opened_at": due.opened_at.isoformat()
            if due.opened_at else None, "value": due.value, "peak": due.peak,
            "acknowledged_by": due.acknowledged_by, "incident_id": due.incident_id,
            "incident_sites": due.incident_sites, "site_url": site_link, "ack_url": ack_url,
            "confirm_links": [{"what": what, "url": url} for what, url in confirm_links or []],
            "trend_last_hour": list(due.trend) if due.trend else None,
            "updates": due.updates if due.kind == "updated" else None,
            "title": title}
    return Message(due.key, title, "\n".join(line for line in lines if line), data)
