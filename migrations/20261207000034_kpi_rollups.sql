-- Daily KPI rollups (docs/KPIS.md, "Rollups"): per day (in the deployment's KPI time zone, UTC
-- unless `--kpi-time-zone` says otherwise), the KPI tallies of the calls offered
-- that day per (queue, first answering agent, team, campaigns), the campaign attempts per
-- (campaign, agent, team) and the agent time per (agent, team). They are the KPI scan's own
-- query run over one day (src/analytics/store.rs), so a rolled-up day and a scanned day agree.
--
-- Writers do not compute them. Statement-level triggers note the closed days (before today,
-- by the clock when the statement runs) a statement changed (kpi_rollup_notes), for every table
-- the KPIs read and every writer. Today is never rolled up, so today's own writes, nearly all of
-- them, note nothing. The rollup pass (src/analytics/rollups.rs), one at a time across
-- instances, takes the notes of closed days and recomputes those days from the data as
-- committed, together with every closed day since `first_day` never rolled up. A note committed
-- after a pass read the data stays for the next pass. A day is rolled up only once every
-- transaction that may have written it unnoted, while it was today, has ended: after midnight
-- the pass takes a transaction id as a barrier, and waits until no older one runs. GetKpis
-- reads a day's rollup only when the day is closed, rolled up and has no note in the request's
-- snapshot; it scans every other stretch of its period, so a rollup never shows anything other
-- than the scan would.

CREATE TABLE kpi_rollup_notes (
    id  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day date NOT NULL
);
CREATE INDEX kpi_rollup_notes_day_idx ON kpi_rollup_notes (day);

-- Days rolled up, and the first day the pass rolls up without a note (every earlier day with any
-- data was noted when it was written: this migration sets it to the first day with data).
CREATE TABLE kpi_rollup_days (
    day       date PRIMARY KEY,
    rolled_at timestamptz NOT NULL DEFAULT now()
);
-- `safe_through`: the last day no running transaction can have written unnoted. `barrier_day`
-- becomes safe once every transaction older than `barrier_xid` (taken after it closed) ended.
-- Every day closed before this migration is safe: its writes since then are noted.
-- `zone`: the IANA time zone the days are cut in (`--kpi-time-zone`; an instance started with
-- another drops every rollup, and the pass rolls the days up again in the new one).
CREATE TABLE kpi_rollup_state (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    zone         text NOT NULL DEFAULT 'UTC',
    first_day    date NOT NULL,
    safe_through date NOT NULL,
    barrier_day  date,
    barrier_xid  xid8,
    CHECK ((barrier_day IS NULL) = (barrier_xid IS NULL))
);

-- The day of an instant, in the rollups' zone.
CREATE FUNCTION kpi_day(at timestamptz) RETURNS date LANGUAGE sql STABLE PARALLEL SAFE
    RETURN (at AT TIME ZONE (SELECT zone FROM kpi_rollup_state))::date;

-- The first day with data, in the rollups' zone (today when there is none).
CREATE FUNCTION kpi_first_day() RETURNS date LANGUAGE sql STABLE
    RETURN LEAST((SELECT kpi_day(min(offered_at)) FROM calls),
                 (SELECT kpi_day(min(at)) FROM campaign_attempts),
                 (SELECT kpi_day(min(at)) FROM agent_state_changes),
                 kpi_day(now()));

INSERT INTO kpi_rollup_state (first_day, safe_through) VALUES ('-infinity', '-infinity');
UPDATE kpi_rollup_state SET first_day = kpi_first_day(), safe_through = kpi_day(now()) - 1;

