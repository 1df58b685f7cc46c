# shellcheck shell=bash
# Sourced by scripts/dev.sh and scripts/test.sh: makes PostgreSQL and Redis available.
#
# - DATABASE_URL / REDIS_URL set: they are used as they are.
# - Otherwise a private PostgreSQL (port 55432) and Redis (port 56379) are started on 127.0.0.1
#   with their data under .data/ in the project (or /var/tmp/switchboard-data-* when the
#   `postgres` user cannot reach the project directory), and the URLs are exported.
# Missing packages (redis-server, postgresql) are installed with apt-get when running as root.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_PORT="${SWITCHBOARD_PG_PORT:-55432}"
REDIS_PORT="${SWITCHBOARD_REDIS_PORT:-56379}"

log() { printf '[switchboard] %s\n' "$*" >&2; }

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$dir" ] && command -v pg_ctl >/dev/null; then dir="$(dirname "$(command -v pg_ctl)")"; fi
  printf '%s' "$dir"
}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "please install: $* (apt-get install -y $*)"; exit 1
  fi
  log "installing $* with apt-get"
  if [ -z "${SWITCHBOARD_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    export SWITCHBOARD_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# web/: npm packages from the lockfile, and the generated clients must match proto/ (a proto change
# without `npm run generate` fails here).
web_clients() {
  (
    cd "$ROOT/web"
    npm ci --no-audit --no-fund --loglevel=error
    npx buf generate
    npx tsc -p .
    # The web app's bundle, which the binary embeds: rebuilt and compared with the committed one.
    npm run --silent build
    local stale
    stale="$(git status --porcelain -- src/gen dist)"
    if [ -n "$stale" ]; then
      printf 'web/src/gen or web/dist is stale; run `npm run generate && npm run build` in web/ and commit:\n%s\n' "$stale" >&2
      exit 1
    fi
  )
}

# The API: lines of at most 100 columns, buf lint (STANDARD rules, exceptions in buf.yaml) and buf
# breaking against the released API (api/switchboard-v1.binpb), with the buf CLI from web/'s npm
# packages.
api_checks() {
  local long
  long="$(awk 'length > 100 {print FILENAME ":" FNR ": " length " columns"}' "$ROOT"/proto/switchboard/v1/*.proto)"
  if [ -n "$long" ]; then
    printf 'proto lines over 100 columns:\n%s\n' "$long" >&2
    return 1
  fi
  "$ROOT/web/node_modules/.bin/buf" lint
  "$ROOT/web/node_modules/.bin/buf" breaking --against "$ROOT/api/switchboard-v1.binpb"
}

# Waits (up to 30 s) until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listens on $1"
  return 1
}

ensure_packages() {
  command -v redis-server >/dev/null || apt_install redis-server
  [ -n "$(pg_bindir)" ] || apt_install postgresql
  command -v protoc >/dev/null || true   # not needed: build.rs uses protox
  # The Helm chart check runs in a Python virtualenv (scripts/check-helm.sh).
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
  # The TypeScript clients (web/) and the gRPC-web client test: Node.js and npm.
  command -v npm >/dev/null || apt_install nodejs npm
  # The web app's browser tests: Debian's Chromium, driven by playwright-core (from npm, pointed at
  # /usr/bin/chromium; nothing downloads a browser).
  command -v chromium >/dev/null || apt_install chromium
  # The SIP path's tests: Kamailio (evapi in kamailio-extra-modules, http_client in
  # kamailio-utils-modules) and SIPp (sip-tester) as callers and agents' phones.
  command -v kamailio >/dev/null || apt_install kamailio
  [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/evapi.so ] || apt_install kamailio-extra-modules
  [ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/http_client.so ] || apt_install kamailio-utils-modules
  command -v sipp >/dev/null || apt_install sip-tester
  # The NATS JetStream sink's tests.
  command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || apt_install nats-server
}

data_dir() {
  local dir="${SWITCHBOARD_DATA_DIR:-$ROOT/.data}"
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir"; then
    dir="/var/tmp/switchboard-data-$(printf '%s' "$ROOT" | md5sum | cut -c1-8)"
    mkdir -p "$dir"
  fi
  printf '%s' "$dir"
}

