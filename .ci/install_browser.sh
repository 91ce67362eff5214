#!/usr/bin/env bash
# The headless browser of the dashboard test (tests/tune/test_dashboard.py): Debian's chromium
# and chromium-driver, installed when absent (or when the browser and driver found are of
# different major versions, which selenium refuses), as root or through passwordless sudo
# with apt-get (CI). Never fails the build: without a usable browser the test skips and says why.
# Checked on a clean Debian 12 (debootstrap minbase, as root): installs both in ~2.5 minutes.
set -uo pipefail
say() { echo ".ci/install_browser.sh: $*" >&2; }

browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; }
major() { "$@" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9.]+' | head -n 1 | cut -d. -f1; }

# 0 when a browser and a driver of the same major version are on PATH (the test's condition)
usable() {
    local b d bv dv
    b=$(browser) || return 1
    d=$(command -v chromedriver) || return 1
    bv=$(major "$b")
    dv=$(major "$d")
    if [ -z "$bv" ] || [ "$bv" != "$dv" ]; then
        say "$b is version ${bv:-unknown}, $d ${dv:-unknown}: not a pair"
        return 1
    fi
    say "browser: $("$b" --version 2>/dev/null | head -n 1); driver: $("$d" --version | cut -d' ' -f1-2)"
}

if usable; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    say "no usable chromium and no apt-get to install it: the browser test will skip"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    say "no usable chromium, and neither root nor passwordless sudo to install it: the browser test will skip"
    exit 0
fi
say "installing chromium and chromium-driver (Debian)"
# wait for a dpkg lock another apt run holds (unattended upgrades) instead of failing at once
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq)
if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends chromium chromium-driver >/dev/null; }; then
    say "apt-get could not install chromium: the browser test will skip"
    exit 0
fi
usable || say "installed, but still no usable browser and driver pair on PATH: the browser test will skip"
exit 0
