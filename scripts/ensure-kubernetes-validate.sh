#!/usr/bin/env bash
# Makes sure the Kubernetes manifest validator (`kubernetes-validate` from PyPI, which bundles
# the Kubernetes JSON schemas, so validation needs no cluster and no network) is installed in a
# virtualenv under tools/kubernetes-validate/.venv. Installs python3-venv from Debian when the
# interpreter cannot make one (root).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=tools/kubernetes-validate/.venv
if [ -x "$venv/bin/kubernetes-validate" ]; then exit 0; fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "python3 with venv is missing; install it: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tools/kubernetes-validate/requirements.txt
