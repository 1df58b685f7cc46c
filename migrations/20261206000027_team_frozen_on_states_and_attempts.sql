-- Occupancy and campaign conversions by team, as the team was: each agent state change and each
-- campaign attempt carries its agent's team at the moment it was written ('' for none), filled
-- by a trigger so every writer does it. Rows written before this migration take the agent's
-- team as it is now: the best record there is.
ALTER TABLE agent_state_changes ADD COLUMN team text;
UPDATE agent_state_changes s SET team = COALESCE(a.team, '')
FROM agents a WHERE a.agent_id = s.agent_id;

ALTER TABLE campaign_attempts ADD COLUMN team text;
UPDATE campaign_attempts t SET team = COALESCE(a.team, '')
FROM agents a WHERE a.agent_id = t.agent_id;

CREATE FUNCTION fill_team_from_agent() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.team IS NULL THEN
        NEW.team := COALESCE((SELECT team FROM agents WHERE agent_id = NEW.agent_id), '');
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER agent_state_changes_team BEFORE INSERT ON agent_state_changes
    FOR EACH ROW EXECUTE FUNCTION fill_team_from_agent();
CREATE TRIGGER campaign_attempts_team BEFORE INSERT ON campaign_attempts
    FOR EACH ROW EXECUTE FUNCTION fill_team_from_agent();
