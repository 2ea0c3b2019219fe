"""Column layouts of the forecaster's arrays, shared by the kernels and their twin."""

from __future__ import annotations

MODELS = ("damped_trend", "harmonic")
M_DAMPED, M_HARMONIC = range(len(MODELS))

# per series: what to forecast and how (a row with active 0 is never touched)
FORECAST_CFG_COLUMNS = (
    "active", "model", "direction", "threshold", "from_high", "tau_high_ms", "horizon_ms",
    "step_ms", "tau_profile_ms", "tau_level_ms", "tau_trend_ms", "phi", "floor", "warm_ms",
    "hours_from", "hours_to", "tz_offset_ms", "every_ms",
    # derived from the columns above when the forecaster is built (``_kernels.derive``)
    "steps", "step_h", "phi_step", "log_phi", "cos_turn", "sin_turn", "whole_steps",
)
# direction: -1 a crossing downwards (under the threshold), +1 upwards; from_high: 1 when
# the threshold is a fall of ``threshold`` under a running high (relaxing with
# tau_high_ms); phi: the anomaly trend's damping per hour; floor: the least band (the
# sensor's resolution); hours_from, hours_to: the local hours a crossing can happen in (a
# radiation frost forms at night; from > to wraps past midnight; both 0: any hour);
# every_ms: how often the horizon is looked over (readings between carry the last look).
# steps ... sin_turn: the look-ahead's per-series constants (the steps to the horizon, a
# step in hours, the damping and the daily angle's turn over a step), computed once
# instead of at every look (a power, a logarithm, a cosine and a sine each time);
# whole_steps: 1 when every step's time and the time zone are whole milliseconds, so the
# local hour of a step can be walked in exact arithmetic instead of a modulo per step
(FC_ACTIVE, FC_MODEL, FC_DIRECTION, FC_THRESHOLD, FC_FROM_HIGH, FC_TAU_HIGH, FC_HORIZON,
 FC_STEP, FC_TAU_PROFILE, FC_TAU_LEVEL, FC_TAU_TREND, FC_PHI, FC_FLOOR, FC_WARM,
 FC_HOURS_FROM, FC_HOURS_TO, FC_TZ_OFFSET, FC_EVERY, FC_STEPS, FC_STEP_H, FC_PHI_STEP,
 FC_LOG_PHI, FC_COS_TURN, FC_SIN_TURN, FC_WHOLE_STEPS) = range(len(FORECAST_CFG_COLUMNS))

# per series, learned online: the daily cycle's two harmonics (c0 + a1 cos + b1 sin + a2
# cos 2 + b2 sin 2 of the time of day), the residual's mean absolute size, the anomaly's
# damped-trend level and trend (per hour), the variance of the one-hour-ahead error and
# the forecast it is checked against (due time, value), the running high, and the last
# outputs (what a warning's message reports)
FORECAST_STATE_COLUMNS = (
    "c0", "a1", "b1", "a2", "b2", "spread", "level", "trend", "t_first", "t_last",
    "var_hour", "due_ms", "due_value", "high", "confidence", "crossing_ms", "low", "high_band",
    "looked_ms", "dt", "a_level", "a_trend", "a_profile", "a_high", "phi_dt", "carried_dt",
)
(FS_C0, FS_A1, FS_B1, FS_A2, FS_B2, FS_SPREAD, FS_LEVEL, FS_TREND, FS_T_FIRST, FS_T_LAST,
 FS_VAR_HOUR, FS_DUE_MS, FS_DUE_VALUE, FS_HIGH, FS_CONFIDENCE, FS_CROSSING, FS_LOW,
 FS_HIGH_BAND, FS_LOOKED, FS_DT, FS_A_LEVEL, FS_A_TREND, FS_A_PROFILE, FS_A_HIGH, FS_PHI_DT,
 FS_CARRIED_DT) = range(len(FORECAST_STATE_COLUMNS))
# (dt ... carried_dt: the smoothing weights of the last interval between readings, kept
# because a series' interval rarely changes: the same numbers, not recomputed)

# per reading: the outputs
OUT_COLUMNS = ("confidence", "crossing_ms", "low", "high")
