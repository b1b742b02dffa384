"""The command's outputs are safe (issue 9, items 15-17): checked before the work, never
half-written, no temporary file outlives a run (SIGTERM), and a killed run's (SIGKILL)
leftovers are removed by the next run.

The signal tests run the real command in a subprocess through a small driver that pauses
inside a known point (after a copy's temporary file is written, before it is renamed), so
the signal always arrives there: no sleeping for arbitrary times.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from test_cli import digest, write_mosaic

import skymatch_nb_ui.cli as cli
from skymatch_nb_ui.cli import main
from skymatch_nb_ui.collection import ImageCollection
from skymatch_nb_ui.io import remove_leftovers
from skymatch_nb_ui.io._temp import STALE_SECONDS, temp_prefix
from skymatch_nb_ui.testing import make_mosaic

ROOT = Path(__file__).resolve().parents[1]

#: Runs the command; the PAUSE_AT-th temporary file written by astropy (HDUList.writeto)
#: is completed, announced in PAUSE_MARKER, and the process then waits there for a signal.
DRIVER = r"""
import os, sys, time
from pathlib import Path
from astropy.io import fits

marker, pause_at = Path(os.environ["PAUSE_MARKER"]), int(os.environ["PAUSE_AT"])
where = os.environ["PAUSE_IN"]
seen = []

def pause(what):
    seen.append(what)
    if len(seen) == pause_at:  # announced atomically: the test never reads a half-written marker
        part = marker.with_name(marker.name + ".part")
        part.write_text(str(what))
        os.replace(part, marker)
        while True:
            time.sleep(0.02)

if where == "write":
    original = fits.HDUList.writeto

    def writeto(self, name, *args, **kwargs):
        original(self, name, *args, **kwargs)
        if Path(str(name)).name.startswith(".tmp-skymatch-"):
            pause(name)

    fits.HDUList.writeto = writeto
else:  # "solve": pause when the solve starts
    from skymatch_nb_ui.collection import ImageCollection
    original = ImageCollection.skymatch

    def skymatch(self, *args, **kwargs):
        pause("solve")
        return original(self, *args, **kwargs)

    ImageCollection.skymatch = skymatch

from skymatch_nb_ui.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("safety") / "in"
    return write_mosaic(directory, make_mosaic((1, 3), shape=(50, 50), sky=[100, 120, 105]))


