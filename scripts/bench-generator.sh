#!/usr/bin/env bash
# The generator's own ceiling: certctl-loadtest's closed-loop maximum on GET /health next to
# `wrk -t2 -c64` against the same certctl-dev server, in one run (harness, wrk, harness again),
# and their ratio. Release builds; installs wrk (Debian) when missing. Generator and server share
# the machine's cores, as they do in every load run here: read the ratio, not the absolute rates.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SECS="${BENCH_SECS:-15}"
log() { echo "bench-generator: $*" >&2; }

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing wrk (apt-get install -y wrk)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    log "wrk is not installed (sudo apt-get install -y wrk)"; exit 2
  fi
fi
bash scripts/ensure-postgres.sh
cargo build --workspace --release --locked >&2
DEV="$TARGET_DIR/release/certctl-dev"
LOADTEST="$TARGET_DIR/release/certctl-loadtest"

WORK="$(mktemp -d -t certctl-bench-generator.XXXXXX)"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

PORT=$(( 20000 + RANDOM % 30000 ))
BASE="http://127.0.0.1:$PORT"
CERTCTL_SERVER_HOST=127.0.0.1 CERTCTL_SERVER_PORT="$PORT" CERTCTL_LOG_LEVEL=warn \
  "$DEV" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  curl -fsS "$BASE/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$BASE/ready" >/dev/null || { log "certctl-dev never became ready"; tail -n 20 "$WORK/server.log" >&2; exit 2; }

harness() {
  "$LOADTEST" run --target "$BASE" --scenarios-dir scenarios/bench --scenario generator_health \
    --out "$WORK/run-$1" --quiet >/dev/null
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); l=s["scenarios"][0]["labels"][0]; print("%.0f %.2f %.2f" % (l["count"]/s["scenarios"][0]["duration_s"], l["corrected"]["p50"], l["corrected"]["p99"]))' \
    "$WORK/run-$1/summary.json"
}

read -r h1 h1p50 h1p99 < <(harness 1)
wrk_out=$(wrk -t2 -c64 -d"${SECS}s" --latency "$BASE/health")
w=$(echo "$wrk_out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }')
wp50=$(echo "$wrk_out" | awk '$1 == "50%" { print $2 }')
wp99=$(echo "$wrk_out" | awk '$1 == "99%" { print $2 }')
read -r h2 h2p50 h2p99 < <(harness 2)

printf '%-28s %12s %10s %10s\n' "generator" "req/s" "p50" "p99"
printf '%-28s %12s %10s %10s\n' "certctl-loadtest (1st)" "$h1" "${h1p50} ms" "${h1p99} ms"
printf '%-28s %12s %10s %10s\n' "wrk -t2 -c64" "$w" "$wp50" "$wp99"
printf '%-28s %12s %10s %10s\n' "certctl-loadtest (2nd)" "$h2" "${h2p50} ms" "${h2p99} ms"
python3 -c 'import sys; h1,w,h2=map(float,sys.argv[1:]); print("harness / wrk: %.2f and %.2f" % (h1/w, h2/w))' "$h1" "$w" "$h2"
