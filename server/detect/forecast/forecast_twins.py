"""Plain-Python twin of the forecaster's kernels (``_kernels.py``), one object per series,
written from the same specification in another shape: slow and obvious, for the tests.

A ``SeriesForecast`` holds one series' model as attributes; ``advance`` feeds it readings
and returns the per-reading outputs the kernel writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tidefield.protocol.units import DAY_MS, HOUR_MS

from ._layout import (
    FC_ACTIVE,
    FC_DIRECTION,
    FC_EVERY,
    FC_FLOOR,
    FC_FROM_HIGH,
    FC_HORIZON,
    FC_HOURS_FROM,
    FC_HOURS_TO,
    FC_MODEL,
    FC_PHI,
    FC_STEP,
    FC_TAU_HIGH,
    FC_TAU_LEVEL,
    FC_TAU_PROFILE,
    FC_TAU_TREND,
    FC_THRESHOLD,
    FC_TZ_OFFSET,
    FC_WARM,
    M_HARMONIC,
)

BAND_Z = 1.2815515655446004


def _daily(coef: list[float], t_ms: float) -> float:
    """c0 + a1 cos w + b1 sin w + a2 cos 2w + b2 sin 2w, w the time of day as an angle."""
    w = 2.0 * math.pi / DAY_MS * (t_ms % DAY_MS)
    return (coef[0] + coef[1] * math.cos(w) + coef[2] * math.sin(w)
            + coef[3] * math.cos(2.0 * w) + coef[4] * math.sin(2.0 * w))


def _carried(phi: float, hours: float) -> float:
    return hours if phi >= 1.0 else (1.0 - phi ** hours) / -math.log(phi)


@dataclass
class SeriesForecast:
    cfg: np.ndarray  # one row of FORECAST_CFG_COLUMNS
    coef: list[float] | None = None
    spread: float = 0.0
    level: float = 0.0
    trend: float = 0.0
    first: float | None = None
    last: float = 0.0
    var_hour: float = 0.0
    due: float | None = None
    due_value: float = 0.0
    high: float = 0.0
    looked: float | None = None
    last_look: tuple[float, float, float, float] = (math.nan, math.nan, math.nan, math.nan)

    @property
    def harmonic(self) -> bool:
        return self.cfg[FC_MODEL] == M_HARMONIC

    def cycle(self, t_ms: float) -> float:
        return _daily(self.coef, t_ms) if self.harmonic and self.coef else 0.0

    def forecast(self, t_ms: float, hours: float) -> float:
        return (self.level + self.trend * _carried(self.cfg[FC_PHI], hours)
                + self.cycle(t_ms + hours * HOUR_MS))

    def step(self, t: float, x: float, broken: bool) -> tuple[float, float, float, float]:
        nothing = (math.nan, math.nan, math.nan, math.nan)
        if not self.cfg[FC_ACTIVE] or broken or not math.isfinite(x):
            return nothing
        if self.first is None:
            self.first = self.last = t
            self.coef = [x if self.harmonic else 0.0, 0.0, 0.0, 0.0, 0.0]
            self.level = x - self.coef[0]
            self.high = x
            return nothing
        if t <= self.last:
            return nothing
        if self.due is not None and t >= self.due:
            error2 = (x - self.due_value) ** 2
            if self.var_hour > 0.0:
                error2 = min(error2, 16.0 * self.var_hour)
                self.var_hour += HOUR_MS / self.cfg[FC_TAU_PROFILE] * (error2 - self.var_hour)
            else:
                self.var_hour = error2
            self.due = None
        self.learn(t, x)
        if self.due is None:
            self.due = t + HOUR_MS
            self.due_value = self.forecast(t, 1.0)
        if t - self.first < self.cfg[FC_WARM] or self.var_hour <= 0.0:
            return nothing
        if self.looked is None or t - self.looked >= self.cfg[FC_EVERY]:
            return self.look_ahead(t)
        return self.last_look  # between looks: the last one

    def learn(self, t: float, x: float) -> None:
        dt = t - self.last
        hours = dt / HOUR_MS
        phi = self.cfg[FC_PHI]
        cycle = self.cycle(t)
        predicted = self.level + self.trend * _carried(phi, hours)
        level = predicted - math.expm1(-dt / self.cfg[FC_TAU_LEVEL]) * (x - cycle - predicted)
        a_trend = -math.expm1(-dt / self.cfg[FC_TAU_TREND])
        self.trend = ((1.0 - a_trend) * phi ** hours * self.trend
                      + a_trend * (level - self.level) / hours)
        self.level = level
        if self.harmonic:
            assert self.coef is not None
            a = -math.expm1(-dt / self.cfg[FC_TAU_PROFILE])
            residual = x - cycle
            warm = self.first is not None and t - self.first >= self.cfg[FC_WARM]
            limit = 3.0 * self.spread if warm and self.spread > 0.0 else math.inf
            taught = min(limit, max(-limit, residual))
            self.spread += a * (min(abs(residual), 2.0 * limit) - self.spread)
            w = 2.0 * math.pi / DAY_MS * (t % DAY_MS)
            basis = (1.0, 2.0 * math.cos(w), 2.0 * math.sin(w), 2.0 * math.cos(2.0 * w),
                     2.0 * math.sin(2.0 * w))
            self.coef = [c + a * taught * b for c, b in zip(self.coef, basis, strict=True)]
        if x >= self.high:
            self.high = x
        else:
            self.high -= math.expm1(-dt / self.cfg[FC_TAU_HIGH]) * (x - self.high)
        self.last = t

    def look_ahead(self, t: float) -> tuple[float, float, float, float]:
        limit = self.cfg[FC_THRESHOLD]
        if self.cfg[FC_FROM_HIGH]:
            limit = self.high - limit
        sigma = math.sqrt(self.var_hour)
        phi = self.cfg[FC_PHI]
        step_h = self.cfg[FC_STEP] / HOUR_MS
        phi_step = phi ** step_h
        turn = 2.0 * math.pi / DAY_MS * self.cfg[FC_STEP]
        w = 2.0 * math.pi / DAY_MS * (t % DAY_MS)
        c, s = math.cos(w), math.sin(w)
        damped = 1.0
        best_z, crossing, band = -math.inf, math.nan, (math.nan, math.nan)
        nearest = -math.inf
        for j in range(1, int(self.cfg[FC_HORIZON] / self.cfg[FC_STEP]) + 1):
            hours = j * step_h
            damped *= phi_step  # phi ** hours, step by step
            c, s = (c * math.cos(turn) - s * math.sin(turn),
                    s * math.cos(turn) + c * math.sin(turn))  # the day's angle, turned
            local_hour = ((t + hours * HOUR_MS + self.cfg[FC_TZ_OFFSET]) % DAY_MS) / HOUR_MS
            lo, hi = self.cfg[FC_HOURS_FROM], self.cfg[FC_HOURS_TO]
            if lo != hi and not (lo <= local_hour < hi if lo < hi
                                 else local_hour >= lo or local_hour < hi):
                continue
            carried = (1.0 - damped) / -math.log(phi) if phi < 1.0 else hours
            value = self.level + self.trend * carried
            if self.harmonic and self.coef:
                k = self.coef
                value += (k[0] + k[1] * c + k[2] * s + k[3] * (c * c - s * s)
                          + k[4] * (2.0 * c * s))
            spread = max(sigma * math.sqrt(hours), self.cfg[FC_FLOOR])
            past = self.cfg[FC_DIRECTION] * (value - limit)
            best_z = max(best_z, past / spread)
            if math.isnan(crossing) and past > nearest:
                nearest = past
                band = (value - BAND_Z * spread, value + BAND_Z * spread)
                if past > 0.0:
                    crossing = t + hours * HOUR_MS
        best = 0.5 * (1.0 + math.erf(best_z / math.sqrt(2.0))) if best_z > -math.inf else 0.0
        self.looked = t
        self.last_look = (best, crossing, band[0], band[1])
        return self.last_look


def advance(rows: np.ndarray, times: np.ndarray, values: np.ndarray, broken: np.ndarray,
            cfg: np.ndarray, models: dict[int, SeriesForecast] | None = None
            ) -> tuple[np.ndarray, dict[int, SeriesForecast]]:
    """The kernel's outputs for a batch, from ``models`` (fresh ones where missing)."""
    models = {} if models is None else models
    out = np.full((len(rows), 4), np.nan)
    for i, (r, t, x, bad) in enumerate(zip(rows.tolist(), times.tolist(), values.tolist(),
                                           broken.tolist(), strict=True)):
        model = models.setdefault(r, SeriesForecast(cfg[r]))
        out[i] = model.step(float(t), x, bad)
    return out, models


def pick(rows: np.ndarray, cfg: np.ndarray) -> np.ndarray:
    """The positions of the readings whose series a forecast rule names, in batch order."""
    return np.array([i for i, r in enumerate(rows.tolist()) if cfg[r][FC_ACTIVE] > 0.0],
                    dtype=np.int64)


def spread(size: int, picked: np.ndarray, made: np.ndarray, column: int) -> np.ndarray:
    """One column of the picked readings' outputs over the whole batch, NaN elsewhere."""
    full = np.full(size, np.nan)
    full[picked] = made[:, column]
    return full
