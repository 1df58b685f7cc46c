-- A campaign member's card shows the campaign's offer until the member is done. Leasing a member
-- to an outbound agent, and recording an attempt, change nothing on the card, so they no longer
-- mark it stale (migration 30 marked it on every update: a card rebuild per outbound lease).
DROP TRIGGER campaign_members_card_upd ON campaign_members;

CREATE FUNCTION customer_cards_touch_member() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM customer_cards_stale(ARRAY[OLD.customer_id, NEW.customer_id]);
    RETURN NULL;
END $$;

CREATE TRIGGER campaign_members_card_upd AFTER UPDATE ON campaign_members FOR EACH ROW
    WHEN (OLD.customer_id IS DISTINCT FROM NEW.customer_id
          OR OLD.campaign_id IS DISTINCT FROM NEW.campaign_id
          OR (OLD.state = 'done') IS DISTINCT FROM (NEW.state = 'done'))
    EXECUTE FUNCTION customer_cards_touch_member();
