"""Shared fixtures: a private PostgreSQL+TimescaleDB cluster and a private Mosquitto,
each on a free port in a temporary folder, started once per test session and stopped at
its end. Tests get a fresh database cloned from a migrated template, so each starts from
the same state without paying for migrations again."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tidefield.protocol.registry import load_sites
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import MosquittoBroker, PostgresCluster

TEMPLATE_DB = "tidefield_template"
_db_counter = itertools.count()

# Small enough for a test machine that runs other things too.
TEST_PG_CONF = {"shared_buffers": "256MB", "max_wal_size": "2GB", "effective_cache_size": "2GB"}


def scratch_dir(prefix: str) -> Path:
    # /var/tmp rather than pytest's tmp_path: the postgres user must be able to reach it
    # (pytest's base folder is private to root).
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(scratch_dir("tidefield-test-pg-"), conf=TEST_PG_CONF)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def template_db(pg_cluster: PostgresCluster) -> str:
    """A database with the schema and the registry, used as the template of test DBs."""
    url = pg_cluster.create_database(TEMPLATE_DB)
    migrate(url)
    with psycopg.connect(url) as conn:
        load_registry(conn, load_sites())
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        # TimescaleDB's scheduler keeps a connection to every database with the
        # extension; a template must have none, so shut it out.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false")
                     .format(sql.Identifier(TEMPLATE_DB)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (TEMPLATE_DB,))
    return TEMPLATE_DB


@pytest.fixture
def db_url(pg_cluster: PostgresCluster, template_db: str) -> Iterator[str]:
    """A fresh database with schema and registry, dropped after the test."""
    name = f"test_{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


@pytest.fixture
def empty_db_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"empty_{os.getpid()}_{next(_db_counter)}"
    url = pg_cluster.create_database(name)
    yield url
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def broker() -> Iterator[MosquittoBroker]:
    """A broker shared by tests that do not stop it."""
    with MosquittoBroker(scratch_dir("tidefield-test-mqtt-")) as instance:
        yield instance


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    """A broker of the test's own, for tests that stop or restart it."""
    with MosquittoBroker(scratch_dir("tidefield-test-mqtt-")) as instance:
        yield instance
