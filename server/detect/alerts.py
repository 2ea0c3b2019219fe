"""Alerts with a lifecycle: open, update, close, from the rule instances' transitions.

``AlertBook`` (held by ``engine.Engine``) turns instance transitions into alert
operations: a ``scope: site`` rule makes one alert per (site,
rule) that stays open while any of its instances is on (both sondes of a cage farm in
one hypoxia are one alert); a ``scope: series`` rule one alert per series. Operations go
to a sink: ``MemorySink`` for evaluation and tests, ``store.DatabaseSink`` for the
``alerts`` and ``alert_events`` tables and the ``tf/v1/{site}/alerts`` topic.

Acknowledging is the operators' business (API); the detector only ever opens, updates and
closes, as actor ``detector``. An acknowledged alert is still closed when it clears.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tidefield.protocol.messages import AlertNotice

from ._layout import (
    A_OPEN,
    COMPONENTS,
    RS_ACTIVE,
    RS_FIRST_COMPONENT,
    RS_PEAK,
    RS_UPDATED,
    RS_VALUE,
)
from .rules import RuleBinding

ACTOR = "detector"


@dataclass(frozen=True, slots=True)
class Transition:
    instance: int
    action: int  # A_OPEN or A_CLOSE
    time_ms: int
    value: float


# --- alerts ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AlertKey:
    site_id: str
    rule: str
    device_id: str | None
    series_key: int | None


@dataclass(slots=True)
class Alert:
    key: AlertKey
    category: str
    severity: str
    message: str
    opened_ms: int
    updated_ms: int
    value: float | None
    peak: float | None
    closed_ms: int | None = None
    component: str = ""  # what fired first (sensor faults)
    id: int | None = None  # the database id, once stored
    members: set[int] = field(default_factory=set)  # rule instances on
    escalated_to: str | None = None  # a warning closed by the alert it foretold (its rule)


@dataclass(frozen=True, slots=True)
class AlertOp:
    action: str  # opened, updated, closed
    alert: Alert
    time_ms: int
    value: float | None


class NoticePublisher(Protocol):
    """Where the service offers stored alert changes (``alert_publisher.AlertPublisher``:
    the broker); returns how many leading notices were delivered."""

    def publish(self, notices: list[AlertNotice]) -> int: ...


class AlertSink(Protocol):
    """Where a batch's alert operations go: ``MemorySink`` here, ``store.DatabaseSink``."""

    def apply(self, ops: list[AlertOp]) -> None: ...


