"""Encode and decode wire messages: JSON (the default, so anyone can mosquitto_pub one)
and MessagePack (compact), told apart by the MQTT v5 content type.

Decoding and validating happen in one pass, reading by reading, because that is the hot
path of ingest. A message-level problem raises a ProtocolError; a bad reading does not
sink its batch: it comes back in ``Decoded.rejected`` with its reason while the good
readings go on.

Telemetry, schema 1::

    {"v": 1, "site": "oc-001", "device": "oc-001-sonde", "seq": 42,
     "readings": [{"m": "water_temperature", "t": 1732857600000, "v": 18.25}, ...]}

``t`` is milliseconds since the epoch (UTC) or an ISO-8601 string with a time zone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import msgpack

from tidefield.protocol.units import DAY_MS

from .catalog import METRICS
from .errors import (
    IdentityMismatch,
    MalformedPayload,
    NonFiniteValue,
    OutOfRange,
    OversizePayload,
    ProtocolError,
    ReadingError,
    TimestampInFuture,
    TimestampTooOld,
    UnknownMetric,
    UnsupportedSchema,
)
from .messages import (
    SCHEMA_VERSION,
    SUPPORTED_SCHEMAS,
    AlertAction,
    AlertNotice,
    Batch,
    DeviceState,
    Reading,
    Receipt,
    Status,
)
from .topics import ID_PATTERN, Topic, check_id

JSON = "application/json"
MSGPACK = "application/msgpack"
_CONTENT_TYPES = {
    None: JSON,
    "": JSON,
    JSON: JSON,
    "application/json; charset=utf-8": JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}

_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """What ingest accepts. The defaults suit field devices; settings can change them."""

    max_payload_bytes: int = 256 * 1024
    max_readings: int = 10_000
    max_future_ms: int = 5 * 60_000  # clock skew we tolerate
    max_age_ms: int = 400 * DAY_MS  # older is a broken clock, not a backlog


DEFAULT_LIMITS = Limits()


@dataclass(slots=True)
class Decoded:
    """A decoded telemetry message: the readings that passed validation, as columns,
    and the ones that did not, each with its reason."""

    site: str
    device: str
    seq: int
    metrics: list[str]
    times_ms: list[int]
    values: list[float]
    rejected: list[ReadingError] = field(default_factory=list)
    received: int = 0  # readings in the message, good and bad

    @property
    def batch(self) -> Batch:
        readings = tuple(map(Reading, self.metrics, self.times_ms, self.values))
        return Batch(self.site, self.device, self.seq, readings)


def media_type(content_type: str | None) -> str:
    """The codec for an MQTT v5 content type; unknown types are malformed payloads."""
    try:
        return _CONTENT_TYPES[content_type.strip().lower() if content_type else content_type]
    except KeyError:
        raise MalformedPayload(f"unsupported content type {content_type!r}") from None


# --- encoding ---------------------------------------------------------------------


def batch_to_dict(batch: Batch) -> dict[str, Any]:
    return {
        "v": batch.schema,
        "site": batch.site,
        "device": batch.device,
        "seq": batch.seq,
        "readings": [{"m": r.metric, "t": r.time_ms, "v": r.value} for r in batch.readings],
    }


def encode_batch(batch: Batch, content_type: str = JSON) -> bytes:
    return _dump(batch_to_dict(batch), content_type)


def encode_status(status: Status, content_type: str = JSON) -> bytes:
    body = {"v": status.schema, "site": status.site, "device": status.device,
            "state": str(status.state), "t": status.time_ms}
    if status.interval_s is not None:
        body["interval_s"] = status.interval_s
    return _dump(body, content_type)


def _dump(body: dict[str, Any], content_type: str) -> bytes:
    if media_type(content_type) == MSGPACK:
        return cast(bytes, msgpack.packb(body, use_bin_type=True))
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode()


# --- decoding ---------------------------------------------------------------------


def _load(payload: bytes, content_type: str | None, limits: Limits) -> dict[str, Any]:
    if len(payload) > limits.max_payload_bytes:
        raise OversizePayload(
            f"payload of {len(payload)} bytes exceeds the limit of {limits.max_payload_bytes}")
    kind = media_type(content_type)
    try:
        if kind == MSGPACK:
            body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        else:
            body = _json_loads(payload)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedPayload(f"payload is not valid {kind}: {exc}") from exc
    except (RecursionError, TypeError, OverflowError) as exc:
        # deeper nesting than the parser's stack (the standard library's json), a map key
        # msgpack cannot hash, an integer beyond what the parser holds
        raise MalformedPayload(f"payload is not valid {kind}: {type(exc).__name__}: "
                               f"{exc}") from exc
    if not isinstance(body, dict):
        raise MalformedPayload(f"payload must be an object, got {type(body).__name__}")
    version = body.get("v")
    if version is None:
        raise MalformedPayload("payload has no schema version field 'v'")
    if isinstance(version, bool) or not isinstance(version, int | float) \
            or version not in SUPPORTED_SCHEMAS:  # (a list or a dict is no version)
        raise UnsupportedSchema(f"schema version {version!r} is not supported "
                                f"(this build reads {sorted(SUPPORTED_SCHEMAS)}, writes "
                                f"{SCHEMA_VERSION})")
    return body


try:
    import orjson
except ImportError:  # the lean agent wheel: it reads only its own few small down/ messages
    _orjson_loads = _orjson_dumps = None
else:
    _orjson_loads, _orjson_dumps = orjson.loads, orjson.dumps


def _json_loads(payload: bytes) -> Any:
    """orjson (about three times the standard library's speed here, and nesting beyond
    1024 levels is an error, not a RecursionError); what it refuses goes to the standard
    library, which reads what devices may send and orjson does not: NaN and Infinity
    (non_finite readings, refused one by one), integers past 64 bits, lone surrogates.
    Without orjson (the agent's wheel), the standard library alone; its RecursionError on
    deep nesting is a malformed payload like any other."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(payload)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            pass
    return json.loads(payload)


def _identity(body: dict[str, Any], topic: Topic | None) -> tuple[str, str]:
    site, device = body.get("site"), body.get("device")
    for name, value in (("site", site), ("device", device)):
        if not isinstance(value, str):
            raise MalformedPayload(f"field {name!r} must be a string matching {ID_PATTERN}")
        try:
            check_id(value, name)
        except ProtocolError as exc:
            raise MalformedPayload(exc.message) from None
    assert isinstance(site, str) and isinstance(device, str)  # checked just above
    if topic is not None and (topic.site != site or topic.device != device):
        raise IdentityMismatch(
            f"payload claims {site}/{device} but was published on {topic.site}/{topic.device}")
    return site, device


def _time_ms(raw: object, index: int) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return int(parsed.timestamp() * 1000)
    raise MalformedPayload(
        f"reading {index}: 't' must be epoch milliseconds or an ISO-8601 time with a zone, "
        f"got {raw!r}")


def decode_batch(payload: bytes, content_type: str | None = JSON, *,
                 topic: Topic | None = None, now_ms: int,
                 limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """Decode and validate a telemetry payload.

    Raises a ProtocolError when the message as a whole is unusable (malformed, wrong
    schema, oversize, identity not matching ``topic``). Individual bad readings are
    returned in ``rejected`` and the rest are kept, as columns (what ingest uses) and,
    built on first use, as ``batch.readings``.
    """
    body = _load(payload, content_type, limits)
    site, device = _identity(body, topic)
    seq = body.get("seq")
    if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        raise MalformedPayload(f"field 'seq' must be an integer in [0, 2^63), got {seq!r}")
    raw_readings = body.get("readings")
    if not isinstance(raw_readings, list):
        raise MalformedPayload("field 'readings' must be a list")
    if len(raw_readings) > limits.max_readings:
        raise OversizePayload(f"{len(raw_readings)} readings exceed the limit of "
                              f"{limits.max_readings} per message")

    earliest = now_ms - limits.max_age_ms
    latest = now_ms + limits.max_future_ms
    bounds = _PHYSICAL
    names: list[str] = []
    times: list[int] = []
    values: list[float] = []
    rejected: list[ReadingError] = []
    # The hot loop of ingest: exact type checks and one dict lookup per reading; every
    # unusual case drops to _check_reading, which says precisely what is wrong.
    for index, item in enumerate(raw_readings):
        try:
            name, time_ms, value = item["m"], item["t"], item["v"]
        except (KeyError, TypeError):
            raise MalformedPayload(f"reading {index} must be an object with m, t, v") from None
        value_type = type(value)
        if value_type is int:
            try:
                value = float(value)
            except OverflowError:  # past float's range (JSON has no limit on integers)
                raise MalformedPayload(f"reading {index}: 'v' of {value.bit_length()} bits "
                                       f"is past the range of a double") from None
        elif value_type is not float:
            raise MalformedPayload(f"reading {index}: 'v' must be a number, got {value!r}")
        if type(time_ms) is not int:
            time_ms = _time_ms(time_ms, index)
        low_high = bounds.get(name) if type(name) is str else None  # a list is unhashable
        if (low_high is None or not low_high[0] <= value <= low_high[1]
                or not earliest <= time_ms <= latest):
            rejected.append(_check_reading(index, item, name, time_ms, value, now_ms, limits))
            continue
        names.append(name)
        times.append(time_ms)
        values.append(value)
    return Decoded(site, device, seq, names, times, values, rejected, len(raw_readings))


_PHYSICAL = {name: m.physical for name, m in METRICS.items()}


def _check_reading(index: int, item: dict[str, Any], name: object, time_ms: int, value: float,
                   now_ms: int, limits: Limits) -> ReadingError:
    """Why a reading that failed the fast checks is refused."""
    if not isinstance(name, str):
        raise MalformedPayload(f"reading {index}: 'm' must be a metric name string")
    spec = METRICS.get(name)
    if spec is None:
        return UnknownMetric(f"reading {index}: unknown metric {name!r}", index, item)
    if not math.isfinite(value):
        return NonFiniteValue(f"reading {index}: {name} value {value} is not finite",
                              index, item)
    if not spec.physical[0] <= value <= spec.physical[1]:
        return OutOfRange(
            f"reading {index}: {name} value {value} {spec.unit} is outside the physical "
            f"range [{spec.physical[0]}, {spec.physical[1]}]", index, item)
    if time_ms > now_ms + limits.max_future_ms:
        return TimestampInFuture(
            f"reading {index}: time {_iso(time_ms)} is more than "
            f"{limits.max_future_ms // 1000} s ahead of the server clock", index, item)
    return TimestampTooOld(
        f"reading {index}: time {_iso(time_ms)} is more than "
        f"{limits.max_age_ms // DAY_MS} days in the past", index, item)


def decode_status(payload: bytes, content_type: str | None = JSON, *,
                  topic: Topic | None = None, limits: Limits = DEFAULT_LIMITS) -> Status:
    body = _load(payload, content_type, limits)
    site, device = _identity(body, topic)
    try:
        state = DeviceState(body.get("state"))  # type: ignore[arg-type]  # bad: ValueError
    except ValueError:
        raise MalformedPayload(f"field 'state' must be one of "
                               f"{[s.value for s in DeviceState]}") from None
    time_ms = _time_ms(body.get("t"), 0)
    interval = body.get("interval_s")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)
                                 or interval <= 0):
        raise MalformedPayload(f"field 'interval_s' must be a positive integer, got {interval!r}")
    return Status(site, device, state, time_ms, interval)


