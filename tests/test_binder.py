"""Binder: the files in binder/ build an environment in which every notebook runs.

The slow test does what repo2docker does for this repository, with pip only: a fresh
Python 3.11 virtual environment, ``pip install -r binder/requirements.txt`` from the package
index, then ``binder/postBuild`` from the repository root with the environment's bin/ first on
PATH.  It then executes every notebook with that environment's ``jupyter nbconvert`` (the
Jupyter that Binder runs), in a copy of the repository's files, so nothing in the work tree
changes.  The machine's pip configuration (extra indexes, find-links, constraints) is left out
so that only the package index is used, as on Binder; pip's cache is kept.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
INDEX_HOST = "pypi.org"
#: JupyterLab front-end extensions the notebooks' widgets need.
LAB_EXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "anywidget", "bqplot")
#: What the notebooks need beyond the package's dependencies (see binder/pin_requirements.py).
NOTEBOOK_NEEDS = ("jupyterlab", "matplotlib", "pandas")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and not any(c in version for c in ",;<>=! "), (
                f"binder/requirements.txt: {line!r} is not an exact pin name==version"
            )
            pins[canonicalize_name(name)] = version
    return pins


def _direct_needs() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own = canonicalize_name(project["name"])
    texts = list(project["dependencies"])
    for extra in ("widgets", "plot", "data"):
        texts += project.get("optional-dependencies", {}).get(extra, [])
    needs = [Requirement(t) for t in texts if canonicalize_name(Requirement(t).name) != own]
    return needs + [Requirement(name) for name in NOTEBOOK_NEEDS]


# -- fast checks of the files ---------------------------------------------------------------------
def test_binder_files_are_what_repo2docker_reads():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable (chmod +x)"
    text = post_build.read_text()
    assert text.startswith("#!"), "binder/postBuild needs a shebang line"
    assert "pip install" in text and "--no-deps ." in text


def test_requirements_pin_everything_the_notebooks_import():
    pins = _pins()
    assert "skymatch-nb-ui" not in pins, "the package itself is installed by postBuild"
    for requirement in _direct_needs():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"binder/requirements.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"binder/requirements.txt pins {name}=={pins[name]}, but the project needs {requirement}"
        )


# -- the real build -------------------------------------------------------------------------------
def _index_reachable() -> bool:
    try:
        socket.create_connection((INDEX_HOST, 443), timeout=10).close()
        return True
    except OSError:
        return False


def _python_311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if found is None:
        pytest.fail("binder/runtime.txt asks for Python 3.11, and there is none here to build with")
    return found


def _repository_copy(dest: Path) -> Path:
    """The files Binder would see (tracked and not ignored), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=False,
    )
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = ROOT / name
            if source.is_file():  # deleted but still tracked files are skipped
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    else:  # not a git checkout: everything but the usual local clutter
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "test-results", "__pycache__", "*.egg-info",
            "build", "dist", ".pytest_cache", ".hypothesis", ".ipynb_checkpoints",
        ))
    return dest


def _environment(venv: Path, home: Path) -> dict[str, str]:
    """The build's environment: venv first on PATH, index-only pip, private Jupyter dirs."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PIP_", "JUPYTER", "IPYTHON", "PYTHON", "VIRTUAL_ENV", "CONDA"))
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PIP_CONFIG_FILE=os.devnull,  # no extra indexes, find-links or constraints of this machine
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_DEFAULT_TIMEOUT="120",
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / "ipython"),
        MPLCONFIGDIR=str(home / "matplotlib"),
        MPLBACKEND="agg",
    )
    # the system's CA bundle (pip's own certifi bundle may not know a site's TLS proxy)
    cert = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile
    if cert and Path(cert).is_file():
        env["PIP_CERT"] = cert
    return env


def _run(command, *, cwd: Path, env: dict, timeout: float, what: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n"
                    f"{done.stderr[-6000:]}")
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.binder
def test_binder_environment_runs_every_notebook(tmp_path):
    if not _index_reachable():  # asked for explicitly (--binder): a failure, retried by the script
        pytest.fail(f"network error: the package index ({INDEX_HOST}) is unreachable: cannot "
                    "build the Binder environment")
    started = time.monotonic()
    repo = _repository_copy(tmp_path / "repo")
    venv, home = tmp_path / "venv", tmp_path / "home"
    env = _environment(venv, home)
    python = venv / "bin" / "python"

    _run([_python_311(), "-m", "venv", str(venv)], cwd=tmp_path, env=env, timeout=120,
         what="python -m venv")
    _run([str(python), "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
         cwd=repo, env=env, timeout=900, what="pip install -r binder/requirements.txt")
    _run([str(repo / "binder" / "postBuild")], cwd=repo, env=env, timeout=300,
         what="binder/postBuild")

    # the environment is exactly the pins plus the package, and consistent
    _run([str(python), "-m", "pip", "check"], cwd=repo, env=env, timeout=120, what="pip check")
    frozen = json.loads(_run([str(python), "-m", "pip", "list", "--format=json",
                              "--exclude", "pip", "--exclude", "setuptools", "--exclude", "wheel"],
                             cwd=repo, env=env, timeout=120, what="pip list").splitlines()[0])
    installed = {canonicalize_name(d["name"]): d["version"] for d in frozen}
    assert installed.pop("skymatch-nb-ui", None), "postBuild did not install the package"
    assert installed == _pins(), (
        "the Binder environment differs from binder/requirements.txt (pip added or changed "
        f"distributions): {sorted(set(installed.items()) ^ set(_pins().items()))}; "
        "re-run binder/pin_requirements.py"
    )

    # the notebooks' kernel is this environment's Python, and the widgets' front ends are there
    specs = json.loads(_run([str(python), "-m", "jupyter", "kernelspec", "list", "--json"],
                            cwd=repo, env=env, timeout=120, what="jupyter kernelspec list"))
    assert Path(specs["kernelspecs"]["python3"]["resource_dir"]).is_relative_to(venv)
    extensions = _run([str(python), "-m", "jupyter", "labextension", "list"], cwd=repo, env=env,
                      timeout=120, what="jupyter labextension list")
    for name in LAB_EXTENSIONS:
        assert any(line.split()[:1] == [name] and "enabled" in line and "OK" in line
                   for line in extensions.splitlines()), (
            f"JupyterLab extension {name} missing or not enabled:\n{extensions}"
        )

    # every notebook runs, in the copy (outputs go to a scratch directory)
    out = tmp_path / "executed"
    failures = []
    for notebook in NOTEBOOKS:
        done = subprocess.run(
            [str(python), "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.timeout=300", "--output-dir", str(out),
             str(repo / "notebooks" / notebook.name)],
            cwd=repo / "notebooks", env=env, capture_output=True, text=True, timeout=600,
            check=False,
        )
        if done.returncode != 0:
            failures.append(f"{notebook.name}:\n{done.stderr[-4000:]}")
    assert not failures, "notebooks failed in the Binder environment:\n\n" + "\n\n".join(failures)
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    print(f"Binder environment built and {len(NOTEBOOKS)} notebooks run in "
          f"{time.monotonic() - started:.0f} s")
