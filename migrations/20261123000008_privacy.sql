-- Privacy: erasure, and no raw phone numbers where none are needed.

-- Pending pop invalidations name numbers by their pseudonym (see src/screenpop/cache.rs), so a
-- number never sits in this table, not even while Redis is down.
ALTER TABLE pop_invalidations RENAME COLUMN number TO number_key;
UPDATE pop_invalidations
   SET number_key = encode(substring(sha256(convert_to(number_key, 'UTF8')) FROM 1 FOR 16), 'hex');

-- An erased customer stays as an anonymous row so that calls, interactions, orders and KPIs that
-- point at it stay consistent; everything that identified the person is gone.
ALTER TABLE customers ADD COLUMN erased_at timestamptz;

ALTER TABLE audit_events DROP CONSTRAINT audit_events_outcome_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_outcome_check
    CHECK (outcome IN ('read', 'written', 'denied', 'erased'));

-- Retention purges walk these by age.
CREATE INDEX interactions_started_idx ON interactions (started_at);
CREATE INDEX case_comments_created_idx ON case_comments (created_at);
