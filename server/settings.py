"""The server processes' settings, each built once by its entry point from ``TIDEFIELD_``
variables (the rules are in ``tidefield.protocol.settings``).

Fields come in groups; a process's settings inherit the groups it reads:

    IngestSettings    `tidefield ingest`   database, broker, data dir, TLS, ingest, retention
    ApiSettings       `tidefield api`      database, broker, TLS, API, HTTP ingest, sign-in
    DetectorSettings  `tidefield detect run`  database, broker, TLS, detection
    NotifierSettings  `tidefield notify run`  database, notifications
    AdminSettings     `tidefield db|registry|keys|devices`  database, broker, data dir, TLS
    OpsSettings       `tidefield backup|restore|replica`  database, data dir, backups, replica
    UpSettings        `tidefield up|status`  all of the above, the simulated fleet, dashboard

docs/configuration.md lists every variable; ``scripts/configuration.py`` writes it from
the fields' descriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from tidefield.protocol.settings import DashboardAddressGroup, LoggingGroup, ProcessSettings
from tidefield.protocol.units import DAY_MS
from tidefield.sim.settings import SimulatedFleetGroup

if TYPE_CHECKING:
    from tidefield.protocol.codec import Limits


def _postgres_url(value: str | None) -> str | None:
    if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    return value


class DatabaseGroup(BaseModel):
    database_url: str | None = Field(
        None, description="PostgreSQL with TimescaleDB; unset: `tidefield up` runs its own")

    _database_url = field_validator("database_url")(_postgres_url)


class BrokerGroup(BaseModel):
    mqtt_url: str | None = Field(
        None, description="mqtt://[user:password@]host:port; unset: `tidefield up` runs its own")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return value


class DataDirGroup(BaseModel):
    data_dir: Path = Field(Path(".tidefield"), description="where embedded services keep "
                           "their data, and processes their working files")


class EmbeddedGroup(BaseModel):
    embedded_pg_port: int = Field(55432, description="port of the embedded PostgreSQL")
    embedded_mqtt_port: int = Field(11883, description="port of the embedded Mosquitto")


class ReadDatabaseGroup(BaseModel):
    database_read_url: str | None = Field(
        None, description="a streaming replica (hot standby) that the API's read-only "
        "routes, exports and SensorThings read from; while it does not answer they read "
        "the primary, with a warning")

    _database_read_url = field_validator("database_read_url")(_postgres_url)


class BackupGroup(BaseModel):
    """Backups and WAL archiving with pgBackRest (tidefield.server.ops)."""

    backup_repo: Path | None = Field(
        None, description="pgBackRest repository folder (default: DATA_DIR/backup); put it "
        "on another disk than the database, or it goes with it")
    backup_stanza: str = Field("tidefield", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                               description="pgBackRest's name for the database it backs up")
    backup_archive: bool = Field(
        True, description="`tidefield up` archives the embedded database's WAL to the "
        "repository from its start and takes the scheduled backups")
    backup_every_h: float = Field(24.0, gt=0, description="`tidefield up` takes a backup "
                                  "when the newest one is this old")
    backup_full_every_days: float = Field(
        7.0, gt=0, description="a backup is full when the newest full one is this old, "
        "else incremental")
    backup_retention_full: int = Field(
        2, ge=1, le=100, description="full backups kept, each with its incremental ones and "
        "the WAL to restore to any moment since the oldest")
    backup_compress: Literal["lz4", "zst", "gz", "none"] = Field(
        "lz4", description="compression of backups and archived WAL")
    backup_verify_every_days: float = Field(
        7.0, ge=0, description="`tidefield up` also restores the newest backup into a scratch "
        "cluster and compares it this often (0: never; needs the database's size free)")
    backup_check_chunks: int = Field(
        3, ge=1, le=100, description="newest chunks of readings (and of each rollup) whose "
        "row counts and checksums a backup records and `backup verify` compares")
    backup_pg_path: Path | None = Field(
        None, description="data directory of the database to back up when it is not the "
        "embedded one (pgBackRest reads it on this machine)")
    backup_pg_socket_dir: Path = Field(
        Path("/var/run/postgresql"), description="unix socket folder of that database")


class ReplicaGroup(BaseModel):
    """The read replica `tidefield up --replica` runs (tidefield.server.ops.replica)."""

    up_replica: bool = Field(False, description="`tidefield up` runs a streaming read "
                             "replica and points the API's reads at it")
    embedded_replica_port: int = Field(55433, ge=1, le=65535,
                                       description="port of the embedded read replica")
    replica_max_slot_wal_gb: float = Field(
        8.0, gt=0, description="WAL the primary keeps for a replica that is away; past it "
        "the replica catches up from the WAL archive, or is rebuilt")


class ApiAddressGroup(BaseModel):
    api_host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    api_port: int = Field(8080, ge=1, le=65535, description="port of the HTTP API")
    api_workers: int = Field(1, ge=1, le=64, description="API processes")


class TlsGroup(BaseModel):
    """Security (tidefield.server.security): TLS and the broker's logins."""

    tls: bool = Field(False, description="the embedded broker, the API and HTTP ingest "
                      "speak TLS only (mqtts://, https://)")
    tls_cert_file: Path | None = Field(None, description="server certificate (chain); "
                                       "unset with tls: a development CA makes one")
    tls_key_file: Path | None = Field(None, description="the server certificate's key")
    tls_ca_file: Path | None = Field(None, description="CA that clients of this process "
                                     "trust (unset: the development CA, if any, else the "
                                     "system's)")
    broker_auth_dir: Path | None = Field(None, description="where the broker's "
                                         "dynamic-security config is written (default: "
                                         "DATA_DIR/mosquitto)")
    broker_admin_url: str | None = Field(None, description="the broker's admin login "
                                         "(svc_admin), to change logins while it runs "
                                         "(default: broker_auth_dir/logins/admin.url)")

    @model_validator(mode="after")
    def _cert_and_key(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both TIDEFIELD_TLS_CERT_FILE and TIDEFIELD_TLS_KEY_FILE, "
                             "or neither (a development CA then makes them)")
        return self


