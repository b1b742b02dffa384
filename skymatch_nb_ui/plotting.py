"""Publication figures of sky-matching results: footprint maps, overlap residuals, skies.

Needs matplotlib (``pip install skymatch-nb-ui[plot]``); this module is imported only on
demand, so ``import skymatch_nb_ui`` never loads matplotlib.

- `plot_footprints`: the images' footprints on the sky (astropy WCSAxes, north up, east
  left), filled by a result quantity;
- `plot_pair_residuals`: each overlap's sky difference before and after matching;
- `plot_sky`: the sky of each image with its uncertainty, ordered by group;
- `plot_planes`: the fitted sky planes (``skymodel="plane"``), each footprint filled with its
  plane, with gradient arrows;
- `mosaic_wcs`: the WCS of the footprint map, to build axes of your own.

The colours, legends, flags, units and map projection are those of the widgets
(`skymatch_nb_ui.widgets`): `skymatch_nb_ui.display` decides them for both (the Okabe-Ito
palette for categories and viridis for ordered values, both colour-blind safe).  Every
function takes the Dataset returned by `ImageCollection.skymatch` (images and overlap pairs in
one).  When a function creates the figure it is sized for one journal column (3.5 in wide,
8-9 pt text); with ``ax=`` the caller's figure and font sizes are kept.  Save with
``fig.savefig`` as PDF, SVG or PNG.

>>> from skymatch_nb_ui import ImageCollection
>>> from skymatch_nb_ui.plotting import plot_footprints, plot_pair_residuals
>>> from skymatch_nb_ui.testing import make_mosaic
>>> m = make_mosaic((2, 3))
>>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
>>> ds = coll.skymatch(skymethod="global+match", skystat="mean")
>>> ax = plot_footprints(ds, color_by="sky")
>>> ax.figure.savefig("footprints.pdf")        # doctest: +SKIP
>>> ax = plot_pair_residuals(ds)               # the same result: its pairs
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
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Polygon
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter
    from matplotlib.transforms import blended_transform_factory
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"skymatch_nb_ui.plotting needs matplotlib ({exc.name} is missing); install it with: "
        "pip install skymatch-nb-ui[plot]"
    ) from exc

from .display.colors import (  # noqa: F401 (CATEGORICAL: the palette's name here too)
    BAD_COLOR,
    BEFORE_COLOR,
    CATEGORICAL,
    DATA_COLOR,
    HATCH_COLOR,
    MISSING,
)
from .display.encodings import (
    COLOR_BY,
    Categories,
    Flags,
    check_color_by,
    group_palette,
    image_fill,
    image_flags,
    quantity_title,
    short_names,
    sky_unit,
    with_unit,
)
from .display.planes import gradient_tips, is_plane, plane_grids
from .display.projection import SkyProjection, footprint_centres, sky_projection
from .engine._validate import and_more

__all__ = ["COLOR_BY", "mosaic_wcs", "plot_footprints", "plot_pair_residuals", "plot_planes",
           "plot_sky"]

HATCH = "////"

#: Size of a figure the functions create: one journal column (inches).
FOOTPRINT_FIGSIZE = (3.5, 3.2)
PANEL_FIGSIZE = (3.5, 2.6)
#: Name every pair / image on the x axis up to this many.
MAX_PAIR_LABELS = 30
MAX_IMAGE_LABELS = 40
#: The sky plot's note names at most this many images without a sky for each reason.
MAX_INVALID_NAMES = 8
#: Up to this many images each footprint is its own patches (an object with its own id,
#: ``footprint-<name>``, in vector output), each plane of `plot_planes` its own mesh and each
#: gradient its own arrow; above, each kind of mark is one collection (fills, group outlines,
#: outlines; the planes one mesh, the arrows one quiver): 10,000 images drew in ~10 s as
#: patches, ~1.2 s so (`plot_planes`: ~25 s, ~3 s).
FOOTPRINT_PATCHES = 500
#: Above `FOOTPRINT_PATCHES` images: lines at most this fraction of the median footprint's
#: size on the page (0.6 pt outlines on 3-point footprints hid their fills), and gradient
#: arrows (unless asked for) only when that size is at least `ARROW_MIN_POINTS`.
LINE_FRACTION = 1 / 20
ARROW_MIN_POINTS = 8.0
#: Fraction of the mosaic's extent left free around it in the footprint map.
MARGIN = 0.06


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
    """The WCS of the footprint map: north up, east (larger RA) left.

    The tangent plane (``TAN``) at the mean direction of the footprint centres; when the images
    are too far apart for one tangent plane, an all-sky Hammer-Aitoff map (``AIT``), as the
    widgets' map (`skymatch_nb_ui.display.projection`).  The pixel grid covers every
    footprint with a small margin, about 1000 pixels along its longer side (``pixel_shape``
    is set).  Use it to build WCSAxes of your own for `plot_footprints`.

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
    return _map_wcs(lon, lat)


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
    show_gradient: bool | None = None,
):
    """Draw every image's footprint on the sky, filled by a result quantity.

    The map is the plane tangent at the mosaic's centre (`mosaic_wcs`) with north up and
    east (increasing RA) to the left, RA/Dec tick labels and a coordinate grid.  Images
    without a valid sky are hatched; with `show_groups` the members of a group have a thick
    outline in the group's colour; with `mark_disconnected` the images outside the largest
    connected component of the overlap graph have a dashed outline.  A result of
    ``skymodel="plane"`` gets an arrow per image, from its centre along the direction its
    fitted sky rises, its length by the gradient (as the widgets' map draws them).

    Parameters
    ----------
    result_or_collection : xarray.Dataset or ImageCollection
        A result of `ImageCollection.skymatch`, or a collection: its bare outlines (only
        ``color_by="group"`` fills them then).
    color_by : {"sky", "sky_err", "gradient", "group", "component", "valid", "npix"}
        The fill.  ``sky``, ``sky_err``, ``gradient`` (the size of a fitted plane's slope on
        the sky, per arcsec; a result of constant skies has none) and ``npix`` use a
        sequential colour map with a colour bar (images without a valid sky are grey);
        ``group``, ``component`` and ``valid`` use discrete colours with a legend.
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
    show_gradient : bool, optional
        Draw the gradient arrows of fitted planes (default: when the result has them and,
        above `FOOTPRINT_PATCHES` images, the footprints are at least `ARROW_MIN_POINTS`
        across on the page).

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

    Notes
    -----
    Up to `FOOTPRINT_PATCHES` (500) images each footprint is its own patches, with the ids
    ``footprint-<name>``, ``group-<name>`` and ``outline-<name>`` in vector output; above,
    each kind of mark is one collection (ids ``footprints``, ``footprints-invalid``,
    ``groups``, ``outlines``, ``outlines-disconnected``, ``gradients``), drawn the same: 10,000
    images in ~1.2 s instead of ~10 s.  Their lines are then at most `LINE_FRACTION` of the
    median footprint's size on the page, so that small footprints keep their colours.

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
    check_color_by(color_by)
    if ax is not None:
        _check_wcs_axes(ax)
    table, solved, unit, _ = _map_table(result_or_collection, "plot_footprints")
    shown = color_by if (solved or color_by == "group") else None  # no result: outlines only
    if shown is not None and shown != "gradient":  # constant skies: "no gradient", as the map
        _require(table, [shown], "plot_footprints", f"color_by={color_by!r}")
    lon, lat = _corners(table)
    created = ax is None
    if created:
        ax = _new_figure(FOOTPRINT_FIGSIZE).add_subplot(projection=_map_wcs(lon, lat))
    fonts = _Fonts.for_axes(created)

    fill = _fill(table, shown, cmap, unit)
    flags = image_flags(table if solved else None, table.sizes["image"],
                        disconnected=mark_disconnected)
    group_colors = _group_colors(table)
    groups = table["group"].values.astype(str) if show_groups and "group" in table else None
    names = table["image"].values.astype(str)
    outlines = ([group_colors[g] if g else None for g in groups] if groups is not None
                else [None] * len(names))
    at_once = len(names) > FOOTPRINT_PATCHES
    corners = _in_data(ax, lon, lat) if at_once else None  # (collections: in data coordinates)
    if at_once:
        _draw_footprints_at_once(ax, corners, fill.colors, flags, outlines)
    else:
        for k, name in enumerate(names):
            _draw_footprint(ax, np.column_stack([lon[k], lat[k]]), name, fill.colors[k],
                            flags.invalid[k], flags.disconnected[k], outlines[k])
    if show_names:
        _write_names(ax, footprint_centres(lon, lat), names, fill.colors, fonts)
    arrows = (solved and is_plane(table) and _arrows_fit(ax, corners)
              if show_gradient is None else bool(show_gradient))
    if arrows:
        _require(table, ["gradient", "gradient_pa"], "plot_footprints", "show_gradient=True")
        arrows = _draw_gradients(ax, table, at_once=at_once)

    _style_sky_axes(ax, fonts)
    _fit_limits(ax, lon, lat)
    if colorbar:
        _draw_key(ax, fill, label, fonts)
    markers = _marker_handles(flags, groups, group_colors, color_by)
    if arrows:
        markers.append(_GRADIENT_HANDLE())
    if markers:
        _top_legend(ax, markers, fonts, ncols=2)
    return ax


def plot_planes(
    result,
    *,
    ax=None,
    cells: int = 12,
    cmap=None,
    colorbar: bool = True,
    show_gradient: bool | None = None,
    label: str | None = None,
):
    """The fitted sky of every image on the sky: each footprint filled with its plane.

    Each footprint is split into ``cells`` x ``cells`` cells coloured by the fitted sky at
    their centres (`skymatch_nb_ui.display.planes.plane_grid`: the level at the image centre
    plus the gradient on the sky), on one colour scale for all images, with the gradient
    arrows of `plot_footprints`.  A result of constant skies (``skymodel="constant"``) shows
    flat footprints: seams where the true sky is not flat.  Images without a valid sky are
    hatched.  Above `FOOTPRINT_PATCHES` images the planes are one mesh (id ``planes``) and
    the other marks collections, as in `plot_footprints` (10,000 images: ~3 s, not ~25 s).

    Parameters
    ----------
    result : xarray.Dataset
        A result of `ImageCollection.skymatch` (best with ``skymodel="plane"``).
    ax : astropy.visualization.wcsaxes.WCSAxes, optional
        Axes to draw in (e.g. ``plt.subplot(projection=mosaic_wcs(result))``).  Default: a
        new 3.5 x 3.2 in figure.
    cells : int
        Cells along each side of a footprint.
    cmap : str or matplotlib.colors.Colormap, optional
        The colour map (default ``"viridis"``).
    colorbar : bool
        Draw the colour bar.
    show_gradient : bool, optional
        Draw the gradient arrows (plane results only; default: as `plot_footprints`).
    label : str, optional
        The colour bar's label (default: the sky's name, with its unit when known).

    Returns
    -------
    astropy.visualization.wcsaxes.WCSAxes

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), noise=1.0, seed=1)
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> ax = plot_planes(coll.skymatch(skystat="mean"))   # constant skies: flat footprints
    >>> len(ax.collections)
    6
    """
    table, _, unit, method = _map_table(result, "plot_planes", need_result=True)
    _require(table, ["sky", "valid", "ra", "dec"], "plot_planes")
    if not (isinstance(cells, (int, np.integer)) and not isinstance(cells, bool) and cells >= 1):
        raise ValueError(f"cells must be a positive integer; got {cells!r}")
    if ax is not None:
        _check_wcs_axes(ax)
    lon, lat = _corners(table)
    created = ax is None
    if created:
        ax = _new_figure(FOOTPRINT_FIGSIZE).add_subplot(projection=_map_wcs(lon, lat))
    fonts = _Fonts.for_axes(created)

    names = table["image"].values.astype(str)
    valid = table["valid"].values.astype(bool) & np.isfinite(table["sky"].values.astype(float))
    shown = np.flatnonzero(valid)
    glon, glat, grids = plane_grids(table, shown, cells)
    values = grids.ravel() if shown.size else np.zeros(1)
    cmap = cmap if isinstance(cmap, Colormap) else mpl.colormaps[cmap or "viridis"]
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    norm = Normalize(low, high if high > low else low + 1.0)
    at_once = len(names) > FOOTPRINT_PATCHES
    corners = _in_data(ax, lon, lat) if at_once else None
    if at_once:
        _draw_planes_at_once(ax, glon, glat, grids, cmap, norm)
        _add_polygons(ax, corners, ~valid, "footprints-invalid", facecolors=MISSING,
                      edgecolors=HATCH_COLOR, linewidths=0, hatch=HATCH, zorder=1)
        _add_polygons(ax, corners, np.ones_like(valid), "outlines", facecolors="none",
                      edgecolors="black", linewidths=0.6 * _line_scale(ax, corners), zorder=3)
    world = ax.get_transform("world")
    grid_of = {k: j for j, k in enumerate(shown)}
    for k, name in enumerate([] if at_once else names):
        xy = np.column_stack([lon[k], lat[k]])
        if k in grid_of:
            j = grid_of[k]
            mesh = ax.pcolormesh(glon[j], glat[j], grids[j], transform=world, cmap=cmap,
                                 norm=norm, shading="flat", zorder=1, gid=f"plane-{name}",
                                 rasterized=True)
            # no sticky edges (they are in degrees here): framed as `plot_footprints`
            mesh.sticky_edges.x[:], mesh.sticky_edges.y[:] = [], []
        else:
            ax.add_patch(Polygon(xy, closed=True, transform=world, facecolor=MISSING,
                                 edgecolor=HATCH_COLOR, linewidth=0, hatch=HATCH, zorder=1,
                                 gid=f"footprint-{name}"))
        ax.add_patch(Polygon(xy, closed=True, transform=world, fill=False, edgecolor="black",
                             linewidth=0.6, zorder=3, gid=f"outline-{name}"))
    if show_gradient is None:
        show_gradient = _arrows_fit(ax, corners)
    arrows = show_gradient and is_plane(table) and _draw_gradients(ax, table, at_once=at_once)
    _style_sky_axes(ax, fonts)
    _fit_limits(ax, lon, lat)
    if colorbar:
        title = with_unit(f"Fitted {quantity_title('sky', method).lower()}", unit)
        _draw_key(ax, _Fill(colors=[], mappable=ScalarMappable(norm=norm, cmap=cmap), title=title),
                  label, fonts)
    markers = [_GRADIENT_HANDLE()] if arrows else []
    if not valid.all():
        markers.append(Patch(facecolor=MISSING, edgecolor=HATCH_COLOR, hatch=HATCH, linewidth=0,
                             label="no valid sky"))
    if markers:
        _top_legend(ax, markers, fonts, ncols=2)
    return ax


def _pair_errors(pairs) -> np.ndarray:
    """Each pair's 1-sigma error of its difference (``diff_err``; older results: the sides')."""
    if "diff_err" in pairs:
        return pairs["diff_err"].values.astype(float)
    return np.hypot(pairs["err_a"].values.astype(float), pairs["err_b"].values.astype(float))


def plot_pair_residuals(result, *, ax=None, sort: bool = True):
    """Each overlap's sky difference before and after matching, with 1-sigma error bars.

    Grey open circles: the difference of the two inputs' statistics in their overlap
    before matching (``diff_before``); filled blue circles: what is left after the solve
    (``diff_after``).  Both have 1-sigma error bars (``diff_err``).  Pairs without
    valid pixels are left out (a note counts them).  With at most 30 pairs each is named
    ``a–b`` on the x axis.

    Parameters
    ----------
    result : xarray.Dataset
        A result of `ImageCollection.skymatch`: its ``pair`` dimension.
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
    >>> ds = coll.skymatch(skystat="mean")
    >>> ax = plot_pair_residuals(ds)            # the worst residual first
    >>> ax = plot_pair_residuals(ds, sort=False)
    >>> [t.get_text() for t in ax.get_xticklabels()][:3]
    ['img00–img01', 'img00–img03', 'img00–img04']
    """
    pairs, unit = _pairs_of(result)
    created = ax is None
    if created:
        ax = _new_figure(PANEL_FIGSIZE).add_subplot()
    fonts = _Fonts.for_axes(created)

    valid = pairs["pair_valid"].values.astype(bool)
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

    a, b = pairs["a"].values.astype(str), pairs["b"].values.astype(str)
    labels, pattern = short_names([*a, *b])  # (the images' names without what they share)
    names = [f"{p}–{q}" for p, q in zip(labels[: len(a)], labels[len(a):])]
    _label_x(ax, x, [names[k] for k in shown], MAX_PAIR_LABELS, "Overlapping pair", fonts,
             pattern)
    ax.set_xlim(-0.6, max(shown.size - 0.4, 0.6))
    ax.set_ylabel(with_unit("Sky difference", unit), fontsize=fonts.label)
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
    result : xarray.Dataset
        A result of `ImageCollection.skymatch`.
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

    _group_bands(ax, group[order], group_palette(group), fonts)
    ax.errorbar(x[valid], sky[valid], yerr=err[valid], linestyle="none", marker="o",
                markersize=4, color=DATA_COLOR, elinewidth=0.8, capsize=0, zorder=3,
                label="sky ± 1σ")
    if truth is not None:
        ax.plot(x, truth[order], linestyle="none", marker="_", markersize=9,
                markeredgewidth=1.2, color="black", zorder=4, label="true sky")
    labels, pattern = short_names(names)  # (without what the names share)
    _label_x(ax, x, labels, MAX_IMAGE_LABELS, "Image", fonts, pattern)
    if not valid.all():
        reasons = result["reason"].values.astype(str)[order]
        _mark_invalid(ax, x[~valid], names[~valid], reasons[~valid], fonts)
    ax.set_xlim(-0.6, n - 0.4)
    _pad_y(ax, sky[valid], err[valid], None if truth is None else truth[order])
    ax.set_ylabel(with_unit(quantity_title("sky", method), unit), fontsize=fonts.label)
    ax.tick_params(labelsize=fonts.tick)
    _top_legend(ax, _by_label(ax, ["sky ± 1σ", "true sky", "no valid sky"]), fonts, ncols=3)
    return ax


# -- inputs ---------------------------------------------------------------------------------------
def _map_table(source, func: str, *, need_result: bool = False):
    """(table, solved, unit, skymethod): the Dataset to draw and what is known about it.

    A collection gives its ``table`` (footprints and groups, no skies) and ``solved=False``;
    a Dataset is taken for a result.
    """
    from .collection import ImageCollection

    if isinstance(source, ImageCollection):
        if need_result:
            raise ValueError(
                f"{func} needs a result: pass the Dataset returned by collection.skymatch() "
                "(call collection.skymatch() first)"
            )
        return source.table, False, source._sky_unit(), ""
    if isinstance(source, xr.Dataset):
        if "image" not in source.dims:
            raise ValueError(
                f"{func} needs the result of ImageCollection.skymatch() (a Dataset over 'image'); "
                f"this one has the dimensions {sorted(map(str, source.dims))}"
            )
        if func != "plot_sky":
            _require(source, ["footprint_ra", "footprint_dec"], func)
        return source, True, sky_unit(source), str(source.attrs.get("skymethod", ""))
    raise TypeError(
        f"{func} takes the Dataset returned by ImageCollection.skymatch() or an "
        f"ImageCollection; got {type(source).__name__}"
    )


def _pairs_of(source) -> tuple[xr.Dataset, str]:
    from .collection import ImageCollection

    if isinstance(source, ImageCollection):
        raise ValueError(
            "plot_pair_residuals needs a result: pass the Dataset returned by "
            "collection.skymatch() (call collection.skymatch() first)"
        )
    if isinstance(source, xr.Dataset):
        if "pair" not in source.dims:
            raise ValueError(
                "plot_pair_residuals needs the overlap pairs of a result: pass the Dataset "
                "returned by collection.skymatch() (it has a 'pair' dimension; this one has "
                f"{sorted(map(str, source.dims))})"
            )
        _require(source, ["a", "b", "diff_before", "diff_after", "pair_valid", "err_a", "err_b"],
                 "plot_pair_residuals")
        return source, sky_unit(source, "diff_before")
    raise TypeError(
        "plot_pair_residuals takes the Dataset returned by ImageCollection.skymatch(); got "
        f"{type(source).__name__}"
    )


def _require(ds: xr.Dataset, names, func: str, why: str = "") -> None:
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ValueError(
            f"{func}{f' with {why}' if why else ''} needs the variable(s) {missing}, which the "
            f"Dataset lacks (it has {sorted(map(str, ds.data_vars))}); pass the Dataset "
            "returned by ImageCollection.skymatch() or the collection itself"
        )


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


def _map_wcs(lon: np.ndarray, lat: np.ndarray, npix: int = 1000) -> WCS:
    """The WCS of the map: `display.projection`'s choice (TAN or AIT), covering all corners."""
    projection = sky_projection(lon, lat)
    code = "TAN" if projection.kind == "tangent" else "AIT"
    w = WCS(naxis=2)
    w.wcs.ctype = [f"RA---{code}", f"DEC--{code}"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [projection.lon, projection.lat]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-1.0, 1.0]
    w.wcs.set()
    x, y = _plane(projection, lon, lat)  # degrees in the projection plane, as the WCS has them
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


