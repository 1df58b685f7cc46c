-- The sequencer looked for unnumbered events with the partial index on `position IS NULL`, from
-- its start, every 50 ms on every instance (and counted them for the outbox-lag metric). Every
-- numbered event leaves a dead entry at the front of that index until VACUUM reaches the (large)
-- table, so the scans grew with the traffic since the last vacuum: 2,851 pages and 16 ms each,
-- a third of a core, on the benchmark database.
--
-- `settled_through` is an id below which every event is numbered or was rolled back, so the
-- scans start there. The sequencer advances it (src/feed/store.rs): each pass reads the id
-- sequence before its transaction gets an id; once no transaction older than the pass runs any
-- more, and a numbering statement numbered everything it saw, no id up to that value can still
-- appear. That needs each writer to hold a transaction id before it draws an event id, which
-- `feed_event_id()` guarantees.

ALTER TABLE feed_head ADD COLUMN settled_through bigint NOT NULL DEFAULT 0;

CREATE FUNCTION feed_event_id() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('feed_events_id_seq');
END $$;

DO $$
DECLARE
    next_id bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_id
    FROM feed_events_id_seq;
    ALTER TABLE feed_events ALTER COLUMN id DROP IDENTITY;
    CREATE SEQUENCE feed_events_id_seq OWNED BY feed_events.id;
    PERFORM setval('feed_events_id_seq', next_id, false);
    ALTER TABLE feed_events ALTER COLUMN id SET DEFAULT feed_event_id();
END $$;
