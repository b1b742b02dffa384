"""Where the statistics tasks run (here, threads, local processes, a Dask cluster), with progress.

Stage 2 splits into independent tasks (`measure.measure_batch`: the statistics of a few
images, each read by its loader when the task runs).  They run

- here, one after the other: ``scheduler="serial"`` (or one worker);
- on threads: ``"threads"`` (no set-up, images shared, but numpy calls of 10-30 us hand the
  GIL back and forth: a second thread gains 10-30%);
- in local worker processes: ``"processes"`` (a pool kept for the life of the Python process,
  its workers started from a fork server, each importing the engine once; each worker reads
  its images from their files: a loader travels as a path and HDU numbers, never as pixels;
  what a worker decompresses it keeps for the run's next tasks, `WORKER_CONTEXTS`).
  Images in memory are not copied to a pool when it can be avoided: on Linux, when no other
  thread runs (a script, not a Jupyter kernel), ``workers - 1`` processes are forked for the
  run and share this process's memory, and this process works too (`_fork`);
- on a Dask cluster: a ``distributed.Client``, or the address of its scheduler
  (``"tcp://host:8786"``, connected to for each run); workers need this package and the
  files at the same paths (``pip install skymatch-nb-ui[dask]`` on the client).  A task's
  arguments (its images' overlaps, never pixels) are scattered to a worker just before it,
  so that no log of the client or the scheduler keeps a copy (`_submit_scattered`).

``"auto"`` (the default) takes worker processes when the images come from files and there is
enough to measure to pay for the workers' start (about 3 x 10^8 pixels), forked workers for
images in memory when forking is safe and there is enough to measure (`FORK_FROM`), and
runs everything else here: images in memory would otherwise have to be copied into every
process that measures them, and threads lose to one process (`Execution.kind` has the
figures).  Nothing here needs Dask unless a cluster is asked for.

Which of them runs a task never changes its result: a task is a pure function of its
arguments, and the results are put back in task order, so every scheduler gives the same
numbers, bit for bit.

A run reports its progress through a callback of `Progress` values and can be cancelled by
setting a ``threading.Event`` (any object with ``is_set()``): between tasks the run stops with
`SkyMatchCancelled`; the results of the tasks that finished are kept (the next run starts
from them), the others are dropped.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

from ._fork import fork_map, fork_safe
from .exceptions import SkyMatchCancelled

__all__ = ["SCHEDULERS", "Execution", "Progress", "check_scheduler", "default_workers"]

#: The schedulers named by a string (a Dask scheduler's address is a string too).
SCHEDULERS = ("auto", "serial", "threads", "processes")

#: Pixels to measure in files from which "auto" starts worker processes (~3 s of work here:
#: twice their start-up), or uses them when they run already.
PROCESSES_FROM = 300_000_000
PROCESSES_WARM_FROM = 10_000_000
#: ... and pixels of pixel-difference tasks in files from which it does so: 256 x 256 images
#: from files, N = 1,000 (3,807 pairs, 3.0e7 differences; 2026-12-03, load 0.8-1.0, two
#: runs each): the statistics took 5.2-6.0 s serially, 4.2-5.4 s on 2 worker processes (their
#: start included) and 6.6-8.6 s on 2 threads (the many small pairs' Python holds the GIL);
#: N = 100 (3.0e6): 0.65 s serially, 2.1 s on processes.
PROCESSES_DIFFERENCES_FROM = 20_000_000
#: Pixels of pixel-difference tasks from which "auto" runs them on threads: interpolation is
#: gathers and blends that release the GIL (N = 64 nebula mosaic of 1024 x 1024 images, 25M
#: differences, same bits: 2.2-2.4 s on 2 threads against 3.0-3.2 s serially at load ~3.5;
#: 0.72-0.95 s against 0.82-0.89 s in another run at load ~3: a small, noisy gain).
THREADS_FROM = 2_000_000
#: Work of tasks on images in memory from which "auto" forks worker processes for them,
#: when forking is safe (`_fork.fork_safe`): their pixels plus `SET_PIXELS` for each pixel
#: set measured.  N = 64 images of 1024 x 1024 (5.5e7 pixels of overlaps) took 0.70-0.78
#: of the serial time with one forked worker (best of 7, load ~1: 0.285 s against 0.374 s
#: for match, 0.430 s against 0.616 s for global+match); a fork and its copy-on-write faults
#: cost 0.02-0.05 s, so smaller runs of large images stay here.
FORK_FROM = 40_000_000
#: ... the pixels a pixel set counts for, beyond its own: a set's statistic has a fixed cost
#: (~0.4 ms of clipping, histogram, mode and errors whatever its size, against ~3 ns a
#: pixel), and many small sets are work that their pixels do not show.  Each configuration
#: in its own process (a forked run leaves the next run of its process copy-on-write faults
#: to pay), 2026-12-04, load 0.5-1.2, ``compare="levels"``, match, min / median of 10-15,
#: serial against 2 forked workers, the same bits: 256 x 256 images, 6 x 6 (220 sides, 2e6
#: pixels) 0.139 / 0.152 against 0.108 / 0.124 s, 8 x 8 (420, 3.7e6) 0.257 / 0.266 against
#: 0.197 / 0.206 s, 16 x 16 (1,860, 1.5e7; the nebula scene with gradients, the whole run)
#: 1.39 / 1.49 against 0.93 / 1.04 s (planes: 2.26 / 2.50 against 1.69 / 1.83 s); even at
#: 4 x 4 (84, 7e5) and at 5 x 5 of 512 x 512 (144, 4e6); slower at 3 x 3 of 1024 x 1024 (40,
#: 5e6: 0.051 / 0.057 against 0.058 / 0.070 s) and 2 x 2 of 2048 x 2048 (12, 7e6).  (Pairs
#: of pixel differences are not counted: batched, their fixed costs are small.)
SET_PIXELS = 200_000
#: ... and while a core is idle: the load average (1 min) below the cores less this, or the
#: tasks running now (`_running_now`) fewer than that.  On a busy machine a forked worker
#: waits for a core and its copy-on-write faults are pure loss (N = 64, load ~5 on 2 cores:
#: 0.78 s against 0.40 s serially, best of 15).
FORK_IDLE = 0.5
#: `_running_now`: reads of the kernel's count of runnable tasks, and the pause between two.
RUNNING_SAMPLES, RUNNING_PAUSE = 10, 0.001
#: Pixels of pixel-difference tasks on images in memory from which "auto" forks worker
#: processes for them (when forking is safe and a core is idle): forked workers beat threads
#: at every bench size, with the same bits (2026-12-03, load 0.6-0.9, wall min / median of 4,
#: fork against threads against serial: N = 16 of 1024^2, ~6e6 differences: 0.157 / 0.193 s,
#: 0.205 / 0.226 s, 0.270 / 0.294 s; N = 64 of 1024^2, 2.5e7: 0.852 / 0.920 s, 1.155 / 1.199 s,
#: 1.381 / 1.449 s; N = 256 of 256^2, 7e6: 1.223 / 1.404 s, 1.665 / 2.079 s, 1.293 / 1.520 s).
#: Below this a fork and its copy-on-write faults (0.02-0.05 s) would cost more than it saves.
FORK_DIFFERENCES_FROM = 4_000_000

#: Images from which stage 1's overlaps are computed in forked workers too
#: (`Execution.geometry_kind`): N = 256 images of 256 x 256 gained (this process's CPU for
#: stage 1: 0.25-0.30 s one by one, 0.15-0.23 s forked); N = 64 of 1024 x 1024 did not (0.08
#: s either way: fewer overlaps to compute, and larger ones to send back and fault in).
GEOMETRY_FORK_FROM = 128

#: Pixels of the tasks measured together in one batch (`batches_of`; at least `MIN_BATCHES`
#: batches when there are that many tasks: balance on threads or processes).
BATCH_PIXELS = 1 << 21
MIN_BATCHES = 6


#: Seconds between checks of the cancel event while tasks run.
_POLL = 0.05

#: Tasks kept in flight per worker (more wait their turn unserialised).
IN_FLIGHT = 2

_INSTALL_HINT = "pip install 'skymatch-nb-ui[dask]'"


@dataclass(frozen=True)
class Progress:
    """How far a run is: ``done`` of ``total`` units of ``stage``.

    Stages, in order: ``"geometry"`` (two steps per image: its outline, its overlaps),
    ``"statistics"`` (statistics computed: one per image and pixel set), ``"solve"`` (0 then
    1) and, with ``subtract=True``, ``"subtract"`` (images).  A stage with nothing to do (its
    results are cached) is reported once with ``done == total``.
    """

    stage: str
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """``done / total`` (1 when there is nothing to do)."""
        return self.done / self.total if self.total else 1.0


def default_workers() -> int:
    """Workers when none are asked for: the CPU cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def check_scheduler(scheduler: object) -> object:
    """``scheduler`` if it names a way to run tasks, else a TypeError/ValueError that says how.

    Accepted: None (= "auto"), one of `SCHEDULERS`, a Dask scheduler address (a string with
    ``://``, e.g. ``"tcp://127.0.0.1:8786"``), a ``distributed.Client`` or any
    ``concurrent.futures.Executor``.

    Examples
    --------
    >>> check_scheduler(None), check_scheduler("threads")
    ('auto', 'threads')
    >>> check_scheduler("thread")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: scheduler must be one of 'auto', 'serial', 'threads', 'processes', ...; got 'thread'
    """
    if scheduler is None:
        return "auto"
    if isinstance(scheduler, str):
        if scheduler in SCHEDULERS or "://" in scheduler:
            return scheduler
    elif isinstance(scheduler, Executor) or _is_client(scheduler):
        return scheduler
    choices = ", ".join(repr(s) for s in SCHEDULERS)
    message = (
        f"scheduler must be one of {choices}, a Dask scheduler address such as "
        "'tcp://127.0.0.1:8786', a distributed.Client or a concurrent.futures.Executor; "
        f"got {scheduler!r}"
    )
    raise (ValueError if isinstance(scheduler, str) else TypeError)(message)


