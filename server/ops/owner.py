"""The cluster's user: PostgreSQL refuses to run as root, so when we are root its files,
and every tool that touches them (pgBackRest, pg_basebackup), belong to ``postgres``
(the embedded server's rule, tidefield.server.embedded.postgres)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

CLUSTER_USER = "postgres"


def owner(user: str = CLUSTER_USER) -> str | None:
    """Whom to run as: ``user`` when we are root, else None (ourselves)."""
    return user if os.geteuid() == 0 else None


def give(path: Path, user: str | None, *, tree: bool = False) -> None:
    """``path`` (and with ``tree`` everything under it) to ``user``; None: leave it."""
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for item in [path, *path.rglob("*")] if tree and path.is_dir() else [path]:
        os.chown(item, pw.pw_uid, pw.pw_gid)


def run_as(argv: list[str], user: str | None, *,
           timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (through runuser; None: as ourselves), from ``/`` (a
    folder every user may enter)."""
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
