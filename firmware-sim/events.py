"""Injected, labelled anomalies: sensor faults and real events, planned from the seed.

Two categories, told apart in every ``Label``:

* **faults** (``category="fault"``) break one sensor's output and nothing else: spike,
  stuck, drift, dropout (no readings at all), noise burst, out-of-range garbage (what a
  failing Modbus probe returns: 65535, 6553.5 = 0xFFFF x 0.1, -999, a logger's -9999).
  They act after noise and quantisation (``render.apply_fault``). Where real sensors fail
  in their own way, a fault takes that shape half the time (``_shape``): a biofouling
  drift on turbidity, oxygen and chlorophyll ended by a cleaning's step back, a
  maintenance pull (out of the water: flat, or jumping in and out), battery sag; each
  labelled as the kind it looks like (``render.LABEL_KIND``).
* **events** (``category="event"``) are things happening in the world. They perturb
  latent quantities (``physics.CH_*`` channels) of the whole site, so every sensor that
  would feel them moves: a hypoxia drops DO on both sondes of a cage farm and the pH with
  it; a storm moves wind, pressure, waves, tide, rain, humidity, turbidity and the radio
  link together. One label per series that actually moved, all sharing an ``event_id``.

Planning is per (site, epoch): epochs are ``plan.epoch_ms`` long from ``plan.anchor_ms``
and everything planned lies inside its epoch, so a plan never depends on which window is
being generated. Counts are Poisson with the configured rates; kinds, times and sizes are
drawn from a SplitMix64 stream keyed by (seed, site, epoch) in pure Python (NumPy's
Generator streams are not promised stable across versions).

Every candidate is *checked by rendering* before it is kept: the label's series must
really differ from the clean signal inside the interval (a stuck sensor must have had
something to get stuck on, a drift must grow measurable, a frost must freeze), and no
two labels overlap on one series. Outside its interval an injection changes nothing, by
construction: perturbations have compact support and are read at the same instant only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

import numpy as np

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.units import DAY_MS, HOUR_MS, MINUTE_MS

from . import physics as ph
from . import render as rd
from .astro import local_day_start_ms
from .rng import stream_key

log = logging.getLogger(__name__)
T = TypeVar("T")

THIRTY_DAYS_MS = 30 * DAY_MS
_ATTEMPTS = 24  # candidates tried per planned anomaly before giving up on it

FAULT = "fault"
EVENT = "event"


@dataclass(frozen=True, slots=True)
class Label:
    """Ground truth for one series: something was injected in [start_ms, end_ms)."""

    site_id: str
    device_id: str
    metric: str
    start_ms: int
    end_ms: int
    kind: str  # a fault kind (render.FAULT_KINDS) or an event kind (EVENT_KINDS)
    category: str  # "fault" | "event"
    event_id: str  # shared by every label of one real event; unique for a fault
    # an event's first instant past its alert threshold (DO under 3 mg/L, air under -1 °C,
    # a gale): what a warning's lead time is measured to; None for faults and for events
    # with no threshold of their own (or that never cross it)
    crossing_ms: int | None = None


@dataclass(frozen=True, slots=True)
class InjectionPlan:
    """How much to inject. Rates are expected counts per 30 days.

    ``events_per_site`` counts only at sites where some enabled event kind can happen.
    ``anchor_ms`` and ``epoch_ms`` cut time into planning epochs (default: 30-day epochs
    from 1970); a scenario anchors one epoch on its own window so no label straddles it.
    """

    faults_per_series: float = 0.5
    events_per_site: float = 1.0
    fault_kinds: tuple[str, ...] = rd.FAULT_KINDS
    event_kinds: tuple[str, ...] = ()  # () means every kind in EVENT_KINDS
    epoch_ms: int = THIRTY_DAYS_MS
    anchor_ms: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(rd.FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; "
                             f"known: {', '.join(rd.FAULT_KINDS)}")
        unknown = set(self.event_kinds) - set(EVENT_KINDS)
        if unknown:
            raise ValueError(f"unknown event kinds {sorted(unknown)}; "
                             f"known: {', '.join(EVENT_KINDS)}")
        if self.epoch_ms < HOUR_MS:
            raise ValueError("epoch_ms must be at least an hour")
        if self.faults_per_series < 0 or self.events_per_site < 0:
            raise ValueError("rates must not be negative")

    @property
    def enabled_events(self) -> tuple[str, ...]:
        return self.event_kinds or tuple(EVENT_KINDS)

    def epoch_of(self, t_ms: int) -> int:
        return (t_ms - self.anchor_ms) // self.epoch_ms

    def epoch_bounds(self, epoch: int) -> tuple[int, int]:
        start = self.anchor_ms + epoch * self.epoch_ms
        return start, start + self.epoch_ms


# --- deterministic draws -----------------------------------------------------------------

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


class Draws:
    """Uniform draws from a SplitMix64 stream, in pure Python (stable forever)."""

    def __init__(self, key: int) -> None:
        self._state = int(key) & _MASK

    def uniform(self) -> float:
        self._state = (self._state + _GOLDEN) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) / 9007199254740992.0

    def between(self, low: float, high: float) -> float:
        return low + (high - low) * self.uniform()

    def below(self, n: int) -> int:
        return min(n - 1, int(self.uniform() * n))

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def poisson(self, mean: float) -> int:
        """Knuth's product method; our means are small (a few per epoch)."""
        limit, k, product = math.exp(-mean), 0, self.uniform()
        while product > limit:
            k += 1
            product *= self.uniform()
        return k


