"""Mosquitto's password hashes, computed in Python so that no plaintext is ever written.

Mosquitto 2.0 (``mosquitto_passwd``, and its broker when it reads ``password_file``)
uses ``$7$<iterations>$<salt base64>$<PBKDF2-HMAC-SHA512 base64>`` with a 12-byte salt
and, by default, 101 iterations; the broker takes the iteration count from each line.
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


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (Mosquitto's check, in Python)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        raise ValueError("not a Mosquitto $7$ (PBKDF2-SHA512) hash")
    salt, expected = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)
