"""Where one platform's parts are, as the operations need them: the database (its URL,
and its cluster's data folder on this machine), the backup repository, the broker's
folder, the data folder. Built once from the settings; every operation takes one.

The embedded database of `tidefield up` is ``DATA_DIR/postgres/data`` on
``TIDEFIELD_EMBEDDED_PG_PORT``, database ``tidefield``. Another database is backed up when
``TIDEFIELD_BACKUP_PG_PATH`` names its data folder (pgBackRest reads it on this machine,
through the unix socket in ``TIDEFIELD_BACKUP_PG_SOCKET_DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tidefield.server.embedded import PostgresCluster

from .errors import OpsError
from .pgbackrest import Cluster, PgBackRest
from .state import Layout

if TYPE_CHECKING:
    from tidefield.server.settings import OpsSettings, UpSettings

EMBEDDED_PG = "postgres"  # under the data folder, as `tidefield up` lays it out
DATABASE = "tidefield"
REPLICA = "replica"
WORK_DIR = "pgbackrest"  # pgBackRest's config, logs, locks and spool


@dataclass(frozen=True, slots=True)
class Deployment:
    data_dir: Path
    database_url: str
    cluster: Cluster
    repo: Path
    stanza: str
    broker_dir: Path
    retention_full: int = 2
    compress: str = "lz4"
    check_chunks: int = 3
    full_every_days: float = 7.0
    embedded: bool = True

    @classmethod
    def from_settings(cls, settings: OpsSettings | UpSettings,
                      data_dir: Path | None = None) -> Deployment:
        """``data_dir``: another data folder than the settings' (a restore's target)."""
        data_dir = (data_dir or settings.data_dir).resolve()
        embedded = settings.backup_pg_path is None
        if settings.backup_pg_path is None:
            server = embedded_cluster(data_dir, settings.embedded_pg_port)
            cluster = Cluster(server.data_dir, server.port, server.data_dir)
            url = settings.database_url or server.url(DATABASE)
        else:
            if not settings.database_url:
                raise OpsError("TIDEFIELD_BACKUP_PG_PATH is set but TIDEFIELD_DATABASE_URL "
                               "is not: name the database whose data folder it is")
            url = settings.database_url
            parts = urlsplit(url)
            cluster = Cluster(settings.backup_pg_path.resolve(), parts.port or 5432,
                              settings.backup_pg_socket_dir, parts.username or "postgres")
        return cls(data_dir=data_dir, database_url=url, cluster=cluster,
                   repo=(settings.backup_repo or data_dir / "backup").resolve(),
                   stanza=settings.backup_stanza,
                   broker_dir=(settings.broker_auth_dir or data_dir / "mosquitto").resolve(),
                   retention_full=settings.backup_retention_full,
                   compress=settings.backup_compress,
                   check_chunks=settings.backup_check_chunks,
                   full_every_days=settings.backup_full_every_days, embedded=embedded)

    def pgbackrest(self, cluster: Cluster | None = None) -> PgBackRest:
        """pgBackRest for this repository (config written), for ``cluster`` (default:
        the deployment's database)."""
        tool = PgBackRest(repo=self.repo, stanza=self.stanza,
                          work_dir=self.data_dir / WORK_DIR, cluster=cluster or self.cluster,
                          retention_full=self.retention_full, compress=self.compress)
        tool.prepare()
        return tool

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir, self.broker_dir)

    def sidecar(self, label: str) -> Path:
        """Where the platform's files and the checksums of backup ``label`` are kept."""
        return self.repo / "tidefield" / self.stanza / label


def embedded_cluster(data_dir: Path, port: int, **options: object) -> PostgresCluster:
    """The embedded database's cluster of the data folder (not started)."""
    return PostgresCluster(data_dir / EMBEDDED_PG, port=port, **options)  # type: ignore[arg-type]
