"""The lean agent wheel (scripts/build_edge_wheel.py): built from this repository,
installed alone into a fresh venv, it runs the agent and stays small."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_VENV_MB = 60


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()
               and not p.is_symlink()) / 2**20


@pytest.mark.timeout(600)
def test_the_agent_wheel_installs_alone_and_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_edge_wheel import build
    finally:
        sys.path.pop(0)
    wheel = build(tmp_path / "dist")
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)],
                           capture_output=True, text=True, check=True).stdout
    assert "tidefield/edge/agent.py" in names and "tidefield/protocol/control.py" in names
    assert "tidefield/server" not in names and "tidefield/sim" not in names
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                   capture_output=True)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                               capture_output=True, text=True, check=True).stdout
    assert "tidefield-edge==" in installed
    for heavy in ("numba", "numpy", "streamlit", "pyarrow", "pandas", "fastapi", "uvicorn",
                  "psycopg", "tidefield=="):
        assert heavy not in installed, installed
    helped = subprocess.run([str(python), "-m", "tidefield.edge", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "run" in helped.stdout, helped.stderr
    checked = subprocess.run([str(python), "-m", "tidefield.edge", "check", "--config",
                              str(ROOT / "deploy" / "edge.yaml")], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr  # the registry and pydantic are in
    size = _size_mb(env_dir)
    on_disk = int(subprocess.run(["du", "-sm", str(env_dir)], capture_output=True,
                                 text=True, check=True).stdout.split()[0])
    print(f"agent venv: {size:.1f} MB of files, {on_disk} MB on disk (du)")
    assert size < MAX_VENV_MB and on_disk < MAX_VENV_MB
