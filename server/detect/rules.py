"""Domain rules as configuration: the bundled ``rules.yaml``, per-site overrides, and
their binding to a detector's series as rule instances the kernel advances.

A rule names a condition from ``CONDITIONS`` (a registry: adding one is a kernel branch
and a line here), the metric and site kinds it applies to, thresholds with hysteresis,
how long the condition must hold before an alert opens and how long it must stay clear
before it closes, and what the alert says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._layout import (
    C_INTERVAL,
    COMPONENTS,
    CONDITIONS,
    R_NO_DATA,
    RP_CLEAR,
    RP_CLEAR_MS,
    RP_COMPONENTS,
    RP_COND,
    RP_EVERY,
    RP_FROM_HIGH,
    RP_GATE,
    RP_HIGH_WINDOW,
    RP_INTERVAL,
    RP_MIN,
    RP_SERIES,
    RP_TAU,
    RP_THRESHOLD,
    RP_UNLESS,
    RP_WETS,
    RP_WORSE_BELOW,
    RS_BASE,
    RS_CLEAR_SINCE,
    RS_COND_SINCE,
    RS_HIGH_END,
    RS_HIGH_OLDER,
    RS_HIGH_SLOT,
    RS_LAST_RISE,
    RS_LOWEST,
    RS_PENDING,
    RS_SEEN,
    RULE_COLUMNS,
    RULE_STATE_COLUMNS,
)
from .detector import NEVER, Detector

BUNDLED = "rules.yaml"


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


class Response(BaseModel):
    """What a rule's alert (or warning) may switch on at its site, and the limits of doing
    it without an operator (``responses.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actuator: str = Field(min_length=1, description="the name the site's agent knows it by: "
                                                    "aerator, valve, frost_fan")
    device: str | None = Field(None, description="whose commands reach it; default the "
                                                 "site's gateway, {site}-gw")
    minutes: float = Field(60.0, gt=0, description="how long one response runs it")
    max_on_minutes: float = Field(240.0, gt=0, description="the most one run may last")
    cooldown_minutes: float = Field(60.0, ge=0, description="no automatic run sooner after "
                                                            "the last one ended")
    hours: tuple[float, float] | None = Field(None, description="local hours [from, to) an "
                                                                "automatic run may start in")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    condition: Literal["below", "above", "fall", "no_rise", "fault", "no_data", "forecast"]
    metric: str | None = None
    site_kinds: tuple[str, ...] | None = None
    threshold: float
    clear: float | None = None
    tau_hours: float = Field(24.0, gt=0)
    min_minutes: float = Field(0.0, ge=0)
    clear_minutes: float = Field(0.0, ge=0)
    category: Literal["fault", "event", "forecast"]
    severity: Literal["info", "warning", "critical"] = "warning"
    scope: Literal["site", "series"] = "series"
    message: str
    enabled: bool = True
    components: tuple[str, ...] = ()  # fault rules: which detector components count
    # another rule whose condition must hold at the same site for this one to open (a gale
    # is a storm when the pressure has fallen too); a site without its metric goes without
    requires: str | None = None
    # no_rise rules: another rule whose condition, holding at the same site, explains a
    # rise away (rain wetting the soil is no watering); a site without its metric goes
    # without
    unless: str | None = None
    # no_rise rules: the largest rise one unit of the `unless` rule's metric can explain
    # (soil moisture % per mm of rain); a larger rise counts even while it rains. None:
    # any rise while the `unless` condition holds is explained
    unless_wets: float | None = Field(None, gt=0)
    alert: bool = True  # False: a condition other rules require, never an alert itself
    # no_rise rules: the interval between rises the site's operator declares (its
    # irrigation schedule); judged against it from the first reading instead of learning
    # the interval from three rises seen
    every_hours: float | None = Field(None, gt=0)
    # fall rules: measure the fall from a running high (up at once, down with tau_hours)
    # instead of a running level (an EWMA that follows a fall down before it is judged)
    from_high: bool = False
    # from_high fall rules: the high is the largest reading of the last so many hours
    # (a true windowed maximum) instead of one relaxing with tau_hours: a storm deepening
    # slowly for half a day pulls a relaxing high down with it and is judged late or not
    # at all. A forecast of the rule (`of`) keeps its own high, relaxing with tau_hours
    high_window_hours: float | None = Field(None, gt=0)
    # forecast rules: the rule whose threshold the forecast watches (its metric's series
    # are forecast), how far ahead, and the alerting rule whose alert ends the warning by
    # escalation (default `of`); threshold and clear are confidences of a crossing
    of: str | None = None
    horizon_hours: float = Field(8.0, gt=0, le=48)
    escalates_to: str | None = None
    # forecast rules: the local hours [from, to) a crossing can happen in (a radiation
    # frost forms between dusk and dawn; from > to wraps past midnight); None: any hour
    crossing_hours: tuple[float, float] | None = None
    # the action the rule's alert may take (aerators on, a valve open, frost fans), and
    # whether it is only suggested to an operator or issued at once within its limits;
    # a site's mode is a site change like any other field (`response_mode: automatic`)
    response: Response | None = None
    response_mode: Literal["suggest", "automatic"] = "suggest"

    @model_validator(mode="after")
    def _known_components(self) -> Rule:
        unknown = set(self.components) - set(COMPONENTS[1:])
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; known: "
                             f"{', '.join(COMPONENTS[1:])}")
        if self.condition == "fault" and not self.components:
            raise ValueError("a fault rule needs `components`")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.condition in ("below", "above", "fall", "no_rise") and self.metric is None:
            raise ValueError(f"a {self.condition} rule needs a metric")
        if self.condition in ("below", "above", "fall", "no_rise") and self.clear is None:
            raise ValueError(f"a {self.condition} rule needs a clear level")
        if self.condition == "below" and self.clear is not None \
                and self.threshold is not None and self.clear < self.threshold:
            raise ValueError("clear must not be under threshold for a below rule")
        if self.condition == "above" and self.clear is not None \
                and self.threshold is not None and self.clear > self.threshold:
            raise ValueError("clear must not be over threshold for an above rule")
        if not math.isfinite(self.threshold):
            raise ValueError("threshold must be finite")
        if self.high_window_hours is not None and not (self.condition == "fall"
                                                       and self.from_high):
            raise ValueError("high_window_hours is for a fall rule with from_high: true")
        if self.crossing_hours is not None and not all(
                0.0 <= h <= 24.0 for h in self.crossing_hours):
            raise ValueError("crossing_hours are local hours in [0, 24]")
        if self.condition == "forecast":
            if self.metric is None or self.of is None:
                raise ValueError("a forecast rule needs a metric and `of`, the rule it "
                                 "foretells")
            if not 0.0 < self.threshold <= 1.0 or not 0.0 <= (self.clear or 0.0) <= 1.0:
                raise ValueError("a forecast rule's threshold and clear are confidences "
                                 "in (0, 1]")
            if self.clear is None or self.clear > self.threshold:
                raise ValueError("a forecast rule needs a clear confidence not over its "
                                 "threshold")
        return self

    @property
    def escalation(self) -> str | None:
        """The rule whose alert ends this forecast rule's warning."""
        return self.escalates_to or self.of

    @property
    def worse_below(self) -> bool:
        return self.condition in ("below", "fall", "no_rise")


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: dict[str, Rule] = Field(default_factory=dict)
    kinds: dict[str, dict[str, dict]] = Field(default_factory=dict)
    sites: dict[str, dict[str, dict]] = Field(default_factory=dict)


