"""Publication figures of sky-matching results: footprint maps, overlap residuals, skies.

Needs matplotlib (``pip install skymatch-nb-ui[plot]``); this module is imported only on
demand, so ``import skymatch_nb_ui`` never loads matplotlib.

- `plot_footprints`: the images' footprints on the sky (astropy WCSAxes, north up, east
  left), filled by a result quantity;
- `plot_pair_residuals`: each overlap's sky difference before and after matching;
- `plot_sky`: the sky of each image with its uncertainty, ordered by group;
- `mosaic_wcs`: the tangent-plane WCS of the footprint map, to build axes of your own.

The colours are those of the widgets (`skymatch_nb_ui.widgets`): the Okabe-Ito palette for
categories and viridis for ordered values, both colour-blind safe.  When a function creates
the figure it is sized for one journal column (3.5 in wide, 8-9 pt text); with ``ax=`` the
caller's figure and font sizes are kept.  Save with ``fig.savefig`` as PDF, SVG or PNG.

>>> from skymatch_nb_ui import ImageCollection
>>> from skymatch_nb_ui.plotting import plot_footprints
>>> from skymatch_nb_ui.testing import make_mosaic
>>> m = make_mosaic((2, 3))
>>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
>>> ds = coll.skymatch(skymethod="global+match", skystat="mean")
>>> ax = plot_footprints(ds, color_by="sky")
>>> ax.figure.savefig("footprints.pdf")        # doctest: +SKIP
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import xarray as xr
from astropy.wcs import WCS

try:
    import matplotlib as mpl
    from astropy.visualization.wcsaxes import WCSAxes
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Colormap, Normalize, to_rgba
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import Patch, Polygon
    from matplotlib.transforms import blended_transform_factory
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"skymatch_nb_ui.plotting needs matplotlib ({exc.name} is missing); install it with: "
        "pip install skymatch-nb-ui[plot]"
    ) from exc

from ._colors import CATEGORICAL, MISSING, categorical
from .engine.geometry import lonlat_to_xyz, xyz_to_lonlat

__all__ = ["COLOR_BY", "mosaic_wcs", "plot_footprints", "plot_pair_residuals", "plot_sky"]


#: The quantities `plot_footprints` can fill the footprints by.
COLOR_BY = ("sky", "sky_err", "group", "component", "valid", "npix")
CONTINUOUS = ("sky", "sky_err", "npix")

#: Colours of the data (after matching / measured) and of what is not valid: as in the widgets.
DATA_COLOR = CATEGORICAL[4]  # blue
BAD_COLOR = CATEGORICAL[5]  # vermillion
VALID_COLORS = {"valid sky": DATA_COLOR, "no valid sky": BAD_COLOR}
BEFORE_COLOR = "0.45"
HATCH = "////"
HATCH_COLOR = "0.3"

#: Size of a figure the functions create: one journal column (inches).
FOOTPRINT_FIGSIZE = (3.5, 3.2)
PANEL_FIGSIZE = (3.5, 2.6)
#: Name every pair / image on the x axis up to this many.
MAX_PAIR_LABELS = 30
MAX_IMAGE_LABELS = 40
#: Categorical legends list at most this many entries (then "N more").
MAX_LEGEND = 10
#: Fraction of the mosaic's extent left free around it in the footprint map.
MARGIN = 0.06
#: Largest angle (degrees) between a corner and the map centre the tangent plane accepts.
MAX_RADIUS = 80.0


@dataclass(frozen=True)
class _Fonts:
    """Font sizes: explicit ones for figures we create, the caller's rcParams otherwise."""

    tick: object
    label: object
    small: object
    names: object

    @classmethod
    def for_axes(cls, created: bool) -> _Fonts:
        if created:
            return cls(tick=8, label=9, small=8, names=6)
        rc = mpl.rcParams
        return cls(tick=rc["xtick.labelsize"], label=rc["axes.labelsize"],
                   small=rc["legend.fontsize"], names="x-small")