def _is_client(obj: object) -> bool:
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


class Execution:
    """How one run executes its tasks: the scheduler, and the progress and cancel hooks.

    Parameters
    ----------
    scheduler : str, distributed.Client or concurrent.futures.Executor
        As `check_scheduler` accepts; "auto" is decided per `map` by the tasks' loaders.
    workers : int
        Threads or local processes ("serial" and one worker run here).
    progress : callable, optional
        Called with a `Progress` after each task (and once per stage before any).
    cancel : threading.Event, optional
        Checked before each task is started and while tasks run.
    """

    def __init__(self, scheduler, workers: int, *, progress=None, cancel=None):
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.cancel = cancel
        self._meanwhile: list[Callable[[], object]] = []
        self._token = f"{os.getpid()}:{uuid.uuid4().hex}"  # what its tasks carry (`_in_run`)

    def meanwhile(self, work: Callable[[], object]) -> None:
        """Work the caller needs after the next `map`, independent of its tasks.

        When that map's tasks run in forked workers, this process does ``work()`` while they
        compute (its result must then be kept where the caller looks for it: a cache);
        otherwise it is left to the caller.
        """
        self._meanwhile.append(work)

    # -- hooks ---------------------------------------------------------------------------------
    def report(self, stage: str, done: int, total: int) -> None:
        """Tell the progress callback (if any) where ``stage`` is."""
        if self.progress is not None:
            self.progress(Progress(stage, done, total))

    def check(self, stage: str, done: int = 0, total: int = 0) -> None:
        """Raise `SkyMatchCancelled` if the run was cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            where = f" ({done} of {total} done)" if total else ""
            raise SkyMatchCancelled(
                f"the run was cancelled during the {stage} stage{where}; what finished is "
                "kept, so the next run carries on from there"
            )

    # -- running tasks ---------------------------------------------------------------------------
    def kind(self, files: bool, sizes: Sequence[int], *, gil_free: int = 0,
             forks: bool = False, differences: int = 0, sets: int | None = None) -> str:
        """What runs tasks of ``sizes`` pixels: serial, threads, processes, fork, dask or executor.

        ("executor": a given ``concurrent.futures.Executor``; "fork": worker processes forked
        for this map, `_fork.fork_map`.)  "auto" decides by what paid on a 2-core machine
        (``bench/bench_scale.py``, ``bench/bench_vs_stcal.py``): the pool's worker processes
        cost seconds to start (once per Python process) and the pixels of images in memory
        would have to be copied to them (4 MB per 1024 x 1024 image: 4x slower than one
        process at N = 64), so they serve images read from files when there is much to measure
        (`PROCESSES_FROM` pixels, or `PROCESSES_DIFFERENCES_FROM` of pixel differences, which
        cost more per pixel; or when the pool runs already); images in memory get forked
        workers, which share them, when forking is safe (`_fork.fork_safe`: Linux, no other
        thread running) and there is at least `FORK_FROM` of work while a core is idle
        (`FORK_IDLE`): the pixels, and `SET_PIXELS` for each of the ``sets`` pixel sets the
        tasks measure (sides and images, one per task when not given; many small sets cost
        more than their pixels say); threads lost 5-15% to one process on small and large
        pixel sets alike (the histograms' ``bincount`` holds the GIL), so everything else runs here,
        except pixel differences: ``differences`` pixels of them (at least
        `FORK_DIFFERENCES_FROM`) go to forked workers when forking is safe and a core is idle,
        and else those that gain on threads (``gil_free``: the pixels of pairs measured one at
        a time, at least `THREADS_FROM`; many small pairs measured together lost 25-35% on
        threads) run on threads.  ``"processes"`` asked for with images in memory means forked
        workers whenever forking is safe, else the pool.  "auto" forks only for callers that
        say ``forks`` (tasks measured by the benches that way: the statistics stages).
        """
        s = self.scheduler
        if not isinstance(s, str):
            return "dask" if _is_client(s) else "executor"
        if "://" in s:
            return "dask"
        if self.workers == 1 or len(sizes) <= 1 or s == "serial":
            return "serial"
        if s == "processes" and not files and _can_fork():
            return "fork"
        if s != "auto":
            return s
        total = sum(sizes)
        warm = self.workers in _PROCESSES
        if files and (total >= PROCESSES_FROM or differences >= PROCESSES_DIFFERENCES_FROM
                      or (warm and total >= PROCESSES_WARM_FROM)):
            return "processes"
        work = total + SET_PIXELS * (len(sizes) if sets is None else sets)
        if forks and not files and (work >= FORK_FROM or differences >= FORK_DIFFERENCES_FROM) \
                and _idle_core() and _can_fork():
            return "fork"
        if gil_free >= THREADS_FROM:
            return "threads"
        return "serial"

    def geometry_kind(self, images: int) -> str:
        """What runs stage 1's overlap tasks (one per image, `geometry.overlap_runs`): fork or serial.

        They need the images' WCS only, never their pixels: a forked worker computes half of
        them when the statistics' scheduler would fork (``"processes"`` when forking is safe;
        ``"auto"`` while a core is idle too), from `GEOMETRY_FORK_FROM` images.  A fork and
        its copy-on-write faults cost 0.01-0.03 s, and the worker's overlaps come back
        pickled (their row intervals: ~2 MB per 100 overlaps of 1,000 rows), so a few large
        images stay here.  Threads would gain nothing (pure Python holds the GIL); a pool's or
        a cluster's workers would need every footprint and WCS sent: here.
        """
        s = self.scheduler
        if (not isinstance(s, str) or s not in ("auto", "processes") or self.workers == 1
                or images < GEOMETRY_FORK_FROM):
            return "serial"
        if (s == "processes" or _idle_core()) and _can_fork():
            return "fork"
        return "serial"

    def map(
        self,
        stage: str,
        function: Callable,
        arguments: Sequence[tuple],
        *,
        units: Sequence[int],
        kind: str,
        on_result: Callable[[int, object], None] | None = None,
        order: Sequence[int] | None = None,
        counted: tuple[int, int] | None = None,
    ) -> list:
        """``[function(*args) for args in arguments]``, run by ``kind``.

        ``units[k]`` is what task ``k`` counts for in the progress of ``stage``; ``order`` the
        order in which to start them (e.g. largest first); ``on_result(k, result)`` is called
        here, in the calling thread, as each task finishes (before the next check of the
        cancel event), so that what finished can be kept even when the run is cancelled.
        ``counted = (done, total)``: the progress of ``stage`` before these tasks and with
        them (default: ``(0, sum(units))``).
        """
        done, total = counted if counted is not None else (0, int(sum(units)))
        results: list = [None] * len(arguments)
        if kind != "fork":
            self._meanwhile.clear()
        order = list(range(len(arguments))) if order is None else list(order)
        self.report(stage, done, total)
        if kind == "fork":
            def finished(k: int, result) -> None:
                nonlocal done
                results[k] = result
                done += self._finished(k, result, units, on_result)
                self.report(stage, done, total)

            work, self._meanwhile = self._meanwhile, []
            fork_map(function, arguments, order, self.workers, on_result=finished,
                     check=lambda: self.check(stage, done, total),
                     meanwhile=(lambda: [w() for w in work]) if work else None)
            return results
        if kind == "serial":
            for k in order:
                self.check(stage, done, total)
                results[k] = function(*arguments[k])
                done += self._finished(k, results[k], units, on_result)
                self.report(stage, done, total)
            return results
        with self._submitter(kind) as (submit, cancel_all, slots):
            futures: dict = {}
            waiting = iter(order)
            try:
                # a few tasks per worker in flight, the next submitted as one finishes: the
                # arguments of the others are not serialised (and held) before they can run
                waiter = _Waiter(kind)
                for k in itertools.islice(waiting, slots):
                    waiter.add(future := submit(function, *arguments[k]))
                    futures[future] = k
                left = len(arguments)
                while left:
                    self.check(stage, done, total)
                    finished = waiter.finished()
                    left -= len(finished)
                    for future in sorted(finished, key=futures.__getitem__):
                        k = futures.pop(future)
                        results[k] = _result(future)
                        done += self._finished(k, results[k], units, on_result)
                        for k_next in itertools.islice(waiting, 1):
                            waiter.add(future := submit(function, *arguments[k_next]))
                            futures[future] = k_next
                    if finished:
                        self.report(stage, done, total)
            except BaseException:
                cancel_all([f for f in futures if not f.done()])
                raise
        return results

    @staticmethod
    def _finished(k, result, units, on_result) -> int:
        if on_result is not None:
            on_result(k, result)
        return int(units[k])

    @contextmanager
    def _submitter(self, kind: str):
        """``(submit(function, *args) -> future, cancel(futures), tasks to keep in flight)``."""
        slots = IN_FLIGHT * self.workers
        if kind == "threads":
            pool = _thread_pool(self.workers)
            yield (lambda function, *args: pool.submit(_counted, function, *args)), \
                _cancel_local, slots
            return

        def run(function: Callable) -> Callable:  # a task within this run's worker contexts
            return partial(_in_run, self._token, function)

        if kind == "processes":
            pool = _process_pool(self.workers)

            def submit(function, *args):
                with _main_not_rerun():  # the pool starts its workers as tasks come
                    return pool.submit(run(function), *args)

            yield submit, _cancel_local, slots
        elif kind == "executor":
            yield (lambda f, *a: self.scheduler.submit(run(f), *a)), _cancel_local, max(slots, 4)
        else:
            with _client(self.scheduler) as client:
                nthreads = client.nthreads()
                threads = sum(nthreads.values()) or self.workers
                if nthreads:
                    submit = lambda f, *a: _submit_scattered(client, run(f), a)
                else:  # (a scatter would wait for a worker that only tasks bring: adaptive)
                    submit = lambda f, *a: client.submit(run(f), *a, pure=False)
                yield submit, client.cancel, IN_FLIGHT * threads


#: Context managers entered around each task run by a worker of a pool, an executor or a Dask
#: cluster, each called with the run's token (`_in_run`): what a run keeps in such a worker
#: between its tasks, which the worker cannot see begin or end.  `io._fits.held_decoded`
#: registers itself when the package's file loaders are imported (a worker imports them to
#: unpickle a task's loaders): compressed files decompressed once a run in each worker.
WORKER_CONTEXTS: list[Callable] = []
#: Called (without arguments) in such a worker when a run's tasks there are over: when a task
#: of another run comes, or `WORKER_IDLE_SECONDS` after the run's last task here finished.
#: What a run kept in the worker is let go there (`io._fits.held_decoded`'s pixels,
#: `measure.release_scratch`'s buffers).
WORKER_RUN_ENDS: list[Callable[[], object]] = []
#: Seconds a worker waits after a run's last task before it ends the run (`WORKER_RUN_ENDS`).
WORKER_IDLE_SECONDS = 10.0
_worker_run: dict = {"token": None, "active": 0, "timer": None}  # the run a worker is in
_WORKER_LOCK = threading.Lock()


def _in_run(token: str, function: Callable, *args):
    """``function(*args)`` in a worker, within `WORKER_CONTEXTS` for the run ``token``.

    In the run's own process (an executor of threads, a cluster of threads) the run itself
    keeps what it needs and lets it go at its end: no context.
    """
    if token.partition(":")[0] == str(os.getpid()):
        return function(*args)
    _task_begins(token)
    try:
        with ExitStack() as stack:
            for context in WORKER_CONTEXTS:
                stack.enter_context(context(token))
            return function(*args)
    finally:
        _task_ends(token)


def _task_begins(token: str) -> None:
    """A task of the run ``token`` begins in this worker: another run's end, if one was on."""
    with _WORKER_LOCK:
        if _worker_run["timer"] is not None:
            _worker_run["timer"].cancel()
            _worker_run["timer"] = None
        ended = _worker_run["token"] not in (None, token)
        if _worker_run["token"] != token:
            _worker_run["token"], _worker_run["active"] = token, 0
        _worker_run["active"] += 1
    if ended:
        _run_ends()


