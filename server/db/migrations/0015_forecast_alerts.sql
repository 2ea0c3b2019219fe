-- Early warnings: alerts of category 'forecast' (a forecast rule's warning that a
-- threshold will be crossed; server/detect/forecast), escalated by the alert they foretold
-- (closed when it opens, `escalated_to` naming its rule), and the automatic responses
-- rules attach to warnings and alerts (server/detect/responses.py).
ALTER TABLE alerts DROP CONSTRAINT alerts_category_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_category_check
    CHECK (category IN ('fault', 'event', 'forecast'));
ALTER TABLE alerts ADD COLUMN escalated_to text;
