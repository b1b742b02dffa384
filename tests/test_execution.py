"""Where the statistics run (serial, threads, processes, a Dask cluster), progress and cancel.

Every scheduler must give the same numbers, bit for bit; a cancelled run must leave the
matcher able to carry on from what finished.
"""

import gc
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import skymatch_nb_ui.engine.measure as measure
from skymatch_nb_ui import ImageCollection, SkyMatcher, skymatch
from skymatch_nb_ui.engine import Progress, SkyMatchCancelled
from skymatch_nb_ui.testing import make_mosaic

GROUPS = ["a", "a", None, None, "b", "b", None, None, None, None, "c", "c"]


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((3, 4), shape=(60, 70), noise=1.0, sources=8, rotation=7, jitter=3,
                       mask_fraction=0.02, seed=11)


@pytest.fixture(scope="module")
def fits_files(mosaic, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mosaic")
    paths = []
    for k, (image, wcs, mask) in enumerate(zip(mosaic.images, mosaic.wcs, mosaic.masks)):
        path = folder / f"img{k:02d}.fits"
        dq = fits.ImageHDU((~mask).astype(np.int16), name="DQ")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, wcs.to_header(), name="SCI"), dq]).writeto(path)
        paths.append(path)
    return paths


def run_files(paths, scheduler, **options):
    coll = ImageCollection.from_fits(paths, group_by=None)
    coll.groups = dict(zip(coll.names, GROUPS))
    coll.scheduler = scheduler
    coll.workers = 2
    return coll.skymatch(skymethod="global+match", skystat="median", **options)


def assert_same_bits(first, second):
    for name in ("sky", "sky_err", "local", "delta", "npix", "component",  # per image
                 "stat_a", "stat_b", "err_a", "err_b", "npix_a", "npix_b",  # per pair
                 "diff_before", "diff_err", "robust_weight", "flagged"):
        np.testing.assert_array_equal(first[name].values, second[name].values, err_msg=name)


@pytest.mark.parametrize("scheduler", ["threads", "processes", "executor", "auto"])
def test_every_scheduler_gives_the_same_bits(fits_files, scheduler):
    # both kinds of tasks: pixel differences (the default) and each side's levels
    for compare in ("differences", "levels"):
        serial = run_files(fits_files, "serial", compare=compare)
        assert np.isfinite(serial.sky.values).all() and np.isfinite(serial.diff_before.values).all()
        if scheduler == "executor":
            with ThreadPoolExecutor(3) as pool:
                other = run_files(fits_files, pool, compare=compare)
        else:
            other = run_files(fits_files, scheduler, compare=compare)
        assert_same_bits(serial, other)


def test_real_sip_files_give_the_same_bits_in_worker_processes(tmp_path):
    """HST ACS/WFC chips as files (SIP distortion in the headers, real pixels, a sky plane per
    exposure): the workers read them and rebuild their WCS; constants and planes."""
    pytest.importorskip("skimage")
    from skymatch_nb_ui.datasets import hubble_deep_field_exposures

    hdf = hubble_deep_field_exposures(gradient=[(0.05, 0.0), (0.0, 0.05), (-0.03, 0.02),
                                                (0.02, -0.04)], seed=1)
    paths = []
    for name, image, wcs in zip(hdf.names, hdf.images, hdf.wcs):
        paths.append(tmp_path / f"{name}.fits")
        fits.PrimaryHDU(image, wcs.to_header(relax=True)).writeto(paths[-1])
    assert "A_ORDER" in fits.getheader(paths[0])
    for skymodel in ("constant", "plane"):
        found = []
        for scheduler in ("serial", "processes"):
            coll = ImageCollection.from_files(paths)
            coll.scheduler, coll.workers = scheduler, 2
            found.append(coll.skymatch(skymethod="global+match", skymodel=skymodel))
        assert_same_bits(*found)
        if skymodel == "plane":
            for name in ("slope_x", "slope_y", "sky_cov", "resid_gradient"):
                np.testing.assert_array_equal(found[0][name].values, found[1][name].values)


