"""The dependency rules (docs/architecture.md) hold, read from the imports by import-linter
with the contracts in pyproject.toml; and a wrong import breaks them (checked on a copy of
the tree with one deliberately wrong module added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PORTIONS = {"protocol": "protocol", "edge": "edge", "server": "server",
            "dashboards": "dashboards", "sim": "firmware-sim", "cli": "cli"}


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--config", "pyproject.toml"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "server never depends on edge or dashboards KEPT" in result.stdout
    assert "the audit seam imports no other part of security KEPT" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The packages laid out as the ``tidefield`` namespace they install as, and the
    contracts: imported from here first, through PYTHONPATH."""
    copy = tmp_path_factory.mktemp("tree")
    for portion, folder in PORTIONS.items():
        shutil.copytree(ROOT / folder, copy / "tidefield" / portion,
                        ignore=shutil.ignore_patterns("__pycache__", "*.csv", "*.geojson"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


@pytest.mark.parametrize(("portion", "wrong_import", "broken"), [
    ("edge", "from tidefield.sim import fleet", "edge depends only on protocol"),
    ("server", "import tidefield.edge.config", "server never depends on edge or dashboards"),
    ("dashboards", "from tidefield.server.settings import ApiSettings",
     "dashboards depend only on protocol (and the API over HTTP)"),
    ("protocol", "from tidefield.server import logs", "protocol depends on nothing of ours"),
    ("sim", "from tidefield.cli import app", "firmware-sim depends only on protocol"),
    ("server/ingest", "from tidefield.server.api import app",
     "server layers: each imports only those below it"),
    # the operations drive tools beside the services; the services use them, not back
    ("server/ops", "from tidefield.server.platform import Platform",
     "server layers: each imports only those below it"),
    ("server/ops", "from tidefield.server.ingest import worker",
     "server layers: each imports only those below it"),
])
def test_a_wrong_import_breaks_its_contract(tree_copy, portion, wrong_import, broken):
    module = tree_copy / "tidefield" / portion / "wrong_way.py"
    module.write_text(f'"""Deliberately against the rules."""\n\n{wrong_import}\n')
    try:
        result = lint_imports(tree_copy, pythonpath=tree_copy)
    finally:
        module.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{broken} BROKEN" in result.stdout
    assert "wrong_way" in result.stdout
    # and only that contract
    assert "Contracts: 6 kept, 1 broken." in result.stdout


def test_the_copy_alone_keeps_every_contract(tree_copy):
    """The copy is analysed, not the installed tree: unchanged, it passes."""
    result = lint_imports(tree_copy, pythonpath=tree_copy)
    assert result.returncode == 0, result.stdout + result.stderr
