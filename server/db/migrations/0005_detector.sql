-- The detector service's checkpoints: one row per partition, written in the same
-- transaction as the anomalies and alert changes of the step it ends, so a process
-- stopped or killed at any point continues exactly where its last committed step did.
CREATE TABLE detector_checkpoints (
    partition           text PRIMARY KEY,       -- 'i/n': the sites with crc32(id) % n = i
    watermark           timestamptz NOT NULL,   -- every reading up to it has been scored
    state               bytea NOT NULL,         -- detector and rule state (NumPy .npz)
    -- alert_events (actor 'detector') of the partition's sites published on MQTT up to
    -- this id: the events table is the outbox, so a crash between commit and PUBACK
    -- publishes them again (at least once; the event id tells a repeat)
    published_event_id  bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
-- the state is compressed by the detector already
ALTER TABLE detector_checkpoints ALTER COLUMN state SET STORAGE EXTERNAL;
