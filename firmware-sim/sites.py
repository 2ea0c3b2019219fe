"""From a registry site to the parameter vector of each of its series.

Three layers, each a table rather than branches:

1. ``_KIND_PARAMS``: what a kind of site is like (an orchard irrigates every 5 days in
   the growing season, a cage farm's water is less oxygenated, a port is sheltered).
2. Geography: continentality by district (Pingdu and Laixi, 60-80 km inland, have twice
   the coast's diurnal range and colder winters), Jiaozhou Bay membership from position
   (fresher, murkier, warmer in summer), offshore kinds.
3. A seeded jitter per site, so two orchards side by side are not twins.

Everything is a pure function of (site, device, metric, seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

import numpy as np

from tidefield.protocol.registry import Site

from . import physics as ph
from .rng import stream_key

# --- geography ---------------------------------------------------------------------------

# 0 on the open coast, 1 for the inland plain around Pingdu and Laixi.
CONTINENTALITY = MappingProxyType({
    "shinan": 0.05, "shibei": 0.10, "licang": 0.20, "laoshan": 0.15, "chengyang": 0.40,
    "huangdao": 0.25, "jimo": 0.50, "jiaozhou": 0.65, "pingdu": 1.00, "laixi": 0.95,
})

# Jiaozhou Bay as an ellipse (centre, semi-axes in degrees); membership fades over its rim
# so the bay mouth is half "bay".
_BAY_CENTRE = (120.24, 36.14)
_BAY_AXES = (0.13, 0.10)

OFFSHORE_KINDS = frozenset({"cage_farm", "ecological_buoy"})

# Where each kind of site keeps its sensors: the model variants of physics.MODELS.
SETTING_OF_KIND = MappingProxyType({"greenhouse": "greenhouse", "livestock": "barn"})
OPEN_AIR_TEMPLATES = frozenset({"gw"})  # the gateway hangs outside even at a greenhouse


def bay_membership(lat: float, lon: float) -> float:
    """1 inside Jiaozhou Bay, 0 outside, in between across the mouth and shores."""
    dx = (lon - _BAY_CENTRE[0]) / _BAY_AXES[0]
    dy = (lat - _BAY_CENTRE[1]) / _BAY_AXES[1]
    return min(1.0, max(0.0, (1.2 - math.hypot(dx, dy)) / 0.4))


# --- per kind ---------------------------------------------------------------------------

_COMMON = {
    "wind_factor": 1.0, "showers": 0.2, "wave_exposure": 0.0, "bay": 0.0,
    "sst_mean": 15.0, "sst_annual_amp": 10.6, "sst_peak_doy": 228.0, "sst_diurnal_amp": 0.25,
    "salinity_base": 31.6, "do_fraction": 0.93, "photosynthesis": 0.10,
    "chlorophyll_base": 2.0, "turbidity_base": 2.5, "tide_gain": 1.0, "tide_lag_deg": 0.0,
    "current_gain": 0.8, "theta_dry": 10.0, "theta_span": 32.0, "soil_base": 4.0,
    "drying_rate": 0.22, "irrigation_every_days": 0.0, "irrigation_amount": 0.0,
    "irrigation_hour": 7.0, "irrigation_first_doy": 0.0, "irrigation_last_doy": 366.0,
    "rain_exposed": 1.0, "soil_ec_base": 0.5, "soil_ph_base": 6.5, "transmission": 1.0,
    "device_t_offset": 0.0, "device_do_offset": 0.0,
}

_SOIL = {  # the agricultural kinds share a soil unless they say otherwise
    "theta_dry": 10.0, "theta_span": 32.0, "soil_base": 4.0, "drying_rate": 0.22,
}

_KIND_PARAMS = MappingProxyType({
    # drip-irrigated daily under film, no rain inside, fertigated soil
    "greenhouse": {**_SOIL, "theta_dry": 14.0, "theta_span": 31.0, "soil_base": 3.0,
                   "drying_rate": 0.40, "irrigation_every_days": 1.0,
                   "irrigation_amount": 4.0, "irrigation_hour": 7.5, "rain_exposed": 0.0,
                   "soil_ec_base": 1.6, "soil_ph_base": 6.6, "transmission": 0.62},
    # irrigated every 5 days from April to mid-October
    "orchard": {**_SOIL, "irrigation_every_days": 5.0, "irrigation_amount": 9.0,
                "irrigation_hour": 6.5, "irrigation_first_doy": 90.0,
                "irrigation_last_doy": 290.0, "soil_ec_base": 0.45, "soil_ph_base": 6.3},
    # acid soil; sprinklers in the dry early summer and summer
    "tea_garden": {**_SOIL, "theta_dry": 12.0, "theta_span": 30.0, "soil_base": 5.0,
                   "drying_rate": 0.20, "irrigation_every_days": 7.0,
                   "irrigation_amount": 7.0, "irrigation_hour": 17.0,
                   "irrigation_first_doy": 120.0, "irrigation_last_doy": 260.0,
                   "soil_ec_base": 0.30, "soil_ph_base": 5.2},
    # wheat/maize: a few big spring waterings, otherwise rain-fed
    "field_crop": {**_SOIL, "irrigation_every_days": 12.0, "irrigation_amount": 12.0,
                   "irrigation_hour": 8.0, "irrigation_first_doy": 70.0,
                   "irrigation_last_doy": 160.0, "soil_ec_base": 0.50, "soil_ph_base": 6.8},
    "livestock": {},
    "aquaculture_raft": {"wave_exposure": 0.6, "do_fraction": 0.92, "photosynthesis": 0.12,
                         "chlorophyll_base": 3.0, "turbidity_base": 3.0},
    # crowded fish respire: lower oxygen; deeper water: smaller and later seasonal swing
    "cage_farm": {"wave_exposure": 0.95, "wind_factor": 1.35, "sst_mean": 14.6,
                  "sst_annual_amp": 9.8, "sst_peak_doy": 240.0, "sst_diurnal_amp": 0.1,
                  "do_fraction": 0.84, "photosynthesis": 0.08, "chlorophyll_base": 1.5,
                  "turbidity_base": 1.5, "current_gain": 0.6},
    "marine_ranch": {"wave_exposure": 0.8, "wind_factor": 1.2, "do_fraction": 0.93,
                     "photosynthesis": 0.10, "chlorophyll_base": 2.0, "turbidity_base": 2.5},
    "port_terminal": {"wave_exposure": 0.45, "wind_factor": 1.1},
    "ecological_buoy": {"wave_exposure": 1.0, "wind_factor": 1.35, "do_fraction": 0.95,
                        "photosynthesis": 0.08, "chlorophyll_base": 1.0,
                        "turbidity_base": 1.2},
    "coastal_station": {"wave_exposure": 0.7, "wind_factor": 1.1, "do_fraction": 0.92,
                        "photosynthesis": 0.12, "chlorophyll_base": 2.5,
                        "turbidity_base": 4.0},
})

# Per device template: the interior sonde of a cage sits among the fish.
_DEVICE_PARAMS = MappingProxyType({
    "sonde2": {"device_t_offset": 0.05, "device_do_offset": -0.09},
})


def _unit(seed: int, site_id: str, name: str) -> float:
    """A uniform in [0, 1) for one named jitter of one site."""
    return int(stream_key(seed, site_id, "param", name)) / 2.0**64


@dataclass(frozen=True, slots=True)
class SiteClimate:
    """The named parameters of one site (before device and series specifics)."""

    values: MappingProxyType

    def vector(self, device_template: str, interval_s: int) -> np.ndarray:
        params = {**self.values, **_DEVICE_PARAMS.get(device_template, {}),
                  "interval_s": float(interval_s)}
        missing = set(ph.PARAM_NAMES) - params.keys()
        if missing:
            raise KeyError(f"parameters without a value: {sorted(missing)}")
        return np.array([params[name] for name in ph.PARAM_NAMES], dtype=np.float64)


def site_climate(site: Site, seed: int) -> SiteClimate:
    """Parameters of ``site`` (a registry Site) for ``seed``."""
    def u(name: str) -> float:
        return _unit(seed, site.id, name)

    ocean = site.domain == "ocean"
    offshore = site.kind in OFFSHORE_KINDS
    c = 0.0 if ocean else CONTINENTALITY.get(site.district, 0.5)
    bay = bay_membership(site.lat, site.lon) if ocean else 0.0
    params = {**_COMMON, **_KIND_PARAMS[site.kind], "lat": site.lat, "lon": site.lon,
              "sin_lat": math.sin(math.radians(site.lat)),
              "cos_lat": math.cos(math.radians(site.lat))}

    # air: inland colder winters, hotter summers, earlier peak, twice the diurnal range
    params.update({
        # 13.2 °C offsets the ~0.4 °C that rain and fronts take off the yearly mean
        "air_mean": 13.2 - 0.5 * c + 0.3 * (u("air_mean") - 0.5),
        "air_annual_amp": 12.6 + 2.0 * c - (1.2 if offshore else 0.0),
        "air_peak_doy": 208.0 - 10.0 * c + (8.0 if offshore else 0.0),
        "air_diurnal_amp": (1.0 if offshore else 2.6 + 3.2 * c) * (0.9 + 0.2 * u("diurnal")),
        "dewpoint_offset": (1.0 if ocean else -1.5 * c) + 0.6 * (u("dew") - 0.5),
        "showers": 0.1 if ocean else 0.15 + 0.2 * c,
    })
    if not ocean:
        params["wind_factor"] = (1.0 - 0.3 * c) * (0.9 + 0.2 * u("wind"))

    if ocean:
        params.update({
            "bay": bay,
            "sst_mean": params["sst_mean"] - 0.2 * bay,
            "sst_annual_amp": params["sst_annual_amp"] + 1.0 * bay,
            "sst_diurnal_amp": params["sst_diurnal_amp"] + 0.2 * bay,
            "salinity_base": params["salinity_base"] - 1.0 * bay + 0.4 * (u("salinity") - 0.5),
            "do_fraction": params["do_fraction"] + 0.03 * (u("oxygen") - 0.5),
            "chlorophyll_base": params["chlorophyll_base"] * (1.0 + 0.5 * bay)
            * (0.8 + 0.45 * u("chlorophyll")),
            "turbidity_base": params["turbidity_base"] * (1.0 + 1.0 * bay)
            * (0.8 + 0.45 * u("turbidity")),
            "wave_exposure": params["wave_exposure"] * (1.0 - 0.4 * bay),
            # the bay's narrow mouth amplifies and delays the tide a little
            "tide_gain": 1.0 + 0.08 * bay - (0.08 if offshore else 0.0),
            "tide_lag_deg": 10.0 * bay + 6.0 * u("tide_lag"),
            "current_gain": params["current_gain"] * (1.0 + 0.5 * bay),
        })
    params.update({
        "current_axis_deg": 180.0 * u("current_axis"),
        "residual_current_deg": 360.0 * u("residual_current"),
        "theta_dry": params["theta_dry"] + 3.0 * (u("theta") - 0.5),
        "irrigation_hour": params["irrigation_hour"] + 1.0 * (u("irrigation_hour") - 0.5),
        "irrigation_phase": math.floor(u("irrigation_phase")
                                       * max(params["irrigation_every_days"], 1.0)),
        "soil_ec_base": params["soil_ec_base"] * (0.85 + 0.3 * u("ec")),
        "soil_ph_base": params["soil_ph_base"] + 0.6 * (u("ph") - 0.5),
        "rssi_base": ((-98.0 if offshore else -88.0) if ocean else -72.0 - 16.0 * c)
        + 12.0 * (u("rssi") - 0.5),
    })
    return SiteClimate(MappingProxyType(params))


def series_keys(seed: int, site_id: str, device_id: str, metric: str) -> np.ndarray:
    """The random-stream keys of one series (physics.STREAM_NAMES order).

    A stream "latent@scope" belongs to the region (the same for every site: weather is
    regional), the site, the device or the series, and is keyed by (seed, owner, latent).
    """
    owners = {"region": "region", "site": site_id, "device": device_id,
              "series": f"{site_id}/{device_id}/{metric}"}
    keys = []
    for name in ph.STREAM_NAMES:
        latent, scope = name.split("@")
        keys.append(_owner_key(seed, owners[scope], latent))
    return np.array(keys, dtype=np.uint64)


@lru_cache(maxsize=65536)
def _owner_key(seed: int, owner: str, latent: str) -> np.uint64:
    return stream_key(seed, owner, latent)


def setting_of(site_kind: str, device_template: str) -> str:
    """Where a device's sensors are: "greenhouse", "barn" or "open"."""
    if device_template in OPEN_AIR_TEMPLATES:
        return "open"
    return SETTING_OF_KIND.get(site_kind, "open")
