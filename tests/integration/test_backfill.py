"""The simulated backfill of `tidefield up`, against the real database."""

from __future__ import annotations

import psycopg

from tidefield.protocol.registry import load_sites
from tidefield.server.backfill import backfill, latest_history_ms
from tidefield.sim.fleet import Fleet

from .test_ingest_store import rollups_match_raw

HOUR = 3_600_000
START = 1_795_000_000_000 // HOUR * HOUR


def test_backfill_writes_every_reading_once_with_rollups(db_url):
    sites = [s for s in load_sites() if s.kind in ("cage_farm", "greenhouse")][:3]
    fleet = Fleet(sites, seed=5)
    expected = fleet.generate(START, START + 3 * HOUR)
    seen = []
    result = backfill(db_url, fleet, START, START + 3 * HOUR, window_ms=HOUR // 2,
                      progress=lambda n, done: seen.append((n, done)))
    assert result.generated == len(expected) == result.inserted > 0
    assert [done for _, done in seen] == [HOUR // 2 * k for k in range(1, 7)]
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*), sum(value) FROM readings").fetchone()
        assert stored[0] == len(expected)
        assert abs(stored[1] - expected.value.sum()) < 1e-6 * abs(expected.value.sum())
        rollups_match_raw(conn)
        # no message was received: sequence bookkeeping is untouched
        assert conn.execute("SELECT count(*) FROM ingest_batches").fetchone()[0] == 0
        assert latest_history_ms(conn, START) == int(expected.time_ms.max())
    again = backfill(db_url, fleet, START, START + 3 * HOUR)
    assert again.inserted == 0 and again.generated == len(expected)


def test_latest_history_is_none_on_an_empty_database(db_url):
    with psycopg.connect(db_url) as conn:
        assert latest_history_ms(conn, START) is None