def _plane(projection: SkyProjection, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Projection-plane coordinates in the WCS's convention (x = -xi: east to the left)."""
    xi, eta = projection.project(lon, lat)
    return -np.ravel(xi), np.ravel(eta)


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


def _fill(table: xr.Dataset, quantity: str | None, cmap, unit: str) -> _Fill:
    """The face colours from `display.encodings.image_fill`; continuous ones through ``cmap``."""
    n = table.sizes["image"]
    if quantity is None:
        return _Fill(colors=["white"] * n)  # outlines only: no result to show
    fill = image_fill(table, quantity, unit=unit)
    legend = fill.legend
    if isinstance(legend, Categories):
        return _categorical_fill(fill.colors, legend)
    cmap = cmap if isinstance(cmap, Colormap) else mpl.colormaps[cmap or "viridis"]
    norm = Normalize(legend.vmin, legend.vmax)
    colors = [cmap(norm(v)) if np.isfinite(v) else to_rgba(MISSING) for v in fill.values]
    return _Fill(colors=colors, mappable=ScalarMappable(norm=norm, cmap=cmap), title=legend.title)


def _categorical_fill(colors: list, legend: Categories) -> _Fill:
    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=t,
                     hatch=HATCH if t == legend.hatched else None)
               for t, c in zip(legend.labels, legend.colors)]
    if legend.more:
        handles.append(Patch(facecolor="none", edgecolor="none", label=f"… {legend.more} more"))
    return _Fill(colors=colors, handles=tuple(handles), title=legend.title)


