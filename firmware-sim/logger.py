"""What a real data logger does to the times of the readings it forwards.

``LoggerQuirks`` rewrites a ``Chunk`` the way field loggers do, deterministically from the
seed and each series' identity (the same chunk always comes out the same):

* irregular sampling: each reading's time moves by up to ``jitter`` of its interval (a
  logger waking late, a radio retry);
* repeated timestamps: a reading now and then sent twice with one time (a retransmitted
  record, a clock that did not tick);
* clock jumps: a logger's clock set back by ``jump_intervals`` sample intervals for
  ``jump_hours`` (a drifting clock that a time sync pulls back, then forward again), so
  its times step back and run over times already sent, and later step forward.

The values are untouched and nothing is labelled: these are no sensor faults, and a
detector must neither refuse the readings nor alert on them. Rows stay in the chunk's
order (a logger sends what it has in the order it has it), so times need not increase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fleet import Chunk
from .rng import stream_key

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class LoggerQuirks:
    seed: int
    jitter: float = 0.2  # of the interval, either way
    repeat_rate: float = 0.002  # share of readings sent twice
    jumps_per_series_month: float = 0.5
    jump_intervals: float = 1.5
    jump_hours: float = 6.0

    def apply(self, chunk: Chunk) -> Chunk:
        if not len(chunk):
            return chunk
        interval = chunk.table.arrays.interval_ms[chunk.series].astype(np.float64)
        sample = chunk.time_ms // interval.astype(np.int64)
        key = stream_key(self.seed, "logger")
        u_jitter = _uniforms(key, chunk.series, sample, 1)
        u_repeat = _uniforms(key, chunk.series, sample, 2)
        times = chunk.time_ms + np.rint((2.0 * u_jitter - 1.0) * self.jitter
                                        * interval).astype(np.int64)
        # a clock jump is drawn per series and block of jump_hours: the block's readings
        # are stamped jump_intervals early (short of the silence a no-data rule waits for,
        # so the step forward at its end is no outage)
        block = chunk.time_ms // int(self.jump_hours * HOUR_MS)
        blocks_per_month = 30 * 24 / self.jump_hours
        jumped = _uniforms(key, chunk.series, block, 3) < (self.jumps_per_series_month
                                                           / blocks_per_month)
        back = np.rint(self.jump_intervals * interval).astype(np.int64)
        times = np.where(jumped, times - back, times)
        twice = u_repeat < self.repeat_rate
        order = np.repeat(np.arange(len(chunk)), np.where(twice, 2, 1))
        return Chunk(chunk.table, chunk.start_ms, chunk.end_ms, chunk.series[order],
                     times[order], chunk.value[order])


def _uniforms(key: np.uint64, series: np.ndarray, index: np.ndarray, salt: int) -> np.ndarray:
    """Uniform draws in [0, 1) per (series, index, salt): SplitMix64 in NumPy's wrapping
    uint64 arithmetic, so a chunk of 100,000 readings costs no Python loop."""
    with np.errstate(over="ignore"):  # the hash wraps by design
        s = series.astype(np.uint64)
        z = np.uint64(key) ^ (s * _GOLDEN + np.uint64(salt) * _MIX2)
        z = z + (index.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
