"""System query options ($filter, $top, $skip, $orderby, $select, $expand, $count,
$skiptoken), parsed and checked against the entity set they apply to.

Every problem is a ``StaError`` (400) naming the option: a client learns what to fix.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .entities import ENTITY_SETS, OBSERVATIONS, EntitySet
from .errors import StaError
from .filter import Column, Expr, parse

DEFAULT_TOP = 100  # entities per page when the client gives no $top
MAX_TOP = 1000  # the service-driven page limit: a larger $top is cut to it (as the spec says)
LARGEST_TOP = 2 ** 31 - 1  # a $top beyond this is not a page size but a mistake: 400
MAX_SKIP = 10_000  # $skip pages by OFFSET; further pages follow @iot.nextLink (keyset)
MAX_EXPAND_DEPTH = 3
MAX_EXPANSIONS = 10

OPTIONS = ("$filter", "$top", "$skip", "$orderby", "$select", "$expand", "$count",
           "$skiptoken")
EXPAND_OPTIONS = ("$filter", "$top", "$skip", "$orderby", "$select", "$expand", "$count")
ID_NAMES = ("id", "@iot.id")


@dataclass(frozen=True, slots=True)
class OrderKey:
    path: str
    column: Column
    desc: bool

    @property
    def field(self) -> str:
        """The row field holding this key's value (sortable columns are ``alias.name``)."""
        return self.column.sql.split(".", 1)[1]


@dataclass
class Options:
    entity_set: EntitySet
    filter: Expr | None = None
    order: tuple[OrderKey, ...] = ()
    top: int = DEFAULT_TOP
    skip: int = 0
    select: frozenset[str] | None = None
    expand: dict[str, Options] = field(default_factory=dict)
    count: bool = False
    skiptoken: list | None = None
    given: dict[str, str] = field(default_factory=dict)  # the options as written

    def wants(self, name: str) -> bool:
        return self.select is None or name in self.select


