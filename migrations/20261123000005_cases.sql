-- Service cases, their comments, and the record of every change.

CREATE TABLE cases (
    id                uuid PRIMARY KEY,
    request_id        text NOT NULL UNIQUE,
    customer_id       uuid NOT NULL REFERENCES customers (id),
    subject           text NOT NULL,
    description       text NOT NULL DEFAULT '',
    status            text NOT NULL CHECK (status IN ('new', 'open', 'pending', 'resolved', 'closed')),
    -- 1 low .. 4 urgent, so that "most urgent first" is ORDER BY priority DESC.
    priority          smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),
    assignee_agent_id text,
    assignee_team     text,
    sla_due_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    closed_at         timestamptz,
    version           bigint NOT NULL DEFAULT 1
);
CREATE INDEX cases_customer_idx ON cases (customer_id, priority DESC, sla_due_at, id);
CREATE INDEX cases_open_due_idx ON cases (sla_due_at) WHERE status IN ('new', 'open', 'pending');
CREATE INDEX cases_agent_idx ON cases (assignee_agent_id) WHERE assignee_agent_id IS NOT NULL;
CREATE INDEX cases_team_idx ON cases (assignee_team) WHERE assignee_team IS NOT NULL;

CREATE TABLE case_comments (
    id         uuid PRIMARY KEY,
    case_id    uuid NOT NULL REFERENCES cases (id),
    author     text NOT NULL,
    text       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX case_comments_case_idx ON case_comments (case_id, created_at);

CREATE TABLE case_history (
    id      bigserial PRIMARY KEY,
    case_id uuid NOT NULL REFERENCES cases (id),
    action  text NOT NULL,
    "from"  text NOT NULL DEFAULT '',
    "to"    text NOT NULL DEFAULT '',
    actor   text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX case_history_case_idx ON case_history (case_id, id);

-- An interaction may belong to a case; the case must exist.
ALTER TABLE interactions
    ADD CONSTRAINT interactions_case_id_fkey FOREIGN KEY (case_id) REFERENCES cases (id);
