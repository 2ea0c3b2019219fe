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
           "firmware-sim": "tidefield.sim", "cli": "tidefield.cli"}


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
    out = subprocess.run([sys.executable, "-m", "tidefield.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("up", "db", "registry", "keys", "api", "ingest", "dashboard", "sim", "edge",
                    "detect", "status", "devices", "tls"):
        assert f" {command} " in out


def test_the_console_script_is_the_neutral_entry_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert config == {"tidefield": "tidefield.cli:main"}


@pytest.mark.parametrize(("argv", "loaded", "not_loaded"), [
    (["edge", "check", "--help"], "tidefield.edge.cli",
     ("tidefield.server", "tidefield.sim", "tidefield.dashboards")),
    (["sim", "show", "--help"], "tidefield.sim.cli",
     ("tidefield.server", "tidefield.edge", "tidefield.dashboards")),
    (["dashboard", "--help"], "tidefield.dashboards.cli",
     ("tidefield.server", "tidefield.edge", "tidefield.sim")),
    (["db", "migrate", "--help"], "tidefield.server.cli",
     ("tidefield.edge", "tidefield.sim", "tidefield.dashboards")),
])
def test_a_command_loads_its_own_part_and_no_other(argv, loaded, not_loaded):
    """`tidefield edge ...` on a Raspberry Pi imports the edge's CLI and nothing of the
    server: each part's command line is imported only when one of its commands runs."""
    code = ("import sys; from tidefield.cli import app\n"
            f"try: app({argv!r}, prog_name='tidefield')\n"
            "except SystemExit: pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('tidefield.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1].split()
    assert loaded in out
    for part in not_loaded:
        assert not [m for m in out if m == part or m.startswith(part + ".")], (part, out)


def test_every_mounted_command_resolves():
    from typer.main import get_command

    from tidefield.cli import COMMANDS, app

    group = get_command(app)
    for name in COMMANDS:
        command = group.get_command(None, name)
        assert command is not None and command.name == name


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
