"""When the app's page changes solve (SolveCoalescer): driven by explicit events, a fake clock.

What a user relies on: the first change solves at once; a burst of changes, whenever they
arrive (during a solve or not), ends in exactly one solve of the last value, which is shown;
a stale solve's outcome is never shown; Python and Cancel take over.
"""

import heapq

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skymatch_nb_ui.widgets._solves import SolveCoalescer


class FakeLoop:
    """A clock and ``call_later`` timers that fire only when the test advances the time."""

    def __init__(self):
        self.now, self._timers, self._count = 0.0, [], 0

    def clock(self) -> float:
        return self.now

    def call_later(self, delay, callback):
        timer = Timer(self.now + delay, callback)
        self._count += 1
        heapq.heappush(self._timers, (timer.when, self._count, timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.now = when
            if not timer.cancelled:
                timer.callback()
        self.now = end

    @property
    def pending(self) -> int:
        return sum(not t.cancelled for *_, t in self._timers)


class Timer:
    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self):
        self.cancelled = True


class Page:
    """The app's side: the value the page last chose, the solves started and what was shown."""

    def __init__(self, debounce=0.0):
        self.loop = FakeLoop()
        self.value = None
        self.started = []  # (solve, the value it computes)
        self.shown = []
        self.coalescer = SolveCoalescer(self._start, debounce=debounce, clock=self.loop.clock,
                                        call_later=self.loop.call_later)

    def _start(self, solve):
        assert self.coalescer.running is solve  # one page solve at a time
        self.started.append((solve, self.value))  # it reads the state when it starts

    def choose(self, value):
        self.value = value
        self.coalescer.changed()

    def finish(self, k=-1):
        """The k-th started solve stops (computed or cancelled); shown if still current."""
        solve, value = self.started[k]
        if self.coalescer.finished(solve):
            self.shown.append(value)

    @property
    def values_started(self):
        return [value for _, value in self.started]


def test_the_first_change_solves_at_once_and_its_result_is_shown():
    page = Page()
    page.choose("match")
    assert page.values_started == ["match"]  # no waiting
    assert page.coalescer.busy and not page.started[0][0].cancel.is_set()
    page.finish()
    assert page.shown == ["match"] and not page.coalescer.busy
    page.choose("local")  # later, alone: at once again
    assert page.values_started == ["match", "local"]
    page.finish()
    assert page.shown == ["match", "local"]


def test_a_burst_during_a_solve_ends_in_one_solve_of_the_last_value():
    page = Page()
    page.choose("match")
    first = page.started[0][0]
    for value in ("local", "global", "global+match"):  # stepping through a dropdown
        page.choose(value)
    assert page.values_started == ["match"]  # nothing new while one runs ...
    assert first.cancel.is_set()  # ... which is stale: asked to stop
    page.finish(0)  # it stops: not shown; the last value solves, once
    assert page.shown == [] and page.values_started == ["match", "global+match"]
    page.finish()
    assert page.shown == ["global+match"] and not page.coalescer.busy
    assert len(page.started) == 2


def test_a_change_during_the_trailing_solve_solves_again_with_the_latest():
    page = Page()
    page.choose(1)
    page.choose(2)
    page.finish(0)  # 1 stale -> 2 starts
    page.choose(3)  # while 2 runs
    assert page.started[1][0].cancel.is_set()
    page.finish(1)
    assert page.values_started == [1, 2, 3]
    page.finish(2)
    assert page.shown == [3]


def test_a_solve_that_finished_before_the_next_change_is_shown_and_the_next_starts_at_once():
    page = Page()
    page.choose("a")
    page.finish()
    page.choose("b")
    assert page.values_started == ["a", "b"] and page.shown == ["a"]


def test_python_or_cancel_takes_over_the_page_solve_and_its_end_starts_nothing():
    page = Page()
    page.choose("a")
    page.choose("b")  # owed, waiting for "a" to stop
    running = page.coalescer.take_over()
    assert running is page.started[0][0] and running.cancel.is_set()
    assert not page.coalescer.busy and page.coalescer.running is None
    page.finish(0)  # the stale solve ends later: neither shown nor followed by another
    assert page.shown == [] and page.values_started == ["a"]
    assert page.coalescer.take_over() is None  # nothing under way
    page.choose("c")  # the page again: at once
    assert page.values_started == ["a", "c"]


def test_progress_is_news_only_from_the_current_solve():
    page = Page()
    page.choose(1)
    solve = page.started[0][0]
    assert page.coalescer.is_current(solve)
    page.choose(2)
    assert not page.coalescer.is_current(solve)


def test_with_debounce_the_first_change_is_at_once_and_the_rest_wait_for_quiet():
    page = Page(debounce=0.15)
    page.choose(1)
    assert page.values_started == [1]  # the leading edge never waits
    page.finish()
    page.loop.advance(0.05)
    page.choose(2)  # within 0.15 s of the previous change: waits
    page.loop.advance(0.1)
    page.choose(3)  # the wait starts again
    page.loop.advance(0.14)
    assert page.values_started == [1]
    page.loop.advance(0.02)  # 0.15 s of quiet
    assert page.values_started == [1, 3]
    page.finish()
    assert page.shown == [1, 3] and not page.coalescer.busy and page.loop.pending == 0
    page.loop.advance(1.0)
    page.choose(4)  # a new burst: at once
    assert page.values_started == [1, 3, 4]


def test_with_debounce_a_running_stale_solve_and_the_wait_both_end_before_the_next_solve():
    page = Page(debounce=0.15)
    page.choose(1)
    page.loop.advance(0.01)
    page.choose(2)  # 1 is running: stale; the wait for quiet starts
    page.finish(0)  # 1 stops before the quiet: nothing yet
    assert page.values_started == [1]
    page.loop.advance(0.2)
    assert page.values_started == [1, 2]
    page.finish()
    # and the other order: the quiet comes while the stale solve still runs
    page.loop.advance(1.0)
    page.choose(3)
    page.loop.advance(0.01)
    page.choose(4)
    page.loop.advance(0.2)  # quiet, but 3 still runs
    assert page.values_started == [1, 2, 3]
    page.finish()  # 3 stops: 4 starts
    assert page.values_started == [1, 2, 3, 4]
    page.finish()
    assert page.shown == [2, 4]


def test_debounce_must_not_be_negative():
    with pytest.raises(ValueError, match=r"debounce must be >= 0 seconds; got -0.1"):
        SolveCoalescer(lambda solve: None, debounce=-0.1)


events = st.lists(
    st.one_of(st.tuples(st.just("choose"), st.integers(0, 9)),
              st.tuples(st.just("finish"), st.integers(0, 3)),  # which of the started solves
              st.tuples(st.just("wait"), st.sampled_from([0.01, 0.05, 0.1, 0.3]))),
    max_size=40)


@given(events=events, debounce=st.sampled_from([0.0, 0.15]))
def test_any_interleaving_ends_showing_the_last_value_once(events, debounce):
    """Whatever the order of changes, solves' ends and waits: one solve at a time, nothing
    stale shown, and once the page is quiet and the solves have ended, the value shown last is
    the value chosen last, computed by exactly one solve started after the last change."""
    page = Page(debounce)
    finished = set()
    changed = False
    for kind, arg in events:
        if kind == "choose":
            page.choose(arg)
            changed = True
        elif kind == "finish":
            open_ = [k for k in range(len(page.started)) if k not in finished]
            if open_:
                k = open_[arg % len(open_)]
                finished.add(k)
                shown_before = len(page.shown)
                page.finish(k)
                if len(page.shown) > shown_before:  # shown: it computed the latest change
                    assert page.started[k][0].generation == page.coalescer.generation
        else:
            page.loop.advance(arg)
        assert sum(s is page.coalescer.running for s, _ in page.started) <= 1
    # the page goes quiet: time passes, and every solve ends
    while page.coalescer.busy:
        page.loop.advance(1.0)
        for k in range(len(page.started)):
            if k not in finished:
                finished.add(k)
                page.finish(k)
    if not changed:
        assert page.started == [] and page.shown == []
        return
    assert page.shown and page.shown[-1] == page.value
    latest = [value for solve, value in page.started if solve.generation == page.coalescer.generation]
    assert latest == [page.value]  # exactly one solve of the last change (started after it)