Changes = dict[str, dict[str, dict[str, Any]]]  # site or kind -> rule -> fields


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: dict[str, Rule]
    site_changes: Changes = field(default_factory=dict)
    kind_changes: Changes = field(default_factory=dict)

    def with_changes(self, sites: Changes, kinds: Changes, source: str = "live rules"
                     ) -> RuleSet:
        """These per-site and per-kind changes over this set's (field by field), checked
        against the rule schema: the live rules' layer over the files'."""
        merged_sites = _merged(self.site_changes, sites)
        merged_kinds = _merged(self.kind_changes, kinds)
        _check_changes(source, self.rules, merged_kinds, merged_sites)
        return RuleSet(self.rules, merged_sites, merged_kinds)

    def for_site(self, site_id: str, site_kind: str | None = None) -> dict[str, Rule]:
        """The rules at one site: the file's, with its kind's changes, then its own."""
        kind = self.kind_changes.get(site_kind or "", {})
        site = self.site_changes.get(site_id, {})
        if not kind and not site:
            return self.rules
        return {name: (Rule.model_validate({**spec.model_dump(), **kind.get(name, {}),
                                            **site.get(name, {})})
                       if name in kind or name in site else spec)
                for name, spec in self.rules.items()}


def _read(path: Path | None) -> tuple[str, dict]:
    if path is None:
        text = resources.files(__package__).joinpath(BUNDLED).read_text(encoding="utf-8")
        name = f"bundled {BUNDLED}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from None
        name = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RulesError(f"{name}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{name}: expected a mapping with `rules`, `kinds` and/or `sites`")
    return name, data


