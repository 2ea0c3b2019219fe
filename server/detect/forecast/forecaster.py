"""The public forecaster: which series get a forecast, their models, a batch at a time.

A series gets a forecast when a ``forecast`` rule at its site names its metric; the rule
it foretells (``of``: hypoxia, frost risk, the storm's pressure fall) gives the threshold
and its direction, the forecast rule the horizon. ``advance`` validates a batch in NumPy,
calls the kernel and returns one ``Forecasts`` row per reading; ``state`` is checkpointed
with the detector's, one row per detector row.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.units import DAY_MS, HOUR_MS, MINUTE_MS

from . import _kernels
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
    FORECAST_CFG_COLUMNS,
    FORECAST_STATE_COLUMNS,
    FS_CONFIDENCE,
    FS_CROSSING,
    FS_DT,
    FS_HIGH_BAND,
    FS_LOOKED,
    FS_LOW,
    FS_T_FIRST,
    MODELS,
)

if TYPE_CHECKING:
    from ..detector import SeriesInfo
    from ..rules import RuleSet


@cache
def _day_angles() -> np.ndarray:
    """The day's angle's cosine and sine per whole second, shared by every forecaster
    (1.4 MB, a few milliseconds to make; read-only)."""
    table = _kernels.day_angles()
    table.flags.writeable = False
    return table


class ForecastParams(BaseModel):
    """The forecaster's tunable parameters (the same for every series; the threshold and
    horizon come from the rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["damped_trend", "harmonic"] = Field(
        "harmonic", description="damped_trend: a damped trend of the readings; harmonic: "
                                "the daily cycle's two harmonics learned online plus a "
                                "damped trend of the anomaly from it")
    profile_days: float = Field(3.0, gt=0, description="time constant of the daily cycle "
                                                       "and of the band's width")
    level_minutes: float = Field(10.0, gt=0, description="time constant of the anomaly's level")
    trend_minutes: float = Field(20.0, gt=0, description="time constant of its trend")
    damping: float = Field(0.9, gt=0, le=1.0, description="the trend's damping per hour")
    step_minutes: float = Field(15.0, gt=0, description="the forecast's resolution")
    every_minutes: float = Field(5.0, ge=0, description="how often a series' horizon is "
                                                        "looked over (readings between "
                                                        "carry the last look)")
    warm_days: float = Field(1.0, ge=0, description="learning before the first forecast")
    tz_offset_hours: float = Field(8.0, ge=-14.0, le=14.0,
                                   description="the sites' local time (a rule's crossing hours)")


class Forecasts:
    """Per reading of a batch: the confidence of a crossing within the horizon, the
    expected time of crossing (ms, NaN for none) and the 80 % band at it (or, with no
    crossing, where the forecast comes nearest). NaN where no forecast was made.

    Held as the forecast series' readings only (``picked``: their positions in the
    batch, ``made``: their four outputs, a row each); a column is spread over the whole
    batch when read, a new array each time (the engine reads only the confidence: nine
    readings in ten are of series no rule forecasts)."""

    __slots__ = ("made", "picked", "size")

    def __init__(self, size: int, picked: np.ndarray, made: np.ndarray) -> None:
        self.size = size
        self.picked = picked
        self.made = made

    def _column(self, column: int) -> np.ndarray:
        return _kernels.spread(self.size, self.picked, self.made, column)

    @property
    def confidence(self) -> np.ndarray:
        return self._column(0)

    @property
    def crossing_ms(self) -> np.ndarray:
        return self._column(1)

    @property
    def low(self) -> np.ndarray:
        return self._column(2)

    @property
    def high(self) -> np.ndarray:
        return self._column(3)


