"""Plain NumPy/Python twins of the detector's kernels: slow, obvious, one object per series.

Written from the same specification as ``_kernels`` but in another shape (a small class
per series with named fields instead of matrix columns, the group median by
``np.median``), so a test comparing the two catches a slip in either. Not used in
production; the tests run both over random, constant, NaN, inf and gap-containing input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tidefield.protocol.units import HOUR_MS

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
    HIGH_SLOTS,
    K_DRIFT,
    K_GAP,
    K_LEVEL,
    K_NOISE,
    K_RANGE,
    K_SHIFT,
    K_SPIKE,
    K_STUCK,
    PARAM_COLUMNS,
)

RECENT_MS = 2.0 * HOUR_MS


@dataclass
class _Series:
    n: int = 0
    t_first: float = 0.0
    t_last: float = 0.0
    x_last: float = math.nan
    x_prev: float = math.nan
    d_last: float = math.nan
    run: int = 0
    run_start: float = 0.0
    run_max: float = 0.0
    scale: float = 0.0
    scale2: float = 0.0
    scale_rel: float = 0.0
    burst_rel: float = 0.0
    slow: float = 0.0
    slow_rel: float = 0.0
    pu: float = 0.0
    pv: float = 0.0
    puu: float = 0.0
    puv: float = 0.0
    jump_max: float = 0.0
    burst: float = 0.0
    spike_run: int = 0
    mf: float = math.nan
    rb: float = math.nan
    rvar: float = 0.0
    up: float = 0.0
    down: float = 0.0
    hours: int = 0
    hour_end: float = 0.0
    hour: int = 0
    dev_t: float = -1e18
    episode_t: float = -1e18  # the last step alarm due (the refractory time)
    alarm_t: float = -1e18  # the last one raised
    episode_comp: int = 0  # the component of that episode
    own_flag: bool = False  # the own-level flag is raised
    flag_since: float = -1.0
    suspect_since: float = -1.0
    flat_all: float = 0.0  # readings of ended runs (off a bound), decayed
    flat_long: float = 0.0  # of those, in runs stuck_min_run long
    burst_tail: float = 0.0  # the learned quantile of the burst statistic / threshold
    own_n: int = 0  # the own-level check (a series with no cross-site group)
    own_base: float = 0.0
    own_var: float = 0.0
    own_up: float = 0.0
    own_down: float = 0.0
    own_since: float = -1.0
    own_tail: float = 0.0  # the learned quantile of the larger own CUSUM / own_h
    return_max: float = 0.0  # the largest normal leave-and-return lately, decayed
    profile: list[float] = field(default_factory=lambda: [math.nan] * BINS)


def _ratio(r: float) -> float:
    return r / (1.0 + r) if r > 0.0 else 0.0


def _wrap(d: float) -> float:
    return (d + 180.0) % 360.0 - 180.0


def _hourly(me, s, t, local_hour, c, p, state, groups, group_of):
    """The drift CUSUM's hourly step (see ``_kernels._hourly_drift``)."""
    g = int(group_of[s])
    if g < 0:
        return
    if groups.get(g, (None,))[0] != local_hour:
        levels = [state[m].mf for m in np.flatnonzero(group_of == g)
                  if state[m].n > 0 and t - state[m].t_last <= RECENT_MS
                  and state[m].t_last - state[m].t_first >= p["level_warm_ms"]
                  and state[m].flag_since < 0]
        groups[g] = (local_hour, float(np.median(levels)) if len(levels) >= 3 else math.nan,
                     len(levels))
    _, median, count = groups[g]
    if count < 3:
        return
    r = me.mf - median
    me.hours += 1
    if math.isnan(me.rb):
        me.rb, me.pu = r, median
    elif math.isnan(me.pu):  # a checkpoint from before the gain (Detector.upgrade_state)
        me.pu = median
    span = c[C_SPAN]
    # regression of the residual on the group's median: rb and pu the means, puu the
    # median's variance, puv the covariance; the gain shrunk by a prior variance
    du = median - me.pu
    gain = 0.0 if c[C_CIRC] > 0 else me.puv / (me.puu + p["gain_prior"] * span ** 2)
    dev = r - me.rb - gain * du
    learning = me.hours * HOUR_MS <= p["level_warm_ms"]
    sd = max(math.sqrt(me.rvar), c[C_RES], p["dev_floor"] * span)
    dz = dev / sd
    k, h = p["drift_k"], p["drift_h"]
    up = down = 0.0
    if not learning:
        step = min(max(dz, -p["level_z"]), p["level_z"])
        up = min(max(0.0, me.up + step - k), 2.0 * h)
        down = min(max(0.0, me.down - step - k), 2.0 * h)
    if learning or not (up > 0.5 * h or down > 0.5 * h):
        if learning:
            a, a_var = max(c[C_A_SLOW], 1.0 / me.hours), max(c[C_A_VAR], 1.0 / me.hours)
            clipped = dev
        else:
            a, a_var = c[C_A_SLOW], c[C_A_VAR]
            cap = p["level_z"] * sd
            clipped = min(max(dev, -cap), cap)
        dv = gain * du + clipped
        me.rb += a * dv
        me.pu += a * du
        me.puu = (1.0 - a_var) * (me.puu + a_var * du * du)
        me.puv = (1.0 - a_var) * (me.puv + a_var * du * dv)
        me.rvar += a_var * (clipped * clipped - me.rvar)
    if learning:
        return
    if abs(dz) > p["corr_z"]:
        me.dev_t = t
    big = abs(dev) > p["drift_span"] * span
    if max(up, down) < 0.25 * h:
        me.suspect_since = -1.0
    elif me.suspect_since < 0:
        me.suspect_since = t
    elif t - me.suspect_since > p["max_flag_ms"]:  # suspected this long: the new level
        me.rb, me.pu, up, down, big, me.suspect_since = r, median, 0.0, 0.0, False, -1.0
    if max(up, down) > h and big and not _shared(me, s, t, up > down, p, state, group_of):
        if me.flag_since < 0:
            me.flag_since = t
    else:
        me.flag_since = -1.0
        if abs(dz) < k:
            up, down = min(up, 0.5 * h), min(down, 0.5 * h)
    me.up, me.down = up, down


