-- Fills the benchmark database with 1,000,000 synthetic calls offered in November 2026 to time
-- GetKpis: 10 queues, 200 agents, 100,000 repeat callers (each calls ten times in the month);
-- 80% completed, 12% abandoned, 5% unanswered, 3% in progress.
-- Run: psql "$bench_db" -f scripts/kpi-bench.sql  (replaces earlier synthetic calls, gateway kpi-bench)
DELETE FROM calls WHERE gateway_id = 'kpi-bench';
-- `calls` is partitioned by month (migration 38): make the months written here.
SELECT history_make_month('calls', m::date)
  FROM generate_series(date '2026-11-01', date '2026-11-01', interval '1 month') AS m;
WITH callers AS (
  SELECT id, row_number() OVER (ORDER BY id) AS rn
  FROM customers WHERE deleted_at IS NULL AND erased_at IS NULL LIMIT 100000)
INSERT INTO calls (gateway_id, call_id, state, outcome, queue, handled_by, transfers, offered_at,
                   queued_at, answered_at, ended_at, hold_ms, customer_id, event_count)
SELECT 'kpi-bench', 'c' || n,
       CASE WHEN o < 0.80 THEN 'ended' WHEN o < 0.92 THEN 'abandoned' WHEN o < 0.97 THEN 'ended' ELSE 'connected' END,
       CASE WHEN o < 0.80 THEN 'completed' WHEN o < 0.92 THEN 'abandoned' WHEN o < 0.97 THEN 'unanswered' ELSE 'in_progress' END,
       'q' || (n % 10),
       CASE WHEN o < 0.80 OR o >= 0.97 THEN ARRAY['agent-' || (n % 200)] ELSE '{}' END,
       CASE WHEN n % 17 = 0 THEN 1 ELSE 0 END,
       at, at,
       CASE WHEN o < 0.80 OR o >= 0.97 THEN at + make_interval(secs => 2 + (n % 60)) END,
       CASE WHEN o < 0.97 THEN at + make_interval(secs => 60 + (n % 600)) END,
       CASE WHEN o < 0.80 THEN (n % 5) * 10000 ELSE 0 END,
       callers.id,
       5
FROM (SELECT n, ((n::bigint * 7919) % 1000) / 1000.0 AS o,
             timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => (n * 2.592)::int) AS at
      FROM generate_series(1, 1000000) AS n) g
JOIN callers ON callers.rn = 1 + (g.n % 100000);
ANALYZE calls;