# -- public functions ----------------------------------------------------------------------------
def mosaic_wcs(result_or_collection) -> WCS:
    """The tangent-plane (TAN) WCS of the footprint map: north up, east (larger RA) left.

    The tangent point is the mean direction of the footprint centres; the pixel grid covers
    every footprint with a small margin, about 1000 pixels along its longer side
    (``pixel_shape`` is set).  Use it to build WCSAxes of your own for `plot_footprints`.

    Parameters
    ----------
    result_or_collection : xarray.Dataset or ImageCollection
        A result of `ImageCollection.skymatch` (it holds ``footprint_ra`` and
        ``footprint_dec``) or the collection itself.

    Returns
    -------
    astropy.wcs.WCS

    Examples
    --------
    >>> import matplotlib.pyplot as plt
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 2))
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> w = mosaic_wcs(coll)
    >>> w.wcs.ctype[0], bool(w.wcs.cdelt[0] < 0)
    ('RA---TAN', True)
    >>> fig = plt.figure(figsize=(7, 3))
    >>> ax = fig.add_subplot(1, 2, 1, projection=w)
    >>> ax = plot_footprints(coll, ax=ax)
    """
    lon, lat = _corners(_map_table(result_or_collection, "mosaic_wcs")[0])
    return _tan_wcs_about(lon, lat)