def _task_ends(token: str) -> None:
    with _WORKER_LOCK:
        if _worker_run["token"] != token:
            return
        _worker_run["active"] -= 1
        if not _worker_run["active"]:
            timer = threading.Timer(WORKER_IDLE_SECONDS, _idle_end, args=(token,))
            timer.daemon = True
            _worker_run["timer"] = timer
            timer.start()


def _idle_end(token: str) -> None:
    """The run ``token`` had no task here for `WORKER_IDLE_SECONDS`: it is over here."""
    with _WORKER_LOCK:
        if _worker_run["token"] != token or _worker_run["active"]:
            return
        _worker_run["token"], _worker_run["timer"] = None, None
    _run_ends()


def _run_ends() -> None:
    for callback in WORKER_RUN_ENDS:
        callback()


def _submit_scattered(client, function: Callable, args: tuple):
    """``function(*args)`` on a Dask cluster, its arguments scattered apart from the task.

    A task's arguments (a batch of images' overlaps: pixel runs and maps, ~0.6 MB per 64
    images) would otherwise travel in the client's graph message, and distributed keeps every
    message under 1 MB in each stream's log for debugging (the last 1,000:
    ``distributed.admin.low-level-log-length``), objects and all: a run of 10,000 images on a
    `LocalCluster` kept ~350 MB of copies of them in the client's process (the client's log,
    and the scheduler's, which runs there).  Scattered, they are sent by a call that is not
    logged, to a worker that keeps them while the task needs them.  (Only while the cluster
    has workers: an adaptive cluster at a minimum of none starts them for tasks, not for a
    scatter, which would wait.)
    """
    [data] = client.scatter([args], hash=False)
    return client.submit(_apply, function, data, pure=False)


