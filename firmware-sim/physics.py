"""Signal models: the clean value of every catalog metric at any instant.

Every model is a pure function ``f(p, keys, days, ev, t_ms) -> float`` of

* ``p``: the series' parameters (slots below; ``sites.py`` fills them from the site's
  kind, district and position, the device and the seed),
* ``keys``: its random-stream keys (``STREAM_NAMES``; region-wide streams make the
  weather regional),
* ``days``: a memo of the site's day-indexed draws (``DayTable``: rain, fronts,
  irrigation, the day's solar declination); only a cache, it never changes a value,
* ``ev``: rows of injected perturbations of latent quantities (``CH_*`` channels, each a
  smooth window ``[start, end)``; empty for the clean signal),
* ``t_ms``: the instant.

There is no state: weather is smooth value noise plus day-indexed events drawn from
``hash(key, day)`` (rain, fronts), soil moisture and salinity are closed-form sums over
the rain and irrigation events of a look-back window, tide is a harmonic sum. So any
sample can be computed alone and equals the same sample computed inside any window.

Models are dispatched by id in ``clean_block``, one loop per model; ``MODELS`` maps
(metric, setting) to the id and the sensor's noise.

An injected perturbation only ever enters through ``channel(ev, CH_*, t)`` at the same
instant ``t`` (never at a lagged time), so it changes values inside its window and
nowhere else. Lagged couplings (waves following the wind two hours later) read the
*clean* latent on purpose.

Sensor noise, quantisation and faults are not here: see ``render.py``.

Climate numbers are Qingdao's (China Meteorological Administration normals 1991-2020,
rounded): air temperature Jan -1 °C, Aug 25.5 °C; ~700 mm of rain a year, most of it in
July-August; sea surface ~4.5 °C in February and ~25.5 °C in August.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from ._jit import JIT, PURE
from .astro import (
    DAY_MS,
    EPOCH_2000_MS,
    HOUR_MS,
    QINGDAO_AMPLITUDE_M,
    QINGDAO_PHASE_DEG,
    YEAR_DAYS,
    clear_sky_ghi,
    hours_since_sunset,
    local_day,
    local_day_start_ms,
    local_hour,
    seasonal,
    semiannual,
    sun_of_day,
    sun_position,
    tide,
)
from .astro import tide_level as astro_tide_level
from .rng import at, uniform, value_noise

# --- parameter slots ----------------------------------------------------------------
# One float64 vector per series. Numba reads these module constants at compile time.

PARAM_NAMES = (
    "lat", "lon", "sin_lat", "cos_lat",
    # air climate
    "air_mean", "air_annual_amp", "air_peak_doy", "air_diurnal_amp", "dewpoint_offset",
    "wind_factor", "showers",
    # sea
    "wave_exposure", "bay", "sst_mean", "sst_annual_amp", "sst_peak_doy", "sst_diurnal_amp",
    "salinity_base", "do_fraction", "photosynthesis", "chlorophyll_base", "turbidity_base",
    "tide_gain", "tide_lag_deg", "current_gain", "current_axis_deg", "residual_current_deg",
    # soil and plants
    "theta_dry", "theta_span", "soil_base", "drying_rate", "irrigation_every_days",
    "irrigation_amount", "irrigation_hour", "irrigation_phase", "irrigation_first_doy",
    "irrigation_last_doy", "rain_exposed", "soil_ec_base", "soil_ph_base", "transmission",
    # devices and links
    "rssi_base", "device_t_offset", "device_do_offset", "interval_s",
)
(LAT, LON, SIN_LAT, COS_LAT,
 AIR_MEAN, AIR_ANNUAL_AMP, AIR_PEAK_DOY, AIR_DIURNAL_AMP, DEWPOINT_OFFSET,
 WIND_FACTOR, SHOWERS,
 WAVE_EXPOSURE, BAY, SST_MEAN, SST_ANNUAL_AMP, SST_PEAK_DOY, SST_DIURNAL_AMP,
 SALINITY_BASE, DO_FRACTION, PHOTOSYNTHESIS, CHLOROPHYLL_BASE, TURBIDITY_BASE,
 TIDE_GAIN, TIDE_LAG_DEG, CURRENT_GAIN, CURRENT_AXIS_DEG, RESIDUAL_CURRENT_DEG,
 THETA_DRY, THETA_SPAN, SOIL_BASE, DRYING_RATE, IRRIGATION_EVERY_DAYS,
 IRRIGATION_AMOUNT, IRRIGATION_HOUR, IRRIGATION_PHASE, IRRIGATION_FIRST_DOY,
 IRRIGATION_LAST_DOY, RAIN_EXPOSED, SOIL_EC_BASE, SOIL_PH_BASE, TRANSMISSION,
 RSSI_BASE, DEVICE_T_OFFSET, DEVICE_DO_OFFSET, INTERVAL_S) = range(len(PARAM_NAMES))
N_PARAMS = len(PARAM_NAMES)

# Random streams: one key per latent and scope (region: shared by the whole fleet, so
# weather is regional; site; device; series), made in Python by rng.stream_key from
# (seed, owner, latent): a kernel only indexes its series' row of keys.
STREAM_NAMES = (
    "noise@series", "burst@series", "rain@region", "rain@site", "shower@site",
    "front@region", "irrigation@site", "cloud@region", "cloud@site", "flicker@site",
    "air@region", "air_slow@region", "air@site", "dew@region", "pressure@region",
    "pressure_slow@region", "wind@region", "wind@site", "wind_dir@region", "wind_dir@site",
    "soil_ec@site", "soil_ph@site", "soil_ph_fast@device", "surge@region", "sst@region",
    "sst@site", "salinity@site", "oxygen@site", "ph@site", "swell@region",
    "chlorophyll@site", "current@site", "rssi@site", "rssi@device",
)
(S_NOISE_SERIES, S_BURST_SERIES, S_RAIN_REGION, S_RAIN_SITE, S_SHOWER_SITE,
 S_FRONT_REGION, S_IRRIGATION_SITE, S_CLOUD_REGION, S_CLOUD_SITE, S_FLICKER_SITE,
 S_AIR_REGION, S_AIR_SLOW_REGION, S_AIR_SITE, S_DEW_REGION, S_PRESSURE_REGION,
 S_PRESSURE_SLOW_REGION, S_WIND_REGION, S_WIND_SITE, S_WIND_DIR_REGION, S_WIND_DIR_SITE,
 S_SOIL_EC_SITE, S_SOIL_PH_SITE, S_SOIL_PH_FAST_DEVICE, S_SURGE_REGION, S_SST_REGION,
 S_SST_SITE, S_SALINITY_SITE, S_OXYGEN_SITE, S_PH_SITE, S_SWELL_REGION,
 S_CHLOROPHYLL_SITE, S_CURRENT_SITE, S_RSSI_SITE, S_RSSI_DEVICE) = range(len(STREAM_NAMES))

# --- injected perturbations (events.py writes them) ---------------------------------

CHANNEL_NAMES = (
    "air_temperature",  # °C added to outdoor air
    "air_pressure",  # hPa added
    "wind_speed",  # m/s added
    "wind_direction",  # degrees of veer added
    "rain",  # mm/h of extra rain (rainfall and humidity only: no soil/sea memory)
    "wave_height",  # m added
    "surge",  # m added to the tide level (wind set-up; the pressure part is automatic)
    "turbidity",  # relative increase (1.0 doubles)
    "water_temperature",  # °C added
    "salinity",  # PSU added
    "oxygen",  # added to the oxygen saturation fraction (hypoxia: negative)
    "irrigation",  # 1: scheduled irrigations starting inside the window do not happen
    "leaf_wetness",  # % added
    "soil_temperature",  # °C added
    "rssi",  # dB added
)
(CH_AIR_TEMPERATURE, CH_AIR_PRESSURE, CH_WIND_SPEED, CH_WIND_DIRECTION, CH_RAIN,
 CH_WAVE_HEIGHT, CH_SURGE, CH_TURBIDITY, CH_WATER_TEMPERATURE, CH_SALINITY, CH_OXYGEN,
 CH_IRRIGATION, CH_LEAF_WETNESS, CH_SOIL_TEMPERATURE, CH_RSSI) = range(len(CHANNEL_NAMES))

EV_COLUMNS = ("channel", "start_ms", "end_ms", "ramp_ms", "amplitude")
EV_CHANNEL, EV_START, EV_END, EV_RAMP, EV_AMPLITUDE = range(len(EV_COLUMNS))

_TAU = 2.0 * np.pi


# --- small shapes ---------------------------------------------------------------------


@njit(**PURE)
def window(t, start, end, ramp):
    """1 inside [start, end), 0 outside, with raised-cosine ramps of ``ramp`` at both ends
    (so a perturbation fades in and out smoothly and is exactly 0 outside)."""
    if t < start or t >= end:
        return 0.0
    r = min(ramp, 0.5 * (end - start))
    if r <= 0.0:
        return 1.0
    if t < start + r:
        return 0.5 - 0.5 * np.cos(np.pi * (t - start) / r)
    if t > end - r:
        return 0.5 - 0.5 * np.cos(np.pi * (end - t) / r)
    return 1.0


@njit(**PURE)
def _ramp_integral(x, r):
    # ∫_0^x (1 - cos(pi u / r)) / 2 du, for 0 <= x <= r
    return 0.5 * x - r / _TAU * np.sin(np.pi * x / r)


@njit(**PURE)
def window_integral(t, start, end, ramp):
    """∫ window from ``start`` to ``t``, in ms (the closed form of a ramped rectangle)."""
    if t <= start:
        return 0.0
    r = min(ramp, 0.5 * (end - start))
    x = min(t, end) - start
    length = end - start
    if r <= 0.0:
        return x
    if x <= r:
        return _ramp_integral(x, r)
    if x <= length - r:
        return 0.5 * r + (x - r)
    # on the falling ramp: everything minus what is still to come
    return (length - r) - _ramp_integral(length - x, r)


@njit(**PURE)
def bump(t, centre, half_width):
    """cos² bump: 1 at ``centre``, 0 beyond ``half_width`` either side."""
    x = (t - centre) / half_width
    if x <= -1.0 or x >= 1.0:
        return 0.0
    c = np.cos(0.5 * np.pi * x)
    return c * c


@njit(**PURE)
def smooth_min(a, b, k):
    """min(a, b) with the corner rounded over ~k; never above min(a, b)."""
    return min(a, b) - k * np.log1p(np.exp(-abs(a - b) / k))


@njit(**PURE)
def smooth_max(a, b, k):
    return max(a, b) + k * np.log1p(np.exp(-abs(a - b) / k))


@njit(**PURE)
def clip(x, lo, hi):
    return min(hi, max(lo, x))


@njit(inline="always", **PURE)  # inlined: the channel id is a literal at every call
def channel(ev, ch, t):
    """The summed injected perturbation of channel ``ch`` at ``t`` (0 with no rows)."""
    total = 0.0
    for i in range(ev.shape[0]):
        if ev[i, EV_CHANNEL] == ch:
            total += ev[i, EV_AMPLITUDE] * window(t, ev[i, EV_START], ev[i, EV_END],
                                                  ev[i, EV_RAMP])
    return total


@njit(**PURE)
def channel_integral_hours(ev, ch, t):
    """∫ channel dt up to ``t`` in amplitude·hours (e.g. mm for the rain channel)."""
    total = 0.0
    for i in range(ev.shape[0]):
        if ev[i, EV_CHANNEL] == ch:
            total += ev[i, EV_AMPLITUDE] * window_integral(
                t, ev[i, EV_START], ev[i, EV_END], ev[i, EV_RAMP]) / HOUR_MS
    return total


# --- day-indexed events: rain, fronts, irrigation -------------------------------------------

DAY_COLUMNS = (
    "rain_start", "rain_end", "rain_rate",  # frontal rain (slot 0)
    "shower_start", "shower_end", "shower_rate",  # local shower (slot 1)
    "front_centre", "front_half", "front_strength",
    "irrigation_start", "irrigation_end", "irrigation_amount",
    "sin_decl", "cos_decl", "eot_hours", "half_day",  # the sun at the day's start
)
(D_RAIN, _D_RAIN_END, _D_RAIN_RATE, D_SHOWER, _D_SHOWER_END, _D_SHOWER_RATE,
 D_FRONT, D_FRONT_HALF, D_FRONT_STRENGTH, D_IRRIGATION, D_IRRIGATION_END,
 D_IRRIGATION_AMOUNT, D_SIN_DECL, D_COS_DECL, D_EOT, D_HALF_DAY) = range(len(DAY_COLUMNS))
LOOKBACK_DAYS = 20  # the longest memory (soil: 16 days) plus fronts and lags
LOOKAHEAD_DAYS = 2  # a front centred tomorrow already blows today


class DayTable(NamedTuple):
    """The day-indexed draws of one site for a range of local days (row ``day - first``),
    plus a scratch row (the last) for a day outside the range.

    Only a cache: a row holds exactly what ``fill_day`` computes for its day, so reading
    the table or drawing afresh gives the same bits. Filled eagerly (a day costs ~0.1 µs;
    a sample reads up to 20 of them).
    """

    rows: np.ndarray  # float64 [n_days + 1, len(DAY_COLUMNS)]
    first: np.ndarray  # int64 [1]: the day of row 0


@njit(**JIT)
def new_day_table(first_day, last_day):
    """An empty table for samples on local days ``first_day``..``last_day`` (with the
    look-back and look-ahead); ``fill_day_table`` fills it for a site."""
    n = last_day - first_day + 1 + LOOKBACK_DAYS + LOOKAHEAD_DAYS + 1
    rows = np.zeros((n, len(DAY_COLUMNS)))
    return DayTable(rows, np.array([first_day - LOOKBACK_DAYS], dtype=np.int64))


@njit(**PURE)
def fill_day_table(p, keys, days):
    """(Re)fill every row for the site of ``p`` and ``keys``."""
    first = days.first[0]
    for i in range(days.rows.shape[0] - 1):
        fill_day(p, keys, first + i, days.rows[i])


@njit(**PURE)
def rain_event(p, keys, day, slot):
    """(start_ms, end_ms, rate in mm/h) of rain event ``slot`` of local ``day``; rate 0
    when there is none.

    Slot 0 is frontal rain drawn for the whole region (a site misses 15 % of them and
    gets its own amount); slot 1 is a local summer afternoon shower.
    """
    day_start = local_day_start_ms(day)
    wet_season = seasonal(day_start + DAY_MS // 2, 200.0)  # +1 in mid-July
    if slot == 0:
        region = keys[S_RAIN_REGION]
        if uniform(at(region, 8 * day)) >= 0.25 + 0.17 * wet_season:
            return 0.0, 0.0, 0.0
        site = keys[S_RAIN_SITE]
        if uniform(at(site, 8 * day)) < 0.15:
            return 0.0, 0.0, 0.0
        # the front reaches each site up to 2 h late; never before its day starts, so
        # "today and yesterday" always hold every event that can be falling now
        start = (day_start + uniform(at(region, 8 * day + 1)) * DAY_MS
                 + uniform(at(site, 8 * day + 1)) * 2.0 * HOUR_MS)
        hours = 1.0 + 9.0 * uniform(at(region, 8 * day + 2))
        mean_mm = 7.5 + 5.5 * wet_season
        amount = (-mean_mm * np.log(1.0 - uniform(at(region, 8 * day + 3)))
                  * (0.5 + uniform(at(site, 8 * day + 2))))
    else:
        site = keys[S_SHOWER_SITE]
        summer = max(0.0, seasonal(day_start + DAY_MS // 2, 205.0))
        if uniform(at(site, 8 * day)) >= p[SHOWERS] * summer * summer:
            return 0.0, 0.0, 0.0
        start = day_start + (12.0 + 8.0 * uniform(at(site, 8 * day + 1))) * HOUR_MS
        hours = 0.5 + 1.5 * uniform(at(site, 8 * day + 2))
        amount = -6.0 * np.log(1.0 - uniform(at(site, 8 * day + 3)))
    return start, start + hours * HOUR_MS, amount / hours


@njit(**PURE)
def front_event(keys, day):
    """(centre_ms, half_width_ms, strength) of the cold front of local ``day``; strength 0
    when none. Fronts are regional: more in winter and spring."""
    key = keys[S_FRONT_REGION]
    day_start = local_day_start_ms(day)
    if uniform(at(key, 4 * day)) >= 0.10 + 0.05 * seasonal(day_start, 30.0):
        return 0.0, 1.0, 0.0
    centre = day_start + uniform(at(key, 4 * day + 1)) * DAY_MS
    half = (12.0 + 12.0 * uniform(at(key, 4 * day + 2))) * HOUR_MS
    return centre, half, 0.5 + 0.5 * uniform(at(key, 4 * day + 3))


@njit(**PURE)
def irrigation_event(p, keys, day):
    """(start_ms, end_ms, % volumetric water added) of the irrigation scheduled on local
    ``day``; amount 0 when none (not an irrigation day, or out of season)."""
    every = p[IRRIGATION_EVERY_DAYS]
    if every <= 0.0 or (day + p[IRRIGATION_PHASE]) % every != 0.0:
        return 0.0, 0.0, 0.0
    day_start = local_day_start_ms(day)
    doy = ((day_start + DAY_MS // 2 - EPOCH_2000_MS) % (YEAR_DAYS * DAY_MS)) / DAY_MS
    if doy < p[IRRIGATION_FIRST_DOY] or doy > p[IRRIGATION_LAST_DOY]:
        return 0.0, 0.0, 0.0
    jitter = uniform(at(keys[S_IRRIGATION_SITE], day)) - 0.5
    start = day_start + (p[IRRIGATION_HOUR] + 0.5 * jitter) * HOUR_MS
    return start, start + 0.75 * HOUR_MS, p[IRRIGATION_AMOUNT]


@njit(**PURE)
def fill_day(p, keys, day, row):
    row[D_RAIN], row[D_RAIN + 1], row[D_RAIN + 2] = rain_event(p, keys, day, 0)
    row[D_SHOWER], row[D_SHOWER + 1], row[D_SHOWER + 2] = rain_event(p, keys, day, 1)
    row[D_FRONT], row[D_FRONT_HALF], row[D_FRONT_STRENGTH] = front_event(keys, day)
    (row[D_IRRIGATION], row[D_IRRIGATION_END],
     row[D_IRRIGATION_AMOUNT]) = irrigation_event(p, keys, day)
    (row[D_SIN_DECL], row[D_COS_DECL], row[D_EOT],
     row[D_HALF_DAY]) = sun_of_day(p[SIN_LAT], p[COS_LAT], local_day_start_ms(day))


@njit(**PURE)
def day_index(p, keys, days, day):
    """Row of ``days.rows`` holding the draws of local ``day``.

    Callers then read ``days.rows[i, column]`` (cheaper than a row view). A day outside
    the table is drawn into the scratch row: correct, just not cached.
    """
    i = day - days.first[0]
    scratch = days.rows.shape[0] - 1
    if 0 <= i < scratch:
        return i
    fill_day(p, keys, day, days.rows[scratch])
    return scratch


@njit(**PURE)
def _event(days, i, column):
    """(start_ms, end_ms, size) of the event stored from ``column`` in row ``i``."""
    return days.rows[i, column], days.rows[i, column + 1], days.rows[i, column + 2]


_RAIN_COLUMNS = (D_RAIN, D_SHOWER)


@njit(**PURE)
def rain_rate(p, keys, days, t):
    """Natural rain rate in mm/h at ``t`` (events last under a day: two days suffice)."""
    today = local_day(t)
    rate = 0.0
    for day in range(today - 1, today + 1):
        i = day_index(p, keys, days, day)
        for c in _RAIN_COLUMNS:
            start, end, r = _event(days, i, c)
            if start <= t < end:
                rate += r
    return rate


@njit(**PURE)
def rain_fallen_mm(p, keys, days, t, today):
    """Rain fallen up to ``t`` from the events of days ``today - 1`` and ``today``: the
    same event set for both ends of a rain-gauge interval, so their difference is exact."""
    total = 0.0
    for day in range(today - 1, today + 1):
        i = day_index(p, keys, days, day)
        for c in _RAIN_COLUMNS:
            start, end, r = _event(days, i, c)
            if r > 0.0 and t > start:
                total += r * (min(t, end) - start) / HOUR_MS
    return total


@njit(**PURE)
def rain_cooling(p, keys, days, t):
    """°C of evaporative cooling around rain: fades in half an hour before, out 1.5 h after."""
    today = local_day(t)
    cool = 0.0
    for day in range(today - 1, today + 1):
        i = day_index(p, keys, days, day)
        for c in _RAIN_COLUMNS:
            start, end, r = _event(days, i, c)
            if r > 0.0:
                cool = max(cool, window(t, start - 0.5 * HOUR_MS, end + 1.5 * HOUR_MS, HOUR_MS))
    return 1.8 * cool


@njit(**PURE)
def rain_memory(p, keys, days, t, lookback_days, tau_ms, delay_ms):
    """Σ over past rain of amount(mm) x response(age), age counted from the event's middle.

    Response: exp(-age/tau) after a one-hour rise, or with ``delay_ms`` > 0 a gamma-shaped
    pulse peaking ``delay_ms`` after the rain. The last two days of the look-back fade out
    so an old event leaves smoothly instead of with a step.
    """
    today = local_day(t)
    span = lookback_days * DAY_MS
    total = 0.0
    for day in range(today - int(lookback_days), today + 1):
        i = day_index(p, keys, days, day)
        for c in _RAIN_COLUMNS:
            start, end, r = _event(days, i, c)
            if r <= 0.0:
                continue
            age = t - 0.5 * (start + end)
            if age <= 0.0 or age >= span:
                continue
            amount = r * (end - start) / HOUR_MS
            fade = min(1.0, (span - age) / (2.0 * DAY_MS))
            if delay_ms > 0.0:
                x = age / delay_ms
                response = x * np.exp(1.0 - x)
            else:
                response = min(1.0, age / HOUR_MS) * np.exp(-age / tau_ms)
            total += amount * response * fade
    return total


@njit(**PURE)
def fronts(p, keys, days, t):
    """(now, behind): strengths of passing cold fronts at ``t``.

    ``now`` peaks as a front passes (wind up, pressure down); ``behind`` peaks half a
    front-width later (the cold air). A front's bump lasts at most a day either side.
    """
    today = local_day(t)
    now = 0.0
    behind = 0.0
    for day in range(today - 3, today + 2):
        i = day_index(p, keys, days, day)
        centre, half, strength = _event(days, i, D_FRONT)
        if strength > 0.0:
            now = max(now, strength * bump(t, centre, half))
            behind = max(behind, strength * bump(t, centre + 0.5 * half, half))
    return now, behind


# --- sky --------------------------------------------------------------------------------


@njit(**PURE)
def sun_at(p, keys, days, t):
    """(sin elevation, solar hours, half day length) at the site: the day-level terms
    (declination, equation of time, day length) interpolated linearly between the
    table's values at the surrounding local midnights, the hour angle exact."""
    today = local_day(t)
    i = day_index(p, keys, days, today)
    j = day_index(p, keys, days, today + 1)
    f = (t - local_day_start_ms(today)) / DAY_MS
    rows = days.rows
    sin_decl = rows[i, D_SIN_DECL] + f * (rows[j, D_SIN_DECL] - rows[i, D_SIN_DECL])
    cos_decl = rows[i, D_COS_DECL] + f * (rows[j, D_COS_DECL] - rows[i, D_COS_DECL])
    eot = rows[i, D_EOT] + f * (rows[j, D_EOT] - rows[i, D_EOT])
    half_day = rows[i, D_HALF_DAY] + f * (rows[j, D_HALF_DAY] - rows[i, D_HALF_DAY])
    sin_elev, solar_hours = sun_position(p[SIN_LAT], p[COS_LAT], p[LON], t, sin_decl,
                                         cos_decl, eot)
    return sin_elev, solar_hours, half_day


