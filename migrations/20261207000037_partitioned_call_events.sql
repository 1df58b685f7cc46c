-- Call events by month (docs/SCALING.md step 2, "Partitioned history"; src/history/):
-- `call_events` is range-partitioned on `occurred_at` like `audit_events` (migration 35), with the
-- same upkeep, and `switchboard maintenance partitions --call-event-retention-months N` drops
-- whole months of it.
--
-- Its primary key becomes (gateway_id, event_id, occurred_at): a unique key of a partitioned table
-- must hold the partition key. Ingest finds the events it needs without reading every month:
-- - a resend by its event id and its time, within a day either side (`calls::IDENTITY_SPAN`;
--   the ingest contract in call_events.proto says so): a resend carries the same time;
-- - a call's accepted history between the call's `offered_at` and `last_event_at`, which are its
--   first and last accepted event's times (the state machine keeps them so).
--
-- Calls recorded before migration 25 got `last_event_at` from their state times, which can be
-- earlier than their last accepted event (a hold in an unfinished call, say); they get it from
-- their events here, so that every accepted event of a call lies within those two times.

UPDATE calls c SET last_event_at = m.last_at
FROM (SELECT gateway_id, call_id, max(occurred_at) AS last_at
        FROM call_events WHERE outcome = 'accepted' GROUP BY 1, 2) m
WHERE c.gateway_id = m.gateway_id AND c.call_id = m.call_id
  AND c.last_event_at IS DISTINCT FROM m.last_at;

ALTER TABLE call_events RENAME TO call_events_unpartitioned;
ALTER INDEX call_events_pkey RENAME TO call_events_unpartitioned_pkey;
ALTER INDEX call_events_call_idx RENAME TO call_events_unpartitioned_call_idx;

CREATE TABLE call_events (
    gateway_id      text NOT NULL,
    event_id        text NOT NULL,
    call_id         text NOT NULL,
    type            text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    sequence        bigint NOT NULL DEFAULT 0,
    caller_number   text,
    dialed_number   text,
    queue           text,
    agent_id        text,
    target_agent_id text,
    target_queue    text,
    attached_data   jsonb NOT NULL DEFAULT '{}',
    -- The ack given, so that a resend gets the same one.
    outcome         text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reason          text NOT NULL DEFAULT '',
    received_at     timestamptz NOT NULL DEFAULT now(),
    payload_hash    bytea
) PARTITION BY RANGE (occurred_at);
CREATE TABLE call_events_default PARTITION OF call_events DEFAULT;

-- First the months that hold rows: they are analyzed below. The other months are made after the
-- ANALYZE, so that an empty month is never "analyzed and empty": a plan cached while a month is
-- empty and analyzed scans the whole month for ever after (until autovacuum analyzes it again;
-- the screen pop's last-call lookup did, and halved the call-event rate of a fresh database).
-- A month never analyzed is planned as ten pages at least, and gets index scans.
SELECT history_make_month('call_events', m::date)
  FROM (SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AS m FROM call_events_unpartitioned) months;

INSERT INTO call_events (gateway_id, event_id, call_id, type, occurred_at, sequence, caller_number,
    dialed_number, queue, agent_id, target_agent_id, target_queue, attached_data, outcome, reason,
    received_at, payload_hash)
SELECT gateway_id, event_id, call_id, type, occurred_at, sequence, caller_number, dialed_number,
    queue, agent_id, target_agent_id, target_queue, attached_data, outcome, reason, received_at,
    payload_hash
FROM call_events_unpartitioned;

ALTER TABLE call_events ADD CONSTRAINT call_events_pkey PRIMARY KEY (gateway_id, event_id, occurred_at);
CREATE INDEX call_events_call_idx ON call_events (gateway_id, call_id, occurred_at, sequence, event_id);

DROP TABLE call_events_unpartitioned;
ANALYZE call_events;

SELECT history_make_month('call_events', m::date)
  FROM generate_series(
         date_trunc('month', LEAST((SELECT min(occurred_at) FROM call_events), now()) AT TIME ZONE 'UTC'),
         date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
         interval '1 month') AS m;
