-- Merging duplicate customers, reversibly: the duplicate becomes a tombstone that points at the
-- survivor, and the merge keeps the lineage (what moved, what was dropped) that unmerging needs.

ALTER TABLE customers ADD COLUMN merged_into uuid REFERENCES customers (id);

CREATE TABLE customer_merges (
    id           uuid PRIMARY KEY,
    survivor_id  uuid NOT NULL REFERENCES customers (id),
    duplicate_id uuid NOT NULL REFERENCES customers (id),
    -- Keys of the rows moved per table, rows dropped as duplicates, profile fields filled.
    lineage      jsonb NOT NULL,
    merged_by    text NOT NULL DEFAULT '',
    merged_at    timestamptz NOT NULL DEFAULT now(),
    unmerged_at  timestamptz,
    CHECK (survivor_id <> duplicate_id)
);
-- A customer is the duplicate of at most one merge in force.
CREATE UNIQUE INDEX customer_merges_in_force_idx ON customer_merges (duplicate_id) WHERE unmerged_at IS NULL;
CREATE INDEX customer_merges_survivor_idx ON customer_merges (survivor_id);
