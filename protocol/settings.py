"""How every Tidefield process reads its settings: ``TIDEFIELD_`` environment variables.

The environment is a contract between processes as much as a user interface: ``tidefield
up`` starts its children with variables set, ``tidefield ingest`` hands its settings to
its worker processes the same way. So the rules are here, beside the other contracts, and
each part defines its own settings on top of them:

- A *group* is a small ``pydantic.BaseModel`` of related fields (the database, the broker,
  logging...), each field with a ``description`` (docs/configuration.md is generated from
  them by ``scripts/configuration.py``). Groups that more than one part reads live here;
  the others in their part (``server/settings.py``, ``dashboards/settings.py``, ...).
- A *process's settings* is a class that inherits the groups it reads and
  ``ProcessSettings``; it is built once by the entry point and passed down. Every variable
  is ``TIDEFIELD_`` + the field's name in capitals.
- Each process's settings class is declared under the ``tidefield.settings`` entry-point
  group in pyproject.toml. That list is how a process tells a variable that another process
  reads (say ``TIDEFIELD_DATABASE_URL`` in the dashboard's environment under ``tidefield
  up``) from a misspelt one, which is warned about; a retired variable is an error naming
  its successor.
- ``load`` builds a process's settings for a command, or exits with status 2 and one line
  per bad variable naming it.

Importing this module needs pydantic-settings; the edge agent, whose settings are its YAML
file, never imports it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

ENV_PREFIX = "TIDEFIELD_"
ENTRY_POINT_GROUP = "tidefield.settings"

# Variables that are not a process's settings: read by scripts/setup.sh and the tests.
NOT_SETTINGS = frozenset({"TIDEFIELD_VENV", "TIDEFIELD_PG_MAJOR", "TIDEFIELD_PYTHON",
                          "TIDEFIELD_TEST_ARTIFACTS", "TIDEFIELD_UPDATE_SCREENSHOTS"})
# Settings that are gone, and what replaced them. Still set, they would do nothing without a
# word, and an operator would believe them in force (a rate limit, say), so they are an error.
RETIRED: Mapping[str, str] = {
    "TIDEFIELD_INGEST_DEVICE_RATE": "TIDEFIELD_INGEST_DEVICE_READINGS_PER_S (the budget is "
                                    "now readings per second of device time, not messages)",
    "TIDEFIELD_INGEST_DEVICE_BURST": "TIDEFIELD_INGEST_DEVICE_BURST_READINGS (in readings, "
                                     "not messages)",
    "TIDEFIELD_BROKER_PID_FILE": "TIDEFIELD_BROKER_ADMIN_URL (changes reach the broker "
                                 "through its dynamic-security API, not SIGHUP)",
}
_warned: set[str] = set()


def variable(field: str) -> str:
    """The environment variable of a field: ``database_url`` -> ``TIDEFIELD_DATABASE_URL``."""
    return ENV_PREFIX + field.upper()


@cache
def process_settings() -> dict[str, type[BaseModel]]:
    """Every process's settings class, by process name, as pyproject.toml declares them."""
    found: dict[str, type[BaseModel]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[point.name] = point.load()
        except ImportError as exc:  # a part not installed here: its variables are unknown
            log.debug("settings of %s not loadable: %s", point.name, exc)
    return found


def known_variables(extra: Iterable[type[BaseModel]] = ()) -> frozenset[str]:
    """Every variable some Tidefield process reads."""
    classes = [*process_settings().values(), *extra]
    return frozenset(variable(name) for cls in classes for name in cls.model_fields)


class ProcessSettings(BaseSettings):
    """The base of each process's settings: the prefix, and the check of stray variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @model_validator(mode="after")
    def _no_stray_variables(self) -> Self:
        """A retired variable still set is an error; one no process reads (a typo) is
        warned about once per process."""
        names = {name for name in os.environ if name.startswith(ENV_PREFIX)}
        retired = sorted(names & RETIRED.keys())
        if retired:
            raise ValueError("; ".join(f"{name} is no longer read: use {RETIRED[name]}"
                                       for name in retired))
        known = known_variables(extra=[type(self)])
        for name in sorted(names - known - NOT_SETTINGS - _warned):
            _warned.add(name)
            log.warning("%s is set but is no setting of tidefield (misspelt?); ignored", name)
        return self


# --- groups more than one part reads ------------------------------------------------------

class LoggingGroup(BaseModel):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="least severe log records written (to stderr)")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one `key=value` line per record; json: one JSON object")


class DashboardAddressGroup(BaseModel):
    """Where the dashboard listens: the dashboard binds it, `tidefield up` announces it."""

    dashboard_host: str = Field("127.0.0.1", description="the address `tidefield dashboard` "
                                                         "listens on")
    dashboard_port: int = Field(8501, ge=1, le=65535, description="the dashboard (`tidefield "
                                                                  "dashboard`, and under "
                                                                  "`tidefield up`)")


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ConfigurationError(SystemExit):
    """Bad settings: its message lines are printed, the process exits with status 2."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(2)
        self.lines = lines


def problems(exc: ValidationError, options: Iterable[str] = ()) -> list[str]:
    """One line per error, naming the variable (or the command-line option) at fault."""
    given = set(options)
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else None
        where = ("" if field is None else f"--{field.replace('_', '-')}: "
                 if field in given else f"{variable(field)}: ")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"configuration error: {where}{message}")
    return lines


def load(cls: type[SettingsT], **options: Any) -> SettingsT:
    """``cls`` from the environment, command-line ``options`` (None: not given) taking
    precedence; on a bad value, each problem on stderr and exit status 2."""
    given = {name: value for name, value in options.items() if value is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        lines = problems(exc, given)
        for line in lines:
            print(line, file=sys.stderr)
        raise ConfigurationError(lines) from None

