"""How the statistics of overlapping pairs are correlated when they share pixels.

The pairs that involve one image measure it on pixel sets that overlap where three or more
images meet: the pixels of image ``a`` inside both ``b`` and ``c`` enter the statistics of
the pairs (a, b) and (a, c).  Their noise is then shared, and so are their errors.  Ignored,
that correlation makes the propagated sky errors too small (by ~20% on a grid with 20%
overlaps, where every corner is shared by four images) and the pairs' residuals look too
good (a loop of pairs that share noise closes better than independent pairs would).

Model: the statistic of each side of a pair is a mean-like function of the noise of its
pixels, so two sides that measure the same image on pixel sets of ``N1`` and ``N2`` pixels,
``S`` of them shared, have a correlation ``S / sqrt(N1 * N2)``.  The covariance of two pairs
is the sum over their sides: ``cov(p, q) = sum sign * S / sqrt(N_p N_q) * sqrt(v_p v_q)``,
where ``v`` is a side's variance and the sign is + for the first input of a pair and - for
the second (a pair measures first minus second).  `shared_sides` computes the geometric part
once per grouping; `pair_covariance` combines it with the variances of a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from .geometry import Runs, merge_runs

__all__ = ["SharedSides", "error_covariance", "mode_coupling", "pair_covariance", "shared_pixels",
           "shared_sides"]


def shared_pixels(first: Runs, second: Runs) -> int:
    """Number of pixels in both of two pixel sets of one image.

    Examples
    --------
    >>> left = Runs(np.array([0, 1]), np.array([0, 0]), np.array([3, 3]))
    >>> right = Runs(np.array([1, 2]), np.array([2, 2]), np.array([5, 5]))
    >>> shared_pixels(left, right)  # row 1, column 2
    1
    """
    if not first or not second:
        return 0
    _, _, shared, _ = _shared_by_image([(0, first), (2, second)], [2])  # (two pairs' sides)
    return int(shared.sum())


# How a pixel set's runs sit on their rows: one run on each row of an unbroken range of rows,
# one run per row, or anything else (`_shared_by_image` tells them apart)
_CONSECUTIVE, _ONE_PER_ROW, _GENERAL = 0, 1, 2


def _shared(first: Runs, second: Runs, layout1: int, layout2: int) -> int:
    """The pixels in both of two non-empty pixel sets whose layouts are known."""
    lo_row = max(int(first.rows[0]), int(second.rows[0]))
    hi_row = min(int(first.rows[-1]), int(second.rows[-1]))
    if lo_row > hi_row:
        return 0
    if layout1 == layout2 == _CONSECUTIVE:  # the usual convex overlap
        a = slice(lo_row - int(first.rows[0]), hi_row - int(first.rows[0]) + 1)
        b = slice(lo_row - int(second.rows[0]), hi_row - int(second.rows[0]) + 1)
        lo = np.maximum(first.start[a], second.start[b])
        hi = np.minimum(first.stop[a], second.stop[b])
        return int(np.maximum(hi - lo, 0).sum())
    if layout1 != _GENERAL and layout2 != _GENERAL:
        _, k1, k2 = np.intersect1d(first.rows, second.rows, assume_unique=True,
                                   return_indices=True)
        lo = np.maximum(first.start[k1], second.start[k2])
        hi = np.minimum(first.stop[k1], second.stop[k2])
        return int(np.maximum(hi - lo, 0).sum())
    # |A & B| = |A| + |B| - |A | B|, each set's runs merged (its pixels counted once)
    nx = int(max(first.stop.max(), second.stop.max()))
    union = merge_runs([first, second], nx).npix
    return merge_runs([first], nx).npix + merge_runs([second], nx).npix - union


@dataclass(frozen=True, eq=False)
class SharedSides:
    """The geometric part of the pair covariance, per side of each pair.

    Sides are numbered ``2 p + s`` (pair ``p``, side ``s``: 0 for the pair's first input, 1
    for its second).

    Attributes
    ----------
    correlation : scipy.sparse.csr_matrix, shape (2P, 2P)
        ``sign * S / sqrt(N1 N2)`` between sides of different pairs that measure one image on
        shared pixels (zero elsewhere and on the diagonal).
    npix : ndarray, shape (2P,)
        Pixels of each side (all member images, before masks and clipping).
    """

    correlation: csr_matrix
    npix: np.ndarray


def shared_sides(overlaps: dict, keys: list, runs: dict, shapes: list) -> SharedSides:
    """The shared pixels between the sides of the pairs ``keys`` of inputs.

    Parameters
    ----------
    overlaps : dict
        ``{(g, h): {image: frozenset(partner images)}}`` as `groups.input_overlaps` gives:
        the member images of input ``g`` and, for each, its partners in input ``h``.
    keys : list of (int, int)
        The pairs of inputs, in the order of the pair arrays.
    runs : dict
        ``{(a, b): Runs}``: image a's pixels inside image b.
    shapes : list of (int, int)
        Each image's shape.
    """
    by_image: dict[int, list] = {}  # image -> its (side index, pixel set), empty sets left out
    for p, (g, h) in enumerate(keys):
        for s, key in enumerate(((g, h), (h, g))):
            for a, partners in overlaps[key].items():
                pixels = Runs.union([runs[(a, b)] for b in sorted(partners)], shapes[a])
                if len(pixels.rows):
                    by_image.setdefault(a, []).append((2 * p + s, pixels))
    n = 2 * len(keys)
    # a few thousand sides at a time (their runs are copied and their pairs expanded row by
    # row: all 80,000 sides of 10,000 images at once took ~250 MB more)
    found, sides, counts = [], [], []
    images = list(by_image.values())
    for lo in range(0, len(images), _IMAGES_AT_ONCE):
        chunk = images[lo : lo + _IMAGES_AT_ONCE]
        entries = [entry for members in chunk for entry in members]
        *pairs, counted = _shared_by_image(entries, [len(members) for members in chunk])
        found.append(pairs)
        sides.append(np.array([side for side, _ in entries], dtype=np.intp))
        counts.append(counted)
    npix = np.zeros(n)
    if sides:
        npix = np.bincount(np.concatenate(sides), np.concatenate(counts), minlength=n)
    side1, side2, shared = (np.concatenate([f[k] for f in found]) if found
                            else np.zeros(0, np.intp) for k in range(3))
    sign = (1 - 2 * (side1 % 2)) * (1 - 2 * (side2 % 2))
    value = (sign * shared).astype(float) / np.sqrt(npix[side1] * npix[side2])
    # each pair of sides twice, (side1, side2) then (side2, side1)
    rows = np.column_stack([side1, side2]).reshape(-1)
    cols = np.column_stack([side2, side1]).reshape(-1)
    correlation = coo_matrix((np.repeat(value, 2), (rows, cols)), shape=(n, n)).tocsr()
    return SharedSides(correlation=correlation, npix=npix)


_IMAGES_AT_ONCE = 512  # images whose sides `shared_sides` handles at once


def _shared_by_image(entries: list, sizes: list[int]):
    """The sides of different pairs that share pixels, and the pixels of each entry.

    Returns arrays ``side1, side2, shared`` (the shared pixels) and ``pixels``.
    ``entries``: ``(side, Runs)`` of non-empty sides, image after image (``sizes`` of them
    each).  In the order of a loop over the images and, in each, over the pairs of its
    entries (the first before the second).  All at once: the runs' layouts and bounds from
    their concatenation, the usual pairs (both `_CONSECUTIVE`: convex overlaps) counted row
    by row over the rows both cover, the others one pair at a time (`_shared`).  A mosaic of
    10,000 images has ~80,000 sides and ~270,000 pairs of them: ~5 s one at a time.
    """
    side = np.array([e[0] for e in entries], dtype=np.intp)
    runs = [e[1] for e in entries]
    length = np.array([len(r.rows) for r in runs], dtype=np.intp)
    base = np.cumsum(length) - length  # each entry's first run in the concatenation
    rows = np.concatenate([r.rows for r in runs]).astype(np.int64)
    starts = np.concatenate([r.start for r in runs]).astype(np.int64)
    stops = np.concatenate([r.stop for r in runs]).astype(np.int64)
    pixels = np.add.reduceat(stops - starts, base).astype(float)
    if len(entries) < 2:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, np.int64), pixels
    # the layout of each: one run per row (rows increasing), on an unbroken range of rows
    backwards = np.zeros(len(rows), dtype=bool)
    backwards[:-1] = np.diff(rows) <= 0
    backwards[base[1:] - 1] = False  # (from one entry to the next)
    one_per_row = ~np.logical_or.reduceat(backwards, base)
    first_row, last_row = rows[base], rows[base + length - 1]
    layout = np.where(~one_per_row, _GENERAL, np.where(last_row - first_row + 1 == length,
                                                       _CONSECUTIVE, _ONE_PER_ROW))
    first_col, end_col = np.minimum.reduceat(starts, base), np.maximum.reduceat(stops, base)
    # the pairs of entries of each image, in loop order
    x, y = [], []
    for offset, size in zip((np.cumsum(sizes) - sizes).tolist(), sizes):
        a, b = _pairs_of(size)
        x.append(a + offset)
        y.append(b + offset)
    x, y = np.concatenate(x), np.concatenate(y)
    lo, hi = np.maximum(first_row[x], first_row[y]), np.minimum(last_row[x], last_row[y])
    meet = ((side[x] // 2 != side[y] // 2) & (lo <= hi)
            & (np.maximum(first_col[x], first_col[y]) < np.minimum(end_col[x], end_col[y])))
    x, y, lo, hi = x[meet], y[meet], lo[meet], hi[meet]
    shared = np.zeros(len(x), dtype=np.int64)
    blocks = (layout[x] == _CONSECUTIVE) & (layout[y] == _CONSECUTIVE)
    if blocks.any():  # row by row over the rows both cover
        bx, by, blo = x[blocks], y[blocks], lo[blocks]
        span = hi[blocks] - blo + 1
        begin = np.cumsum(span) - span
        step = np.arange(int(span.sum())) - np.repeat(begin, span)
        at_x = np.repeat(base[bx] + blo - first_row[bx], span) + step
        at_y = np.repeat(base[by] + blo - first_row[by], span) + step
        width = np.minimum(stops[at_x], stops[at_y]) - np.maximum(starts[at_x], starts[at_y])
        shared[blocks] = np.add.reduceat(np.maximum(width, 0), begin)
    for k in np.flatnonzero(~blocks):
        shared[k] = _shared(runs[x[k]], runs[y[k]], int(layout[x[k]]), int(layout[y[k]]))
    keep = shared > 0
    return side[x[keep]], side[y[keep]], shared[keep], pixels


@lru_cache(maxsize=64)
def _pairs_of(size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(size, 1)``: the pairs (first, second) of ``size`` things, in order."""
    pairs = np.triu_indices(size, 1)
    for index in pairs:
        index.flags.writeable = False
    return pairs


