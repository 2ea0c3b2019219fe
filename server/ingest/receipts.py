"""Receipts: after a commit, each device is told which of its batches are stored.

The worker notes the (site, device, seq) of every batch in a committed window, new or
already stored (a re-send after a lost receipt must be answered too), and the book sends
what it holds at most every ``RECEIPT_INTERVAL_S``: one receipt per device and interval
however many batches it delivered, so a busy device gets a few receipts a second and a
backlog of thousands of batches becomes a handful of receipts naming seq ranges.

Nothing is receipted before its transaction commits (the worker calls ``note`` after
it), which is the whole point: the agent deletes a batch from its disk only then. A
receipt that is lost (the broker dies, the device is away) costs a re-send, which
ingest's (device, seq) idempotency drops and receipts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from tidefield.protocol import codec
from tidefield.protocol.messages import Receipt
from tidefield.protocol.topics import receipt_topic

from . import metrics

log = logging.getLogger(__name__)

# How often a device may get a receipt: a busy device gets at most 1 / this per second.
RECEIPT_INTERVAL_S = 0.25

# topic, payload -> whether the client took it (False: not connected; kept for next time)
Publish = Callable[[str, bytes], bool]
# the same for a flush's receipts all at once
PublishMany = Callable[[list[tuple[str, bytes]]], bool]


class ReceiptBook:
    """Stored seqs per device, waiting for their receipt. ``note`` and ``flush`` may be
    called from any thread."""

    def __init__(self, publish: Publish | None = None,
                 interval_s: float = RECEIPT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, *,
                 publish_many: PublishMany | None = None) -> None:
        """``publish`` sends one receipt, ``publish_many`` a flush's receipts together
        (one of them)."""
        if (publish is None) == (publish_many is None):
            raise ValueError("give publish or publish_many")
        self._publish = publish
        self._publish_many = publish_many
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stored: dict[tuple[str, str], set[int]] = {}
        self._flushed_at = clock()
        self.sent = 0  # receipts handed to the client

    def note(self, batches: Iterable[tuple[str, str, int]]) -> None:
        """(site, device, seq) of batches whose transaction has committed."""
        with self._lock:
            for site, device, seq in batches:
                self._stored.setdefault((site, device), set()).add(seq)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._stored)

    def flush(self, *, force: bool = False) -> int:
        """Send the receipts of every device with stored seqs, if the interval has passed
        since the last flush (or ``force``); returns how many were sent."""
        with self._lock:
            now = self._clock()
            if not self._stored or (not force and now - self._flushed_at < self.interval_s):
                return 0
            stored, self._stored = self._stored, {}
            self._flushed_at = now
        sent = 0
        kept: list[tuple[str, str, int]] = []
        receipts: list[tuple[str, bytes]] = []
        for (site, device), seqs in stored.items():
            ranges = codec.seq_ranges(seqs)
            # bounded like the contract: a device with more gaps gets more receipts
            for start in range(0, len(ranges), codec.MAX_RECEIPT_RANGES):
                part = ranges[start:start + codec.MAX_RECEIPT_RANGES]
                payload = codec.encode_receipt(Receipt(site, device, part))
                if self._publish_many is not None:
                    receipts.append((receipt_topic(site, device), payload))
                elif self._publish is not None and \
                        self._publish(receipt_topic(site, device), payload):
                    sent += 1
                else:
                    kept += [(site, device, seq) for first, last in part
                             for seq in range(first, last + 1)]
        if receipts and self._publish_many is not None:
            if self._publish_many(receipts):
                sent += len(receipts)
            else:
                kept += [(site, device, seq) for (site, device), seqs in stored.items()
                         for seq in seqs]
        if kept:  # not connected: they go with the next flush
            self.note(kept)
            metrics.RECEIPTS.labels("deferred").inc(len({(s, d) for s, d, _ in kept}))
        self.sent += sent
        metrics.RECEIPTS.labels("sent").inc(sent)
        return sent
