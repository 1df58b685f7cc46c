-- Each call carries when its customer next called (`next_offered_at`), so first-contact
-- resolution and the repeat-contact rate need no sort of a month of calls per customer.
--
-- "Next" orders a customer's calls by (offered_at, gateway_id, call_id); calls without a
-- customer or an offer time have none and are not in any chain. The triggers below keep the
-- column true for every writer (call events, merges and unmerges, erasure, retention, scripts):
-- after any statement that inserts calls, deletes them, or changes a call's customer or offer
-- time, the chains of the customers concerned are recomputed. Writers of the same customer are
-- serialized by a transaction advisory lock per customer, taken in sorted order (so two batches
-- naming the same customers cannot deadlock), before the chain is read: under READ COMMITTED
-- the recomputation then sees every committed call, and a call written concurrently is never
-- left out of the chain. (The insert and the update halves of one INSERT ... ON CONFLICT lock
-- separately; two such batches crossing on the same two customers can deadlock, and PostgreSQL
-- then aborts one, which the gateway resends. That needs a customer's call identified late in
-- one batch while another batch offers a new call of theirs and vice versa.)

ALTER TABLE calls ADD COLUMN next_offered_at timestamptz;

CREATE INDEX calls_customer_chain_idx ON calls (customer_id, offered_at, gateway_id, call_id)
    WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL;

CREATE FUNCTION restamp_next_contact(customers uuid[]) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended(id::text, 20261202))
    FROM (SELECT DISTINCT id FROM unnest(customers) AS id WHERE id IS NOT NULL ORDER BY id) ids;
    UPDATE calls c SET next_offered_at = n.next_at
    FROM (SELECT gateway_id, call_id,
                 lead(offered_at) OVER (PARTITION BY customer_id
                                        ORDER BY offered_at, gateway_id, call_id) AS next_at
          FROM calls
          WHERE customer_id = ANY(customers) AND offered_at IS NOT NULL) n
    WHERE c.gateway_id = n.gateway_id AND c.call_id = n.call_id
      AND c.next_offered_at IS DISTINCT FROM n.next_at;
$$;

CREATE FUNCTION calls_inserted_restamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM restamp_next_contact(array_agg(DISTINCT customer_id))
    FROM new_calls WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION calls_updated_restamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The restamp's own UPDATE changes neither customer nor offer time: nothing to do.
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    PERFORM restamp_next_contact(array_agg(DISTINCT c.customer_id))
    FROM (SELECT o.customer_id FROM old_calls o JOIN new_calls n USING (gateway_id, call_id)
          WHERE o.customer_id IS DISTINCT FROM n.customer_id
             OR o.offered_at IS DISTINCT FROM n.offered_at
          UNION ALL
          SELECT n.customer_id FROM old_calls o JOIN new_calls n USING (gateway_id, call_id)
          WHERE o.customer_id IS DISTINCT FROM n.customer_id
             OR o.offered_at IS DISTINCT FROM n.offered_at) c
    WHERE c.customer_id IS NOT NULL
    HAVING count(*) > 0;
    -- A call whose customer was cleared keeps no next contact.
    UPDATE calls c SET next_offered_at = NULL
    FROM new_calls n
    WHERE c.gateway_id = n.gateway_id AND c.call_id = n.call_id
      AND (n.customer_id IS NULL OR n.offered_at IS NULL) AND c.next_offered_at IS NOT NULL;
    RETURN NULL;
END $$;

CREATE FUNCTION calls_deleted_restamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM restamp_next_contact(array_agg(DISTINCT customer_id))
    FROM old_calls WHERE customer_id IS NOT NULL
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE TRIGGER calls_next_contact_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_inserted_restamp();
CREATE TRIGGER calls_next_contact_update AFTER UPDATE ON calls
    REFERENCING OLD TABLE AS old_calls NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_updated_restamp();
CREATE TRIGGER calls_next_contact_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS old_calls
    FOR EACH STATEMENT EXECUTE FUNCTION calls_deleted_restamp();

-- The calls already recorded.
UPDATE calls c SET next_offered_at = n.next_at
FROM (SELECT gateway_id, call_id,
             lead(offered_at) OVER (PARTITION BY customer_id
                                    ORDER BY offered_at, gateway_id, call_id) AS next_at
      FROM calls WHERE customer_id IS NOT NULL AND offered_at IS NOT NULL) n
WHERE c.gateway_id = n.gateway_id AND c.call_id = n.call_id AND n.next_at IS NOT NULL;
