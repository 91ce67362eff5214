#!/usr/bin/env bash
# The headless browser of the dashboard test (tests/tune/test_dashboard.py): Debian's chromium
# and chromium-driver, installed when absent and when this runs as root with apt-get (CI).
# Never fails the build: without a browser the test skips and says why.
set -uo pipefail
if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo ".ci/install_browser.sh: no chromium and no root apt-get to install it: the browser test will skip" >&2
    exit 0
fi
echo ".ci/install_browser.sh: installing chromium and chromium-driver (Debian)" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }; then
    echo ".ci/install_browser.sh: apt-get could not install chromium: the browser test will skip" >&2
fi
exit 0
