#!/usr/bin/env bash
# Makes sure Debian's haproxy is on this machine (for `certctl-loadtest run --replicas N
# --balancer haproxy` and its test). Installs the package when missing and we are root; the
# system service the package enables is stopped, since the harness runs its own haproxy on a
# loopback port with a generated config.
set -euo pipefail
have() { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }
if have; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "haproxy is missing; install it: sudo apt-get install -y haproxy" >&2
  exit 1
fi
echo "installing haproxy (apt-get install -y haproxy)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq haproxy >/dev/null
(command -v service >/dev/null && service haproxy stop) >/dev/null 2>&1 || true
have
