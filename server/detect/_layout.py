"""Column layouts shared by the kernels, their NumPy twins and the Python around them.

Everything the kernels touch is a flat float64 matrix with one row per series (or per rule
instance) and named columns, so state checkpoints as a handful of arrays and a kernel call
never builds a Python object per reading.
"""

from __future__ import annotations

# --- components (what fired) and categories --------------------------------------------
COMPONENTS = ("none", "range", "gap", "stuck", "spike", "shift", "noise", "drift", "level")
(K_NONE, K_RANGE, K_GAP, K_STUCK, K_SPIKE, K_SHIFT, K_NOISE, K_DRIFT,
 K_LEVEL) = range(len(COMPONENTS))
CATEGORIES = ("none", "fault", "event")  # of a reading's score (a warning is no score)
CAT_NONE, CAT_FAULT, CAT_EVENT = range(len(CATEGORIES))

# --- per-series configuration (built from the catalog and the registry) ----------------
CFG_COLUMNS = ("low", "high", "span", "res", "interval_ms", "circular", "site", "group",
               "a_fast", "a_slow", "a_var", "a_prof", "decay", "level", "a_noise",
               "a_burst_slow", "partner", "pair_sign", "decay_2", "decay_3", "decay_4")
(C_LOW, C_HIGH, C_SPAN, C_RES, C_INTERVAL, C_CIRC, C_SITE, C_GROUP, C_A_FAST, C_A_SLOW,
 C_A_VAR, C_A_PROF, C_DECAY, C_LEVEL, C_A_NOISE, C_A_BURST_SLOW, C_PARTNER,
 C_PAIR_SIGN, C_DECAY_2, C_DECAY_3, C_DECAY_4) = range(len(CFG_COLUMNS))
# partner: the row of the paired series of the same device, or -1; pair_sign: +1 for the
# follower (its own reading is the logarithm regressed), -1 for the leader; decay_2 ...
# decay_4: decay to the power 2, 3, 4 (pow, as the kernel would take it), what a run of
# one value of that many readings decays the flat counts by when it ends (nearly all the
# runs longer than one reading: a power per run was a thirtieth of the kernel's time)

# --- detector parameters (one vector, from DetectorParams) -----------------------------
PARAM_COLUMNS = ("warm_n", "gap_factor", "stuck_min_run", "stuck_factor", "spike_z",
                 "spike_span", "jump_factor", "max_spike_run", "a_scale", "exceed_k",
                 "a_burst", "burst_thr", "level_warm_ms", "level_z", "dev_floor", "cross_z",
                 "corr_z", "corr_window_ms", "tz_offset_ms", "max_flag_ms", "a_cross",
                 "stuck_min_ms", "return_frac", "drift_k", "drift_h", "drift_span", "burst_span",
                 "burst_slow_thr", "pair_span", "pair_slope",
                 "pair_prior", "hold_ms", "gain_prior", "shared_frac",
                 "shared_ms", "flat_share", "noise_up", "noise_down", "own_memory", "own_h",
                 "own_span", "noise_up_warm", "noise_down_warm", "refractory_ms",
                 "refractory_factor", "return_z", "return_jump", "return_close")
(P_WARM_N, P_GAP_FACTOR, P_STUCK_MIN_RUN, P_STUCK_FACTOR, P_SPIKE_Z, P_SPIKE_SPAN,
 P_JUMP_FACTOR, P_MAX_SPIKE_RUN, P_A_SCALE, P_EXCEED_K, P_A_BURST, P_BURST_THR,
 P_LEVEL_WARM_MS, P_LEVEL_Z, P_DEV_FLOOR, P_CROSS_Z, P_CORR_Z, P_CORR_WINDOW_MS,
 P_TZ_OFFSET_MS, P_MAX_FLAG_MS, P_A_CROSS, P_STUCK_MIN_MS, P_RETURN_FRAC, P_DRIFT_K,
 P_DRIFT_H, P_DRIFT_SPAN, P_BURST_SPAN, P_BURST_SLOW_THR, P_PAIR_SPAN, P_PAIR_SLOPE,
 P_PAIR_PRIOR, P_HOLD_MS, P_GAIN_PRIOR, P_SHARED_FRAC, P_SHARED_MS, P_FLAT_SHARE, P_NOISE_UP,
 P_NOISE_DOWN, P_OWN_MEMORY, P_OWN_H, P_OWN_SPAN, P_NOISE_UP_WARM,
 P_NOISE_DOWN_WARM, P_REFRACTORY_MS, P_REFRACTORY_FACTOR, P_RETURN_Z, P_RETURN_JUMP,
 P_RETURN_CLOSE) = range(len(PARAM_COLUMNS))

