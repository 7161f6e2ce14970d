#!/usr/bin/env bash
# Makes sure the tools of the harness's report tests are on this machine: headless Chromium
# (the HTML report opens in a real browser) and Prometheus (it scrapes a live run's metrics).
# Installs Debian's `chromium` and `prometheus` packages when missing and we are root; the
# tests skip with a clear message only when they cannot be installed.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} (apt-get install -y --no-install-recommends)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system Prometheus on install; the tests run their own on a loopback port.
(command -v service >/dev/null && service prometheus stop) >/dev/null 2>&1 || true
command -v chromium >/dev/null && command -v prometheus >/dev/null
