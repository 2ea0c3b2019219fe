"""Free space on the volumes the platform writes to: the database's, the broker's, the
backup repository's, the data folder's. What /metrics exports and `tidefield status`
shows, so a filling disk is seen before it is full."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

LOW_FREE_RATIO = 0.10  # `tidefield status` warns under this


@dataclass(frozen=True, slots=True)
class Volume:
    name: str  # database, broker, backup, data
    path: Path
    size_bytes: int
    free_bytes: int  # what an unprivileged writer may still use
    device: int  # folders on one disk share it

    @property
    def free_ratio(self) -> float:
        return self.free_bytes / self.size_bytes if self.size_bytes else 0.0


def usage(name: str, path: Path) -> Volume | None:
    """The volume holding ``path``; None when the folder is not on this machine."""
    if not path.exists():
        return None
    stats = os.statvfs(path)
    total = shutil.disk_usage(path).total
    return Volume(name, path, total, stats.f_bavail * stats.f_frsize, path.stat().st_dev)


def platform_volumes(data_dir: Path, repo: Path | None = None) -> list[Volume]:
    """The volumes of `tidefield up`'s folders that exist here."""
    places = [("database", data_dir / "postgres"), ("broker", data_dir / "mosquitto"),
              ("data", data_dir)]
    if repo is not None:
        places.append(("backup", repo))
    return [v for name, path in places if (v := usage(name, path)) is not None]
