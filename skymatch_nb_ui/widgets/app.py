"""SkyMatchApp: the footprint map, group editor and results table, with live re-solving."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
import warnings

import ipywidgets as w
import numpy as np
import traitlets
import xarray as xr

from ..engine import ANCHORS, SKYMETHODS, SKYSTATS
from .footprint_map import FootprintMap
from .group_editor import GroupEditor
from .results_table import ResultsTable

__all__ = ["SkyMatchApp"]

#: The parameters the app controls, with the engine's defaults.
DEFAULT_PARAMS = dict(
    skymethod="match", skystat="mode", match_down=True, lower=None, upper=None, nclip=5,
    lsigma=4.0, usigma=4.0, binwidth=0.1, anchor="global",
)


class SkyMatchApp(w.VBox):
    """Interactive sky matching of an `ImageCollection`: see, group, re-solve.

    Any change of a parameter or of the groups re-runs the solve (debounced), re-using the
    engine's stage cache, and every view updates.  The Python face mirrors the UI:

    - ``app.params`` (dict): the engine parameters; assign a dict (or part of one) to change them;
    - ``app.groups`` (dict name -> label or None): assign to regroup;
    - ``app.selected`` (list of names): the selection shared by the map, table and plots;
    - ``app.result`` (xarray.Dataset): the latest result; ``app.pairs``: its pair diagnostics;
    - ``app.status`` (str): what the status line shows.

    Parameters
    ----------
    collection : ImageCollection
        The images.
    debounce : float
        Seconds to wait after a change before solving, so that typing or dragging solves
        once (0: solve at once, synchronously).
    **params
        Initial engine parameters (``skymethod``, ``skystat``, ...).

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> from skymatch_nb_ui.widgets import SkyMatchApp
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> app = SkyMatchApp(ImageCollection.from_arrays(m.images, m.wcs, names=m.names),
    ...                   debounce=0, skymethod="global+match", skystat="mean")
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
        self._pending = None
        self._updating = False
        self._starting = True
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
        self._plot.box.layout = w.Layout(flex="0 0 390px")
        self.children = [
            w.HBox(list(self._controls.values()), layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self._status, w.HBox(list(self._export.values()))],
                   layout=w.Layout(justify_content="space-between", flex_flow="row wrap")),
            w.HBox([self.map, self._plot.box],
                   layout=w.Layout(align_items="flex-start", flex_flow="row wrap", width="100%")),
            self.editor,
            self.table,
        ]
        self._link_views()
        self._starting = True  # the initial groups and params trigger one solve, below
        try:
            self.groups = dict(collection.groups)
            self.params = {**DEFAULT_PARAMS, **_checked_params(params)}
        finally:
            self._starting = False
        self._solve()

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
        self._schedule()

    @traitlets.validate("groups")
    def _validate_groups(self, proposal):
        """Labels are kept as text (as the editor shows them); unknown image names raise."""
        self.collection.groups = _as_editor_groups(proposal["value"])
        return dict(self.collection.groups)

    @traitlets.observe("groups")
    def _on_groups(self, change):
        if self.editor.groups != _as_editor_groups(change["new"]):
            self.editor.groups = _as_editor_groups(change["new"])
        self._schedule()

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
        self.status = f"exported {kind} figure to {path}"
        self._status.value = _status_html(self.status)
        return path

    def _on_export(self, _button=None):
        try:
            self.export_figure(self._export["file"].value, self._export["kind"].value,
                               overwrite=True)
        except Exception as exc:  # shown to the user, who can fix the name or the folder
            self.status = f"error: could not export the figure: {exc}"
            self._status.value = _status_html(self.status, error=True)

    def solve(self) -> xr.Dataset | None:
        """Solve now with the current parameters and groups (what the debounce ends in)."""
        return self._solve()

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
        groups = {k: (None if v in (None, "") else v) for k, v in change["new"].items()}
        if groups != self.groups:
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
                self.status = f"error: {name} must be a number or empty; got {text!r}"
                self._status.value = _status_html(self.status, error=True)
                return
        try:
            self.params = {name: value}
        except (ValueError, TypeError) as exc:
            self.status = f"error: {exc}"
            self._status.value = _status_html(self.status, error=True)

    def _schedule(self):
        if self._starting:
            return
        if self.debounce <= 0:
            self._solve()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._solve()
            return
        if self._pending is not None:
            self._pending.cancel()
        self._status.value = _status_html("solving…")
        self._pending = loop.call_later(self.debounce, self._solve)

    def _solve(self):
        self._pending = None
        if not self.params:
            return None
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = self.collection.skymatch(**self.params)
            except (ValueError, TypeError) as exc:
                self.status = f"error: {exc}"
                self._status.value = _status_html(self.status, error=True)
                return None
        pairs = self.collection.last_pairs
        self.map.update(result, pairs)
        self.table.update(result)
        self._plot.update(result, pairs, self._indices(self.selected))
        elapsed = (time.perf_counter() - start) * 1e3
        valid = int(result.valid.sum())
        messages = [str(c.message) for c in caught]
        self.status = (
            f"{result.attrs['skymethod']} / {result.attrs['skystat']}: solved in {elapsed:.0f} ms; "
            f"{valid} of {len(result.sky)} images valid; "
            f"{int(result.component.max()) + 1} component(s)"
            + "".join(f"; warning: {m}" for m in messages)
        )
        self._status.value = _status_html(self.status, warning=bool(messages))
        self.pairs = pairs
        self.result = result
        return result

    def _indices(self, names) -> list[int]:
        index = {n: k for k, n in enumerate(self.collection.names)}
        return [index[n] for n in names if n in index]


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


