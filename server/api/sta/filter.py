"""The $filter language (the OData subset SensorThings 1.1 uses), parsed and compiled to SQL.

    parse(text) -> Expr             tokens, then a recursive-descent parser with OData's
                                    precedence: or < and < not < eq ne gt ge lt le
                                    < add sub < mul div mod < unary minus < primary
    compile_expr(expr, columns, params) -> Compiled
                                    SQL text whose every literal is a bound parameter
                                    (``%(f0)s``); properties become the SQL expressions the
                                    entity set lists, so nothing from the URL reaches the
                                    SQL text except through that whitelist.

Supported: comparison (eq ne gt ge lt le), and/or/not, parentheses, add sub mul div mod,
literals (numbers, 'strings' with '' for a quote, true, false, null, ISO 8601 date-times
with a zone, dates), properties and paths (``result``, ``Datastream/id``), and the
functions in ``FUNCTIONS``. Every error is a ``StaError`` (400) saying where and why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from .errors import StaError

MAX_LENGTH = 4000  # characters of one $filter
MAX_DEPTH = 40  # nesting of parentheses, functions and unary operators
MAX_OPERATORS = 100  # binary operators in one $filter


class Type(StrEnum):
    BOOL = "boolean"
    NUMBER = "number"
    STRING = "string"
    TIME = "datetime"
    NULL = "null"


# ---------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_@$][\w@$.]*)
  | (?P<punct>[(),/-])
""", re.VERBOSE)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # time, date, number, string, name, punct, end
    text: str
    at: int


def tokenize(text: str) -> list[Token]:
    tokens, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise StaError(f"$filter: unexpected character {text[at]!r} at position {at}")
        if match.lastgroup != "space":
            tokens.append(Token(match.lastgroup or "", match.group(), at))
        at = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---------------------------------------------------------------------------- syntax tree

@dataclass(frozen=True, slots=True)
class Literal:
    value: object
    type: Type


@dataclass(frozen=True, slots=True)
class Property:
    path: str
    at: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    at: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Expr


Expr = Literal | Property | Call | Binary | Not | Negate

COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
ADDITIVE = {"add": "+", "sub": "-"}
MULTIPLICATIVE = {"mul", "div", "mod"}