class IngestAddressGroup(BaseModel):
    ingest_workers: int = Field(2, ge=1, le=64, description="ingest processes (each owns a "
                                                            "partition of the devices)")
    ingest_host: str = Field("127.0.0.1", description="address of the ingest HTTP service")
    ingest_port: int = Field(8081, description="port of the ingest HTTP service")


class IngestGroup(BaseModel):
    """How telemetry is admitted and written, by MQTT or HTTP (the ingest service and the
    API's HTTP ingest alike)."""

    ingest_strategy: Literal["copy", "staging"] = Field(
        "copy", description="`copy` (batch idempotency, binary COPY) or `staging` (COPY to "
                            "staging, INSERT ... ON CONFLICT)")
    ingest_unknown_devices: Literal["reject", "register"] = Field(
        "reject", description="`reject` telemetry of unregistered devices, or `register` them (on "
                              "a known site)")
    ingest_max_payload_bytes: int = Field(256 * 1024, ge=1024,
                                          description="larger messages are refused as `oversize`")
    ingest_max_readings: int = Field(10_000, ge=1, description="readings per message")
    ingest_max_future_s: int = Field(300, ge=0, description="tolerated device clock lead")
    ingest_max_age_days: int = Field(400, ge=1, description="older readings are refused as "
                                                            "`time_too_old`")
    ingest_device_readings_per_s: float = Field(
        10.0, ge=0, description="readings a device may send per second of its own clock "
        "that its messages cover (or of wall time, if more); 0: no limit")
    ingest_device_burst_readings: int = Field(
        20_000, ge=1, description="readings a device may send at once above that budget "
        "(at least ingest_max_readings)")
    ingest_device_backlog_days: float = Field(
        30.0, ge=0, description="device time before now over which a device's backlog "
        "earns budget (the edge agent's queue keeps 30 days)")

    def ingest_limits(self) -> Limits:
        from tidefield.protocol.codec import Limits

        return Limits(max_payload_bytes=self.ingest_max_payload_bytes,
                      max_readings=self.ingest_max_readings,
                      max_future_ms=self.ingest_max_future_s * 1000,
                      max_age_ms=self.ingest_max_age_days * DAY_MS)

    @model_validator(mode="after")
    def _burst_fits_a_message(self) -> Self:
        if self.ingest_device_readings_per_s > 0 and \
                self.ingest_device_burst_readings < self.ingest_max_readings:
            raise ValueError("TIDEFIELD_INGEST_DEVICE_BURST_READINGS must be at least "
                             "TIDEFIELD_INGEST_MAX_READINGS, or a full message could "
                             "never be admitted")
        return self


