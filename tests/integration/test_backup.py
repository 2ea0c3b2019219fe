"""Backups and point-in-time restore with pgBackRest, through the commands an operator
runs: readings written, a backup taken, more written, a table dropped by mistake; a
restore to the moment before the drop into a new data folder finds every reading written
before it, and the broker's state and the keys beside it. `tidefield backup verify`
passes on a sound repository and fails on a corrupted one."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC
from pathlib import Path

import psycopg
import pytest

from tidefield.server.embedded import free_port
from tidefield.server.ops.backup import choose_kind, read_mark
from tidefield.server.ops.deployment import DATABASE, embedded_cluster

from ..conftest import scratch_dir
from ..support.ops import (
    hours_ago,
    platform_db,
    readings_digest,
    series_ids,
    write_readings,
)

pytestmark = pytest.mark.timeout(600)


def _platform():
    folder = scratch_dir("tidefield-test-backup-")
    folder.chmod(0o755)  # the postgres user reaches the cluster through it
    try:
        with platform_db(folder / "data") as db:
            yield db
    finally:
        shutil.rmtree(folder, ignore_errors=True)


platform = pytest.fixture(scope="module")(_platform)
own_platform = pytest.fixture(_platform)  # for a test that breaks its database


def test_restore_to_the_moment_before_a_mistake_finds_every_reading(own_platform):
    platform = own_platform
    series = series_ids(platform.url, 40)
    written = write_readings(platform.url, series, hours_ago(72), 60 * 24)  # 3 days ago
    backup = platform.tidefield("backup")
    assert backup.returncode == 0, backup.stderr
    assert "platform files kept" in backup.stdout

    written += write_readings(platform.url, series, hours_ago(2), 90, salt=0.5)  # after it
    expected = readings_digest(platform.url)
    assert expected[0] == written == 40 * (60 * 24 + 90)
    with psycopg.connect(platform.url) as conn:
        before_mistake = conn.execute("SELECT now()").fetchone()[0]
    time.sleep(1.5)
    with psycopg.connect(platform.url, autocommit=True) as conn:
        conn.execute("DROP TABLE readings CASCADE")  # the mistake
        conn.execute("INSERT INTO sites (id, name_zh, name_en, kind, domain, district, lat, "
                     "lon) VALUES ('zz-999', 'x', 'after the mistake', 'pond', 'ocean', "
                     "'x', 36, 120)")
    # what the runbook says to do first, while the database still runs: its current WAL
    # goes to the repository, so a restore reaches the moment of the mistake
    check = platform.tidefield("backup", "check")
    assert check.returncode == 0, check.stderr

    target = platform.data_dir.parent / "restored"
    restore = platform.tidefield(
        "restore", "--to", before_mistake.astimezone(UTC).isoformat(), "--data-dir",
        str(target), "--repo", str(platform.data_dir / "backup"))
    assert restore.returncode == 0, restore.stderr
    assert f"next: tidefield up --data-dir {target}" in restore.stdout

    restored = embedded_cluster(target, free_port())
    restored.start()
    try:
        url = restored.url(DATABASE)
        assert readings_digest(url) == expected  # every reading, none changed
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM sites WHERE id = 'zz-999'"
                                ).fetchone()[0] == 0  # nothing from after the target
    finally:
        restored.stop()
    # the platform's files came back beside it
    assert (target / "operator.key").read_text() == "tf_test_operator_key\n"
    assert (target / "mosquitto" / "mosquitto.db").read_bytes() == b"persisted sessions"
    assert (target / "mosquitto" / "logins" / "ingest").read_text() == "secret-of-ingest"

    # a restore never writes over a database
    again = platform.tidefield("restore", "--to", "latest", "--data-dir", str(target),
                               "--repo", str(platform.data_dir / "backup"))
    assert again.returncode == 1
    assert "already holds a database" in again.stderr


def _ensure_a_backup(platform) -> None:
    if not platform.deployment().pgbackrest().info().backups:
        write_readings(platform.url, series_ids(platform.url, 5), hours_ago(10), 60)
        result = platform.tidefield("backup")
        assert result.returncode == 0, result.stderr


def test_a_restore_before_the_oldest_backup_is_refused_with_the_reason(platform):
    _ensure_a_backup(platform)
    result = platform.tidefield("restore", "--to", "2001-01-01 00:00:00+00:00", "--data-dir",
                                str(platform.data_dir.parent / "too-early"), "--repo",
                                str(platform.data_dir / "backup"))
    assert result.returncode == 1
    assert "nothing to restore that early" in result.stderr
    # the new folder's own (empty) repository is not where the backups are
    result = platform.tidefield("restore", "--to", "latest", "--data-dir",
                                str(platform.data_dir.parent / "no-repo"))
    assert result.returncode == 1
    assert "--repo or TIDEFIELD_BACKUP_REPO names it" in result.stderr
    result = platform.tidefield("restore", "--to", "2001-01-01 00:00", "--data-dir",
                                str(platform.data_dir.parent / "no-zone"))
    assert result.returncode == 1
    assert "has no time zone" in result.stderr


def test_backups_are_listed_marked_and_incremental_after_a_full_one(platform):
    deployment = platform.deployment()
    _ensure_a_backup(platform)
    assert choose_kind(deployment.pgbackrest(), full_every_days=7) == "incr"
    second = platform.tidefield("backup")
    assert second.returncode == 0, second.stderr
    assert "(incr)" in second.stdout
    listing = json.loads(platform.tidefield("backup", "list", "--json").stdout)
    kinds = [b["kind"] for b in listing["backups"]]
    assert kinds[0] == "full" and kinds[-1] == "incr"
    assert all(b["checksums"] for b in listing["backups"])
    mark, _ = read_mark(deployment, listing["backups"][-1]["label"])
    assert "readings" in {c.table for c in mark.chunks}
    assert mark.rows > 0 and mark.counts["series"] > 0
    with psycopg.connect(platform.url) as conn:
        runs = conn.execute("SELECT action, ok, label FROM backup_runs ORDER BY id").fetchall()
    assert ("backup", True, listing["backups"][-1]["label"]) in runs


def _newest_backup_file(repo: Path) -> Path:
    """A data file of the newest backup (the one verify restores)."""
    newest = sorted(p for p in (repo / "backup" / "tidefield").iterdir()
                    if p.is_dir() and p.name[:8].isdigit())[-1]
    return max((p for p in (newest / "pg_data" / "base").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def test_verify_passes_and_fails_on_a_corrupted_repository(platform):
    series = series_ids(platform.url, 10)
    write_readings(platform.url, series, hours_ago(30), 120, salt=0.25)
    assert platform.tidefield("backup", "--kind", "full").returncode == 0
    passed = platform.tidefield("backup", "verify")
    assert passed.returncode == 0, passed.stderr
    assert "verified" in passed.stdout and "as recorded" in passed.stdout

    victim = _newest_backup_file(platform.data_dir / "backup")
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    try:
        failed = platform.tidefield("backup", "verify")
        assert failed.returncode == 1
        assert "verify FAILED" in failed.stderr and "checksum invalid: 1" in failed.stderr
    finally:
        victim.write_bytes(original)

    # the platform's files beside the backup are checked too
    label = json.loads(platform.tidefield("backup", "list", "--json").stdout)["backups"][-1][
        "label"]
    archive = platform.deployment().sidecar(label) / "platform.tar.gz"
    kept = archive.read_bytes()
    archive.write_bytes(kept[:-10] + b"0123456789")
    try:
        failed = platform.tidefield("backup", "verify")
        assert failed.returncode == 1
        assert "platform.tar.gz" in failed.stderr
    finally:
        archive.write_bytes(kept)
    with psycopg.connect(platform.url) as conn:
        outcomes = [r[0] for r in conn.execute(
            "SELECT ok FROM backup_runs WHERE action = 'verify' ORDER BY id")]
    assert outcomes == [True, False, False]


def test_verify_fails_when_the_restored_data_differs_from_what_was_recorded(platform):
    """A backup whose restore does not hold what was summed at its restore point (here:
    the recorded sums altered, as a restore that lost rows would show) fails the check."""
    deployment = platform.deployment()
    label = deployment.pgbackrest().info().newest.label
    mark_file = deployment.sidecar(label) / "mark.json"
    kept = mark_file.read_text()
    raw = json.loads(kept)
    raw["mark"]["chunks"][-1]["rows"] += 1
    mark_file.write_text(json.dumps(raw))
    try:
        failed = platform.tidefield("backup", "verify")
        assert failed.returncode == 1
        assert "differs from what was recorded" in failed.stderr
        assert f"expected {raw['mark']['chunks'][-1]['rows']}" in failed.stderr
    finally:
        mark_file.write_text(kept)
    # the scratch cluster is gone either way
    assert not list((platform.data_dir / "verify-scratch").glob("*/data"))


def test_a_command_that_meets_the_archivers_lock_waits_for_it(platform):
    """WAL archiving holds the stanza's archive lock for a moment at each segment; a
    stanza-create meeting it failed at once (exit 50), seen in CI when a restored cluster's
    first archive-push met `tidefield up`'s stanza-create. It now waits for the lock."""
    import fcntl
    import threading

    tool = platform.deployment().pgbackrest()
    lock_file = tool.work_dir / "lock" / f"{tool.stanza}-archive.lock"
    with open(lock_file, "a") as held:
        lock_file.chmod(0o666)  # pgBackRest, as the cluster's user, opens it too
        fcntl.flock(held, fcntl.LOCK_EX)
        released = threading.Timer(3.0, fcntl.flock, (held, fcntl.LOCK_UN))
        released.start()
        began = time.monotonic()
        try:
            tool.stanza_create()
        finally:
            released.cancel()
        waited = time.monotonic() - began
    assert waited >= 2.5  # it met the lock and waited for its release, then went on