class MemorySink:
    """Keeps every alert ever opened, for evaluation and tests."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.ops: list[AlertOp] = []

    def apply(self, ops: list[AlertOp]) -> None:
        for op in ops:
            self.ops.append(op)
            if op.action == "opened":
                self.alerts.append(op.alert)


def finite_or_none(value: float | None) -> float | None:
    """A value as the database and the wire take it: a Python float, or None for a
    missing or non-finite one (NumPy's NaN and inf are neither JSON nor useful)."""
    return None if value is None or not np.isfinite(value) else float(value)


Details = Callable[[int], dict[str, object]]  # rule instance -> more fields for its message


class AlertBook:
    """Active alerts by key; turns rule transitions into alert operations.

    A warning (a ``forecast`` rule's alert) closes, escalated, when the alert of the rule
    it foretold opens at its site; ``details`` gives a warning's message the forecast's
    fields (expected crossing, band)."""

    def __init__(self, rules: RuleBinding, active: Iterable[Alert] = (),
                 details: Details | None = None) -> None:
        self.rules = rules
        self.details = details
        self.active: dict[AlertKey, Alert] = {a.key: a for a in active}
        self.escalations: dict[str, set[str]] = {}  # alerting rule -> its warnings' rules
        for inst in rules.instances:
            if inst.spec.condition == "forecast" and inst.spec.escalation is not None:
                self.escalations.setdefault(inst.spec.escalation, set()).add(inst.rule)
        # rebuild who keeps each restored alert on from the checkpointed rule state
        for k in range(len(rules.instances)):
            if rules.state[k, RS_ACTIVE] > 0.0:
                alert = self.active.get(self._key(k))
                if alert is not None:
                    alert.members.add(k)

    def _key(self, k: int) -> AlertKey:
        inst = self.rules.instances[k]
        info = self.rules.series[inst.row]
        if inst.spec.scope == "site":
            return AlertKey(info.site_id, inst.rule, None, None)
        return AlertKey(info.site_id, inst.rule, info.device_id, info.key)

    def _message(self, k: int, value: float, component: str) -> str:
        spec = self.rules.instances[k].spec
        extra = self.details(k) if self.details is not None else {}
        try:
            return spec.message.format(value=value, threshold=spec.threshold,
                                       component=component, rule=self.rules.instances[k].rule,
                                       **extra)
        except (KeyError, ValueError, IndexError):
            return spec.message

    def apply(self, transitions: list[Transition]) -> list[AlertOp]:
        ops: list[AlertOp] = []
        touched: set[AlertKey] = set()
        rs = self.rules.state
        for tr in transitions:
            spec = self.rules.instances[tr.instance].spec
            if not spec.alert:  # a condition other rules require
                continue
            key = self._key(tr.instance)
            alert = self.active.get(key)
            if tr.action == A_OPEN:
                if alert is None and self._foretold_alert_open(tr.instance, key):
                    continue  # a warning of what is already happening says nothing
                if alert is None:
                    component = COMPONENTS[int(rs[tr.instance, RS_FIRST_COMPONENT])]
                    alert = Alert(key, spec.category, spec.severity,
                                  self._message(tr.instance, tr.value, component),
                                  tr.time_ms, tr.time_ms, finite_or_none(tr.value),
                                  finite_or_none(tr.value), component=component)
                    self.active[key] = alert
                    ops.append(AlertOp("opened", alert, tr.time_ms, alert.value))
                    ops += self._escalate(key, tr.time_ms, touched)
                alert.members.add(tr.instance)
                touched.add(key)
            elif alert is not None:
                alert.members.discard(tr.instance)
                if not alert.members:
                    alert.closed_ms = max(tr.time_ms, alert.opened_ms)
                    del self.active[key]
                    touched.discard(key)
                    ops.append(AlertOp("closed", alert, alert.closed_ms, finite_or_none(tr.value)))
        # bring every alert still on up to date with its instances
        for key, alert in self.active.items():
            updated = max((rs[k, RS_UPDATED] for k in alert.members), default=0.0)
            if updated <= alert.updated_ms and key not in touched:
                continue
            below = any(self.rules.instances[k].spec.worse_below for k in alert.members)
            peaks = [rs[k, RS_PEAK] for k in alert.members if np.isfinite(rs[k, RS_PEAK])]
            if peaks:
                worst = min(peaks) if below else max(peaks)
                if alert.peak is None or (worst < alert.peak if below else worst > alert.peak):
                    alert.peak = float(worst)
            latest = max(alert.members, key=lambda k: rs[k, RS_UPDATED], default=None)
            if latest is not None:
                alert.value = finite_or_none(rs[latest, RS_VALUE])
            if updated > alert.updated_ms:
                alert.updated_ms = int(updated)
                ops.append(AlertOp("updated", alert, alert.updated_ms, alert.value))
        return ops

    def _foretold_alert_open(self, k: int, key: AlertKey) -> bool:
        spec = self.rules.instances[k].spec
        if spec.condition != "forecast" or spec.escalation is None:
            return False
        return any(a.key.site_id == key.site_id and a.key.rule == spec.escalation
                   for a in self.active.values())

    def _escalate(self, key: AlertKey, time_ms: int, touched: set[AlertKey]) -> list[AlertOp]:
        """Close the site's warnings that foretold the alert just opened (``key``)."""
        ops = []
        for rule in sorted(self.escalations.get(key.rule, ())):
            warning = self.active.pop(AlertKey(key.site_id, rule, None, None), None)
            if warning is None:
                continue
            warning.closed_ms = max(time_ms, warning.opened_ms)
            warning.escalated_to = key.rule
            touched.discard(warning.key)
            ops.append(AlertOp("closed", warning, warning.closed_ms, warning.value))
        return ops