def _tail(level: float, ratio: float, learn: bool, p, warming: bool = False
          ) -> tuple[float, float]:
    """(limit, next level) of a learned tail quantile (see ``_kernels._tail_limit``); its
    steps are larger while the series warms up."""
    level = 1.0 if level == 0.0 else level
    limit = max(level, 1.0)
    up, down = ("noise_up_warm", "noise_down_warm") if warming else ("noise_up", "noise_down")
    if learn:
        level = max(level * (p[up] if ratio > level else p[down]), math.exp(-2.0))
    return limit, level


def _refractory(me, t, score, comp, c, p) -> float:
    """One alarm an episode (see ``_kernels._refractory``)."""
    since_last = t - me.episode_t if me.episode_comp == comp else math.inf
    me.episode_t, me.episode_comp = t, comp
    going_on = t - me.alarm_t <= 3.0 * c[C_INTERVAL]
    if not going_on and since_last <= p["refractory_ms"] and score < 1.0:
        score = _ratio(score / (1.0 - score) / p["refractory_factor"])
    if score >= 0.5:
        me.alarm_t = t
    return score


def _own_level(me, t, e, c, p):
    """The own-level check of a series with no cross-site group (see
    ``_kernels._own_level``); returns the score of a flagged change or 0."""
    me.own_n += 1
    if me.own_n == 1:
        me.own_base = e
        return 0.0
    dev = e - me.own_base
    sd = max(math.sqrt(me.own_var), c[C_RES], me.scale)
    lz, k, h = p["level_z"], p["drift_k"], p["own_h"]
    learning = me.own_n <= p["warm_n"]
    up = down = 0.0
    if not learning:
        limit, me.own_tail = _tail(me.own_tail, max(me.own_up, me.own_down) / h, True, p)
        h *= limit
        z = min(max(dev / sd, -lz), lz)
        up = min(max(0.0, me.own_up + z - k), 2.0 * h)
        down = min(max(0.0, me.own_down - z - k), 2.0 * h)
    if learning or max(up, down) <= 0.5 * h:
        a = max(1.0 / me.own_n, 1.0 / p["own_memory"])
        clipped = dev if learning else min(max(dev, -lz * sd), lz * sd)
        me.own_base += a * clipped
        me.own_var += a * (clipped * clipped - me.own_var)
        me.own_since = -1.0
    elif me.own_since < 0:
        me.own_since = me.own_n
    elif me.own_n - me.own_since > p["own_memory"]:  # suspected this long: the new level
        me.own_base, up, down, me.own_since = e, 0.0, 0.0, -1.0
    me.own_up, me.own_down = up, down
    if not learning and abs(dev) > p["corr_z"] * sd:
        me.dev_t = t  # far off its own level: corroborates the site's other series
    # raised, the flag stays up while the change is suspected
    me.own_flag = (me.own_flag and me.own_since >= 0) or (
        max(up, down) > h and abs(dev) > p["own_span"] * c[C_SPAN])
    return _ratio(max(max(up, down) / h, 1.0)) if me.own_flag else 0.0


