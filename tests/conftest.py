"""Shared test configuration: hypothesis profiles, the opt-in Binder test, Debian's chromium
for Playwright, and a throw-away JupyterLab server. (The notebooks' own: notebooks/conftest.py.)"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Screenshots the browser tests take (gitignored); look at them.
SCREENSHOTS = ROOT / "test-results"

# -- hypothesis: "ci" is derandomized (the same examples on every run: a failure is a real
# change, never luck), "dev" explores new examples on each run. `scripts/test.sh` selects "ci";
# choose with HYPOTHESIS_PROFILE=ci|dev. No deadline in either: the machines are shared and
# busy, and a slow example is not a wrong one.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis comes with the test extra
    pass
else:
    _hypothesis_settings.register_profile(
        "ci", derandomize=True, deadline=None, database=None, print_blob=True)
    _hypothesis_settings.register_profile("dev", deadline=None)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_addoption(parser):
    parser.addoption(
        "--binder", action="store_true", default=False,
        help="also run the tests marked 'binder': they build the Binder environment from the "
        "package index (~100 downloads); `scripts/test.sh --binder` runs them with retries")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--binder"):
        return
    skip = pytest.mark.skip(reason="builds the Binder environment from the network: "
                            "run it with `scripts/test.sh --binder` (or pytest --binder)")
    for item in items:
        if "binder" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright: use the system chromium, never a downloaded browser."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1100}}


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """A JupyterLab server on a free port serving copies of notebooks/; (base_url, token, root)."""
    root = tmp_path_factory.mktemp("labroot")
    home = tmp_path_factory.mktemp("jupyterhome")
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(notebook, root)  # autosave must not rewrite the repository's notebooks
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
    ]
    log_path = home / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    proc.kill()
                    raise RuntimeError("jupyter lab did not start:\n" + log_path.read_text()) from None
                time.sleep(0.3)
        yield base, token, root
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
