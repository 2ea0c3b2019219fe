"""Scoring detectors against real labelled sensor data: ``tidefield detect benchmark``.

A dataset is a folder of labelled CSVs: univariate ``timestamp,value,label`` files, or
multivariate ones (SKAB: ``timestamp,<sensors>,changepoint,label``) whose label is per
row of all sensors; a row's score is then the highest of its sensors'. Known datasets
(``DATASETS``) have a small adapter: which files are series, their time zone (the daily
profile is local), and which files are for tuning; the rest of a known dataset, and every
file of an unknown one, is the report part. Splits are by site or file, never by time
within a series.

Event-wise scoring (fixed before any real-data run, docs/detection.md):

* an event is a run of consecutive label-1 rows; an alarm a run of rows scored at or over
  the detector's threshold, runs fewer than ``MERGE_ROWS`` rows apart being one alarm; a
  missing reading (blank, text, sentinel) is an alarm for every detector alike;
* an alarm that starts inside an event widened by ``TOLERANCE_ROWS`` rows each side is
  true, any other alarm false; an event is found when a true alarm starts in it. An
  alarm counts where it starts, as an alert opens: an alarm already on when the event
  began was raised for something else (and a detector that alarms all the time scores
  no precision; counting overlap instead gave such a one a true alarm per file);
* precision = true alarms / alarms, recall = events found / events, F1 of the two, pooled
  over the series of a dataset; delay = time from an event's first row to the first
  alarm on it (0 when the alarm came first), median over the events found;
* false alarms per series-month: the false alarms over the time the series spent on
  label 0 (steps between label-0 readings, each at most 10 typical steps), in months of
  30 days;
* PR-AUC: average precision of the scores over every row (label 1 positive), pooled
  over the dataset's series: a figure that needs no threshold;
* calibration: the 90th percentile over series of their false alarms per month (next to
  the pooled rate), and the share of readings at or over the threshold.

The summary "over all four" is the mean of the per-dataset F1s.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from functools import partial
from pathlib import Path

import numpy as np

from .series_csv import SeriesCsvError, read_series

log = logging.getLogger(__name__)

MERGE_ROWS = 10
TOLERANCE_ROWS = 10
MONTH_S = 30 * 86_400.0
# the label column's names in public labelled sets (Yahoo's is_anomaly; 1/0 or true/false)
LABEL_NAMES = ("label", "is_anomaly", "anomaly", "outlier")
NOT_SENSORS = {"timestamp", "time", "changepoint", "row", "type", "code", "file",
               *LABEL_NAMES}


@dataclass(frozen=True)
class Dataset:
    """A known dataset's adapter."""

    name: str
    utc_offset_hours: float  # of its naive timestamps (README of the dataset)
    series: str  # glob of its series files
    tuning: tuple[str, ...]  # globs of the files kept for tuning


DATASETS = {d.name: d for d in (
    # one creek, three sensors: tuning on level and conductivity (2 labelled points
    # each), report on turbidity (spikes, a shift, long high-variability windows)
    Dataset("river_wq_leigh2019", 10.0, "sandy_creek_*.csv",
            ("sandy_creek_level.csv", "sandy_creek_conductivity.csv")),
    # by site: one densely and one sparsely labelled site on each side
    Dataset("lro_aquatic_qc", -7.0, "*_20[0-9][0-9]_*.csv",
            ("TonyGrove_*", "WaterLab_*")),
    # by experiment: the normal run, valve 1 and the leak experiments (other_02/03 share
    # rows, so they stay together) for tuning; valve 2 and the rest (10/11 and 12/13
    # share rows, together too) for the report
    Dataset("skab_pump_testbed", 3.0, "*.csv",
            ("anomaly_free.csv", "valve1_*", "other_0[1-4].csv")),
    # by deployment: single-hop for tuning, multi-hop for the report
    Dataset("wsn_suthaharan2010", 0.0, "*.csv", ("singlehop_*",)),
)}


@dataclass
class Series:
    name: str
    times_ms: np.ndarray
    columns: dict[str, np.ndarray]  # sensor name -> values (NaN: missing)
    labels: np.ndarray  # bool


