#!/usr/bin/env bash
# Makes sure the pinned Python test tools (scripts/py-tools.txt: schemathesis, aiosmtpd) are
# installed in a virtualenv, by default $HOME/.cache/certctl/py-tools (CERTCTL_PY_TOOLS
# overrides). Prints the virtualenv's python on stdout. Installs python3-venv from Debian when
# the venv module is missing (root). Re-installs only when py-tools.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CERTCTL_PY_TOOLS:-$HOME/.cache/certctl/py-tools}
want=$(sha256sum scripts/py-tools.txt | cut -d' ' -f1)
if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.certctl-stamp" 2>/dev/null)" = "$want" ]; then
  echo "$dir/bin/python"
  exit 0
fi
python=$(command -v python3 || true)
if [ -z "$python" ]; then
  echo "python3 is missing; install it: sudo apt-get install -y python3 python3-venv" >&2
  exit 1
fi
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3's venv module is missing; install it: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
"$python" -m venv "$dir" >&2
"$dir/bin/pip" install --quiet --disable-pip-version-check -r scripts/py-tools.txt >&2
echo "$want" > "$dir/.certctl-stamp"
echo "$dir/bin/python"
