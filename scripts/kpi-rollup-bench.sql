-- Fills the benchmark database with a year of 12,000,000 synthetic calls, offered from
-- 2025-12-01 to 2026-12-01 (UTC), to time GetKpis over the daily rollups: the calls of
-- scripts/kpi-bench.sql (10 queues, 200 agents, 100,000 repeat callers; 80% completed, 12%
-- abandoned, 5% unanswered, 3% in progress), twelve times over.
--
-- Written with triggers off (session_replication_role), a month per statement, so it does
-- itself what the triggers would: each call's next and previous contact (the same caller calls
-- every 100,000th call, and no call here is a misdial), and a KPI rollup note for every day.
-- Run: psql "$bench_db" -f scripts/kpi-rollup-bench.sql  (replaces earlier calls of gateway kpi-year)
\set ON_ERROR_STOP on
SET session_replication_role = replica;
DELETE FROM calls WHERE gateway_id = 'kpi-year';
CREATE TEMP TABLE callers AS
  SELECT id, row_number() OVER (ORDER BY id) - 1 AS k
  FROM customers WHERE deleted_at IS NULL AND erased_at IS NULL LIMIT 100000;
CREATE UNIQUE INDEX ON callers (k);
SELECT count(*) = 100000 AS enough_callers FROM callers \gset
\if :enough_callers
\else
  \echo 'kpi-rollup-bench.sql needs 100,000 customers'
  \quit
\endif
-- `calls` is partitioned by month (migration 38): make the year's months first.
SELECT history_make_month('calls', m::date)
  FROM generate_series(date '2025-12-01', date '2026-12-01', interval '1 month') AS m;
-- Call n (0 to 11,999,999) is offered 2.628 s after call n - 1, by caller n % 100,000.
CREATE FUNCTION pg_temp.kpi_year_at(n bigint) RETURNS timestamptz LANGUAGE sql IMMUTABLE
  RETURN timestamptz '2025-12-01 00:00:00+00' + make_interval(secs => n * 2.628);
SELECT format('INSERT INTO calls (gateway_id, call_id, state, outcome, queue, handled_by, transfers, '
              'offered_at, queued_at, answered_at, ended_at, hold_ms, customer_id, event_count, '
              'next_offered_at, prev_offered_at) '
              'SELECT ''kpi-year'', ''y'' || n, '
              '  CASE WHEN o < 0.80 THEN ''ended'' WHEN o < 0.92 THEN ''abandoned'' WHEN o < 0.97 THEN ''ended'' ELSE ''connected'' END, '
              '  CASE WHEN o < 0.80 THEN ''completed'' WHEN o < 0.92 THEN ''abandoned'' WHEN o < 0.97 THEN ''unanswered'' ELSE ''in_progress'' END, '
              '  ''q'' || (n %% 10), '
              '  CASE WHEN o < 0.80 OR o >= 0.97 THEN ARRAY[''agent-'' || (n %% 200)] ELSE ''{}'' END, '
              '  CASE WHEN n %% 17 = 0 THEN 1 ELSE 0 END, at, at, '
              '  CASE WHEN o < 0.80 OR o >= 0.97 THEN at + make_interval(secs => 2 + (n %% 60)) END, '
              '  CASE WHEN o < 0.97 THEN at + make_interval(secs => 60 + (n %% 600)) END, '
              '  CASE WHEN o < 0.80 THEN (n %% 5) * 10000 ELSE 0 END, c.id, 5, '
              '  CASE WHEN n + 100000 < 12000000 THEN pg_temp.kpi_year_at(n + 100000) END, '
              '  CASE WHEN n >= 100000 THEN pg_temp.kpi_year_at(n - 100000) END '
              'FROM (SELECT n, ((n * 7919) %% 1000) / 1000.0 AS o, pg_temp.kpi_year_at(n) AS at '
              '      FROM generate_series(%s::bigint, %s::bigint) AS n) g '
              'JOIN callers c ON c.k = g.n %% 100000',
              m * 1000000, m * 1000000 + 999999)
FROM generate_series(0, 11) AS m \gexec
SET session_replication_role = origin;
INSERT INTO kpi_rollup_notes (day)
SELECT d::date FROM generate_series(date '2025-12-01', date '2026-11-30', interval '1 day') AS d;
ANALYZE calls;
