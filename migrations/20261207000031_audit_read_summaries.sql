-- Read audits summarized (issue #25, src/audit/summary.rs): the reads of one customer by one
-- principal through one RPC in one minute are one row. `at` is the first read, `last_at` the last
-- (NULL when the row counts one), `read_count` how many. Writes and denials are one row each, with
-- a count of 1.
ALTER TABLE audit_events
    ADD COLUMN read_count integer NOT NULL DEFAULT 1 CHECK (read_count >= 1),
    ADD COLUMN last_at    timestamptz;
