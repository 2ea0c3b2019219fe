"""Operations of a running platform: backups and point-in-time restore (pgBackRest, driven
through its own command line), restore checks, the read replica, and the disks.

Every module here drives a tool PostgreSQL operators already trust (pgBackRest,
pg_basebackup, PostgreSQL's own recovery) rather than doing its job again; what is ours
is the wiring: which cluster, which repository, which checks, and what the platform's
other files (broker state, keys) need beside the database.
"""

from .errors import OpsError

__all__ = ["OpsError"]
