"""Ingest's receipt book: coalesced per device and interval, kept while not connected."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tidefield.protocol import codec
from tidefield.protocol.topics import parse_topic
from tidefield.server.ingest.receipts import ReceiptBook


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decoded(sent):
    return {parse_topic(topic).device: codec.decode_receipt(payload, topic=parse_topic(topic))
            for topic, payload in sent}


def test_a_busy_device_gets_one_receipt_per_interval_naming_ranges():
    sent: list[tuple[str, bytes]] = []
    clock = Clock()
    book = ReceiptBook(lambda t, p: sent.append((t, p)) or True, interval_s=0.25, clock=clock)
    for seq in [*range(0, 500), *range(502, 600)]:
        book.note([("oc-001", "oc-001-sonde", seq)])
    book.note([("ag-001", "ag-001-soil", 7)])
    assert book.flush() == 0  # the interval has not passed since the last flush
    clock.now += 0.25
    assert book.flush() == 2
    receipts = decoded(sent)
    assert receipts["oc-001-sonde"].stored == ((0, 499), (502, 599))
    assert receipts["ag-001-soil"].stored == ((7, 7),)
    assert sent[0][0] in {"tf/v1/oc-001/oc-001-sonde/down/receipt",
                          "tf/v1/ag-001/ag-001-soil/down/receipt"}
    book.note([("ag-001", "ag-001-soil", 8)])
    clock.now += 0.1
    assert book.flush() == 0 and book.waiting == 1
    clock.now += 0.15
    assert book.flush() == 1


def test_receipts_not_taken_while_disconnected_go_with_the_next_flush():
    connected = False
    sent: list[tuple[str, bytes]] = []

    def publish(topic: str, payload: bytes) -> bool:
        if connected:
            sent.append((topic, payload))
        return connected

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("tidefield_ingest_receipts_total",
                                         {"outcome": outcome}) or 0.0

    clock = Clock()
    book = ReceiptBook(publish, interval_s=0.25, clock=clock)
    book.note([("oc-001", "oc-001-sonde", s) for s in (1, 2, 3, 9)])
    clock.now += 1
    deferred, sent_before = counted("deferred"), counted("sent")
    assert book.flush() == 0 and book.waiting == 1
    assert counted("deferred") == deferred + 1
    connected = True
    book.note([("oc-001", "oc-001-sonde", 4)])
    clock.now += 1
    assert book.flush() == 1
    assert counted("sent") == sent_before + 1
    assert decoded(sent)["oc-001-sonde"].stored == ((1, 4), (9, 9))


def test_a_device_with_very_many_gaps_gets_several_bounded_receipts():
    sent: list[tuple[str, bytes]] = []
    book = ReceiptBook(lambda t, p: sent.append((t, p)) or True, interval_s=0.0)
    book.note(("oc-001", "oc-001-sonde", seq) for seq in range(0, 2 * 2500, 2))
    assert book.flush() == 3
    for topic, payload in sent:
        receipt = codec.decode_receipt(payload, topic=parse_topic(topic))
        assert len(receipt.stored) <= codec.MAX_RECEIPT_RANGES


def test_a_flush_hands_all_its_receipts_over_at_once_and_keeps_them_all_if_refused():
    connected = False
    calls: list[list[tuple[str, bytes]]] = []

    def publish_many(receipts: list[tuple[str, bytes]]) -> bool:
        if connected:
            calls.append(receipts)
        return connected

    clock = Clock()
    book = ReceiptBook(publish_many=publish_many, interval_s=0.25, clock=clock)
    book.note([("oc-001", "oc-001-sonde", s) for s in (1, 2, 3, 9)])
    book.note([("ag-001", "ag-001-soil", 7)])
    clock.now += 1
    assert book.flush() == 0 and book.waiting == 2  # not connected: both kept
    connected = True
    book.note([("oc-001", "oc-001-sonde", 4)])
    clock.now += 1
    assert book.flush() == 2
    assert len(calls) == 1  # one hand-over for the whole flush
    receipts = decoded(calls[0])
    assert receipts["oc-001-sonde"].stored == ((1, 4), (9, 9))
    assert receipts["ag-001-soil"].stored == ((7, 7),)
