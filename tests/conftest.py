"""Shared test configuration: hypothesis profiles, the opt-in Binder test, Debian's chromium
for Playwright, and a throw-away JupyterLab server. (The notebooks' own: notebooks/conftest.py.)"""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """A JupyterLab server on a free port serving copies of notebooks/; (base_url, token, root)."""
    from skymatch_nb_ui.testing.lab import jupyterlab_server

    root = tmp_path_factory.mktemp("labroot")
    home = tmp_path_factory.mktemp("jupyterhome")
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        shutil.copy(notebook, root)  # autosave must not rewrite the repository's notebooks
    with jupyterlab_server(root, home) as (base, token):
        yield base, token, root
