"""Mosquitto's password hashes, computed in Python so that no plaintext is ever written.

Mosquitto 2.0 hashes passwords one way, PBKDF2-HMAC-SHA512 over a 12-byte salt, by
default with 101 iterations, and writes it in two forms:

- ``mosquitto_passwd`` (``password_file``): ``$7$<iterations>$<salt b64>$<hash b64>``;
- the dynamic-security plugin's JSON config: ``"iterations"``, ``"salt"`` and
  ``"password"`` (the same base64 salt and hash; plugins/dynamic-security/auth.c and
  clients.c, 2.0.11).

The database keeps the ``$7$`` form (``mqtt_credentials.password_hash``);
``dynsec_fields`` turns it into the plugin's, so hashing happens only here.
``tests/unit/test_security.py`` checks a hash from ``mosquitto_passwd`` verifies here,
and the integration tests log in to a real broker with hashes made here.

Our passwords are 32 random bytes (``new_secret``): nobody can guess them, so key
stretching would buy nothing but slower logins after a broker restart, when every device
reconnects at once. We keep Mosquitto's own default count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

ITERATIONS = 101
SALT_BYTES = 12


def new_secret() -> str:
    """A password for a device or service: 256 bits, URL- and YAML-safe."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = ITERATIONS,
                  salt: bytes | None = None) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def _parts(hashed: str) -> tuple[int, str, str]:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    return int(parts[2]), parts[3], parts[4]


def dynsec_fields(hashed: str) -> dict[str, object]:
    """A ``$7$`` hash as the dynamic-security plugin's client fields."""
    iterations, salt, digest = _parts(hashed)
    return {"password": digest, "salt": salt, "iterations": iterations}


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (Mosquitto's check, in Python)."""
    iterations, salt_b64, expected_b64 = _parts(hashed)
    salt, expected = base64.b64decode(salt_b64), base64.b64decode(expected_b64)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)
