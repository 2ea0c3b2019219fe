"""The one typed settings object of a server process, read once from the environment.

Every variable is ``TIDEFIELD_`` + the field name in capitals (``TIDEFIELD_DATABASE_URL``).
Entry points build it (``Settings()``) and pass it down; no module reads the environment
on its own. The README's configuration table lists every field.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

# Variables that are not a server process's: read by scripts/setup.sh and the tests.
NOT_SETTINGS = frozenset({"TIDEFIELD_VENV", "TIDEFIELD_PG_MAJOR", "TIDEFIELD_PYTHON",
                          "TIDEFIELD_TEST_ARTIFACTS", "TIDEFIELD_UPDATE_SCREENSHOTS"})
# Settings that are gone, and what replaced them. Still set, they would do nothing without a
# word, and an operator would believe them in force (a rate limit, say), so they are an error.
RETIRED = {
    "TIDEFIELD_INGEST_DEVICE_RATE": "TIDEFIELD_INGEST_DEVICE_READINGS_PER_S (the budget is "
                                    "now readings per second of device time, not messages)",
    "TIDEFIELD_INGEST_DEVICE_BURST": "TIDEFIELD_INGEST_DEVICE_BURST_READINGS (in readings, "
                                     "not messages)",
    "TIDEFIELD_BROKER_PID_FILE": "TIDEFIELD_BROKER_ADMIN_URL (changes reach the broker "
                                 "through its dynamic-security API, not SIGHUP)",
}
_warned: set[str] = set()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TIDEFIELD_", extra="ignore")

    database_url: str | None = Field(
        None, description="PostgreSQL with TimescaleDB; unset: `tidefield up` runs its own")
    mqtt_url: str | None = Field(
        None, description="mqtt://[user:password@]host:port; unset: `tidefield up` runs its own")
    data_dir: Path = Field(Path(".tidefield"),
                           description="where embedded services keep their data")
    embedded_pg_port: int = Field(55432, description="port of the embedded PostgreSQL")
    embedded_mqtt_port: int = Field(11883, description="port of the embedded Mosquitto")

    # --- API and dashboard --------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    api_port: int = Field(8080, ge=1, le=65535, description="port of the HTTP API")
    api_workers: int = Field(1, ge=1, le=64, description="API processes")
    dashboard_host: str = Field("127.0.0.1", description="address the dashboard listens on")
    dashboard_port: int = Field(8501, ge=1, le=65535, description="port of the dashboard")

    # --- tidefield up -----------------------------------------------------------------
    up_backfill_days: float = Field(7.0, ge=0, le=400,
                                    description="simulated history written at start")
    up_fleet: bool = Field(True, description="stream the simulated fleet live")
    up_dashboard: bool = Field(True, description="run the dashboard")
    up_detector: bool = Field(True, description="run the anomaly detector")
    sim_seed: int = Field(1, description="seed of the simulated fleet")
    sim_events_per_site: float = Field(
        1.0, ge=0, description="injected real events per site per 30 days")
    sim_faults_per_series: float = Field(
        0.5, ge=0, description="injected sensor faults per series per 30 days")
    sim_tick_s: float = Field(10.0, gt=0, description="seconds between live publications")

    # --- security (tidefield.server.security) -----------------------------------------
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

    # --- ingest -----------------------------------------------------------------------
    ingest_workers: int = Field(2, ge=1, le=64, description="ingest processes")
    ingest_host: str = Field("127.0.0.1", description="address of the ingest HTTP service")
    ingest_port: int = Field(8081, description="port of the ingest HTTP service")
    ingest_strategy: Literal["copy", "staging"] = Field(
        "copy", description="copy: batch idempotency + binary COPY; staging: ON CONFLICT")
    ingest_max_messages: int = Field(1000, ge=1, description="messages per transaction")
    ingest_max_wait_ms: int = Field(100, ge=0, description="longest wait to fill a transaction")
    ingest_receive_maximum: int = Field(2000, ge=1, description="unacknowledged MQTT messages")
    ingest_unknown_devices: Literal["reject", "register"] = Field(
        "reject", description="what to do with telemetry from a device not in the registry")
    ingest_max_payload_bytes: int = Field(256 * 1024, ge=1024)
    ingest_max_readings: int = Field(10_000, ge=1, description="readings per message")
    ingest_max_future_s: int = Field(300, ge=0, description="tolerated device clock lead")
    ingest_max_age_days: int = Field(400, ge=1, description="older readings are refused")
    ingest_device_readings_per_s: float = Field(
        10.0, ge=0, description="readings a device may send per second of its own clock "
        "that its messages cover (or of wall time, if more); 0: no limit")
    ingest_device_burst_readings: int = Field(
        20_000, ge=1, description="readings a device may send at once above that budget "
        "(at least ingest_max_readings)")
    ingest_device_backlog_days: float = Field(
        30.0, ge=0, description="device time before now over which a device's backlog "
        "earns budget (the edge agent's queue keeps 30 days)")
    ingest_session_expiry_s: int = Field(7 * 86400, ge=60,
                                         description="broker keeps queueing this long")
    # --- retention (0 keeps forever) --------------------------------------------------
    retention_readings_days: int = Field(400, ge=0)
    retention_rollup_5m_days: int = Field(800, ge=0)
    retention_rollup_1h_days: int = Field(0, ge=0)
    retention_rejects_days: int = Field(90, ge=0)
    retention_batches_days: int = Field(30, ge=0, description="how long re-deliveries "
                                        "are recognised by (device, seq)")
    retention_interval_s: int = Field(3600, ge=10, description="how often retention runs")
    compress_after_days: int = Field(7, ge=1, description="compress older readings chunks "
                                     "(only where timescaledb.license allows)")

    # --- detection ----------------------------------------------------------------------
    detect_rules: Path | None = Field(
        None, description="YAML merged over the bundled detection rules (per-site overrides)")
    detect_lag_s: float = Field(
        30.0, ge=0, le=3600, description="readings younger than this are left for the next "
                                         "step, so batches still in flight land first")
    detect_slice_s: int = Field(
        60, ge=1, le=3600, description="the timeline is cut every this many seconds: rules, "
                                       "silence checks and alert updates run at each cut")
    detect_step_minutes: float = Field(
        60.0, gt=0, le=1440, description="most data time scored in one transaction")
    detect_max_rows: int = Field(1_000_000, ge=1000, description="most readings in one step")
    detect_poll_s: float = Field(5.0, gt=0, le=600, description="wait when caught up")
    detect_overlap_s: float = Field(
        600.0, ge=0, le=86400, description="re-read this far behind the watermark for "
                                           "readings that arrived late")
    detect_late_days: float = Field(
        7.0, ge=0, le=400, description="series silent behind the watermark are probed this "
                                       "far back for backlogs delivered late")
    detect_late_scan_s: float = Field(60.0, gt=0, description="how often to probe")
    detect_history_days: float = Field(
        7.0, ge=0, le=400, description="a first start scores stored history this far back")
    detect_threshold: float = Field(
        0.5, gt=0, le=1, description="readings scoring at least this are stored anomalies")
    detect_update_every_s: float = Field(
        600.0, ge=0, description="an open alert's 'updated' event (history, MQTT) at most "
                                 "this often in data time; the row itself every step")

    # --- API --------------------------------------------------------------------------
    sta_statement_timeout_s: float = Field(
        15.0, gt=0, le=600, description="longest SensorThings query; longer ones are "
        "refused (400) with advice to narrow them")

    # --- dashboards (they read only through the HTTP API) ----------------------------
    api_url: str = Field("http://127.0.0.1:8080",
                         description="base URL of the HTTP API the dashboards read")
    api_key: SecretStr | None = Field(
        None, description="the dashboards' API key (read scope; operate to acknowledge)")
    api_timeout_s: float = Field(10.0, gt=0, description="dashboards' request timeout")
    dashboard_refresh_s: int = Field(
        30, ge=0, description="auto-refresh of the overview and site pages (0: off)")
    dashboard_language: Literal["zh", "en"] = Field(
        "zh", description="language a new dashboard session starts in")
    dashboard_map_tiles: bool = Field(
        False, description="draw a tile basemap under the bundled outlines (needs internet)")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["text", "json"] = "text"

    def ingest_limits(self):
        from tidefield.protocol.codec import DAY_MS, Limits

        return Limits(max_payload_bytes=self.ingest_max_payload_bytes,
                      max_readings=self.ingest_max_readings,
                      max_future_ms=self.ingest_max_future_s * 1000,
                      max_age_ms=self.ingest_max_age_days * DAY_MS)

    @model_validator(mode="after")
    def _no_stray_variables(self) -> Settings:
        """A retired variable still set is an error; one no setting has (a typo) is
        warned about once per process."""
        names = {name for name in os.environ if name.startswith("TIDEFIELD_")}
        retired = sorted(names & RETIRED.keys())
        if retired:
            raise ValueError("; ".join(f"{name} is no longer read: use {RETIRED[name]}"
                                       for name in retired))
        known = {f"TIDEFIELD_{field.upper()}" for field in type(self).model_fields}
        for name in sorted(names - known - NOT_SETTINGS - _warned):
            _warned.add(name)
            log.warning("%s is set but is no setting of tidefield (misspelt?); ignored", name)
        return self

    @model_validator(mode="after")
    def _burst_fits_a_message(self) -> Settings:
        if self.ingest_device_readings_per_s > 0 and \
                self.ingest_device_burst_readings < self.ingest_max_readings:
            raise ValueError("TIDEFIELD_INGEST_DEVICE_BURST_READINGS must be at least "
                             "TIDEFIELD_INGEST_MAX_READINGS, or a full message could "
                             "never be admitted")
        return self

    @model_validator(mode="after")
    def _cert_and_key(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both TIDEFIELD_TLS_CERT_FILE and TIDEFIELD_TLS_KEY_FILE, "
                             "or neither (a development CA then makes them)")
        return self

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:port")
        return value.rstrip("/")

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return value
