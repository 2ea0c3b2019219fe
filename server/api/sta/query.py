"""Runs SensorThings requests as SQL and shapes the JSON.

Two query shapes, one per kind of set:

* the small sets (Things, Locations, Datastreams, Sensors, ObservedProperties) select from
  their registry ``base`` (alias ``e``) with the compiled $filter, a keyset condition from
  $skiptoken, ORDER BY the (completed, unique) $orderby, LIMIT and OFFSET;
* Observations join the visible series (alias ``e``) LATERAL to their readings (alias
  ``r``): each series contributes at most as many rows as the page needs, taken in index
  order from ``readings (series_id, time DESC)``, and the outer ORDER BY merges them. So
  a page costs an index range scan per series it touches, whatever the table's size, and
  the next page starts where the last ended (keyset), never by counting rows again.

An expansion ($expand) runs one query per navigation and level for all parents together
(``ANY(parents)``, a window per parent for the small sets, the same LATERAL per series
for Observations), then attaches the children to their parents.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg.rows import dict_row

from tidefield.server.db import scalar

from .entities import (
    DATASTREAMS,
    ENTITY_SETS,
    EPOCH,
    OBSERVATION_SERIES,
    OBSERVATIONS,
    EntitySet,
    Navigation,
    iso,
    observation_id,
)
from .errors import StaError
from .filter import Params, Type, bind, compile_expr, conjuncts, parse_time, properties_of
from .options import Options, OrderKey, encode_skiptoken

_INT4_MAX = 2 ** 31 - 1
# An Observation's id and times, formatted by PostgreSQL: a page of 1,000 costs no Python
# date arithmetic (ids need whole milliseconds, which is what ingest stores).
_OBSERVATION = ("e.series_id, r.time, r.value, "
                "(extract(epoch FROM r.time) * 1000)::bigint AS ms, "
                "to_char(r.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS iso")
_PLAIN_KEY = re.compile(r"[\w\-.~:@,]*\Z", re.ASCII)
_NAVIGATION_LINK = "@iot.navigationLink"


@dataclass
class Context:
    conn: psycopg.Connection
    sites: list[str] | None  # the key's site limit; None: every site
    root: str  # absolute URL of the service root, ".../sta/v1.1"


# ---------------------------------------------------------------------------- keys and links

def format_key(entity_set: EntitySet, key: object) -> str:
    if entity_set.key_type is Type.NUMBER:
        return str(key)
    if _PLAIN_KEY.match(str(key)):  # the common case, and a hot path for Observations
        return f"'{key}'"
    return quote("'" + str(key).replace("'", "''") + "'", safe="'-_.~:@,!$*+;=")


def parse_key(entity_set: EntitySet, text: str) -> object:
    """The key inside ``Set(...)``: 42 for numeric sets, 'quoted' (with '' for ') else."""
    text = text.strip()
    if entity_set.key_type is Type.NUMBER:
        if not text.isascii() or not text.isdigit():
            raise StaError(f"{entity_set.name} ids are integers: {entity_set.name}(42)")
        return int(text)
    if len(text) < 2 or text[0] != "'" or text[-1] != "'":
        raise StaError(f"{entity_set.name} ids are quoted strings: {entity_set.name}('...')")
    return text[1:-1].replace("''", "'")


def self_link(ctx: Context, entity_set: EntitySet, key: object) -> str:
    return f"{ctx.root}/{entity_set.name}({format_key(entity_set, key)})"


def entity_key(entity_set: EntitySet, row: dict) -> object:
    if entity_set is OBSERVATIONS:
        return observation_id(row["series_id"], row["ms"])
    return row["id"]


def query_string(given: dict[str, str]) -> str:
    # %20 rather than +: a nextLink is opaque to clients, but it should read like the spec
    return urlencode(given, quote_via=quote, safe="$',()/:")


# ---------------------------------------------------------------------------- SQL pieces

@dataclass
class _Sql:
    """Conditions and parameters of one query being built."""

    params: Params
    outer: list[str]  # on e (Observations: before the LATERAL join)
    inner: list[str]  # on r (Observations only: inside the LATERAL join)

    def values(self, **more: Any) -> dict:
        return {**self.params.values, **more}


def _start(ctx: Context, entity_set: EntitySet, options: Options) -> _Sql:
    sql = _Sql(Params(), [], [])
    sql.params.values["sites"] = ctx.sites
    if options.filter is not None:
        for term in conjuncts(options.filter):
            compiled = compile_expr(term, entity_set.columns, sql.params).sql
            reads = any(entity_set.columns[p].sql.startswith("r.")
                        for p in properties_of(term) if p in entity_set.columns)
            (sql.inner if reads else sql.outer).append(compiled)
    return sql


def _order_sql(keys: Sequence[OrderKey]) -> str:
    return ", ".join(f"{k.column.sql} {'DESC' if k.desc else 'ASC'}" for k in keys)


def _token_values(keys: Sequence[OrderKey], values: list) -> list:
    """A $skiptoken's values, checked against the order they continue."""
    if len(values) != len(keys):
        raise StaError("$skiptoken does not match this request's $orderby")
    out = []
    for key, value in zip(keys, values, strict=True):
        type_ = key.column.type
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if type_ is Type.TIME and isinstance(value, str):
            value = parse_time(value)
        elif not ((type_ is Type.NUMBER and number)
                  or (type_ is Type.STRING and isinstance(value, str))):
            raise StaError("$skiptoken does not match this request's $orderby")
        out.append(value)
    return out


def _after(keys: Sequence[OrderKey], values: list, params: Params) -> str:
    """Rows after ``values`` in the order ``keys`` (lexicographic, mixed directions)."""
    alternatives = []
    for i, key in enumerate(keys):
        terms = [f"{k.column.sql} = {bind(params, v, k.column.type)}"
                 for k, v in zip(keys[:i], values[:i], strict=True)]
        op = "<" if key.desc else ">"
        terms.append(f"{key.column.sql} {op} {bind(params, values[i], key.column.type)}")
        alternatives.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(alternatives) + ")"


def _token_for(keys: Sequence[OrderKey], row: dict) -> str:
    values = []
    for key in keys:
        value = row[key.field]
        values.append(value.isoformat() if isinstance(value, datetime) else value)
    return encode_skiptoken(values)


def _where(conditions: list[str]) -> str:
    return " AND ".join(conditions) if conditions else "true"


# ---------------------------------------------------------------------------- fetching

@dataclass
class Page:
    rows: list[dict]
    more: bool  # a row beyond the page exists


def fetch_page(ctx: Context, entity_set: EntitySet, options: Options,
               link: tuple[str, object] | None = None) -> Page:
    """One page of a collection (optionally only rows whose column equals a parent's)."""
    sql = _start(ctx, entity_set, options)
    keys = options.order
    if link is not None:
        sql.outer.append(f"e.{link[0]} = {bind(sql.params, link[1], _link_type(link))}")
    offset = options.skip
    if options.skiptoken is not None:
        values = _token_values(keys, options.skiptoken)
        offset = 0
        _keyset(entity_set, keys, values, sql)
    limit = options.top + 1
    with ctx.conn.cursor(row_factory=dict_row) as cur:
        if entity_set is OBSERVATIONS:
            rows = cur.execute(
                f"""{_observations(sql, keys, "LIMIT %(inner)s")}
                    WHERE {_where(sql.outer)}
                    ORDER BY {_order_sql(keys)} LIMIT %(limit)s OFFSET %(offset)s""",
                sql.values(inner=offset + limit, limit=limit, offset=offset)).fetchall()
        else:
            rows = cur.execute(
                f"""SELECT e.* FROM ({entity_set.base}) e WHERE {_where(sql.outer)}
                    ORDER BY {_order_sql(keys)} LIMIT %(limit)s OFFSET %(offset)s""",
                sql.values(limit=limit, offset=offset)).fetchall()
    return Page(rows[:options.top], len(rows) > options.top)


def _observations(sql: _Sql, keys: Sequence[OrderKey], inner_limit: str) -> str:
    """Observations as each series' readings in a LATERAL (so each series' index scan
    stops at ``inner_limit``), with the conditions that name ``r`` inside it; the caller
    adds the outer WHERE and ORDER BY."""
    inner_keys = [k for k in keys if k.column.sql.startswith("r.")]
    return f"""SELECT {_OBSERVATION} FROM ({OBSERVATION_SERIES}) e
               CROSS JOIN LATERAL (
                   SELECT r.time, r.value FROM readings r
                   WHERE r.series_id = e.series_id AND {_where(sql.inner)}
                   ORDER BY {_order_sql(inner_keys)} {inner_limit}) r"""


def _link_type(link: tuple[str, object]) -> Type:
    return Type.NUMBER if isinstance(link[1], int) else Type.STRING


def _keyset(entity_set: EntitySet, keys: Sequence[OrderKey], values: list,
            sql: _Sql) -> None:
    after = _after(keys, values, sql.params)
    if entity_set is not OBSERVATIONS:
        sql.outer.append(after)
        return
    # The exact condition goes inside the LATERAL (it names r); bounds on the leading key
    # let each series' index scan start where the previous page ended.
    sql.inner.append(after)
    first = keys[0]
    op = "<=" if first.desc else ">="
    if first.column.sql.startswith("r."):
        sql.inner.append(f"{first.column.sql} {op} "
                         f"{bind(sql.params, values[0], first.column.type)}")
        return
    sql.outer.append(f"{first.column.sql} {op} {bind(sql.params, values[0], Type.NUMBER)}")
    if len(keys) > 1 and keys[1].column.sql == "r.time":
        second_op = "<=" if keys[1].desc else ">="
        unbounded = "'infinity'" if keys[1].desc else "'-infinity'"
        sql.inner.append(
            f"r.time {second_op} CASE WHEN e.series_id = "
            f"{bind(sql.params, values[0], Type.NUMBER)} "
            f"THEN {bind(sql.params, values[1], Type.TIME)} "
            f"ELSE {unbounded}::timestamptz END")


def count(ctx: Context, entity_set: EntitySet, options: Options,
          link: tuple[str, object] | None = None) -> int:
    sql = _start(ctx, entity_set, options)
    if link is not None:
        sql.outer.append(f"e.{link[0]} = {bind(sql.params, link[1], _link_type(link))}")
    if entity_set is OBSERVATIONS:
        query = f"""SELECT count(*) FROM ({OBSERVATION_SERIES}) e
                    JOIN readings r ON r.series_id = e.series_id
                    WHERE {_where(sql.outer + sql.inner)}"""
    else:
        query = f"SELECT count(*) FROM ({entity_set.base}) e WHERE {_where(sql.outer)}"
    return int(scalar(ctx.conn.execute(query, sql.values())))


def fetch_children(ctx: Context, entity_set: EntitySet, options: Options,
                   column: str, parents: list) -> dict[object, list[dict]]:
    """Up to $skip + $top + 1 children of each parent (``column`` = a parent's value)."""
    sql = _start(ctx, entity_set, options)
    sql.params.values["parents"] = parents
    keys = options.order
    with ctx.conn.cursor(row_factory=dict_row) as cur:
        if entity_set is OBSERVATIONS:
            rows = cur.execute(
                f"""{_observations(sql, keys, "LIMIT %(limit)s OFFSET %(offset)s")}
                    WHERE e.series_id = ANY(%(parents)s) AND {_where(sql.outer)}
                    ORDER BY {_order_sql(keys)}""",
                sql.values(limit=options.top + 1, offset=options.skip)).fetchall()
        else:
            rows = cur.execute(
                f"""SELECT * FROM (
                        SELECT e.*, row_number() OVER (PARTITION BY e.{column}
                                                       ORDER BY {_order_sql(keys)}) AS _rn
                        FROM ({entity_set.base}) e
                        WHERE e.{column} = ANY(%(parents)s) AND {_where(sql.outer)}) x
                    WHERE x._rn > %(offset)s AND x._rn <= %(end)s ORDER BY x._rn""",
                sql.values(offset=options.skip,
                           end=options.skip + options.top + 1)).fetchall()
    grouped: dict[object, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[row[column]].append(row)
    return grouped


def count_children(ctx: Context, entity_set: EntitySet, options: Options, column: str,
                   parents: list) -> dict[object, int]:
    sql = _start(ctx, entity_set, options)
    sql.params.values["parents"] = parents
    if entity_set is OBSERVATIONS:
        query = f"""SELECT e.series_id, count(*) FROM ({OBSERVATION_SERIES}) e
                    JOIN readings r ON r.series_id = e.series_id
                    WHERE e.series_id = ANY(%(parents)s) AND {_where(sql.outer + sql.inner)}
                    GROUP BY 1"""
    else:
        query = f"""SELECT e.{column}, count(*) FROM ({entity_set.base}) e
                    WHERE e.{column} = ANY(%(parents)s) AND {_where(sql.outer)} GROUP BY 1"""
    return dict(ctx.conn.execute(query, sql.values()).fetchall())


def fetch_by_key(ctx: Context, entity_set: EntitySet, key: object) -> dict:
    """One entity the key may see: 404 when there is none, 403 when it is another site's."""
    label = f"{entity_set.name}({format_key(entity_set, key)})"
    if entity_set is OBSERVATIONS:
        return _observation_by_key(ctx, key, label)
    if isinstance(key, int) and key > _INT4_MAX:
        raise StaError(f"no {label}", 404)
    query = f"SELECT e.* FROM ({entity_set.base}) e WHERE e.id = %(key)s"
    with ctx.conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, {"sites": ctx.sites, "key": key}).fetchone()
        if row is not None:
            return row
        if ctx.sites is not None and entity_set.site_column is not None and cur.execute(
                query, {"sites": None, "key": key}).fetchone() is not None:
            raise StaError(f"this key may not read {label}", 403)
    raise StaError(f"no {label}", 404)


def _observation_by_key(ctx: Context, key: object, label: str) -> dict:
    series, _, ms = str(key).partition(":")
    if not (series.isascii() and series.isdigit() and ms.lstrip("-").isascii()
            and ms.lstrip("-").isdigit()) or int(series) > _INT4_MAX:
        raise StaError(f"no {label}", 404)
    site = ctx.conn.execute("SELECT d.site_id FROM series s JOIN devices d "
                            "ON d.id = s.device_id WHERE s.id = %s", (int(series),)).fetchone()
    if site is None:
        raise StaError(f"no {label}", 404)
    if ctx.sites is not None and site[0] not in ctx.sites:
        raise StaError(f"this key may not read {label}", 403)
    try:
        time = EPOCH + timedelta(milliseconds=int(ms))
    except OverflowError:
        raise StaError(f"no {label}", 404) from None
    with ctx.conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_OBSERVATION} FROM (SELECT %s::int AS series_id) e "
                          "JOIN readings r ON r.series_id = e.series_id AND r.time = %s",
                          (int(series), time)).fetchone()
    if row is None:
        raise StaError(f"no {label}", 404)
    return row


