"""Worker processes forked for one run: tasks on data already in this process's memory.

Images given as arrays live in this process's memory.  A worker process started from a fork
server (the pool of ``scheduler="processes"``) gets them only as copies: pickled, 4 MB per
1024 x 1024 float32 image, which made two workers twice as slow as one process at N = 64.
A process *forked* after the arrays exist shares them: the kernel copies the page tables,
not the pages, and nothing is pickled.  The tasks and their arguments stay where they are;
a worker takes them by number and sends back only their results (a few numbers each).

How a run goes (`fork_map`): the task numbers are handed out one at a time from a pipe
(dynamic balance: the largest tasks first, as ordered by the caller); this process forks
``workers - 1`` children and works on the tasks too; each child sends each result through
its own pipe as it finishes and exits (``os._exit``: no ``atexit`` handlers, no flush of
inherited buffers) when no task is left.  Results are put back by task number: a task is a
pure function of its arguments, so the numbers are those of a serial run, bit for bit.  If a
child dies (killed, out of memory), the tasks it took and did not finish run
here.  A child is reaped later (its exit does not hold the run up).

**When it is safe** (`fork_safe`): a fork copies only the calling thread, and a lock that
another thread holds at that moment stays locked in the child forever.  So this is used only

- on Linux (on macOS, system libraries do not survive a fork without ``exec``);
- from the main thread, when no other Python thread runs, except idle threads of this
  package's own thread pool (``scheduler="threads"``; idle, they hold no lock).

A Jupyter kernel always runs other threads (its I/O, heartbeat, history threads), and the
app solves in a thread: there this is never used (``"auto"`` then runs the statistics
here, ``"processes"`` uses the pool).  Threads that Python does not know of are those of
BLAS's pools (OpenBLAS re-creates its pool in a forked child: ``pthread_atfork``); Python
3.12+ warns about any thread on every ``os.fork``, and that DeprecationWarning is silenced
for our fork only, once the rule above holds.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import struct
import sys
import threading
import time
import warnings
from collections.abc import Callable, Collection, Sequence

__all__ = ["fork_map", "fork_safe", "reap"]

#: Children that exited but may not have been reaped yet (reaped at the next run).
_UNREAPED: list[int] = []


def fork_safe(idle_threads: Collection[threading.Thread] = ()) -> bool:
    """Whether worker processes may be forked from this process now (see the module's text).

    ``idle_threads``: other threads known to hold no lock (this package's idle pool).
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    current = threading.current_thread()
    if current is not threading.main_thread():
        return False
    return all(t is current or t in idle_threads for t in threading.enumerate())


def fork_map(
    function: Callable,
    arguments: Sequence[tuple],
    order: Sequence[int],
    workers: int,
    *,
    on_result: Callable[[int, object], None],
    check: Callable[[], None],
    meanwhile: Callable[[], object] | None = None,
    poll: float = 0.05,
    pause_gc: bool = True,
) -> None:
    """``function(*arguments[k])`` for every ``k`` of ``order``, here and in forked children.

    ``workers`` processes compute: this one and ``workers - 1`` children.  ``order`` is the
    order in which the tasks are taken.  ``on_result(k, result)`` is called here, in the
    calling thread, as each task's result arrives; ``check()`` is called between tasks and
    while waiting for the children, and whatever it raises stops the run (the children are
    killed).  An exception of a task (here or in a child) is raised here.  ``meanwhile()``,
    if given, runs here once the children are working, before this process takes tasks (with
    it, a single task is shared too: a child computes it while this process does
    ``meanwhile()``, and this process takes it only if no child has).  ``pause_gc``: no
    garbage collection while the children run (below); tasks that make much cyclic garbage
    for long (writing files through ``stdatamodels``) keep it.
    """
    _reap()
    order = list(order)
    n = len(order)
    tasks = _TaskPipe(order)
    if not tasks.ready or n < (1 if meanwhile is not None else 2):
        workers = 1  # too many tasks for a pipe, or nothing to share: here
    workers = min(workers, n + 1)  # (a child more than tasks would find none left)
    take = tasks.take
    pids: list[int] = []
    children: dict = {}  # connection -> pid, while its pipe is open
    received: set[int] = set()
    finished = False
    # No garbage collection while the children run, here or there (they inherit it): a full
    # collection visits every object of the process, and would copy each page it writes
    # while a child shares it (the children never collect: they exit through ``os._exit``).
    # (N = 256 images of 256 x 256, planes: 0.05-0.07 s each, in both processes, most runs.)
    collecting = pause_gc and workers > 1 and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        from multiprocessing import Pipe

        for _ in range(max(0, workers - 1)):
            receive, send = Pipe(duplex=False)
            _widen(send.fileno())
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*multi-threaded.*fork",
                                        category=DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: never returns
                _child(function, arguments, take, send, receive)
            send.close()  # ours: the child's death then ends its pipe (EOFError)
            children[receive] = pid
            pids.append(pid)

        def collect(timeout: float) -> None:
            """The children's results that arrived (waits up to ``timeout`` for one)."""
            if not children:
                return
            if timeout:
                from multiprocessing.connection import wait

                ready = wait(list(children), timeout)
            else:  # a poll per pipe: cheaper than a selector, between two tasks
                ready = [conn for conn in children if conn.poll(0)]
            for conn in ready:
                while True:  # every result that arrived on this pipe
                    try:
                        what, k, value = conn.recv()
                    except (EOFError, OSError):  # the child is gone
                        del children[conn]
                        conn.close()
                        break
                    if what == "error":
                        raise value
                    received.add(k)
                    on_result(k, value)
                    if not conn.poll(0):
                        break

        if meanwhile is not None:
            meanwhile()
        while True:
            collect(0)
            check()
            k = take()
            if k is None:
                break
            value = function(*arguments[k])
            received.add(k)
            on_result(k, value)
        while children and len(received) < n:
            check()
            collect(poll)
        for k in order:  # taken by a child that died before it finished them
            if k not in received:
                check()
                value = function(*arguments[k])
                received.add(k)
                on_result(k, value)
        finished = True
    finally:
        for conn, pid in children.items():
            if not finished:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            conn.close()
        _UNREAPED.extend(pids)
        _reap()
        tasks.close()
        if collecting:
            gc.enable()


class _TaskPipe:
    """The task numbers, in order, in a pipe that every process reads 4 bytes at a time.

    The kernel hands each read its own 4 bytes (reads of a pipe are serialised), so no
    lock is needed and a process killed at any moment cannot leave one held.  All numbers
    are written before any fork, then the writing end is closed: an empty pipe reads as
    the end.  ``ready`` is False when the pipe cannot hold them all (over ~260,000 tasks).
    """

    def __init__(self, order: Sequence[int]):
        data = struct.pack(f"<{len(order)}i", *order)
        self.read, write = os.pipe()
        self.ready = True
        try:
            if len(data) > 65536:  # the default capacity of a pipe
                import fcntl

                try:
                    size = fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, len(data))
                except OSError:
                    size = 0
                self.ready = size >= len(data)
            if self.ready:
                os.write(write, data)
        finally:
            os.close(write)
        self.local = None if self.ready else iter(order)

    def take(self) -> int | None:
        """The next task's number, or None when none is left."""
        if self.local is not None:
            return next(self.local, None)
        data = os.read(self.read, 4)
        return struct.unpack("<i", data)[0] if data else None

    def close(self) -> None:
        os.close(self.read)


#: Bytes a child's result pipe can hold (`_widen`): results up to this size never wait for
#: this process to read them.
RESULT_PIPE = 1 << 20


def _widen(fd: int) -> None:
    """Let the pipe ``fd`` hold `RESULT_PIPE` bytes (where the system allows; else as it is).

    A pipe holds 64 KiB by default, and a child's ``send`` of a larger result blocks until
    this process reads it, which it does only between its own tasks: the child then sits
    idle for up to one of them (N = 256 planes: a batch's cell statistics pickle to ~94 KB,
    and the child idled ~0.2 s of its ~0.9 s).
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, RESULT_PIPE)
    except (ImportError, AttributeError, OSError):  # not Linux, or over the system's limit
        pass


def _child(function, arguments, take, send, receive) -> None:
    """A forked child's whole life: take tasks, send results, exit."""
    code = 1
    try:
        # What the parent made is out of our collections (if we collect: long tasks such as
        # written copies do), so that they do not write to it and copy the pages we share
        # (the test: ~1,000 objects of its own against the parent's ~245,000).
        gc.freeze()
        receive.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
        while (k := take()) is not None:
            try:
                value = function(*arguments[k])
            except BaseException as error:  # sent to the parent, raised there
                send.send(("error", k, _picklable(error)))
                break
            send.send(("done", k, value))
        code = 0
    except BaseException:  # the parent sees the pipe close
        pass
    finally:
        os._exit(code)


def _picklable(error: BaseException) -> BaseException:
    """``error`` if it pickles, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def reap(timeout: float = 2.0) -> None:
    """Wait up to ``timeout`` seconds for the children of earlier runs to end, and reap them.

    After a run that stopped on an error its children were killed: once this returns, they
    are gone (what they were writing can be told from a live writer's, `io.remove_leftovers`).
    """
    deadline = time.monotonic() + timeout
    _reap()
    while _UNREAPED and time.monotonic() < deadline:
        time.sleep(0.005)
        _reap()


def _reap() -> None:
    """Reap the children that exited (without waiting for those still exiting)."""
    for pid in list(_UNREAPED):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            done = pid
        if done:
            _UNREAPED.remove(pid)

