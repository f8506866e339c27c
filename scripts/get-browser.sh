#!/bin/sh
# A headless Chromium for the sweep page's browser test (tests/test_sweep_page.py), from the
# Debian packages where this machine can install them (root and apt-get); elsewhere that one
# test skips and says why. Never fails the command it is part of.
for b in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$b" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the sweep page's browser test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 \
             && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
        || echo "could not install chromium: the sweep page's browser test will skip"
else
    echo "no Chromium (apt-get install chromium): the sweep page's browser test will skip"
fi
exit 0
