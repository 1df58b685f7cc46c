-- Sinks that push the event feed out: webhook subscriptions, and the NATS JetStream sink. Each
-- keeps its own cursor over the feed and is delivered by one worker at a time, the holder of its
-- lease (lease_owner, until lease_until); a dead instance's lease runs out and another takes it.
CREATE TABLE feed_sinks (
    id uuid PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('webhook', 'nats')),
    url text NOT NULL DEFAULT '',
    topics text[] NOT NULL DEFAULT '{}',
    description text NOT NULL DEFAULT '',
    -- The Standard Webhooks signing secret ("whsec_..."), and the one it replaced while both are
    -- valid (a rotation's overlap).
    secret text NOT NULL DEFAULT '',
    previous_secret text,
    previous_secret_until timestamptz,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused', 'failing')),
    -- The feed position of the last event delivered.
    cursor bigint NOT NULL,
    -- Attempts made on the event after the cursor, when the next is due, and why the last failed.
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text NOT NULL DEFAULT '',
    failing_since timestamptz,
    lease_owner uuid,
    lease_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The workers' claim: active sinks that are due.
CREATE INDEX feed_sinks_due ON feed_sinks (next_attempt_at) WHERE state = 'active';

-- Every delivery attempt (ListDeliveries), kept for the feed's retention.
CREATE TABLE feed_sink_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sink_id uuid NOT NULL REFERENCES feed_sinks (id) ON DELETE CASCADE,
    position bigint NOT NULL,
    attempt integer NOT NULL,
    status_code integer NOT NULL DEFAULT 0,
    error text NOT NULL DEFAULT '',
    duration_ms integer NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX feed_sink_deliveries_by_sink ON feed_sink_deliveries (sink_id, id DESC);
CREATE INDEX feed_sink_deliveries_by_time ON feed_sink_deliveries (attempted_at);
