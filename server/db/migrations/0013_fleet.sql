-- Operators run the fleet from the product (issue 22): retiring sites and devices,
-- maintenance windows, and operators' feedback on alerts.

-- Retired: kept with all its history, but no longer expected to report (the overview and
-- the health page leave it out; ingest still stores what it sends, nothing is lost).
ALTER TABLE sites ADD COLUMN retired_at timestamptz;
ALTER TABLE devices ADD COLUMN retired_at timestamptz;
ALTER TABLE devices ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();

-- A technician's maintenance: a whole site (device_id NULL) or one device, for a period.
-- Readings in the period are flagged (export), the detector holds the alerts it would
-- open in it, and the charts shade it. Ended early by setting ends_at; never deleted.
CREATE TABLE maintenance_windows (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device_id       text REFERENCES devices (id) ON DELETE CASCADE,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    reason          text NOT NULL DEFAULT '',
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX maintenance_windows_site ON maintenance_windows (site_id, ends_at DESC);
CREATE INDEX maintenance_windows_device ON maintenance_windows (device_id, ends_at DESC)
    WHERE device_id IS NOT NULL;

-- What an operator says an alert was. Every verdict is kept (an operator may change their
-- mind); the newest one per alert is the alert's verdict in reports.
CREATE TABLE alert_feedback (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    verdict         text NOT NULL CHECK (verdict IN ('real', 'false_alarm',
                                                     'sensor_fault_fixed')),
    note            text NOT NULL DEFAULT '',
    actor           text NOT NULL,
    actor_user_id   integer,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_feedback_alert ON alert_feedback (alert_id, id DESC);

