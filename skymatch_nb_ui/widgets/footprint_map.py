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
from ..display.planes import gradient_tips, is_plane
from ..display.projection import SkyProjection, footprint_centres, sky_projection, tangent_projection
from ..engine._validate import few_of, some_names
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
    ``sky_err``, ``gradient`` (of a plane result), ``npix``, ``group``, ``component`` or
    ``valid``, as the figures of `skymatch_nb_ui.plotting` do
    (`skymatch_nb_ui.display.encodings` decides both); images
    without a valid sky are hatched and images outside the largest connected component have a
    dashed outline.  A result of ``skymodel="plane"`` adds an arrow per image, from its
    centre along the direction its fitted sky increases, its length proportional to the
    gradient (the largest: `skymatch_nb_ui.display.planes.ARROW_FRACTION` of a footprint
    radius), and the slopes and gradient in the tooltips.

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
    All state lives in traitlets, so a saved notebook re-renders without a kernel.  Arrays
    over images and pairs travel as binary buffers (little-endian), not JSON lists.  The
    numbers of tooltips (4 significant digits) travel as float32: `tooltips` and `pairs`
    write the very numbers the front end writes.  Coordinates
    are arcsec in the display frame (x right = west, y up = north).

    Set by Python, drawn by the front end:

    - ``names``: list of str, the image names.
    - ``shapes``: ``{"corners": m, "polygons": float32 (n, m, 2), "centers": float32 (n, 2)}``,
      each footprint's corners and centre (the mean direction of its corners, projected).
    - ``projection``: ``{"kind": "tangent" | "allsky", "label"}`` (an all-sky map has no
      scale bar: its scale varies).
    - ``fill_rgb``: uint8 (n, 3), each footprint's colour.
    - ``images``: what the tooltips and outlines say of each image: ``{"solved", "unit",
      "flags": uint8 (1: no valid sky, hatched; 2: outside the largest component, dashed),
      "sky", "sky_err": float32, "component": int32, "group", "reason": {"texts": [...],
      "index": int32}, "plane": bool, "slope_x", "slope_y", "gradient", "gradient_pa":
      float32, "arrows": float32 (n, 2)}``; ``plane``: the result fitted planes
      (``skymodel="plane"``; else the plane buffers are empty), ``arrows``: the tip of each
      image's gradient arrow (display frame; NaN: no arrow), which starts at its centre.
    - ``colorbar``: ``{"kind": "ramp", "colors", "vmin", "vmax", "label"}`` or
      ``{"kind": "categories", "labels", "colors", "more", "label"}``.
    - ``pair_shapes``: the overlapping pairs of inputs, ``{"inputs": [input names],
      "a", "b": int32 (indices into inputs), "ends": float32 (p, 4)}`` (a line between the
      inputs' centres; a group's centre is the mean of its images' centres).
    - ``pair_values``: ``{"unit", "color": uint8 (p, 3), "state": uint8 (1: used in the
      solve, 2: down-weighted by a robust solve), "after", "before", "weight": float32,
      "plane": bool, "resid_gradient": float32, "fallback": {"texts", "index": int32}}``,
      coloured by the residual after the solve (``plane``: the residual gradient and why a
      pair constrained only a constant, for the titles).
    - ``pairs_colorbar``: the residual scale of the pairs (a ``"ramp"`` colour bar).
    - ``color_by_options``: the choices of ``color_by``.
    - ``renderer``: ``"auto"`` (SVG up to 500 images, else canvas: ``SVG_LIMIT`` of the front
      end), ``"svg"`` or ``"canvas"``.

    The same content as lists, for Python: `polygons`, `centers`, `fill`, `flags`,
    `tooltips` (the text the front end builds from ``images``) and `pairs`.

    Two-way (the user changes them in the map, Python may too):

    - ``color_by``: str; changing it recomputes ``fill_rgb`` and ``colorbar``.
    - ``show_overlaps``: bool, draw the pairs.
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
    shapes = traitlets.Dict().tag(sync=True)
    projection = traitlets.Dict().tag(sync=True)
    fill_rgb = traitlets.Bytes().tag(sync=True)
    images = traitlets.Dict().tag(sync=True)
    colorbar = traitlets.Dict().tag(sync=True)
    pair_shapes = traitlets.Dict().tag(sync=True)
    pair_values = traitlets.Dict().tag(sync=True)
    pairs_colorbar = traitlets.Dict().tag(sync=True)
    color_by_options = traitlets.List(traitlets.Unicode(), default_value=list(COLOR_BY)).tag(sync=True)
    renderer = traitlets.Unicode("auto").tag(sync=True)

    color_by = traitlets.Unicode("sky").tag(sync=True)
    show_overlaps = traitlets.Bool(False).tag(sync=True)
    selected = traitlets.List(traitlets.Unicode()).tag(sync=True)
    hovered = traitlets.Unicode("").tag(sync=True)

    def __init__(self, collection, result: xr.Dataset | None = None, *, color_by: str = "sky",
                 **kwargs):
        self._collection = collection
        self._result: xr.Dataset | None = None
        self._pair_cache: tuple = ((), {}, np.zeros((0, 4)))  # (grouping, pair_shapes, ends)
        lon, lat = collection.footprints
        self._projection = sky_projection(lon, lat)
        self.tangent = (self._projection.lon, self._projection.lat)
        polygons, centers = _display(self._projection, lon, lat)
        self._polygons = np.round(polygons, DECIMALS)
        self._centers = np.round(centers, DECIMALS)
        self._index = {name: k for k, name in enumerate(collection.names)}
        super().__init__(
            names=list(collection.names),
            shapes={"corners": self._polygons.shape[1], "polygons": _f32(self._polygons),
                    "centers": _f32(self._centers)},
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
            self.images = self._images()
            self.pair_shapes, self.pair_values, self.pairs_colorbar = self._pairs()

    # -- the same content as lists (Python's view of what the front end draws) -------------------
    @property
    def polygons(self) -> list:
        """One ``[[x, y], ...]`` corner list per image (arcsec, display frame, 0.01" steps)."""
        return self._polygons.tolist()

    @property
    def centers(self) -> list:
        """One ``[x, y]`` per image: the mean direction of its corners, projected."""
        return self._centers.tolist()

    @property
    def fill(self) -> list[str]:
        """One ``#rrggbb`` colour per image (as `skymatch_nb_ui.display` gives it)."""
        return list(self._fill)

    @property
    def flags(self) -> list[list[str]]:
        """Per image: ``"invalid"`` (no valid sky, hatched), ``"disconnected"`` (dashed)."""
        bits = np.frombuffer(self.images["flags"], np.uint8)
        return [(["invalid"] if b & 1 else []) + (["disconnected"] if b & 2 else []) for b in bits.tolist()]

    @property
    def tooltips(self) -> list[str]:
        r"""Each image's tooltip, as the front end writes it (lines separated by ``"\n"``)."""
        info = self.images
        group, reason = _decoded(info["group"]), _decoded(info["reason"])
        unit = f" {info['unit']}" if info["unit"] else ""
        if info["solved"]:
            sky, err = np.frombuffer(info["sky"], np.float32), np.frombuffer(info["sky_err"], np.float32)
            component = np.frombuffer(info["component"], np.int32).tolist()
            invalid = (np.frombuffer(info["flags"], np.uint8) & 1).astype(bool).tolist()
            plane = {key: np.frombuffer(info[key], np.float32)
                     for key in ("slope_x", "slope_y", "gradient", "gradient_pa")} if info["plane"] else None
        texts = []
        for k, name in enumerate(self.names):
            lines = [name, f"group: {group[k]}"]
            if not info["solved"]:
                lines.append("no result yet")
            else:
                lines.append(f"sky: {number(sky[k])} ± {number(err[k])}{unit}")
                if plane is not None:
                    lines += _plane_lines(plane, k, unit)
                lines.append(f"component: {component[k]}")
                if invalid[k]:
                    lines.append(f"NOT valid: {reason[k] or 'no sky'}")
                else:
                    lines.append("valid" + (f" ({reason[k]})" if reason[k] else ""))
            texts.append("\n".join(lines))
        return texts

    @property
    def pairs(self) -> list[dict]:
        """One ``{"a", "b", "color", "title", "valid", "flagged"}`` per overlapping pair of inputs.

        ``flagged``: down-weighted by the robust solve (drawn dotted, with a legend row).
        """
        shapes, values = self.pair_shapes, self.pair_values
        if not shapes:
            return []
        inputs = shapes["inputs"]
        a, b = np.frombuffer(shapes["a"], np.int32), np.frombuffer(shapes["b"], np.int32)
        ends = self._pair_cache[2]
        state = np.frombuffer(values["state"], np.uint8).tolist()
        after = np.frombuffer(values["after"], np.float32)
        before = np.frombuffer(values["before"], np.float32)
        weight = np.frombuffer(values["weight"], np.float32)
        unit = f" {values['unit']}" if values["unit"] else ""
        if values["plane"]:
            resid = np.frombuffer(values["resid_gradient"], np.float32)
            fallback = _decoded(values["fallback"])
        out = []
        for k in range(len(a)):
            title = (f"{inputs[a[k]]} – {inputs[b[k]]}\nresidual after: {number(after[k])}{unit}\n"
                     f"difference before: {number(before[k])}{unit}")
            if values["plane"] and state[k] & 1:
                title += (f"\nconstant only: {fallback[k]}" if fallback[k] else
                          f"\nresidual gradient: {number(resid[k])}{unit}/arcsec")
            if not state[k] & 1:
                title += "\nnot used (no valid pixels)"
            elif state[k] & 2:
                title += (f"\ndown-weighted by the robust solve (weight x {number(weight[k])}): "
                          "something only one image sees?")
            out.append({"a": ends[k, :2].tolist(), "b": ends[k, 2:].tolist(),
                        "color": self._pair_colors[k], "title": title,
                        "valid": bool(state[k] & 1), "flagged": bool(state[k] & 2)})
        return out

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
                f"selected names images that are not in the collection: {few_of(unknown)}; "
                f"{some_names(self.names, unknown[:3])}"
            )
        return [n for n in self.names if n in chosen]

    @traitlets.validate("hovered")
    def _valid_hovered(self, proposal):
        name = proposal["value"]
        if name and name not in self.names:
            raise ValueError(
                f"hovered must be an image name or ''; got {name!r}; {some_names(self.names, [name])}"
            )
        return name

    @traitlets.validate("color_by")
    def _valid_color_by(self, proposal):
        return encodings.check_color_by(proposal["value"])

    @traitlets.observe("color_by")
    def _color_by_changed(self, change):
        if self.names:  # not during __init__, before update() ran
            self._recolor()

    # -- colours, image facts, pairs --------------------------------------------------------------
    def _shown(self) -> xr.Dataset:
        """What the colours are read from: the result, or the collection's groups."""
        return self._result if self._result is not None else self._collection.table

    def _unit(self) -> str:
        return sky_unit(self._result) if self._result is not None else self._collection._sky_unit()

    def _recolor(self) -> None:
        fill = image_fill(self._shown(), self.color_by, unit=self._unit())
        self._fill = fill.colors
        self.fill_rgb, self.colorbar = _rgb(fill.colors), fill.legend.as_json()

    def _group_texts(self) -> list[str]:
        return [str(g) for g in self._shown()["group"].values]

    def _images(self) -> dict:
        """What tooltips and outlines say of each image (see the class notes)."""
        r, n = self._result, len(self.names)
        groups = [g or encodings.NONE_GROUP for g in self._group_texts()]
        flags = image_flags(r, n)
        info = {"solved": r is not None, "unit": self._unit(), "group": _encoded(groups),
                "flags": (flags.invalid.astype(np.uint8) | flags.disconnected.astype(np.uint8) << 1)
                .tobytes()}
        plane = {"plane": is_plane(r), "slope_x": b"", "slope_y": b"", "gradient": b"",
                 "gradient_pa": b"", "arrows": b""}
        if r is None:
            return {**info, **plane, "sky": b"", "sky_err": b"", "component": b"",
                    "reason": _encoded([""] * n)}
        if plane["plane"]:
            plane.update({key: _f32(r[key].values) for key in ("slope_x", "slope_y", "gradient",
                                                                  "gradient_pa")})
            xi, eta = self._projection.project(*gradient_tips(r))
            tips = np.stack([-np.asarray(xi), np.asarray(eta)], axis=-1) * ARCSEC_PER_DEGREE
            plane["arrows"] = _f32(np.round(tips, DECIMALS))
        return {**info, **plane, "sky": _f32(r["sky"].values), "sky_err": _f32(r["sky_err"].values),
                "component": np.ascontiguousarray(r["component"].values, "<i4").tobytes(),
                "reason": _encoded(r["reason"].values.astype(str).tolist())}

    def _pairs(self) -> tuple[dict, dict, dict]:
        r = self._result
        if r is None or r.sizes.get("pair", 0) == 0:
            return {}, {}, {}
        a, b = r["a"].values.astype(str), r["b"].values.astype(str)
        unit = self._unit()
        style = pair_colors(r, unit=unit)
        state = r["pair_valid"].values.astype(np.uint8)
        if "flagged" in r:  # down-weighted by a robust solve
            flagged = r["flagged"].values.astype(bool) & r["pair_valid"].values.astype(bool)
            state |= flagged.astype(np.uint8) << 1
        weight = r["robust_weight"].values if "robust_weight" in r else np.full(len(a), np.nan)
        self._pair_colors = style.colors
        plane = is_plane(r) and "resid_gradient" in r and "plane_fallback" in r
        values = {"unit": unit, "color": _rgb(style.colors), "state": state.tobytes(),
                  "after": _f32(r["diff_after"].values), "before": _f32(r["diff_before"].values),
                  "weight": _f32(weight), "plane": plane,
                  "resid_gradient": _f32(r["resid_gradient"].values) if plane else b"",
                  "fallback": _encoded(r["plane_fallback"].values.astype(str).tolist() if plane
                                       else [])}
        return self._pair_shapes(a, b), values, style.legend.as_json()

    def _pair_shapes(self, a: np.ndarray, b: np.ndarray) -> dict:
        """The pairs' inputs and lines (cached: they change only with the grouping)."""
        key = (tuple(self._group_texts()), a.tobytes(), b.tobytes())
        if self._pair_cache[0] == key:
            return self._pair_cache[1]
        centres = self._input_centres()
        inputs = list(dict.fromkeys([*a.tolist(), *b.tolist()]))
        unknown = sorted(set(inputs) - set(centres))
        if unknown:
            raise ValueError(
                f"the result's pairs name inputs that are neither images nor groups of this map: "
                f"{unknown}; pass the Dataset returned by collection.skymatch()"
            )
        number_of = {name: k for k, name in enumerate(inputs)}
        ia = np.array([number_of[x] for x in a.tolist()], "<i4")
        ib = np.array([number_of[x] for x in b.tolist()], "<i4")
        points = np.array([centres[x] for x in inputs]).reshape(-1, 2)
        ends = np.round(np.concatenate([points[ia], points[ib]], axis=1), DECIMALS)
        shapes = {"inputs": inputs, "a": ia.tobytes(), "b": ib.tobytes(), "ends": _f32(ends)}
        self._pair_cache = (key, shapes, ends)
        return shapes

    def _input_centres(self) -> dict[str, np.ndarray]:
        """The centre of each solve input: an image alone, or the mean of a group's images."""
        groups = np.array(self._group_texts(), dtype=object)
        centres = {name: self._centers[k] for k, name in enumerate(self.names) if not groups[k]}
        labelled = groups != ""
        if labelled.any():
            labels, inverse = np.unique(groups[labelled].astype(str), return_inverse=True)
            sums = np.zeros((len(labels), 2))
            np.add.at(sums, inverse, self._centers[labelled])
            counts = np.bincount(inverse, minlength=len(labels))[:, None]
            centres.update(zip(labels.tolist(), sums / counts))
        return centres


def _plane_lines(plane: dict, k: int, unit: str) -> list[str]:
    """The tooltip lines of image k's fitted plane (as the front end writes them)."""
    pa = plane["gradient_pa"][k]
    toward = f" toward PA {number(pa)}°" if np.isfinite(pa) else ""
    return [f"slopes x, y: {number(plane['slope_x'][k])}, {number(plane['slope_y'][k])}{unit}/pixel",
            f"gradient: {number(plane['gradient'][k])}{unit}/arcsec{toward}"]


# -- binary buffers -------------------------------------------------------------------------------
def _f32(values) -> bytes:
    return np.ascontiguousarray(values, "<f4").tobytes()


def _rgb(colors: list[str]) -> bytes:
    """``#rrggbb`` strings as packed RGB bytes."""
    return bytes.fromhex("".join(c[1:7] for c in colors))


def _encoded(texts: list[str]) -> dict:
    """Many strings, few distinct: ``{"texts": the distinct ones, "index": int32 per item}``."""
    distinct = list(dict.fromkeys(texts))
    number_of = {t: k for k, t in enumerate(distinct)}
    return {"texts": distinct, "index": np.array([number_of[t] for t in texts], "<i4").tobytes()}


def _decoded(encoded: dict) -> list[str]:
    texts = encoded["texts"]
    return [texts[k] for k in np.frombuffer(encoded["index"], np.int32).tolist()]