def parse_time(text: str) -> datetime:
    """An ISO 8601 date-time with a zone (or a date, taken as midnight UTC), in UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StaError(f"not a valid date-time: {text!r}") from exc
    if value.tzinfo is None:
        if "T" in text:
            raise StaError(f"a date-time needs a zone (Z or +08:00): {text!r}")
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise StaError(f"date-time out of range: {text!r}") from exc


def _number(text: str) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        whole = int(text)
        if -(2 ** 63) <= whole < 2 ** 63:
            return whole
    value = float(text)
    if not math.isfinite(value):
        raise StaError(f"$filter: number out of range: {text}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.depth = 0
        self.operators = 0

    # helpers
    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token.kind == "name" and token.text in words:
            self.pos += 1
            return token.text
        return None

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text or token.kind not in ("punct",):
            raise StaError(f"$filter: expected {text!r} at position {token.at}, "
                           f"found {token.text or 'the end'!r}")

    @contextmanager
    def nested(self) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise StaError(f"$filter: nested deeper than {MAX_DEPTH} levels")
        try:
            yield
        finally:
            self.depth -= 1

    def binary(self, op: str, left: Expr, right: Expr) -> Binary:
        # a chain of operators is a left-deep tree: bounding it bounds the recursion of
        # everything that walks the tree later
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise StaError(f"$filter: more than {MAX_OPERATORS} operators")
        return Binary(op, left, right)

    # grammar
    def parse(self) -> Expr:
        expr = self.or_expr()
        token = self.peek()
        if token.kind != "end":
            raise StaError(f"$filter: unexpected {token.text!r} at position {token.at}")
        return expr

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.keyword("or"):
            left = self.binary("or", left, self.and_expr())
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.keyword("and"):
            left = self.binary("and", left, self.not_expr())
        return left

    def not_expr(self) -> Expr:
        if self.keyword("not"):
            with self.nested():
                return Not(self.not_expr())
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.additive()
        op = self.keyword(*COMPARISONS)
        if op:
            left = self.binary(op, left, self.additive())
            if self.peek().kind == "name" and self.peek().text in COMPARISONS:
                raise StaError(f"$filter: comparisons do not chain (position "
                               f"{self.peek().at}); use and")
        return left

    def additive(self) -> Expr:
        left = self.multiplicative()
        while op := self.keyword(*ADDITIVE):
            left = self.binary(op, left, self.multiplicative())
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while op := self.keyword(*MULTIPLICATIVE):
            left = self.binary(op, left, self.unary())
        return left

    def unary(self) -> Expr:
        token = self.peek()
        if token.kind == "punct" and token.text == "-":
            self.take()
            with self.nested():
                return Negate(self.unary())
        return self.primary()

    def primary(self) -> Expr:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            with self.nested():
                expr = self.or_expr()
            self.expect(")")
            return expr
        if token.kind == "number":
            return Literal(_number(token.text), Type.NUMBER)
        if token.kind == "string":
            return Literal(token.text[1:-1].replace("''", "'"), Type.STRING)
        if token.kind in ("time", "date"):
            return Literal(parse_time(token.text), Type.TIME)
        if token.kind == "name":
            lowered = token.text
            if lowered in ("true", "false"):
                return Literal(lowered == "true", Type.BOOL)
            if lowered == "null":
                return Literal(None, Type.NULL)
            if self.peek().text == "(" and self.peek().kind == "punct":
                return self.call(token)
            return self.path(token)
        raise StaError(f"$filter: unexpected {token.text or 'end'!r} at position {token.at}")

    def call(self, name: Token) -> Expr:
        self.expect("(")
        args: list[Expr] = []
        with self.nested():
            if self.peek().text != ")":
                args.append(self.or_expr())
                while self.peek().text == "," and self.peek().kind == "punct":
                    self.take()
                    args.append(self.or_expr())
        self.expect(")")
        return Call(name.text, tuple(args), name.at)

    def path(self, first: Token) -> Expr:
        parts = [first.text]
        while self.peek().text == "/" and self.peek().kind == "punct":
            self.take()
            token = self.take()
            if token.kind != "name":
                raise StaError(f"$filter: expected a property name after '/' at position "
                               f"{token.at}")
            parts.append(token.text)
        return Property("/".join(parts), first.at)


def parse(text: str) -> Expr:
    if len(text) > MAX_LENGTH:
        raise StaError(f"$filter is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise StaError("$filter is empty")
    return _Parser(text).parse()


def conjuncts(expr: Expr) -> list[Expr]:
    """The terms of a top-level chain of ``and`` (so each can go where it filters best)."""
    if isinstance(expr, Binary) and expr.op == "and":
        return conjuncts(expr.left) + conjuncts(expr.right)
    return [expr]


def properties_of(expr: Expr) -> set[str]:
    if isinstance(expr, Property):
        return {expr.path}
    if isinstance(expr, Call):
        return set().union(*(properties_of(a) for a in expr.args)) if expr.args else set()
    if isinstance(expr, Binary):
        return properties_of(expr.left) | properties_of(expr.right)
    if isinstance(expr, Not | Negate):
        return properties_of(expr.operand)
    return set()


# ---------------------------------------------------------------------------- compilation

@dataclass(frozen=True, slots=True)
class Column:
    """A property an entity set lets $filter and $orderby use: its SQL and its type."""

    sql: str
    type: Type
    sortable: bool = True


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    type: Type


@dataclass
class Params:
    """Bound values of one query, named so they mix with the query's own parameters."""

    values: dict[str, object] = field(default_factory=dict)

    def add(self, value: object, cast: str) -> str:
        name = f"f{len(self.values)}"
        self.values[name] = value
        return f"%({name})s::{cast}"


_CASTS = {Type.NUMBER: "float8", Type.STRING: "text", Type.TIME: "timestamptz",
          Type.BOOL: "boolean"}