# --- per-series state ------------------------------------------------------------------
# mf: the de-seasoned level (1-h EWMA); rb, rvar: baseline and spread of its residual
# against the cross-site median, frozen while a change is suspected; cus_up, cus_down:
# the two one-sided CUSUMs of that residual; hours: how many hourly residuals learned;
# hour_end: when the current local hour ends (the hourly work runs once per series and
# hour); hour: its hour-of-day bin; burst, scale2: the short-term mean of the change of the
# step and its learned size; burst_rel, scale_rel: the same per unit of the reading's
# height over the physical floor (sensors whose noise grows with the reading); slow,
# slow_rel: both over a few hours (a burst hardly above the series' own noise shows there);
# pu, pv, puu, puv: for a series paired with another of its device (soil EC follows soil
# moisture), the learned means of the two logarithms, the variance of the leader's and
# their covariance; rvar, cus_up, hours, hour_end, flag_since then serve the pair's check;
# for a series compared across sites the same pu, puu, puv hold the regression of its
# residual on the group's median (pu its mean, puu its variance, puv the covariance);
# suspect_since: since when either drift CUSUM has been off rest (past a quarter of its
# threshold), or -1;
# flat_all, flat_long: the readings of the runs of one value that ended (off a physical
# bound), and of those at least stuck_min_run long, both decayed with the memory: how
# often the series sits flat; burst_tail: the learned noise_quantile quantile of the
# noise-burst statistic (in units of its threshold), the series' own noise tail (0: none
# learned yet, read as 1); episode_t: the time of the series' last reading with a step
# alarm due (spike, shift, noise; raised or held under the threshold), alarm_t: of
# its last raised one (NEVER for none), episode_comp: the component of that episode (the
# refractory time); own_flag: 1 while the own-level check's flag is raised; return_max:
# the largest normal leave-and-return lately (the smaller of two accepted steps of
# opposite sign in a row), decayed like jump_max
# (columns are only ever appended: a checkpoint with fewer is padded, service.load_state)
STATE_COLUMNS = ("n", "t_first", "t_last", "x_last", "x_prev", "run", "run_max", "scale",
                 "jump_max", "burst", "spike_run", "mf", "rb", "rvar", "cus_up", "cus_down",
                 "hours", "hour_end", "hour", "dev_t", "flag_since", "run_start", "d_last",
                 "scale2", "burst_rel", "scale_rel", "slow", "slow_rel", "pu", "pv", "puu",
                 "puv", "suspect_since", "flat_all", "flat_long", "burst_tail", "own_n",
                 "own_base", "own_var", "own_up", "own_down", "own_since", "own_tail",
                 "episode_t", "alarm_t", "episode_comp", "own_flag", "return_max")
(S_N, S_T_FIRST, S_T_LAST, S_X_LAST, S_X_PREV, S_RUN, S_RUN_MAX, S_SCALE, S_JUMP_MAX,
 S_BURST, S_SPIKE_RUN, S_MF, S_RB, S_RVAR, S_CUS_UP, S_CUS_DOWN, S_HOURS, S_HOUR_END, S_HOUR,
 S_DEV_T, S_FLAG_SINCE, S_RUN_START, S_D_LAST, S_SCALE2, S_BURST_REL,
 S_SCALE_REL, S_SLOW, S_SLOW_REL, S_PU, S_PV, S_PUU, S_PUV, S_SUSPECT_SINCE, S_FLAT_ALL,
 S_FLAT_LONG, S_BURST_TAIL, S_OWN_N, S_OWN_BASE, S_OWN_VAR, S_OWN_UP, S_OWN_DOWN,
 S_OWN_SINCE, S_OWN_TAIL, S_EPISODE_T, S_ALARM_T, S_EPISODE_COMP,
 S_OWN_FLAG, S_RETURN_MAX) = range(len(STATE_COLUMNS))
