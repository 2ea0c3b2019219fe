"""Plain NumPy twins of the simulator's kernels: slow, obvious, vectorised over arrays.

Tests compare each kernel with its twin over random data and edge cases; the benchmark
uses them as the baseline a kernel has to beat. None of this is used to generate data.
"""

from __future__ import annotations

import math

import numpy as np

from .astro import (
    DAY_MS,
    DOODSON,
    H0,
    H_RATE,
    HOUR_MS,
    J2000_MS,
    P0,
    P_RATE,
    S0,
    S_RATE,
    SPEEDS_DEG_PER_HOUR,
    YEAR_DAYS,
)

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def at(key: np.uint64, n: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return splitmix64(np.uint64(key) + (np.asarray(n).astype(np.uint64) + np.uint64(1))
                          * _GOLDEN)


def uniform(h: np.ndarray) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def normal(h: np.ndarray) -> np.ndarray:
    h = np.asarray(h, dtype=np.uint64)
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2.0**32
    # libm's log, as the kernel's: NumPy's own SIMD log (AVX-512 builds) may differ in the
    # last bit, and the noise streams are compared bit for bit
    return np.sqrt(-2.0 * _libm_log(u1)) * np.cos(2.0 * np.pi * u2)


def _libm_log(x: np.ndarray) -> np.ndarray:
    return np.array([math.log(v) for v in x.ravel()]).reshape(x.shape)


def value_noise(key: np.uint64, t_ms: np.ndarray, period_ms: float) -> np.ndarray:
    x = np.asarray(t_ms) / period_ms
    cell = np.floor(x)
    f = x - cell
    k = cell.astype(np.int64)
    a = (2.0 * uniform(at(key, k)) - 1.0) * np.sqrt(3.0)
    b = (2.0 * uniform(at(key, k + 1)) - 1.0) * np.sqrt(3.0)
    return a + (b - a) * (f * f * (3.0 - 2.0 * f))


def sun(lat_deg: float, lon_deg: float, t_ms: np.ndarray) -> tuple[np.ndarray, ...]:
    """NOAA general solar position, written out with the plain multiple angles."""
    t_ms = np.asarray(t_ms)
    doy = ((t_ms - 946_684_800_000) % (YEAR_DAYS * DAY_MS)) / DAY_MS
    g = 2.0 * np.pi / YEAR_DAYS * (doy - 0.5)
    decl = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g)
            + 0.000907 * np.sin(2 * g) - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    eot = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g)
                    - 0.014615 * np.cos(2 * g) - 0.040849 * np.sin(2 * g))
    solar_hours = ((t_ms % DAY_MS) / HOUR_MS + lon_deg / 15.0 + eot / 60.0) % 24.0
    lat = np.radians(lat_deg)
    sin_elev = (np.sin(lat) * np.sin(decl)
                + np.cos(lat) * np.cos(decl) * np.cos(np.radians(15.0 * (solar_hours - 12.0))))
    half_day = np.degrees(np.arccos(np.clip(-np.tan(lat) * np.tan(decl), -1.0, 1.0))) / 15.0
    return sin_elev, solar_hours, half_day


def tide(t_ms: np.ndarray, amplitude: np.ndarray, phase_deg: np.ndarray,
         lag_deg: float) -> tuple[np.ndarray, np.ndarray]:
    t_ms = np.asarray(t_ms)
    centuries = (t_ms - J2000_MS) / (36525.0 * DAY_MS)
    args = np.stack([180.0 + 15.0 * (t_ms % DAY_MS) / HOUR_MS, S0 + S_RATE * centuries,
                     H0 + H_RATE * centuries, P0 + P_RATE * centuries])
    level = np.zeros(t_ms.shape)
    rate = np.zeros(t_ms.shape)
    for i, row in enumerate(DOODSON):
        lag = lag_deg if row[0] == 2.0 else 0.5 * lag_deg
        arg = np.radians(row[:4] @ args + row[4] - phase_deg[i] - lag)
        level += amplitude[i] * np.cos(arg)
        rate -= amplitude[i] * np.sin(arg) * np.radians(SPEEDS_DEG_PER_HOUR[i])
    return level, rate


def oxygen_saturation(celsius: np.ndarray, psu: np.ndarray) -> np.ndarray:
    """Benson & Krause (1984) in mg/L, as in APHA Standard Methods 4500-O."""
    k = np.asarray(celsius) + 273.15
    return np.exp(-139.34411 + 1.575701e5 / k - 6.642308e7 / k**2 + 1.243800e10 / k**3
                  - 8.621949e11 / k**4 - np.asarray(psu) * (0.017674 - 10.754 / k
                                                            + 2140.7 / k**2))


def settle(v: np.ndarray, low: float, high: float, circular: bool,
           steps: float) -> np.ndarray:
    v = np.mod(v, 360.0) if circular else np.clip(v, low, high)
    v = np.rint(v * steps) / steps
    return np.where(v >= 360.0, v - 360.0, v) if circular else v


def gather(series: np.ndarray, times: np.ndarray, values: np.ndarray,
           t_lo: int, t_hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time order (ties: series), window, dropouts removed: by sorting everything."""
    keep = (times >= t_lo) & (times < t_hi) & ~np.isnan(values)
    series, times, values = series[keep], times[keep], values[keep]
    order = np.lexsort((series, times))
    return series[order], times[order], values[order]


def window(t: np.ndarray, start: float, end: float, ramp: float) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    r = min(ramp, 0.5 * (end - start))
    up = 0.5 - 0.5 * np.cos(np.pi * (t - start) / r) if r > 0 else np.ones_like(t)
    down = 0.5 - 0.5 * np.cos(np.pi * (end - t) / r) if r > 0 else np.ones_like(t)
    w = np.where(t < start + r, up, np.where(t > end - r, down, 1.0))
    return np.where((t >= start) & (t < end), w, 0.0)


__all__ = ["at", "gather", "normal", "oxygen_saturation", "settle", "splitmix64", "sun",
           "tide", "uniform", "value_noise", "window"]
