#!/usr/bin/env bash
# Runs Switchboard with demo data: starts PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are
# set, builds a release binary, seeds demo customers on first run, and serves on 127.0.0.1:50051.
# SEED_CUSTOMERS (default 50000) sets how many synthetic customers the first run adds.
# It runs in development mode: a random signing secret, and an ADMIN token printed and written to
# .data/dev-token, where the client subcommands find it. `scripts/dev.sh stop` stops the local
# PostgreSQL and Redis.
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
exec "$bin" serve --dev --dev-token-file .data/dev-token
