-- Back to the field (issue 20): each device's configuration twin and the commands sent
-- to it. The API writes what people want; the control service (server/control/) sends it
-- over MQTT and stores what the devices answer.

-- The configuration twin: one row per device that was configured or reported; the
-- desired version only grows (null: never configured, only reported). ``published_version``
-- is the version the control service last published (retained) to the device's
-- down/config; ``reported_*`` is what the device answered on reply/config.
CREATE TABLE device_config (
    device_id          text PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    desired_version    integer CHECK (desired_version >= 1),
    desired            jsonb,
    desired_at         timestamptz,
    desired_by         text,
    published_version  integer NOT NULL DEFAULT 0,
    reported_version   integer,
    reported           jsonb,
    reported_at        timestamptz,
    reported_error     text,           -- why the device refused a desired version
    agent_version      text            -- the release its agent runs (gateways)
);
CREATE INDEX device_config_unpublished ON device_config (device_id)
    WHERE published_version < desired_version;

-- Commands. ``id`` is the idempotency key the device sees (unique per platform, so per
-- device too). ``state`` moves pending -> sent -> delivered -> done | failed, or to
-- expired (the device refused it late, or no answer came before ``expires_at``).
CREATE TABLE device_commands (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{8,64}$'),
    device_id    text NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    site_id      text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    action       text NOT NULL,
    params       jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sent', 'delivered', 'done', 'failed', 'expired')),
    reason       text,
    value        double precision,
    issued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    issued_by    text NOT NULL,
    sent_at      timestamptz,
    delivered_at timestamptz,
    finished_at  timestamptz,
    CHECK (expires_at > issued_at)
);
CREATE INDEX device_commands_device ON device_commands (device_id, issued_at DESC);
CREATE INDEX device_commands_site ON device_commands (site_id, issued_at DESC);
CREATE INDEX device_commands_open ON device_commands (state)
    WHERE state IN ('pending', 'sent', 'delivered');
