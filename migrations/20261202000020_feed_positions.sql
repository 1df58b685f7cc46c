-- Positions move out of `feed_events` into a narrow table of their own.
--
-- Numbering an event used to `UPDATE feed_events SET position`: a new version of the whole row
-- (its JSON data written to the WAL again), a new entry in each of its three indexes, and a dead
-- row for VACUUM. PostgreSQL's statement log put it at about 48 us per event, half a core at
-- 10,000 call events a second. Now the sequencer inserts one narrow `(position, event_id)` row,
-- and an event row is written once. An event without a row here is not numbered yet. The
-- sequencer finds those above `feed_head.settled_through` with the unique index on `event_id`,
-- which also makes numbering one event twice impossible.

CREATE TABLE feed_positions (
    position bigint PRIMARY KEY,
    event_id bigint NOT NULL UNIQUE
);

INSERT INTO feed_positions (position, event_id)
SELECT position, id FROM feed_events WHERE position IS NOT NULL;

-- Drops the column's unique index and the partial index on unnumbered events with it.
ALTER TABLE feed_events DROP COLUMN position;
