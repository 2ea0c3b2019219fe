"""The errors of ``tidefield.server.ops``: one base, its message written for the operator
(what failed, and what to do), printed by the command as it is."""

from __future__ import annotations


class OpsError(RuntimeError):
    """A backup, restore, check or replica step failed; ``str()`` says why and what to do."""


class ToolFailed(OpsError):
    """A tool we drive (pgBackRest, pg_basebackup) exited with an error: ``command`` is
    what ran, ``code`` its exit status, the message its own words."""

    def __init__(self, command: str, code: int, message: str) -> None:
        super().__init__(f"{command} failed (exit {code}): {message}")
        self.command = command
        self.code = code


class CheckFailed(OpsError):
    """A restore check found a difference (or could not compare): the repository, or the
    backup in it, cannot be trusted as it is."""
