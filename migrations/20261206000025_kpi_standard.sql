-- KPIs to the standard definitions (docs/KPIS.md).

-- Attribution frozen when the contact happens: the team of the call's first answering agent, as
-- it was when the call was answered ('' for an agent with no team; NULL until answered). Moving
-- an agent to another team no longer moves their past calls. Calls answered before this
-- migration take their agent's team as it is now: the best record there is of it.
ALTER TABLE calls ADD COLUMN team text;
UPDATE calls c SET team = COALESCE(a.team, '')
FROM agents a
WHERE a.agent_id = c.handled_by[1] AND c.team IS NULL;
UPDATE calls SET team = '' WHERE team IS NULL AND cardinality(handled_by) > 0;

-- When the call's latest event occurred (gateway time). The live board counts a call with no
-- event for longer than its staleness bound as stale, never as waiting.
ALTER TABLE calls ADD COLUMN last_event_at timestamptz;
UPDATE calls SET last_event_at = GREATEST(offered_at, queued_at, answered_at, ended_at)
WHERE state NOT IN ('ended', 'abandoned');

-- The same for interactions: the agent's team when the interaction was logged.
ALTER TABLE interactions ADD COLUMN team text;
UPDATE interactions i SET team = COALESCE(a.team, '')
FROM agents a
WHERE a.agent_id = i.agent_id AND i.team IS NULL;

-- When the interaction's wrap-up ended: the agent leaving AFTER_CALL_WORK after the contact
-- ended, or CompleteWrapUp, whichever came first. After-call work runs from the contact's end
-- to it.
ALTER TABLE interactions ADD COLUMN wrap_up_ended_at timestamptz;
UPDATE interactions SET wrap_up_ended_at = wrap_up_completed_at WHERE wrap_up_completed_at IS NOT NULL;

-- The open wrap-ups of an agent, stamped when the agent leaves AFTER_CALL_WORK.
CREATE INDEX interactions_open_wrap_up_idx ON interactions (agent_id, ended_at)
    WHERE wrap_up_ended_at IS NULL AND agent_id IS NOT NULL;

-- An agent leaving AFTER_CALL_WORK ends the wrap-up of their contacts that ended before it
-- (within a day) and whose wrap-up has not ended yet. Every writer of agent states goes
-- through agent_state_changes, so a trigger covers them all.
CREATE FUNCTION interactions_end_wrap_up() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'after_call_work' AND (
        SELECT state FROM agent_state_changes
        WHERE agent_id = NEW.agent_id AND (at, id) < (NEW.at, NEW.id)
        ORDER BY at DESC, id DESC LIMIT 1) = 'after_call_work'
    THEN
        UPDATE interactions SET wrap_up_ended_at = NEW.at
        WHERE agent_id = NEW.agent_id AND wrap_up_ended_at IS NULL
          AND ended_at <= NEW.at AND ended_at > NEW.at - interval '1 day';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER agent_state_changes_end_wrap_up AFTER INSERT ON agent_state_changes
    FOR EACH ROW EXECUTE FUNCTION interactions_end_wrap_up();
