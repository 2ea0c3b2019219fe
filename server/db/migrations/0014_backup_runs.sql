-- What the platform's own operations did: each backup (pgBackRest's label, kind, size)
-- and each `tidefield backup verify`, with its outcome. /metrics and `tidefield status`
-- read the newest success of each (an operator alerted on a backup too old need not
-- reach the repository to see it). The repository stays the truth about what exists;
-- this is the record of what was attempted and how it went.
CREATE TABLE backup_runs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text NOT NULL CHECK (action IN ('backup', 'verify')),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    ok           boolean NOT NULL,
    label        text,               -- pgBackRest's backup label (verify: the one checked)
    kind         text CHECK (kind IN ('full', 'diff', 'incr')),
    database_bytes    bigint,
    repository_bytes  bigint,
    detail       text NOT NULL DEFAULT ''
);
CREATE INDEX backup_runs_newest ON backup_runs (action, ok, finished_at DESC);