@njit(**PURE)
def cloudiness(p, keys, days, t):
    """Cloud cover in [0, 1]: regional and local smooth noise, cloudier in summer, nearly
    overcast while it rains."""
    x = (1.3 * value_noise(keys[S_CLOUD_REGION], t, 9.0 * HOUR_MS)
         + 0.5 * value_noise(keys[S_CLOUD_SITE], t, 3.0 * HOUR_MS)
         - 0.2 + 0.5 * seasonal(t, 190.0))
    cover = 1.0 / (1.0 + np.exp(-x))
    wet = min(1.0, rain_rate(p, keys, days, t) / 0.5)
    return cover + (0.97 - cover) * wet if cover < 0.97 else cover


@njit(**PURE)
def radiation_under(p, keys, days, t, sin_elev):
    """Global horizontal irradiance in W/m² for a sun at ``sin_elev``: clear sky
    (Haurwitz) x cloud transmission (Kasten & Czeplak 1980: 1 - 0.75 C^3.4) x the flicker
    of passing clouds. Exactly 0 while the sun is below the horizon."""
    if sin_elev <= 0.0:
        return 0.0
    cover = cloudiness(p, keys, days, t)
    broken = 4.0 * cover * (1.0 - cover)  # flicker is worst in broken cloud
    flicker = 1.0 - 0.35 * broken * max(
        0.0, value_noise(keys[S_FLICKER_SITE], t, 0.33 * HOUR_MS))
    return clear_sky_ghi(sin_elev) * (1.0 - 0.75 * cover ** 3.4) * max(0.2, flicker)


