-- Ingest: rollups kept exact by the ingest transaction, batch idempotency and sequence
-- tracking per device, and the device status that birth and last will messages feed.

-- Rollups hold count, sum, min, max and the last value (with its time, so late readings
-- that arrive after newer ones do not overwrite "last"). The ingest transaction upserts
-- them from the rows it really inserted, so they stay equal to an aggregate of raw rows.
CREATE TABLE readings_5m (
    series_id  integer NOT NULL,
    bucket     timestamptz NOT NULL,
    count      bigint NOT NULL,
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    last       double precision NOT NULL,
    last_time  timestamptz NOT NULL,
    PRIMARY KEY (series_id, bucket)
);
SELECT create_hypertable('readings_5m', by_range('bucket', INTERVAL '7 days'),
                         create_default_indexes => false);

CREATE TABLE readings_1h (LIKE readings_5m INCLUDING ALL);
SELECT create_hypertable('readings_1h', by_range('bucket', INTERVAL '30 days'),
                         create_default_indexes => false);

-- One row per telemetry message accepted: a re-delivered message (same device and seq)
-- is recognised before any of its rows are written.
CREATE TABLE ingest_batches (
    device_id    text NOT NULL,
    seq          bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    readings     integer NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX ingest_batches_received ON ingest_batches (received_at);

-- What operators need to tell "device silent" from "readings lost in transit":
-- missing batches = max_seq - min_seq + 1 - batches (every seq is counted once, thanks to
-- ingest_batches).
CREATE TABLE device_status (
    device_id        text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'unknown'
                     CHECK (state IN ('unknown', 'online', 'offline')),
    state_changed    timestamptz,
    birth_at         timestamptz,
    will_at          timestamptz,
    last_seen        timestamptz,      -- when the last message from it was received
    last_reading     timestamptz,      -- the newest reading time it sent
    min_seq          bigint,
    max_seq          bigint,
    batches          bigint NOT NULL DEFAULT 0,
    readings         bigint NOT NULL DEFAULT 0,
    rejected         bigint NOT NULL DEFAULT 0,
    reported_interval_s integer
);

CREATE VIEW device_sequence_gaps AS
SELECT device_id, max_seq - min_seq + 1 - batches AS missing_batches
FROM device_status WHERE max_seq IS NOT NULL;

-- The device a reject came from when it could be told, and a fingerprint of what was
-- refused, so a message re-delivered after a crash is not kept twice.
ALTER TABLE ingest_rejects ADD COLUMN device_id text;
ALTER TABLE ingest_rejects ADD COLUMN fingerprint bytea;
CREATE UNIQUE INDEX ingest_rejects_fingerprint ON ingest_rejects (fingerprint);