def start_paused(tmp_path, argv, *, pause_at=1, pause_in="write"):
    """The command in a subprocess, paused at a known point; returns (process, marker text)."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / "paused"
    env = {**os.environ, "PAUSE_MARKER": str(marker), "PAUSE_AT": str(pause_at),
           "PAUSE_IN": pause_in, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(driver), *map(str, argv)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the command did not reach the pause point:\n{out}\n{err}")
        time.sleep(0.02)
    return proc, marker.read_text()


def temporaries(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(".tmp"))


def run(argv, cwd):
    return subprocess.run([sys.executable, "-m", "skymatch_nb_ui.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


# -- item 15: signals and leftovers -----------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_while_writing_copies_leaves_no_temporary_file(inputs, tmp_path, signum):
    out_dir, table = tmp_path / "out", tmp_path / "skies.ecsv"
    proc, paused = start_paused(tmp_path, [*inputs, "--output-dir", out_dir, "--table", table,
                                           "--skystat", "mean", "--subtract", "-q"], pause_at=2)
    assert Path(paused).name.startswith(".tmp-skymatch-") and Path(paused).exists()
    assert temporaries(out_dir) == [Path(paused).name]  # the second copy, half-way
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.strip() == f"skymatch-nb: stopped by {signal.Signals(signum).name}; no temporary file left"
    assert temporaries(out_dir) == [] and temporaries(tmp_path) == []
    # what was finished is whole; what was not is absent
    assert sorted(p.name for p in out_dir.iterdir()) == [inputs[0].name]
    with fits.open(out_dir / inputs[0].name) as copy:
        assert copy["SCI"].header["BKGSUB"] is True
    assert len(Table.read(table)) == 3  # written before the copies


def test_sigterm_during_the_solve_removes_the_output_directory_it_made(inputs, tmp_path):
    out_dir = tmp_path / "new" / "out"
    proc, _ = start_paused(tmp_path, [*inputs, "--output-dir", out_dir, "-q"], pause_in="solve")
    assert out_dir.is_dir()  # made (and checked) before the work
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not (tmp_path / "new").exists()


def test_sigkill_leftovers_are_removed_by_the_next_run(inputs, tmp_path):
    out_dir, table = tmp_path / "out", tmp_path / "skies.ecsv"
    argv = [*inputs, "--output-dir", out_dir, "--table", table, "--skystat", "mean", "-q"]
    proc, paused = start_paused(tmp_path, argv, pause_at=1)
    proc.kill()  # SIGKILL: nothing can clean up
    proc.communicate(timeout=60)
    assert temporaries(out_dir) == [Path(paused).name]
    again = run([*argv[:-1], "--overwrite"], cwd=tmp_path)  # the table exists: --overwrite
    assert again.returncode == 0, again.stderr
    assert f"removed 1 temporary file(s) that an interrupted run left in {str(out_dir)!r}" in again.stderr
    assert temporaries(out_dir) == []
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in inputs)


def leftover(directory, *, host=None, pid, name="a.fits", age=0.0, folder=False):
    prefix = temp_prefix()
    _, _, own_host, _, token = prefix.split("-")
    prefix = f".tmp-skymatch-{host or own_host}-{pid}-{token}"
    path = directory / (prefix if folder else f"{prefix}-{name}")
    if folder:
        path.mkdir()
        (path / name).write_text("partial")
    else:
        path.write_text("partial")
    if age:
        stamp = time.time() - age
        for p in ([path / name] if folder else []) + [path]:
            os.utime(p, (stamp, stamp))
    return path


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_remove_leftovers_takes_only_dead_writers_files(tmp_path):
    dead = dead_pid()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        gone = [
            leftover(tmp_path, pid=dead, name="a.fits"),
            leftover(tmp_path, pid=dead, name="r.asdf", folder=True),  # Roman-style directory
            leftover(tmp_path, host="0badf00d", pid=sleeper.pid, age=STALE_SECONDS + 60),
        ]
        kept = [
            leftover(tmp_path, pid=sleeper.pid, name="b.fits"),  # its writer is alive
            leftover(tmp_path, pid=os.getpid(), name="c.fits"),  # this process's own
            leftover(tmp_path, host="0badf00d", pid=dead, name="d.fits"),  # other host, recent
        ]
        others = [tmp_path / n for n in (".tmp-abc123-e.fits", "notes.txt", ".tmp-skymatch-x-1-f")]
        for p in others:
            p.write_text("not ours")
        removed = remove_leftovers(tmp_path)
        assert sorted(removed) == sorted(gone)
        assert not any(p.exists() for p in gone)
        assert all(p.exists() for p in kept + others)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_leftovers(tmp_path / "missing") == []


def test_temporary_names_name_this_host_and_process():
    prefix = temp_prefix()
    assert prefix.startswith(".tmp-skymatch-")
    assert prefix.split("-")[3] == str(os.getpid())
    assert socket.gethostname()  # hashed into the third field


# -- item 16: outputs checked before the work ------------------------------------------------------
@pytest.fixture
def no_solve(monkeypatch):
    """Fail the test if the command gets as far as the solve."""
    def refuse(*args, **kwargs):
        raise AssertionError("the solve ran before the outputs were checked")

    monkeypatch.setattr(ImageCollection, "skymatch", refuse)


def unwritable_directory(tmp_path):
    """A directory this process cannot write in (root ignores permission bits)."""
    candidates = [tmp_path / "readonly", Path("/sys")]
    candidates[0].mkdir()
    candidates[0].chmod(0o555)
    for directory in candidates:
        try:
            (directory / ".probe").write_text("")
        except OSError:
            return directory
        (directory / ".probe").unlink()
    pytest.skip("no unwritable directory here")


def test_output_dir_that_cannot_be_created_is_refused_first(inputs, tmp_path, capsys, no_solve):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    table = tmp_path / "skies.ecsv"
    code = main([*map(str, inputs), "--output-dir", str(blocker / "out"), "--table", str(table)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"skymatch-nb: error: --output-dir {str(blocker / 'out')!r}: cannot create "
                          "the directory (")
    assert ".tmp" not in err and not table.exists()


def test_read_only_output_dir_is_refused_first(inputs, tmp_path, capsys, no_solve):
    directory = unwritable_directory(tmp_path)
    table = tmp_path / "skies.ecsv"
    code = main([*map(str, inputs), "--output-dir", str(directory), "--table", str(table)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--output-dir {str(directory)!r}: cannot write files in {str(directory)!r}" in err
    assert ".tmp-skymatch" not in err and not table.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_read_only_table_directory_is_refused_first(inputs, tmp_path, capsys, no_solve):
    directory = unwritable_directory(tmp_path)
    code = main([*map(str, inputs), "--table", str(directory / "skies.ecsv")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write files in {str(directory)!r}" in err and "--table" in err


def test_new_output_dir_is_made_up_front_and_removed_on_failure(inputs, tmp_path, capsys, no_solve):
    out_dir = tmp_path / "a" / "b"
    with pytest.raises(AssertionError, match="the solve ran"):
        main([*map(str, inputs), "--output-dir", str(out_dir)])
    assert not (tmp_path / "a").exists()  # made for this run, empty: not left behind


def test_table_inside_a_new_output_dir(inputs, tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main([*map(str, inputs), "--output-dir", str(out_dir), "--table",
                 str(out_dir / "skies.ecsv"), "-q"]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*(p.name for p in inputs), "skies.ecsv"])


# -- item 17: the table is no copy and no input ----------------------------------------------------
def test_table_with_the_path_of_a_copy_is_refused(inputs, tmp_path, capsys, no_solve):
    out_dir = tmp_path / "out"
    table = out_dir / inputs[1].name  # a FITS table where the copy of img01 goes
    code = main([*map(str, inputs), "--output-dir", str(out_dir), "--table", str(table),
                 "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--table {str(table)!r} is also the path of a copy written to --output-dir" in err
    assert not out_dir.exists()


def test_table_with_the_path_of_an_input_is_refused(inputs, tmp_path, capsys, no_solve):
    before = digest(inputs)
    alias = tmp_path / "link.fits"
    alias.symlink_to(inputs[2])
    for table in (inputs[2], alias):
        code = main([*map(str, inputs), "--table", str(table), "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "is one of the input files: the command never changes its inputs" in err
    assert digest(inputs) == before
    np.testing.assert_array_equal(fits.getdata(inputs[2], "SCI"), fits.getdata(alias, "SCI"))


def test_cli_module_has_no_signal_handler_left_after_main(inputs, tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    assert main([*map(str, inputs), "-q"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    assert cli.Terminated.__mro__[1] is BaseException
