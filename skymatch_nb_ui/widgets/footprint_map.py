"""FootprintMap: every image's footprint on one tangent plane, coloured by a result quantity.

Python does the science (projection, colours, tooltips, flags); the front end
(``js/src/footprint_map.js``) only draws the traitlets and reports what the user did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import anywidget
import numpy as np
import traitlets
import xarray as xr

from .._colors import CATEGORICAL, DIVERGING, MISSING, VIRIDIS, categorical, diverging, ramp
from ..collection import group_texts
from ..engine.geometry import gnomonic, lonlat_to_xyz
from ._assets import asset

__all__ = ["FootprintMap", "COLOR_BY", "project_footprints"]

#: The quantities the footprints can be coloured by.
COLOR_BY = ("sky", "sky_err", "group", "component", "valid")

#: Display coordinates are rounded to this many decimals of an arcsecond.
DECIMALS = 2

#: Categorical legends list at most this many entries (then "N more").
MAX_LEGEND = 12

ARCSEC_PER_RADIAN = 180.0 / np.pi * 3600.0

#: Corners farther than arccos(MIN_COS) from the tangent point cannot be projected usefully.
MIN_COS = 0.05

VALID_COLORS = {"valid": CATEGORICAL[4], "not valid": CATEGORICAL[5]}

#: Colour-bar titles of the ramp quantities.
RAMP_LABELS = {"sky": "sky", "sky_err": "sky uncertainty (1σ)"}


def project_footprints(lon, lat) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Project footprint corners onto the plane tangent at their mean direction.

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
        Mean of each image's corners in the same frame.
    tangent : (float, float)
        (lon, lat) of the tangent point in degrees.

    Examples
    --------
    >>> polygons, centers, tangent = project_footprints([[10.001, 9.999]], [[0.0, 0.0]])
    >>> polygons[0, :, 0].round(2).tolist()     # larger RA on the left
    [-3.6, 3.6]
    """
    lon, lat = np.asarray(lon, float), np.asarray(lat, float)
    xyz = lonlat_to_xyz(lon.ravel(), lat.ravel())
    center = xyz.sum(axis=0)
    center /= np.linalg.norm(center)
    if np.min(xyz @ center) <= MIN_COS:
        raise ValueError(
            "the footprints span more than a hemisphere; the map needs every corner within "
            f"{np.degrees(np.arccos(MIN_COS)):.0f} degrees of their mean direction"
        )
    tangent_lon = float(np.arctan2(center[1], center[0]))
    tangent_lat = float(np.arcsin(np.clip(center[2], -1.0, 1.0)))
    uv = gnomonic(xyz, center, _east_north(tangent_lon, tangent_lat)) * ARCSEC_PER_RADIAN
    display = np.stack([-uv[:, 0], uv[:, 1]], axis=-1).reshape(lon.shape + (2,))
    return display, display.mean(axis=1), (np.degrees(tangent_lon) % 360.0, np.degrees(tangent_lat))


def _east_north(lon: float, lat: float) -> np.ndarray:
    """Unit vectors towards east and north at (lon, lat) in radians (any latitude but a pole).

    Unlike the engine's `tangent_basis` (any orthonormal pair), these keep north up on the map.
    """
    east = np.array([-np.sin(lon), np.cos(lon), 0.0])
    north = np.array([-np.sin(lat) * np.cos(lon), -np.sin(lat) * np.sin(lon), np.cos(lat)])
    return np.stack([east, north])


def _rounded(values: np.ndarray) -> list:
    return np.round(values, DECIMALS).tolist()


