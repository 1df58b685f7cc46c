-- Who read or changed what, and every denial. Writes are recorded in the transaction of the write
-- they describe; reads and denials are batched shortly after.
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    role        text NOT NULL,
    rpc         text NOT NULL,
    customer_id uuid,
    request_id  text NOT NULL DEFAULT '',
    outcome     text NOT NULL CHECK (outcome IN ('read', 'written', 'denied'))
);
CREATE INDEX audit_events_at_idx ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_customer_idx ON audit_events (customer_id, at DESC) WHERE customer_id IS NOT NULL;
CREATE INDEX audit_events_actor_idx ON audit_events (actor, at DESC);
