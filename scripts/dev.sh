#!/usr/bin/env bash
# Runs Switchboard with demo data: starts PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are
# set, builds a release binary, seeds demo customers on first run, and serves on 127.0.0.1:50051.
# SEED_CUSTOMERS (default 50000) sets how many synthetic customers the first run adds.
# It runs in development mode: a random signing secret, and an ADMIN token printed and written to
# .data/dev-token, where the client subcommands find it, and sign-in links for the web app (agent
# desktop, wallboard). `switchboard simulate` drives demo calls through the API alongside.
# `scripts/dev.sh stop` stops the local PostgreSQL and Redis.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

if [ "${1:-}" = "stop" ]; then
  stop_local_services
  exit 0
fi

ensure_packages
start_postgres
start_redis
cargo build --release --quiet
bin=./target/release/switchboard
"$bin" migrate
customers="$(psql "$DATABASE_URL" -tAc 'SELECT count(*) FROM customers' 2>/dev/null || echo 0)"
if [ "${customers:-0}" = "0" ]; then
  "$bin" seed --customers "${SEED_CUSTOMERS:-50000}" --demo
fi
log "DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL"
log "try, in another terminal: $bin pop +14155550100   (the client reads the dev token from .data/dev-token)"
"$bin" serve --dev --dev-token-file .data/dev-token &
server=$!
sim=""
trap 'kill $server $sim 2>/dev/null || true' EXIT INT TERM
# Demo traffic once the server answers (SIMULATE=0 turns it off; SIMULATE_RATE calls a minute).
for _ in $(seq 1 300); do
  (exec 3<>/dev/tcp/127.0.0.1/50051) 2>/dev/null && break
  sleep 0.1
done
if [ "${SIMULATE:-1}" != 0 ]; then
  "$bin" simulate --calls-per-minute "${SIMULATE_RATE:-8}" >"$(data_dir)/simulate.log" 2>&1 &
  sim=$!
  log "demo traffic: switchboard simulate, log in $(data_dir)/simulate.log (SIMULATE=0 turns it off)"
fi
log "open the Agent desktop and Wallboard links printed above"
wait $server
