#!/usr/bin/env bash
# Makes PostgreSQL server binaries (initdb, pg_ctl, postgres) available to the real-Postgres
# test of tests/test_deployment.py, which starts a throwaway cluster on a loopback port.
# On CI (CI set), as root, with apt-get: installs Debian's `postgresql` when it is missing.
# Never fails: without binaries the test skips with its reason.
set -uo pipefail

find_pg_ctl() {
    command -v pg_ctl 2>/dev/null && return 0
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/pg_ctl; do
        [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
    return 1
}

note() { echo "postgres.sh: $*; the real-Postgres deployment test will skip"; }

if found=$(find_pg_ctl); then
    echo "postgres.sh: PostgreSQL server binaries found ($found)"
    exit 0
fi
if [ -z "${CI:-}" ]; then
    note "no PostgreSQL server binaries and CI is not set, so nothing is installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    note "no PostgreSQL server binaries and not root"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    note "no PostgreSQL server binaries and no apt-get"
    exit 0
fi

echo "postgres.sh: installing Debian's postgresql package"
export DEBIAN_FRONTEND=noninteractive
if timeout 600 apt-get update -qq \
    && timeout 900 apt-get install -y -qq --no-install-recommends postgresql >/dev/null; then
    if found=$(find_pg_ctl); then
        echo "postgres.sh: installed ($found)"
    else
        note "apt-get finished but pg_ctl was not found"
    fi
else
    note "apt-get could not install postgresql"
fi
exit 0
