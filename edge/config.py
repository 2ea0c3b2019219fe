"""The agent's config file (YAML), validated in full before anything starts.

Every problem is reported with the path of the field at fault, one per line::

    drivers.1.port: Input should be a valid integer, unable to parse string as an integer
    drivers.0.registers.soil_phh: unknown metric 'soil_phh' (not in the catalog)

Each driver owns its config model (``drivers/<name>.py``); the ``type`` field picks it
(a tagged union). After the shapes check out, the content is checked against the site
registry and the metric catalog: the site must exist, each driver's device must be one
of the site's devices, and each metric must be one the device reports.

The models are frozen standard-library dataclasses, validated by pydantic. pydantic (and
YAML, and the registry) are loaded only by ``load_config``/``parse_config``:
``python -m tidefield.edge run`` validates in a short-lived ``check`` process and builds
the same dataclasses from its JSON (``from_json``), so the long-running agent stays about
15 MB smaller. See ``deploy/edge.yaml`` for a documented sample.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, cast

from annotated_types import Ge, Gt, Le

from tidefield.protocol.mqtt import BrokerAddress, parse_mqtt_url
from tidefield.protocol.topics import ID_PATTERN

from .drivers import DRIVERS
from .drivers.base import FORBID_EXTRA, DriverConfig, Pattern
from .errors import ConfigError

DEFAULT_QUEUE_PATH = Path("/var/lib/tidefield-edge/queue.db")  # systemd's StateDirectory


class MqttUrl:
    """Annotation metadata: a broker URL ``parse_mqtt_url`` accepts."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def check(url: str) -> str:
            parse_mqtt_url(url)  # its ValueError says what a URL must look like
            return url

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema())


class ByType:
    """Annotation metadata on the union of driver configs: ``type`` picks the member."""

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        choices = {member.__dataclass_fields__["type"].default: handler.generate_schema(member)
                   for member in typing.get_args(source)}
        return core_schema.tagged_union_schema(choices, discriminator="type")


@dataclass(frozen=True, kw_only=True)
class _Section:
    __pydantic_config__: ClassVar[dict[str, Any]] = FORBID_EXTRA


@dataclass(frozen=True, kw_only=True)
class BrokerConfig(_Section):
    url: Annotated[str, MqttUrl()] = "mqtt://127.0.0.1:1883"  # mqtts:// for TLS
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None  # read the password from this file
    ca_file: Path | None = None  # trust this CA (mqtts only)
    # default: the login's user name (the broker binds a device login to it), else
    # tidefield-edge-{site}
    client_id: str | None = None
    keepalive_s: Annotated[int, Ge(5), Le(3600)] = 30
    connect_timeout_s: Annotated[float, Gt(0), Le(300)] = 10.0
    content_type: Literal["json", "msgpack"] = "json"

    def address(self) -> BrokerAddress:
        """The broker to connect to, credentials and TLS included."""
        ca_file = str(self.ca_file) if self.ca_file else None
        base = parse_mqtt_url(self.url, ca_file=ca_file)
        password = base.password
        if self.password is not None:
            password = self.password
        elif self.password_file is not None:
            password = self.password_file.read_text().strip()
        return dataclasses.replace(base, username=self.username or base.username,
                                   password=password)


@dataclass(frozen=True, kw_only=True)
class QueueConfig(_Section):
    path: Path = DEFAULT_QUEUE_PATH
    max_readings: Annotated[int, Ge(1)] = 1_000_000
    max_age_s: Annotated[float, Gt(0)] = 30 * 86_400.0  # older readings are dropped
    when_full: Literal["drop_oldest", "refuse_newest"] = "drop_oldest"
    # below this much free space on its disk the queue stops growing and when_full applies
    min_free_mb: Annotated[float, Ge(0)] = 32.0


@dataclass(frozen=True, kw_only=True)
class PublishConfig(_Section):
    batch_max_readings: Annotated[int, Ge(1), Le(10_000)] = 500
    # longest a reading waits for others to share its batch
    batch_max_wait_s: Annotated[float, Ge(0), Le(3600)] = 1.0
    max_in_flight: Annotated[int, Ge(1), Le(1000)] = 16  # batches awaiting PUBACK
    # keep each batch on disk until ingest's receipt names it, not merely the broker's
    # PUBACK (false: for a server that sends no receipts, which would re-send forever)
    receipts: bool = True
    # first wait after the PUBACK for a receipt, before the batch goes again (doubling)
    receipt_timeout_s: Annotated[float, Ge(0.1), Le(3600)] = 30.0
    # batches sent and not receipted, at most (only their keys are held in memory)
    max_unreceipted: Annotated[int, Ge(1), Le(100_000)] = 1000


@dataclass(frozen=True, kw_only=True)
class HealthConfig(_Section):
    interval_s: Annotated[float, Gt(0), Le(86_400)] = 60.0


if TYPE_CHECKING:
    AnyDriverConfig = DriverConfig
else:  # the union of every registered driver's config, which pydantic tells apart by type
    AnyDriverConfig = functools.reduce(operator.or_,
                                       (d.config_model for d in DRIVERS.values()))


@dataclass(frozen=True, kw_only=True)
class EdgeConfig(_Section):
    site: Annotated[str, Pattern(f"^{ID_PATTERN}$")]
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    drivers: tuple[Annotated[AnyDriverConfig, ByType()], ...] = ()

    @property
    def gateway_device(self) -> str:
        """The site's gateway: the agent reports its own health as this device."""
        return f"{self.site}-gw"

    @property
    def client_id(self) -> str:
        if self.broker.client_id:
            return self.broker.client_id
        username = self.broker.username or parse_mqtt_url(self.broker.url).username
        return username or f"tidefield-edge-{self.site}"

    def device_intervals(self) -> dict[str, float]:
        """Every device the agent speaks for -> its shortest poll interval."""
        devices = {self.gateway_device: self.health.interval_s}
        for driver in self.drivers:
            devices[driver.device] = min(devices.get(driver.device, driver.interval_s),
                                         driver.interval_s)
        return devices


