#!/usr/bin/env bash
# Refreshes .sqlx/, the compile-time data of sqlx's query macros, from a fresh database migrated
# from migrations/ (psql, so no build is needed first). With --check, changes nothing and fails
# when .sqlx/ is not what the code and the migrations give (a query or a migration changed
# without `scripts/sqlx-prepare.sh`). Uses the local PostgreSQL of scripts/services.sh unless
# DATABASE_URL is set.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"
check=false
[ "${1:-}" = "--check" ] && check=true

start_postgres
admin_url="$DATABASE_URL"
db_url="${admin_url%/*}/switchboard_sqlx"
psql "$admin_url" -q -c 'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS switchboard_sqlx' -c 'CREATE DATABASE switchboard_sqlx' >/dev/null
for migration in migrations/*.sql; do
  psql "$db_url" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The macros run again only when the crate recompiles; online, they write what they checked to
# SQLX_OFFLINE_DIR.
touch src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$db_url" SQLX_OFFLINE_DIR="$out" cargo check --quiet --lib
if $check; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1 && ! { [ -z "$(ls -A "$out")" ] && [ ! -d .sqlx ]; }; then
    echo ".sqlx/ is stale: run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    diff -r "$out" .sqlx >&2 || true
    exit 1
  fi
  log ".sqlx/ is current ($(ls "$out" | wc -l) queries checked against the migrations)"
else
  rm -rf .sqlx
  mkdir -p .sqlx
  cp "$out"/. .sqlx/ -r
  log ".sqlx/ refreshed: $(ls .sqlx | wc -l) queries"
fi
