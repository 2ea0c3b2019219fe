"""The operations in Prometheus' terms, measured when scraped (a few cheap queries): what
the platform's own alerts (deploy/prometheus/tidefield-alerts.yml) are written on.

    tidefield_backup_last_success_timestamp_seconds   newest backup that succeeded
    tidefield_backup_verify_last_success_timestamp_seconds   newest restore check passed
    tidefield_backup_failing                          1: an attempt newer than it failed
    tidefield_wal_archive_last_success_timestamp_seconds
    tidefield_wal_archive_failures_total
    tidefield_wal_archive_failing                     1: the newest archive attempt failed
    tidefield_replica_up, tidefield_replica_streaming
    tidefield_replica_lag_seconds, tidefield_replica_lag_bytes
    tidefield_disk_free_bytes{volume}, tidefield_disk_size_bytes{volume}
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .report import collect


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


class OpsCollector(Collector):
    def __init__(self, database_url: str | None, *, read_url: str | None = None,
                 data_dir: Path | None = None, repo: Path | None = None) -> None:
        self.database_url, self.read_url = database_url, read_url
        self.data_dir, self.repo = data_dir, repo

    def collect(self) -> Iterator[Metric]:
        report = collect(self.database_url, read_url=self.read_url, data_dir=self.data_dir,
                         repo=self.repo)

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, value=value)

        if report.backup is not None:
            yield gauge("tidefield_backup_last_success_timestamp_seconds",
                        "When the newest successful backup finished (0: never)",
                        _epoch(report.backup.last_ok_at))
            yield gauge("tidefield_backup_failing",
                        "1 when a backup attempt newer than the last success failed",
                        float(report.backup.failed_at is not None))
        if report.verify is not None:
            yield gauge("tidefield_backup_verify_last_success_timestamp_seconds",
                        "When `tidefield backup verify` last passed (0: never)",
                        _epoch(report.verify.last_ok_at))
        archive = report.archive
        if archive is not None and archive.enabled:
            yield gauge("tidefield_wal_archive_last_success_timestamp_seconds",
                        "When the newest WAL segment was archived (0: never)",
                        _epoch(archive.last_archived_at))
            yield CounterMetricFamily("tidefield_wal_archive_failures",
                                      "Failed attempts to archive a WAL segment",
                                      value=archive.failed)
            yield gauge("tidefield_wal_archive_failing",
                        "1 when the newest attempt to archive WAL failed",
                        float(archive.failing))
        replica = report.replica
        if replica is not None:
            yield gauge("tidefield_replica_up", "1 when the read replica answers",
                        float(replica.reachable))
            yield gauge("tidefield_replica_streaming",
                        "1 when the replica streams WAL from the primary",
                        float(replica.streaming))
            if replica.lag_s is not None:
                yield gauge("tidefield_replica_lag_seconds",
                            "How far the replica is behind (0 when caught up)",
                            replica.lag_s)
            if replica.lag_bytes is not None:
                yield gauge("tidefield_replica_lag_bytes",
                            "WAL written on the primary not yet replayed on the replica",
                            float(replica.lag_bytes))
        if report.volumes:
            free = GaugeMetricFamily("tidefield_disk_free_bytes",
                                     "Free space on the volume of a platform folder",
                                     labels=["volume"])
            size = GaugeMetricFamily("tidefield_disk_size_bytes",
                                     "Size of the volume of a platform folder",
                                     labels=["volume"])
            for volume in report.volumes:
                free.add_metric([volume.name], float(volume.free_bytes))
                size.add_metric([volume.name], float(volume.size_bytes))
            yield free
            yield size

    def describe(self) -> Iterator[Metric]:
        return iter(())  # measured on each scrape, not at registration
