"""The sun and the tide-raising astronomy, as pure functions of time in ms (UTC).

Sun: the NOAA "General Solar Position Calculations" (Spencer 1971 Fourier series for
the declination and the equation of time), the hour angle from longitude, and
``sin(elevation) = sin(lat) sin(decl) + cos(lat) cos(decl) cos(hour angle)``. Clear-sky
global horizontal irradiance from Haurwitz (1945): ``1098 sin(h) exp(-0.057 / sin(h))``.
Good to a fraction of a degree, which is far below what a field sensor can tell.

Tide: astronomical arguments from the mean longitudes of the Moon (s), the Sun (h) and
the lunar perigee (p) (Meeus, "Astronomical Algorithms", ch. 47; Doodson's notation), so
spring tides fall near new and full moon. Nodal modulation (the 18.6-year f and u) is left
out: it changes M2 by under 4 %.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from tidefield.protocol.units import DAY_MS, HOUR_MS

from ._jit import PURE

LOCAL_OFFSET_MS = 8 * HOUR_MS  # China Standard Time, UTC+8, no daylight saving
EPOCH_2000_MS = 946_684_800_000  # 2000-01-01T00:00Z: day-of-year origin
J2000_MS = 946_728_000_000  # 2000-01-01T12:00Z: epoch of the lunar theory
YEAR_DAYS = 365.2422  # tropical year: seasons repeat with it
YEAR_MS = YEAR_DAYS * DAY_MS
DEG = np.pi / 180.0

# --- calendar -----------------------------------------------------------------------


@njit(**PURE)
def day_of_year(t_ms):
    """Days since 1 January 00:00 UTC, as a float in [0, 365.24) (tropical-year cycle)."""
    return ((t_ms - EPOCH_2000_MS) % YEAR_MS) / DAY_MS


_YEAR_RAD_PER_DAY = 2.0 * np.pi / YEAR_DAYS
_DAYS_AT_2000 = EPOCH_2000_MS / DAY_MS


@njit(**PURE)
def seasonal(t_ms, peak_doy):
    """cos of the annual cycle: 1 on day ``peak_doy``, -1 half a year away.

    cos is periodic, so no modulo: the phase is counted from 2000 straight on.
    """
    return np.cos(_YEAR_RAD_PER_DAY * (t_ms / DAY_MS - _DAYS_AT_2000 - peak_doy))


@njit(**PURE)
def semiannual(t_ms, peak_doy):
    """cos of the half-year cycle: 1 on day ``peak_doy`` and half a year later."""
    return np.cos(2.0 * _YEAR_RAD_PER_DAY * (t_ms / DAY_MS - _DAYS_AT_2000 - peak_doy))


@njit(**PURE)
def local_day(t_ms):
    """Day number (since 1970-01-01) in Beijing time: day-indexed events use it."""
    return (t_ms + LOCAL_OFFSET_MS) // DAY_MS


@njit(**PURE)
def local_day_start_ms(day):
    return day * DAY_MS - LOCAL_OFFSET_MS


@njit(**PURE)
def local_hour(t_ms):
    """Clock hour in Beijing time, in [0, 24)."""
    return ((t_ms + LOCAL_OFFSET_MS) % DAY_MS) / HOUR_MS


# --- sun ------------------------------------------------------------------------------


@njit(**PURE)
def sun_of_day(sin_lat, cos_lat, t_ms):
    """The slowly varying part of the sun's position at ``t_ms``: (sin declination,
    cos declination, equation of time in hours, half day length in hours).

    Half day length is the sunrise hour angle in hours (geometric horizon): sunrise is at
    solar time ``12 - half_day``, sunset at ``12 + half_day``. The multiple angles of the
    Fourier series come from one sin/cos pair by the double- and triple-angle identities.
    """
    gamma = _YEAR_RAD_PER_DAY * (t_ms / DAY_MS - _DAYS_AT_2000 - 0.5)
    c1 = np.cos(gamma)
    s1 = np.sin(gamma)
    c2 = 2.0 * c1 * c1 - 1.0
    s2 = 2.0 * s1 * c1
    c3 = c1 * (4.0 * c1 * c1 - 3.0)
    s3 = s1 * (3.0 - 4.0 * s1 * s1)
    decl = (0.006918 - 0.399912 * c1 + 0.070257 * s1 - 0.006758 * c2 + 0.000907 * s2
            - 0.002697 * c3 + 0.00148 * s3)
    eot_min = 229.18 * (0.000075 + 0.001868 * c1 - 0.032077 * s1 - 0.014615 * c2
                        - 0.040849 * s2)
    sin_decl = np.sin(decl)
    cos_decl = np.cos(decl)
    cos_h0 = min(1.0, max(-1.0, -(sin_lat * sin_decl) / (cos_lat * cos_decl)))
    return sin_decl, cos_decl, eot_min / 60.0, np.arccos(cos_h0) / (15.0 * DEG)


@njit(**PURE)
def sun_position(sin_lat, cos_lat, lon_deg, t_ms, sin_decl, cos_decl, eot_hours):
    """(sin of solar elevation, local solar time in hours) for the day's declination."""
    utc_hours = (t_ms % DAY_MS) / HOUR_MS
    solar_hours = (utc_hours + lon_deg / 15.0 + eot_hours) % 24.0
    hour_angle = (solar_hours - 12.0) * (15.0 * DEG)
    return sin_lat * sin_decl + cos_lat * cos_decl * np.cos(hour_angle), solar_hours