class IngestWorkerGroup(BaseModel):
    """The MQTT consumer and the worker that writes what it receives."""

    ingest_receive_maximum: int = Field(2000, ge=1, description="unacknowledged MQTT messages in "
                                                                "flight per worker (back-pressure)")
    ingest_subscription: Literal["partitioned", "shared"] = Field(
        "partitioned", description="`partitioned`: every worker receives all telemetry and "
        "keeps its devices' (the broker sends each message to every worker); `shared`: "
        "one MQTT shared subscription, the broker hands each message to one worker (see "
        "docs/ingest-robustness.md for what Mosquitto 2.0 loses of it on its restart)")
    ingest_session_expiry_s: int = Field(7 * 86400, ge=60,
                                         description="how long the broker queues for a worker that"
                                                     " is away")
    ingest_max_messages: int = Field(1000, ge=1, description="messages per transaction")
    ingest_max_wait_ms: int = Field(100, ge=0, description="longest a message waits for others to "
                                                           "share its transaction")
    ingest_poison_attempts: int = Field(
        3, ge=1, description="starts alone of a redelivered message (counted in the "
                             "database) after which it is kept as a reject (reason poison) "
                             "unread")
    ingest_stall_after_s: float = Field(
        30.0, gt=0, description="a partition that has not committed for this long while "
                                "messages wait is stalled (/healthz answers 503)")


class RetentionGroup(BaseModel):
    """How long data is kept (0 keeps forever)."""

    retention_readings_days: int = Field(400, ge=0, description="raw readings kept (0: forever)")
    retention_rollup_5m_days: int = Field(800, ge=0, description="5-minute rollups")
    retention_rollup_1h_days: int = Field(0, ge=0, description="hourly rollups kept (0: forever)")
    retention_rejects_days: int = Field(90, ge=0, description="rejected messages and their "
                                        "reasons")
    retention_batches_days: int = Field(30, ge=0, description="how long re-deliveries "
                                        "are recognised by (device, seq)")
    retention_interval_s: int = Field(3600, ge=10, description="how often retention runs")
    compress_after_days: int = Field(7, ge=1, description="compress older readings chunks "
                                     "(only where timescaledb.license allows)")


class DetectGroup(BaseModel):
    detect_rules: Path | None = Field(
        None, description="a YAML file merged over the bundled detection rules (`rules` replace, "
                          "`sites` override per site)")
    detect_lag_s: float = Field(
        30.0, ge=0, le=3600, description="readings younger than this are left for the next "
                                         "step, so batches still in flight land first")
    detect_slice_s: int = Field(
        60, ge=1, le=3600, description="the timeline is cut every this many seconds: rules, "
                                       "silence checks and alert updates run at each cut")
    detect_step_minutes: float = Field(
        60.0, gt=0, le=1440, description="most data time the detector scores in one transaction")
    detect_max_rows: int = Field(1_000_000, ge=1000, description="most readings in one step (the "
                                                                 "window halves until it fits)")
    detect_poll_s: float = Field(5.0, gt=0, le=600, description="the detector's wait when caught "
                                                                "up")
    detect_overlap_s: float = Field(
        600.0, ge=0, le=86400, description="re-read this far behind the watermark for "
                                           "readings that arrived late")
    detect_late_days: float = Field(
        7.0, ge=0, le=400, description="series silent behind the watermark are probed this "
                                       "far back for backlogs delivered late")
    detect_late_scan_s: float = Field(60.0, gt=0, description="how often to probe")
    detect_history_days: float = Field(
        7.0, ge=0, le=400, description="a detector's first start scores stored history this far "
                                       "back")
    detect_threshold: float = Field(
        0.5, gt=0, le=1, description="readings scoring at least this are stored anomalies")
    detect_rules_poll_s: float = Field(
        15.0, gt=0, le=60, description="how often a running detector looks for changed live "
                                       "rules (API, `tidefield rules`); a change applies "
                                       "within this")
    detect_update_every_s: float = Field(
        600.0, ge=0, description="an open alert's 'updated' event (history, MQTT) at most "
                                 "this often in data time; the row itself every step")



