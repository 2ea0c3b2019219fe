-- Poison quarantine: how many times ingest started on a message the broker delivered
-- again because it was never acknowledged (the process died while it was in flight).
-- Counted before each start and committed, so the count survives the crashes it counts;
-- a message whose starts alone pass the limit is kept as a reject (reason 'poison')
-- unread, and acknowledged. A row is deleted once its message is committed.
CREATE TABLE ingest_attempts (
    fingerprint  bytea PRIMARY KEY,   -- sha256 of topic and payload, as ingest_rejects'
    topic        text NOT NULL,
    attempts     integer NOT NULL,    -- starts, in a window or alone
    alone        integer NOT NULL DEFAULT 0,  -- starts alone: a crash then is its own
    first_at     timestamptz NOT NULL DEFAULT now(),
    last_at      timestamptz NOT NULL DEFAULT now()
);