@njit(**PURE)
def sun(sin_lat, cos_lat, lon_deg, t_ms):
    """(sin of solar elevation, local solar time in hours, half day length in hours), the
    full formula at ``t_ms``. The latitude comes as its sine and cosine."""
    sin_decl, cos_decl, eot_hours, half_day = sun_of_day(sin_lat, cos_lat, t_ms)
    sin_elev, solar_hours = sun_position(sin_lat, cos_lat, lon_deg, t_ms, sin_decl, cos_decl,
                                         eot_hours)
    return sin_elev, solar_hours, half_day


@njit(**PURE)
def clear_sky_ghi(sin_elev):
    """Clear-sky global horizontal irradiance in W/m² (Haurwitz 1945); 0 below horizon."""
    if sin_elev <= 0.0:
        return 0.0
    return 1098.0 * sin_elev * np.exp(-0.057 / sin_elev)


@njit(**PURE)
def hours_since_sunset(solar_hours, half_day):
    """Hours since the last sunset if the sun is down, else -1."""
    sunrise = 12.0 - half_day
    sunset = 12.0 + half_day
    if solar_hours >= sunset:
        return solar_hours - sunset
    if solar_hours < sunrise:
        return solar_hours + 24.0 - sunset
    return -1.0


# --- tide -----------------------------------------------------------------------------

# Mean longitudes in degrees: value at J2000 and rate per Julian century (Meeus 47.1-47.7).
S0, S_RATE = 218.3164477, 481267.88123421  # Moon
H0, H_RATE = 280.46646, 36000.76983  # Sun
P0, P_RATE = 83.3532465, 4069.0137287  # lunar perigee
_CENTURY_MS = 36525.0 * DAY_MS

# Constituents as Doodson multipliers of (T, s, h, p) plus a phase in degrees, where
# T = 180° + 15°/h * UT is the mean solar hour angle at Greenwich. Speeds follow.
CONSTITUENTS = ("M2", "S2", "N2", "K1", "O1")
DOODSON = np.array([
    # T    s     h    p   phase
    [2.0, -2.0, 2.0, 0.0, 0.0],  # M2  principal lunar semidiurnal   12.4206 h
    [2.0, 0.0, 0.0, 0.0, 0.0],  # S2  principal solar semidiurnal   12.0000 h
    [2.0, -3.0, 2.0, 1.0, 0.0],  # N2  larger lunar elliptic        12.6583 h
    [1.0, 0.0, 1.0, 0.0, 90.0],  # K1  luni-solar diurnal            23.9345 h
    [1.0, -2.0, 1.0, 0.0, -90.0],  # O1  principal lunar diurnal     25.8193 h
])
_RATES_DEG_PER_MS = np.array([15.0 / HOUR_MS, S_RATE / _CENTURY_MS,
                              H_RATE / _CENTURY_MS, P_RATE / _CENTURY_MS])
SPEEDS_DEG_PER_HOUR = DOODSON[:, :4] @ _RATES_DEG_PER_MS * HOUR_MS
PERIODS_HOURS = 360.0 / SPEEDS_DEG_PER_HOUR

# Qingdao (Xiaomaidao / Dagang gauges, rounded): amplitude in m, Greenwich phase lag g in
# degrees. The brief's M2 ~1.2, S2 ~0.4, K1 ~0.25, O1 ~0.2; N2 from the usual N2/M2 ~0.2.
QINGDAO_AMPLITUDE_M = np.array([1.20, 0.40, 0.24, 0.25, 0.20])
QINGDAO_PHASE_DEG = np.array([105.0, 155.0, 85.0, 300.0, 255.0])


@njit(**PURE)
def _arguments(t_ms):
    """Astronomical arguments (T, s, h, p) in degrees at ``t_ms``."""
    centuries = (t_ms - J2000_MS) / _CENTURY_MS
    hour_angle = 180.0 + 15.0 * ((t_ms % DAY_MS) / HOUR_MS)
    # no "% 360": cos takes the large angles (~1e5 degrees a century) without loss
    return (hour_angle, S0 + S_RATE * centuries, H0 + H_RATE * centuries,
            P0 + P_RATE * centuries)


@njit(**PURE)
def tide(t_ms, amplitude, phase_deg, lag_deg):
    """(level in m, rate of change in m/h) of the harmonic tide.

    ``amplitude`` and ``phase_deg`` are per constituent (CONSTITUENTS order); ``lag_deg``
    delays the whole semidiurnal band by that many degrees of M2 (a site further up a
    bay sees high water later), the diurnal band by half as much.
    """
    hour_angle, moon, sun_, perigee = _arguments(t_ms)
    level = 0.0
    rate = 0.0
    for i in range(DOODSON.shape[0]):
        arg = _constituent_argument(i, hour_angle, moon, sun_, perigee, phase_deg, lag_deg)
        level += amplitude[i] * np.cos(arg)
        rate -= amplitude[i] * np.sin(arg) * SPEEDS_DEG_PER_HOUR[i] * DEG
    return level, rate


@njit(**PURE)
def tide_level(t_ms, amplitude, phase_deg, lag_deg):
    """The level alone (half the trigonometry of ``tide``)."""
    hour_angle, moon, sun_, perigee = _arguments(t_ms)
    level = 0.0
    for i in range(DOODSON.shape[0]):
        arg = _constituent_argument(i, hour_angle, moon, sun_, perigee, phase_deg, lag_deg)
        level += amplitude[i] * np.cos(arg)
    return level


@njit(**PURE)
def _constituent_argument(i, hour_angle, moon, sun_, perigee, phase_deg, lag_deg):
    row = DOODSON[i]
    band_lag = lag_deg if row[0] == 2.0 else 0.5 * lag_deg
    return (row[0] * hour_angle + row[1] * moon + row[2] * sun_ + row[3] * perigee
            + row[4] - phase_deg[i] - band_lag) * DEG