# --- what the planner needs from the fleet ------------------------------------------------


class Renderer(Protocol):
    """The fleet, as seen by the planner: its series and a way to render one of them."""

    def series_of_site(self, site_id: str) -> Sequence[int]: ...

    def series_identity(self, s: int) -> tuple[str, str, str]: ...  # site, device, metric

    def series_interval_ms(self, s: int) -> int: ...

    def series_sample_times(self, s: int, start_ms: int, end_ms: int) -> np.ndarray: ...

    def render_series(self, s: int, start_ms: int, end_ms: int, events: np.ndarray,
                      faults: np.ndarray) -> np.ndarray: ...  # values at the sample times

    def irrigation_events(self, site_id: str, start_ms: int,
                          end_ms: int) -> list[tuple[int, int]]: ...


_NO_ROWS_EV = np.zeros((0, len(ph.EV_COLUMNS)))
_NO_ROWS_FAULT = np.zeros((0, len(rd.FAULT_COLUMNS)))


@dataclass
class SitePlan:
    """What is injected at one site during one epoch."""

    site_id: str
    epoch: int
    events: np.ndarray = field(default_factory=lambda: _NO_ROWS_EV)  # physics.EV_COLUMNS
    faults: dict[int, np.ndarray] = field(default_factory=dict)  # series -> FAULT_COLUMNS
    labels: list[Label] = field(default_factory=list)


# --- real events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventDraft:
    start_ms: int
    end_ms: int
    rows: np.ndarray  # physics.EV_COLUMNS
    # the weather that leads up to the event (physics.EV_COLUMNS), from ``start_ms`` on
    precursors: np.ndarray = field(default_factory=lambda: _NO_ROWS_EV)

    @property
    def all_rows(self) -> np.ndarray:
        return np.concatenate([self.rows, self.precursors]) if len(self.precursors) else self.rows

    def with_precursors(self, precursors: np.ndarray) -> EventDraft:
        """The event from its precursors' start on: its label covers the weather that led
        up to it (outside its labels a series stays exactly clean)."""
        if not len(precursors):
            return self
        lead = min(self.start_ms, int(precursors[:, ph.EV_START].min()))
        return EventDraft(lead, self.end_ms, self.rows, precursors)