# --- loading and validating (pydantic) ----------------------------------------------------


def load_config(path: Path | str) -> EdgeConfig:
    """Read and validate a config file; ConfigError lists every problem found."""
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) \
            from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"not valid YAML: {where}{problem}")]) from None
    return parse_config(data, source)


def parse_config(data: Any, source: str = "<config>") -> EdgeConfig:
    from pydantic import TypeAdapter, ValidationError

    if not isinstance(data, dict):
        raise ConfigError(source, [("", "the config must be a mapping of sections "
                                        "(site, broker, queue, publish, health, drivers)")])
    try:
        config = TypeAdapter(EdgeConfig).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(dict(error)) for error in exc.errors()]) from None
    problems = _check_content(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def validate(model: type, data: Any) -> Any:
    """One config model (a driver's, a register...) from a mapping, validated."""
    from pydantic import TypeAdapter

    return TypeAdapter(model).validate_python(data)


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    loc = error["loc"]
    parts = []
    for i, part in enumerate(loc):
        # A tagged union puts the driver type in the location; the YAML has no such level.
        if i >= 2 and loc[i - 2] == "drivers" and isinstance(loc[i - 1], int) and part in DRIVERS:
            continue
        parts.append(str(part))
    message = error["msg"].removeprefix("Value error, ")
    kinds = ", ".join(DRIVERS)
    if error["type"] == "unexpected_keyword_argument":
        message = "Extra inputs are not permitted"
    elif error["type"] == "union_tag_invalid":
        parts.append("type")
        message = f"unknown driver type {error['ctx']['tag']!r} (expected one of: {kinds})"
    elif error["type"] == "union_tag_not_found":
        parts.append("type")
        message = f"Field required (one of: {kinds})"
    return ".".join(parts), message


def _check_content(config: EdgeConfig) -> list[tuple[str, str]]:
    """What the shapes cannot say: registry, catalog, files."""
    from tidefield.protocol.catalog import METRICS
    from tidefield.protocol.registry import load_sites

    problems: list[tuple[str, str]] = []
    site = next((s for s in load_sites() if s.id == config.site), None)
    if site is None:
        return [("site", f"unknown site {config.site!r} (not in the site registry)")]
    devices = {device.id: device for device in site.devices}
    if config.gateway_device not in devices:
        problems.append(("site", f"site {site.id} has no gateway device "
                                 f"{config.gateway_device}"))
    seen: dict[tuple[str, str], int] = {}
    for i, driver in enumerate(config.drivers):
        device = devices.get(driver.device)
        if device is None:
            problems.append((f"drivers.{i}.device",
                             f"{driver.device!r} is not a device of site {site.id} "
                             f"(its devices: {', '.join(devices)})"))
            continue
        fields = driver.metric_fields()
        if fields is None:
            fields = {metric: "device" for metric in device.template.metrics}
        for metric, where in fields.items():
            path = f"drivers.{i}.{where}"
            if metric not in METRICS:
                problems.append((path, f"unknown metric {metric!r} (not in the catalog)"))
            elif metric not in device.template.metrics:
                problems.append((path, f"{device.id} ({device.template.model}) does not "
                                       f"report {metric}; it reports "
                                       f"{', '.join(device.template.metrics)}"))
            elif (device.id, metric) in seen:
                problems.append((path, f"{device.id} {metric} is already read by "
                                       f"drivers.{seen[device.id, metric]}"))
            else:
                seen[device.id, metric] = i
    broker = config.broker
    if broker.password is not None and broker.password_file is not None:
        problems.append(("broker.password_file", "give password or password_file, not both"))
    if broker.password_file is not None and not _readable(broker.password_file):
        problems.append(("broker.password_file", f"cannot read {broker.password_file}"))
    if broker.ca_file is not None:
        if not broker.url.startswith("mqtts://"):
            problems.append(("broker.ca_file", "a CA file is only used with an mqtts:// url"))
        elif not _readable(broker.ca_file):
            problems.append(("broker.ca_file", f"cannot read {broker.ca_file}"))
    return problems


def _readable(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


# --- handing a validated config to the agent process (no pydantic) -----------------------


def to_json(config: EdgeConfig) -> str:
    return json.dumps(dataclasses.asdict(config), default=str)


def from_json(text: str) -> EdgeConfig:
    """The config ``to_json`` wrote, rebuilt without validating it again."""
    return cast(EdgeConfig, _build(EdgeConfig, json.loads(text)))


def _build(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is Annotated:
        return _build(typing.get_args(kind)[0], value)
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind, include_extras=True)
        return kind(**{f.name: _build(hints[f.name], value[f.name])  # type: ignore[operator]
                       for f in dataclasses.fields(kind) if f.name in value})
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if len(members) > 1:  # the driver configs: the type says which
            return _build(DRIVERS[value["type"]].config_model, value)
        return _build(members[0], value)
    if origin in (list, tuple):
        return tuple(_build(typing.get_args(kind)[0], item) for item in value)
    if origin is dict:
        return {key: _build(typing.get_args(kind)[1], item) for key, item in value.items()}
    if kind is Path:
        return Path(value)
    return value
