"""From the settings (``ServerSettings``) to the security files a process needs: where the broker's
dynamic-security config is and how to reach the broker's admin API, which certificate a
server presents, which CA a client trusts, and the service logins of the embedded broker
that ``tidefield up`` runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg

from tidefield.server.settings import ServerSettings

from .accounts import SERVICES, provision_service, service_username
from .dynsec import BrokerAccess
from .passwords import verify_password
from .tls import TlsFiles, ensure_dev_pki

ADMIN_ROLE = "admin"


def broker_access(settings: ServerSettings) -> BrokerAccess:
    """The broker's config folder, and its admin login: ``TIDEFIELD_BROKER_ADMIN_URL``, or
    the one ``tidefield up`` wrote for its embedded broker (``logins/admin.url``)."""
    directory = (settings.broker_auth_dir or settings.data_dir / "mosquitto").resolve()
    admin_url = settings.broker_admin_url
    if admin_url is None:
        try:
            admin_url = (directory / "logins" / f"{ADMIN_ROLE}.url").read_text().strip()
        except OSError:
            admin_url = None
    return BrokerAccess(directory, admin_url, client_ca_file(settings))


def dev_pki_dir(settings: ServerSettings) -> Path:
    return settings.data_dir.resolve() / "tls"


def server_tls(settings: ServerSettings) -> TlsFiles | None:
    """The certificate a server presents: the operator's, or the development CA's."""
    if not settings.tls:
        return None
    if settings.tls_cert_file is not None:
        assert settings.tls_key_file is not None  # TlsGroup: both or neither
        return TlsFiles(settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    return ensure_dev_pki(dev_pki_dir(settings))


def client_ca_file(settings: ServerSettings) -> str | None:
    """The CA a client of this process trusts: the configured one, else the development
    CA when there is one, else None (the system's trust store)."""
    if settings.tls_ca_file is not None:
        return str(settings.tls_ca_file)
    dev_ca = dev_pki_dir(settings) / "ca.pem"
    return str(dev_ca) if dev_ca.exists() else None


def device_broker_url(settings: ServerSettings) -> str | None:
    """The broker as agents reach it: ``TIDEFIELD_DEVICE_BROKER_URL``, else the process's
    own broker URL without its login (each agent gets its own)."""
    configured = getattr(settings, "device_broker_url", None)
    if configured:
        return str(configured)
    if not settings.mqtt_url:
        return None
    parts = urlsplit(settings.mqtt_url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, "", "", ""))


@dataclass(frozen=True, slots=True)
class EmbeddedBroker:
    """How to run the embedded broker and how each service logs in to it."""

    files: BrokerAccess
    tls: TlsFiles | None
    service_passwords: dict[str, str] = field(repr=False)

    @property
    def extra_conf(self) -> list[str]:
        return self.files.conf_lines() + (self.tls.broker_conf_lines() if self.tls else [])

    def url(self, role: str, port: int, host: str = "127.0.0.1") -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = service_username(role)
        return f"{scheme}://{user}:{quote(self.service_passwords[role], safe='')}@{host}:{port}"

    def write_service_urls(self, port: int) -> Path:
        """``<role>.url`` files (mode 0600) for the processes run beside ``tidefield up``."""
        folder = self.files.directory / "logins"
        folder.mkdir(mode=0o700, exist_ok=True)
        for role in self.service_passwords:
            fd = os.open(folder / f"{role}.url", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.url(role, port) + "\n")
        return folder


def prepare_embedded_broker(settings: ServerSettings, database_url: str) -> EmbeddedBroker:
    """Service logins (kept from the last run when their secrets still match), the
    dynamic-security config from the database, and the certificate when TLS is on."""
    files = broker_access(settings)
    secrets_dir = files.directory / "logins"
    secrets_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    passwords: dict[str, str] = {}
    with psycopg.connect(database_url) as conn:
        for role in SERVICES:
            passwords[role] = _service_password(conn, role, secrets_dir / role)
        files.write(conn)
    return EmbeddedBroker(files, server_tls(settings), passwords)


def _service_password(conn: psycopg.Connection, role: str, secret_file: Path) -> str:
    row = conn.execute("SELECT password_hash FROM mqtt_credentials WHERE username = %s "
                       "AND revoked_at IS NULL", (service_username(role),)).fetchone()
    try:
        kept = secret_file.read_text().strip()
    except OSError:
        kept = None
    if row is not None and kept and verify_password(kept, row[0]):
        return kept
    password = provision_service(conn, role).password
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password)
    return password