@dataclass
class EventContext:
    """One candidate's view of the site: its epoch, and clean series to size it by."""

    renderer: Renderer
    site_id: str
    site_kind: str
    epoch_start: int
    epoch_end: int

    def random_window(self, d: Draws, hours: float) -> tuple[int, int] | None:
        length = int(hours * HOUR_MS) // MINUTE_MS * MINUTE_MS
        room = self.epoch_end - self.epoch_start - length
        if room <= 0:
            return None
        start = self.epoch_start + int(d.uniform() * room) // MINUTE_MS * MINUTE_MS
        return start, start + length

    def clean(self, metric: str, start: int, end: int,
              template: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(times, clean reported values) of the site's first series of ``metric``."""
        for s in self.renderer.series_of_site(self.site_id):
            _, device, name = self.renderer.series_identity(s)
            if name == metric and (template is None or device.endswith(f"-{template}")):
                times = self.renderer.series_sample_times(s, start, end)
                return times, self.renderer.render_series(s, start, end, _NO_ROWS_EV,
                                                          _NO_ROWS_FAULT)
        raise LookupError(f"{self.site_id} has no {metric} series")


def _rows(start: int, end: int, ramp_ms: float, *effects: tuple[int, float]) -> np.ndarray:
    return np.array([[channel, start, end, ramp_ms, amplitude]
                     for channel, amplitude in effects], dtype=np.float64)


def _plateau(times: np.ndarray, start: int, end: int, ramp_ms: float) -> np.ndarray:
    return (times >= start + ramp_ms) & (times < end - ramp_ms)


def _precursor_draws(kind: str, start: int, end: int) -> Draws:
    """The precursors' own stream, keyed by the event: drawing them from the plan's stream
    would move every later draw, and so every fault and event planned after this one."""
    return Draws(int(stream_key("precursor", kind, start, end)))


def _lead_in(ctx: EventContext, start: int, hours: float) -> int:
    """The precursor's start ``hours`` before ``start``, inside the epoch (a plan holds
    nothing outside its epoch)."""
    return max(ctx.epoch_start, int(start - hours * HOUR_MS) // MINUTE_MS * MINUTE_MS)


def _hypoxia_precursors(ctx: EventContext, start: int, end: int, ramp: float) -> np.ndarray:
    """A calm, hot, overcast day before the night of hypoxia: the wind drops (no mixing,
    no re-aeration), air and water warm (less oxygen dissolves, fish and plankton respire
    more) and cloud holds photosynthesis back, so oxygen starts low and slides from the
    afternoon on, hours before it crashes."""
    d = _precursor_draws("hypoxia", start, end)
    lead = _lead_in(ctx, start, d.between(10.0, 16.0))
    until = int(start + ramp)
    length = until - lead
    if length <= HOUR_MS:
        return _NO_ROWS_EV
    return np.concatenate([
        _rows(lead, until, 0.4 * length, (ph.CH_WIND_SPEED, -d.between(2.0, 4.0)),
              (ph.CH_AIR_TEMPERATURE, d.between(2.0, 4.0)),
              (ph.CH_WATER_TEMPERATURE, d.between(0.4, 0.9))),
        _rows(lead, until, 0.5 * length, (ph.CH_OXYGEN, -d.between(0.08, 0.14)))])


def _frost_precursors(ctx: EventContext, start: int, end: int) -> np.ndarray:
    """A clear, dry, windless evening before a radiation frost: the wind dies at dusk and
    the ground radiates to a clear sky, so the air cools faster than on other evenings
    from sunset on, hours before it freezes."""
    d = _precursor_draws("frost", start, end)
    lead = _lead_in(ctx, start, d.between(4.0, 6.0))
    until = int(start + 3.0 * HOUR_MS)
    length = until - lead
    if length <= HOUR_MS:
        return _NO_ROWS_EV
    return _rows(lead, until, 0.45 * length, (ph.CH_WIND_SPEED, -d.between(1.5, 3.0)),
                 (ph.CH_AIR_TEMPERATURE, -d.between(1.0, 2.0)))


def _storm_precursors(ctx: EventContext, start: int, end: int, ramp: float) -> np.ndarray:
    """The pressure falls for half a day before a gale arrives (a deepening low)."""
    d = _precursor_draws("storm", start, end)
    lead = _lead_in(ctx, start, d.between(6.0, 12.0))
    until = int(start + ramp)
    length = until - lead
    if length <= HOUR_MS:
        return _NO_ROWS_EV
    return _rows(lead, until, 0.5 * length, (ph.CH_AIR_PRESSURE, -d.between(3.0, 6.0)))


def _hypoxia(ctx: EventContext, d: Draws) -> EventDraft | None:
    """DO falls below 3 mg/L over a few hours (an algal crash, a still, warm night) at a
    cage farm and recovers: the oxygen fraction is pulled down on both sondes, pH with it."""
    window = ctx.random_window(d, d.between(10.0, 30.0))
    if window is None:
        return None
    start, end = window
    ramp = d.between(3.0, 6.0) * HOUR_MS
    times, oxygen = ctx.clean("dissolved_oxygen", start, end, "sonde")
    _, water = ctx.clean("water_temperature", start, end, "sonde")
    _, salt = ctx.clean("salinity", start, end, "sonde")
    inside = _plateau(times, start, end, ramp)
    if not inside.any():
        return None
    saturation = ph.oxygen_saturation(water[inside], salt[inside])
    target = d.between(1.2, 2.4)  # mg/L reached on the outer sonde
    drop = float(np.min(target / saturation - oxygen[inside] / saturation))
    return EventDraft(start, end, _rows(start, end, ramp, (ph.CH_OXYGEN, drop))
                      ).with_precursors(_hypoxia_precursors(ctx, start, end, ramp))


def _frost(ctx: EventContext, d: Draws) -> EventDraft | None:
    """A radiation frost: on a clear spring or autumn night the air falls below about
    -1 °C before dawn; humidity runs to saturation and the leaf sensor frosts over."""
    first_day = (ctx.epoch_start + 8 * HOUR_MS) // DAY_MS
    last_day = (ctx.epoch_end + 8 * HOUR_MS) // DAY_MS - 2
    if last_day < first_day:
        return None
    day = first_day + d.below(last_day - first_day + 1)
    start = int(local_day_start_ms(day) + d.between(21.0, 24.5) * HOUR_MS)
    end = int(local_day_start_ms(day + 1) + d.between(8.0, 9.0) * HOUR_MS)
    start, end = (x // MINUTE_MS * MINUTE_MS for x in (start, end))
    if start < ctx.epoch_start or end > ctx.epoch_end:
        return None
    ramp = 3.0 * HOUR_MS
    times, air = ctx.clean("air_temperature", start, end)
    inside = _plateau(times, start, end, ramp)
    if not inside.any():
        return None
    coldest = float(np.min(air[inside]))
    if not 1.0 <= coldest <= 9.0:  # already freezing (winter) or far too warm (summer)
        return None
    _, humidity = ctx.clean("air_humidity", start, end)
    if np.median(humidity[inside]) >= 90.0:  # a radiation frost wants a clear, dry night
        return None
    chill = d.between(-3.5, -1.5) - coldest
    return EventDraft(start, end, _rows(
        start, end, ramp, (ph.CH_AIR_TEMPERATURE, chill),
        (ph.CH_LEAF_WETNESS, d.between(60.0, 90.0)),
        (ph.CH_SOIL_TEMPERATURE, 0.15 * chill))).with_precursors(
            _frost_precursors(ctx, start, end))


def _irrigation_failure(ctx: EventContext, d: Draws) -> EventDraft | None:
    """The pump or a valve fails: scheduled irrigations do not happen and the soil keeps
    drying, until someone notices and runs a catch-up irrigation."""
    irrigations = ctx.renderer.irrigation_events(ctx.site_id, ctx.epoch_start, ctx.epoch_end)
    daily = len(irrigations) >= 2 and irrigations[1][0] - irrigations[0][0] < 2 * DAY_MS
    missed = 3 if daily else 2
    if len(irrigations) < missed + 1:
        return None
    first = d.below(len(irrigations) - missed)
    start = irrigations[first][0] - HOUR_MS
    last_missed_end = irrigations[first + missed - 1][1]
    next_start = irrigations[first + missed][0]
    end = last_missed_end + int(d.between(0.4, 0.8) * (next_start - last_missed_end))
    start, end = (x // MINUTE_MS * MINUTE_MS for x in (start, end))
    if start < ctx.epoch_start or end > ctx.epoch_end:
        return None
    return EventDraft(start, end, _rows(start, end, HOUR_MS, (ph.CH_IRRIGATION, 1.0)))


def _storm(ctx: EventContext, d: Draws) -> EventDraft | None:
    """A gale (a cyclone remnant or a strong cold surge): wind, waves and rain up, pressure
    down, a storm surge on the tide, stirred-up water, a fading radio link."""
    window = ctx.random_window(d, d.between(12.0, 36.0))
    if window is None:
        return None
    start, end = window
    ramp = d.between(4.0, 8.0) * HOUR_MS
    return EventDraft(start, end, _rows(
        start, end, ramp,
        (ph.CH_WIND_SPEED, d.between(9.0, 15.0)),
        (ph.CH_WIND_DIRECTION, d.between(-60.0, 60.0)),
        (ph.CH_AIR_PRESSURE, -d.between(14.0, 26.0)),
        (ph.CH_RAIN, d.between(1.5, 5.0)),
        (ph.CH_AIR_TEMPERATURE, -d.between(1.5, 3.5)),
        (ph.CH_WAVE_HEIGHT, d.between(1.2, 3.0)),
        (ph.CH_SURGE, d.between(0.3, 0.8)),
        (ph.CH_TURBIDITY, d.between(2.0, 5.0)),
        (ph.CH_RSSI, -d.between(6.0, 12.0)))).with_precursors(
            _storm_precursors(ctx, start, end, ramp))


def _cold_water_intrusion(ctx: EventContext, d: Draws) -> EventDraft | None:
    """Cold bottom water (the Yellow Sea Cold Water Mass) upwells: the sea cools by several
    °C within hours and gets slightly saltier; DO follows the higher saturation."""
    window = ctx.random_window(d, d.between(12.0, 48.0))
    if window is None:
        return None
    start, end = window
    _, water = ctx.clean("water_temperature", start, end)
    drop = min(d.between(3.0, 6.0), float(np.min(water)) - 2.5)
    if drop < 2.5:  # winter water has nothing colder to bring up
        return None
    return EventDraft(start, end, _rows(
        start, end, d.between(2.0, 4.0) * HOUR_MS,
        (ph.CH_WATER_TEMPERATURE, -drop), (ph.CH_SALINITY, d.between(0.2, 0.6))))


Check = Callable[[np.ndarray, np.ndarray], bool]  # (clean, perturbed) -> big enough?


@dataclass(frozen=True, slots=True)
class EventKind:
    name: str
    site_kinds: frozenset[str]
    draft: Callable[[EventContext, Draws], EventDraft | None]
    # Every series of this metric at the site must move, and pass this check.
    primary_metric: str
    check: Check
    # where the primary metric is past the alert's threshold (clean, perturbed) -> mask;
    # None: the kind has no threshold of its own (a missed watering is a schedule)
    crosses: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _falls_below(limit: float) -> Check:
    return lambda clean, moved: bool(np.nanmin(moved) < limit)


def _drops_by(amount: float) -> Check:
    return lambda clean, moved: bool(np.nanmax(clean - moved) >= amount)


def _rises_by(amount: float) -> Check:
    return lambda clean, moved: bool(np.nanmax(moved - clean) >= amount)


_OCEAN_WATER = frozenset({"aquaculture_raft", "cage_farm", "marine_ranch",
                          "ecological_buoy", "coastal_station"})

def _under(limit: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda clean, moved: moved < limit


def _over(limit: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda clean, moved: moved > limit


def _down_by(amount: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda clean, moved: clean - moved >= amount


EVENT_KINDS: MappingProxyType[str, EventKind] = MappingProxyType({k.name: k for k in (
    EventKind("hypoxia", frozenset({"cage_farm"}), _hypoxia,
              "dissolved_oxygen", _falls_below(3.0), _under(3.0)),
    EventKind("frost", frozenset({"orchard", "tea_garden"}), _frost,
              "air_temperature", _falls_below(-1.0), _under(-1.0)),
    EventKind("irrigation_failure", frozenset({"greenhouse", "orchard", "tea_garden",
                                               "field_crop"}), _irrigation_failure,
              "soil_moisture", _drops_by(3.0)),
    EventKind("storm", frozenset({"port_terminal", "ecological_buoy", "coastal_station"}),
              _storm, "wind_speed", _rises_by(5.0), _over(13.9)),  # a gale
    EventKind("cold_water_intrusion", _OCEAN_WATER, _cold_water_intrusion,
              "water_temperature", _drops_by(2.0), _down_by(2.0)),
)})


# --- faults ---------------------------------------------------------------------------------

# Garbage a failing probe returns: raw 0xFFFF, 0xFFFF or 0x7FFF scaled by 0.1, -999, and
# a logger's no-data sentinel.
_GARBAGE = (65535.0, 6553.5, 3276.7, -999.0, -3276.8, -9999.0)
# Optics a film grows on, and which way it moves them (it scatters light: turbidity and
# fluorescence read high; it consumes oxygen at the membrane: DO reads low)
_FOULING = MappingProxyType({"turbidity": 1.0, "chlorophyll_a": 1.0,
                             "dissolved_oxygen": -1.0})
# Sensors with no analog front end for a sagging supply to disturb (a tipping bucket
# counts tips)
_NO_SAG = frozenset({"rainfall"})
# What a sonde reads out of the water (a wet probe in air)
_IN_AIR = MappingProxyType({"turbidity": 0.5, "chlorophyll_a": 0.2, "salinity": 0.3,
                            "dissolved_oxygen": 9.1, "water_ph": 6.2})


@dataclass(frozen=True, slots=True)
class _FaultShape:
    samples: tuple[int, int] | None = None  # length in samples, or
    hours: tuple[float, float] | None = None  # in hours (at least 3 samples)


_FAULT_SHAPES = MappingProxyType({
    "spike": _FaultShape(samples=(1, 3)),
    "stuck": _FaultShape(hours=(3.0, 24.0)),
    "drift": _FaultShape(hours=(24.0, 144.0)),
    "dropout": _FaultShape(hours=(0.25, 12.0)),
    "noise_burst": _FaultShape(hours=(1.0, 8.0)),
    "out_of_range": _FaultShape(samples=(1, 6)),
})


def _shape(kind: str, metric: str, d: Draws) -> str:
    """How a fault of ``kind`` shows on ``metric`` (render.SHAPES): where a real sensor
    fails in its own way, half the time (or a third each) that way."""
    u = d.uniform()
    if kind == "drift" and metric in _FOULING and u < 0.5:
        return "fouling"
    if kind == "stuck" and metric in _IN_AIR and u < 0.5:
        return "pull_flat"
    if kind == "noise_burst" and metric in _IN_AIR and u < 1.0 / 3.0:
        return "pull_jumping"
    if kind == "noise_burst" and u > 2.0 / 3.0 and metric not in _NO_SAG:
        return "battery_sag"
    return kind


def _fault_value(kind: str, metric: str, clean: np.ndarray, d: Draws) -> float:
    """The fault's parameter (render.F_VALUE), sized from the metric and the clean values;
    ``kind`` a shape (render.SHAPES)."""
    m = METRICS[metric]
    if kind == "fouling":
        return _FOULING[metric] * d.between(0.2, 0.4) * (m.typical[1] - m.typical[0])
    if kind in ("pull_flat", "pull_jumping"):
        return _IN_AIR[metric]
    if kind == "battery_sag":
        kind = "noise_burst"
    span = m.typical[1] - m.typical[0]
    low, high = m.physical
    middle = float(np.nanmean(clean))
    upward = (high - middle) >= (middle - low)  # go where there is room
    sign = 1.0 if upward or m.circular else -1.0
    if kind == "spike":
        return sign * d.between(0.25, 0.5) * span
    if kind == "stuck":
        return float(clean[0])
    if kind == "drift":
        return sign * d.between(0.15, 0.35) * span
    if kind == "noise_burst":
        return d.between(0.04, 0.08) * span
    if kind == "out_of_range":
        return d.choice([g for g in _GARBAGE if not m.in_physical_range(g)])
    return 0.0  # dropout: no value at all


def _differs(kind: str, metric: str, clean: np.ndarray, faulty: np.ndarray) -> bool:
    if kind == "dropout":
        return clean.size > 0 and bool(np.isnan(faulty).all())
    steps = np.abs(np.nan_to_num(faulty - clean)) / METRICS[metric].resolution
    return bool(steps.max(initial=0.0) >= 3.0)


# --- planning -------------------------------------------------------------------------------


def _overlaps(taken: list[tuple[int, int]], start: int, end: int, margin: int) -> bool:
    return any(start < b + margin and a < end + margin for a, b in taken)


def plan_site(renderer: Renderer, site_id: str, site_kind: str, epoch: int,
              plan: InjectionPlan, seed: int) -> SitePlan:
    """Plan the injections of one site for one epoch (see the module docstring)."""
    epoch_start, epoch_end = plan.epoch_bounds(epoch)
    d = Draws(int(stream_key(seed, "plan", site_id, epoch)))
    result = SitePlan(site_id, epoch)
    taken: dict[int, list[tuple[int, int]]] = {}  # series -> labelled intervals
    scale = plan.epoch_ms / THIRTY_DAYS_MS

    kinds = [k for k in plan.enabled_events if site_kind in EVENT_KINDS[k].site_kinds]
    event_rows: list[np.ndarray] = []
    site_busy: list[tuple[int, int]] = []
    if kinds:
        for n in range(d.poisson(plan.events_per_site * scale)):
            ctx = EventContext(renderer, site_id, site_kind, epoch_start, epoch_end)
            for _ in range(_ATTEMPTS):
                kind = EVENT_KINDS[d.choice(kinds)]
                draft = kind.draft(ctx, d)
                if draft is None or _overlaps(site_busy, draft.start_ms, draft.end_ms,
                                              6 * HOUR_MS):
                    continue
                moved = _moved_series(renderer, site_id, draft, kind)
                if moved is None:
                    continue
                event_id = f"ev-{site_id}-{epoch}-{n}"
                crossing = _first_crossing(renderer, site_id, draft, kind)
                for s in moved:
                    _, device, metric = renderer.series_identity(s)
                    result.labels.append(Label(site_id, device, metric, draft.start_ms,
                                               draft.end_ms, kind.name, EVENT, event_id,
                                               crossing))
                    taken.setdefault(s, []).append((draft.start_ms, draft.end_ms))
                site_busy.append((draft.start_ms, draft.end_ms))
                event_rows.append(draft.all_rows)
                break
    if event_rows:
        result.events = np.concatenate(event_rows)

    fault_kinds = list(plan.fault_kinds)
    if fault_kinds:
        for s in renderer.series_of_site(site_id):
            rows = []
            for n in range(d.poisson(plan.faults_per_series * scale)):
                for _ in range(_ATTEMPTS):
                    row = _try_fault(renderer, s, d.choice(fault_kinds), d, epoch_start,
                                     epoch_end, taken.setdefault(s, []))
                    if row is not None:
                        rows.append(row)
                        break
                else:
                    log.debug("no room for fault %d of series %d in epoch %d", n, s, epoch)
            if rows:
                rows.sort(key=lambda r: r[rd.F_START])
                result.faults[s] = np.array(rows, dtype=np.float64)
                for i, row in enumerate(rows):
                    _, device, metric = renderer.series_identity(s)
                    result.labels.append(Label(
                        site_id, device, metric, int(row[rd.F_START]), int(row[rd.F_END]),
                        rd.LABEL_KIND[int(row[rd.F_KIND])], FAULT,
                        f"ft-{device}-{metric}-{epoch}-{i}"))
    result.labels.sort(key=lambda lb: (lb.start_ms, lb.device_id, lb.metric))
    return result


def _moved_series(renderer: Renderer, site_id: str, draft: EventDraft,
                  kind: EventKind) -> list[int] | None:
    """The site's series that the draft really moves, or None if its primary metric does
    not move enough on every series that carries it."""
    moved = []
    primary_seen = False
    for s in renderer.series_of_site(site_id):
        clean = renderer.render_series(s, draft.start_ms, draft.end_ms, _NO_ROWS_EV,
                                       _NO_ROWS_FAULT)
        perturbed = renderer.render_series(s, draft.start_ms, draft.end_ms, draft.all_rows,
                                           _NO_ROWS_FAULT)
        differs = not np.array_equal(clean, perturbed, equal_nan=True)
        if renderer.series_identity(s)[2] == kind.primary_metric:
            primary_seen = True
            if not (differs and kind.check(clean, perturbed)):
                return None
        if differs:
            moved.append(s)
    return moved if primary_seen else None


def _first_crossing(renderer: Renderer, site_id: str, draft: EventDraft,
                    kind: EventKind) -> int | None:
    """The first sample time in the event (its precursors included) at which any series
    of the primary metric is past the kind's threshold."""
    if kind.crosses is None:
        return None
    rows, begin = draft.all_rows, draft.start_ms
    first: int | None = None
    for s in renderer.series_of_site(site_id):
        if renderer.series_identity(s)[2] != kind.primary_metric:
            continue
        times = renderer.series_sample_times(s, begin, draft.end_ms)
        clean = renderer.render_series(s, begin, draft.end_ms, _NO_ROWS_EV, _NO_ROWS_FAULT)
        moved = renderer.render_series(s, begin, draft.end_ms, rows, _NO_ROWS_FAULT)
        past = np.flatnonzero(kind.crosses(clean, moved))
        if past.size and (first is None or int(times[past[0]]) < first):
            first = int(times[past[0]])
    return first


def _try_fault(renderer: Renderer, s: int, kind: str, d: Draws, epoch_start: int,
               epoch_end: int, taken: list[tuple[int, int]]) -> list[float] | None:
    """One candidate fault on series ``s``, or None when it does not fit or would not show."""
    interval = renderer.series_interval_ms(s)
    shape = _FAULT_SHAPES[kind]
    if shape.samples is not None:
        length = (shape.samples[0] + d.below(shape.samples[1] - shape.samples[0] + 1)) * interval
    else:
        assert shape.hours is not None  # a shape has samples or hours
        length = max(3 * interval, int(d.between(*shape.hours) * HOUR_MS) // interval * interval)
    grid = renderer.series_sample_times(s, epoch_start, epoch_end - length)
    if grid.size == 0:
        return None
    start = int(grid[d.below(grid.size)])
    end = start + length
    if _overlaps(taken, start, end, interval):
        return None
    _, _, metric = renderer.series_identity(s)
    clean = renderer.render_series(s, start, end, _NO_ROWS_EV, _NO_ROWS_FAULT)
    if clean.size == 0 or np.isnan(clean).all():
        return None
    shape_name = _shape(kind, metric, d)
    row = [float(rd.SHAPES.index(shape_name)), float(start), float(end),
           _fault_value(shape_name, metric, clean, d)]
    faulty = renderer.render_series(s, start, end, _NO_ROWS_EV, np.array([row]))
    if not _differs(kind, metric, clean, faulty):
        return None
    taken.append((start, end))
    return row
