-- Detection: scored anomalies (one row per reading the detector found anomalous) and
-- alerts with a lifecycle (open -> acknowledged -> closed), with every change recorded.

-- Only anomalous readings are stored (score at or above the detector's threshold), so
-- the table stays a small fraction of readings. Re-scoring the same reading overwrites.
CREATE TABLE anomalies (
    series_id  integer NOT NULL,
    time       timestamptz NOT NULL,
    value      double precision NOT NULL,   -- NaN when the reading was missing or invalid
    score      real NOT NULL CHECK (score BETWEEN 0 AND 1),
    component  text NOT NULL,               -- range, stuck, spike, shift, drift, seasonal, cross
    category   text NOT NULL CHECK (category IN ('fault', 'event')),
    PRIMARY KEY (series_id, time)
);
SELECT create_hypertable('anomalies', by_range('time', INTERVAL '7 days'));
CREATE INDEX anomalies_time ON anomalies (time DESC);

-- An alert is one episode of one condition (a rule such as hypoxia, or a sensor fault) at
-- one site, optionally tied to a device and a series. At most one alert per condition is
-- active (not closed) at a time: the detector updates it instead of opening another.
CREATE TABLE alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id          text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device_id        text REFERENCES devices (id) ON DELETE CASCADE,
    series_id        integer,
    rule             text NOT NULL,      -- hypoxia, frost_risk, storm_wind, no_data, sensor_fault...
    category         text NOT NULL CHECK (category IN ('fault', 'event')),
    severity         text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state            text NOT NULL DEFAULT 'open'
                     CHECK (state IN ('open', 'acknowledged', 'closed')),
    message          text NOT NULL,
    opened_at        timestamptz NOT NULL,   -- time of the first reading meeting the condition
    updated_at       timestamptz NOT NULL,   -- time of the latest reading still meeting it
    closed_at        timestamptz,            -- time of the reading that cleared it
    value            double precision,       -- latest value behind the alert
    peak_value       double precision,       -- the worst value of the episode
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    ack_comment      text,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
);
CREATE UNIQUE INDEX alerts_one_active
    ON alerts (site_id, rule, coalesce(device_id, ''), coalesce(series_id, 0))
    WHERE state <> 'closed';
CREATE INDEX alerts_site_opened ON alerts (site_id, opened_at DESC);
CREATE INDEX alerts_state_opened ON alerts (state, opened_at DESC);

-- The history operators see on an alert: who did what, and when.
CREATE TABLE alert_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    action    text NOT NULL CHECK (action IN ('opened', 'updated', 'acknowledged', 'closed')),
    actor     text NOT NULL,                 -- 'detector', or the API key's name
    note      text,
    value     double precision
);
CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- Acknowledging an alert is an operator's act: a scope of its own, between read and admin.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check
    CHECK (scopes <@ ARRAY['read', 'ingest', 'operate', 'admin']);