def split_top_level(text: str, separator: str, option: str) -> list[str]:
    """Split on ``separator`` outside parentheses and 'quoted strings'."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(text):
        if char == "'":
            quoted = not quoted  # '' inside a string toggles twice: still quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise StaError(f"{option}: unbalanced ')' at position {i}")
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quoted:
        raise StaError(f"{option}: unbalanced parentheses or quotes")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _integer(text: str, option: str, largest: int) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise StaError(f"{option} must be a non-negative integer, not {text!r}")
    value = int(text)
    if value > largest:
        raise StaError(f"{option} must be at most {largest}" + (
            "; follow @iot.nextLink to page further" if option == "$skip" else ""))
    return value


def _order(entity_set: EntitySet, text: str | None) -> tuple[OrderKey, ...]:
    keys: list[OrderKey] = []
    items = split_top_level(text, ",", "$orderby") if text is not None else []
    for item in items:
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2
                                           and words[1].lower() not in ("asc", "desc")):
            raise StaError(f"$orderby: expected 'property [asc|desc]', not {item!r}")
        desc = len(words) == 2 and words[1].lower() == "desc"
        keys += _keys_for(entity_set, words[0], desc)
    if not keys:
        for path, desc in entity_set.default_order:
            keys += _keys_for(entity_set, path, desc)
    # complete to a unique order, so pages neither repeat nor skip an entity
    for path, _ in entity_set.default_order:
        keys += _keys_for(entity_set, path, False)
    unique: dict[str, OrderKey] = {}
    for key in keys:
        unique.setdefault(key.column.sql, key)
    return tuple(unique.values())


def _keys_for(entity_set: EntitySet, path: str, desc: bool) -> list[OrderKey]:
    if entity_set is OBSERVATIONS and path in ID_NAMES:
        return [OrderKey(p, entity_set.columns[p], desc)
                for p, _ in OBSERVATIONS.default_order]
    column = entity_set.columns.get(path)
    if column is None or not column.sortable:
        sortable = ", ".join(sorted(p for p, c in entity_set.columns.items() if c.sortable))
        raise StaError(f"$orderby: {entity_set.name} cannot be ordered by {path!r}; "
                       f"by: {sortable}")
    return [OrderKey(path, column, desc)]


def _select(entity_set: EntitySet, text: str) -> frozenset[str]:
    allowed = set(entity_set.properties) | set(entity_set.navigations) | {
        *ID_NAMES, "@iot.selfLink"}
    names = split_top_level(text, ",", "$select")
    for name in names:
        if name not in allowed:
            raise StaError(f"$select: {entity_set.name} has no property {name!r}; "
                           f"it has: {', '.join(sorted(allowed))}")
    return frozenset("@iot.id" if n == "id" else n for n in names)


def _expand(entity_set: EntitySet, text: str, depth: int) -> dict[str, Options]:
    out: dict[str, Options] = {}
    for item in split_top_level(text, ",", "$expand"):
        if not item:
            raise StaError("$expand: empty item")
        inner = None
        if item.endswith(")"):
            opening = item.find("(")
            if opening < 0:
                raise StaError(f"$expand: unbalanced parentheses in {item!r}")
            item, inner = item[:opening].strip(), item[opening + 1:-1]
        path = item.split("/")
        _expand_path(entity_set, path, inner, out, depth)
    if len(out) > MAX_EXPANSIONS:
        raise StaError(f"$expand: at most {MAX_EXPANSIONS} navigation properties per level")
    return out


def _expand_path(entity_set: EntitySet, path: list[str], inner: str | None,
                 out: dict[str, Options], depth: int) -> None:
    name = path[0]
    if depth >= MAX_EXPAND_DEPTH:
        raise StaError(f"$expand: nested deeper than {MAX_EXPAND_DEPTH} levels")
    navigation = entity_set.navigations.get(name)
    if navigation is None:
        known = ", ".join(entity_set.navigations)
        raise StaError(f"$expand: {entity_set.name} has no navigation property {name!r}; "
                       f"it has: {known}")
    target = ENTITY_SETS[navigation.target]
    if len(path) == 1:
        given = _inner_options(inner) if inner is not None else {}
        options = parse_options(target, given, depth=depth + 1, allowed=EXPAND_OPTIONS)
        if name in out:  # "Datastreams/Sensor,Datastreams($top=5)": merge the two
            options.expand = {**out[name].expand, **options.expand}
        out[name] = options
        return
    options = out.setdefault(name, parse_options(target, {}, depth=depth + 1))
    _expand_path(target, path[1:], inner, options.expand, depth + 1)


def _inner_options(text: str) -> dict[str, str]:
    given: dict[str, str] = {}
    for part in split_top_level(text, ";", "$expand"):
        key, sep, value = part.partition("=")
        if not sep:
            raise StaError(f"$expand: expected '$option=value', not {part!r}")
        given[key.strip()] = value
    return given


def _skiptoken(text: str) -> list:
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise StaError("$skiptoken is not one this service issued") from exc
    if not isinstance(values, list):
        raise StaError("$skiptoken is not one this service issued")
    return values


def encode_skiptoken(values: list) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_options(entity_set: EntitySet, given: Mapping[str, str], *, depth: int = 0,
                  allowed: tuple[str, ...] = OPTIONS) -> Options:
    for name in given:
        if name not in allowed and name.startswith("$"):
            raise StaError(f"unsupported query option {name}; supported: "
                           f"{', '.join(allowed)}")
    given = {k: v for k, v in given.items() if k in allowed}
    options = Options(entity_set, given=dict(given))
    if "$filter" in given:
        options.filter = parse(given["$filter"])
    options.order = _order(entity_set, given.get("$orderby"))
    if "$top" in given:
        options.top = min(_integer(given["$top"], "$top", LARGEST_TOP), MAX_TOP)
    if "$skip" in given:
        options.skip = _integer(given["$skip"], "$skip", MAX_SKIP)
    if "$select" in given:
        options.select = _select(entity_set, given["$select"])
    if "$expand" in given:
        options.expand = _expand(entity_set, given["$expand"], depth)
    if "$count" in given:
        value = given["$count"].strip().lower()
        if value not in ("true", "false"):
            raise StaError(f"$count must be true or false, not {given['$count']!r}")
        options.count = value == "true"
    if "$skiptoken" in given:
        options.skiptoken = _skiptoken(given["$skiptoken"])
    return options
