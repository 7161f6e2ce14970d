#!/usr/bin/env bash
# Makes sure `wrk` (the HTTP load generator of `make bench-hotpath`) is on this machine.
# Installs Debian's `wrk` package when it is missing and we are root.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "wrk is missing; install it: sudo apt-get install -y wrk" >&2
  exit 1
fi
echo "installing wrk (apt-get install -y wrk)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v wrk >/dev/null