BINS = 24  # hour-of-day bins of the seasonal profile

# --- per cross-site group (series of one metric and device template): the hourly median
GROUP_COLUMNS = ("slot", "median", "count")
G_SLOT, G_MEDIAN, G_COUNT = range(len(GROUP_COLUMNS))

# --- rules: condition types, per-instance parameters and state -------------------------
CONDITIONS = ("below", "above", "fall", "no_rise", "fault", "no_data", "forecast")
R_BELOW, R_ABOVE, R_FALL, R_NO_RISE, R_FAULT, R_NO_DATA, R_FORECAST = range(len(CONDITIONS))

RULE_COLUMNS = ("series", "condition", "threshold", "clear", "alpha", "min_ms", "clear_ms",
                "worse_below", "components", "interval_ms", "gate", "unless", "every_ms",
                "from_high", "wets", "high_window_ms")
# components: bit mask of COMPONENTS (fault); gate: the instance whose condition must hold
# too (a rule's `requires`), or -1; unless: the instance whose condition explains a rise
# away (a no_rise rule's `unless`: rain wets the soil, it is no watering), or -1;
# every_ms: a no_rise rule's declared interval between rises (an irrigation schedule), 0
# to learn it; from_high: 1 when a fall rule measures from a running high (up at once,
# down with `alpha`) instead of a running level; wets: how far one unit of the `unless`
# series (a mm of rain) can raise a no_rise rule's series at most, 0 for no limit;
# high_window_ms: a from_high fall rule's high is the largest reading of this long a
# window (``HIGH_SLOTS`` sub-window maxima) instead of one relaxing with `alpha`, 0 for
# the relaxing high
(RP_SERIES, RP_COND, RP_THRESHOLD, RP_CLEAR, RP_TAU, RP_MIN, RP_CLEAR_MS,
 RP_WORSE_BELOW, RP_COMPONENTS, RP_INTERVAL, RP_GATE, RP_UNLESS, RP_EVERY,
 RP_FROM_HIGH, RP_WETS, RP_HIGH_WINDOW) = range(len(RULE_COLUMNS))

# base: a fall rule's running level or high; an above rule's running total of its
# readings (the rain fallen); a no_rise rule's copy of its `unless` rule's total when its
# lowest was set. The windowed high (a rule with high_window_ms): high_slot, the number
# of the current sub-window (time // its length); high_end, when it ends; high_older,
# the largest of the other sub-windows' maxima (kept when a reading crosses into a new
# sub-window, so a reading inside one costs a comparison, not a scan); high_0 to
# high_{HIGH_SLOTS - 1}, the sub-windows' maxima, sub-window j at column RS_HIGH_0 +
# (its number % HIGH_SLOTS) (-inf: no reading). Columns are only ever appended: a
# checkpoint with fewer is padded (engine.restore)
HIGH_SLOTS = 24  # half an hour each in a 12-h window
RULE_STATE_COLUMNS = ("active", "cond_since", "clear_since", "opened", "peak", "value",
                      "updated", "base", "lowest", "last_rise", "gap_max", "rises",
                      "first_component", "pending", "seen", "high_slot", "high_end",
                      "high_older", *(f"high_{j}" for j in range(HIGH_SLOTS)))
(RS_ACTIVE, RS_COND_SINCE, RS_CLEAR_SINCE, RS_OPENED, RS_PEAK, RS_VALUE, RS_UPDATED,
 RS_BASE, RS_LOWEST, RS_LAST_RISE, RS_GAP_MAX, RS_RISES,
 RS_FIRST_COMPONENT, RS_PENDING, RS_SEEN, RS_HIGH_SLOT, RS_HIGH_END,
 RS_HIGH_OLDER) = range(len(RULE_STATE_COLUMNS) - HIGH_SLOTS)
RS_HIGH_0 = RS_HIGH_OLDER + 1

# transitions a rule kernel reports: (instance, action, time_ms, value)
ACTIONS = ("opened", "closed")
A_OPEN, A_CLOSE = range(len(ACTIONS))

