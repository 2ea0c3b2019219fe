"""Identity and access: who may call the HTTP API, who may connect to the broker and what
each may do there, the files Mosquitto reads to enforce it, and TLS.

- ``api_keys``: API keys of the HTTP API and HTTP ingest (``Principal``, ``Scope``),
  created and revoked by ``tidefield keys``; both FastAPI apps depend on them.
- ``passwords``: Mosquitto's PBKDF2-SHA512 password hashes, computed in Python.
- ``accounts``: broker logins of devices and platform services (stored hashed in
  ``mqtt_credentials``) and the roles and access rules of each, least privilege.
- ``dynsec``: Mosquitto's dynamic-security plugin: its config generated from the
  database, and changes applied to a running broker through its API (``control``).
- ``tls``: a local certificate authority and server certificate for development, or the
  operator's own files in production.
"""