def test_arrays_in_worker_processes_give_the_same_bits(mosaic):
    args = (mosaic.images, mosaic.wcs)
    serial = skymatch(*args, masks=mosaic.masks, scheduler="serial", skymethod="global+match")
    pooled = skymatch(*args, masks=mosaic.masks, scheduler="processes", workers=2,
                      skymethod="global+match")
    np.testing.assert_array_equal(serial.sky, pooled.sky)
    np.testing.assert_array_equal(serial.sky_err, pooled.sky_err)


def test_a_local_cluster_of_two_worker_processes_gives_the_same_bits(fits_files):
    distributed = pytest.importorskip("distributed")
    serial = run_files(fits_files, "serial")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert_same_bits(serial, run_files(fits_files, client))
        # by address: the engine connects for the run and lets go after it
        assert_same_bits(serial, run_files(fits_files, cluster.scheduler_address))


def test_a_local_cluster_gives_the_same_planes(tmp_path):
    # skymodel="plane" sends other tasks (the cells' statistics, in batches per image) and
    # its own arguments (frames, cell grids): the planes must not depend on where they ran
    distributed = pytest.importorskip("distributed")
    m = make_mosaic((3, 4), shape=(100, 120), overlap=0.3, noise=1.0, gradient=4.0, sources=8,
                    rotation=7, jitter=3, mask_fraction=0.02, seed=12)
    paths = []
    for k, (image, wcs, mask) in enumerate(zip(m.images, m.wcs, m.masks)):
        paths.append(tmp_path / f"img{k:02d}.fits")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, wcs.to_header(), name="SCI"),
                      fits.ImageHDU((~mask).astype(np.int16), name="DQ")]).writeto(paths[-1])

    def run(scheduler, compare):
        coll = ImageCollection.from_fits(paths, group_by=None)
        coll.groups = dict(zip(coll.names, GROUPS))
        coll.scheduler, coll.workers = scheduler, 2
        return coll.skymatch(skymethod="global+match", skymodel="plane", compare=compare)

    serial = {compare: run("serial", compare) for compare in ("differences", "levels")}
    for found in serial.values():  # planes fitted from cells, not constants
        assert not found.attrs["plane_flat"]
        assert (found.plane_fallback.values == "").all()
        assert np.isfinite(found.slope_x_err.values).all()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            for compare, expected in serial.items():
                found = run(client, compare)
                assert_same_bits(expected, found)
                for name in ("slope_x", "slope_y", "sky_cov", "resid_gradient", "plane_fallback"):
                    np.testing.assert_array_equal(expected[name].values, found[name].values,
                                                  err_msg=f"{compare}: {name}")


def test_a_cluster_run_keeps_no_copy_of_its_tasks_arguments_here(fits_files):
    # distributed logs each stream's recent messages under 1 MB, objects and all: the
    # tasks' arguments (the overlaps' pixel runs and maps) are scattered instead, so that no
    # copy of them stays in this process (where a LocalCluster's scheduler runs too)
    distributed = pytest.importorskip("distributed")
    from skymatch_nb_ui.engine.geometry import Runs

    def runs_not_of(coll):
        gc.collect()
        own = {id(r) for r in coll.matcher.geometry.runs.values()}
        return sum(type(o) is Runs and id(o) not in own for o in gc.get_objects())

    serial = ImageCollection.from_fits(fits_files, group_by=None)
    serial.scheduler = "serial"
    serial.skymatch()
    baseline = runs_not_of(serial)  # (not this collection's: e.g. the empty set's constant)
    del serial
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            coll = ImageCollection.from_fits(fits_files, group_by=None)
            coll.scheduler, coll.workers = client, 2
            coll.skymatch()
            assert len(coll.matcher.geometry.runs) > 20
            assert runs_not_of(coll) == baseline


def test_the_execution_options_are_not_parameters_of_the_result(mosaic):
    result = skymatch(mosaic.images, mosaic.wcs, scheduler="threads", workers=2)
    assert "scheduler" not in result.params and "workers" not in result.params


