#!/usr/bin/env bash
# GetKpis over a year of 12,000,000 calls by month, from the daily rollups, measured (never
# asserted), on loopback: a database of its own (switchboard_kpiyear: 100,000 customers, then
# scripts/kpi-rollup-bench.sql's calls), a release server in development mode on 127.0.0.1:50074,
# which rolls the year up in the background. Prints how long filling and rolling up took, then
# `switchboard kpis --group-by month` timed RUNS times (default 3) over the rollups, and once
# over the scan (a time zone other than UTC: the rollups' days are UTC days). KEEP=1 reuses the
# database when it is already filled.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

RUNS="${RUNS:-3}"
bench_setup

db="${DATABASE_URL%/*}/switchboard_kpiyear"
filled="$(psql "$db" -tAc "SELECT count(*) FROM calls WHERE gateway_id = 'kpi-year'" 2>/dev/null || echo 0)"
if [ -z "${KEEP:-}" ] || [ "$filled" != "12000000" ]; then
  log "kpis: filling switchboard_kpiyear (100,000 customers, 12,000,000 calls)"
  started=$(date +%s%N)
  psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
    -c 'DROP DATABASE IF EXISTS switchboard_kpiyear' -c 'CREATE DATABASE switchboard_kpiyear'
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
  DATABASE_URL="$db" "$bin/switchboard" seed --customers 100000 >/dev/null 2>&1
  psql "$db" -q -v ON_ERROR_STOP=1 -f scripts/kpi-rollup-bench.sql
  echo "filled in $(since "$started") s"
else
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
fi

started=$(date +%s%N)
DATABASE_URL="$db" RUST_LOG="${SERVER_LOG:-warn}" "$bin/switchboard" serve --dev \
  --dev-token-file "$work/token" --listen 127.0.0.1:50074 --metrics-listen 127.0.0.1:0 \
  --redis-url "$REDIS_URL" --redis-prefix "kpiyear$$:" >"$work/server.log" 2>&1 &
pids+=($!)
wait_port 50074
for _ in $(seq 1 100); do [ -s "$work/token" ] && break; sleep 0.1; done
# The server rolls up every closed day with a note (here, the whole year) in the background.
pending() {
  psql "$db" -tAc "SELECT count(DISTINCT day) FROM kpi_rollup_notes WHERE day < kpi_day(now())"
}
while [ "$(pending)" != 0 ]; do sleep 1; done
echo "rolled up in $(since "$started") s: $(psql "$db" -tAc \
  "SELECT count(*) || ' days, ' || (SELECT count(*) FROM kpi_call_rollups) || ' call rollup rows' \
   FROM kpi_rollup_days")"

kpis() {
  "$bin/switchboard" kpis --server http://127.0.0.1:50074 --token "$(cat "$work/token")" \
    --from 2025-12-01T00:00:00Z --to 2026-12-01T00:00:00Z --group-by month "$@" >/dev/null
}
kpis
times=()
for _ in $(seq 1 "$RUNS"); do
  started=$(date +%s%N)
  kpis
  times+=("$(since "$started")")
done
echo "a year by month, from the rollups: ${times[*]} s"
for grouping in queue agent; do
  started=$(date +%s%N)
  "$bin/switchboard" kpis --server http://127.0.0.1:50074 --token "$(cat "$work/token")" \
    --from 2025-12-01T00:00:00Z --to 2026-12-01T00:00:00Z --group-by "$grouping" >/dev/null
  echo "a year by $grouping, from the rollups: $(since "$started") s"
done
# The scan, for comparison: a time zone other than UTC (Africa/Abidjan is UTC+0 all year, so the
# answer is the same) reads no rollup. A year does not finish within the request deadline, so a
# month is timed too.
for months in "2026-11-01T00:00:00Z 1 month" "2025-12-01T00:00:00Z the year"; do
  set -- $months
  to=2026-12-01T00:00:00Z
  started=$(date +%s%N)
  if "$bin/switchboard" kpis --server http://127.0.0.1:50074 --token "$(cat "$work/token")" \
      --from "$1" --to "$to" --group-by month --time-zone Africa/Abidjan >/dev/null 2>&1; then
    echo "${*:2} by month, scanned: $(since "$started") s"
  else
    echo "${*:2} by month, scanned: no answer within the deadline ($(since "$started") s)"
  fi
done
