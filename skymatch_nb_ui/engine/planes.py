"""Sky planes (``skymodel="plane"``): a level and a gradient per input, fitted from cells of overlaps.

The model
---------
The sky of image ``i`` is ``level_i + slope_x_i * (x - x0_i) + slope_y_i * (y - y0_i)`` in its
own 0-based pixels, ``(x0, y0) = ((nx - 1) / 2, (ny - 1) / 2)`` its centre: `plane_values`
evaluates it, and that is what results, views, ``subtract`` and written copies use.

The solve works on the sky.  Each connected part of the mosaic gets a *frame*: the gnomonic
(tangent-plane) projection at the normalised mean of its images' centres, with axes ``xi``
to the east and ``eta`` to the north, in arcsec.  Gnomonic projection maps great circles to
lines, so "a plane on the sky" is a plane there, whatever the images' orientations, pixel
scales or distortions.  Every *input* (an image alone, or a group) has one plane in it,
``L + A * (xi - xi_g) + B * (eta - eta_g)`` about the input's centre ``(xi_g, eta_g)`` (the
mean of its images' centres, each through its affine map, below): a group spanning several
detectors shares one plane on the sky.
Each image's own plane in its pixels is the least-squares approximation of its input's plane
on the sky over the image's area: the input's plane through the least-squares affine map from
the image's pixels to the frame (the image's WCS at 5 x 5 Gauss-Legendre points).  For a
linear WCS that is the sky plane itself (up to the projection's curvature); through a
distortion the sky plane is curved in the pixels, and its level at the image's centre
differs from the pixel plane's there by that curvature (ACS/WFC chips grouped by exposure,
`bench/study_planes_on_sky.py`: without noise the sky left is 1.47x smaller than with the
sky plane's exact level at the centre and evenly spaced points, and no more than the best
pixel planes to the true sky leave).

Cells
-----
An overlap of two inputs is cut into rectangular cells along its principal axes on the
frame: its extent (``sqrt(12 variance)`` along each axis, exact for a rectangle) is tiled by
about `CELLS_PER_OVERLAP` cells, at least 2 across, each side at least `MIN_CELL_SIDE`
pixels of the coarser image (e.g. a 200 x 1000 pixel strip: 2 x 3 cells).  Each image's pixels are
put in cells through its affine map; each side's statistic (``skystat``, with the clipping
parameters, as for constants; the cells of a batch of several images at once by
`segments`, equal to the per-cell statistic to rounding) over its pixels in a cell gives,
for a cell with at least `MIN_CELL_PIXELS` usable pixels on both sides, one equation::

    plane_g(q) - plane_h(q) = stat_g(cell) - stat_h(cell)      (error: both sides' errors)

at the cell's position ``q`` (the mean of both sides' pixel centroids, through the exact
WCS).  A pair whose overlap is too small or too thin for `MIN_CELLS` cells spread over two
directions (the cells' positions spread across the thinner direction by at least
`MIN_SPREAD` cell sides) gives instead one *constant* equation: the whole-overlap statistics
of ``skymodel="constant"``, at the overlap's centroid; ``plane_fallback`` says why.
With ``compare="differences"`` (the default) a cell's equation is instead the statistic of
the pair's pixel differences in it (`differences.pair_differences`); one interpolation per
pair serves its cells and its whole-overlap statistic (the pair table, the fallbacks: the
same values ``skymodel="constant"`` measures), and the cells follow the pieces of pixel
rows between cell boundaries (no per-pixel cell arithmetic; the pieces of all a batch's
pairs in one vectorised pass, `_cell_pieces_many`), each cell's usable differences
gathered from the packed differences through a reused index buffer.

The solve
---------
All the equations, weighted by their inverse variances, form one sparse least-squares
problem with 3 unknowns per input, solved per connected component (normal equations ordered
by breadth-first levels: block tridiagonal, factored block by block as the constant solve in
`lstsq`).  Equations more than `CLIP` calibrated errors from the fit are dropped and the fit
repeated (at most 3 times).  The equations are solved as if independent, though a pixel in
the overlaps of ``m`` other inputs enters ``m`` of them: its cells' variances are multiplied
by ``(1 + m) / 2``, which is exact where the inputs over a pixel all overlap each other there
(`plane_match._inflation`; the slope test below counts it ``m`` times).  Errors are scaled
up by ``sqrt(chi2 / dof)`` of the component when it exceeds 1 (the cells also see what does
not cancel between the two sides).

*No gradient, no planes* (``slope_significance``, default 0.001).  A plane's level at an
image's centre is an extrapolation from its overlaps, at its edges: on a sky without gradients
it is 4-5 times less precise than a constant from the same overlaps (3 x 3 mosaics of 256 x 256
pixels).  So the fitted slopes are tested against zero: the chi-square they gain in the fit
of the equations (the equations kept, refitted with levels only: for linear least squares
that is ``s^T C^-1 s`` of all the slopes together, correlations included; divided by the
scatter the cells show beyond their noise when above 1, each pair's cells about a plane of
their own: stars leave what does not cancel between two images), and the largest single
input's ``s^T C^-1 s`` (Bonferroni-corrected).  Unless one of them rejects "no gradient" at
``slope_significance``, the result is the ``skymodel="constant"`` one with slopes 0 (their
errors those of the fit; ``PlaneResult.flat``).  On constant skies this kept the slopes in
0 of 52 mosaics, and none on 600 dithered camera CCDs with stars (the fit's own residuals
had been the scale: with each pixel in ~7 overlaps they hid the stars, and those slopes were
kept); a gradient of 0.3 sigma across images of 200 x 200 pixels is kept.

*The gauge.*  Adding one plane on the sky to every input changes no difference: overlaps
cannot see a common plane.  It is fixed the way ``match_down`` fixes the constant: **no net
slope is added to the mosaic** (the inputs' sky slopes have zero mean over each component),
and the level by ``match_down`` (the lowest or highest level, at the inputs' centres, is 0).
Slopes that the overlaps do not determine (an input linked only by constant equations) are
set by a vanishing ridge towards the component's mean slope; their ``reason`` says so.

Methods keep their meaning: ``local`` is a robust fit of a plane to each image's own cells
(the statistic per cell, planes fitted with iterative clipping of cells at `CLIP` calibrated
errors; a group's members' planes combined into one on the sky); ``global`` is one common
plane: the median of the local slopes (per component) and the lowest local level;
``global+match`` lifts the match planes by one common plane: its slope the median of
``local - match`` slopes per component, its level the lowest ``local - match`` level at the
inputs' centres (for constants this is exactly the reference's rule).

Examples
--------
>>> plane_values(10.0, 1.0, 0.5, (3, 3))
array([[ 8.5,  9.5, 10.5],
       [ 9. , 10. , 11. ],
       [ 9.5, 10.5, 11.5]])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy.sparse import coo_matrix

from .differences import area_ratios, interpolation_inflation, pair_differences
from .geometry import CelestialWCS, Runs, lonlat_to_xyz, tangent_basis
from .lstsq import _blas, _block_order, _BlockSweep, _levels, components
from .measure import PairDifference, Scratch, load_pixels, pair_difference, thread_scratch
from .params import StatParams
from .segments import BATCH_MAX, large_statistics, small_statistics
from .stats import StatisticError, sky_statistic

__all__ = [
    "CELLS_PER_OVERLAP",
    "CLIP",
    "MIN_CELLS",
    "MIN_CELL_PIXELS",
    "MIN_CELL_SIDE",
    "CellGrid",
    "CellStats",
    "CellTask",
    "DifferenceRegion",
    "Frame",
    "ImageMap",
    "PlaneFit",
    "fit_plane",
    "measure_cell_batch",
    "measure_cells",
    "plane_values",
    "solve_plane_offsets",
]

#: Arcsec per radian.
ARCSEC = 180.0 * 3600.0 / math.pi
#: Cells per overlap aimed at (fewer for small overlaps, see `MIN_CELL_SIDE`).
CELLS_PER_OVERLAP = 6
#: Smallest cell side, in pixels of the coarser image of a pair.
MIN_CELL_SIDE = 12
#: Usable pixels a cell needs on each side of a pair (and in an image, for a local fit).
MIN_CELL_PIXELS = 64
#: Cells a pair needs to constrain a plane.
MIN_CELLS = 3
#: Spread (rms, in cell sides) the cells' positions need across the thinner direction.
MIN_SPREAD = 0.25
#: Cells along each side of an image for its local plane.
LOCAL_CELLS = 8
#: Equations or cells farther than this many calibrated errors from a fit are dropped.
CLIP = 5.0
#: Passes of the fit with clipping.
PASSES = 3

_OFFSET = 1 << 20  # cell indices are stored as (iu + _OFFSET) << 21 | (iv + _OFFSET)


def plane_values(level, slope_x, slope_y, shape: tuple[int, int]) -> np.ndarray:
    """The plane ``level + slope_x * (x - x0) + slope_y * (y - y0)`` on an image of ``shape``.

    ``(x0, y0) = ((nx - 1) / 2, (ny - 1) / 2)`` is the image's centre in 0-based pixels, so
    ``level`` is the sky at the centre.

    Parameters
    ----------
    level, slope_x, slope_y : float
        The plane's coefficients (data units, and data units per pixel along x and y).
    shape : (int, int)
        (ny, nx) of the image.

    Returns
    -------
    ndarray of float64, shape ``shape``

    Examples
    --------
    >>> plane_values(1.0, 0.5, 0.0, (1, 3)).tolist()
    [[0.5, 1.0, 1.5]]
    """
    ny, nx = (int(s) for s in shape)
    x = np.arange(nx, dtype=np.float64) - (nx - 1) / 2.0
    y = np.arange(ny, dtype=np.float64) - (ny - 1) / 2.0
    return float(level) + float(slope_y) * y[:, None] + float(slope_x) * x[None, :]


# -- frames -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Frame:
    """A tangent plane of the sky: gnomonic projection at ``center``, axes east and north (arcsec)."""

    center: np.ndarray
    east: np.ndarray
    north: np.ndarray

    @classmethod
    def at(cls, xyz: np.ndarray) -> Frame:
        """The frame at the normalised sum of unit vectors ``xyz`` (n, 3)."""
        c = np.asarray(xyz, float).reshape(-1, 3).sum(axis=0)
        c = c / np.linalg.norm(c)
        if np.hypot(c[0], c[1]) < 1e-9:  # at a pole east is undefined: any pair of axes
            east, north = tangent_basis(c)
        else:
            east = np.array([-c[1], c[0], 0.0]) / np.hypot(c[0], c[1])
            north = np.cross(c, east)
        return cls(c, east, north)

    def project(self, lon, lat) -> np.ndarray:
        """(xi, eta) in arcsec, shape (n, 2), of points in degrees."""
        p = lonlat_to_xyz(np.asarray(lon, float).ravel(), np.asarray(lat, float).ravel())
        w = p @ self.center
        if np.any(w <= 0.05):
            raise ValueError(
                "skymodel='plane' needs each connected part of the mosaic to lie within about "
                "85 degrees of its centre (a tangent plane); this one spans more"
            )
        return np.column_stack([p @ self.east, p @ self.north]) / w[:, None] * ARCSEC


@dataclass(frozen=True)
class ImageMap:
    """Where an image's pixels are in a frame: its least-squares affine map.

    ``q = jac @ ((x, y) - pixel_centre) + q_affine`` is the least-squares affine map over
    the image's area (exact for a linear WCS up to the projection's curvature): a plane on
    the sky through it is the best plane in the pixels.  ``q_affine``, the map's image of the
    centre, stands for the image's position (its plane's level, the inputs' centres); through
    a distortion it is not quite the centre's exact position.
    """

    pixel_centre: np.ndarray  # (x0, y0)
    q_affine: np.ndarray  # intercept of the affine map at the centre
    jac: np.ndarray  # (2, 2): d(xi, eta) / d(x, y), arcsec per pixel

    @cached_property
    def pixel_scale(self) -> float:
        """Arcsec per pixel (square root of the Jacobian's determinant)."""
        return math.sqrt(abs(float(np.linalg.det(self.jac))))

    def affine(self, x, y) -> np.ndarray:
        """Positions (n, 2) in the frame of pixels (x, y), by the affine map."""
        p = np.column_stack([np.ravel(x), np.ravel(y)]) - self.pixel_centre
        return p @ self.jac.T + self.q_affine


def image_map(wcs: CelestialWCS, shape: tuple[int, int], frame: Frame) -> ImageMap:
    """The `ImageMap` of an image of ``shape`` through ``wcs`` in ``frame``."""
    ny, nx = shape
    c = np.array([(nx - 1) / 2.0, (ny - 1) / 2.0])
    # the least-squares affine map over the image's area [-0.5, n - 0.5]^2 by 5 x 5-point
    # Gauss-Legendre quadrature (exact for positions polynomial in the pixels up to 8th order;
    # SIP's are 4th or 5th): points spaced evenly edge to edge weigh the edges too much, and
    # through a distortion's curvature that shifts the map's intercept
    u, w = _GAUSS_LEGENDRE
    gx, gy = np.meshgrid(c[0] + u * nx / 2.0, c[1] + u * ny / 2.0)
    x, y = gx.ravel(), gy.ravel()
    lon, lat = wcs.pixel_to_lonlat(x, y)
    q = frame.project(lon, lat)
    if not np.isfinite(q).all():
        raise ValueError(f"{wcs.name} gives non-finite sky positions on its image")
    root = np.sqrt(np.outer(w, w).ravel())[:, None]
    design = np.column_stack([np.ones(len(x)), x - c[0], y - c[1]])
    coef, *_ = np.linalg.lstsq(design * root, q * root, rcond=None)
    return ImageMap(pixel_centre=c, q_affine=coef[0], jac=coef[1:].T.copy())


_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(5)


# -- stage 2: statistics in cells -----------------------------------------------------------------
@dataclass(frozen=True)
class CellGrid:
    """Square cells on an image's pixels: cell ``floor(matrix @ (x, y) + offset)``."""

    matrix: np.ndarray  # (2, 2)
    offset: np.ndarray  # (2,)

    def key(self) -> bytes:
        """A hashable identity (for caches)."""
        return self.matrix.tobytes() + self.offset.tobytes()


@dataclass(frozen=True, eq=False)
class CellStats:
    """Statistics of one image's pixels in cells.

    Attributes
    ----------
    cell : ndarray of int64
        The cell of each entry (its two indices packed in one integer).
    value, err : ndarray
        The statistic and its 1-sigma error (NaN when not computed).
    npix : ndarray of int
        Pixels behind the statistic (after limits and clipping).
    x, y : ndarray
        The centroid of the cell's usable pixels (0-based pixel coordinates).
    whole : PairDifference or None
        For cells of pixel differences (`DifferenceRegion`): the statistic of all the
        region's differences, exactly what ``skymodel="constant"`` measures for the pair
        (`measure.measure_differences`), from the same interpolation.
    """

    cell: np.ndarray
    value: np.ndarray
    npix: np.ndarray
    err: np.ndarray
    x: np.ndarray
    y: np.ndarray
    whole: object = None


@dataclass(frozen=True, eq=False)
class DifferenceRegion:
    """A region of pixel differences (``compare="differences"``).

    This image's pixels ``runs`` minus ``loader``'s image interpolated there (``pmap``: where
    they fall in it).  ``keep``: whether the run reads that image again later (`reads.load`;
    None: the run's reads are not planned).
    """

    loader: object
    runs: Runs
    pmap: object
    keep: bool | None = None


@dataclass(frozen=True, eq=False)
class CellTask:
    """One `measure_cells` call: an image, its regions (None: all pixels) and their grids."""

    loader: object
    jobs: tuple  # ((region or None, CellGrid), ...)
    size: int
    label: str = ""
    together: bool = False  # whole overlaps of batched pairs together (`measure.together`)
    keep: bool | None = None  # the run reads the image again later: keep it (`reads.load`)


def measure_cells(loader, jobs: Sequence[tuple], params: StatParams,
                  scratch: Scratch | None = None) -> list[CellStats]:
    """The statistic of one image's pixels in each cell of each job: a stage-2 task.

    Parameters
    ----------
    loader : ImageLoader
        The image.
    jobs : sequence of (region, CellGrid)
        ``region`` None for all the image's pixels, a tuple of `Runs` whose union is
        measured, or a `DifferenceRegion` (the statistic of the pixel differences with
        another image, its error inflated for the interpolation's correlations); the grid
        says which cell each pixel is in.
    params : StatParams
        The statistic, limits and clipping (as for the constant sky).

    Returns
    -------
    list of CellStats
        One per job; only cells with at least `MIN_CELL_PIXELS` usable pixels.

    Examples
    --------
    >>> from skymatch_nb_ui.engine.loaders import ArrayImage
    >>> image = ArrayImage(np.add.outer(np.zeros(16), np.arange(32.0)))
    >>> grid = CellGrid(np.eye(2) / 16, np.zeros(2))
    >>> s = measure_cells(image, [(None, grid)], StatParams(skystat="mean"))[0]
    >>> s.value.tolist(), s.x.tolist()
    ([7.5, 23.5], [7.5, 23.5])
    """
    # (as in a batch: each pair's differences and whole statistic the same however measured)
    return measure_cell_batch([CellTask(loader, tuple(jobs), 0)], params, scratch)[0]


@dataclass(frozen=True, eq=False)
class _Pending:
    """One job's cells before their statistics: values cell after cell, and the cells."""

    values: np.ndarray
    start: np.ndarray
    count: np.ndarray
    cell: np.ndarray
    x: np.ndarray
    y: np.ndarray
    params: StatParams
    inflation: float = 1.0
    whole: object = None


def _finish(pending: list, params: StatParams, scratch: Scratch) -> list[CellStats]:
    """The statistics of all the jobs' cells, batched per parameter set (`segments`).

    (The cells of many overlaps together: on small images a job has only a few cells, and
    the batched statistic gains by many.)  The small cells' values are copied together for
    `segments.small_statistics`; the large ones are read where they are.
    """
    out: list = [None] * len(pending)
    groups: dict = {}
    for k, p in enumerate(pending):
        groups.setdefault(p.params, []).append(k)
    for stat_params, members in groups.items():
        parts = [pending[k] for k in members]
        count = np.concatenate([p.count for p in parts])
        small = (count <= BATCH_MAX) & (count > 0)
        pieces, starts, at = [], [], 0  # the small cells' values, gathered
        bounds = np.cumsum([0] + [len(p.count) for p in parts])
        for p, lo, hi in zip(parts, bounds[:-1], bounds[1:]):
            s = small[lo:hi]
            if not s.any():
                continue
            if s.all():  # all of it (the cells tile the values, in order)
                end = int(p.start[-1] + p.count[-1])
                pieces.append(p.values[:end])
                starts.append(p.start + at)
                at += end
                continue
            for a, c in zip(p.start[s], p.count[s]):
                pieces.append(p.values[a : a + c])
            starts.append(at + np.cumsum(p.count[s]) - p.count[s])
            at += int(p.count[s].sum())
        values = _joined(pieces)
        start = np.zeros(len(count), np.intp)
        if starts:
            start[small] = np.concatenate(starts)
        value, npix, err, left = small_statistics(values, start, count, small, stat_params)
        large = np.flatnonzero(~small & (count > 0))
        arrays = []
        for c in large:
            k = int(np.searchsorted(bounds, c, side="right")) - 1
            p, i = parts[k], c - bounds[k]
            arrays.append(p.values[p.start[i] : p.start[i] + p.count[i]])
        arrays += [values[start[c] : start[c] + count[c]] for c in left]
        which = np.concatenate([large, left]).astype(np.intp)
        if len(which):
            v, n, e = large_statistics(arrays, stat_params, scratch.work)
            value[which], npix[which], err[which] = v, n, e
        for k, p, lo, hi in zip(members, parts, bounds[:-1], bounds[1:]):
            sl = slice(lo, hi)
            out[k] = CellStats(p.cell, value[sl], npix[sl], err[sl] * p.inflation, p.x, p.y, p.whole)
    return out


#: Pairs with at most this many differences on average have their differences copied together
#: for the gather of their cells' values (`_difference_cells_many`).
_JOIN_MAX = 1 << 16


def _joined(pieces: list, copy: bool = True) -> np.ndarray | None:
    """``np.concatenate(pieces)``, or the array they are consecutive views of (no copy).

    ``copy=False``: None rather than a concatenation.
    """
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        return np.empty(0)
    base = pieces[0].base
    if isinstance(base, np.ndarray) and base.ndim == 1 and base.flags.c_contiguous \
            and all(p.base is base and p.ndim == 1 and p.flags.c_contiguous for p in pieces):
        size = base.itemsize
        origin = base.__array_interface__["data"][0]
        at = [(p.__array_interface__["data"][0] - origin) // size for p in pieces]
        if all(a + len(p) == b for a, p, b in zip(at, pieces, at[1:])):
            return base[at[0] : at[-1] + len(pieces[-1])]
    return np.concatenate(pieces) if copy else None


def measure_cell_batch(tasks: Sequence[CellTask], params: StatParams,
                       scratch: Scratch | None = None) -> list[list[CellStats]]:
    """`measure_cells` for each of ``tasks`` (the unit of work sent to a worker).

    All the tasks' cells get their statistics together (one `_finish`: the batched
    statistics gain by many cells); each image is released before the next is read.
    """
    from .measure import batched_differences

    scratch = thread_scratch() if scratch is None else scratch
    pending: list = []
    bounds = [0]
    differences: list = []  # (index in pending, _Differences): their cells all at once
    by_task: list = []  # per task, its _Differences
    found = batched_differences(tasks, params, scratch)  # the small pairs' differences at once
    area_ratios([region.pmap for t in tasks for region, _ in t.jobs  # (all at once)
                 if isinstance(region, DifferenceRegion)])
    for t in tasks:
        by_task.append([])
        try:
            image, mask = load_pixels(t.loader, t.keep)
            for region, grid in t.jobs:
                if isinstance(region, DifferenceRegion):
                    job = _differences(image, mask, region, grid, params, scratch,
                                       found.get(id(region)), t.together)
                    differences.append((len(pending), job))
                    by_task[-1].append(job)
                    pending.append(None)
                else:
                    pending.append(_cells_of(image, mask, region, grid, params, scratch))
        except StatisticError as exc:
            raise StatisticError(f"{t.label or repr(t.loader)}: {exc}") from None
        del image, mask
        bounds.append(len(pending))
    try:
        _whole_statistics(by_task, tasks, params, scratch)
    except StatisticError:
        for t, task_jobs in zip(tasks, by_task):  # whose differences: each task alone
            try:
                _whole_statistics([task_jobs], [t], params, scratch)
            except StatisticError as exc:
                raise StatisticError(f"{t.label or repr(t.loader)}: {exc}") from None
        raise
    if differences:
        cells = _difference_cells_many([job for _, job in differences], params, scratch)
        for (k, _), c in zip(differences, cells):
            pending[k] = c
    try:
        stats = _finish(pending, params, scratch)
    except StatisticError:
        for t, lo, hi in zip(tasks, bounds[:-1], bounds[1:]):  # whose cells: each task alone
            try:
                _finish(pending[lo:hi], params, scratch)
            except StatisticError as exc:
                raise StatisticError(f"{t.label or repr(t.loader)}: {exc}") from None
        raise
    return [stats[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def _cells_of(image, mask, region, grid: CellGrid, params: StatParams, scratch: Scratch) -> _Pending:
    ny, nx = image.shape
    if region is None:
        runs = Runs(np.arange(ny, dtype=np.intp), np.zeros(ny, np.intp), np.full(ny, nx, np.intp))
    else:
        runs = Runs.union(list(region), image.shape)
    if not runs:
        return _no_pending(params)
    pieces, code, nv, u0, v0, _ = _cell_pieces(runs, grid)
    values = pieces.gather(image)  # cell after cell, rows in order inside each
    good = np.isfinite(values)
    if mask is not None:
        good &= pieces.gather(mask)
    lengths = pieces.stop - pieces.start
    bad = np.flatnonzero(~good)
    if not len(bad):
        return _piece_cells(values, lengths, None, pieces, code, nv, u0, v0, params)
    at = np.cumsum(lengths) - lengths
    piece = np.searchsorted(at, bad, side="right") - 1
    usable = lengths - np.bincount(piece, minlength=len(lengths))
    unusable = (piece, pieces.start[piece] + (bad - at[piece]))
    return _piece_cells(values[good], usable, unusable, pieces, code, nv, u0, v0, params)


def _piece_cells(values, usable, unusable, pieces: Runs, code, nv, u0, v0,
                 params: StatParams) -> _Pending:
    """The cells of usable ``values``, gathered piece after piece, cell after cell.

    ``usable``: per piece, its usable values (int); ``unusable``: None, or the piece and the
    column of each unusable pixel (their centroids are taken off the pieces' own).
    """
    if not len(code):
        return _no_pending(params)
    return _piece_cells_many([values], usable, unusable, pieces, code, np.zeros(len(code), np.intp),
                             np.array([nv]), np.array([u0]), np.array([v0]), [params])[0]


def _cell_pieces_many(runs_list: list, grids: list, ranks: bool = False):
    """`_cell_pieces` of several jobs at once: (pieces, code, nv, u0, v0, run, job).

    The pieces of all the jobs, job after job, each job's in its cell order; ``code``,
    ``nv``, ``u0``, ``v0`` as `_cell_pieces` gives them per job (``nv``, ``u0``, ``v0`` one
    per job), ``run`` the index of each piece's run among all the jobs' runs, ``job`` its
    job.  The same arithmetic as `_cell_pieces`, element by element.  ``ranks``: also each
    piece's rank in run order (the runs' pixels in order), an eighth value.
    """
    nrun = np.array([len(r.rows) for r in runs_list], np.intp)
    job_of_run = np.repeat(np.arange(len(runs_list)), nrun)
    all_rows = np.concatenate([r.rows for r in runs_list])
    rows = all_rows.astype(np.float64)
    first_x = np.concatenate([r.start for r in runs_list]).astype(np.float64)
    last_x = np.concatenate([r.stop for r in runs_list]).astype(np.float64) - 1.0
    matrix = np.array([g.matrix for g in grids])[job_of_run]  # per run
    offset = np.array([g.offset for g in grids])[job_of_run]
    n = len(rows)
    cuts_run, cuts_x = [np.arange(n)], [first_x]
    for axis in (0, 1):
        slope, base = matrix[:, axis, 0], matrix[:, axis, 1] * rows + offset[:, axis]
        f0 = np.floor(slope * first_x + base)
        f1 = np.floor(slope * last_x + base)
        count = np.where(slope == 0, 0, np.abs(f1 - f0)).astype(np.intp)
        run = np.repeat(np.arange(n), count)
        j = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        sr, br, fr = slope[run], base[run], f0[run]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(sr > 0, np.ceil((fr + 1 + j - br) / sr),  # the next integer reached
                         np.floor((fr - j - br) / sr) + 1)  # the current one left behind
        cuts_run.append(run)
        cuts_x.append(np.clip(x, first_x[run], last_x[run] + 1))
    run = np.concatenate(cuts_run)
    x = np.concatenate(cuts_x)
    order = np.lexsort((x, run))
    run, x = run[order], x[order]
    stop = np.r_[x[1:], 0.0]
    last = np.r_[run[1:] != run[:-1], True]
    stop[last] = last_x[run[last]] + 1
    keep = stop > x
    run, start, stop = run[keep], x[keep].astype(np.intp), stop[keep].astype(np.intp)
    mid = (start + stop - 1) / 2.0
    m, o, r = matrix[run], offset[run], rows[run]
    iu = np.floor(m[:, 0, 0] * mid + m[:, 0, 1] * r + o[:, 0]).astype(np.int64)
    iv = np.floor(m[:, 1, 0] * mid + m[:, 1, 1] * r + o[:, 1]).astype(np.int64)
    job = job_of_run[run]
    edges = np.searchsorted(job, np.arange(len(runs_list)))  # every job has pieces
    u0, v0 = np.minimum.reduceat(iu, edges), np.minimum.reduceat(iv, edges)
    nv = np.maximum.reduceat(iv, edges) - v0 + 1
    nu = np.maximum.reduceat(iu, edges) - u0 + 1
    code = (iu - u0[job]) * nv[job] + (iv - v0[job])
    key = code + (np.cumsum(nu * nv) - nu * nv)[job]  # jobs stay in order, cells inside each
    by_cell = np.argsort(key, kind="stable")  # rows stay in order inside a cell
    pieces = Runs(all_rows[run][by_cell], start[by_cell], stop[by_cell])
    if ranks:  # also each piece's rank in run order (the runs' pixels in order)
        return pieces, code[by_cell], nv, u0, v0, run[by_cell], job[by_cell], by_cell
    return pieces, code[by_cell], nv, u0, v0, run[by_cell], job[by_cell]


def _piece_cells_many(values: list | None, usable, unusable, pieces: Runs, code, job, nv, u0, v0,
                      params: list, gather=None, extras=None) -> list[_Pending]:
    """`_piece_cells` of several jobs' pieces (`_cell_pieces_many`); ``values`` one per job.

    Or ``values`` None and ``gather = (source, at, base, buffers)``: the pieces' usable values
    are ``source[at[i] : at[i] + usable[i]]``, and only the kept cells' are gathered (each
    job's cells without gaps), all the jobs' in one array (each job's a view of it); or
    ``source`` a list, each job's own array, where its values start at ``base[job]``.
    ``extras``: per job its ``(inflation, whole)`` (default ``(1.0, None)``).
    """
    out = []
    key_first = np.r_[True, (code[1:] != code[:-1]) | (job[1:] != job[:-1])]
    first = np.flatnonzero(key_first)
    cells, cell_job = code[first], job[first]
    ends = np.r_[first[1:], len(code)]
    lengths = pieces.stop - pieces.start
    n = lengths.astype(float)
    sx = n * (pieces.start + pieces.stop - 1) / 2.0
    sy = n * pieces.rows
    if unusable is not None:
        piece, column = unusable
        m = len(lengths)
        n = n - np.bincount(piece, minlength=m)
        sx = sx - np.bincount(piece, column, minlength=m)
        sy = sy - np.bincount(piece, pieces.rows[piece], minlength=m)
    piece_cell = np.repeat(np.arange(len(cells)), ends - first)
    count = np.bincount(piece_cell, n, minlength=len(cells))
    keep = count >= MIN_CELL_PIXELS
    cx = np.bincount(piece_cell, sx, minlength=len(cells)) / np.where(keep, count, 1.0)
    cy = np.bincount(piece_cell, sy, minlength=len(cells)) / np.where(keep, count, 1.0)
    per_cell = np.add.reduceat(usable, first)
    njobs = len(values) if values is not None else len(params)
    cell_edges = np.searchsorted(cell_job, np.arange(njobs + 1))
    if gather is not None:  # the kept cells' values only
        source, at, base, buffers = gather
        kept = keep[piece_cell]
        per_cell = np.where(keep, per_cell, 0)
        within = np.cumsum(per_cell) - per_cell
        if isinstance(source, np.ndarray):  # all the jobs' at once
            every = source[_ranges(at[kept], usable[kept], buffers)]
            edge_at = np.r_[within, len(every)][cell_edges]
            values = [every[lo:hi] for lo, hi in itertools.pairwise(edge_at)]
        else:  # each job's from its own array
            piece_edges = np.searchsorted(job, np.arange(njobs + 1))
            values = []
            for i, (lo, hi) in enumerate(itertools.pairwise(piece_edges)):
                sel = np.flatnonzero(kept[lo:hi]) + lo
                values.append(source[i][_ranges(at[sel] - base[i], usable[sel], buffers)])
    else:
        within = np.cumsum(per_cell) - per_cell  # from the first cell of all the jobs
    cu, cv = np.divmod(cells.astype(np.int64), nv[cell_job])
    packed = ((cu + u0[cell_job] + _OFFSET) << 21) | (cv + v0[cell_job] + _OFFSET)
    # the kept cells of all the jobs, then each job's slice of them
    k = np.flatnonzero(keep)
    kept_job = cell_job[k]
    first_within = within[np.minimum(cell_edges[:-1], len(within) - 1)] if len(within) else \
        np.zeros(njobs, within.dtype)
    start = np.asarray(within[k] - first_within[kept_job], np.intp)
    count, packed, cx, cy = np.asarray(per_cell[k], np.intp), packed[k], cx[k], cy[k]
    edges = np.searchsorted(kept_job, np.arange(njobs + 1))
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        inflation, whole = (1.0, None) if extras is None else extras[i]
        out.append(_Pending(values[i], start[lo:hi], count[lo:hi], packed[lo:hi], cx[lo:hi],
                            cy[lo:hi], params[i], inflation, whole))
    return out


def _cell_pieces(runs: Runs, grid: CellGrid):
    """The runs cut where the cell changes, in cell order: (pieces, cell code, nv, u0, v0, run).

    ``run`` is the index in ``runs`` of each piece.

    Along a row the cell coordinates are linear in x, so a run changes cell only where one
    of them crosses an integer: each run is cut there (a few cuts per run), and each piece
    takes the cell of its middle pixel.  No per-pixel arithmetic.
    """
    pieces, code, nv, u0, v0, run, _ = _cell_pieces_many([runs], [grid])
    return pieces, code, int(nv[0]), int(u0[0]), int(v0[0]), run


@dataclass(eq=False)
class _Differences:
    """One pair's usable differences (packed, in run order), before its cells."""

    runs: Runs
    grid: CellGrid
    packed: np.ndarray  # the usable differences (a copy)
    bad: np.ndarray | None  # positions of the unusable ones among all (None: none)
    inflation: float
    whole: object
    params: StatParams


def _differences(image, mask, region: DifferenceRegion, grid: CellGrid, params: StatParams,
                 scratch: Scratch, found=None, together: bool = False) -> _Differences:
    """The pixel differences ``image - other`` of a region and their whole statistic.

    ``found``: the differences and their squared weights when already computed
    (`measure.batched_differences`); ``together``: their whole statistic left to
    `_whole_statistics` (`measure.together`).
    """
    runs = region.runs
    of_differences = _without_limits(params)  # the limits were for the pixels
    if not runs:
        return _Differences(runs, grid, np.empty(0), None, 1.0,
                            PairDifference(math.nan, 0, math.nan, 0, 0), of_differences)
    buffers = scratch.differences
    if found is not None:
        d, w2 = found
    else:
        other, other_mask = load_pixels(region.loader, region.keep)
        d, w2 = pair_differences(image, mask, other, other_mask, runs, region.pmap,
                                 lower=params.lower, upper=params.upper, buffers=buffers)
    inflation = interpolation_inflation(w2, region.pmap.area_ratio, params.skystat)
    # the whole overlap's statistic, as `measure.measure_differences` computes it (the usable
    # differences packed, as `measure._finite` packs them)
    finite = np.isfinite(d, out=buffers.get("finite", bool, d.size))
    all_good = bool(finite.all())
    packed = (d if found is not None else d.copy()) if all_good else d[finite]  # (found: a copy)
    bad = None if all_good else np.flatnonzero(~finite)
    if together and found is not None and len(packed):  # with the batch's others
        return _Differences(runs, grid, packed, bad, inflation, None, of_differences)
    stat = sky_statistic(packed, of_differences, work=scratch.work)
    whole = pair_difference(stat, inflation, lambda: (image, mask), runs, params)
    return _Differences(runs, grid, packed, bad, inflation, whole, of_differences)


def _whole_statistics(jobs: list, tasks, params: StatParams, scratch: Scratch) -> None:
    """The whole-overlap statistics the jobs (`_Differences` by task) left to the batch.

    `measure.difference_statistics` of all of them at once (each pair's bits its own, as
    the constant stage measures it).
    """
    from .measure import difference_statistics, pair_difference

    todo = [(t, job) for t, task_jobs in zip(tasks, jobs) for job in task_jobs
            if job.whole is None]
    if not todo:
        return
    stats = difference_statistics([job.packed for _, job in todo], todo[0][1].params,
                                  scratch.work)
    for (t, job), stat in zip(todo, stats):
        job.whole = pair_difference(stat, job.inflation, lambda t=t: load_pixels(t.loader),
                                    job.runs, params)


def _difference_cells_many(jobs: list, params: StatParams, scratch: Scratch) -> list[_Pending]:
    """The cells of several pairs' differences (`_Differences`), laid out all at once.

    The usable differences in cell order: the runs cut where the cell changes (no
    per-pixel cell arithmetic: `_cell_pieces_many`), each piece's usable differences
    gathered from their place in the packed differences (a piece of the runs is a
    contiguous range there too).
    """
    out: list = [None] * len(jobs)
    live = [k for k, job in enumerate(jobs) if job.runs]
    for k, job in enumerate(jobs):
        if not job.runs:
            out[k] = replace(_no_pending(job.params), whole=job.whole)
    if not live:
        return out
    runs_of = [jobs[k].runs for k in live]
    pieces, code, nv, u0, v0, run, job_of, rank = _cell_pieces_many(
        runs_of, [jobs[k].grid for k in live], ranks=True)
    lengths = pieces.stop - pieces.start
    run_len = np.concatenate([r.stop - r.start for r in runs_of])
    run_start = np.concatenate([r.start for r in runs_of])
    at = (np.cumsum(run_len) - run_len)[run] + (pieces.start - run_start[run])  # in all d
    sizes = np.array([r.npix for r in runs_of], np.intp)
    base = np.cumsum(sizes) - sizes  # each job's d in all d
    good, unusable = lengths, None
    bad = [jobs[k].bad + base[i] for i, k in enumerate(live) if jobs[k].bad is not None]
    if bad:
        bad = np.concatenate(bad)
        before = np.searchsorted(bad, at)
        good = lengths - (np.searchsorted(bad, at + lengths) - before)
        # the pieces tile all d in run order: each bad one is in the last before it
        by_start = np.empty_like(rank)
        by_start[rank] = np.arange(len(rank))  # (argsort(at): `at` grows with the rank)
        k = by_start[np.searchsorted(at[by_start], bad, side="right") - 1]
        unusable = (k, pieces.start[k] + (bad - at[k]))
        at = at - before  # in all the packed differences
        base = base - np.searchsorted(bad, base)
    # the kept cells' values: at once from the packed differences joined (consecutive views
    # of one array, `many_pair_differences`, or small pairs copied together), else from each
    # pair's own
    packs = [jobs[k].packed for k in live]
    small = sum(len(p) for p in packs) <= _JOIN_MAX * len(packs)
    joined = _joined(packs, copy=small and len({p.dtype for p in packs}) == 1)
    cells = _piece_cells_many(None, good, unusable, pieces, code, job_of, nv, u0, v0,
                              [jobs[k].params for k in live],
                              gather=(packs if joined is None else joined, at, base,
                                      scratch.differences),
                              extras=[(jobs[k].inflation, jobs[k].whole) for k in live])
    for i, k in enumerate(live):
        out[k] = cells[i]
    return out


def _ranges(start: np.ndarray, length: np.ndarray, buffers) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(start, length)])`` in a reused buffer.

    (Increments of 1, and at each range's first element the jump from the previous range's
    last, summed in place: no fresh arrays as long as the values.)
    """
    keep = length > 0
    start, length = start[keep], length[keep]
    total = int(length.sum())
    out = buffers.get("ranges", np.intp, total)
    if not total:
        return out
    out.fill(1)
    first = np.cumsum(length) - length
    jump = np.empty(len(start), np.intp)
    jump[0] = start[0]
    jump[1:] = start[1:] - (start[:-1] + length[:-1] - 1)
    out[first] = jump
    return np.cumsum(out, out=out)


_WITHOUT_LIMITS: dict = {}


def _without_limits(params: StatParams) -> StatParams:
    """``params`` without ``lower``/``upper`` (for differences), cached (`replace` validates)."""
    if params.lower is None and params.upper is None:
        return params
    found = _WITHOUT_LIMITS.get(params)
    if found is None:
        if len(_WITHOUT_LIMITS) > 64:
            _WITHOUT_LIMITS.clear()
        found = _WITHOUT_LIMITS[params] = params.replace(lower=None, upper=None)
    return found


def _no_pending(params: StatParams) -> _Pending:
    e, i = np.empty(0), np.empty(0, np.intp)
    return _Pending(e, i, i, np.empty(0, np.int64), e, e, params)


# -- robust plane fits ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlaneFit:
    """A plane ``level + slope . (q - centre)`` with its covariance.

    Attributes
    ----------
    coef : ndarray (3,)
        level (at ``centre``), slope along the first and second coordinate.
    cov : ndarray (3, 3)
        Its covariance (scaled by the fit's chi2 per degree of freedom when above 1).
    used : int
        Points used after clipping.
    """

    coef: np.ndarray
    cov: np.ndarray
    used: int

    @property
    def ok(self) -> bool:
        """Whether the fit has a finite plane."""
        return bool(np.isfinite(self.coef).all())


_NO_PLANE = PlaneFit(np.full(3, np.nan), np.full((3, 3), np.nan), 0)


def fit_plane(q: np.ndarray, value: np.ndarray, var: np.ndarray, centre: np.ndarray) -> PlaneFit:
    """Weighted least-squares plane through points, refitted without points beyond `CLIP` errors.

    The errors are calibrated on the fit: scaled by ``sqrt(chi2 / dof)`` when that is above 1.

    Examples
    --------
    >>> q = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]])
    >>> fit = fit_plane(q, 1 + 2 * q[:, 0] - q[:, 1], np.ones(5), np.zeros(2))
    >>> np.round(fit.coef, 12).tolist()
    [1.0, 2.0, -1.0]
    """
    ok = np.isfinite(value) & np.isfinite(var) & np.isfinite(q).all(axis=1)
    q, value, var = q[ok], value[ok], _floored(var[ok])
    keep = np.ones(len(value), bool)
    for _ in range(PASSES + 1):
        if keep.sum() < 3:
            return _NO_PLANE
        design = np.column_stack([np.ones(keep.sum()), q[keep] - centre])
        w = 1.0 / var[keep]
        normal = design.T @ (design * w[:, None])
        if np.linalg.cond(normal) > 1e12:
            return _NO_PLANE
        cov = np.linalg.inv(normal)
        coef = cov @ (design.T @ (w * value[keep]))
        full = np.column_stack([np.ones(len(value)), q - centre])
        resid = value - full @ coef
        dof = int(keep.sum()) - 3
        scale2 = max(1.0, float(np.sum(resid[keep] ** 2 / var[keep])) / dof) if dof > 0 else 1.0
        new = np.abs(resid) <= CLIP * np.sqrt(var * scale2)
        if np.array_equal(new, keep):
            break
        keep = new
    return PlaneFit(coef, cov * scale2, int(keep.sum()))


def _floored(var: np.ndarray) -> np.ndarray:
    """Variances with zeros (noiseless data) raised to a tiny floor, so weights stay finite."""
    var = np.asarray(var, float)
    positive = var[np.isfinite(var) & (var > 0)]
    floor = float(positive.min()) * 1e-6 if positive.size else 1.0
    return np.where(var > floor, var, floor)


# -- the sparse solve ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PlaneOffsets:
    """Planes of inputs from equations between pairs (see `solve_plane_offsets`).

    Attributes
    ----------
    coef : ndarray (n, 3)
        Each input's plane (level at its centre, slope per arcsec east, north) in the gauge
        "zero mean level and zero mean slope per component"; NaN for inputs in no equation.
    cov : ndarray (n, 3, 3)
        Their covariances in that gauge.
    component : ndarray of int
        Connected component of each input (by the equations).
    residual : ndarray
        Per equation, data minus the fit (the dropped equations' too).
    used : ndarray of bool
        Per equation, whether it was kept by the clipping.
    scale : ndarray
        Per input, the error scale of its component (``sqrt(chi2/dof)``, at least 1).
    slope_free : ndarray of bool
        Inputs in constant equations only: their slopes follow their neighbours' (their
        level's variance is the one given those slopes; the slopes' variances are NaN).
    """

    coef: np.ndarray
    cov: np.ndarray
    component: np.ndarray
    residual: np.ndarray
    used: np.ndarray
    scale: np.ndarray
    slope_free: np.ndarray


def solve_plane_offsets(n: int, g: np.ndarray, h: np.ndarray, q: np.ndarray, d: np.ndarray,
                        var: np.ndarray, centres: np.ndarray, q_h: np.ndarray | None = None,
                        constant: np.ndarray | None = None) -> PlaneOffsets:
    """Solve ``plane_g(q_k) - plane_h(q_h_k) = d_k`` (weights ``1/var_k``) for planes of ``n`` inputs.

    ``plane_g(q) = L_g + (A_g, B_g) . (q - centres[g])``; ``q_h`` (default ``q``) is where the
    other side's statistic was measured (the two sides of a cell are not exactly the same
    points of the sky when their pixel grids differ).  ``constant`` marks equations of a pair
    that constrains a constant only (whole overlaps): an input in none but those has slopes
    that no equation determines; they follow their neighbours' (`PlaneOffsets.slope_free`).
    Per connected component the solution has zero mean level and zero mean slope (the gauge:
    overlaps cannot see a common plane).
    Equations beyond `CLIP` calibrated errors are dropped (up to `PASSES` refits), but never
    every equation that links two parts of a component (`_keep_connected`).

    Examples
    --------
    >>> centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    >>> q = np.array([[5.0, -1.0], [5.0, 1.0], [6.0, 0.0], [4.0, 0.0]])
    >>> truth = np.array([[1.0, 0.1, 0.0], [3.0, -0.1, 0.2]])
    >>> plane = lambda c, k, p: c[0] + c[1:] @ (p - centres[k])
    >>> d = np.array([plane(truth[0], 0, p) - plane(truth[1], 1, p) for p in q])
    >>> sol = solve_plane_offsets(2, np.zeros(4, int), np.ones(4, int), q, d, np.ones(4), centres)
    >>> np.round(sol.coef[1] - sol.coef[0], 6).tolist()   # truth[1] - truth[0]
    [2.0, -0.2, 0.2]
    """
    g, h = np.asarray(g, np.intp), np.asarray(h, np.intp)
    q, d = np.asarray(q, float).reshape(-1, 2), np.asarray(d, float)
    q_h = q if q_h is None else np.asarray(q_h, float).reshape(-1, 2)
    var = _floored(var)
    used = np.ones(len(d), bool)
    constant = np.zeros(len(d), bool) if constant is None else np.asarray(constant, bool)
    pinned = np.ones(n, bool)
    pinned[g[~constant]] = pinned[h[~constant]] = False
    with _blas().limit(limits=1, user_api="blas"):
        for _ in range(PASSES + 1):
            solved = _solve_once(n, g[used], h[used], q[used], q_h[used], d[used], var[used],
                                 centres, pinned)
            fit, comp = solved[4], solved[2]  # the fit itself, before the gauge (see below)
            model = _plane_at(fit, g, q, centres) - _plane_at(fit, h, q_h, centres)
            residual = d - model
            scale = _error_scale(n, comp, g[used], residual[used], var[used])
            badness = np.abs(residual) / (np.sqrt(var) * scale[g])
            new = _keep_connected(n, g, h, (badness <= CLIP) & np.isfinite(residual),
                                  np.isfinite(residual), badness)
            if np.array_equal(new, used) or new.sum() == 0:
                break
            used = new
    coef, cov, comp, free, _ = solved
    cov = cov * (scale**2)[:, None, None]
    return PlaneOffsets(coef, cov, comp, residual, used, scale, free)


def _keep_connected(n, g, h, keep, candidates, badness) -> np.ndarray:
    """``keep``, with the links back that its clipping cut: the components of ``candidates``.

    Dropping every equation of the only pair of inputs that links two parts of a component
    would split it (each part then in its own gauge: levels and slopes no longer related),
    where ``skymodel="constant"`` only down-weights such a pair.  For each cut, the dropped
    equations of the pair (of inputs) with the smallest median ``badness`` among those
    across it come back, as many pairs as it takes (Kruskal's order).
    """
    target = components(n, g[candidates], h[candidates])
    now = components(n, g[keep], h[keep])
    if not n or now.max() == target.max():  # keep within candidates: the same partition
        return keep
    keep = keep.copy()
    dropped = np.flatnonzero(candidates & ~keep)
    links, which = np.unique(g[dropped].astype(np.int64) * n + h[dropped], return_inverse=True)
    order = np.argsort(which.ravel(), kind="stable")
    equations = np.split(dropped[order], np.flatnonzero(np.diff(which.ravel()[order])) + 1)
    median = np.array([np.median(badness[e]) for e in equations])
    parent = np.arange(int(now.max()) + 1)

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for k in np.argsort(median, kind="stable"):
        a, b = root(now[links[k] // n]), root(now[links[k] % n])
        if a != b:
            parent[a] = b
            keep[equations[k]] = True
    return keep


def _plane_at(coef, k, q, centres) -> np.ndarray:
    c = coef[k]
    return c[:, 0] + np.einsum("ij,ij->i", c[:, 1:], q - centres[k])


def _error_scale(n, comp, g, residual, var) -> np.ndarray:
    """Per input, ``max(1, sqrt(chi2 / dof))`` of its component."""
    n_comp = int(comp.max()) + 1 if n else 0
    chi2 = np.bincount(comp[g], residual**2 / var, minlength=n_comp)
    rows = np.bincount(comp[g], minlength=n_comp)
    members = np.bincount(comp, minlength=n_comp)
    dof = rows - 3 * (members - 1)
    ratio = np.where(dof > 0, chi2 / np.maximum(dof, 1), 1.0)
    return np.sqrt(np.maximum(1.0, ratio))[comp]


def _solve_once(n, g, h, q, q_h, d, var, centres, pinned):
    """One weighted solve: (coef (n, 3), cov (n, 3, 3), component, slope_free, fit).

    ``coef`` is in the gauge; ``fit`` is the least-squares solution itself, whose common
    plane the equations see a little when the two sides of a cell are not at one point: the
    residuals are those of the fit.

    The normal matrix over all inputs in equations is block tridiagonal in breadth-first
    order (`lstsq`).  Its null space (a common constant; a common plane when both sides of
    every equation are at one point) is closed by a penalty on the level of one input per
    component and a vanishing ridge on the slopes; the penalty acts in the null space only,
    and the gauge transform below removes it from the solution and the covariance alike.
    """
    coef = np.full((n, 3), np.nan)
    cov = np.full((n, 3, 3), np.nan)
    free = np.zeros(n, bool)
    comp = components(n, g, h)
    if not len(d):
        return coef, cov, comp, free, coef.copy()
    # positions in units of a typical separation, so levels and slopes are of like size
    length = float(np.median(np.hypot(*(q - centres[g]).T))) or 1.0
    qs, qhs, cs = q / length, q_h / length, centres / length
    w = 1.0 / var
    keys, pair = np.unique(g.astype(np.int64) * n + h, return_inverse=True)
    pair = pair.ravel()
    pg, ph = (keys // n).astype(np.intp), (keys % n).astype(np.intp)
    m = len(keys)

    def total(x):
        return np.bincount(pair, x, minlength=m)

    def first(u):
        return np.column_stack([total(w * u[:, 0]), total(w * u[:, 1])])

    def second(u, v):
        out = np.empty((m, 2, 2))
        for i in range(2):
            for j in range(2):
                out[:, i, j] = total(w * u[:, i] * v[:, j])
        return out

    m0 = total(w)

    def block(mu, c1, mv, c2, muv):
        out = np.empty((m, 3, 3))
        out[:, 0, 0] = m0
        out[:, 0, 1:] = mv - m0[:, None] * c2
        out[:, 1:, 0] = mu - m0[:, None] * c1
        out[:, 1:, 1:] = (muv - mu[:, :, None] * c2[:, None, :] - c1[:, :, None] * mv[:, None, :]
                          + m0[:, None, None] * c1[:, :, None] * c2[:, None, :])
        return out

    cg, ch = cs[pg], cs[ph]
    mg, mh = first(qs), first(qhs)
    b_gg = block(mg, cg, mg, cg, second(qs, qs))
    b_hh = block(mh, ch, mh, ch, second(qhs, qhs))
    b_gh = -block(mg, cg, mh, ch, second(qs, qhs))
    r0 = total(w * d)
    rhs_g = np.column_stack([r0, first(qs * d[:, None]) - r0[:, None] * cg])
    rhs_h = -np.column_stack([r0, first(qhs * d[:, None]) - r0[:, None] * ch])

    level = _levels(n, pg, ph, comp)
    order, bounds = _block_order(np.where(level >= 0, level + 1, -1), comp)
    pos = np.full(n, -1, np.intp)
    pos[order] = np.arange(len(order))
    size = 3 * len(order)
    rhs = np.zeros(size)
    diag = np.zeros((n, 3, 3))
    np.add.at(diag, pg, b_gg)
    np.add.at(diag, ph, b_hh)
    for ends, r in ((pg, rhs_g), (ph, rhs_h)):
        np.add.at(rhs, (3 * pos[ends])[:, None] + np.arange(3), r)
    # the penalty on one level per component (the grounded input of the breadth-first order)
    # and vanishing ridges: on the slope differences of overlapping inputs (slopes that no
    # equation determines follow their neighbours'; weakly, not vanishingly, for inputs in
    # constant equations only) and on the slopes (the common slope, when nothing sees it)
    info = np.maximum(diag[:, 0, 0], 1e-300)
    ridge = 1e-12 * info
    link = np.where(pinned[pg] | pinned[ph], 1e-4, 1e-10) * np.minimum(info[pg], info[ph])
    diag_r = diag.copy()
    for k in (1, 2):
        diag_r[:, k, k] += ridge
        np.add.at(diag_r[:, k, k], pg, link)
        np.add.at(diag_r[:, k, k], ph, link)
        b_gh[:, k, k] -= link
    grounded = np.flatnonzero(level == 0)
    diag_r[grounded, 0, 0] *= 2.0
    active = order
    k3 = np.arange(3)
    base = 3 * pos[active]
    rows = [np.repeat(base[:, None] + k3, 3, axis=1).ravel()]
    cols = [np.tile(base[:, None] + k3, (1, 3)).ravel()]
    vals = [diag_r[active].ravel()]
    bg, bh = 3 * pos[pg], 3 * pos[ph]
    for r0_, c0_, blk in ((bg, bh, b_gh), (bh, bg, np.transpose(b_gh, (0, 2, 1)))):
        rows.append(np.repeat(r0_[:, None] + k3, 3, axis=1).ravel())
        cols.append(np.tile(c0_[:, None] + k3, (1, 3)).ravel())
        vals.append(blk.ravel())
    normal = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(size, size)).tocsr()
    sweep = _BlockSweep(normal, 3 * bounds)
    members = order
    cm = comp[members]
    n_comp = int(comp.max()) + 1
    count = np.maximum(np.bincount(cm, minlength=n_comp), 1).astype(float)  # 1: no equations
    # the mean operator's columns (mean level, mean A, mean B of each component)
    mean_cols = np.zeros((size, 3))
    inv = 1.0 / count[cm]
    for k in range(3):
        mean_cols[3 * pos[members] + k, k] = inv
    solved = sweep.solve(np.column_stack([rhs, mean_cols]))
    x = np.zeros((n, 3))
    x[order] = solved[:, 0].reshape(-1, 3)
    y = np.zeros((n, 3, 3))  # Cov(x_g, mean) per input
    y[order] = solved[:, 1:].reshape(-1, 3, 3)
    c = np.zeros((n, 3, 3))
    c[order] = _diagonal_blocks(sweep)
    # the gauge: subtract the component's mean plane (zero mean level and slope)
    cbar = np.column_stack([np.bincount(cm, cs[members, 0], minlength=n_comp),
                            np.bincount(cm, cs[members, 1], minlength=n_comp)]) / count[:, None]
    mean = np.column_stack([np.bincount(cm, x[members, k], minlength=n_comp) for k in range(3)])
    mean /= count[:, None]
    pi = np.zeros((len(members), 3, 3))
    pi[:, 0, 0] = pi[:, 1, 1] = pi[:, 2, 2] = 1.0
    pi[:, 0, 1:] = cs[members] - cbar[cm]
    shift = np.einsum("nij,nj->ni", pi, mean[cm])
    cov_mean = np.zeros((n_comp, 3, 3))
    np.add.at(cov_mean, cm, y[members])
    cov_mean /= count[:, None, None]
    ym = y[members]
    pt = np.transpose(pi, (0, 2, 1))
    cg_ = c[members] - ym @ pt - pi @ np.transpose(ym, (0, 2, 1)) + pi @ cov_mean[cm] @ pt
    # back to slopes per arcsec
    unscale = np.array([1.0, 1.0 / length, 1.0 / length])
    coef[members] = (x[members] - shift) * unscale
    fit = np.full((n, 3), np.nan)
    fit[members] = x[members] * unscale
    cov[members] = cg_ * unscale[:, None] * unscale[None, :]
    free[members] = pinned[members]
    _condition_free(coef, cov, np.flatnonzero(free))
    return coef, cov, comp, free, fit


def _condition_free(coef, cov, free) -> None:
    """Condition the inputs whose slopes no equation determines (they follow their neighbours').

    Their level's variance is the one given the slopes; the slopes' variances are unknown (NaN).
    """
    for k in free:
        c = cov[k]
        gain = np.linalg.solve(c[1:, 1:], c[1:, 0])
        level_var = c[0, 0] - c[0, 1:] @ gain
        cov[k] = np.nan
        cov[k, 0, 0] = max(level_var, 0.0)


def _diagonal_blocks(sweep: _BlockSweep) -> np.ndarray:
    """The 3 x 3 diagonal blocks of the inverse of the swept matrix, in its order (m, 3, 3).

    Backwards: ``Z_k = S_k^{-1} + P_k Z_{k+1} P_k^T`` (see `lstsq._BlockSweep`).
    """
    b = sweep.bounds
    out = []
    z_next = None
    for k in range(len(b) - 2, -1, -1):
        nk = b[k + 1] - b[k]
        z = sweep._solve(k, np.eye(nk))
        if z_next is not None:
            p = sweep.P[k]
            z = z + p @ z_next @ p.T
        blocks = z.reshape(nk // 3, 3, nk // 3, 3)
        idx = np.arange(nk // 3)
        out.append(blocks[idx, :, idx, :])
        z_next = z
    return np.concatenate(out[::-1]) if out else np.empty((0, 3, 3))
