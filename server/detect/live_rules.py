"""Live rules: the per-site and per-kind changes stored in ``rule_overrides``, the top
layer over the bundled ``rules.yaml`` (and the file named by ``TIDEFIELD_DETECT_RULES``).

One place for what the API (``/api/v1/rules``), ``tidefield rules`` and the detector
service share: reading the layer over a rule set, and changing it (checked against the
rule schema, versioned, audited with what it replaced).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import psycopg

from tidefield.server.security import audit
from tidefield.server.security.api_keys import Principal

from . import store
from .rules import RulesError, RuleSet

log = logging.getLogger(__name__)

Scope = Literal["site", "kind"]
RuleChanges = dict[str, dict[str, Any]]  # rule name -> fields


def ruleset(conn: psycopg.Connection, base: RuleSet) -> RuleSet:
    """``base`` with every stored change. One the rules no longer take (a rules file
    changed since it was stored) is left out with an error; the others apply."""
    merged = base
    for override in store.current_overrides(conn):
        sites, kinds = store.live_changes([override])
        try:
            merged = merged.with_changes(sites, kinds)
        except RulesError as exc:
            log.error("live rules left out", extra={
                "scope": override.scope, "target": override.target,
                "version": override.version, "error": str(exc)})
    return merged


def current(conn: psycopg.Connection, scope: Scope, target: str) -> store.RuleOverride | None:
    history = store.override_history(conn, scope, target)
    return history[0] if history else None


def change(conn: psycopg.Connection, base: RuleSet, scope: Scope, target: str,
           rules: RuleChanges, *, actor: Principal | str, source_address: str | None = None,
           site_id: str | None = None) -> store.RuleOverride:
    """Replace the changes of one site or kind with ``rules`` ({} removes them): checked
    as the whole stored layer over ``base`` with this target's replaced (RulesError says
    what is wrong), stored as the next version and audited, in one transaction."""
    with conn.transaction():
        # one writer per target at a time, so versions follow each other
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                     (f"rules:{scope}:{target}",))
        before = current(conn, scope, target)
        sites, kinds = store.live_changes(store.current_overrides(conn))
        (sites if scope == "site" else kinds)[target] = rules
        base.with_changes(sites, kinds)
        saved = store.save_override(conn, scope, target, rules,
                                    actor.name if isinstance(actor, Principal) else actor)
        audit.record(conn, actor=actor, action="rules.changed", target=f"{scope}:{target}",
                     before={"version": before.version if before else 0,
                             "rules": before.rules if before else {}},
                     after={"version": saved.version, "rules": saved.rules},
                     source_address=source_address, site_id=site_id)
    return saved
