"""The distribution: every package is listed, the CLI answers, a normal install works."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"protocol": "tidefield.protocol", "edge": "tidefield.edge",
           "server": "tidefield.server", "dashboards": "tidefield.dashboards",
           "firmware-sim": "tidefield.sim"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        assert config["package-dir"][package] == folder
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found == listed


def test_cli_lists_its_subcommands():
    out = subprocess.run([sys.executable, "-m", "tidefield.server.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("up", "db", "registry", "keys", "api", "ingest", "dashboard", "sim", "edge"):
        assert f" {command} " in out


@pytest.mark.slow
def test_a_normal_install_imports_every_package(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(wheels.glob("tidefield-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True)
    # Dependencies come from this venv's site-packages via PYTHONPATH; its .pth files (and so
    # the editable install of tidefield) are not processed for PYTHONPATH entries.
    deps = sysconfig.get_paths()["purelib"]
    code = ("import tidefield.sim, tidefield.protocol.registry as r, tidefield.server.db.migrate"
            " as m; print(tidefield.sim.__file__); print(len(r.load_sites()));"
            " print(len(m.available()))")
    out = subprocess.run([python, "-c", code], env={"PYTHONPATH": deps}, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(env_dir))  # imported from the installed wheel
    assert out[1] == "250"  # the registry CSV is packaged
    assert int(out[2]) >= 1  # and so are the migrations
