#!/usr/bin/env bash
# How cost grows with the data (the scaling curve of issue #25), measured, never asserted:
# pop-cold throughput with 100,000, 1,000,000 and 5,000,000 customers, and closed-loop call-event
# ingest with 1,000,000 and 10,000,000 calls already stored, each next to `echo` measured in the
# same step. A database of its own (switchboard_scale) is grown step by step and vacuumed before
# each measurement; a release server runs per step on 127.0.0.1:50076. About 30 minutes and
# 15 GB of disk on the 2-core machine. KEEP=1 keeps the database for another run.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

bench_setup
bench="$bin/switchboard-bench"
db="${DATABASE_URL%/*}/switchboard_scale"
if [ -z "${KEEP:-}" ]; then
  psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
    -c 'DROP DATABASE IF EXISTS switchboard_scale' -c 'CREATE DATABASE switchboard_scale'
fi
DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1

server_pid=""
serve() {
  rm -f "$work/token"
  DATABASE_URL="$db" SWITCHBOARD_RATE_LIMIT_PER_SECOND=10000000 SWITCHBOARD_RATE_LIMIT_BURST=10000000 \
    RUST_LOG=warn "$bin/switchboard" serve --dev --dev-token-file "$work/token" \
    --listen 127.0.0.1:50076 --metrics-listen 127.0.0.1:0 --redis-url "$REDIS_URL" \
    --redis-prefix "scale:" >"$work/server.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_port 50076
  for _ in $(seq 1 100); do [ -s "$work/token" ] && break; sleep 0.1; done
  export SWITCHBOARD_TOKEN="$(cat "$work/token")"
}
stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
b() { DATABASE_URL="$db" "$bench" "$@" --server http://127.0.0.1:50076 2>&1 | grep -E '^[a-z-]+:' || true; }

seed=20
for size in 100000 1000000 5000000; do
  have="$(psql "$db" -tAc 'SELECT count(*) FROM customers')"
  if [ "$have" -lt "$size" ]; then
    seed=$((seed + 1))
    log "scale: seeding $((size - have)) customers (to $size)"
    started=$(date +%s)
    DATABASE_URL="$db" "$bin/switchboard" seed --customers $((size - have)) --seed "$seed" >/dev/null 2>&1
    log "scale: seeded in $(( $(date +%s) - started )) s"
  fi
  psql "$db" -q -c 'VACUUM ANALYZE'
  serve
  echo "== $size customers =="
  b echo --duration 10 --echo-secs 0
  redis-cli -u "$REDIS_URL" --scan --pattern 'scale:pop:*' | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
  b pop-cold --duration 10 --warmup 0 --population 150000
  stop_server
done

for calls in 1000000 10000000; do
  have="$(psql "$db" -tAc "SELECT count(*) FROM calls")"
  if [ "$have" -lt "$calls" ]; then
    log "scale: storing $((calls - have)) calls (to $calls)"
    started=$(date +%s)
    # calls is partitioned by month (migration 38): make the months written here first.
    psql "$db" -q -v ON_ERROR_STOP=1 -c "
      SELECT history_make_month('calls', m::date)
        FROM generate_series(date '2026-01-01', date '2026-09-01', interval '1 month') AS m"
    psql "$db" -q -v ON_ERROR_STOP=1 -c "
      INSERT INTO calls (gateway_id, call_id, state, outcome, caller_number, queue, handled_by,
                         offered_at, answered_at, ended_at, event_count)
      SELECT 'scale-fill', 'f' || n, 'ended', 'completed', '+1415' || (2000000 + n % 8000000),
             'q' || (n % 10), ARRAY['agent-' || (n % 200)],
             timestamptz '2026-01-01' + make_interval(secs => n * 2),
             timestamptz '2026-01-01' + make_interval(secs => n * 2 + 5),
             timestamptz '2026-01-01' + make_interval(secs => n * 2 + 120), 4
      FROM generate_series($have + 1, $calls) AS n"
    log "scale: stored in $(( $(date +%s) - started )) s"
  fi
  psql "$db" -q -c 'VACUUM ANALYZE calls'
  serve
  echo "== $calls calls stored =="
  b echo --duration 10 --echo-secs 0
  b events --duration 10 --concurrency 1024 --streams 64 --agents 50 --population 10000
  stop_server
done