def load_rules(override: Path | None = None) -> RuleSet:
    """The bundled rules, with ``override`` (a YAML file) merged over them: its ``rules``
    replace or add whole rules, its ``kinds`` change fields of a rule at the sites of one
    kind, its ``sites`` at one site (over its kind's changes)."""
    name, data = _read(None)
    try:
        base = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{name}: {exc}") from None
    rules = dict(base.rules)
    kinds = {k: dict(v) for k, v in base.kinds.items()}
    sites = {k: dict(v) for k, v in base.sites.items()}
    if override is not None:
        name, data = _read(override)
        try:
            extra = RulesFile.model_validate(data)
        except ValidationError as exc:
            raise RulesError(f"{name}: {exc}") from None
        rules.update(extra.rules)
        kinds, sites = _merged(kinds, extra.kinds), _merged(sites, extra.sites)
    for rule_name, spec in rules.items():
        if spec.requires is not None and spec.requires not in rules:
            raise RulesError(f"{name}: rule {rule_name} requires unknown rule "
                             f"{spec.requires!r}")
        if spec.unless is not None and spec.unless not in rules:
            raise RulesError(f"{name}: rule {rule_name} names unknown rule "
                             f"{spec.unless!r} in `unless`")
        if spec.condition == "forecast":
            target = rules.get(spec.of or "")
            if target is None or target.condition not in ("below", "above", "fall") \
                    or target.metric != spec.metric:
                raise RulesError(f"{name}: forecast rule {rule_name}: `of` must name a "
                                 f"below, above or fall rule of {spec.metric}")
            if spec.escalation not in rules:
                raise RulesError(f"{name}: forecast rule {rule_name} escalates to unknown "
                                 f"rule {spec.escalation!r}")
    _check_changes(name, rules, kinds, sites)
    return RuleSet(rules, sites, kinds)


def _merged(table: Changes, extra: Changes) -> Changes:
    """``extra`` over ``table``: a rule's fields are merged, anything else replaced."""
    out = {who: dict(changes) for who, changes in table.items()}
    for who, changes in extra.items():
        mine = out.setdefault(who, {})
        for rule_name, fields in changes.items():
            if isinstance(fields, dict) and isinstance(mine.get(rule_name), dict):
                mine[rule_name] = {**mine[rule_name], **fields}
            else:
                mine[rule_name] = fields
    return out