@njit(**PURE)
def global_radiation(p, keys, days, t):
    sin_elev, _, _ = sun_at(p, keys, days, t)
    return radiation_under(p, keys, days, t, sin_elev)


# --- air --------------------------------------------------------------------------------


@njit(**PURE)
def diurnal_shape(solar_hours, half_day):
    """-1 at sunrise, +1 at 14:30 solar time; a cosine up, then a longer cosine down."""
    rise = 12.0 - half_day
    peak = 14.5
    if rise <= solar_hours < peak:
        return -np.cos(np.pi * (solar_hours - rise) / (peak - rise))
    since_peak = (solar_hours - peak) % 24.0
    return np.cos(np.pi * since_peak / (24.0 - (peak - rise)))


@njit(**PURE)
def air_anomaly(keys, t):
    """Weather-driven departure from the climatological air temperature, in °C."""
    return (2.2 * value_noise(keys[S_AIR_REGION], t, 30.0 * HOUR_MS)
            + 1.5 * value_noise(keys[S_AIR_SLOW_REGION], t, 5.0 * DAY_MS)
            + 0.5 * value_noise(keys[S_AIR_SITE], t, 5.0 * HOUR_MS))


@njit(**PURE)
def air_climatology(p, t):
    """Mean air temperature of the day of year: the annual cycle, plus the half-year
    harmonic that makes Qingdao's spring warm late and its autumn stay mild (fitted to
    the monthly normals: Jan -0.5, Apr 11.0, Aug 25.6, Oct 16.0 °C on the coast)."""
    return (p[AIR_MEAN] + p[AIR_ANNUAL_AMP] * seasonal(t, p[AIR_PEAK_DOY])
            + 1.2 * semiannual(t, 80.0))


