-- Notifications (issue 18): who is told of which alert, through what, and what happened.
-- The notifier reads alert_events (the outbox the detector and the API already write)
-- behind a cursor, plans deliveries (one row per event and contact: the idempotency key),
-- sends them and logs every attempt.

-- A cursor over alert_events by id alone would skip an event whose transaction committed
-- after one with a higher id (two detector partitions, an acknowledgement, commit in any
-- order). Each event records its transaction; the notifier reads in (tx, id) order only
-- events whose transaction is older than every transaction still running
-- (pg_snapshot_xmin), so no event can appear later behind the cursor.
ALTER TABLE alert_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX alert_events_tx ON alert_events (tx, id);

-- A contact is one way to reach someone: a person's mail box or phone, or a group chat's
-- robot. ``url`` is an Apprise URL (wecombot://, dingtalk://, feishu://, mailtos://,
-- a provider's SMS over json://...) or tfhook(s):// (the signed JSON webhook); it holds
-- the secrets, so the API never returns it (only its scheme and host).
CREATE TABLE notify_contacts (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  integer NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name <> ''),
    url              text NOT NULL CHECK (url ~ '^[a-z][a-z0-9+.-]*://'),
    language         text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
    -- quiet hours, local time in ``timezone``; critical alerts are sent anyway
    quiet_start      time,
    quiet_end        time,
    timezone         text NOT NULL DEFAULT 'Asia/Shanghai',
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, name),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

CREATE TABLE notify_groups (
    id               integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  integer NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name <> ''),
    UNIQUE (organisation_id, name)
);

CREATE TABLE notify_group_members (
    group_id    integer NOT NULL REFERENCES notify_groups (id) ON DELETE CASCADE,
    contact_id  integer NOT NULL REFERENCES notify_contacts (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, contact_id)
);

-- A route sends the alerts it matches (every non-null condition must hold) of its
-- organisation's sites to a group. Tier 0 is told when the alert opens; tier n when it
-- is still unacknowledged ``escalate_after_minutes`` after tier n-1 was told.
CREATE TABLE notify_routes (
    id                      integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id         integer NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name                    text NOT NULL CHECK (name <> ''),
    group_id                integer NOT NULL REFERENCES notify_groups (id) ON DELETE CASCADE,
    site_ids                text[],
    kinds                   text[],
    districts               text[],
    severities              text[],
    categories              text[],
    rules                   text[],
    tier                    integer NOT NULL DEFAULT 0 CHECK (tier BETWEEN 0 AND 9),
    escalate_after_minutes  double precision CHECK (escalate_after_minutes > 0),
    remind_every_minutes    double precision CHECK (remind_every_minutes > 0),
    digest                  text NOT NULL DEFAULT 'none'
                            CHECK (digest IN ('none', 'hourly', 'daily')),
    enabled                 boolean NOT NULL DEFAULT true,
    UNIQUE (organisation_id, name)
);

-- Alerts of one rule opening across sites close in time and space: one incident.
CREATE TABLE notify_incidents (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  integer NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    rule             text NOT NULL,
    opened_at   timestamptz NOT NULL,
    joined_at   timestamptz NOT NULL,        -- when the latest site joined
    closed_at   timestamptz                  -- when its last alert closed
);
CREATE INDEX notify_incidents_open ON notify_incidents (rule) WHERE closed_at IS NULL;

CREATE TABLE notify_incident_alerts (
    alert_id     bigint PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE,
    incident_id  bigint NOT NULL REFERENCES notify_incidents (id) ON DELETE CASCADE
);
CREATE INDEX notify_incident_alerts_incident ON notify_incident_alerts (incident_id);

-- One row per message to send: ``key`` is the idempotency key receivers see, unique per
-- (event, contact) (or per reminder, escalation, digest), so planning twice plans once.
-- Rows of one (contact, alert) are sent in id order; a row is 'pending' until its
-- channel took it ('sent'), or folded into a digest ('held' -> 'digested').
CREATE TABLE notify_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text NOT NULL UNIQUE,
    contact_id   integer NOT NULL REFERENCES notify_contacts (id) ON DELETE CASCADE,
    alert_id     bigint REFERENCES alerts (id) ON DELETE CASCADE,
    event_id     bigint,
    incident_id  bigint REFERENCES notify_incidents (id) ON DELETE CASCADE,
    route_id     integer REFERENCES notify_routes (id) ON DELETE SET NULL,
    kind         text NOT NULL CHECK (kind IN ('opened', 'updated', 'acknowledged', 'closed',
                                               'reminder', 'escalation', 'digest')),
    tier         integer NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sent', 'held', 'digested')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL DEFAULT now(),   -- quiet hours and backoff move it
    attempts     integer NOT NULL DEFAULT 0,
    sent_at      timestamptz,
    body         jsonb                                -- a digest's items
);
CREATE INDEX notify_deliveries_due ON notify_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX notify_deliveries_alert ON notify_deliveries (alert_id, contact_id, id);
CREATE INDEX notify_deliveries_held ON notify_deliveries (contact_id) WHERE status = 'held';

-- The delivery log: every attempt, its outcome and how long the channel took.
CREATE TABLE notify_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  bigint NOT NULL REFERENCES notify_deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    latency_ms   double precision NOT NULL,
    error        text              -- never holds a contact's URL (secrets)
);
CREATE INDEX notify_attempts_delivery ON notify_attempts (delivery_id);
CREATE INDEX notify_attempts_at ON notify_attempts (at DESC);

-- The planner's cursor over alert_events (one row), moved in the transaction that plans.
CREATE TABLE notify_cursor (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    tx         xid8 NOT NULL,
    event_id   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Acknowledge from the phone: a message's link carries a random token (128 bits); only
-- its SHA-256 is stored. It acknowledges one alert as one contact, once, before expiry.
CREATE TABLE notify_ack_tokens (
    token_hash   bytea PRIMARY KEY,
    alert_id     bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    incident_id  bigint REFERENCES notify_incidents (id) ON DELETE CASCADE,  -- all its alerts
    contact_id   integer NOT NULL REFERENCES notify_contacts (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);
CREATE INDEX notify_ack_tokens_expiry ON notify_ack_tokens (expires_at);

-- Who acknowledged through which channel (the dashboard and API show it).
ALTER TABLE alerts ADD COLUMN acknowledged_via text;

-- When a message may go to a contact: at once, or, inside the contact's quiet hours
-- (local time), when they end.
CREATE FUNCTION notify_quiet_until(at timestamptz, quiet_start time, quiet_end time,
                                   zone text) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN quiet_start IS NULL OR quiet_start = quiet_end THEN at
        WHEN quiet_start < quiet_end THEN
            CASE WHEN (at AT TIME ZONE zone)::time >= quiet_start
                  AND (at AT TIME ZONE zone)::time < quiet_end
                 THEN ((at AT TIME ZONE zone)::date + quiet_end) AT TIME ZONE zone
                 ELSE at END
        WHEN (at AT TIME ZONE zone)::time >= quiet_start
            THEN ((at AT TIME ZONE zone)::date + 1 + quiet_end) AT TIME ZONE zone
        WHEN (at AT TIME ZONE zone)::time < quiet_end
            THEN ((at AT TIME ZONE zone)::date + quiet_end) AT TIME ZONE zone
        ELSE at END
$$;
