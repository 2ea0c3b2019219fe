"""From received messages to rows: the one code path that MQTT and HTTP ingest share.

``prepare`` decodes and validates every message through tidefield.protocol, resolves each
reading to its series, and returns columnar arrays ready for a binary COPY, plus the
batches (for idempotency and sequence tracking), device status messages, and rejects
(every refused message or reading, with its reason).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg

from tidefield.protocol.codec import Decoded, Limits, decode_batch, decode_status
from tidefield.protocol.errors import (
    BadTopic,
    IdentityMismatch,
    InternalFailure,
    Poison,
    ProtocolError,
    RateLimited,
    UnknownDevice,
    UnknownSeries,
)
from tidefield.protocol.messages import Status
from tidefield.protocol.topics import Channel, parse_topic

from .directory import DeviceDirectory, DeviceEntry
from .ratelimit import DeviceBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as received, whatever the transport."""

    topic: str
    payload: bytes
    content_type: str | None
    received_ms: int
    redelivered: bool = False  # delivered before, never acknowledged: maybe it kills us


@dataclass(frozen=True, slots=True)
class Reject:
    topic: str
    payload: bytes
    reason: str
    detail: str
    device_id: str | None
    received_ms: int
    # Identifies what was refused, so the same message re-delivered after a crash is kept
    # once: sha256 of topic and payload, plus the reading's index for a reading reject.
    fingerprint: bytes
    messages: int = 1  # how many refused messages this one stands for (rate limit)


@dataclass(frozen=True, slots=True)
class BatchRef:
    device_id: str
    seq: int
    site_id: str  # (its receipt's topic)
    start: int  # this batch's rows are rows[start:end] of the Prepared arrays
    end: int
    last_reading_ms: int
    received_ms: int
    rejects: tuple[Reject, ...]  # its refused readings: kept only if the batch is new


@dataclass(slots=True)
class Prepared:
    series_id: np.ndarray
    time_ms: np.ndarray
    value: np.ndarray
    batches: list[BatchRef] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)  # message-level refusals
    # id() of the envelopes the device budget refused (the worker's one-by-one retry path
    # must refuse them again rather than charge the budget twice), and the longest wait
    # after which one of them would have been admitted (HTTP's Retry-After)
    rate_limited: frozenset[int] = frozenset()
    rate_limited_wait_s: float = 0.0

    @property
    def received_readings(self) -> int:
        return len(self.series_id) + sum(len(b.rejects) for b in self.batches)


def fingerprint_of(topic: str, payload: bytes, index: int | None = None) -> bytes:
    digest = hashlib.sha256(topic.encode() + b"\0" + payload)
    if index is not None:
        digest.update(b"\0%d" % index)
    return digest.digest()


def _reject(env: Envelope, reason: str, detail: str, device_id: str | None) -> Reject:
    return Reject(env.topic, env.payload, reason, detail, device_id, env.received_ms,
                  fingerprint_of(env.topic, env.payload))


def internal_reject(env: Envelope, exc: BaseException) -> Reject:
    """A message our code failed on, kept with the exception's type and text."""
    log.error("processing a message failed; keeping it as a reject", exc_info=exc,
              extra={"topic": env.topic})
    return _reject(env, InternalFailure.reason, f"{type(exc).__name__}: {exc}"[:2000],
                   device_of_topic(env.topic) or None)


def poison_reject(env: Envelope, starts: int) -> Reject:
    return _reject(env, Poison.reason,
                   f"ingest started on this message {starts} times and died each time "
                   f"before committing it; set aside unread", device_of_topic(env.topic) or None)


def store_reject(env: Envelope, exc: BaseException) -> Reject:
    """A message whose rows could not be written (the database refused them for good, or
    our code failed): ``store_failed`` for the database's refusal, else ``internal``."""
    if isinstance(exc, psycopg.Error):
        return _reject(env, "store_failed", str(exc).strip()[:2000], None)
    return _reject(env, InternalFailure.reason, f"{type(exc).__name__}: {exc}"[:2000],
                   device_of_topic(env.topic) or None)


def device_of_topic(topic: str) -> str:
    """The device part of tf/v1/{site}/{device}/..., without validating the rest (the
    cheap look that partitioning and the rate limit need before decoding)."""
    parts = topic.split("/", 4)
    return parts[3] if len(parts) > 3 else ""


def rate_limited(envelopes: Sequence[Envelope], rate: float, burst: int) -> list[Reject]:
    """The rejects of messages refused by the device budget: one per device and window,
    keeping its first refused message as the sample and counting the others, so a flood
    of refused messages does not become a flood of rows."""
    by_device: dict[str, list[Envelope]] = {}
    for env in envelopes:
        by_device.setdefault(device_of_topic(env.topic), []).append(env)
    rejects = []
    for device, refused in by_device.items():
        first, last = refused[0], refused[-1]
        rejects.append(Reject(
            first.topic, first.payload, RateLimited.reason,
            f"device {device}: {len(refused)} message(s) over its budget of {rate:g} "
            f"readings per second of device time (burst {burst}) within "
            f"{last.received_ms - first.received_ms} ms; the first is kept as a sample",
            device or None, first.received_ms,
            fingerprint_of(first.topic, first.payload), len(refused)))
    return rejects


