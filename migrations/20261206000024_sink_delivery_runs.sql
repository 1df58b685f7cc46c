-- A delivery-log row is a run: consecutive events of one sink delivered on their first attempt
-- with the same status, from `position` through `through_position`, `events` of them. Any other
-- attempt (a failure, or a success after failures) stays a row of its own (events = 1). This
-- keeps "what was sent, and how it went" complete while a sink writes a row per page, not one
-- per event: a second row for every event pushed was as much writing as the feed event itself.
ALTER TABLE feed_sink_deliveries
    ADD COLUMN through_position bigint,
    ADD COLUMN events integer NOT NULL DEFAULT 1 CHECK (events >= 1);

UPDATE feed_sink_deliveries SET through_position = position WHERE through_position IS NULL;

ALTER TABLE feed_sink_deliveries
    ALTER COLUMN through_position SET NOT NULL;
