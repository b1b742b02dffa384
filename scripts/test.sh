#!/usr/bin/env bash
# The test suite, from a fresh machine:
#
#   bash scripts/test.sh [PYTEST_ARGS...]   everything that needs no network: the JS unit tests
#                                           (node's runner + jsdom), then pytest: engine, oracle,
#                                           I/O, widgets, the tutorial notebooks, real-browser tests
#   bash scripts/test.sh --binder [ARGS]    only the Binder build (downloads ~100 pinned packages
#                                           from the package index), retried on network errors
#
# It installs what it needs: Debian's chromium (for the browser tests) when missing, .venv with
# the package and its test extra, the JS test dependencies (npm ci). Hypothesis runs with the
# derandomized "ci" profile (tests/conftest.py) unless HYPOTHESIS_PROFILE says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BINDER=0
if [ "${1:-}" = "--binder" ]; then
  BINDER=1
  shift
fi
export JUPYTER_PLATFORM_DIRS=1
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}

if [ "$BINDER" = 1 ]; then
  source scripts/_venv.sh test
  # pip already retries single requests; this retries the whole build when the network failed
  # it (a real failure of the build or of a notebook stops at once).
  NETWORK='unreachable|NewConnectionError|ConnectTimeout|ReadTimeout|timed out|Connection reset|Connection aborted|Temporary failure in name resolution|Max retries exceeded|IncompleteRead|ProtocolError|Could not fetch URL|HTTP error 5[0-9][0-9]|ConnectionError'
  LOG=$(mktemp)
  trap 'rm -f "$LOG"' EXIT
  for attempt in 1 2 3; do
    if "$VENV/bin/python" -m pytest --binder tests/test_binder.py "$@" 2>&1 | tee "$LOG"; then
      exit 0
    fi
    if ! grep -qE "$NETWORK" "$LOG" || [ "$attempt" = 3 ]; then
      exit 1
    fi
    echo "scripts/test.sh --binder: network error (attempt $attempt of 3); retrying in $((60 * attempt)) s" >&2
    sleep $((60 * attempt))
  done
fi

if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# never `playwright install`: it downloads a browser; the tests use /usr/bin/chromium

source scripts/_venv.sh test
bash scripts/fetch_test_data.sh "$VENV/bin/python"  # real JWST gwcs files (stcal's sdist)

(cd js && npm ci --no-audit --no-fund --silent && node --test tests/)

exec "$VENV/bin/python" -m pytest "$@"
