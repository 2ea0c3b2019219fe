"""What `tidefield up` takes from the operations: the embedded primary's settings (WAL
archiving to the repository from its first start, room for a replica), the repository
made ready before anything writes, and where the replica serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .deployment import DATABASE, Deployment
from .replica import primary_settings

if TYPE_CHECKING:
    from pathlib import Path

    from tidefield.server.settings import UpSettings


def archives(settings: UpSettings) -> bool:
    """Whether `tidefield up` archives WAL and takes backups: on, unless turned off or
    the database is not one whose data folder pgBackRest can read here."""
    return settings.backup_archive and (settings.database_url is None
                                        or settings.backup_pg_path is not None)


def primary_conf(settings: UpSettings, data_dir: Path) -> dict[str, str]:
    """Settings of the embedded primary, over the embedded server's defaults."""
    conf = primary_settings(settings.replica_max_slot_wal_gb)
    if archives(settings):
        conf.update(Deployment.from_settings(settings, data_dir).pgbackrest()
                    .archive_settings())
    return conf


def prepare_repository(settings: UpSettings, data_dir: Path, database_url: str) -> Path:
    """The stanza made (or found matching) before the first WAL segment needs it; the
    repository's folder. OpsError when the repository holds another database."""
    deployment = Deployment.from_settings(settings.model_copy(
        update={"database_url": database_url}), data_dir)
    deployment.pgbackrest().stanza_create()
    return deployment.repo


def replica_url(settings: UpSettings) -> str:
    """Where the embedded replica serves the platform's database."""
    return f"postgresql://postgres@127.0.0.1:{settings.embedded_replica_port}/{DATABASE}"
