-- Calls by month (docs/SCALING.md step 2, "Partitioned history"; src/history/): `calls` is
-- range-partitioned on `offered_at`, so KPI queries, which read calls by offer time, read only the
-- months they cover, and `switchboard maintenance partitions --call-retention-months N` drops
-- whole months of calls.
--
-- Its primary key becomes (gateway_id, call_id, offered_at). A call id now names a call among its
-- gateway's calls offered within a day of each other (`calls::IDENTITY_SPAN`; the ingest contract
-- in call_events.proto says so): an event belongs to the call of its id offered nearest to it
-- within a day, or starts a new call. Ingest finds a call by its id and the day around the event,
-- and writes it by its id and stored offer time.
--
-- `offered_at` becomes NOT NULL (every writer set it; a row without one takes its last event's
-- time). Each month keeps the fill factor of 80 that leaves room for the HOT updates of a call's
-- events (migration 33): a new month takes the storage parameters of the table's default
-- partition.

CREATE OR REPLACE FUNCTION history_make_month(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name    text := history_partition(parent, month);
    spare   text := parent || '_default';
    lo      text := to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi      text := to_char(month + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
    key     text;
    stray   boolean := false;
    options text[];
BEGIN
    IF month <> date_trunc('month', month)::date THEN
        RAISE EXCEPTION 'history_make_month: % is not the first day of a month', month;
    END IF;
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO STRICT key
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent::regclass;
    IF to_regclass(quote_ident(spare)) IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1::timestamptz AND %I < $2::timestamptz)',
                       spare, key, key)
           INTO stray USING lo, hi;
        SELECT reloptions INTO options FROM pg_class WHERE oid = to_regclass(quote_ident(spare));
    END IF;
    IF stray THEN
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name, parent);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1::timestamptz AND %I < $2::timestamptz RETURNING *) '
                       'INSERT INTO %I SELECT * FROM moved', spare, key, key, name)
           USING lo, hi;
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, name, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name, parent, lo, hi);
    END IF;
    IF options IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %I SET (%s)', name, array_to_string(options, ', '));
    END IF;
    RETURN true;
END $$;

UPDATE calls SET offered_at = COALESCE(last_event_at, updated_at) WHERE offered_at IS NULL;

ALTER TABLE calls RENAME TO calls_unpartitioned;
ALTER TABLE calls_unpartitioned RENAME CONSTRAINT calls_live_is_not_ended TO calls_unpartitioned_live_is_not_ended;
ALTER INDEX calls_pkey RENAME TO calls_unpartitioned_pkey;
ALTER INDEX calls_customer_chain_idx RENAME TO calls_unpartitioned_customer_chain_idx;
ALTER INDEX calls_customer_ended_idx RENAME TO calls_unpartitioned_customer_ended_idx;
ALTER INDEX calls_dialed_idx RENAME TO calls_unpartitioned_dialed_idx;
ALTER INDEX calls_live_idx RENAME TO calls_unpartitioned_live_idx;
ALTER INDEX calls_offered_idx RENAME TO calls_unpartitioned_offered_idx;

CREATE TABLE calls (
    gateway_id       text NOT NULL,
    call_id          text NOT NULL,
    state            text NOT NULL,
    outcome          text NOT NULL DEFAULT 'in_progress',
    caller_number    text,
    dialed_number    text,
    queue            text,
    current_agent    text,
    -- Agents on the call now (ringing, connected, held, conferenced): who gets pushed changes.
    on_call_agents   text[] NOT NULL DEFAULT '{}',
    -- Every agent who answered or joined, in order.
    handled_by       text[] NOT NULL DEFAULT '{}',
    transfers        integer NOT NULL DEFAULT 0,
    offered_at       timestamptz NOT NULL,
    queued_at        timestamptz,
    answered_at      timestamptz,
    ended_at         timestamptz,
    hold_ms          bigint NOT NULL DEFAULT 0,
    customer_id      uuid REFERENCES customers (id),
    event_count      integer NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    next_offered_at  timestamptz,
    team             text,
    last_event_at    timestamptz,
    prev_offered_at  timestamptz,
    transfer_ring_ms bigint NOT NULL DEFAULT 0,
    requeue_wait_ms  bigint NOT NULL DEFAULT 0,
    CONSTRAINT calls_live_is_not_ended
        CHECK ((ended_at IS NULL) = (state NOT IN ('ended', 'abandoned')))
) PARTITION BY RANGE (offered_at);
CREATE TABLE calls_default PARTITION OF calls DEFAULT WITH (fillfactor = 80);