CREATE TABLE kpi_call_rollups (
    day                    date NOT NULL,
    queue                  text NOT NULL,
    agent                  text NOT NULL,
    team                   text NOT NULL,
    -- The campaigns whose dialed number the calls called while the campaign ran (sorted ids).
    campaigns              text[] NOT NULL,
    offered                bigint NOT NULL,
    answered               bigint NOT NULL,
    abandoned              bigint NOT NULL,
    short_abandoned        bigint NOT NULL,
    abandoned_within       bigint NOT NULL,
    short_abandoned_within bigint NOT NULL,
    self_service           bigint NOT NULL,
    in_progress            bigint NOT NULL,
    answered_within        bigint NOT NULL,
    wait_ms                float8 NOT NULL,
    wait_ms_sq             float8 NOT NULL,
    handled                bigint NOT NULL,
    talk_ms                float8 NOT NULL,
    hold_ms                float8 NOT NULL,
    transfer_ring_ms       float8 NOT NULL,
    requeue_wait_ms        float8 NOT NULL,
    aht_calls              bigint NOT NULL,
    aht_ms                 float8 NOT NULL,
    aht_ms_sq              float8 NOT NULL,
    wrap_up_ms             float8 NOT NULL,
    wrap_up_ms_sq          float8 NOT NULL,
    wrap_up_outliers       bigint NOT NULL,
    transferred            bigint NOT NULL,
    with_customer          bigint NOT NULL,
    repeated               bigint NOT NULL,
    first_contact_resolved bigint NOT NULL,
    csat_sum               bigint NOT NULL,
    csat_count             bigint NOT NULL,
    csat_top_two           bigint NOT NULL,
    nps_promoters          bigint NOT NULL,
    nps_detractors         bigint NOT NULL,
    nps_count              bigint NOT NULL
);
CREATE INDEX kpi_call_rollups_day_idx ON kpi_call_rollups (day);

CREATE TABLE kpi_conversion_rollups (
    day       date NOT NULL,
    campaign  text NOT NULL,
    agent     text NOT NULL,
    team      text NOT NULL,
    reached   bigint NOT NULL,
    converted bigint NOT NULL
);
CREATE INDEX kpi_conversion_rollups_day_idx ON kpi_conversion_rollups (day);

CREATE TABLE kpi_occupancy_rollups (
    day         date NOT NULL,
    agent       text NOT NULL,
    team        text NOT NULL,
    occupied_ms float8 NOT NULL,
    idle_ms     float8 NOT NULL
);
CREATE INDEX kpi_occupancy_rollups_day_idx ON kpi_occupancy_rollups (day);

