"""Scoring the detector against firmware-sim's ground truth.

``run_fleet`` streams a simulated fleet through an ``Engine`` hour by hour (after a
warm-up of the days before the window, as a running service would have), checking for
silent series at every hour, and keeps the alerts. ``score_alerts`` matches them to the
labels:

* the unit is the alert (one per episode), as an operator sees it;
* a fault label (one series) is detected by a fault alert of that series, an event (all
  labels of one ``event_id``) by an event alert of its site, overlapping the label's
  interval extended by ``GRACE_MS`` (a dropout is only certain once it has lasted a while);
* each alert predicts a kind (``PREDICTED_KIND``); per kind, precision counts the alerts
  predicting it that overlap a label of it (true) or no label at all (false; an alert
  overlapping a label of another kind is a wrong kind, not a false alarm), recall the
  labels detected by any alert;
* classification: of the alerts overlapping a label, the share whose category (fault or
  event) is the label's;
* a fault-free run (``inject=False``) counts every alert as a false alert.

Warnings (alerts of category ``forecast``) are left out of all that and scored by
``score_warnings``: per event kind with a threshold, the lead time of the first warning
issued before the label's first crossing (``Label.crossing_ms``) and still on when the
event began (an event crossed unwarned has lead 0), and warnings that overlap no event of
their kind at their site, per site that can be warned per week and per site of the fleet.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tidefield.protocol.units import DAY_MS, HOUR_MS

from .alerts import Alert, AlertOp, MemorySink
from .detector import Detector, SeriesInfo
from .engine import Engine
from .forecast.forecaster import ForecastParams
from .rules import RuleSet, load_rules
from .tuning import DetectorParams

if TYPE_CHECKING:
    from tidefield.sim.events import Label
    from tidefield.sim.fleet import Fleet
    from tidefield.sim.logger import LoggerQuirks

log = logging.getLogger(__name__)

GRACE_MS = 2 * HOUR_MS

# what kind of label an alert claims to have seen
PREDICTED_KIND = {
    "hypoxia": "hypoxia", "frost_risk": "frost", "storm_wind": "storm",
    "irrigation_failure": "irrigation_failure", "cold_water_intrusion": "cold_water_intrusion",
    "no_data": "dropout", "sensor_drift": "drift",
}
COMPONENT_KIND = {"range": "out_of_range", "stuck": "stuck", "spike": "spike",
                  "shift": "spike", "noise": "noise_burst", "drift": "drift",
                  "level": "drift", "gap": "dropout"}


def predicted_kind(alert: Alert) -> str:
    if alert.key.rule == "sensor_fault":
        return COMPONENT_KIND.get(alert.component, "spike")
    return PREDICTED_KIND.get(alert.key.rule, alert.key.rule)


def fleet_series(fleet: Fleet) -> list[SeriesInfo]:
    table = fleet.table
    kinds = {site.id: site.kind for site in table.sites}
    templates = {device.id: device.template.name for device in table.devices}
    return [SeriesInfo(i, site, device, metric,
                       float(table.arrays.interval_ms[i]) / 1000.0, templates[device],
                       kinds[site])
            for i, (site, device, metric) in enumerate(zip(
                table.site_ids, table.device_ids, table.metrics, strict=True))]


@dataclass
class FleetRun:
    alerts: list[Alert]  # opened inside the window
    readings: int
    anomalies: int
    seconds_detecting: float


def run_fleet(fleet: Fleet, start_ms: int, end_ms: int, *, params: DetectorParams | None = None,
              ruleset: RuleSet | None = None, warmup_days: float = 3.0,
              chunk_ms: int = HOUR_MS, quirks: LoggerQuirks | None = None,
              progress: Callable[[int, int], None] | None = None,
              forecast: ForecastParams | None = None) -> FleetRun:
    """``quirks``: a ``sim.logger.LoggerQuirks`` applied to every chunk (irregular times,
    repeated timestamps, clock jumps), or None."""
    import time

    engine = Engine(Detector(fleet_series(fleet), params), ruleset or load_rules(), forecast)
    sink = MemorySink()
    readings = anomalies = 0
    busy = 0.0
    t = start_ms - int(warmup_days * DAY_MS)
    t = t // chunk_ms * chunk_ms
    while t < end_ms:
        stop = min(end_ms, t + chunk_ms)
        chunk = fleet.generate(t, stop)
        if quirks is not None:
            chunk = quirks.apply(chunk)
        began = time.perf_counter()
        outcome = engine.step(chunk.series, chunk.time_ms, chunk.value, stop)
        sink.apply(outcome.ops)
        busy += time.perf_counter() - began
        if t >= start_ms:
            readings += len(chunk)
            anomalies += int((outcome.scores.score >= 0.5).sum())
        if progress is not None:
            progress(stop - start_ms, end_ms - start_ms)
        t = stop
    inside = [a for a in sink.alerts if start_ms <= a.opened_ms < end_ms]
    return FleetRun(inside, readings, anomalies, busy)


@dataclass(frozen=True, slots=True)
class KindScore:
    kind: str
    category: str
    labels: int
    detected: int
    predicted: int
    true_alerts: int
    false_alerts: int
    median_ttd_min: float | None

    @property
    def recall(self) -> float:
        return self.detected / self.labels if self.labels else float("nan")

    @property
    def precision(self) -> float:
        judged = self.true_alerts + self.false_alerts
        return self.true_alerts / judged if judged else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if not (p + r > 0):
            return float("nan") if np.isnan(p) or np.isnan(r) else 0.0
        return 2 * p * r / (p + r)


@dataclass(frozen=True, slots=True)
class Evaluation:
    kinds: list[KindScore]
    classified: int  # alerts overlapping a label
    classified_right: int

    @property
    def classification(self) -> float:
        return self.classified_right / self.classified if self.classified else float("nan")


def _overlaps(alert: Alert, start: int, end: int, window_end: int) -> bool:
    closed = alert.closed_ms if alert.closed_ms is not None else window_end
    return alert.opened_ms < end + GRACE_MS and closed >= start


def score_alerts(fleet: Fleet, labels: list[Label], alerts: list[Alert], window_end: int
                 ) -> Evaluation:
    alerts = detections(alerts)
    table = fleet.table
    by_series: dict[int, list[Alert]] = defaultdict(list)
    by_site: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        if alert.key.series_key is not None:
            by_series[alert.key.series_key].append(alert)
        by_site[alert.key.site_id].append(alert)
    # the ground truth units: faults one per label, events one per event_id
    # (kind, category, site, start, end, series)
    units: list[tuple[str, str, str, int, int, list]] = []
    events: dict[str, list] = {}
    for label in labels:
        s = table.index(label.site_id, label.device_id, label.metric)
        if label.category == "fault":
            units.append((label.kind, "fault", label.site_id, label.start_ms, label.end_ms, [s]))
        else:
            events.setdefault(label.event_id, []).append((label, s))
    for members in events.values():
        label = members[0][0]
        units.append((label.kind, "event", label.site_id, label.start_ms, label.end_ms,
                      [s for _, s in members]))

    detected: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    category_of: dict[str, str] = {}
    ttd: dict[str, list[float]] = defaultdict(list)
    matched_kinds: dict[int, set[str]] = defaultdict(set)  # id(alert) -> kinds it overlaps
    right: dict[int, bool] = {}
    for kind, category, site, start, end, series in units:
        counts[kind] += 1
        category_of[kind] = category
        if category == "fault":
            candidates = [a for s in series for a in by_series.get(s, ())]
            hits = [a for a in candidates if _overlaps(a, start, end, window_end)]
            detecting = [a for a in hits if a.category == "fault"]
        else:
            candidates = by_site.get(site, [])
            hits = [a for a in candidates if _overlaps(a, start, end, window_end)]
            detecting = [a for a in hits if a.category == "event"]
        for a in hits:
            matched_kinds[id(a)].add(kind)
            right[id(a)] = right.get(id(a), False) or a.category == category
        if detecting:
            detected[kind] += 1
            first = min(a.opened_ms for a in detecting)
            ttd[kind].append(max(0, first - start) / 60_000.0)
    true_alerts: dict[str, int] = defaultdict(int)
    false_alerts: dict[str, int] = defaultdict(int)
    predicted: dict[str, int] = defaultdict(int)
    for alert in alerts:
        kind = predicted_kind(alert)
        predicted[kind] += 1
        kinds = matched_kinds.get(id(alert))
        if not kinds:
            false_alerts[kind] += 1
        elif kind in kinds:
            true_alerts[kind] += 1
    from tidefield.sim.events import EVENT_KINDS
    from tidefield.sim.render import FAULT_KINDS

    scores = []
    for kind, category in [*((k, "fault") for k in FAULT_KINDS),
                           *((k, "event") for k in EVENT_KINDS)]:
        times = ttd.get(kind)
        scores.append(KindScore(kind, category, counts.get(kind, 0), detected.get(kind, 0),
                                predicted.get(kind, 0), true_alerts.get(kind, 0),
                                false_alerts.get(kind, 0),
                                float(np.median(times)) if times else None))
    classified = len(right)
    return Evaluation(scores, classified, sum(right.values()))


def false_alerts_per_site_week(run: FleetRun, sites: int, start_ms: int, end_ms: int) -> float:
    weeks = (end_ms - start_ms) / (7 * DAY_MS)
    return len(detections(run.alerts)) / (sites * weeks)


def detections(alerts: list[Alert]) -> list[Alert]:
    """The alerts of what happened (faults, events), without the warnings."""
    return [a for a in alerts if a.category != "forecast"]


def warnings_of(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.category == "forecast"]


LEAD_TARGET_MIN = 60.0


@dataclass(frozen=True, slots=True)
class WarningScore:
    kind: str
    events: int  # events of the kind that crossed their threshold
    lead_min: list[float]  # per event: first warning to crossing (0: not warned before)
    warnings: int
    false_warnings: int
    sites: int  # sites a warning of this kind can be raised at
    weeks: float
    fleet_sites: int  # every site of the fleet

    @property
    def median_lead(self) -> float:
        return float(np.median(self.lead_min)) if self.lead_min else float("nan")

    @property
    def p10_lead(self) -> float:
        return float(np.percentile(self.lead_min, 10)) if self.lead_min else float("nan")

    @property
    def share_ahead(self) -> float:
        """Share of the events warned at least ``LEAD_TARGET_MIN`` before the crossing."""
        if not self.lead_min:
            return float("nan")
        return sum(lead >= LEAD_TARGET_MIN for lead in self.lead_min) / len(self.lead_min)

    @property
    def false_per_site_week(self) -> float:
        """Per site that can be warned of this kind."""
        return self.false_warnings / (self.sites * self.weeks) if self.sites else float("nan")

    @property
    def false_per_fleet_site_week(self) -> float:
        """Per site of the fleet, as false alerts are counted."""
        return self.false_warnings / (self.fleet_sites * self.weeks)


def warning_kinds(ruleset: RuleSet) -> dict[str, str]:
    """Forecast rule -> the event kind it warns of (through the rule it escalates to)."""
    return {name: PREDICTED_KIND.get(spec.escalation or "", spec.escalation or "")
            for name, spec in ruleset.rules.items() if spec.condition == "forecast"}


def score_warnings(fleet: Fleet, labels: list[Label], alerts: list[Alert], ruleset: RuleSet,
                   start_ms: int, end_ms: int) -> list[WarningScore]:
    kinds = warning_kinds(ruleset)
    minutes = {name: ruleset.rules[name].min_minutes for name in kinds}
    site_kinds = {site.id: site.kind for site in fleet.table.sites}
    metrics_at: dict[str, set[str]] = defaultdict(set)
    for site, metric in zip(fleet.table.site_ids, fleet.table.metrics, strict=True):
        metrics_at[site].add(metric)
    events: dict[str, Label] = {}
    for label in labels:
        if label.category == "event":
            events.setdefault(label.event_id, label)
    weeks = (end_ms - start_ms) / (7 * DAY_MS)
    scores = []
    for rule, kind in sorted(kinds.items(), key=lambda item: item[1]):
        spec = ruleset.rules[rule]
        warned_sites = {site for site, site_kind in site_kinds.items()
                        if spec.metric in metrics_at[site]
                        and (spec.site_kinds is None or site_kind in spec.site_kinds)}
        mine = [a for a in warnings_of(alerts) if a.key.rule == rule]
        by_site: dict[str, list[Alert]] = defaultdict(list)
        for a in mine:
            by_site[a.key.site_id].append(a)
        issued = {id(a): a.opened_ms + int(minutes[rule] * 60_000) for a in mine}
        leads = []
        of_kind = [e for e in events.values() if e.kind == kind]
        for event in of_kind:
            if event.crossing_ms is None or not start_ms <= event.crossing_ms < end_ms:
                continue
            # a warning issued before the crossing and still on when the event began (it
            # may have been issued earlier: the operator has been warned since)
            before = [issued[id(a)] for a in by_site.get(event.site_id, ())
                      if issued[id(a)] <= event.crossing_ms
                      and (a.closed_ms is None or a.closed_ms >= event.start_ms - GRACE_MS)]
            leads.append((event.crossing_ms - min(before)) / 60_000.0 if before else 0.0)
        false = 0
        for a in mine:
            closed = a.closed_ms if a.closed_ms is not None else end_ms
            if not any(e.site_id == a.key.site_id and a.opened_ms < e.end_ms + GRACE_MS
                       and closed >= e.start_ms - GRACE_MS for e in of_kind):
                false += 1
        scores.append(WarningScore(kind, len(leads), leads, len(mine), false,
                                   len(warned_sites), weeks, len(site_kinds)))
    return scores


@dataclass(frozen=True, slots=True)
class AerationResult:
    events: int  # hypoxia events with a crossing
    crossed_without: int  # their sondes under 3 mg/L as simulated
    crossed_with: int  # the same nights re-simulated with the automatic runs
    aerated: int  # events some automatic run reached before their end

    @property
    def share_without(self) -> float:
        return self.crossed_without / self.events if self.events else float("nan")

    @property
    def share_with(self) -> float:
        return self.crossed_with / self.events if self.events else float("nan")


HYPOXIA_LIMIT = 3.0  # mg/L: what "crossing" means in the aerator comparison


def aerator_rerun(fleet: Fleet, labels: list[Label], alerts: list[Alert], ruleset: RuleSet,
                  start_ms: int, end_ms: int) -> AerationResult:
    """Each hypoxia again, as if every cage farm ran its aerators in automatic mode: the
    run's warnings and alerts (issued when their minimum duration had passed) go through
    a ``ResponsePlanner`` with the sites automatic, and the night is re-simulated with the
    aerator runs it issues (firmware-sim is deterministic per seed; ``sim.actuators``'s
    board gives the aerator's effect on the water). Counts the events whose sondes still
    fall under 3 mg/L."""
    from tidefield.sim.actuators import Effect, aerated

    from .responses import ResponsePlanner

    kinds = {site.id: site.kind for site in fleet.table.sites}
    responding = [name for name, spec in ruleset.rules.items()
                  if spec.response is not None and spec.response.actuator == "aerator"]
    automatic = ruleset.with_changes({}, {"cage_farm": {
        name: {"response_mode": "automatic"} for name in responding}})
    planner = ResponsePlanner(automatic, kinds)
    minutes = {name: spec.min_minutes for name, spec in ruleset.rules.items()}
    issued = sorted(((a.opened_ms + int(minutes.get(a.key.rule, 0.0) * 60_000), a)
                     for a in alerts if a.key.rule in responding),
                    key=lambda pair: pair[0])
    # the run's timeline at each site: the alerts as they were issued, and every 15
    # minutes the renewal of runs for those still on
    timeline: dict[str, list[tuple[int, int, Alert | None]]] = defaultdict(list)
    for at, alert in issued:
        timeline[alert.key.site_id].append((at, 0, alert))
    for items in timeline.values():
        begin, until = items[0][0], max((a.closed_ms or end_ms) for _, _, a in items if a)
        items += [(t, 1, None) for t in range(begin, until, 15 * 60_000)]
        items.sort(key=lambda item: (item[0], item[1]))
    runs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for site, items in timeline.items():
        on = [a for _, _, a in items if a is not None]
        for at, _, issued_alert in items:
            if issued_alert is not None:
                decisions = planner.decide([AlertOp("opened", issued_alert, at,
                                                    issued_alert.value)])
            else:
                holding = [a for a in on if a.opened_ms + minutes.get(a.key.rule, 0.0)
                           * 60_000 <= at < (a.closed_ms or end_ms)]
                decisions = planner.renew(holding, at)
            runs[site] += [(at, at + d.duration_s * 1000) for d in decisions if d.automatic]
    table = fleet.table
    by_event: dict[str, list[Label]] = defaultdict(list)
    for label in labels:
        if label.kind == "hypoxia" and label.metric == "dissolved_oxygen":
            by_event[label.event_id].append(label)
    events = crossed_without = crossed_with = reached = 0
    for members in by_event.values():
        first = members[0]
        if first.crossing_ms is None or not start_ms <= first.crossing_ms < end_ms:
            continue
        events += 1
        plan = fleet.site_plan(first.site_id, fleet.plan.epoch_of(first.start_ms)) \
            if fleet.plan is not None else None
        rows = plan.events if plan is not None else np.zeros((0, 5))
        site_runs = [(on, off) for on, off in runs.get(first.site_id, ())
                     if on < first.end_ms and off > first.start_ms]
        reached += bool(site_runs)
        below_without = below_with = False
        for label in members:
            # the sonde's clean physics with the site's events (no sensor faults: what the
            # water does, not what a broken probe reports)
            s = table.index(label.site_id, label.device_id, label.metric)
            times = fleet.series_sample_times(s, label.start_ms, label.end_ms)
            water = {"dissolved_oxygen": fleet.render_series(
                s, label.start_ms, label.end_ms, rows, np.zeros((0, 4)))}
            for metric in ("water_temperature", "salinity"):
                # this sonde's, or (a second sonde measures no salinity) the site's other
                # one's at these times
                source = next(i for i in [*table.of_site(label.site_id)]
                              if table.metrics[i] == metric
                              and (table.device_ids[i] == label.device_id
                                   or (label.device_id, metric) not in
                                   zip(table.device_ids, table.metrics, strict=True)))
                water[metric] = np.interp(
                    times, fleet.series_sample_times(source, label.start_ms, label.end_ms),
                    fleet.render_series(source, label.start_ms, label.end_ms, rows,
                                        np.zeros((0, 4))))
            oxygen = water["dissolved_oxygen"]
            below_without |= bool(np.nanmin(oxygen) < HYPOXIA_LIMIT)
            if site_runs:
                oxygen = aerated(times, oxygen, water["water_temperature"],
                                 water["salinity"], site_runs,
                                 Effect("aerator", label.device_id))
            below_with |= bool(np.nanmin(oxygen) < HYPOXIA_LIMIT)
        crossed_without += below_without
        crossed_with += below_with
    return AerationResult(events, crossed_without, crossed_with, reached)
