-- First-contact resolution counts only first contacts: a call is a follow-up when the same
-- customer had called within the repeat window before it. Each call carries the offer time of
-- the customer's previous call (`prev_offered_at`), kept by the chain stamper with
-- `next_offered_at` (src/analytics/chains.rs), so KPIs read it rather than sort.
ALTER TABLE calls ADD COLUMN prev_offered_at timestamptz;

-- Every existing chain is noted, so the stamper fills the column in the background (a KPI
-- request waits for what is left).
INSERT INTO contact_chains_dirty (customer_id)
SELECT DISTINCT customer_id FROM calls WHERE customer_id IS NOT NULL;