# A write-heavy service's settings, not PostgreSQL's defaults (sized for a small laptop): call
# events write several rows each, and with 128 MB of buffers and 1 GB of WAL between checkpoints
# the server spent its time in forced checkpoints and backend writes (docs/BENCHMARKS history).
# Commits stay synchronous: an acked event is on disk.
# pg_stat_statements (with planning counted) is loaded for the benchmarks' profiles and for the
# test that the hot paths' statements are not planned at every call.
PG_TUNING="-c shared_buffers=1GB -c max_wal_size=8GB -c min_wal_size=1GB -c checkpoint_timeout=15min \
-c checkpoint_completion_target=0.9 -c wal_buffers=64MB -c wal_compression=lz4 \
-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"

start_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    log "using DATABASE_URL from the environment"
    return
  fi
  local bin dir pgdata
  bin="$(pg_bindir)"
  dir="$(data_dir)"
  pgdata="$dir/postgres"
  export SWITCHBOARD_PG_BIN="$bin"
  if [ ! -s "$pgdata/PG_VERSION" ]; then
    log "creating a PostgreSQL cluster in $pgdata"
    mkdir -p "$pgdata"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$pgdata"
    chmod 700 "$pgdata"
    as_postgres "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT (data: $pgdata, log: $pgdata/server.log)"
    as_postgres "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=300 $PG_TUNING" start >/dev/null
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/switchboard"
  if ! as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'switchboard'" | grep -q 1; then
    as_postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE switchboard"
  fi
}

start_redis() {
  if [ -n "${REDIS_URL:-}" ]; then
    log "using REDIS_URL from the environment"
    return
  fi
  local dir
  dir="$(data_dir)/redis"
  mkdir -p "$dir"
  if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    log "starting Redis on 127.0.0.1:$REDIS_PORT (data: $dir)"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$dir" \
      --save '' --appendonly no --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
}

stop_local_services() {
  local bin dir
  bin="$(pg_bindir)"
  dir="$(data_dir)"
  [ ! -d "$dir/postgres" ] || as_postgres "$bin/pg_ctl" -D "$dir/postgres" -m fast stop >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

# For the bench scripts: the packages, PostgreSQL and Redis, a release build (`$bin`), and a
# scratch directory (`$work`) removed on exit with the processes the script lists in `pids`.
bench_setup() {
  ensure_packages
  start_postgres
  start_redis
  cargo build --release --quiet --bins
  bin="$ROOT/target/release"
  work="$(mktemp -d)"
  pids=()
  trap bench_cleanup EXIT
}

# The benchmark database (`$bench_db`, switchboard_bench): 1,000,000 seeded customers, created and
# seeded on first use (~2 minutes), migrated, with its stored cards built.
bench_database() {
  bench_db="${DATABASE_URL%/*}/switchboard_bench"
  if ! psql "$bench_db" -tAc 'SELECT 1' >/dev/null 2>&1; then
    psql "$DATABASE_URL" -c 'CREATE DATABASE switchboard_bench' >/dev/null
  fi
  DATABASE_URL="$bench_db" "$ROOT/target/release/switchboard" migrate
  local customers
  customers="$(psql "$bench_db" -tAc 'SELECT count(*) FROM customers')"
  if [ "$customers" -lt 1000000 ]; then
    log "seeding 1,000,000 customers (once)"
    DATABASE_URL="$bench_db" "$ROOT/target/release/switchboard" seed --customers $((1000000 - customers)) --seed 7
  fi
  # The stored cards (customer_cards): built once here, so that pop-cold reads them rather than
  # timing the first build. A no-op when they are current.
  DATABASE_URL="$bench_db" "$ROOT/target/release/switchboard" maintenance build-cards
}

# Seconds since $1 (from `date +%s%N`), two decimals (the benchmark scripts).
since() {
  local ms=$(( ($(date +%s%N) - $1) / 1000000 ))
  printf '%d.%02d' $((ms / 1000)) $(((ms % 1000) / 10))
}

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
