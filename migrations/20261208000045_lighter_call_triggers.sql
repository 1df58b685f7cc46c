-- Three triggers on `calls` that every call-event batch fires, made cheaper. What they note is
-- unchanged. Found with auto_explain on the benchmark database (closed-loop call events); measured
-- by scripts/call-trigger-bench.sh, six alternating rounds of pgbench: a 256-row insert of new
-- calls 9.57 ms before, 7.20 ms after (-25%); a 256-row update ending calls 20 s after their offer
-- 9.64 and 8.53 ms (-11%); one ending them 3 minutes after 7.86 and 8.18 ms (+4%, within noise).
-- BENCHMARKS.md "#25, sixth pass".

-- 1. Today's day once per statement, not once per row. `kpi_day` is an SQL function with a
-- sub-select that is not inlined, and `clock_timestamp()` is volatile, so the filter evaluated it
-- for every element of the array: 256 of them for a 256-row insert of calls, all of them today's.
-- Alone (psql's \timing), the call with 256 of today's days took about 1.1 ms before and 0.25 ms
-- after. The sub-select is uncorrelated, so it runs once.
CREATE OR REPLACE FUNCTION kpi_note_days(days date[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO kpi_rollup_notes (day)
    SELECT DISTINCT d FROM unnest(days) AS d WHERE d < (SELECT kpi_day(clock_timestamp()))
$$;

-- 2. A new call notes its customer's chain once per statement, not once per row: one insert of
-- the statement's customers (each with its earliest new call, which is what the stamper takes
-- of several notes of one customer: `analytics::store::take_chain_notes`), in place of a
-- PL/pgSQL call and a one-row insert for every call (migrations 16, 18 and 38). A row trigger's
-- note of a call with no offer time was skipped; so is this one's.
CREATE FUNCTION calls_note_chains_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_chains_dirty (customer_id, since)
    SELECT customer_id, min(offered_at) FROM new_rows
    WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL
    GROUP BY customer_id;
    RETURN NULL;
END $$;
DROP TRIGGER calls_chain_insert ON calls;
CREATE TRIGGER calls_chain_insert AFTER INSERT ON calls REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION calls_note_chains_inserted();

-- 3. The same for a call that ends within the minute (it may have become a misdial: migration
-- 20261206000028). A statement trigger with transition tables cannot name columns, so this one
-- fires on every update of calls, and pairs each row with its old version by the primary key.
-- A call whose offer time the update moved does not pair, and needs no note here:
-- `calls_chain_update` notes it, at its new offer time, as this would.
CREATE FUNCTION calls_note_chains_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_chains_dirty (customer_id, since)
    SELECT n.customer_id, min(n.offered_at)
    FROM new_rows n
    JOIN old_rows o ON o.gateway_id = n.gateway_id AND o.call_id = n.call_id
                   AND o.offered_at = n.offered_at
    WHERE n.customer_id IS NOT NULL AND o.ended_at IS NULL AND n.ended_at IS NOT NULL
      AND n.ended_at < n.offered_at + interval '60 seconds'
    GROUP BY n.customer_id;
    RETURN NULL;
END $$;
DROP TRIGGER calls_chain_end ON calls;
CREATE TRIGGER calls_chain_end AFTER UPDATE ON calls
    REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION calls_note_chains_ended();
DROP FUNCTION calls_note_chain_end();
