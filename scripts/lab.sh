#!/usr/bin/env bash
# The main job, from a fresh machine: makes .venv, installs the package with its widgets and
# JupyterLab, and opens the quickstart notebook (extra arguments go to `jupyter lab`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh widgets jupyterlab
ROOT_FLAG=$([ "$(id -u)" = 0 ] && echo "--allow-root" || true)
exec "$VENV/bin/python" -m jupyterlab $ROOT_FLAG notebooks/01-quickstart.ipynb "$@"
