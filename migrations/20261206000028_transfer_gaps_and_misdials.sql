-- Two departures from the standard KPI definitions, closed (docs/KPIS.md).

-- 1. Talk time leaves out the time between a transfer and the next agent on the line: ringing a
-- target agent (`transfer_ring_ms`) and waiting again in a queue, its ringing included
-- (`requeue_wait_ms`). The state machine keeps both (src/calls/machine.rs); calls recorded
-- before this migration get them from their accepted events here, by the same rule: a transfer
-- after the first answer opens a gap that the next ANSWERED, RESUMED, CONFERENCED, TRANSFERRED or
-- end closes.
ALTER TABLE calls ADD COLUMN transfer_ring_ms bigint NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN requeue_wait_ms bigint NOT NULL DEFAULT 0;

WITH e AS (
    SELECT ev.gateway_id, ev.call_id, ev.type, ev.target_queue, ev.occurred_at,
        lead(ev.occurred_at) OVER w AS closed_at,
        COALESCE(bool_or(ev.type = 'answered')
                 OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS after_answer
    FROM call_events ev
    JOIN calls c ON c.gateway_id = ev.gateway_id AND c.call_id = ev.call_id AND c.transfers > 0
    WHERE ev.outcome = 'accepted'
      AND ev.type IN ('answered', 'resumed', 'conferenced', 'transferred', 'ended', 'abandoned')
    WINDOW w AS (PARTITION BY ev.gateway_id, ev.call_id ORDER BY ev.occurred_at, ev.sequence, ev.event_id)),
gaps AS (
    SELECT gateway_id, call_id,
        COALESCE(sum(ms) FILTER (WHERE target_queue IS NULL), 0) AS ring_ms,
        COALESCE(sum(ms) FILTER (WHERE target_queue IS NOT NULL), 0) AS requeue_ms
    FROM (SELECT gateway_id, call_id, target_queue,
                 GREATEST(0, round(1000 * extract(epoch FROM closed_at - occurred_at)))::bigint AS ms
          FROM e
          WHERE type = 'transferred' AND after_answer AND closed_at IS NOT NULL) t
    GROUP BY 1, 2)
UPDATE calls c SET transfer_ring_ms = g.ring_ms, requeue_wait_ms = g.requeue_ms
FROM gaps g
WHERE c.gateway_id = g.gateway_id AND c.call_id = g.call_id;

-- 2. Calls shorter than a misdial threshold (offer to end) are not contacts for repeats or
-- first-contact resolution. The threshold is the server's `--misdial-seconds`; it is kept here,
-- one row, so the chain stamper and every KPI read use the same one (an instance started with
-- another value writes it and notes the chains it changes). 60 s at most: the trigger below
-- notes every call that ends within a minute.
CREATE TABLE contact_chain_rule (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    misdial_seconds integer NOT NULL CHECK (misdial_seconds BETWEEN 0 AND 60)
);
INSERT INTO contact_chain_rule (misdial_seconds) VALUES (10);

-- A call that ends within the minute may have become a misdial, which takes it out of its
-- customer's chain: note the chain. Longer calls change no chain by ending.
CREATE FUNCTION calls_note_chain_end() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_chains_dirty (customer_id, since) VALUES (NEW.customer_id, NEW.offered_at);
    RETURN NULL;
END $$;

CREATE TRIGGER calls_chain_end AFTER UPDATE OF ended_at ON calls
    FOR EACH ROW WHEN (NEW.customer_id IS NOT NULL AND NEW.offered_at IS NOT NULL
                       AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
                       AND NEW.ended_at < NEW.offered_at + interval '60 seconds')
    EXECUTE FUNCTION calls_note_chain_end();

-- The chains that hold a misdial under the default threshold are restamped in the background.
INSERT INTO contact_chains_dirty (customer_id, since)
SELECT customer_id, min(offered_at) FROM calls
WHERE customer_id IS NOT NULL AND ended_at < offered_at + interval '10 seconds'
GROUP BY customer_id;
