-- API keys: the secret is shown once at creation and only its SHA-256 is stored (keys are
-- 32 random bytes, so a fast hash is as safe as a slow one). A key has scopes (read,
-- ingest, admin) and, optionally, the only sites it may see.
CREATE TABLE api_keys (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix      text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL,
    name        text NOT NULL,
    scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'ingest', 'admin']),
    sites       text[],
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
