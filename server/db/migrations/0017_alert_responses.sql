-- Suggested responses an operator can act on (issue 21): a rule's response in `suggest`
-- mode (or an automatic one held back by its limits) is stored here, not only noted in the
-- alert's history, so the dashboard, the API and a message's link can confirm it.
-- ``command_id`` is fixed when the suggestion is made (derived from the alert and the
-- instant, as for an automatic run): confirming twice, from two places at once, or after a
-- crash, issues one command. ``state`` moves suggested -> confirmed | expired (the alert
-- closed first) | superseded (the actuator was switched for this site another way: an
-- automatic run, or another suggestion of it confirmed).
CREATE TABLE alert_responses (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    site_id       text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    device_id     text NOT NULL,       -- not a foreign key: a retired device is refused on confirm
    actuator      text NOT NULL,
    duration_s    integer NOT NULL CHECK (duration_s > 0),
    command_id    text NOT NULL UNIQUE,
    reason        text NOT NULL,       -- why it was only suggested (suggest mode, cool-down...)
    suggested_at  timestamptz NOT NULL,
    state         text NOT NULL DEFAULT 'suggested'
                  CHECK (state IN ('suggested', 'confirmed', 'expired', 'superseded')),
    confirmed_by  text,
    confirmed_at  timestamptz,
    confirmed_via text,                -- 'api', or the channel of a message's link
    ended_at      timestamptz,         -- when it expired or was superseded
    superseded_by text,                -- the command that took its place
    CHECK ((state = 'confirmed') = (confirmed_at IS NOT NULL)),
    CHECK ((state IN ('expired', 'superseded')) = (ended_at IS NOT NULL))
);
CREATE INDEX alert_responses_alert ON alert_responses (alert_id);
CREATE INDEX alert_responses_waiting ON alert_responses (site_id, actuator)
    WHERE state = 'suggested';

-- Whoever closes an alert (the detector's sink, a rule removed live, a repair by hand),
-- its waiting suggestions expire with it: a trigger, so no writer of alerts can forget.
CREATE FUNCTION alert_responses_expire() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE alert_responses SET state = 'expired', ended_at = coalesce(NEW.closed_at, now())
    WHERE alert_id = NEW.id AND state = 'suggested';
    RETURN NULL;
END $$;
CREATE TRIGGER alerts_closing_expires_responses AFTER UPDATE OF state ON alerts
    FOR EACH ROW WHEN (NEW.state = 'closed' AND OLD.state <> 'closed')
    EXECUTE FUNCTION alert_responses_expire();

-- A message's one-time link confirms one suggested response (a token with a response)
-- or acknowledges (without): the same tokens, hashing, expiry and single use.
ALTER TABLE notify_ack_tokens
    ADD COLUMN response_id bigint REFERENCES alert_responses (id) ON DELETE CASCADE;
