"""From received messages to rows: the one code path that MQTT and HTTP ingest share.

``prepare`` decodes and validates every message through tidefield.protocol, resolves each
reading to its series, and returns columnar arrays ready for a binary COPY, plus the
batches (for idempotency and sequence tracking), device status messages, and rejects
(every refused message or reading, with its reason).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tidefield.protocol.codec import Limits, decode_batch, decode_status
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.messages import Status
from tidefield.protocol.topics import Channel, parse_topic

from .directory import DeviceDirectory


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as received, whatever the transport."""

    topic: str
    payload: bytes
    content_type: str | None
    received_ms: int


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


@dataclass(frozen=True, slots=True)
class BatchRef:
    device_id: str
    seq: int
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

    @property
    def received_readings(self) -> int:
        return len(self.series_id) + sum(len(b.rejects) for b in self.batches)


def _fingerprint(topic: str, payload: bytes, index: int | None = None) -> bytes:
    digest = hashlib.sha256(topic.encode() + b"\0" + payload)
    if index is not None:
        digest.update(b"\0%d" % index)
    return digest.digest()


def _reject(env: Envelope, reason: str, detail: str, device_id: str | None) -> Reject:
    return Reject(env.topic, env.payload, reason, detail, device_id, env.received_ms,
                  _fingerprint(env.topic, env.payload))


def prepare(envelopes: Sequence[Envelope], directory: DeviceDirectory, *,
            limits: Limits, now_ms: int) -> Prepared:
    series_ids: list[int] = []
    times: list[int] = []
    values: list[float] = []
    out = Prepared(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0))
    seen: set[tuple[str, int]] = set()

    for env in envelopes:
        try:
            topic = parse_topic(env.topic)
            if topic.channel is Channel.STATUS:
                status = decode_status(env.payload, env.content_type, topic=topic,
                                       limits=limits)
                if directory.device(status.device, status.site) is None:
                    out.rejects.append(_reject(env, "unknown_device",
                                               f"device {status.device} of site {status.site} "
                                               f"is not registered", status.device))
                else:
                    out.statuses.append(status)
                continue
            if topic.channel is not Channel.UP:
                out.rejects.append(_reject(env, "bad_topic",
                                           f"ingest takes up and status topics, not {env.topic}",
                                           topic.device))
                continue
            decoded = decode_batch(env.payload, env.content_type, topic=topic, now_ms=now_ms,
                                   limits=limits)
        except ProtocolError as exc:
            out.rejects.append(_reject(env, exc.reason, exc.message, None))
            continue

        batch = decoded.batch
        entry = directory.device(batch.device, batch.site)
        if entry is None:
            out.rejects.append(_reject(env, "unknown_device",
                                       f"device {batch.device} of site {batch.site} is not "
                                       f"registered", batch.device))
            continue
        if entry.site_id != batch.site:
            out.rejects.append(_reject(env, "identity_mismatch",
                                       f"device {batch.device} belongs to site {entry.site_id}, "
                                       f"not {batch.site}", batch.device))
            continue
        key = (batch.device, batch.seq)
        if key in seen:  # the same message twice in one window: the first one counts
            continue
        seen.add(key)

        reading_rejects = [
            Reject(env.topic, json.dumps(err.raw).encode(), err.reason,
                   err.message, batch.device, env.received_ms,
                   _fingerprint(env.topic, env.payload, err.index))
            for err in decoded.rejected]
        start = len(series_ids)
        last_ms = -1
        for index, reading in enumerate(batch.readings):
            sid = entry.series.get(reading.metric)
            if sid is None:
                sid = directory.series_id(batch.device, entry, reading.metric)
            if sid is None:
                reading_rejects.append(Reject(
                    env.topic, json.dumps({"m": reading.metric, "t": reading.time_ms,
                                           "v": reading.value}).encode(),
                    "unknown_series", f"device {batch.device} has no {reading.metric} series",
                    batch.device, env.received_ms,
                    _fingerprint(env.topic, env.payload, 100_000 + index)))
                continue
            series_ids.append(sid)
            times.append(reading.time_ms)
            values.append(reading.value)
            last_ms = max(last_ms, reading.time_ms)
        out.batches.append(BatchRef(batch.device, batch.seq, start, len(series_ids), last_ms,
                                    env.received_ms, tuple(reading_rejects)))

    out.series_id = np.array(series_ids, dtype=np.int32)
    out.time_ms = np.array(times, dtype=np.int64)
    out.value = np.array(values, dtype=np.float64)
    return out