@njit(**PURE)
def air_temperature_clean(p, keys, days, t):
    """Outdoor air temperature: seasonal cycle + diurnal cycle (amplitude shrinks under
    cloud, larger inland) + synoptic anomaly - rain cooling - cold air behind fronts."""
    _, solar_hours, half_day = sun_at(p, keys, days, t)
    cover = cloudiness(p, keys, days, t)
    amplitude = p[AIR_DIURNAL_AMP] * (1.0 - 0.55 * cover)
    _, behind = fronts(p, keys, days, t)
    return (air_climatology(p, t) + amplitude * diurnal_shape(solar_hours, half_day)
            + air_anomaly(keys, t) - rain_cooling(p, keys, days, t) - 3.5 * behind)


@njit(**PURE)
def air_temperature(p, keys, days, ev, t):
    return air_temperature_clean(p, keys, days, t) + channel(ev, CH_AIR_TEMPERATURE, t)


@njit(**PURE)
def saturation_vapour_pressure(celsius):
    """hPa over water, Magnus form (Alduchov & Eskridge 1996)."""
    return 6.1094 * np.exp(17.625 * celsius / (243.04 + celsius))


@njit(**PURE)
def dewpoint(p, keys, days, ev, t, air):
    """Dew point in °C: seasonal (Jan ~-8, Aug ~22), moister with warm anomalies, at the
    air temperature while it rains, never above the air temperature."""
    dew = (6.5 + 15.0 * seasonal(t, 205.0) + p[DEWPOINT_OFFSET]
           + 1.8 * value_noise(keys[S_DEW_REGION], t, 36.0 * HOUR_MS)
           + 0.5 * air_anomaly(keys, t))
    wet = min(1.0, (rain_rate(p, keys, days, t) + channel(ev, CH_RAIN, t)) / 0.5)
    dew = dew + wet * (air - 0.1 - dew)
    return smooth_min(dew, air - 0.2, 0.5)


@njit(**PURE)
def relative_humidity(p, keys, days, ev, t):
    return humidity_at(p, keys, days, ev, t, air_temperature(p, keys, days, ev, t))


@njit(**PURE)
def humidity_at(p, keys, days, ev, t, air):
    """Outdoor RH in % for air temperature ``air``: from dew point and air temperature,
    so it runs opposite to the diurnal temperature cycle by construction."""
    dew = dewpoint(p, keys, days, ev, t, air)
    return min(100.0, 100.0 * saturation_vapour_pressure(dew) / saturation_vapour_pressure(air))


@njit(**PURE)
def air_pressure(p, keys, days, ev, t):
    """Sea-level pressure in hPa: winter high (~1025 in Jan), summer low (~1004 in Jul),
    synoptic swings, the semidiurnal atmospheric tide (highs near 10:00 and 22:00), troughs
    at fronts and a ridge behind them."""
    now, behind = fronts(p, keys, days, t)
    return (1014.5 + 10.5 * seasonal(t, 15.0)
            + 6.0 * value_noise(keys[S_PRESSURE_REGION], t, 40.0 * HOUR_MS)
            + 3.0 * value_noise(keys[S_PRESSURE_SLOW_REGION], t, 6.0 * DAY_MS)
            + 0.5 * np.cos(_TAU * (local_hour(t) - 10.0) / 12.0)
            - 9.0 * now + 5.0 * behind + channel(ev, CH_AIR_PRESSURE, t))


@njit(**PURE)
def wind_speed_clean(p, keys, days, t):
    """Mean wind in m/s: windier in winter/spring and in lows, afternoon maximum,
    log-normal swings of the weather, fronts add up to 6 m/s."""
    now, _ = fronts(p, keys, days, t)
    base = (4.6 + 0.7 * seasonal(t, 60.0)) * p[WIND_FACTOR]
    # a synoptic low (the pressure noise below zero) blows harder than a high
    low = -value_noise(keys[S_PRESSURE_REGION], t, 40.0 * HOUR_MS)
    weather = np.exp(0.25 * value_noise(keys[S_WIND_REGION], t, 12.0 * HOUR_MS)
                     + 0.15 * value_noise(keys[S_WIND_SITE], t, 3.0 * HOUR_MS) + 0.15 * low)
    afternoon = 1.0 + 0.25 * np.cos(_TAU * (local_hour(t) - 14.5) / 24.0)
    return base * weather * afternoon + 6.0 * now * p[WIND_FACTOR]


