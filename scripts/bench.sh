#!/usr/bin/env bash
# Reproduces BENCHMARKS.md: a database of 1,000,000 seeded customers (created and seeded on the
# first run, ~2 minutes), one release `switchboard serve` on 127.0.0.1:50071, and every scenario of
# switchboard-bench against it. PostgreSQL and Redis are the local ones from scripts/services.sh
# unless DATABASE_URL / REDIS_URL are set. Output goes to the terminal; copy figures from there.
# BENCH_SCENARIOS picks scenarios (default: all but mixed-soak and import, in the order below).
# Issue #25's table: BENCH_SCENARIOS="echo pop-hot pop-cold pop-cold-5k events events-10k mixed-soak".
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

ensure_packages
start_postgres
start_redis
cargo build --release --quiet --bins
bin=./target/release/switchboard
bench=./target/release/switchboard-bench

bench_database

token_file="$(data_dir)/bench-token"
# The new server writes it once it listens: a file left by the last run must not count.
rm -f "$token_file"
DATABASE_URL="$bench_db" SWITCHBOARD_LISTEN=127.0.0.1:50071 SWITCHBOARD_METRICS_LISTEN=127.0.0.1:0 SWITCHBOARD_REDIS_PREFIX=bench: \
  SWITCHBOARD_RATE_LIMIT_PER_SECOND=10000000 SWITCHBOARD_RATE_LIMIT_BURST=10000000 RUST_LOG=warn \
  "$bin" serve --dev --dev-token-file "$token_file" 2>"$(data_dir)/bench-server.log" &
server=$!
# Waits for the server to finish draining, so that the next run can bind the same port.
trap 'kill $server 2>/dev/null && wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$token_file" ] && break; sleep 0.1; done
# The token is written before start-up ends (migrations, the misdial rule, pending
# invalidations): wait until the port answers, then a second more.
for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/50071) 2>/dev/null && break; sleep 0.1; done
sleep 1
export SWITCHBOARD_TOKEN="$(cat "$token_file")" DATABASE_URL="$bench_db"
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$server/status"; }
drop_cached_pops() {
  redis-cli -u "$REDIS_URL" --scan --pattern 'bench:pop:*' | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
}
run() {
  log "switchboard-bench $*   (server memory before: $(rss))"
  "$bench" "$@" --server http://127.0.0.1:50071
  log "server memory after: $(rss)"
  echo
}

for scenario in ${BENCH_SCENARIOS:-echo pop-hot pop-hot-10k pop-cold pop-cold-5k events events-10k mixed overload http-cid http-pop grpc-web-pop}; do
  case "$scenario" in
    echo)        run echo --duration 10 --echo-secs 0 | tee "$(data_dir)/bench-echo.txt" ;;
    pop-hot)     run pop-hot --duration 10 --population 100000 | tee "$(data_dir)/bench-pop-hot.txt" ;;
    pop-hot-10k) run pop-hot --rate 10000 --duration 15 --population 100000 --skip-warm ;;
    pop-cold)    # Every lookup a miss: drop the cached cards this deployment holds first.
                 drop_cached_pops
                 run pop-cold --duration 10 --warmup 0 --population 400000 ;;
    pop-cold-5k) # Open loop at 5,000 misses a second (issue #25: server p99 under 5 ms);
                 # BENCH_COLD_RATE sets another rate.
                 drop_cached_pops
                 run pop-cold --rate "${BENCH_COLD_RATE:-5000}" --duration 10 --warmup "${BENCH_COLD_WARMUP:-0}" --population 400000 ;;
    events)      run events --duration 10 --concurrency 1024 --streams 64 --agents 50 --population 10000 ;;
    events-10k)  run events --rate 10000 --duration 10 --streams 64 --agents 50 --population 10000 ;;
    mixed)       run mixed --rate 4000 --duration 15 --streams 32 --agents 50 --population 100000 --skip-warm ;;
    mixed-soak)  # Five minutes of the mix, open loop at a tenth of this run's echo (issue #25), with
                 # the server's memory every 30 s. Not in the default list: it takes six minutes.
                 echo_rate="$(grep -o '^echo: closed loop.*ok, [0-9]*/s' "$(data_dir)/bench-echo.txt" 2>/dev/null | grep -o '[0-9]*/s$' | tr -d /s || true)"
                 rate=$(( ${echo_rate:-40000} / 10 ))
                 ( for _ in $(seq 1 10); do sleep 30; log "soak: server memory $(rss)"; done ) &
                 sampler=$!
                 run mixed --rate "$rate" --duration 300 --streams 32 --agents 50 --population 100000 --skip-warm
                 wait "$sampler" 2>/dev/null || true ;;
    overload)    # Twice the closed-loop pop-hot throughput of the last run (40,000/s if none), offered
                 # over the usual 4 connections and then over 32 (8,192 streams at once).
                 capacity="$(grep -o '^pop-hot: closed loop.*ok, [0-9]*/s' "$(data_dir)/bench-pop-hot.txt" 2>/dev/null | grep -o '[0-9]*/s$' | tr -d /s || true)"
                 rate=$(( ${capacity:-20000} * 2 ))
                 run pop-hot --rate "$rate" --duration 10 --population 100000 --skip-warm
                 run pop-hot --rate "$rate" --connections 32 --duration 10 --population 100000 --skip-warm ;;
    # The edge: the same hot lookups over HTTP/1.1 keep-alive (64 connections, 64 in flight), each
    # after native pop-hot measured in the same run as its yardstick.
    http-cid|http-pop|grpc-web-pop)
                 run "$scenario" --duration 10 --population 100000 --skip-warm ;;
    # Not in the default list: each run adds 100,000 customers to the benchmark database.
    import)      run import --rows ${BENCH_IMPORT_ROWS:-100000} ;;
  esac
done
