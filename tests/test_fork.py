"""Worker processes forked for a run (images in memory, shared, not copied): same bits, safe.

Whether a fork is allowed depends on the threads of the process (`_fork.fork_safe`), and a
test run may have other threads (a Dask cluster's, a thread pool's) by the time these run:
what must fork runs in a fresh interpreter, where no other thread runs.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from skymatch_nb_ui.engine import _execute, _fork
from skymatch_nb_ui.engine._execute import FORK_FROM, Execution

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")


def run_fresh(code: str, *, prelude: str = "") -> dict:
    """Run ``prelude`` then ``code`` in a fresh Python (no other thread); it prints one JSON object last."""
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


#: For `run_fresh` scripts: ``stages`` lists the function of each `fork_map` call, in order.
SPY = """
from skymatch_nb_ui.engine import _execute

stages = []
original = _execute.fork_map
def spy(function, arguments, order, workers, **options):
    stages.append(function.__name__)
    return original(function, arguments, order, workers, **options)
_execute.fork_map = spy
"""


@linux_only
def test_forked_workers_give_the_bits_of_a_serial_run():
    found = run_fresh("""
        import json, numpy as np
        from skymatch_nb_ui import skymatch
        from skymatch_nb_ui.engine import _execute, _fork
        from skymatch_nb_ui.testing import make_mosaic

        forks = []
        original = _fork.fork_map
        def spy(function, arguments, order, workers, **options):
            forks.append(workers)
            return original(function, arguments, order, workers, **options)
        _execute.fork_map = spy

        m = make_mosaic((3, 4), shape=(120, 140), noise=1.0, sources=8, rotation=7, jitter=3,
                        mask_fraction=0.02, seed=11)
        groups = ["a", "a", None, None, "b", "b", None, None, None, None, "c", "c"]
        names = ("sky", "sky_err", "delta", "npix")
        out = {"same": [], "forks": []}
        # planes (their cells' tasks, then the constant stage's)
        g = make_mosaic((3, 3), shape=(200, 220), noise=1.0, gradient=3.0, sources=5,
                        rotation=4, seed=5)
        for compare in ("levels", "differences"):
            serial = skymatch(g.images, g.wcs, skymodel="plane", compare=compare,
                              scheduler="serial")
            before = len(forks)
            other = skymatch(g.images, g.wcs, skymodel="plane", compare=compare,
                             scheduler="processes", workers=2)
            out["forks"].append(len(forks) > before)
            out["same"].append(all(np.array_equal(getattr(serial.plane, n), getattr(other.plane, n),
                                                  equal_nan=True)
                                   for n in ("slope_x", "slope_y", "cov"))
                               and np.array_equal(serial.sky, other.sky))
        for method in ("match", "global+match"):
            for compare in ("levels", "differences"):
                for skystat in ("mode", "median"):
                    options = dict(masks=m.masks, groups=groups, skymethod=method,
                                   compare=compare, skystat=skystat)
                    serial = skymatch(m.images, m.wcs, scheduler="serial", **options)
                    for workers in (2, 3):
                        before = len(forks)
                        other = skymatch(m.images, m.wcs, scheduler="processes",
                                         workers=workers, **options)
                        out["forks"].append(forks[before:] == [workers])
                        out["same"].append(all(
                            np.array_equal(getattr(serial, n), getattr(other, n)) for n in names)
                            and np.array_equal(serial.pairs.diff_before,
                                               other.pairs.diff_before, equal_nan=True)
                            and np.array_equal(serial.pairs.stat_a, other.pairs.stat_a,
                                               equal_nan=True))
        print(json.dumps(out))
    """)
    assert all(found["forks"]), found  # the forked path ran, with the workers asked for
    assert all(found["same"]), found


@linux_only
def test_forked_workers_stop_raise_and_recover_as_a_serial_run_would():
    found = run_fresh("""
        import json, os, time, threading
        from skymatch_nb_ui.engine import _fork
        from skymatch_nb_ui.engine.stats import StatisticError

        parent = os.getpid()
        out = {}

        def square(k):  # slow enough that the child takes some tasks
            time.sleep(0.01)
            return (k * k, os.getpid() != parent)

        got = {}
        _fork.fork_map(square, [(k,) for k in range(40)], range(40), 2,
                       on_result=got.__setitem__, check=lambda: None)
        out["all"] = sorted(got) == list(range(40)) and all(v[0] == k * k for k, v in got.items())
        out["child_worked"] = any(v[1] for v in got.values())

        def fails_in_child(k):
            time.sleep(0.01)
            if os.getpid() != parent:
                raise StatisticError(f"binwidth=1e-09 needs too many bins (task {k})")
            return k

        try:
            _fork.fork_map(fails_in_child, [(k,) for k in range(40)], range(40), 2,
                           on_result=lambda k, v: None, check=lambda: None)
            out["raised"] = None
        except StatisticError as error:
            out["raised"] = str(error)

        def dies_in_child(k):  # a child killed mid-task (out of memory...)
            time.sleep(0.01)
            if os.getpid() != parent:
                os._exit(9)
            return -k

        got = {}
        _fork.fork_map(dies_in_child, [(k,) for k in range(40)], range(40), 3,
                       on_result=got.__setitem__, check=lambda: None)
        out["recovered"] = got == {k: -k for k in range(40)}

        class Stop(Exception):
            pass

        seen = []
        def check():
            if len(seen) >= 3:
                raise Stop
        try:
            _fork.fork_map(square, [(k,) for k in range(200)], range(200), 2,
                           on_result=lambda k, v: seen.append(k), check=check)
            out["stopped"] = False
        except Stop:
            out["stopped"] = len(seen) < 200
        time.sleep(0.5)
        _fork._reap()
        out["left"] = len(_fork._UNREAPED)
        out["threads"] = threading.active_count()
        print(json.dumps(out))
    """)
    assert found["all"] and found["child_worked"], found
    assert found["raised"] == "binwidth=1e-09 needs too many bins (task 0)" or \
        found["raised"].startswith("binwidth=1e-09 needs too many bins"), found
    assert found["recovered"], found
    assert found["stopped"], found
    assert found["left"] == 0 and found["threads"] == 1, found  # children reaped, no thread left


def test_no_fork_while_another_thread_runs(monkeypatch):
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not _fork.fork_safe()
        assert not _execute._can_fork()
        sizes = [FORK_FROM] * 4
        assert Execution("processes", 2).kind(False, sizes) == "processes"  # the pool
        assert Execution("auto", 2).kind(False, sizes) == "serial"
    finally:
        release.set()
        other.join()


@linux_only
def test_idle_threads_of_our_own_pool_do_not_prevent_a_fork(monkeypatch):
    pool = _execute._thread_pool(2)
    pool.submit(lambda: None).result()  # its threads exist
    ours = [threading.main_thread(), *pool._threads]  # (other tests' threads ignored)
    monkeypatch.setattr(_fork.threading, "enumerate", lambda: list(ours))
    assert _execute._can_fork()
    started, release = threading.Event(), threading.Event()

    def busy():
        started.set()
        release.wait()

    future = pool.submit(_execute._counted, busy)
    started.wait(10)
    try:
        assert not _execute._can_fork()  # one of them runs a task: it might hold a lock
    finally:
        release.set()
        future.result()
    deadline = time.monotonic() + 10
    while not _execute._can_fork() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _execute._can_fork()


def test_auto_forks_for_arrays_only_when_it_can_and_there_is_enough(monkeypatch):
    monkeypatch.setattr(_execute, "_can_fork", lambda: True)
    monkeypatch.setattr(_execute, "_idle_core", lambda: True)
    auto = Execution("auto", 2)
    many, few = [FORK_FROM // 50] * 60, [FORK_FROM // 50] * 10
    assert auto.kind(False, many, forks=True) == "fork"
    assert auto.kind(False, many) == "serial"  # a caller whose tasks were not measured so
    assert auto.kind(False, few, forks=True) == "serial"
    assert Execution("auto", 1).kind(False, many, forks=True) == "serial"
    assert Execution("processes", 2).kind(False, few) == "fork"  # asked for processes
    assert Execution("processes", 2).kind(True, few) == "processes"  # files: the pool reads them
    assert Execution("threads", 2).kind(False, many) == "threads"
    monkeypatch.setattr(_execute, "_idle_core", lambda: False)  # a busy machine
    assert auto.kind(False, many, forks=True) == "serial"
    assert Execution("processes", 2).kind(False, few) == "fork"  # asked for
    monkeypatch.setattr(_execute, "_can_fork", lambda: False)
    assert auto.kind(False, many, forks=True) == "serial"
    assert Execution("processes", 2).kind(False, few) == "processes"


def test_auto_counts_the_fixed_cost_of_many_small_pixel_sets(monkeypatch):
    # a set's statistic costs ~0.4 ms whatever its size: many small sides are work that
    # their pixels do not show (256 x 256 images, 6 x 6: 220 sides of 2e6 pixels in all)
    from skymatch_nb_ui.engine._execute import SET_PIXELS

    monkeypatch.setattr(_execute, "_can_fork", lambda: True)
    monkeypatch.setattr(_execute, "_idle_core", lambda: True)
    auto = Execution("auto", 2)
    many = FORK_FROM // SET_PIXELS  # sets whose fixed costs alone are enough
    assert auto.kind(False, [1_000] * many, forks=True) == "fork"  # one set per task
    assert auto.kind(False, [1_000] * (many // 2), forks=True) == "serial"
    assert auto.kind(False, [1_000] * 4, forks=True, sets=many) == "fork"  # several per task
    assert auto.kind(False, [1_000] * many, forks=True, sets=0) == "serial"  # pairs: batched
    monkeypatch.setattr(_execute, "_idle_core", lambda: False)  # a busy machine
    assert auto.kind(False, [1_000] * many, forks=True) == "serial"


@linux_only
def test_auto_forks_for_a_mosaic_of_many_small_images_with_the_bits_of_a_serial_run():
    # the constants' sides and the planes' cells (compare="levels"): 8 x 8 images, ~420 sides
    found = run_fresh(prelude=SPY, code="""
        import json, numpy as np
        from skymatch_nb_ui import skymatch
        from skymatch_nb_ui.engine import _execute
        from skymatch_nb_ui.testing import make_mosaic

        _execute._idle_core = lambda: True  # (whatever else runs on the machine)
        out = {}
        for layout in ((8, 8), (2, 2)):
            m = make_mosaic(layout, shape=(128, 128), noise=1.0, gradient=2.0, sources=1,
                            rotation=3, jitter=2, seed=4)
            for model in ("constant", "plane"):
                stages.clear()
                auto = skymatch(m.images, m.wcs, compare="levels", skymodel=model,
                                scheduler="auto", workers=2)
                forked = len(stages)  # the maps run by forked workers
                serial = skymatch(m.images, m.wcs, compare="levels", skymodel=model,
                                  scheduler="serial")
                same = all(np.array_equal(getattr(auto, n), getattr(serial, n), equal_nan=True)
                           for n in ("sky", "sky_err"))
                if model == "plane":
                    same &= all(np.array_equal(getattr(auto.plane, n), getattr(serial.plane, n),
                                               equal_nan=True) for n in ("slope_x", "slope_y", "cov"))
                out[f"{layout[0]}x{layout[1]} {model}"] = [forked, same]
        print(json.dumps(out))
    """)
    assert found == {
        "8x8 constant": [1, True],  # the sides
        "8x8 plane": [2, True],  # the cells, then the constants' sides (the pair table)
        "2x2 constant": [0, True],
        "2x2 plane": [0, True],
    }


def test_auto_forks_for_pixel_differences_before_threads(monkeypatch):
    # forked workers beat threads at every bench size (`FORK_DIFFERENCES_FROM`'s figures)
    from skymatch_nb_ui.engine._execute import FORK_DIFFERENCES_FROM, THREADS_FROM

    monkeypatch.setattr(_execute, "_can_fork", lambda: True)
    monkeypatch.setattr(_execute, "_idle_core", lambda: True)
    auto = Execution("auto", 2)
    sizes = [FORK_DIFFERENCES_FROM // 10] * 10
    enough = sum(sizes)
    assert auto.kind(False, sizes, gil_free=enough, forks=True, differences=enough) == "fork"
    # batched small pairs (gil_free 0) fork too; too few differences do not
    assert auto.kind(False, sizes, gil_free=0, forks=True, differences=enough) == "fork"
    few = FORK_DIFFERENCES_FROM - 1
    assert auto.kind(False, [few], forks=True, differences=few) == "serial"
    assert auto.kind(False, [few // 2] * 2, gil_free=few, forks=True, differences=few) == (
        "threads" if few >= THREADS_FROM else "serial")
    # a busy machine, or a process that may not fork (a Jupyter kernel): threads for the
    # pairs measured one at a time, serial for batched ones (they lost 25-35% on threads)
    monkeypatch.setattr(_execute, "_idle_core", lambda: False)
    assert auto.kind(False, sizes, gil_free=enough, forks=True, differences=enough) == "threads"
    monkeypatch.setattr(_execute, "_idle_core", lambda: True)
    monkeypatch.setattr(_execute, "_can_fork", lambda: False)
    assert auto.kind(False, sizes, gil_free=enough, forks=True, differences=enough) == "threads"
    assert auto.kind(False, sizes, gil_free=0, forks=True, differences=enough) == "serial"
    assert auto.kind(True, sizes, gil_free=enough, forks=True, differences=enough) == "threads"


def test_the_engine_sends_only_pairs_measured_alone_to_threads(monkeypatch):
    # small images: every pair batched, no pixel counts as gaining on threads; large: all
    from skymatch_nb_ui import SkyMatcher
    from skymatch_nb_ui.engine.differences import BATCH_IMAGE_PIXELS
    from skymatch_nb_ui.testing import make_mosaic

    seen = []
    real = Execution.kind

    def spy(self, files, sizes, **kw):
        seen.append(kw)
        return real(self, files, sizes, **kw)

    monkeypatch.setattr(Execution, "kind", spy)
    for side in (64, int(BATCH_IMAGE_PIXELS**0.5) + 1):
        m = make_mosaic((2, 2), shape=(side, side), noise=1.0, rotation=3.0, jitter=2.0, seed=3)
        seen.clear()
        SkyMatcher(m.images, m.wcs).run(skymethod="match", compare="differences")
        (kw,) = [k for k in seen if k.get("differences")]
        assert kw["gil_free"] == (0 if side == 64 else kw["differences"]), (side, kw)
        seen.clear()
        SkyMatcher(m.images, m.wcs).run(skymethod="match", compare="differences",
                                        skymodel="plane")
        planes = [k for k in seen if k.get("differences") and k.get("forks")]
        assert planes and all(k["gil_free"] == (0 if side == 64 else k["differences"])
                              for k in planes), (side, seen)


def test_forked_workers_take_an_images_sides_together_as_a_serial_run(monkeypatch):
    # one task per image (its sides measured together: their fixed costs shared) unless an
    # image's task would be more than a worker's share of the work: then one per side
    from skymatch_nb_ui import skymatch
    from skymatch_nb_ui.engine.matcher import _fair
    from skymatch_nb_ui.engine.measure import Task
    from skymatch_nb_ui.testing import make_mosaic

    seen: dict = {}
    real = Execution.map

    def spy(self, stage, function, arguments, *, kind, **options):
        if stage == "statistics":
            seen[kind] = sorted((t.label, t.size, t.units) for args in arguments
                                for t in args[0] if isinstance(t, Task))
        return real(self, stage, function, arguments, kind=kind, **options)

    def fork_here(function, arguments, order, workers, *, on_result, check, meanwhile=None):
        if meanwhile is not None:
            meanwhile()
        for k in order:
            check()
            on_result(k, function(*arguments[k]))

    monkeypatch.setattr(Execution, "map", spy)
    monkeypatch.setattr(_execute, "_can_fork", lambda: True)
    monkeypatch.setattr(_execute, "fork_map", fork_here)
    m = make_mosaic((2, 2), shape=(60, 70), noise=1.0, seed=4)
    for workers, whole in ((2, True), (3, True), (5, False)):  # 4 images of ~equal work
        seen.clear()
        serial = skymatch(m.images, m.wcs, compare="levels", scheduler="serial")
        forked = skymatch(m.images, m.wcs, compare="levels", scheduler="processes",
                          workers=workers)
        assert set(seen) == {"serial", "fork"}
        assert np.array_equal(serial.sky, forked.sky)
        assert np.array_equal(serial.sky_err, forked.sky_err)
        assert len(seen["serial"]) == len({label for label, _, _ in seen["serial"]}) == 4
        assert _fair([size for _, size, _ in seen["serial"]], workers) == whole
        if whole:
            assert seen["fork"] == seen["serial"]
        else:  # one task per side (and one for each image's own pixels)
            assert all(units == 1 for _, _, units in seen["fork"])
            assert sum(u for *_, u in seen["fork"]) == sum(u for *_, u in seen["serial"])
    assert _fair([5, 5, 10], 2) and not _fair([5, 5, 11], 2) and _fair([], 2)


def test_an_idle_core_is_judged_by_the_load_average_and_else_by_the_tasks_running_now(monkeypatch):
    monkeypatch.setattr(_execute.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(_execute, "_running_now", lambda: 2.0)
    monkeypatch.setattr(_execute.os, "getloadavg", lambda: (1.2, 3.0, 3.0))
    assert _execute._idle_core()
    monkeypatch.setattr(_execute.os, "getloadavg", lambda: (1.6, 0.5, 0.5))
    assert not _execute._idle_core()  # another task runs beside this one now too
    # the average lags: this process's own last minute of work counts in it
    monkeypatch.setattr(_execute, "_running_now", lambda: 1.2)
    assert _execute._idle_core()
    monkeypatch.setattr(_execute, "_running_now", lambda: None)  # no /proc/loadavg
    assert not _execute._idle_core()


@linux_only
def test_the_tasks_running_now_count_this_one():
    assert 1.0 <= _execute._running_now() < 64


@linux_only
def test_a_cancelled_forked_run_stops_and_the_next_carries_on():
    found = run_fresh("""
        import json, threading, numpy as np
        from skymatch_nb_ui import SkyMatcher
        from skymatch_nb_ui.engine import SkyMatchCancelled, _execute
        from skymatch_nb_ui.testing import make_mosaic

        m = make_mosaic((2, 3), shape=(80, 90), noise=1.0, seed=3)
        cancel = threading.Event()
        matcher = SkyMatcher(m.images, m.wcs, scheduler="processes", workers=2)
        out = {"forks": _execute._can_fork()}

        def progress(p):
            if p.stage == "statistics" and p.done >= 2:
                cancel.set()

        try:
            matcher.run(compare="levels", progress=progress, cancel=cancel)
            out["cancelled"] = False
        except SkyMatchCancelled as error:
            out["cancelled"] = "statistics stage" in str(error)
        cancel.clear()
        serial = SkyMatcher(m.images, m.wcs, scheduler="serial").run(compare="levels")
        again = matcher.run(compare="levels", cancel=cancel)
        out["same"] = bool(np.array_equal(again.sky, serial.sky)
                           and np.array_equal(again.sky_err, serial.sky_err))
        print(json.dumps(out))
    """)
    assert found == {"forks": True, "cancelled": True, "same": True}


def test_the_task_pipe_hands_out_every_task_once_in_order():
    # more than a default pipe holds; more than any pipe may hold (then all run here)
    for order in ([5, 0, 70_000, 3, *range(10, 40_000)], list(range(400_000, 0, -1))):
        tasks = _fork._TaskPipe(order)
        try:
            taken = list(iter(tasks.take, None))
        finally:
            tasks.close()
        assert taken == order


@linux_only
def test_a_childs_large_result_does_not_wait_for_this_process_to_read_it():
    # a result over a default pipe's 64 KiB: the child goes on to its next task while this
    # process is busy with a long one (the pipe is widened, `_fork._widen`)
    found = run_fresh("""
        import json, os, time
        import numpy as np
        from skymatch_nb_ui.engine import _fork

        parent = os.getpid()

        def task(k):
            if os.getpid() == parent:
                time.sleep(1.0)  # this process's one long task
                return None
            time.sleep(0.05)
            return (time.monotonic(), np.full(12_000, float(k)))  # 96 KB

        got = {}
        start = time.monotonic()
        _fork.fork_map(task, [(k,) for k in range(8)], range(8), 2,
                       on_result=got.__setitem__, check=lambda: None)
        child = [v for v in got.values() if v is not None]
        print(json.dumps({
            "all": sorted(got) == list(range(8)),
            "values": all(float(v[1][0]) == k for k, v in got.items() if v is not None),
            "children_tasks": len(child),
            "child_done_before_ours": max(v[0] for v in child) - start < 0.9,
        }))
    """)
    assert found == {"all": True, "values": True, "children_tasks": 7,
                     "child_done_before_ours": True}


@linux_only
def test_no_garbage_collection_while_forked_children_share_the_pages():
    # a full collection writes to every object: each page it touches while a child shares it
    # is copied (N = 256 planes: 0.05-0.07 s, in both processes); the caller's state is kept
    found = run_fresh("""
        import gc, json
        from skymatch_nb_ui.engine._fork import fork_map

        seen = {}

        def keep(k, value):
            seen[k] = value

        def task(k):
            if k == 99:
                raise ValueError("a task that fails")
            return gc.isenabled()

        fork_map(task, [(k,) for k in range(6)], range(6), 2, on_result=keep, check=lambda: None)
        after = gc.isenabled()
        try:
            fork_map(task, [(99,), (1,)], [0, 1], 2, on_result=keep, check=lambda: None)
        except ValueError:
            pass
        after_error = gc.isenabled()
        gc.disable()
        fork_map(task, [(k,) for k in range(4)], range(4), 2, on_result=keep, check=lambda: None)
        print(json.dumps({"during": sorted(set(seen.values())), "tasks": len(seen), "after": after,
                          "after_error": after_error, "left_off": not gc.isenabled()}))
    """)
    assert found == {"during": [False], "tasks": 6, "after": True, "after_error": True,
                     "left_off": True}


@linux_only
def test_a_collecting_child_leaves_the_objects_it_shares_with_this_process_alone():
    # long tasks (written copies) collect their garbage: their collections must not visit what
    # they inherited (writing to each object would copy every page shared with this process)
    found = run_fresh("""
        import gc, json, os, tempfile, time
        from skymatch_nb_ui.engine._fork import fork_map

        inherited = [[k] for k in range(200_000)]  # tracked objects made here
        seen = {}
        parent, marker = os.getpid(), tempfile.mktemp()

        def task(k):
            if os.getpid() != parent:
                open(marker, "w").close()
            garbage = [[] for _ in range(1000)]
            for a, b in zip(garbage, garbage[1:]):
                a.append(b)
                b.append(a)  # cycles for the collector
            del garbage
            gc.collect()
            return os.getpid() != parent, len(gc.get_objects())

        def child_started():  # this process takes tasks once the child has taken one
            deadline = time.monotonic() + 60
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.01)

        fork_map(task, [(k,) for k in range(8)], range(8), 2, on_result=seen.__setitem__,
                 check=lambda: None, pause_gc=False, meanwhile=child_started)
        os.remove(marker)
        print(json.dumps({"here": len(gc.get_objects()), "tasks": len(seen),
                          "child": [n for forked, n in seen.values() if forked]}))
    """)
    assert found["tasks"] == 8 and found["here"] > 200_000 and found["child"]
    assert max(found["child"]) < 50_000  # a child's collections see only its own objects


@linux_only
def test_the_geometry_of_many_images_is_computed_in_forked_workers_too():
    found = run_fresh(prelude=SPY, code="""
        import json, numpy as np
        from skymatch_nb_ui import SkyMatcher
        from skymatch_nb_ui.engine._execute import GEOMETRY_FORK_FROM
        from skymatch_nb_ui.engine.geometry import mosaic_geometry
        from skymatch_nb_ui.testing import make_mosaic

        m = make_mosaic((12, 11), shape=(40, 36), noise=1.0, rotation=5, jitter=2, seed=3)
        assert len(m.images) >= GEOMETRY_FORK_FROM
        events = []
        matcher = SkyMatcher(m.images, m.wcs, scheduler="processes", workers=2)
        result = matcher.run(skystat="mean", progress=events.append)
        forked = matcher.geometry
        alone = mosaic_geometry(matcher._wcs, matcher._shapes)
        same = list(forked.runs) == list(alone.runs) and all(
            np.array_equal(getattr(forked.runs[k], f), getattr(alone.runs[k], f))
            for k in alone.runs for f in ("rows", "start", "stop"))
        serial = SkyMatcher(m.images, m.wcs, scheduler="serial").run(skystat="mean")
        geometry = [(e.done, e.total) for e in events if e.stage == "geometry"]
        print(json.dumps({
            "forked": stages[:1],
            "same_runs": same,
            "same_sky": np.array_equal(result.sky, serial.sky),
            "progress": [d for d, _ in geometry] == sorted(d for d, _ in geometry)
                        and {t for _, t in geometry} == {2 * len(m.images)}
                        and geometry[-1][0] == 2 * len(m.images),
        }))
    """)
    assert found == {"forked": ["overlap_runs"], "same_runs": True, "same_sky": True,
                     "progress": True}


@linux_only
def test_a_single_task_is_shared_when_there_is_work_meanwhile():
    found = run_fresh("""
        import json, os, time
        from skymatch_nb_ui.engine import _fork

        parent = os.getpid()
        got, done = {}, []

        def where(k):
            return (k, os.getpid() != parent)

        def meanwhile():
            time.sleep(0.2)  # the child takes the task meanwhile
            done.append(True)

        _fork.fork_map(where, [(7,)], [0], 2, on_result=got.__setitem__, check=lambda: None,
                       meanwhile=meanwhile)
        alone = {}
        _fork.fork_map(where, [(7,)], [0], 2, on_result=alone.__setitem__, check=lambda: None)
        print(json.dumps({"shared": got == {0: (7, True)} and done == [True],
                          "alone": alone == {0: (7, False)}}))
    """)
    assert found == {"shared": True, "alone": True}


@linux_only
def test_plane_maps_of_many_images_come_from_a_worker_beside_the_layout():
    found = run_fresh(prelude=SPY, code="""
        import json, numpy as np
        from skymatch_nb_ui import SkyMatcher
        from skymatch_nb_ui.testing import make_mosaic

        out = {}
        # every pair of inputs gets cells (the worker's maps are kept), then 20 too small
        # (they are not: the layout lists fewer pairs)
        for name, shape, overlap in (("all", (128, 128), 0.35), ("some", (100, 90), 0.3)):
            m = make_mosaic((12, 11), shape=shape, overlap=overlap, noise=1.0, gradient=2.0,
                            rotation=3, jitter=2, seed=3)
            options = dict(skymodel="plane", compare="differences", skystat="mean")
            serial = SkyMatcher(m.images, m.wcs, scheduler="serial")
            a = serial.run(**options)
            stages.clear()
            forked = SkyMatcher(m.images, m.wcs, scheduler="processes", workers=2)
            kept = []
            fill = forked._fill_maps
            forked._fill_maps = lambda pairs: kept.append(len(forked._maps)) or fill(pairs)
            b = forked.run(**options)
            same_maps = serial._maps.keys() == forked._maps.keys() and all(
                np.array_equal(serial._maps[k].bx, forked._maps[k].bx)
                and np.array_equal(serial._maps[k].by, forked._maps[k].by)
                for k in serial._maps)
            out[name] = {
                "stages": stages[:2],
                "kept": kept[0] > 0,
                "same_maps": same_maps,
                "same": all(np.array_equal(getattr(a, n), getattr(b, n), equal_nan=True)
                            for n in ("sky", "sky_err", "valid"))
                        and all(np.array_equal(getattr(a.plane, n), getattr(b.plane, n),
                                               equal_nan=True)
                                for n in ("slope_x", "slope_y", "cov")),
            }
        print(json.dumps(out))
    """)
    for name, kept in (("all", True), ("some", False)):
        assert found[name] == {"stages": ["overlap_runs", "maps"], "kept": kept,
                               "same_maps": True, "same": True}, (name, found)


#: For `run_fresh` scripts about copies: ``progress`` wraps the files written, ``taken``
#: lists those it was asked for.
PROGRESS = """
taken = []
def progress(items):
    for item in items:
        taken.append(item)
        yield item