@njit(**PURE)
def wind_speed(p, keys, days, ev, t):
    return max(0.0, wind_speed_clean(p, keys, days, t) + channel(ev, CH_WIND_SPEED, t))


@njit(**PURE)
def wind_direction(p, keys, days, ev, t):
    """Direction the wind blows from, degrees: the East Asian monsoon (NNW in winter, SSE in
    summer) wandering with the weather, veering to NW behind a front."""
    mean = (250.0 + 90.0 * seasonal(t, 15.0)
            + 45.0 * value_noise(keys[S_WIND_DIR_REGION], t, 18.0 * HOUR_MS)
            + 12.0 * value_noise(keys[S_WIND_DIR_SITE], t, 4.0 * HOUR_MS))
    now, _ = fronts(p, keys, days, t)
    towards_nw = ((330.0 - mean + 180.0) % 360.0) - 180.0
    return (mean + now * towards_nw + channel(ev, CH_WIND_DIRECTION, t)) % 360.0


@njit(**PURE)
def rainfall(p, keys, days, ev, t):
    """mm in the gauge interval ending at ``t``, counted in whole 0.2 mm bucket tips."""
    interval_ms = p[INTERVAL_S] * 1000.0
    today = local_day(t)
    tips = (np.floor(rain_fallen_mm(p, keys, days, t, today) / 0.2)
            - np.floor(rain_fallen_mm(p, keys, days, t - interval_ms, today) / 0.2))
    # injected rain tips its own bucket count, so the natural count is untouched outside
    tips += (np.floor(channel_integral_hours(ev, CH_RAIN, t) / 0.2)
             - np.floor(channel_integral_hours(ev, CH_RAIN, t - interval_ms) / 0.2))
    return 0.2 * tips


@njit(**PURE)
def solar_radiation(p, keys, days, ev, t):
    return global_radiation(p, keys, days, t)


@njit(**PURE)
def par(p, keys, days, ev, t):
    """PAR in µmol/m²/s: ~2.02 µmol/J x global radiation x cover transmission (greenhouse
    film ~0.62). 0 at night."""
    return 2.02 * p[TRANSMISSION] * global_radiation(p, keys, days, t)


# --- greenhouse and barn ----------------------------------------------------------------


@njit(**PURE)
def greenhouse_air_temperature(p, keys, days, ev, t):
    """Solar gain over outdoor air, a heating floor of ~10 °C, vents open above ~26 °C."""
    outdoor = air_temperature(p, keys, days, ev, t)
    heated = smooth_max(outdoor + 4.0 + 0.022 * global_radiation(p, keys, days, t), 10.0, 1.0)
    return smooth_min(heated, 26.0 + 0.5 * max(0.0, outdoor - 22.0), 1.5)


@njit(**PURE)
def greenhouse_humidity(p, keys, days, ev, t):
    return greenhouse_humidity_at(greenhouse_air_temperature(p, keys, days, ev, t))


@njit(**PURE)
def greenhouse_humidity_at(inside):
    """Transpiration keeps a greenhouse humid: ~95 % on cool nights, ~60 % on hot days."""
    return clip(95.0 - 1.6 * (inside - 12.0), 40.0, 98.0)


@njit(**PURE)
def _closed_season(t):
    """1 in midwinter (houses shut), 0 in midsummer (vents wide open)."""
    return 0.5 * (1.0 + seasonal(t, 15.0))


@njit(**PURE)
def greenhouse_co2(p, keys, days, ev, t):
    """CO2 in ppm: respiration accumulates through the night (~600-900 by dawn in a closed
    house), photosynthesis draws it to ~350-400 within hours of sunrise."""
    sin_elev, solar_hours, half_day = sun_at(p, keys, days, t)
    closure = 0.35 + 0.65 * _closed_season(t)
    night_gain = 480.0 * closure
    night_hours = 24.0 - 2.0 * half_day
    since_sunset = hours_since_sunset(solar_hours, half_day)
    if since_sunset >= 0.0:
        return 400.0 + night_gain * (1.0 - np.exp(-since_sunset / 4.0))
    since_sunrise = solar_hours - (12.0 - half_day)
    dawn_excess = night_gain * (1.0 - np.exp(-night_hours / 4.0))
    draw = 60.0 * closure * min(1.0, radiation_under(p, keys, days, t, sin_elev) / 400.0)
    return 400.0 + dawn_excess * np.exp(-since_sunrise / 1.0) - draw


@njit(**PURE)
def barn_air_temperature(p, keys, days, ev, t):
    """Insulated, ventilated and heated in winter: follows outdoors at half amplitude."""
    outdoor = air_temperature(p, keys, days, ev, t)
    return smooth_max(0.55 * outdoor + 9.0 + 0.004 * global_radiation(p, keys, days, t),
                      11.0, 1.0)


@njit(**PURE)
def barn_humidity(p, keys, days, ev, t):
    outdoor = relative_humidity(p, keys, days, ev, t)
    return clip(60.0 + 0.25 * (outdoor - 65.0) + 12.0 * _closed_season(t), 35.0, 96.0)


@njit(**PURE)
def _animal_activity(t):
    """Animals are busiest mid-morning, quietest before dawn: cosine peaking at 10:00."""
    return 0.5 * (1.0 + np.cos(_TAU * (local_hour(t) - 10.0) / 24.0))


@njit(**PURE)
def barn_co2(p, keys, days, ev, t):
    """~650 ppm with summer ventilation, ~1400 in a shut winter barn, more by day."""
    closure = _closed_season(t)
    return 600.0 + 650.0 * closure ** 1.5 + 200.0 * _animal_activity(t)


@njit(**PURE)
def _manure_age(t):
    """Fraction of a day since the 08:00 scrape, dropping to 0 over the hour it takes."""
    since = (local_hour(t) - 9.0) % 24.0  # scraping runs 08:00-09:00
    if since < 23.0:
        return (since + 1.0) / 24.0
    return (24.0 - since) / 24.0  # the scraper clears the alley over the hour


@njit(**PURE)
def ammonia(p, keys, days, ev, t):
    return ammonia_at(t, barn_air_temperature(p, keys, days, ev, t))


@njit(**PURE)
def ammonia_at(t, inside):
    """NH3 in ppm with the barn at ``inside`` °C: builds up with manure between daily
    scrapes, more in a shut, warm barn."""
    closure = _closed_season(t)
    return (2.0 + (3.0 + 14.0 * closure) * _manure_age(t) ** 1.2
            * (1.0 + 0.03 * (inside - 15.0)))


# --- soil ---------------------------------------------------------------------------------


@njit(**PURE)
def drying_clock(p, t):
    """∫ drying rate dt, in e-foldings since 1970: soil water decays as exp(-Δclock).

    rate = r0 (1 + 0.5 cos(annual, peak late July) + 0.45 cos(diurnal, peak 13:00 local)):
    faster when hot and sunny, never negative (0.05 r0 on a winter night). Integrated in
    closed form, so the decay between any two instants is one subtraction.
    """
    days = t / DAY_MS
    year = _TAU / YEAR_DAYS
    annual = 0.5 * np.sin(year * (days - EPOCH_2000_MS / DAY_MS - 205.0)) / year
    daily = 0.45 * np.sin(_TAU * (days - 5.0 / 24.0)) / _TAU  # 13:00 Beijing = 05:00 UTC
    return p[DRYING_RATE] * (days + annual + daily)


@njit(**PURE)
def irrigation_delivered(ev, scheduled_ms, t):
    """How much of the irrigation scheduled at ``scheduled_ms`` counts at ``t``: 0 while
    an injected failure window holding it is open, rising to 1 over its last ``ramp``
    (the catch-up irrigation that ends the failure), 1 otherwise."""
    delivered = 1.0
    for i in range(ev.shape[0]):
        if ev[i, EV_CHANNEL] != CH_IRRIGATION:
            continue
        start, end, ramp = ev[i, EV_START], ev[i, EV_END], ev[i, EV_RAMP]
        if start <= scheduled_ms < end and t < end:
            if t <= end - ramp:
                delivered = 0.0
            else:
                delivered = min(delivered, 0.5 - 0.5 * np.cos(np.pi * (t - end + ramp) / ramp))
    return delivered


