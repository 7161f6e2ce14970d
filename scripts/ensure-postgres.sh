#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, pg_ctl, postgres) are on this machine.
# Installs Debian's `postgresql` package when they are missing and we are root.
set -euo pipefail
have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if have_pg; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries are missing; install them: sudo apt-get install -y postgresql" >&2
  exit 1
fi
echo "installing PostgreSQL server binaries (apt-get install -y postgresql)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql postgresql-contrib >/dev/null
# Debian starts a system cluster on install; the project runs its own throw-away clusters.
(command -v service >/dev/null && service postgresql stop) >/dev/null 2>&1 || true
have_pg
