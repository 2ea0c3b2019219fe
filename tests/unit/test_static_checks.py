"""The checks that read the code rather than run it, on every test run (so `.ci/run`, the
README's test command, runs them): ruff's lint, mypy's types (strict on protocol/ and
edge/, every function typed elsewhere; scripts/typecheck.py), and the manual's build with
`mkdocs build --strict`, which fails on a broken link or a page left out of nav."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_ruff_finds_nothing():
    result = run(BIN / "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = run(sys.executable, ROOT / "scripts" / "typecheck.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_manual_builds_strictly(tmp_path):
    result = run(BIN / "mkdocs", "build", "--strict", "--site-dir", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    built = {p.relative_to(tmp_path / "site").as_posix()
             for p in (tmp_path / "site").rglob("index.html")}
    for page in ("architecture", "configuration", "operations", "security", "detection",
                 "benchmarks", "changelog"):
        assert f"{page}/index.html" in built


def test_the_readme_stays_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200
    text = "\n".join(lines)
    # the two commands, exactly as CI and a newcomer run them
    assert "bash scripts/setup.sh && .venv/bin/tidefield up" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in text