def _apply(function: Callable, args: tuple):
    """``function(*args)`` (a task whose arguments arrive as one scattered tuple)."""
    return function(*args)


class _Waiter:
    """The futures submitted so far, and those of them that finished since the last call."""

    def __init__(self, kind: str):
        self.kind = kind
        self.pending: set = set()
        self.dask = None

    def add(self, future) -> None:
        if self.kind != "dask":
            self.pending.add(future)
        elif self.dask is None:
            from distributed import as_completed

            self.dask = as_completed([future], loop=future.client.loop)
        else:
            self.dask.add(future)

    def finished(self) -> list:
        """The futures that finished (waits up to `_POLL` seconds for one)."""
        if self.kind == "dask":
            batch = self.dask.next_batch(block=False) if self.dask is not None else []
            if not batch:
                time.sleep(_POLL)
            return batch
        done, self.pending = wait(self.pending, timeout=_POLL, return_when=FIRST_COMPLETED)
        return list(done)


def _result(future):
    """A task's result; a worker process that died (out of memory?) is said so."""
    try:
        return future.result()
    except BrokenProcessPool as error:
        raise RuntimeError(
            "a worker process of the statistics stopped abruptly (out of memory, or killed); "
            "the next run starts new workers. Fewer workers, or scheduler='threads', use less "
            "memory"
        ) from error


