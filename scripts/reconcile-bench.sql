-- The reconcile benchmark's calls: 1,000,000 calls of gateway recon-bench offered in November
-- 2026 (80% answered), each with its own caller. Run: psql "$bench_db" -f scripts/reconcile-bench.sql
DELETE FROM calls WHERE gateway_id = 'recon-bench';
-- `calls` is partitioned by month (migration 38): make the months written here.
SELECT history_make_month('calls', m::date)
  FROM generate_series(date '2026-11-01', date '2026-11-01', interval '1 month') AS m;
INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, queue, offered_at,
                   answered_at, ended_at, event_count)
SELECT 'recon-bench', 'u' || n, 'ended',
       CASE WHEN n % 10 < 8 THEN 'completed' ELSE 'abandoned' END,
       '+1415' || (2000000 + n % 8000000), 'q' || (n % 10), at,
       CASE WHEN n % 10 < 8 THEN at + make_interval(secs => 2 + n % 30) END,
       at + make_interval(secs => 40 + n % 600), 4
FROM (SELECT n, timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => (n * 2.592)::int) AS at
      FROM generate_series(1, 1000000) AS n) g;
ANALYZE calls;
