-- Every contact with a customer, on any channel, and the disposition catalog.

CREATE TABLE dispositions (
    code       text PRIMARY KEY,
    label      text NOT NULL,
    resolves   boolean NOT NULL,
    active     boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE interactions (
    id                   uuid PRIMARY KEY,
    request_id           text NOT NULL UNIQUE,
    customer_id          uuid NOT NULL REFERENCES customers (id),
    channel              text NOT NULL
                         CHECK (channel IN ('voice', 'email', 'chat', 'sms', 'visit', 'social')),
    direction            text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    agent_id             text,
    gateway_id           text,
    call_id              text,
    case_id              uuid,
    campaign_id          text,
    disposition_code     text REFERENCES dispositions (code),
    outcome              text NOT NULL DEFAULT '',
    -- Masked before it gets here: no card numbers, no security codes.
    notes                text NOT NULL DEFAULT '',
    follow_up_on         date,
    started_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    wrap_up_completed_at timestamptz,
    wrap_up_ms           bigint,
    created_at           timestamptz NOT NULL DEFAULT now()
);
-- The customer's timeline, newest first, keyset-paginated by (started_at, id).
CREATE INDEX interactions_timeline_idx ON interactions (customer_id, started_at DESC, id DESC);
CREATE INDEX interactions_call_idx ON interactions (gateway_id, call_id) WHERE call_id IS NOT NULL;