def plot_footprints(
    result_or_collection,
    *,
    color_by: str = "sky",
    ax=None,
    show_names: bool = False,
    show_groups: bool = True,
    mark_disconnected: bool = True,
    cmap=None,
    colorbar: bool = True,
    label: str | None = None,
):
    """Draw every image's footprint on the sky, filled by a result quantity.

    The map is the plane tangent at the mosaic's centre (`mosaic_wcs`) with north up and
    east (increasing RA) to the left, RA/Dec tick labels and a coordinate grid.  Images
    without a valid sky are hatched; with `show_groups` the members of a group have a thick
    outline in the group's colour; with `mark_disconnected` the images outside the largest
    connected component of the overlap graph have a dashed outline.

    Parameters
    ----------
    result_or_collection : xarray.Dataset or ImageCollection
        A result of `ImageCollection.skymatch`, or a collection: its ``last_result``, or when
        it has none the bare outlines (only ``color_by="group"`` fills them then).
    color_by : {"sky", "sky_err", "group", "component", "valid", "npix"}
        The fill.  ``sky``, ``sky_err`` and ``npix`` use a sequential colour map with a
        colour bar (images without a valid sky are grey); ``group``, ``component`` and
        ``valid`` use discrete colours with a legend.
    ax : astropy.visualization.wcsaxes.WCSAxes, optional
        Axes to draw in, e.g. ``plt.subplot(projection=mosaic_wcs(result))``; the limits are
        set to show every footprint.  Default: a new 3.5 x 3.2 in figure.
    show_names : bool
        Write each image's name at its centre.
    show_groups : bool
        Outline the members of each group in the group's colour.
    mark_disconnected : bool
        Dash the outlines of images outside the largest connected component.
    cmap : str or matplotlib.colors.Colormap, optional
        Colour map of the continuous quantities (default ``"viridis"``); ignored by the
        categorical ones.
    colorbar : bool
        Draw the colour bar (continuous) or the legend of the colours (categorical).
    label : str, optional
        Label of the colour bar or title of the colour legend (default: the quantity's name,
        with the unit when known).

    Returns
    -------
    astropy.visualization.wcsaxes.WCSAxes

    Raises
    ------
    ValueError
        For an unknown `color_by`, or a Dataset without the variables needed.
    TypeError
        For an input that is neither a Dataset nor an ImageCollection, or an `ax` that is
        not a WCSAxes.

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3))
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names,
    ...                                    groups={"img00": "A", "img01": "A"})
    >>> ds = coll.skymatch(skymethod="global+match", skystat="mean")
    >>> ax = plot_footprints(ds, color_by="sky", show_names=True)
    >>> ax = plot_footprints(coll, color_by="group")
    >>> ax.figure.savefig("footprints.pdf")     # doctest: +SKIP

    Degrees instead of sexagesimal tick labels:

    >>> import astropy.units as u
    >>> ax.coords[0].set_format_unit(u.deg, decimal=True)
    >>> ax.coords[1].set_format_unit(u.deg, decimal=True)
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {list(COLOR_BY)}; got {color_by!r}")
    if ax is not None:
        _check_wcs_axes(ax)
    table, solved, unit, method = _map_table(result_or_collection, "plot_footprints")
    shown = color_by if (solved or color_by == "group") else None  # no result: outlines only
    if shown is not None:
        _require(table, [shown], "plot_footprints", f"color_by={color_by!r}")
    lon, lat = _corners(table)
    created = ax is None
    if created:
        ax = _new_figure(FOOTPRINT_FIGSIZE).add_subplot(projection=_tan_wcs_about(lon, lat))
    fonts = _Fonts.for_axes(created)

    fill = _fill(table, shown, cmap, unit, method)
    flags = _Flags.of(table, solved, mark_disconnected)
    group_colors = _group_colors(table)
    groups = table["group"].values.astype(str) if show_groups and "group" in table else None
    names = table["image"].values.astype(str)
    for k, name in enumerate(names):
        outline = group_colors[groups[k]] if groups is not None and groups[k] else None
        _draw_footprint(ax, np.column_stack([lon[k], lat[k]]), name, fill.colors[k],
                        flags.invalid[k], flags.disconnected[k], outline)
    if show_names:
        _write_names(ax, _centres(lon, lat), names, fill.colors, fonts)

    _style_sky_axes(ax, fonts)
    _fit_limits(ax, lon, lat)
    if colorbar:
        _draw_key(ax, fill, label, fonts)
    markers = _marker_handles(flags, groups, group_colors, color_by)
    if markers:
        _top_legend(ax, markers, fonts, ncols=2)
    return ax


def _pair_errors(pairs) -> np.ndarray:
    """Each pair's 1-sigma error of its difference (``diff_err``; older results: the sides')."""
    if "diff_err" in pairs:
        return pairs["diff_err"].values.astype(float)
    return np.hypot(pairs["err_a"].values.astype(float), pairs["err_b"].values.astype(float))


def plot_pair_residuals(pairs_or_collection, *, ax=None, sort: bool = True):
    """Each overlap's sky difference before and after matching, with 1-sigma error bars.

    Grey open circles: the difference of the two inputs' statistics in their overlap
    before matching (``diff_before``); filled blue circles: what is left after the solve
    (``diff_after``).  Both have 1-sigma error bars (``diff_err``).  Pairs without
    valid pixels are left out (a note counts them).  With at most 30 pairs each is named
    ``a–b`` on the x axis.

    Parameters
    ----------
    pairs_or_collection : xarray.Dataset or ImageCollection
        The per-pair diagnostics ``ImageCollection.last_pairs``, or the collection.
    ax : matplotlib.axes.Axes, optional
        Axes to draw in (default: a new 3.5 x 2.6 in figure).
    sort : bool
        Order the pairs by decreasing ``|diff_after|`` (the worst residual first);
        False keeps their order in the Dataset.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), noise=1.0, seed=1)
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> _ = coll.skymatch(skystat="mean")
    >>> ax = plot_pair_residuals(coll.last_pairs)            # the worst residual first
    >>> ax = plot_pair_residuals(coll, sort=False)
    >>> [t.get_text() for t in ax.get_xticklabels()][:3]
    ['img00–img01', 'img00–img03', 'img00–img04']
    """
    pairs, unit = _pairs_of(pairs_or_collection)
    created = ax is None
    if created:
        ax = _new_figure(PANEL_FIGSIZE).add_subplot()
    fonts = _Fonts.for_axes(created)

    valid = pairs["valid"].values.astype(bool)
    before = pairs["diff_before"].values.astype(float)
    after = pairs["diff_after"].values.astype(float)
    error = _pair_errors(pairs)
    shown = np.flatnonzero(valid & np.isfinite(before) & np.isfinite(after))
    if sort:
        shown = shown[np.argsort(-np.abs(after[shown]), kind="stable")]
    x = np.arange(shown.size, dtype=float)
    points = dict(linestyle="none", markersize=4, elinewidth=0.8, capsize=0)
    ax.axhline(0.0, color="black", linewidth=0.6, zorder=0)
    ax.errorbar(x - 0.12, before[shown], yerr=error[shown], marker="o", color=BEFORE_COLOR,
                markerfacecolor="white", markeredgewidth=0.8, label="before matching", **points)
    ax.errorbar(x + 0.12, after[shown], yerr=error[shown], marker="o", color=DATA_COLOR,
                label="after matching", **points)

    names = [f"{a}–{b}" for a, b in zip(pairs["a"].values.astype(str), pairs["b"].values.astype(str))]
    _label_x(ax, x, [names[k] for k in shown], MAX_PAIR_LABELS, "Overlapping pair", fonts)
    ax.set_xlim(-0.6, max(shown.size - 0.4, 0.6))
    ax.set_ylabel(_with_unit("Sky difference", unit), fontsize=fonts.label)
    ax.tick_params(labelsize=fonts.tick)
    _top_legend(ax, _by_label(ax, ["before matching", "after matching"]), fonts, ncols=2)
    total = pairs.sizes["pair"]
    if shown.size < total or total == 0:
        left_out = total - shown.size
        text = ("no overlapping pairs" if total == 0 else "no pair with valid pixels"
                if shown.size == 0 else
                f"{left_out} pair{'s' if left_out > 1 else ''} without valid pixels not shown")
        _note(ax, text, "0.3", fonts)
    return ax


def plot_sky(result, *, ax=None, truth=None, group_order: bool = True):
    """The sky of each image with its 1-sigma error bar, images ordered by group.

    The members of a group (which share one sky) sit side by side on a light band of the
    group's colour, labelled with its name.  Images without a valid sky get a red cross at
    the bottom, and a note gives the reason.

    Parameters
    ----------
    result : xarray.Dataset or ImageCollection
        A result of `ImageCollection.skymatch`, or the collection (its ``last_result``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw in (default: a new 3.5 x 2.6 in figure).
    truth : array_like, optional
        The true sky of each image (synthetic data), drawn as black bars.  For
        ``skymethod="match"`` the skies are offsets from the anchor: pass true offsets.
    group_order : bool
        Put the members of each group next to each other (in order of first appearance);
        False keeps the images' order.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), noise=1.0, seed=1)
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names,
    ...                                    groups={"img00": "A", "img04": "A"})
    >>> ds = coll.skymatch(skymethod="global+match", skystat="mean")
    >>> ax = plot_sky(ds, truth=m.sky)
    >>> [t.get_text() for t in ax.get_xticklabels()][:3]
    ['img00', 'img04', 'img01']
    """
    result, _, unit, method = _map_table(result, "plot_sky", need_result=True)
    _require(result, ["sky", "sky_err", "valid", "group", "reason"], "plot_sky")
    n = result.sizes["image"]
    truth = _truth(truth, n)
    created = ax is None
    if created:
        ax = _new_figure(PANEL_FIGSIZE).add_subplot()
    fonts = _Fonts.for_axes(created)

    group = result["group"].values.astype(str)
    order = _group_order(group) if group_order else np.arange(n)
    names = result["image"].values.astype(str)[order]
    sky = result["sky"].values.astype(float)[order]
    err = result["sky_err"].values.astype(float)[order]
    valid = result["valid"].values.astype(bool)[order] & np.isfinite(sky)
    x = np.arange(n, dtype=float)

    _group_bands(ax, group[order], _group_colors(result), fonts)
    ax.errorbar(x[valid], sky[valid], yerr=err[valid], linestyle="none", marker="o",
                markersize=4, color=DATA_COLOR, elinewidth=0.8, capsize=0, zorder=3,
                label="sky ± 1σ")
    if truth is not None:
        ax.plot(x, truth[order], linestyle="none", marker="_", markersize=9,
                markeredgewidth=1.2, color="black", zorder=4, label="true sky")
    _label_x(ax, x, list(names), MAX_IMAGE_LABELS, "Image", fonts)
    if not valid.all():
        reasons = result["reason"].values.astype(str)[order]
        _mark_invalid(ax, x[~valid], names[~valid], reasons[~valid], fonts)
    ax.set_xlim(-0.6, n - 0.4)
    _pad_y(ax, sky[valid], err[valid], None if truth is None else truth[order])
    ax.set_ylabel(_with_unit(_sky_name(method), unit), fontsize=fonts.label)
    ax.tick_params(labelsize=fonts.tick)
    _top_legend(ax, _by_label(ax, ["sky ± 1σ", "true sky", "no valid sky"]), fonts, ncols=3)
    return ax


# -- inputs ---------------------------------------------------------------------------------------
def _map_table(source, func: str, *, need_result: bool = False):
    """(table, solved, unit, skymethod): the Dataset to draw and what is known about it.

    A collection without a result gives its ``table`` (footprints and groups, no skies) and
    ``solved=False``; a Dataset is taken for a result.
    """
    from .collection import ImageCollection

    if isinstance(source, ImageCollection):
        result = source.last_result
        if result is None:
            if need_result:
                raise ValueError(
                    f"{func} needs a result: the collection has none yet; call "
                    "collection.skymatch() first"
                )
            return source.table, False, _collection_unit(source), ""
        return result, True, _unit(result, source), str(result.attrs.get("skymethod", ""))
    if isinstance(source, xr.Dataset):
        if "pair" in source.dims and "image" not in source.dims:
            raise ValueError(
                f"{func} needs the per-image result of ImageCollection.skymatch(), not the "
                "per-pair diagnostics (last_pairs); plot those with plot_pair_residuals"
            )
        if func != "plot_sky":
            _require(source, ["footprint_ra", "footprint_dec"], func)
        return source, True, _unit(source, None), str(source.attrs.get("skymethod", ""))
    raise TypeError(
        f"{func} takes the Dataset returned by ImageCollection.skymatch() or an "
        f"ImageCollection; got {type(source).__name__}"
    )


def _pairs_of(source) -> tuple[xr.Dataset, str]:
    from .collection import ImageCollection

    if isinstance(source, ImageCollection):
        if source.last_pairs is None:
            raise ValueError(
                "plot_pair_residuals needs a result: the collection has none yet; call "
                "collection.skymatch() first"
            )
        return source.last_pairs, _collection_unit(source)
    if isinstance(source, xr.Dataset):
        if "image" in source.dims and "pair" not in source.dims:
            raise ValueError(
                "plot_pair_residuals needs the per-pair diagnostics, not the per-image result: "
                "pass collection.last_pairs (set by collection.skymatch()) or the collection"
            )
        _require(source, ["a", "b", "diff_before", "diff_after", "valid", "err_a", "err_b"],
                 "plot_pair_residuals")
        return source, _unit(source, None, "diff_before")
    raise TypeError(
        "plot_pair_residuals takes the per-pair Dataset ImageCollection.last_pairs or an "
        f"ImageCollection; got {type(source).__name__}"
    )


def _require(ds: xr.Dataset, names, func: str, why: str = "") -> None:
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ValueError(
            f"{func}{f' with {why}' if why else ''} needs the variable(s) {missing}, which the "
            f"Dataset lacks (it has {sorted(map(str, ds.data_vars))}); pass the Dataset "
            "returned by ImageCollection.skymatch() (pairs: collection.last_pairs) or the "
            "collection itself"
        )


def _unit(ds: xr.Dataset, collection, variable: str = "sky") -> str:
    """The unit of the sky values: the Dataset's, else the images' common BUNIT, else ''."""
    if variable in ds and ds[variable].attrs.get("units"):
        return str(ds[variable].attrs["units"])
    return _collection_unit(collection) if collection is not None else ""


def _collection_unit(collection) -> str:
    table = collection.table
    units = {str(u) for u in table["bunit"].values if u} if "bunit" in table else set()
    return units.pop() if len(units) == 1 else ""


def _truth(truth, n: int):
    if truth is None:
        return None
    values = np.asarray(truth, dtype=float).reshape(-1)
    if values.size != n:
        raise ValueError(f"truth must have one sky per image ({n}); got {values.size} values")
    return values


def _check_wcs_axes(ax) -> None:
    if not isinstance(ax, WCSAxes):
        raise TypeError(
            f"ax must be an astropy WCSAxes (celestial axes); got {type(ax).__name__}. Make one "
            "with plt.subplot(projection=mosaic_wcs(result)), using "
            "skymatch_nb_ui.plotting.mosaic_wcs"
        )


# -- the footprint map ----------------------------------------------------------------------------
def _corners(table: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(table["footprint_ra"].values, float),
            np.asarray(table["footprint_dec"].values, float))


def _centres(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees of each footprint's centre: the mean direction of its corners."""
    return xyz_to_lonlat(lonlat_to_xyz(lon, lat).sum(axis=1))


