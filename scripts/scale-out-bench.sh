#!/usr/bin/env bash
# Measured scale-out (#26 item 5), all on loopback on this machine, in one run:
#   1. one `switchboard serve`, one Redis server, the PostgreSQL primary;
#   2. three `switchboard serve` instances, a Redis Cluster of three masters and three replicas
#      (`redis-cli --cluster create`), the primary and one streaming replica (`pg_basebackup`).
# For each: echo, pop-cold, pop-hot and closed-loop events, the client's connections spread over
# the instances (six either way), so every figure has the echo of the same setup beside it.
# Uses scripts/bench.sh's database (switchboard_bench, 1,000,000 customers, seeded on first use).
# The replica is a base backup of the whole local PostgreSQL server (every database on it): it
# takes disk and a few minutes. Prints the summary lines; docs/SCALING.md records them.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

bench_setup
bench_database
bench="$bin/switchboard-bench"
chmod 755 "$work"
replica_port=55439
# Below 55,536: each node's cluster bus listens on its port + 10,000.
cluster_ports=(47011 47012 47013 47014 47015 47016)
stop_all() {
  as_postgres "$(pg_bindir)/pg_ctl" -D "$work/replica" -m immediate stop >/dev/null 2>&1 || true
  bench_cleanup
}
trap stop_all EXIT

# One HS256 secret for every instance, and an ADMIN token signed with it (as `--dev` would print).
secret="$(head -c 48 /dev/urandom | base64 | tr -d '=+/\n')"
export SWITCHBOARD_TOKEN="$(python3 - "$secret" <<'EOF'
import base64, hashlib, hmac, json, sys, time
b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
claims = {"sub": "scale-out-bench", "role": "admin", "iss": "switchboard",
          "aud": "switchboard", "exp": int(time.time()) + 6 * 3600}
signed = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
print(signed + "." + b64(hmac.new(sys.argv[1].encode(), signed.encode(), hashlib.sha256).digest()))
EOF
)"

# Starts an instance on $1 with the environment that follows; waits for its port.
serve() {
  local port=$1
  shift
  env "$@" DATABASE_URL="$bench_db" SWITCHBOARD_JWT_HS256_SECRET="$secret" \
    SWITCHBOARD_RATE_LIMIT_PER_SECOND=10000000 SWITCHBOARD_RATE_LIMIT_BURST=10000000 RUST_LOG=warn \
    "$bin/switchboard" serve --listen "127.0.0.1:$port" --metrics-listen 127.0.0.1:0 \
    >"$work/server-$port.log" 2>&1 &
  pids+=("$!")
  server_pids+=("$!")
  wait_port "$port"
}

# CPU ticks (1/100 s) used so far by processes $@ and their children (PostgreSQL's backends).
ticks() {
  local sum=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q"; done); do
    [ -r "/proc/$p/stat" ] && sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
postmaster() { head -1 "$1/postmaster.pid"; }
server_pids=()
redis_pids=()
replica_pids=()
# Every scenario against the instances in $1 (comma-separated), with the CPU seconds each part
# of the setup used during it: where the two cores went.
scenarios() {
  local servers=$1
  b() {
    local groups before after
    groups=("${server_pids[*]}" "${redis_pids[*]:-}" "$(postmaster "$(data_dir)/postgres")" "${replica_pids[*]:-}")
    before=(); for g in "${groups[@]}"; do before+=("$(ticks $g)"); done
    DATABASE_URL="$bench_db" "$bench" "$@" --server "$servers" --connections 6 2>&1 \
      | grep -E '^[a-z-]+:|error' || true
    after=(); for g in "${groups[@]}"; do after+=("$(ticks $g)"); done
    printf '  cpu s: servers %s, redis %s, primary %s, replica %s\n' \
      "$(( (after[0] - before[0]) / 100 ))" "$(( (after[1] - before[1]) / 100 ))" \
      "$(( (after[2] - before[2]) / 100 ))" "$(( (after[3] - before[3]) / 100 ))"
  }
  b echo --duration 10 --echo-secs 0
  # A fresh key prefix per setup: every lookup of pop-cold is a miss.
  b pop-cold --duration 10 --warmup 0 --population 400000
  b pop-hot --duration 10 --population 100000
  b events --duration 10 --concurrency 1024 --streams 64 --agents 50 --population 10000
}

log "scale-out: one instance (one Redis, the primary)"
redis_pids=("$(pgrep -f "redis-server 127.0.0.1:$REDIS_PORT" | head -1)")
serve 50091 REDIS_URL="$REDIS_URL" SWITCHBOARD_REDIS_PREFIX="so1-$$:"
echo "== one instance =="
scenarios http://127.0.0.1:50091
kill "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
server_pids=()
redis_pids=()

log "scale-out: a Redis Cluster of three masters and three replicas"
for port in "${cluster_ports[@]}"; do
  mkdir -p "$work/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-node-timeout 2000 \
    --dir "$work/redis-$port" --save '' --appendonly no --logfile "$work/redis-$port/log" &
  pids+=("$!")
  redis_pids+=("$!")
done
for port in "${cluster_ports[@]}"; do wait_port "$port"; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") --cluster-replicas 1 \
  --cluster-yes >/dev/null
for port in "${cluster_ports[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
done
nodes="$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}")"
nodes="${nodes%,}"

log "scale-out: a streaming replica of the primary (pg_basebackup of the whole server)"
started=$(date +%s)
install -d -m 700 "$work/replica"
[ "$(id -u)" -ne 0 ] || chown postgres: "$work/replica"
as_postgres "$(pg_bindir)/pg_basebackup" -h 127.0.0.1 -p "$PG_PORT" -U postgres -D "$work/replica" \
  -X stream -R -c fast
as_postgres "$(pg_bindir)/pg_ctl" -D "$work/replica" -l "$work/replica/server.log" -w -t 120 \
  -o "-p $replica_port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=300 -c hot_standby=on $PG_TUNING" \
  start >/dev/null
log "scale-out: replica ready in $(( $(date +%s) - started )) s"
replica_pids=("$(postmaster "$work/replica")")
replica_url="postgres://postgres@127.0.0.1:$replica_port/${bench_db##*/}"

servers=""
for port in 50092 50093 50094; do
  serve "$port" SWITCHBOARD_REDIS_CLUSTER_NODES="$nodes" SWITCHBOARD_REDIS_PREFIX="so3-$$:" \
    SWITCHBOARD_DATABASE_REPLICA_URLS="$replica_url"
  servers="$servers,http://127.0.0.1:$port"
done
echo "== three instances, Redis Cluster 3+3, primary + replica =="
scenarios "${servers#,}"
replica_reads="$(psql "postgres://postgres@127.0.0.1:$replica_port/${bench_db##*/}" -tAc \
  "SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = '${bench_db##*/}'")"
echo "replica: $replica_reads transactions on the bench database"
