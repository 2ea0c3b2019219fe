"""Password hashes, broker files, the rate limiter and the development PKI, without a
broker (tests/integration/test_security.py runs them against a real Mosquitto)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tidefield.protocol.errors import REASONS
from tidefield.server.ingest.pipeline import Envelope, rate_limited
from tidefield.server.ingest.ratelimit import DeviceBudget
from tidefield.server.security.accounts import (
    SERVICES,
    AccessState,
    Login,
    Rule,
    device_rules,
)
from tidefield.server.security.dynsec import BrokerView, plan, render_config
from tidefield.server.security.passwords import dynsec_fields, hash_password, verify_password
from tidefield.server.security.tls import ensure_dev_pki, issue_server_cert, make_ca


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto")
def test_a_hash_made_by_mosquitto_passwd_verifies_here(tmp_path):
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "s3cret"], check=True)
    hashed = path.read_text().strip().split(":", 1)[1]
    assert hashed.startswith("$7$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", hashed)


def test_our_hash_has_mosquittos_shape_and_a_fresh_salt():
    first, second = hash_password("pw"), hash_password("pw")
    kind, iterations, salt, digest = first.split("$")[1:]
    assert (kind, iterations) == ("7", "101")
    assert len(salt) == 16 and len(digest) == 88  # 12 and 64 bytes in base64
    assert first != second  # salted
    assert verify_password("pw", first) and not verify_password("pw2", first)
    with pytest.raises(ValueError, match="not a Mosquitto"):
        verify_password("pw", "$6$abc$def")


def test_device_rules_name_only_its_own_topics():
    assert device_rules("ag-001", "ag-001-soil") == (
        Rule("write", "tf/v1/ag-001/ag-001-soil/up"),
        Rule("write", "tf/v1/ag-001/ag-001-soil/status"),
        Rule("write", "tf/v1/ag-001/ag-001-soil/reply/#"),
        Rule("read", "tf/v1/ag-001/ag-001-soil/down/#"))
    # services never write telemetry, except the development simulator
    for role, rules in SERVICES.items():
        writes = {r.topic for r in rules if r.access == "write"}
        assert role == "simulator" or not writes & {"tf/v1/+/+/up", "tf/v1/+/+/status"}


def test_a_hash_in_the_dynamic_security_plugins_form():
    hashed = hash_password("pw", salt=bytes(range(12)))
    fields = dynsec_fields(hashed)
    assert fields["iterations"] == 101
    assert f"$7$101${fields['salt']}${fields['password']}" == hashed


def _state() -> AccessState:
    return AccessState(
        (Login("ag-001-gw", hash_password("a"), "ag-001-gw",
               ("device:ag-001-gw", "device:ag-001-soil")),
         Login("ag-001-soil", hash_password("b"), "ag-001-soil", ("device:ag-001-soil",)),
         Login("svc_ingest", hash_password("c"), None, ("service:ingest",))),
        {"device:ag-001-gw": device_rules("ag-001", "ag-001-gw"),
         "device:ag-001-soil": device_rules("ag-001", "ag-001-soil"),
         "service:ingest": SERVICES["ingest"]})


def test_the_plugin_config_holds_every_login_role_and_rule():
    config = render_config(_state())
    assert config["defaultACLAccess"] == {"publishClientSend": False,
                                          "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}
    clients = {c["username"]: c for c in config["clients"]}
    assert clients["ag-001-soil"]["clientid"] == "ag-001-soil"
    assert "clientid" not in clients["svc_ingest"]  # a service runs as several processes
    assert [r["rolename"] for r in clients["ag-001-gw"]["roles"]] == [
        "device:ag-001-gw", "device:ag-001-soil"]
    assert set(clients["ag-001-soil"]) >= {"password", "salt", "iterations"}
    roles = {r["rolename"]: {(a["acltype"], a["topic"]) for a in r["acls"]}
             for r in config["roles"]}
    assert roles["device:ag-001-soil"] == {
        ("publishClientSend", "tf/v1/ag-001/ag-001-soil/up"),
        ("publishClientSend", "tf/v1/ag-001/ag-001-soil/status"),
        ("publishClientSend", "tf/v1/ag-001/ag-001-soil/reply/#"),
        ("subscribePattern", "tf/v1/ag-001/ag-001-soil/down/#"),
        ("publishClientReceive", "tf/v1/ag-001/ag-001-soil/down/#")}
    assert roles["service:ingest"] == {
        ("subscribePattern", "tf/v1/+/+/up"), ("publishClientReceive", "tf/v1/+/+/up"),
        ("subscribePattern", "$share/+/tf/v1/+/+/up"),  # a subscription, no more
        ("subscribePattern", "tf/v1/+/+/status"),
        ("publishClientReceive", "tf/v1/+/+/status"),
        ("publishClientSend", "tf/v1/+/+/down/receipt")}  # its receipts, nothing else


def _view(state: AccessState) -> BrokerView:
    config = render_config(state)
    return BrokerView.from_answers({"data": {"clients": config["clients"]}},
                                   {"data": {"roles": config["roles"]}})


def test_plan_changes_only_what_differs():
    state = _state()
    assert plan(state, _view(state)) == ([], [])
    # a rotated login is replaced whole; a revoked one is deleted; a new device of the
    # gateway's site changes its roles; a role nobody holds goes
    revoked = AccessState(state.logins[:1] + state.logins[2:], {
        **{k: v for k, v in state.roles.items() if k != "device:ag-001-soil"},
        "device:ag-001-new": device_rules("ag-001", "ag-001-new")})
    gateway = revoked.logins[0]
    grown = AccessState((Login(gateway.username, gateway.password_hash, gateway.client_id,
                               ("device:ag-001-gw", "device:ag-001-new")),
                         revoked.logins[1]), revoked.roles)
    commands, problems = plan(grown, _view(state), {"svc_ingest": "new-secret"})
    assert problems == []
    names = [(c["command"], c.get("username") or c.get("rolename")) for c in commands]
    assert names == [("createRole", "device:ag-001-new"),
                     ("deleteClient", "ag-001-soil"),
                     ("modifyClient", "ag-001-gw"),
                     ("deleteClient", "svc_ingest"), ("createClient", "svc_ingest"),
                     ("deleteRole", "device:ag-001-soil")]
    assert commands[4]["password"] == "new-secret" and "clientid" not in commands[4]
    assert commands[2]["clientid"] == "ag-001-gw"


def test_plan_reports_a_login_it_cannot_add_without_its_password():
    state = _state()
    view = _view(state)
    del view.clients["svc_ingest"]
    commands, problems = plan(state, view)
    assert commands == [] and problems[0].startswith("svc_ingest: ")


def test_a_rule_change_is_applied_acl_by_acl():
    state = _state()
    view = _view(state)
    view.roles["service:ingest"] = {("subscribePattern", "#"),
                                    ("subscribePattern", "tf/v1/+/+/up"),
                                    ("publishClientReceive", "tf/v1/+/+/up")}
    commands, _ = plan(state, view)
    assert [(c["command"], c["topic"]) for c in commands] == [
        ("removeRoleACL", "#"),
        ("addRoleACL", "tf/v1/+/+/status"), ("addRoleACL", "tf/v1/+/+/down/receipt"),
        ("addRoleACL", "$share/+/tf/v1/+/+/up"), ("addRoleACL", "tf/v1/+/+/status")]


H_MS = 3_600_000


def test_a_backlog_covering_hours_of_device_time_fits_the_budget():
    """10 readings per device-second: a 2-hour backlog at 3 readings a second, in
    500-reading messages all received in the same millisecond, is admitted whole."""
    budget = DeviceBudget(rate_per_s=10, burst=1000)
    now = 10 * H_MS
    times = [now - 2 * H_MS + i * 1000 // 3 for i in range(3 * 7200)]
    messages = [times[i:i + 500] for i in range(0, len(times), 500)]
    assert [budget.take("a", len(m), m[0], m[-1], now) for m in messages] == \
        [0.0] * len(messages)


def test_a_flood_gets_its_budget_and_no_more():
    """1,000 readings per device-second, 10x the budget: about a tenth is admitted,
    whatever the wall-clock rate; another device keeps its own budget."""
    budget = DeviceBudget(rate_per_s=100, burst=2000)
    now = 10 * H_MS
    admitted = 0
    for seq in range(400):  # 2,000 readings over 2 s of device time each, 50 a second
        first = now - H_MS + seq * 2000
        if budget.take("flood", 2000, first, first + 1999, now + seq * 20) == 0.0:
            admitted += 1
    covered_s = 400 * 2
    assert 2000 + 100 * covered_s - 2000 <= admitted * 2000 <= 2000 + 100 * covered_s
    assert budget.take("quiet", 5, now, now + 4000, now) == 0.0


def test_device_time_already_covered_or_too_old_earns_nothing():
    budget = DeviceBudget(rate_per_s=10, burst=100, backlog_s=3600)
    now = 100 * H_MS
    assert budget.take("a", 100, now - 1000, now, now) == 0.0  # the burst
    # the same hour again (a clock set back, a replay): only wall time earns
    assert budget.take("a", 100, now - 1000, now, now) == 10.0  # seconds to wait
    assert budget.take("a", 100, now - 1000, now, now + 10_000) == 0.0
    # a week of made-up history earns only the last hour (backlog_s), which is already
    # covered here; the bucket never holds more than the burst
    assert budget.take("b", 100, now - 7 * 24 * H_MS, now - 1, now) == 0.0
    assert budget.take("b", 100, now - 7 * 24 * H_MS, now - 1, now) > 0
    # a status (no readings) costs one and earns by wall time
    assert budget.take("c", 1, None, None, now) == 0.0


def test_device_budget_off_and_bad_settings():
    budget = DeviceBudget(0, 1)
    assert all(budget.take("a", 10_000, 0, 1, 0) == 0.0 for _ in range(100))
    with pytest.raises(ValueError):
        DeviceBudget(-1, 1)
    with pytest.raises(ValueError):
        DeviceBudget(1, 0)


def test_rate_limit_rejects_count_per_device_and_keep_the_first_as_sample():
    envs = [Envelope(f"tf/v1/ag-001/{d}/up", f"{d}-{i}".encode(), None, 1000 + i)
            for i, d in enumerate(["ag-001-wx", "ag-001-wx", "ag-001-soil", "ag-001-wx"])]
    rejects = {r.device_id: r for r in rate_limited(envs, 2.0, 5)}
    assert set(rejects) == {"ag-001-wx", "ag-001-soil"}
    assert rejects["ag-001-wx"].messages == 3
    assert rejects["ag-001-wx"].payload == b"ag-001-wx-0"
    assert rejects["ag-001-soil"].messages == 1
    assert all(r.reason == "rate_limited" for r in rejects.values())


def test_every_reason_code_is_listed():
    assert {"identity_mismatch", "unknown_device", "rate_limited", "unknown_series",
            "bad_topic", "oversize"} <= REASONS


def test_dev_pki_signs_a_server_certificate_for_local_names(tmp_path):
    from cryptography import x509

    files = ensure_dev_pki(tmp_path, ["broker.example"])
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "broker.example"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    assert files.key_file.stat().st_mode & 0o077 == 0
    again = ensure_dev_pki(tmp_path)  # kept, not remade
    assert again.cert_file.read_bytes() == files.cert_file.read_bytes()
    # a certificate from another CA does not verify against this one
    other_key, other_ca = make_ca("someone else")
    _, foreign = issue_server_cert(other_key, other_ca, ["127.0.0.1"])
    with pytest.raises(ValueError):
        foreign.verify_directly_issued_by(ca)


def test_the_worker_takes_the_devices_messages_in_turn():
    """A backlog of 50 messages queued before a quiet device's one: the quiet one is in
    the first window, and each device's own messages keep their order."""
    from tidefield.server.ingest.worker import Worker, WorkerConfig

    worker = Worker("postgresql://unused", None, lambda mids: None,
                    WorkerConfig(max_messages=10, max_wait_s=0))
    for i in range(50):
        worker.submit(Envelope("tf/v1/ag-001/ag-001-soil/up", b"x", None, i), ("soil", i))
    worker.submit(Envelope("tf/v1/ag-002/ag-002-soil/up", b"x", None, 99), ("quiet", 0))
    first = [token for _, token in worker._gather()]
    assert len(first) == 10 and ("quiet", 0) in first
    assert [t for t in first if t[0] == "soil"] == [("soil", i) for i in range(9)]
    assert worker.pending == 41
    second = [token for _, token in worker._gather()]
    assert second == [("soil", i) for i in range(9, 19)]


def test_the_turns_carry_on_from_one_window_to_the_next():
    from tidefield.server.ingest.worker import Worker, WorkerConfig

    worker = Worker("postgresql://unused", None, lambda mids: None,
                    WorkerConfig(max_messages=3, max_wait_s=0))
    for i in range(3):
        for device in ("a", "b", "c", "d"):
            worker.submit(Envelope(f"tf/v1/s/{device}/up", b"x", None, i), (device, i))
    windows = [[token for _, token in worker._gather()] for _ in range(4)]
    assert windows == [[("a", 0), ("b", 0), ("c", 0)], [("d", 0), ("a", 1), ("b", 1)],
                       [("c", 1), ("d", 1), ("a", 2)], [("b", 2), ("c", 2), ("d", 2)]]