def _tan_wcs_about(lon: np.ndarray, lat: np.ndarray, npix: int = 1000) -> WCS:
    """TAN WCS at the mean direction of the footprint centres, covering all corners."""
    centre = lonlat_to_xyz(*_centres(lon, lat)).sum(axis=0)
    centre /= np.linalg.norm(centre)
    farthest = np.degrees(np.arccos(np.clip(lonlat_to_xyz(lon, lat) @ centre, -1, 1))).max()
    if farthest > MAX_RADIUS:
        raise ValueError(
            "the footprints are too spread out for one tangent-plane map: a corner lies "
            f"{farthest:.0f} degrees from the mosaic centre (at most {MAX_RADIUS:.0f} allowed)"
        )
    ra0, dec0 = (float(v) for v in xyz_to_lonlat(centre))
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-1.0, 1.0]
    w.wcs.set()
    x, y = w.wcs_world2pix(lon.ravel(), lat.ravel(), 0)  # degrees in the tangent plane
    span = max(np.ptp(x), np.ptp(y), 1e-9) * (1 + 2 * MARGIN)
    scale = span / npix
    nx = int(np.ceil(np.ptp(x) * (1 + 2 * MARGIN) / scale))
    ny = int(np.ceil(np.ptp(y) * (1 + 2 * MARGIN) / scale))
    w.wcs.cdelt = [-scale, scale]
    w.wcs.crpix = [(nx - 1) / 2 - (x.min() + x.max()) / 2 / scale + 1,
                   (ny - 1) / 2 - (y.min() + y.max()) / 2 / scale + 1]
    w.pixel_shape = (max(nx, 1), max(ny, 1))
    w.wcs.set()
    return w