def _cancel_local(futures: list[Future]) -> None:
    for future in futures:
        future.cancel()  # those already running finish on their own; their results are dropped


# -- pools, kept for the life of the process ---------------------------------------------------
_LOCK = threading.Lock()
_THREADS: dict[int, ThreadPoolExecutor] = {}
_PROCESSES: dict[int, Executor] = {}
_BUSY = 0  # tasks running on the threads of `_THREADS`


def _counted(function, *args):
    """``function(*args)`` on a pool thread, counted in `_BUSY` while it runs."""
    global _BUSY
    with _LOCK:
        _BUSY += 1
    try:
        return function(*args)
    finally:
        with _LOCK:
            _BUSY -= 1


def _idle_core() -> bool:
    """Whether the machine seems to have a core to spare.

    The load average (1 min) is below the cores this process may use less `FORK_IDLE`, or,
    when it is not, the tasks running now (`_running_now`, this one included) are.  The
    average lags a minute behind, and a run that kept one core busy is itself ~1 of it: on 2
    cores, with a background load of 0.3-0.6, the copies after 1,000 JWST files never forked
    (88.6 s instead of ~50), nor did the reading and geometry just after they were written.
    """
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False
    if load < cores - FORK_IDLE:
        return True
    running = _running_now()
    return running is not None and running < cores - FORK_IDLE


