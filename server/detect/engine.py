"""The detector and its rules over one batch, in one downward pass.

``Engine`` owns a ``Detector`` (scores), a ``RuleBinding`` (the rule instances the kernel
advances) and an ``AlertBook`` (active alerts). A caller hands it readings and gets back
what they did: scores per reading and the alert operations, in order. Nothing here reads
or writes the database (``store``) or loops over time (``service``, ``evaluate``); the
same calls serve the running service, the evaluation on simulated scenarios and the
backtest of proposed rules, so the three see the same alerts for the same data.

The timeline is cut at fixed instants (``run_slices``): the readings of a slice are scored
and run through the rules, then silence is checked at the cut, and the rule transitions
become alert operations there. So what comes out depends only on the data and the cuts,
never on how a caller groups slices into batches.
"""

from __future__ import annotations

import io
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import _kernels
from ._layout import C_GROUP, C_PARTNER, CAT_FAULT, K_DRIFT, K_GAP
from .alerts import Alert, AlertBook, AlertOp, Transition
from .detector import Detector, Readings, Scores
from .forecast.forecaster import Forecaster, ForecastParams
from .rules import RuleBinding, RuleSet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """Readings ready to score: in time order (ties by series key), each with its
    detector row, none at or before its series' last scored time."""

    readings: Readings
    rows: np.ndarray  # int64 detector rows

    def __len__(self) -> int:
        return len(self.readings)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a batch did: a score per reading (the batch's order) and the alert
    operations, in the order they happened."""

    scores: Scores
    ops: list[AlertOp]


def broken_readings(detector: Detector, rows: np.ndarray, scores: Scores) -> np.ndarray:
    """Per reading of a scored batch, whether the domain rules and forecasts take it for
    broken sensor output: a fault other than a gap.

    A drift of a series no other sensor is compared with (a lone sonde, a CSV) is a guess
    from its own level: it cannot tell a failing probe from the water changing. It stays
    a fault alert, but it does not make the readings broken for the domain rules and
    forecasts: a hypoxia missed on a guess is the worse error. (Judged only for the
    readings scored a drift, a few if any in a batch.)"""
    broken = (scores.category == CAT_FAULT) & (scores.component != K_GAP)
    drift = np.flatnonzero(broken & (scores.component == K_DRIFT))
    if drift.size:
        cfg = detector.cfg
        series = rows[drift]
        broken[drift] = ~((cfg[series, C_GROUP] < 0.0) & (cfg[series, C_PARTNER] < 0.0))
    return broken


class Engine:
    """A detector with its forecaster, rules and alert book."""

    def __init__(self, detector: Detector, ruleset: RuleSet,
                 forecast: ForecastParams | None = None) -> None:
        self.detector = detector
        self.forecaster = Forecaster(detector.series, ruleset, forecast)
        self.rules = RuleBinding(detector, ruleset)
        self.book = AlertBook(self.rules, details=self._forecast_details)

    def _forecast_details(self, k: int) -> dict[str, object]:
        """What a warning's message says of its forecast: the threshold it watches, the
        expected crossing (UTC) and the 80 % band there."""
        inst = self.rules.instances[k]
        if inst.spec.condition != "forecast":
            return {}
        confidence, crossing, low, high = self.forecaster.latest(inst.row)
        target = self.rules.spec_of(inst.row, inst.spec.of or "")
        when = (np.datetime64(int(crossing), "ms").astype("datetime64[m]").item()
                .strftime("%Y-%m-%d %H:%M UTC") if np.isfinite(crossing) else "beyond the horizon")
        return {"limit": target.threshold if target is not None else float("nan"),
                "crossing": when, "low": low, "high": high, "confidence": confidence}

    # --- one batch ---------------------------------------------------------------------

    def process(self, rows: np.ndarray, times_ms: np.ndarray, values: np.ndarray
                ) -> tuple[Scores, list[Transition]]:
        """Score readings (detector rows) and advance the rules: the raw transitions."""
        scores = self.detector.score(rows, times_ms, values)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        times_ms = np.ascontiguousarray(times_ms, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        broken = broken_readings(self.detector, rows, scores)
        confidence = self.forecaster.advance(rows, times_ms, values, broken).confidence
        capacity = max(16, len(self.rules.instances) * 2)
        while True:
            saved = self.rules.state.copy()
            buffers = _buffers(capacity)
            n = _kernels.apply_rules(rows, times_ms, values, scores.score, scores.component,
                                     scores.category, broken, confidence, self.rules.ptr,
                                     self.rules.inst,
                                     self.rules.rp, self.rules.state, *buffers)
            if n <= capacity:
                return scores, _transitions(buffers, n)
            self.rules.state = saved  # too many to hold: run again with room for all
            capacity = n

    def tick(self, now_ms: int) -> list[Transition]:
        """Open no-data rules of series silent by ``now_ms``."""
        buffers = _buffers(max(1, self.rules.silent.shape[0]))
        n = _kernels.check_silence(float(now_ms), self.rules.silent, self.rules.rp,
                                   self.rules.state, self.detector.state, self.detector.cfg,
                                   *buffers)
        return _transitions(buffers, n)

    def step(self, rows: np.ndarray, times_ms: np.ndarray, values: np.ndarray,
             until_ms: int) -> Outcome:
        """One slice: score the readings, check silence at ``until_ms``, and turn the
        rule transitions into alert operations."""
        scores, transitions = self.process(rows, times_ms, values)
        transitions += self.tick(until_ms)
        return Outcome(scores, self.book.apply(transitions))

    def fresh(self, readings: Readings) -> Batch:
        """The readings not scored yet (a re-read overlap holds some that were), in time
        order, ties by series key."""
        rows = self.detector.rows_of(readings.series_ids)
        keep = readings.times_ms > self.detector.last_times()[rows]
        readings, rows = readings.take(keep), rows[keep]
        order = np.lexsort((readings.series_ids, readings.times_ms))
        return Batch(readings.take(order), rows[order])

    def run_slices(self, batch: Batch, cuts: np.ndarray) -> Outcome:
        """``step`` once per cut (ascending instants) over the readings up to it."""
        n = len(batch)
        scores = Scores(np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.int8),
                        np.zeros(n, dtype=np.int8))
        ops: list[AlertOp] = []
        readings, rows = batch.readings, batch.rows
        bounds = np.searchsorted(readings.times_ms, cuts, side="right")
        lo = 0
        for cut, hi in zip(cuts.tolist(), bounds.tolist(), strict=True):
            part = self.step(rows[lo:hi], readings.times_ms[lo:hi], readings.values[lo:hi],
                             cut)
            scores.score[lo:hi] = part.scores.score
            scores.component[lo:hi] = part.scores.component
            scores.category[lo:hi] = part.scores.category
            ops += part.ops
            lo = hi
        return Outcome(scores, ops)

    # --- alerts and rules that outlive a process ---------------------------------------

    def resume(self, active: Iterable[Alert], at_ms: int) -> list[AlertOp]:
        """Take over the stored active alerts (after ``restore``); those no rule instance
        holds on (state lost or reset, or their rule gone) would never close, so they are
        closed at ``at_ms``: the operations returned."""
        self.book = AlertBook(self.rules, active, details=self._forecast_details)
        return self._close_orphans(at_ms)

    def change_rules(self, ruleset: RuleSet, at_ms: int) -> list[AlertOp]:
        """Bind a new rule set to the same series: each rule instance that remains (rule
        name and series) keeps its state, so a changed limit applies from the next
        reading without re-learning; returns the operations that close alerts no
        instance holds on any more."""
        old_keys, old_state = self._rule_keys(), self.rules.state
        active = list(self.book.active.values())
        for alert in active:
            alert.members.clear()
        self.rules = RuleBinding(self.detector, ruleset)
        self.rules.state = _carry_rows(old_keys, old_state, self._rule_keys(),
                                       self.rules.state)
        learned = self.forecaster.state
        self.forecaster = Forecaster(self.detector.series, ruleset, self.forecaster.params)
        self.forecaster.state = learned  # one row per detector row, whatever the rules
        self.book = AlertBook(self.rules, active, details=self._forecast_details)
        return self._close_orphans(at_ms)

    def _close_orphans(self, at_ms: int) -> list[AlertOp]:
        ops = []
        for alert in [a for a in self.book.active.values() if not a.members]:
            alert.closed_ms = max(alert.updated_ms, at_ms)
            del self.book.active[alert.key]
            ops.append(AlertOp("closed", alert, alert.closed_ms, alert.value))
        if ops:
            log.warning("closed alerts no rule state holds open", extra={"alerts": len(ops)})
        return ops

    # --- checkpoints -------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {**self.detector.state_arrays(), "rules": self.rules.state.copy(),
                "forecast": self.forecaster.state.copy()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.detector.load_state(arrays)
        if arrays["rules"].shape != self.rules.state.shape:
            raise ValueError("checkpoint does not fit these rules")
        self.rules.state = np.ascontiguousarray(arrays["rules"], dtype=np.float64)
        # a checkpoint from before the forecaster: its models start learning now
        forecast = arrays.get("forecast")
        self.forecaster.state = (np.array(forecast, dtype=np.float64, order="C")
                                 if forecast is not None
                                 and forecast.shape == self.forecaster.state.shape
                                 else Forecaster.initial_state(len(self.detector.series)))

    def series_keys(self) -> np.ndarray:
        return np.array([info.key for info in self.detector.series], dtype=np.int64)

    def _rule_keys(self) -> np.ndarray:
        series = self.detector.series
        return np.array([f"{inst.rule}:{series[inst.row].key}" for inst in self.rules.instances],
                        dtype=np.str_)

    def checkpoint(self) -> bytes:
        """The state of the detector and the rules, with the keys it belongs to."""
        arrays = self.state_arrays()
        arrays["series_keys"] = self.series_keys()
        arrays["rule_keys"] = self._rule_keys()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # names -> arrays, as savez takes
        # level 1: a third of the size at a tenth of savez_compressed's time (it is paid on
        # every step)
        return zlib.compress(buffer.getvalue(), 1)

    def restore(self, data: bytes) -> bool:
        """Restore from a ``checkpoint``; True when it was taken over the same series and
        rules. When the registry or the rules changed since, the state of the series and
        rule instances still there is carried over and the rest starts fresh (False)."""
        with np.load(io.BytesIO(zlib.decompress(data))) as saved:
            saved = {name: saved[name] for name in saved.files}
        width = self.detector.state.shape[1]
        taken_width = saved["state"].shape[1]
        if taken_width < width:
            # taken before the detector's state grew (columns are only ever appended,
            # ``_layout.STATE_COLUMNS``): the old ones carry over, the new ones start as a
            # fresh series' would
            grown, _ = Detector.initial_state(saved["state"].shape[0])
            grown[:, :saved["state"].shape[1]] = saved["state"]
            saved["state"] = grown
        rules_width = saved["rules"].shape[1]
        if rules_width < self.rules.state.shape[1]:
            # taken before the rule state grew (appended columns too,
            # ``_layout.RULE_STATE_COLUMNS``: the windowed high): they start empty
            grown = RuleBinding.initial_state(saved["rules"].shape[0])
            grown[:, :rules_width] = saved["rules"]
            saved["rules"] = grown
        keys = self.series_keys()
        rule_keys = self._rule_keys()
        if (np.array_equal(saved["series_keys"], keys)
                and np.array_equal(saved["rule_keys"], rule_keys)
                and saved["groups"].shape == self.detector.groups.shape):
            self.load_state(saved)
            self.detector.upgrade_state(taken_width)
            return True
        fresh = self.state_arrays()
        for name in ("state", "profile", "forecast"):
            if name in saved and saved[name].shape[1:] == fresh[name].shape[1:]:
                fresh[name] = _carry_rows(saved["series_keys"], saved[name], keys,
                                          fresh[name])
        fresh["rules"] = _carry_rows(saved["rule_keys"], saved["rules"], rule_keys,
                                     fresh["rules"])
        self.load_state(fresh)  # cross-site group medians relearn within the hour
        self.detector.upgrade_state(taken_width)
        return False


def _carry_rows(old_keys: np.ndarray, old: np.ndarray, new_keys: np.ndarray,
                new: np.ndarray) -> np.ndarray:
    """``new`` with the row of each key also in ``old_keys`` taken from ``old``."""
    old_row = {k.item(): i for i, k in enumerate(old_keys)}
    out = new.copy()
    for i, key in enumerate(new_keys):
        j = old_row.get(key.item())
        if j is not None:
            out[i] = old[j]
    return out


Buffers = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # instance, action, time, value


def _buffers(capacity: int) -> Buffers:
    return (np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64),
            np.empty(capacity, dtype=np.float64), np.empty(capacity, dtype=np.float64))


def _transitions(buffers: Buffers, n: int) -> list[Transition]:
    inst, action, time, value = buffers
    return [Transition(int(inst[i]), int(action[i]), int(time[i]), float(value[i]))
            for i in range(n)]