-- Closed days only: today (and a future day, from a gateway's clock ahead) is rolled up only
-- after it closes and the barrier passes.
CREATE FUNCTION kpi_note_days(days date[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO kpi_rollup_notes (day)
    SELECT DISTINCT d FROM unnest(days) AS d WHERE d < kpi_day(clock_timestamp())
$$;

-- The trigger functions read the zone once per statement and cut days inline: `kpi_day`, a
-- function with a sub-select, is not inlined, and a call-event batch updates hundreds of calls.

-- Calls: the days they were offered, before and after.
CREATE FUNCTION kpi_note_calls() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE kz text := (SELECT zone FROM kpi_rollup_state);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kpi_note_days(ARRAY(SELECT (offered_at AT TIME ZONE kz)::date FROM new_rows));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM kpi_note_days(ARRAY(SELECT (offered_at AT TIME ZONE kz)::date FROM new_rows
                                    UNION SELECT (offered_at AT TIME ZONE kz)::date FROM old_rows));
    ELSE
        PERFORM kpi_note_days(ARRAY(SELECT (offered_at AT TIME ZONE kz)::date FROM old_rows));
    END IF;
    RETURN NULL;
END $$;

-- Interactions and feedback: the days of the calls they name.
CREATE FUNCTION kpi_note_call_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE kz text := (SELECT zone FROM kpi_rollup_state);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date FROM new_rows r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date
            FROM (SELECT gateway_id, call_id FROM new_rows
                  UNION SELECT gateway_id, call_id FROM old_rows) r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    ELSE
        PERFORM kpi_note_days(ARRAY(
            SELECT (c.offered_at AT TIME ZONE kz)::date FROM old_rows r
            JOIN calls c ON c.gateway_id = r.gateway_id AND c.call_id = r.call_id));
    END IF;
    RETURN NULL;
END $$;

-- Campaign attempts: the days they were recorded.
CREATE FUNCTION kpi_note_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE kz text := (SELECT zone FROM kpi_rollup_state);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM kpi_note_days(ARRAY(SELECT (at AT TIME ZONE kz)::date FROM new_rows));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM kpi_note_days(ARRAY(SELECT (at AT TIME ZONE kz)::date FROM new_rows
                                    UNION SELECT (at AT TIME ZONE kz)::date FROM old_rows));
    ELSE
        PERFORM kpi_note_days(ARRAY(SELECT (at AT TIME ZONE kz)::date FROM old_rows));
    END IF;
    RETURN NULL;
END $$;

-- Agent states: a change at `at` moves the agent's time from that day up to today.
CREATE FUNCTION kpi_note_states() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE since timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(at) INTO since FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT min(at) INTO since FROM (SELECT at FROM new_rows UNION ALL SELECT at FROM old_rows) r;
    ELSE
        SELECT min(at) INTO since FROM old_rows;
    END IF;
    IF since IS NOT NULL THEN
        PERFORM kpi_note_days(ARRAY(
            SELECT d::date FROM generate_series(kpi_day(since), kpi_day(now()), interval '1 day') d));
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('calls', 'kpi_note_calls'),
        ('interactions', 'kpi_note_call_links'),
        ('feedback', 'kpi_note_call_links'),
        ('campaign_attempts', 'kpi_note_attempts'),
        ('agent_state_changes', 'kpi_note_states')) AS v(tab, fn)
    LOOP
        EXECUTE format('CREATE TRIGGER %1$s_kpi_ins AFTER INSERT ON %1$I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', t.tab, t.fn);
        EXECUTE format('CREATE TRIGGER %1$s_kpi_upd AFTER UPDATE ON %1$I REFERENCING NEW TABLE AS new_rows '
                       'OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', t.tab, t.fn);
        EXECUTE format('CREATE TRIGGER %1$s_kpi_del AFTER DELETE ON %1$I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %2$I()', t.tab, t.fn);
    END LOOP;
END $$;

-- A campaign's numbers and dates attribute the calls of its days (up to today).
CREATE FUNCTION kpi_note_campaign() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM kpi_note_days(ARRAY(
            SELECT d::date FROM generate_series(kpi_day(OLD.starts_at),
                                                kpi_day(LEAST(OLD.ends_at, now())), interval '1 day') d));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM kpi_note_days(ARRAY(
            SELECT d::date FROM generate_series(kpi_day(NEW.starts_at),
                                                kpi_day(LEAST(NEW.ends_at, now())), interval '1 day') d));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_kpi_ins AFTER INSERT ON campaigns FOR EACH ROW
    WHEN (cardinality(NEW.dialed_numbers) > 0) EXECUTE FUNCTION kpi_note_campaign();
CREATE TRIGGER campaigns_kpi_upd AFTER UPDATE ON campaigns FOR EACH ROW
    WHEN (OLD.dialed_numbers IS DISTINCT FROM NEW.dialed_numbers
          OR OLD.starts_at IS DISTINCT FROM NEW.starts_at OR OLD.ends_at IS DISTINCT FROM NEW.ends_at)
    EXECUTE FUNCTION kpi_note_campaign();
CREATE TRIGGER campaigns_kpi_del AFTER DELETE ON campaigns FOR EACH ROW
    WHEN (cardinality(OLD.dialed_numbers) > 0) EXECUTE FUNCTION kpi_note_campaign();

-- Whether a disposition resolves, and the misdial threshold, change every rolled-up day.
CREATE FUNCTION kpi_note_every_day() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kpi_note_days(ARRAY(SELECT day FROM kpi_rollup_days));
    RETURN NULL;
END $$;
CREATE TRIGGER dispositions_kpi_upd AFTER UPDATE ON dispositions FOR EACH ROW
    WHEN (OLD.resolves IS DISTINCT FROM NEW.resolves) EXECUTE FUNCTION kpi_note_every_day();
CREATE TRIGGER contact_chain_rule_kpi_upd AFTER UPDATE ON contact_chain_rule FOR EACH ROW
    WHEN (OLD.misdial_seconds IS DISTINCT FROM NEW.misdial_seconds)
    EXECUTE FUNCTION kpi_note_every_day();
