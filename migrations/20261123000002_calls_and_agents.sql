-- Call events from telephony gateways, the call records folded from them, and agents' states.

CREATE TABLE agents (
    agent_id   text PRIMARY KEY,
    state      text NOT NULL DEFAULT 'offline'
               CHECK (state IN ('available', 'busy', 'after_call_work', 'away', 'offline')),
    reason     text NOT NULL DEFAULT '',
    since      timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Every state change, for occupancy and adherence KPIs.
CREATE TABLE agent_state_changes (
    id       bigserial PRIMARY KEY,
    agent_id text NOT NULL REFERENCES agents (agent_id),
    state    text NOT NULL,
    reason   text NOT NULL DEFAULT '',
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_state_changes_agent_idx ON agent_state_changes (agent_id, at DESC, id DESC);

-- One row per call, rebuilt from the call's accepted events (sorted by occurred_at, sequence,
-- event_id) every time one is accepted, so it never depends on arrival order.
CREATE TABLE calls (
    gateway_id      text NOT NULL,
    call_id         text NOT NULL,
    state           text NOT NULL,
    outcome         text NOT NULL DEFAULT 'in_progress',
    caller_number   text,
    dialed_number   text,
    queue           text,
    current_agent   text,
    -- Agents on the call now (ringing, connected, held, conferenced): who gets pushed changes.
    on_call_agents  text[] NOT NULL DEFAULT '{}',
    -- Every agent who answered or joined, in order.
    handled_by      text[] NOT NULL DEFAULT '{}',
    transfers       integer NOT NULL DEFAULT 0,
    offered_at      timestamptz,
    queued_at       timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    hold_ms         bigint NOT NULL DEFAULT 0,
    customer_id     uuid REFERENCES customers (id),
    event_count     integer NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, call_id)
);
CREATE INDEX calls_active_agents_idx ON calls USING gin (on_call_agents)
    WHERE state NOT IN ('ended', 'abandoned');

CREATE TABLE call_events (
    gateway_id      text NOT NULL,
    event_id        text NOT NULL,
    call_id         text NOT NULL,
    type            text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    sequence        bigint NOT NULL DEFAULT 0,
    caller_number   text,
    dialed_number   text,
    queue           text,
    agent_id        text,
    target_agent_id text,
    target_queue    text,
    attached_data   jsonb NOT NULL DEFAULT '{}',
    -- The ack given, so that a resend gets the same one.
    outcome         text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reason          text NOT NULL DEFAULT '',
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, event_id)
);
CREATE INDEX call_events_call_idx ON call_events (gateway_id, call_id, occurred_at, sequence, event_id);
