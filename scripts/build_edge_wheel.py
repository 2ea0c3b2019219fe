"""Build the lean agent wheel, ``tidefield-edge``: only ``protocol/`` and ``edge/`` of this
repository, with only what the agent imports.

    .venv/bin/python scripts/build_edge_wheel.py [--out dist/]

Why a second distribution and not an extra of ``tidefield``: an extra can only add
dependencies, never take the base ones away, so ``pip install tidefield[edge]`` would
still pull numba, streamlit, pyarrow, pandas, fastapi and psycopg onto a Raspberry Pi.
``tidefield-edge`` is built from the same sources (copied into a staging folder with a
generated ``pyproject.toml``; the version is the project's), installs the same
``tidefield.protocol`` and ``tidefield.edge`` packages, and is what agent updates deliver
(docs/control.md). It replaces ``tidefield`` on a gateway; the two are not installed
side by side.

Left out: ``protocol/registry/generate.py`` (regenerates the registry with the map
libraries) and the district outlines (``qingdao.geojson``), which the agent never reads.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "tidefield-edge"
# What `python -m tidefield.edge` imports (the config check adds pydantic and YAML);
# every one pure Python or with wheels for 32- and 64-bit ARM.
DEPENDENCIES = ["paho-mqtt>=2.1,<3", "pymodbus>=3.16,<4", "msgpack>=1.0,<2",
                "pyyaml>=6,<7", "pydantic>=2.7,<3"]
# (update signatures are verified by edge/ed25519.py: cryptography would cost 16 MB)
LEFT_OUT = ("generate.py", "qingdao.geojson", "__pycache__", "*.pyc")


def project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def pyproject(version: str) -> str:
    deps = ",\n  ".join(f'"{d}"' for d in DEPENDENCIES)
    return f"""[build-system]
requires = ["setuptools>=77", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "{NAME}"
version = "{version}"
description = "Tidefield's edge agent alone: drivers, disk queue, MQTT uplink, control"
requires-python = ">=3.11"
license = "Apache-2.0"
dependencies = [
  {deps}
]

[project.optional-dependencies]
rtu = ["pymodbus[serial]>=3.16,<4"]

[project.scripts]
tidefield-edge = "tidefield.edge.__main__:main"

[tool.setuptools]
packages = ["tidefield.protocol", "tidefield.protocol.registry", "tidefield.edge",
            "tidefield.edge.drivers"]

[tool.setuptools.package-data]
"tidefield.protocol.registry" = ["*.csv"]
"""


def build(out: Path, version: str | None = None,
          patch: Callable[[Path], None] | None = None) -> Path:
    """Build the wheel into ``out``; its path. ``version`` overrides the project's;
    ``patch`` may change the staged sources (the update tests make broken releases)."""
    version = version or project_version()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tidefield-edge-") as tmp:
        stage = Path(tmp)
        ignore = shutil.ignore_patterns(*LEFT_OUT)
        shutil.copytree(ROOT / "protocol", stage / "tidefield" / "protocol", ignore=ignore)
        shutil.copytree(ROOT / "edge", stage / "tidefield" / "edge", ignore=ignore)
        (stage / "pyproject.toml").write_text(pyproject(version))
        if patch is not None:
            patch(stage)
        (stage / "README.md").write_text("Tidefield's edge agent: see docs/edge.md.\n")
        before = set(out.glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(out), str(stage)],
                       check=True)
    built = [p for p in out.glob(f"{NAME.replace('-', '_')}-*.whl") if p not in before] or \
        sorted(out.glob(f"{NAME.replace('-', '_')}-{version}-*.whl"))
    return built[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--version", help="default: the project's")
    args = parser.parse_args()
    print(build(args.out, args.version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
