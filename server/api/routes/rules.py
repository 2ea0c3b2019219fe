"""Live detection rules: per-site and per-kind changes of the bundled rules, versioned,
and a backtest of proposed changes against the stored history.

A site's rules are its organisation's admins' (``may_act(Scope.ADMIN, site)``); a kind's
apply at every organisation's sites of that kind, so only a platform admin changes them.
Every change is validated against the rule schema (``detect.rules``) and recorded in the
audit log with what it replaced. A running detector picks it up within
``TIDEFIELD_DETECT_RULES_POLL_S``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field

from tidefield.protocol.units import DAY_MS
from tidefield.server.detect import backtest, live_rules, store
from tidefield.server.detect.alerts import Alert
from tidefield.server.detect.live_rules import RuleChanges
from tidefield.server.detect.rules import Changes, RulesError, RuleSet, load_rules
from tidefield.server.security.api_keys import Principal, Scope
from tidefield.server.web.deps import Admin, ConnDep, client_address

from ..models import ERRORS, NOT_FOUND

router = APIRouter(prefix="/rules", tags=["rules"], responses=ERRORS)



class RulesIn(BaseModel):
    rules: RuleChanges = Field(
        description="rule name -> fields to change (e.g. {\"hypoxia\": {\"threshold\": 4.0, "
                    "\"clear\": 4.5}}); {} removes this target's changes",
        examples=[{"hypoxia": {"threshold": 4.0, "clear": 4.5}}])


class RulesOut(BaseModel):
    scope: Literal["site", "kind"]
    target: str
    version: int = Field(description="0: never changed")
    rules: RuleChanges
    changed_at: datetime | None
    changed_by: str | None
    effective: dict[str, dict[str, Any]] = Field(
        description="site: every rule as it applies there (bundled, its kind's and its own "
                    "changes)")


class BacktestIn(BaseModel):
    sites: list[str] = Field(min_length=1, max_length=50)
    days: float = Field(30.0, gt=0, le=90, description="back from the newest reading")
    until: datetime | None = Field(None, description="end of the window (default: now)")
    site_rules: dict[str, RuleChanges] = Field(
        default_factory=dict, description="proposed changes per site (over the current)")
    kind_rules: dict[str, RuleChanges] = Field(
        default_factory=dict, description="proposed changes per kind (platform admins)")


class BacktestAlert(BaseModel):
    site_id: str
    rule: str
    device_id: str | None
    series_id: int | None
    category: str
    severity: str
    opened_ms: int
    closed_ms: int | None
    message: str


class BacktestOut(BaseModel):
    start_ms: int
    end_ms: int
    current: list[BacktestAlert]
    proposed: list[BacktestAlert]
    only_current: list[BacktestAlert] = Field(description="raised now, not with the proposal")
    only_proposed: list[BacktestAlert] = Field(description="raised only with the proposal")


SiteId = Annotated[str, Path(examples=["oc-021"])]
Kind = Annotated[str, Path(examples=["cage_farm"])]


def _site_kind(conn: ConnDep, principal: Principal, site_id: str) -> str:
    row = conn.execute("SELECT kind FROM sites WHERE id = %s", (site_id,)).fetchone()
    if row is None or not principal.may_see(site_id):
        raise HTTPException(404, f"no site {site_id!r}")
    if not principal.may_act(Scope.ADMIN, site_id):
        raise HTTPException(403, f"no admin right on site {site_id}")
    return str(row[0])


def _check_platform_admin(principal: Principal) -> None:
    everywhere = principal.sites is None and principal.acts_on is None
    if not (principal.platform_admin or (principal.may(Scope.ADMIN) and everywhere)):
        raise HTTPException(403, "a kind's rules apply at every organisation's sites: "
                                 "platform admins only")


def _live_ruleset(conn: ConnDep, sites: Changes | None = None,
                  kinds: Changes | None = None) -> RuleSet:
    """The bundled rules with the stored changes, then these (RulesError if bad)."""
    ruleset = live_rules.ruleset(conn, load_rules())
    if sites or kinds:
        ruleset = ruleset.with_changes(sites or {}, kinds or {}, source="proposed rules")
    return ruleset


def _out(conn: ConnDep, scope: Literal["site", "kind"], target: str,
         site_kind: str | None = None) -> RulesOut:
    current = live_rules.current(conn, scope, target)
    effective: dict[str, dict[str, Any]] = {}
    if scope == "site":
        rules = _live_ruleset(conn).for_site(target, site_kind)
        effective = {name: rule.model_dump(mode="json") for name, rule in rules.items()}
    return RulesOut(scope=scope, target=target, version=current.version if current else 0,
                    rules=current.rules if current else {},
                    changed_at=current.changed_at if current else None,
                    changed_by=current.changed_by if current else None, effective=effective)


def _save(conn: ConnDep, principal: Principal, request: Request,
          scope: Literal["site", "kind"], target: str, rules: RuleChanges,
          site_id: str | None) -> None:
    try:
        live_rules.change(conn, load_rules(), scope, target, rules, actor=principal,
                          source_address=client_address(request), site_id=site_id)
    except RulesError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/sites/{site_id}", response_model=RulesOut, responses=NOT_FOUND,
            summary="A site's rule changes and the rules in effect there")
def get_site_rules(site_id: SiteId, conn: ConnDep, principal: Admin) -> RulesOut:
    kind = _site_kind(conn, principal, site_id)
    return _out(conn, "site", site_id, kind)


@router.put("/sites/{site_id}", response_model=RulesOut, responses=NOT_FOUND,
            summary="Replace a site's rule changes (admins of its organisation)")
def put_site_rules(site_id: SiteId, body: RulesIn, conn: ConnDep, principal: Admin,
                   request: Request) -> RulesOut:
    kind = _site_kind(conn, principal, site_id)
    _save(conn, principal, request, "site", site_id, body.rules, site_id)
    return _out(conn, "site", site_id, kind)


@router.get("/kinds/{kind}", response_model=RulesOut, summary="A site kind's rule changes")
def get_kind_rules(kind: Kind, conn: ConnDep, principal: Admin) -> RulesOut:
    _check_platform_admin(principal)
    return _out(conn, "kind", kind)


@router.put("/kinds/{kind}", response_model=RulesOut,
            summary="Replace a site kind's rule changes (platform admins)")
def put_kind_rules(kind: Kind, body: RulesIn, conn: ConnDep, principal: Admin,
                   request: Request) -> RulesOut:
    _check_platform_admin(principal)
    _save(conn, principal, request, "kind", kind, body.rules, None)
    return _out(conn, "kind", kind)


def _alerts(alerts: list[Alert]) -> list[BacktestAlert]:
    return [BacktestAlert(site_id=a.key.site_id, rule=a.key.rule, device_id=a.key.device_id,
                          series_id=a.key.series_key, category=a.category,
                          severity=a.severity, opened_ms=a.opened_ms, closed_ms=a.closed_ms,
                          message=a.message) for a in alerts]


def _identity(a: BacktestAlert) -> tuple[Any, ...]:
    return (a.site_id, a.rule, a.device_id, a.series_id, a.opened_ms, a.closed_ms)


@router.post("/backtest", response_model=BacktestOut, responses=NOT_FOUND,
             summary="Alerts proposed rules would have raised and ended, against the current")
def run_backtest(body: BacktestIn, conn: ConnDep, principal: Admin) -> BacktestOut:
    """Replays the stored readings of the window through the detector (its own replay,
    ``detect.backtest``) with the current rules and with the proposal. Slow on purpose:
    a month of the whole fleet is scored twice."""
    for site_id in {*body.sites, *body.site_rules}:
        _site_kind(conn, principal, site_id)
    if body.kind_rules:
        _check_platform_admin(principal)
    try:
        current = _live_ruleset(conn)
        proposed = _live_ruleset(conn, body.site_rules, body.kind_rules)
    except RulesError as exc:
        raise HTTPException(422, str(exc)) from None
    if body.until is not None:
        end_ms = int(body.until.timestamp() * 1000)
    else:
        newest = conn.execute("SELECT max(bucket) FROM readings_1h").fetchone()
        if newest is None or newest[0] is None:
            raise HTTPException(409, "no stored readings to replay")
        end_ms = store.epoch_ms(newest[0]) + 3_600_000
    start_ms = end_ms - int(body.days * DAY_MS)
    now, then = backtest.replay(conn, set(body.sites), start_ms, end_ms, [current, proposed])
    cur, prop = _alerts(now.alerts), _alerts(then.alerts)
    cur_ids, prop_ids = {_identity(a) for a in cur}, {_identity(a) for a in prop}
    return BacktestOut(start_ms=start_ms, end_ms=end_ms, current=cur, proposed=prop,
                       only_current=[a for a in cur if _identity(a) not in prop_ids],
                       only_proposed=[a for a in prop if _identity(a) not in cur_ids])
