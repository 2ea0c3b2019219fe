"""The detector's tunable parameters: one typed, validated object.

Defaults were tuned on firmware-sim seed 11 (see docs/detection.md); the API's re-score
endpoint and ``tidefield detect score-csv`` accept any of them.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tidefield.protocol.units import DAY_MS, HOUR_MS

from ._layout import PARAM_COLUMNS


class DetectorParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    warm_n: int = Field(150, ge=0, le=100_000,
                        description="readings a series needs before spikes, stuck and noise "
                                    "are scored")
    gap_factor: float = Field(2.5, ge=1.0, le=1000.0,
                              description="a gap longer than this many intervals is a gap")
    stuck_min_run: int = Field(12, ge=2, le=100_000,
                               description="fewest repeats of one value that can be stuck")
    stuck_factor: float = Field(3.0, ge=1.0, le=1000.0,
                                description="stuck: a run this many times the longest the "
                                            "series showed lately")
    flat_share: float = Field(0.2, ge=0.0, le=1.0,
                              description="a series with at least this share of its readings "
                                          "in runs of one value stuck_min_run long (off a "
                                          "physical bound) is often flat (a rain gauge, a "
                                          "valve, a square wave): no run of it is stuck")
    stuck_min_minutes: float = Field(0.0, ge=0.0, le=100_000.0,
                                     description="and lasting at least this long")
    spike_z: float = Field(12.0, gt=0.0, le=1e6,
                           description="spike: a step this many typical steps")
    spike_span: float = Field(0.2, ge=0.0, le=100.0,
                              description="and at least this fraction of the typical range")
    jump_factor: float = Field(1.5, ge=0.0, le=1000.0,
                               description="and this many times the largest recent normal step")
    return_z: float = Field(24.0, gt=0.0, le=1e6,
                            description="leave and return: a reading whose step out and "
                                        "step back (of opposite sign) both exceed this many "
                                        "typical steps is a spike, whatever the typical "
                                        "range (a single reading off on a series logged "
                                        "hours apart, under the spike floor) ...")
    return_jump_factor: float = Field(3.0, ge=0.0, le=1000.0,
                                      description="... and this many times the largest "
                                                  "such pair of normal steps lately ...")
    return_close: float = Field(0.1, gt=0.0, le=1.0,
                                description="... and it came back to within this fraction "
                                            "of its step out of where it left")
    max_spike_run: int = Field(3, ge=1, le=1000,
                               description="a spike lasting longer is a level shift")
    scale_alpha: float = Field(0.02, gt=0.0, le=1.0, description="EWMA weight of the step scale")
    noise_hours: float = Field(24.0, gt=0.0, le=100_000.0,
                               description="time constant of the learned size of the change "
                                           "of the step (the noise-burst reference)")
    exceed_k: float = Field(10.0, gt=0.0, le=1e6,
                            description="noise burst: a change of the step counts at most this "
                                        "many typical ones ...")
    burst_alpha: float = Field(0.1, gt=0.0, le=1.0,
                               description="... in a mean of this weight per reading")
    burst_threshold: float = Field(4.0, gt=0.0, le=1e6,
                                   description="noise burst: the short-term mean change of the "
                                               "step this many times its learned size")
    burst_span: float = Field(0.05, ge=0.0, le=100.0,
                              description="and that mean at least this fraction of the "
                                          "typical range")
    noise_quantile: float = Field(0.995, ge=0.5, lt=1.0,
                                  description="noise burst: the threshold is at least this "
                                              "quantile of the series' own burst statistic, "
                                              "learned online (a turbidity probe's storms "
                                              "are its normal)")
    noise_eta: float = Field(0.01, ge=0.0, le=1.0,
                             description="learning step of that quantile (in the "
                                         "logarithm, per reading)")
    noise_eta_warm: float = Field(0.1, ge=0.0, le=1.0,
                                  description="the same step while the series warms up "
                                              "(its first warm_n readings), so the "
                                              "quantile has reached the series' own tail "
                                              "when scoring starts")
    refractory_hours: float = Field(12.0, ge=0.0, le=10_000.0,
                                    description="one alarm an episode: a spike, shift or "
                                                "noise alarm due within this many hours of "
                                                "the series' last one (raised or not), once "
                                                "that alarm has ended, is the same episode "
                                                "(a storm's sediment pulses) ...")
    refractory_factor: float = Field(4.0, ge=1.0, le=1e9,
                                     description="... and raised only this many times past "
                                                 "its threshold")
    burst_slow_hours: float = Field(2.0, gt=0.0, le=1000.0,
                                    description="noise burst, slow test: a mean of the change "
                                                "of the step over this many hours ...")
    burst_slow_threshold: float = Field(2.0, gt=0.0, le=1e6,
                                        description="... this many times its learned size")
    level_warm_days: float = Field(2.0, ge=0.0, le=365.0,
                                   description="history before the level detector judges")
    level_z: float = Field(3.0, gt=0.0, le=1e6,
                           description="drift: one hour's residual counts at most this many σ "
                                       "in the learned spread")
    dev_floor: float = Field(0.01, ge=0.0, le=10.0,
                             description="least σ of the level, as a fraction of the typical "
                                         "range")
    cross_z: float = Field(5.0, gt=0.0, le=1e6,
                           description="unused since the CUSUM drift detector (kept so stored "
                                       "parameter sets still load)")
    return_frac: float = Field(0.5, gt=0.0, le=1.0,
                               description="a spike has come back once the step from the level "
                                           "it left is under this fraction of the threshold")
    drift_k: float = Field(1.0, ge=0.0, le=1e6,
                           description="drift CUSUM: σ of hourly residual allowed for free")
    drift_h: float = Field(24.0, gt=0.0, le=1e6,
                           description="drift CUSUM: alarm past this many accumulated σ")
    drift_span: float = Field(0.13, ge=0.0, le=10.0,
                              description="and a residual at least this fraction of the "
                                          "typical range")
    own_memory: float = Field(300.0, ge=10.0, le=1e7,
                              description="a series compared with no other (no cross-site "
                                          "group: a CSV, a lone sensor) is checked against "
                                          "its own de-seasoned level and spread, learned "
                                          "over this many readings ...")
    own_h: float = Field(240.0, gt=0.0, le=1e6,
                         description="... by two CUSUMs (drift_k allowed free per reading, "
                                     "each reading at most level_z) alarming past this; "
                                     "flagged for own_memory readings it is the new level")
    own_span: float = Field(0.4, ge=0.0, le=10.0,
                            description="... and its de-seasoned reading at least this "
                                        "fraction of the typical range off its level (a "
                                        "river's pH over a season, its conductance in a "
                                        "snowmelt, a room cooling at night move a quarter "
                                        "of it on their own)")
    pairs: tuple[tuple[str, str], ...] = Field(
        (("soil_ec", "soil_moisture"),),
        description="(follower, leader) metrics of one device whose logarithms keep a "
                    "learned linear relation (bulk soil EC rises with water content); "
                    "checked hourly among the level_skip metrics")
    pair_span: float = Field(0.25, ge=0.0, le=100.0,
                             description="pair check: the follower's logarithm at least this "
                                         "far off the relation (0.25: about 28 %)")
    pair_slope: float = Field(1.5, ge=-100.0, le=100.0,
                              description="pair check: the slope expected before the data "
                                          "shows one (bulk EC grows about as water content "
                                          "to the power 1.3-2, Archie's law) ...")
    pair_prior: float = Field(0.01, ge=0.0, le=100.0,
                              description="... weighted as a leader whose logarithm varied "
                                          "this much (variance)")
    corroborate_z: float = Field(4.0, gt=0.0, le=1e6,
                                 description="another series of the site this far off makes "
                                             "a level change an event")
    corroborate_hours: float = Field(6.0, ge=0.0, le=1000.0,
                                     description="within this many hours")
    gain_prior: float = Field(0.001, ge=0.0, le=100.0,
                              description="drift: the gain of a series on its cross-site "
                                          "median is shrunk toward none as if the median had "
                                          "varied this much (variance, in typical ranges "
                                          "squared)")
    shared_frac: float = Field(0.2, ge=0.0, le=1.0,
                               description="drift: no sensor drifts when at least this "
                                           "share of the same sensors elsewhere (and three) "
                                           "left their own levels the same way ...")
    shared_hours: float = Field(12.0, ge=0.0, le=1000.0,
                                description="... from this many hours before it left its "
                                            "own on (sensors do not fail together; a "
                                            "region's rain moves them together)")
    profile_hold_hours: float = Field(6.0, ge=0.0, le=1000.0,
                                      description="the hour-of-day profile does not learn "
                                                  "for this long after the level was "
                                                  "corroborate_z σ off its own")
    tz_offset_hours: float = Field(8.0, ge=-14.0, le=14.0,
                                   description="local time of the hour-of-day profile")
    max_flag_days: float = Field(7.0, gt=0.0, le=365.0,
                                 description="a level change suspected for longer becomes "
                                             "the level")
    cross_alpha: float = Field(0.02, gt=0.0, le=1.0,
                               description="unused since the CUSUM drift detector")
    fast_hours: float = Field(1.0, gt=0.0, le=1000.0, description="time constant of the level")
    slow_days: float = Field(3.0, gt=0.0, le=365.0,
                             description="... and of the baseline of its cross-site residual")
    var_days: float = Field(5.0, gt=0.0, le=365.0, description="... and of its spread")
    profile_days: float = Field(5.0, gt=0.0, le=365.0,
                                description="memory of the hour-of-day profile")
    memory_days: float = Field(7.0, gt=0.0, le=365.0,
                               description="memory of the longest run and step")
    memory_min_readings: float = Field(1000.0, ge=1.0, le=1e7,
                                       description="... spanning at least this many "
                                                   "readings: a series logged hours apart "
                                                   "sees its floods weeks apart, and a "
                                                   "week (112 readings at 90 minutes) "
                                                   "forgot the last flood's rise before the "
                                                   "next one came")
    level_skip: tuple[str, ...] = Field(
        ("soil_moisture", "soil_ec", "chlorophyll_a", "leaf_wetness"),
        description="metrics without a level to compare across sites: soil water and its "
                    "salts follow each site's own irrigation, algal blooms are patchy, a "
                    "leaf is wet or dry with the site's own dew and showers")

    def vector(self) -> np.ndarray:
        """The kernel's parameter vector (``_layout.PARAM_COLUMNS``)."""
        values = {
            "warm_n": self.warm_n, "gap_factor": self.gap_factor,
            "stuck_min_run": self.stuck_min_run, "stuck_factor": self.stuck_factor,
            "spike_z": self.spike_z, "spike_span": self.spike_span,
            "jump_factor": self.jump_factor, "max_spike_run": self.max_spike_run,
            "a_scale": self.scale_alpha, "exceed_k": self.exceed_k,
            "a_burst": self.burst_alpha, "burst_thr": self.burst_threshold,
            "level_warm_ms": self.level_warm_days * DAY_MS, "level_z": self.level_z,
            "dev_floor": self.dev_floor, "cross_z": self.cross_z,
            "corr_z": self.corroborate_z, "corr_window_ms": self.corroborate_hours * HOUR_MS,
            "tz_offset_ms": self.tz_offset_hours * HOUR_MS,
            "max_flag_ms": self.max_flag_days * DAY_MS, "a_cross": self.cross_alpha,
            "stuck_min_ms": self.stuck_min_minutes * 60_000.0,
            "return_frac": self.return_frac, "drift_k": self.drift_k,
            "drift_h": self.drift_h, "drift_span": self.drift_span,
            "burst_span": self.burst_span, "burst_slow_thr": self.burst_slow_threshold,
            "pair_span": self.pair_span, "pair_slope": self.pair_slope,
            "pair_prior": self.pair_prior, "hold_ms": self.profile_hold_hours * HOUR_MS,
            "gain_prior": self.gain_prior, "shared_frac": self.shared_frac,
            "shared_ms": self.shared_hours * HOUR_MS, "flat_share": self.flat_share,
            # the tail quantile's Robbins-Monro step in the logarithm (up eta * q above
            # it, down eta * (1 - q) below), as factors: no log or exp per reading
            "noise_up": float(np.exp(self.noise_eta * self.noise_quantile)),
            "noise_down": float(np.exp(-self.noise_eta * (1.0 - self.noise_quantile))),
            "noise_up_warm": float(np.exp(self.noise_eta_warm * self.noise_quantile)),
            "noise_down_warm": float(np.exp(-self.noise_eta_warm
                                            * (1.0 - self.noise_quantile))),
            "refractory_ms": self.refractory_hours * HOUR_MS,
            "refractory_factor": self.refractory_factor,
            # the leave-and-return test is a spike test too: never more sensitive than
            # twice the spike test's own limits (equal at the defaults), so a caller who
            # raises spike_z or jump_factor to silence spikes silences it as well
            "return_z": max(self.return_z, 2.0 * self.spike_z),
            "return_jump": max(self.return_jump_factor, 2.0 * self.jump_factor),
            "return_close": self.return_close,
            "own_memory": self.own_memory, "own_h": self.own_h, "own_span": self.own_span,
        }
        return np.array([float(values[name]) for name in PARAM_COLUMNS], dtype=np.float64)
