"""The detector's Numba kernels: private, small, and each twinned in ``reference.py``.

``score_batch`` walks a batch of (series, time, value) in arrival order and updates the
per-series state in place (``_layout.S_*`` columns, one row per series, plus a 24-bin
hour-of-day profile). For every reading it writes a score in [0, 1], the component that
produced it and a category (fault or event). No Python object is made per reading.

``apply_rules`` runs the domain rules (instances of ``_layout.CONDITIONS`` bound to one
series each) over the same batch and reports open/close transitions; ``check_silence``
opens no-data rules for series that have gone quiet by a given clock.

The compiler flags are in ``JIT`` only. ``cache=True`` keeps compiled kernels in
``__pycache__`` so a second process starts scoring in well under two seconds. No
``fastmath``: the NumPy twins must agree to the last bit on equality tests (stuck runs).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._layout import (
    A_CLOSE,
    A_OPEN,
    BINS,
    C_A_FAST,
    C_A_PROF,
    C_A_SLOW,
    C_A_VAR,
    C_CIRC,
    C_DECAY,
    C_GROUP,
    C_HIGH,
    C_INTERVAL,
    C_LEVEL,
    C_LOW,
    C_RES,
    C_SITE,
    C_SPAN,
    CAT_EVENT,
    CAT_FAULT,
    CAT_NONE,
    G_COUNT,
    G_MEDIAN,
    G_SLOT,
    HOUR_MS,
    K_DRIFT,
    K_GAP,
    K_LEVEL,
    K_NOISE,
    K_NONE,
    K_RANGE,
    K_SHIFT,
    K_SPIKE,
    K_STUCK,
    P_A_BURST,
    P_A_CROSS,
    P_A_SCALE,
    P_BURST_THR,
    P_CORR_WINDOW_MS,
    P_CORR_Z,
    P_CROSS_Z,
    P_DEV_FLOOR,
    P_EXCEED_K,
    P_GAP_FACTOR,
    P_JUMP_FACTOR,
    P_LEVEL_WARM_MS,
    P_LEVEL_Z,
    P_MAX_FLAG_MS,
    P_MAX_SPIKE_RUN,
    P_SPIKE_SPAN,
    P_SPIKE_Z,
    P_STUCK_FACTOR,
    P_STUCK_MIN_MS,
    P_STUCK_MIN_RUN,
    P_TZ_OFFSET_MS,
    P_WARM_N,
    R_ABOVE,
    R_BELOW,
    R_FALL,
    R_FAULT,
    R_NO_DATA,
    RP_CLEAR,
    RP_CLEAR_MS,
    RP_COMPONENTS,
    RP_COND,
    RP_MIN,
    RP_SERIES,
    RP_TAU,
    RP_THRESHOLD,
    RP_WORSE_BELOW,
    RS_ACTIVE,
    RS_BASE,
    RS_CLEAR_SINCE,
    RS_COND_SINCE,
    RS_FIRST_COMPONENT,
    RS_GAP_MAX,
    RS_LAST_RISE,
    RS_LOWEST,
    RS_OPENED,
    RS_PEAK,
    RS_PENDING,
    RS_RISES,
    RS_UPDATED,
    RS_VALUE,
    S_BIN,
    S_BURST,
    S_D_LAST,
    S_DEV_T,
    S_DVAR,
    S_FLAG_SINCE,
    S_JUMP_MAX,
    S_MF,
    S_MS,
    S_N,
    S_RUN,
    S_RUN_MAX,
    S_RUN_START,
    S_SCALE,
    S_SCALE2,
    S_SPIKE_RUN,
    S_T_FIRST,
    S_T_LAST,
    S_X_LAST,
    S_X_PREV,
    S_XVAR,
    S_XZ,
    S_ZS,
)

JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}

RECENT_MS = 2.0 * HOUR_MS  # a group member heard from longer ago than this is not compared
RISE_MERGE_MS = 6.0 * HOUR_MS  # rises closer than this belong to one irrigation or shower


@njit(**JIT)
def _ratio_score(r):
    """Map "how many thresholds" to [0, 1): 0.5 exactly at the threshold."""
    return r / (1.0 + r) if r > 0.0 else 0.0


@njit(**JIT)
def _group_median(t, st, grp_ptr, grp_mem, group, warm_ms, scratch):
    """Median signed level z of the warm, unflagged members of ``group`` heard from in the
    last two hours, and how many there were (the median is NaN under three)."""
    k = 0
    for j in range(grp_ptr[group], grp_ptr[group + 1]):
        m = grp_mem[j]
        if st[m, S_N] == 0.0 or t - st[m, S_T_LAST] > RECENT_MS:
            continue
        if st[m, S_T_LAST] - st[m, S_T_FIRST] < warm_ms or st[m, S_FLAG_SINCE] >= 0.0:
            continue
        scratch[k] = st[m, S_ZS]
        k += 1
    if k < 3:
        return np.nan, k
    window = scratch[:k]
    window.sort()
    if k % 2 == 1:
        return window[k // 2], k
    return 0.5 * (window[k // 2 - 1] + window[k // 2]), k


@njit(**JIT)
def _corroborated(s, t, cfg, st, site_ptr, site_mem, window_ms):
    """Did another series of the same site depart from its own level recently?"""
    site = int(cfg[s, C_SITE])
    for j in range(site_ptr[site], site_ptr[site + 1]):
        m = site_mem[j]
        if m != s and st[m, S_DEV_T] >= t - window_ms:
            return True
    return False


@njit(**JIT)
def score_batch(series, times, values, cfg, params, st, prof, gst, site_ptr, site_mem,
                grp_ptr, grp_mem, scratch, out_score, out_comp, out_cat):
    """Score readings in arrival order; see the module docstring. Readings at or before
    their series' last scored time are left unscored (score 0, component none)."""
    warm_n = params[P_WARM_N]
    for i in range(series.shape[0]):
        s = series[i]
        t = float(times[i])
        x = values[i]
        out_score[i] = 0.0
        out_comp[i] = K_NONE
        out_cat[i] = CAT_NONE
        seen = st[s, S_N]
        t_last = st[s, S_T_LAST]
        if seen > 0.0 and t <= t_last:
            continue
        interval = cfg[s, C_INTERVAL]
        best = 0.0
        comp = K_NONE
        if seen > 0.0:
            limit = params[P_GAP_FACTOR] * interval
            if t - t_last > limit:
                best = _ratio_score((t - t_last) / limit)
                comp = K_GAP
        else:
            st[s, S_T_FIRST] = t
        st[s, S_T_LAST] = t
        st[s, S_N] = seen + 1.0
        low = cfg[s, C_LOW]
        high = cfg[s, C_HIGH]
        if not (x >= low and x <= high):  # NaN and inf fail both comparisons
            out_score[i] = 1.0
            out_comp[i] = K_RANGE
            out_cat[i] = CAT_FAULT
            continue
        res = cfg[s, C_RES]
        span = cfg[s, C_SPAN]
        decay = cfg[s, C_DECAY]
        warm = seen >= warm_n
        flagged = False

        # --- stuck: a run of identical values far longer than this series ever shows ----
        at_bound = x <= low + 0.5 * res or x >= high - 0.5 * res
        stuck_thr = max(params[P_STUCK_MIN_RUN], params[P_STUCK_FACTOR] * st[s, S_RUN_MAX])
        if x == st[s, S_X_PREV]:
            st[s, S_RUN] += 1.0
        else:
            run = st[s, S_RUN]
            prev = st[s, S_X_PREV]
            prev_bound = prev <= low + 0.5 * res or prev >= high - 0.5 * res
            if run > st[s, S_RUN_MAX] and run < stuck_thr and not prev_bound:
                st[s, S_RUN_MAX] = run
            st[s, S_RUN] = 0.0
            st[s, S_RUN_START] = t
        st[s, S_X_PREV] = x
        st[s, S_RUN_MAX] *= decay
        run = st[s, S_RUN]
        if (warm and not at_bound and run >= stuck_thr
                and t - st[s, S_RUN_START] >= params[P_STUCK_MIN_MS]):
            score = _ratio_score(run / stuck_thr)
            if score > best:
                best = score
                comp = K_STUCK
            flagged = True

        # --- spike, shift and noise burst, from the step since the last accepted value ---
        x_last = st[s, S_X_LAST]
        spiking = False
        if math.isnan(x_last):
            st[s, S_X_LAST] = x
        else:
            d = x - x_last
            if cfg[s, C_CIRC] > 0.0:
                d = (d + 180.0) % 360.0 - 180.0
            ad = abs(d)
            scale = max(st[s, S_SCALE], res)
            # noise is judged on the change of the step, which a smooth ramp (sunrise, a
            # charging battery) keeps small and noise does not
            d2 = abs(d - st[s, S_D_LAST]) if not math.isnan(st[s, S_D_LAST]) else 0.0
            scale2 = max(st[s, S_SCALE2], res)
            exceed = 1.0 if d2 > params[P_EXCEED_K] * scale2 else 0.0
            if not at_bound:  # a sensor resting at its limit (no sun, no rain) says nothing
                st[s, S_BURST] += params[P_A_BURST] * (exceed - st[s, S_BURST])
            bursting = warm and st[s, S_BURST] > params[P_BURST_THR]
            spike_thr = max(params[P_SPIKE_Z] * scale, params[P_SPIKE_SPAN] * span,
                            params[P_JUMP_FACTOR] * st[s, S_JUMP_MAX])
            if warm and ad > spike_thr:
                spike_run = st[s, S_SPIKE_RUN] + 1.0
                score = _ratio_score(ad / spike_thr)
                flagged = True
                if spike_run > params[P_MAX_SPIKE_RUN]:
                    # the new level held: a shift, and from now on the level
                    st[s, S_SPIKE_RUN] = 0.0
                    st[s, S_X_LAST] = x
                    st[s, S_D_LAST] = 0.0
                    st[s, S_JUMP_MAX] = max(st[s, S_JUMP_MAX], ad)
                    st[s, S_DEV_T] = t
                    if score > best:
                        best = score
                        comp = K_SHIFT
                else:
                    st[s, S_SPIKE_RUN] = spike_run
                    spiking = True
                    if score > best:
                        best = score
                        comp = K_SPIKE
            else:
                st[s, S_SPIKE_RUN] = 0.0
                st[s, S_X_LAST] = x
                st[s, S_D_LAST] = d
                if not flagged and not bursting and not at_bound:
                    st[s, S_SCALE] += params[P_A_SCALE] * (min(ad, 5.0 * scale) - st[s, S_SCALE])
                    st[s, S_SCALE2] += params[P_A_SCALE] * (min(d2, 5.0 * scale2)
                                                            - st[s, S_SCALE2])
                    st[s, S_JUMP_MAX] = max(st[s, S_JUMP_MAX] * decay, ad)
            if bursting:
                score = max(best, _ratio_score(st[s, S_BURST] / params[P_BURST_THR]))
                if comp == K_SPIKE or score > best:
                    best = score
                    comp = K_NOISE
                flagged = True

        # --- level: the de-seasoned hourly level against its slow baseline ---------------
        if cfg[s, C_LEVEL] > 0.0 and not spiking:
            local = times[i] + np.int64(params[P_TZ_OFFSET_MS])
            hour = (local // np.int64(HOUR_MS)) % BINS
            p = prof[s, hour]
            if math.isnan(p):  # a first visit: carry the hour before forward
                p = prof[s, (hour + BINS - 1) % BINS]
                if math.isnan(p):
                    p = x
                prof[s, hour] = p
            e = x - p
            if math.isnan(st[s, S_MF]):
                st[s, S_MF] = e
                st[s, S_MS] = e
            st[s, S_MF] += cfg[s, C_A_FAST] * (e - st[s, S_MF])
            if st[s, S_FLAG_SINCE] < 0.0:
                st[s, S_MS] += cfg[s, C_A_SLOW] * (e - st[s, S_MS])
            dev = st[s, S_MF] - st[s, S_MS]
            sd = max(math.sqrt(st[s, S_DVAR]), res, params[P_DEV_FLOOR] * span)
            z = dev / sd
            st[s, S_ZS] = z
            level_flag = False
            if t - st[s, S_T_FIRST] >= params[P_LEVEL_WARM_MS]:
                level_z = params[P_LEVEL_Z]
                stat = abs(z) / level_z
                group = int(cfg[s, C_GROUP])
                slot = float(times[i] // np.int64(HOUR_MS))
                if group >= 0 and st[s, S_BIN] != slot:
                    # once an hour: this series' level against its group's (one median
                    # per group and hour, shared by every member)
                    st[s, S_BIN] = slot
                    if gst[group, G_SLOT] != slot:
                        median, members = _group_median(t, st, grp_ptr, grp_mem, group,
                                                        params[P_LEVEL_WARM_MS], scratch)
                        gst[group, G_SLOT] = slot
                        gst[group, G_MEDIAN] = median
                        gst[group, G_COUNT] = members
                    if gst[group, G_COUNT] >= 3.0:
                        dz = z - gst[group, G_MEDIAN]
                        if st[s, S_FLAG_SINCE] < 0.0:
                            st[s, S_XVAR] += params[P_A_CROSS] * (dz * dz - st[s, S_XVAR])
                        st[s, S_XZ] = dz / max(math.sqrt(st[s, S_XVAR]), 1.0)
                    else:
                        st[s, S_XZ] = np.nan
                if group >= 0 and not math.isnan(st[s, S_XZ]):
                    stat = min(stat, abs(st[s, S_XZ]) / params[P_CROSS_Z])
                if stat > 1.0:
                    level_flag = True
                    if st[s, S_FLAG_SINCE] < 0.0:
                        st[s, S_FLAG_SINCE] = t
                    elif t - st[s, S_FLAG_SINCE] > params[P_MAX_FLAG_MS]:
                        st[s, S_MS] = st[s, S_MF]  # a lasting change: take it as the level
                        st[s, S_FLAG_SINCE] = -1.0
                    score = _ratio_score(stat)
                    if score > best:
                        best = score
                        comp = K_DRIFT
                else:
                    st[s, S_FLAG_SINCE] = -1.0
                if stat * level_z > params[P_CORR_Z]:
                    st[s, S_DEV_T] = t
            if not flagged and not level_flag:
                prof[s, hour] += cfg[s, C_A_PROF] * (x - p)
            # the spread learns from every reading, each capped at the threshold (Huber):
            # a recurring natural swing is learned, a fault moves it only slowly
            cap = params[P_LEVEL_Z] * sd
            st[s, S_DVAR] += cfg[s, C_A_VAR] * (min(dev * dev, cap * cap) - st[s, S_DVAR])

        if comp != K_NONE:
            category = CAT_FAULT
            # a level change or a step that other sensors of the site share is the world
            # changing (numba compiles `a == b or a == c`, not a tuple membership test)
            if (comp == K_DRIFT or comp == K_SHIFT) and _corroborated(  # noqa: SIM109
                    s, t, cfg, st, site_ptr, site_mem, params[P_CORR_WINDOW_MS]):
                category = CAT_EVENT
                if comp == K_DRIFT:
                    comp = K_LEVEL
            out_score[i] = best
            out_comp[i] = comp
            out_cat[i] = category


@njit(**JIT)
def _emit(n, inst, action, time, value, t_inst, t_action, t_time, t_value):
    if n < t_inst.shape[0]:
        t_inst[n] = inst
        t_action[n] = action
        t_time[n] = time
        t_value[n] = value
    return n + 1


@njit(**JIT)
def _advance(k, hit, cleared, t, x, comp, rp, rs, n, t_inst, t_action, t_time, t_value):
    """One step of a rule instance's state machine: the condition must hold ``min_ms``
    before it opens, and stay cleared ``clear_ms`` before it closes (between the open and
    the clear threshold it stays as it is: hysteresis)."""
    active = rs[k, RS_ACTIVE] > 0.0
    if hit:
        rs[k, RS_CLEAR_SINCE] = -1.0
        if rs[k, RS_COND_SINCE] < 0.0:
            rs[k, RS_COND_SINCE] = t
        if active:
            rs[k, RS_VALUE] = x
            rs[k, RS_UPDATED] = t
            if rp[k, RP_WORSE_BELOW] > 0.0:
                rs[k, RS_PEAK] = min(rs[k, RS_PEAK], x)
            else:
                rs[k, RS_PEAK] = max(rs[k, RS_PEAK], x)
        elif t - rs[k, RS_COND_SINCE] >= rp[k, RP_MIN]:
            rs[k, RS_ACTIVE] = 1.0
            rs[k, RS_OPENED] = rs[k, RS_COND_SINCE]
            rs[k, RS_VALUE] = x
            rs[k, RS_PEAK] = x
            rs[k, RS_UPDATED] = t
            rs[k, RS_FIRST_COMPONENT] = comp
            n = _emit(n, k, A_OPEN, rs[k, RS_COND_SINCE], x, t_inst, t_action, t_time,
                      t_value)
    elif not active:
        rs[k, RS_COND_SINCE] = -1.0
    elif cleared:
        if rs[k, RS_CLEAR_SINCE] < 0.0:
            rs[k, RS_CLEAR_SINCE] = t
        if t - rs[k, RS_CLEAR_SINCE] >= rp[k, RP_CLEAR_MS]:
            n = _emit(n, k, A_CLOSE, rs[k, RS_CLEAR_SINCE], x, t_inst, t_action, t_time,
                      t_value)
            rs[k, RS_ACTIVE] = 0.0
            rs[k, RS_COND_SINCE] = -1.0
            rs[k, RS_CLEAR_SINCE] = -1.0
    else:
        rs[k, RS_CLEAR_SINCE] = -1.0
        rs[k, RS_VALUE] = x
        rs[k, RS_UPDATED] = t
    return n


@njit(**JIT)
def apply_rules(series, times, values, out_score, out_comp, out_cat, rule_ptr, rule_inst,
                rp, rs, t_inst, t_action, t_time, t_value):
    """Advance every rule instance bound to each reading's series; returns how many
    transitions there were (those past the arrays' length are counted, not written).

    A fault rule counts only the components in its mask. A spike counts once the value
    has come back (the next reading is not a spike or a shift): a step that holds is the
    world changing (rain on a humidity sensor), not a broken sensor."""
    n = 0
    for i in range(series.shape[0]):
        s = series[i]
        lo = rule_ptr[s]
        hi = rule_ptr[s + 1]
        if lo == hi:
            continue
        t = float(times[i])
        x = values[i]
        comp = out_comp[i]
        # values the detector calls broken sensor output say nothing about the world
        broken = out_cat[i] == CAT_FAULT and comp != K_DRIFT and comp != K_GAP
        for j in range(lo, hi):
            k = rule_inst[j]
            cond = rp[k, RP_COND]
            if cond == R_NO_DATA:
                if rs[k, RS_ACTIVE] > 0.0:  # any reading ends the silence
                    rs[k, RS_ACTIVE] = 0.0
                    rs[k, RS_COND_SINCE] = -1.0
                    n = _emit(n, k, A_CLOSE, t, x, t_inst, t_action, t_time, t_value)
                continue
            if cond == R_FAULT:
                counted = (int(rp[k, RP_COMPONENTS]) >> comp) & 1 == 1
                fault = (out_cat[i] == CAT_FAULT and counted
                         and out_score[i] >= rp[k, RP_THRESHOLD])
                if fault and comp == K_SPIKE:
                    if math.isnan(rs[k, RS_PENDING]):
                        rs[k, RS_PENDING] = t
                    continue
                if not math.isnan(rs[k, RS_PENDING]):
                    pending = rs[k, RS_PENDING]
                    rs[k, RS_PENDING] = np.nan
                    if comp != K_SHIFT:  # it came back: that was a spike
                        n = _advance(k, True, False, pending, x, K_SPIKE, rp, rs, n, t_inst,
                                     t_action, t_time, t_value)
                n = _advance(k, fault, not fault, t, x, comp, rp, rs, n, t_inst, t_action,
                             t_time, t_value)
                continue
            if broken or not math.isfinite(x):
                continue
            active = rs[k, RS_ACTIVE] > 0.0
            if cond == R_BELOW:
                hit = x < rp[k, RP_THRESHOLD]
                cleared = x >= rp[k, RP_CLEAR]
            elif cond == R_ABOVE:
                hit = x > rp[k, RP_THRESHOLD]
                cleared = x <= rp[k, RP_CLEAR]
            elif cond == R_FALL:
                base = rs[k, RS_BASE]
                if math.isnan(base):
                    base = x
                hit = base - x >= rp[k, RP_THRESHOLD]
                cleared = base - x <= rp[k, RP_CLEAR]
                if not active and not hit and rs[k, RS_COND_SINCE] < 0.0:
                    base += rp[k, RP_TAU] * (x - base)
                rs[k, RS_BASE] = base
            else:  # R_NO_RISE
                lowest = rs[k, RS_LOWEST]
                if math.isnan(lowest) or x < lowest:
                    lowest = x
                rose = x - lowest >= rp[k, RP_CLEAR]
                if rose:
                    last = rs[k, RS_LAST_RISE]
                    if t - last > RISE_MERGE_MS:
                        if rs[k, RS_RISES] >= 1.0 and not active:
                            rs[k, RS_GAP_MAX] = max(rs[k, RS_GAP_MAX], t - last)
                        rs[k, RS_RISES] += 1.0
                    rs[k, RS_LAST_RISE] = t
                    lowest = x
                rs[k, RS_LOWEST] = lowest
                hit = (not rose and rs[k, RS_RISES] >= 3.0
                       and t - rs[k, RS_LAST_RISE] > rp[k, RP_THRESHOLD] * rs[k, RS_GAP_MAX])
                cleared = rose
            n = _advance(k, hit, cleared, t, x, comp, rp, rs, n, t_inst, t_action, t_time,
                         t_value)
    return n


@njit(**JIT)
def check_silence(now, silent_inst, rp, rs, st, cfg, t_inst, t_action, t_time, t_value):
    """Open the no-data rules whose series has been silent for ``threshold`` intervals by
    ``now``; the next reading closes them (``apply_rules``)."""
    n = 0
    for j in range(silent_inst.shape[0]):
        k = silent_inst[j]
        s = int(rp[k, RP_SERIES])
        if rs[k, RS_ACTIVE] > 0.0 or st[s, S_N] == 0.0:
            continue
        interval = cfg[s, C_INTERVAL]
        if now - st[s, S_T_LAST] > rp[k, RP_THRESHOLD] * interval:
            opened = st[s, S_T_LAST] + interval
            rs[k, RS_ACTIVE] = 1.0
            rs[k, RS_OPENED] = opened
            rs[k, RS_COND_SINCE] = opened
            rs[k, RS_UPDATED] = now
            rs[k, RS_VALUE] = np.nan
            rs[k, RS_PEAK] = np.nan
            rs[k, RS_FIRST_COMPONENT] = K_GAP
            n = _emit(n, k, A_OPEN, opened, np.nan, t_inst, t_action, t_time, t_value)
    return n
