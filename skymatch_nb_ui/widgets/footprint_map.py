"""FootprintMap: every image's footprint on one tangent plane, coloured by a result quantity.

Python does the science (projection, colours, tooltips, flags); the front end
(``js/src/footprint_map.js``) only draws the traitlets and reports what the user did.
"""

from __future__ import annotations

from collections.abc import Iterable

import anywidget
import numpy as np
import traitlets
import xarray as xr

from ..display import encodings
from ..display.encodings import COLOR_BY, image_fill, image_flags, number, pair_colors, sky_unit
from ..display.projection import SkyProjection, footprint_centres, sky_projection, tangent_projection
from ._assets import css_path, esm

__all__ = ["COLOR_BY", "FootprintMap", "project_footprints"]

#: Display coordinates are rounded to this many decimals of an arcsecond.
DECIMALS = 2

ARCSEC_PER_DEGREE = 3600.0


def project_footprints(lon, lat) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Project footprint corners onto the plane tangent at the mosaic's centre.

    Parameters
    ----------
    lon, lat : array_like, shape (n, m)
        Corner longitudes and latitudes in degrees (``ImageCollection.footprints``).

    Returns
    -------
    polygons : ndarray, shape (n, m, 2)
        Corners in arcsec in the display frame: x grows to the right, which is *west*
        (RA increases to the left), y grows up (north).
    centers : ndarray, shape (n, 2)
        Each footprint's centre (the mean direction of its corners) in the same frame.
    tangent : (float, float)
        (lon, lat) of the tangent point in degrees.

    Raises
    ------
    ValueError
        When the footprints are too spread out for one tangent plane (the map then draws
        them on an all-sky projection: `skymatch_nb_ui.display.projection`).

    Examples
    --------
    >>> polygons, centers, tangent = project_footprints([[10.001, 9.999]], [[0.0, 0.0]])
    >>> polygons[0, :, 0].round(2).tolist()     # larger RA on the left
    [-3.6, 3.6]
    """
    projection = tangent_projection(lon, lat)
    polygons, centers = _display(projection, lon, lat)
    return polygons, centers, (projection.lon, projection.lat)


def _display(projection: SkyProjection, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """(polygons (n, m, 2), centres (n, 2)) in the display frame: arcsec, x = west, y = north."""
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    xi, eta = projection.project(lon, lat)
    cxi, ceta = projection.project(*footprint_centres(lon, lat))
    polygons = np.stack([-xi, eta], axis=-1) * ARCSEC_PER_DEGREE
    centers = np.stack([-cxi, ceta], axis=-1) * ARCSEC_PER_DEGREE
    return polygons, centers


def _rounded(values: np.ndarray) -> list:
    return np.round(values, DECIMALS).tolist()


class FootprintMap(anywidget.AnyWidget):
    r"""A map of the images' footprints, coloured by a sky-matching result.

    The footprints are projected onto the plane tangent at the mosaic's centre, with north
    up and RA increasing to the left (images too far apart for one tangent plane: an all-sky
    Hammer-Aitoff map; see `skymatch_nb_ui.display.projection`).  Colour by ``sky``,
    ``sky_err``, ``npix``, ``group``, ``component`` or ``valid``, as the figures of
    `skymatch_nb_ui.plotting` do (`skymatch_nb_ui.display.encodings` decides both); images
    without a valid sky are hatched and images outside the largest connected component have a
    dashed outline.

    Parameters
    ----------
    collection : ImageCollection
        The images.
    result : xarray.Dataset, optional
        A result of ``collection.skymatch(...)`` (its images and its overlap pairs); without
        one only groups are known.
    color_by : str
        One of `COLOR_BY`.

    Notes
    -----
    Traitlets (all state lives in them, so a saved notebook re-renders without a kernel);
    coordinates are arcsec in the display frame (x right = west, y up = north), rounded to
    0.01 arcsec.

    Set by Python, drawn by the front end:

    - ``names``: list of str, the image names.
    - ``polygons``: one ``[[x, y], ...]`` corner list per image.
    - ``centers``: one ``[x, y]`` per image (the mean direction of its corners, projected).
    - ``projection``: ``{"kind": "tangent" | "allsky", "label"}`` (an all-sky map has no
      scale bar: its scale varies).
    - ``fill``: one CSS colour per image.
    - ``tooltips``: one text per image (lines separated by ``"\n"``).
    - ``flags``: one list per image of ``"invalid"`` (no valid sky) and/or
      ``"disconnected"`` (not in the largest overlap component).
    - ``colorbar``: ``{"kind": "ramp", "colors", "vmin", "vmax", "label"}`` or
      ``{"kind": "categories", "labels", "colors", "more", "label"}``.
    - ``pairs``: one ``{"a": [x, y], "b": [x, y], "color", "title", "valid"}`` per pair of
      overlapping inputs, between the inputs' centres (a group's centre is the mean of its
      images' centres), coloured by the residual after the solve.
    - ``pairs_colorbar``: the residual scale of ``pairs`` (a ``"ramp"`` colour bar).
    - ``color_by_options``: the choices of ``color_by``.

    Two-way (the user changes them in the map, Python may too):

    - ``color_by``: str; changing it recomputes ``fill`` and ``colorbar``.
    - ``show_overlaps``: bool, draw ``pairs``.
    - ``selected``: list of image names (in collection order).
    - ``hovered``: the name under the mouse or the keyboard focus, ``""`` for none.

    In the map: click selects one image, shift- (or ctrl-) click toggles one, shift-drag (or
    any drag in "Box select" mode) selects the images whose centres lie in the box, plain
    drag pans, the wheel zooms, "Reset view" refits.  Keyboard: Tab into the map, arrow keys
    move the focus ring to the nearest image in that direction, ``n``/``p`` to the next or
    previous image in collection order, Enter or Space toggles the focused image's
    selection, Escape clears the selection, ``+``/``-`` zoom and ``0`` resets the view.

    Examples
    --------
    >>> from skymatch_nb_ui import ImageCollection
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3))
    >>> coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    >>> fmap = FootprintMap(coll, coll.skymatch(skystat="mean"), color_by="sky")
    >>> fmap.select(["img00", "img04"])
    >>> fmap.selected
    ['img00', 'img04']
    >>> fmap.color_by = "group"
    """

    _esm = esm("footprint_map.js")
    _css = css_path("footprint_map.css")

    names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    polygons = traitlets.List().tag(sync=True)
    centers = traitlets.List().tag(sync=True)
    projection = traitlets.Dict().tag(sync=True)
    fill = traitlets.List(traitlets.Unicode()).tag(sync=True)
    tooltips = traitlets.List(traitlets.Unicode()).tag(sync=True)
    flags = traitlets.List(traitlets.List(traitlets.Unicode())).tag(sync=True)
    colorbar = traitlets.Dict().tag(sync=True)
    pairs = traitlets.List(traitlets.Dict()).tag(sync=True)
    pairs_colorbar = traitlets.Dict().tag(sync=True)
    color_by_options = traitlets.List(traitlets.Unicode(), default_value=list(COLOR_BY)).tag(sync=True)

    color_by = traitlets.Unicode("sky").tag(sync=True)
    show_overlaps = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    hovered = traitlets.Unicode("").tag(sync=True)

    def __init__(self, collection, result: xr.Dataset | None = None, *, color_by: str = "sky",
                 **kwargs):
        self._collection = collection
        self._result: xr.Dataset | None = None
        lon, lat = collection.footprints
        self._projection = sky_projection(lon, lat)
        self.tangent = (self._projection.lon, self._projection.lat)
        polygons, self._centers = _display(self._projection, lon, lat)
        super().__init__(
            names=list(collection.names), polygons=_rounded(polygons), centers=_rounded(self._centers),
            projection={"kind": self._projection.kind, "label": self._projection.label},
            color_by=color_by, **kwargs,
        )
        self.update(result)

    # -- public API ------------------------------------------------------------------------------
    def update(self, result: xr.Dataset | None = None) -> None:
        """Re-colour from a result of ``collection.skymatch`` (None: groups only)."""
        if result is not None and list(map(str, result.image.values)) != list(self.names):
            raise ValueError(
                "result is not a result of this map's collection: its image names differ; pass "
                "the Dataset returned by collection.skymatch()"
            )
        self._result = result
        with self.hold_sync():
            self._recolor()
            self.tooltips = self._tooltips()
            self.flags = image_flags(result, len(self.names)).as_lists()
            self.pairs, self.pairs_colorbar = self._pairs()

    def select(self, names: str | Iterable[str]) -> None:
        """Select these images (replacing the selection)."""
        self.selected = [names] if isinstance(names, str) else list(names)

    def clear_selection(self) -> None:
        """Select no image."""
        self.selected = []

    def reset_view(self) -> None:
        """Zoom and pan the map back to show every footprint (the "Reset view" button)."""
        self.send({"type": "reset_view"})

    # -- validation ------------------------------------------------------------------------------
    @traitlets.validate("selected")
    def _valid_selected(self, proposal):
        chosen = set(proposal["value"])
        unknown = sorted(chosen - set(self.names))
        if unknown:
            raise ValueError(
                f"selected names images that are not in the collection: {unknown}; "
                f"the images are {_abbreviated(self.names)}"
            )
        return [n for n in self.names if n in chosen]

    @traitlets.validate("hovered")
    def _valid_hovered(self, proposal):
        name = proposal["value"]
        if name and name not in self.names:
            raise ValueError(
                f"hovered must be an image name or ''; got {name!r}; "
                f"the images are {_abbreviated(self.names)}"
            )
        return name

    @traitlets.validate("color_by")
    def _valid_color_by(self, proposal):
        return encodings.check_color_by(proposal["value"])

    @traitlets.observe("color_by")
    def _color_by_changed(self, change):
        if self.names:  # not during __init__, before update() ran
            self._recolor()

    # -- colours, tooltips, pairs ----------------------------------------------------------------
    def _shown(self) -> xr.Dataset:
        """What the colours are read from: the result, or the collection's groups."""
        return self._result if self._result is not None else self._collection.table

    def _unit(self) -> str:
        return sky_unit(self._result) if self._result is not None else self._collection._sky_unit()

    def _recolor(self) -> None:
        fill = image_fill(self._shown(), self.color_by, unit=self._unit())
        self.fill, self.colorbar = fill.colors, fill.legend.as_json()

    def _tooltips(self) -> list[str]:
        r = self._result
        groups = [str(g) for g in self._shown()["group"].values]
        unit = f" {self._unit()}" if self._unit() else ""
        if r is not None:
            sky, err = r["sky"].values.astype(float), r["sky_err"].values.astype(float)
            valid = r["valid"].values.astype(bool).tolist()
            reason = r["reason"].values.astype(str).tolist()
            component = r["component"].values.astype(int).tolist()
        texts = []
        for k, name in enumerate(self.names):
            lines = [name, f"group: {groups[k] or encodings.NONE_GROUP}"]
            if r is None:
                lines.append("no result yet")
            else:
                lines.append(f"sky: {number(sky[k])} ± {number(err[k])}{unit}")
                lines.append(f"component: {component[k]}")
                if valid[k]:
                    lines.append("valid" + (f" ({reason[k]})" if reason[k] else ""))
                else:
                    lines.append(f"NOT valid: {reason[k] or 'no sky'}")
            texts.append("\n".join(lines))
        return texts

    def _pairs(self) -> tuple[list[dict], dict]:
        r = self._result
        if r is None or r.sizes.get("pair", 0) == 0:
            return [], {}
        a, b = r["a"].values.astype(str).tolist(), r["b"].values.astype(str).tolist()
        centres = self._input_centres()
        unknown = sorted(set(a + b) - set(centres))
        if unknown:
            raise ValueError(
                f"the result's pairs name inputs that are neither images nor groups of this map: "
                f"{unknown}; pass the Dataset returned by collection.skymatch()"
            )
        unit = self._unit()
        style = pair_colors(r, unit=unit)
        after = r["diff_after"].values.astype(float)
        before = r["diff_before"].values.astype(float)
        valid = r["pair_valid"].values.astype(bool).tolist()
        ends_a = _rounded(np.array([centres[x] for x in a]))
        ends_b = _rounded(np.array([centres[x] for x in b]))
        shown_unit = f" {unit}" if unit else ""
        out = []
        for k in range(len(a)):
            title = (f"{a[k]} – {b[k]}\nresidual after: {number(after[k])}{shown_unit}\n"
                     f"difference before: {number(before[k])}{shown_unit}")
            if not valid[k]:
                title += "\nnot used (no valid pixels)"
            out.append({"a": ends_a[k], "b": ends_b[k], "color": style.colors[k], "title": title,
                        "valid": valid[k]})
        return out, style.legend.as_json()

    def _input_centres(self) -> dict[str, np.ndarray]:
        """The centre of each solve input: an image alone, or the mean of a group's images."""
        members: dict[str, list[int]] = {}
        groups = [str(g) for g in self._shown()["group"].values]
        for k, (name, group) in enumerate(zip(self.names, groups)):
            members.setdefault(group or name, []).append(k)
        return {label: self._centers[idx].mean(axis=0) for label, idx in members.items()}


def _abbreviated(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} images)"
