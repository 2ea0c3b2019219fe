"""``prepare`` ends every message: whatever our code raises on one becomes that message's
reject (reason ``internal``, with the exception's type and text), and the rest go on; a
database failure is not the message's fault and is raised for the caller to wait out."""

from __future__ import annotations

import json

import psycopg
import pytest

from tidefield.protocol.codec import DEFAULT_LIMITS
from tidefield.server.ingest.directory import DeviceDirectory, DeviceEntry
from tidefield.server.ingest.pipeline import Envelope, prepare

NOW = 1_795_000_000_000


class Directory(DeviceDirectory):
    """Knows two devices of one site; looking up ``broken`` fails as a bug would."""

    def __init__(self, failure: BaseException) -> None:
        super().__init__("postgresql:///unused")
        self.failure = failure
        self._devices = {"oc-001-a": DeviceEntry("oc-001", {"salinity": 1}),
                         "oc-001-b": DeviceEntry("oc-001", {"salinity": 2})}

    def device(self, device_id: str, site_id: str) -> DeviceEntry | None:
        if device_id == "oc-001-broken":
            raise self.failure
        return self._devices.get(device_id)


def message(device: str, seq: int) -> Envelope:
    body = {"v": 1, "site": "oc-001", "device": device, "seq": seq,
            "readings": [{"m": "salinity", "t": NOW - seq, "v": 30.0}]}
    return Envelope(f"tf/v1/oc-001/{device}/up", json.dumps(body).encode(), None, NOW)


def test_a_bug_on_one_message_is_its_internal_reject_and_the_others_go_on():
    window = [message("oc-001-a", 1), message("oc-001-broken", 2), message("oc-001-b", 3)]
    out = prepare(window, Directory(KeyError("boom")), limits=DEFAULT_LIMITS, now_ms=NOW)
    assert [(b.device_id, b.seq) for b in out.batches] == [("oc-001-a", 1), ("oc-001-b", 3)]
    assert out.series_id.tolist() == [1, 2]
    [reject] = out.rejects
    assert reject.reason == "internal"
    assert reject.detail == "KeyError: 'boom'"
    assert reject.payload == window[1].payload
    assert reject.device_id == "oc-001-broken"


def test_a_database_failure_is_not_the_messages_fault():
    window = [message("oc-001-a", 1), message("oc-001-broken", 2)]
    with pytest.raises(psycopg.OperationalError):
        prepare(window, Directory(psycopg.errors.DiskFull("no space")),
                limits=DEFAULT_LIMITS, now_ms=NOW)
