-- Live queue statistics: the queues an agent takes calls from (set by supervisors), a version
-- that orders the agent's changes for the hot copy in Redis, and an index on the calls still
-- going (what the Redis copy is rebuilt from, and what is read when Redis is away).
ALTER TABLE agents ADD COLUMN queues text[] NOT NULL DEFAULT '{}';
ALTER TABLE agents ADD COLUMN version bigint NOT NULL DEFAULT 0;
CREATE INDEX calls_live_idx ON calls (updated_at) WHERE state NOT IN ('ended', 'abandoned');
