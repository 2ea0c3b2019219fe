"""TLS for the broker and the HTTP services: the operator's certificate files in
production, or a local certificate authority made on first use for development.

``ensure_dev_pki(directory)`` writes, once (later calls reuse what is there):

    ca.pem       the development CA's certificate: what edge agents and services trust
    ca.key       its private key (mode 0600; signs the server certificate)
    server.pem   the server certificate, signed by the CA, for localhost, 127.0.0.1,
                 ::1 and this machine's host name (plus any ``hosts`` given)
    server.key   its private key (mode 0600)

A client verifies the server against ``ca.pem`` and the name it connected to; a server
certificate from any other CA is refused (tests/integration/test_security.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the module loads without cryptography's cost
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

DEV_CA_DAYS = 3650
DEV_SERVER_DAYS = 825  # the longest validity clients such as Apple's accept


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path | None  # what clients trust (None: the system's trust store)
    cert_file: Path  # the server's certificate (chain)
    key_file: Path  # the server's private key

    def broker_conf_lines(self) -> list[str]:
        """Options of the (current) Mosquitto listener that make it speak TLS only."""
        return [f"certfile {self.cert_file}", f"keyfile {self.key_file}",
                "tls_version tlsv1.2"]


def _key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_ca(common_name: str = "Tidefield development CA"
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA: (private key, certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tidefield"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DEV_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                      hosts: Sequence[str]
                      ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for ``hosts`` (names or IP addresses), signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # keep order, drop repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DEV_SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def default_hosts() -> list[str]:
    return ["localhost", "127.0.0.1", "::1", socket.gethostname()]


def ensure_dev_pki(directory: Path, hosts: Sequence[str] = ()) -> TlsFiles:
    """The development CA and server certificate in ``directory``, made if missing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_key_file = directory / "ca.key"
    assert files.ca_file is not None  # the development CA's files always name it
    if files.ca_file.exists() and ca_key_file.exists():
        ca_cert = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_file} is not the EC key this CA makes")
        ca_key = loaded
    else:
        ca_key, ca_cert = make_ca()
        _write_key(ca_key_file, ca_key)
        _write_cert(files.ca_file, ca_cert)
        files.cert_file.unlink(missing_ok=True)  # signed by the CA just replaced
    if not (files.cert_file.exists() and files.key_file.exists()):
        key, cert = issue_server_cert(ca_key, ca_cert, [*default_hosts(), *hosts])
        _write_key(files.key_file, key)
        _write_cert(files.cert_file, cert)
    return files
