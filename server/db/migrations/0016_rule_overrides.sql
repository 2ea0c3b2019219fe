-- Live detection rules: per-site and per-kind changes of the bundled rules (rules.yaml
-- stays the default layer, TIDEFIELD_DETECT_RULES the file layer over it, these rows the
-- top). Append-only: each change is a new version of its (scope, target), the current
-- one is the newest; an empty `rules` object removes the overrides. A running detector
-- polls max(id) and rebinds its rules when it moves (server/detect/store.py).
CREATE TABLE rule_overrides (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('site', 'kind')),
    target      text NOT NULL,       -- a site id, or a site kind
    version     integer NOT NULL CHECK (version >= 1),
    rules       jsonb NOT NULL,      -- {rule name: {field: value}}, validated by the API
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text NOT NULL,
    UNIQUE (scope, target, version)
);