def _group_colors(table: xr.Dataset) -> dict:
    """{group text: colour}; "" (alone) gets the colour of missing values."""
    return group_palette(table["group"].values.astype(str) if "group" in table else [])


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


def _in_data(ax, lon, lat) -> np.ndarray:
    """Points (degrees; arrays of shape (n, m)) in the axes' data coordinates, shape (n, m, 2).

    One call of the axes' world transform for all of them (a patch or a mesh given the world
    transform makes its own call at every draw); data coordinates keep under zooming.
    """
    to_data = ax.get_transform("world") - ax.transData
    n, m = lon.shape
    return to_data.transform(np.column_stack([lon.ravel(), lat.ravel()])).reshape(n, m, 2)


def _footprint_points(ax, corners) -> float:
    """The median footprint's size on the page (points) once the mosaic fills the axes box.

    ``corners``: the footprints in data coordinates, shape (n, m, 2).
    """
    low, high = corners.reshape(-1, 2).min(axis=0), corners.reshape(-1, 2).max(axis=0)
    box = ax.get_position()
    width, height = ax.figure.get_size_inches() * 72.0 * (box.width, box.height)
    extent = np.maximum(high - low, 1e-12) * (1 + 2 * MARGIN)
    points_per_unit = min(width / extent[0], height / extent[1])
    return float(np.median(np.ptp(corners, axis=1).max(axis=1))) * points_per_unit


