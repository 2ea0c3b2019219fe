-- Broker logins: one per provisioned device (its id is its user name) and one per
-- platform service (ingest, api, detector, dashboards, simulator). The password is shown once
-- and only its Mosquitto hash is kept (PBKDF2-SHA512, "$7$" format), so the broker's
-- password file is written from this table without any secret being stored.
CREATE TABLE mqtt_credentials (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL,
    device_id      text REFERENCES devices (id) ON DELETE CASCADE,
    service        text,  -- a role of tidefield.server.security.accounts.SERVICES
    password_hash  text NOT NULL CHECK (password_hash LIKE '$7$%'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    -- a login is either a device's or a service's, never both
    CHECK ((device_id IS NULL) <> (service IS NULL))
);
-- Revoked logins stay for the record; a name has at most one active login.
CREATE UNIQUE INDEX mqtt_credentials_active ON mqtt_credentials (username)
    WHERE revoked_at IS NULL;

-- A message refused by the per-device rate limit is counted, not stored one by one (a
-- flood of rejects would itself be a flood): one row per device and ingest transaction
-- keeps the first refused message as a sample, and `messages` says how many it stands for.
ALTER TABLE ingest_rejects ADD COLUMN messages integer NOT NULL DEFAULT 1 CHECK (messages > 0);
