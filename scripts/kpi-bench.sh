#!/usr/bin/env bash
# GetKpis over a month of 1,000,000 calls, measured (never asserted), on loopback: a database of
# its own (switchboard_kpibench: 100,000 customers, then scripts/kpi-bench.sql's calls), a release
# server in development mode on 127.0.0.1:50073, and `switchboard kpis` timed RUNS times (default
# 3) for every grouping. The first request stamps the month's contact chains and is not counted.
# KEEP=1 reuses the database when it is already filled. Then GetScorecard is timed on the same
# month.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

RUNS="${RUNS:-3}"
bench_setup

db="${DATABASE_URL%/*}/switchboard_kpibench"
filled="$(psql "$db" -tAc "SELECT count(*) FROM calls WHERE gateway_id = 'kpi-bench'" 2>/dev/null || echo 0)"
if [ -z "${KEEP:-}" ] || [ "$filled" != "1000000" ]; then
  log "kpis: filling switchboard_kpibench (100,000 customers, 1,000,000 calls)"
  psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
    -c 'DROP DATABASE IF EXISTS switchboard_kpibench' -c 'CREATE DATABASE switchboard_kpibench'
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
  DATABASE_URL="$db" "$bin/switchboard" seed --customers 100000 >/dev/null 2>&1
  psql "$db" -q -v ON_ERROR_STOP=1 -f scripts/kpi-bench.sql
else
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
fi

DATABASE_URL="$db" RUST_LOG="${SERVER_LOG:-warn}" "$bin/switchboard" serve --dev \
  --dev-token-file "$work/token" --listen 127.0.0.1:50073 --metrics-listen 127.0.0.1:0 \
  --redis-url "$REDIS_URL" --redis-prefix "kpibench$$:" >"$work/server.log" 2>&1 &
pids+=($!)
wait_port 50073
for _ in $(seq 1 100); do [ -s "$work/token" ] && break; sleep 0.1; done

kpis() {
  "$bin/switchboard" kpis --server http://127.0.0.1:50073 --token "$(cat "$work/token")" \
    --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z "$@" >/dev/null
}
# The first requests wait for the chain stamper (after loading, or a migration that notes every
# chain, it has the month to stamp); one may run out of time meanwhile, so they are asked again.
started=$(date +%s%N)
for attempt in $(seq 1 30); do
  kpis 2>/dev/null && break
  [ "$attempt" = 30 ] && { kpis; exit 1; }
done
log "kpis: the first answer (after stamping the chains) came after $(since "$started") s"
for grouping in day hour team queue agent campaign ""; do
  times=()
  for _ in $(seq 1 "$RUNS"); do
    started=$(date +%s%N)
    if [ -n "$grouping" ]; then kpis --group-by "$grouping"; else kpis; fi
    times+=("$(since "$started")")
  done
  echo "by ${grouping:-totals only}: ${times[*]} s"
done
# The roll-out scorecard on the same month: its second half against its first, by team and by
# queue (three KPI passes, the adoption, case and coordination queries).
for grouping in team queue; do
  times=()
  for _ in $(seq 1 "$RUNS"); do
    started=$(date +%s%N)
    "$bin/switchboard" scorecard --server http://127.0.0.1:50073 --token "$(cat "$work/token")" \
      --period 2026-11-16..2026-12-01 --baseline 2026-11-01..2026-11-16 --group-by "$grouping" >/dev/null
    times+=("$(since "$started")")
  done
  echo "scorecard by $grouping: ${times[*]} s"
done