def _line_scale(ax, corners) -> float:
    """The collections' line widths' scale: 0.6 pt at most `LINE_FRACTION` of a footprint."""
    return min(1.0, LINE_FRACTION * _footprint_points(ax, corners) / 0.6)


def _arrows_fit(ax, corners) -> bool:
    """Whether gradient arrows are drawn by default.

    Always as annotations (``corners`` None); as a quiver when the footprints (``corners``, in
    data coordinates) are at least `ARROW_MIN_POINTS` across on the page.
    """
    return corners is None or _footprint_points(ax, corners) >= ARROW_MIN_POINTS


def _add_polygons(ax, corners, which, gid, **style) -> None:
    """The polygons ``corners[which]`` (data coordinates) as one collection, when any."""
    from matplotlib.collections import PolyCollection

    if which.any():
        ax.add_collection(PolyCollection(list(corners[which]), closed=True, transform=ax.transData,
                                         gid=gid, **style),
                          autolim=False)


def _draw_footprints_at_once(ax, corners, colors, flags, outlines) -> None:
    """`_draw_footprint` of every image, as collections: the same fills, hatches and lines.

    Each kind of mark is one collection, in the patches' order and layers.
    """
    thin = _line_scale(ax, corners)
    invalid = np.asarray(flags.invalid, bool)
    dashed = np.asarray(flags.disconnected, bool)
    grouped = np.array([c is not None for c in outlines], bool)
    colors = np.asarray(colors, dtype=object)
    _add_polygons(ax, corners, ~invalid, "footprints", facecolors=list(colors[~invalid]),
                  edgecolors="none", linewidths=0, zorder=1)
    _add_polygons(ax, corners, invalid, "footprints-invalid", facecolors=list(colors[invalid]),
                  edgecolors=HATCH_COLOR, linewidths=0, hatch=HATCH, zorder=1)
    _add_polygons(ax, corners, grouped, "groups", facecolors="none",
                  edgecolors=[c for c, g in zip(outlines, grouped) if g], linewidths=2.2 * thin,
                  joinstyle="miter", zorder=2)
    _add_polygons(ax, corners, ~dashed, "outlines", facecolors="none", edgecolors="black",
                  linewidths=0.6 * thin, zorder=3)
    _add_polygons(ax, corners, dashed, "outlines-disconnected", facecolors="none",
                  edgecolors="black", linewidths=0.6 * thin, linestyles=[(0, (3, 2))], zorder=3)