def _add_phenomenon_times(ctx: Context, rows: list[dict]) -> None:
    """A Datastream's phenomenonTime: its first and last reading, two index probes."""
    ids = [r["id"] for r in rows]
    if not ids:
        return
    spans = dict((i, (f, last)) for i, f, last in ctx.conn.execute(
        """SELECT x.id, f.time, l.time FROM unnest(%s::int[]) x(id)
           LEFT JOIN LATERAL (SELECT time FROM readings WHERE series_id = x.id
                              ORDER BY time ASC LIMIT 1) f ON true
           LEFT JOIN LATERAL (SELECT time FROM readings WHERE series_id = x.id
                              ORDER BY time DESC LIMIT 1) l ON true""", (ids,)))
    for row in rows:
        first, last = spans.get(row["id"], (None, None))
        row["phenomenon_time"] = f"{iso(first)}/{iso(last)}" if first else None


# ---------------------------------------------------------------------------- JSON

def render(ctx: Context, entity_set: EntitySet, rows: list[dict],
           options: Options) -> list[dict]:
    """Rows as SensorThings entities, with $select applied and $expand resolved."""
    if entity_set is DATASTREAMS and options.wants("phenomenonTime"):
        _add_phenomenon_times(ctx, rows)
    out = []
    for row in rows:
        key = entity_key(entity_set, row)
        link = self_link(ctx, entity_set, key)
        entity = {"@iot.id": key, "@iot.selfLink": link}
        entity.update(entity_set.render(row))
        for name in entity_set.navigations:
            entity[f"{name}{_NAVIGATION_LINK}"] = f"{link}/{name}"
        if options.select is not None:
            entity = {k: v for k, v in entity.items() if _selected(k, options.select)}
        out.append(entity)
    for name, inner in options.expand.items():
        _expand(ctx, entity_set, rows, out, name, inner)
    return out


