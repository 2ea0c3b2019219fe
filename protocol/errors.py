"""Why a message from outside was refused: one typed error per reason.

Every refusal carries a stable ``reason`` code (stored in ``ingest_rejects.reason`` and
counted in metrics) and a human message. None of them is retryable: the same bytes will
be refused again, so the caller keeps them as a reject and moves on.

    ProtocolError
    ├── BadTopic              the topic does not follow tf/v1/{site}/{device}/...
    ├── MalformedPayload      not decodable, or the wrong shape or types
    ├── UnsupportedSchema     a schema version this build does not speak
    ├── OversizePayload       more bytes or more readings than allowed
    ├── IdentityMismatch      the payload claims another site or device than its topic,
    │                         or a device of another site
    ├── UnknownDevice         the device is not in the registry
    ├── RateLimited           the device sent more messages than its rate limit allows
    ├── InternalFailure       processing the message raised something unforeseen (a bug
    │                         of ours, not necessarily of the message); kept with the
    │                         exception's type and text so it can be replayed once fixed
    ├── Poison                its processing crashed the ingest process too many times
    └── ReadingError          one reading is bad; the rest of its batch can still be good
        ├── UnknownMetric
        ├── NonFiniteValue
        ├── OutOfRange
        ├── TimestampInFuture
        ├── TimestampTooOld
        └── UnknownSeries     the device has no series of this metric

``REASONS`` lists every code, so a dashboard or a test can tell a known one from a typo.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    reason = "protocol_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    # stay picklable across process pools despite the custom __init__
    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.message,))


class BadTopic(ProtocolError):
    reason = "bad_topic"


class MalformedPayload(ProtocolError):
    reason = "malformed"


class UnsupportedSchema(ProtocolError):
    reason = "unsupported_schema"


class OversizePayload(ProtocolError):
    reason = "oversize"


class IdentityMismatch(ProtocolError):
    reason = "identity_mismatch"


class UnknownDevice(ProtocolError):
    reason = "unknown_device"


class RateLimited(ProtocolError):
    """Refused unread: the device is over its message rate. Not a fault of the payload,
    but retrying at once will not help either; the device must slow down."""

    reason = "rate_limited"


class InternalFailure(ProtocolError):
    """Not a verdict on the bytes: our code failed on them. Stored as a reject, with its
    payload, so that one message cannot stop the ones behind it."""

    reason = "internal"


class Poison(ProtocolError):
    """The message was delivered again and again because its processing kept killing the
    ingest process; after a bounded number of attempts it is set aside unread."""

    reason = "poison"


class ReadingError(ProtocolError):
    """A single reading is invalid; ``index`` is its position in the batch and ``raw``
    what the device sent for it, so the refusal can be kept with its evidence."""

    reason = "bad_reading"

    def __init__(self, message: str, index: int = -1, raw: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.raw = raw

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.message, self.index, self.raw))


class UnknownMetric(ReadingError):
    reason = "unknown_metric"


class NonFiniteValue(ReadingError):
    reason = "non_finite"


class OutOfRange(ReadingError):
    reason = "out_of_range"


class TimestampInFuture(ReadingError):
    reason = "time_in_future"


class TimestampTooOld(ReadingError):
    reason = "time_too_old"


class UnknownSeries(ReadingError):
    reason = "unknown_series"


def _reasons(kind: type[ProtocolError]) -> list[str]:
    return [kind.reason] + [r for sub in kind.__subclasses__() for r in _reasons(sub)]


REASONS: frozenset[str] = frozenset(_reasons(ProtocolError)) - {ProtocolError.reason,
                                                               ReadingError.reason}
