-- The chain stamper recomputed each noted customer's whole chain, so a frequent caller's every
-- new call cost as much as all their calls before it (bench customers reached 2,390 calls; the
-- stamper took a quarter of PostgreSQL's CPU under call events). A note now says where the chain
-- changed: `since` is the offer time of the call inserted, deleted, moved or re-matched. The
-- stamper recomputes only the suffix of the chain that starts at the last call before `since`
-- (that call's next contact is the only earlier one that can change). Notes written before this
-- migration have no `since` and still mean the whole chain.

ALTER TABLE contact_chains_dirty ADD COLUMN since timestamptz;

-- Calls without an offer time are in no chain, so they note nothing.
CREATE OR REPLACE FUNCTION calls_note_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.customer_id IS NOT NULL AND OLD.offered_at IS NOT NULL THEN
        INSERT INTO contact_chains_dirty (customer_id, since) VALUES (OLD.customer_id, OLD.offered_at);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.customer_id IS NOT NULL AND NEW.offered_at IS NOT NULL THEN
        INSERT INTO contact_chains_dirty (customer_id, since) VALUES (NEW.customer_id, NEW.offered_at);
    END IF;
    RETURN NULL;
END $$;
