-- Feedback from anyone, tracked to a resolution, with its history.

CREATE TABLE feedback (
    id             uuid PRIMARY KEY,
    -- Client idempotency key of SubmitFeedback.
    request_id     text NOT NULL UNIQUE,
    source         text NOT NULL CHECK (source IN ('customer', 'agent', 'supplier', 'partner',
                                                   'shareholder', 'internal')),
    sentiment      text NOT NULL CHECK (sentiment IN ('positive', 'neutral', 'negative')),
    score_kind     text CHECK (score_kind IN ('csat', 'nps')),
    score          integer,
    category       text NOT NULL,
    -- Masked before it is stored.
    text           text NOT NULL DEFAULT '',
    customer_id    uuid REFERENCES customers (id),
    interaction_id uuid REFERENCES interactions (id),
    case_id        uuid REFERENCES cases (id),
    gateway_id     text,
    call_id        text,
    status         text NOT NULL DEFAULT 'new'
                   CHECK (status IN ('new', 'triaged', 'in_progress', 'resolved', 'closed')),
    owner          text,
    due_at         timestamptz,
    resolution     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    closed_at      timestamptz,
    CHECK ((score_kind IS NULL) = (score IS NULL)),
    -- Nothing resolved or closed without a resolution.
    CHECK (status NOT IN ('resolved', 'closed') OR length(resolution) > 0)
);
CREATE INDEX feedback_newest_idx ON feedback (created_at DESC, id DESC);
CREATE INDEX feedback_customer_idx ON feedback (customer_id, created_at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX feedback_open_idx ON feedback (due_at) WHERE status NOT IN ('resolved', 'closed');

CREATE TABLE feedback_history (
    id          bigserial PRIMARY KEY,
    feedback_id uuid NOT NULL REFERENCES feedback (id),
    action      text NOT NULL,
    from_value  text NOT NULL DEFAULT '',
    to_value    text NOT NULL DEFAULT '',
    actor       text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_history_item_idx ON feedback_history (feedback_id, id);
