"""When the app's page changes solve: the first at once, a burst's last exactly once.

`SolveCoalescer` holds the decisions only (no event loop, no thread): the app tells it about
the page's changes and about solves that stopped, and it calls back the app to start one.  Its
tests drive it with explicit events and a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PageSolve", "SolveCoalescer"]


@dataclass(eq=False)
class PageSolve:
    """A solve started for the page's changes up to ``generation``.

    ``cancel`` is set when a newer change (or the app) made it stale: the engine then stops
    between tasks, and its outcome is never shown.  ``future`` is the app's (the worker's).
    """

    generation: int
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Any = None


class SolveCoalescer:
    """Leading and trailing edges for the solves of the page's changes.

    - A change when no solve runs starts one at once (leading edge: no waiting).
    - A change while a solve runs makes that solve stale: it is asked to stop (``cancel``),
      and when it has stopped one solve of the state of that moment starts (trailing edge).
      However many changes arrive meanwhile, they end in that one solve, of the last state;
      a stale solve's outcome is never shown (`finished` says so).
    - With ``debounce`` > 0, a change less than ``debounce`` seconds after the previous one
      waits until the changes pause that long, then solves once (the first change of a burst
      still solves at once).
    - `take_over` (a solve from Python, or Cancel) forgets the solve under way and any wait.

    Parameters
    ----------
    start : callable
        ``start(solve)``: begin computing the current state for the `PageSolve` (the app
        submits it to its worker and later calls `finished`).
    debounce : float
        Seconds of quiet a burst's trailing solve waits for (0: none).
    clock : callable
        Seconds, monotonic (``time.monotonic``).
    call_later : callable
        ``call_later(delay, callback) -> handle`` with ``handle.cancel()`` (an event loop's);
        used only when ``debounce`` > 0.
    """

    def __init__(self, start: Callable[[PageSolve], object], *, debounce: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 call_later: Callable[[float, Callable[[], None]], Any] | None = None):
        self._start = start
        self.debounce = debounce
        self._clock = clock
        self._call_later = call_later
        self.generation = 0  # counts changes (the app's own solves too)
        self.running: PageSolve | None = None  # the page's solve under way
        self._timer = None  # a burst's trailing solve, waiting for quiet
        self._last_change = -float("inf")
        self._owed = False  # a page change not solved yet

    @property
    def debounce(self) -> float:
        return self._debounce

    @debounce.setter
    def debounce(self, seconds: float) -> None:
        seconds = float(seconds)
        if not seconds >= 0:
            raise ValueError(f"debounce must be >= 0 seconds; got {seconds!r}")
        self._debounce = seconds

    @property
    def busy(self) -> bool:
        """A page solve is under way or waiting."""
        return self.running is not None or self._timer is not None or self._owed

    def changed(self) -> None:
        """The page changed the parameters or groups."""
        self.generation += 1
        self._owed = True
        now = self._clock()
        in_burst = now - self._last_change < self._debounce
        self._last_change = now
        if in_burst:
            self._arm(self._debounce)
        if self.running is not None:
            self.running.cancel.set()  # stale: its end starts the next solve (or the timer does)
        elif self._timer is None:
            self._begin()

    def finished(self, solve: PageSolve) -> bool:
        """``solve`` stopped (whatever its outcome): whether its outcome is to be shown.

        A stale solve's end starts the solve of the latest state, unless a wait for quiet is
        under way (its end starts it then).
        """
        if solve is not self.running:
            return False  # taken over (Python or Cancel): that one is already handled
        self.running = None
        if solve.generation == self.generation and not solve.cancel.is_set():
            return True
        if self._owed and self._timer is None:
            self._begin()
        return False

    def is_current(self, solve: PageSolve) -> bool:
        """``solve`` is under way and no newer change made it stale (its progress is news)."""
        return solve is self.running and solve.generation == self.generation

    def take_over(self) -> PageSolve | None:
        """The app solves itself now (Python) or cancels: forget the page's solve and wait.

        Returns the solve that was under way (asked to stop; wait for its end before the
        engine runs again), or None.
        """
        self.generation += 1
        self._owed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        running, self.running = self.running, None
        if running is not None:
            running.cancel.set()
        return running

    # -- inside ------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._owed = False
        solve = self.running = PageSolve(self.generation)
        self._start(solve)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._call_later(delay, self._quiet)

    def _quiet(self) -> None:
        """The changes paused for ``debounce`` seconds: solve the last state (if not running)."""
        self._timer = None
        if self.running is None and self._owed:
            self._begin()
