-- The team an agent works in, for team-level KPIs ('' until a supervisor assigns one).
ALTER TABLE agents ADD COLUMN team text NOT NULL DEFAULT '';
