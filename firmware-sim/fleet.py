"""The simulated fleet: a series table and every way to ask it for readings.

* ``Fleet.generate(start_ms, end_ms)`` -> ``Chunk``: columnar arrays (series index,
  time, value) of every reading in [start, end), **in time order, ties by series index**.
  Chunks of consecutive windows concatenate to exactly the chunk of their union.
* ``Fleet.chunks(start_ms, end_ms, chunk_ms)``: the same, streamed window by window.
* ``Fleet.value_at(...)`` / ``device_values(...)``: what a sensor shows at an instant
  (its latest sample at or before it: sensors sample-and-hold between samples).
* ``Fleet.device_batch(...)`` / ``batches(...)``: protocol ``Batch`` objects for a
  window, with sequence numbers supplied by the caller (for the MQTT fleet publisher).
* ``Fleet.labels(start_ms, end_ms)``: the ground truth of what was injected.

A sample's value depends only on (seed, series, sample time) and the injection plan;
see ``physics`` and ``render``. Each device samples every ``interval_s`` of its template
at a fixed phase (whole seconds, from a hash of its id): times are ``phase + k*interval``.

Series order: registry site order, then the kind's device templates, then each
template's metrics. The table maps an index to (site_id, device_id, metric).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import Site
from tidefield.protocol.units import DAY_MS, HOUR_MS

from . import physics as ph
from . import render as rd
from .events import InjectionPlan, Label, SitePlan, plan_site
from .rng import stream_key
from .sites import series_keys, setting_of, site_climate

log = logging.getLogger(__name__)

DEFAULT_CHUNK_MS = 6 * HOUR_MS


def _load_sites() -> Sequence[Site]:
    from tidefield.protocol.registry import load_sites

    return load_sites()


class SeriesTable:
    """Every series of a set of sites, with the arrays the kernels read."""

    def __init__(self, sites: Sequence, seed: int) -> None:
        site_ids, device_ids, metrics, site_of, device_of = [], [], [], [], []
        models, params, keys, intervals, phases = [], [], [], [], []
        self.sites = tuple(sites)
        self.devices: list = []
        for site_index, site in enumerate(self.sites):
            climate = site_climate(site, seed)
            for device in site.devices:
                template = device.template
                setting = setting_of(site.kind, template.name)
                vector = climate.vector(template.name, template.interval_s)
                # A fixed phase per device, independent of the seed: devices of a site do
                # not all sample on the same second, and their clocks never move.
                phase_s = int(stream_key("phase", device.id)) % template.interval_s
                for metric in template.metrics:
                    site_ids.append(site.id)
                    device_ids.append(device.id)
                    metrics.append(metric)
                    site_of.append(site_index)
                    device_of.append(len(self.devices))
                    models.append(ph.model_for(metric, setting))
                    params.append(vector)
                    keys.append(series_keys(seed, site.id, device.id, metric))
                    intervals.append(template.interval_s * 1000)
                    phases.append(phase_s * 1000)
                self.devices.append(device)
        if not site_ids:
            raise ValueError("a fleet needs at least one site")
        self.site_ids = tuple(site_ids)
        self.device_ids = tuple(device_ids)
        self.metrics = tuple(metrics)
        self.site_of = np.array(site_of, dtype=np.int32)
        self.device_of = np.array(device_of, dtype=np.int32)
        catalog = [METRICS[m] for m in metrics]
        self.arrays = rd.SeriesArrays(
            site=np.array(site_of, dtype=np.int64),
            model=np.array([m.id for m in models], dtype=np.int64),
            given=self._given_siblings(models, device_of, metrics),
            params=np.array(params, dtype=np.float64),
            keys=np.array(keys, dtype=np.uint64),
            noise=np.array([m.noise for m in models], dtype=np.float64),
            relative=np.array([m.relative for m in models], dtype=np.bool_),
            low=np.array([c.physical[0] for c in catalog], dtype=np.float64),
            high=np.array([c.physical[1] for c in catalog], dtype=np.float64),
            circular=np.array([c.circular for c in catalog], dtype=np.bool_),
            steps=np.array([round(1.0 / c.resolution) for c in catalog], dtype=np.float64),
            interval_ms=np.array(intervals, dtype=np.int64),
            phase_ms=np.array(phases, dtype=np.int64),
        )
        self._index = {(s, d, m): i for i, (s, d, m) in enumerate(
            zip(site_ids, device_ids, metrics, strict=True))}
        self._of_site: dict[str, list[int]] = {}
        self._of_device: dict[str, list[int]] = {}
        for i, (s, d) in enumerate(zip(site_ids, device_ids, strict=True)):
            self._of_site.setdefault(s, []).append(i)
            self._of_device.setdefault(d, []).append(i)
        self.device_by_id = {device.id: device for device in self.devices}

    @staticmethod
    def _given_siblings(models: Sequence[ph.Model], device_of: Sequence[int],
                        metrics: Sequence[str]) -> np.ndarray:
        """For each series, the series of the same device its model takes a clean value
        from (physics.Model.given), or -1."""
        by_device: dict[tuple[int, str], int] = {
            (d, m): i for i, (d, m) in enumerate(zip(device_of, metrics, strict=True))}
        return np.array([by_device.get((device_of[i], model.given), -1) if model.given else -1
                         for i, model in enumerate(models)], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.metrics)

    def index(self, site_id: str, device_id: str, metric: str) -> int:
        try:
            return self._index[(site_id, device_id, metric)]
        except KeyError:
            raise KeyError(f"no series {site_id}/{device_id}/{metric}") from None

    def identity(self, s: int) -> tuple[str, str, str]:
        return self.site_ids[s], self.device_ids[s], self.metrics[s]

    def of_site(self, site_id: str) -> list[int]:
        try:
            return self._of_site[site_id]
        except KeyError:
            raise KeyError(f"no site {site_id!r} in this fleet") from None

    def of_device(self, device_id: str) -> list[int]:
        try:
            return self._of_device[device_id]
        except KeyError:
            raise KeyError(f"no device {device_id!r} in this fleet") from None


@dataclass(frozen=True, slots=True, eq=False)
class Chunk:
    """Readings of [start_ms, end_ms) in time order (ties: series index)."""

    table: SeriesTable
    start_ms: int
    end_ms: int
    series: np.ndarray  # int32 index into table
    time_ms: np.ndarray  # int64
    value: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.series.shape[0])

    def rows(self) -> Iterator[tuple[str, str, str, int, float]]:
        """(site_id, device_id, metric, time_ms, value) per reading: slow, for small use."""
        t = self.table
        for s, time_ms, value in zip(self.series.tolist(), self.time_ms.tolist(),
                                     self.value.tolist(), strict=True):
            yield t.site_ids[s], t.device_ids[s], t.metrics[s], time_ms, value


class Fleet:
    """The simulated fleet of ``sites`` (default: the whole registry) for ``seed``.

    ``plan=None`` gives the clean signal; otherwise faults and events are injected as
    ``plan`` says, and ``labels()`` tells where.
    """

    def __init__(self, sites: Sequence | None = None, *, seed: int = 0,
                 plan: InjectionPlan | None = None) -> None:
        self.seed = int(seed)
        self.plan = plan
        self.table = SeriesTable(_load_sites() if sites is None else sites, self.seed)
        self._site_kind = {site.id: site.kind for site in self.table.sites}
        arrays = self.table.arrays
        self.frame_ms = int(reduce(math.lcm, set(arrays.interval_ms.tolist())))
        self._per_frame = (self.frame_ms // arrays.interval_ms).astype(np.int64)
        self._pattern = self._frame_pattern()
        self._plans: dict[tuple[str, int], SitePlan] = {}
        self._injections: dict[tuple[int, int], rd.Injection] = {}

    # --- construction helpers ----------------------------------------------------------

    def _frame_pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = self.table.arrays
        series = np.repeat(np.arange(len(self.table), dtype=np.int64), self._per_frame)
        k = np.concatenate([np.arange(n, dtype=np.int64) for n in self._per_frame])
        offset = arrays.phase_ms[series] + k * arrays.interval_ms[series]
        order = np.lexsort((series, offset))  # by offset, then series
        return series[order], k[order], offset[order]

    def with_plan(self, plan: InjectionPlan | None) -> Fleet:
        """The same sites and seed with another plan (``None``: the clean signal)."""
        return Fleet(self.table.sites, seed=self.seed, plan=plan)

    def subset(self, site_ids: Iterable[str]) -> Fleet:
        """A fleet of some of these sites; their series give identical values."""
        wanted = set(site_ids)
        sites = [site for site in self.table.sites if site.id in wanted]
        missing = wanted - {site.id for site in sites}
        if missing:
            raise KeyError(f"no such sites in this fleet: {', '.join(sorted(missing))}")
        return Fleet(sites, seed=self.seed, plan=self.plan)

    # --- injection ------------------------------------------------------------------------

    def site_plan(self, site_id: str, epoch: int) -> SitePlan:
        key = (site_id, epoch)
        found = self._plans.get(key)
        if found is None:
            assert self.plan is not None  # site_plan is asked only when injecting
            found = plan_site(self, site_id, self._site_kind[site_id], epoch, self.plan,
                              self.seed)
            self._plans[key] = found
        return found

    def _epochs(self, start_ms: int, end_ms: int) -> range:
        if self.plan is None or end_ms <= start_ms:
            return range(0)
        return range(self.plan.epoch_of(start_ms), self.plan.epoch_of(end_ms - 1) + 1)

    def _injection(self, start_ms: int, end_ms: int) -> rd.Injection:
        epochs = self._epochs(start_ms, end_ms)
        key = (epochs.start, epochs.stop) if epochs else (0, 0)
        found = self._injections.get(key)
        if found is not None:
            return found
        n = len(self.table)
        ev_blocks, fault_blocks = [], []
        ev_lo = np.zeros(n, dtype=np.int64)
        ev_hi = np.zeros(n, dtype=np.int64)
        f_lo = np.zeros(n, dtype=np.int64)
        f_hi = np.zeros(n, dtype=np.int64)
        ev_used = f_used = 0
        for site in self.table.sites:
            plans = [self.site_plan(site.id, e) for e in epochs]
            rows = [p.events for p in plans if p.events.shape[0]]
            block = np.concatenate(rows) if rows else None
            members = self.table.of_site(site.id)
            if block is not None:
                ev_blocks.append(block)
                ev_lo[members] = ev_used
                ev_hi[members] = ev_used + block.shape[0]
                ev_used += block.shape[0]
            for s in members:
                faults = [p.faults[s] for p in plans if s in p.faults]
                if faults:
                    fault_block = np.concatenate(faults)
                    fault_blocks.append(fault_block)
                    f_lo[s] = f_used
                    f_hi[s] = f_used + fault_block.shape[0]
                    f_used += fault_block.shape[0]
        events = (np.concatenate(ev_blocks) if ev_blocks
                  else np.zeros((0, len(ph.EV_COLUMNS))))
        fault_rows = (np.concatenate(fault_blocks) if fault_blocks
                      else np.zeros((0, len(rd.FAULT_COLUMNS))))
        found = rd.Injection(np.ascontiguousarray(events), ev_lo, ev_hi,
                             np.ascontiguousarray(fault_rows), f_lo, f_hi)
        if len(self._injections) > 8:  # windows move forward; old ones are not asked again
            self._injections.clear()
        self._injections[key] = found
        return found

    def labels(self, start_ms: int, end_ms: int) -> list[Label]:
        """Every label whose interval intersects [start_ms, end_ms), by start time."""
        found: list[Label] = []
        for site in self.table.sites:
            for epoch in self._epochs(start_ms, end_ms):
                found.extend(label for label in self.site_plan(site.id, epoch).labels
                             if label.start_ms < end_ms and label.end_ms > start_ms)
        found.sort(key=lambda lb: (lb.start_ms, lb.site_id, lb.device_id, lb.metric))
        return found

    # --- columnar generation --------------------------------------------------------------

    def generate(self, start_ms: int, end_ms: int) -> Chunk:
        """Every reading of the fleet in [start_ms, end_ms), in time order."""
        start_ms, end_ms = int(start_ms), int(end_ms)
        if end_ms <= start_ms:
            empty = np.zeros(0)
            return Chunk(self.table, start_ms, end_ms, empty.astype(np.int32),
                         empty.astype(np.int64), empty)
        frame0 = start_ms // self.frame_ms * self.frame_ms
        n_frames = -(-(end_ms - frame0) // self.frame_ms)
        arrays = self.table.arrays
        counts = self._per_frame * n_frames
        out_lo = np.zeros(len(self.table), dtype=np.int64)
        np.cumsum(counts[:-1], out=out_lo[1:])
        total = int(counts.sum())
        values = np.empty(total, dtype=np.float64)
        rows = np.arange(len(self.table), dtype=np.int64)
        injection = self._injection(frame0, frame0 + n_frames * self.frame_ms)
        rd.render(rows, frame0 + arrays.phase_ms, counts, out_lo, arrays, injection, values)
        series = np.empty(total, dtype=np.int32)
        times = np.empty(total, dtype=np.int64)
        out = np.empty(total, dtype=np.float64)
        pattern_series, pattern_k, pattern_offset = self._pattern
        written = rd.gather(pattern_series, pattern_k, pattern_offset, self._per_frame, out_lo,
                            values, frame0, self.frame_ms, n_frames, start_ms, end_ms,
                            series, times, out)
        return Chunk(self.table, start_ms, end_ms, series[:written], times[:written],
                     out[:written])

    def chunks(self, start_ms: int, end_ms: int,
               chunk_ms: int = DEFAULT_CHUNK_MS) -> Iterator[Chunk]:
        """``generate`` over consecutive windows of ``chunk_ms`` (constant memory)."""
        if chunk_ms <= 0:
            raise ValueError("chunk_ms must be positive")
        t = int(start_ms)
        while t < end_ms:
            stop = min(int(end_ms), t + chunk_ms)
            yield self.generate(t, stop)
            t = stop

    # --- single series and devices ----------------------------------------------------------

    def sample_times(self, s: int, start_ms: int, end_ms: int) -> np.ndarray:
        """Sample times of series ``s`` in [start_ms, end_ms)."""
        interval = int(self.table.arrays.interval_ms[s])
        phase = int(self.table.arrays.phase_ms[s])
        first = phase + -(-(int(start_ms) - phase) // interval) * interval
        if first >= end_ms:
            return np.zeros(0, dtype=np.int64)
        return np.arange(first, int(end_ms), interval, dtype=np.int64)

    def _render_one(self, s: int, times: np.ndarray, events: np.ndarray,
                    faults: np.ndarray) -> np.ndarray:
        out = np.empty(times.shape[0], dtype=np.float64)
        if times.shape[0]:
            rd.render_one(s, int(times[0]), times.shape[0], self.table.arrays,
                          np.ascontiguousarray(events, dtype=np.float64),
                          np.ascontiguousarray(faults, dtype=np.float64), out)
        return out

    def series_values(self, s: int, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of one series in [start_ms, end_ms), injection included; a
        dropped-out sample is NaN here (``generate`` leaves it out)."""
        times = self.sample_times(s, start_ms, end_ms)
        injection = self._injection(start_ms, end_ms)
        events = injection.events[injection.ev_lo[s]:injection.ev_hi[s]]
        faults = injection.faults[injection.f_lo[s]:injection.f_hi[s]]
        return times, self._render_one(s, times, events, faults)

    def value_at(self, site_id: str, device_id: str, metric: str, t_ms: int) -> float | None:
        """What the sensor shows at ``t_ms``: its latest sample at or before it (None while
        it is dropped out)."""
        s = self.table.index(site_id, device_id, metric)
        return self._held_value(s, int(t_ms))

    def _held_value(self, s: int, t_ms: int) -> float | None:
        interval = int(self.table.arrays.interval_ms[s])
        phase = int(self.table.arrays.phase_ms[s])
        sample_ms = phase + (t_ms - phase) // interval * interval
        _, values = self.series_values(s, sample_ms, sample_ms + 1)
        value = float(values[0])
        return None if math.isnan(value) else value

    def last_sample_ms(self, device_id: str, t_ms: int) -> int:
        """Time of the device's latest sample at or before ``t_ms``."""
        s = self.table.of_device(device_id)[0]
        interval = int(self.table.arrays.interval_ms[s])
        phase = int(self.table.arrays.phase_ms[s])
        return phase + (int(t_ms) - phase) // interval * interval

    def device_values(self, device_id: str, t_ms: int) -> dict[str, float | None]:
        """Every metric of a device as shown at ``t_ms`` (None: dropped out)."""
        return {self.table.metrics[s]: self._held_value(s, int(t_ms))
                for s in self.table.of_device(device_id)}

    def device_readings(self, device_id: str, start_ms: int, end_ms: int) -> tuple[Reading, ...]:
        """The device's readings in [start_ms, end_ms), by time then template order."""
        columns = []
        for s in self.table.of_device(device_id):
            times, values = self.series_values(s, start_ms, end_ms)
            columns.append((self.table.metrics[s], times, values))
        readings = []
        for i in range(columns[0][1].shape[0] if columns else 0):
            for metric, times, values in columns:
                value = float(values[i])
                if not math.isnan(value):
                    readings.append(Reading(metric, int(times[i]), value))
        return tuple(readings)

    def device_batch(self, device_id: str, start_ms: int, end_ms: int,
                     seq: int) -> Batch | None:
        """One telemetry Batch of the device's readings in the window (None if none)."""
        readings = self.device_readings(device_id, start_ms, end_ms)
        if not readings:
            return None
        device = self.table.device_by_id[device_id]
        return Batch(device.site_id, device_id, seq, readings)

    def batches(self, start_ms: int, end_ms: int, next_seq: Callable[[str], int], *,
                max_readings: int | None = None) -> Iterator[Batch]:
        """One Batch per device with readings in [start_ms, end_ms) (more if a device has
        over ``max_readings``), devices in table order. ``next_seq(device_id)`` is called
        once per batch yielded, in order, and gives its sequence number."""
        if max_readings is not None and max_readings < 1:
            raise ValueError("max_readings must be at least 1")
        chunk = self.generate(start_ms, end_ms)
        if not len(chunk):
            return
        devices = self.table.device_of[chunk.series]
        order = np.argsort(devices, kind="stable")  # time order kept within a device
        devices = devices[order]
        bounds = np.flatnonzero(np.diff(devices)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [devices.shape[0]]))
        metrics = self.table.metrics
        for lo, hi in zip(starts.tolist(), stops.tolist(), strict=True):
            device = self.table.devices[int(devices[lo])]
            rows = order[lo:hi]
            readings = [Reading(metrics[s], t, v) for s, t, v in zip(
                chunk.series[rows].tolist(), chunk.time_ms[rows].tolist(),
                chunk.value[rows].tolist(), strict=True)]
            size = max_readings or len(readings)
            for i in range(0, len(readings), size):
                yield Batch(device.site_id, device.id, next_seq(device.id),
                            tuple(readings[i:i + size]))

    # --- physics helpers for tests and planners ------------------------------------------

    def irrigation_events(self, site_id: str, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
        """Scheduled irrigations (start_ms, end_ms) starting in the window, as planned;
        an injected irrigation failure suppresses some of them."""
        s = self.table.of_site(site_id)[0]
        params = self.table.arrays.params[s]
        keys = self.table.arrays.keys[s]
        first_day = (int(start_ms) + 8 * HOUR_MS) // DAY_MS - 1
        last_day = (int(end_ms) + 8 * HOUR_MS) // DAY_MS
        found = []
        for day in range(first_day, last_day + 1):
            start, end, amount = ph.irrigation_event(params, keys, day)
            if amount > 0.0 and start_ms <= start < end_ms:
                found.append((int(start), int(end)))
        return found

    # --- the planner's Renderer protocol ----------------------------------------------------

    def series_of_site(self, site_id: str) -> list[int]:
        return self.table.of_site(site_id)

    def series_identity(self, s: int) -> tuple[str, str, str]:
        return self.table.identity(s)

    def series_interval_ms(self, s: int) -> int:
        return int(self.table.arrays.interval_ms[s])

    def series_sample_times(self, s: int, start_ms: int, end_ms: int) -> np.ndarray:
        return self.sample_times(s, start_ms, end_ms)

    def render_series(self, s: int, start_ms: int, end_ms: int, events: np.ndarray,
                      faults: np.ndarray) -> np.ndarray:
        return self._render_one(s, self.sample_times(s, start_ms, end_ms), events, faults)