def _as_editor_groups(groups: dict) -> dict:
    return {k: (None if v is None else str(v)) for k, v in groups.items()}


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


class _SkyPlot:
    """bqplot panel: sky per image with error bars; pair differences before and after."""

    def __init__(self):
        import bqplot as bq

        x, y = bq.LinearScale(), bq.LinearScale()
        self._sky = bq.Scatter(x=[0], y=[0], scales={"x": x, "y": y}, default_size=40,
                               interactions={"click": "select"},
                               colors=["#0072B2"], selected_style={"fill": "#D55E00", "stroke": "#D55E00"},
                               unselected_style={"opacity": 0.6})
        self._bars = bq.Lines(x=[[0, 0]], y=[[0, 0]], scales={"x": x, "y": y}, colors=["#0072B2"])
        sky_fig = bq.Figure(
            marks=[self._bars, self._sky],
            axes=[bq.Axis(scale=x, label="image"), bq.Axis(scale=y, side="left", label="sky")],
            title="sky per image (±1σ)", layout=w.Layout(width="380px", height="260px"),
            fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 10},
        )
        px, py = bq.LinearScale(), bq.LinearScale()
        self._before = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=["#999999"],
                                  default_size=30, labels=["before"], display_legend=True)
        self._after = bq.Scatter(x=[0], y=[0], scales={"x": px, "y": py}, colors=["#009E73"],
                                 default_size=30, labels=["after"], display_legend=True)
        pair_fig = bq.Figure(
            marks=[self._before, self._after],
            axes=[bq.Axis(scale=px, label="pair"), bq.Axis(scale=py, side="left", label="difference")],
            title="overlap differences", layout=w.Layout(width="380px", height="260px"),
            fig_margin={"top": 40, "bottom": 40, "left": 55, "right": 10}, legend_location="top-right",
        )
        self.box = w.VBox([sky_fig, pair_fig])

    def update(self, result: xr.Dataset, pairs: xr.Dataset, selected: list[int]):
        n = len(result.sky)
        idx = np.arange(n)
        sky = np.nan_to_num(result.sky.values, nan=0.0)
        err = np.nan_to_num(result.sky_err.values, nan=0.0)
        with self._sky.hold_sync(), self._bars.hold_sync():
            self._sky.x, self._sky.y = idx, sky
            self._bars.x = np.stack([idx, idx], axis=1)
            self._bars.y = np.stack([sky - err, sky + err], axis=1)
            self._sky.selected = selected or None
        k = np.arange(len(pairs.pair)) if pairs is not None else np.zeros(0)
        before = pairs.diff_before.values if pairs is not None else np.zeros(0)
        after = pairs.diff_after.values if pairs is not None else np.zeros(0)
        with self._before.hold_sync(), self._after.hold_sync():
            self._before.x, self._before.y = k, np.nan_to_num(before)
            self._after.x, self._after.y = k, np.nan_to_num(after)

    def select(self, indices: list[int]):
        self._sky.selected = indices or None

    def on_select(self, callback):
        """Call ``callback(indices)`` when points are clicked in the sky plot."""
        self._sky.observe(
            lambda change: callback([] if change["new"] is None else [int(k) for k in change["new"]]),
            "selected")