-- First the months that hold rows: they are analyzed below. The other months are made after the
-- ANALYZE, so that an empty month is never "analyzed and empty": a plan cached while a month is
-- empty and analyzed scans the whole month for ever after (until autovacuum analyzes it again;
-- the screen pop's last-call lookup did, and halved the call-event rate of a fresh database).
-- A month never analyzed is planned as ten pages at least, and gets index scans.
SELECT history_make_month('calls', m::date)
  FROM (SELECT DISTINCT date_trunc('month', offered_at AT TIME ZONE 'UTC') AS m FROM calls_unpartitioned) months;

INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, dialed_number, queue,
    current_agent, on_call_agents, handled_by, transfers, offered_at, queued_at, answered_at,
    ended_at, hold_ms, customer_id, event_count, updated_at, next_offered_at, team, last_event_at,
    prev_offered_at, transfer_ring_ms, requeue_wait_ms)
SELECT gateway_id, call_id, state, outcome, caller_number, dialed_number, queue, current_agent,
    on_call_agents, handled_by, transfers, offered_at, queued_at, answered_at, ended_at, hold_ms,
    customer_id, event_count, updated_at, next_offered_at, team, last_event_at, prev_offered_at,
    transfer_ring_ms, requeue_wait_ms
FROM calls_unpartitioned;

ALTER TABLE calls ADD CONSTRAINT calls_pkey PRIMARY KEY (gateway_id, call_id, offered_at);
CREATE INDEX calls_customer_chain_idx ON calls (customer_id, offered_at, gateway_id, call_id)
    WHERE customer_id IS NOT NULL;
CREATE INDEX calls_customer_ended_idx ON calls (customer_id, ended_at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX calls_dialed_idx ON calls (dialed_number, offered_at);
CREATE INDEX calls_live_idx ON calls (offered_at) WHERE ended_at IS NULL;
CREATE INDEX calls_offered_idx ON calls (offered_at);

-- The triggers of migrations 16, 18, 28 and 34, on the new table (their functions are unchanged).
CREATE TRIGGER calls_chain_insert AFTER INSERT ON calls
    FOR EACH ROW WHEN (NEW.customer_id IS NOT NULL)
    EXECUTE FUNCTION calls_note_chain();
CREATE TRIGGER calls_chain_update AFTER UPDATE OF customer_id, offered_at ON calls
    FOR EACH ROW WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id
                       OR OLD.offered_at IS DISTINCT FROM NEW.offered_at)
    EXECUTE FUNCTION calls_note_chain();
CREATE TRIGGER calls_chain_delete AFTER DELETE ON calls
    FOR EACH ROW WHEN (OLD.customer_id IS NOT NULL)
    EXECUTE FUNCTION calls_note_chain();
CREATE TRIGGER calls_chain_end AFTER UPDATE OF ended_at ON calls
    FOR EACH ROW WHEN (NEW.customer_id IS NOT NULL
                       AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
                       AND NEW.ended_at < NEW.offered_at + interval '60 seconds')
    EXECUTE FUNCTION calls_note_chain_end();
CREATE TRIGGER calls_kpi_ins AFTER INSERT ON calls REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kpi_note_calls();
CREATE TRIGGER calls_kpi_upd AFTER UPDATE ON calls REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kpi_note_calls();
CREATE TRIGGER calls_kpi_del AFTER DELETE ON calls REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION kpi_note_calls();

-- Migration 34's function, whose SQL body names `calls` (so it depended on the old table).
CREATE OR REPLACE FUNCTION kpi_first_day() RETURNS date LANGUAGE sql STABLE
    RETURN LEAST((SELECT kpi_day(min(offered_at)) FROM calls),
                 (SELECT kpi_day(min(at)) FROM campaign_attempts),
                 (SELECT kpi_day(min(at)) FROM agent_state_changes),
                 kpi_day(now()));

DROP TABLE calls_unpartitioned;
ANALYZE calls;

SELECT history_make_month('calls', m::date)
  FROM generate_series(
         date_trunc('month', LEAST((SELECT min(offered_at) FROM calls), now()) AT TIME ZONE 'UTC'),
         date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
         interval '1 month') AS m;
