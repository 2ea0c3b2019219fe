"""docs/configuration.md is generated from the settings classes (scripts/configuration.py):
it lists every variable a process reads, and a change to a field without regenerating
the page fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tidefield.protocol.settings import process_settings, variable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "configuration.py"


def test_the_page_is_what_the_script_writes():
    result = subprocess.run([sys.executable, SCRIPT, "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_every_variable_of_every_process_is_on_the_page():
    page = (ROOT / "docs" / "configuration.md").read_text()
    names = {variable(field) for cls in process_settings().values()
             for field in cls.model_fields}
    assert len(names) > 60
    assert all(f"`{name}`" in page for name in names)


def test_a_changed_description_makes_the_page_stale(tmp_path):
    """The check compares against the classes, not against itself."""
    code = (f"import runpy, sys; sys.argv = [{str(SCRIPT)!r}, '--check']\n"
            "from tidefield.server.settings import DetectGroup\n"
            "DetectGroup.model_fields['detect_poll_s'].description = 'something else'\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "docs/configuration.md is stale" in result.stderr