def test_progress_reports_every_stage_in_order(mosaic):
    events = []
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="threads", workers=2)
    matcher.run(skymethod="global+match", subtract=True, progress=events.append)
    stages = list(dict.fromkeys(e.stage for e in events))
    assert stages == ["geometry", "statistics", "solve", "subtract"]
    for stage in stages:
        done = [e.done for e in events if e.stage == stage]
        total = {e.total for e in events if e.stage == stage}
        assert len(total) == 1 and done == sorted(done) and done[-1] == total.pop(), stage
    # a solve-only change: geometry and statistics are cached and say so at once
    events.clear()
    matcher.run(skymethod="global+match", match_down=False, progress=events.append)
    assert [(e.stage, e.fraction) for e in events][:2] == [("geometry", 1.0), ("statistics", 1.0)]
    assert Progress("x", 0, 0).fraction == 1.0


def count_statistics(monkeypatch):
    calls = []
    original = measure.sky_statistic
    monkeypatch.setattr(measure, "sky_statistic", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def test_cancel_stops_between_tasks_and_the_next_run_carries_on(mosaic, monkeypatch):
    full = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial").run(skymethod="global+match")
    calls = count_statistics(monkeypatch)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial")
    cancel = threading.Event()

    def progress(p):
        if p.stage == "statistics" and p.done >= 10:
            cancel.set()  # as a Cancel button would, from another thread

    with pytest.raises(SkyMatchCancelled, match="statistics stage"):
        matcher.run(skymethod="global+match", progress=progress, cancel=cancel)
    measured = len(calls)
    assert 10 <= measured < len(full.pairs) * 2 + len(full.sky)
    cancel.clear()
    again = matcher.run(skymethod="global+match", cancel=cancel)
    np.testing.assert_array_equal(again.sky, full.sky)
    np.testing.assert_array_equal(again.sky_err, full.sky_err)
    total = len(calls)
    matcher.run(skymethod="global+match")  # all cached now
    assert len(calls) == total
    # nothing was measured twice: the cancelled run's statistics were kept
    fresh = count_statistics(monkeypatch)
    SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial").run(skymethod="global+match")
    assert total == len(fresh)


def test_cancel_stops_the_robust_solve_between_its_solves(mosaic, monkeypatch):
    """The robust fit makes tens of solves (seconds at thousands of images): a cancel stops
    it at the next one, and the next run gives the whole answer."""
    from skymatch_nb_ui.engine import robust

    full = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial").run(compare="levels")
    solves = []
    cancel = threading.Event()
    original = robust.solve_offsets

    def counted(*args, **kwargs):
        solves.append(1)
        if len(solves) == 3:
            cancel.set()  # as a Cancel button would, while the fit runs
        return original(*args, **kwargs)

    monkeypatch.setattr(robust, "solve_offsets", counted)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial")
    with pytest.raises(SkyMatchCancelled, match="solve stage"):
        matcher.run(compare="levels", cancel=cancel)
    assert len(solves) == 3  # (this mosaic's fit makes 20)
    cancel.clear()
    again = matcher.run(compare="levels", cancel=cancel)
    assert len(solves) > 10
    np.testing.assert_array_equal(again.sky, full.sky)
    np.testing.assert_array_equal(again.sky_err, full.sky_err)


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_cancel_works_on_pools_too(fits_files, scheduler):
    cancel = threading.Event()
    cancel.set()
    coll = ImageCollection.from_fits(fits_files)
    coll.scheduler = scheduler
    coll.workers = 2
    with pytest.raises(SkyMatchCancelled):
        coll.skymatch(cancel=cancel)
    cancel.clear()
    assert np.isfinite(coll.skymatch(cancel=cancel).sky.values).all()


def test_cancel_during_the_geometry_keeps_no_half_geometry(mosaic):
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    cancel = threading.Event()

    def progress(p):
        if p.stage == "geometry" and p.done > 0:
            cancel.set()

    with pytest.raises(SkyMatchCancelled, match="geometry"):
        matcher.run(progress=progress, cancel=cancel)
    cancel.clear()
    assert len(matcher.run(cancel=cancel).pairs) == len(SkyMatcher(mosaic.images, mosaic.wcs).run().pairs)


@pytest.mark.parametrize(("scheduler", "error"), [
    ("thread", ValueError), ("tcp", ValueError), (2, TypeError), (object(), TypeError),
])
def test_bad_schedulers_are_refused_by_name(mosaic, scheduler, error):
    with pytest.raises(error, match="scheduler must be one of 'auto', 'serial', 'threads'"):
        SkyMatcher(mosaic.images, mosaic.wcs, scheduler=scheduler)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    with pytest.raises(error, match="scheduler must be"):
        matcher.scheduler = scheduler


def test_a_script_without_a_main_guard_is_not_rerun_by_the_workers(fits_files, tmp_path):
    """Worker processes import this package, never the user's script again."""
    script = tmp_path / "match.py"
    script.write_text(textwrap.dedent(f"""
        from skymatch_nb_ui import ImageCollection
        print("script runs")
        coll = ImageCollection.from_fits({[str(p) for p in fits_files]!r})
        coll.scheduler, coll.workers = "processes", 2
        print(int(coll.skymatch().valid.sum()))
    """))
    env_path = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["script", "runs", str(len(fits_files))]


# -- the command line --------------------------------------------------------------------------
def test_the_command_runs_on_worker_processes_with_the_same_table(fits_files, tmp_path):
    from astropy.table import Table

    from skymatch_nb_ui.cli import main

    tables = []
    for options in ([], ["--scheduler", "processes", "--workers", "2"], ["--scheduler", "serial"]):
        path = tmp_path / f"skies{len(tables)}.ecsv"
        assert main([str(p) for p in fits_files] + ["--quiet", "--table", str(path)] + options) == 0
        tables.append(Table.read(path))
    for table in tables[1:]:
        for name in ("sky", "sky_err", "npix", "valid"):
            np.testing.assert_array_equal(table[name], tables[0][name])
        assert table.meta == tables[0].meta  # how it ran is not recorded as a parameter


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--scheduler", "thread", "expected one of 'auto', 'serial', 'threads', 'processes'"),
    ("--workers", "0", "expected a positive integer; got '0'"),
])
def test_the_command_refuses_bad_execution_options(fits_files, capsys, option, value, message):
    from skymatch_nb_ui.cli import main

    assert main([str(fits_files[0]), option, value]) == 2
    assert message in capsys.readouterr().err


