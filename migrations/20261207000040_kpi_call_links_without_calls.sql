-- Interactions and feedback that name no call (most of them: an email, a chat, a survey, a
-- note) skip the look-up of their calls' days. The join to `calls` probes each of its months, and
-- it was planned and run on every insert whatever the rows held: 0.34 to 0.43 ms of an
-- interaction's 0.64 to 0.84 ms insert on the benchmark database (17 months of calls). Rows that
-- do name a call are noted as before (migration 20261207000034): the days their calls were
-- offered on.
CREATE OR REPLACE FUNCTION kpi_note_call_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE gateways text[]; calls_named text[];
BEGIN
    -- A statement naming a transition table the trigger does not have is never run, so never
    -- planned.
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        SELECT array_agg(gateway_id), array_agg(call_id) INTO gateways, calls_named
        FROM new_rows WHERE call_id IS NOT NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        SELECT gateways || array_agg(gateway_id), calls_named || array_agg(call_id)
        INTO gateways, calls_named
        FROM old_rows WHERE call_id IS NOT NULL;
    END IF;
    IF calls_named IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM kpi_note_days(ARRAY(
        SELECT (c.offered_at AT TIME ZONE (SELECT zone FROM kpi_rollup_state))::date
        FROM unnest(gateways, calls_named) AS r(gateway_id, call_id)
        JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    RETURN NULL;
END $$;
