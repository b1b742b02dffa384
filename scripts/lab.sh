#!/usr/bin/env bash
# The main job, from a fresh machine: JupyterLab on the quickstart notebook, with everything
# the tutorials and the app use (the package with its widgets, plot, data and cli extras).
#
#   bash scripts/lab.sh [JUPYTER_LAB_ARGS...]     e.g. --port=8890 --no-browser
#
# It serves a working copy of notebooks/ in my-notebooks/ (ignored by git): files missing there
# are copied, files already there are never overwritten, so your edits, outputs and exported
# figures stay yours and the repository never changes by being used. To get a tutorial afresh
# after an update, delete your copy of it and run this again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh "widgets,plot,data,cli" jupyterlab

WORK=my-notebooks
mkdir -p "$WORK"
for source in notebooks/*.ipynb; do
  copy="$WORK/$(basename "$source")"
  if [ ! -e "$copy" ]; then
    cp "$source" "$copy"
  elif [ "$source" -nt "$copy" ] && ! cmp -s "$source" "$copy"; then
    echo "note: $source is newer than your copy $copy (kept); delete the copy to get the new one" >&2
  fi
done

# No "Jupyter news" pop-up over the app: defaults for this environment only (your own
# JupyterLab settings still win), plus the server-side switch.
"$VENV/bin/python" - "$VENV" <<'PY'
import json, pathlib, sys
path = pathlib.Path(sys.argv[1], "share", "jupyter", "lab", "settings", "overrides.json")
path.parent.mkdir(parents=True, exist_ok=True)
settings = json.loads(path.read_text()) if path.exists() else {}
settings.setdefault("@jupyterlab/apputils-extension:notification", {}).update(
    {"fetchNews": "false", "checkForUpdates": False})
path.write_text(json.dumps(settings, indent=2) + "\n")
PY

ROOT_FLAG=$([ "$(id -u)" = 0 ] && echo "--allow-root" || true)
exec "$VENV/bin/python" -m jupyterlab $ROOT_FLAG --ServerApp.root_dir="$WORK" \
  --LabApp.default_url=/lab/tree/01-quickstart.ipynb --LabApp.news_url=None "$@"
