-- A misdial (a call that ended within `contact_chain_rule.misdial_seconds` of its offer) is no
-- contact, and from now on it carries its previous contact but no next one: the chain stamper
-- writes NULL to `next_offered_at`, where it used to copy the next contact. No KPI reads a
-- misdial's stamps (only known customers' contacts count for repeats and first-contact
-- resolution), and copying the next contact made a customer's trailing misdials change at every
-- new call: a live call is a contact until it ends, so each of them pointed at it, and back when
-- it ended as one more misdial. The previous contact does not change at a new call, and the
-- stamper reads it to find a chain's last contact without walking back through the misdials
-- (src/analytics/store.rs, `stale_stamps`).
--
-- This clears the next contacts misdials already carry, once; their previous contacts are
-- already right. An older release still running during a rolling upgrade may copy a next
-- contact onto a misdial again: it is never read, and a later change to its chain at or before
-- it clears it.
UPDATE calls SET next_offered_at = NULL
WHERE next_offered_at IS NOT NULL
  AND ended_at < offered_at + make_interval(secs => (SELECT misdial_seconds FROM contact_chain_rule));