"""


def copies_prelude(folder) -> str:
    """For `run_fresh` scripts about copies: 12 FITS files in ``folder`` (``paths``), their
    collection ``coll``, ``solve(scheduler)`` to solve it (``result``), ``forks`` counting
    the forks from then on."""
    return textwrap.dedent(f"""
        import json, os, threading
        from pathlib import Path
        import numpy as np
        from astropy.io import fits
        from skymatch_nb_ui import ImageCollection
        from skymatch_nb_ui.engine import _fork
        from skymatch_nb_ui.testing import make_mosaic

        m = make_mosaic((3, 4), shape=(40, 50), noise=1.0, seed=3)
        folder = Path({str(folder)!r})
        paths = []
        for k, (image, wcs) in enumerate(zip(m.images, m.wcs)):
            paths.append(folder / f"in{{k:02d}}.fits")
            fits.PrimaryHDU(image, wcs.to_header()).writeto(paths[-1])
        coll = ImageCollection.from_files(paths)
        forks = []

        def solve(scheduler):  # (files on "processes": a pool, whose threads forbid forks)
            coll.scheduler, coll.workers = scheduler, 1 if scheduler == "serial" else 2
            found = coll.skymatch()
            coll.scheduler, coll.workers = "processes", 2
            original = _fork.os.fork
            def counted():
                forks.append(1)
                return original()
            _fork.os.fork = counted
            return found
    """)


@linux_only
def test_copies_of_many_files_are_written_by_forked_workers_as_by_one_process(tmp_path):
    # `write_copies`: each file by one of two processes, the files those of a serial write
    # (headers and data), every one written, no temporary file left, a progress bar to the
    # end, the collector running in every process (a JWST copy leaves cycles behind)
    found = run_fresh(prelude=copies_prelude(tmp_path) + PROGRESS, code="""
        import gc
        import skymatch_nb_ui.io as package_io

        coll.scheduler, coll.workers = "serial", 1
        result = coll.skymatch()
        coll.write_copies(folder / "one", result)
        result = solve("serial")
        original_copy = package_io.write_copy
        def spied(*args, **kwargs):
            with open(folder / f"gc-{os.getpid()}.txt", "a") as log:
                log.write(f"{gc.isenabled()}\\n")
            return original_copy(*args, **kwargs)
        package_io.write_copy = spied
        written = coll.write_copies(folder / "two", result, progress=progress)
        same = []
        for path in written:
            with fits.open(path) as a, fits.open(folder / "one" / path.name) as b:
                same.append(a[0].header.tostring() == b[0].header.tostring()
                            and np.array_equal(a[0].data, b[0].data))
        logs = [p.read_text().split() for p in folder.glob("gc-*.txt")]
        print(json.dumps(dict(forks=len(forks), same=same, names=sorted(os.listdir(folder / "two")),
                              taken=len(taken), files=len(paths), logs=logs)))
    """)
    assert len(found["logs"]) == 2 and all(v == "True" for log in found["logs"] for v in log)
    assert found["forks"] == 1
    assert len(found["same"]) == found["files"] == found["taken"] == 12 and all(found["same"])
    assert found["names"] == [f"in{k:02d}.fits" for k in range(12)]  # no temporary file left


@linux_only
def test_the_commands_progress_bars_leave_the_engine_free_to_fork():
    # tqdm's monitor thread would make forking unsafe: the command's bars start none
    pytest.importorskip("tqdm")
    found = run_fresh("""
        import io, json
        from skymatch_nb_ui import cli
        from skymatch_nb_ui.engine import _execute
        bar = cli._progress_bar(3)
        list(bar(range(3)))
        cli._tqdm()(total=2, file=io.StringIO()).update(1)
        print(json.dumps(dict(can_fork=_execute._can_fork())))
    """)
    assert found["can_fork"]


@linux_only
def test_a_copy_that_fails_in_a_forked_worker_is_raised_here_and_names_its_file(tmp_path):
    found = run_fresh(prelude=copies_prelude(tmp_path), code="""
        result = solve("serial")
        paths[5].write_bytes(paths[5].read_bytes()[:2880])  # its pixels gone (truncated)
        try:
            coll.write_copies(folder / "out", result)
            message = None
        except OSError as error:
            message = str(error)
        left = [n for n in os.listdir(folder / "out") if n.startswith(".tmp")]
        print(json.dumps(dict(message=message, left=left, forks=len(forks))))
    """)
    assert found["forks"] == 1
    assert found["message"] and "in05.fits" in found["message"] and "truncated" in found["message"]
    assert found["left"] == []  # the failed file's temporary copy removed


@linux_only
def test_a_copy_worker_killed_mid_file_leaves_no_temporary_file(tmp_path):
    # this process fails on its first file while a worker is still writing one: the worker
    # is killed, and its temporary file must not outlive the call
    found = run_fresh(prelude=copies_prelude(tmp_path), code="""
        import time
        import skymatch_nb_ui.io as package_io
        from skymatch_nb_ui.io._temp import temp_prefix

        result = solve("serial")
        here = os.getpid()

        def write_copy(images, target, **options):
            if os.getpid() != here:  # a worker: half a file, then a long wait
                (Path(target).parent / (temp_prefix() + "-" + Path(target).name)).write_bytes(b"x")
                time.sleep(60)
            time.sleep(0.5)
            raise OSError("disk full")

        package_io.write_copy = write_copy
        try:
            coll.write_copies(folder / "out", result)
            message = None
        except OSError as error:
            message = str(error)
        print(json.dumps(dict(message=message, left=sorted(os.listdir(folder / "out")),
                              forks=len(forks))))
    """)
    assert found["forks"] == 1
    assert found["message"] == "disk full"
    assert found["left"] == []


@linux_only
def test_the_command_releases_the_worker_pool_before_writing_copies(tmp_path):
    # a pool's threads forbid forking: the command, done with the pool, shuts it down so
    # that its copies are written by forked workers
    found = run_fresh(prelude=copies_prelude(tmp_path), code="""
        from skymatch_nb_ui import cli

        result = solve("processes")  # files: the pool of worker processes
        pool_threads = threading.active_count() > 1
        targets = coll.copy_targets(folder / "out")
        cli._write_copies(coll, result, targets, subtract=True, overwrite=False, quiet=True)
        print(json.dumps(dict(pool_threads=pool_threads, forks=len(forks),
                              written=len(list((folder / "out").iterdir())))))
    """)
    assert found["pool_threads"] and found["forks"] == 1 and found["written"] == 12


# -- files read by forked workers ----------------------------------------------------------
@pytest.fixture(scope="module")
def files_of_every_kind(tmp_path_factory):
    """20 input files: HST with lookup tables and without (SIP alone), JWST with its gwcs,
    Roman and plain FITS; every one read by its own rules."""
    from astropy.io import fits

    from skymatch_nb_ui.testing import make_mosaic, nircam_like_gwcs
    from skymatch_nb_ui.testing.instruments import write_hst_flt, write_jwst_cal, write_roman_cal

    folder = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(5)
    paths = []
    for k in range(8):
        chips = [rng.normal(100, 1, (64, 96)).astype(np.float32) for _ in range(2)]
        paths.append(write_hst_flt(folder / f"j9am0{k}q_flt.fits", chips, rootname=f"j9am0{k}q",
                                   offset=(k, 2 * k), lookup=k % 2 == 0))
    for kind, count in (("jwst", 4), ("roman", 2)):
        for k in range(count):
            gwcs = nircam_like_gwcs((150 + k / 3600, 2 - k / 7200), roll=k, shape=(64, 64))
            image = rng.normal(50, 1, (64, 64)).astype(np.float32)
            if kind == "jwst":
                paths.append(write_jwst_cal(folder / f"jw{k}_cal.fits", image, gwcs))
            else:
                paths.append(write_roman_cal(folder / f"r{k}_wfi01_cal.asdf", image, gwcs,
                                             observation_id=f"r0000101001001001001_000{k + 1}"))
    mosaic = make_mosaic((2, 4), shape=(40, 50), seed=2)
    for k, (image, wcs) in enumerate(zip(mosaic.images, mosaic.wcs)):
        paths.append(folder / f"plain{k}.fits")
        fits.PrimaryHDU(image, wcs.to_header()).writeto(paths[-1])
    return paths


#: For `run_fresh` scripts about reading: ``same(a, b)`` compares two lists of records (their
#: fields, the values of their WCS both ways on a grid, bit for bit); ``forks`` counts forks.
READ_PRELUDE = """
import dataclasses, json, os, warnings
from pathlib import Path
import numpy as np
from skymatch_nb_ui import io
from skymatch_nb_ui.engine import _fork

