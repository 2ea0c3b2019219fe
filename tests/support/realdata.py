"""Where the real labelled datasets are: ``TIDEFIELD_REALWORLD_DIR`` or else the shared
folder beside the repository (``<repo>/../shared/data/realworld``). They are read in
place, never copied into the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ("river_wq_leigh2019", "lro_aquatic_qc", "skab_pump_testbed", "wsn_suthaharan2010")


def realworld_dir() -> Path:
    given = os.environ.get("TIDEFIELD_REALWORLD_DIR")
    return Path(given) if given else REPO.parent / "shared" / "data" / "realworld"


def realworld_or_skip() -> Path:
    folder = realworld_dir()
    if not folder.is_dir():
        pytest.skip(f"the real labelled datasets are not at {folder} (set "
                    f"TIDEFIELD_REALWORLD_DIR to where they are)")
    return folder
