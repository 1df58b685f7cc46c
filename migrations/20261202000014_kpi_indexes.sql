-- KPIs select calls by when they were offered.
CREATE INDEX calls_offered_idx ON calls (offered_at);
