#!/usr/bin/env bash
# Debian's Chromium for the viewer's browser test: Playwright drives it, no browser build is downloaded.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
else
  echo "error: the viewer's browser test needs Debian's chromium; install it with 'sudo apt-get install chromium' and rerun." >&2
  exit 2
fi
