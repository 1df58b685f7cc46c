-- Which agent's softphone was shown the caller's card for which call: the "pop delivered" figure
-- of the roll-out scorecard (docs/SCORECARD.md). One row per call and agent, the first delivery
-- (RINGING, or a SNAPSHOT after a reconnect). Written in batches shortly after delivery; no PII.
CREATE TABLE pop_deliveries (
    gateway_id   text NOT NULL,
    call_id      text NOT NULL,
    agent_id     text NOT NULL,
    delivered_at timestamptz NOT NULL,
    PRIMARY KEY (gateway_id, call_id, agent_id)
);

-- The scorecard finds the cases opened from calls through the interactions that name them.
CREATE INDEX interactions_case_idx ON interactions (case_id) WHERE case_id IS NOT NULL;
