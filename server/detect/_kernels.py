"""The detector's Numba kernels: private, small, and each twinned in ``detector_twins.py``.

``score_batch`` walks a batch of (series, time, value) in arrival order and updates the
per-series state in place (``_layout.S_*`` columns, one row per series, plus a 24-bin
hour-of-day profile). For every reading it writes a score in [0, 1], the component that
produced it and a category (fault or event). No Python object is made per reading.

``apply_rules`` runs the domain rules (instances of ``_layout.CONDITIONS`` bound to one
series each) over the same batch and reports open/close transitions; ``check_silence``
opens no-data rules for series that have gone quiet by a given clock.

The compiler flags are in ``JIT`` only (``JIT_INLINED`` adds Numba-level inlining to
it). ``cache=True`` keeps compiled kernels in ``__pycache__`` so a second process starts
scoring in well under two seconds. No
``fastmath``: the NumPy twins must agree to the last bit on equality tests (stuck runs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from tidefield.protocol.units import HOUR_MS

from ._layout import (
    A_CLOSE,
    A_OPEN,
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
    CAT_EVENT,
    CAT_FAULT,
    CAT_NONE,
    G_COUNT,
    G_MEDIAN,
    G_SLOT,
    HIGH_SLOTS,
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
    P_A_SCALE,
    P_BURST_SLOW_THR,
    P_BURST_SPAN,
    P_BURST_THR,
    P_CORR_WINDOW_MS,
    P_CORR_Z,
    P_DEV_FLOOR,
    P_DRIFT_H,
    P_DRIFT_K,
    P_DRIFT_SPAN,
    P_EXCEED_K,
    P_FLAT_SHARE,
    P_GAIN_PRIOR,
    P_GAP_FACTOR,
    P_HOLD_MS,
    P_JUMP_FACTOR,
    P_LEVEL_WARM_MS,
    P_LEVEL_Z,
    P_MAX_FLAG_MS,
    P_MAX_SPIKE_RUN,
    P_NOISE_DOWN,
    P_NOISE_DOWN_WARM,
    P_NOISE_UP,
    P_NOISE_UP_WARM,
    P_OWN_H,
    P_OWN_MEMORY,
    P_OWN_SPAN,
    P_PAIR_PRIOR,
    P_PAIR_SLOPE,
    P_PAIR_SPAN,
    P_REFRACTORY_FACTOR,
    P_REFRACTORY_MS,
    P_RETURN_CLOSE,
    P_RETURN_FRAC,
    P_RETURN_JUMP,
    P_RETURN_Z,
    P_SHARED_FRAC,
    P_SHARED_MS,
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
    R_FORECAST,
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
    RS_ACTIVE,
    RS_BASE,
    RS_CLEAR_SINCE,
    RS_COND_SINCE,
    RS_FIRST_COMPONENT,
    RS_GAP_MAX,
    RS_HIGH_0,
    RS_HIGH_END,
    RS_HIGH_OLDER,
    RS_HIGH_SLOT,
    RS_LAST_RISE,
    RS_LOWEST,
    RS_OPENED,
    RS_PEAK,
    RS_PENDING,
    RS_RISES,
    RS_SEEN,
    RS_UPDATED,
    RS_VALUE,
    S_ALARM_T,
    S_BURST,
    S_BURST_REL,
    S_BURST_TAIL,
    S_CUS_DOWN,
    S_CUS_UP,
    S_D_LAST,
    S_DEV_T,
    S_EPISODE_COMP,
    S_EPISODE_T,
    S_FLAG_SINCE,
    S_FLAT_ALL,
    S_FLAT_LONG,
    S_HOUR,
    S_HOUR_END,
    S_HOURS,
    S_JUMP_MAX,
    S_MF,
    S_N,
    S_OWN_BASE,
    S_OWN_DOWN,
    S_OWN_FLAG,
    S_OWN_N,
    S_OWN_SINCE,
    S_OWN_TAIL,
    S_OWN_UP,
    S_OWN_VAR,
    S_PU,
    S_PUU,
    S_PUV,
    S_PV,
    S_RB,
    S_RETURN_MAX,
    S_RUN,
    S_RUN_MAX,
    S_RUN_START,
    S_RVAR,
    S_SCALE,
    S_SCALE2,
    S_SCALE_REL,
    S_SLOW,
    S_SLOW_REL,
    S_SPIKE_RUN,
    S_SUSPECT_SINCE,
    S_T_FIRST,
    S_T_LAST,
    S_X_LAST,
    S_X_PREV,
)

JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy",
                      "boundscheck": False}
# For a step called per reading that takes the state arrays: inlined by Numba itself, so
# no out-of-line call takes and drops a reference count on each array per reading (the
# own-level step of a lone series: a tenth of score-csv's time). Steps that can take
# scalars take scalars instead (``_tail_limit``, ``_count_run``).
JIT_INLINED: dict[str, Any] = {**JIT, "inline": "always"}

NEVER = -1e18  # a time before anything (detector.NEVER)
RECENT_MS = 2.0 * HOUR_MS  # a group member heard from longer ago than this is not compared
RISE_MERGE_MS = 6.0 * HOUR_MS  # rises closer than this belong to one irrigation or shower


@njit(**JIT)
def _ratio_score(r):
    """Map "how many thresholds" to [0, 1): 0.5 exactly at the threshold."""
    return r / (1.0 + r) if r > 0.0 else 0.0


@njit(**JIT)
def _count_run(flat_all, flat_long, length, keep, long_run):
    """A run of one value of ``length`` readings ended: into the counts of all readings
    and of those in long runs (how often the series sits flat), both first decayed by
    ``keep`` (``_run_decay``); returns both."""
    return (flat_all * keep + length,
            flat_long * keep + (length if length >= long_run else 0.0))


@njit(**JIT_INLINED)
def _run_decay(s, length, cfg):
    """pow(decay, length) for a run of ``length`` readings of series ``s``. A noisy series
    ends a run of one reading at nearly every reading: pow(decay, 1) is decay exactly, and
    skipping the pow there saved a fifth of the kernel's time; nearly all the other runs
    are two to four readings long, whose powers the detector computed once (cfg decay_2
    ... decay_4, the same pow)."""
    if length == 1.0:
        return cfg[s, C_DECAY]
    if length == 2.0:
        return cfg[s, C_DECAY_2]
    if length == 3.0:
        return cfg[s, C_DECAY_3]
    if length == 4.0:
        return cfg[s, C_DECAY_4]
    return cfg[s, C_DECAY] ** length


GOING_ON_INTERVALS = 3.0  # a step alarm raised within this many intervals goes on


@njit(**JIT)
def _refractory(s, t, score, comp, cfg, params, st):
    """One alarm an episode: an alarm of ``comp`` (spike, shift, noise; ``score`` at
    least 0.5) that does not continue the alarm raised last (within
    GOING_ON_INTERVALS) and comes within refractory_ms of the series' last one of that
    component due, raised or not, belongs to that episode (a storm's sediment pulses, a
    pump's flow settling after a valve moved): it is raised only
    refractory_factor times past its threshold, else scored under it. Another component
    starts an episode of its own (a noise burst after a spike is news). Returns the
    score to report."""
    since_last = t - st[s, S_EPISODE_T]
    if st[s, S_EPISODE_COMP] != comp:
        since_last = math.inf
    st[s, S_EPISODE_T] = t
    st[s, S_EPISODE_COMP] = comp
    going_on = t - st[s, S_ALARM_T] <= GOING_ON_INTERVALS * cfg[s, C_INTERVAL]
    if not going_on and since_last <= params[P_REFRACTORY_MS] and score < 1.0:
        score = _ratio_score(score / (1.0 - score) / params[P_REFRACTORY_FACTOR])
    if score >= 0.5:
        st[s, S_ALARM_T] = t
    return score


TAIL_FLOOR = math.exp(-2.0)  # how far under its threshold a learned tail may sink


@njit(**JIT)
def _tail_limit(stored, ratio, learn, up, down):
    """A threshold in units of the fixed one: 1, or where higher the series' own learned
    quantile of ``ratio`` (a statistic over its threshold), so the default alarm means a
    like rate of false alarms on every series. The quantile (``stored``, its state column,
    0 before any is learned) follows a Robbins-Monro step in the logarithm, taken as
    factors: times ``up`` when a reading is above it, times ``down`` otherwise
    (params.noise_quantile and noise_eta). The limit is taken before this reading's step,
    so a change does not excuse itself at once. Returns the limit and the quantile to
    store (``stored`` itself when not learning). Scalars in and out: a state array passed
    in costs a reference count taken and dropped per reading, out-of-line calls that cost
    more than the step itself."""
    level = stored
    if level == 0.0:
        level = 1.0
    limit = max(level, 1.0)
    if not learn:
        return limit, stored
    level = level * up if ratio > level else level * down
    return limit, max(level, TAIL_FLOOR)


@njit(**JIT_INLINED)
def _own_level(s, t, e, cfg, params, st):
    """Per reading, for a series no other sensor is compared with: its de-seasoned
    reading ``e`` against its own level, in units of its own spread (both learned over
    ``own_memory`` readings, frozen while a change is suspected, the residual clipped at
    level_z σ), fed to two one-sided CUSUMs. Their threshold is ``own_h``, or where
    higher the series' own tail of them (how far its level wanders on its own: a river
    after rain). Returns the score of a flagged change (past the threshold and at least
    own_span of the typical range), else 0. A change suspected (past half the
    threshold) for own_memory readings becomes the level."""
    n = st[s, S_OWN_N] + 1.0
    st[s, S_OWN_N] = n
    if n == 1.0:
        st[s, S_OWN_BASE] = e
        return 0.0
    memory = params[P_OWN_MEMORY]
    dev = e - st[s, S_OWN_BASE]
    sd = max(math.sqrt(st[s, S_OWN_VAR]), cfg[s, C_RES], st[s, S_SCALE])
    lz = params[P_LEVEL_Z]
    k = params[P_DRIFT_K]
    learning = n <= params[P_WARM_N]
    h = params[P_OWN_H]
    up = 0.0
    down = 0.0
    if not learning:
        limit, st[s, S_OWN_TAIL] = _tail_limit(
            st[s, S_OWN_TAIL], max(st[s, S_OWN_UP], st[s, S_OWN_DOWN]) / h, True,
            params[P_NOISE_UP], params[P_NOISE_DOWN])
        h *= limit
        step = min(max(dev / sd, -lz), lz)
        up = min(max(0.0, st[s, S_OWN_UP] + step - k), 2.0 * h)
        down = min(max(0.0, st[s, S_OWN_DOWN] - step - k), 2.0 * h)
    if learning or max(up, down) <= 0.5 * h:
        a = max(1.0 / n, 1.0 / memory)
        cap = math.inf if learning else lz * sd
        clipped = min(max(dev, -cap), cap)
        st[s, S_OWN_BASE] += a * clipped
        st[s, S_OWN_VAR] += a * (clipped * clipped - st[s, S_OWN_VAR])
        st[s, S_OWN_SINCE] = -1.0
    elif st[s, S_OWN_SINCE] < 0.0:
        st[s, S_OWN_SINCE] = n
    elif n - st[s, S_OWN_SINCE] > memory:  # suspected this long: the new level
        st[s, S_OWN_BASE] = e
        up = 0.0
        down = 0.0
        st[s, S_OWN_SINCE] = -1.0
    st[s, S_OWN_UP] = up
    st[s, S_OWN_DOWN] = down
    if not learning and abs(dev) > params[P_CORR_Z] * sd:
        st[s, S_DEV_T] = t  # far off its own level: corroborates the site's other series
    # raised, the flag stays up while the change is suspected: the learned tail follows
    # a long excursion up, and the CUSUM and its threshold crossing back and forth split
    # one change into a string of alarms
    flag = st[s, S_OWN_FLAG] > 0.0 and st[s, S_OWN_SINCE] >= 0.0
    if max(up, down) > h and abs(dev) > params[P_OWN_SPAN] * cfg[s, C_SPAN]:
        flag = True
    st[s, S_OWN_FLAG] = 1.0 if flag else 0.0
    if flag:
        return _ratio_score(max(max(up, down) / h, 1.0))
    return 0.0


@njit(**JIT)
def _group_median(t, st, grp_ptr, grp_mem, group, warm_ms, scratch):
    """Median de-seasoned level of the warm members of ``group`` heard from in the last
    two hours and not under suspicion of a change, and how many there were (NaN under
    three)."""
    k = 0
    for j in range(grp_ptr[group], grp_ptr[group + 1]):
        m = grp_mem[j]
        if st[m, S_N] == 0.0 or t - st[m, S_T_LAST] > RECENT_MS:
            continue
        if st[m, S_T_LAST] - st[m, S_T_FIRST] < warm_ms or st[m, S_FLAG_SINCE] >= 0.0:
            continue
        scratch[k] = st[m, S_MF]
        k += 1
    if k < 3:
        return np.nan, k
    window = scratch[:k]
    window.sort()
    if k % 2 == 1:
        return window[k // 2], k
    return 0.5 * (window[k // 2 - 1] + window[k // 2]), k


@njit(**JIT)
def _shared(s, t, rising, params, st, grp_ptr, grp_mem, group, warm_ms):
    """Did enough of the same sensors elsewhere leave their own levels the same way as
    ``s`` did, from shared_hours before it left its own on?"""
    since = min(st[s, S_SUSPECT_SINCE], t) - params[P_SHARED_MS]
    heard = 0.0
    others = 0.0
    for j in range(grp_ptr[group], grp_ptr[group + 1]):
        m = grp_mem[j]
        if m == s or st[m, S_N] == 0.0 or t - st[m, S_T_LAST] > RECENT_MS:
            continue
        if st[m, S_T_LAST] - st[m, S_T_FIRST] < warm_ms:
            continue
        heard += 1.0
        if st[m, S_SUSPECT_SINCE] >= since and (st[m, S_CUS_UP] > st[m, S_CUS_DOWN]) == rising:
            others += 1.0
    return others >= max(3.0, params[P_SHARED_FRAC] * heard)


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
def _wrap(d):
    """An angle difference in [-180, 180). The difference of two angles in [0, 360] needs
    at most one turn added or taken, exact as the floating-point modulo (an fmod call)
    gives it; anything else takes the modulo."""
    a = d + 180.0
    if 0.0 <= a < 360.0:
        return a - 180.0
    if -360.0 <= a < 0.0:
        return (a + 360.0) - 180.0
    if 360.0 <= a < 720.0:
        return (a - 360.0) - 180.0
    return a % 360.0 - 180.0


@njit(**JIT)
def _hourly_drift(s, t, local_hour, cfg, params, st, gst, grp_ptr, grp_mem, scratch):
    """Once per series and local hour: the de-seasoned level's residual against the
    median of the same sensors at other sites (regional weather moves them all), less
    what a learned gain on that median explains (an exposed buoy's waves swing more than
    a sheltered one's with the same wind), fed to two one-sided CUSUMs in units of its
    learned spread. Baseline, gain and spread are frozen while a change is suspected
    (either CUSUM past half its threshold), so a slow drift cannot teach them to accept
    it."""
    group = int(cfg[s, C_GROUP])
    if group < 0:
        return
    warm_ms = params[P_LEVEL_WARM_MS]
    if gst[group, G_SLOT] != local_hour:
        median, members = _group_median(t, st, grp_ptr, grp_mem, group, warm_ms, scratch)
        gst[group, G_SLOT] = local_hour
        gst[group, G_MEDIAN] = median
        gst[group, G_COUNT] = members
    if gst[group, G_COUNT] < 3.0:
        return
    median = gst[group, G_MEDIAN]
    r = st[s, S_MF] - median
    hours = st[s, S_HOURS] + 1.0
    st[s, S_HOURS] = hours
    if math.isnan(st[s, S_RB]):
        st[s, S_RB] = r
        st[s, S_PU] = median
    elif math.isnan(st[s, S_PU]):  # a checkpoint from before the gain (upgrade_state)
        st[s, S_PU] = median
    span = cfg[s, C_SPAN]
    floor = max(cfg[s, C_RES], params[P_DEV_FLOOR] * span)
    # the gain, shrunk toward none where the median has hardly moved; angles keep none
    # (their residual is not a difference of levels on a line)
    du = median - st[s, S_PU]
    gain = 0.0
    if cfg[s, C_CIRC] == 0.0:
        gain = st[s, S_PUV] / (st[s, S_PUU] + params[P_GAIN_PRIOR] * span * span)
    explained = gain * du
    dev = r - st[s, S_RB] - explained
    learning = hours * HOUR_MS <= warm_ms
    sd = max(math.sqrt(st[s, S_RVAR]), floor)
    dz = dev / sd
    k = params[P_DRIFT_K]
    h = params[P_DRIFT_H]
    up = 0.0
    down = 0.0
    if not learning:
        # one hour adds at most level_z σ (a sudden step says little about a drift), and
        # the sums stop at twice the threshold so an episode that is over clears within
        # hours
        step = min(max(dz, -params[P_LEVEL_Z]), params[P_LEVEL_Z])
        up = min(max(0.0, st[s, S_CUS_UP] + step - k), 2.0 * h)
        down = min(max(0.0, st[s, S_CUS_DOWN] - step - k), 2.0 * h)
    if learning or not (up > 0.5 * h or down > 0.5 * h):
        # learning: plain running means first, then the slow EWMAs. The residual is
        # clipped like the spread, so the hours of an event's onset, before the CUSUM
        # suspects it, hardly move the baseline
        a = cfg[s, C_A_SLOW]
        a_var = cfg[s, C_A_VAR]
        if learning:
            a = max(a, 1.0 / hours)
            a_var = max(a_var, 1.0 / hours)
        cap = params[P_LEVEL_Z] * sd
        if learning:
            cap = math.inf
        dv = explained + min(max(dev, -cap), cap)
        st[s, S_RB] += a * dv
        st[s, S_PU] += a * du
        st[s, S_PUU] = (1.0 - a_var) * (st[s, S_PUU] + a_var * du * du)
        st[s, S_PUV] = (1.0 - a_var) * (st[s, S_PUV] + a_var * du * dv)
        st[s, S_RVAR] += a_var * (min(dev * dev, cap * cap) - st[s, S_RVAR])
    if learning:
        return
    if abs(dz) > params[P_CORR_Z]:
        st[s, S_DEV_T] = t
    big = abs(dev) > params[P_DRIFT_SPAN] * span
    if up < 0.25 * h and down < 0.25 * h:  # at rest
        st[s, S_SUSPECT_SINCE] = -1.0
    elif st[s, S_SUSPECT_SINCE] < 0.0:
        st[s, S_SUSPECT_SINCE] = t
    elif t - st[s, S_SUSPECT_SINCE] > params[P_MAX_FLAG_MS]:
        # a change suspected this long is the new level. Counted from when the CUSUM
        # left rest, not from the flag nor the suspicion: a residual hovering near the
        # thresholds flags and is suspected on and off for weeks, the baseline frozen all
        # along (a radio link whose first days were faded)
        st[s, S_RB] = r
        st[s, S_PU] = median
        up = 0.0
        down = 0.0
        big = False
        st[s, S_SUSPECT_SINCE] = -1.0
    # a departure a fifth of the same sensors elsewhere share is the region's weather
    # (a rain's runoff clouding the bay's waters), not this sensor drifting
    if (up > h or down > h) and big and not _shared(s, t, up > down, params, st, grp_ptr,
                                                     grp_mem, group, warm_ms):
        if st[s, S_FLAG_SINCE] < 0.0:
            st[s, S_FLAG_SINCE] = t
    else:
        st[s, S_FLAG_SINCE] = -1.0
        if abs(dz) < k:  # back at the baseline: whatever it was is over
            up = min(up, 0.5 * h)
            down = min(down, 0.5 * h)
    st[s, S_CUS_UP] = up
    st[s, S_CUS_DOWN] = down


@njit(**JIT)
def _hourly_pair(s, t, x, cfg, params, st):
    """Once per paired series and hour: the follower's logarithm (soil EC) against the
    leader's (the soil moisture of the same probe), by a regression learned online, fed to
    a one-sided CUSUM in units of its learned spread. The world moves both together (water
    carries the salts), a drifting sensor moves alone; the sign says which one moved: the
    follower's row counts a rise of the residual, the leader's a fall. The relation and
    spread freeze while a change is suspected."""
    m = int(cfg[s, C_PARTNER])
    if st[m, S_N] == 0.0 or t - st[m, S_T_LAST] > RECENT_MS:
        return
    sign = cfg[s, C_PAIR_SIGN]
    if sign > 0.0:
        u = math.log(max(st[m, S_X_PREV], cfg[m, C_RES]))
        v = math.log(max(x, cfg[s, C_RES]))
    else:
        u = math.log(max(x, cfg[s, C_RES]))
        v = math.log(max(st[m, S_X_PREV], cfg[m, C_RES]))
    hours = st[s, S_HOURS] + 1.0
    st[s, S_HOURS] = hours
    du = u - st[s, S_PU]
    dv = v - st[s, S_PV]
    puu = st[s, S_PUU]
    # the slope, shrunk toward a prior one where the leader has hardly varied (a
    # greenhouse's soil stays within a few points of water content)
    prior = params[P_PAIR_PRIOR]
    b = (st[s, S_PUV] + prior * params[P_PAIR_SLOPE]) / (puu + prior)
    q = sign * (dv - b * du)  # the residual against the relation learned so far
    h = params[P_DRIFT_H]
    k = params[P_DRIFT_K]
    lz = params[P_LEVEL_Z]
    learning = hours * HOUR_MS <= params[P_LEVEL_WARM_MS]
    sd = max(math.sqrt(st[s, S_RVAR]), params[P_DEV_FLOOR])
    dz = q / sd
    up = 0.0
    if not learning:
        up = min(max(0.0, st[s, S_CUS_UP] + min(max(dz, -lz), lz) - k), 2.0 * h)
    if learning or up <= 0.5 * h:
        a = max(cfg[s, C_A_VAR], 1.0 / hours)
        st[s, S_PU] += a * du
        st[s, S_PV] += a * dv
        st[s, S_PUU] = (1.0 - a) * (puu + a * du * du)
        st[s, S_PUV] = (1.0 - a) * (st[s, S_PUV] + a * du * dv)
        if hours > 2.0:
            cap = lz * sd
            a_q = max(cfg[s, C_A_VAR], 1.0 / (hours - 2.0))
            st[s, S_RVAR] += a_q * (min(q * q, cap * cap) - st[s, S_RVAR])
    if learning:
        return
    if up > h and q > params[P_PAIR_SPAN]:
        if st[s, S_FLAG_SINCE] < 0.0:
            st[s, S_FLAG_SINCE] = t
        elif t - st[s, S_FLAG_SINCE] > params[P_MAX_FLAG_MS]:
            # a change lasting this long is the new relation
            st[s, S_PU] = u
            st[s, S_PV] = v
            up = 0.0
            st[s, S_FLAG_SINCE] = -1.0
    else:
        st[s, S_FLAG_SINCE] = -1.0
        if dz < k:
            up = min(up, 0.5 * h)
    st[s, S_CUS_UP] = up


@njit(**JIT)
def score_batch(series, times, values, cfg, params, st, prof, gst, site_ptr, site_mem,
                grp_ptr, grp_mem, scratch, out_score, out_comp, out_cat):
    """Score readings in arrival order; see the module docstring. Readings at or before
    their series' last scored time are left unscored (score 0, component none)."""
    warm_n = params[P_WARM_N]
    gap_factor = params[P_GAP_FACTOR]
    tz_ms = np.int64(params[P_TZ_OFFSET_MS])
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
        best = 0.0
        comp = K_NONE
        if seen > 0.0:
            limit = gap_factor * cfg[s, C_INTERVAL]
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
        decay = cfg[s, C_DECAY]
        circular = cfg[s, C_CIRC] > 0.0
        warm = seen >= warm_n
        flagged = False

        # --- stuck: a run of identical values far longer than this series ever shows ----
        at_bound = x <= low + 0.5 * res or x >= high - 0.5 * res
        run_max = st[s, S_RUN_MAX]
        stuck_thr = max(params[P_STUCK_MIN_RUN], params[P_STUCK_FACTOR] * run_max)
        prev = st[s, S_X_PREV]
        if x == prev:
            run = st[s, S_RUN] + 1.0
        else:
            run = st[s, S_RUN]
            prev_bound = prev <= low + 0.5 * res or prev >= high - 0.5 * res
            if run > run_max and run < stuck_thr and not prev_bound:
                run_max = run
            if not prev_bound and not math.isnan(prev):
                st[s, S_FLAT_ALL], st[s, S_FLAT_LONG] = _count_run(
                    st[s, S_FLAT_ALL], st[s, S_FLAT_LONG], run + 1.0,
                    _run_decay(s, run + 1.0, cfg), params[P_STUCK_MIN_RUN])
            run = 0.0
            st[s, S_RUN_START] = t
        st[s, S_RUN] = run
        st[s, S_X_PREV] = x
        st[s, S_RUN_MAX] = run_max * decay
        # how often the series sits flat, the run in progress counted as if it ended now
        # (a series' first long flat is no more stuck than its later ones)
        length = run + 1.0
        flat_long = st[s, S_FLAT_LONG] + (length if length >= params[P_STUCK_MIN_RUN] else 0.0)
        often_flat = flat_long > params[P_FLAT_SHARE] * (st[s, S_FLAT_ALL] + length)
        if (warm and not at_bound and not often_flat and run >= stuck_thr
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
            if circular:
                d = _wrap(d)
            ad = abs(d)
            scale = max(st[s, S_SCALE], res)
            spike_thr = max(params[P_SPIKE_Z] * scale, params[P_SPIKE_SPAN] * cfg[s, C_SPAN],
                            params[P_JUMP_FACTOR] * st[s, S_JUMP_MAX])
            # away: past the threshold, or, during a spike, not yet back near the level it
            # left (a step that holds is a new level, not a spike that came back)
            away = warm and (ad > spike_thr or (st[s, S_SPIKE_RUN] > 0.0
                                                and ad > params[P_RETURN_FRAC] * spike_thr))
            # leave and return: the accepted step before this one went out and this one
            # comes back near where it left, both far past the series' typical step and
            # past its largest such pair lately. A single reading off on a series logged
            # hours apart: the spike floor (a fifth of the typical range, learned over
            # floods) and the largest normal step (a flood's rise) are far above it, but
            # floods rise over several readings, they do not leave and come straight back
            d_last = st[s, S_D_LAST]
            returned = False
            back_size = 0.0
            return_thr = 1.0
            if (not math.isnan(d_last) and d * d_last < 0.0 and not at_bound
                    and st[s, S_SPIKE_RUN] == 0.0):
                back_size = min(ad, abs(d_last))
                return_thr = max(params[P_RETURN_Z] * scale,
                                 params[P_RETURN_JUMP] * st[s, S_RETURN_MAX])
                returned = (warm and not away and back_size > return_thr
                            and abs(d + d_last) <= params[P_RETURN_CLOSE] * abs(d_last))
            # noise is judged on the change of the step, which a smooth ramp (sunrise, a
            # charging battery) keeps small and noise does not: its short-term mean
            # against its learned size
            d2 = abs(d - d_last) if not math.isnan(d_last) else 0.0
            scale2 = max(st[s, S_SCALE2], res)
            # the same per unit of height over the physical floor: many sensors' noise
            # grows with the reading (turbidity in a storm, wind, sunlight at noon)
            height = max(x - low, 0.05 * cfg[s, C_SPAN])
            d2r = d2 / height
            scale_rel = max(st[s, S_SCALE_REL], res / height)
            span_floor = params[P_BURST_SPAN] * cfg[s, C_SPAN]
            # a spike (its return included) or a resting sensor says nothing of the noise
            if not at_bound and not away and not returned:
                cap = max(params[P_EXCEED_K] * scale2, 2.5 * span_floor)
                st[s, S_BURST] += params[P_A_BURST] * (min(d2, cap) - st[s, S_BURST])
                st[s, S_BURST_REL] += params[P_A_BURST] * (
                    min(d2r, params[P_EXCEED_K] * scale_rel) - st[s, S_BURST_REL])
                a_slow = cfg[s, C_A_BURST_SLOW]
                st[s, S_SLOW] += a_slow * (min(d2, cap) - st[s, S_SLOW])
                st[s, S_SLOW_REL] += a_slow * (min(d2r, params[P_EXCEED_K] * scale_rel)
                                               - st[s, S_SLOW_REL])
            # a burst must stand out both ways (its noise does not follow the reading), and
            # be worth a visit: a sizeable part of the typical range (passing clouds on a
            # battery's charge are not)
            burst = min(st[s, S_BURST] / scale2, st[s, S_BURST_REL] / scale_rel)
            burst /= params[P_BURST_THR]
            # over hours, a smaller rise of the noise is already no chance
            slow = min(st[s, S_SLOW] / scale2, st[s, S_SLOW_REL] / scale_rel)
            slow /= params[P_BURST_SLOW_THR]
            # both against the series' own tail of them: where bursts are ordinary (a
            # turbidity probe in every storm) the threshold rises to what is rare here
            # while the series warms up the quantile takes larger steps: from the fixed
            # threshold at 1 % a reading it took hundreds of readings to reach the tail
            # of a series whose ordinary noise is ten times it (a flow meter flickering
            # between two counts), and alarmed all along once scoring began
            if warm:
                limit, st[s, S_BURST_TAIL] = _tail_limit(
                    st[s, S_BURST_TAIL], max(burst, slow),
                    not at_bound and not away and not returned,
                    params[P_NOISE_UP], params[P_NOISE_DOWN])
            else:
                limit, st[s, S_BURST_TAIL] = _tail_limit(
                    st[s, S_BURST_TAIL], max(burst, slow), not at_bound,
                    params[P_NOISE_UP_WARM], params[P_NOISE_DOWN_WARM])
            burst /= limit
            slow /= limit
            bursting = warm and ((burst > 1.0 and st[s, S_BURST] > span_floor)
                                 or (slow > 1.0 and st[s, S_SLOW] > span_floor))
            burst = max(burst, slow)
            if away:
                spike_run = st[s, S_SPIKE_RUN] + 1.0
                score = _ratio_score(ad / spike_thr)
                flagged = True
                if spike_run > params[P_MAX_SPIKE_RUN]:
                    # the new level held: a shift, and from now on the level. Its step
                    # does not raise the largest normal step: rain lifting humidity 40 %
                    # would hide every spike of the week after it
                    st[s, S_SPIKE_RUN] = 0.0
                    st[s, S_X_LAST] = x
                    st[s, S_D_LAST] = 0.0
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
                if returned:
                    score = _ratio_score(back_size / return_thr)
                    flagged = True
                    if score > best:
                        best = score
                        comp = K_SPIKE
                if not flagged and not bursting and not at_bound:
                    st[s, S_SCALE] += params[P_A_SCALE] * (min(ad, 5.0 * scale) - st[s, S_SCALE])
                    st[s, S_RETURN_MAX] = max(st[s, S_RETURN_MAX] * decay, back_size)
                    # the noise scale learns over time, not readings: a burst must not
                    # teach it to accept the burst before the short-term mean sees it
                    a_noise = max(cfg[s, C_A_NOISE], 1.0 / seen)
                    st[s, S_SCALE2] += a_noise * (min(d2, 5.0 * scale2) - st[s, S_SCALE2])
                    st[s, S_SCALE_REL] += a_noise * (min(d2r, 5.0 * scale_rel)
                                                     - st[s, S_SCALE_REL])
                    st[s, S_JUMP_MAX] = max(st[s, S_JUMP_MAX] * decay, ad)
            if bursting:
                score = max(best, _ratio_score(burst))
                if comp == K_SPIKE or score > best:
                    best = score
                    comp = K_NOISE
                flagged = True

        # --- level: the de-seasoned level against the same sensors elsewhere ------------
        if cfg[s, C_LEVEL] > 0.0 and not spiking:
            if t >= st[s, S_HOUR_END]:
                local_hour = (times[i] + tz_ms) // np.int64(HOUR_MS)
                st[s, S_HOUR] = float(local_hour % BINS)
                st[s, S_HOUR_END] = float((local_hour + 1) * np.int64(HOUR_MS) - tz_ms)
                _hourly_drift(s, t, float(local_hour), cfg, params, st, gst, grp_ptr,
                              grp_mem, scratch)
            hour = int(st[s, S_HOUR])
            p = prof[s, hour]
            if math.isnan(p):  # a first visit: carry the hour before forward
                p = prof[s, (hour + BINS - 1) % BINS]
                if math.isnan(p):
                    p = x
                prof[s, hour] = p
            e = _wrap(x - p) if circular else x - p
            mf = st[s, S_MF]
            if math.isnan(mf):
                mf = e
            st[s, S_MF] = mf + cfg[s, C_A_FAST] * (e - mf)
            suspect = max(st[s, S_CUS_UP], st[s, S_CUS_DOWN]) > 0.5 * params[P_DRIFT_H]
            own = cfg[s, C_GROUP] < 0.0 and cfg[s, C_PARTNER] < 0.0
            if own and warm and not flagged:
                # no other sensor to compare with: the series' own level; its profile
                # learns nothing while a change is suspected
                score = _own_level(s, t, e, cfg, params, st)
                if score > best:
                    best = score
                    comp = K_DRIFT
                if st[s, S_OWN_SINCE] >= 0.0:  # suspected
                    flagged = True
            if st[s, S_FLAG_SINCE] >= 0.0:
                score = _ratio_score(max(st[s, S_CUS_UP], st[s, S_CUS_DOWN])
                                     / params[P_DRIFT_H])
                if score > best:
                    best = score
                    comp = K_DRIFT
            elif not flagged and suspect:
                # while a change is suspected the profile learns only what the same
                # sensors elsewhere show (the group's median of their de-seasoned levels),
                # not the series' own departure: frozen for the days of a drift, it went
                # stale while the other sites' profiles followed the season, and the end
                # of the drift read as a drift the other way
                med = gst[int(cfg[s, C_GROUP]), G_MEDIAN]
                if not math.isnan(med):
                    prof[s, hour] = p + cfg[s, C_A_PROF] * (e - st[s, S_MF] + med)
            elif not flagged and t - st[s, S_DEV_T] > params[P_HOLD_MS]:
                # nor does it learn in the first hours of a sudden departure, before the
                # CUSUM suspects it: a night of hypoxia learned into the profile's night
                # hours read as a rise every night after it, for days
                prof[s, hour] = p + cfg[s, C_A_PROF] * e

        # --- pair: against the partner series of the same device (soil EC and moisture) -
        paired = False
        if cfg[s, C_PARTNER] >= 0.0 and not flagged:
            if t >= st[s, S_HOUR_END]:
                st[s, S_HOUR_END] = float((times[i] // np.int64(HOUR_MS) + 1)
                                          * np.int64(HOUR_MS))
                _hourly_pair(s, t, x, cfg, params, st)
            if st[s, S_FLAG_SINCE] >= 0.0:
                score = _ratio_score(st[s, S_CUS_UP] / params[P_DRIFT_H])
                if score > best:
                    best = score
                    comp = K_DRIFT
                    paired = True

        if comp != K_NONE:
            category = CAT_FAULT
            # a level change or a step that other sensors of the site share is the world
            # changing (numba compiles `a == b or a == c`, not a tuple membership test); a
            # pair parting is a sensor by construction: the world moves both
            if (comp == K_SHIFT or (comp == K_DRIFT and not paired)) and _corroborated(
                    s, t, cfg, st, site_ptr, site_mem, params[P_CORR_WINDOW_MS]):
                category = CAT_EVENT
                if comp == K_DRIFT:
                    comp = K_LEVEL
            # spike, shift and noise are the components of a step (_layout: one after the
            # other)
            if best >= 0.5 and K_SPIKE <= comp <= K_NOISE:
                best = _refractory(s, t, best, comp, cfg, params, st)
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


@njit(**JIT_INLINED)
def windowed_high(rs, k, t, x, window_ms):
    """The largest reading of rule instance ``k`` over the last ``window_ms``, ``x`` at
    ``t`` included (``detector_twins.WindowedHigh``): the window is ``HIGH_SLOTS``
    sub-windows aligned to multiples of their length, the current one and the
    ``HIGH_SLOTS - 1`` before it, each keeping its largest reading (so the window reaches
    back between ``window_ms`` less one sub-window and ``window_ms``). Only a reading that
    crosses into a new sub-window scans them; one inside the current sub-window costs two
    comparisons (the rule kernel runs per reading). A reading stamped before the current
    sub-window (a logger's clock stepped back) counts in it."""
    if t < rs[k, RS_HIGH_END]:
        j = RS_HIGH_0 + int(rs[k, RS_HIGH_SLOT]) % HIGH_SLOTS
        if x > rs[k, j]:
            rs[k, j] = x
        older = rs[k, RS_HIGH_OLDER]
        return older if older > rs[k, j] else rs[k, j]
    slot_ms = window_ms / HIGH_SLOTS
    last = rs[k, RS_HIGH_SLOT]
    now = max(math.floor(t / slot_ms), last + 1.0)  # past the end: a later one at least
    # the sub-windows passed over (every one after a long silence) hold nothing now
    passed = int(min(now - last, float(HIGH_SLOTS)))
    for m in range(1, passed):
        rs[k, RS_HIGH_0 + int(now - m) % HIGH_SLOTS] = -np.inf
    j = RS_HIGH_0 + int(now) % HIGH_SLOTS
    rs[k, j] = x
    rs[k, RS_HIGH_SLOT] = now
    rs[k, RS_HIGH_END] = (now + 1.0) * slot_ms
    older = -np.inf
    for m in range(HIGH_SLOTS):
        c = RS_HIGH_0 + m
        if c != j and rs[k, c] > older:
            older = rs[k, c]
    rs[k, RS_HIGH_OLDER] = older
    return older if older > x else x


@njit(**JIT)
def _gate_holds(rp, rs, k):
    """A rule that `requires` another condition at the site opens only while that one is
    met (``RP_GATE``: its instance, or -1 for none)."""
    g = int(rp[k, RP_GATE])
    return g < 0 or rs[g, RS_COND_SINCE] >= 0.0 or rs[g, RS_ACTIVE] > 0.0


@njit(**JIT)
def _explained(rp, rs, k, t):
    """Does the condition a rule names in `unless` (``RP_UNLESS``) hold at the site now
    (or did it lately: within its own clear time of the last reading that kept it)? A
    condition whose series has gone quiet, or whose readings the detector calls broken
    (a drifting rain gauge), explains nothing once that time is past."""
    u = int(rp[k, RP_UNLESS])
    if u < 0:
        return False
    if rs[u, RS_ACTIVE] > 0.0:
        return t - rs[u, RS_UPDATED] <= rp[u, RP_CLEAR_MS]
    return rs[u, RS_COND_SINCE] >= 0.0


@njit(**JIT)
def apply_rules(series, times, values, out_score, out_comp, out_cat, broken_in, confidence,
                rule_ptr, rule_inst, rp, rs, t_inst, t_action, t_time, t_value):
    """Advance every rule instance bound to each reading's series; returns how many
    transitions there were (those past the arrays' length are counted, not written).

    A fault rule counts only the components in its mask. A spike counts once the value
    has come back (a reading that is neither a spike nor a shift): a step that holds is
    the world changing (rain on a humidity sensor), not a broken sensor. A no-data rule
    that finds, when a reading arrives, that the silence before it was too long opens
    and closes at once: the gap was real even if no clock tick caught it. A forecast rule
    judges ``confidence`` (the forecaster's, per reading; NaN where it made none)."""
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
        # values the detector calls broken sensor output say nothing about the world,
        # a sensor drifting on its own included (a drifting thermometer is no frost)
        # (``broken_in``: the engine's judgement per reading, see Engine.process)
        broken = broken_in[i]
        for j in range(lo, hi):
            k = rule_inst[j]
            cond = rp[k, RP_COND]
            if cond == R_NO_DATA:
                seen = rs[k, RS_SEEN]
                if rs[k, RS_ACTIVE] > 0.0:  # any reading ends the silence
                    rs[k, RS_ACTIVE] = 0.0
                    rs[k, RS_COND_SINCE] = -1.0
                    n = _emit(n, k, A_CLOSE, t, x, t_inst, t_action, t_time, t_value)
                elif (seen > NEVER and t > seen
                      and t - seen > rp[k, RP_THRESHOLD] * rp[k, RP_INTERVAL]):
                    opened = seen + rp[k, RP_INTERVAL]
                    rs[k, RS_OPENED] = opened
                    rs[k, RS_UPDATED] = t
                    rs[k, RS_VALUE] = np.nan
                    rs[k, RS_PEAK] = np.nan
                    rs[k, RS_FIRST_COMPONENT] = K_GAP
                    n = _emit(n, k, A_OPEN, opened, np.nan, t_inst, t_action, t_time,
                              t_value)
                    n = _emit(n, k, A_CLOSE, t, x, t_inst, t_action, t_time, t_value)
                if t > seen:
                    rs[k, RS_SEEN] = t
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
                    if comp == K_SPIKE:  # still away, if less: not decided yet
                        continue
                    pending = rs[k, RS_PENDING]
                    rs[k, RS_PENDING] = np.nan
                    if comp != K_SHIFT:  # it came back: that was a spike
                        n = _advance(k, True, False, pending, x, K_SPIKE, rp, rs, n, t_inst,
                                     t_action, t_time, t_value)
                n = _advance(k, fault, not fault, t, x, comp, rp, rs, n, t_inst, t_action,
                             t_time, t_value)
                continue
            if cond == R_ABOVE and math.isfinite(x):
                # the running total of the readings (the rain fallen), for a no_rise
                # rule's `unless`; a reading the detector calls broken counts here (the
                # first tips of a shower look like a spike), it only caps what rain can
                # explain
                total = rs[k, RS_BASE]
                rs[k, RS_BASE] = (0.0 if math.isnan(total) else total) + max(x, 0.0)
            if cond == R_FORECAST:
                p = confidence[i]
                if math.isfinite(p):
                    n = _advance(k, p >= rp[k, RP_THRESHOLD], p <= rp[k, RP_CLEAR], t, p,
                                 comp, rp, rs, n, t_inst, t_action, t_time, t_value)
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
                window = rp[k, RP_HIGH_WINDOW]
                if window > 0.0:
                    # the largest reading of the window: a slow deepening does not pull it
                    # down as it does a relaxing high. Held (up at once, never down) while
                    # the condition holds, as the relaxing high is, but for two windows
                    # after it opened at most: a storm's gale can come 15 h after the
                    # pressure began to fall (seed 11, oc-071), and a high held with no end
                    # outlived the window by a week when a reading of a sensor's noise
                    # burst the detector let through set it (seed 11, oc-060: 1027.7 hPa;
                    # a windy day a week later became a storm)
                    high = windowed_high(rs, k, t, x, window)
                    since = rs[k, RS_COND_SINCE]
                    if since >= 0.0 and t - since <= 2.0 * window:
                        if x > base:
                            base = x
                    else:
                        base = high
                elif rp[k, RP_FROM_HIGH] > 0.0 and x > base:
                    base = x  # a running high: up at once, down slowly
                hit = base - x >= rp[k, RP_THRESHOLD]
                cleared = base - x <= rp[k, RP_CLEAR]
                if window <= 0.0 and not active and not hit and rs[k, RS_COND_SINCE] < 0.0:
                    base += rp[k, RP_TAU] * (x - base)
                rs[k, RS_BASE] = base
            else:  # R_NO_RISE
                u = int(rp[k, RP_UNLESS])
                fallen = 0.0  # the unless series' total (rain fallen) so far
                if u >= 0 and not math.isnan(rs[u, RS_BASE]):
                    fallen = rs[u, RS_BASE]
                lowest = rs[k, RS_LOWEST]
                raining = _explained(rp, rs, k, t)
                if math.isnan(lowest) or x < lowest:
                    lowest = x
                    if not raining:  # the rain that may explain a rise counts from here
                        rs[k, RS_BASE] = fallen
                rose = x - lowest >= rp[k, RP_CLEAR]
                if rose and raining:
                    # rain wetted the soil: no watering, and no end of a failure; unless
                    # the rise is more than the rain fallen since the lowest could give
                    # (a watering in drizzle)
                    since = fallen - rs[k, RS_BASE] if not math.isnan(rs[k, RS_BASE]) else 0.0
                    if rp[k, RP_WETS] <= 0.0 or x - lowest <= rp[k, RP_WETS] * since:
                        rose = False
                        lowest = x
                        rs[k, RS_BASE] = fallen
                if rose:
                    last = rs[k, RS_LAST_RISE]
                    if t - last > RISE_MERGE_MS:
                        if rs[k, RS_RISES] >= 1.0 and not active:
                            rs[k, RS_GAP_MAX] = max(rs[k, RS_GAP_MAX], t - last)
                        rs[k, RS_RISES] += 1.0
                    rs[k, RS_LAST_RISE] = t
                    lowest = x
                    rs[k, RS_BASE] = fallen
                rs[k, RS_LOWEST] = lowest
                every = rp[k, RP_EVERY]
                if every > 0.0:
                    # a declared schedule: judged from the first reading on, no waterings
                    # need be seen first
                    if rs[k, RS_LAST_RISE] == NEVER:
                        rs[k, RS_LAST_RISE] = t
                    hit = not rose and t - rs[k, RS_LAST_RISE] > rp[k, RP_THRESHOLD] * every
                else:
                    hit = (not rose and rs[k, RS_RISES] >= 3.0
                           and t - rs[k, RS_LAST_RISE]
                           > rp[k, RP_THRESHOLD] * rs[k, RS_GAP_MAX])
                cleared = rose
            if hit and not active and not _gate_holds(rp, rs, k):
                hit = False
                cleared = True
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
