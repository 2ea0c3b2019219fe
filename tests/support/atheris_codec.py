"""Coverage-guided fuzzing of the codec with atheris (libFuzzer): run by
tests/unit/test_codec_atheris.py for a bounded time. Any exception other than a
ProtocolError is a finding (atheris prints the input and exits non-zero)."""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from tidefield.protocol.codec import JSON, MSGPACK, decode_batch, decode_status
    from tidefield.protocol.errors import ProtocolError
    from tidefield.protocol.topics import parse_topic

NOW = 1_795_000_000_000
TOPIC = parse_topic("tf/v1/oc-001/oc-001-sonde/up")


def one_input(data: bytes) -> None:
    content_type = MSGPACK if data[:1] == b"\x00" else JSON
    payload = data[1:]
    for decode in (lambda: decode_batch(payload, content_type, topic=TOPIC, now_ms=NOW),
                   lambda: decode_status(payload, content_type, topic=TOPIC)):
        with contextlib.suppress(ProtocolError):
            decode()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