def test_the_command_shows_a_progress_bar_per_stage(fits_files, monkeypatch, capsys):
    import skymatch_nb_ui.cli as cli

    bars = []

    class Bar:
        def __init__(self, *, total, desc, **_):
            self.total, self.desc, self.n, self.closed = total, desc, 0, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(cli, "_tqdm", lambda: Bar)
    assert cli.main([str(p) for p in fits_files] + ["--scheduler", "threads"]) == 0
    assert [b.desc for b in bars] == ["geometry", "statistics", "solve"]
    assert all(b.closed and b.n == b.total for b in bars)


def test_auto_runs_small_work_and_arrays_here_and_much_work_in_files_on_processes(monkeypatch):
    from skymatch_nb_ui.engine import _execute
    from skymatch_nb_ui.engine._execute import PROCESSES_FROM, Execution

    monkeypatch.setattr(_execute, "_can_fork", lambda: False)  # forks: tests/test_fork.py

    auto = Execution("auto", 2)
    small, large = [50_000] * 20, [PROCESSES_FROM // 100] * 100
    assert auto.kind(True, small) == auto.kind(False, small) == "serial"
    assert auto.kind(True, large) == "processes"  # files: each worker reads its own
    assert auto.kind(False, large) == "serial"  # arrays would have to be copied to workers
    assert Execution("auto", 1).kind(True, large) == "serial"
    assert Execution("threads", 2).kind(False, small) == "threads"  # asked for: done
    assert Execution("processes", 2).kind(False, small) == "processes"
    # pixel differences (interpolation releases the GIL): threads when there are many
    assert auto.kind(False, large, gil_free=sum(large)) == "threads"
    # ... but many of them in files go to worker processes (threads lost to one process on
    # 1,000 small pairs), well before PROCESSES_FROM
    many = [_execute.PROCESSES_DIFFERENCES_FROM // 1000] * 1000
    assert sum(many) < PROCESSES_FROM
    assert auto.kind(True, many, gil_free=sum(many), differences=sum(many)) == "processes"
    assert auto.kind(False, many, gil_free=sum(many), differences=sum(many)) == "threads"
    assert auto.kind(True, many[:100], gil_free=sum(many) // 10,
                     differences=sum(many) // 10) == "threads"
    assert auto.kind(False, small, gil_free=sum(small)) == "serial"
    assert Execution("auto", 1).kind(False, large, gil_free=sum(large)) == "serial"


def test_file_loaders_travel_as_paths_and_read_the_same_pixels(fits_files):
    import pickle

    coll = ImageCollection.from_fits(fits_files)
    loader = coll.matcher.loaders[3]
    payload = pickle.dumps(loader)
    assert len(payload) < 2000  # no pixels, no WCS, no headers
    copy = pickle.loads(payload)
    np.testing.assert_array_equal(copy.data(), loader.data())
    np.testing.assert_array_equal(copy.mask(), loader.mask())
    assert copy.shape == loader.shape


# -- what a run keeps after it: scratch buffers ------------------------------------------------
def test_scratch_lets_go_of_its_largest_buffers_and_a_buffer_in_use_lives_on():
    scratch = measure.Scratch()
    big = scratch.differences.get("d", np.float64, 1_000_000)  # 8 MB, in use by a "task"
    big[:] = 1.5
    scratch.work._floats(0, 200_000)  # 1.6 MB
    scratch.buffers.indices(10_000)  # 0.1 MB
    held = scratch.nbytes
    assert held > 9_600_000
    freed = scratch.release(keep=2_000_000)
    assert freed >= 8_000_000 and scratch.nbytes == held - freed <= 2_000_000
    assert np.all(big == 1.5)  # the task's array is untouched
    assert scratch.differences.get("d", np.float64, 10) is not big.base  # a new one when asked
    assert scratch.release(keep=0) > 0 and scratch.nbytes == 0


def test_a_run_keeps_small_buffers_and_lets_large_ones_go(mosaic, monkeypatch):
    """Roman's 4088 x 4088 detectors filled ~470 MB of a thread's buffers, which a Jupyter
    kernel (and every pool worker) kept after the run; a small run's few MB are kept so the
    next run does not page-fault them again."""
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="serial")
    first = matcher.run(skymethod="match", compare="differences")
    kept = measure.thread_scratch().nbytes
    assert 0 < kept <= measure.SCRATCH_KEEP_BYTES  # a small run's buffers: all kept
    monkeypatch.setattr(measure, "SCRATCH_KEEP_BYTES", kept // 4)  # "large" now
    again = matcher.run(skymethod="match", compare="differences", skystat="median")
    assert measure.thread_scratch().nbytes <= kept // 4
    assert matcher.run(skymethod="match", compare="differences").sky.tobytes() == first.sky.tobytes()
    assert np.isfinite(again.sky).all()
    on_threads = SkyMatcher(mosaic.images, mosaic.wcs, scheduler="threads", workers=2)
    on_threads.run(skymethod="match", compare="differences", skystat="mean")
    scratches = list(measure._SCRATCHES)  # the pool's threads' too
    assert len(scratches) >= 2 and all(s.nbytes <= kept // 4 for s in scratches)


def test_a_worker_lets_go_of_a_runs_scratch_when_the_run_is_over_there(monkeypatch):
    from skymatch_nb_ui.engine import _execute

    assert measure.release_scratch in _execute.WORKER_RUN_ENDS
    ends = []
    monkeypatch.setattr(_execute, "WORKER_RUN_ENDS", [lambda: ends.append(1)])
    # (without their contexts: `held_decoded` would keep this process's decoded pixels, and
    # the patched run ends would never let them go)
    monkeypatch.setattr(_execute, "WORKER_CONTEXTS", [])
    fill = lambda: measure.thread_scratch().differences.get("w", np.float64, 100)
    _execute._in_run("1:run-1", fill)  # (pid 1: a task of another process's run)
    _execute._in_run("1:run-1", fill)
    assert not ends  # the same run: nothing let go between its tasks
    _execute._in_run("1:run-2", fill)
    assert ends == [1]  # another run's task: the first is over here
    timer = _execute._worker_run["timer"]
    assert timer is not None and timer.interval == _execute.WORKER_IDLE_SECONDS
    timer.cancel()
    timer.function(*timer.args)  # its last task was WORKER_IDLE_SECONDS ago
    assert ends == [1, 1] and _execute._worker_run["token"] is None
