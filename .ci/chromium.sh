#!/usr/bin/env bash
# Makes a headless Chromium available to the browser round trip of tests/test_serving_page.py,
# which loads the demo page from the app on a loopback port and checks the rendered DOM.
# On CI (CI set), as root, with apt-get: installs Debian's `chromium` when none is on PATH.
# Never fails: without a browser the test skips with its reason.
set -uo pipefail

find_chromium() {
    local name
    for name in chromium chromium-browser google-chrome google-chrome-stable; do
        command -v "$name" 2>/dev/null && return 0
    done
    return 1
}

note() { echo "chromium.sh: $*; the headless-browser page test will skip"; }

if found=$(find_chromium); then
    echo "chromium.sh: browser found ($found)"
    exit 0
fi
if [ -z "${CI:-}" ]; then
    note "no chromium on PATH and CI is not set, so nothing is installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    note "no chromium on PATH and not root"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    note "no chromium on PATH and no apt-get"
    exit 0
fi

echo "chromium.sh: installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
if timeout 600 apt-get update -qq \
    && timeout 900 apt-get install -y -qq chromium >/dev/null; then
    if found=$(find_chromium); then
        echo "chromium.sh: installed ($found)"
    else
        note "apt-get finished but no chromium binary was found"
    fi
else
    note "apt-get could not install chromium"
fi
exit 0
