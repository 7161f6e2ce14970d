#!/usr/bin/env bash
# The generator's own ceiling: certctl-loadtest's closed-loop maximum on GET /health next to
# `wrk -t2 -c64` against the same certctl-dev server, in one run (harness, wrk, harness again),
# and their ratio. Release builds; installs wrk (Debian) when missing. Generator and server share
# the machine's cores, as they do in every load run here: read the ratio, not the absolute rates.
# BEFORE_LOADTEST=/path/to/an/older/certctl-loadtest adds that binary to the same run (before/after).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SECS="${BENCH_SECS:-15}"
log() { echo "bench-generator: $*" >&2; }

bash scripts/ensure-wrk.sh
bash scripts/ensure-postgres.sh
cargo build --workspace --release --all-targets --locked >&2
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

harness() { # BIN TAG
  "$1" run --target "$BASE" --scenarios-dir scenarios/bench --scenario generator_health \
    --out "$WORK/run-$2" --quiet >/dev/null
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); l=s["scenarios"][0]["labels"][0]; print("%.0f %.2fms %.2fms" % (l["count"]/s["scenarios"][0]["duration_s"], l["corrected"]["p50"], l["corrected"]["p99"]))' \
    "$WORK/run-$2/summary.json"
}
wrk_run() {
  local out
  out=$(wrk -t2 -c64 -d"${SECS}s" --latency "$BASE/health")
  echo "$(echo "$out" | awk '/^Requests\/sec:/ { printf "%.0f", $2 }') $(echo "$out" | awk '$1 == "50%" { print $2 }') $(echo "$out" | awk '$1 == "99%" { print $2 }')"
}

declare -a rows
rows+=("certctl-loadtest|$(harness "$LOADTEST" 1)")
rows+=("wrk -t2 -c64|$(wrk_run)")
if [ -n "${BEFORE_LOADTEST:-}" ]; then
  rows+=("certctl-loadtest (before)|$(harness "$BEFORE_LOADTEST" before)")
fi
rows+=("certctl-loadtest|$(harness "$LOADTEST" 2)")
rows+=("wrk -t2 -c64|$(wrk_run)")

printf '%-28s %12s %10s %10s\n' "generator (in run order)" "req/s" "p50" "p99"
for r in "${rows[@]}"; do
  name="${r%%|*}"; read -r rate p50 p99 <<<"${r#*|}"
  printf '%-28s %12s %10s %10s\n' "$name" "$rate" "$p50" "$p99"
done
printf '%s\n' "${rows[@]}" | python3 -c '
import sys
rows = [l.strip().split("|") for l in sys.stdin if l.strip()]
rate = lambda r: float(r[1].split()[0])
wrk = [rate(r) for r in rows if r[0].startswith("wrk")]
w = sum(wrk) / len(wrk)
for name in dict.fromkeys(r[0] for r in rows if not r[0].startswith("wrk")):
    vals = [rate(r) / w for r in rows if r[0] == name]
    print("%s / wrk (mean of the wrk runs, %.0f req/s): %s" % (name, w, ", ".join("%.2f" % v for v in vals)))
'
