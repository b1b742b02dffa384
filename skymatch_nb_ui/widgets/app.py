"""SkyMatchApp: the footprint map, group editor and results table, with live re-solving."""

from __future__ import annotations

import asyncio
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as w
import numpy as np
import traitlets
import xarray as xr

from .._colors import CATEGORICAL
from ..engine import ANCHORS, COMPARES, SKYMETHODS, SKYSTATS
from .footprint_map import FootprintMap
from .group_editor import GroupEditor
from .results_table import ResultsTable

__all__ = ["SkyMatchApp"]

#: The parameters the app controls, with the engine's defaults.
DEFAULT_PARAMS = dict(
    skymethod="match", skystat="mode", match_down=True, lower=None, upper=None, nclip=5,
    lsigma=4.0, usigma=4.0, binwidth=0.1, anchor="global", compare="differences", robust=True,
)


class SkyMatchApp(w.VBox):
    """Interactive sky matching of an `ImageCollection`: see, group, re-solve.

    Any change of a parameter or of the groups re-runs the solve, re-using the engine's stage
    cache, and every view updates.  The Python face mirrors the UI:

    - ``app.params`` (dict): the engine parameters; assign a dict (or part of one) to change them;
    - ``app.groups`` (dict name -> label or None): the collection's own labels; assign to regroup;
    - ``app.selected`` (list of names): the selection shared by the map, table and plots;
    - ``app.result`` (xarray.Dataset): the latest result; ``app.pairs``: its pair diagnostics;
    - ``app.status`` (str): what the status line shows.

    When the solve runs:

    - an assignment from Python (``app.params = ...``, ``app.groups = ...``, a call such as
      ``app.editor.assign(...)``) solves before it returns, so the next line reads the new
      ``app.result``;
    - a change made in the page (a control, the group editor) is debounced: the solve starts
      once the changes pause for ``debounce`` seconds, so typing or clicking through values
      solves once.  The kernel runs one thing at a time, so the page cannot be served while a
      solve computes; instead the status line says "solving…" and the views, dimmed, keep
      the last good result until the new one is there.  A solve that a newer change made
      stale is dropped: a pending one is cancelled, and the result of one that finished after
      a newer change arrived is not shown (the newer change solves next).  A solve that fails
      (a parameter the engine refuses) leaves the views as they were and says why.

    Building the app never changes the collection: its group labels stay as they are (the
    editor shows them as text).

    Parameters
    ----------
    collection : ImageCollection
        The images.
    debounce : float
        Seconds a change made in the page waits for further changes before solving (0: solve
        at once).  Changes made from Python never wait.
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
    result = traitlets.Instance(xr.Dataset, allow_none=True)
    pairs = traitlets.Instance(xr.Dataset, allow_none=True)

    def __init__(self, collection, *, debounce: float = 0.15, **params):
        self.collection = collection
        self.debounce = float(debounce)
        self._pending = None  # the timer of a debounced solve
        self._task = None  # the debounced solve under way (a reference keeps it alive)
        self._generation = 0  # counts changes: a solve started before the last one is stale
        self._page = 0  # > 0 while a change from the page is being applied
        self._updating = False
        self._starting = True  # the initial groups and params trigger one solve, below
        self.map = FootprintMap(collection)
        self.editor = GroupEditor(collection)
        self.table = ResultsTable(collection)
        self._controls = _controls()
        self._status = w.HTML(layout=w.Layout(min_height="1.6em"))
        self._export = {
            "kind": w.Dropdown(options=[("footprint map", "footprints"), ("overlap differences", "pairs"),
                                        ("sky per image", "sky")], layout=w.Layout(width="180px")),
            "file": w.Text(value="skymatch_figure.pdf", layout=w.Layout(width="220px"),
                           description="file", style={"description_width": "initial"}),
            "button": w.Button(description="Export figure", icon="download",
                               tooltip="Save a publication-quality figure (matplotlib) to the file"),
        }
        self._export["button"].on_click(self._on_export)
        self._plot = _SkyPlot()
        super().__init__(layout=w.Layout(width="100%"))
        self.add_class("smnb-app")
        self.map.layout = w.Layout(flex="1 1 560px", min_width="420px")
        self._plot.box.layout = w.Layout(flex="0 0 400px")
        self._views = w.HBox([self.map, self._plot.box],
                             layout=w.Layout(align_items="flex-start", flex_flow="row wrap", width="100%"))
        self._views.add_class("smnb-app-views")
        self.children = [
            w.HTML(_APP_STYLE, layout=w.Layout(display="none")),
            w.HBox(list(self._controls.values()), layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self._status, w.HBox(list(self._export.values()))],
                   layout=w.Layout(justify_content="space-between", flex_flow="row wrap")),
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
        """The collection checks the groups and keeps the labels as given.

        Unknown image names raise; `groups` is then what the collection holds.
        """
        self.collection.groups = proposal["value"]
        return dict(self.collection.groups)

    @traitlets.observe("groups")
    def _on_groups(self, change):
        if self.editor.groups != self.editor._texts(self.collection.groups):
            self.editor.refresh()
        self._changed()

    def export_figure(self, path, kind: str = "footprints", *, dpi: int = 300, overwrite: bool = False,
                      **options) -> Path:
        """Save a publication figure of the current result (what the Export button does).

        Parameters
        ----------
        path : str or Path
            The file; its suffix chooses the format (``.pdf``, ``.svg``, ``.png``, ...).
        kind : {'footprints', 'pairs', 'sky'}
            `plotting.plot_footprints` (coloured as the map is), `plotting.plot_pair_residuals`
            or `plotting.plot_sky`.
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
            "pairs": lambda: plotting.plot_pair_residuals(self.pairs, **options),
            "sky": lambda: plotting.plot_sky(self.result, **options),
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
        """Solve now with the current parameters and groups (cancels a debounced solve).

        Returns the new result, or None when the engine refused the parameters (the status
        says why; `result` keeps the last good one).
        """
        return self._solve_now()

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

    def _on_plot_select(self, indices: list[int]):
        names = [self.collection.names[k] for k in indices]
        if names != list(self.selected):
            self.selected = names

    def _on_editor_groups(self, change):
        groups = dict(self.collection.groups)  # the editor wrote them, labels kept
        if groups != self.groups:
            with self._from_page(self.editor.from_page):
                self.groups = groups

    def _on_control(self, name, change):
        if self._updating:
            return
        value = change["new"]
        if name in ("lower", "upper"):
            text = str(value).strip()
            try:
                value = None if text.lower() in ("", "none") else float(text)
            except ValueError:
                self._set_status(f"error: {name} must be a number or empty; got {text!r}", error=True)
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
    def _changed(self):
        """Parameters or groups changed: solve now (Python) or debounced (the page)."""
        if self._starting:
            return
        if self._page and self.debounce > 0 and _running_loop() is not None:
            self._schedule()
        else:
            self._solve_now()

    def _schedule(self):
        """Solve once the page's changes pause for `debounce` seconds."""
        self._generation += 1
        self._cancel_pending()
        self._show_solving()
        self._pending = _running_loop().call_later(self.debounce, self._start_solve, self._generation)

    def _start_solve(self, generation: int):
        self._pending = None
        self._task = asyncio.ensure_future(self._solve_later(generation))

    async def _solve_later(self, generation: int):
        """The debounced solve, shown only if no change arrived meanwhile.

        After a long solve the loop first handles the page's messages that queued up.
        """
        if generation != self._generation:
            return  # a newer change is pending or was solved
        started = time.perf_counter()
        outcome = self._compute()
        if time.perf_counter() - started > 0.1:
            await asyncio.sleep(0.01)  # page messages queued during a long solve are handled now
        if generation == self._generation:
            self._show(outcome)

    def _solve_now(self) -> xr.Dataset | None:
        self._generation += 1
        self._cancel_pending()
        self._show_solving()
        return self._show(self._compute())

    def _cancel_pending(self):
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _compute(self):
        """One solve: (result, pairs, milliseconds, warnings) or the exception it raised."""
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = self.collection.skymatch(**self.params)
            except (ValueError, TypeError) as exc:
                return exc
        elapsed = (time.perf_counter() - start) * 1e3
        return result, self.collection.last_pairs, elapsed, [str(c.message) for c in caught]

    def _show(self, outcome) -> xr.Dataset | None:
        """Put a solve's outcome in every view (an error: only in the status line)."""
        self._views.remove_class("smnb-app-solving")
        if isinstance(outcome, Exception):
            self._set_status(f"error: {outcome}", error=True)
            return None
        result, pairs, elapsed, messages = outcome
        self.map.update(result, pairs)
        self.table.update(result)
        self._plot.update(result, pairs, self._indices(self.selected))
        valid = int(result.valid.sum())
        self._set_status(
            f"{result.attrs['skymethod']} / {result.attrs['skystat']}: solved in {elapsed:.0f} ms; "
            f"{valid} of {len(result.sky)} images valid; "
            f"{int(result.component.max()) + 1} component(s)"
            + "".join(f"; warning: {m}" for m in messages),
            warning=bool(messages),
        )
        self.pairs = pairs
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


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