def bind(params: Params, value: object, type_: Type) -> str:
    if type_ is Type.NULL:
        return "NULL"
    if type_ is Type.NUMBER and isinstance(value, int):
        return params.add(value, "bigint")
    return params.add(value, _CASTS[type_])


def _utc_part(part: str) -> Callable[[str], str]:
    return lambda t: f"extract({part} FROM ({t}) AT TIME ZONE 'UTC')"


@dataclass(frozen=True, slots=True)
class Function:
    args: tuple[Type, ...]
    returns: Type
    sql: Callable[..., str]


# OData's canonical functions that are cheap to offer; each compiles to one SQL expression.
FUNCTIONS: Mapping[str, Function] = {
    "startswith": Function((Type.STRING, Type.STRING), Type.BOOL,
                           lambda a, b: f"starts_with({a}, {b})"),
    "endswith": Function((Type.STRING, Type.STRING), Type.BOOL,
                         lambda a, b: f"(right({a}, char_length({b})) = {b})"),
    "substringof": Function((Type.STRING, Type.STRING), Type.BOOL,
                            lambda a, b: f"(strpos({b}, {a}) > 0)"),
    "contains": Function((Type.STRING, Type.STRING), Type.BOOL,
                         lambda a, b: f"(strpos({a}, {b}) > 0)"),
    "indexof": Function((Type.STRING, Type.STRING), Type.NUMBER,
                        lambda a, b: f"(strpos({a}, {b}) - 1)"),
    "length": Function((Type.STRING,), Type.NUMBER, lambda a: f"char_length({a})"),
    "tolower": Function((Type.STRING,), Type.STRING, lambda a: f"lower({a})"),
    "toupper": Function((Type.STRING,), Type.STRING, lambda a: f"upper({a})"),
    "trim": Function((Type.STRING,), Type.STRING, lambda a: f"btrim({a})"),
    "concat": Function((Type.STRING, Type.STRING), Type.STRING,
                       lambda a, b: f"({a} || {b})"),
    "year": Function((Type.TIME,), Type.NUMBER, _utc_part("year")),
    "month": Function((Type.TIME,), Type.NUMBER, _utc_part("month")),
    "day": Function((Type.TIME,), Type.NUMBER, _utc_part("day")),
    "hour": Function((Type.TIME,), Type.NUMBER, _utc_part("hour")),
    "minute": Function((Type.TIME,), Type.NUMBER, _utc_part("minute")),
    "second": Function((Type.TIME,), Type.NUMBER,
                       lambda t: f"floor(extract(second FROM ({t}) AT TIME ZONE 'UTC'))"),
    "now": Function((), Type.TIME, lambda: "now()"),
    "round": Function((Type.NUMBER,), Type.NUMBER, lambda a: f"round(({a})::float8)"),
    "floor": Function((Type.NUMBER,), Type.NUMBER, lambda a: f"floor(({a})::float8)"),
    "ceiling": Function((Type.NUMBER,), Type.NUMBER, lambda a: f"ceiling(({a})::float8)"),
}

_ARITHMETIC = {
    "add": lambda a, b: f"(({a})::float8 + ({b})::float8)",
    "sub": lambda a, b: f"(({a})::float8 - ({b})::float8)",
    "mul": lambda a, b: f"(({a})::float8 * ({b})::float8)",
    # division by zero is null (so false), as OData leaves it undefined
    "div": lambda a, b: f"(({a})::float8 / NULLIF(({b})::float8, 0))",
    "mod": lambda a, b: f"mod(({a})::numeric, NULLIF(({b})::numeric, 0))",
}