class FootprintMap(anywidget.AnyWidget):
    """A map of the images' footprints, coloured by a sky-matching result.

    The footprints are projected onto the plane tangent at the mosaic's centre, with north
    up and RA increasing to the left.  Colour by ``sky``, ``sky_err``, ``group``,
    ``component`` or ``valid``; images without a valid sky are hatched and images outside
    the largest connected component have a dashed outline.

    Parameters
    ----------
    collection : ImageCollection
        The images.
    result : xarray.Dataset, optional
        A result of ``collection.skymatch(...)``; without one only groups are known.
    pairs : xarray.Dataset, optional
        Per-pair diagnostics (``collection.last_pairs``) for the overlap lines; by default
        ``collection.last_pairs`` when ``result`` is ``collection.last_result``.
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
    - ``centers``: one ``[x, y]`` per image.
    - ``fill``: one CSS colour per image.
    - ``tooltips``: one text per image (lines separated by ``"\\n"``).
    - ``flags``: one list per image of ``"invalid"`` (no valid sky) and/or
      ``"disconnected"`` (not in the largest overlap component).
    - ``colorbar``: ``{"kind": "ramp", "colors", "vmin", "vmax", "label"}`` or
      ``{"kind": "categories", "labels", "colors", "more", "label"}``.
    - ``pairs``: one ``{"a": [x, y], "b": [x, y], "color", "title", "valid", "flagged"}``
      per pair of overlapping inputs, between the inputs' centres (a group's centre is the
      mean of its images' centres), coloured by the residual after the solve; ``flagged``:
      down-weighted by the robust solve (drawn dotted, with a legend entry).
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

    _esm = asset("footprint_map.js")
    _css = asset("footprint_map.css")

    names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    polygons = traitlets.List().tag(sync=True)
    centers = traitlets.List().tag(sync=True)
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

    def __init__(self, collection, result: xr.Dataset | None = None, pairs: xr.Dataset | None = None,
                 *, color_by: str = "sky", **kwargs):
        self._collection = collection
        self._result: _Solved | None = None
        self._unit = ""
        polygons, centers, self.tangent = project_footprints(*collection.footprints)
        self._centers = centers
        super().__init__(
            names=list(collection.names), polygons=_rounded(polygons), centers=_rounded(centers),
            color_by=color_by, **kwargs,
        )
        self.update(result, pairs)

    # -- public API ------------------------------------------------------------------------------
    def update(self, result: xr.Dataset | None = None, pairs: xr.Dataset | None = None) -> None:
        """Re-colour from a result of ``collection.skymatch`` (None: groups only).

        ``pairs`` defaults to ``collection.last_pairs`` when ``result`` is the collection's
        ``last_result``.
        """
        if result is not None and list(map(str, result.image.values)) != list(self.names):
            raise ValueError(
                "result is not a result of this map's collection: its image names differ; pass "
                "the Dataset returned by collection.skymatch()"
            )
        if pairs is None and result is not None and result is self._collection.last_result:
            pairs = self._collection.last_pairs
        self._result = _Solved.of(result) if result is not None else None
        self._unit = _unit(self._collection, result)
        with self.hold_sync():
            self._recolor()
            self.tooltips = self._tooltips()
            self.flags = self._flags()
            self.pairs, self.pairs_colorbar = self._pairs(pairs)

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
        value = proposal["value"]
        if value not in COLOR_BY:
            raise ValueError(f"color_by must be one of {list(COLOR_BY)}; got {value!r}")
        return value

    @traitlets.observe("color_by")
    def _color_by_changed(self, change):
        if self.names:  # not during __init__, before update() ran
            self._recolor()

    # -- colours, tooltips, flags, pairs ---------------------------------------------------------
    def _recolor(self) -> None:
        self.fill, self.colorbar = self._colors(self.color_by)

    def _colors(self, quantity: str) -> tuple[list[str], dict]:
        if quantity == "group":
            labels = [g or None for g in self._groups()]
            return _category_colors(labels, "group", none_label="none (own sky)")
        r = self._result
        if r is None:
            return [MISSING] * len(self.names), _categories(["no result yet: run skymatch()"], [MISSING], quantity)
        if quantity == "component":
            largest = _largest_component(r.component)
            labels = [f"{c} (largest)" if c == largest else str(c) for c in r.component]
            return _category_colors(labels, "component")
        if quantity == "valid":
            labels = ["valid" if v else "not valid" for v in r.valid]
            order = [k for k in VALID_COLORS if k in labels]
            colorbar = _categories(order, [VALID_COLORS[k] for k in order], "valid sky")
            return [VALID_COLORS[k] for k in labels], colorbar
        values = np.where(r.valid, getattr(r, quantity), np.nan)
        finite = values[np.isfinite(values)]
        vmin = float(finite.min()) if finite.size else 0.0
        vmax = float(finite.max()) if finite.size else 0.0
        colorbar = {"kind": "ramp", "colors": list(VIRIDIS), "vmin": vmin, "vmax": vmax,
                    "label": _with_unit(RAMP_LABELS[quantity], self._unit)}
        return ramp(values, VIRIDIS, vmin, vmax), colorbar

    def _groups(self) -> list[str]:
        if self._result is not None:
            return self._result.group
        return group_texts(self._collection.groups.values())

    def _tooltips(self) -> list[str]:
        groups = self._groups()
        r = self._result
        unit = f" {self._unit}" if self._unit else ""
        texts = []
        for k, name in enumerate(self.names):
            lines = [name, f"group: {groups[k] or 'none (own sky)'}"]
            if r is None:
                lines.append("no result yet")
            else:
                lines.append(f"sky: {_number(r.sky[k])} ± {_number(r.sky_err[k])}{unit}")
                lines.append(f"component: {r.component[k]}")
                reason = r.reason[k]
                if r.valid[k]:
                    lines.append("valid" + (f" ({reason})" if reason else ""))
                else:
                    lines.append(f"NOT valid: {reason or 'no sky'}")
            texts.append("\n".join(lines))
        return texts

    def _flags(self) -> list[list[str]]:
        r = self._result
        if r is None:
            return [[] for _ in self.names]
        largest = _largest_component(r.component)
        return [
            (["invalid"] if not valid else []) + (["disconnected"] if c != largest else [])
            for valid, c in zip(r.valid, r.component)
        ]

    def _pairs(self, p: xr.Dataset | None) -> tuple[list[dict], dict]:
        if p is None or p.sizes.get("pair", 0) == 0:
            return [], {}
        a, b = p["a"].values.astype(str).tolist(), p["b"].values.astype(str).tolist()
        centres = self._input_centres()
        unknown = sorted(set(a + b) - set(centres))
        if unknown:
            raise ValueError(
                f"pairs name inputs that are neither images nor groups of this map: {unknown}; "
                "pass the collection's last_pairs of the same run as result"
            )
        after = p["diff_after"].values.astype(float)
        before = p["diff_before"].values.astype(float)
        valid = p["valid"].values.astype(bool).tolist()
        flagged = (p["flagged"].values.astype(bool) if "flagged" in p
                   else np.zeros(len(a), bool)).tolist()
        factor = (p["robust_weight"].values.astype(float) if "robust_weight" in p
                  else np.full(len(a), np.nan))
        finite = np.abs(after[np.isfinite(after)])
        limit = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
        colors = diverging(after, limit)
        ends_a = _rounded(np.array([centres[x] for x in a]))
        ends_b = _rounded(np.array([centres[x] for x in b]))
        unit = f" {self._unit}" if self._unit else ""
        out = []
        for k in range(len(a)):
            title = (f"{a[k]} – {b[k]}\nresidual after: {_number(after[k])}{unit}\n"
                     f"difference before: {_number(before[k])}{unit}")
            if not valid[k]:
                title += "\nnot used (no valid pixels)"
            elif flagged[k]:
                title += (f"\ndown-weighted by the robust solve (weight x {_number(factor[k])}): "
                          "something only one image sees?")
            out.append({"a": ends_a[k], "b": ends_b[k], "color": colors[k] if valid[k] else MISSING,
                        "title": title, "valid": valid[k], "flagged": valid[k] and flagged[k]})
        colorbar = {"kind": "ramp", "colors": list(DIVERGING), "vmin": -limit, "vmax": limit,
                    "label": _with_unit("overlap residual after solve", self._unit)}
        return out, colorbar

    def _input_centres(self) -> dict[str, np.ndarray]:
        """The centre of each solve input: an image alone, or the mean of a group's images."""
        members: dict[str, list[int]] = {}
        for k, (name, group) in enumerate(zip(self.names, self._groups())):
            members.setdefault(group or name, []).append(k)
        return {label: self._centers[idx].mean(axis=0) for label, idx in members.items()}


