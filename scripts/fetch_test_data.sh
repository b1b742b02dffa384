#!/usr/bin/env bash
# Fetch test data that the project may not commit: the real JWST NIRCam gwcs files that the
# reference engine's source distribution ships (stcal: tests/data/nrcb1-wcs.asdf, ...).
# They come from PyPI through pip (the stcal sdist of the installed version) and are kept in
# $SKYMATCH_NB_TEST_DATA (default .cache/test-data); the tests read them from there and
# never touch the network.  Usage: scripts/fetch_test_data.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${VENV:-.venv}/bin/python}
DEST=${SKYMATCH_NB_TEST_DATA:-.cache/test-data}
VERSION=$("$PY" -c "import stcal; print(stcal.__version__)")
OUT="$DEST/stcal-$VERSION"
if [ -f "$OUT/nrcb1-wcs.asdf" ]; then
  exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# --no-binary stcal: its source distribution (the wheel has no test data); build
# requirements still come as wheels, and nothing is compiled to read the metadata
"$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary stcal \
  "stcal==$VERSION" -d "$WORK"
mkdir -p "$OUT.partial"
tar -xzf "$WORK"/stcal-*.tar.gz -C "$WORK" --wildcards '*/tests/data/*.asdf'
cp "$WORK"/stcal-*/tests/data/*.asdf "$OUT.partial/"
rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
echo "test data: $(ls "$OUT" | tr '\n' ' ')in $OUT"