_SOIL_LOOKBACK_DAYS = 16
_MM_TO_PERCENT = 0.4  # 1 mm into the top 20 cm is 0.5 % vol; ~80 % infiltrates


@njit(**PURE)
def soil_moisture(p, keys, days, ev, t):
    """Volumetric water content in %: a base supply plus every rain and irrigation of the
    last 16 days, each decaying with the drying clock, soft-saturated at theta_dry +
    theta_span. Greenhouses (rain_exposed 0) only get irrigation."""
    today = local_day(t)
    clock_now = drying_clock(p, t)
    span = _SOIL_LOOKBACK_DAYS * DAY_MS
    water = p[SOIL_BASE]
    for day in range(today - _SOIL_LOOKBACK_DAYS, today + 1):
        i = day_index(p, keys, days, day)
        for c in (D_RAIN, D_SHOWER, D_IRRIGATION):
            start, end, size = _event(days, i, c)
            if size <= 0.0 or t <= start or t - end >= span:
                continue
            if c == D_IRRIGATION:
                amount = size * irrigation_delivered(ev, start, t)
            else:
                amount = size * (end - start) / HOUR_MS * _MM_TO_PERCENT * p[RAIN_EXPOSED]
            if amount <= 0.0:
                continue
            soaked = min(1.0, (t - start) / (end - start))
            decay = np.exp(-(clock_now - drying_clock(p, min(t, end))))
            fade = min(1.0, (span - (t - end)) / (4.0 * DAY_MS))
            water += amount * soaked * decay * fade
    return p[THETA_DRY] + p[THETA_SPAN] * np.tanh(water / p[THETA_SPAN])


@njit(**PURE)
def soil_temperature(p, keys, days, ev, t):
    """Soil at ~10 cm: the air's climatology five days late (and ~1 °C warmer), its
    diurnal cycle damped by e^-1 and delayed ~4 h (one daily damping depth is ~0.1 m),
    weather anomalies half as large and half a day late."""
    cover = cloudiness(p, keys, days, t)
    daily = (p[AIR_DIURNAL_AMP] * (1.0 - 0.55 * cover) * np.exp(-1.0)
             * np.cos(_TAU * (local_hour(t) - 14.5 - 3.8) / 24.0))
    return (air_climatology(p, t - 5 * DAY_MS) + 1.2 + daily
            + 0.5 * air_anomaly(keys, t - 12 * HOUR_MS)
            + channel(ev, CH_SOIL_TEMPERATURE, t))


@njit(**PURE)
def greenhouse_soil_temperature(p, keys, days, ev, t):
    return (17.0 + 5.0 * seasonal(t, 215.0) + 1.5 * np.cos(_TAU * (local_hour(t) - 17.0) / 24.0)
            + channel(ev, CH_SOIL_TEMPERATURE, t))


@njit(**PURE)
def soil_ec(p, keys, days, ev, t):
    return soil_ec_at(p, keys, t, soil_moisture(p, keys, days, ev, t))


@njit(**PURE)
def soil_ec_at(p, keys, t, theta):
    """Bulk EC in mS/cm at water content ``theta``: rises with it (Archie-like, ^1.4)."""
    drift = 1.0 + 0.05 * value_noise(keys[S_SOIL_EC_SITE], t, 4.0 * DAY_MS)
    return p[SOIL_EC_BASE] * (max(theta, 1.0) / 25.0) ** 1.4 * drift


@njit(**PURE)
def soil_ph(p, keys, days, ev, t):
    return (p[SOIL_PH_BASE]
            + 0.05 * value_noise(keys[S_SOIL_PH_SITE], t, 6.0 * DAY_MS)
            + 0.02 * value_noise(keys[S_SOIL_PH_FAST_DEVICE], t, 12.0 * HOUR_MS))


@njit(**PURE)
def leaf_wetness(p, keys, days, ev, t):
    """% of the sensor wet: dew when RH nears saturation, rain and 1.5 h of drying after."""
    humidity = relative_humidity(p, keys, days, ev, t)
    dew = clip((humidity - 88.0) / 9.0, 0.0, 1.0)
    today = local_day(t)
    rain = 0.0
    for day in range(today - 1, today + 1):
        i = day_index(p, keys, days, day)
        for c in _RAIN_COLUMNS:
            start, end, r = _event(days, i, c)
            if r <= 0.0 or t < start:
                continue
            rain = max(rain, 1.0 if t < end else np.exp(-(t - end) / (1.5 * HOUR_MS)))
    wet = 100.0 * max(dew, rain * p[RAIN_EXPOSED]) + channel(ev, CH_LEAF_WETNESS, t)
    return clip(wet, 0.0, 100.0)


# --- sea ------------------------------------------------------------------------------------


@njit(**PURE)
def tide_state(p, t):
    """(astronomical level in m, rate in m/h) at the site."""
    level, rate = tide(t, QINGDAO_AMPLITUDE_M, QINGDAO_PHASE_DEG, p[TIDE_LAG_DEG])
    return p[TIDE_GAIN] * level, p[TIDE_GAIN] * rate


@njit(**PURE)
def astronomical_level(p, t):
    """Astronomical tide level in m at the site."""
    return p[TIDE_GAIN] * astro_tide_level(t, QINGDAO_AMPLITUDE_M, QINGDAO_PHASE_DEG,
                                           p[TIDE_LAG_DEG])


@njit(**PURE)
def tide_level(p, keys, days, ev, t):
    """Level above mean sea level: harmonic tide + seasonal mean sea level (high in Aug) +
    inverse barometer (-1 cm/hPa) + a little weather surge + injected surge."""
    level = astronomical_level(p, t)
    pressure = air_pressure(p, keys, days, ev, t)
    return (level + 0.15 * seasonal(t, 225.0) - 0.01 * (pressure - 1013.25)
            + 0.04 * value_noise(keys[S_SURGE_REGION], t, 12.0 * HOUR_MS)
            + channel(ev, CH_SURGE, t))


@njit(**PURE)
def water_temperature_at(p, keys, ev, t, level):
    """Sea temperature for a tide ``level``: seasonal (Yellow Sea ~4.5 °C Feb, ~25.5 °C
    Aug; the bay swings more, deep cages less), a small afternoon maximum, slow anomalies,
    and in the bay the flood tide bringing offshore water (cooler in summer, warmer in
    winter)."""
    season = seasonal(t, p[SST_PEAK_DOY])
    return (p[SST_MEAN] + p[SST_ANNUAL_AMP] * season
            + p[SST_DIURNAL_AMP] * np.cos(_TAU * (local_hour(t) - 15.0) / 24.0)
            + 0.5 * value_noise(keys[S_SST_REGION], t, 4.0 * DAY_MS)
            + 0.2 * value_noise(keys[S_SST_SITE], t, 12.0 * HOUR_MS)
            - 0.25 * p[BAY] * season * level / 1.2
            + p[DEVICE_T_OFFSET] + channel(ev, CH_WATER_TEMPERATURE, t))


@njit(**PURE)
def water_temperature(p, keys, days, ev, t):
    return water_temperature_at(p, keys, ev, t, astronomical_level(p, t))


@njit(**PURE)
def salinity_at(p, keys, days, ev, t, level):
    """PSU for a tide ``level``: ~31 offshore, lower in Jiaozhou Bay; freshened in the
    summer wet season and for a few days after rain (more in the bay, where the rivers
    come in); saltier on the flood."""
    wet_season = 0.5 * (1.0 + seasonal(t, 235.0))
    dilution = (0.004 + 0.016 * p[BAY]) * rain_memory(p, keys, days, t, 8.0, 2.5 * DAY_MS, 0.0)
    return (p[SALINITY_BASE] - 0.7 * (0.5 + p[BAY]) * wet_season - dilution
            + 0.15 * p[BAY] * level / 1.2
            + 0.08 * value_noise(keys[S_SALINITY_SITE], t, 2.0 * DAY_MS)
            + channel(ev, CH_SALINITY, t))