class _Compiler:
    def __init__(self, columns: Mapping[str, Column], params: Params) -> None:
        self.columns = columns
        self.params = params

    def compile(self, expr: Expr) -> Compiled:
        if isinstance(expr, Literal):
            return Compiled(bind(self.params, expr.value, expr.type), expr.type)
        if isinstance(expr, Property):
            column = self.columns.get(expr.path)
            if column is None:
                known = ", ".join(sorted(self.columns))
                raise StaError(f"$filter: unknown property {expr.path!r} at position "
                               f"{expr.at}; this entity set has: {known}")
            return Compiled(column.sql, column.type)
        if isinstance(expr, Not):
            operand = self.boolean(expr.operand, "not")
            return Compiled(f"(NOT {operand})", Type.BOOL)
        if isinstance(expr, Negate):
            negated = self.compile(expr.operand)
            self.require(negated, Type.NUMBER, "unary minus")
            return Compiled(f"(-({negated.sql}))", Type.NUMBER)
        if isinstance(expr, Call):
            return self.call(expr)
        return self.binary(expr)

    def require(self, compiled: Compiled, type_: Type, where: str) -> None:
        if compiled.type not in (type_, Type.NULL):
            raise StaError(f"$filter: {where} needs a {type_}, not a {compiled.type}")

    def boolean(self, expr: Expr, where: str) -> str:
        compiled = self.compile(expr)
        self.require(compiled, Type.BOOL, where)
        return compiled.sql

    def binary(self, expr: Binary) -> Compiled:
        if expr.op in ("and", "or"):
            left, right = self.boolean(expr.left, expr.op), self.boolean(expr.right, expr.op)
            return Compiled(f"({left} {expr.op.upper()} {right})", Type.BOOL)
        if expr.op in _ARITHMETIC:
            lhs, rhs = self.compile(expr.left), self.compile(expr.right)
            self.require(lhs, Type.NUMBER, expr.op)
            self.require(rhs, Type.NUMBER, expr.op)
            return Compiled(_ARITHMETIC[expr.op](lhs.sql, rhs.sql), Type.NUMBER)
        return self.comparison(expr)

    def comparison(self, expr: Binary) -> Compiled:
        left, right = self.operand(expr.left, expr.right), self.operand(expr.right, expr.left)
        if Type.NULL in (left.type, right.type):
            if expr.op not in ("eq", "ne"):
                raise StaError("$filter: null can only be compared with eq or ne")
            other = right if left.type is Type.NULL else left
            test = "IS NULL" if expr.op == "eq" else "IS NOT NULL"
            return Compiled(f"({other.sql} {test})", Type.BOOL)
        if left.type is not right.type:
            raise StaError(f"$filter: cannot compare a {left.type} with a {right.type} "
                           f"({expr.op})")
        if left.type is Type.BOOL and expr.op not in ("eq", "ne"):
            raise StaError("$filter: booleans can only be compared with eq or ne")
        return Compiled(f"({left.sql} {COMPARISONS[expr.op]} {right.sql})", Type.BOOL)

    def operand(self, expr: Expr, other: Expr) -> Compiled:
        """A string literal compared with a date-time is read as one ('2026-11-20T...Z')."""
        if isinstance(expr, Literal) and expr.type is Type.STRING:
            # typed on scratch parameters, so the peer's own values are bound only once
            peer = _Compiler(self.columns, Params()).compile(other)
            if peer.type is Type.TIME:
                return Compiled(bind(self.params, parse_time(str(expr.value)), Type.TIME),
                                Type.TIME)
        return self.compile(expr)

    def call(self, expr: Call) -> Compiled:
        function = FUNCTIONS.get(expr.name)
        if function is None:
            raise StaError(f"$filter: unsupported function {expr.name!r} at position "
                           f"{expr.at}; supported: {', '.join(sorted(FUNCTIONS))}")
        if len(expr.args) != len(function.args):
            raise StaError(f"$filter: {expr.name}() takes {len(function.args)} "
                           f"argument(s), not {len(expr.args)}")
        args = []
        for arg, type_ in zip(expr.args, function.args, strict=True):
            compiled = self.compile(arg)
            self.require(compiled, type_, f"{expr.name}()")
            args.append(compiled.sql)
        return Compiled(function.sql(*args), function.returns)


def compile_expr(expr: Expr, columns: Mapping[str, Column], params: Params,
                 *, boolean: bool = True) -> Compiled:
    compiled = _Compiler(columns, params).compile(expr)
    if boolean and compiled.type is not Type.BOOL:
        raise StaError(f"$filter must be a condition (true or false), not a {compiled.type}")
    return compiled
