#!/usr/bin/env bash
# End-to-end ACME interoperability check with an independent client from Debian's packages
# (lego): starts certctl-dev (throw-away PostgreSQL + demo seed), then for each account key
# type (ec256 → ES256, rsa2048 → RS256) lets lego register, order, answer http-01 with its
# own standalone server on loopback, finalize, download, and revoke a certificate.
#
# Exits non-zero on any failure and prints the server log. Usage:
#   scripts/acme-e2e.sh              # uses target/debug/certctl-dev ($CARGO_TARGET_DIR/debug/
#                                    # certctl-dev when that is set); `make acme-e2e` passes
#                                    # the release build's, which `make test` already made
# Environment:
#   CERTCTL_DEV=path                 the certctl-dev binary
#   ACME_E2E_PROFILE=prof-standard-tls   profile to enrol under (challenge mode)
#   ACME_E2E_KEY_TYPES="ec256 rsa2048"   lego key types to run
#   ACME_E2E_KEEP=1                  keep the work directory
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CERTCTL_DEV:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/certctl-dev}"
PROFILE="${ACME_E2E_PROFILE:-prof-standard-tls}"
KEY_TYPES="${ACME_E2E_KEY_TYPES:-ec256 rsa2048}"
DOMAIN="e2e.acme.certctl.test"

log() { echo "acme-e2e: $*" >&2; }
fail() {
  log "FAIL: $*"
  if [ -n "${WORK:-}" ] && [ -f "$WORK/server.log" ]; then
    log "--- last 80 lines of the server log ---"
    tail -n 80 "$WORK/server.log" >&2 || true
  fi
  exit 1
}

# --- prerequisites -------------------------------------------------------------------------
if ! command -v lego >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing lego (apt-get install -y lego)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq lego >/dev/null
  else
    fail "lego is not installed (sudo apt-get install -y lego)"
  fi
