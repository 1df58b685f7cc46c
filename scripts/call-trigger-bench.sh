#!/usr/bin/env bash
# What the triggers on `calls` cost a call-event batch, measured (never asserted), with pgbench on
# the local PostgreSQL: two databases of their own, `switchboard_trig_before` (every migration
# older than BEFORE, default the newest migration) and `switchboard_trig_after` (all of them), each
# with 10,000 customers, 100,000 ended calls and 256 live ones. Each round runs, in each database,
# 200 transactions of each statement: a 256-row insert of new calls (`insert`), a 256-row update
# that ends the live calls 20 s after their offer (`end-soon`: every row a possible misdial, which
# the chain trigger notes) and one that ends them 3 minutes after (`end-late`: no row noted).
# Every transaction rolls back, so each round sees the same tables. ROUNDS (default 4)
# alternate the two databases, so that drift in the machine falls on both. Prints pgbench's
# average latency per statement, in ms. BENCHMARKS.md "#25, sixth pass" has the figures.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

ROUNDS="${ROUNDS:-4}"
BEFORE="${BEFORE:-$(basename "$(ls migrations/*.sql | sort | tail -1)" | cut -d_ -f1)}"
ensure_packages
start_postgres
pgbench="$(pg_bindir)/pgbench"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

base="${DATABASE_URL%/*}"
for side in before after; do
  db="$base/switchboard_trig_$side"
  psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
    -c "DROP DATABASE IF EXISTS switchboard_trig_$side" -c "CREATE DATABASE switchboard_trig_$side"
  for file in migrations/*.sql; do
    version="$(basename "$file" | cut -d_ -f1)"
    if [ "$side" = before ] && [ "$version" -ge "$BEFORE" ]; then continue; fi
    psql "$db" -q -v ON_ERROR_STOP=1 -f "$file" >/dev/null
  done
  psql "$db" -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO customers (id, display_name)
SELECT md5('c' || n)::uuid, 'Customer ' || n FROM generate_series(0, 9999) n;
CREATE TABLE bench_ids AS SELECT n, md5('c' || n)::uuid AS id FROM generate_series(0, 9999) n;
ALTER TABLE bench_ids ADD PRIMARY KEY (n);
INSERT INTO calls (gateway_id, call_id, state, outcome, offered_at, ended_at, customer_id)
SELECT 'old', 'c' || i, 'ended', 'answered', now() - interval '6 days' + i * interval '5 s',
       now() - interval '6 days' + i * interval '5 s' + interval '3 minutes',
       md5('c' || (i % 10000))::uuid
FROM generate_series(1, 100000) i;
INSERT INTO calls (gateway_id, call_id, state, offered_at, customer_id)
SELECT 'live', 'c' || i, 'ringing', now() - interval '50 seconds' + i * interval '1 ms',
       md5('c' || ((i * 37 + 11) % 10000))::uuid
FROM generate_series(1, 256) i;
VACUUM ANALYZE;
SQL
done

cat >"$work/insert.sql" <<'SQL'
\set r random(0, 9999)
BEGIN;
INSERT INTO calls (gateway_id, call_id, state, offered_at, customer_id)
SELECT 'new', 'c' || i, 'ringing', now() - interval '50 seconds' + i * interval '1 ms',
       (SELECT id FROM bench_ids WHERE n = (i * 37 + :r) % 10000)
FROM generate_series(1, 256) i;
ROLLBACK;
SQL
for end in soon:20 late:180; do
  cat >"$work/end-${end%:*}.sql" <<SQL
BEGIN;
UPDATE calls SET state = 'ended', outcome = 'answered',
  ended_at = offered_at + interval '${end#*:} seconds'
WHERE gateway_id = 'live';
ROLLBACK;
SQL
done

echo "migrations before $BEFORE vs all; ms per 256-row statement (pgbench latency average)"
for round in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    line="round $round $side:"
    for statement in insert end-soon end-late; do
      ms="$("$pgbench" -n -t 200 -f "$work/$statement.sql" "$base/switchboard_trig_$side" 2>&1 |
        awk '/latency average/ {print $4}')"
      line="$line $statement $ms"
    done
    echo "$line"
  done
done
