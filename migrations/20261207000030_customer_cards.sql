-- Each customer's screen-pop card, stored encoded and ready to send (issue #25, docs/ARCHITECTURE.md,
-- "The stored card"). A cold pop reads these bytes instead of building the card with joins.
--
-- `card` is the protobuf encoding of a `CustomerCard`; NULL means "build me": a write changed what
-- the card shows (the triggers below, in the write's own transaction), or the customer is new. The
-- service's card builder rebuilds NULL cards in the background, and a pop that meets one builds it
-- itself. `generation` moves with every write that makes the card stale, and a builder stores its
-- card only if the generation it read with its data is still current, so a slow builder never puts
-- back a card that a committed write has outdated. A deleted (erased) customer's row keeps no card:
-- the builder stores empty bytes for it.
--
-- What is not stored, because it changes with time rather than with writes: whether a case is
-- overdue and whether the call is a repeat contact (both computed when the pop is read, from the
-- card's timestamps), and the end of the customer's latest call (read live through
-- calls_customer_ended_idx, so that call events never make a card stale). `valid_until` is the
-- next moment a campaign offer starts or ends for this customer: after it the card is rebuilt.
CREATE TABLE customer_cards (
    customer_id uuid PRIMARY KEY,
    generation  bigint NOT NULL DEFAULT 0,
    card        bytea,
    valid_until timestamptz
);

-- The builder's work list.
CREATE INDEX customer_cards_to_build_idx ON customer_cards (customer_id) WHERE card IS NULL;

-- Marks the cards of these customers stale: a row per customer, created if missing at generation 1
-- (a builder that read before this write, when there was no row, read generation 0, so it cannot
-- store its card either).
-- Sorted, so that two writers touching the same customers lock their rows in the same order.
CREATE FUNCTION customer_cards_stale(ids uuid[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO customer_cards (customer_id, generation)
    SELECT DISTINCT k, 1 FROM unnest(ids) AS k WHERE k IS NOT NULL ORDER BY 1
    ON CONFLICT (customer_id) DO UPDATE
        SET generation = customer_cards.generation + 1, card = NULL, valid_until = NULL
$$;

-- Statement-level triggers: one call per statement, with the rows it wrote (an import of
-- thousands of rows marks each card once). TG_ARGV[0] names the table's customer column.
CREATE FUNCTION customer_cards_touch_new() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(%I) FROM new_rows', TG_ARGV[0]) INTO ids;
    PERFORM customer_cards_stale(ids);
    RETURN NULL;
END $$;

CREATE FUNCTION customer_cards_touch_old() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(%I) FROM old_rows', TG_ARGV[0]) INTO ids;
    PERFORM customer_cards_stale(ids);
    RETURN NULL;
END $$;

CREATE FUNCTION customer_cards_touch_both() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE ids uuid[];
BEGIN
    EXECUTE format('SELECT array_agg(k) FROM (SELECT %1$I AS k FROM new_rows UNION SELECT %1$I FROM old_rows) x',
                   TG_ARGV[0]) INTO ids;
    PERFORM customer_cards_stale(ids);
    RETURN NULL;
END $$;

-- Every table the card reads, by its customer column.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('customers', 'id'),
        ('contact_points', 'customer_id'),
        ('external_references', 'customer_id'),
        ('interactions', 'customer_id'),
        ('orders', 'customer_id'),
        ('customer_values', 'customer_id'),
        ('cases', 'customer_id'),
        ('campaign_members', 'customer_id'),
        ('feedback', 'customer_id')) AS v(tab, col)
    LOOP
        EXECUTE format('CREATE TRIGGER %1$s_card_ins AFTER INSERT ON %1$I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION customer_cards_touch_new(%2$L)', t.tab, t.col);
        EXECUTE format('CREATE TRIGGER %1$s_card_upd AFTER UPDATE ON %1$I REFERENCING NEW TABLE AS new_rows '
                       'OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_cards_touch_both(%2$L)',
                       t.tab, t.col);
        EXECUTE format('CREATE TRIGGER %1$s_card_del AFTER DELETE ON %1$I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION customer_cards_touch_old(%2$L)', t.tab, t.col);
    END LOOP;
END $$;

-- A customer deleted outright takes its card with it (erasure keeps the row and blanks it).
CREATE FUNCTION customer_cards_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM customer_cards WHERE customer_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$;
CREATE TRIGGER customers_card_forget AFTER DELETE ON customers REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION customer_cards_forget();
DROP TRIGGER customers_card_del ON customers;

-- A campaign's name, offer, status or dates show on its members' cards.
CREATE FUNCTION customer_cards_touch_campaign() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM customer_cards_stale(ARRAY(
        SELECT m.customer_id FROM campaign_members m WHERE m.campaign_id = NEW.id));
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_card_upd AFTER UPDATE ON campaigns FOR EACH ROW
    WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.offer_text IS DISTINCT FROM NEW.offer_text
          OR OLD.status IS DISTINCT FROM NEW.status OR OLD.starts_at IS DISTINCT FROM NEW.starts_at
          OR OLD.ends_at IS DISTINCT FROM NEW.ends_at)
    EXECUTE FUNCTION customer_cards_touch_campaign();

-- A disposition's label and whether it resolves show in the recent interactions that carry it.
CREATE FUNCTION customer_cards_touch_disposition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM customer_cards_stale(ARRAY(
        SELECT DISTINCT i.customer_id FROM interactions i WHERE i.disposition_code = NEW.code));
    RETURN NULL;
END $$;
CREATE TRIGGER dispositions_card_upd AFTER UPDATE ON dispositions FOR EACH ROW
    WHEN (OLD.label IS DISTINCT FROM NEW.label OR OLD.resolves IS DISTINCT FROM NEW.resolves)
    EXECUTE FUNCTION customer_cards_touch_disposition();

-- Every existing customer starts with a card to build.
INSERT INTO customer_cards (customer_id) SELECT id FROM customers;
