#!/usr/bin/env bash
# Makes the system programs of the optional tests available: PostgreSQL server binaries for the
# real-Postgres test (tests/test_deployment.py, a throwaway cluster on loopback) and a headless
# Chromium for the page round trip (tests/test_serving_page.py).
# On CI (CI set), as root, with apt-get: installs the missing Debian packages in one go.
# Never fails: a test whose program is missing skips with its reason.
set -uo pipefail

say() { echo "optional-packages.sh: $*"; }

find_pg_ctl() {
    command -v pg_ctl 2>/dev/null && return 0
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/pg_ctl; do
        [ -x "$candidate" ] && { echo "$candidate"; return 0; }
    done
    return 1
}

find_chromium() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 1
}

# "<Debian package> <finder>" for each optional program.
WANTED=("postgresql find_pg_ctl" "chromium find_chromium")

missing=()
for entry in "${WANTED[@]}"; do
    read -r package finder <<<"$entry"
    if found=$($finder); then
        say "$package found ($found)"
    else
        missing+=("$package")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

skip() { say "not installing ${missing[*]}: $*; their tests will skip"; exit 0; }
[ -n "${CI:-}" ] || skip "CI is not set"
[ "$(id -u)" = 0 ] || skip "not root"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get"

say "installing Debian's ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { timeout 600 apt-get update -qq \
    && timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    say "apt-get could not install ${missing[*]}; their tests will skip"
fi
for entry in "${WANTED[@]}"; do
    read -r package finder <<<"$entry"
    found=$($finder) && say "$package available ($found)"
done
exit 0