class NotifyGroup(BaseModel):
    """The notifier (tidefield.server.notify): who is told of alerts, and how fast."""

    notify_poll_s: float = Field(0.2, gt=0, le=60, description="how often the notifier "
                                 "looks for new alert events and due messages")
    notify_batch: int = Field(500, ge=1, le=10_000, description="most alert events planned "
                              "in one transaction (one query per batch, not per alert)")
    notify_concurrency: int = Field(16, ge=1, le=256, description="messages in flight per "
                                    "contact (one alert's messages always go one by one)")
    notify_timeout_s: float = Field(10.0, gt=0, le=120, description="longest wait for a "
                                    "channel to take one message")
    notify_retry_initial_s: float = Field(2.0, gt=0, le=3600, description="first wait "
                                          "before retrying a message a channel refused")
    notify_retry_max_s: float = Field(120.0, gt=0, le=86_400, description="retries back off "
                                      "(doubling) up to this; a message is never given up")
    notify_tick_s: float = Field(15.0, gt=0, le=3600, description="how often escalations, "
                                 "reminders and digests are checked")
    notify_update_every_minutes: float = Field(
        30.0, ge=0, description="at most one 'updated' message per alert and contact this "
        "often (flapping is held back)")
    notify_incident_minutes: float = Field(
        30.0, ge=0, description="alerts of one rule opening within this long of an "
        "incident's latest site join it (0: no grouping)")
    notify_incident_km: float = Field(30.0, ge=0, description="... and within this distance "
                                      "of one of its sites")
    notify_ack_hours: float = Field(24.0, gt=0, le=24 * 30, description="an acknowledge "
                                    "link works this long (and once)")
    notify_public_url: str = Field(
        "http://127.0.0.1:8080", description="the API as people's phones reach it: the "
        "acknowledge links point there")
    notify_dashboard_url: str = Field(
        "http://127.0.0.1:8501", description="the dashboard as people reach it: messages "
        "link to the site page there")
    notify_robot_gateway: str | None = Field(
        None, description="send WeCom, DingTalk and Feishu/Lark robot calls to this base "
        "URL instead of their public hosts (an egress proxy; the tests' local receiver)")
    notify_max_age_minutes: float = Field(
        60.0, ge=0, description="events older than this (data time) are not news: a "
        "detector scoring stored history opens and closes past alerts (0: no limit)")
    notify_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve the notifier's Prometheus metrics on "
        "127.0.0.1 at this port (sent, failed by channel, send time)")
    notify_config: Path | None = Field(
        None, description="a YAML file of contacts, groups and routes loaded at start "
        "(`tidefield notify load` does the same)")


class SignInGroup(BaseModel):
    """People signing in to the API and the dashboards (tidefield.server.security)."""

    session_hours: float = Field(12.0, gt=0, le=24 * 90,
                                 description="a session ends this long after sign-in")
    session_idle_minutes: float = Field(60.0, gt=0, le=24 * 60 * 90,
                                        description="a session unused this long ends")
    sign_in_account_failures: int = Field(
        10, ge=1, le=1000, description="failed sign-ins of one user name within the window "
        "that lock it")
    sign_in_address_failures: int = Field(
        100, ge=1, le=100_000, description="failed sign-ins from one address within the "
        "window that lock the address")
    sign_in_window_minutes: float = Field(15.0, gt=0, le=24 * 60,
                                          description="how long failures are counted")
    sign_in_lock_minutes: float = Field(15.0, gt=0, le=24 * 60,
                                        description="how long a lock lasts")
    trusted_proxies: list[str] = Field(
        ["127.0.0.1", "::1"], description="addresses whose X-Forwarded-For is believed "
        "(the dashboards, a reverse proxy): the first address there is the caller's")
    session_cookie_secure: bool = Field(
        False, description="the session cookie only over HTTPS (on with TLS or behind an "
        "HTTPS proxy)")
    api_public_url: str | None = Field(
        None, description="the API's URL as browsers reach it, for single sign-on's "
        "return address (default: the URL of the request)")
    sso_return_origins: list[str] = Field(
        ["http://127.0.0.1:8501", "http://localhost:8501"], description="where single "
        "sign-on may send the browser back to (the dashboards' scheme://host:port)")