def _draw_planes_at_once(ax, lon, lat, grids, cmap, norm) -> None:
    """Every image's grid of `plot_planes` in one mesh: the images' grids stacked as rows.

    The row of cells between two images' grids is masked (drawn in no colour).
    """
    from matplotlib.collections import QuadMesh

    count, side = grids.shape[:2]
    if not count:
        return
    nodes = _in_data(ax, lon.reshape(count, -1), lat.reshape(count, -1))
    values = np.full((count, side + 1, side), np.nan)
    values[:, :side] = grids
    mesh = QuadMesh(nodes.reshape(count * (side + 1), side + 1, 2), shading="flat",
                    antialiased=False, edgecolors="none", transform=ax.transData,
                    cmap=cmap.with_extremes(bad=(0, 0, 0, 0)), norm=norm, zorder=1,
                    gid="planes", rasterized=True)
    mesh.set_array(np.ma.masked_invalid(values.reshape(count * (side + 1), side)[:-1]))
    ax.add_collection(mesh, autolim=False)


def _GRADIENT_HANDLE():
    return Line2D([], [], color="black", linestyle="none", marker=r"$\rightarrow$", markersize=9,
                  label="sky gradient")


def _draw_gradients(ax, table: xr.Dataset, *, at_once: bool = False) -> bool:
    """Draw the gradient arrows of fitted planes (`display.planes.gradient_tips`).

    Each arrow its own annotation (``gradient-<name>``) with a white casing, or with
    ``at_once`` all of them one quiver (``gradients``) of the same size (a 0.9 pt shaft, a
    3.5 x 4 pt head) without casing (thousands of casings whitened the map).

    Returns whether any was drawn.
    """
    from matplotlib import patheffects

    tips = gradient_tips(table)
    names = table["image"].values.astype(str)
    ra, dec = table["ra"].values.astype(float), table["dec"].values.astype(float)
    drawn = np.flatnonzero(np.isfinite(tips[0]))
    if at_once:
        if drawn.size:
            start = _in_data(ax, ra[drawn, None], dec[drawn, None])[:, 0]
            step = _in_data(ax, tips[0][drawn, None], tips[1][drawn, None])[:, 0] - start
            ax.quiver(start[:, 0], start[:, 1], step[:, 0], step[:, 1], angles="xy",
                      scale_units="xy", scale=1, units="inches", width=0.9 / 72,
                      headwidth=4 / 0.9, headlength=3.5 / 0.9, headaxislength=3.5 / 0.9,
                      color="black", zorder=5, gid="gradients")
        return bool(drawn.size)
    world = ax.get_transform("world")
    casing = [patheffects.withStroke(linewidth=2.4, foreground="white")]
    for k in drawn:
        ax.annotate("", xy=(tips[0][k], tips[1][k]), xytext=(ra[k], dec[k]), xycoords=world,
                    textcoords=world, zorder=5, gid=f"gradient-{names[k]}",
                    arrowprops=dict(arrowstyle="-|>,head_length=0.35,head_width=0.2",
                                    color="black", linewidth=0.9, shrinkA=0, shrinkB=0,
                                    path_effects=casing))
    return bool(drawn.size)


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