def _shared(me, s, t, rising, p, state, group_of):
    """Enough of the same sensors elsewhere left their levels the same way as ``me``,
    from shared_hours before it left its own on (see ``_kernels._shared``)?"""
    since = min(me.suspect_since, t) - p["shared_ms"]
    heard = [state[m] for m in np.flatnonzero(group_of == group_of[s])
             if m != s and state[m].n > 0 and t - state[m].t_last <= RECENT_MS
             and state[m].t_last - state[m].t_first >= p["level_warm_ms"]]
    others = sum(m.suspect_since >= since and (m.up > m.down) == rising for m in heard)
    return others >= max(3.0, p["shared_frac"] * len(heard))


def _hourly_pair(me, t, x, c, p, partner):
    """The pair check's hourly step (see ``_kernels._hourly_pair``)."""
    if partner.n == 0 or t - partner.t_last > RECENT_MS:
        return
    own = math.log(max(x, c["own_res"]))
    other = math.log(max(partner.x_prev, c["partner_res"]))
    sign = c["sign"]
    u, v = (other, own) if sign > 0 else (own, other)
    me.hours += 1
    du, dv = u - me.pu, v - me.pv
    b = (me.puv + p["pair_prior"] * p["pair_slope"]) / (me.puu + p["pair_prior"])
    q = sign * (dv - b * du)
    h, k, lz = p["drift_h"], p["drift_k"], p["level_z"]
    learning = me.hours * HOUR_MS <= p["level_warm_ms"]
    sd = max(math.sqrt(me.rvar), p["dev_floor"])
    dz = q / sd
    up = 0.0 if learning else min(max(0.0, me.up + min(max(dz, -lz), lz) - k), 2.0 * h)
    if learning or up <= 0.5 * h:
        a = max(c["a_var"], 1.0 / me.hours)
        me.pu += a * du
        me.pv += a * dv
        me.puu, me.puv = (1.0 - a) * (me.puu + a * du * du), (1.0 - a) * (me.puv + a * du * dv)
        if me.hours > 2:
            a_q = max(c["a_var"], 1.0 / (me.hours - 2))
            cap = lz * sd
            me.rvar += a_q * (min(q * q, cap * cap) - me.rvar)
    if learning:
        return
    if up > h and q > p["pair_span"]:
        if me.flag_since < 0:
            me.flag_since = t
        elif t - me.flag_since > p["max_flag_ms"]:
            me.pu, me.pv, up, me.flag_since = u, v, 0.0, -1.0
    else:
        me.flag_since = -1.0
        if dz < k:
            up = min(up, 0.5 * h)
    me.up = up


