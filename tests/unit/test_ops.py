"""The operations' parts that need no database: restore targets, the platform files kept
beside a backup, what `tidefield status` says, pgBackRest's settings, and the platform's
alert rules (every metric they use is exported, every alert has its runbook section)."""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tidefield.server.ops import OpsError
from tidefield.server.ops.disk import Volume
from tidefield.server.ops.errors import CheckFailed
from tidefield.server.ops.pgbackrest import PgBackRest, time_target
from tidefield.server.ops.replica import ReplicaState
from tidefield.server.ops.report import ArchiveState, OpsReport, RunState, render
from tidefield.server.ops.restore import parse_target
from tidefield.server.ops.state import ARCHIVE_NAME, Layout, check, restore, save

ROOT = Path(__file__).resolve().parents[2]
CHINA = timezone(timedelta(hours=8))


def test_a_restore_target_is_latest_or_a_moment_with_its_zone():
    assert parse_target("latest") is None
    assert parse_target(" LATEST ") is None
    moment = parse_target("2026-03-01 09:30:00+08:00")
    assert moment == datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    assert parse_target("2026-03-01T01:30:00Z") == moment
    with pytest.raises(OpsError, match="has no time zone"):
        parse_target("2026-03-01 09:30:00")
    with pytest.raises(OpsError, match="give `latest` or a time"):
        parse_target("yesterday")


def test_pgbackrest_gets_utc_with_milliseconds_rounded_down():
    moment = datetime(2026, 3, 1, 9, 30, 5, 999_999, tzinfo=CHINA)
    assert time_target(moment) == "2026-03-01 01:30:05.999+00"


def test_the_archive_command_survives_odd_folder_names(tmp_path):
    work = tmp_path / "it's a work dir"
    tool = PgBackRest(repo=tmp_path / "repo", stanza="tidefield", work_dir=work)
    setting = tool.archive_settings()["archive_command"]
    assert setting.startswith("'") and setting.endswith("'")
    command = setting[1:-1].replace("''", "'")  # as PostgreSQL reads the string
    argv = shlex.split(command)  # as the shell it runs the command with splits it
    assert f"--config={work / 'pgbackrest.conf'}" in argv
    assert argv[-2:] == ["archive-push", "%p"]


def _layout(root: Path) -> Layout:
    data, broker = root / "data", root / "data" / "mosquitto"
    (broker / "logins").mkdir(parents=True)
    (data / "tls").mkdir()
    (data / "operator.key").write_text("tf_key\n")
    (data / "tls" / "ca.pem").write_text("CA")
    (broker / "dynamic-security.json").write_text("{}")
    (broker / "logins" / "ingest").write_text("secret")
    (broker / "mosquitto.db").write_bytes(b"\x00\x01sessions")
    (broker / "mosquitto.log").write_text("not kept")
    return Layout(data, broker)


def test_the_platform_files_go_into_the_archive_and_come_back(tmp_path):
    source = _layout(tmp_path / "before")
    archive = tmp_path / "repo" / ARCHIVE_NAME
    digest = save(source, archive)
    manifest = check(archive, digest)
    assert sorted(manifest) == ["broker/dynamic-security.json", "broker/logins/ingest",
                                "data/mosquitto/mosquitto.db", "data/operator.key",
                                "data/tls/ca.pem"]
    target = Layout(tmp_path / "after", tmp_path / "after" / "mosquitto")
    assert restore(archive, target, digest) == 5
    assert (tmp_path / "after" / "mosquitto" / "mosquitto.db").read_bytes() == \
        b"\x00\x01sessions"
    assert (tmp_path / "after" / "mosquitto" / "logins" / "ingest").read_text() == "secret"
    assert not (tmp_path / "after" / "mosquitto" / "mosquitto.log").exists()


def test_an_altered_or_strange_archive_is_refused(tmp_path):
    source = _layout(tmp_path / "before")
    archive = tmp_path / ARCHIVE_NAME
    save(source, archive)
    with pytest.raises(CheckFailed, match="not the one recorded"):
        check(archive, "0" * 64)
    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    with pytest.raises(CheckFailed):
        check(archive, None)  # without the recorded checksum, the manifest's catch it
    # a member that would land outside the data folder
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("data/../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(CheckFailed, match="unexpected member"):
        restore(archive, Layout(tmp_path / "after", tmp_path / "after" / "mosquitto"))
    assert not (tmp_path / "escape").exists()


def test_status_says_what_failed_and_how_far_behind():
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    report = OpsReport(
        backup=RunState(now - timedelta(hours=30), "20261203-060000F",
                        now - timedelta(minutes=10), "repository is full"),
        verify=RunState(now - timedelta(days=2), "20261202-060000F"),
        archive=ArchiveState(120, 3, now - timedelta(minutes=20), now - timedelta(minutes=1),
                             "000000010000000000000078", True),
        replica=ReplicaState(True, True, 4096, 12.5),
        volumes=[Volume("database", Path("/a"), 100 * 2**30, 5 * 2**30, 1),
                 Volume("broker", Path("/a/b"), 100 * 2**30, 5 * 2**30, 1),
                 Volume("backup", Path("/b"), 50 * 2**30, 40 * 2**30, 2)])
    lines = render(report, now)
    assert lines[0] == ("backup     newest 20261203-060000F 1.2 d ago; verified 2.0 d ago; "
                        "FAILED 10.0 min ago: repository is full")
    assert lines[1] == "archive    120 WAL segments, newest 20.0 min ago, FAILING since 1.0 min ago"
    assert lines[2] == "replica    streaming, 12.5 s behind (4,096 bytes of WAL)"
    assert lines[3] == "disk       5.0 GiB free of 100.0 (5%)  LOW: database, broker"
    assert lines[4] == "disk       40.0 GiB free of 50.0 (80%): backup"
    down = render(OpsReport(replica=ReplicaState(False, problem="replica unreachable: x")),
                  now)
    assert down == ["replica    replica unreachable: x"]


# --- the platform's own alerts ----------------------------------------------------------

RULES = ROOT / "deploy" / "prometheus" / "tidefield-alerts.yml"


def _exported_metrics() -> set[str]:
    """Every metric name our code registers or yields."""
    names: set[str] = set()
    for path in (ROOT / "server").rglob("*.py"):
        names |= set(re.findall(r'"(tidefield_[a-z0-9_]+)"', path.read_text()))
    return names | {f"{name}_total" for name in names}


def test_every_alert_uses_exported_metrics_and_has_its_runbook_section():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    exported = _exported_metrics()
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert len(rules) >= 10
    for rule in rules:
        name = rule["alert"]
        used = set(re.findall(r"\btidefield_[a-z0-9_]+", rule["expr"]))
        assert used <= exported, f"{name} uses {sorted(used - exported)}, exported by nothing"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["runbook"] == f"docs/runbook.md#{name.lower()}"
        assert f"\n### {name}\n" in runbook, f"the runbook does not say what {name} means"
