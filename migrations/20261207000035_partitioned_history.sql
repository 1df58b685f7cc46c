-- Partitioned history (docs/SCALING.md step 3, src/history/): a table that only grows is
-- range-partitioned by UTC month with PostgreSQL's native partitioning, one partition per month
-- named `<table>_pYYYY_MM`, plus `<table>_default` for a row no month partition takes (a clock far
-- off, or upkeep that failed for months). Retention drops whole months, and a query over a time
-- range reads only the months it covers.
--
-- The service makes the months ahead (the current one and the next two, at start-up and every
-- hour), and so does `switchboard maintenance partitions`, which also applies retention. Both call
-- the two functions below, which are the only DDL on partitions.
--
-- This migration converts `audit_events`. Its primary key becomes (id, at): a unique key of a
-- partitioned table must hold the partition key. `id` still comes from the one sequence, so it
-- stays unique and keeps ordering `ListAuditEvents`' pages.

-- The partition of `parent` for the month starting `month`.
CREATE FUNCTION history_partition(parent text, month date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT parent || '_p' || to_char(month, 'YYYY_MM') $$;

-- Makes the partition of `parent` for the month starting `month`, unless it exists; rows the
-- default partition holds for that month move into it, in this transaction. Returns whether it was
-- made. Callers serialize on an advisory lock (src/history/store.rs).
CREATE FUNCTION history_make_month(parent text, month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    name  text := history_partition(parent, month);
    spare text := parent || '_default';
    lo    text := to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00';
    hi    text := to_char(month + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00';
    key   text;
    stray boolean := false;
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
    RETURN true;
END $$;

-- Drops the month partitions of `parent` before the month starting `keep_from`, and deletes the
-- default partition's rows from before it. Returns the partitions dropped.
CREATE FUNCTION history_drop_before(parent text, keep_from date) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    spare text := parent || '_default';
    key   text;
    part  text;
BEGIN
    SELECT a.attname INTO STRICT key
      FROM pg_partitioned_table p
      JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
     WHERE p.partrelid = parent::regclass;
    FOR part IN
        SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = parent::regclass
           AND c.relname ~ ('^' || parent || '_p[0-9]{4}_[0-9]{2}$')
           AND to_date(right(c.relname, 7), 'YYYY_MM') < keep_from
         ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
    IF to_regclass(quote_ident(spare)) IS NOT NULL THEN
        EXECUTE format('DELETE FROM %I WHERE %I < $1::timestamptz', spare, key)
          USING to_char(keep_from, 'YYYY-MM-DD') || ' 00:00:00+00';
    END IF;
END $$;

-- audit_events, converted: the old table is renamed, its rows copied into the partitioned one,
-- the indexes built once the rows are in (one sort per partition, not an insert per row), and the
-- old table dropped. The sequence moves to the new table first (it was owned by the old column).
ALTER TABLE audit_events RENAME TO audit_events_unpartitioned;
ALTER INDEX audit_events_pkey RENAME TO audit_events_unpartitioned_pkey;
ALTER INDEX audit_events_at_idx RENAME TO audit_events_unpartitioned_at_idx;
ALTER INDEX audit_events_customer_idx RENAME TO audit_events_unpartitioned_customer_idx;
ALTER INDEX audit_events_actor_idx RENAME TO audit_events_unpartitioned_actor_idx;

CREATE TABLE audit_events (
    id          bigint NOT NULL DEFAULT nextval('audit_events_id_seq'),
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    role        text NOT NULL,
    rpc         text NOT NULL,
    customer_id uuid,
    request_id  text NOT NULL DEFAULT '',
    outcome     text NOT NULL
        CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('read', 'written', 'denied', 'erased')),
    read_count  integer NOT NULL DEFAULT 1 CONSTRAINT audit_events_read_count_check CHECK (read_count >= 1),
    last_at     timestamptz
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_events_id_seq OWNED BY audit_events.id;
CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

SELECT history_make_month('audit_events', m::date)
  FROM generate_series(
         date_trunc('month', LEAST((SELECT min(at) FROM audit_events_unpartitioned), now()) AT TIME ZONE 'UTC'),
         date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months',
         interval '1 month') AS m;

INSERT INTO audit_events (id, at, actor, role, rpc, customer_id, request_id, outcome, read_count, last_at)
SELECT id, at, actor, role, rpc, customer_id, request_id, outcome, read_count, last_at
  FROM audit_events_unpartitioned;

ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id, at);
CREATE INDEX audit_events_at_idx ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_events_actor_idx ON audit_events (actor, at DESC);

DROP TABLE audit_events_unpartitioned;
ANALYZE audit_events;