# --- receipts (tf/v1/{site}/{device}/down/receipt) ----------------------------------

MAX_RECEIPT_RANGES = 1000  # a receipt past this many gaps is a bug, not a backlog


def encode_receipt(receipt: Receipt, content_type: str = JSON) -> bytes:
    """Receipt, schema 1 (seq ranges stored, each inclusive)::

        {"v": 1, "site": "oc-001", "device": "oc-001-sonde", "stored": [[40, 57], [60, 60]]}
    """
    body = {"v": receipt.schema, "site": receipt.site, "device": receipt.device,
            "stored": [[first, last] for first, last in receipt.stored]}
    if _orjson_dumps is not None and media_type(content_type) == JSON:
        # ingest sends about one receipt per small message: orjson writes the same bytes
        # (integers and identifiers only) in a fraction of the time
        return _orjson_dumps(body)
    return _dump(body, content_type)


def decode_receipt(payload: bytes, content_type: str | None = JSON, *,
                   topic: Topic | None = None, limits: Limits = DEFAULT_LIMITS) -> Receipt:
    """The inverse of ``encode_receipt``; MalformedPayload names what is wrong, and a
    receipt on another device's topic is an IdentityMismatch."""
    body = _load(payload, content_type, limits)
    site, device = _identity(body, topic)
    stored = body.get("stored")
    if not isinstance(stored, list) or not stored or len(stored) > MAX_RECEIPT_RANGES:
        raise MalformedPayload(f"field 'stored' must be a list of 1 to {MAX_RECEIPT_RANGES} "
                               f"[first, last] seq ranges, got {str(stored)[:80]!r}")
    ranges = []
    previous = -1
    for item in stored:
        if (not isinstance(item, list) or len(item) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in item)
                or not previous < item[0] <= item[1] <= _MAX_SEQ):
            raise MalformedPayload(f"field 'stored': {item!r} is not a [first, last] seq range "
                                   f"after {previous} (ranges are sorted and disjoint)")
        ranges.append((item[0], item[1]))
        previous = item[1]
    return Receipt(site, device, tuple(ranges))


