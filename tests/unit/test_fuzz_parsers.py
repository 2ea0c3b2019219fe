"""Fuzzing the other parsers of outside input (issue 17), each to a fixed budget: the
SensorThings ``$filter`` parser, the edge agent's config loader and its Modbus TCP frame
reader. Each ends in its result or its own error, never in another exception."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidefield.edge.config import load_config, parse_config
from tidefield.edge.drivers.mbap import MbapClient, ModbusExceptionAnswer, ModbusLinkError
from tidefield.edge.errors import ConfigError
from tidefield.server.api.sta.errors import StaError
from tidefield.server.api.sta.filter import parse

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "edge.yaml"
BUDGET = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# --- $filter ----------------------------------------------------------------------------

WORDS = ["result", "phenomenonTime", "name", "Datastream/name", "Thing/properties/site",
         "eq", "ne", "gt", "ge", "lt", "le", "and", "or", "not", "add", "sub", "mul", "div",
         "mod", "(", ")", ",", "'x'", "'it''s'", "1", "-2.5e308", "1e999", "null", "true",
         "2026-11-18T00:00:00Z", "2026-13-45T99:00:00Z", "substringof", "startswith",
         "year", "now()", "geo.distance", "/", "-", "'", "\x00", "é", "\ud800"]
filters = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join),
    st.text(max_size=200),
    st.integers(1, 5000).map(lambda d: "(" * d + "result eq 1" + ")" * d),
    st.integers(1, 5000).map(lambda d: "not " * d + "result eq 1"),
    st.integers(1, 3000).map(lambda n: " and ".join(["result gt 1"] * n)))


@BUDGET
@given(text=filters)
def test_filter_parses_or_says_why(text):
    try:
        parse(text)
    except StaError as exc:
        assert str(exc)


# --- the edge config ----------------------------------------------------------------------

leaves = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=True), st.text(max_size=30))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20)
SECTIONS = ["site", "broker", "queue", "publish", "health", "drivers"]
SAMPLE_DATA = yaml.safe_load(SAMPLE.read_text())


@st.composite
def configs(draw):
    """The sample config with some of its sections, or fields in them, replaced."""
    data = {k: v for k, v in SAMPLE_DATA.items() if draw(st.booleans()) or k == "site"}
    for section in draw(st.lists(st.sampled_from(SECTIONS), max_size=3)):
        current = data.get(section)
        if isinstance(current, dict) and current and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(current)))
            data[section] = {**current, key: draw(values)}
        else:
            data[section] = draw(values)
    return data


@BUDGET
@given(data=st.one_of(configs(), values))
def test_edge_config_is_valid_or_lists_its_problems(data):
    try:
        parse_config(data, "fuzz.yaml")
    except ConfigError as exc:
        assert exc.problems


@BUDGET
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(
    lambda b: b.decode("latin-1"))))
def test_edge_config_file_of_any_text_is_valid_or_lists_its_problems(tmp_path, text):
    path = tmp_path / "edge.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems


# --- Modbus TCP frames ------------------------------------------------------------------

frames = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda tid, proto, length, unit, pdu: struct.pack(">HHHB", tid, proto, length,
                                                               unit) + pdu,
              st.sampled_from([1, 0, 2, 0xFFFF]), st.sampled_from([0, 1]),
              st.integers(0, 0xFFFF), st.sampled_from([1, 2, 0xFF]),
              st.one_of(st.binary(max_size=260),
                        st.builds(lambda f, n, data: bytes([f, n]) + data,
                                  st.sampled_from([3, 4, 0x83, 0x84, 0]),
                                  st.integers(0, 255), st.binary(max_size=255)))))


@BUDGET
@given(answer=frames, count=st.integers(1, 125))
def test_modbus_answer_is_registers_or_a_link_error(answer, count):
    """A real socket pair: the device's end sends ``answer`` and closes."""
    ours, device = socket.socketpair()
    client = MbapClient("device", 502, timeout_s=2)
    client._sock = ours  # connected already: the pair stands for the TCP connection
    try:
        device.sendall(answer)
        device.shutdown(socket.SHUT_WR)
        try:
            registers = client.read_registers(3, 0, count, 1)
        except (ModbusLinkError, ModbusExceptionAnswer):
            return
        assert len(registers) == count
        assert all(0 <= r <= 0xFFFF for r in registers)
    finally:
        client.close()
        device.close()
