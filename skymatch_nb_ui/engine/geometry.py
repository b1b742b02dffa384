"""Stage 1: footprints on the sphere, candidate pairs, and the pixels of each overlap.

An image's footprint is its outline traced along pixel *edges* (x from -0.5 to nx-0.5,
y from -0.5 to ny-0.5) and mapped through its WCS; the edges between vertices are great
circles.  The pixels of image ``a`` that belong to its overlap with image ``b`` are the pixel
centres of ``a`` that fall inside ``b``'s footprint.  This rule is exact and symmetric, and
unlike a scan-line fill it gives both images of a pair the same piece of sky.

How it is computed, and why it is fast:

1. Candidate pairs come from bounding caps (centre + angular radius) found with a KD-tree,
   so the exact work is done only for pairs that can overlap, never for all N(N-1)/2.
2. In a gnomonic (tangent-plane) projection great circles are straight lines, so clipping
   ``b``'s footprint by the convex hull of ``a``'s footprint in ``a``'s tangent plane is exact.
   Clipping by the hull keeps every point handed to ``a``'s inverse WCS inside ``a``'s own
   footprint (distortion polynomials are not trusted outside it), while the pixel-centre test
   below makes the result exactly ``a ∩ b``: ``a``'s pixel centres are inside ``a`` already.
3. All clipped polygons of one image go through its WCS in a single ``world_to_pixel`` call.
4. The polygon is rasterised as row intervals of pixel centres (even-odd rule), only over the
   rows it spans: a few numbers per row are stored, never a full-frame mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
from scipy.spatial import cKDTree

from .lean import lean
from .packed import PackedWCS, is_gwcs

__all__ = [
    "CelestialWCS",
    "Footprint",
    "GatherBuffers",
    "Geometry",
    "Runs",
    "candidate_pairs",
    "footprint",
    "mosaic_geometry",
    "overlap_runs",
    "rasterize_polygon",
]

#: Largest angular radius of a footprint (degrees) the tangent-plane geometry accepts.
MAX_FOOTPRINT_RADIUS = 60.0

_LON_SUFFIXES = (".ra", ".lon", ".glon", ".elon")
_LAT_SUFFIXES = (".dec", ".lat", ".glat", ".elat")


class CelestialWCS:
    """Pixel <-> (lon, lat) in degrees through any APE 14 WCS (astropy or gwcs).

    Both directions use the WCS's full transform, distortions included.  A ``gwcs.WCS`` is
    evaluated *without* its bounding box: a bounding box makes gwcs return NaN on and just
    outside the image edge, where footprint vertices and overlap vertices lie by
    construction (and where an approximate inverse lands a fraction of a pixel outside).  The
    callers only map points that are on the image or inside its footprint's convex hull, so
    the distortion polynomials are evaluated where they were fitted (or a few pixels beyond,
    where they are smooth); pixel sets are clipped to the image afterwards.  This is what the
    reference does too (``with_bounding_box=False``).

    Parameters
    ----------
    wcs : object
        An object with the APE 14 low-level API (``pixel_to_world_values``,
        ``world_to_pixel_values``, ``world_axis_physical_types``, ``pixel_n_dim``), such as
        `astropy.wcs.WCS` or ``gwcs.WCS``, with two pixel axes and two celestial world axes.
    name : str
        How to name this WCS in error messages, e.g. ``"wcs[3]"``.

    Attributes
    ----------
    cheap_calls : bool
        Whether a call costs little beside its points (an `astropy.wcs.WCS` without
        distortions: wcslib's transforms, ~20 us).  A gwcs call costs ~1-2 ms in astropy's
        models whatever its points, and an iterative distortion inverse more: callers then
        map more points per call (`differences.pixel_maps`).
    """

    def __init__(self, wcs, name: str = "wcs"):
        low = getattr(wcs, "low_level_wcs", wcs)
        if not hasattr(low, "pixel_to_world_values") or not hasattr(low, "world_to_pixel_values"):
            raise TypeError(
                f"{name} must be a celestial WCS (astropy.wcs.WCS or gwcs.WCS); "
                f"got {type(wcs).__name__}"
            )
        types = tuple(str(t) for t in (low.world_axis_physical_types or ()))
        ilon = [k for k, t in enumerate(types) if "pos." in t and t.endswith(_LON_SUFFIXES)]
        ilat = [k for k, t in enumerate(types) if "pos." in t and t.endswith(_LAT_SUFFIXES)]
        if low.pixel_n_dim != 2 or low.world_n_dim != 2 or len(ilon) != 1 or len(ilat) != 1:
            raise ValueError(
                f"{name} must map 2 pixel axes to 2 celestial axes (longitude, latitude); got "
                f"{low.pixel_n_dim} pixel axes and world axes {list(types)}. "
                "Pass the celestial part of the WCS, e.g. WCS(header).celestial."
            )
        self.wcs = low
        self.name = name
        self.frame = (types[ilon[0]], types[ilat[0]])
        self._ilon, self._ilat = ilon[0], ilat[0]
        self._gwcs = _is_gwcs(low)
        if self._gwcs:
            self._world_units = tuple(str(unit) for unit in low.world_axis_units)
        self._transforms: dict[str, object] = {}  # a gwcs's steps, per direction (`_steps`)
        self._plain = (ilon[0], ilat[0]) == (0, 1) and _plain_fits(low)
        self.cheap_calls = self._plain

    def __getstate__(self) -> dict:
        # the steps' inverses are made again where needed: not pickled with the WCS
        return {**self.__dict__, "_transforms": {}}

    def _steps(self, direction: str):
        """A gwcs's pipeline as the transforms to apply in turn, ``"forward"`` or ``"backward"``.

        ``gwcs.WCS.__call__`` and ``invert`` compose the pipeline's transforms afresh on every
        call (copies of them), and the inverse of that compound model is a new tree of models:
        ~0.2 ms forward and ~1.8 ms backward for a NIRCam-like WCS, more than evaluating it on
        the ~50 points of most calls (a mosaic of 9 NIRCam detectors spent half its ``match``
        run there).  Applying the steps' transforms one after the other is what the compound
        model does, so the values are the same bits; forward they are the pipeline's own
        transforms, backward their inverses, made once, each `lean` (its models' own
        ``evaluate`` without astropy's per-call machinery: ~95 us instead of ~290 for a
        NIRCam-like detector step; the same bits).  A packed WCS keeps both directions with it
        (`PackedWCS.kept`: ~55 KB for a NIRCam-like WCS instead of ~430 KB made with its
        inverses), so the run keeps no WCS made.  None when gwcs has to take its own way: a
        transform in units (quantities are added and removed around it) or no analytical
        inverse (gwcs inverts numerically).  A WCS is not expected to change under a run (its
        geometry is cached too).
        """
        if isinstance(self.wcs, PackedWCS):  # kept with the packed WCS: none kept made
            both = self.wcs.kept("steps", lambda wcs: {d: _gwcs_steps(wcs, d) for d in _DIRECTIONS})
            return both[direction]
        found = self._transforms.get(direction, False)
        if found is False:
            found = self._transforms[direction] = _gwcs_steps(self.wcs, direction)
        return found

    def _through(self, direction: str, u, v):
        """``(u, v)`` through the ``direction`` steps (`_steps`), or None (gwcs's own way)."""
        steps = self._steps(direction)
        if steps is None:
            return None
        values = (u, v)
        for transform in steps:
            values = transform(*values, with_bounding_box=False, fill_value=np.nan)
            if not isinstance(values, tuple):
                values = (values,)
        return values

    def pixel_to_lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Map 0-based pixel coordinates to (lon, lat) in degrees."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        if self._plain and x.ndim == 1 and x.shape == y.shape and x.size:
            world = self.wcs.wcs.p2s(np.column_stack([x, y]), 0)["world"]
            if np.isfinite(world).all():  # (else astropy's own way, whatever it does)
                return world[:, 0], world[:, 1]
        if self._gwcs:
            world = self._through("forward", x, y)  # what gwcs's ``__call__`` evaluates
            if world is None:
                world = self.wcs(x, y, with_bounding_box=False)
            lon, lat = world[self._ilon], world[self._ilat]
            return _degrees(lon, self._world_units[self._ilon]), _degrees(lat, self._world_units[self._ilat])
        world = self.wcs.pixel_to_world_values(x, y)
        return np.asarray(world[self._ilon], float), np.asarray(world[self._ilat], float)

    def lonlat_to_pixel(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        """Map (lon, lat) in degrees to 0-based pixel coordinates."""
        world = [None, None]
        world[self._ilon] = np.asarray(lon, float)
        world[self._ilat] = np.asarray(lat, float)
        if self._plain and world[0].ndim == 1 and world[0].shape == world[1].shape \
                and world[0].size:
            pixel = self.wcs.wcs.s2p(np.column_stack(world), 0)["pixcrd"]
            if np.isfinite(pixel).all():
                return pixel[:, 0], pixel[:, 1]
        if self._gwcs:
            world = [_from_degrees(w, unit) for w, unit in zip(world, self._world_units)]
            pixel = self._through("backward", *world)  # what gwcs's ``invert`` evaluates
            if pixel is None:
                pixel = self.wcs.invert(*world, with_bounding_box=False)
            x, y = pixel
            return _plain(x), _plain(y)
        x, y = self.wcs.world_to_pixel_values(*world)
        return np.asarray(x, float), np.asarray(y, float)


_DIRECTIONS = ("forward", "backward")


def _gwcs_steps(wcs, direction: str):
    """`CelestialWCS._steps` of the gwcs ``wcs``: its transforms in turn, or None."""
    try:
        found = [step.transform for step in wcs.pipeline[:-1]]
        if direction == "backward":
            found = [transform.inverse for transform in reversed(found)]
        if not found or any(t is None or t.uses_quantity for t in found):
            return None
    except (NotImplementedError, AttributeError, TypeError):
        return None
    return [lean(t) for t in found]


def _plain_fits(wcs) -> bool:
    """Whether ``wcs`` is an `astropy.wcs.WCS` without distortions (wcslib's transforms alone).

    For such a WCS, ``pixel_to_world_values`` and ``world_to_pixel_values`` are wcslib's
    ``p2s`` and ``s2p`` on the points stacked as (n, 2) (origin 0), behind ~15 and ~40 us of
    astropy's argument handling per call: `CelestialWCS` calls them directly (the same
    values, bit for bit: checked on the bench's TAN mosaics and `make_mosaic`'s WCSs; a plane
    run at N = 256 makes ~2,000 such calls).  SIP, lookup-table and detector distortions (an
    iterative inverse), subclasses that override the APE 14 methods and other WCS kinds keep
    astropy's way.
    """
    if not type(wcs).__module__.startswith("astropy.wcs"):
        return False
    from astropy.wcs import WCS

    if not isinstance(wcs, WCS) or wcs.naxis != 2 or wcs.has_distortion:
        return False
    if (type(wcs).pixel_to_world_values is not WCS.pixel_to_world_values
            or type(wcs).world_to_pixel_values is not WCS.world_to_pixel_values):
        return False
    try:  # (reading lng/lat runs wcsset, which refuses e.g. a singular matrix)
        return (wcs.wcs.lng, wcs.wcs.lat) == (0, 1)
    except Exception:  # astropy's way then, and the error it gives (`_validate`)
        return False


def _is_gwcs(wcs) -> bool:
    """Whether ``wcs`` is a ``gwcs.WCS`` or one packed (gwcs imported only when it may be)."""
    if not is_gwcs(wcs):  # (by its class's module)
        return False
    if isinstance(wcs, PackedWCS):
        return True
    from gwcs import WCS as GWCS

    return isinstance(wcs, GWCS)


def _plain(values) -> np.ndarray:
    return np.asarray(getattr(values, "value", values), float)


def _degrees(values, unit: str) -> np.ndarray:
    if hasattr(values, "unit"):
        return np.asarray(values.to_value("deg"), float)
    if unit in ("deg", ""):
        return np.asarray(values, float)
    from astropy import units as u

    return np.asarray(u.Quantity(values, unit).to_value(u.deg), float)


def _from_degrees(values: np.ndarray, unit: str) -> np.ndarray:
    if unit in ("deg", ""):
        return values
    from astropy import units as u

    return u.Quantity(values, u.deg).to_value(unit)


def lonlat_to_xyz(lon, lat) -> np.ndarray:
    """Unit vectors, shape (n, 3), of points given in degrees."""
    lon, lat = np.radians(lon), np.radians(lat)
    c = np.cos(lat)
    return np.stack([c * np.cos(lon), c * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_lonlat(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in [0, 360) and latitude, in degrees, of (not necessarily unit) vectors."""
    xyz = np.asarray(xyz, float)
    lon = np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0])) % 360.0
    lat = np.degrees(np.arctan2(xyz[..., 2], np.hypot(xyz[..., 0], xyz[..., 1])))
    return lon, lat


def mean_direction(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """The direction of the summed unit vectors along the last axis, as (lon, lat) in degrees.

    The centre of a footprint from its corners (shape (n, m) -> (n,)), or of a set of points
    (shape (m,) -> scalars); unlike a mean of longitudes it is right across RA = 0.
    """
    return xyz_to_lonlat(lonlat_to_xyz(lon, lat).sum(axis=-2))


def edge_pixels(shape: tuple[int, int], stepsize: int | None = None):
    """Vertices, in pixel coordinates, of the outline along the pixel edges.

    The outline runs along x = -0.5 .. nx-0.5 and y = -0.5 .. ny-0.5; with ``stepsize``
    extra vertices are placed along each side at most ``stepsize`` pixels apart, so that a
    distorted WCS is followed closely.  The polygon is open (the first vertex is not repeated).
    """
    ny, nx = shape
    if stepsize is None:
        nxv, nyv = 2, 2
    else:
        nxv = max(2, int(np.ceil(nx / stepsize)) + 1)
        nyv = max(2, int(np.ceil(ny / stepsize)) + 1)
    xs = np.linspace(-0.5, nx - 0.5, nxv)
    ys = np.linspace(-0.5, ny - 0.5, nyv)
    x = np.concatenate([xs[:-1], np.full(nyv - 1, nx - 0.5), xs[:0:-1], np.full(nyv - 1, -0.5)])
    y = np.concatenate([np.full(nxv - 1, -0.5), ys[:-1], np.full(nxv - 1, ny - 0.5), ys[:0:-1]])
    return x, y


@dataclass(frozen=True)
class Footprint:
    """An image outline on the unit sphere.

    Attributes
    ----------
    xyz : ndarray, shape (n, 3)
        Unit vectors of the vertices, in order; edges are great circles; open polygon.
    center : ndarray, shape (3,)
        Unit vector of the (normalised) mean of the vertices.
    radius : float
        Largest angle (radians) from ``center`` to a vertex: the footprint lies inside this
        cap because caps smaller than a hemisphere contain the great-circle arcs between
        their points.
    hull : ndarray of int
        Indices of the vertices on the convex hull, counter-clockwise in the tangent plane at
        ``center`` (gnomonic projection preserves convexity, so any tangent plane works).
    basis : ndarray, shape (2, 3)
        Orthonormal tangent-plane axes at ``center``.
    """

    xyz: np.ndarray
    center: np.ndarray
    radius: float
    hull: np.ndarray
    basis: np.ndarray

    @property
    def lonlat(self) -> tuple[np.ndarray, np.ndarray]:
        """Vertex longitudes and latitudes in degrees."""
        return xyz_to_lonlat(self.xyz)

    def project(self, xyz: np.ndarray) -> np.ndarray:
        """Gnomonic projection of unit vectors onto this footprint's tangent plane, (n, 2)."""
        return gnomonic(xyz, self.center, self.basis)

    def deproject(self, uv: np.ndarray) -> np.ndarray:
        """Unit vectors of tangent-plane points (inverse of `project`)."""
        p = self.center + uv[:, :1] * self.basis[0] + uv[:, 1:2] * self.basis[1]
        return p / np.linalg.norm(p, axis=1, keepdims=True)


def tangent_basis(center: np.ndarray) -> np.ndarray:
    """Two orthonormal vectors spanning the plane tangent to the sphere at ``center``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(center[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _cross3(helper, center)
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, _cross3(center, e1)])


def _cross3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`numpy.cross` of two 3-vectors: the same products and differences, ~20x faster."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def gnomonic(xyz: np.ndarray, center: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Project unit vectors (n, 3) onto the tangent plane at ``center``; shape (n, 2)."""
    return (xyz @ basis.T) / (xyz @ center)[:, None]


def footprint(wcs: CelestialWCS, shape: tuple[int, int], stepsize: int | None = None) -> Footprint:
    """The footprint of an image of ``shape`` (ny, nx) through ``wcs``.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.cdelt = [-1e-4, 1e-4]; w.wcs.crval = [10, 20]; w.wcs.crpix = [50.5, 50.5]
    >>> fp = footprint(CelestialWCS(w), (100, 100))
    >>> round(float(np.degrees(fp.radius)) / 1e-4)  # half the diagonal, in pixels
    71
    """
    x, y = edge_pixels(shape, stepsize)
    lon, lat = wcs.pixel_to_lonlat(x, y)
    # wcslib's "undefined" (9.87654321e+107, e.g. from a NaN CRVAL) is finite: bound the values
    defined = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) < 1e6) & (np.abs(lat) <= 90.000001)
    if not np.all(defined):
        raise ValueError(
            "the WCS gives non-finite or undefined sky coordinates on the image outline; check "
            "its reference point (CRVAL) and that it covers the whole image (and that a gwcs "
            "bounding box does not cut it)"
        )
    xyz = lonlat_to_xyz(lon, lat)
    center = xyz.sum(axis=0)
    center /= np.linalg.norm(center)
    radius = float(np.arccos(np.clip(xyz @ center, -1.0, 1.0)).max())
    basis = tangent_basis(center)
    plane = gnomonic(xyz, center, basis)
    hull = convex_hull(plane)
    if not abs(_signed_area([tuple(p) for p in plane[hull]])) > 1e-9 * radius**2:
        raise ValueError(
            "the WCS maps the image onto a line or a point (its outline on the sky has no "
            "area): its pixel-to-sky transform is singular"
        )
    return Footprint(xyz=xyz, center=center, radius=radius, hull=hull, basis=basis)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Indices of the convex hull of 2-D points, counter-clockwise (Andrew's monotone chain)."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    pts = [tuple(points[k]) for k in order]

    def half(indices):
        chain = []
        for k in indices:
            while len(chain) >= 2 and _cross(pts[chain[-2]], pts[chain[-1]], pts[k]) <= 0:
                chain.pop()
            chain.append(k)
        return chain

    lower = half(range(len(pts)))
    upper = half(reversed(range(len(pts))))
    return order[np.array(lower[:-1] + upper[:-1], dtype=int)]


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def candidate_pairs(footprints: list[Footprint]) -> np.ndarray:
    """Pairs (i, j), i < j, whose bounding caps intersect; shape (m, 2).

    A KD-tree on the cap centres finds the pairs closer than the largest possible sum of
    radii; the exact cap test then keeps those whose caps really touch.
    """
    n = len(footprints)
    if n < 2:
        return np.empty((0, 2), dtype=np.intp)
    centers = np.array([f.center for f in footprints])
    radii = np.array([f.radius for f in footprints])
    reach = min(np.pi, 2.0 * radii.max())
    pairs = cKDTree(centers).query_pairs(2.0 * np.sin(reach / 2.0) * (1 + 1e-12), output_type="ndarray")
    if len(pairs) == 0:
        return np.empty((0, 2), dtype=np.intp)
    pairs = np.sort(pairs, axis=1)
    i, j = pairs[:, 0], pairs[:, 1]
    sep = np.arccos(np.clip(np.einsum("ij,ij->i", centers[i], centers[j]), -1.0, 1.0))
    pairs = pairs[sep <= radii[i] + radii[j]]
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def clip_convex(subject: list, clip: list) -> list:
    """Sutherland-Hodgman: the part of polygon ``subject`` inside convex, CCW polygon ``clip``.

    Pure Python on purpose: the polygons have a handful of vertices, where numpy's per-call
    overhead would dominate.
    """
    out = subject
    m = len(clip)
    for k in range(m):
        if not out:
            break
        ax, ay = clip[k]
        bx, by = clip[(k + 1) % m]
        ex, ey = bx - ax, by - ay
        inp, out = out, []
        px, py = inp[-1]
        ps = ex * (py - ay) - ey * (px - ax)
        for qx, qy in inp:
            qs = ex * (qy - ay) - ey * (qx - ax)
            if qs >= 0.0:
                if ps < 0.0:
                    t = ps / (ps - qs)
                    out.append((px + t * (qx - px), py + t * (qy - py)))
                out.append((qx, qy))
            elif ps >= 0.0:
                t = ps / (ps - qs)
                out.append((px + t * (qx - px), py + t * (qy - py)))
            px, py, ps = qx, qy, qs
    return out


@dataclass(frozen=True)
class Runs:
    """A set of pixels as row intervals: row ``rows[k]``, columns ``start[k] <= x < stop[k]``."""

    rows: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @cached_property
    def npix(self) -> int:
        """Number of pixels in the set."""
        return int((self.stop - self.start).sum())

    def __bool__(self) -> bool:
        return len(self.rows) > 0

    def flat_indices(self, nx: int, out: np.ndarray | None = None) -> np.ndarray:
        """Indices of the pixels into the flattened (C order) image with ``nx`` columns.

        Built in place (one buffer, no temporaries of the pixel count): a cumulative sum of
        ones with a jump at the start of each run.  ``out`` may be a reusable buffer of
        intp with at least `npix` elements.
        """
        lengths = self.stop - self.start
        total = int(lengths.sum())
        idx = np.empty(total, dtype=np.intp) if out is None else out[:total]
        if total == 0:
            return idx
        begins = self.rows.astype(np.intp) * nx + self.start
        firsts = np.cumsum(lengths[:-1])
        idx.fill(1)
        idx[0] = begins[0]
        idx[firsts] = begins[1:] - (begins[:-1] + lengths[:-1]) + 1
        np.cumsum(idx, out=idx)
        return idx

    def gather(self, image: np.ndarray, buffers: GatherBuffers | None = None) -> np.ndarray:
        """The values of ``image`` at these pixels, in row-major order.

        Without ``buffers`` the result is a new array; with them it is a view into a reused
        buffer, valid until the next gather with the same buffers.
        """
        total = self.npix
        out = None if buffers is None else buffers.values(image.dtype, total)
        if total == 0:
            return np.empty(0, dtype=image.dtype)
        if _is_rectangle(self):
            r0 = int(self.rows[0])
            block = image[r0 : r0 + len(self.rows), int(self.start[0]) : int(self.stop[0])]
            if out is None:
                return block.ravel()
            np.copyto(out.reshape(block.shape), block)
            return out
        if total >= _LONG_RUN * len(self.rows):  # a copy per run beats an index per pixel
            parts = [image[r, s:e] for r, s, e in
                     zip(self.rows.tolist(), self.start.tolist(), self.stop.tolist())]
            return np.concatenate(parts, out=out)
        nx = image.shape[1]
        idx = self.flat_indices(nx, None if buffers is None else buffers.indices(total))
        if image.flags.c_contiguous:
            return np.take(image.reshape(-1), idx, out=out)
        values = image[idx // nx, idx % nx]
        if out is None:
            return values
        out[...] = values
        return out

    @staticmethod
    def union(runs: list[Runs], shape: tuple[int, int]) -> Runs:
        """The union of several pixel sets of one image.

        The same runs as `runs_from_mask` of the sets' pixels (row-major, touching runs
        joined), merged as intervals: the cost grows with the runs, not with the image (a
        group's side of 2048 x 2048 pixels took ~25 ms through a mask).

        Examples
        --------
        >>> a = Runs(np.array([0, 1]), np.array([0, 0]), np.array([2, 2]))
        >>> b = Runs(np.array([1, 1]), np.array([2, 5]), np.array([4, 6]))
        >>> u = Runs.union([a, b], (3, 8))
        >>> u.rows.tolist(), u.start.tolist(), u.stop.tolist()
        ([0, 1, 1], [0, 0, 5], [2, 4, 6])
        """
        runs = [r for r in runs if r]
        if len(runs) <= 1:
            return runs[0] if runs else _EMPTY_RUNS
        return merge_runs(runs, shape[1])


class GatherBuffers:
    """Reusable buffers for `Runs.gather`: one index buffer and one value buffer per dtype.

    On these machines every fresh large array is page-faulted in (~3 us per 4 KiB), which
    costs more than the gather itself; reusing buffers avoids it.  One per thread or task.
    """

    def __init__(self):
        self._indices = np.empty(0, dtype=np.intp)
        self._values: dict = {}

    def indices(self, n: int) -> np.ndarray:
        """A reused intp buffer of ``n`` elements."""
        if len(self._indices) < n:
            self._indices = np.empty(int(n * 1.25) + 1024, dtype=np.intp)
        return self._indices[:n]

    def values(self, dtype, n: int) -> np.ndarray:
        """A reused buffer of ``n`` elements of ``dtype``."""
        dtype = np.dtype(dtype)
        buf = self._values.get(dtype)
        if buf is None or len(buf) < n:
            buf = self._values[dtype] = np.empty(int(n * 1.25) + 1024, dtype=dtype)
        return buf[:n]

    def held(self) -> list:
        """``(array, let_go)`` for each buffer held (``let_go()`` drops it)."""
        return [(self._indices, self._let_go_indices),
                *((buf, partial(self._values.pop, key, None))
                  for key, buf in list(self._values.items()))]

    def _let_go_indices(self) -> None:
        self._indices = np.empty(0, dtype=np.intp)


#: Runs at least this long on average are gathered run by run (`Runs.gather`): on 2048 runs
#: of 1,500 pixels 3.0 ms against 8.2 ms through an index per pixel (a mask: 1.4 against 6.5
#: ms); even at 256.
_LONG_RUN = 256


def _is_rectangle(runs: Runs) -> bool:
    rows = runs.rows
    return bool(
        rows[-1] - rows[0] == len(rows) - 1
        and np.all(runs.start == runs.start[0])
        and np.all(runs.stop == runs.stop[0])
        and np.all(np.diff(rows) == 1)
    )


_EMPTY_RUNS = Runs(np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.intp))


def merge_runs(runs: list[Runs], nx: int) -> Runs:
    """The pixels of several sets of runs as disjoint runs, row-major, touching runs joined.

    `runs_from_mask` of their pixels, without the mask (`Runs.union`); also what one set of
    runs that overlap or touch covers (its `~Runs.npix` then counts each pixel once).
    ``nx``: the image's width (a bound of the columns).
    """
    runs = [r for r in runs if r]
    if not runs:
        return _EMPTY_RUNS
    rows = np.concatenate([r.rows for r in runs]).astype(np.intp)
    start = np.concatenate([r.start for r in runs]).astype(np.intp)
    stop = np.concatenate([r.stop for r in runs]).astype(np.intp)
    keep = stop > start
    if not keep.all():
        rows, start, stop = rows[keep], start[keep], stop[keep]
        if not len(rows):
            return _EMPTY_RUNS
    order = np.lexsort((start, rows))
    rows, start, stop = rows[order], start[order], stop[order]
    # One line of keys, row after row (a row's keys lie below the next row's): a run
    # starts a new interval unless it starts at or before the farthest stop so far.
    width = max(int(nx), int(stop.max())) + 1
    first = rows * width
    reach = np.maximum.accumulate(first + stop)
    new = np.empty(len(rows), dtype=bool)
    new[0] = True
    np.greater(first[1:] + start[1:], reach[:-1], out=new[1:])
    begins = np.flatnonzero(new)
    rows = rows[begins]
    return Runs(rows, start[begins], np.maximum.reduceat(reach, begins) - rows * width)


def runs_from_mask(mask: np.ndarray) -> Runs:
    """Row intervals of the True pixels of a 2-D boolean mask."""
    ny, nx = mask.shape
    padded = np.zeros((ny, nx + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    r0, c0 = np.nonzero(edges == 1)
    _, c1 = np.nonzero(edges == -1)
    return Runs(r0.astype(np.intp), c0.astype(np.intp), c1.astype(np.intp))


def rasterize_polygon(px: np.ndarray, py: np.ndarray, shape: tuple[int, int]) -> Runs:
    """Pixel centres of an image of ``shape`` (ny, nx) inside a polygon (even-odd rule).

    ``px``, ``py`` are the vertices in 0-based pixel coordinates (open or closed polygon).
    A centre (x, y) is inside when it lies on the polygon's inner side of each crossing; ties
    are broken half-open (``xa <= x < xb`` along a row, edges cover ``ylo <= y < yhi``), so a
    shared boundary gives each pixel to exactly one side.

    Every row crosses the closed polygon an even number of times by construction: an edge
    covers a row by the half-open rule on its two end points' ``y``, and every vertex is the
    end point of two edges, so the covers of a row pair up exactly.  Crossings are
    interpolated in a form that is never NaN for finite vertices (huge ones give +-inf,
    which clips to the image edge).

    Raises
    ------
    ValueError
        When ``px`` and ``py`` differ in length or hold a non-finite value (NaN or inf): a
        polygon with an unknown vertex has no inside.

    Examples
    --------
    >>> r = rasterize_polygon(np.array([0.2, 3.7, 3.7, 0.2]), np.array([-1, -1, 1.5, 1.5]), (5, 5))
    >>> r.npix   # rows 0 and 1, columns 1..3
    6
    """
    ny, nx = shape
    x0, y0 = np.asarray(px, float).ravel(), np.asarray(py, float).ravel()
    if x0.shape != y0.shape:
        raise ValueError(f"px and py must have the same length; got {x0.size} and {y0.size}")
    if not (np.isfinite(x0).all() and np.isfinite(y0).all()):
        raise ValueError(
            "the polygon has non-finite vertices (NaN or inf): its inside is undefined; "
            f"px={x0.tolist()}, py={y0.tolist()}"
        )
    x1, y1 = np.concatenate((x0[1:], x0[:1])), np.concatenate((y0[1:], y0[:1]))  # next vertex
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    r_lo = _clipped_ceil(ylo, ny)
    r_hi = _clipped_ceil(yhi, ny)
    counts = np.where(y0 != y1, r_hi - r_lo, 0)
    total = int(counts.sum())
    if total == 0:
        return _EMPTY_RUNS
    edge = np.repeat(np.arange(len(x0)), counts)
    offsets = np.cumsum(counts) - counts
    rows = np.arange(total, dtype=np.intp) - np.repeat(offsets, counts) + r_lo[edge]
    xc = _crossings(x0[edge], y0[edge], x1[edge], y1[edge], rows)
    order = np.lexsort((xc, rows))
    rows, xc = rows[order], xc[order]
    start = _clipped_ceil(xc[0::2], nx)
    stop = _clipped_ceil(xc[1::2], nx)
    rows = rows[0::2]
    keep = stop > start
    return Runs(rows[keep], start[keep], stop[keep])


def _clipped_ceil(v: np.ndarray, n: int) -> np.ndarray:
    """``ceil(v)`` clipped to ``[0, n]``, as intp (``v`` finite or +-inf)."""
    c = np.ceil(v)
    np.maximum(c, 0.0, out=c)
    np.minimum(c, n, out=c)
    return c.astype(np.intp)


def _crossings(xa, ya, xb, yb, rows) -> np.ndarray:
    """X where edges (xa, ya)-(xb, yb) cross their rows; never NaN for finite vertices.

    The product-then-divide form is exact whenever the crossing is exactly representable
    (integer or half-integer vertices, e.g. shared pixel edges), so ties are decided as the
    half-open rule says.  Huge vertices may overflow it to NaN (0 * inf, inf / inf); there a
    weighted mean of the two end points, finite or +-inf, takes over.
    """
    dy = rows - ya
    with np.errstate(over="ignore", invalid="ignore"):
        xc = xa + dy * (xb - xa) / (yb - ya)
        bad = np.isnan(xc)
        if bad.any():
            t = (0.5 * dy[bad]) / (0.5 * yb[bad] - 0.5 * ya[bad])  # halves: no overflow
            xc[bad] = xa[bad] * (1.0 - t) + xb[bad] * t
    return xc


def overlap_runs(
    a: int,
    others: list[int],
    footprints: list[Footprint],
    wcs: CelestialWCS,
    shape: tuple[int, int],
) -> dict[int, Runs]:
    """The pixels of image ``a`` inside each footprint of ``others``.

    Each other footprint is clipped by the convex hull of ``a``'s footprint in ``a``'s
    tangent plane; all the clipped polygons go through ``a``'s inverse WCS in one call and
    are rasterised on ``a``'s pixel grid.  Pairs that only touch (zero area) get no pixels.
    """
    fa = footprints[a]
    hull = [tuple(p) for p in fa.project(fa.xyz)[fa.hull]]
    polys = []
    for b in others:
        fb = footprints[b]
        below = fb.xyz @ fa.center <= 0.05  # not in a's front hemisphere: cannot overlap a
        if np.any(below):
            polys.append([])
            continue
        subject = [tuple(p) for p in fa.project(fb.xyz)]
        if _signed_area(subject) < 0:
            subject.reverse()
        polys.append(clip_convex(subject, hull))
    sizes = [len(p) for p in polys]
    result = {b: _EMPTY_RUNS for b in others}
    if sum(sizes) == 0:
        return result
    uv = np.array([v for p in polys for v in p], dtype=float)
    lon, lat = xyz_to_lonlat(fa.deproject(uv))
    x, y = wcs.lonlat_to_pixel(lon, lat)
    lost = ~(np.isfinite(x) & np.isfinite(y))
    if lost.any():
        raise ValueError(
            f"{wcs.name} cannot map {int(lost.sum())} sky point(s) inside its own footprint back "
            "to pixels (its inverse returned NaN there, e.g. because of a bounding box). Give "
            "a WCS whose inverse covers the whole image: a gwcs.WCS itself (evaluated without "
            "its bounding box), not a sliced or wrapped one"
        )
    ends = np.cumsum(sizes)
    kept = [k for k, size in enumerate(sizes) if size >= 3]
    found = rasterize_polygons(x, y, ends - np.array(sizes), np.array(sizes), kept, shape)
    for k, runs in zip(kept, found):
        result[others[k]] = runs
    return result


def rasterize_polygons(x, y, first, sizes, which, shape) -> list[Runs]:
    """`rasterize_polygon` of the polygons ``which``, vertices ``first[k]`` to ``first[k] + sizes[k]``.

    All at once (the same arithmetic, element by element, and the same order of crossings
    within each polygon: the same runs as one polygon at a time).  The vertices must be
    finite.
    """
    which = np.asarray(which, np.intp)
    if not len(which):
        return []
    ny, nx = shape
    counts_v = np.asarray(sizes, np.intp)[which]
    poly_of_v = np.repeat(np.arange(len(which)), counts_v)
    base = np.asarray(first, np.intp)[which]
    within = np.arange(int(counts_v.sum())) - np.repeat(np.cumsum(counts_v) - counts_v, counts_v)
    index = base[poly_of_v] + within
    nxt = base[poly_of_v] + (within + 1) % counts_v[poly_of_v]  # np.roll(-1) per polygon
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    x0, y0, x1, y1 = x[index], y[index], x[nxt], y[nxt]
    ylo, yhi = np.minimum(y0, y1), np.maximum(y0, y1)
    r_lo = np.clip(np.ceil(ylo), 0, ny).astype(np.intp)
    r_hi = np.clip(np.ceil(yhi), 0, ny).astype(np.intp)
    counts = np.where(y0 != y1, r_hi - r_lo, 0)
    total = int(counts.sum())
    if total == 0:
        return [_EMPTY_RUNS] * len(which)
    edge = np.repeat(np.arange(len(x0)), counts)
    offsets = np.cumsum(counts) - counts
    rows = np.arange(total, dtype=np.intp) - np.repeat(offsets, counts) + r_lo[edge]
    xc = _crossings(x0[edge], y0[edge], x1[edge], y1[edge], rows)
    poly = poly_of_v[edge]
    order = np.lexsort((xc, rows, poly))
    rows, xc, poly = rows[order], xc[order], poly[order]
    start = np.clip(np.ceil(xc[0::2]), 0, nx).astype(np.intp)
    stop = np.clip(np.ceil(xc[1::2]), 0, nx).astype(np.intp)
    rows, poly = rows[0::2], poly[0::2]
    keep = stop > start
    rows, start, stop, poly = rows[keep], start[keep], stop[keep], poly[keep]
    edges = np.searchsorted(poly, np.arange(len(which) + 1))
    return [Runs(rows[lo:hi], start[lo:hi], stop[lo:hi]) if hi > lo else _EMPTY_RUNS
            for lo, hi in itertools.pairwise(edges.tolist())]


def _signed_area(poly: list) -> float:
    s = 0.0
    n = len(poly)
    for k in range(n):
        x0, y0 = poly[k]
        x1, y1 = poly[(k + 1) % n]
        s += x0 * y1 - x1 * y0
    return 0.5 * s


@dataclass(frozen=True)
class Geometry:
    """Stage 1 of a mosaic: footprints and, per ordered image pair (a, b), a's pixels inside b.

    Attributes
    ----------
    footprints : list of Footprint
        The footprint of each image.
    runs : dict
        ``{(a, b): Runs}`` for the candidate pairs, both orders (a pair that only touches
        has empty runs).
    """

    footprints: list[Footprint]
    runs: dict[tuple[int, int], Runs]


def mosaic_geometry(
    wcs: list[CelestialWCS],
    shapes: list[tuple[int, int]],
    stepsize: int | None = None,
    *,
    step: Callable[[int, int], None] | None = None,
    run: Callable[[Callable, list[tuple]], list] | None = None,
) -> Geometry:
    """Stage 1: the footprint of every image and the pixels of every overlap.

    Only the images' WCS and shapes are needed, never their pixels.  ``step(done, total)``,
    if given, is called as the work goes (``total``: twice the number of images, one step
    for each image's footprint and one for its overlaps); it may raise to stop.  ``run``, if
    given, computes the overlaps of the images that have neighbours, one independent task per
    image: ``run(overlap_runs, arguments)`` returns ``[overlap_runs(*args) for args in
    arguments]`` (e.g. in forked workers, `SkyMatcher`; it reports their steps itself).

    Raises
    ------
    ValueError
        When a WCS gives non-finite coordinates on its image's outline, or an image spans
        more than the engine supports.
    """
    step = step or (lambda done, total: None)
    footprints = []
    for k, (w, shape) in enumerate(zip(wcs, shapes)):
        step(k, 2 * len(shapes))
        try:
            fp = footprint(w, shape, stepsize)
        except ValueError as exc:
            raise ValueError(f"wcs[{k}]: {exc}") from None
        if np.degrees(fp.radius) > MAX_FOOTPRINT_RADIUS:
            raise ValueError(
                f"images[{k}] spans {2 * np.degrees(fp.radius):.1f} degrees on the sky; the "
                f"engine supports footprints up to {2 * MAX_FOOTPRINT_RADIUS:.0f} degrees across "
                "(check its WCS: a wrong pixel scale gives this too)"
            )
        footprints.append(fp)
    neighbours: dict[int, list[int]] = {k: [] for k in range(len(shapes))}
    for i, j in candidate_pairs(footprints):
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))
    runs = {}
    if run is not None:
        jobs = [(a, others) for a, others in neighbours.items() if others]
        found = run(overlap_runs, [(a, others, footprints, wcs[a], shapes[a])
                                   for a, others in jobs])
        for (a, _), image_runs in zip(jobs, found):
            runs.update({(a, b): r for b, r in image_runs.items()})
    else:
        for a, others in neighbours.items():
            step(len(shapes) + a, 2 * len(shapes))
            if others:
                found = overlap_runs(a, others, footprints, wcs[a], shapes[a])
                runs.update({(a, b): r for b, r in found.items()})
    step(2 * len(shapes), 2 * len(shapes))
    return Geometry(footprints=footprints, runs=runs)