fi
command -v curl >/dev/null 2>&1 || fail "curl is required"
command -v openssl >/dev/null 2>&1 || fail "openssl is required"
bash "$ROOT/scripts/ensure-postgres.sh"
if [ ! -x "$BIN" ]; then
  log "building certctl-dev"
  case "$BIN" in
    */release/*) cargo build --workspace --release --all-targets --locked >&2 ;;
    *) cargo build --workspace --locked >&2 ;;
  esac
fi
[ -x "$BIN" ] || fail "no certctl-dev binary at $BIN"

# A free TCP port on 127.0.0.1 (nothing answers a connect to it).
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Hex string → unpadded base64url.
b64url_hex() {
  local hex="$1" esc="" i
  for (( i = 0; i < ${#hex}; i += 2 )); do esc+="\\x${hex:i:2}"; done
  # shellcheck disable=SC2059
  printf "$esc" | openssl base64 -A | tr '+/' '-_' | tr -d '='
}

WORK="$(mktemp -d -t certctl-acme-e2e.XXXXXX)"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # SIGTERM: a background job of a non-interactive shell ignores SIGINT.
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${ACME_E2E_KEEP:-0}" = "1" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT INT TERM

PORT="$(free_port)" || fail "no free port"
HTTP01_PORT="$(free_port)" || fail "no free port"
while [ "$HTTP01_PORT" = "$PORT" ]; do HTTP01_PORT="$(free_port)"; done
BASE="http://127.0.0.1:$PORT"

# --- server --------------------------------------------------------------------------------
log "starting certctl-dev on $BASE (http-01 port $HTTP01_PORT, $DOMAIN -> 127.0.0.1)"
CERTCTL_SERVER_HOST=127.0.0.1 \
CERTCTL_SERVER_PORT="$PORT" \
CERTCTL_ACME_HTTP01_PORT="$HTTP01_PORT" \
CERTCTL_ACME_RESOLVE="$DOMAIN=127.0.0.1" \
CERTCTL_LOG_FORMAT=pretty \
CERTCTL_LOG_LEVEL="${CERTCTL_LOG_LEVEL:-info}" \
  "$BIN" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 150); do
  if curl -fsS "$BASE/health" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || fail "certctl-dev exited during startup"
  sleep 0.2
done
curl -fsS "$BASE/health" >/dev/null 2>&1 || fail "certctl-dev did not become healthy"
DIRECTORY="$BASE/acme/profile/$PROFILE/directory"
curl -fsS "$DIRECTORY" >"$WORK/directory.json" || fail "no ACME directory at $DIRECTORY"
log "directory: $(tr -d '\n ' <"$WORK/directory.json" | cut -c1-160)…"

# --- lego, once per key type -----------------------------------------------------------------
for KT in $KEY_TYPES; do
  LEGO_DIR="$WORK/lego-$KT"
  LEGO=(lego --path "$LEGO_DIR" --server "$DIRECTORY" --accept-tos --email "ops-$KT@example.com"
        --key-type "$KT" --domains "$DOMAIN" --http --http.port "127.0.0.1:$HTTP01_PORT" --http-timeout 30)
  log "[$KT] lego run"
  "${LEGO[@]}" run >"$WORK/lego-$KT-run.log" 2>&1 || { cat "$WORK/lego-$KT-run.log" >&2; fail "[$KT] lego run failed"; }
  CRT="$LEGO_DIR/certificates/$DOMAIN.crt"
  ISSUER="$LEGO_DIR/certificates/$DOMAIN.issuer.crt"
  [ -s "$CRT" ] || fail "[$KT] no certificate at $CRT"
  [ -s "$ISSUER" ] || fail "[$KT] no issuer certificate at $ISSUER"
  # The leaf chains to the CA the server returned, and names exactly the domain.
  openssl verify -partial_chain -CAfile "$ISSUER" "$CRT" >/dev/null 2>&1 \
    || openssl verify -partial_chain -CAfile "$ISSUER" "$CRT" >&2 \
    || fail "[$KT] the certificate does not verify against its issuer"
  openssl x509 -in "$CRT" -noout -ext subjectAltName 2>/dev/null | grep -q "DNS:$DOMAIN" \
    || fail "[$KT] the certificate does not name $DOMAIN"
  log "[$KT] issued: $(openssl x509 -in "$CRT" -noout -serial -enddate | tr '\n' ' ')"

  # ARI (RFC 9773): certID = base64url(AKI keyIdentifier) "." base64url(serial DER value bytes).
  # OpenSSL 3 prints the keyid on the line after the header (1.1 prefixed it with "keyid:").
  AKI_HEX="$(openssl x509 -in "$CRT" -noout -ext authorityKeyIdentifier 2>/dev/null \
    | sed -n 2p | tr -d ' \r' | sed -e 's/^keyid://I' | tr -d ':')"
  SERIAL_HEX="$(openssl x509 -in "$CRT" -noout -serial | cut -d= -f2)"
  [ $(( ${#SERIAL_HEX} % 2 )) -eq 1 ] && SERIAL_HEX="0$SERIAL_HEX"
  case "$SERIAL_HEX" in [89A-Fa-f]*) SERIAL_HEX="00$SERIAL_HEX" ;; esac
  [ -n "$AKI_HEX" ] || fail "[$KT] the certificate has no authority key identifier"
  CERT_ID="$(b64url_hex "$AKI_HEX").$(b64url_hex "$SERIAL_HEX")"
  ARI_URL="${DIRECTORY%/directory}/renewal-info/$CERT_ID"
  curl -fsS -D "$WORK/ari-$KT.headers" "$ARI_URL" >"$WORK/ari-$KT.json" || fail "[$KT] renewal-info failed for $ARI_URL"
  grep -q '"suggestedWindow"' "$WORK/ari-$KT.json" || fail "[$KT] renewal-info has no suggestedWindow"
  grep -qi '^retry-after:' "$WORK/ari-$KT.headers" || fail "[$KT] renewal-info has no Retry-After"
  log "[$KT] renewal-info: $(cat "$WORK/ari-$KT.json")"

  log "[$KT] lego revoke"
  "${LEGO[@]}" revoke --keep --reason 4 >"$WORK/lego-$KT-revoke.log" 2>&1 || { cat "$WORK/lego-$KT-revoke.log" >&2; fail "[$KT] lego revoke failed"; }
  # A second revocation must be refused (alreadyRevoked): the first one really happened.
  if "${LEGO[@]}" revoke >"$WORK/lego-$KT-revoke2.log" 2>&1; then
    fail "[$KT] a second revocation succeeded; the first did not take effect"
  fi
  grep -q "alreadyRevoked" "$WORK/lego-$KT-revoke2.log" \
    || { cat "$WORK/lego-$KT-revoke2.log" >&2; fail "[$KT] second revocation failed for another reason than alreadyRevoked"; }
  log "[$KT] ok"
done

log "PASS: lego obtained and revoked certificates ($KEY_TYPES) through $DIRECTORY"