def _marker_handles(flags: Flags, groups, group_colors: dict, color_by: str) -> list:
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


def _label_x(ax, x, labels: list, limit: int, name: str, fonts: _Fonts, pattern: str = "") -> None:
    """Labels under the x axis (``pattern``: what `short_names` took off them, said once)."""
    if len(labels) <= limit:
        ax.set_xticks(x, labels, rotation=90, fontsize=fonts.tick)
        ax.tick_params(axis="x", length=2)
        if pattern:
            ax.set_xlabel(pattern, fontsize=fonts.small)
    else:
        ax.set_xlabel(f"{name} (index)", fontsize=fonts.label)
        # few integer ticks with thousands separators: 40,000 pairs gave 9 five-digit labels
        # run together under a column-wide plot
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


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

    A name too wide for its band is written vertically, and not at all in a band narrower
    than its letters are high (thousands of exposures in a column-wide plot).
    """
    from matplotlib.collections import PolyCollection

    top = blended_transform_factory(ax.transData, ax.transAxes)
    points = FontProperties(size=fonts.small).get_size_in_points()
    per_image = ax.get_position().width * ax.figure.get_figwidth() * 72 / max(len(group), 1)
    bands, band_colors = [], []
    start = 0
    for k in range(1, len(group) + 1):
        if k < len(group) and group[k] == group[start]:
            continue
        label = group[start]
        if label:
            x0, x1 = start - 0.45, k - 0.55
            bands.append([(x0, 0), (x1, 0), (x1, 1), (x0, 1)])
            band_colors.append(colors[label])
            width = (k - start) * per_image
            fits = 0.6 * points * len(label) < width
            if fits or width >= points:
                ax.text((start + k - 1) / 2, 0.98, label, transform=top, ha="center", va="top",
                        rotation=0 if fits else 90, fontsize=fonts.small, color="0.2",
                        clip_on=True)
        start = k
    if bands:  # one collection (thousands of exposures made as many patches)
        ax.add_collection(PolyCollection(bands, facecolors=band_colors, alpha=0.18, linewidths=0,
                                         transform=top, zorder=0, gid="group-bands"),
                          autolim=False)


def _mark_invalid(ax, x, names, reasons, fonts: _Fonts) -> None:
    """A cross at the bottom for each image without a sky; the reasons under the axis."""
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(x, np.full(x.size, 0.05), transform=bottom, linestyle="none", marker="x",
            markersize=5, markeredgewidth=1.2, color=BAD_COLOR, label="no valid sky", zorder=4)
    bad = set(names)
    for tick in ax.get_xticklabels():
        if tick.get_text() in bad:
            tick.set_color(BAD_COLOR)
    by_reason: dict[str, list[str]] = {}
    for name, reason in zip(names, reasons):
        by_reason.setdefault(reason or "no sky could be computed", []).append(name)
    lines = [f"× {and_more(n, MAX_INVALID_NAMES)}: {r}" for r, n in by_reason.items()]
    width = _characters_per_line(ax, fonts.small)
    _note(ax, "\n".join(textwrap.fill(line, width, subsequent_indent="   ") for line in lines),
          BAD_COLOR, fonts)


def _characters_per_line(ax, fontsize) -> int:
    """About how many characters of this size fit in a line centred under the axes."""
    points = FontProperties(size=fontsize).get_size_in_points()
    box = ax.get_position()
    centre = max((box.x0 + box.x1) / 2, 0.6)  # (the layout moves the axes right of the y labels)
    room = 2 * min(centre, 1 - centre) * ax.figure.get_figwidth() * 72
    return max(20, int(room / (0.66 * points)))  # (DejaVu Sans: digits 0.64 em)


def _pad_y(ax, sky, err, truth) -> None:
    """Room at the bottom for the crosses of invalid images, at the top for group names."""
    known = [truth[np.isfinite(truth)]] if truth is not None else []
    values = np.concatenate([sky - err, sky + err, *known])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return
    low, high = values.min(), values.max()
    span = high - low if high > low else max(abs(high), 1.0)
    ax.set_ylim(low - 0.25 * span, high + 0.2 * span)
