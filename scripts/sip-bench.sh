#!/usr/bin/env bash
# The SIP path's benchmarks (measured, never asserted), on loopback with the real programs:
#   1. ring-to-pop latency: SIPp calls through Kamailio at RATE calls/s (default 10), CALLS calls
#      (default 1000); `switchboard-bench sip-ring` watches the agent and reports, per call, the
#      time from Kamailio handling the 180 it relays to the agent's stream receiving RINGING.
#   2. the SIP call rate: SIPp offers OFFER_RATE calls/s (default 800) for RATE_CALLS calls
#      (default 16000), each answered and hung up at once, with the adapter on and then off; the
#      rate is SIPp's own count of successful calls over the time until the last one completed.
# A release server in development mode on 127.0.0.1:50071 with its own database
# (switchboard_sipbench) and Redis prefix; Kamailio on udp 127.0.0.1:5070, evapi on 8450.
set -euo pipefail
source "$(dirname "$0")/services.sh"
cd "$ROOT"

CALLS="${CALLS:-1000}"
RATE="${RATE:-10}"
OFFER_RATE="${OFFER_RATE:-800}"
RATE_CALLS="${RATE_CALLS:-16000}"
SIP_PORT=5070
EVAPI_PORT=8450
SERVER=http://127.0.0.1:50071

ensure_packages
start_postgres
start_redis
cargo build --release --quiet --bins
bin="$ROOT/target/release"
work="$(mktemp -d)"   # the adapter's spool lives here: TMPDIR picks the disk
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f "sipp .*-p 508[0-9]" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

db="${DATABASE_URL%/*}/switchboard_sipbench"
psql "$DATABASE_URL" -q -c 'SET client_min_messages = warning' \
  -c 'DROP DATABASE IF EXISTS switchboard_sipbench' -c 'CREATE DATABASE switchboard_sipbench'
DATABASE_URL="$db" "$bin/switchboard" migrate >/dev/null 2>&1
DATABASE_URL="$db" "$bin/switchboard" seed --customers 10000 --demo >/dev/null
lookup_key="$(DATABASE_URL="$db" "$bin/switchboard" apikey create --role lookup --subject sipbench 2>/dev/null)"

DATABASE_URL="$db" RUST_LOG=warn "$bin/switchboard" serve --dev --dev-token-file "$work/token" \
  --listen 127.0.0.1:50071 --metrics-listen 127.0.0.1:9472 --redis-url "$REDIS_URL" \
  --redis-prefix "sipbench$$:" >"$work/server.log" 2>&1 &
pids+=($!)
wait_port 50071
token="$(cat "$work/token")"

kamailio -DD -E -m 256 -M 16 -f integrations/kamailio/kamailio.cfg -Y "$work" \
  -A "SIP_LISTEN=udp:127.0.0.1:$SIP_PORT" -A "EVAPI_BIND=\"127.0.0.1:$EVAPI_PORT\"" \
  -A "CID_URL=\"$SERVER/v1/cid/\"" -A "CID_KEY=\"$lookup_key\"" -A 'HUNT_DID="8005550199"' \
  >"$work/kamailio.log" 2>&1 &
pids+=($!)
wait_port "$EVAPI_PORT"

printf '{"agents": {"1001": "agent-ana"}, "queues": {"8005550199": "support"}}' >"$work/mapping.json"
start_gateway() {
  SWITCHBOARD_TOKEN="$token" RUST_LOG=warn "$bin/switchboard-gateway" --evapi "127.0.0.1:$EVAPI_PORT" \
    --server "${GATEWAY_SERVER:-$SERVER}" --gateway-id sipbench --mapping "$work/mapping.json" \
    --spool "$work/spool" >>"$work/gateway.log" 2>&1 &
  gateway=$!
  pids+=("$gateway")
  sleep 1
}
start_gateway

