"""Run mypy over the tree as the ``tidefield`` namespace it installs as.

The folders (protocol/, edge/, firmware-sim/, ...) become ``tidefield.<part>`` only through
pyproject's package-dir mapping, which mypy cannot read; so this lays a tree of symbolic
links (``.venv/typecheck/tidefield/<part>`` -> the folder) and checks that. Settings, and
which modules are strict, are in pyproject.toml's [tool.mypy].

    .venv/bin/python scripts/typecheck.py     # exit status: mypy's
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def link_tree() -> Path:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    base = ROOT / ".venv" / "typecheck"
    namespace = base / "tidefield"
    namespace.mkdir(parents=True, exist_ok=True)
    for package, folder in mapping.items():
        link = namespace / package.removeprefix("tidefield.")
        if not link.is_symlink() or link.resolve() != (ROOT / folder).resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(ROOT / folder, target_is_directory=True)
    return base


def main() -> int:
    base = link_tree()
    packages = [arg for name in sorted(p.name for p in (base / "tidefield").iterdir())
                for arg in ("-p", f"tidefield.{name}")]
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                           str(ROOT / "pyproject.toml"), "--cache-dir",
                           str(ROOT / ".venv" / "mypy-cache"), *packages], cwd=base).returncode


if __name__ == "__main__":
    sys.exit(main())
