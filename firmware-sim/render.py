"""From clean physics to what a sensor reports, and from per-series blocks to time order.

Per sample, in this order (each step a pure function of the sample's identity):

1. the clean value, ``physics.clean_block`` (injected *events* act in there, on
   latents);
2. sensor noise ``normal(at(series_key, sample_index))``, additive or relative;
3. ``settle``: clip to the catalog's physical range (wrap directions to [0, 360)) and
   quantise to the catalog resolution;
4. an injected *fault*, if one covers the sample: spike, stuck, drift, dropout (NaN, the
   reading is never sent), noise burst, out-of-range garbage, and the shapes real
   sensors fail in (``SHAPES``: biofouling, maintenance pulls, battery sag).

``render`` fills a series-major block for a window; ``gather`` interleaves those blocks
into time order (ties by series index) using the repeating frame pattern of the sample
clocks, skipping dropouts and samples outside the window.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ._jit import JIT, PURE
from .astro import local_day
from .physics import (
    S_BURST_SERIES,
    S_NOISE_SERIES,
    clean_block,
    fill_day_table,
    new_day_table,
)
from .rng import at, normal

FAULT_KINDS = ("spike", "stuck", "drift", "dropout", "noise_burst", "out_of_range")
SPIKE, STUCK, DRIFT, DROPOUT, NOISE_BURST, OUT_OF_RANGE = range(len(FAULT_KINDS))
# the shapes real sensors fail in, each labelled as the kind it looks like (LABEL_KIND):
# biofouling (a film on a turbidity, oxygen or chlorophyll optic: a drift that grows
# faster as the film thickens, ended by a cleaning visit's step back: a drift), a
# maintenance pull (the sonde out of the water, reading the air: flat, a stuck; or
# splashing in and out, jumping between the two: a noise burst), battery sag (noise that
# grows as the voltage falls: a noise burst)
SHAPES = (*FAULT_KINDS, "fouling", "pull_flat", "pull_jumping", "battery_sag")
FOULING, PULL_FLAT, PULL_JUMPING, BATTERY_SAG = range(len(FAULT_KINDS), len(SHAPES))
LABEL_KIND = (*FAULT_KINDS, "drift", "stuck", "noise_burst", "noise_burst")

FAULT_COLUMNS = ("kind", "start_ms", "end_ms", "value")
F_KIND, F_START, F_END, F_VALUE = range(len(FAULT_COLUMNS))
# kind: an index into SHAPES; value: spike offset; stuck value; drift (fouling) reached at
# the end; burst σ (battery sag: σ reached a quarter in); garbage value; the reading out
# of the water (pulls)

class SeriesArrays(NamedTuple):
    """What the kernels need to know of every series, one row (or entry) per series."""

    site: np.ndarray  # int64, index of the series' site (rows of one site are adjacent)
    model: np.ndarray  # int64, physics model id
    given: np.ndarray  # int64, the sibling series whose clean value the model takes, or -1
    params: np.ndarray  # float64 [n, N_PARAMS]
    keys: np.ndarray  # uint64 [n, len(physics.STREAM_NAMES)]
    noise: np.ndarray  # float64 σ
    relative: np.ndarray  # bool: σ is a fraction of the value
    low: np.ndarray  # float64 physical range
    high: np.ndarray
    circular: np.ndarray  # bool: wraps at 360
    steps: np.ndarray  # float64, 1 / resolution (10.0 for 0.1)
    interval_ms: np.ndarray  # int64
    phase_ms: np.ndarray  # int64, sample times are phase + k * interval


class Injection(NamedTuple):
    """Injected perturbations: rows of ``events[ev_lo[s]:ev_hi[s]]`` act on series s's
    latents (physics.EV_COLUMNS), ``faults[f_lo[s]:f_hi[s]]`` on its output."""

    events: np.ndarray  # float64 [m, 5]
    ev_lo: np.ndarray  # int64 [n]
    ev_hi: np.ndarray
    faults: np.ndarray  # float64 [k, 4]
    f_lo: np.ndarray
    f_hi: np.ndarray


@njit(**PURE)
def settle(v, low, high, circular, steps):
    """Clip (or wrap) and quantise, the way the sensor's ADC and firmware would."""
    v = v % 360.0 if circular else min(high, max(low, v))
    v = np.rint(v * steps) / steps
    if circular and v >= 360.0:
        v -= 360.0
    return v


@njit(**PURE)
def with_noise(clean, sample, key, sigma, relative):
    if sigma == 0.0:
        return clean
    n = normal(at(key, sample))
    return clean * (1.0 + sigma * n) if relative else clean + sigma * n


@njit(**PURE)
def apply_fault(v, t, sample, faults, burst_key, low, high, circular, steps):
    """The reported value once the fault covering ``t`` (if any) has acted on ``v``."""
    for i in range(faults.shape[0]):
        start = faults[i, F_START]
        end = faults[i, F_END]
        if t < start or t >= end:
            continue
        kind = faults[i, F_KIND]
        x = faults[i, F_VALUE]
        if kind == SPIKE:
            return settle(v + x, low, high, circular, steps)
        if kind == STUCK:
            return x
        if kind == DRIFT:
            return settle(v + x * (t - start) / (end - start), low, high, circular, steps)
        if kind == DROPOUT:
            return np.nan
        if kind == NOISE_BURST:
            burst = x * normal(at(burst_key, sample))
            return settle(v + burst, low, high, circular, steps)
        if kind == OUT_OF_RANGE:
            return x
        if kind == FOULING:
            grown = (t - start) / (end - start)
            return settle(v + x * grown * grown, low, high, circular, steps)
        if kind == PULL_FLAT:
            return x
        if kind == PULL_JUMPING:  # in the water or out of it, reading by reading
            return x if normal(at(burst_key, sample)) > 0.0 else v
        if kind == BATTERY_SAG:  # sets in as the voltage falls, full within a quarter
            sag = x * min(1.0, 4.0 * (t - start) / (end - start)) * normal(at(burst_key, sample))
            return settle(v + sag, low, high, circular, steps)
    return v


