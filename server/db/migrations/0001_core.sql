-- The core schema: the registry (sites, devices, metrics, series), the readings
-- hypertable, and the rejects that ingest keeps instead of dropping.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name_zh     text NOT NULL,
    name_en     text NOT NULL,
    kind        text NOT NULL,
    domain      text NOT NULL CHECK (domain IN ('agriculture', 'ocean')),
    district    text NOT NULL,
    lat         double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_kind ON sites (kind);
CREATE INDEX sites_district ON sites (district);

CREATE TABLE metrics (
    name          text PRIMARY KEY,
    unit          text NOT NULL,
    physical_min  double precision NOT NULL,
    physical_max  double precision NOT NULL,
    typical_min   double precision NOT NULL,
    typical_max   double precision NOT NULL,
    resolution    double precision NOT NULL,
    name_zh       text NOT NULL,
    name_en       text NOT NULL,
    circular      boolean NOT NULL DEFAULT false
);

CREATE TABLE devices (
    id          text PRIMARY KEY,
    site_id     text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    template    text NOT NULL,
    model       text NOT NULL,
    interval_s  integer NOT NULL CHECK (interval_s > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_site ON devices (site_id);

-- A series is one metric of one device; readings refer to it by a small integer.
CREATE TABLE series (
    id         integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    metric     text NOT NULL REFERENCES metrics (name),
    UNIQUE (device_id, metric)
);

-- Narrow on purpose: 16 bytes of payload per row. No foreign key to series, since a
-- per-row check would slow every COPY; ingest only writes ids it resolved from series.
CREATE TABLE readings (
    series_id  integer NOT NULL,
    time       timestamptz NOT NULL,
    value      double precision NOT NULL
);
SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'),
                         create_default_indexes => false);
-- One row per series and instant: a re-delivered reading cannot be stored twice, and
-- per-series time-range scans use this index.
CREATE UNIQUE INDEX readings_series_time ON readings (series_id, time DESC);

-- Nothing from outside is dropped: what ingest refuses is kept here with its reason.
CREATE TABLE ingest_rejects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text,
    payload      bytea,
    reason       text NOT NULL,
    detail       text NOT NULL
);
CREATE INDEX ingest_rejects_received ON ingest_rejects (received_at);
CREATE INDEX ingest_rejects_reason ON ingest_rejects (reason, received_at);
