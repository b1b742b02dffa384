#!/usr/bin/env bash
# Run the whole test suite from a fresh machine: Debian's chromium (for the browser tests),
# .venv with the package and its test extra, the JS unit tests (node's runner + jsdom), then
# pytest (extra arguments are passed on to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# never `playwright install`: it downloads a browser; the tests use /usr/bin/chromium

source scripts/_venv.sh test
bash scripts/fetch_test_data.sh "$VENV/bin/python"  # real JWST gwcs files (stcal's sdist)

(cd js && npm ci --no-audit --no-fund --silent && node --test tests/)

export JUPYTER_PLATFORM_DIRS=1
exec "$VENV/bin/python" -m pytest "$@"
