"""SkyMatchApp: the footprint map, group editor and results table, with live re-solving."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as _FutureTimeout
from contextlib import contextmanager
from pathlib import Path

import anywidget
import ipywidgets as w
import numpy as np
import traitlets
import xarray as xr

from ..display.colors import theme_colors
from ..display.encodings import short_names, sky_unit, with_unit
from ..engine import SkyMatchParams
from ..engine import exceptions as _engine_exceptions
from ._assets import esm
from ._solves import PageSolve, SolveCoalescer
from .footprint_map import FootprintMap
from .group_editor import GroupEditor
from .results_table import ResultsTable

__all__ = ["SkyMatchApp"]

#: Stages whose parameters the app does not control: ``stepsize`` (geometry: the footprints'
#: vertex spacing, fixed for a collection) and ``subtract`` (output: a collection never
#: subtracts, `ImageCollection.write_copies` does).  Every other parameter of
#: `SkyMatchParams` gets a control, built from its `ParamSpec`.
UNCONTROLLED_STAGES = ("geometry", "output")

#: The specs of the parameters the app controls, in `SkyMatchParams` order.
CONTROLLED = {name: spec for name, spec in SkyMatchParams.specs().items()
              if spec.stage not in UNCONTROLLED_STAGES}

#: The parameters the app controls, with the engine's defaults.
DEFAULT_PARAMS = {name: spec.default for name, spec in CONTROLLED.items()}

#: Raised by an engine run whose cancel event was set (engines without the hook never raise it).
SkyMatchCancelled = getattr(_engine_exceptions, "SkyMatchCancelled", type("_NeverRaised", (Exception,), {}))

#: Progress reports forwarded to the page at most this often (seconds).
PROGRESS_INTERVAL = 0.1
#: "solving…", the dimmed views, the progress bar and Cancel appear once a page change has
#: waited this long for its result (seconds): a quick solve (a solve-only change: tens of ms)
#: sends the page nothing but its result (measured: ~20 ms sooner in JupyterLab at 1,000 images).
BUSY_DELAY = 0.25


class _NewResult(traitlets.Instance):
    """A Dataset trait that notifies on every new object, without comparing the old and new.

    traitlets compares ``old == new`` to decide; for two Datasets that compares every value
    (~7 ms at 1,000 images and 3,800 pairs, on every solve) only to find them different.
    """

    def set(self, obj, value):
        new = self._validate(obj, value)
        old = obj._trait_values.get(self.name, self.default_value)
        obj._trait_values[self.name] = new
        if new is not old:
            obj._notify_trait(self.name, old, new)


class SkyMatchApp(w.VBox):
    """Interactive sky matching of an `ImageCollection`: see, group, re-solve.

    Any change of a parameter or of the groups re-runs the solve, re-using the engine's stage
    cache, and every view updates.  The Python face mirrors the UI:

    - ``app.params`` (dict): the engine parameters; assign a dict (or part of one) to change them.
      One control per parameter of `SkyMatchParams` (but ``stepsize`` and ``subtract``), built
      from its `ParamSpec`: choices, range, step, None allowed, help as the tooltip;
    - ``app.groups`` (dict name -> label or None): the collection's own labels; assign to regroup
      (the group editor writes them: one undo step);
    - ``app.selected`` (list of names): the selection shared by the map, table and plots;
    - ``app.result`` (xarray.Dataset): the latest result, images and overlap pairs, as every
      view shows it;
    - ``app.status`` (str): what the status line shows.

    When the solve runs:

    - an assignment from Python (``app.params = ...``, ``app.groups = ...``, a call such as
      ``app.editor.assign(...)``) solves before it returns, so the next line reads the new
      ``app.result`` (a solve that takes over a quarter of a second says "solving…" meanwhile);
    - a change made in the page (a control, the group editor) solves at once when no solve is
      under way.  A change that arrives while one runs makes it stale: it is asked to stop
      and its result is never shown, and once it has stopped one solve of the latest
      parameters and groups starts.  So clicking or stepping (keyboard) through values
      solves the first at once, and the burst ends in exactly one solve, of the last value.
      A solve that takes longer than a quarter of a second says so: the status line says
      "solving…" and the views, dimmed, keep the last good result until the new one is
      there.  A solve that fails (a parameter the engine refuses) leaves the views as they
      were and says why.
    - a solve started from the page runs in a worker thread, so the kernel keeps serving the
      page meanwhile: a progress bar follows the engine's stages (geometry, statistics) and
      **Cancel** (or `cancel`) stops it; the views keep the last result and the parameters
      and groups go back to those of that result.  (With an engine without the progress and
      cancel hooks of `SkyMatcher.run`, the bar says only that it is busy, and a stale or
      cancelled solve finishes unseen before the next one starts.)

    Building the app never changes the collection: its group labels stay as they are (the
    editor shows them as text).

    Parameters
    ----------
    collection : ImageCollection
        The images.
    debounce : float
        Seconds of quiet the last solve of a burst of page changes waits for (default 0: it
        starts as soon as the stale solve has stopped).  The first change of a burst never
        waits, nor do changes made from Python.
    **params
        Initial engine parameters (``skymethod``, ``skystat``, ...).

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> from skymatch_nb_ui.widgets import SkyMatchApp
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> app = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=m.names),
    ...                   skymethod="global+match", skystat="mean")
    >>> app.result.sky.values.round(6).tolist()
    [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
    >>> app.params = {"skymethod": "match"}
    >>> app.result.sky.values.round(6).tolist()
    [0.0, 20.0, 5.0, 10.0, 5.0, 15.0]
    """

    params = traitlets.Dict()
    groups = traitlets.Dict()
    selected = traitlets.List(traitlets.Unicode())
    status = traitlets.Unicode("")
    result = _NewResult(xr.Dataset, allow_none=True)

    def __init__(self, collection, *, debounce: float = 0.0, **params):
        self.collection = collection
        # when the page's changes solve: the first at once, a burst's last exactly once
        self._solves = SolveCoalescer(self._start_page_solve, debounce=debounce,
                                      call_later=lambda delay, callback: _running_loop().call_later(
                                          delay, callback))
        self._tasks: set[asyncio.Future] = set()  # the page's solves awaited (references keep them)
        self._page = 0  # > 0 while a change from the page is being applied
        self._updating = False
        self._writing_groups = False  # True while `groups` is being written by the editor
        self._reverting = False  # True while a cancel puts the shown result's state back
        self._starting = True  # the initial groups and params trigger one solve, below
        self._hooks = _engine_hooks(collection)
        self._worker: ThreadPoolExecutor | None = None  # runs the solves, one at a time
        self._busy_timer = None  # says "solving…" and shows the progress bar after BUSY_DELAY
        self._shown_state: tuple[dict, dict] | None = None  # params and groups of `result`
        self.map = FootprintMap(collection)
        self.editor = GroupEditor(collection)
        self.table = ResultsTable(collection)
        self._controls = _controls()
        self._status = w.HTML(layout=w.Layout(min_height="1.6em"))
        self._progress = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="160px"))
        self._cancel = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="90px"),
                                tooltip="Stop the solve under way: the views keep the last result")
        self._cancel.add_class("smnb-app-cancel")
        self._progress.add_class("smnb-app-progress")
        self._busy = w.HBox([self._progress, self._cancel], layout=w.Layout(display="none"))
        self._cancel.on_click(lambda _button: self.cancel())
        self._export = {
            "kind": w.Dropdown(options=[("footprint map", "footprints"), ("overlap differences", "pairs"),
                                        ("sky per image", "sky"), ("fitted planes", "planes")],
                               layout=w.Layout(width="180px")),
            "file": w.Text(value="skymatch_figure.pdf", layout=w.Layout(width="220px"),
                           description="file", style={"description_width": "initial"}),
            "button": w.Button(description="Export figure", icon="download",
                               tooltip="Save a publication-quality figure (matplotlib) to the file"),
        }
        self._export["button"].on_click(self._on_export)
        self._plot = _SkyPlot()
        self._theme = _ThemeProbe(layout=w.Layout(display="none"))
        super().__init__(layout=w.Layout(width="100%"))
        self.add_class("smnb-app")
        self.map.layout = w.Layout(flex="1 1 560px", min_width="420px")
        self._plot.box.layout = w.Layout(flex="0 0 400px")
        self._views = w.HBox([self.map, self._plot.box],
                             layout=w.Layout(align_items="flex-start", flex_flow="row wrap", width="100%"))
        self._views.add_class("smnb-app-views")
        controls = w.HBox(list(self._controls.values()), layout=w.Layout(flex_flow="row wrap"))
        status_row = w.HBox([w.HBox([self._status, self._busy], layout=w.Layout(align_items="center")),
                             w.HBox(list(self._export.values()))],
                            layout=w.Layout(justify_content="space-between", flex_flow="row wrap"))
        for row in (controls, status_row):  # JupyterLab's notebook shortcuts keep off their keys
            row.add_class("smnb-app-keys")
        self.children = [
            w.HTML(_APP_STYLE, layout=w.Layout(display="none")),
            self._theme,
            controls,
            status_row,
            self._views,
            self.editor,
            self.table,
        ]
        self._link_views()
        try:
            self.groups = dict(collection.groups)
            self.params = {**DEFAULT_PARAMS, **_checked_params(params)}
        finally:
            self._starting = False
        self._solve_now()

    # -- the Python face ---------------------------------------------------------------------
    @traitlets.validate("params")
    def _validate_params(self, proposal):
        """Assigning part of the parameters changes only those; all are checked at once."""
        merged = {**DEFAULT_PARAMS, **self.params, **_checked_params(proposal["value"])}
        _check_values(merged)
        return merged

    @traitlets.observe("params")
    def _on_params(self, change):
        self._updating = True
        try:
            for name, control in self._controls.items():
                value = change["new"][name]
                control.value = "" if value is None and isinstance(control, w.Text) else (
                    str(value) if isinstance(control, w.Text) else value
                )
        finally:
            self._updating = False
        self._changed()

    @traitlets.validate("groups")
    def _validate_groups(self, proposal):
        """The editor writes the groups (the collection checks them, labels kept as given).

        Unknown image names raise; `groups` is then what the collection holds.
        """
        self._writing_groups = True
        try:
            self.editor.set_labels(proposal["value"])
        finally:
            self._writing_groups = False
        return dict(self.collection.groups)

    @traitlets.observe("groups")
    def _on_groups(self, change):
        self._changed()

    def export_figure(self, path, kind: str = "footprints", *, dpi: int = 300, overwrite: bool = False,
                      **options) -> Path:
        """Save a publication figure of the current result (what the Export button does).

        Parameters
        ----------
        path : str or Path
            The file; its suffix chooses the format (``.pdf``, ``.svg``, ``.png``, ...).
        kind : {'footprints', 'pairs', 'sky', 'planes'}
            `plotting.plot_footprints` (coloured as the map is), `plotting.plot_pair_residuals`,
            `plotting.plot_sky` or `plotting.plot_planes` (the fitted planes of
            ``skymodel="plane"``; flat footprints for constant skies).
        dpi : int
            Resolution of raster formats.
        overwrite : bool
            Replace an existing file.
        **options
            Passed on to the plotting function.

        Returns
        -------
        Path
            The file written (atomically).
        """
        from .. import plotting
        from ..io import atomic_path

        if self.result is None:
            raise ValueError("no result to plot yet: the app has not solved")
        makers = {
            "footprints": lambda: plotting.plot_footprints(
                self.result, **{"color_by": self.map.color_by, **options}),
            "pairs": lambda: plotting.plot_pair_residuals(self.result, **options),
            "sky": lambda: plotting.plot_sky(self.result, **options),
            "planes": lambda: plotting.plot_planes(self.result, **options),
        }
        if kind not in makers:
            raise ValueError(f"kind must be one of {', '.join(map(repr, makers))}; got {kind!r}")
        path = Path(path)
        figure = makers[kind]().figure
        try:
            with atomic_path(path, overwrite=overwrite) as tmp:
                figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "pdf",
                               bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(figure)
        self._set_status(f"exported {kind} figure to {path}")
        return path

    def _on_export(self, _button=None):
        try:
            self.export_figure(self._export["file"].value, self._export["kind"].value,
                               overwrite=True)
        except Exception as exc:  # shown to the user, who can fix the name or the folder
            self._set_status(f"error: could not export the figure: {exc}", error=True)

    def solve(self) -> xr.Dataset | None:
        """Solve now with the current parameters and groups (a page's solve under way stops).

        Returns the new result, or None when the engine refused the parameters (the status
        says why; `result` keeps the last good one).
        """
        return self._solve_now()

    def cancel(self) -> bool:
        """Stop the page's solve under way or pending (what the Cancel button does).

        The views keep the last result; the parameters and groups go back to those of that
        result (a group edit taken back is one step the editor can undo).  Returns whether
        there was a solve to stop.
        """
        if not self._solves.busy:
            return False
        self._solves.take_over()  # the solve under way, asked to stop, finishes unseen
        self._revert()
        self._views.remove_class("smnb-app-solving")
        self._show_busy(False)
        self._set_status("cancelled: the views show the last result"
                         + ("" if self.result is None else f" ({_summary(self.result)})"))
        return True

    # -- wiring ------------------------------------------------------------------------------
    def _link_views(self):
        for view in (self.map, self.table, self.editor):
            traitlets.link((self, "selected"), (view, "selected"))
        traitlets.link((self.map, "hovered"), (self.table, "hovered"))
        self.editor.observe(self._on_editor_groups, "groups")
        for name, control in self._controls.items():
            control.observe(lambda change, name=name: self._on_control(name, change), "value")
        self.observe(lambda change: self._plot.select(self._indices(change["new"])), "selected")
        self._plot.on_select(self._on_plot_select)
        self._theme.observe(lambda change: self._plot.set_theme(change["new"]), "dark")

    def _on_plot_select(self, indices: list[int]):
        names = [self.collection.names[k] for k in indices]
        if names != list(self.selected):
            self.selected = names

    def _on_editor_groups(self, change):
        if self._writing_groups:
            return  # the app's own assignment, being written
        groups = dict(self.collection.groups)  # the editor wrote them, labels kept
        if groups != self.groups:
            with self._from_page(self.editor.from_page):
                self.groups = groups

    def _on_control(self, name, change):
        if self._updating:
            return
        value = change["new"]
        if isinstance(self._controls[name], w.Text):
            try:
                value = _parse(CONTROLLED[name], value)
            except ValueError as exc:
                self._set_status(f"error: {exc}", error=True)
                return
        try:
            with self._from_page():
                self.params = {name: value}
        except (ValueError, TypeError) as exc:
            self._set_status(f"error: {exc}", error=True)

    @contextmanager
    def _from_page(self, really: bool = True):
        """Changes made inside come from the page (a control, an editor request)."""
        self._page += bool(really)
        try:
            yield
        finally:
            self._page -= bool(really)

    # -- solving -----------------------------------------------------------------------------
    @property
    def debounce(self) -> float:
        """Seconds of quiet the last solve of a burst of page changes waits for (0: none)."""
        return self._solves.debounce

    @debounce.setter
    def debounce(self, seconds: float) -> None:
        self._solves.debounce = seconds

    @property
    def _running(self) -> PageSolve | None:
        """The page's solve under way in the worker (None: none)."""
        return self._solves.running

    def _changed(self):
        """Parameters or groups changed: solve now (Python) or in the worker (the page)."""
        if self._starting or self._reverting:
            return
        loop = _running_loop()
        if self._page and loop is not None:
            self._solves.changed()  # at once if nothing runs, else once the stale one stopped
            self._busy_soon(loop)
        else:
            self._solve_now()

    def _start_page_solve(self, solve: PageSolve) -> None:
        """Start ``solve`` in the worker thread: the loop serves the page meanwhile."""
        loop = _running_loop()
        params, groups = dict(self.params), dict(self.collection.groups)
        solve.future = self._worker_pool().submit(self._compute, params, cancel=solve.cancel,
                                                  progress=self._reporter(loop, solve))
        self._busy_soon(loop)
        task = asyncio.ensure_future(self._page_solve_done(solve, groups))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _page_solve_done(self, solve: PageSolve, groups: dict) -> None:
        """Show the outcome of the page's solve, unless a newer change (or Cancel) made it stale.

        A stale one's end starts the solve of the latest change.
        """
        try:
            outcome = await asyncio.wrap_future(solve.future)
        except Exception as exc:  # an engine bug: say it, and never leave the app waiting
            outcome = exc
        if self._solves.finished(solve):
            self._show(outcome, groups)
        if not self._solves.busy:
            self._show_busy(False)

    def _solve_now(self) -> xr.Dataset | None:
        """Solve before returning (Python's assignments); "solving…" only if it takes a while.

        The solve runs in the worker thread while this one waits: after `BUSY_DELAY` seconds
        without a result the status says "solving…" (the page gets it at once: the messages
        leave from this thread); a quick solve sends the page only its result.  An interrupt
        while it waits stops the engine (its cancel hook) and, as Cancel does, puts back the
        parameters and groups of the result shown.
        """
        self._stop_running()
        cancel = threading.Event()
        try:
            future = self._worker_pool().submit(self._compute, dict(self.params), cancel=cancel)
            try:
                outcome = future.result(timeout=BUSY_DELAY)
            except _FutureTimeout:
                self._show_solving()
                outcome = future.result()
        except BaseException:  # the kernel's Interrupt (KeyboardInterrupt): stop the engine too
            cancel.set()
            self._revert()
            self._views.remove_class("smnb-app-solving")
            self._set_status("interrupted: the views show the last result")
            raise
        return self._show(outcome)

    def _worker_pool(self) -> ThreadPoolExecutor:
        """The thread that runs the solves, one at a time."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skymatch-app")
        return self._worker

    def _stop_running(self):
        """Forget the page's solve (stale now) and wait until the worker is free."""
        running = self._solves.take_over()
        self._show_busy(False)
        if running is None:
            return
        try:
            running.future.result()
        except Exception:  # its outcome is dropped whatever it is
            pass

    def _compute(self, params: dict, *, cancel: threading.Event | None = None, progress=None):
        """One solve: (result, milliseconds, warnings, params) or what stopped it.

        An exception the engine raised for the parameters is returned; a cancelled run
        returns `SkyMatchCancelled`.  Runs in the worker thread for the page's solves.
        """
        hooks = {"cancel": cancel, "progress": progress}
        hooks = {k: v for k, v in hooks.items() if k in self._hooks and v is not None}
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = self.collection.skymatch(**params, **hooks)
            except (ValueError, TypeError) as exc:
                return exc
            except SkyMatchCancelled as exc:
                return exc
        elapsed = (time.perf_counter() - start) * 1e3
        return result, elapsed, [str(c.message) for c in caught], params

    def _reporter(self, loop, solve: PageSolve):
        """The engine's progress callback, called in the worker thread.

        Reports reach the page's loop at most every `PROGRESS_INTERVAL` seconds, and at the end
        of each stage.
        """
        last = [0.0]

        def report(progress) -> None:
            now = time.monotonic()
            if progress.done < progress.total and now - last[0] < PROGRESS_INTERVAL:
                return
            last[0] = now
            loop.call_soon_threadsafe(self._show_progress, solve, progress.stage,
                                      progress.done, progress.total)

        return report

    def _show_progress(self, solve: PageSolve, stage: str, done: int, total: int):
        if not self._solves.is_current(solve) or self._busy.layout.display == "none":
            return  # a report of a solve no longer current, or of one too quick to show it
        self._progress.layout.visibility = "visible"
        self._progress.value = done / total if total else 1.0
        self._progress.description = stage
        self._set_status(f"solving… {stage} {done:,} of {total:,}"
                         + (" (the views show the previous result)" if self.result is not None else ""))

    def _busy_soon(self, loop):
        """Say that the page's change is being solved if it still is in `BUSY_DELAY` seconds."""
        if self._busy.layout.display == "none" and self._busy_timer is None:
            self._busy_timer = loop.call_later(BUSY_DELAY, self._still_busy)

    def _still_busy(self):
        """`BUSY_DELAY` after a page change: "solving…" and the progress bar if still solving."""
        self._busy_timer = None
        if self._solves.busy:
            self._show_solving()
            self._show_busy(True)

    def _show_busy(self, busy: bool):
        """The progress bar (shown at the first progress report) and Cancel, while busy."""
        if not busy and self._busy_timer is not None:
            self._busy_timer.cancel()
            self._busy_timer = None
        if busy and self._busy.layout.display == "none":
            self._progress.value = 0.0
            self._progress.layout.visibility = "hidden"
        self._busy.layout.display = "flex" if busy else "none"

    def _revert(self):
        """Put back the parameters and groups of the result shown (after a cancel)."""
        if self._shown_state is None:
            return
        params, groups = self._shown_state
        self._reverting = True
        try:
            if params != self.params:
                self.params = params
            if groups != dict(self.collection.groups) or any(
                    type(groups[n]) is not type(g) for n, g in self.collection.groups.items()):
                self.groups = groups
        finally:
            self._reverting = False

    def _show(self, outcome, groups: dict | None = None) -> xr.Dataset | None:
        """Put a solve's outcome in every view (an error: only in the status line).

        ``groups``: those the solve saw (default: the collection's now).
        """
        self._views.remove_class("smnb-app-solving")
        if isinstance(outcome, SkyMatchCancelled):
            self._set_status("cancelled: the views show the last result")
            return None
        if isinstance(outcome, Exception):
            self._set_status(f"error: {outcome}", error=True)
            return None
        result, elapsed, messages, params = outcome
        self._shown_state = (params, dict(self.collection.groups) if groups is None else groups)
        self.map.update(result)
        self.table.update(result)
        self._plot.update(result, self._indices(self.selected))
        self._set_status(
            f"{result.attrs['skymethod']} / {result.attrs['skystat']}: solved in {elapsed:.0f} ms; "
            + _summary(result) + "".join(f"; warning: {m}" for m in messages),
            warning=bool(messages),
        )
        self.result = result
        return result

    def _show_solving(self):
        """Say that a solve is under way; the views, dimmed, keep the last result meanwhile."""
        if self.result is not None:
            self._views.add_class("smnb-app-solving")
        self._set_status("solving…" + (
            " (the views show the previous result until it is done)" if self.result is not None else ""))

    def _set_status(self, text: str, *, error: bool = False, warning: bool = False):
        self.status = text
        self._status.value = _status_html(text, error=error, warning=warning)

    def _indices(self, names) -> list[int]:
        index = {n: k for k, n in enumerate(self.collection.names)}
        return [index[n] for n in names if n in index]


def _engine_hooks(collection) -> set[str]:
    """Which of the engine's ``progress`` and ``cancel`` hooks the collection's skymatch takes."""
    parameters = inspect.signature(type(collection).skymatch).parameters
    return {name for name in ("progress", "cancel") if name in parameters}


def _summary(result: xr.Dataset) -> str:
    return (f"{int(result.valid.sum())} of {result.sizes['image']} images valid; "
            f"{int(result.component.max()) + 1} component(s)")


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: Styles of the app's own parts (the components bring theirs): the views dim while a solve
#: runs, after a short delay so that quick solves do not flicker.  Only properties that are not
#: inherited change with the class (no ``cursor``): an inherited one would make the browser
#: recompute the style of every element of the views (thousands of footprints and points) twice
#: per solve (measured: ~100 ms of a 1,000-image re-solve in JupyterLab).
#: bqplot's own dark palette writes titles and axis labels in orange: in the app they take
#: JupyterLab's text colour, as every other text of the page (each variable set here: bqplot
#: derives the last two from the first where it sets it, on the page's body).
_APP_STYLE = """<style>
.smnb-app-views { transition: opacity 0.15s; }
.smnb-app-views.smnb-app-solving { opacity: 0.55; transition: opacity 0.2s 0.3s; }
.smnb-app {
  --bq-content-font-color: var(--jp-content-font-color1);
  --bq-mainheading-fill: var(--jp-content-font-color1);
  --bq-axislabel-fill: var(--jp-content-font-color1);
}
</style>"""


def _checked_params(params: dict) -> dict:
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; the app controls {sorted(DEFAULT_PARAMS)}"
        )
    return dict(params)


def _check_values(params: dict) -> None:
    """Raise ValueError/TypeError for a bad value, as the engine would (before solving)."""
    SkyMatchParams(**params)


def _controls() -> dict:
    """One control per controlled parameter, made from its `ParamSpec`."""
    return {name: _control(spec) for name, spec in CONTROLLED.items()}


def _control(spec) -> w.Widget:
    """The control of one parameter: its kind, choices, range and step; its help as tooltip.

    A choice is a dropdown, a bool a checkbox, a number that may be None a text field
    ("none" or empty for None, parsed by `_parse`), other numbers bounded number fields.
    """
    common = dict(description=spec.name, tooltip=spec.help, style={"description_width": "initial"})
    label = 7 * len(spec.name)  # about the pixels of the description
    if spec.kind == "choice":
        width = label + 8 * max(len(c) for c in spec.choices) + 48
        return w.Dropdown(options=list(spec.choices), layout=w.Layout(width=f"{width}px"), **common)
    if spec.kind == "bool":
        return w.Checkbox(indent=False, layout=w.Layout(width=f"{label + 36}px"), **common)
    layout = w.Layout(width=f"{max(150, label + 90)}px")
    if spec.nullable:
        return w.Text(placeholder="none", continuous_update=False, layout=layout, **common)
    low = spec.widget_min if spec.widget_min is not None else spec.minimum
    bounds = {"min": low if low is not None else -1e300,
              "max": spec.widget_max if spec.widget_max is not None else 1e300}
    if spec.step is not None:
        bounds["step"] = spec.step
    if spec.kind == "int":
        bounds = {k: int(max(min(v, 2**31 - 1), -(2**31))) for k, v in bounds.items()}
        return w.BoundedIntText(layout=layout, **bounds, **common)
    return w.BoundedFloatText(layout=layout, **bounds, **common)


def _parse(spec, text: str):
    """The value of a text field of a parameter that may be None ("" or "none": None)."""
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return None
    try:
        return int(text) if spec.kind == "int" else float(text)
    except ValueError:
        kind = "an integer" if spec.kind == "int" else "a number"
        raise ValueError(f"{spec.name} must be {kind} or empty; got {text!r}") from None


def _status_html(text: str, *, error: bool = False, warning: bool = False) -> str:
    import html

    color = ("var(--jp-error-color1, #d32f2f)" if error else
             "var(--jp-warn-color1, #f57c00)" if warning else "var(--jp-ui-font-color2, #555)")
    return (f"<div class='smnb-status' role='status' style='color:{color};"
            f"font-family:var(--jp-ui-font-family, sans-serif)'>{html.escape(text)}</div>")


#: Name at most this many images along the sky plot's x axis (then every k-th).
MAX_IMAGE_TICKS = 16
MAX_PAIR_TICKS = 12
#: Above this many points a plot shows ranges: per bin of consecutive images (pairs), the span
#: of their values as one bar (level of detail: thousands of SVG points would stall the page);
#: the sky plot then draws the selected images as points.  bqplot redraws every point of a
#: changed mark through a d3 transition that reads each point's computed style: 1,000 points
#: and their error bars cost ~150-300 ms per re-solve in JupyterLab (bench/bench_app_lab.py),
#: 400 range bars a fraction of it.  (On a 390-pixel plot 500 points are under a pixel apart.)
MAX_PLOT_POINTS = 500
#: The number of bins of such a plot.
PLOT_BINS = 400


class _SkyPlot:
    """bqplot panel: the sky of each image, and each overlap's difference.

    The sky plot names the images on its x axis, with error bars, and marks images without a
    valid sky as crosses on the bottom edge (never as a value); the differences before and
    after matching have their legend above the plot, not over the points.  The marks take the
    colours of the figures (`skymatch_nb_ui.display.colors`) on a light page and their dark-page
    variants on a dark one (`set_theme`): bqplot's colours cannot follow CSS variables.
    """

    def __init__(self):
        import bqplot as bq

        self._bq = bq
        colors = theme_colors(False)
        x, y = bq.LinearScale(min=-0.5, max=0.5), bq.LinearScale()
        self._x, self._y = x, y
        self._sky = bq.Scatter(x=[0], y=[0], scales={"x": x, "y": y}, default_size=40,
                               interactions={"click": "select"}, colors=[colors.data],
                               selected_style={"fill": colors.bad, "stroke": colors.bad},
                               unselected_style={"opacity": 0.6})
        # error bars and ranges: one path, the segments apart (NaN gaps; see `_segments`)
        self._bars = bq.Lines(x=[0, 0], y=[np.nan, np.nan], scales={"x": x, "y": y}, colors=[colors.data])
        self._invalid = bq.Scatter(x=[], y=[], scales={"x": x, "y": y}, marker="cross",
                                   colors=[colors.bad], default_size=50)
        self._x_axis = bq.Axis(scale=x, tick_rotate=-35, label_offset="66px",
                               tick_style={"font-size": "11px", "text-anchor": "end"})
        self._sky_axis = bq.Axis(scale=y, side="left", label="sky")  # (its unit: `update`)
        self._sky_fig = bq.Figure(
            marks=[self._bars, self._sky, self._invalid],
            axes=[self._x_axis, self._sky_axis],
            title="sky per image (±1σ)", layout=w.Layout(width="390px", height="280px"),
            fig_margin={"top": 40, "bottom": 62, "left": 60, "right": 24},
        )
        px, py = bq.LinearScale(min=-0.5, max=0.5), bq.LinearScale()
        self._px = px
        self._before = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=[colors.before],
                                  default_size=30)
        self._after = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=[colors.data],
                                 default_size=30)
        self._zero = bq.Lines(x=[-0.5, 0.5], y=[0, 0], scales={"x": px, "y": py},
                              colors=[colors.zero], line_style="dashed", stroke_width=1)
        # many pairs: the range of the differences per bin of pairs instead of the points
        self._before_range = bq.Lines(x=[0, 0], y=[np.nan, np.nan], scales={"x": px, "y": py},
                                      colors=[colors.before], stroke_width=3)
        self._after_range = bq.Lines(x=[0, 0], y=[np.nan, np.nan], scales={"x": px, "y": py},
                                     colors=[colors.data], stroke_width=1.5)
        self._p_axis = bq.Axis(scale=px, label="overlap (pair)", tick_format=",d")  # 15,985
        self._difference_axis = bq.Axis(scale=py, side="left", label="difference")
        pair_fig = bq.Figure(
            marks=[self._zero, self._before_range, self._after_range, self._before, self._after],
            axes=[self._p_axis, self._difference_axis],
            layout=w.Layout(width="390px", height="240px"),
            fig_margin={"top": 12, "bottom": 40, "left": 60, "right": 24},
        )
        # the title and its legend above the plot, never over the points
        self._heading = w.HTML(_pairs_heading(colors), layout=w.Layout(width="390px"))
        self._valid_idx = np.zeros(0, int)
        self.box = w.VBox([self._sky_fig, self._heading, pair_fig])

    def set_theme(self, dark: bool) -> None:
        """Colour the marks for a dark (True) or light page."""
        colors = theme_colors(dark)
        # the selection's style first: bqplot clears the style it replaces from every point,
        # and the new colours then paint them again
        self._sky.selected_style = {"fill": colors.bad, "stroke": colors.bad}
        self._sky.colors = self._bars.colors = self._after.colors = [colors.data]
        self._after_range.colors = [colors.data]
        self._invalid.colors = [colors.bad]
        self._before.colors = self._before_range.colors = [colors.before]
        self._zero.colors = [colors.zero]
        self._heading.value = _pairs_heading(colors)

    def update(self, result: xr.Dataset, selected: list[int]):
        names = [str(n) for n in result.image.values]
        n = len(names)
        sky, err = result.sky.values.astype(float), result.sky_err.values.astype(float)
        ok = np.isfinite(sky) & result.valid.values.astype(bool)
        self._sky_values, self._ok = sky, ok
        self._ranges = int(ok.sum()) > MAX_PLOT_POINTS
        idx = np.arange(n)
        err_ok = np.where(np.isfinite(err), err, 0.0)
        lo, hi = _padded_range(np.concatenate([sky[ok] - err_ok[ok], sky[ok] + err_ok[ok]]))
        ticks = idx[:: max(1, -(-n // MAX_IMAGE_TICKS))]
        low, high = np.where(ok, sky - err_ok, np.nan), np.where(ok, sky + err_ok, np.nan)
        if self._ranges:
            bars_x, bars_y, size = _binned_ranges(low, high)
            invalid = _binned_any(~ok, size)
        else:
            bars_x, bars_y = np.stack([idx[ok]] * 2, axis=1), np.stack([low[ok], high[ok]], axis=1)
            invalid = idx[~ok]
        # one message per model (a scale's min and max together: bqplot re-lays out its marks
        # on each message)
        with self._sky.hold_sync(), self._bars.hold_sync(), self._invalid.hold_sync(), \
                self._x.hold_sync(), self._y.hold_sync(), self._x_axis.hold_sync():
            self._x.min, self._x.max = -0.5, n - 0.5
            self._y.min, self._y.max = lo, hi
            labels, pattern = short_names(names)  # (what pipeline file names share, once)
            self._x_axis.tick_values = ticks
            self._x_axis.tick_labels = {int(k): labels[k] for k in ticks}
            self._x_axis.label = pattern  # below the slanted names, in a wider margin
            margin = {**self._sky_fig.fig_margin, "bottom": 80 if pattern else 62}
            if self._sky_fig.fig_margin != margin:
                self._sky_fig.fig_margin = margin
            _set_lines(self._bars, *_segments(bars_x, bars_y))
            self._invalid.x = invalid
            self._invalid.y = np.full(len(invalid), lo + 0.04 * (hi - lo))
            self._draw_points(selected)
        title = "sky per image (±1σ)" if not self._ranges else (
            f"sky (±1σ range per {-(-n // PLOT_BINS)} images)")  # fits the 390-px figure
        self._sky_fig.title = title + ("; × no valid sky" if (~ok).any() else "")
        unit = sky_unit(result)
        self._sky_axis.label = with_unit("sky", unit)
        self._difference_axis.label = with_unit("difference", unit)
        self._update_pairs(result)

    def _update_pairs(self, result: xr.Dataset):
        m = result.sizes.get("pair", 0)
        k = np.arange(m)
        before = result.diff_before.values.astype(float) if m else np.zeros(0)
        after = result.diff_after.values.astype(float) if m else np.zeros(0)
        ranges = m > MAX_PLOT_POINTS
        with self._before.hold_sync(), self._after.hold_sync(), self._px.hold_sync(), \
                self._p_axis.hold_sync():
            self._px.min, self._px.max = -0.5, max(m, 1) - 0.5
            ticks = MAX_PAIR_TICKS if m < 1000 else MAX_PAIR_TICKS // 2  # long numbers: fewer
            self._p_axis.tick_values = k[:: max(1, -(-m // ticks))]
            self._zero.x = [-0.5, max(m, 1) - 0.5]
            for points, spans, values in ((self._before, self._before_range, before),
                                          (self._after, self._after_range, after)):
                shown = np.isfinite(values) & (not ranges)
                points.x, points.y = k[shown], values[shown]
                x, y, _ = _binned_ranges(values, values) if ranges else ([], [], 1)
                _set_lines(spans, *_segments(x, y))

    def _draw_points(self, selected: list[int]):
        """The points of the sky plot: every valid image, or (ranges) the selected ones."""
        ok = self._ok
        shown = np.flatnonzero(ok)
        if self._ranges:
            shown = np.array(sorted(k for k in selected if 0 <= k < len(ok) and ok[k]), dtype=int)
        self._valid_idx = shown
        with self._sky.hold_sync():
            self._sky.x, self._sky.y = shown, self._sky_values[shown]
            self._sky.selected = self._positions(selected)

    def _positions(self, indices: list[int]):
        """Points of the scatter (valid images only) of the given image indices."""
        where = {int(k): p for p, k in enumerate(self._valid_idx)}
        positions = [where[k] for k in indices if k in where]
        return positions or None

    def select(self, indices: list[int]):
        if self._ranges:
            self._draw_points(indices)
        else:
            self._sky.selected = self._positions(indices)

    def on_select(self, callback):
        """Call ``callback(image indices)`` when points are clicked in the sky plot."""
        self._sky.observe(
            lambda change: callback([] if change["new"] is None else
                                    [int(self._valid_idx[p]) for p in change["new"]]),
            "selected")


def _pairs_heading(colors) -> str:
    """The pair plot's title, styled as bqplot styles its own titles, and its legend."""
    return (
        "<div class='smnb-app-legend' style='text-align:center;padding-left:36px;"
        "color:var(--bq-content-font-color, var(--jp-content-font-color1, #333))'>"
        "<div style='font:var(--bq-mainheading-font, 16px sans-serif)'>overlap differences</div>"
        "<div style='font:12px var(--jp-ui-font-family, sans-serif)'>"
        f"<span style='color:{colors.before}'>●</span> before matching &nbsp; "
        f"<span style='color:{colors.data}'>●</span> after</div></div>"
    )


class _ThemeProbe(anywidget.AnyWidget):
    """Tells Python whether the page around the app is dark (for bqplot's colours).

    In the page it also keeps JupyterLab's notebook shortcuts (the arrow keys) off the app's
    rows of controls (class ``smnb-app-keys``), so a focused dropdown steps with the keyboard.
    """

    _esm = esm("theme_probe.js")
    dark = traitlets.Bool(False).tag(sync=True)


def _segments(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Vertical segments ((k, 2) ends each) as one polyline with gaps, for one bqplot path.

    A bqplot `Lines` with k curves draws k SVG paths and redraws each through a d3 transition
    on every update; one curve whose y is NaN between the segments draws the same picture as a
    single path (bqplot leaves a gap at a non-finite y).
    """
    x, y = np.asarray(x, float).reshape(-1, 2), np.asarray(y, float).reshape(-1, 2)
    if len(x) == 0:
        return np.zeros(2), np.full(2, np.nan)
    gap = np.full((len(y), 1), np.nan)
    return np.hstack([x, x[:, :1]]).ravel(), np.hstack([y, gap]).ravel()


def _set_lines(mark, x: np.ndarray, y: np.ndarray) -> None:
    """Give a bqplot `Lines` new x and y unless they are the same (NaN gaps included).

    traitlets sees arrays with NaNs as changed even when equal: they would be sent and redrawn.
    """
    for name, value in (("x", x), ("y", y)):
        old = np.asarray(getattr(mark, name), float)
        if old.shape != value.shape or not np.array_equal(old, value, equal_nan=True):
            setattr(mark, name, value)


def _binned_ranges(low: np.ndarray, high: np.ndarray, bins: int = PLOT_BINS):
    """Per bin of consecutive items, the segment from the lowest ``low`` to the highest ``high``.

    Returns (x, y) of shape (k, 2) each (bins without a finite value left out) and the bin size.
    """
    size = max(1, -(-len(low) // bins))
    pad = (-len(low)) % size
    lo = np.concatenate([np.where(np.isfinite(low), low, np.inf), np.full(pad, np.inf)]).reshape(-1, size)
    hi = np.concatenate([np.where(np.isfinite(high), high, -np.inf), np.full(pad, -np.inf)]).reshape(-1, size)
    lo, hi = lo.min(axis=1), hi.max(axis=1)
    keep = np.isfinite(lo) & np.isfinite(hi)
    centre = (np.arange(len(lo)) * size + (size - 1) / 2)[keep]
    return np.stack([centre, centre], axis=1), np.stack([lo[keep], hi[keep]], axis=1), size


def _binned_any(flags: np.ndarray, size: int) -> np.ndarray:
    """The centres of the bins of ``size`` items where any flag is set."""
    pad = (-len(flags)) % size
    hit = np.concatenate([flags, np.zeros(pad, bool)]).reshape(-1, size).any(axis=1)
    return (np.flatnonzero(hit) * size + (size - 1) / 2).astype(float)


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    """(low, high) around the finite values with 8% to spare (and room for the crosses)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - 0.12 * span, hi + 0.08 * span
