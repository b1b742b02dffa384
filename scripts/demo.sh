#!/usr/bin/env bash
# The main job, from a fresh machine: makes .venv, installs the package and runs the demo
# (the documented 2x3 example mosaic through all four sky methods).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e .
exec "$VENV/bin/python" -m skymatch_nb_ui.demo "$@"
