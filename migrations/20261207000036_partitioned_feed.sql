-- The event feed's rows by month (docs/SCALING.md step 2, "Partitioned history";
-- src/feed/retention.rs): `feed_events` is range-partitioned on `created_at` like
-- `audit_events` (migration 35), with the same upkeep. Retention stays the sequencer's:
-- positions older than `--feed-retention-secs` are pruned as before (narrow rows), and a month of
-- events goes whole, with one DROP, once every event in it is numbered and no position left
-- points into it. Its primary key becomes (id, created_at); `id` still comes from
-- `feed_event_id()`, so it stays unique and keeps the sequencer's order.

ALTER TABLE feed_events RENAME TO feed_events_unpartitioned;
ALTER INDEX feed_events_pkey RENAME TO feed_events_unpartitioned_pkey;
ALTER INDEX feed_events_customer_idx RENAME TO feed_events_unpartitioned_customer_idx;

CREATE TABLE feed_events (
    id          bigint NOT NULL DEFAULT feed_event_id(),
    topic       text NOT NULL,
    type        text NOT NULL,
    subject_id  text NOT NULL,
    customer_id uuid,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE feed_events_id_seq OWNED BY feed_events.id;
CREATE TABLE feed_events_default PARTITION OF feed_events DEFAULT;

SELECT history_make_month('feed_events', m::date)
  FROM generate_series(
         date_trunc('month', LEAST((SELECT min(created_at) FROM feed_events_unpartitioned), now()) AT TIME ZONE 'UTC'),
         date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
         interval '1 month') AS m;

INSERT INTO feed_events (id, topic, type, subject_id, customer_id, data, created_at)
SELECT id, topic, type, subject_id, customer_id, data, created_at FROM feed_events_unpartitioned;

ALTER TABLE feed_events ADD CONSTRAINT feed_events_pkey PRIMARY KEY (id, created_at);
-- Erasing a customer scrubs their events.
CREATE INDEX feed_events_customer_idx ON feed_events (customer_id) WHERE customer_id IS NOT NULL;

DROP TABLE feed_events_unpartitioned;
ANALYZE feed_events;
