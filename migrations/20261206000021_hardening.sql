-- Hardening (issue 17), additive only.

-- A fingerprint of each call event's payload (SHA-256 of its parsed fields), so that a resend of
-- an event id with a different payload is told apart from a true resend. NULL for events stored
-- before this migration: those are taken as matching, as before.
ALTER TABLE call_events ADD COLUMN payload_hash bytea;

-- How Switchboard came to know each agent, and what has been seen of them since:
-- - known_from: 'desktop' (the agent's softphone watched or set a state), 'directory' (provisioned
--   by an operator: UpsertAgent, SetAgentTeam, SetAgentQueues) or 'gateway' (first named by a
--   gateway's call event: a desk phone, an agent known only to the PBX).
-- - desktop_seen_at: the last time the agent's softphone watched its stream or set its state.
-- - provisioned_at: the last time an operator wrote the agent's directory entry.
-- An agent with neither is known only from gateway events: configuration drift to look at.
ALTER TABLE agents ADD COLUMN known_from text NOT NULL DEFAULT 'desktop'
    CHECK (known_from IN ('desktop', 'directory', 'gateway'));
ALTER TABLE agents ADD COLUMN desktop_seen_at timestamptz;
ALTER TABLE agents ADD COLUMN provisioned_at timestamptz;
ALTER TABLE agents ADD COLUMN display_name text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN extension text NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN sip_user text NOT NULL DEFAULT '';
UPDATE agents SET desktop_seen_at = created_at;