def _fit_limits(ax, lon: np.ndarray, lat: np.ndarray) -> None:
    """Show every footprint with a margin and square pixels, filling the axes box."""
    to_data = ax.get_transform("world") - ax.transData
    ax.update_datalim(to_data.transform(np.column_stack([lon.ravel(), lat.ravel()])))
    ax.margins(MARGIN)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()


def _style_sky_axes(ax, fonts: _Fonts) -> None:
    ra, dec = ax.coords[0], ax.coords[1]
    ra.set_axislabel("Right ascension", size=fonts.label)
    dec.set_axislabel("Declination", size=fonts.label, minpad=0.6)
    for coord, number in ((ra, 3), (dec, 4)):  # sexagesimal RA labels are long
        coord.set_ticklabel(size=fonts.tick, exclude_overlapping=True)
        coord.set_ticks(number=number, size=3, width=0.6)
        coord.display_minor_ticks(True)
        coord.grid(color="0.8", linestyle="solid", linewidth=0.4)
    ax.set_axisbelow(True)  # the grid under the footprints


@dataclass(frozen=True)
class _Fill:
    """Face colours and how to explain them (a colour bar or a legend)."""

    colors: list
    mappable: object = None  # continuous: a ScalarMappable for the colour bar
    handles: tuple = ()  # categorical: legend patches
    title: str = ""