sipp_dir=integrations/kamailio/sipp
# The agent's phone: registered once under the hunt group; answers every call after 100 ms.
phone() {
  sipp -sf "$sipp_dir/register.xml" -m 1 -key aor support -key agent 1001 -key phone_port 5081 \
    -p 5091 -nostdin "127.0.0.1:$SIP_PORT" >/dev/null
  sipp -sf "$sipp_dir/phone.xml" -m "$1" -d "$2" -key agent 1001 -p 5081 -nostdin \
    -max_socket 65000 >/dev/null 2>&1 &
  phone_pid=$!
  pids+=("$phone_pid")
  sleep 0.5
}

# 1. Ring-to-pop latency (SKIP_RING=1 skips it).
if [ "${SKIP_RING:-0}" != 1 ]; then
phone "$CALLS" 100
DATABASE_URL="$db" "$bin/switchboard-bench" sip-ring --server "$SERVER" --token "$token" \
  --calls "$CALLS" --duration $((CALLS / RATE + 120)) --sip-agent agent-ana --echo-secs 0 \
  >"$work/ring.txt" 2>&1 &
watcher=$!
sleep 1
log "ring-to-pop: $CALLS calls at $RATE calls/s through Kamailio"
sipp -sf "$sipp_dir/caller.xml" -r "$RATE" -m "$CALLS" -d 1000 -key caller +14155550100 \
  -s 8005550199 -p 5092 -nostdin "127.0.0.1:$SIP_PORT" -trace_stat -stf "$work/ring-calls.csv" \
  >/dev/null 2>&1 || log "some ring-to-pop calls failed (see the counts below)"
wait "$watcher" || true
cat "$work/ring.txt"
wait "$phone_pid" 2>/dev/null || true
fi

# 2. The SIP call rate, with the adapter and without.
# SIPp's -trace_stat CSV, one row a second (-fd 1). The rate is the successful calls over the time
# until the last of them completed: a call that fails waits out SIPp's receive timeout
# (-recv_timeout, 5 s), and that tail is not the path's speed. The failures are counted apart, with
# SIPp's reasons.
rate_run() {
  local label="$1" csv="$work/rate-$1.csv"
  phone "$RATE_CALLS" 0
  sipp -sf "$sipp_dir/caller.xml" -r "$OFFER_RATE" -m "$RATE_CALLS" -d 0 -l 2000 \
    -key caller +14155550100 -s 8005550199 -p 5093 -nostdin "127.0.0.1:$SIP_PORT" \
    -recv_timeout 5000 -trace_stat -fd 1 -stf "$csv" \
    -trace_err -error_file "$work/rate-$1-errors.log" >/dev/null 2>&1 || true
  kill "$phone_pid" 2>/dev/null || true
  python3 - "$csv" "$label" "$OFFER_RATE" "$work/rate-$1-errors.log" <<'PY'
import csv, re, sys
from collections import Counter
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
col = {name: i for i, name in enumerate(rows[0])}
def seconds(row):
    h, m, s = row[col['ElapsedTime(C)']].split(':')[:3]
    return int(h) * 3600 + int(m) * 60 + float(s.replace(',', '.'))
data = rows[1:]
ok = int(data[-1][col['SuccessfulCall(C)']])
failed = int(data[-1][col['FailedCall(C)']])
done = next(row for row in data if int(row[col['SuccessfulCall(C)']]) == ok)
elapsed = seconds(done)
print(f"  {sys.argv[2]}: offered {sys.argv[3]}/s, {ok} calls completed in {elapsed:.0f} s: "
      f"{ok / elapsed:.0f} calls/s; {failed} failed")
try:
    reasons = Counter(re.sub(r"Call-Id: [^,]*, |: aborting call.*", "", line.split(": ", 1)[-1].strip())
                      for line in open(sys.argv[4], errors="replace") if "Call-Id" in line)
    for reason, n in reasons.most_common(3):
        print(f"    {n} x {reason[:120]}")
except FileNotFoundError:
    pass
PY
}
log "SIP call rate: $RATE_CALLS calls offered at $OFFER_RATE/s"
# Both orders, so that a warm-up effect cannot pass for the adapter's cost.
kill "$gateway" 2>/dev/null || true
sleep 1
rate_run without-adapter
start_gateway
rate_run with-adapter
kill "$gateway" 2>/dev/null || true
sleep 1
rate_run without-adapter
