"""Device identity and access: who may connect to the broker and what each may do there,
the files Mosquitto reads to enforce it, and TLS.

- ``passwords``: Mosquitto's PBKDF2-SHA512 password hashes, computed in Python.
- ``accounts``: broker logins of devices and platform services (stored hashed in
  ``mqtt_credentials``) and the access rules of each, least privilege.
- ``broker_files``: the password and ACL files generated from the database, and the
  SIGHUP that makes a running Mosquitto re-read them.
- ``tls``: a local certificate authority and server certificate for development, or the
  operator's own files in production.
"""
