"""Aggregate inserted readings into rollup rows (count, sum, min, max, last), in NumPy.

The ingest transaction upserts these rows, merging them with what the rollup tables hold,
so every rollup stays equal to the aggregate of the raw rows whatever order readings
arrive in: count and sum add, min and max compare, and "last" keeps the value with the
newest time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BUCKETS_MS = {"5m": 300_000, "1h": 3_600_000}


@dataclass(frozen=True, slots=True)
class RollupRows:
    series_id: np.ndarray  # int32
    bucket_ms: np.ndarray  # int64, bucket start
    count: np.ndarray  # int64
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    last_time_ms: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.series_id)


def aggregate(series_id: np.ndarray, time_ms: np.ndarray, value: np.ndarray,
              bucket_ms: int) -> RollupRows:
    """Rows sorted by (series_id, bucket), which is also the order the upsert locks them
    in, so concurrent workers cannot deadlock on rollup rows."""
    bucket = time_ms - time_ms % bucket_ms
    order = np.lexsort((time_ms, bucket, series_id))
    s, b, t, v = series_id[order], bucket[order], time_ms[order], value[order]
    if len(s) == 0:
        empty_i = np.empty(0, np.int64)
        return RollupRows(s.astype(np.int32), empty_i, empty_i, v, v, v, v, empty_i)
    new_group = np.empty(len(s), dtype=bool)
    new_group[0] = True
    new_group[1:] = (s[1:] != s[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(s))
    return RollupRows(
        series_id=s[starts].astype(np.int32),
        bucket_ms=b[starts],
        count=(ends - starts).astype(np.int64),
        sum=np.add.reduceat(v, starts),
        min=np.minimum.reduceat(v, starts),
        max=np.maximum.reduceat(v, starts),
        last=v[ends - 1],
        last_time_ms=t[ends - 1],
    )