def dataset_of(folder: Path) -> Dataset:
    known = DATASETS.get(folder.name)
    return known or Dataset(folder.name, 0.0, "*.csv", ())


def part_of(dataset: Dataset, file_name: str) -> str:
    if any(fnmatch.fnmatch(file_name, pattern) for pattern in dataset.tuning):
        return "tuning"
    return "report"


def read_labelled(path: Path, utc_offset_hours: float) -> Series | None:
    """One labelled file, or None when it is no series (an index such as
    anomaly_types.csv: no label column, or a `file` column)."""
    import csv

    with path.open(newline="", encoding="utf-8-sig", errors="replace") as source:
        header = [h.strip() for h in next(csv.reader(source), [])]
    folded = [h.lower() for h in header]
    label = next((h for h in header if h.lower() in LABEL_NAMES), None)
    if label is None or "file" in folded:
        return None
    sensors = [h for h in header if h.lower() not in NOT_SENSORS]
    if not sensors:
        return None
    zone = timezone(timedelta(hours=utc_offset_hours))
    first = read_series(path, value_column=sensors[0], zone=zone,
                        extra_columns=(label, *sensors[1:]))
    columns = {sensors[0]: first.values}
    columns.update({s: first.extra[s] for s in sensors[1:]})
    labels = np.nan_to_num(first.extra[label], nan=0.0) > 0
    return Series(path.name, first.times_ms, columns, labels)


# --- detectors: each maps a series' sensor (times, values) to (scores, alarms) ----------

Scorer = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def tidefield_scorer(times_ms: np.ndarray, values: np.ndarray,
        utc_offset_hours: float) -> tuple[np.ndarray, np.ndarray]:
    from .detector import score_values
    from .tuning import DetectorParams

    params = DetectorParams(tz_offset_hours=utc_offset_hours)
    score = score_values(times_ms, values, params=params).score.astype(np.float64)
    return score, score >= 0.5


# each baseline as published, and (tuned=True) with its settings chosen on the tuning part
# (baselines.TUNED)