def _fill(table: xr.Dataset, quantity: str | None, cmap, unit: str, method: str) -> _Fill:
    n = table.sizes["image"]
    if quantity is None:
        return _Fill(colors=["white"] * n)
    if quantity in CONTINUOUS:
        return _continuous_fill(table, quantity, cmap, unit, method)
    if quantity == "group":
        labels = [g or None for g in table["group"].values.astype(str)]
        palette = _group_colors(table)
        shown = {("none (own sky)" if g is None else str(g)): palette[g or ""]
                 for g in sorted(set(labels), key=lambda g: (g is None, labels.index(g)))}
        return _categorical_fill([palette[g or ""] for g in labels], shown, "Group")
    if quantity == "component":
        component = table["component"].values.astype(int)
        largest = _largest(component)
        palette = categorical(component.tolist())
        shown = {f"{c} (largest)" if c == largest else str(c): palette[c] for c in palette}
        return _categorical_fill([palette[c] for c in component], shown, "Component")
    valid = table["valid"].values.astype(bool)
    labels = ["valid sky" if v else "no valid sky" for v in valid]
    shown = {k: c for k, c in VALID_COLORS.items() if k in labels}
    return _categorical_fill([VALID_COLORS[k] for k in labels], shown, "", hatched="no valid sky")


def _continuous_fill(table, quantity: str, cmap, unit: str, method: str) -> _Fill:
    cmap = cmap if isinstance(cmap, Colormap) else mpl.colormaps[cmap or "viridis"]
    values = table[quantity].values.astype(float)
    if "valid" in table:
        values = np.where(table["valid"].values.astype(bool), values, np.nan)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:  # one value: the middle of the map, and a readable colour bar
        vmin, vmax = vmin - 0.5 * max(abs(vmin), 1.0), vmax + 0.5 * max(abs(vmax), 1.0)
    norm = Normalize(vmin, vmax)
    colors = [cmap(norm(v)) if np.isfinite(v) else to_rgba(MISSING) for v in values]
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    titles = {"sky": _sky_name(method), "sky_err": "Sky uncertainty (1σ)", "npix": "Pixels used"}
    return _Fill(colors=colors, mappable=mappable,
                 title=_with_unit(titles[quantity], "" if quantity == "npix" else unit))


def _categorical_fill(colors: list, shown: dict, title: str, hatched: str = "") -> _Fill:
    items = list(shown.items())
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=t,
                     hatch=HATCH if t == hatched else None)
               for t, c in items[:MAX_LEGEND]]
    if len(items) > MAX_LEGEND:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"… {len(items) - MAX_LEGEND} more"))
    return _Fill(colors=colors, handles=tuple(handles), title=title)


