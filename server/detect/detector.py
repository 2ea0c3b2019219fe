"""The public detector: series described once, batches scored in arrival order.

``Detector`` owns the per-series configuration (from the metric catalog), the state the
kernels update, and the site and cross-site groupings the checks use. ``score`` validates
a batch in NumPy, calls the kernel and returns typed results; ``state_arrays`` and
``load_state`` checkpoint it, so a restarted process continues bit for bit.

``score_values`` is the univariate entry point (CSV files, the API's re-score endpoint):
one series with a given metric (or none: limits learned from the data) and interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.units import DAY_MS

from . import _kernels
from ._layout import (
    BINS,
    C_A_BURST_SLOW,
    C_A_FAST,
    C_A_NOISE,
    C_A_PROF,
    C_A_SLOW,
    C_A_VAR,
    C_CIRC,
    C_DECAY,
    C_DECAY_2,
    C_DECAY_3,
    C_DECAY_4,
    C_GROUP,
    C_HIGH,
    C_INTERVAL,
    C_LEVEL,
    C_LOW,
    C_PAIR_SIGN,
    C_PARTNER,
    C_RES,
    C_SITE,
    C_SPAN,
    CATEGORIES,
    CFG_COLUMNS,
    COMPONENTS,
    GROUP_COLUMNS,
    S_ALARM_T,
    S_D_LAST,
    S_DEV_T,
    S_EPISODE_T,
    S_FLAG_SINCE,
    S_MF,
    S_N,
    S_OWN_SINCE,
    S_PU,
    S_PUU,
    S_PUV,
    S_RB,
    S_SUSPECT_SINCE,
    S_T_LAST,
    S_X_LAST,
    S_X_PREV,
    STATE_COLUMNS,
)
from .tuning import DetectorParams

NEVER = -1e18  # a time before anything
# values loggers write for "no reading": the common data-logger missing value and an
# unsigned 16-bit register read from a probe that did not answer
SENTINELS = (-9999.0, 65535.0)


class DetectorInputError(ValueError):
    """A batch or a series description the detector cannot take; the message says why."""


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What the detector needs to know about one series."""

    key: int  # the caller's id (series_id in the database)
    site_id: str
    device_id: str
    metric: str
    interval_s: float
    template: str = ""  # device template name; series of one (metric, template) are compared
    site_kind: str = ""  # which rules apply (rules.yaml `site_kinds`)


@dataclass(frozen=True, slots=True)
class Readings:
    """Readings by series key (the database's series id), in no particular order."""

    series_ids: np.ndarray  # int
    times_ms: np.ndarray  # int64
    values: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.series_ids.shape[0])

    def take(self, which: np.ndarray) -> Readings:
        """The readings a mask or an index array selects, in its order."""
        return Readings(self.series_ids[which], self.times_ms[which], self.values[which])

    def __add__(self, other: Readings) -> Readings:
        return Readings(np.concatenate([self.series_ids, other.series_ids]),
                        np.concatenate([self.times_ms, other.times_ms]),
                        np.concatenate([self.values, other.values]))


@dataclass(frozen=True, slots=True)
class Scores:
    """Per reading of a batch: score in [0, 1], component and category codes."""

    score: np.ndarray  # float32
    component: np.ndarray  # int8, index into COMPONENTS
    category: np.ndarray  # int8, index into CATEGORIES

    def take(self, which: np.ndarray) -> Scores:
        return Scores(self.score[which], self.component[which], self.category[which])

    def component_names(self) -> np.ndarray:
        return np.asarray(COMPONENTS, dtype=object)[self.component]

    def category_names(self) -> np.ndarray:
        return np.asarray(CATEGORIES, dtype=object)[self.category]


def _alpha(interval_ms: float, tau_ms: float) -> float:
    return float(-np.expm1(-interval_ms / tau_ms))


def _csr(groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(groups) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(g) for g in groups])
    members = np.array([m for g in groups for m in g], dtype=np.int64)
    return ptr, members