def same(first, second):
    if len(first) != len(second):
        return False
    for a, b in zip(first, second):
        if type(a) is not type(b) or type(a.wcs) is not type(b.wcs):
            return False
        for field in dataclasses.fields(a):
            if field.name != "wcs" and repr(getattr(a, field.name)) != repr(getattr(b, field.name)):
                return False
        ny, nx = a.shape
        y, x = np.mgrid[-2:ny + 2:3.7, -2:nx + 2:4.3]
        world = a.wcs.pixel_to_world_values(x.ravel(), y.ravel())
        if not all(np.array_equal(p, q, equal_nan=True)
                   for p, q in zip(world, b.wcs.pixel_to_world_values(x.ravel(), y.ravel()))):
            return False
        if not all(np.array_equal(p, q, equal_nan=True)
                   for p, q in zip(a.wcs.world_to_pixel_values(*world), b.wcs.world_to_pixel_values(*world))):
            return False
    return True

forks = []
original_fork = _fork.os.fork
def counted():
    forks.append(1)
    return original_fork()
_fork.os.fork = counted
"""


@linux_only
def test_many_files_are_read_by_forked_workers_with_the_records_of_a_serial_read(files_of_every_kind):
    # every kind of record, in order, WCS values bit for bit: an astropy WCS would not
    # survive a pickle so (SIP and reference values change in their last bits)
    paths = [str(p) for p in files_of_every_kind]
    found = run_fresh(prelude=READ_PRELUDE, code=f"""
        from skymatch_nb_ui import ImageCollection
        paths = {paths!r}
        serial = io.open_images(paths)
        forked = io.open_images(paths, scheduler="processes", workers=2)
        forks_read = len(forks)
        coll = ImageCollection.from_files(paths, scheduler="processes", workers=2)
        import pickle
        from skymatch_nb_ui.io._fits import portable
        sent = [pickle.loads(pickle.dumps(portable(r))) for r in serial]  # none falls back here
        print(json.dumps(dict(forks=forks_read, same=same(serial, forked), count=len(serial),
                              kinds=sorted({{r.kind for r in forked}}),
                              tables=sum(r.wcs.cpdis1 is not None for r in forked if r.kind == "hst"),
                              collection=same(serial, [s.image for s in coll._sources]),
                              settings=[coll.scheduler, coll.workers], all_forks=len(forks))))
    """)
    assert found["forks"] == 1 and found["all_forks"] == 2
    assert found["same"] and found["collection"]
    assert found["count"] == len(paths) + 8  # the HST files' two chips
    assert "hst" in found["kinds"] and "fits" in found["kinds"] and found["tables"] == 8
    assert found["settings"] == ["processes", 2]


@linux_only
def test_a_forked_read_raises_the_warnings_and_the_first_error_of_a_serial_read(files_of_every_kind):
    # file 14 fails at once in a worker while file 3 fails late here: the error raised is
    # still file 3's, as one process reading them in order would raise; every worker's
    # warning is raised here; no worker is left behind
    paths = [str(p) for p in files_of_every_kind]
    found = run_fresh(prelude=READ_PRELUDE, code=f"""
        import time
        from skymatch_nb_ui.io import _open
        paths = {paths!r}
        original = _open._open_fits
        def warned(path, *args, **kwargs):
            warnings.warn(f"read {{Path(path).name}}", UserWarning)
            return original(path, *args, **kwargs)
        _open._open_fits = warned
        runs = {{}}
        for scheduler in ("serial", "processes"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                io.open_images(paths, scheduler=scheduler, workers=2)
            runs[scheduler] = sorted(str(w.message) for w in caught if w.category is UserWarning)

        def failing(path, *args, **kwargs):
            name = Path(path).name
            if name == Path(paths[3]).name:
                time.sleep(1.0)
                raise ValueError(f"cannot read FITS file {{name}}")
            if name == Path(paths[14]).name:
                raise ValueError(f"cannot read FITS file {{name}}")
            return original(path, *args, **kwargs)
        _open._open_fits = failing
        errors = {{}}
        for scheduler in ("serial", "processes"):
            try:
                io.open_images(paths, scheduler=scheduler, workers=2)
            except ValueError as error:
                errors[scheduler] = str(error)
        _fork.reap()
        print(json.dumps(dict(runs=runs, errors=errors, forks=len(forks), left=len(_fork._UNREAPED))))
    """)
    assert found["forks"] == 2
    fits_files = sorted(f"read {p.name}" for p in files_of_every_kind if not p.name.endswith(".asdf"))
    assert found["runs"]["serial"] == found["runs"]["processes"] == fits_files
    name = files_of_every_kind[3].name
    expected = f"cannot read FITS file {name}"
    assert found["errors"] == {"serial": expected, "processes": expected}
    assert found["left"] == 0


#: ... as in a Jupyter kernel, where another thread runs (no fork); ``pools`` lists the
#: workers of each `_execute._process_pool` asked for.
KERNEL_PRELUDE = """
import threading
from skymatch_nb_ui.engine import _execute

threading.Thread(target=threading.Event().wait, daemon=True).start()
pools = []
original_pool = _execute._process_pool
def counted_pool(workers):
    pools.append(workers)
    return original_pool(workers)
_execute._process_pool = counted_pool
"""


@linux_only
def test_where_it_cannot_fork_many_files_with_a_gwcs_are_read_by_the_pool_as_by_one_process(
        files_of_every_kind, tmp_path):
    # a thread runs, as in a Jupyter kernel: no fork, but the pool's worker processes read
    # the files after the first (a JWST file: a gwcs), every record as a serial read's, and
    # a file that cannot be read is named as one process would name it
    first = [p for p in files_of_every_kind if p.name.startswith("jw")]
    paths = [str(p) for p in first + [p for p in files_of_every_kind if p not in first]]
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"garbage" * 400)
    found = run_fresh(prelude=READ_PRELUDE + KERNEL_PRELUDE, code=f"""
        from skymatch_nb_ui.io import _open
        paths = {paths!r}
        _open.READ_POOL_FROM = 4
        serial = io.open_images(paths)
        pooled = io.open_images(paths, scheduler="processes", workers=2)
        plain = io.open_images(paths[{len(first)}:], scheduler="processes", workers=2)
        errors = []
        for scheduler in ("serial", "processes"):
            try:
                io.open_images(paths[:6] + [{str(broken)!r}] + paths[6:], scheduler=scheduler, workers=2)
            except (OSError, ValueError) as error:
                errors.append(str(error))
        print(json.dumps(dict(pools=pools, forks=len(forks), same=same(serial, pooled),
                              count=len(pooled), errors=errors,
                              plain=same(serial[{len(first)}:], plain))))
    """)
    assert found["forks"] == 0 and found["pools"] == [2, 2]  # not for files without a gwcs
    assert found["same"] and found["plain"] and found["count"] == len(paths) + 8
    assert len(found["errors"]) == 2 and found["errors"][0] == found["errors"][1]
    assert "broken.fits" in found["errors"][0]


def pooled_copies_prelude(paths: list, folder) -> str:
    """For `run_fresh` scripts about the pool's copies, where a thread runs (no fork):
    ``coll`` of ``paths`` matched in this process (``result``), ``folder``, the pool from 2
    files on, ``pools`` and ``forks`` counted."""
    return READ_PRELUDE + KERNEL_PRELUDE + textwrap.dedent(f"""
        from skymatch_nb_ui import ImageCollection, collection
        collection.COPY_POOL_FROM = 2
        folder = Path({str(folder)!r})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (JWST's and Roman's units differ)
            coll = ImageCollection.from_files({paths!r}, scheduler="serial", workers=1)
            result = coll.skymatch()
    """)


@linux_only
def test_where_it_cannot_fork_a_pool_worker_killed_mid_read_leaves_the_files_read_here(
        files_of_every_kind, tmp_path):
    # a thread runs, as in a Jupyter kernel: the pool reads the files after the first, and
    # the worker reading the third is killed in the middle of it (out of memory, say): the
    # files the broken pool did not read are read here, every record as a serial read's
    first = [p for p in files_of_every_kind if p.name.startswith("jw")]
    paths = [str(p) for p in first + [p for p in files_of_every_kind if p not in first]]
    (tmp_path / "dying_read.py").write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from skymatch_nb_ui.io._open import _read_sent

        def read_sent(file, *args):
            if Path(file).name == {Path(paths[2]).name!r}:  # signal, then wait to be killed
                Path({str(tmp_path / "reading")!r}).write_text(str(os.getpid()))
                time.sleep(60)
            return _read_sent(file, *args)
    """))
    found = run_fresh(prelude=READ_PRELUDE + KERNEL_PRELUDE, code=f"""
        import signal, sys, threading, time
        sys.path.insert(0, {str(tmp_path)!r})
        import dying_read
        from skymatch_nb_ui.io import _open
        paths = {paths!r}
        _open.READ_POOL_FROM = 4
        serial = io.open_images(paths)
        _open._read_sent = dying_read.read_sent  # (the pool's workers take it from `dying_read`)
        marker = Path({str(tmp_path / "reading")!r})
        killed = []

        def kill_the_reader():
            deadline = time.monotonic() + 120
            while not killed and time.monotonic() < deadline:
                if marker.exists() and marker.read_text():
                    os.kill(int(marker.read_text()), signal.SIGKILL)
                    killed.append(True)
                time.sleep(0.005)

        threading.Thread(target=kill_the_reader, daemon=True).start()
        pooled = io.open_images(paths, scheduler="processes", workers=2)
        _open._read_sent = dying_read._read_sent
        again = io.open_images(paths, scheduler="processes", workers=2)
        print(json.dumps(dict(pools=pools, forks=len(forks), killed=killed, count=len(pooled),
                              same=same(serial, pooled), again=same(serial, again))))
    """)
    assert found["forks"] == 0 and found["pools"] == [2, 2]
    assert found["killed"]
    assert found["same"] and found["count"] == len(paths) + 8 and found["again"]


