-- Marketing campaigns, their outbound lists, and every attempt's outcome.

CREATE TABLE campaigns (
    id                   uuid PRIMARY KEY,
    -- Client idempotency key of CreateCampaign.
    request_id           text NOT NULL UNIQUE,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    channel              text NOT NULL
                         CHECK (channel IN ('outbound_call', 'inbound_call', 'email', 'sms')),
    status               text NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'completed')),
    starts_at            timestamptz NOT NULL,
    ends_at              timestamptz NOT NULL,
    offer_text           text NOT NULL DEFAULT '',
    -- E.164; kept after completion so that past inbound calls stay attributed.
    dialed_numbers       text[] NOT NULL DEFAULT '{}',
    max_attempts         integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 20),
    retry_after_seconds  bigint NOT NULL CHECK (retry_after_seconds > 0),
    lease_seconds        bigint NOT NULL CHECK (lease_seconds > 0),
    -- Minutes after local midnight: [window_start, window_end).
    window_start         integer NOT NULL CHECK (window_start BETWEEN 0 AND 1439),
    window_end           integer NOT NULL CHECK (window_end BETWEEN 1 AND 1440),
    default_time_zone    text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    version              bigint NOT NULL DEFAULT 1,
    CHECK (ends_at > starts_at),
    CHECK (window_end > window_start)
);
CREATE INDEX campaigns_newest_idx ON campaigns (created_at DESC, id DESC);

-- Which campaign not yet completed owns a dialed number: one at a time.
CREATE TABLE campaign_numbers (
    number      text PRIMARY KEY,
    campaign_id uuid NOT NULL REFERENCES campaigns (id)
);
CREATE INDEX campaign_numbers_campaign_idx ON campaign_numbers (campaign_id);

CREATE TABLE campaign_members (
    campaign_id      uuid NOT NULL REFERENCES campaigns (id),
    customer_id      uuid NOT NULL REFERENCES customers (id),
    -- List order: members are called in the order they were added.
    seq              bigint GENERATED ALWAYS AS IDENTITY,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'leased', 'done')),
    -- Counted attempts (no answer, busy, voicemail).
    attempts         integer NOT NULL DEFAULT 0,
    -- Not callable before this (retry spacing or a requested callback); NULL: at once.
    next_attempt_at  timestamptz,
    callback_at      timestamptz,
    lease_id         uuid,
    leased_by        text,
    lease_expires_at timestamptz,
    last_outcome     text,
    added_at         timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, customer_id)
);
-- The outbound queue: members still to call, in list order.
CREATE INDEX campaign_members_queue_idx
    ON campaign_members (campaign_id, seq) WHERE state <> 'done';
CREATE INDEX campaign_members_customer_idx ON campaign_members (customer_id);

-- Every lease handed out, so that an outcome for an old lease is told apart from an unknown one.
CREATE TABLE campaign_leases (
    lease_id    uuid PRIMARY KEY,
    campaign_id uuid NOT NULL,
    customer_id uuid NOT NULL,
    agent_id    text NOT NULL,
    leased_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX campaign_leases_member_idx ON campaign_leases (campaign_id, customer_id);

-- One row per recorded attempt; the lease id makes RecordOutcome idempotent.
CREATE TABLE campaign_attempts (
    lease_id     uuid PRIMARY KEY,
    campaign_id  uuid NOT NULL REFERENCES campaigns (id),
    customer_id  uuid NOT NULL REFERENCES customers (id),
    agent_id     text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('reached', 'no_answer', 'busy', 'voicemail',
                     'converted', 'declined', 'callback_requested', 'wrong_number', 'do_not_call')),
    callback_at  timestamptz,
    -- The member's state and counted attempts right after, returned again on a retry.
    member_state text NOT NULL,
    attempts     integer NOT NULL,
    next_attempt_at timestamptz,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_attempts_campaign_idx ON campaign_attempts (campaign_id, outcome);
CREATE INDEX campaign_attempts_customer_idx ON campaign_attempts (customer_id);

-- Inbound attribution: calls by dialed number and time.
CREATE INDEX calls_dialed_idx ON calls (dialed_number, offered_at);
