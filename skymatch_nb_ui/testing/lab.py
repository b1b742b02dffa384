"""A throw-away JupyterLab server, for the browser tests and the app benchmarks.

The server runs in its own process with its own configuration, runtime, settings, workspace
and IPython directories under ``home`` (nothing of the user's JupyterLab is read or written),
JupyterLab's news and update checks off, on a free port of 127.0.0.1 with a random token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["jupyterlab_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab_server(
    root: Path, home: Path, *, env: Mapping[str, str] | None = None, timeout: float = 90.0,
) -> Iterator[tuple[str, str]]:
    """Run JupyterLab serving ``root`` until the block ends; yields ``(base_url, token)``.

    Parameters
    ----------
    root : Path
        The directory the server serves (its notebooks' working directory).
    home : Path
        A directory for the server's own configuration and its log (``home / "lab.log"``);
        created if missing.
    env : mapping, optional
        More environment variables for the server and its kernels (e.g. ``PYTHONPATH``).
    timeout : float
        Seconds to wait for the server to answer before giving up.

    Raises
    ------
    RuntimeError
        When the server exits or does not answer within ``timeout`` s; the message holds its log.
    """
    home = Path(home)
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), secrets.token_hex(16)
    environ = {
        **os.environ,
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "IPYTHONDIR": str(home / "ipython"),
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
    ]
    log_path = home / "lab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter lab did not start:\n" + log_path.read_text()) from None
                time.sleep(0.3)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