def seq_ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sequence numbers as sorted, disjoint, inclusive ranges (what a receipt carries)."""
    ranges: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return tuple(ranges)


# --- alerts (tf/v1/{site}/alerts) ----------------------------------------------------

ALERT_CATEGORIES = ("fault", "event", "forecast")  # forecast: an early warning
ALERT_SEVERITIES = ("info", "warning", "critical")
ALERT_STATES = ("open", "acknowledged", "closed")


def encode_alert(notice: AlertNotice, content_type: str = JSON) -> bytes:
    """Alert notice, schema 1::

        {"v": 1, "event": 812, "alert": 97, "action": "opened", "site": "oc-021",
         "device": null, "series": null, "rule": "hypoxia", "category": "event",
         "severity": "critical", "state": "open", "message": "dissolved oxygen 2.71 mg/L,
         under 3 mg/L", "t": 1751328000000, "opened": 1751328000000, "closed": null,
         "value": 2.71, "peak": 2.71}

    Values that are not finite are sent as null (JSON has no NaN).
    """
    return _dump({
        "v": notice.schema, "event": notice.event_id, "alert": notice.alert_id,
        "action": str(notice.action), "site": notice.site, "device": notice.device,
        "series": notice.series_id, "rule": notice.rule, "category": notice.category,
        "severity": notice.severity, "state": notice.state, "message": notice.message,
        "t": notice.time_ms, "opened": notice.opened_ms, "closed": notice.closed_ms,
        "value": _finite_or_none(notice.value), "peak": _finite_or_none(notice.peak),
    }, content_type)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _field(body: dict[str, Any], name: str, types: tuple[type, ...], *,
           optional: bool = False) -> Any:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, types) or isinstance(value, bool):
        kinds = " or ".join(t.__name__ for t in types)
        raise MalformedPayload(f"field {name!r} must be {kinds}"
                               f"{' or null' if optional else ''}, got {value!r}")
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value not in allowed:
        raise MalformedPayload(f"field {name!r} must be one of {list(allowed)}, got {value!r}")
    return cast(str, value)


def decode_alert(payload: bytes, content_type: str | None = JSON, *,
                 topic: Topic | None = None, limits: Limits = DEFAULT_LIMITS) -> AlertNotice:
    """The inverse of ``encode_alert``; MalformedPayload names the first bad field, and a
    notice published on another site's topic is an IdentityMismatch."""
    body = _load(payload, content_type, limits)
    site = _field(body, "site", (str,))
    try:
        check_id(site, "site")
    except ProtocolError as exc:
        raise MalformedPayload(exc.message) from None
    if topic is not None and topic.site != site:
        raise IdentityMismatch(f"notice for site {site} was published on {topic.site}'s topic")
    try:
        action = AlertAction(body.get("action"))  # type: ignore[arg-type]  # bad: ValueError
    except ValueError:
        raise MalformedPayload(f"field 'action' must be one of "
                               f"{[a.value for a in AlertAction]}") from None
    number = (int, float)
    return AlertNotice(
        event_id=_field(body, "event", (int,)), alert_id=_field(body, "alert", (int,)),
        action=action, site=site, device=_field(body, "device", (str,), optional=True),
        series_id=_field(body, "series", (int,), optional=True),
        rule=_field(body, "rule", (str,)),
        category=_choice(body, "category", ALERT_CATEGORIES),
        severity=_choice(body, "severity", ALERT_SEVERITIES),
        state=_choice(body, "state", ALERT_STATES), message=_field(body, "message", (str,)),
        time_ms=_field(body, "t", (int,)), opened_ms=_field(body, "opened", (int,)),
        closed_ms=_field(body, "closed", (int,), optional=True),
        value=_field(body, "value", number, optional=True),
        peak=_field(body, "peak", number, optional=True))


def _iso(time_ms: int) -> str:
    try:
        return datetime.fromtimestamp(time_ms / 1000, tz=UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{time_ms} ms"