class StaGroup(BaseModel):
    sta_statement_timeout_s: float = Field(
        15.0, gt=0, le=600, description="longest SensorThings query; longer ones are "
        "refused (400) with advice to narrow them")


class FleetGroup(BaseModel):
    """What the API hands to an agent it provisions (``api/routes/fleet.py``)."""

    device_broker_url: str | None = Field(
        None, description="the broker as agents in the field reach it, written into the "
        "agent config a provisioning hands out (default: TIDEFIELD_MQTT_URL without its "
        "login)")

    @field_validator("device_broker_url")
    @classmethod
    def _device_broker_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("must look like mqtt://host:port or mqtts://host:port")
            if parts.username or parts.password:
                raise ValueError("must not hold a login: each agent gets its own")
        return value


class UpGroup(BaseModel):
    """What `tidefield up` runs besides the services."""

    up_backfill_days: float = Field(7.0, ge=0, le=400,
                                    description="simulated history `tidefield up` writes at start "
                                                "(`--backfill-days`)")
    up_fleet: bool = Field(True, description="stream the simulated fleet live")
    up_dashboard: bool = Field(True, description="run the dashboard")
    up_detector: bool = Field(True, description="run the anomaly detector")
    up_lock_wait_s: float = Field(
        120.0, ge=0, le=3600,
        description="how long `tidefield up` waits for another instance in the same data "
                    "folder (one still stopping) to let go before refusing to start")
    up_notify: bool = Field(True, description="run the notifier with a local webhook sink "
                                              "(`--no-notify`)")
    up_notify_sink_port: int = Field(8091, ge=1, le=65535, description="the local webhook "
                                     "sink's port (it prints each notification)")
    up_control: bool = Field(True, description="run the control service (configuration and "
                                               "commands to devices)")


# --- one class per process ----------------------------------------------------------------

class ServerSettings(DatabaseGroup, BrokerGroup, DataDirGroup, TlsGroup, LoggingGroup,
                     ProcessSettings):
    """What every server process reads: where the database and broker are, the data
    folder, TLS and logins, logging."""


class AdminSettings(ServerSettings):
    """`tidefield db`, `registry`, `keys`, `devices`: the operator's one-off commands."""


class IngestSettings(IngestAddressGroup, IngestGroup, IngestWorkerGroup, RetentionGroup,
                     ServerSettings):
    """`tidefield ingest`: MQTT and HTTP telemetry into the database; retention."""


class ApiSettings(ApiAddressGroup, IngestGroup, StaGroup, SignInGroup, ReadDatabaseGroup,
                  BackupGroup, FleetGroup, ServerSettings):
    """`tidefield api`: the HTTP API (which also takes HTTP ingest) and sign-in; its
    /metrics tells of backups, WAL archiving, the replica's lag and the disks."""


class DetectorSettings(DetectGroup, ServerSettings):
    """`tidefield detect run`: scores readings, keeps alerts, publishes their changes."""


class NotifierSettings(NotifyGroup, ServerSettings):
    """`tidefield notify run`: tells people of alert changes (WeCom, DingTalk, Feishu,
    mail, SMS, webhooks), escalates, reminds, groups incidents."""


class OpsSettings(EmbeddedGroup, BackupGroup, ReplicaGroup, ReadDatabaseGroup,
                  ServerSettings):
    """`tidefield backup`, `restore`, `replica`: backups, restores and the read replica."""


class UpSettings(EmbeddedGroup, ApiAddressGroup, IngestAddressGroup, DashboardAddressGroup,
                 UpGroup, BackupGroup, ReplicaGroup, SimulatedFleetGroup, ServerSettings):
    """`tidefield up` (and `status`): the whole platform on one machine. Its children build
    their own settings from the environment it gives them."""
