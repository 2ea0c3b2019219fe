"""The settings object as an operator meets it: bad values and stray variables are named,
through the `tidefield` command (exit status 2, no traceback)."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tidefield.cli import app
from tidefield.protocol import settings as settings_module
from tidefield.protocol.settings import RETIRED
from tidefield.server.settings import ApiSettings as Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("TIDEFIELD_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings_module, "_warned", set())


@pytest.mark.parametrize("name", sorted(RETIRED))
def test_a_retired_variable_is_an_error_naming_its_successor(monkeypatch, name):
    monkeypatch.setenv(name, "5")
    with pytest.raises(ValidationError, match=f"{name} is no longer read: use TIDEFIELD_"):
        Settings()


def test_an_unknown_variable_is_warned_about_once(monkeypatch, caplog):
    monkeypatch.setenv("TIDEFIELD_API_PROT", "9000")
    monkeypatch.setenv("TIDEFIELD_VENV", "/opt/venv")  # the set-up script's, not a setting
    with caplog.at_level(logging.WARNING, logger="tidefield.protocol.settings"):
        assert Settings().api_port != 9000
        Settings()
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["TIDEFIELD_API_PROT is set but is no setting of tidefield (misspelt?); "
                      "ignored"]


def test_the_command_names_each_bad_variable_and_exits_2(monkeypatch, tmp_path):
    monkeypatch.setenv("TIDEFIELD_API_PORT", "abc")
    monkeypatch.setenv("TIDEFIELD_INGEST_DEVICE_BURST", "600")
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("configuration error: TIDEFIELD_API_PORT: Input should be a "
                               "valid integer")
    assert "Traceback" not in result.stderr
    monkeypatch.delenv("TIDEFIELD_API_PORT")
    result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "configuration error: TIDEFIELD_INGEST_DEVICE_BURST is no longer read: use "
        "TIDEFIELD_INGEST_DEVICE_BURST_READINGS (in readings, not messages)")
