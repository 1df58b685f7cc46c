-- Each call carries when its customer next called (`next_offered_at`), so first-contact
-- resolution and the repeat-contact rate need no sort of a month of calls per customer.
--
-- "Next" orders a customer's calls by (offered_at, gateway_id, call_id); calls without a
-- customer or an offer time have none and are in no chain. Writers do not compute it: a row
-- trigger notes the customers whose chain a statement touched (a call inserted or deleted, or
-- one that changed customer or offer time) in `contact_chains_dirty`, for every writer (call
-- events, merges and unmerges, retention, scripts). The chain stamper (src/analytics/chains.rs)
-- takes committed notes, one pass at a time across all instances, and recomputes those
-- customers' chains from the calls as committed. A note committed after a pass read the calls is
-- still there for the next pass, so no change is missed, and writers take no lock and wait for
-- nothing. GetKpis runs a pass first, so KPIs see every call committed before the request.

ALTER TABLE calls ADD COLUMN next_offered_at timestamptz;

CREATE INDEX calls_customer_chain_idx ON calls (customer_id, offered_at, gateway_id, call_id)
    WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL;

CREATE TABLE contact_chains_dirty (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL
);

CREATE FUNCTION calls_note_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.customer_id IS NOT NULL THEN
        INSERT INTO contact_chains_dirty (customer_id) VALUES (OLD.customer_id);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.customer_id IS NOT NULL
       AND (TG_OP = 'INSERT' OR NEW.customer_id IS DISTINCT FROM OLD.customer_id) THEN
        INSERT INTO contact_chains_dirty (customer_id) VALUES (NEW.customer_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER calls_chain_insert AFTER INSERT ON calls
    FOR EACH ROW WHEN (NEW.customer_id IS NOT NULL)
    EXECUTE FUNCTION calls_note_chain();
CREATE TRIGGER calls_chain_update AFTER UPDATE OF customer_id, offered_at ON calls
    FOR EACH ROW WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id
                       OR OLD.offered_at IS DISTINCT FROM NEW.offered_at)
    EXECUTE FUNCTION calls_note_chain();
CREATE TRIGGER calls_chain_delete AFTER DELETE ON calls
    FOR EACH ROW WHEN (OLD.customer_id IS NOT NULL)
    EXECUTE FUNCTION calls_note_chain();

-- The calls already recorded.
UPDATE calls c SET next_offered_at = n.next_at
FROM (SELECT gateway_id, call_id,
             lead(offered_at) OVER (PARTITION BY customer_id
                                    ORDER BY offered_at, gateway_id, call_id) AS next_at
      FROM calls WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL) n
WHERE c.gateway_id = n.gateway_id AND c.call_id = n.call_id AND n.next_at IS NOT NULL;