@njit(**PURE)
def series_block(s, series, days, events, faults, first_ms, count, given, clean, out):
    """``count`` samples of series ``s`` from its sample time ``first_ms``: the clean
    physics into ``clean`` (``events`` acting on the site's latents; ``given``: the clean
    block of the model's given sibling, or empty), the reported values into ``out`` (noise,
    clip and quantisation, then ``faults``; NaN: dropped out). ``days`` is the site's day
    table (physics.DayTable)."""
    keys = series.keys[s]
    step = series.interval_ms[s]
    first_sample = (first_ms - series.phase_ms[s]) // step
    clean_block(series.model[s], series.params[s], keys, days, events, first_ms, step, count,
                clean, given)
    noise_key = keys[S_NOISE_SERIES]
    sigma = series.noise[s]
    relative = series.relative[s]
    low = series.low[s]
    high = series.high[s]
    circular = series.circular[s]
    steps = series.steps[s]
    for j in range(count):
        out[j] = settle(with_noise(clean[j], first_sample + j, noise_key, sigma, relative),
                        low, high, circular, steps)
    if faults.shape[0] > 0:
        burst_key = keys[S_BURST_SERIES]
        for j in range(count):
            out[j] = apply_fault(out[j], first_ms + j * step, first_sample + j, faults,
                                 burst_key, low, high, circular, steps)


@njit(**JIT)
def render(rows, first_ms, counts, out_lo, series, injection, out):
    """For each series ``s = rows[i]``: ``counts[i]`` samples from ``first_ms[i]`` at its
    own interval into ``out[out_lo[i]:]``, with its slice of ``injection``.

    One day table serves the call; it is refilled whenever the site changes, so rows of a
    site should be adjacent (they are, in table order). A model with a ``given`` sibling
    rendered earlier in the call (same device: same sample times) reuses its clean block.
    """
    first_day = local_day(first_ms.min())
    last_day = first_day
    for i in range(rows.shape[0]):
        if counts[i] > 0:
            last = first_ms[i] + (counts[i] - 1) * series.interval_ms[rows[i]]
            last_day = max(last_day, local_day(last))
    days = new_day_table(first_day, last_day)
    clean = np.empty(out.shape[0])
    row_of = np.full(series.model.shape[0], -1)  # series -> its row in this call
    nothing = np.empty(0)
    site = -1
    for i in range(rows.shape[0]):
        s = rows[i]
        if series.site[s] != site:
            site = series.site[s]
            fill_day_table(series.params[s], series.keys[s], days)
        events = injection.events[injection.ev_lo[s]:injection.ev_hi[s]]
        faults = injection.faults[injection.f_lo[s]:injection.f_hi[s]]
        given = nothing
        source = series.given[s]
        if source >= 0 and row_of[source] >= 0:
            k = row_of[source]
            if first_ms[k] == first_ms[i] and counts[k] == counts[i]:
                given = clean[out_lo[k]:out_lo[k] + counts[k]]
        lo, hi = out_lo[i], out_lo[i] + counts[i]
        series_block(s, series, days, events, faults, first_ms[i], counts[i], given,
                     clean[lo:hi], out[lo:hi])
        row_of[s] = i


@njit(**JIT)
def render_one(s, first_ms, count, series, events, faults, out):
    """``count`` samples of series ``s`` from ``first_ms``, with explicit injections."""
    step = series.interval_ms[s]
    days = new_day_table(local_day(first_ms), local_day(first_ms + max(count - 1, 0) * step))
    fill_day_table(series.params[s], series.keys[s], days)
    series_block(s, series, days, events, faults, first_ms, count, np.empty(0),
                 np.empty(count), out)


@njit(**PURE)
def gather(pattern_series, pattern_k, pattern_offset_ms, per_frame, out_lo, values,
           frame0_ms, frame_ms, n_frames, t_lo, t_hi, out_series, out_time, out_value):
    """Interleave series-major blocks into (time, series) order; returns rows written.

    The sample clocks repeat every frame (the least common multiple of the intervals):
    pattern entry e is series ``pattern_series[e]``'s ``pattern_k[e]``-th sample of a
    frame, at ``pattern_offset_ms[e]`` into it, entries sorted by (offset, series).
    Block i holds ``per_frame[i]`` samples per frame from ``frame0_ms``. Rows outside
    [t_lo, t_hi) and dropouts (NaN) are skipped.
    """
    w = 0
    n_entries = pattern_series.shape[0]
    for f in range(n_frames):
        base = frame0_ms + f * frame_ms
        for e in range(n_entries):
            t = base + pattern_offset_ms[e]
            if t < t_lo or t >= t_hi:
                continue
            s = pattern_series[e]
            v = values[out_lo[s] + f * per_frame[s] + pattern_k[e]]
            if np.isnan(v):
                continue
            out_series[w] = s
            out_time[w] = t
            out_value[w] = v
            w += 1
    return w
