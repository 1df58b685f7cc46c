-- A misdial (a call that ended within `contact_chain_rule.misdial_seconds` of its offer) is no
-- contact, and from now on it carries no next or previous contact: the chain stamper writes NULL
-- to both, where it used to copy its neighbours' stamps. No KPI reads a misdial's stamps (only
-- known customers' contacts count for repeats and first-contact resolution), and copying them
-- made a customer's trailing misdials change at every new call: a live call is a contact until
-- it ends, so each of them pointed at it, and back when it ended as one more misdial. The
-- stamper's work per call grew with the misdials before it (src/analytics/chains.rs).
--
-- This clears the stamps misdials already carry, once. The stamper then visits a misdial only
-- when its chain changed at or before it. An older release still running during a rolling
-- upgrade may copy stamps onto a misdial again; they are never read, and a later change to its
-- chain at or before it clears them.
UPDATE calls SET next_offered_at = NULL, prev_offered_at = NULL
WHERE (next_offered_at IS NOT NULL OR prev_offered_at IS NOT NULL)
  AND ended_at < offered_at + make_interval(secs => (SELECT misdial_seconds FROM contact_chain_rule));
