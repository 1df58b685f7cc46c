#!/usr/bin/env bash
# Runs every check CI runs: the Helm chart (linted, rendered, validated against the Kubernetes
# schemas), the TypeScript clients (installed from the lockfile, regenerated from proto/ and
# compared with the committed ones, type-checked), the API (buf lint, buf breaking), formatting,
# clippy (warnings are errors), the compile-time SQL data (.sqlx/, against a database migrated
# from migrations/), unit and integration tests against a real PostgreSQL and Redis (started
# locally unless DATABASE_URL / REDIS_URL are set).
# Integration tests create one database per test and use one Redis key prefix per test.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

ensure_packages
start_postgres
start_redis
export SWITCHBOARD_PG_BIN="${SWITCHBOARD_PG_BIN:-$(pg_bindir)}"

scripts/check-helm.sh
web_clients
api_checks
cargo fmt --all --check
cargo clippy --all-targets --quiet -- -D warnings
scripts/sqlx-prepare.sh --check
cargo test --all-targets
