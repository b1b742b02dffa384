"""Pixel differences of an overlapping pair of images, without a common grid.

For ``compare="differences"`` the sky offset of two overlapping images is the statistic of
their pixel differences: each overlap pixel centre of image ``a`` is mapped to the sky through
``a``'s WCS and back to image ``b`` through ``b``'s inverse WCS, ``b`` is interpolated there
(bilinear), and the difference ``a - b`` is taken.  A scene that both images see (a nebula,
stars) cancels; only the noise (and the sky offset) remains.  Only the pair's own pixels are
touched: no mosaic grid, no reprojection of whole images.

How it is fast:

1. The map from ``a``'s pixels to ``b``'s is smooth, so the exact WCS transforms are evaluated
   only on a grid of *nodes* (every 128 pixels, finer where the map bends: `pixel_map`; the
   map of two TAN images 1024 pixels across is then within 1e-6 pixel of the exact one), and
   interpolated bilinearly between them.  Along a row of ``a`` that interpolation is
   piecewise linear, so a pixel's coordinates are ``base + c + s t`` on each piece of a row
   (`_Pieces`): two numbers per piece repeated over its pixels, never a per-pixel WCS call.
2. Only ``c + s t`` (``t`` counts the pixels of the piece) is computed per pixel, in float32
   for single-precision images: relative coordinates, so the rounding stays below 1e-5
   pixel.  The flat index of the pixel of ``b`` at the floor of both coordinates is a whole
   number below 2**24, exact in float32 too (`_points`).  When no fraction crosses a whole
   pixel within a piece (images of the same orientation, or scales in a whole ratio), the
   whole parts move by fixed steps per pixel and no floor is taken (`_whole_steps`).
3. ``b`` is copied once, framed by NaN, over the box the points need: points beyond its
   outer pixel centres then read a NaN, with no per-pixel range check (pieces that run off
   the box are cut where they leave it, `_inside`).
4. The interpolation is four gathers and three linear blends, in reused buffers
   (`DifferenceBuffers`), in float32 when both images are single precision.
5. ``a``'s matching smoothing is computed on its whole box in contiguous slices (no
   gathers), and its pixels gathered from the result once.

(Gathering a pixel and its right neighbour as one 8-byte element halves the gathers but
leaves strided halves to blend: slower on the bench, not used.)

Many small pairs (images of at most `BATCH_IMAGE_PIXELS`, e.g. 256 images of 256 x 256 with
~930 pairs of ~7,800 pixels) cost ~60 numpy calls each pair by pair, more than their pixels:
`many_pair_differences` computes them together.  The maps of all pairs come from one WCS call
per image and direction (`pixel_maps`); each image is framed once (the compared side with its
edge extrapolated, the interpolated side with NaN); the pieces, their lines, the points and the
bilinear gathers of all pairs run in flat arrays, in chunks of about 64k points so that the
arrays stay in the cache (one pass over all 7 million points ran from memory, slower than pair
by pair).  The interpolated image's pixel noise (the steep-point limit) is its whole image's,
and fractions are always taken by a floor: a pair's values do not depend on the other pairs of
its batch.  On the N = 256 bench mosaic: 0.67 -> 0.31 s for the differences.

Why bilinear (``bench/study_accuracy.py --interpolation``): nearest-neighbour sampling leaves a
sub-pixel offset times the scene's gradient in every pair (twice the error of bilinear on the
nebula mosaics); bicubic costs four times as many gathers for the same accuracy.  Bilinear
interpolation averages neighbouring pixels of ``b``, which makes the differences of adjacent
pixels correlated: `interpolation_inflation` gives the factor by which the error of a
statistic of the differences exceeds the error computed as if they were independent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np

from .geometry import CelestialWCS, GatherBuffers, Runs
from .stats import neighbour_noise, pixel_noise

__all__ = [
    "DifferenceBuffers",
    "PixelMap",
    "interpolation_inflation",
    "pair_differences",
    "pixel_map",
    "pixel_maps",
]

#: Node spacing (pixels) of the coordinate map, halved down to `_MIN_STEP` while the map's
#: bilinear interpolation is off by more than `_MAP_TOLERANCE` pixels somewhere.  On the
#: bench's N = 64 mosaic (TAN, 1024^2) its error is 1.1e-6 pixel at 128 (7e-8 at 32, 4.5e-6 at
#: 256); fewer pieces per row make the per-pixel coordinates cheaper.
_STEP = 128
_MIN_STEP = 4
_MAP_TOLERANCE = 1e-3
#: Nodes this close (pixels) to a pixel centre count as on it (the WCS round trip of a pixel
#: centre is exact only to ~1e-10 pixel).
_EDGE = 1e-6
#: A point where b changes between neighbouring pixels by more than this many times its pixel
#: noise is not interpolated (a star's core: bilinear interpolation there leaves residuals of a
#: good part of the star, which add scatter to the differences): see `pair_differences`.
_STEEP = 5.0
#: Whole numbers up to this are exact in float32: a pair's points and b's box must stay below
#: it for coordinates and flat indices in float32 (else they are computed in float64).
_EXACT = 2**24
#: Rows of b's box sampled for its pixel noise.
_NOISE_ROWS = 24
#: The weight-square statistic is measured on every `_W2_STRIDE`-th pixel.
_W2_STRIDE = 17
#: Bytes of sampled rows kept per thread by `_noise_remembered` (24 KB per 256 x 256 image).
_NOISE_MEMO_BYTES = 1 << 24


@dataclass(frozen=True)
class PixelMap:
    """Where the pixels of image ``a`` fall in image ``b``: exact on a grid of nodes.

    Attributes
    ----------
    x0, y0 : int
        ``a``'s pixel at node (0, 0).
    step : int
        Node spacing in ``a``'s pixels (along both axes).
    bx, by : ndarray, shape (rows, cols)
        ``b``'s 0-based pixel coordinates of the node ``(x0 + step*col, y0 + step*row)``.
    """

    x0: int
    y0: int
    step: int
    bx: np.ndarray
    by: np.ndarray

    @cached_property
    def area_ratio(self) -> float:
        """Mean area of one of ``a``'s pixels in ``b``'s pixels (the map's Jacobian)."""
        bx, by = self.bx, self.by
        last = -1 if bx.shape[0] > 1 else None
        dxx = (bx[:, 1:] - bx[:, :-1])[:last]
        dyx = (by[:, 1:] - by[:, :-1])[:last]
        dxy = (bx[1:] - bx[:-1])[:, :-1]
        dyy = (by[1:] - by[:-1])[:, :-1]
        if dxx.size == 0 or dxy.size == 0:
            return 1.0
        det = np.abs(dxx * dyy - dxy * dyx) / self.step**2
        if np.isfinite(det).all():  # (nanmean's value, without its copies)
            return float(np.add.reduce(det, axis=None) / det.size)
        return float(np.nanmean(det))

    @cached_property
    def off_centres(self) -> bool:
        """Whether the nodes are finite and no axis maps every pixel onto a pixel centre.

        (`batchable`'s test of the map, asked several times per pair.)
        """
        if not (np.isfinite(self.bx).all() and np.isfinite(self.by).all()):
            return False
        return not (_on_centres(self.bx, self.step) or _on_centres(self.by, self.step))


def area_ratios(pmaps: Sequence[PixelMap]) -> None:
    """Compute `PixelMap.area_ratio` of many maps at once (each map's cached value).

    The maps with one shape of nodes and finite determinants together: the same arithmetic
    element by element, and each map's sum over its own row of a 2-D array (numpy sums a
    row of a C-ordered array as it sums the same values alone: the same bits).  The others
    one by one.
    """
    groups: dict = {}
    for p in pmaps:
        if isinstance(p, PixelMap) and "area_ratio" not in p.__dict__ and p.bx.ndim == 2 \
                and p.bx.shape[0] > 1 \
                and p.bx.shape[1] > 1:
            groups.setdefault(p.bx.shape, []).append(p)
    for members in groups.values():
        if len(members) < 2:
            continue
        bx = np.stack([p.bx for p in members])
        by = np.stack([p.by for p in members])
        step2 = np.array([p.step**2 for p in members])
        dxx = (bx[:, :, 1:] - bx[:, :, :-1])[:, :-1]
        dyx = (by[:, :, 1:] - by[:, :, :-1])[:, :-1]
        dxy = (bx[:, 1:] - bx[:, :-1])[:, :, :-1]
        dyy = (by[:, 1:] - by[:, :-1])[:, :, :-1]
        det = np.abs(dxx * dyy - dxy * dyx) / step2[:, None, None]
        det = det.reshape(len(members), -1)
        finite = np.isfinite(det).all(axis=1)
        ratio = np.add.reduce(det, axis=1) / det.shape[1]
        for p, ok, r in zip(members, finite.tolist(), ratio.tolist()):
            if ok:
                p.__dict__["area_ratio"] = r  # (the cached_property's slot)


def pixel_map(wcs_a: CelestialWCS, wcs_b: CelestialWCS, runs: Runs, *, step: int = _STEP) -> PixelMap:
    """The map from ``a``'s pixels ``runs`` to ``b``'s pixel coordinates, on nodes.

    The nodes cover the bounding box of ``runs``.  The spacing starts at ``step`` and is
    halved (down to 4 pixels) while the bilinear interpolation of the nodes misses the exact
    map by more than 0.001 pixel at the centres of the cells, so distorted WCSs are followed
    as closely as plain ones.  Nodes the inverse WCS of ``b`` cannot map (outside a gwcs
    bounding box) are NaN; the pixels around them get no difference.
    """
    y_lo, y_hi = int(runs.rows.min()), int(runs.rows.max())
    x_lo, x_hi = int(runs.start.min()), int(runs.stop.max()) - 1
    while True:
        nodes = _map_nodes(wcs_a, wcs_b, x_lo, y_lo, x_hi, y_hi, step)
        if step <= _MIN_STEP or _curvature_error(nodes) <= _MAP_TOLERANCE / 2:
            return nodes
        if _map_error(wcs_a, wcs_b, nodes) <= _MAP_TOLERANCE:
            return nodes
        step //= 2


def pixel_maps(wcs: Sequence[CelestialWCS], requests: Sequence[tuple[int, int, Runs]], *,
               step: int = _STEP) -> list[PixelMap]:
    """`pixel_map` of many pairs ``(a, b, runs)`` of images ``wcs``, with few WCS calls.

    The same nodes, spacing and checks as `pixel_map` pair by pair, but each round of node
    evaluations makes one ``pixel_to_lonlat`` call per image ``a`` and one
    ``lonlat_to_pixel`` call per image ``b`` for all the pairs still refining (on a mosaic
    of 256 small images a WCS call costs more than the points it maps).  The values are the
    same as pair by pair wherever the WCS maps each point independently (FITS WCS without
    iterative distortion inverses; an iterative inverse may converge a little further).

    A pair with a WCS whose calls cost more than their points (a gwcs: ~1-2 ms per call
    through astropy's models, whatever the points; a SIP or lookup-table distortion) gets its
    finer steps' nodes and cell centres in the same round, as long as they number at most
    `_LOOKAHEAD_POINTS`: the same decisions, in one round where there were up to twelve
    (a mosaic of 100 NIRCam-like 256 x 256 images refines to 4 or 8 pixels).
    """
    out: list = [None] * len(requests)
    steps = {k: step for k in range(len(requests))}
    boxes = {}
    for k, (_, _, runs) in enumerate(requests):
        boxes[k] = (int(runs.start.min()), int(runs.rows.min()), int(runs.stop.max()) - 1,
                    int(runs.rows.max()))
    costly = [not getattr(w, "cheap_calls", False) for w in wcs]
    while steps:
        chains = {k: _lookahead(boxes[k], st) if costly[requests[k][0]] or costly[requests[k][1]]
                  else [st] for k, st in steps.items()}
        points = {k: _chain_points(boxes[k], chain) for k, chain in chains.items()}
        mapped = _map_many(wcs, [(requests[k][0], requests[k][1], pts.real, pts.imag)
                                 for k, (pts, _) in points.items()])
        steps = {}
        check = []  # (pair, its nodes) to check in a second call (one step a round)
        for (k, (_, where)), (bx, by) in zip(points.items(), mapped):
            x_lo, y_lo = boxes[k][:2]
            for level, st in enumerate(chains[k]):
                nodes_at, centres_at = where[level]
                found = PixelMap(x_lo, y_lo, st, bx[nodes_at], by[nodes_at])
                if st <= _MIN_STEP or _curvature_error(found) <= _MAP_TOLERANCE / 2:
                    out[k] = found
                    break
                if centres_at is None:
                    check.append((k, found))
                    break
                if _node_miss(found, bx[centres_at], by[centres_at]) <= _MAP_TOLERANCE:
                    out[k] = found
                    break
            else:
                steps[k] = chains[k][-1] // 2
        centres = [(k, found, _cell_centres(found)) for k, found in check]
        errors = _map_many(wcs, [(requests[k][0], requests[k][1], cx, cy)
                                 for k, _, (cx, cy) in centres])
        for (k, found, _), (ex, ey) in zip(centres, errors):
            if _node_miss(found, ex, ey) <= _MAP_TOLERANCE:
                out[k] = found
            else:
                steps[k] = found.step // 2
    return out


#: Points (nodes and cell centres) a round of `pixel_maps` may map ahead for one pair with a
#: costly WCS.
_LOOKAHEAD_POINTS = 4096


def _node_grid(box, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The nodes of ``step`` over ``box`` = (x_lo, y_lo, x_hi, y_hi): (xs, ys)."""
    x_lo, y_lo, x_hi, y_hi = box
    xs = (x_lo + step * np.arange((x_hi - x_lo) // step + 2)).astype(float)
    ys = (y_lo + step * np.arange((y_hi - y_lo) // step + 2)).astype(float)
    return xs, ys


def _lookahead(box, step: int) -> list[int]:
    """``step`` and the finer steps whose nodes and centres, all together, stay in the budget."""
    chain, total = [step], 0
    while True:
        xs, ys = _node_grid(box, chain[-1])
        total += 2 * len(xs) * len(ys)  # its nodes, and about as many centres
        finer = chain[-1] // 2
        if chain[-1] <= _MIN_STEP or finer < _MIN_STEP:
            return chain
        xs, ys = _node_grid(box, finer)
        if total + 2 * len(xs) * len(ys) > _LOOKAHEAD_POINTS:
            return chain
        chain.append(finer)


def _chain_points(box, chain: list[int]):
    """The points to map for the steps of ``chain``, and where each step's are among them.

    Returns the distinct points (complex ``x + iy``) and, per step, the positions of its
    nodes (grid-shaped) and of its cell centres (None: not needed, or mapped later).
    """
    if len(chain) == 1:  # its nodes alone, in rows (as `pixel_map` maps them)
        xs, ys = _node_grid(box, chain[0])
        at = np.arange(len(xs) * len(ys)).reshape(len(ys), len(xs))
        return np.add.outer(1j * ys, xs).ravel(), [(at, None)]
    parts, shapes = [], []
    for st in chain:
        xs, ys = _node_grid(box, st)
        parts.append(np.add.outer(1j * ys, xs).ravel())
        shapes.append((len(ys), len(xs)))
        if st > _MIN_STEP and len(xs) > 1 and len(ys) > 1:
            cx, cy = xs[:-1] + st / 2, ys[:-1] + st / 2
            parts.append(np.add.outer(1j * cy, cx).ravel())
        else:
            parts.append(None)
    present = [p for p in parts if p is not None]
    unique, inverse = np.unique(np.concatenate(present), return_inverse=True)
    where, at = [], 0
    for level in range(len(chain)):
        nodes, centres = parts[2 * level], parts[2 * level + 1]
        nodes_at = inverse[at : at + nodes.size].reshape(shapes[level])
        at += nodes.size
        centres_at = None
        if centres is not None:
            centres_at = inverse[at : at + centres.size]
            at += centres.size
        where.append((nodes_at, centres_at))
    return unique, where


def _map_many(wcs, points: list) -> list:
    """``_map_points`` of many ``(a, b, x, y)``: one WCS call per image and direction."""
    lonlat = _grouped([(a, x, y) for a, _, x, y in points], lambda a: wcs[a].pixel_to_lonlat)
    return _grouped([(b, lon, lat) for (_, b, _, _), (lon, lat) in zip(points, lonlat)],
                    lambda b: wcs[b].lonlat_to_pixel)


def _grouped(items: list, transform) -> list:
    """``transform(key)(u, v)`` of each ``(key, u, v)`` of ``items``, one call per key."""
    by_key: dict[int, list[int]] = {}
    for k, (key, u, _) in enumerate(items):
        if u.size:
            by_key.setdefault(key, []).append(k)
    out: list = [(np.empty(0), np.empty(0))] * len(items)
    for key, ks in by_key.items():
        p, q = transform(key)(np.concatenate([items[k][1] for k in ks]),
                              np.concatenate([items[k][2] for k in ks]))
        p, q = np.atleast_1d(p), np.atleast_1d(q)
        at = 0
        for k in ks:
            size = items[k][1].size
            out[k] = (p[at : at + size], q[at : at + size])
            at += size
    return out


def _curvature_error(nodes: PixelMap) -> float:
    """Bound on the bilinear interpolation error of the nodes from their second differences.

    Within a cell, bilinear interpolation misses a smooth map by about ``(h**2 / 8) (f_xx +
    f_yy)`` (the cross term it reproduces), and ``h**2 f_xx`` is a second difference of the
    nodes.  With fewer than three nodes along an axis there is none: infinity (check).
    """
    worst = 0.0
    for grid in (nodes.bx, nodes.by):
        if grid.shape[0] < 3 or grid.shape[1] < 3:
            return math.inf
        along_x = np.abs(np.diff(grid, 2, axis=1))
        along_y = np.abs(np.diff(grid, 2, axis=0))
        worst = max(worst, (float(np.max(along_x)) + float(np.max(along_y))) / 8.0)
    return worst if math.isfinite(worst) else math.inf


def _map_nodes(wcs_a, wcs_b, x_lo, y_lo, x_hi, y_hi, step) -> PixelMap:
    xs = x_lo + step * np.arange((x_hi - x_lo) // step + 2)
    ys = y_lo + step * np.arange((y_hi - y_lo) // step + 2)
    gx, gy = np.meshgrid(xs.astype(float), ys.astype(float))
    bx, by = _map_points(wcs_a, wcs_b, gx.ravel(), gy.ravel())
    return PixelMap(x_lo, y_lo, step, bx.reshape(gx.shape), by.reshape(gx.shape))


def _map_points(wcs_a, wcs_b, x, y):
    lon, lat = wcs_a.pixel_to_lonlat(x, y)
    return wcs_b.lonlat_to_pixel(lon, lat)


def _map_error(wcs_a, wcs_b, nodes: PixelMap) -> float:
    """Largest miss (pixels of b) of the nodes' bilinear interpolation at the cell centres."""
    cx, cy = _cell_centres(nodes)
    if not cx.size:
        return 0.0
    ex, ey = _map_points(wcs_a, wcs_b, cx, cy)
    return _node_miss(nodes, ex, ey)


def _cell_centres(nodes: PixelMap) -> tuple[np.ndarray, np.ndarray]:
    """``a``'s pixel coordinates of the centres of the node cells (none for a single row or column)."""
    rows, cols = nodes.bx.shape
    if rows < 2 or cols < 2:
        return np.empty(0), np.empty(0)
    half = nodes.step / 2
    ys = nodes.y0 + half + nodes.step * np.arange(rows - 1)
    xs = nodes.x0 + half + nodes.step * np.arange(cols - 1)
    return np.tile(xs, rows - 1), np.repeat(ys, cols - 1)


def _node_miss(nodes: PixelMap, ex: np.ndarray, ey: np.ndarray) -> float:
    """Largest miss of the nodes' interpolation at the cell centres, mapped exactly to ``ex, ey``."""
    if not ex.size:
        return 0.0

    def centres(v):
        return 0.25 * (v[:-1, :-1] + v[1:, :-1] + v[:-1, 1:] + v[1:, 1:]).ravel()

    error = np.hypot(ex - centres(nodes.bx), ey - centres(nodes.by))
    error = error[np.isfinite(error)]
    return float(error.max()) if error.size else 0.0


class DifferenceBuffers:
    """Scratch arrays reused across calls of `pair_differences` (one per thread).

    Fresh large arrays cost more than the arithmetic on these machines (page faults); the
    buffers grow as needed and are never shrunk.
    """

    def __init__(self) -> None:
        self._pool: dict[tuple[str, np.dtype], np.ndarray] = {}
        self._aranges: dict[np.dtype, np.ndarray] = {}
        self.gather = GatherBuffers()
        self.noise: dict = {}  # `_noise_remembered`
        self.noise_bytes = 0

    def get(self, name: str, dtype, n: int) -> np.ndarray:
        """The buffer ``name`` of ``dtype``, ``n`` elements long (contents undefined)."""
        dtype = np.dtype(dtype)
        buf = self._pool.get((name, dtype))
        if buf is None or buf.size < n:
            size = n if buf is None else max(n, buf.size + buf.size // 4)
            buf = self._pool[(name, dtype)] = np.empty(size, dtype)
        return buf[:n]

    def arange(self, dtype, n: int) -> np.ndarray:
        """``0, 1, ..., n - 1`` in ``dtype`` (a reused array: do not write to it)."""
        dtype = np.dtype(dtype)
        buf = self._aranges.get(dtype)
        if buf is None or buf.size < n:
            size = n if buf is None else max(n, buf.size + buf.size // 4)
            buf = self._aranges[dtype] = np.arange(size, dtype=dtype)
        return buf[:n]

    def held(self) -> list:
        """``(array, let_go)`` for each buffer held (``let_go()`` drops it from its pool)."""
        return [*((buf, partial(pool.pop, key, None)) for pool in (self._pool, self._aranges)
                  for key, buf in list(pool.items())), *self.gather.held()]


def pair_differences(
    image_a: np.ndarray,
    mask_a: np.ndarray | None,
    image_b: np.ndarray,
    mask_b: np.ndarray | None,
    runs: Runs,
    pmap: PixelMap,
    *,
    lower: float | None = None,
    upper: float | None = None,
    buffers: DifferenceBuffers | None = None,
    noise: float | None = None,
) -> tuple[np.ndarray, float]:
    """``a - b`` at ``a``'s pixels ``runs``, ``b`` interpolated bilinearly.

    Interpolation smooths ``b`` (by ``f (1 - f)`` pixels squared along an axis, ``f`` the
    fraction of a pixel at which it is read), so ``a``'s pixels are smoothed as much, by the
    symmetric kernel ``[c, 1 - 2c, c]`` along each axis with ``2c`` the mean of ``f (1 -
    f)``: whatever both images see is then blurred alike and cancels.  Without it, structure
    sharp at the pixel scale (galaxies, star wings, filaments) leaves a bias: on the Hubble
    Deep Field exposures of `skymatch_nb_ui.datasets` the median difference is off by 5 times
    its error, always in the same direction (smoothing raises the median of a field of
    positive sources), and the mosaic by 3 times the error of comparing levels.

    Also returns the squared weights of a difference, for the error (see `Returns`).
    A difference is NaN where either side is unusable: a masked or non-finite pixel of ``a``
    or of its four neighbours (when ``a`` is smoothed along that axis), or of any of the four
    pixels of ``b`` around the mapped point (even one of weight 0,
    unless the two grids are aligned along that axis), a value outside ``[lower, upper]`` on
    either side, a point outside the centres of ``b``'s outer pixels, or a point where ``b``
    changes between neighbouring pixels by more than 5 times its pixel noise (`pixel_noise`):
    a star's core, where bilinear interpolation would leave residuals of a good part of the
    star.  On pure noise that excludes 0.05% of the points, at random; on a flat sky with
    stars it brings the differences' errors close to those of comparing levels
    (``bench/study_accuracy.py``).

    Parameters
    ----------
    image_a, image_b : 2-D ndarray
        The two images (any real dtype; never changed).
    mask_a, mask_b : 2-D bool ndarray or None
        True marks a good pixel (None: all good).
    runs : Runs
        The pixels of ``a`` to compare (its pixels inside ``b``'s footprint).
    pmap : PixelMap
        Where those pixels fall in ``b`` (`pixel_map`).
    lower, upper : float, optional
        Usable pixel values, inclusive, on both sides.
    buffers : DifferenceBuffers, optional
        Reused scratch arrays.
    noise : float, optional
        ``b``'s pixel noise for the steepness limit (default: `_noise_of` the box of ``b``
        the points read; `many_pair_differences` passes the whole image's).

    Returns
    -------
    differences : ndarray
        One value per pixel of ``runs`` (row-major), float32 when both images are float32,
        else float64.  With ``buffers`` it is a view into a reused buffer, valid until the
        next call with the same buffers.
    w2 : (float, float)
        The sums of the squared weights of one difference on each side: ``a``'s smoothing
        kernel, and ``b``'s interpolation averaged over the usable differences (1 where the
        points fall on ``b``'s pixel centres, 1/4 midway between four): for
        `interpolation_inflation`.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> from skymatch_nb_ui.engine.geometry import CelestialWCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.cdelt = [-1e-4, 1e-4]; w.wcs.crval = [10, 20]; w.wcs.crpix = [1, 1]
    >>> shifted = w.deepcopy(); shifted.wcs.crpix = [1.5, 1]  # b is a half pixel to the left
    >>> a = np.full((4, 6), 3.0); b = np.arange(24.0).reshape(4, 6)
    >>> runs = Runs(np.array([1, 2]), np.array([1, 1]), np.array([4, 4]))
    >>> pmap = pixel_map(CelestialWCS(w), CelestialWCS(shifted), runs)
    >>> d, (w2_a, w2_b) = pair_differences(a, None, b, None, runs, pmap)
    >>> np.round(d, 6).tolist(), round(w2_a, 6), round(w2_b, 6)  # 3 - (6*y + x + 0.5)
    ([-4.5, -5.5, -6.5, -10.5, -11.5, -12.5], 0.59375, 0.5)
    """
    buffers = DifferenceBuffers() if buffers is None else buffers
    n = runs.npix
    work = np.float32 if _single(image_a) and _single(image_b) else np.float64
    if n == 0:
        return np.empty(0, work), (math.nan, math.nan)
    side_a = _SideA(image_a, mask_a, runs, work, lower, upper, buffers)
    pieces = _Pieces.of(runs, pmap)
    lines = [pieces.lines(runs, pmap, nodes) for nodes in (pmap.bx, pmap.by)]
    flat, nx, origin = _side_b(image_b, mask_b, lines, pieces.lengths, work, lower, upper, buffers)
    mapped = bool(np.isfinite(pmap.bx).all() and np.isfinite(pmap.by).all())
    snap = (mapped and _on_centres(pmap.bx, pmap.step), mapped and _on_centres(pmap.by, pmap.step))
    steep = _STEEP * (_noise_of(flat.reshape(-1, nx)) if noise is None else noise)
    k, fx, fy = _points(pieces, lines, origin, (nx, flat.size // nx), snap, work, buffers)
    vb, unusable = _bilinear(flat, nx, k, fx, fy, work, buffers, snap, steep)
    samples = fx[::_W2_STRIDE].astype(np.float64), fy[::_W2_STRIDE].astype(np.float64)
    cx, cy = _smoothing(samples[0]), _smoothing(samples[1])
    d = np.subtract(side_a.values(cx, cy), vb, out=vb)
    np.copyto(d, np.nan, where=unusable)
    return d, _mean_w2(fx, fy, d, cx, cy, samples)


def _smoothing(sample: np.ndarray) -> float:
    """The ``c`` of the kernel ``[c, 1 - 2c, c]`` that smooths as much as interpolation.

    Linear interpolation at fractions ``f`` has variance ``f (1 - f)``; the kernel ``2c``.
    ``sample``: every `_W2_STRIDE`-th fraction, in float64.
    """
    # (np.mean's value, without its Python wrapper)
    return float(np.add.reduce(sample * (1.0 - sample)) / sample.size) / 2.0 if sample.size else 0.0


def _single(image) -> bool:
    """Whether an image holds single-precision floats (any byte order)."""
    dtype = np.asarray(image).dtype
    return dtype.kind == "f" and dtype.itemsize == 4


def _on_centres(nodes: np.ndarray, step: int) -> bool:
    """Whether every pixel maps onto a pixel centre along this axis.

    True for integral nodes that change by whole pixels per pixel between nodes (an integer
    shift, a whole-pixel slope).
    """
    def whole(v):
        return bool(np.all(np.abs(v - np.rint(v)) <= _EDGE))

    return whole(nodes) and all(whole(np.diff(nodes, axis=k) / step)
                                for k in (0, 1) if nodes.shape[k] > 1)


def _noise_of(box: np.ndarray) -> float:
    """The pixel noise of a sample of b; inf when b has none to speak of.

    `pixel_noise` of every few rows of the box (inside its NaN frame), flattened.  A
    noise-free image (rounding only: 1e-7 of its values or less) has no noise to judge a
    step by: then nothing is too steep.
    """
    sample = _noise_rows(box).reshape(-1)
    top, bottom = (float(sample.max()), float(sample.min())) if sample.size else (0.0, 0.0)
    if math.isfinite(top) and math.isfinite(bottom):  # the same as below, without a copy
        noise, scale = neighbour_noise(sample), max(abs(top), abs(bottom))
    else:
        noise = pixel_noise(sample)
        with np.errstate(invalid="ignore"):
            scale = float(np.nanmax(np.abs(sample))) if np.isfinite(sample).any() else 0.0
    return noise if noise > 1e-7 * scale else math.inf


def _noise_rows(box: np.ndarray) -> np.ndarray:
    """The rows of ``box`` that `_noise_of` reads: every few, inside the NaN frame (a view)."""
    return box[1:-1:max(1, (box.shape[0] - 2) // _NOISE_ROWS), 1:-1]


def _noise_remembered(box: np.ndarray, buffers: DifferenceBuffers) -> float:
    """`_noise_of` ``box``, remembered in ``buffers`` by the exact values it reads.

    (`many_pair_differences` frames an image again in every batch where it is compared:
    its noise, a function of its sampled rows alone, is computed once: those rows' bytes,
    shape and dtype are the key, at most `_NOISE_MEMO_BYTES` of them.)
    """
    rows = _noise_rows(box)
    key = (rows.shape, rows.dtype.str, rows.tobytes())
    memo = buffers.noise
    found = memo.get(key)
    if found is None:
        size = len(key[2])
        if buffers.noise_bytes + size > _NOISE_MEMO_BYTES:
            memo.clear()
            buffers.noise_bytes = 0
        found = memo[key] = _noise_of(box)
        buffers.noise_bytes += size
    return found


class _SideA:
    """The compared image's pixels ``runs``, from a NaN-framed copy of their box.

    `values` gives them, smoothed by the symmetric kernel ``[c, 1 - 2c, c]`` along each
    axis (in the cross form: centre ``1 - 2 cx - 2 cy``, ``cx`` left and right, ``cy`` above
    and below), so that they are as smooth as the other image interpolated at them.
    """

    def __init__(self, image, mask, runs: Runs, work, lower, upper, buffers: DifferenceBuffers):
        image = np.asarray(image)
        ny, nx = image.shape  # the pixels' box and one more pixel around, within the image
        y_lo, y_hi = max(int(runs.rows[0]) - 1, 0), min(int(runs.rows[-1]) + 2, ny)
        x_lo, x_hi = max(int(runs.start.min()) - 1, 0), min(int(runs.stop.max()) + 1, nx)
        # beyond the image's edge the smoothing reads the edge pixel itself
        self.box = _framed(image, mask, (y_lo, y_hi, x_lo, x_hi), work, lower, upper, buffers,
                           "abox", edge=True)
        self.cols = self.box.shape[1]
        inside = Runs(runs.rows - y_lo, runs.start - x_lo, runs.stop - x_lo)
        # the flat index in the box of each pixel's upper-left neighbour (never negative)
        self.corner = inside.flat_indices(self.cols, buffers.gather.indices(runs.npix))
        self.work, self.buffers, self.n = work, buffers, runs.npix

    def values(self, cx: float, cy: float) -> np.ndarray:
        """The pixels, smoothed by ``cx`` along x and ``cy`` along y (0: not at all).

        The smoothing is done on the whole box in contiguous slices of it (no gathers), and
        the pixels are gathered from the result once.
        """
        flat, cols, k = self.box.reshape(-1), self.cols, self.corner
        get = self.buffers.get
        m = flat.size - 2 * cols - 2  # from the box's pixel (1, 1) to its (-2, -2)
        centre = flat[cols + 1 : cols + 1 + m]
        # centre + c (left + right - 2 centre) per axis: exact on a constant image
        change = None
        # (in the scratch of `_points` and `_bilinear`, free by now)
        for c, first, second, name in ((cx, flat[cols:], flat[cols + 2 :], "floor_x"),
                                       (cy, flat[1:], flat[2 * cols + 1 :], "floor_y")):
            if c == 0:
                continue
            near = np.add(first[:m], second[:m], out=get(name, self.work, m))
            near -= centre
            near -= centre
            near *= c
            if change is None:
                change = near
            else:
                change += near
        if change is not None:
            centre = np.add(centre, change, out=change)
        return np.take(centre, k, out=get("va", self.work, self.n))


def _nan_outside(values, lower, upper, buffers):
    """Set values outside [lower, upper] to NaN (NaN stays NaN)."""
    if lower is None and upper is None:
        return
    flag = buffers.get("limit", bool, values.size)
    if lower is not None:
        np.copyto(values, np.nan, where=np.less(values, lower, out=flag))
    if upper is not None:
        np.copyto(values, np.nan, where=np.greater(values, upper, out=flag))


def _side_b(image, mask, lines, lengths, work, lower, upper, buffers):
    """The pixels of ``b`` to interpolate: a copy of the box the mapped points need.

    The box is found from the points' coordinates on the pieces of the runs (``lines``,
    ``lengths``: `_Pieces`) and copied by `_framed`.  A point beyond the centres of ``b``'s
    outer pixels then has a NaN neighbour, so no per-pixel range check is needed.  Returns
    the framed box's flat pixels, its row length, and ``b``'s pixel ``(x, y)`` at the box's
    element 0 (in the frame).
    """
    image = np.asarray(image)
    ny, nx = image.shape
    (x_lo, x_hi), (y_lo, y_hi) = (_box(*line, lengths, size) for line, size in zip(lines, (nx, ny)))
    box = _framed(image, mask, (y_lo, y_hi, x_lo, x_hi), work, lower, upper, buffers, "box")
    return box.reshape(-1), box.shape[1], (x_lo - 1, y_lo - 1)


def _framed(image, mask, bounds, work, lower, upper, buffers, name, edge=False) -> np.ndarray:
    """A copy of ``image[y_lo:y_hi, x_lo:x_hi]`` inside a frame one pixel wide.

    In the working dtype and native byte order; masked pixels and values outside
    ``[lower, upper]`` become NaN.  The frame is NaN, or with ``edge`` extrapolated linearly
    from the two pixels next to it (so that smoothing keeps a linear scene exact there).
    """
    y_lo, y_hi, x_lo, x_hi = bounds
    rows, cols = y_hi - y_lo + 2, x_hi - x_lo + 2
    box = buffers.get(name, work, rows * cols).reshape(rows, cols)
    return _frame_into(box, image, mask, bounds, lower, upper, edge)


def _frame_into(box, image, mask, bounds, lower, upper, edge) -> np.ndarray:
    """`_framed` into ``box`` (its shape: the bounds' and the frame)."""
    y_lo, y_hi, x_lo, x_hi = bounds
    rows, cols = box.shape
    box[0], box[-1], box[:, 0], box[:, -1] = np.nan, np.nan, np.nan, np.nan
    inner = box[1:-1, 1:-1]
    np.copyto(inner, image[y_lo:y_hi, x_lo:x_hi], casting="unsafe")
    if mask is not None:
        np.copyto(inner, np.nan, where=np.logical_not(np.asarray(mask)[y_lo:y_hi, x_lo:x_hi]))
    if lower is not None or upper is not None:
        with np.errstate(invalid="ignore"):
            if lower is not None:
                np.copyto(inner, np.nan, where=inner < lower)
            if upper is not None:
                np.copyto(inner, np.nan, where=inner > upper)
    if edge and rows > 3 and cols > 3:
        box[0], box[-1] = 2.0 * box[1] - box[2], 2.0 * box[-2] - box[-3]
        box[:, 0], box[:, -1] = 2.0 * box[:, 1] - box[:, 2], 2.0 * box[:, -2] - box[:, -3]
    return box


def _box(x: np.ndarray, s: np.ndarray, lengths: np.ndarray, size: int) -> tuple[int, int]:
    """The pixel range [lo, hi) of one axis of b that the points ``x + s t`` can need."""
    with np.errstate(invalid="ignore"):
        end = x + s * (lengths - 1)
        low, high = float(np.minimum(x, end).min()), float(np.maximum(x, end).max())
        if not (math.isfinite(low) and math.isfinite(high)):  # some points off b's WCS
            ends = np.concatenate([x, end])
            ends = ends[np.isfinite(ends)]
            if ends.size == 0:
                return 0, min(size, 1)
            low, high = float(ends.min()), float(ends.max())
    lo = min(max(math.floor(low), 0), size - 1)
    hi = min(max(math.floor(high) + 2, lo + 1), size)
    return lo, hi


def _bilinear(flat, nx, k, fx, fy, work, buffers, snap=(False, False), steep=math.nan):
    """``flat`` (rows of ``nx``, framed by NaN) interpolated bilinearly at its points.

    A point is the flat index ``k`` of the upper-left of its four pixels and its fractions
    ``fx``, ``fy`` (`_points`).  Also returns the points where two neighbours differ by more
    than ``steep`` (NaN: none).  ``snap``: per axis, whether every point falls on a pixel
    centre (an integer shift): then that axis reads one pixel, and no neighbour with a zero
    weight can spoil the value (a NaN times 0 is NaN).
    """
    n = k.size
    # `_points`' scratch is free now: the neighbours go there (fewer, warmer buffers)
    check = _Steepness(steep, n, work, buffers, scratch="floor_y")
    lower = np.take(flat, k, out=buffers.get("b0", work, n), mode="clip")
    if not snap[0]:
        right = np.take(flat[1:], k, out=buffers.get("floor_x", work, n), mode="clip")
        _blend(lower, right, fx, check)
    if snap[1]:
        return lower, check.result()
    upper = np.take(flat[nx:], k, out=buffers.get("t", work, n), mode="clip")
    if not snap[0]:  # (the check's scratch is free until the last blend)
        right = np.take(flat[nx + 1 :], k, out=buffers.get("floor_y", work, n), mode="clip")
        _blend(upper, right, fx, _NO_CHECK)
    _blend(lower, upper, fy, check)
    return lower, check.result()


class _Steepness:
    """Flags the points where two neighbours of a blend differ by more than a limit."""

    def __init__(self, limit: float, n: int, work, buffers: DifferenceBuffers, scratch="size"):
        self.limit = limit
        self.flags = buffers.get("steep", bool, n)
        self.checked = False  # the first check writes the flags, the next ones add to them
        if math.isfinite(limit):  # NaN or inf: nothing is steep
            self.size = buffers.get(scratch, work, n)
            self.over = buffers.get("over", bool, n)

    def __call__(self, step: np.ndarray) -> None:
        if math.isfinite(self.limit):
            np.abs(step, out=self.size)
            with np.errstate(invalid="ignore"):
                if self.checked:
                    self.flags |= np.greater(self.size, self.limit, out=self.over)
                else:
                    np.greater(self.size, self.limit, out=self.flags)
                    self.checked = True

    def result(self) -> np.ndarray:
        """The flags (none when nothing was checked)."""
        if not self.checked:
            self.flags[...] = False
        return self.flags


def _no_check(step: np.ndarray) -> None:
    """A blend whose steepness is not checked (the lower row's and the columns' suffice)."""


_NO_CHECK = _no_check


def _blend(first, second, frac, check):
    """Blend in place: ``first += frac * (second - first)`` (``second`` is overwritten)."""
    with np.errstate(invalid="ignore"):
        second -= first
        check(second)
        second *= frac
        first += second


@dataclass(frozen=True)
class _Pieces:
    """The runs split where they cross the map's node columns: the map is linear on each.

    ``run_of``: each piece's run; ``cell``: its column of node cells; ``first``: the column
    of ``a`` of its first pixel; ``lengths``: its pixels.  Pieces follow the runs' order.
    """

    run_of: np.ndarray
    cell: np.ndarray
    first: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, runs: Runs, pmap: PixelMap) -> _Pieces:
        start, stop, step, x0 = runs.start, runs.stop, pmap.step, pmap.x0
        first_cell = (start - x0) // step
        pieces = (stop - 1 - x0) // step - first_cell + 1
        run_of = np.repeat(np.arange(len(start)), pieces)
        first_piece = np.cumsum(pieces) - pieces
        cell = first_cell[run_of] + np.arange(int(pieces.sum())) - first_piece[run_of]
        left = x0 + cell * step
        first = np.maximum(left, start[run_of])
        lengths = np.minimum(left + step, stop[run_of]) - first
        return cls(run_of, cell, first, lengths)

    def lines(self, runs: Runs, pmap: PixelMap, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The node grid ``nodes`` interpolated bilinearly, per piece: ``value + slope * t``.

        ``t`` counts the piece's pixels from 0; the value is float64 at its first pixel.
        """
        rows, step = runs.rows, pmap.step
        i = (np.minimum((rows - pmap.y0) // step, nodes.shape[0] - 2) if nodes.shape[0] > 1
             else 0 * rows)
        ty = ((rows - pmap.y0) - i * step) / step
        upper = nodes[np.minimum(i + 1, nodes.shape[0] - 1)]
        curve = nodes[i] * (1.0 - ty)[:, None] + upper * ty[:, None]  # per run: the row's nodes
        slope = (curve[:, 1:] - curve[:, :-1]) / step
        cell = np.minimum(self.cell, slope.shape[1] - 1)
        s = slope[self.run_of, cell]
        return curve[self.run_of, cell] + s * (self.first - (pmap.x0 + cell * step)), s


def _points(pieces: _Pieces, lines, origin, sizes, snap, work, buffers):
    """Where the pixels of ``a`` fall in ``b``'s framed box (``sizes`` = (nx, ny)).

    ``pieces`` and ``lines``: the runs' pieces and ``b``'s pixel coordinates on them
    (`_Pieces.lines`, one per axis).  Returns the flat index in the box of the upper-left of
    the four pixels around each point, and the fractions along x and y (``work`` dtype).
    ``origin``: ``b``'s pixel at the box's element 0.

    The map is linear along each piece of a run (`_Pieces`), so a point's coordinates are
    ``base + c + s t``: ``base`` the whole pixel at the piece's first point, ``0 <= c < 1``,
    ``t`` the point's place in the piece.  Only ``c + s t`` is computed per point, in float32
    for single-precision images (relative coordinates: its rounding is below 1e-5 pixel),
    and the flat index ``base_k + floor_x + nx floor_y`` too (exact: whole numbers below
    2**24; float64 beyond).  A piece part of which falls beyond the middle of the frame
    (half a pixel off the box's outer pixel centres, where every point reads the frame) is
    cut there, and the part beyond reads the NaN corner of the frame: no per-point range
    check.
    """
    n = int(pieces.lengths.sum())
    lines = [(x - o, s) for (x, s), o in zip(lines, origin)]
    lengths, lines = _inside(pieces.lengths, lines, sizes)
    coord = (np.float32 if np.dtype(work) == np.float32 and max(n, sizes[0] * sizes[1]) < _EXACT
             else np.float64)
    t = buffers.get("t", coord, n)
    np.subtract(buffers.arange(coord, n), np.repeat((np.cumsum(lengths) - lengths).astype(coord),
                                                    lengths), out=t)
    k = buffers.get("k", np.intp, n)
    steps = None if any(snap) or np.dtype(coord) != np.dtype(work) else _whole_steps(lines, lengths, sizes[0])
    if steps is not None:  # each coordinate's whole part moves by a fixed step per pixel
        fracs = []
        for (c, s), name in zip(steps[0], "xy"):
            u = np.multiply(np.repeat(s.astype(coord), lengths), t, out=buffers.get("u" + name, coord, n))
            u += np.repeat(c.astype(coord), lengths)
            fracs.append(u)
        index, step = steps[1]
        flat = buffers.get("floor_y", coord, n)
        if step.min() != step.max():
            np.multiply(t, np.repeat(step.astype(coord), lengths), out=flat)
        elif step[0] != 1.0:  # (a Python float: the product stays in the working precision)
            np.multiply(t, float(step[0]), out=flat)
        else:  # a translation, or nearly
            flat = t
        k[...] = np.add(flat, np.repeat(index.astype(coord), lengths), out=flat)
        return k, fracs[0], fracs[1]
    bases, floors, fracs = [], [], []
    for (x, s), snapped, name in zip(lines, snap, "xy"):
        base = np.floor(x)
        u = np.multiply(np.repeat(s.astype(coord), lengths), t, out=buffers.get("u" + name, coord, n))
        u += np.repeat((x - base).astype(coord), lengths)
        frac = u if np.dtype(coord) == np.dtype(work) else buffers.get("f" + name, work, n)
        floor = buffers.get("floor_" + name, coord, n)
        if snapped:
            np.rint(u, out=floor)
            frac[...] = 0.0
        else:
            np.floor(u, out=floor)
            np.subtract(u, floor, out=frac, casting="unsafe")
        bases.append(base)
        floors.append(floor)
        fracs.append(frac)
    flat = np.multiply(floors[1], sizes[0], out=floors[1])  # nx floor_y + floor_x + base
    flat += floors[0]
    flat += np.repeat((bases[1] * sizes[0] + bases[0]).astype(coord), lengths)
    k[...] = flat
    return k, fracs[0], fracs[1]


#: How far (pixels) a fraction may stray beyond [0, 1] on the whole-step path of `_points`.
_STRAY = 1e-5


def _whole_steps(lines, lengths, nx: int):
    """The pieces' coordinates as ``base + m t + (c + (s - m) t)`` with ``0 <= c + (s - m) t <= 1``.

    ``m`` is the slope rounded to a whole number: when the fraction stays within [0, 1]
    along every piece (to `_STRAY`: a translation, or a rotation small over a piece), the
    whole part of a point's coordinate is ``base + m t`` and the flat index of its pixel
    ``index + step t``, with no floor per point.  Returns ``([(c, s - m) per axis], (index,
    step))`` per piece, or None when some piece's fraction leaves [0, 1].
    """
    last = lengths - 1
    parts, whole = [], []
    for x, s in lines:
        base = np.floor(x)
        m = np.rint(s)
        c = x - base
        end = c + (s - m) * last
        if not (np.minimum(c, end).min() >= -_STRAY and np.maximum(c, end).max() <= 1 + _STRAY):
            return None
        parts.append((c, s - m))
        whole.append((base, m))
    (bx, mx), (by, my) = whole
    return parts, (by * nx + bx, my * nx + mx)


def _inside(lengths, lines, sizes):
    """The pieces, cut where they leave ``[0.5, size - 1.5]`` on either axis.

    The parts beyond (and pieces that the map cannot place: non-finite nodes) get value 0
    and slope 0 on both axes: the frame's NaN corner.  ``sizes``: one per axis (or per piece
    and axis: `_inside_many`).
    """
    lengths, lines, _ = _inside_many(lengths, lines, sizes)
    return lengths, lines


def _mean_w2(fx, fy, d, cx: float, cy: float, samples) -> tuple[float, float]:
    """The sums of squared weights of a difference, both sides.

    The compared image's: ``(1 - 2cx - 2cy)**2 + 2cx**2 + 2cy**2``; the interpolated one's:
    the mean of ``((1-fx)**2 + fx**2) * ((1-fy)**2 + fy**2)`` over every few usable
    differences (NaN when there are none).  ``samples``: every `_W2_STRIDE`-th ``fx`` and
    ``fy``, in float64.
    """
    w2_a = (1.0 - 2.0 * cx - 2.0 * cy) ** 2 + 2.0 * cx**2 + 2.0 * cy**2
    ok = np.isfinite(d[::_W2_STRIDE])
    if not ok.any():
        ok = np.isfinite(d)
        sx, sy = fx[ok].astype(np.float64), fy[ok].astype(np.float64)
        if sx.size == 0:
            return w2_a, math.nan
    else:
        sx, sy = samples[0][ok], samples[1][ok]
    w2 = ((1.0 - sx) ** 2 + sx**2) * ((1.0 - sy) ** 2 + sy**2)
    return w2_a, float(w2.mean())


def interpolation_inflation(w2, area_ratio: float, skystat: str) -> float:
    """Error inflation of a statistic of pixel differences by their correlations.

    The factor by which the error exceeds the one computed as if the differences were
    independent.  ``w2 = (w2_a, w2_b)``: the sums of squared weights of one difference on
    each side (`pair_differences`).

    With equal noise ``s`` in both images, a difference has variance
    ``s**2 (w2_a + w2_b)``, but neighbouring differences share pixels (of ``b`` through the
    interpolation, of ``a`` through its matching smoothing): the mean of ``n`` of them has
    variance ``s**2 (1 + c2) / n``, where each pixel of ``a`` counts once in all (its
    smoothing kernel sums to 1) and ``c2 = max(1 / area_ratio, w2_b)`` is the mean square of
    the total weight each pixel of ``b`` receives (1 for equal pixel scales; ``area_ratio``
    is ``a``'s pixel area in ``b``'s pixels).  So the mean's variance grows by
    ``f = (1 + c2) / (w2_a + w2_b)``.  For the median and midpt the correlation of
    neighbouring signs is ``2/pi`` times that of the values (arcsine law, nearly linear for
    these small correlations): ``1 + (2/pi) (f - 1)``.  The mode is treated as the mean (its
    kernel widens to about 2 standard deviations on symmetric differences, where it behaves
    as one).

    Returns the factor on the standard error (the square root).
    """
    w2_a, w2_b = w2
    if not (math.isfinite(w2_a) and math.isfinite(w2_b) and math.isfinite(area_ratio)
            and area_ratio > 0):
        return 1.0
    c2 = max(1.0 / area_ratio, w2_b)
    excess = (1.0 + c2) / (w2_a + w2_b) - 1.0
    if skystat in ("median", "midpt"):
        excess *= 2.0 / math.pi
    return math.sqrt(max(1.0 + excess, 1.0))


# -- many small pairs at once -------------------------------------------------------------------
#: A pair goes through `many_pair_differences`' batched path when both its images have at most
#: this many pixels (each image is then copied whole, once per batch, instead of a box per
#: pair) and the map is plain (finite nodes, no axis on pixel centres: `batchable`).
BATCH_IMAGE_PIXELS = 1 << 18
#: Points per chunk of `many_pair_differences` (its arrays stay in the cache).
_CHUNK_POINTS = 1 << 16
#: Pixels of the images framed at once by `many_pair_differences` (bounds its memory).
_FRAME_PIXELS = 1 << 21


@dataclass(frozen=True, eq=False)
class DifferenceJob:
    """One pair of `many_pair_differences`: ``image_a`` at ``runs`` minus ``image_b`` there.

    ``key_a``, ``key_b`` identify the two images within one call (an image that appears in
    several jobs is copied once per side).
    """

    image_a: np.ndarray
    mask_a: np.ndarray | None
    image_b: np.ndarray
    mask_b: np.ndarray | None
    runs: Runs
    pmap: PixelMap
    key_a: object
    key_b: object


def batchable(shape_a, shape_b, npix: int, pmap: PixelMap) -> bool:
    """Whether a pair takes the batched path of `many_pair_differences` (its own properties only).

    Small images (`BATCH_IMAGE_PIXELS`), some pixels, a map with finite nodes and no axis on
    pixel centres (those pairs keep `pair_differences`' special cases).
    """
    if npix == 0 or shape_a[0] * shape_a[1] > BATCH_IMAGE_PIXELS \
            or shape_b[0] * shape_b[1] > BATCH_IMAGE_PIXELS:
        return False
    return pmap.off_centres


def many_pair_differences(jobs: Sequence[DifferenceJob], *, lower=None, upper=None,
                          buffers: DifferenceBuffers | None = None) -> list[tuple[np.ndarray, tuple]]:
    """`pair_differences` of many pairs: ``[(differences, w2), ...]``, one per job.

    The pairs that `batchable` admits are computed together, in flat arrays over all their
    points (the cost of a small pair is then its points', not ~60 numpy calls), the others
    one by one.  A batched pair's differences are those of `pair_differences` with two
    changes that do not depend on the other pairs of the call: the image ``b``'s pixel noise,
    which decides the steep points not interpolated, is measured on the whole image (`_noise_of`
    of every few rows; `pair_differences` samples the box the pair reads); and the fractions
    are always taken by a floor (`pair_differences` moves whole parts by fixed steps where
    it can: the same fractions to rounding).  So a pair gets the same values whatever else
    is in the call (every scheduler and batching the same bits).

    The differences are copies (a batch's are computed in reused buffers, its images framed
    a group at a time: at most `_FRAME_PIXELS` pixels of images at once): the batched pairs'
    are consecutive views of one new array per working dtype, in the order of ``jobs``.
    """
    buffers = DifferenceBuffers() if buffers is None else buffers
    out: list = [None] * len(jobs)
    groups: dict = {}
    for j, job in enumerate(jobs):
        if batchable(job.image_a.shape, job.image_b.shape, job.runs.npix, job.pmap):
            work = np.float32 if _single(job.image_a) and _single(job.image_b) else np.float64
            groups.setdefault(np.dtype(work), []).append(j)
        else:
            d, w2 = pair_differences(job.image_a, job.mask_a, job.image_b, job.mask_b, job.runs,
                                     job.pmap, lower=lower, upper=upper, buffers=buffers)
            out[j] = (d.copy(), w2)
    for work, members in groups.items():
        npts = np.array([jobs[j].runs.npix for j in members], np.intp)
        at = np.cumsum(npts) - npts
        store = np.empty(int(npts.sum()), work)  # the members' differences, in order
        for part in _framed_groups([jobs[j] for j in members]):
            targets = [store[at[j] : at[j] + npts[j]] for j in part]
            found = _many(work, [jobs[members[j]] for j in part], lower, upper, buffers, targets)
            for j, value in zip(part, found):
                out[members[j]] = value
    return out


def _framed_groups(jobs: list) -> list[list[int]]:
    """The jobs in groups whose distinct images hold at most `_FRAME_PIXELS` pixels in all.

    (Each group's images are framed at once: this bounds the memory, whatever the batch.)
    The jobs go by their interpolated image, then their compared image, so that a group
    shares its images as much as it can.
    """
    first_b = {}
    first_a = {}
    for j, job in enumerate(jobs):
        first_b.setdefault(job.key_b, j)
        first_a.setdefault(job.key_a, j)
    order = sorted(range(len(jobs)), key=lambda j: (first_b[jobs[j].key_b], first_a[jobs[j].key_a], j))
    groups, current, seen, size = [], [], set(), 0
    for j in order:
        job = jobs[j]
        extra = sum(im.size for key, im in ((("a", job.key_a), job.image_a),
                                             (("b", job.key_b), job.image_b)) if key not in seen)
        if current and size + extra > _FRAME_PIXELS:
            groups.append(current)
            current, seen, size = [], set(), 0
            extra = job.image_a.size + job.image_b.size
        current.append(j)
        seen.update({("a", job.key_a), ("b", job.key_b)})
        size += extra
    if current:
        groups.append(current)
    return groups


def _whole_frames(images: list, work, lower, upper, edge: bool, buffers, name: str):
    """The images ``(image, mask)`` framed (`_framed`) one after another in one flat buffer.

    Returns the buffer, each image's offset in it and its framed width.
    """
    sizes = [(im.shape[0] + 2) * (im.shape[1] + 2) for im, _ in images]
    offsets = np.cumsum([0] + sizes)
    flat = buffers.get(name, work, int(offsets[-1]))
    for (im, mask), lo, hi in zip(images, offsets[:-1], offsets[1:]):
        box = flat[lo:hi].reshape(im.shape[0] + 2, im.shape[1] + 2)
        _frame_into(box, np.asarray(im), mask, (0, im.shape[0], 0, im.shape[1]), lower, upper, edge)
    widths = np.array([im.shape[1] + 2 for im, _ in images], np.intp)
    return flat, offsets[:-1].astype(np.intp), widths


def _many(work, jobs: list, lower, upper, buffers: DifferenceBuffers, targets: list) -> list:
    """The batched path of `many_pair_differences` (all jobs batchable, one working dtype).

    Each job's differences are written into its array of ``targets``.
    """
    a_keys = list(dict.fromkeys(job.key_a for job in jobs))
    b_keys = list(dict.fromkeys(job.key_b for job in jobs))
    first_a = {job.key_a: job for job in reversed(jobs)}
    first_b = {job.key_b: job for job in reversed(jobs)}
    a_flat, a_off, a_width = _whole_frames([(first_a[k].image_a, first_a[k].mask_a) for k in a_keys],
                                           work, lower, upper, True, buffers, "many_a")
    b_flat, b_off, b_width = _whole_frames([(first_b[k].image_b, first_b[k].mask_b) for k in b_keys],
                                           work, lower, upper, False, buffers, "many_b")
    b_height = np.array([first_b[k].image_b.shape[0] + 2 for k in b_keys], np.intp)
    b_noise = np.array([_noise_remembered(b_flat[o : o + w * h].reshape(h, w), buffers)
                        for o, w, h in zip(b_off, b_width, b_height)])
    a_index = {k: i for i, k in enumerate(a_keys)}
    b_index = {k: i for i, k in enumerate(b_keys)}
    ia_all = np.array([a_index[job.key_a] for job in jobs], np.intp)  # per job
    ib_all = np.array([b_index[job.key_b] for job in jobs], np.intp)
    npts_all = np.array([job.runs.npix for job in jobs], np.intp)
    out: list = [None] * len(jobs)
    # chunks of about `_CHUNK_POINTS` points, pairs of one image b together: the arrays of a
    # chunk stay in the cache (one pass over all the points would run from memory)
    wa_all, wb_all = a_width[ia_all], b_width[ib_all]
    order = np.lexsort((ia_all, ib_all, wa_all, wb_all))  # one width of a and of b per chunk
    ends = np.cumsum(npts_all[order])
    cuts = np.flatnonzero(np.diff(ends // _CHUNK_POINTS, prepend=0)) + 1
    shape_change = np.flatnonzero((np.diff(wa_all[order]) != 0) | (np.diff(wb_all[order]) != 0)) + 1
    cuts = np.union1d(cuts[cuts < len(order)], shape_change)
    for part in np.split(order, cuts):
        if not len(part):
            continue
        found = _chunk(work, [jobs[j] for j in part], ia_all[part], ib_all[part],
                       (a_flat, a_off, a_width), (b_flat, b_off, b_width, b_height, b_noise),
                       buffers)
        for j, (dj, wj) in zip(part, found):
            targets[j][...] = dj
            out[j] = (targets[j], wj)
    return out


def _chunk(work, jobs, ia, ib, frames_a, frames_b, buffers) -> list:
    """`_many`'s work on a few pairs: ``[(differences, w2)]`` (views into ``buffers``)."""
    get = buffers.get
    a_flat, a_off, a_width = frames_a
    b_flat, b_off, b_width, b_height, b_noise = frames_b
    # the runs of all jobs, and their pieces (`_Pieces.of`, per run's map)
    nrun = np.array([len(job.runs.rows) for job in jobs], np.intp)
    job_of_run = np.repeat(np.arange(len(jobs)), nrun)
    rows = np.concatenate([job.runs.rows for job in jobs]).astype(np.intp)
    start = np.concatenate([job.runs.start for job in jobs]).astype(np.intp)
    stop = np.concatenate([job.runs.stop for job in jobs]).astype(np.intp)
    x0 = np.array([job.pmap.x0 for job in jobs], np.intp)[job_of_run]
    y0 = np.array([job.pmap.y0 for job in jobs], np.intp)[job_of_run]
    step = np.array([job.pmap.step for job in jobs], np.intp)[job_of_run]
    first_cell = (start - x0) // step
    count = (stop - 1 - x0) // step - first_cell + 1
    run_of = np.repeat(np.arange(len(rows)), count)
    first_piece = np.cumsum(count) - count
    cell = first_cell[run_of] + np.arange(int(count.sum())) - first_piece[run_of]
    pstep = step[run_of]
    left = x0[run_of] + cell * pstep
    first = np.maximum(left, start[run_of])
    lengths = np.minimum(left + pstep, stop[run_of]) - first
    job_of_piece = job_of_run[run_of]

    # the map along each piece (`_Pieces.lines`, element by element), in b's framed box
    node_rows = np.array([job.pmap.bx.shape[0] for job in jobs], np.intp)
    node_cols = np.array([job.pmap.bx.shape[1] for job in jobs], np.intp)
    node_off = np.cumsum(node_rows * node_cols) - node_rows * node_cols
    i = np.minimum((rows - y0) // step, node_rows[job_of_run] - 2)
    ty = ((rows - y0) - i * step) / step
    up = np.minimum(i + 1, node_rows[job_of_run] - 1)
    cols = node_cols[job_of_piece]
    c = np.minimum(cell, cols - 2)
    r = run_of
    base_lo = node_off[job_of_piece] + i[r] * cols + c
    base_up = node_off[job_of_piece] + up[r] * cols + c
    lines = []
    for nodes in ("bx", "by"):
        flat_nodes = np.concatenate([getattr(job.pmap, nodes).ravel() for job in jobs])
        w_lo, w_up = 1.0 - ty[r], ty[r]
        curve0 = flat_nodes[base_lo] * w_lo + flat_nodes[base_up] * w_up
        curve1 = flat_nodes[base_lo + 1] * w_lo + flat_nodes[base_up + 1] * w_up
        s = (curve1 - curve0) / pstep
        x = curve0 + s * (first - (x0[run_of] + c * pstep))
        lines.append((x + 1.0, s))  # b's whole image framed: its pixel (-1, -1) is element 0
    sizes = (b_width[ib][job_of_piece], b_height[ib][job_of_piece])

    # a's pixels: the flat index of each one's upper-left neighbour in its framed copy
    # (every chunk has one width of a and one of b: `_many`)
    wa, wb = int(a_width[ia[0]]), int(b_width[ib[0]])
    n = int(lengths.sum())
    piece_start = np.cumsum(lengths) - lengths
    a_at = a_off[ia][job_of_piece] + rows[run_of] * wa + first - piece_start
    a_index = np.add(buffers.arange(np.intp, n), np.repeat(a_at, lengths),
                     out=get("many_ia", np.intp, n))

    # b's points: the pieces cut where they leave the framed image (`_inside`); the flat
    # index of the upper-left of the four pixels around each, from the first b image of the
    # chunk (whole numbers, exact in float32 below 2**24)
    lengths_b, lines, piece_b = _inside_many(lengths, lines, sizes)
    pieces_start_b = np.cumsum(lengths_b) - lengths_b
    t = np.subtract(buffers.arange(work, n), np.repeat(pieces_start_b.astype(work), lengths_b),
                    out=get("many_t", work, n))
    bases, floors, fracs = [], [], []
    for (x, sl), name in zip(lines, "xy"):
        base = np.floor(x)
        u = np.multiply(np.repeat(sl.astype(work), lengths_b), t, out=get("many_u" + name, work, n))
        u += np.repeat((x - base).astype(work), lengths_b)
        floor = get("many_floor_" + name, work, n)
        np.floor(u, out=floor)
        np.subtract(u, floor, out=u)
        bases.append(base)
        floors.append(floor)
        fracs.append(u)
    fx, fy = fracs
    b_lo = int(b_off[ib].min())
    b_span = int((b_off[ib] + b_width[ib] * b_height[ib]).max()) - b_lo
    offset = b_off[ib][job_of_piece[piece_b]] - b_lo
    flat = np.multiply(floors[1], wb, out=floors[1])
    flat += floors[0]
    k = get("many_k", np.intp, n)
    if b_span < _EXACT:
        flat += np.repeat((bases[1] * wb + bases[0] + offset).astype(work), lengths_b)
        k[...] = flat
    else:
        flat += np.repeat((bases[1] * wb + bases[0]).astype(work), lengths_b)
        k[...] = flat
        k += np.repeat(offset, lengths_b)
    box = b_flat[b_lo:]

    # per job: its points, the steepness limit
    npts = np.array([job.runs.npix for job in jobs], np.intp)
    job_start = np.cumsum(npts) - npts
    limit = np.repeat((_STEEP * b_noise[ib]).astype(work), npts)

    # b interpolated (`_bilinear`), with the steep points flagged
    lower_v = np.take(box, k, out=get("many_b0", work, n), mode="clip")
    right = np.take(box[1:], k, out=get("many_b1", work, n), mode="clip")
    flags = get("many_steep", bool, n)
    over = get("many_over", bool, n)
    size = get("many_size", work, n)
    with np.errstate(invalid="ignore"):
        right -= lower_v
        np.abs(right, out=size)
        np.greater(size, limit, out=flags)
        right *= fx
        lower_v += right
        upper_v = np.take(box[wb:], k, out=get("many_b2", work, n), mode="clip")
        right = np.take(box[wb + 1 :], k, out=get("many_b1", work, n), mode="clip")
        right -= upper_v
        right *= fx
        upper_v += right
        upper_v -= lower_v
        np.abs(upper_v, out=size)
        flags |= np.greater(size, limit, out=over)
        upper_v *= fy
        lower_v += upper_v
    vb = lower_v

    # the smoothing of a that matches the interpolation: per job, from every 17th fraction
    sample = np.concatenate([np.arange(lo, lo + m, _W2_STRIDE) for lo, m in zip(job_start, npts)])
    sample_job = np.repeat(np.arange(len(jobs)), (npts + _W2_STRIDE - 1) // _W2_STRIDE)
    sample_count = np.bincount(sample_job, minlength=len(jobs)).astype(np.float64)
    sx, sy = fx[sample].astype(np.float64), fy[sample].astype(np.float64)
    cx = np.bincount(sample_job, sx * (1.0 - sx), minlength=len(jobs)) / sample_count / 2.0
    cy = np.bincount(sample_job, sy * (1.0 - sy), minlength=len(jobs)) / sample_count / 2.0
    # (a sum of two neighbours is the same in either order)
    centre = np.take(a_flat[wa + 1 :], a_index, out=get("many_a0", work, n), mode="clip")
    near = np.take(a_flat[wa:], a_index, out=get("many_a1", work, n), mode="clip")
    near += np.take(a_flat[wa + 2 :], a_index, out=get("many_a2", work, n), mode="clip")
    near -= centre
    near -= centre
    near *= np.repeat(cx.astype(work), npts)
    other = np.take(a_flat[1:], a_index, out=get("many_a2", work, n), mode="clip")
    other += np.take(a_flat[2 * wa + 1 :], a_index, out=get("many_a3", work, n), mode="clip")
    other -= centre
    other -= centre
    other *= np.repeat(cy.astype(work), npts)
    near += other
    centre += near
    d = np.subtract(centre, vb, out=get("many_dc", work, n))
    np.copyto(d, np.nan, where=flags)

    # the squared weights (`_mean_w2`), per job
    w2_a = (1.0 - 2.0 * cx - 2.0 * cy) ** 2 + 2.0 * cx**2 + 2.0 * cy**2
    ok = np.isfinite(d[sample])
    w2 = ((1.0 - sx) ** 2 + sx**2) * ((1.0 - sy) ** 2 + sy**2)
    used = np.bincount(sample_job, ok, minlength=len(jobs))
    w2_b = np.bincount(sample_job, np.where(ok, w2, 0.0), minlength=len(jobs)) / np.maximum(used, 1)
    out = []
    for j in range(len(jobs)):
        dj = d[job_start[j] : job_start[j] + npts[j]]
        if used[j] == 0:  # no sampled difference usable: `_mean_w2` on all of them
            wj = _mean_w2(fx[job_start[j] : job_start[j] + npts[j]],
                          fy[job_start[j] : job_start[j] + npts[j]], dj, cx[j], cy[j],
                          (np.empty(0), np.empty(0)))
        else:
            wj = (float(w2_a[j]), float(w2_b[j]))
        out.append((dj, wj))
    return out


def _inside_many(lengths, lines, sizes):
    """`_inside` (sizes per axis, or per piece and axis); also each new piece's original piece."""
    with np.errstate(invalid="ignore"):
        last = lengths - 1
        ok = np.ones(lengths.size, bool)
        for (x, s), size in zip(lines, sizes):
            end = x + s * last
            ok &= (np.minimum(x, end) >= 0.5) & (np.maximum(x, end) <= size - 1.5)
    if ok.all():
        return lengths, lines, np.arange(lengths.size)
    lo, hi = np.zeros(lengths.size), last.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for (x, s), size in zip(lines, sizes):
            a, b = (0.5 - x) / s, (size - 1.5 - x) / s
            flat = s == 0
            inside = (x >= 0.5) & (x <= size - 1.5)
            lo = np.fmax(lo, np.where(flat, np.where(inside, 0.0, np.inf), np.ceil(np.minimum(a, b))))
            hi = np.fmin(hi, np.where(flat, np.where(inside, np.inf, -1.0), np.floor(np.maximum(a, b))))
        good = np.isfinite(lo) & np.isfinite(hi) & (lo <= hi)
        for x, s in lines:
            good &= np.isfinite(x) & np.isfinite(s)
    lo = np.where(good, lo, lengths).astype(np.int64)
    hi = np.where(good, hi, lengths - 1).astype(np.int64)
    parts = np.stack([lo, hi + 1 - lo, last - hi], axis=1)
    keep = parts.reshape(-1) > 0
    piece = np.repeat(np.arange(lengths.size), 3)[keep]
    part = np.tile(np.arange(3), lengths.size)[keep]
    offset = np.where(part == 0, 0, np.where(part == 1, lo[piece], hi[piece] + 1))
    new_lines = []
    for x, s in lines:
        xs = np.where(part == 1, x[piece] + s[piece] * offset, 0.0)
        new_lines.append((xs, np.where(part == 1, s[piece], 0.0)))
    return parts.reshape(-1)[keep], new_lines, piece
