#!/usr/bin/env bash
# Webhook and NATS delivery, measured (never asserted), on loopback: a release server in
# development mode on 127.0.0.1:50072 with its own database (switchboard_sinkbench, 10,000
# customers) and Redis prefix, nats-server with JetStream on 4333, and `switchboard-bench sinks`
# (its own webhook receiver in-process, and a NATS subscription). It reports:
#   1. call-event ingest with the sinks paused and delivering in turn, PHASES (default 5, of SECS=12 s)
#      delivering phases between paused ones (closed loop), and the cores each program used
#   2. the delivery lag at RATE call events a second (default 1000; one feed event each)
#   3. deliveries a second, draining a backlog of BACKLOG events (default 20000) per sink
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

RATE="${RATE:-1000}"
BACKLOG="${BACKLOG:-20000}"
NATS_PORT=4333

bench_setup

nats="$(command -v nats-server || echo /usr/sbin/nats-server)"
"$nats" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
wait_port "$NATS_PORT"

db="${DATABASE_URL%/*}/switchboard_sinkbench"
psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
  -c 'DROP DATABASE IF EXISTS switchboard_sinkbench' -c 'CREATE DATABASE switchboard_sinkbench'
DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
DATABASE_URL="$db" "$bin/switchboard" seed --customers 10000 >/dev/null

DATABASE_URL="$db" RUST_LOG="${SERVER_LOG:-warn}" SWITCHBOARD_RATE_LIMIT_PER_SECOND=10000000 \
  SWITCHBOARD_RATE_LIMIT_BURST=10000000 "$bin/switchboard" serve --dev \
  --dev-token-file "$work/token" --listen 127.0.0.1:50072 --metrics-listen 127.0.0.1:0 \
  --redis-url "$REDIS_URL" --redis-prefix "sinkbench$$:" \
  --webhook-allow-cidr 127.0.0.0/8 --nats-url "nats://127.0.0.1:$NATS_PORT" \
  >"$work/server.log" 2>&1 &
pids+=($!)
wait_port 50072
for _ in $(seq 1 100); do [ -s "$work/token" ] && break; sleep 0.1; done

log "sinks: ingest without and with delivery, the lag at $RATE events/s, a backlog of $BACKLOG"
DATABASE_URL="$db" "$bin/switchboard-bench" sinks --server http://127.0.0.1:50072 \
  --token "$(cat "$work/token")" --nats-url "nats://127.0.0.1:$NATS_PORT" --rate "$RATE" \
  --duration "${SECS:-12}" --warmup 2 --phases "${PHASES:-5}" --concurrency 1024 --streams 64 --agents 50 --population 10000 \
  --calls "$BACKLOG" --echo-secs 0
[ -n "${KEEP_LOG:-}" ] && cp "$work/server.log" "$KEEP_LOG"
