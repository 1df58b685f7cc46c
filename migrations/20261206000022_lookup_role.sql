-- The LOOKUP role: an API key for dialplans' caller-ID lookups (CallerIdService, GET /v1/cid and
-- /v1/pop) that can do nothing else. Widening the allowed roles is additive: an older release
-- reads a lookup key as an unknown role and refuses it.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('agent', 'supervisor', 'gateway', 'service', 'admin', 'lookup'));