@njit(**PURE)
def salinity(p, keys, days, ev, t):
    return salinity_at(p, keys, days, ev, t, astronomical_level(p, t))


@njit(**JIT)
def oxygen_saturation(celsius, psu):
    """Dissolved-oxygen saturation in mg/L at 1 atm, from temperature (°C) and salinity.

    Benson & Krause (1984), as given in APHA Standard Methods 4500-O and used by the USGS
    (Office of Water Quality Technical Memorandum 2011.03, "DOTABLES"):
      ln C = -139.34411 + 1.575701e5/T - 6.642308e7/T² + 1.243800e10/T³ - 8.621949e11/T⁴
             - S (0.017674 - 10.754/T + 2140.7/T²),   T in kelvin.
    """
    k = celsius + 273.15
    ln_c = (-139.34411 + 1.575701e5 / k - 6.642308e7 / k ** 2 + 1.243800e10 / k ** 3
            - 8.621949e11 / k ** 4 - psu * (0.017674 - 10.754 / k + 2140.7 / k ** 2))
    return np.exp(ln_c)


@njit(**PURE)
def _bloom(t):
    """Chlorophyll seasonality: a spring bloom (early April) and a larger summer one."""
    spring = max(0.0, seasonal(t, 95.0))
    summer = max(0.0, seasonal(t, 215.0))
    return 0.5 * spring ** 8 + 1.0 * summer ** 4


@njit(**PURE)
def oxygen_fraction(p, keys, days, ev, t, water_t):
    """DO as a fraction of saturation.

    Respiration keeps water below saturation (more so when warm, and in crowded cages);
    it never exceeds 0.96 without light. Photosynthesis adds up to ~0.15 in sunlight:
    supersaturation happens only while the sun is up.
    """
    respired = (p[DO_FRACTION] + p[DEVICE_DO_OFFSET] - 0.005 * (water_t - 15.0)
                + 0.02 * value_noise(keys[S_OXYGEN_SITE], t, DAY_MS))
    dark = smooth_min(respired, 0.96, 0.02)
    light = min(1.2, global_radiation(p, keys, days, t) / 800.0)
    photo = p[PHOTOSYNTHESIS] * (0.6 + 0.4 * _bloom(t)) * light
    return max(0.02, dark + photo + channel(ev, CH_OXYGEN, t))


@njit(**PURE)
def dissolved_oxygen(p, keys, days, ev, t):
    level = astronomical_level(p, t)  # once, for both
    water_t = water_temperature_at(p, keys, ev, t, level)
    psu = salinity_at(p, keys, days, ev, t, level)
    return oxygen_saturation(water_t, psu) * oxygen_fraction(p, keys, days, ev, t, water_t)


@njit(**PURE)
def water_ph(p, keys, days, ev, t):
    """Seawater pH ~8.1 (bay ~7.95), rising with photosynthesis and falling with
    respiration: coupled to the oxygen saturation fraction (CO2 is O2's mirror image)."""
    water_t = water_temperature(p, keys, days, ev, t)
    fraction = oxygen_fraction(p, keys, days, ev, t, water_t)
    return (8.08 - 0.12 * p[BAY] + 0.8 * (fraction - 0.95)
            + 0.03 * value_noise(keys[S_PH_SITE], t, 3.0 * DAY_MS))


@njit(**PURE)
def wave_height_clean(p, keys, days, t):
    """Significant wave height in m: wind sea (~0.011 U², well short of the open-ocean
    0.025 U²: the Yellow Sea fetch is limited) two hours behind the wind, plus regional
    swell, scaled by the site's exposure."""
    wind = wind_speed_clean(p, keys, days, t - 2 * HOUR_MS)
    swell = 0.3 * max(0.15, 1.0 + 0.6 * value_noise(keys[S_SWELL_REGION], t,
                                                     30.0 * HOUR_MS))
    return p[WAVE_EXPOSURE] * (0.1 + 0.011 * wind * wind + swell)


@njit(**PURE)
def wave_height(p, keys, days, ev, t):
    return wave_height_clean(p, keys, days, t) + channel(ev, CH_WAVE_HEIGHT, t)


@njit(**PURE)
def wave_period(p, keys, days, ev, t):
    """Peak period in s, growing with the square root of the height."""
    height = wave_height(p, keys, days, ev, t)
    return 2.8 + 3.0 * np.sqrt(max(height, 0.0))


@njit(**PURE)
def turbidity(p, keys, days, ev, t):
    """NTU: a base (bay waters are murkier), resuspension by waves (~Hs²) and by strong
    tidal currents in the bay, river runoff in the days after rain."""
    _, rate = tide_state(p, t)
    current = p[CURRENT_GAIN] * rate
    waves = wave_height_clean(p, keys, days, t)
    runoff = 0.25 * p[BAY] * rain_memory(p, keys, days, t, 4.0, DAY_MS, 0.0)
    clean = (p[TURBIDITY_BASE] * (1.0 + 0.8 * p[BAY] * current * current)
             + 2.0 * waves * waves + runoff)
    return clean * (1.0 + channel(ev, CH_TURBIDITY, t))


@njit(**PURE)
def chlorophyll_a(p, keys, days, ev, t):
    """µg/L: seasonal blooms, a pulse ~4 days after rain (nutrients), and the midday dip of
    in-vivo fluorescence (non-photochemical quenching) in bright sun."""
    light = min(1.0, global_radiation(p, keys, days, t) / 800.0)
    nutrients = 0.04 * p[BAY] * rain_memory(p, keys, days, t, 12.0, 0.0, 4.0 * DAY_MS)
    slow = 1.0 + 0.25 * value_noise(keys[S_CHLOROPHYLL_SITE], t, 3.0 * DAY_MS)
    return (p[CHLOROPHYLL_BASE] * (1.0 + 2.0 * _bloom(t)) * slow + nutrients) * (
        1.0 - 0.3 * light)


@njit(**PURE)
def current_vector(p, keys, days, ev, t):
    """(east, north) current in m/s: the tidal stream along the channel axis is the rate
    of change of the level (flood while rising), plus a residual drift and wind drift."""
    _, rate = tide_state(p, t)
    along = p[CURRENT_GAIN] * rate
    axis = p[CURRENT_AXIS_DEG] * np.pi / 180.0
    residual = 0.05 * (1.0 + 0.5 * value_noise(keys[S_CURRENT_SITE], t,
                                               DAY_MS))
    drift_dir = p[RESIDUAL_CURRENT_DEG] * np.pi / 180.0
    wind = wind_speed(p, keys, days, ev, t)
    downwind = (wind_direction(p, keys, days, ev, t) + 180.0) * np.pi / 180.0
    east = along * np.sin(axis) + residual * np.sin(drift_dir) + 0.015 * wind * np.sin(downwind)
    north = along * np.cos(axis) + residual * np.cos(drift_dir) + 0.015 * wind * np.cos(downwind)
    return east, north


@njit(**PURE)
def current_speed(p, keys, days, ev, t):
    east, north = current_vector(p, keys, days, ev, t)
    return np.sqrt(east * east + north * north)


@njit(**PURE)
def current_direction(p, keys, days, ev, t):
    """Direction the water flows towards, degrees clockwise from north."""
    east, north = current_vector(p, keys, days, ev, t)
    return (np.arctan2(east, north) * 180.0 / np.pi) % 360.0


# --- device health -------------------------------------------------------------------------