@dataclass(frozen=True)
class _Solved:
    """The per-image columns of a result that the map shows, as plain Python/numpy values."""

    sky: np.ndarray
    sky_err: np.ndarray
    valid: list[bool]
    reason: list[str]
    component: list[int]
    group: list[str]

    @classmethod
    def of(cls, result: xr.Dataset) -> _Solved:
        return cls(
            sky=result["sky"].values.astype(float), sky_err=result["sky_err"].values.astype(float),
            valid=result["valid"].values.astype(bool).tolist(),
            reason=result["reason"].values.astype(str).tolist(),
            component=result["component"].values.astype(int).tolist(),
            group=result["group"].values.astype(str).tolist(),
        )


def _unit(collection, result: xr.Dataset | None) -> str:
    """The unit of the sky values: the result's, else the images' common BUNIT, else ''."""
    if result is not None and result["sky"].attrs.get("units"):
        return str(result["sky"].attrs["units"])
    table = collection.table
    if "bunit" in table:
        units = {u for u in table["bunit"].values if u}
        if len(units) == 1:
            return str(units.pop())
    return ""


# -- helpers -------------------------------------------------------------------------------------
def _largest_component(component) -> int:
    values, counts = np.unique(component, return_counts=True)
    return int(values[np.argmax(counts)]) if values.size else 0


def _category_colors(labels: list, title: str, none_label: str = "none") -> tuple[list[str], dict]:
    palette = categorical(labels)
    fill = [palette[label] for label in labels]
    order = sorted(palette, key=lambda label: label is None)  # "none" last in the legend
    shown = [none_label if label is None else str(label) for label in order]
    return fill, _categories(shown, [palette[label] for label in order], title)


def _categories(labels: list[str], colors: list[str], title: str) -> dict:
    return {"kind": "categories", "labels": labels[:MAX_LEGEND], "colors": colors[:MAX_LEGEND],
            "more": max(0, len(labels) - MAX_LEGEND), "label": title}


def _with_unit(label: str, unit: str) -> str:
    return f"{label} [{unit}]" if unit else f"{label} (image units)"


def _number(value: float) -> str:
    return f"{value:.4g}" if np.isfinite(value) else "n/a"


def _abbreviated(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} images)"
