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


def test_a_variable_another_process_reads_is_no_typo(monkeypatch, caplog):
    """Under `tidefield up` every child inherits every variable: the dashboard must not
    warn about the database's, nor ingest about the dashboard's."""
    from tidefield.dashboards.settings import DashboardSettings
    from tidefield.server.settings import IngestSettings

    monkeypatch.setenv("TIDEFIELD_DATABASE_URL", "postgresql://db/tidefield")
    monkeypatch.setenv("TIDEFIELD_DASHBOARD_REFRESH_S", "10")
    monkeypatch.setenv("TIDEFIELD_DETECT_POLL_S", "2")
    with caplog.at_level(logging.WARNING, logger="tidefield.protocol.settings"):
        dashboard = DashboardSettings()
        ingest = IngestSettings()
    assert caplog.records == []
    assert dashboard.dashboard_refresh_s == 10
    assert ingest.database_url == "postgresql://db/tidefield"


def test_each_process_builds_only_its_own_settings():
    from tidefield.dashboards.settings import DashboardSettings
    from tidefield.server.settings import DetectorSettings, IngestSettings

    assert "database_url" not in DashboardSettings.model_fields
    assert "api_key" not in IngestSettings.model_fields
    assert "ingest_max_readings" not in DetectorSettings.model_fields
    assert "detect_poll_s" in DetectorSettings.model_fields
    assert "log_level" in DashboardSettings.model_fields


def test_the_dashboard_command_names_a_bad_variable_and_exits_2(monkeypatch):
    monkeypatch.setenv("TIDEFIELD_DASHBOARD_LANGUAGE", "fr")
    result = CliRunner().invoke(app, ["dashboard"])
    assert result.exit_code == 2
    assert result.stderr.startswith("configuration error: TIDEFIELD_DASHBOARD_LANGUAGE: ")
    assert "Traceback" not in result.stderr
