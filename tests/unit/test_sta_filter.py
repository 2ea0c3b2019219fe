"""The SensorThings $filter parser and compiler, and the query options, without a database:
SQL shapes, bound values, and that no input at all raises anything but a 400."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidefield.server.api.sta.entities import DATASTREAMS, OBSERVATIONS, THINGS
from tidefield.server.api.sta.errors import StaError
from tidefield.server.api.sta.filter import (
    MAX_DEPTH,
    Params,
    compile_expr,
    conjuncts,
    parse,
)
from tidefield.server.api.sta.options import (
    MAX_TOP,
    encode_skiptoken,
    parse_options,
    split_top_level,
)


def compiled(text: str, entity_set=OBSERVATIONS) -> tuple[str, dict]:
    params = Params()
    return compile_expr(parse(text), entity_set.columns, params).sql, params.values


def test_values_are_bound_never_written_into_the_sql():
    sql, values = compiled("result gt 5.5 and phenomenonTime lt 2026-11-20T08:00:00+08:00")
    assert sql == "((r.value > %(f0)s::float8) AND (r.time < %(f1)s::timestamptz))"
    assert values == {"f0": 5.5, "f1": datetime(2026, 11, 20, 0, 0, tzinfo=UTC)}
    sql, values = compiled("name eq 'x''); DROP TABLE sites; --'", THINGS)
    assert sql == "(e.id = %(f0)s::text)"
    assert values == {"f0": "x'); DROP TABLE sites; --"}
    assert "DROP" not in sql


def test_precedence_follows_odata():
    # and binds tighter than or; not tighter than and; mul tighter than add
    sql, _ = compiled("result eq 1 or result eq 2 and not result eq 3")
    assert sql == ("((r.value = %(f0)s::bigint) OR ((r.value = %(f1)s::bigint) AND "
                   "(NOT (r.value = %(f2)s::bigint))))")
    sql, _ = compiled("result add 2 mul 3 gt 10")
    assert sql == ("(((r.value)::float8 + (((%(f0)s::bigint)::float8 * "
                   "(%(f1)s::bigint)::float8))::float8) > %(f2)s::bigint)")
    sql, _ = compiled("(result eq 1 or result eq 2) and result ne 3")
    assert sql == ("(((r.value = %(f0)s::bigint) OR (r.value = %(f1)s::bigint)) AND "
                   "(r.value <> %(f2)s::bigint))")


def test_literals_paths_and_functions():
    sql, values = compiled("Datastream/id eq 42 and result ge -1.5e2")
    assert sql == "((e.series_id = %(f0)s::bigint) AND (r.value >= %(f1)s::float8))"
    assert values == {"f0": 42, "f1": -150.0}
    sql, values = compiled("phenomenonTime ge 2026-11-20")  # a date: midnight UTC
    assert values["f0"] == datetime(2026, 11, 20, tzinfo=UTC)
    sql, values = compiled("phenomenonTime gt '2026-11-20T01:00:00Z'")  # quoted: read too
    assert values["f0"] == datetime(2026, 11, 20, 1, tzinfo=UTC)
    sql, _ = compiled("hour(phenomenonTime) eq 8 and round(result) eq 3")
    assert "extract(hour FROM (r.time) AT TIME ZONE 'UTC')" in sql
    sql, _ = compiled("startswith(tolower(name), 'ag-') and Thing/id ne null", DATASTREAMS)
    assert sql == ("(starts_with(lower(e.name), %(f0)s::text) AND (e.thing_id IS NOT NULL))")
    sql, _ = compiled("result div 0 gt 1")
    assert "NULLIF" in sql  # division by zero is null, not an error


@pytest.mark.parametrize("text, message", [
    ("result gt", "position 9"),
    ("result gt 5 5", "unexpected '5'"),
    ("result gt 5)", "unexpected ')'"),
    ("(result gt 5", "expected ')'"),
    ("temperature eq 1", "unknown property 'temperature'"),
    ("result eq 'five'", "cannot compare a number with a string"),
    ("phenomenonTime eq 5", "cannot compare a datetime with a number"),
    ("phenomenonTime gt 2026-11-20T00:00:00", "zone"),
    ("phenomenonTime gt 2026-13-45T00:00:00Z", "not a valid date-time"),
    ("phenomenonTime gt 'soon'", "not a valid date-time"),
    ("result", "must be a condition"),
    ("result eq 1 eq 2", "do not chain"),
    ("not result", "not needs a boolean"),
    ("result gt 1 and 5", "and needs a boolean"),
    ("result lt null", "null can only"),
    ("geo.distance(location, 1) lt 5", "unsupported function 'geo.distance'"),
    ("round(result, 2) eq 1", "takes 1 argument"),
    ("year('2026') eq 2026", "year() needs a datetime"),
    ("result gt 1e999", "number out of range"),
    ("result ~ 5", "unexpected character '~'"),
    ("", "empty"),
    ("   ", "empty"),
])
def test_bad_filters_say_what_is_wrong(text, message):
    with pytest.raises(StaError) as caught:
        compiled(text)
    assert message in caught.value.message and caught.value.status == 400


def test_nesting_and_length_are_bounded():
    deep = "(" * (MAX_DEPTH + 1) + "result gt 1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(StaError, match="nested deeper"):
        parse(deep)
    with pytest.raises(StaError, match="nested deeper"):
        parse("not " * 200 + "result gt 1")
    with pytest.raises(StaError, match="more than 100 operators"):
        parse(" or ".join(["result gt 1"] * 200))
    with pytest.raises(StaError, match="longer than"):
        parse("result gt 1 " + " " * 5000)
    parse("(" * MAX_DEPTH + "result gt 1" + ")" * MAX_DEPTH)  # the limit itself is fine


def test_conjuncts_split_only_a_top_level_and():
    terms = conjuncts(parse("Datastream/id eq 1 and (result gt 2 or result lt 0) and "
                            "phenomenonTime ge 2026-01-01T00:00:00Z"))
    assert len(terms) == 3
    assert len(conjuncts(parse("result gt 1 or result lt 0 and result eq 5"))) == 1


# Everything a client could type: OData-ish words, operators, literals, and junk.
_WORDS = st.sampled_from([
    "result", "phenomenonTime", "resultTime", "Datastream/id", "id", "name", "eq", "ne",
    "gt", "ge", "lt", "le", "and", "or", "not", "add", "sub", "mul", "div", "mod", "(", ")",
    ",", "/", "-", "'x'", "''", "'", "1", "-2.5", "1e308", "1e999", "2026-11-20T00:00:00Z",
    "2026-11-20", "2026-02-30T00:00:00Z", "null", "true", "false", "year(", "round(",
    "startswith(", "now()", "@iot.id", "$", "geo.distance(", "9" * 30])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.lists(_WORDS, max_size=12).map(" ".join), st.text(max_size=60)))
def test_any_input_is_compiled_or_refused_with_a_400(text):
    for entity_set in (OBSERVATIONS, DATASTREAMS, THINGS):
        try:
            sql, values = compiled(text, entity_set)
        except StaError as exc:
            assert exc.status == 400 and exc.message
        else:
            for value in values.values():  # a value never travels inside the SQL text
                if isinstance(value, str) and len(value) > 3:
                    assert value not in sql


def test_options_parse_and_check_against_the_entity_set():
    options = parse_options(OBSERVATIONS, {
        "$top": "5000", "$skip": "3", "$orderby": "phenomenonTime desc", "$count": "true",
        "$select": "result,id", "custom": "ignored"})
    assert options.top == MAX_TOP and options.skip == 3 and options.count
    assert [(k.column.sql, k.desc) for k in options.order] == [
        ("r.time", True), ("e.series_id", False)]  # completed to a unique order
    assert options.select == frozenset({"result", "@iot.id"})
    default = parse_options(OBSERVATIONS, {})
    assert [k.column.sql for k in default.order] == ["e.series_id", "r.time"]
    things = parse_options(THINGS, {"$orderby": "properties/site desc, name",
                                    "$expand": "Datastreams($top=2;$expand=Observations("
                                               "$filter=result gt 1;$top=1)),Locations"})
    assert [k.column.sql for k in things.order] == ["e.site_id", "e.id"]
    inner = things.expand["Datastreams"]
    assert inner.top == 2 and inner.entity_set is DATASTREAMS
    assert inner.expand["Observations"].top == 1
    assert inner.expand["Observations"].filter is not None
    merged = parse_options(THINGS, {"$expand": "Datastreams/Sensor,Datastreams/Thing"})
    assert set(merged.expand["Datastreams"].expand) == {"Sensor", "Thing"}


@pytest.mark.parametrize("given, message", [
    ({"$top": "-1"}, "non-negative integer"),
    ({"$top": "２"}, "non-negative integer"),  # a full-width digit is no integer here
    ({"$top": str(2 ** 31)}, "at most"),
    ({"$skip": "10001"}, "nextLink"),
    ({"$orderby": "temperature"}, "cannot be ordered by"),
    ({"$orderby": "result up"}, "property [asc|desc]"),
    ({"$select": "color"}, "no property 'color'"),
    ({"$expand": "Things"}, "no navigation property 'Things'"),
    ({"$expand": "Datastream($bogus=1)"}, "unsupported query option $bogus"),
    ({"$expand": "Datastream($top=1"}, "unbalanced"),
    ({"$expand": "Datastream/Thing/Datastreams/Observations"}, "nested deeper"),
    ({"$count": "yes"}, "true or false"),
    ({"$skiptoken": "%%%"}, "not one this service issued"),
    ({"$skiptoken": encode_skiptoken({"a": 1})}, "not one this service issued"),
    ({"$format": "csv"}, "unsupported query option $format"),
])
def test_bad_options_are_400(given, message):
    with pytest.raises(StaError) as caught:
        parse_options(OBSERVATIONS, given)
    assert message in caught.value.message


def test_top_level_split_respects_quotes_and_parentheses():
    assert split_top_level("a($filter=name eq 'x,y';$top=1),b", ",", "$expand") == [
        "a($filter=name eq 'x,y';$top=1)", "b"]
    assert split_top_level("name eq 'it''s, ok'", ",", "$orderby") == ["name eq 'it''s, ok'"]