def _running_now() -> float | None:
    """Tasks (threads) running or ready to run on the machine now, this one included.

    The mean of `RUNNING_SAMPLES` reads of the kernel's count (``/proc/loadavg``, its fourth
    field: ``running/total``), `RUNNING_PAUSE` seconds apart (~10 ms in all).  None where
    there is no such file (not Linux).
    """
    counts = []
    try:
        for k in range(RUNNING_SAMPLES):
            if k:
                time.sleep(RUNNING_PAUSE)
            with open("/proc/loadavg", "rb") as f:
                counts.append(int(f.read().split()[3].split(b"/")[0]))
    except (OSError, IndexError, ValueError):
        return None
    return sum(counts) / len(counts)


def file_workers(scheduler, workers: int | None, tasks: int, minimum: int, *, fork: bool) -> int:
    """Processes for ``tasks`` file tasks (files read or written): 1, or more.

    Each task reads or writes its own files and sends back a small record, so two processes
    do twice as many whatever the files hold, unlike the statistics' tasks (`Execution.kind`).
    More than 1 with ``scheduler`` "auto" or "processes", more than one worker (``workers``,
    None: `default_workers`), at least ``minimum`` tasks and, for "auto", a core idle; with
    ``fork``, forked workers beside this one, where forking is safe (`_fork.fork_safe`: never
    in a Jupyter kernel, which runs other threads); else the pool's worker processes (started
    from a fork server, `_process_pool`: safe in a kernel, but each a new interpreter that
    takes a few seconds to import what the tasks need, so the callers ask for much work).
    """
    workers = default_workers() if workers is None else workers
    if not isinstance(scheduler, str) or scheduler not in ("auto", "processes"):
        return 1
    if workers < 2 or tasks < minimum or (fork and not _can_fork()):
        return 1
    if scheduler == "auto" and not _idle_core():
        return 1
    return min(workers, tasks)