def zscore_scorer(times_ms: np.ndarray, values: np.ndarray, utc_offset_hours: float, *,
                  tuned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from .baselines import TUNED_ZSCORE_THRESHOLD, ZSCORE_THRESHOLD, rolling_zscore

    z = rolling_zscore(values)
    return z, z >= (TUNED_ZSCORE_THRESHOLD if tuned else ZSCORE_THRESHOLD)


def qartod_scorer(times_ms: np.ndarray, values: np.ndarray, utc_offset_hours: float, *,
                  tuned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from .baselines import QARTOD_THRESHOLD, TUNED_QARTOD_RATE_SD, TUNED_QARTOD_WIDEN, qartod

    flags = (qartod(times_ms, values, widen=TUNED_QARTOD_WIDEN, rate_sd=TUNED_QARTOD_RATE_SD)
             if tuned else qartod(times_ms, values))
    return flags, flags >= QARTOD_THRESHOLD


def hst_scorer(times_ms: np.ndarray, values: np.ndarray, utc_offset_hours: float, *,
               tuned: bool = False) -> tuple[np.ndarray, np.ndarray]:
    from .baselines import TUNED_HST_QUANTILE, half_space_trees

    return (half_space_trees(values, quantile=TUNED_HST_QUANTILE) if tuned
            else half_space_trees(values))


DETECTORS: dict[str, Scorer] = {"tidefield": tidefield_scorer, "zscore": zscore_scorer,
                                "qartod": qartod_scorer, "hst": hst_scorer,
                                "zscore*": partial(zscore_scorer, tuned=True),
                                "qartod*": partial(qartod_scorer, tuned=True),
                                "hst*": partial(hst_scorer, tuned=True)}
# '*': the baseline with its settings chosen on the tuning part (baselines.TUNED)
BASELINES = ("zscore", "qartod", "hst", "zscore*", "qartod*", "hst*")


# --- event-wise matching ----------------------------------------------------------------

def runs(mask: np.ndarray, merge: int = 1) -> list[tuple[int, int]]:
    """[start, end) of the runs of True, runs fewer than ``merge`` rows apart joined."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > merge)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass
class Tally:
    events: int = 0
    found: int = 0
    alarms: int = 0
    true_alarms: int = 0
    delays_min: list[float] = field(default_factory=list)
    normal_s: float = 0.0
    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    series: int = 0
    readings: int = 0
    flagged: int = 0  # readings at or over the threshold (missing ones included)
    per_series: list[tuple[int, float]] = field(default_factory=list)  # (false, normal s)

    @property
    def precision(self) -> float:
        return self.true_alarms / self.alarms if self.alarms else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.events if self.events else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(r):
            return float("nan")
        if math.isnan(p):  # no alarm at all
            return 0.0
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def false_per_month(self) -> float:
        months = self.normal_s / MONTH_S
        return (self.alarms - self.true_alarms) / months if months > 0 else float("nan")

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.readings if self.readings else float("nan")

    def false_per_month_p90(self) -> float:
        """The 90th percentile over series of their false alarms per month: how evenly
        the default threshold holds across series (calibration)."""
        rates = [f / (n / MONTH_S) for f, n in self.per_series if n > MONTH_S / 30]
        return float(np.percentile(rates, 90)) if rates else float("nan")

    @property
    def median_delay_min(self) -> float:
        return float(np.median(self.delays_min)) if self.delays_min else float("nan")

    @property
    def pr_auc(self) -> float:
        return average_precision(np.concatenate(self.scores), np.concatenate(self.labels)) \
            if self.scores else float("nan")


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve, as the mean precision at each positive
    (ties share a threshold)."""
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    tp = np.cumsum(y)
    last = np.concatenate((np.flatnonzero(np.diff(s) != 0), [s.size - 1]))  # tie ends
    precision = tp[last] / (last + 1)
    gained = np.diff(np.concatenate(([0.0], tp[last])))
    return float((precision * gained).sum() / positives)


def normal_seconds(times_ms: np.ndarray, labels: np.ndarray) -> float:
    steps = np.diff(times_ms.astype(np.float64)) / 1000.0
    ok = steps > 0
    if not ok.any():
        return 0.0
    typical = float(np.median(steps[ok]))
    both_normal = ~labels[1:] & ~labels[:-1]
    return float(np.clip(steps[both_normal & ok], 0.0, 10 * typical).sum())


def tally_series(tally: Tally, series: Series, score: np.ndarray, alarm: np.ndarray) -> None:
    labels = series.labels
    n = labels.shape[0]
    events = runs(labels)
    alarms = runs(alarm, MERGE_ROWS)
    tally.series += 1
    tally.readings += n
    tally.events += len(events)
    tally.alarms += len(alarms)
    hit = [False] * len(alarms)
    for start, end in events:
        lo, hi = max(0, start - TOLERANCE_ROWS), min(n, end + TOLERANCE_ROWS)
        first = None
        for k, (a, _) in enumerate(alarms):
            if lo <= a < hi:  # an alarm counts where it starts, as an alert opens
                hit[k] = True
                first = a if first is None else min(first, a)
        if first is not None:
            tally.found += 1
            delay = (series.times_ms[max(first, start)] - series.times_ms[start]) / 60_000.0
            tally.delays_min.append(max(0.0, float(delay)))
    tally.true_alarms += sum(hit)
    normal = normal_seconds(series.times_ms, labels)
    tally.normal_s += normal
    tally.per_series.append((len(alarms) - sum(hit), normal))
    tally.flagged += int(alarm.sum())
    tally.scores.append(score)
    tally.labels.append(labels)


def score_series(series: Series, scorer: Scorer, utc_offset_hours: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A row's score and alarm: the highest over its sensors; a missing reading of any
    sensor an alarm."""
    score = np.zeros(series.labels.shape[0])
    alarm = np.zeros(series.labels.shape[0], dtype=bool)
    for values in series.columns.values():
        s, a = scorer(series.times_ms, values, utc_offset_hours)
        scale = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=0.0)
        score = np.maximum(score, scale)
        alarm |= np.asarray(a, dtype=bool) | np.isnan(values)
    return score, alarm


# --- the run ------------------------------------------------------------------------------

@dataclass
class DatasetResult:
    name: str
    files: int
    refused: list[str]
    tallies: dict[str, Tally]


def series_files(folder: Path, part: str) -> Iterable[tuple[Dataset, Path]]:
    dataset = dataset_of(folder)
    for path in sorted(folder.glob(dataset.series)):
        if part in ("all", part_of(dataset, path.name)):
            yield dataset, path


def thinned(series: Series, every: int) -> list[Series]:
    """The series as a logger ``every`` times sparser would have written it: every
    ``every``-th row, each of the ``every`` phases a series of its own (labels are per
    reading, so they stay with theirs). One is the series itself."""
    if every < 1:
        raise ValueError("every must be at least 1")
    if every == 1:
        return [series]
    return [Series(f"{series.name}[{phase}::{every}]", series.times_ms[phase::every],
                   {k: v[phase::every] for k, v in series.columns.items()},
                   series.labels[phase::every])
            for phase in range(min(every, series.labels.shape[0]))]


def run_benchmark(folders: Sequence[Path], *, part: str = "report",
                  detectors: Sequence[str] = tuple(DETECTORS),
                  progress: Callable[[str], None] | None = None,
                  every: int = 1) -> list[DatasetResult]:
    results = []
    for folder in folders:
        dataset = dataset_of(folder)
        tallies = {name: Tally() for name in detectors}
        refused: list[str] = []
        files = 0
        for _, path in series_files(folder, part):
            try:
                series = read_labelled(path, dataset.utc_offset_hours)
            except SeriesCsvError as exc:
                refused.append(str(exc))
                continue
            if series is None:
                continue
            files += 1
            if progress is not None:
                progress(f"{dataset.name}/{path.name}")
            for sparse in thinned(series, every):
                for name in detectors:
                    score, alarm = score_series(sparse, DETECTORS[name],
                                                dataset.utc_offset_hours)
                    tally_series(tallies[name], sparse, score, alarm)
        results.append(DatasetResult(dataset.name, files, refused, tallies))
    return results


def report_lines(results: Sequence[DatasetResult], part: str) -> list[str]:
    lines = []
    means: dict[str, list[float]] = {}
    for result in results:
        some = next(iter(result.tallies.values()))
        lines.append(f"{result.name} ({part}): {result.files} files, {some.series} series, "
                     f"{some.readings:,} readings, {some.events} events"
                     + (f"; REFUSED {len(result.refused)}" if result.refused else ""))
        lines.extend(f"  refused: {why}" for why in result.refused)
        lines.append(f"  {'detector':10} {'alarms':>6} {'P':>5} {'R':>5} {'F1':>5} "
                     f"{'PR-AUC':>6} {'delay min':>9} {'false/series-month':>18} "
                     f"{'p90 series':>10} {'flagged':>7}")
        for name, t in result.tallies.items():
            lines.append(f"  {name:10} {t.alarms:6d} {t.precision:5.2f} {t.recall:5.2f} "
                         f"{t.f1:5.2f} {t.pr_auc:6.3f} {t.median_delay_min:9.1f} "
                         f"{t.false_per_month:18.2f} {t.false_per_month_p90():10.2f} "
                         f"{100 * t.flagged_share:6.2f}%")
            means.setdefault(name, []).append(t.f1)
        lines.append("  " + ratio_line({k: v.f1 for k, v in result.tallies.items()}))
    if len(results) > 1:
        mean = {k: float(np.nanmean(v)) for k, v in means.items()}
        lines.append(f"over {len(results)} datasets, mean event-wise F1: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
        lines.append(ratio_line(mean))
    return lines


def ratio_line(f1: dict[str, float]) -> str:
    others = {k: v for k, v in f1.items() if k in BASELINES and not math.isnan(v)}
    if "tidefield" not in f1 or not others:
        return "ratio: -"
    best = max(others, key=lambda name: others[name])
    mine = f1["tidefield"]
    ratio = mine / others[best] if others[best] > 0 else float("inf")
    return f"tidefield F1 / best baseline ({best} {others[best]:.3f}): {ratio:.2f}"