#: Styles of the app's own parts (the components bring theirs): the views dim while a solve
#: runs, after a short delay so that quick solves do not flicker.
_APP_STYLE = """<style>
.smnb-app-views { transition: opacity 0.15s; }
.smnb-app-views.smnb-app-solving { opacity: 0.55; transition: opacity 0.2s 0.3s; cursor: progress; }
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
    from ..engine import SkyMatchParams

    SkyMatchParams(**params)


def _controls() -> dict:
    style = {"description_width": "initial"}
    narrow = w.Layout(width="150px")
    return {
        "skymethod": w.Dropdown(options=list(SKYMETHODS), description="skymethod", style=style,
                                layout=w.Layout(width="210px")),
        "skystat": w.Dropdown(options=list(SKYSTATS), description="skystat", style=style,
                              layout=w.Layout(width="160px")),
        "match_down": w.Checkbox(description="match_down", indent=False, layout=w.Layout(width="120px")),
        "anchor": w.Dropdown(options=list(ANCHORS), description="anchor", style=style,
                             layout=w.Layout(width="180px")),
        "compare": w.Dropdown(options=list(COMPARES), description="compare", style=style,
                              layout=w.Layout(width="200px")),
        "robust": w.Checkbox(description="robust", indent=False, layout=w.Layout(width="90px")),
        "lower": w.Text(description="lower", placeholder="none", style=style, layout=narrow,
                        continuous_update=False),
        "upper": w.Text(description="upper", placeholder="none", style=style, layout=narrow,
                        continuous_update=False),
        "nclip": w.BoundedIntText(min=0, max=100, description="nclip", style=style, layout=narrow),
        "lsigma": w.BoundedFloatText(min=0.01, max=100, step=0.5, description="lsigma", style=style,
                                     layout=narrow),
        "usigma": w.BoundedFloatText(min=0.01, max=100, step=0.5, description="usigma", style=style,
                                     layout=narrow),
        "binwidth": w.BoundedFloatText(min=0.001, max=10, step=0.05, description="binwidth",
                                       style=style, layout=narrow),
    }


def _status_html(text: str, *, error: bool = False, warning: bool = False) -> str:
    import html

    color = ("var(--jp-error-color1, #d32f2f)" if error else
             "var(--jp-warn-color1, #f57c00)" if warning else "var(--jp-ui-font-color2, #555)")
    return (f"<div class='smnb-status' role='status' style='color:{color};"
            f"font-family:var(--jp-ui-font-family, sans-serif)'>{html.escape(text)}</div>")


#: Colours of the figures in `skymatch_nb_ui.plotting` (DATA_COLOR, BAD_COLOR, BEFORE_COLOR):
#: a widget and a figure of one result agree.
DATA_COLOR = CATEGORICAL[4]  # blue: the sky, the residuals after matching
BAD_COLOR = CATEGORICAL[5]  # vermillion: no valid sky
BEFORE_COLOR = "#737373"  # grey: the differences before matching
#: Name at most this many images along the sky plot's x axis (then every k-th).
MAX_IMAGE_TICKS = 16
MAX_PAIR_TICKS = 12


class _SkyPlot:
    """bqplot panel: the sky of each image, and each overlap's difference.

    The sky plot names the images on its x axis, with error bars, and marks images without a
    valid sky as crosses on the bottom edge (never as a value); the differences before and
    after matching have their legend above the plot, not over the points.
    """

    def __init__(self):
        import bqplot as bq

        self._bq = bq
        x, y = bq.LinearScale(min=-0.5, max=0.5), bq.LinearScale()
        self._x, self._y = x, y
        self._sky = bq.Scatter(x=[0], y=[0], scales={"x": x, "y": y}, default_size=40,
                               interactions={"click": "select"}, colors=[DATA_COLOR],
                               selected_style={"fill": BAD_COLOR, "stroke": BAD_COLOR},
                               unselected_style={"opacity": 0.6})
        self._bars = bq.Lines(x=[[0, 0]], y=[[0, 0]], scales={"x": x, "y": y}, colors=[DATA_COLOR])
        self._invalid = bq.Scatter(x=[], y=[], scales={"x": x, "y": y}, marker="cross",
                                   colors=[BAD_COLOR], default_size=50)
        self._x_axis = bq.Axis(scale=x, tick_rotate=-35,
                               tick_style={"font-size": "11px", "text-anchor": "end"})
        self._sky_fig = bq.Figure(
            marks=[self._bars, self._sky, self._invalid],
            axes=[self._x_axis, bq.Axis(scale=y, side="left", label="sky")],
            title="sky per image (±1σ)", layout=w.Layout(width="390px", height="280px"),
            fig_margin={"top": 40, "bottom": 62, "left": 60, "right": 24},
        )
        px, py = bq.LinearScale(min=-0.5, max=0.5), bq.LinearScale()
        self._px = px
        self._before = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=[BEFORE_COLOR],
                                  default_size=30)
        self._after = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=[DATA_COLOR],
                                 default_size=30)
        self._zero = bq.Lines(x=[-0.5, 0.5], y=[0, 0], scales={"x": px, "y": py},
                              colors=["#9e9e9e"], line_style="dashed", stroke_width=1)
        self._p_axis = bq.Axis(scale=px, label="overlap (pair)", tick_format="d")
        pair_fig = bq.Figure(
            marks=[self._zero, self._before, self._after],
            axes=[self._p_axis, bq.Axis(scale=py, side="left", label="difference")],
            layout=w.Layout(width="390px", height="240px"),
            fig_margin={"top": 12, "bottom": 40, "left": 60, "right": 24},
        )
        # the title and its legend above the plot, never over the points
        heading = w.HTML(
            "<div class='smnb-app-legend' style='font-family:var(--jp-ui-font-family, sans-serif);"
            "color:var(--jp-ui-font-color1, #333);text-align:center;padding-left:36px'>"
            "<div style='font-size:16px'>overlap differences</div><div style='font-size:12px'>"
            f"<span style='color:{BEFORE_COLOR}'>●</span> before matching &nbsp; "
            f"<span style='color:{DATA_COLOR}'>●</span> after</div></div>",
            layout=w.Layout(width="390px"))
        self._valid_idx = np.zeros(0, int)
        self.box = w.VBox([self._sky_fig, heading, pair_fig])

    def update(self, result: xr.Dataset, pairs: xr.Dataset, selected: list[int]):
        names = [str(n) for n in result.image.values]
        n = len(names)
        sky, err = result.sky.values.astype(float), result.sky_err.values.astype(float)
        ok = np.isfinite(sky) & result.valid.values.astype(bool)
        idx = np.arange(n)
        self._valid_idx = idx[ok]
        err_ok = np.where(np.isfinite(err[ok]), err[ok], 0.0)
        lo, hi = _padded_range(np.concatenate([sky[ok] - err_ok, sky[ok] + err_ok]))
        ticks = idx[:: max(1, -(-n // MAX_IMAGE_TICKS))]
        with self._sky.hold_sync(), self._bars.hold_sync(), self._invalid.hold_sync():
            self._x.min, self._x.max = -0.5, n - 0.5
            self._y.min, self._y.max = lo, hi
            self._x_axis.tick_values = ticks
            self._x_axis.tick_labels = {int(k): names[k] for k in ticks}
            self._sky.x, self._sky.y = idx[ok], sky[ok]
            self._bars.x = np.stack([idx[ok], idx[ok]], axis=1) if ok.any() else [[0, 0]]
            self._bars.y = (np.stack([sky[ok] - err_ok, sky[ok] + err_ok], axis=1) if ok.any()
                            else [[np.nan, np.nan]])
            self._invalid.x = idx[~ok]
            self._invalid.y = np.full((~ok).sum(), lo + 0.04 * (hi - lo))
            self._sky.selected = self._positions(selected)
        self._sky_fig.title = ("sky per image (±1σ); × no valid sky" if (~ok).any()
                               else "sky per image (±1σ)")
        m = len(pairs.pair) if pairs is not None else 0
        k = np.arange(m)
        before = pairs.diff_before.values.astype(float) if m else np.zeros(0)
        after = pairs.diff_after.values.astype(float) if m else np.zeros(0)
        fb, fa = np.isfinite(before), np.isfinite(after)
        with self._before.hold_sync(), self._after.hold_sync():
            self._px.min, self._px.max = -0.5, max(m, 1) - 0.5
            self._p_axis.tick_values = k[:: max(1, -(-m // MAX_PAIR_TICKS))]
            self._zero.x = [-0.5, max(m, 1) - 0.5]
            self._before.x, self._before.y = k[fb], before[fb]
            self._after.x, self._after.y = k[fa], after[fa]

    def _positions(self, indices: list[int]):
        """Points of the scatter (valid images only) of the given image indices."""
        where = {int(k): p for p, k in enumerate(self._valid_idx)}
        positions = [where[k] for k in indices if k in where]
        return positions or None

    def select(self, indices: list[int]):
        self._sky.selected = self._positions(indices)

    def on_select(self, callback):
        """Call ``callback(image indices)`` when points are clicked in the sky plot."""
        self._sky.observe(
            lambda change: callback([] if change["new"] is None else
                                    [int(self._valid_idx[p]) for p in change["new"]]),
            "selected")


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    """(low, high) around the finite values with 8% to spare (and room for the crosses)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - 0.12 * span, hi + 0.08 * span
