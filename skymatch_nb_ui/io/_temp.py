"""Temporary files of this package's writers: names they can be recognised by, and cleanup.

Every file the package writes goes first to a temporary path next to its destination
(`atomic_path`), named::

    .tmp-skymatch-<host>-<pid>-<token>-<name>     a file
    .tmp-skymatch-<host>-<pid>-<token>/<name>     a directory (writers that record the name)

``<host>`` is 8 hex digits of a hash of the host name, ``<pid>`` the writing process,
``<token>`` 12 random hex digits, ``<name>`` the destination's name.  A normal end, an error,
Ctrl-C and SIGTERM (the ``skymatch-nb`` command turns it into a clean exit) remove it; SIGKILL
or a power cut cannot.  `remove_leftovers` removes those a dead writer left behind, and only
those: names of this pattern whose writer ran on this host and no longer exists, or, from
another host (a shared disk), that nobody has modified for `STALE_SECONDS` (a temporary file
lives only while one file is written).  Another process's live temporary file is never
touched: its writer is alive (same host) or it is recent (other hosts).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

__all__ = ["STALE_SECONDS", "probe_writable", "remove_leftovers", "temp_prefix"]

#: Age (seconds since the last modification) after which another host's leftover is removed.
STALE_SECONDS = 24 * 3600.0

_PATTERN = re.compile(r"^\.tmp-skymatch-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{12}(-.+)?$")


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix() -> str:
    """A fresh ``.tmp-skymatch-<host>-<pid>-<token>`` for one temporary file or directory.

    Examples
    --------
    >>> bool(_PATTERN.match(temp_prefix() + "-a.fits"))
    True
    """
    return f".tmp-skymatch-{_host()}-{os.getpid()}-{secrets.token_hex(6)}"


def remove_leftovers(directory, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files and directories dead writers of this package left here.

    Returns the paths removed (none when ``directory`` does not exist).  See the module's
    description for which are taken and why a live one never is.

    Examples
    --------
    >>> remove_leftovers("matched/")  # doctest: +SKIP
    [PosixPath('matched/.tmp-skymatch-1a2b3c4d-4242-0f1e2d3c4b5a-a_cal.fits')]
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    host = _host()
    removed = []
    for path in sorted(directory.iterdir()):
        found = _PATTERN.match(path.name)
        if found is None or not _dead(found["host"] == host, int(found["pid"]), path, now):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # removed meanwhile (its writer finished after all)
            continue
        removed.append(path)
    return removed


def _dead(same_host: bool, pid: int, path: Path, now: float) -> bool:
    if same_host and not _alive(pid):
        return True
    return now - _last_modified(path) > STALE_SECONDS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _last_modified(path: Path) -> float:
    try:
        times = [path.lstat().st_mtime]
        if path.is_dir() and not path.is_symlink():
            times += [p.lstat().st_mtime for p in path.iterdir()]
    except FileNotFoundError:
        return time.time()
    return max(times)


def probe_writable(directory, *, what: str) -> None:
    """Check now that files can be written in ``directory`` (by creating and removing one).

    Raises
    ------
    PermissionError, OSError
        Naming ``what`` (e.g. ``"--output-dir 'out'"``) and the system's reason.
    """
    probe = Path(directory) / f"{temp_prefix()}-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise type(exc)(
            f"{what}: cannot write files in {str(directory)!r} ({exc.strerror or exc}); "
            "choose a directory you can write to"
        ) from None
    os.close(fd)
    probe.unlink()