def _selected(name: str, select: frozenset[str]) -> bool:
    if name.endswith(_NAVIGATION_LINK):  # selecting a navigation property shows its link
        return name.removesuffix(_NAVIGATION_LINK) in select
    return name in select


def _expand(ctx: Context, entity_set: EntitySet, rows: list[dict], out: list[dict],
            name: str, inner: Options) -> None:
    navigation: Navigation = entity_set.navigations[name]
    target = ENTITY_SETS[navigation.target]
    parents = list(dict.fromkeys(r[navigation.source_column] for r in rows))
    if not parents:
        return
    if not navigation.many:
        with ctx.conn.cursor(row_factory=dict_row) as cur:
            found = cur.execute(
                f"SELECT e.* FROM ({target.base}) e WHERE e.{navigation.target_column} "
                f"= ANY(%(parents)s)", {"sites": ctx.sites, "parents": parents}).fetchall()
        rendered = dict(zip((r[navigation.target_column] for r in found),
                            render(ctx, target, found, inner), strict=True))
        for row, entity in zip(rows, out, strict=True):
            child = rendered.get(row[navigation.source_column])
            if child is not None:
                entity[name] = child
        return
    grouped = fetch_children(ctx, target, inner, navigation.target_column, parents)
    counts = (count_children(ctx, target, inner, navigation.target_column, parents)
              if inner.count else {})
    children = [r for p in parents for r in grouped.get(p, [])[:inner.top]]
    rendered_children = iter(render(ctx, target, children, inner))
    by_parent = {p: [next(rendered_children) for _ in grouped.get(p, [])[:inner.top]]
                 for p in parents}
    for row, entity in zip(rows, out, strict=True):
        parent = row[navigation.source_column]
        if inner.count:
            entity[f"{name}@iot.count"] = counts.get(parent, 0)
        entity[name] = by_parent[parent]
        group = grouped.get(parent, [])
        if len(group) > inner.top > 0:
            given = {k: v for k, v in inner.given.items() if k != "$skip"}
            given["$top"] = str(inner.top)
            given["$skiptoken"] = _token_for(inner.order, group[inner.top - 1])
            base = self_link(ctx, entity_set, entity_key(entity_set, row))
            entity[f"{name}@iot.nextLink"] = f"{base}/{name}?{query_string(given)}"


def collection(ctx: Context, entity_set: EntitySet, options: Options, url: str,
               link: tuple[str, object] | None = None) -> dict:
    """A page of a collection: {"@iot.count"?, "value", "@iot.nextLink"?}."""
    page = fetch_page(ctx, entity_set, options, link)
    body: dict = {}
    if options.count:
        body["@iot.count"] = count(ctx, entity_set, options, link)
    body["value"] = render(ctx, entity_set, page.rows, options)
    if page.more and page.rows:
        given = {k: v for k, v in options.given.items() if k != "$skip"}
        given["$top"] = str(options.top)
        given["$skiptoken"] = _token_for(options.order, page.rows[-1])
        body["@iot.nextLink"] = f"{url}?{query_string(given)}"
    return body