def pair_covariance(shared: SharedSides, side_var: np.ndarray) -> csr_matrix:
    """The covariance between pairs (off the diagonal) from each side's variance.

    ``side_var`` has shape (2, P) (the variance of each pair's first and second side); NaN
    variances count as 0.  Returns a sparse (P, P) matrix with a zero diagonal.
    """
    var = np.nan_to_num(np.asarray(side_var, float).T.reshape(-1), nan=0.0)  # side 2p + s
    scale = np.sqrt(np.clip(var, 0.0, None))
    sides = shared.correlation.tocoo()
    pairs = len(var) // 2
    values = sides.data * scale[sides.row] * scale[sides.col]
    cov = coo_matrix((values, (sides.row // 2, sides.col // 2)), shape=(pairs, pairs)).tocsr()
    cov.setdiag(0.0)
    cov.eliminate_zeros()
    return cov


def mode_coupling(shared: SharedSides, level: np.ndarray, kernel: np.ndarray,
                  noise: np.ndarray) -> SharedSides:
    """``shared`` with the correlations of two modes (not means) that share pixels.

    The mean-like model of `shared_sides` (``S / sqrt(N1 N2)``) holds for a statistic that
    every pixel moves alike.  The mode moves with the noise of the pixels whose values lie
    near it, within its kernel: over a broad scene (a nebula) two sides of one image that
    share pixels (an edge and a corner of it) have modes at different values, moved by
    different pixels, and their errors hardly correlate.  Measured on the N=16 nebula mosaic
    of ``bench_vs_peers.py`` (scene held, noise redrawn 30 times, seeds 10 and 11): the
    correlations of the pairs' differences were 0.19-0.23 times the mean-like model's.

    So each correlation is multiplied by that of the two modes' responses to the noise of
    one pixel, over values spread evenly near both modes (exact in the noise, Gaussian
    kernels of widths ``b1``, ``b2``, pixel noise ``sigma``, modes ``delta`` apart):
    ``(F(b1, b2) - b1 b2 / (B1 B2) F(B1, B2)) / sqrt(V1 V2)`` with ``B**2 = b**2 +
    sigma**2``, ``F(b1, b2) = b1 b2 / s**3 (1 - z**2) exp(-z**2 / 2)``, ``s**2 = b1**2 +
    b2**2``, ``z = delta / s`` and ``V = F(b, b) - b**2 / B**2 F(B, B)`` at ``delta = 0``.
    It is 1 for two modes at one value with one kernel (pure noise: the mean-like model
    stands) and falls within a few kernel widths.  Sides without a kernel (other
    statistics, groups) keep their correlation.  ``level``, ``kernel`` and ``noise`` have
    shape (2, P): each side's statistic, mode kernel width and pixel noise.
    """
    corr = shared.correlation.tocoo()
    flat = [np.asarray(x, float).T.reshape(-1) for x in (level, kernel, noise)]  # side 2p + s
    m, b, sigma = (x[corr.row] for x in flat)
    m2, b2, sigma2 = (x[corr.col] for x in flat)
    factor = np.ones(corr.data.size)
    known = np.isfinite(m - m2) & (b > 0) & (b2 > 0) & np.isfinite(sigma * sigma2)
    if known.any():
        noise2 = (0.5 * (sigma + sigma2))[known] ** 2
        b, b2, delta = b[known], b2[known], (m - m2)[known]
        big, big2 = np.sqrt(b**2 + noise2), np.sqrt(b2**2 + noise2)
        cov = _response_overlap(b, b2, delta) - b * b2 / (big * big2) * _response_overlap(big, big2, delta)
        var = (1.0 / b - b**2 / big**3) * (1.0 / b2 - b2**2 / big2**3) / 8.0
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = cov / np.sqrt(var)
        factor[known] = np.clip(np.nan_to_num(rho, nan=1.0), -1.0, 1.0)
    coupled = coo_matrix((corr.data * factor, (corr.row, corr.col)), shape=corr.shape).tocsr()
    return SharedSides(correlation=coupled, npix=shared.npix)


def _response_overlap(b1, b2, delta):
    """``integral K1'(v) K2'(v - delta) dv / sqrt(2 pi)`` for ``K(v) = exp(-v**2 / (2 b**2))``."""
    s2 = b1**2 + b2**2
    z2 = delta**2 / s2
    return b1 * b2 / s2**1.5 * (1.0 - z2) * np.exp(-0.5 * z2)


def error_covariance(shared: SharedSides, pairs) -> csr_matrix | None:
    """The pairs' covariance for the sky errors, when it differs from the robust solve's.

    ``pairs`` is a `measure.PairStats`.  With modes measured on each side
    (``compare="levels"``, ``skystat="mode"``) the correlations of sides that share pixels
    are those of `mode_coupling`; None otherwise (the robust solve's covariance,
    `pair_covariance` of ``pairs.side_var``, serves both).  Only the errors use it: the robust
    weights, and so the skies, stay those of the mean-like model.
    """
    kernel = np.asarray(pairs.side_kernel, float)
    if not np.isfinite(kernel).any():
        return None
    coupled = mode_coupling(shared, np.vstack([pairs.stat_a, pairs.stat_b]), kernel,
                            np.asarray(pairs.side_noise, float))
    return pair_covariance(coupled, pairs.side_var)
