-- The event feed: every domain change writes a row here in its own transaction (the outbox).
-- Rows are written without a position; the sequencer (one instance at a time, holding the lock
-- on feed_head's row) numbers committed rows in id order, so positions only ever grow among
-- committed rows and a reader that resumes after position P never misses a row.

CREATE TABLE feed_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    position    bigint UNIQUE,
    topic       text NOT NULL,
    type        text NOT NULL,
    subject_id  text NOT NULL,
    customer_id uuid,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- What the sequencer has yet to number: small, and empty most of the time.
CREATE INDEX feed_events_unsequenced_idx ON feed_events (id) WHERE position IS NULL;
-- Erasing a customer scrubs their events.
CREATE INDEX feed_events_customer_idx ON feed_events (customer_id) WHERE customer_id IS NOT NULL;

CREATE TABLE feed_head (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The highest position handed out.
    position       bigint NOT NULL DEFAULT 0,
    -- Every position up to this one has been deleted by retention.
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO feed_head DEFAULT VALUES;