@njit(**PURE)
def battery_voltage(p, keys, days, ev, t):
    """A 12 V lead-acid battery on a solar panel: ~12.85 V at dusk sagging to ~12.5 V by
    dawn under the night load, recovering over the morning, lifted towards ~14.1 V
    (absorption) while the panel charges."""
    sin_elev, solar_hours, half_day = sun_at(p, keys, days, t)
    since_sunset = hours_since_sunset(solar_hours, half_day)
    if since_sunset >= 0.0:
        spent = since_sunset / (24.0 - 2.0 * half_day)
    else:
        spent = max(0.0, 1.0 - (solar_hours - (12.0 - half_day)) / 3.0)
    resting = 12.85 - 0.35 * spent
    charge = 0.9 * min(1.0, radiation_under(p, keys, days, t, sin_elev) / 350.0)
    return resting + (14.1 - resting) * charge


@njit(**PURE)
def signal_rssi(p, keys, days, ev, t):
    """dBm: the site's link budget, slow fading, rain fade, and at sea the waves."""
    fading = (3.0 * value_noise(keys[S_RSSI_SITE], t, 2.0 * HOUR_MS)
              + 1.5 * value_noise(keys[S_RSSI_DEVICE], t, 20.0 * 60_000.0))
    rain = min(1.0, rain_rate(p, keys, days, t) / 2.0)
    waves = wave_height_clean(p, keys, days, t) if p[WAVE_EXPOSURE] > 0.0 else 0.0
    return p[RSSI_BASE] + fading - 3.0 * rain - 2.0 * waves + channel(ev, CH_RSSI, t)


# --- the model table ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Model:
    """How one metric is simulated in one setting.

    ``noise`` is the sensor's noise σ, in the metric's unit or, when ``relative``, as a
    fraction of the value (radiation, turbidity: a zero stays zero). ``given``: a metric
    of the same device whose clean value this model is a function of; the renderer hands
    it over instead of computing it twice (``clean_block``'s ``given``). Only latents
    shared by a whole device qualify: models never read series-level random streams.
    """

    id: int
    metric: str
    setting: str  # "open" (outdoors or in the water), "greenhouse", "barn"
    noise: float
    relative: bool = False
    given: str | None = None


# Model ids index the dispatch in ``clean_block``; keep the two in the same order.
_MODEL_TABLE = (
    ("air_temperature", "open", 0.08, False, None),
    ("air_temperature", "greenhouse", 0.08, False, None),
    ("air_temperature", "barn", 0.08, False, None),
    ("air_humidity", "open", 0.6, False, "air_temperature"),
    ("air_humidity", "greenhouse", 0.6, False, "air_temperature"),
    ("air_humidity", "barn", 0.6, False, None),
    ("air_pressure", "open", 0.08, False, None),
    ("wind_speed", "open", 0.10, True, None),
    ("wind_direction", "open", 6.0, False, None),
    ("rainfall", "open", 0.0, False, None),
    ("solar_radiation", "open", 0.02, True, None),
    ("par", "open", 0.02, True, None),
    ("soil_temperature", "open", 0.05, False, None),
    ("soil_temperature", "greenhouse", 0.05, False, None),
    ("soil_moisture", "open", 0.15, False, None),
    ("soil_ec", "open", 0.02, True, "soil_moisture"),
    ("soil_ph", "open", 0.02, False, None),
    ("leaf_wetness", "open", 0.02, True, None),
    ("co2", "greenhouse", 8.0, False, None),
    ("co2", "barn", 15.0, False, None),
    ("ammonia", "barn", 0.3, False, "air_temperature"),
    ("water_temperature", "open", 0.01, False, None),
    ("salinity", "open", 0.02, False, None),
    ("dissolved_oxygen", "open", 0.03, False, None),
    ("water_ph", "open", 0.01, False, None),
    ("turbidity", "open", 0.06, True, None),
    ("chlorophyll_a", "open", 0.05, True, None),
    ("tide_level", "open", 0.01, False, None),
    ("wave_height", "open", 0.05, True, None),
    ("wave_period", "open", 0.2, False, None),
    ("current_speed", "open", 0.08, True, None),
    ("current_direction", "open", 8.0, False, None),
    ("battery_voltage", "open", 0.01, False, None),
    ("signal_rssi", "open", 1.5, False, None),
)
MODELS: dict[tuple[str, str], Model] = {
    (metric, setting): Model(i, metric, setting, noise, relative, given)
    for i, (metric, setting, noise, relative, given) in enumerate(_MODEL_TABLE)
}


def model_for(metric: str, setting: str) -> Model:
    """The model of ``metric`` in ``setting``, falling back to the open-air one."""
    found = MODELS.get((metric, setting)) or MODELS.get((metric, "open"))
    if found is None:
        raise KeyError(f"no model for metric {metric!r} in setting {setting!r}")
    return found


@njit(**PURE)
def clean_block(model, p, keys, days, ev, first_ms, step_ms, count, out, given):
    """``out[j]`` = clean value of model ``model`` (an index of ``_MODEL_TABLE``) at
    ``first_ms + j * step_ms``. The dispatch sits outside the loops so each loop calls
    its model directly (and the compiler can inline and hoist).

    ``given``: the clean values of the model's ``given`` metric at the same instants
    (from a sibling series of the device), or an empty array to compute them here.
    """
    if model == 0:
        for j in range(count):
            out[j] = air_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 1:
        for j in range(count):
            out[j] = greenhouse_air_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 2:
        for j in range(count):
            out[j] = barn_air_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 3:
        if given.shape[0]:
            for j in range(count):
                t = first_ms + j * step_ms
                out[j] = humidity_at(p, keys, days, ev, t, given[j])
        else:
            for j in range(count):
                out[j] = relative_humidity(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 4:
        if given.shape[0]:
            for j in range(count):
                t = first_ms + j * step_ms
                out[j] = greenhouse_humidity_at(given[j])
        else:
            for j in range(count):
                out[j] = greenhouse_humidity(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 5:
        for j in range(count):
            out[j] = barn_humidity(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 6:
        for j in range(count):
            out[j] = air_pressure(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 7:
        for j in range(count):
            out[j] = wind_speed(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 8:
        for j in range(count):
            out[j] = wind_direction(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 9:
        for j in range(count):
            out[j] = rainfall(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 10:
        for j in range(count):
            out[j] = solar_radiation(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 11:
        for j in range(count):
            out[j] = par(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 12:
        for j in range(count):
            out[j] = soil_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 13:
        for j in range(count):
            out[j] = greenhouse_soil_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 14:
        for j in range(count):
            out[j] = soil_moisture(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 15:
        if given.shape[0]:
            for j in range(count):
                t = first_ms + j * step_ms
                out[j] = soil_ec_at(p, keys, t, given[j])
        else:
            for j in range(count):
                out[j] = soil_ec(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 16:
        for j in range(count):
            out[j] = soil_ph(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 17:
        for j in range(count):
            out[j] = leaf_wetness(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 18:
        for j in range(count):
            out[j] = greenhouse_co2(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 19:
        for j in range(count):
            out[j] = barn_co2(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 20:
        if given.shape[0]:
            for j in range(count):
                t = first_ms + j * step_ms
                out[j] = ammonia_at(t, given[j])
        else:
            for j in range(count):
                out[j] = ammonia(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 21:
        for j in range(count):
            out[j] = water_temperature(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 22:
        for j in range(count):
            out[j] = salinity(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 23:
        for j in range(count):
            out[j] = dissolved_oxygen(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 24:
        for j in range(count):
            out[j] = water_ph(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 25:
        for j in range(count):
            out[j] = turbidity(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 26:
        for j in range(count):
            out[j] = chlorophyll_a(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 27:
        for j in range(count):
            out[j] = tide_level(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 28:
        for j in range(count):
            out[j] = wave_height(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 29:
        for j in range(count):
            out[j] = wave_period(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 30:
        for j in range(count):
            out[j] = current_speed(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 31:
        for j in range(count):
            out[j] = current_direction(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 32:
        for j in range(count):
            out[j] = battery_voltage(p, keys, days, ev, first_ms + j * step_ms)
    elif model == 33:
        for j in range(count):
            out[j] = signal_rssi(p, keys, days, ev, first_ms + j * step_ms)
    else:
        out[:count] = np.nan
