"""The audit log on a real database: one row per call, and no way to change or remove one."""

from __future__ import annotations

import psycopg
import pytest

from tidefield.server.security import audit
from tidefield.server.security.api_keys import Principal, Scope


def test_a_record_is_one_row_with_who_what_where_and_the_change(db_url):
    person = Principal(key_id=None, name="alice", scopes=frozenset({Scope.READ}),
                       sites=None, user_id=7, organisations=frozenset({3}))
    with psycopg.connect(db_url, autocommit=True) as conn:
        site = conn.execute("SELECT id FROM sites ORDER BY id LIMIT 1").fetchone()[0]
        row_id = audit.record(conn, actor=person, action="rule.changed", target="rule:hypoxia",
                              before={"limit": 3.0}, after={"limit": 2.5},
                              source_address="192.0.2.7", site_id=site)
        (entry,) = audit.entries(conn, organisations=None)
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 1
    assert entry.id == row_id and entry.actor == "alice" and entry.actor_user_id == 7
    assert entry.action == "rule.changed" and entry.target == "rule:hypoxia"
    assert entry.before == {"limit": 3.0} and entry.after == {"limit": 2.5}
    assert entry.source_address == "192.0.2.7"
    # readable by the actor's organisation and by the site's owner (the platform office)
    assert entry.organisation_ids == [1, 3]


def test_the_log_is_append_only_in_the_database(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        audit.record(conn, actor="system", action="sign_out", target="user:bob")
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        assert conn.execute("SELECT actor FROM audit_log").fetchall() == [("system",)]


def test_a_badly_named_action_is_refused_before_anything_is_written(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(ValueError, match="dotted lower-case"):
            audit.record(conn, actor="system", action="Sign In!", target="x")
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0


def test_entries_filter_by_family_and_organisation_and_export_as_csv(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        audit.record(conn, actor="a", action="sign_in.failed", target="user:a",
                     organisations=[5])
        audit.record(conn, actor="b", action="sign_in.succeeded", target="user:b",
                     organisations=[6])
        audit.record(conn, actor="c", action="api_key.created", target="key:1",
                     organisations=[5], after={"name": "gw, \"north\""})
        assert [e.actor for e in audit.entries(conn, organisations=None,
                                               action="sign_in.*")] == ["b", "a"]
        assert [e.actor for e in audit.entries(conn, organisations=[5])] == ["c", "a"]
        lines = "".join(audit.csv_lines(audit.entries(conn, organisations=[5]))).splitlines()
    assert lines[0] == "id,at,actor,action,target,source_address,before,after"
    assert len(lines) == 3 and '"{""name"": ""gw, \\""north\\""""}"' in lines[1]