#: For `run_fresh` scripts: ``same_copies(written, folder)``, per file written, whether its
#: data and recorded sky equal those of the file of its name in ``folder`` (JWST or Roman).
SAME_COPIES = """
import asdf
from astropy.io import fits

def _content(path):
    if path.suffix == ".asdf":
        with asdf.open(path) as f:
            return np.array(f["roman"]["data"]), repr(dict(f["roman"]["meta"]["background"]))
    with fits.open(path) as hdul:
        keys = [hdul[0].header.get(k) for k in ("BKGLEVEL", "BKGSUB", "BKGMETH", "S_SKYMAT")]
        return np.array(hdul["SCI"].data), repr(keys)

def same_copies(written, folder):
    same = []
    for path in written:
        (a, keys_a), (b, keys_b) = _content(path), _content(folder / path.name)
        same.append(np.array_equal(a, b) and keys_a == keys_b and "None" not in keys_a)
    return same
"""


@linux_only
def test_where_it_cannot_fork_jwst_and_roman_copies_are_written_by_the_pool_as_by_one_process(
        files_of_every_kind, tmp_path):
    # a thread runs, as in a Jupyter kernel: the copies of files written through their
    # pipeline's library go to the pool's worker processes, each one the copy one process
    # writes (data and the recorded sky), the progress bar to the end
    paths = [str(p) for p in files_of_every_kind if p.name.startswith(("jw", "r"))]
    found = run_fresh(prelude=pooled_copies_prelude(paths, tmp_path) + PROGRESS + SAME_COPIES, code="""
        coll.write_copies(folder / "one", result)
        coll.scheduler, coll.workers = "processes", 2
        written = coll.write_copies(folder / "two", result, progress=progress)

        same = same_copies(written, folder / "one")
        names = sorted(os.listdir(folder / "two")) == sorted(os.listdir(folder / "one"))
        print(json.dumps(dict(pools=pools, forks=len(forks), same=same, taken=len(taken), names=names)))
    """)
    assert found["forks"] == 0 and found["pools"] == [2]
    assert len(found["same"]) == len(paths) == found["taken"] and all(found["same"])
    assert found["names"]  # and no temporary file left


