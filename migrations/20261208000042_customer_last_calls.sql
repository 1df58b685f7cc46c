-- The end of each customer's latest call, one row per customer, for the screen pop's "last
-- contact" and "repeat contact" (src/screenpop/card.rs, `settle`).
--
-- The pop used to read it live from `calls` (`max(ended_at) ... WHERE customer_id = $1`). `calls`
-- is partitioned by month (migration 38), so that probe descended one index per month stored,
-- the months made ahead and the default: four on a new database, sixteen after a year, and every
-- cold pop (and every call event whose caller's card is not cached) paid for each. Measured on
-- the benchmark database (BENCHMARKS.md, #25 fifth pass): the pop's statement did 15,900 a second
-- with four months and 10,900 with sixteen (empty) ones; reading this table instead, 18,600 and
-- 19,200.
--
-- Exact, whatever writes `calls`: the triggers below keep it equal to the latest `ended_at` among
-- the customer's calls.
-- - A call that ends, or is written already ended, raises its customer's row (never lowers it).
-- - A call that leaves a customer (a merge, an unmerge), or whose end moves back or away, or that
--   is deleted, has the customer's row recounted from `calls`.
-- - Locks. Raising takes the rows in customer order in one statement. A recount first takes every
--   row the statement touches, in customer order (inserting a placeholder for a customer without
--   one), and then reads `calls` in a new statement: any writer that raised one of those rows
--   before has committed by then, and is seen. The call-event batch, whose one statement both
--   updates and inserts calls (two trigger firings), takes its rows first, in order, in the
--   statement itself (src/calls/store.rs, `write_batch`), so that two batches cannot deadlock.
-- - Retention. Dropping a month of calls drops no rows here: a customer's latest call end outlives
--   the call's record, as the KPIs' days outlive theirs in the rollups.
CREATE TABLE customer_last_calls (
    customer_id uuid PRIMARY KEY,
    ended_at timestamptz NOT NULL
) WITH (fillfactor = 80);

INSERT INTO customer_last_calls (customer_id, ended_at)
SELECT customer_id, max(ended_at) FROM calls
WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL
GROUP BY customer_id;

-- Raises each customer's row to the latest of its ends, in customer order.
CREATE FUNCTION customer_last_calls_raise(ids uuid[], ends timestamptz[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO customer_last_calls AS l (customer_id, ended_at)
    SELECT e.id, max(e.at) FROM unnest(ids, ends) AS e(id, at)
    WHERE e.id IS NOT NULL AND e.at IS NOT NULL
    GROUP BY e.id
    ORDER BY e.id
    ON CONFLICT (customer_id) DO UPDATE SET ended_at = EXCLUDED.ended_at
    WHERE l.ended_at < EXCLUDED.ended_at
$$;

CREATE FUNCTION customer_last_calls_note() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    raise_ids uuid[];
    raise_ends timestamptz[];
    recount uuid[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(customer_id), array_agg(ended_at) INTO raise_ids, raise_ends
        FROM new_rows WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        -- Ends a customer did not have before the statement.
        SELECT array_agg(customer_id), array_agg(ended_at) INTO raise_ids, raise_ends
        FROM (SELECT customer_id, ended_at FROM new_rows
              WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL
              EXCEPT SELECT customer_id, ended_at FROM old_rows) n;
        -- Customers whose latest end among the changed calls went back: the rest of their calls
        -- may hold the latest now.
        SELECT array_agg(o.customer_id) INTO recount
        FROM (SELECT customer_id, max(ended_at) AS at FROM old_rows
              WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL GROUP BY customer_id) o
        LEFT JOIN (SELECT customer_id, max(ended_at) AS at FROM new_rows
                   WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL GROUP BY customer_id) n
          ON n.customer_id = o.customer_id
        WHERE n.at IS NULL OR n.at < o.at;
    ELSE
        SELECT array_agg(DISTINCT customer_id) INTO recount
        FROM old_rows WHERE customer_id IS NOT NULL AND ended_at IS NOT NULL;
    END IF;

    IF recount IS NULL THEN
        IF raise_ids IS NOT NULL THEN
            PERFORM customer_last_calls_raise(raise_ids, raise_ends);
        END IF;
        RETURN NULL;
    END IF;
    -- Every row this statement touches, in customer order, before reading `calls` again.
    INSERT INTO customer_last_calls AS l (customer_id, ended_at)
    SELECT DISTINCT r.id, '-infinity'::timestamptz
    FROM unnest(recount || COALESCE(raise_ids, '{}')) AS r(id)
    ORDER BY r.id
    ON CONFLICT (customer_id) DO UPDATE SET ended_at = l.ended_at;
    IF raise_ids IS NOT NULL THEN
        PERFORM customer_last_calls_raise(raise_ids, raise_ends);
    END IF;
    UPDATE customer_last_calls l SET ended_at = m.at
    FROM (SELECT r.id, (SELECT max(c.ended_at) FROM calls c WHERE c.customer_id = r.id) AS at
          FROM unnest(recount) AS r(id)) m
    WHERE l.customer_id = m.id AND m.at IS NOT NULL;
    DELETE FROM customer_last_calls l
    WHERE l.customer_id = ANY(recount)
      AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.customer_id = l.customer_id AND c.ended_at IS NOT NULL);
    RETURN NULL;
END $$;

CREATE TRIGGER calls_last_call_ins AFTER INSERT ON calls REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_last_calls_note();
CREATE TRIGGER calls_last_call_upd AFTER UPDATE ON calls REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_last_calls_note();
CREATE TRIGGER calls_last_call_del AFTER DELETE ON calls REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_last_calls_note();
