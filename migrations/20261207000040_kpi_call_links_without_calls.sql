-- Interactions and feedback that name no call (most of them: an email, a chat, a survey, a
-- note) skip the look-up of their calls' days. The join to `calls` probes each of its months, and it
-- was planned and run on every insert whatever the rows held: 0.46 ms of an interaction's
-- 0.9 ms insert on the benchmark database (17 months of calls). Rows that do name a call are
-- noted as before (migration 20261207000034).
CREATE OR REPLACE FUNCTION kpi_note_call_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE kz text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE call_id IS NOT NULL) THEN
            RETURN NULL;
        END IF;
        kz := (SELECT zone FROM kpi_rollup_state);
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date FROM new_rows r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows WHERE call_id IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM old_rows WHERE call_id IS NOT NULL) THEN
            RETURN NULL;
        END IF;
        kz := (SELECT zone FROM kpi_rollup_state);
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date
            FROM (SELECT gateway_id, call_id FROM new_rows
                  UNION SELECT gateway_id, call_id FROM old_rows) r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    ELSE
        IF NOT EXISTS (SELECT 1 FROM old_rows WHERE call_id IS NOT NULL) THEN
            RETURN NULL;
        END IF;
        kz := (SELECT zone FROM kpi_rollup_state);
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date FROM old_rows r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    END IF;
    RETURN NULL;
END $$;

