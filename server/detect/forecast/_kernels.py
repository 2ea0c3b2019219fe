"""The forecaster's Numba kernels: private, small, each twinned in ``forecast_twins.py``.

``pick`` finds the readings of forecast series in a batch of (series, time, value);
``advance`` walks those in arrival order: for each it first checks the forecast made an
hour before (the band's width is learned from those errors), then learns (``_learn``:
the daily cycle by a least-mean-squares step on two harmonics, the anomaly from it by a
damped trend), then looks ahead (``_look_ahead``: the forecast every ``step_ms`` up to
the horizon, the first crossing of the threshold and the confidence of one). Readings
the detector calls broken teach nothing and get no forecast. No Python object is made
per reading; no ``fastmath``, so the twin agrees to rounding.

What does not change between readings is computed once, in the same arithmetic, so the
outputs are the same to the bit: the look-ahead's per-series constants when the
forecaster is built (``derive``), the daily angle's cosine and sine of every whole second
of the day (``day_angles``: readings come on whole seconds), the local hour of a step by
exact whole-millisecond steps instead of a floating-point modulo per step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from tidefield.protocol.units import DAY_MS, HOUR_MS

from ._layout import (
    FC_ACTIVE,
    FC_COS_TURN,
    FC_DIRECTION,
    FC_EVERY,
    FC_FLOOR,
    FC_FROM_HIGH,
    FC_HORIZON,
    FC_HOURS_FROM,
    FC_HOURS_TO,
    FC_LOG_PHI,
    FC_MODEL,
    FC_PHI,
    FC_PHI_STEP,
    FC_SIN_TURN,
    FC_STEP,
    FC_STEP_H,
    FC_STEPS,
    FC_TAU_HIGH,
    FC_TAU_LEVEL,
    FC_TAU_PROFILE,
    FC_TAU_TREND,
    FC_THRESHOLD,
    FC_TZ_OFFSET,
    FC_WARM,
    FC_WHOLE_STEPS,
    FS_A1,
    FS_A2,
    FS_A_HIGH,
    FS_A_LEVEL,
    FS_A_PROFILE,
    FS_A_TREND,
    FS_B1,
    FS_B2,
    FS_C0,
    FS_CARRIED_DT,
    FS_CONFIDENCE,
    FS_CROSSING,
    FS_DT,
    FS_DUE_MS,
    FS_DUE_VALUE,
    FS_HIGH,
    FS_HIGH_BAND,
    FS_LEVEL,
    FS_LOOKED,
    FS_LOW,
    FS_PHI_DT,
    FS_SPREAD,
    FS_T_FIRST,
    FS_T_LAST,
    FS_TREND,
    FS_VAR_HOUR,
    M_HARMONIC,
)

JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy",
                      "boundscheck": False}
# For a step that takes the state arrays, called per reading or per look-ahead step:
# inlined by Numba itself, so no out-of-line call takes and drops a reference count on
# each array every time (25 ms of the kernel's CPU instead of 29-30 over the bench's day,
# measured 2026-12-06 on a busy machine), as the detector's kernels do
JIT_INLINED: dict[str, Any] = {**JIT, "inline": "always"}

OMEGA = 2.0 * math.pi / DAY_MS  # the daily cycle, radians per ms
BAND_Z = 1.2815515655446004  # the 80 % band: the 10th and 90th percentiles
CLIP_SPREADS = 3.0  # a residual teaches the daily cycle at most this many mean sizes
ERROR_CAP = 16.0  # an hour's error teaches the band at most 4 of its deviations


@njit(**JIT)
def damped_sum(phi, hours):
    """∫_0^h phi^s ds: how far a damped trend of 1 per hour carries in ``hours``."""
    if phi >= 1.0:
        return hours
    return (1.0 - phi ** hours) / -math.log(phi)


@njit(**JIT_INLINED)
def harmonic(st, r, c1, s1):
    """The learned daily cycle at the time whose cos and sin (of the day's angle) are
    ``c1``, ``s1``."""
    c2 = c1 * c1 - s1 * s1
    s2 = 2.0 * c1 * s1
    return (st[r, FS_C0] + st[r, FS_A1] * c1 + st[r, FS_B1] * s1 + st[r, FS_A2] * c2
            + st[r, FS_B2] * s2)


@njit(**JIT)
def normal_cdf(z):
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


@njit(**JIT)
def in_hours(lo, hi, hour):
    """Whether the local ``hour`` is in [lo, hi) (wrapping past midnight when lo > hi)."""
    return lo <= hour < hi if lo < hi else hour >= lo or hour < hi


@njit(**JIT_INLINED)
def can_cross_at(cfg, r, t):
    """Whether the series' threshold can be crossed at ``t`` (its local hours)."""
    lo = cfg[r, FC_HOURS_FROM]
    hi = cfg[r, FC_HOURS_TO]
    if lo == hi:
        return True
    return in_hours(lo, hi, ((t + cfg[r, FC_TZ_OFFSET]) % DAY_MS) / HOUR_MS)


@njit(**JIT)
def derive(cfg):
    """Fill the look-ahead's per-series constants (FC_STEPS ... FC_WHOLE_STEPS) from the
    configuration, the arithmetic ``_look_ahead`` did at every look."""
    for r in range(cfg.shape[0]):
        step = cfg[r, FC_STEP]
        step_h = step / HOUR_MS
        steps = int(cfg[r, FC_HORIZON] / step) if step > 0.0 else 0
        phi = cfg[r, FC_PHI]
        turn = OMEGA * step
        cfg[r, FC_STEPS] = steps
        cfg[r, FC_STEP_H] = step_h
        cfg[r, FC_PHI_STEP] = phi ** step_h
        cfg[r, FC_LOG_PHI] = -math.log(phi) if phi < 1.0 else 0.0
        cfg[r, FC_COS_TURN] = math.cos(turn)
        cfg[r, FC_SIN_TURN] = math.sin(turn)
        # every step's offset (as the look-ahead computes it) and the time zone whole
        # milliseconds: then a reading's time plus them is exact, and so is walking the
        # local time of day step by step
        tz = cfg[r, FC_TZ_OFFSET]
        whole = tz == math.floor(tz) and abs(tz) < 2.0 ** 52
        for j in range(1, steps + 1):
            offset = j * step_h * HOUR_MS
            whole = whole and offset == math.floor(offset) and offset < 2.0 ** 52
        cfg[r, FC_WHOLE_STEPS] = 1.0 if whole else 0.0


@njit(**JIT)
def day_angles():
    """The cosine and sine of the day's angle at every whole second of the day, as
    ``advance`` computes them for a reading then (``OMEGA`` times the time of day)."""
    seconds = DAY_MS // 1000
    table = np.empty((seconds, 2), dtype=np.float64)
    for k in range(seconds):
        angle = OMEGA * float(k * 1000)
        table[k, 0] = math.cos(angle)
        table[k, 1] = math.sin(angle)
    return table


@njit(**JIT_INLINED)
def _learn(cfg, st, r, t, x, c1, s1):
    """Advance one series' model by the reading ``x`` at ``t`` (after its first)."""
    dt = t - st[r, FS_T_LAST]
    hours = dt / HOUR_MS
    if dt != st[r, FS_DT]:  # the interval changed: its weights (else the same numbers)
        st[r, FS_DT] = dt
        st[r, FS_A_LEVEL] = -math.expm1(-dt / cfg[r, FC_TAU_LEVEL])
        st[r, FS_A_TREND] = -math.expm1(-dt / cfg[r, FC_TAU_TREND])
        st[r, FS_A_PROFILE] = -math.expm1(-dt / cfg[r, FC_TAU_PROFILE])
        st[r, FS_A_HIGH] = -math.expm1(-dt / cfg[r, FC_TAU_HIGH])
        st[r, FS_PHI_DT] = cfg[r, FC_PHI] ** hours
        st[r, FS_CARRIED_DT] = damped_sum(cfg[r, FC_PHI], hours)
    cycle = harmonic(st, r, c1, s1) if cfg[r, FC_MODEL] == M_HARMONIC else 0.0
    # the damped trend of the anomaly (the reading less the daily cycle)
    anomaly = x - cycle
    predicted = st[r, FS_LEVEL] + st[r, FS_TREND] * st[r, FS_CARRIED_DT]
    a_level = st[r, FS_A_LEVEL]
    a_trend = st[r, FS_A_TREND]
    level = predicted + a_level * (anomaly - predicted)
    st[r, FS_TREND] = ((1.0 - a_trend) * st[r, FS_PHI_DT] * st[r, FS_TREND]
                       + a_trend * (level - st[r, FS_LEVEL]) / hours)
    st[r, FS_LEVEL] = level
    if cfg[r, FC_MODEL] == M_HARMONIC:
        # a least-mean-squares step on an orthogonal basis; a night of hypoxia teaches it
        # only a few typical residuals' worth
        a_prof = st[r, FS_A_PROFILE]
        residual = x - cycle
        spread = st[r, FS_SPREAD]
        # free while warming up (a spread learned from nothing would clip everything)
        warm = t - st[r, FS_T_FIRST] >= cfg[r, FC_WARM]
        limit = CLIP_SPREADS * spread if warm and spread > 0.0 else math.inf
        taught = min(limit, max(-limit, residual))
        st[r, FS_SPREAD] = spread + a_prof * (min(abs(residual), 2.0 * limit) - spread)
        c2 = c1 * c1 - s1 * s1
        s2 = 2.0 * c1 * s1
        st[r, FS_C0] += a_prof * taught
        st[r, FS_A1] += a_prof * 2.0 * taught * c1
        st[r, FS_B1] += a_prof * 2.0 * taught * s1
        st[r, FS_A2] += a_prof * 2.0 * taught * c2
        st[r, FS_B2] += a_prof * 2.0 * taught * s2
    # the running high a fall is measured from: up at once, down slowly
    if x >= st[r, FS_HIGH]:
        st[r, FS_HIGH] = x
    else:
        st[r, FS_HIGH] += st[r, FS_A_HIGH] * (x - st[r, FS_HIGH])
    st[r, FS_T_LAST] = t


@njit(**JIT_INLINED)
def _forecast_at(cfg, st, r, c1, s1, hours):
    """The forecast ``hours`` ahead of the last reading, whose day's angle has cos and sin
    ``c1``, ``s1``."""
    value = st[r, FS_LEVEL] + st[r, FS_TREND] * damped_sum(cfg[r, FC_PHI], hours)
    if cfg[r, FC_MODEL] == M_HARMONIC:
        turn = OMEGA * hours * HOUR_MS
        ct, sn = math.cos(turn), math.sin(turn)
        value += harmonic(st, r, c1 * ct - s1 * sn, s1 * ct + c1 * sn)
    return value


@njit(**JIT_INLINED)
def _look_ahead(cfg, st, r, t, c1, s1):
    """The forecast every step to the horizon: the confidence that the series crosses its
    threshold (the largest probability of being past it at one step the threshold can be
    crossed at, under a normal error growing with the square root of the lead), the first
    step the forecast itself is past it, and the 80 % band there (or at the step nearest
    the threshold), into the series' state. The steps walk the damping and the daily
    angle by multiplication and rotation: no power, logarithm or cosine per step."""
    direction = cfg[r, FC_DIRECTION]
    limit = cfg[r, FC_THRESHOLD]
    if cfg[r, FC_FROM_HIGH] > 0.0:
        limit = st[r, FS_HIGH] - limit
    sigma = math.sqrt(st[r, FS_VAR_HOUR])
    step_h = cfg[r, FC_STEP_H]
    steps = int(cfg[r, FC_STEPS])
    phi_step = cfg[r, FC_PHI_STEP]
    log_phi = cfg[r, FC_LOG_PHI]
    harmonic_model = cfg[r, FC_MODEL] == M_HARMONIC
    cos_turn, sin_turn = cfg[r, FC_COS_TURN], cfg[r, FC_SIN_TURN]
    lo, hi = cfg[r, FC_HOURS_FROM], cfg[r, FC_HOURS_TO]
    any_hour = lo == hi
    # the local time of day of a step, walked exactly (``derive``): the same as
    # ``can_cross_at``'s modulo, without one per step
    walk_hours = cfg[r, FC_WHOLE_STEPS] > 0.0 and t == math.floor(t) and abs(t) < 2.0 ** 52
    local0 = (t + cfg[r, FC_TZ_OFFSET]) % DAY_MS if walk_hours else 0.0
    wrapped = 0.0
    level, trend = st[r, FS_LEVEL], st[r, FS_TREND]
    damped = 1.0  # phi ** hours
    c, s = c1, s1
    best_z = -math.inf
    crossing = np.nan
    nearest = -math.inf
    low = high = np.nan
    for j in range(1, steps + 1):
        hours = j * step_h
        damped *= phi_step
        c, s = c * cos_turn - s * sin_turn, s * cos_turn + c * sin_turn
        if not any_hour:
            if walk_hours:
                local = local0 + hours * HOUR_MS - wrapped
                while local >= DAY_MS:
                    wrapped += DAY_MS
                    local -= DAY_MS
                if not in_hours(lo, hi, local / HOUR_MS):
                    continue
            elif not can_cross_at(cfg, r, t + hours * HOUR_MS):
                continue
        carried = (1.0 - damped) / log_phi if log_phi > 0.0 else hours
        value = level + trend * carried
        if harmonic_model:
            value += harmonic(st, r, c, s)
        spread = max(sigma * math.sqrt(hours), cfg[r, FC_FLOOR])
        past = direction * (value - limit)  # > 0: past the threshold
        best_z = max(best_z, past / spread)
        if math.isnan(crossing) and past > nearest:
            nearest = past
            low = value - BAND_Z * spread
            high = value + BAND_Z * spread
            if past > 0.0:
                crossing = t + hours * HOUR_MS
    st[r, FS_CONFIDENCE] = normal_cdf(best_z) if best_z > -math.inf else 0.0
    st[r, FS_CROSSING] = crossing
    st[r, FS_LOW] = low
    st[r, FS_HIGH_BAND] = high
    st[r, FS_LOOKED] = t


@njit(**JIT)
def pick(rows, active):
    """The positions in the batch of the readings of forecast series (``active``: per
    row, true for one), in batch order: the rest (nine readings in ten on the fleet) are
    never walked again nor given an output. One pass without a branch on the series
    (every position is written, the count moves on only for a forecast series: a branch
    would be mispredicted at one reading in nine); a row out of range raises ValueError.
    Returns a view of the first positions of a buffer the length of the batch."""
    picked = np.empty(rows.shape[0], dtype=np.int64)
    m = 0
    for i in range(rows.shape[0]):
        r = rows[i]
        if r < 0 or r >= active.shape[0]:
            raise ValueError("forecast batch: series row out of range")
        picked[m] = i
        m += active[r]
    return picked[:m]


@njit(**JIT)
def spread(size, picked, made, column):
    """One column of ``made`` (a row per picked reading) over the whole batch of ``size``
    readings, NaN at the others: the full-length column the engine hands the rules."""
    full = np.empty(size, dtype=np.float64)
    full[:] = np.nan
    for k in range(picked.shape[0]):
        full[picked[k]] = made[k, column]
    return full


@njit(**JIT)
def advance(picked, rows, times, values, broken, cfg, st, angles, out):
    """Advance the forecast series' models by the readings of a batch at positions
    ``picked`` (``pick``), in that order, and write, per picked reading, (confidence,
    expected crossing in ms, band low, band high) into the same row of ``out`` (NaN where
    no forecast is made: another series, a broken reading, a warm-up); ``angles``:
    ``day_angles()``."""
    for k in range(picked.shape[0]):
        out[k, 0] = np.nan
        out[k, 1] = np.nan
        out[k, 2] = np.nan
        out[k, 3] = np.nan
        i = picked[k]
        r = rows[i]
        x = values[i]
        if cfg[r, FC_ACTIVE] == 0.0 or broken[i] or not math.isfinite(x):
            continue
        t = float(times[i])  # exact: milliseconds since 1970 are far under 2**53
        of_day = times[i] % DAY_MS  # the same as t % DAY_MS, in integers
        if of_day % 1000 == 0:
            c1, s1 = angles[of_day // 1000, 0], angles[of_day // 1000, 1]
        else:
            angle = OMEGA * float(of_day)
            c1, s1 = math.cos(angle), math.sin(angle)
        if math.isnan(st[r, FS_T_FIRST]):
            st[r, FS_T_FIRST] = t
            st[r, FS_T_LAST] = t
            st[r, FS_C0] = x if cfg[r, FC_MODEL] == M_HARMONIC else 0.0
            st[r, FS_LEVEL] = x - st[r, FS_C0]
            st[r, FS_HIGH] = x
            continue
        if t <= st[r, FS_T_LAST]:
            continue
        # the forecast made an hour ago, against what came: the band's width
        if st[r, FS_DUE_MS] > 0.0 and t >= st[r, FS_DUE_MS]:
            error2 = (x - st[r, FS_DUE_VALUE]) ** 2
            var = st[r, FS_VAR_HOUR]
            if var > 0.0:
                error2 = min(error2, ERROR_CAP * var)
                st[r, FS_VAR_HOUR] = var + HOUR_MS / cfg[r, FC_TAU_PROFILE] * (error2 - var)
            else:
                st[r, FS_VAR_HOUR] = error2
            st[r, FS_DUE_MS] = 0.0
        _learn(cfg, st, r, t, x, c1, s1)
        if st[r, FS_DUE_MS] == 0.0:
            st[r, FS_DUE_MS] = t + HOUR_MS
            st[r, FS_DUE_VALUE] = _forecast_at(cfg, st, r, c1, s1, 1.0)
        if t - st[r, FS_T_FIRST] < cfg[r, FC_WARM] or st[r, FS_VAR_HOUR] <= 0.0:
            continue
        if not t - st[r, FS_LOOKED] < cfg[r, FC_EVERY]:  # (a NaN: never looked yet)
            _look_ahead(cfg, st, r, t, c1, s1)
        out[k, 0] = st[r, FS_CONFIDENCE]
        out[k, 1] = st[r, FS_CROSSING]
        out[k, 2] = st[r, FS_LOW]
        out[k, 3] = st[r, FS_HIGH_BAND]