def _can_fork() -> bool:
    """Whether worker processes may be forked now (`_fork.fork_safe`).

    The threads of our own pools count as idle while none of them runs a task.
    """
    with _LOCK:
        idle = set() if _BUSY else {t for pool in _THREADS.values() for t in pool._threads}
    return fork_safe(idle)


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    with _LOCK:
        if workers not in _THREADS:
            _THREADS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="skymatch")
        return _THREADS[workers]


def _process_pool(workers: int) -> Executor:
    """A pool of ``workers`` processes, forked from a fork server (never from this process).

    Nothing is preloaded in the fork server: it would import this package from the default
    ``sys.path``, not from this process's, and the workers would run another copy of it.
    Each worker imports the engine once, with this process's ``sys.path``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with _LOCK:
        pool = _PROCESSES.get(workers)
        if pool is not None and not getattr(pool, "_broken", False):
            return pool
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start)
        _PROCESSES[workers] = pool
        return pool


def pooled_in_order(workers: int, calls, on_result: Callable[[int, object], None], *,
                    wait_running: bool = False, here_if_broken: bool = False) -> None:
    """Every ``(function, args, kwargs)`` of ``calls`` (a list) run by the pool's workers.

    The tasks are all submitted at once (the pool starts its workers as they come, without
    re-running the user's script: `_main_not_rerun`) and their results taken in order:
    ``on_result(k, result)`` for the k-th.  On any error (a task's, ``on_result``'s, an
    interrupt) the tasks not started are cancelled, those running are waited for if
    ``wait_running`` (so that nothing is still being written after), and the error raised.

    A worker that dies (killed: out of memory?) breaks the pool, whose other workers are then
    terminated: the pool is shut down, its processes gone when this returns or raises.  With
    ``here_if_broken`` the tasks that had not finished are then run here, in order, as
    `fork_map` runs those of a child that died; else `BrokenProcessPool` is raised.
    """
    pool = _process_pool(workers)
    futures: list[Future] = []
    given = 0  # results given to ``on_result``
    try:
        with _main_not_rerun():
            for function, args, kwargs in calls:
                futures.append(pool.submit(function, *args, **kwargs))
        for k, future in enumerate(futures):
            on_result(k, future.result())
            given += 1
    except BrokenProcessPool:
        wait(futures)  # (all end at once: the pool fails those it had not finished)
        pool.shutdown(wait=True)  # its workers reaped: what they left can be told dead
        if not here_if_broken:
            raise
    except BaseException:
        for future in futures:
            future.cancel()
        if wait_running:
            wait(futures)
        raise
    else:
        return
    for k in range(given, len(calls)):
        if k < len(futures) and futures[k].exception() is None:  # finished before the break
            on_result(k, futures[k].result())
        else:
            function, args, kwargs = calls[k]
            on_result(k, function(*args, **kwargs))


@contextmanager
def _main_not_rerun():
    """Start worker processes without re-running the user's script in them.

    A started process imports the parent's ``__main__`` from its file (or module name) unless
    it has none, as in Jupyter: a script without an ``if __name__ == "__main__":`` guard would
    then run again in every worker.  The tasks need only this package, so the main module's
    file and spec are hidden while a worker starts.
    """
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    if not saved or main is None:
        yield
        return
    try:
        main.__spec__ = None
        if "__file__" in saved:
            del main.__file__
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _worker_start() -> None:
    """In each worker process: one BLAS thread (the workers are the parallelism)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
        pass


@contextmanager
def _client(scheduler):
    """A ``distributed.Client``: the one given, or one connected to an address for this map."""
    if not isinstance(scheduler, str):
        yield scheduler
        return
    try:
        from distributed import Client
    except ImportError:
        raise ImportError(
            f"scheduler={scheduler!r} runs the statistics on a Dask cluster, which needs the "
            f"'distributed' package: {_INSTALL_HINT}"
        ) from None
    try:
        client = Client(scheduler, set_as_default=False, timeout=10)
    except OSError as error:
        raise OSError(
            f"cannot reach the Dask scheduler at {scheduler!r}: {error}; start one (dask "
            "scheduler, or distributed.LocalCluster) or use scheduler='auto'"
        ) from None
    with client:
        yield client


def release_process_pools() -> None:
    """Shut the worker-process pools down and wait for them (a program done with them).

    Their threads would keep this process from forking workers for what comes next (the
    command line's copies: `ImageCollection.write_copies`); a later run starts a pool again.
    """
    with _LOCK:
        pools = list(_PROCESSES.values())
        _PROCESSES.clear()
    for pool in pools:
        pool.shutdown(wait=True)


@atexit.register
def _shutdown() -> None:
    for pool in list(_THREADS.values()) + list(_PROCESSES.values()):
        pool.shutdown(wait=False, cancel_futures=True)


def batches_of(sizes: list[int]) -> list[list[int]]:
    """Tasks of ``sizes`` pixels in batches of about `BATCH_PIXELS` (indices, in order).

    The batches balanced by size (`balanced`).  They depend on the sizes alone, not on the
    scheduler or the workers: a batch's tasks are measured together (cells' statistics by
    `segments`, small pairs' differences by `measure.batched_differences`), so that every
    way of running them gives the same values.
    """
    count = max(-(-sum(sizes) // BATCH_PIXELS), MIN_BATCHES)
    count = min(count, len(sizes))
    if count >= len(sizes):
        return [[t] for t in range(len(sizes))]
    return balanced(list(sizes), count)


def balanced(sizes: list[int], bins: int) -> list[list[int]]:
    """Task indices in ``bins`` bins of about equal total size.

    Largest first into the lightest bin; each bin's tasks in their original order.
    """
    heap = [(0, b) for b in range(bins)]
    members: list[list[int]] = [[] for _ in range(bins)]
    for t in sorted(range(len(sizes)), key=lambda t: (-sizes[t], t)):
        load, b = heapq.heappop(heap)
        members[b].append(t)
        heapq.heappush(heap, (load + sizes[t], b))
    return [sorted(m) for m in members if m]