@linux_only
def test_where_it_cannot_fork_a_copy_that_fails_in_the_pool_is_raised_here_and_leaves_nothing(
        files_of_every_kind, tmp_path):
    # a thread runs, as in a Jupyter kernel: the pool writes the copies; one file gone
    # since it was read fails in its worker: its error here, naming it, the files not yet
    # started not written, no temporary file left
    paths = [str(p) for p in files_of_every_kind if p.name.startswith(("jw", "r"))]
    gone = Path(tmp_path / "gone" / Path(paths[1]).name)
    gone.parent.mkdir()
    gone.write_bytes(Path(paths[1]).read_bytes())
    paths[1] = str(gone)
    found = run_fresh(prelude=pooled_copies_prelude(paths, tmp_path), code=f"""
        Path({str(gone)!r}).unlink()
        coll.scheduler, coll.workers = "processes", 2
        try:
            coll.write_copies(folder / "out", result)
            message = None
        except Exception as error:
            message = f"{{type(error).__name__}}: {{error}}"
        left = [n for n in os.listdir(folder / "out") if n.startswith(".tmp")]
        print(json.dumps(dict(pools=pools, forks=len(forks), message=message, left=left,
                              written=sorted(os.listdir(folder / "out")))))
    """)
    assert found["forks"] == 0 and found["pools"] == [2]
    assert found["message"] and Path(paths[1]).name in found["message"]
    assert found["left"] == []
    assert found["written"] and Path(paths[1]).name not in found["written"]