class Forecaster:
    """Forecasts of the series that ``forecast`` rules name, for a detector's rows."""

    def __init__(self, series: Sequence[SeriesInfo], ruleset: RuleSet,
                 params: ForecastParams | None = None) -> None:
        self.params = params or ForecastParams()
        prm = self.params
        cfg = np.zeros((len(series), len(FORECAST_CFG_COLUMNS)), dtype=np.float64)
        for row, info in enumerate(series):
            rules = ruleset.for_site(info.site_id, info.site_kind)
            for spec in rules.values():
                if (spec.condition != "forecast" or not spec.enabled or spec.of is None
                        or spec.metric != info.metric
                        or (spec.site_kinds is not None
                            and info.site_kind not in spec.site_kinds)):
                    continue
                target = rules[spec.of]
                cfg[row, FC_ACTIVE] = 1.0
                cfg[row, FC_DIRECTION] = 1.0 if target.condition == "above" else -1.0
                cfg[row, FC_THRESHOLD] = target.threshold
                cfg[row, FC_FROM_HIGH] = 1.0 if target.condition == "fall" else 0.0
                cfg[row, FC_TAU_HIGH] = target.tau_hours * HOUR_MS
                cfg[row, FC_HORIZON] = spec.horizon_hours * HOUR_MS
                if spec.crossing_hours is not None:
                    cfg[row, FC_HOURS_FROM], cfg[row, FC_HOURS_TO] = spec.crossing_hours
                break
            cfg[row, FC_MODEL] = MODELS.index(prm.model)
            cfg[row, FC_STEP] = prm.step_minutes * MINUTE_MS
            cfg[row, FC_TAU_PROFILE] = prm.profile_days * DAY_MS
            cfg[row, FC_TAU_LEVEL] = prm.level_minutes * MINUTE_MS
            cfg[row, FC_TAU_TREND] = prm.trend_minutes * MINUTE_MS
            cfg[row, FC_PHI] = prm.damping
            metric = METRICS.get(info.metric)
            cfg[row, FC_FLOOR] = metric.resolution if metric is not None else 1e-6
            cfg[row, FC_WARM] = prm.warm_days * DAY_MS
            cfg[row, FC_TZ_OFFSET] = prm.tz_offset_hours * HOUR_MS
            cfg[row, FC_EVERY] = prm.every_minutes * MINUTE_MS
        _kernels.derive(cfg)
        self.cfg = cfg  # fixed from here: its derived columns are not recomputed
        self._active = cfg[:, FC_ACTIVE] > 0.0  # a byte per row: the picking's lookups
        self._angles = _day_angles()
        self.state = self.initial_state(len(series))

    @staticmethod
    def initial_state(n: int) -> np.ndarray:
        state = np.zeros((n, len(FORECAST_STATE_COLUMNS)), dtype=np.float64)
        state[:, [FS_T_FIRST, FS_CONFIDENCE, FS_CROSSING, FS_LOW, FS_HIGH_BAND,
                  FS_LOOKED, FS_DT]] = np.nan
        return state

    @property
    def active_rows(self) -> np.ndarray:
        return np.flatnonzero(self._active)

    def advance(self, rows: np.ndarray, times_ms: np.ndarray, values: np.ndarray,
                broken: np.ndarray) -> Forecasts:
        """Learn from a batch (detector rows, in arrival order) and forecast at each
        reading; ``broken``: the readings the detector calls broken sensor output."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        times_ms = np.ascontiguousarray(times_ms, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        broken = np.ascontiguousarray(broken, dtype=np.bool_)
        if not rows.shape == times_ms.shape == values.shape == broken.shape:
            raise ValueError("forecast batch columns differ in length")
        picked = _kernels.pick(rows, self._active)  # checks the rows are in range
        made = np.empty((picked.shape[0], 4), dtype=np.float64)
        _kernels.advance(picked, rows, times_ms, values, broken, self.cfg, self.state,
                         self._angles, made)
        return Forecasts(rows.shape[0], picked, made)

    def latest(self, row: int) -> tuple[float, float, float, float]:
        """(confidence, crossing ms, band low, band high) of a series' last forecast."""
        st = self.state[row]
        return (float(st[FS_CONFIDENCE]), float(st[FS_CROSSING]), float(st[FS_LOW]),
                float(st[FS_HIGH_BAND]))
