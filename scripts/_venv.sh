# Sourced by the scripts: make .venv (or $VENV) if missing and install the package with the
# extras given as "$1" (e.g. "widgets" or "test") plus any further requirements in "${@:2}".
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]" "${@:2}"