@linux_only
def test_where_it_cannot_fork_a_pool_worker_killed_mid_copy_leaves_every_copy_whole(
        files_of_every_kind, tmp_path):
    # a thread runs, as in a Jupyter kernel: the pool writes the copies, and the worker
    # writing the second file is killed in the middle of it (out of memory, say), which
    # ends the pool: the files it had not finished are written here, as forked workers'
    # are; every copy is the one a single process writes, no temporary file outlives the
    # call, and the next call starts a new pool
    paths = [str(p) for p in files_of_every_kind if p.name.startswith(("jw", "r"))]
    dies = Path(paths[1]).name
    (tmp_path / "dying.py").write_text(textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from skymatch_nb_ui.io import write_copy as real_write_copy
        from skymatch_nb_ui.io._temp import temp_prefix

        def write_copy(images, target, **options):
            if Path(target).name == {dies!r} and os.getpid() != {{here}}:  # a worker: half a file
                (Path(target).parent / (temp_prefix() + "-" + Path(target).name)).write_bytes(b"x")
                time.sleep(60)
            return real_write_copy(images, target, **options)
    """))
    found = run_fresh(prelude=pooled_copies_prelude(paths, tmp_path) + PROGRESS + SAME_COPIES, code=f"""
        import signal, sys, threading, time
        dying_py = Path({str(tmp_path / "dying.py")!r})
        dying_py.write_text(dying_py.read_text().replace("{{here}}", str(os.getpid())))
        sys.path.insert(0, str(dying_py.parent))
        import dying
        from skymatch_nb_ui.io._temp import _PATTERN

        coll.write_copies(folder / "one", result)  # one process: what each copy must be
        io.write_copy = dying.write_copy  # (the pool's workers take it from `dying`)
        out = folder / "out"
        killed = []

        def kill_the_writer():  # the worker whose temporary file appears
            deadline = time.monotonic() + 120
            while not killed and time.monotonic() < deadline:
                for name in os.listdir(out) if out.is_dir() else []:
                    found = _PATTERN.match(name)
                    if found and name.endswith({dies!r}):
                        os.kill(int(found["pid"]), signal.SIGKILL)
                        killed.append(name)
                time.sleep(0.005)

        threading.Thread(target=kill_the_writer, daemon=True).start()
        coll.scheduler, coll.workers = "processes", 2
        written = coll.write_copies(out, result, progress=progress)

        same = same_copies(written, folder / "one")
        left = sorted(os.listdir(out))
        io.write_copy = dying.real_write_copy
        again = coll.write_copies(folder / "again", result)
        print(json.dumps(dict(pools=pools, forks=len(forks), killed=killed, same=same,
                              taken=len(taken), left=left, one=sorted(os.listdir(folder / "one")),
                              again=sorted(os.listdir(folder / "again")))))
    """)
    assert found["forks"] == 0 and found["pools"] == [2, 2]
    assert found["killed"]  # (the worker was writing the second file)
    assert len(found["same"]) == len(paths) == found["taken"] and all(found["same"])
    assert found["left"] == found["one"] == found["again"]  # and no temporary file