def score_batch(series, times, values, cfg, params):
    """Score a batch from a fresh state; returns (score, component, category) arrays."""
    p = dict(zip(PARAM_COLUMNS, params.tolist(), strict=True))
    n_series = cfg.shape[0]
    state = [_Series() for _ in range(n_series)]
    groups: dict[int, tuple[float, float, int]] = {}  # group -> (hour, median, count)
    site_of = cfg[:, C_SITE].astype(int)
    group_of = cfg[:, C_GROUP].astype(int)
    out = (np.zeros(len(series), np.float32), np.zeros(len(series), np.int8),
           np.zeros(len(series), np.int8))
    for i, (s, t_int, x) in enumerate(zip(series.tolist(), times.tolist(), values.tolist(),
                                          strict=True)):
        me, c, t = state[s], cfg[s], float(t_int)
        if me.n > 0 and t <= me.t_last:
            continue
        best, comp = 0.0, 0
        if me.n > 0 and t - me.t_last > p["gap_factor"] * c[C_INTERVAL]:
            best, comp = _ratio((t - me.t_last) / (p["gap_factor"] * c[C_INTERVAL])), K_GAP
        if me.n == 0:
            me.t_first = t
        seen = me.n
        me.t_last, me.n = t, me.n + 1
        low, high, res, span = c[C_LOW], c[C_HIGH], c[C_RES], c[C_SPAN]
        if not (low <= x <= high):
            out[0][i], out[1][i], out[2][i] = 1.0, K_RANGE, CAT_FAULT
            continue
        warm = seen >= p["warm_n"]
        flagged = False

        def bound(v, low=low, high=high, res=res):
            return v <= low + 0.5 * res or v >= high - 0.5 * res

        stuck_thr = max(p["stuck_min_run"], p["stuck_factor"] * me.run_max)
        if x == me.x_prev:
            me.run += 1
        else:
            if me.run > me.run_max and me.run < stuck_thr and not bound(me.x_prev):
                me.run_max = float(me.run)
            if not math.isnan(me.x_prev) and not bound(me.x_prev):
                length = me.run + 1
                keep = c[C_DECAY] ** length
                me.flat_all = me.flat_all * keep + length
                me.flat_long = me.flat_long * keep + (
                    length if length >= p["stuck_min_run"] else 0.0)
            me.run, me.run_start = 0, t
        me.x_prev = x
        me.run_max *= c[C_DECAY]
        length = me.run + 1  # the run in progress, counted as if it ended now
        flat_long = me.flat_long + (length if length >= p["stuck_min_run"] else 0.0)
        often_flat = flat_long > p["flat_share"] * (me.flat_all + length)
        if (warm and not bound(x) and not often_flat and me.run >= stuck_thr
                and t - me.run_start >= p["stuck_min_ms"]):
            score = _ratio(me.run / stuck_thr)
            if score > best:
                best, comp = score, K_STUCK
            flagged = True

        spiking = False
        if math.isnan(me.x_last):
            me.x_last = x
        else:
            d = x - me.x_last
            if c[C_CIRC] > 0:
                d = _wrap(d)
            scale = max(me.scale, res)
            spike_thr = max(p["spike_z"] * scale, p["spike_span"] * span,
                            p["jump_factor"] * me.jump_max)
            away = warm and (abs(d) > spike_thr or (me.spike_run > 0 and abs(d)
                                                    > p["return_frac"] * spike_thr))
            # leave and return: the accepted step before went out, this one comes back
            returned = False
            back_size = 0.0
            return_thr = 1.0
            if (not math.isnan(me.d_last) and d * me.d_last < 0.0 and not bound(x)
                    and me.spike_run == 0):
                back_size = min(abs(d), abs(me.d_last))
                return_thr = max(p["return_z"] * scale, p["return_jump"] * me.return_max)
                returned = (warm and not away and back_size > return_thr
                            and abs(d + me.d_last) <= p["return_close"] * abs(me.d_last))
            d2 = abs(d - me.d_last) if not math.isnan(me.d_last) else 0.0
            scale2 = max(me.scale2, res)
            height = max(x - low, 0.05 * span)
            scale_rel = max(me.scale_rel, res / height)
            if not bound(x) and not away and not returned:
                cap = max(p["exceed_k"] * scale2, 2.5 * p["burst_span"] * span)
                me.burst += p["a_burst"] * (min(d2, cap) - me.burst)
                me.burst_rel += p["a_burst"] * (min(d2 / height, p["exceed_k"] * scale_rel)
                                                - me.burst_rel)
                me.slow += c[C_A_BURST_SLOW] * (min(d2, cap) - me.slow)
                me.slow_rel += c[C_A_BURST_SLOW] * (
                    min(d2 / height, p["exceed_k"] * scale_rel) - me.slow_rel)
            burst = min(me.burst / scale2, me.burst_rel / scale_rel) / p["burst_thr"]
            slow = min(me.slow / scale2, me.slow_rel / scale_rel) / p["burst_slow_thr"]
            # the series' own noise tail: a quantile of log(max(burst, slow)) tracked by
            # Robbins-Monro steps, the limit taken before this reading's step
            limit, me.burst_tail = _tail(me.burst_tail, max(burst, slow),
                                      not bound(x) and not away and not returned, p,
                                      warming=not warm)
            burst, slow = burst / limit, slow / limit
            bursting = warm and ((burst > 1.0 and me.burst > p["burst_span"] * span)
                                 or (slow > 1.0 and me.slow > p["burst_span"] * span))
            burst = max(burst, slow)
            if away:
                score = _ratio(abs(d) / spike_thr)
                flagged = True
                if me.spike_run + 1 > p["max_spike_run"]:
                    me.spike_run, me.x_last, me.d_last = 0, x, 0.0
                    me.dev_t = t
                    if score > best:
                        best, comp = score, K_SHIFT
                else:
                    me.spike_run += 1
                    spiking = True
                    if score > best:
                        best, comp = score, K_SPIKE
            else:
                me.spike_run, me.x_last, me.d_last = 0, x, d
                if returned:
                    score = _ratio(back_size / return_thr)
                    flagged = True
                    if score > best:
                        best, comp = score, K_SPIKE
                if not flagged and not bursting and not bound(x):
                    me.scale += p["a_scale"] * (min(abs(d), 5.0 * scale) - me.scale)
                    me.return_max = max(me.return_max * c[C_DECAY], back_size)
                    a_noise = max(c[C_A_NOISE], 1.0 / seen)
                    me.scale2 += a_noise * (min(d2, 5.0 * scale2) - me.scale2)
                    me.scale_rel += a_noise * (min(d2 / height, 5.0 * scale_rel) - me.scale_rel)
                    me.jump_max = max(me.jump_max * c[C_DECAY], abs(d))
            if bursting:
                score = max(best, _ratio(burst))
                if comp == K_SPIKE or score > best:
                    best, comp = score, K_NOISE
                flagged = True

        if c[C_LEVEL] > 0 and not spiking:
            if t >= me.hour_end:
                local_hour = (t_int + int(p["tz_offset_ms"])) // HOUR_MS
                me.hour = local_hour % BINS
                me.hour_end = float((local_hour + 1) * HOUR_MS - int(p["tz_offset_ms"]))
                _hourly(me, s, t, float(local_hour), c, p, state, groups, group_of)
            hour = me.hour
            if math.isnan(me.profile[hour]):
                before = me.profile[(hour - 1) % BINS]
                me.profile[hour] = x if math.isnan(before) else before
            base = me.profile[hour]
            e = _wrap(x - base) if c[C_CIRC] > 0 else x - base
            if math.isnan(me.mf):
                me.mf = e
            me.mf += c[C_A_FAST] * (e - me.mf)
            if group_of[s] < 0 and c[C_PARTNER] < 0 and warm and not flagged:
                own = _own_level(me, t, e, c, p)
                if own > best:
                    best, comp = own, K_DRIFT
                flagged = flagged or me.own_since >= 0  # suspected
            if me.flag_since >= 0:
                if _ratio(max(me.up, me.down) / p["drift_h"]) > best:
                    best, comp = _ratio(max(me.up, me.down) / p["drift_h"]), K_DRIFT
            elif not flagged and max(me.up, me.down) > 0.5 * p["drift_h"]:
                # suspected: learn what the group's median shows, not the own departure
                median = groups[int(group_of[s])][1]
                if not math.isnan(median):
                    me.profile[hour] = base + c[C_A_PROF] * (e - me.mf + median)
            elif not flagged and t - me.dev_t > p["hold_ms"]:
                me.profile[hour] = base + c[C_A_PROF] * e

        paired = False
        m = int(c[C_PARTNER])
        if m >= 0 and not flagged:
            if t >= me.hour_end:
                me.hour_end = float((t_int // HOUR_MS + 1) * HOUR_MS)
                pair = {"own_res": res, "partner_res": cfg[m, C_RES], "sign": c[C_PAIR_SIGN],
                        "a_var": c[C_A_VAR]}
                _hourly_pair(me, t, x, pair, p, state[m])
            if me.flag_since >= 0 and _ratio(me.up / p["drift_h"]) > best:
                best, comp, paired = _ratio(me.up / p["drift_h"]), K_DRIFT, True

        if comp:
            category = CAT_FAULT
            if comp == K_SHIFT or (comp == K_DRIFT and not paired):
                neighbours = [m for m in np.flatnonzero(site_of == site_of[s]) if m != s]
                if any(state[m].dev_t >= t - p["corr_window_ms"] for m in neighbours):
                    category = CAT_EVENT
                    comp = K_LEVEL if comp == K_DRIFT else comp
            if best >= 0.5 and comp in (K_SPIKE, K_SHIFT, K_NOISE):
                best = _refractory(me, t, best, comp, c, p)
            out[0][i], out[1][i], out[2][i] = best, comp, category
    return out


@dataclass
class WindowedHigh:
    """Twin of ``_kernels.windowed_high``: the largest reading over the last ``window_ms``
    (``HIGH_SLOTS`` sub-windows aligned to multiples of their length, the current one and
    those before it), kept as a mapping from a sub-window's number to its largest reading
    and taken afresh over the mapping at every reading."""

    window_ms: float
    maxima: dict[float, float] = field(default_factory=dict)
    slot: float | None = None  # the current sub-window's number

    def update(self, t: float, x: float) -> float:
        slot_ms = self.window_ms / HIGH_SLOTS
        if self.slot is not None and t < (self.slot + 1.0) * slot_ms:
            # the current sub-window (a reading stamped before it, too)
            self.maxima[self.slot] = max(self.maxima[self.slot], x)
        else:
            now = float(math.floor(t / slot_ms))
            if self.slot is not None:
                now = max(now, self.slot + 1.0)
            self.slot = now
            self.maxima = {n: v for n, v in self.maxima.items() if n > now - HIGH_SLOTS}
            self.maxima[now] = x
        return max(self.maxima.values())