@dataclass(frozen=True)
class _Flags:
    """Which images have no valid sky, and which lie outside the largest component."""

    invalid: np.ndarray
    disconnected: np.ndarray

    @classmethod
    def of(cls, table: xr.Dataset, solved: bool, mark_disconnected: bool) -> _Flags:
        n = table.sizes["image"]
        invalid = np.zeros(n, bool)
        disconnected = np.zeros(n, bool)
        if solved and "valid" in table:
            invalid = ~table["valid"].values.astype(bool)
        if solved and mark_disconnected and "component" in table:
            component = table["component"].values.astype(int)
            disconnected = component != _largest(component)
        return cls(invalid, disconnected)


def _largest(component: np.ndarray) -> int:
    values, counts = np.unique(component, return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0


def _group_colors(table: xr.Dataset) -> dict:
    """{group label: colour}; "" (alone) gets the colour of missing values."""
    labels = [g or None for g in table["group"].values.astype(str)] if "group" in table else []
    return {("" if g is None else g): c for g, c in categorical(labels).items()} | {"": MISSING}


def _draw_footprint(ax, xy, name: str, color, invalid: bool, dashed: bool, group_color) -> None:
    """One footprint: the fill (hatched if invalid), a group halo, and a black outline.

    The outlines go above every fill, so each footprint stays visible where images overlap.
    """
    world = ax.get_transform("world")
    ax.add_patch(Polygon(
        xy, closed=True, transform=world, facecolor=color,
        edgecolor=HATCH_COLOR, linewidth=0,  # the hatch takes the edge colour (mpl < 3.11)
        hatch=HATCH if invalid else None, zorder=1, gid=f"footprint-{name}",
    ))
    if group_color is not None:
        ax.add_patch(Polygon(
            xy, closed=True, transform=world, fill=False, edgecolor=group_color,
            linewidth=2.2, joinstyle="miter", zorder=2, gid=f"group-{name}",
        ))
    ax.add_patch(Polygon(
        xy, closed=True, transform=world, fill=False, edgecolor="black", linewidth=0.6,
        linestyle=(0, (3, 2)) if dashed else "solid", zorder=3, gid=f"outline-{name}",
    ))


def _write_names(ax, centres, names, fill_colors, fonts: _Fonts) -> None:
    world = ax.get_transform("world")
    for k, name in enumerate(names):
        dark = _luminance(fill_colors[k]) < 0.45
        ax.text(float(centres[0][k]), float(centres[1][k]), name,
                transform=world, ha="center", va="center", fontsize=fonts.names,
                color="white" if dark else "black", zorder=4, clip_on=True)


def _luminance(color) -> float:
    r, g, b, _ = to_rgba(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _draw_key(ax, fill: _Fill, label: str | None, fonts: _Fonts) -> None:
    title = fill.title if label is None else label
    if fill.mappable is not None:
        bar = ax.figure.colorbar(fill.mappable, ax=ax, fraction=0.05, pad=0.03, aspect=25)
        bar.set_label(title, size=fonts.label)
        bar.ax.tick_params(labelsize=fonts.tick, width=0.6, length=2.5)
        bar.outline.set_linewidth(0.6)
    elif fill.handles:
        legend = ax.legend(handles=list(fill.handles), title=title or None, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
                           fontsize=fonts.small, title_fontsize=fonts.small,
                           handlelength=1.2, handleheight=1.0)
        legend.set_alignment("left")
        _keep(ax, legend)


def _marker_handles(flags: _Flags, groups, group_colors: dict, color_by: str) -> list:
    """Legend entries of the hatching and outlines (those the colour key does not explain)."""
    handles = []
    if flags.invalid.any() and color_by != "valid":
        handles.append(Patch(facecolor=MISSING, edgecolor=HATCH_COLOR, hatch=HATCH,
                             linewidth=0, label="no valid sky"))
    if flags.disconnected.any():
        handles.append(Patch(facecolor="none", edgecolor="black", linewidth=0.6,
                             linestyle=(0, (3, 2)), label="disconnected"))
    labels = [g for g in dict.fromkeys(groups) if g] if groups is not None else []
    if labels and color_by != "group":
        handles.append(Patch(facecolor="none", edgecolor=group_colors[labels[0]], linewidth=2.0,
                             label="group outline"))
    return handles


def _top_legend(ax, handles: list, fonts: _Fonts, ncols: int) -> None:
    """A frameless legend in a row above the axes, where it hides no data."""
    legend = ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01),
                       borderaxespad=0.0, frameon=False, fontsize=fonts.small,
                       ncols=min(len(handles), ncols), handlelength=1.4, handleheight=0.9,
                       handletextpad=0.4, columnspacing=1.2)
    _keep(ax, legend)


