-- API keys for gateways and services. The key itself is shown once and never stored.
CREATE TABLE api_keys (
    key_hash   bytea PRIMARY KEY,
    subject    text NOT NULL,
    role       text NOT NULL CHECK (role IN ('agent', 'supervisor', 'gateway', 'service', 'admin')),
    gateway_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (role <> 'gateway' OR gateway_id IS NOT NULL)
);
