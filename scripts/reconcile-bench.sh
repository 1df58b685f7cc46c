#!/usr/bin/env bash
# `switchboard reconcile` of an Asterisk Master.csv of 1,000,000 rows, measured (never asserted),
# on loopback: a database of its own (switchboard_reconbench, scripts/reconcile-bench.sql's
# month of calls), a Master.csv written from those calls with planted differences, a release
# server in development mode on 127.0.0.1:50074, and the command timed RUNS times (default 3).
# Planted, per 1,000 calls: one left out of the file (missing in the CDRs), one answer turned
# into NO ANSWER (outcome), one billed 30 s longer (duration), one written twice (duplicate), one
# without its uniqueid (matched by caller and time); then 1,000 rows of calls Switchboard never
# saw (missing in Switchboard) and 100 broken rows. KEEP=1 reuses the database.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

RUNS="${RUNS:-3}"
bench_setup

db="${DATABASE_URL%/*}/switchboard_reconbench"
filled="$(psql "$db" -tAc "SELECT count(*) FROM calls WHERE gateway_id = 'recon-bench'" 2>/dev/null || echo 0)"
if [ -z "${KEEP:-}" ] || [ "$filled" != "1000000" ]; then
  log "reconcile: filling switchboard_reconbench (1,000,000 calls)"
  psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
    -c 'DROP DATABASE IF EXISTS switchboard_reconbench' -c 'CREATE DATABASE switchboard_reconbench'
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
  psql "$db" -q -v ON_ERROR_STOP=1 -f scripts/reconcile-bench.sql
else
  DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
fi

log "reconcile: writing Master.csv"
psql "$db" -qAt -v ON_ERROR_STOP=1 >"$work/Master.csv" <<'SQL'
COPY (
  WITH c AS (
    SELECT substr(call_id, 2)::int AS n, call_id, substr(caller_number, 3) AS src, offered_at,
           answered_at, ended_at FROM calls WHERE gateway_id = 'recon-bench'),
  rows AS (
    SELECT n, offered_at, call_id, src, answered_at IS NOT NULL AND n % 1000 <> 2 AS answered,
           offered_at AS start, answered_at, ended_at,
           COALESCE(date_part('epoch', ended_at - answered_at)::int, 0)
             + CASE WHEN n % 1000 = 3 THEN 30 ELSE 0 END AS billsec,
           CASE WHEN n % 1000 = 5 THEN '' ELSE call_id END AS uniqueid
    FROM c WHERE n % 1000 <> 1
    UNION ALL
    SELECT n, offered_at, call_id, src, answered_at IS NOT NULL, offered_at, answered_at, ended_at,
           COALESCE(date_part('epoch', ended_at - answered_at)::int, 0), call_id
    FROM c WHERE n % 1000 = 4
    UNION ALL
    SELECT 2000000 + n, offered_at + interval '1 second', 'x' || n, '14159999999', true,
           offered_at + interval '1 second', offered_at + interval '3 seconds',
           offered_at + interval '63 seconds', 60, 'x' || n
    FROM c WHERE n % 1000 = 500)
  SELECT format('"","%s","600","from-pstn","","SIP/trunk-1","SIP/200-2","Dial","SIP/200","%s","%s","%s",%s,%s,"%s","DOCUMENTATION","%s",""',
           src, to_char(start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
           CASE WHEN answered THEN to_char(answered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') ELSE '' END,
           to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
           date_part('epoch', ended_at - start)::int,
           CASE WHEN answered THEN billsec ELSE 0 END,
           CASE WHEN answered THEN 'ANSWERED' ELSE 'NO ANSWER' END, uniqueid)
  FROM rows ORDER BY offered_at, n
) TO STDOUT
SQL
for i in $(seq 1 100); do
  echo "\"\",\"14155550100\",\"600\",\"from-pstn\",\"\",\"SIP/x\",\"\",\"Dial\",\"\",\"not a time\",\"\",\"\",0,0,\"FAILED\",\"DOCUMENTATION\",\"bad$i\",\"\"" >>"$work/Master.csv"
done
rows="$(wc -l <"$work/Master.csv")"
log "reconcile: $rows rows, $(du -h "$work/Master.csv" | cut -f1)"

DATABASE_URL="$db" RUST_LOG="${SERVER_LOG:-warn}" "$bin/switchboard" serve --dev \
  --dev-token-file "$work/token" --listen 127.0.0.1:50074 --metrics-listen 127.0.0.1:0 \
  --redis-url "$REDIS_URL" --redis-prefix "reconbench$$:" >"$work/server.log" 2>&1 &
pids+=($!)
wait_port 50074
for _ in $(seq 1 100); do [ -s "$work/token" ] && break; sleep 0.1; done

for run in $(seq 1 "$RUNS"); do
  started=$(date +%s%N)
  "$bin/switchboard" reconcile "$work/Master.csv" --format asterisk --gateway-id recon-bench \
    --server http://127.0.0.1:50074 --token "$(cat "$work/token")" \
    --report "$work/report.csv" >"$work/out.txt"
  ms=$(( ($(date +%s%N) - started) / 1000000 ))
  echo "run $run: $rows rows reconciled in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s"
done
grep -E '^total|^rejected' "$work/out.txt"
echo "report lines by kind:"
tail -n +2 "$work/report.csv" | cut -d, -f2 | sort | uniq -c