def _by_label(ax, labels: list[str]) -> list:
    """The legend handles of the axes with these labels, in this order (absent ones skipped)."""
    handles, texts = ax.get_legend_handles_labels()
    by_text = dict(zip(texts, handles))
    return [by_text[label] for label in labels if label in by_text]


def _keep(ax, legend) -> None:
    """Keep a legend when another one is made, and in the layout though outside the axes."""
    ax.add_artist(legend)
    legend.set_clip_on(False)  # add_artist clips to the axes, which hides it from the layout


# -- the panels -----------------------------------------------------------------------------------
def _new_figure(figsize):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


def _label_x(ax, x, labels: list, limit: int, name: str, fonts: _Fonts) -> None:
    if len(labels) <= limit:
        ax.set_xticks(x, labels, rotation=90, fontsize=fonts.tick)
        ax.tick_params(axis="x", length=2)
    else:
        ax.set_xlabel(f"{name} (index)", fontsize=fonts.label)


def _note(ax, text: str, color, fonts: _Fonts) -> None:
    """A note under the x axis (in the place of the x label, which the names make needless)."""
    label = ax.get_xlabel()
    ax.set_xlabel(f"{label}\n{text}" if label else text, fontsize=fonts.small, color=color)


def _group_order(group: np.ndarray) -> np.ndarray:
    """Image indices with each group's members together, at its first member's place."""
    first: dict[str, int] = {}
    keys = []
    for k, g in enumerate(group):
        key = first.setdefault(g, k) if g else k
        keys.append(key)
    return np.argsort(keys, kind="stable")


def _group_bands(ax, group: np.ndarray, colors: dict, fonts: _Fonts) -> None:
    """A light band of the group's colour behind each run of members, named at the top.

    A name too wide for its band is written vertically.
    """
    top = blended_transform_factory(ax.transData, ax.transAxes)
    points = FontProperties(size=fonts.small).get_size_in_points()
    per_image = ax.get_position().width * ax.figure.get_figwidth() * 72 / max(len(group), 1)
    start = 0
    for k in range(1, len(group) + 1):
        if k < len(group) and group[k] == group[start]:
            continue
        label = group[start]
        if label:
            ax.axvspan(start - 0.45, k - 0.55, color=colors[label], alpha=0.18, linewidth=0,
                       zorder=0)
            fits = 0.6 * points * len(label) < (k - start) * per_image
            ax.text((start + k - 1) / 2, 0.98, label, transform=top, ha="center", va="top",
                    rotation=0 if fits else 90, fontsize=fonts.small, color="0.2", clip_on=True)
        start = k


def _mark_invalid(ax, x, names, reasons, fonts: _Fonts) -> None:
    """A cross at the bottom for each image without a sky; the reasons under the axis."""
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(x, np.full(x.size, 0.05), transform=bottom, linestyle="none", marker="x",
            markersize=5, markeredgewidth=1.2, color=BAD_COLOR, label="no valid sky", zorder=4)
    for tick in ax.get_xticklabels():
        if tick.get_text() in set(names):
            tick.set_color(BAD_COLOR)
    by_reason: dict[str, list[str]] = {}
    for name, reason in zip(names, reasons):
        by_reason.setdefault(reason or "no sky could be computed", []).append(name)
    lines = [f"× {', '.join(n)}: {r}" for r, n in by_reason.items()]
    width = _characters_per_line(ax, fonts.small)
    _note(ax, "\n".join(textwrap.fill(line, width, subsequent_indent="   ") for line in lines),
          BAD_COLOR, fonts)


def _characters_per_line(ax, fontsize) -> int:
    """About how many characters of this size fit across the figure."""
    points = FontProperties(size=fontsize).get_size_in_points()
    return max(20, int(ax.figure.get_figwidth() * 72 / (0.55 * points)))


def _pad_y(ax, sky, err, truth) -> None:
    """Room at the bottom for the crosses of invalid images, at the top for group names."""
    values = np.concatenate([sky - err, sky + err] + ([truth[np.isfinite(truth)]] if truth is not None else []))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    span = high - low if high > low else max(abs(high), 1.0)
    ax.set_ylim(low - 0.25 * span, high + 0.2 * span)


def _sky_name(method: str) -> str:
    # with skymethod="match" the skies are offsets from the anchor, not absolute levels
    return "Sky offset" if method == "match" else "Sky level"


def _with_unit(label: str, unit: str) -> str:
    return f"{label} [{unit}]" if unit else label
