"""Prometheus metrics of an ingest process. Several worker processes aggregate through
prometheus_client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("tidefield_ingest_messages_total", "Messages taken in",
                   ["transport", "outcome"])
READINGS = Counter("tidefield_ingest_readings_total", "Readings by what became of them",
                   ["outcome"])
REJECTS = Counter("tidefield_ingest_rejects_total", "Refused messages and readings",
                  ["reason"])
WRITE_SECONDS = Histogram("tidefield_ingest_write_seconds", "Time of one ingest transaction",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DB_RETRIES = Counter("tidefield_ingest_db_retries_total",
                     "Transactions retried after a database failure")
RECEIPTS = Counter("tidefield_ingest_receipts_total",
                   "Receipts sent to devices (each names the seqs stored since the last)",
                   ["outcome"])  # sent, or deferred (not connected: the next flush)
QUEUE_DEPTH = Gauge("tidefield_ingest_queue_depth", "Messages received, not yet committed",
                    multiprocess_mode="livesum")
POISON = Counter("tidefield_ingest_poison_total",
                 "Messages set aside unread after their processing kept killing ingest")
OLDEST_UNACKNOWLEDGED = Gauge(
    "tidefield_ingest_oldest_unacknowledged_seconds",
    "Age of the oldest message received and not yet committed, per partition",
    ["partition"], multiprocess_mode="livemax")
STALLED = Gauge("tidefield_ingest_stalled",
                "1 while a partition has messages waiting and has not committed for the "
                "stall time", ["partition"], multiprocess_mode="livemax")
LOOP_ALIVE = Gauge("tidefield_ingest_loop_alive", "1 while an internal loop (thread) runs",
                   ["partition", "loop"], multiprocess_mode="livemax")
STARTS = Counter("tidefield_ingest_process_starts_total",
                 "Ingest processes started: more than the workers means restarts")