def prepare(envelopes: Sequence[Envelope], directory: DeviceDirectory, *,
            limits: Limits, now_ms: int, budget: DeviceBudget | None = None,
            limited: frozenset[int] | None = None) -> Prepared:
    """Decode, check and resolve a window of messages. ``budget``: the per-device budget
    each decoded message is charged to; ``limited``: id() of envelopes already refused by
    it (the retry path), refused again without a charge."""
    series_ids: list[int] = []
    times: list[int] = []
    values: list[float] = []
    out = Prepared(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0))
    seen: set[tuple[str, int]] = set()
    refused: list[Envelope] = []

    def over_budget(env: Envelope, device: str, readings: int,
                    times_ms: Sequence[int]) -> bool:
        if limited is not None:
            if id(env) in limited:
                refused.append(env)
                return True
            return False
        if budget is None:
            return False
        wait_s = budget.take(device, readings, min(times_ms, default=None),
                             max(times_ms, default=None), env.received_ms)
        if wait_s:
            refused.append(env)
            out.rate_limited_wait_s = max(out.rate_limited_wait_s, wait_s)
        return wait_s > 0

    def take(env: Envelope) -> None:
        """One message into ``out``: its rows, its batch, its status or its reject."""
        topic = parse_topic(env.topic)
        if topic.channel is Channel.STATUS:
            status = decode_status(env.payload, env.content_type, topic=topic, limits=limits)
            entry = directory.device(status.device, status.site)
            if entry is None:
                out.rejects.append(_reject(env, UnknownDevice.reason,
                                           f"device {status.device} of site {status.site} "
                                           f"is not registered", status.device))
            elif entry.site_id != status.site:  # a status may not speak for another site
                out.rejects.append(_reject(env, IdentityMismatch.reason,
                                           f"device {status.device} belongs to site "
                                           f"{entry.site_id}, not {status.site}",
                                           status.device))
            elif not over_budget(env, status.device, 1, ()):
                out.statuses.append(status)
            return
        if topic.channel is not Channel.UP:
            out.rejects.append(_reject(env, BadTopic.reason,
                                       f"ingest takes up and status topics, not {env.topic}",
                                       topic.device))
            return
        decoded = decode_batch(env.payload, env.content_type, topic=topic, now_ms=now_ms,
                               limits=limits)
        entry = directory.device(decoded.device, decoded.site)
        if entry is None:
            out.rejects.append(_reject(env, UnknownDevice.reason,
                                       f"device {decoded.device} of site {decoded.site} is "
                                       f"not registered", decoded.device))
            return
        if entry.site_id != decoded.site:
            out.rejects.append(_reject(env, IdentityMismatch.reason,
                                       f"device {decoded.device} belongs to site "
                                       f"{entry.site_id}, not {decoded.site}", decoded.device))
            return
        key = (decoded.device, decoded.seq)
        if key in seen:  # the same message twice in one window: the first one counts
            return
        seen.add(key)
        if over_budget(env, decoded.device, len(decoded.times_ms) + len(decoded.rejected),
                       decoded.times_ms):
            return

        reading_rejects = [
            Reject(env.topic, json.dumps(err.raw, default=repr).encode(), err.reason, err.message,
                   decoded.device, env.received_ms,
                   fingerprint_of(env.topic, env.payload, err.index))
            for err in decoded.rejected]
        series = entry.series
        ids = [series.get(m, -1) for m in decoded.metrics]
        if -1 in ids:
            ids = _resolve_missing(ids, decoded, entry, directory, env, reading_rejects)
        if -1 not in ids:
            kept_ids, kept_times, kept_values = ids, decoded.times_ms, decoded.values
        else:  # some readings have no series: they were refused above
            kept = [i for i, sid in enumerate(ids) if sid != -1]
            kept_ids = [ids[i] for i in kept]
            kept_times = [decoded.times_ms[i] for i in kept]
            kept_values = [decoded.values[i] for i in kept]
        last_ms = max(kept_times, default=-1)
        # Everything that can fail is done: the message's rows and its batch go in together.
        start = len(series_ids)
        series_ids.extend(kept_ids)
        times.extend(kept_times)
        values.extend(kept_values)
        out.batches.append(BatchRef(decoded.device, decoded.seq, decoded.site, start,
                                    len(series_ids), last_ms, env.received_ms,
                                    tuple(reading_rejects)))

    for env in envelopes:
        try:
            take(env)
        except ProtocolError as exc:
            out.rejects.append(_reject(env, exc.reason, exc.message, None))
        except psycopg.OperationalError:
            raise  # the database's fault, not the message's: the caller holds the window
        except Exception as exc:  # whatever it is, it must not stop the rest
            out.rejects.append(internal_reject(env, exc))
    out.series_id = np.array(series_ids, dtype=np.int32)
    out.time_ms = np.array(times, dtype=np.int64)
    out.value = np.array(values, dtype=np.float64)
    if refused:
        out.rejects += rate_limited(refused, budget.rate if budget else 0.0,
                                    budget.burst if budget else 0)
        out.rate_limited = frozenset(id(env) for env in refused)
    return out



def _resolve_missing(ids: list[int], decoded: Decoded, entry: DeviceEntry,
                     directory: DeviceDirectory,
                     env: Envelope, reading_rejects: list[Reject]) -> list[int]:
    """Series the cache does not know: ask the directory (which may register them under
    the auto-register policy); readings still without one are refused and marked -1."""
    resolved = list(ids)
    for index, sid in enumerate(ids):
        if sid != -1:
            continue
        metric = decoded.metrics[index]
        found = directory.series_id(decoded.device, entry, metric)
        if found is None:
            reading = {"m": metric, "t": decoded.times_ms[index], "v": decoded.values[index]}
            reading_rejects.append(Reject(
                env.topic, json.dumps(reading).encode(), UnknownSeries.reason,
                f"device {decoded.device} has no {metric} series", decoded.device,
                env.received_ms, fingerprint_of(env.topic, env.payload, 100_000 + index)))
            resolved[index] = -1
        else:
            resolved[index] = found
    return resolved