class Detector:
    """Scores batches of readings of a fixed set of series (``SeriesInfo``)."""

    def __init__(self, series: Sequence[SeriesInfo], params: DetectorParams | None = None,
                 *, limits: dict[int, tuple[float, float, float, float, float]] | None = None,
                 ) -> None:
        if not series:
            raise DetectorInputError("a detector needs at least one series")
        self.params = params or DetectorParams()
        self.series = tuple(series)
        self.index = {info.key: i for i, info in enumerate(self.series)}
        if len(self.index) != len(self.series):
            raise DetectorInputError("series keys must be unique")
        self.p = self.params.vector()
        n = len(self.series)
        cfg = np.zeros((n, len(CFG_COLUMNS)), dtype=np.float64)
        sites: dict[str, int] = {}
        groups: dict[tuple[str, str], int] = {}
        site_members: list[list[int]] = []
        group_members: list[list[int]] = []
        prm = self.params
        for i, info in enumerate(self.series):
            if not info.interval_s > 0:
                raise DetectorInputError(f"series {info.key}: interval must be positive")
            if limits is not None and info.key in limits:
                low, high, typical_low, typical_high, res = limits[info.key]
                circular = False
            else:
                try:
                    m = METRICS[info.metric]
                except KeyError:
                    raise DetectorInputError(
                        f"series {info.key}: unknown metric {info.metric!r}") from None
                low, high = m.physical
                typical_low, typical_high = m.typical
                res, circular = m.resolution, m.circular
            interval_ms = info.interval_s * 1000.0
            site = sites.setdefault(info.site_id, len(sites))
            if site == len(site_members):
                site_members.append([])
            site_members[site].append(i)
            group = groups.setdefault((info.metric, info.template), len(groups))
            if group == len(group_members):
                group_members.append([])
            group_members[group].append(i)
            cfg[i, C_LOW], cfg[i, C_HIGH] = low, high
            cfg[i, C_SPAN] = max(typical_high - typical_low, res)
            cfg[i, C_RES] = res
            cfg[i, C_INTERVAL] = interval_ms
            cfg[i, C_CIRC] = 1.0 if circular else 0.0
            cfg[i, C_SITE] = site
            cfg[i, C_GROUP] = group
            cfg[i, C_A_FAST] = _alpha(interval_ms, prm.fast_hours * 3_600_000.0)
            # the drift baseline and spread learn once an hour
            cfg[i, C_A_SLOW] = _alpha(3_600_000.0, prm.slow_days * DAY_MS)
            cfg[i, C_A_VAR] = _alpha(3_600_000.0, prm.var_days * DAY_MS)
            cfg[i, C_A_PROF] = min(1.0, interval_ms * BINS / (prm.profile_days * DAY_MS))
            # the largest normal step, the longest run and the flat share are maxima and
            # counts over a memory: over too few readings they hold none of the series'
            # rare normal extremes (a river's floods, weeks apart, each rising in one or
            # two readings logged 90 minutes apart: the next one's rise read as a spike). The
            # fleet's series (1 to 10 minutes) have more than enough in memory_days
            memory_ms = max(prm.memory_days * DAY_MS, prm.memory_min_readings * interval_ms)
            cfg[i, C_DECAY] = float(np.exp(-interval_ms / memory_ms))
            for length, column in ((2, C_DECAY_2), (3, C_DECAY_3), (4, C_DECAY_4)):
                # Python's float power calls the C library's pow, as the kernel's does
                cfg[i, column] = cfg[i, C_DECAY] ** float(length)
            cfg[i, C_LEVEL] = 0.0 if info.metric in prm.level_skip else 1.0
            cfg[i, C_A_NOISE] = _alpha(interval_ms, prm.noise_hours * 3_600_000.0)
            # the slow noise test's lower threshold holds for a mean over many readings: at
            # least twice the short-term mean's, where burst_slow_hours are only a few
            # (two hours of a river logged every 90 minutes were one reading, and every
            # flood's first step read as a noise burst)
            cfg[i, C_A_BURST_SLOW] = min(
                _alpha(interval_ms, prm.burst_slow_hours * 3_600_000.0), prm.burst_alpha / 2)
        # pairs on one device (soil EC follows soil moisture), among series without a
        # cross-site level check: the follower gets sign +1, the leader -1
        cfg[:, C_PARTNER] = -1.0
        by_device = {(info.device_id, info.metric): i for i, info in enumerate(self.series)}
        for follower, leader in prm.pairs:
            for (device, metric), i in by_device.items():
                j = by_device.get((device, leader))
                if metric != follower or j is None or cfg[i, C_LEVEL] or cfg[j, C_LEVEL]:
                    continue
                cfg[i, C_PARTNER], cfg[i, C_PAIR_SIGN] = j, 1.0
                cfg[j, C_PARTNER], cfg[j, C_PAIR_SIGN] = i, -1.0
        # a cross-site group needs a few members to say anything
        for members in group_members:
            if len(members) < 4:
                cfg[members, C_GROUP] = -1.0
        self.cfg = cfg
        self.site_ptr, self.site_mem = _csr(site_members)
        self.grp_ptr, self.grp_mem = _csr(group_members)
        self.scratch = np.empty(max(len(g) for g in group_members) + 1, dtype=np.float64)
        self.state, self.profile = self.initial_state(n)
        self.groups = np.full((len(group_members), len(GROUP_COLUMNS)), -1.0)

    @staticmethod
    def initial_state(n: int) -> tuple[np.ndarray, np.ndarray]:
        state = np.zeros((n, len(STATE_COLUMNS)), dtype=np.float64)
        state[:, [S_X_LAST, S_X_PREV, S_MF, S_RB, S_D_LAST]] = np.nan
        state[:, [S_DEV_T, S_EPISODE_T, S_ALARM_T]] = NEVER
        state[:, [S_FLAG_SINCE, S_SUSPECT_SINCE, S_OWN_SINCE]] = -1.0
        return state, np.full((n, BINS), np.nan)

    def upgrade_state(self, taken_width: int) -> None:
        """After loading a checkpoint ``taken_width`` columns wide: before the drift check
        had its gain on the cross-site median (``suspect_since`` came with it), the
        regression columns served only the pair check, so the level rows' regression
        starts fresh (a NaN mean is taken from the next hour's median)."""
        if taken_width <= S_SUSPECT_SINCE:
            level = self.cfg[:, C_LEVEL] > 0.0
            self.state[level, S_PU] = np.nan
            self.state[np.ix_(level, np.array([S_PUU, S_PUV]))] = 0.0

    # --- scoring ----------------------------------------------------------------------

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Detector row of each series key; DetectorInputError names an unknown one."""
        keys = np.asarray(keys)
        known = np.fromiter(self.index.keys(), dtype=np.int64, count=len(self.index))
        rows = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
        order = np.argsort(known)
        known, rows = known[order], rows[order]
        where = np.searchsorted(known, keys)
        where = np.minimum(where, known.shape[0] - 1)
        bad = known[where] != keys
        if bad.any():
            raise DetectorInputError(f"unknown series {int(keys[bad][0])}")
        return rows[where]

    def score(self, rows: np.ndarray, times_ms: np.ndarray, values: np.ndarray) -> Scores:
        """Score readings (detector rows, int64 ms, float64 values) in the given order."""
        rows, times_ms, values = validate_batch(rows, times_ms, values, len(self.series))
        n = rows.shape[0]
        # the kernel writes every reading's three (a zeroed array costs fresh pages)
        out = Scores(np.empty(n, dtype=np.float32), np.empty(n, dtype=np.int8),
                     np.empty(n, dtype=np.int8))
        _kernels.score_batch(rows, times_ms, values, self.cfg, self.p, self.state,
                             self.profile, self.groups, self.site_ptr, self.site_mem, self.grp_ptr,
                             self.grp_mem, self.scratch, out.score, out.component,
                             out.category)
        return out

    def last_times(self) -> np.ndarray:
        """Per detector row, the time (ms) of the last reading scored, -inf for none yet:
        the kernel leaves readings at or before it unscored, so a caller re-reading an
        overlap drops them first."""
        return np.where(self.state[:, S_N] > 0.0, self.state[:, S_T_LAST], -np.inf)

    # --- checkpoints ------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"state": self.state.copy(), "profile": self.profile.copy(),
                "groups": self.groups.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for name in ("state", "profile", "groups"):
            if arrays[name].shape != getattr(self, name).shape:
                raise DetectorInputError("checkpoint does not fit these series")
        # copies: scoring updates the state in place, the checkpoint must stay as it was
        self.state = np.array(arrays["state"], dtype=np.float64, order="C")
        self.profile = np.array(arrays["profile"], dtype=np.float64, order="C")
        self.groups = np.array(arrays["groups"], dtype=np.float64, order="C")


def validate_batch(rows: ArrayLike, times_ms: ArrayLike, values: ArrayLike, n_series: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays the kernel can take, or DetectorInputError saying what is wrong."""
    try:
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        times_ms = np.ascontiguousarray(times_ms, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DetectorInputError(f"batch columns must be numeric: {exc}") from None
    if not (rows.ndim == times_ms.ndim == values.ndim == 1):
        raise DetectorInputError("batch columns must be one-dimensional")
    if not (rows.shape[0] == times_ms.shape[0] == values.shape[0]):
        raise DetectorInputError("batch columns differ in length")
    if rows.shape[0] and (rows.min() < 0 or rows.max() >= n_series):
        raise DetectorInputError("series row out of range")
    return rows, times_ms, values


def infer_interval_s(times_ms: np.ndarray) -> float:
    """The typical sample interval of a series: the median step, at least a second."""
    steps = np.diff(np.asarray(times_ms, dtype=np.int64))
    steps = steps[steps > 0]
    if steps.size == 0:
        return 60.0
    return max(1.0, float(np.median(steps)) / 1000.0)


def learned_limits(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """Limits for a series of an unknown quantity: every finite value is physical, the
    central 98 % is typical, the resolution is the smallest step seen."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-np.inf, np.inf, 0.0, 1.0, 1e-6)
    lo, hi = np.percentile(finite, [1.0, 99.0])
    steps = np.abs(np.diff(np.unique(finite)))
    steps = steps[steps > 0]
    res = float(steps.min()) if steps.size else 1e-6
    if hi <= lo:
        hi = lo + max(res, abs(lo) * 0.01, 1e-6)
    return (-np.inf, np.inf, float(lo), float(hi), res)


def repair_clock(times_ms: np.ndarray, interval_ms: float) -> np.ndarray:
    """Strictly increasing times for readings in the order a logger wrote them.

    A repeated time (a logger writing two records in one second, a clock that stalled)
    becomes one millisecond after the reading before. A step back (a clock reset, the
    hour repeated when daylight saving ends) is a clock jump: from there on every time is
    moved forward by what puts that reading one ``interval_ms`` after the one before, so
    the series goes on as if the clock had not jumped (a jump forward stays: a gap is
    what it looks like). The kernel scores only readings after its last, so without this
    a clock set back a day left a day of readings unscored."""
    times = np.asarray(times_ms, dtype=np.int64)
    if times.size < 2 or bool((np.diff(times) > 0).all()):
        return times.copy()
    step = max(1, int(interval_ms))
    out = np.empty_like(times)
    offset = 0
    last = None
    for i, t in enumerate(times.tolist()):
        moved = t + offset
        if last is not None and moved <= last:
            if moved < last:  # a step back: the clock jumped
                offset += last + step - moved
                moved = last + step
            else:
                moved = last + 1
        out[i] = moved
        last = moved
    return out


def score_values(times_ms: np.ndarray, values: np.ndarray, *, metric: str | None = None,
                 interval_s: float | None = None,
                 params: DetectorParams | None = None) -> Scores:
    """Score one univariate series, one result per reading in the given order. Times
    need not increase (``repair_clock``); NaN is a missing reading (component ``range``).
    A no-data sentinel (``SENTINELS``: -9999, 65535) is a missing reading too. Without
    ``metric`` the limits are learned from the data (``learned_limits``): no reading is
    then out of range."""
    times_ms = np.ascontiguousarray(times_ms, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    if times_ms.shape != values.shape or times_ms.ndim != 1:
        raise DetectorInputError("times and values must be 1-D and of one length")
    if metric is not None and metric not in METRICS:
        raise DetectorInputError(f"unknown metric {metric!r}")
    interval = interval_s if interval_s is not None else infer_interval_s(times_ms)
    if not interval > 0:
        raise DetectorInputError("interval must be positive")
    times_ms = repair_clock(times_ms, interval * 1000.0)
    values = np.where(np.isin(values, SENTINELS), np.nan, values)  # no reading, no value
    info = SeriesInfo(0, "series", "series", metric or "value", interval)
    limits = None if metric is not None else {0: learned_limits(values)}
    detector = Detector([info], params, limits=limits)
    return detector.score(np.zeros(times_ms.shape[0], dtype=np.int64), times_ms, values)