def _check_changes(name: str, rules: dict[str, Rule], kinds: Changes, sites: Changes) -> None:
    """RulesError unless every change names a known rule and leaves it valid."""
    for section, table in (("kind", kinds), ("site", sites)):
        for who, changes in table.items():
            if not isinstance(changes, dict):
                raise RulesError(f"{name}: {section}s.{who} must be a mapping of rules")
            for rule_name, fields in changes.items():
                if rule_name not in rules:
                    raise RulesError(f"{name}: {section} {who} overrides unknown rule "
                                     f"{rule_name!r}")
                if not isinstance(fields, dict):
                    raise RulesError(f"{name}: {section}s.{who}.{rule_name} must be a mapping")
                try:
                    Rule.model_validate({**rules[rule_name].model_dump(), **fields})
                except ValidationError as exc:
                    raise RulesError(f"{name}: {section}s.{who}.{rule_name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Instance:
    """One rule watching one series."""

    rule: str
    row: int  # detector row of the series
    spec: Rule


class RuleBinding:
    """Rule instances of a detector's series: the kernel's parameter and state matrices,
    a CSR index from series to instances, and the no-data instances for silence checks."""

    def __init__(self, detector: Detector, ruleset: RuleSet) -> None:
        instances: list[Instance] = []
        per_series: list[list[int]] = [[] for _ in detector.series]
        for row, info in enumerate(detector.series):
            for rule_name, spec in ruleset.for_site(info.site_id, info.site_kind).items():
                if not spec.enabled:
                    continue
                if spec.metric is not None and spec.metric != info.metric:
                    continue
                if spec.site_kinds is not None and info.site_kind not in spec.site_kinds:
                    continue
                per_series[row].append(len(instances))
                instances.append(Instance(rule_name, row, spec))
        self.series = detector.series
        self.ruleset = ruleset
        self.instances = tuple(instances)
        n = len(instances)
        rp = np.zeros((n, len(RULE_COLUMNS)), dtype=np.float64)
        for k, inst in enumerate(instances):
            interval_ms = detector.cfg[inst.row, C_INTERVAL]
            spec = inst.spec
            rp[k, RP_SERIES] = inst.row
            rp[k, RP_COND] = CONDITIONS.index(spec.condition)
            rp[k, RP_THRESHOLD] = spec.threshold
            rp[k, RP_CLEAR] = spec.clear if spec.clear is not None else spec.threshold
            rp[k, RP_TAU] = -math.expm1(-interval_ms / (spec.tau_hours * 3_600_000.0))
            rp[k, RP_MIN] = spec.min_minutes * 60_000.0
            rp[k, RP_CLEAR_MS] = spec.clear_minutes * 60_000.0
            rp[k, RP_WORSE_BELOW] = 1.0 if spec.worse_below else 0.0
            rp[k, RP_COMPONENTS] = sum(1 << COMPONENTS.index(c) for c in spec.components)
            rp[k, RP_INTERVAL] = interval_ms
            rp[k, RP_GATE] = -1.0
            rp[k, RP_UNLESS] = -1.0
            rp[k, RP_EVERY] = (spec.every_hours or 0.0) * 3_600_000.0
            rp[k, RP_FROM_HIGH] = 1.0 if spec.from_high else 0.0
            rp[k, RP_WETS] = spec.unless_wets or 0.0
            rp[k, RP_HIGH_WINDOW] = (spec.high_window_hours or 0.0) * 3_600_000.0
        # a required rule: its first instance at the same site
        first_at_site: dict[tuple[str, str], int] = {}
        for k, inst in enumerate(instances):
            first_at_site.setdefault((detector.series[inst.row].site_id, inst.rule), k)
        for k, inst in enumerate(instances):
            if inst.spec.requires is not None:
                site = detector.series[inst.row].site_id
                rp[k, RP_GATE] = float(first_at_site.get((site, inst.spec.requires), -1))
            if inst.spec.unless is not None:
                site = detector.series[inst.row].site_id
                rp[k, RP_UNLESS] = float(first_at_site.get((site, inst.spec.unless), -1))
        self.rp = rp
        self.state = self.initial_state(n)
        self.ptr = np.zeros(len(per_series) + 1, dtype=np.int64)
        self.ptr[1:] = np.cumsum([len(x) for x in per_series])
        self.inst = np.array([k for x in per_series for k in x], dtype=np.int64)
        self.silent = np.array([k for k, inst in enumerate(instances)
                                if rp[k, RP_COND] == R_NO_DATA], dtype=np.int64)

    @staticmethod
    def initial_state(n: int) -> np.ndarray:
        state = np.zeros((n, len(RULE_STATE_COLUMNS)), dtype=np.float64)
        state[:, [RS_COND_SINCE, RS_CLEAR_SINCE]] = -1.0
        state[:, [RS_BASE, RS_LOWEST, RS_PENDING]] = np.nan
        state[:, [RS_LAST_RISE, RS_SEEN]] = NEVER
        # an empty windowed high: the first reading starts a sub-window
        state[:, [RS_HIGH_SLOT, RS_HIGH_END]] = NEVER
        state[:, RS_HIGH_OLDER:] = -np.inf
        return state

    def spec_of(self, row: int, rule: str) -> Rule | None:
        """The rule named ``rule`` as it applies to the series of detector ``row``."""
        info = self.series[row]
        return self.ruleset.for_site(info.site_id, info.site_kind).get(rule)

    def rules_of(self, names: Sequence[str]) -> np.ndarray:
        return np.array([k for k, inst in enumerate(self.instances) if inst.rule in names],
                        dtype=np.int64)
