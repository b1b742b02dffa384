"""Sky statistics of a set of pixel values: mean, median, mode or midpt after sigma clipping.

The semantics are those of ``stcal.skymatch`` (``stsci.imagestats``) without its defects:
non-finite values are ignored, ``lower``/``upper`` are always honoured, constant data and
data of any spread or offset work (all arithmetic is float64, and every statistic obeys
``stat(a*x + b) == a*stat(x) + b`` for ``a > 0``), and each value comes with its 1-sigma
statistical uncertainty.

How it is fast (see ``bench/bench_stats.py``): the values are converted once to float64
about a rough centre; the first clipping pass splits them into a *core*, well inside every
clipping limit that can follow, whose count and sums are kept, and a small *fringe* (all the
rest); later passes re-read only the fringe, and stop at the exact fixed point. The result is
the same set of pixels as the straightforward algorithm: only the summation order differs.
Histograms are scale + truncate + `numpy.bincount`, in chunks; large scratch arrays live in a
reusable `Workspace`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import numpy as np

from .params import SKYSTATS, StatParams

__all__ = [
    "SKYSTATS",
    "ModeBroad",
    "ModeShape",
    "SkyStat",
    "StatParams",
    "StatisticError",
    "Workspace",
    "median_of",
    "mode_broad_errors",
    "neighbour_noise",
    "pixel_noise",
    "side_statistic",
    "sky_statistic",
]

_SAMPLE = 512          # values sampled to find a rough centre and spread of the data
_CORE = 0.75           # core half-width, as a fraction of the clipping half-width
_EXACT_SUMS = 1.0e3    # fringe sum of squares above this times the core's: sum the core directly
_RECENTRE = 64.0       # recentre when the mean is this many std from the centre (precision)
_MEDIAN_BINS = 4096    # bins used to locate the median before selecting it exactly
_NOISE_BINS = 0.25     # widest bin (in noise) `_median_noise_error` reads a histogram of
_SERIAL_DOT = 8192     # longest vector given to one BLAS dot product: see `_sumsq`
_CHUNK = 65536         # values histogrammed at a time (mode, midpt): see `_ClippedSet.counts`
_PAIR_RATIO = 4        # count pairs of bins when (bins + 1)**2 <= values / _PAIR_RATIO
_TINY = 4.0 * np.finfo(np.float64).eps
# Ties: a value on a clipping limit or a bin edge in exact arithmetic must land on the same side
# whatever the rounding of the mean, std and differences (a few ulps). Limits are widened and
# bin numbers raised by this relative amount, far above rounding and far below any physical
# meaning: see `sky_statistic`, "Ties".
_TIE = 2.0**-32
# Values farther than _HUGE from the data's median are ignored like non-finite ones: their
# squares, summed over any number of values, must stay below the float64 maximum (2**1024).
_HUGE = 2.0**480
_MAX_BINS = 2**20      # most histogram bins (mode, midpt); more: a clear error naming binwidth
_MIN_BINS = 3          # fewer bins across the values' range: mode and midpt are the median
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
# `pixel_noise` uses 4000 to 8000 pairs of neighbours spread evenly over the values (all of
# them when there are fewer): the MAD of 4000 values is within ~2.5% of the noise, far below
# the other uncertainties of an error, so more pairs would cost time for nothing.
_NOISE_PAIRS = 4000
_NOISE_SLOT = 4        # Workspace float slots of `neighbour_noise` (this one and the next)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_F32_UP, _F32_DOWN = np.float32(np.inf), np.float32(-np.inf)
# Mode: the histogram is smoothed by a Gaussian of _MODE_KERNEL * (_MODE_N / n)**(1/7) bins,
# never narrower than (_MODE_RESOLUTION / n)**(1/5) std, truncated at _MODE_REACH widths; see
# `sky_statistic` and `_mode_kernel`.
_MODE_KERNEL = 5.0
_MODE_N = 1000.0
_MODE_RESOLUTION = 5.66
_MODE_REACH = 4.0
# ... then widened by factors of _MODE_WIDER up to _MODE_WIDEST std while the peak stays within
# _MODE_STAY errors of every narrower kernel's peak (Lepski's rule): see `sky_statistic`.
_MODE_WIDER = 2.0
# `_mode_noise_spreads`: draws of the noise, at most this many bins around the peak.
_MODE_DRAWS = 16
_MODE_DRAW_BINS = 1024  # histograms of more bins: not done (the first-order error stands)
_MODE_DRAW_MARGIN = 0.8  # ... nor when every widening decision's |log(move / limit)| is above
_MODE_DRAW_SEED = 20261203
_DRAWS = None
_MODE_WIDEST = 2.0
_MODE_STAY = 3.0


class ModeShape(NamedTuple):
    """How a side's mode was found, for the error of a difference of two modes.

    Attributes
    ----------
    kernel : float
        Width (Gaussian sigma, in the values' units) of the kernel the peak was located with.
    fixed_err : float
        The noise's error of the peak with that kernel held (`_mode_noise_errors`): no move
        to another kernel's peak.
    ladder : tuple of (float, float)
        ``(width, peak)`` of every kernel the widening rule tried, in the values' units (the
        rejected wider one too): what the peak would have been with another kernel.
    """

    kernel: float = math.nan
    fixed_err: float = math.nan
    ladder: tuple = ()


class SkyStat(NamedTuple):
    """A sky statistic with the number of pixels it used and its uncertainty.

    Attributes
    ----------
    value : float
        The statistic; nan when no pixel survives the limits and clipping.
    npix : int
        Number of pixels used, after limits and clipping.
    err : float
        1-sigma statistical uncertainty of `value` for independent noise pixels; nan when it
        cannot be estimated (``npix < 2``).

    Examples
    --------
    >>> SkyStat(1.5, 10, 0.1).npix
    10
    """

    value: float
    npix: int
    err: float


_EMPTY = SkyStat(math.nan, 0, math.nan)


class StatisticError(ValueError):
    """A statistic that cannot be computed with these parameters on these values."""
_ALL = ("all",)  # key of the set holding every base value


class Workspace:
    """Scratch buffers reused across calls of `sky_statistic`.

    No call then page-faults fresh large arrays. Buffers grow as needed and are never shrunk.

    Use one per thread or task (a workspace is not thread-safe); it holds no results.

    Examples
    --------
    >>> work = Workspace()
    >>> params = StatParams(skystat="mean")
    >>> [sky_statistic(np.arange(n, dtype=float), params, work=work).value for n in (3, 5)]
    [1.0, 2.0]
    """

    __slots__ = ("_pools",)

    def __init__(self) -> None:
        self._pools: dict[tuple[type, int], np.ndarray] = {}

    def _buffer(self, dtype: type, slot: int, n: int) -> np.ndarray:
        buf = self._pools.get((dtype, slot))
        if buf is None or buf.size < n:
            size = n if buf is None else max(n, buf.size + buf.size // 4)
            buf = self._pools[(dtype, slot)] = np.empty(size, dtype)
        return buf[:n]

    def _floats(self, slot: int, n: int) -> np.ndarray:
        return self._buffer(np.float64, slot, n)

    def held(self) -> list:
        """``(array, let_go)`` for each buffer held (``let_go()`` drops it from the pool)."""
        return [(buf, partial(self._pools.pop, key, None)) for key, buf in list(self._pools.items())]

    def _ints(self, n: int) -> np.ndarray:
        return self._buffer(np.intp, 0, n)

    def _ints2(self, n: int) -> np.ndarray:
        return self._buffer(np.intp, 1, n)

    def _int32s(self, n: int) -> np.ndarray:
        return self._buffer(np.int32, 0, n)

    def _int32s2(self, n: int) -> np.ndarray:
        return self._buffer(np.int32, 1, n)

    def _bools(self, slot: int, n: int) -> np.ndarray:
        return self._buffer(np.bool_, slot, n)

    def floats(self, slot: int, n: int) -> np.ndarray:
        """A scratch float64 array of ``n`` elements; slots 8 and up are free for callers."""
        return self._buffer(np.float64, slot, n)

    def bools(self, n: int) -> np.ndarray:
        """A scratch boolean array of ``n`` elements (overwritten by the next statistic)."""
        return self._buffer(np.bool_, 0, n)


def sky_statistic(
    values: np.ndarray,
    params: StatParams,
    *,
    work: Workspace | None = None,
    noise: float | None = None,
) -> SkyStat:
    """The sky statistic of pixel values, after limits and sigma clipping, with its error.

    1. Base set: the finite values within ``[lower, upper]`` (inclusive), except values so
       far from the others that no float64 moment can hold them: farther than 2**480
       (~3e144) from the values' median, in units of their spread when that is beyond
       2**+-400. Like inf, they are ignored (a pixel of 1e200 among values near 100, or one
       at the float64 maximum, is not a sky value).
    2. Up to ``nclip`` passes: with the mean and standard deviation (ddof=1) of the current
       set, the new set is every base value within ``[mean - lsigma*std, mean + usigma*std]``;
       stops early when a pass leaves the set unchanged. When a pass gives a set seen before
       (the passes cycle, e.g. for ``lsigma`` below ~1), clipping stops and the set is the
       union of the cycle's sets: the base values within the widest limits of the cycle. So
       the result does not flip with the parity of ``nclip``. An empty set gives
       ``SkyStat(nan, 0, nan)``.
    3. The statistic of the final set: ``mean``; ``median`` (exact, as `numpy.median`);
       ``midpt`` from a histogram of bin width ``h = binwidth*std`` whose bins start at the
       set's minimum (bin ``k`` holds the values in ``[min + k*h, min + (k+1)*h)``),
       interpolating its cumulative distribution linearly to 1/2; ``mode``, the peak of the
       distribution (below). Constant data give the constant for all.
       When the bins are so wide that fewer than 3 span the values' range (``binwidth``
       above about a third of the range in std), a histogram locates nothing: ``mode`` and
       ``midpt`` are then the median.  A histogram of more than 2**20 bins (``binwidth`` far
       too small for the spread of the values) raises `StatisticError`, naming ``binwidth``.

    ``mode`` smooths the same histogram with a Gaussian kernel and locates the peak of the
    smoothed counts by a parabola through the logarithms of the three highest (exact for a
    Gaussian top). The kernel starts at the resolution ``binwidth`` asks for: a sigma of
    ``5 * (1000/n)**(1/7)`` bins, at least one bin, but never narrower than
    ``(5.66/n)**(1/5)`` std (the width at which the peak's own error for Gaussian noise is a
    quarter of the kernel: below it the peak wanders among the noise's bumps). The kernel is
    then doubled, up to 2 std, as long as the peak stays within 3 errors of the peak of every
    narrower kernel (Lepski's rule). So a symmetric top (noise, pixel differences) is located
    almost as precisely as by the median, while an asymmetric one (sky plus faint sources)
    keeps the narrow kernel and the resolution. The argmax of the raw histogram (the
    reference's mode) wanders over the flat top of the distribution: on Gaussian noise its
    error is 6 to 31 times ours (n = 300 to 1e5, binwidth 0.1; ``bench/bench_stats.py
    --calibrate``).

    Ties (a value exactly on a clipping limit or a bin edge, common for integer data) are
    decided as in exact arithmetic, whatever the rounding of the mean, std and differences:
    the value stays in the set, and goes into the bin above the edge. In float64 this is one
    rule: the clipping half-widths are ``lsigma*std*(1 + 2**-32)`` and ``usigma*std*(1 +
    2**-32)``, and a value's bin is ``floor((value - min) * (1 + 2**-32) / h)``. The tolerance
    is far above rounding (~1e-16) and far below anything physical; any implementation that
    follows this rule gets the same set and the same bins.

    Uncertainty ``err`` (1 sigma, statistical, for independent noise pixels; ``n = npix``,
    ``std`` of the final set; nan when ``n < 2``):

    - mean: ``std / sqrt(n)``;
    - median and midpt: ``sqrt(pi/2) * std / sqrt(n)``. For midpt the simulation study
      found no binning term is needed: measured scatter / err = 0.93-1.06 for every n and
      binwidth of the grid (the interpolated histogram median is, if anything, a little
      better than the exact one for wide bins).
    - mode: the first-order error of the peak of a kernel density estimate, from the data:
      the peak solves ``f'(m) = 0``, so ``var = sum_k c_k K'(u_k)**2 / (sum_k c_k
      K''(u_k))**2`` over the bins (counts ``c_k``, distances ``u_k`` to the peak, kernel
      ``K``); it is never taken below the same error for Gaussian noise,
      ``std * sqrt(V(b) / n)`` with ``V(b) = E[K'(X)**2] / f_b''(0)**2`` in closed form for a
      kernel of ``b`` std (the data's own curvature is noisy when few values define the top),
      nor above ``std``. On Gaussian noise the pulls ``(estimate - truth) / err`` have a std
      of 0.95-1.11 for n = 300 to 1e5 and binwidth 0.02 to 0.5 (300-1000 trials each), and
      0.90-1.17 at n = 1e6 (40 trials each).

    With ``noise`` (the pixel noise of the values, e.g. from `pixel_noise`), the error is
    that of the noise alone, the rest held fixed: what matters when the values are a scene
    plus noise and will be compared with another measurement of the same scene (one side of
    an overlap, ``compare="levels"``), since the scene cancels in the comparison while the
    spread of the values counts it.  Mean, median and midpt: as above with ``noise`` for the
    std.  Mode: to first order in the noise ``e_k`` of each value, the peak moves by
    ``sum K''(u_k) e_k / sum K''(u_k)``, so ``err = noise * sqrt(sum c K''**2) / |sum c K''|``
    over the bins; but never more than the error above (for pure noise that linearisation
    fails, and the error above is the right one).

    Parameters
    ----------
    values : numpy.ndarray
        1-D array of pixel values, any real dtype; NaN and inf are ignored. Never modified.
        Any magnitude and any spread work (differences from the median are scaled by a
        power of two when their squares would overflow or underflow).
    params : StatParams
        The statistic, limits and clipping.
    work : Workspace, optional
        Scratch buffers to reuse across calls (faster for large inputs); one per thread.
    noise : float, optional
        The pixel noise of the values: the error is then that of the noise alone (above).

    Returns
    -------
    SkyStat
        ``(value, npix, err)``, ``value`` and ``err`` as Python floats.

    Raises
    ------
    StatisticError
        For ``mode`` and ``midpt``, when ``binwidth`` asks for more than 2**20 bins.

    Examples
    --------
    >>> x = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 100.0])
    >>> sky_statistic(x, StatParams(skystat="median", nclip=0, upper=10.0))
    SkyStat(value=2.5, npix=4, err=0.809...)
    >>> sky_statistic(x, StatParams(skystat="mean", lower=200.0))
    SkyStat(value=nan, npix=0, err=nan)
    """
    return _statistic(values, params, work, noise)[0]


def side_statistic(
    values: np.ndarray, params: StatParams, *, work: Workspace | None = None, noise: float,
    kernel: bool = False, defer: bool = False,
) -> tuple[SkyStat, float] | tuple[SkyStat, float, float]:
    """`sky_statistic` with ``noise``, and the noise's error when the values are a broad scene.

    The second value is the error for the sky errors: ``err`` for the mean; for the median
    and midpt, whose noise error grows when the scene under the noise is broader than the
    noise (`_median_noise_error`), the larger of the two; for the mode, the spread of its
    redrawn histograms when a widening decision was close (`_mode_noise_spreads`: the peak
    may move to another kernel's with the noise), else its first-order error exact in the
    noise (`_mode_noise_errors`), either of which may be below ``err``.  (``err`` itself stays
    the reference-compatible formula: the robust solve of ``compare="levels"`` judges
    residuals with it.)

    With ``kernel``, a third value: the `ModeShape` of the mode (the kernel's width, for
    `covariance.mode_coupling`; the error with the kernel held and the peaks of the other
    kernels, for `measure.scene_error`), NaN and empty for the other statistics and without
    a smoothed peak.

    With ``defer``, the mode's second value may be a `ModeBroad` instead (histograms of at
    most `_MODE_DRAW_BINS` bins), its `ModeShape`'s ``fixed_err`` then NaN: what both need,
    for `mode_broad_errors` to compute with other sides' (the same values, fewer calls).

    ``noise`` may be a callable: called once, before the clipping, with whether every value
    was usable (finite, within 2**480 of the others, no ``lower``/``upper``; False when not
    known), it returns the noise (`measure._region_statistic`: no finiteness check of its
    own).
    """
    stat, clipped, used, noise = _statistic(values, params, work, noise)
    broad = stat.err
    shape = ModeShape()
    smoothed = clipped is not None and used == "mode" and getattr(clipped, "mode_fit", None) is not None
    if kernel and smoothed:
        shape = shape._replace(kernel=float(clipped.mode_fit[2] * clipped.mode_bin * clipped.scale),
                               ladder=tuple((w * clipped.scale, clipped.centre + v * clipped.scale)
                                            for w, v in clipped.mode_ladder))
    if clipped is not None and used in ("median", "midpt") and math.isfinite(noise) and stat.npix >= 2:
        broad = max(stat.err, _median_noise_error(clipped, noise / clipped.scale) * clipped.scale)
    elif clipped is not None and used == "mode" and math.isfinite(noise) and stat.npix >= 2:
        pending = _mode_broad(clipped, noise / clipped.scale, stat.err)
        if pending is not None and defer and pending.counts.size <= _MODE_DRAW_BINS:
            broad = pending  # (held until computed: small histograms only)
        elif pending is not None:
            (broad, fixed), = mode_broad_errors([pending])
            if kernel and smoothed:
                shape = shape._replace(fixed_err=fixed)
    return (stat, broad, shape) if kernel else (stat, broad)


class ModeBroad(NamedTuple):
    """One side's mode as `side_statistic` leaves it with ``defer``: what its error needs.

    ``counts``, ``peak``, ``width``: the mode's histogram, its peak and kernel (bins); ``h``:
    the bin width; ``binwidth``, ``n``, ``std``: of the set; ``noise``: the pixel noise (all
    in the set's units); ``redraw``: whether the histogram is drawn again
    (`_mode_noise_spreads`); ``scale``: the set's unit in the values'; ``err``: the side's
    error, the fallback.
    """

    counts: np.ndarray
    peak: float
    width: float
    h: float
    binwidth: float
    n: int
    std: float
    noise: float
    redraw: bool
    scale: float
    err: float


def _mode_broad(s: _ClippedSet, noise: float, err: float) -> ModeBroad | None:
    """The `ModeBroad` of a set whose mode was found (None without a smoothed peak or noise)."""
    fit = getattr(s, "mode_fit", None)
    if fit is None or not noise > 0:
        return None
    counts, peak, width = fit
    redraw = s.mode_margin <= _MODE_DRAW_MARGIN and counts.size <= _MODE_DRAW_BINS
    return ModeBroad(counts, peak, width, float(s.mode_bin), float(s.mode_binwidth), s.n,
                     s.std, noise, redraw, s.scale, err)


def mode_broad_errors(sides, *, spreads: bool = True) -> list[tuple[float, float]]:
    """The mode's errors for the sky errors of each `ModeBroad`, in the values' units.

    Per side ``(broad, fixed)``.  ``broad``: the spread of its redrawn histograms when a
    widening decision was close (`_mode_noise_spreads`), else (or when that is 0) its
    first-order error exact in the noise (`_mode_noise_errors`); ``err`` when neither is
    positive.  ``fixed``: that first-order error, the mode's error with its kernel held
    (`ModeShape.fixed_err`; NaN when not positive).  Sides whose histograms have as many
    bins are computed together; each value is the one computed alone.

    Without ``spreads`` the histograms are not redrawn: a side that would be
    (`ModeBroad.redraw`) gets NaN for ``broad``, to be computed when needed (the redrawn
    spread is most of the cost, and `measure.scene_error` rarely uses it).

    Examples
    --------
    >>> values = 100.0 + np.random.default_rng(0).standard_normal(5000)
    >>> params = StatParams(skystat="mode")
    >>> _, pending = side_statistic(values, params, noise=1.0, defer=True)
    >>> mode_broad_errors([pending])[0][0] == side_statistic(values, params, noise=1.0)[1]
    True
    """
    fixed = _mode_noise_errors(sides)
    found = fixed.copy()
    redraw = [i for i, side in enumerate(sides) if side.redraw]
    if redraw and spreads:
        spread = _mode_noise_spreads([sides[i] for i in redraw])
        found[redraw] = np.where(spread != 0, spread, fixed[redraw])  # `spread or fixed`
    elif redraw:
        found[redraw] = math.nan
    return [(f * side.scale if f > 0 else side.err if f == f else math.nan,
             e * side.scale if e > 0 else math.nan)
            for f, e, side in zip(found.tolist(), fixed.tolist(), sides)]


def _by_bins(sides) -> list[list[int]]:
    """Indices of ``sides`` grouped by the size of their histograms."""
    groups: dict[int, list[int]] = {}
    for i, side in enumerate(sides):
        groups.setdefault(side.counts.size, []).append(i)
    return list(groups.values())


def _statistic(values, params: StatParams, work, noise):
    """`sky_statistic`, the final set and the statistic used (None, None when empty).

    ``noise`` may be a callable, called once with whether every value was usable (`_base_set`)
    before clipping, that returns it (`side_statistic`).
    """
    clipped = _clipped_set(values, params, work)
    if callable(noise):
        noise = noise(clipped is not None and clipped.every)
    if clipped is None:
        return _EMPTY, None, None, noise
    statistic = _STATISTICS[params.skystat]
    if statistic in (_mode, _midpt) and _too_coarse(clipped, params.binwidth):
        statistic = _median
    value, err = statistic(clipped, params)
    n = clipped.n
    scale = clipped.scale
    used = "median" if statistic is _median else params.skystat
    if noise is not None and math.isfinite(noise) and n >= 2:
        err = _noise_error(used, clipped, noise / scale, err)
    stat = SkyStat(clipped.centre + value * scale, n, err * scale if n >= 2 else math.nan)
    return stat, clipped, used, noise


def _noise_error(skystat: str, s: _ClippedSet, noise: float, err: float) -> float:
    """The error due to the pixel noise alone, the scene held fixed (see `sky_statistic`)."""
    if skystat == "mean":
        return noise / math.sqrt(s.n)
    if skystat in ("median", "midpt"):
        return _SQRT_HALF_PI * noise / math.sqrt(s.n)
    fit = getattr(s, "mode_fit", None)
    if fit is None:  # constant data, or a peak at an end of the histogram
        return err
    counts, peak, width = fit
    u = (np.arange(counts.size) + 0.5 - peak) / width
    curvature = ((u**2 - 1.0) * np.exp(-0.5 * u**2))  # K'' up to a constant factor
    total = float(np.dot(counts, curvature))
    if not total < 0:
        return err
    return min(err, noise * math.sqrt(float(np.dot(counts, curvature**2))) / -total)


def _median_noise_error(s: _ClippedSet, noise: float) -> float:
    """The median's error due to the pixel noise when the values are a broad scene plus noise.

    A median moves with the values that noise carries across it: ``var = sum_k p_k (1 - p_k)
    / (n f(m))**2`` (``p_k`` the chance that value ``k`` lies below the median ``m``, ``f``
    the values' density there).  Only values within a few ``noise`` of ``m`` can cross, so
    across a scene much broader than the noise the error is ``sqrt(noise / (sqrt(pi) n
    f(m)))``, not ``sqrt(pi/2) noise / sqrt(n)``: 1.4-1.6 times more on the nebula mosaics
    of the bench.  From the histogram of the set (bin centres ``y_k``): ``p_k = Phi((m -
    y_k) / noise)`` and ``f`` smoothed by a Gaussian of ``noise / 2``.  For values no broader
    than the noise this is below ``sqrt(pi/2) noise / sqrt(n)`` (`side_statistic` keeps the
    larger; for pure noise it gives 0.91 of it).  0 without a histogram.  Measured with a
    fixed scene (uniform, 0 to 30 noise sigma wide, 20,000 values) and the noise re-drawn 200
    times: scatter / error 0.86-1.11 for both median and midpt.

    Bins wider than `_NOISE_BINS` noise (a small set over a wide range: the median's
    histogram has ``n // 32`` bins) cannot be smoothed by ``noise / 2``: the values
    themselves are used when the set still has them (the median's), else (the midpt's,
    whose histogram took them) bins wider than twice the noise are smoothed by their own
    width.  (46 pixels, 6 of them a star's wing, in one bin: its centre 7 noise from the
    median gave a density of ~1e-47 and an error of 3e21; on a 600-CCD camera mosaic 1e37,
    which spread to every sky error.)
    """
    hist = getattr(s, "median_hist", None)
    if hist is None or not noise > 0:
        return 0.0
    ymin, h, counts, value = hist
    from scipy.special import ndtr

    smooth = 0.5 * noise
    if h > _NOISE_BINS * noise and s.y is not None:
        lo, hi = s.value_range()
        y = s.y[(s.y >= lo) & (s.y <= hi)]
        u = (value - y) / noise
        counts = np.ones(u.size)
    else:
        u = (value - (ymin + (np.arange(counts.size) + 0.5) * h)) / noise
        if h > 2.0 * noise:
            smooth = h
    near = np.abs(u) < 8.0 * max(1.0, smooth / noise)
    if not near.any():
        return 0.0
    c, u = counts[near].astype(np.float64), u[near]
    p = ndtr(u)
    crossing = float(np.dot(c, p * (1.0 - p)))
    z = u * (noise / smooth)
    density = float(np.dot(c, np.exp(-0.5 * z**2))) / (smooth * math.sqrt(2.0 * math.pi))
    if not density > 0:
        return 0.0
    return math.sqrt(crossing) / density


def _mode_noise_spreads(sides) -> np.ndarray:
    """The spread of the mode when the noise of the values is drawn again (the scene held).

    The first-order error of the mode (`_noise_error`) assumes that the peak moves smoothly
    with the noise, and that the kernel is fixed.  Over a broad, bumpy scene neither holds:
    where the noise is as wide as the kernel the linearisation overstates the peak's wander
    (up to 2x), and the widening rule (`_mode`) picks another kernel for another draw of the
    noise, whose peak sits elsewhere on an asymmetric top (0.1-0.2 noise sigma apart on the
    nebula mosaics' overlaps): sides whose mode scattered 2-3 times their error.  So the
    noise is drawn again, `_MODE_DRAWS` times, on the histogram: the values of bin ``k``
    (``c_k`` of them) each move by a fresh ``N(0, noise**2)``, which changes the counts by a
    multinomial fluctuation (drawn as its Gaussian, with the exact covariance ``c_k (diag(P)
    - P P^T)``, ``P`` the chances of landing in each bin); each drawn histogram goes through
    the mode's whole rule (the kernels, the widening, the peak), and the spread (std) of the
    draws' modes is returned, in the values' units.  Only draws that stay on the observed
    peak's hill (between the minima of the final smoothed histogram on either side) count:
    a jump to another hill of a bimodal scene is what the robust solve sees in the pair's
    residual (`robust.flagged_variance`).  The draws are the same fixed normal numbers for
    every call: the result depends only on the data.  Only for sides whose widening
    decisions were close (`ModeBroad.redraw`).  The sides' histograms of as many bins are
    drawn and located together; 0 where the covariance is not positive definite.
    """
    from scipy.special import ndtr

    out = np.zeros(len(sides))
    for group in _by_bins(sides):
        bins = sides[group[0]].counts.size
        c = np.array([sides[i].counts for i in group], dtype=np.float64)  # (sides, bins)
        chance = np.array([_landing_chances(bins, sides[i].noise / sides[i].h, ndtr) for i in group])
        landed = (chance @ c[:, :, None])[:, :, 0]
        cov = np.subtract(0.0, (chance * c[:, None, :]) @ chance.transpose(0, 2, 1))
        diagonal = np.arange(bins)  # sum_k c_k (diag(P_k) - P_k P_k^T)
        cov[:, diagonal, diagonal] += landed
        top = cov[:, diagonal, diagonal].max(axis=1)
        cov[:, diagonal, diagonal] += (1e-9 * (1.0 + top))[:, None]  # PSD to rounding
        root, ok = _cholesky_stacked(cov)
        if not ok.any():
            continue
        keep = [i for i, good in zip(group, ok) if good]
        c, root = c[ok], root[ok]
        drawn = c[:, None, :] + _mode_draws(bins) @ root.transpose(0, 2, 1)  # (sides, draws, bins)
        modes = _modes_of_histograms(drawn, [sides[i] for i in keep])
        for row, i in enumerate(keep):
            out[i] = _hill_spread(modes[row], c[row], sides[i])
    return out


def _cholesky_stacked(cov: np.ndarray):
    """`numpy.linalg.cholesky` of stacked matrices, and which ones are positive definite."""
    try:
        return np.linalg.cholesky(cov), np.ones(len(cov), dtype=bool)
    except np.linalg.LinAlgError:
        root, ok = np.zeros_like(cov), np.zeros(len(cov), dtype=bool)
        for i, matrix in enumerate(cov):
            try:
                root[i] = np.linalg.cholesky(matrix)
                ok[i] = True
            except np.linalg.LinAlgError:
                pass
        return root, ok


def _hill_spread(modes: np.ndarray, c: np.ndarray, side: ModeBroad) -> float:
    """The spread (data units) of the drawn ``modes`` that stay on the observed peak's hill."""
    bins = c.size
    smooth = _smoothed(c, side.width)
    top = min(max(int(side.peak), 0), bins - 1)
    rising = smooth[1:] >= smooth[:-1]
    below = np.flatnonzero(~rising[:top])
    above = np.flatnonzero(rising[top:])
    left = below[-1] + 1 if below.size else 0
    right = top + above[0] + 1 if above.size else bins
    stay = modes[(modes >= left) & (modes < right)]
    if stay.size < _MODE_DRAWS // 4:
        stay = modes
    return float(np.std(stay, ddof=1)) * side.h


def _landing_chances(bins: int, sigma: float, ndtr) -> np.ndarray:
    """``chance[j, k]``: a value at the centre of bin ``k`` lands in bin ``j`` (noise ``sigma`` bins).

    ``ndtr((j + 1 - (k + 0.5)) / sigma) - ndtr((j - (k + 0.5)) / sigma)`` depends on ``j - k``
    only (the half-integers are exact): ``2 * bins`` evaluations of ``ndtr`` instead of
    ``bins * (bins + 1)``, the same values.
    """
    d = np.arange(-bins, bins + 1, dtype=np.float64) - 0.5  # j - (k + 0.5) for j - k = d + 0.5
    cdf = ndtr(d / sigma)
    steps = cdf[1:] - cdf[:-1]  # steps[i]: j - k = i - bins
    # row j, column k: steps[j - k + bins]; row j is steps[j + 1 : j + 1 + bins] reversed
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(steps[1:], bins)[:, ::-1])


def _mode_noise_errors(sides) -> np.ndarray:
    """The mode's error due to the noise, first order in the smoothed histogram, exact in the noise.

    `_noise_error` moves each value by ``e`` to first order (``K'(u - e) ~ K'(u) - K''(u) e``),
    which overstates the peak's wander when the noise is as wide as the kernel (up to 2x on
    the nebula mosaics' overlaps: ``K'`` is bounded).  Here the variance of ``K'(u - e)`` over
    ``e ~ N(0, noise**2)`` is taken in closed form for the Gaussian kernel: ``var = sum_k c_k
    Var[K'(u_k - e)] / (sum_k c_k K''(u_k))**2``.  Per `ModeBroad`, in the set's units; 0
    where the smoothed histogram has no peak.  Sides of as many bins together (the sums are
    `numpy.vecdot`'s, each row's that of `numpy.dot`).
    """
    out = np.zeros(len(sides))
    for group in _by_bins(sides):
        bins = sides[group[0]].counts.size
        peak = np.array([sides[i].peak for i in group])[:, None]
        width = np.array([sides[i].width for i in group])[:, None]
        tau2 = np.array([(sides[i].noise / sides[i].h / sides[i].width) ** 2 for i in group])[:, None]
        u = (np.arange(bins) + 0.5 - peak) / width
        c = np.array([sides[i].counts for i in group], dtype=np.float64)
        curvature = np.vecdot(c, (u**2 - 1.0) * np.exp(-0.5 * u**2))
        a, b = 1.0 + tau2, 1.0 + 2.0 * tau2
        a15 = np.array([float(x) ** 1.5 for x in a[:, 0]])[:, None]
        root_b = np.array([math.sqrt(float(x)) for x in b[:, 0]])[:, None]
        mean = -u / a15 * np.exp(-0.5 * u**2 / a)  # E[K'(u - e)], K(v) = exp(-v**2 / 2)
        second = np.exp(-(u**2) / b) / root_b * (tau2 / b + (u / b) ** 2)  # E[K'(u - e)**2]
        var = np.vecdot(c, np.clip(second - mean**2, 0.0, None))
        for row, i in enumerate(group):
            if curvature[row] < 0:
                side = sides[i]
                out[i] = math.sqrt(float(var[row])) / -float(curvature[row]) * side.width * side.h
    return out


def _modes_of_histograms(counts: np.ndarray, sides) -> np.ndarray:
    """`_mode`'s peak (in bins from the minimum) of each drawn histogram, all at once.

    ``counts``: (sides, rows, bins), the rows of side ``s`` drawn from ``sides[s]`` (a
    `ModeBroad`: its ``n``, ``std``, ``h``, ``binwidth``).  Each side's kernels, widened as
    in `_mode`, the smoothing a product with each side's banded (Toeplitz) kernel matrix:
    every row's value that of its side alone, bit for bit.
    """
    nsides, rows, bins = counts.shape
    flat = counts.reshape(-1, bins)
    centres = np.arange(bins) + 0.5
    n = [side.n for side in sides]
    std = np.array([side.std for side in sides])[:, None]
    h = np.array([side.h for side in sides])[:, None]
    binwidth = [side.binwidth for side in sides]
    kernel = [_mode_kernel(n[s], binwidth[s]) for s in range(nsides)]
    found = np.full((nsides, rows), np.nan)  # the peak of the last accepted kernel
    active = np.ones((nsides, rows), dtype=bool)
    accepted: list = []  # (peaks, errors) of the kernels so far, per row
    offsets = np.array([-1, 0, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        while active.any():
            width = np.array([kernel[s] / binwidth[s] for s in range(nsides)])[:, None]
            smooth = counts @ _kernel_matrices(width[:, 0], bins)
            k = np.argmax(smooth, axis=2)
            inside = (k > 0) & (k < bins - 1)
            kk = np.minimum(np.maximum(k, 1), bins - 2)
            three = np.take_along_axis(smooth, kk[:, :, None] + offsets, axis=2)
            logs = np.log(three)
            denom = logs[..., 0] - 2.0 * logs[..., 1] + logs[..., 2]
            shift = np.where((three.min(axis=2) > 0) & (denom < 0),
                             0.5 * (logs[..., 0] - logs[..., 2]) / denom, 0.0)
            if not np.isfinite(shift).all():
                shift = np.nan_to_num(shift)
            peak = kk + 0.5 + shift
            u = centres - peak[:, :, None]
            z2 = (u / width[:, :, None]) ** 2
            g = np.exp(-0.5 * z2)
            slope = np.einsum("ij,ij->i", flat, ((u * g) ** 2).reshape(-1, bins)).reshape(nsides, rows)
            curvature = np.einsum("ij,ij->i", flat, ((z2 - 1.0) * g).reshape(-1, bins))
            curvature = curvature.reshape(nsides, rows)
            bins_err = np.where(curvature < 0, np.sqrt(np.clip(slope, 0, None)) / -curvature,
                                np.inf)
            gaussian = np.array([std[s, 0] * math.sqrt(_gaussian_mode_variance(kernel[s]) / n[s])
                                 for s in range(nsides)])[:, None]
            err = np.minimum(np.maximum(h * bins_err, gaussian), std)
            ok = active & inside
            for p, e in accepted:
                ok &= ~(np.abs(peak - p) * h > _MODE_STAY * e)
            found = np.where(ok, peak, found)
            accepted.append((peak, err))
            done = np.array([x >= _MODE_WIDEST for x in kernel])
            active = ok & ~done[:, None]
            kernel = [min(_MODE_WIDER * x, _MODE_WIDEST) for x in kernel]
    never = np.isnan(found)
    found[never] = np.argmax(counts[never], axis=1) + 0.5
    return found


def _kernel_matrices(widths: np.ndarray, bins: int) -> np.ndarray:
    """Per width (bins), the matrix that smooths a histogram (a row times it) as `_smoothed`.

    A Gaussian of that width truncated at `_MODE_REACH` widths, zero beyond the histogram's
    ends: ``out[s, j, i]`` is the kernel at ``i - j``, shape (widths, bins, bins).  The same
    weights as `_smoothed`'s; the sums in BLAS's order (equal to rounding).
    """
    distance = np.arange(1 - bins, bins)  # i - j
    reach = np.array([math.ceil(_MODE_REACH * w) for w in widths])[:, None]
    weights = np.exp(-0.5 * (distance / np.asarray(widths)[:, None]) ** 2)
    weights[np.abs(distance) > reach] = 0.0
    toeplitz = np.arange(bins)[None, :] - np.arange(bins)[:, None] + bins - 1
    return weights[:, toeplitz]


def _mode_draws(bins: int) -> np.ndarray:
    """``(_MODE_DRAWS, bins)`` fixed standard normal numbers for `_mode_noise_spreads`.

    Made once (grown when more are asked for: the first ones never change).
    """
    global _DRAWS
    if _DRAWS is None or _DRAWS.shape[0] < bins:
        made = np.random.default_rng(_MODE_DRAW_SEED).standard_normal((max(bins, 512),
                                                                          _MODE_DRAWS))
        made.flags.writeable = False
        _DRAWS = made
    return _DRAWS[:bins].T


def _clipped_set(values, params: StatParams, work: Workspace | None) -> _ClippedSet | None:
    """Steps 1 and 2 of `sky_statistic`: the final set, or None when it is empty."""
    x = np.asarray(values)
    if x.dtype.kind not in "fiu":
        raise TypeError(f"values must be an array of real numbers; got dtype {x.dtype}")
    x = x.reshape(-1)
    work = Workspace() if work is None else work
    base = _base_set(x, params.lower, params.upper, work)
    if base is None:
        return None
    clipped = _ClippedSet(*base[:-1], work)
    clipped.every = base[-1]  # every value of x is in the base set (`side_statistic`)
    return clipped if clipped.clip(params) else None


# -- the base set -----------------------------------------------------------------------------
def _base_set(x, lower, upper, work):
    """The finite values of `x` within [lower, upper], in float64 minus a rough centre.

    When the spread of a sample is beyond 2**+-400 the differences are divided by a power
    of two near it, ``scale`` (exact), so that their squares stay normal numbers.  Values
    farther than ``_HUGE`` (2**480, ~3e144) spreads from the centre (the median of a sample)
    are then dropped like non-finite ones: no float64 sum of squares could hold them.

    Returns ``(y, sum of y, sum of y**2, centre, spread, source, scale, every)``, with ``y``
    in units of ``scale``, or None when no value is usable.
    ``source`` is `x` when it is float32 and ``y == x - centre`` element by element (it is
    then cheaper to compare), else None; ``every``: whether every value of `x` is usable
    (no limits, all finite, none huge), known without a check of its own.
    """
    centre, spread = _rough_centre(x, lower, upper)
    every = True
    if centre is None:  # no usable value in the sample: mostly non-finite or out of limits
        every = False
        keep = _usable(x, lower, upper, np.empty(x.size, bool))
        x = x[keep]
        centre, spread = _rough_centre(x, lower, upper)
        if centre is None:
            return None
    y = work._floats(0, x.size)
    if x.dtype == np.float64:
        np.subtract(x, centre, out=y)
    else:  # cast, then subtract: the same values, twice as fast as one mixed-type subtract
        np.copyto(y, x, casting="unsafe")
        np.subtract(y, centre, out=y)
    scale = _scale_of(spread)
    if scale != 1.0:  # spreads beyond 2**+-400: squares would overflow or underflow
        np.ldexp(y, -math.frexp(scale)[1] + 1, out=y)  # y / scale, exact
        spread /= scale
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: nan; huge values: inf
        total = float(y.sum())
        sumsq = _sumsq(y)
    if lower is None and upper is None and sumsq <= _HUGE**2:
        # The common case: all finite, none huge, nothing to filter: no extra pass.
        source = x if x.dtype == np.float32 and scale == 1.0 else None
        return y, total, sumsq, centre, spread, source, scale, every
    keep = _usable(x, lower, upper, work._bools(0, x.size), work._bools(1, x.size))
    if not sumsq <= _HUGE**2:  # non-finite or huge values (a rare path: may allocate)
        with np.errstate(invalid="ignore"):
            keep &= np.abs(y) <= _HUGE
    kept = work._floats(1, int(np.count_nonzero(keep)))
    if kept.size == 0:
        return None
    np.compress(keep, y, out=kept)
    return kept, float(kept.sum()), _sumsq(kept), centre, spread, None, scale, False


def _usable(x, lower, upper, out, spare=None):
    """Mask of the finite values of `x` within [lower, upper], compared in float64."""
    if lower is None and upper is None:
        return np.isfinite(x, out=out)
    # NaN fails every comparison; an open side still has to reject +-inf.
    lo = -np.inf if lower is None else np.float64(lower)
    hi = np.inf if upper is None else np.float64(upper)
    lo_ok = (np.greater if lower is None else np.greater_equal)(x, lo, out=out)
    hi_ok = (np.less if upper is None else np.less_equal)(x, hi, out=spare)
    return np.logical_and(lo_ok, hi_ok, out=out)


def _scale_of(spread: float) -> float:
    """1, or a power of two near ``spread`` when that is beyond 2**+-400."""
    if spread > 2.0**400 or 0.0 < spread < 2.0**-400:
        return math.ldexp(1.0, math.frexp(spread)[1] - 1)
    return 1.0


def _rough_centre(x, lower, upper):
    """Median and MAD-based spread of a strided sample of the usable values, or (None, 0)."""
    s = x[:: max(1, x.size // _SAMPLE)].astype(np.float64)
    keep = _usable(s, lower, upper, np.empty(s.size, bool))
    if not keep.all():
        s = s[keep]
    if s.size == 0:
        return None, 0.0
    s.sort()  # (not a partition: which of -0.0 and 0.0 is the centre must not change)
    centre = float(s[s.size // 2])  # a data value: x - centre is exact for float32 data
    dev = np.abs(s - centre)
    dev.sort()
    return centre, 1.4826 * float(dev[dev.size // 2])


# -- sigma clipping ---------------------------------------------------------------------------
class _ClippedSet:
    """The base set ``y`` (values minus ``centre``) and its clipped subset.

    The subset is a *core*, the values of ``y`` inside ``[cl, ch]``, known by their count and
    sums only, plus a slice ``[i, j)`` of the *fringe*, all other values, kept sorted
    (``fsorted``) and also in base order (``fv``, at positions ``fidx``). While the clipping
    interval contains ``[cl, ch]``, a pass reads only the fringe; the set is then identified
    exactly by ``(epoch, i, j)``.
    """

    def __init__(self, y, total, sumsq, centre, spread, source, scale, work):
        self.y, self.centre, self.spread, self.source, self.work = y, centre, spread, source, work
        self.scale = scale  # y = (values - centre) / scale
        self.nb = y.size
        self.total = (float(y.size), total, sumsq)
        self.cl, self.ch = -math.inf, math.inf
        self.fidx = np.empty(0, np.intp)
        self.fv = self.fsorted = np.empty(0)
        self.i = self.j = 0
        self.core = self.total
        self.epoch = 0
        self.rough_centre = 0.0  # of the sample, in y units (y = values - centre)
        self._set_moments(*self.total)

    def _set_moments(self, n, s1, s2):
        self.n = int(n)
        self.mean = s1 / n if n else math.nan
        var = (s2 - s1 * self.mean) / (n - 1) if n > 1 else 0.0
        self.std = math.sqrt(var) if var > 0 else 0.0

    def clip(self, params: StatParams) -> bool:
        """Run the clipping passes; False when the set becomes empty.

        Stops at a fixed point, or at a cycle: when a pass gives a set seen before (with
        small ``lsigma``/``usigma`` the sets can alternate forever), the set becomes the union
        of the cycle's sets, every base value within the widest limits of the cycle.  A set is
        known by its moments: the same (n, mean, std) give the same limits, hence the same
        next set, whatever the core/fringe partition it was summed in.
        """
        seen = {_ALL: 0}  # state of each set -> the pass that gave it (0: the base set)
        limits = []  # (lo, hi, centre) of each pass
        for npass in range(1, params.nclip + 1):
            if self.std <= _TINY * abs(self.mean):
                break  # limits below float64 resolution: the set cannot change any more
            if abs(self.mean) > _RECENTRE * self.std:
                self._recentre()
            lo = self.mean - params.lsigma * self.std * (1.0 + _TIE)
            hi = self.mean + params.usigma * self.std * (1.0 + _TIE)
            if not (lo <= self.cl and self.ch <= hi):
                self._partition(lo, hi, params)
            key = self._select(lo, hi)
            if self.n == 0:
                return False
            limits.append((lo, hi, self.centre))
            key = key if key == _ALL else (self.n, self.mean, self.std, self.centre)
            if key in seen:  # a fixed point (the previous set) or a longer cycle
                cycle = limits[seen[key] :]  # the passes that gave the cycle's sets
                if len(cycle) > 1:  # their limits, moved to the current centre
                    low = min(lo + (c - self.centre) / self.scale for lo, _, c in cycle)
                    high = max(hi + (c - self.centre) / self.scale for _, hi, c in cycle)
                    self._select(low, high)
                break
            seen[key] = npass
        if self.std > 0 and abs(self.mean) > _RECENTRE * self.std:
            self._recentre()
        return True

    def _partition(self, lo, hi, params):
        """Split the base set into a core inside [lo, hi] and the fringe (all the rest)."""
        # The core must stay inside all later limits, mean' -/+ k*std': with a half-width of
        # 0.75 k*std the std may shrink by ~25% (less any shift of the mean) before a pass has
        # to re-partition, while the fringe stays small (Gaussian beyond 3 sigma: 0.27%). The
        # first partition centres on the robust sample estimates, so that the bright sources
        # that inflate the first std do not make it too wide.
        centre, spread = self.mean, self.std
        if self.epoch == 0 and self.spread > 0:
            centre, spread = self.rough_centre, self.spread
        cl = max(lo, centre - _CORE * params.lsigma * spread)
        ch = min(hi, centre + _CORE * params.usigma * spread)
        if not cl <= ch:
            cl = max(lo, self.mean - _CORE * params.lsigma * self.std)
            ch = min(hi, self.mean + _CORE * params.usigma * self.std)
        y, n = self.y, self.nb
        values, bl, bh = y, cl, ch
        if self.source is not None:  # float32 compares read half the memory
            values, bl, bh, cl, ch = self.source, *_float32_bounds(cl, ch, self.centre)
        outside = np.less(values, bl, out=self.work._bools(0, n))
        np.logical_or(outside, np.greater(values, bh, out=self.work._bools(1, n)), out=outside)
        self.fidx = np.flatnonzero(outside)
        self.fv = y[self.fidx]
        self.fsorted = np.sort(self.fv)
        self.cl, self.ch, self.epoch = cl, ch, self.epoch + 1
        self.core = self._core_sums()

    def _core_sums(self):
        fv = self.fv
        f1, f2 = float(fv.sum()), _sumsq(fv)
        n, s1, s2 = self.total
        if f2 <= _EXACT_SUMS * (s2 - f2):  # subtraction loses < ~1e-10 relative
            return n - fv.size, s1 - f1, s2 - f2
        y = self.y  # bright fringe: sum the core directly, fringe zeroed for a moment
        y[self.fidx] = 0.0
        core = (float(n - fv.size), float(y.sum()), _sumsq(y))
        y[self.fidx] = fv
        return core

    def _select(self, lo, hi):
        """Set = core + fringe values in [lo, hi]; returns a key identifying the set."""
        fs = self.fsorted
        self.i, self.j = int(fs.searchsorted(lo, "left")), int(fs.searchsorted(hi, "right"))
        self._set_moments_of_selection()
        return _ALL if self.n == self.nb else (self.epoch, self.i, self.j)

    def _set_moments_of_selection(self):
        part = self.fsorted[self.i : self.j]
        n, s1, s2 = self.core
        self._set_moments(n + part.size, s1 + float(part.sum()), s2 + _sumsq(part))

    def _recentre(self):
        """Move the centre to the mean, so that moments about it keep full precision."""
        shift = self.mean
        y = self.y
        y -= shift  # exact for values within a factor 2 of the shift (Sterbenz)
        self.fv = self.fv - shift
        self.fsorted = self.fsorted - shift  # monotonic: stays sorted, same slice
        self.centre += shift * self.scale
        self.rough_centre -= shift
        self.source = None  # y no longer equals source - centre exactly
        self.cl, self.ch = self.cl - shift, self.ch - shift
        self.total = (float(self.nb), float(y.sum()), _sumsq(y))
        self.core = self._core_sums()
        self._set_moments_of_selection()

    # -- the final set ------------------------------------------------------------------------
    def value_range(self):
        """Exact (min, max) of the set."""
        part = self.fsorted[self.i : self.j]
        if self.core[0] == 0:
            return float(part[0]), float(part[-1])
        # Fringe values lie outside [cl, ch], the core inside.
        lo = float(part[0]) if part.size and part[0] <= self.cl else None
        hi = float(part[-1]) if part.size and part[-1] >= self.ch else None
        if lo is None or hi is None:
            cmin, cmax = self._core_range()
            lo = cmin if lo is None else lo
            hi = cmax if hi is None else hi
        return lo, hi

    def _core_range(self):
        y, idx, fv = self.y, self.fidx, self.fv
        if idx.size == 0:
            return float(y.min()), float(y.max())
        y[idx] = np.inf
        cmin = float(y.min())
        y[idx] = -np.inf
        cmax = float(y.max())
        y[idx] = fv
        return cmin, cmax

    def _rejected(self):
        """Positions in ``y`` of the fringe values outside the set."""
        if self.i == self.j:
            return self.fidx
        fv, fs = self.fv, self.fsorted
        return self.fidx[(fv < fs[self.i]) | (fv > fs[self.j - 1])]

    def counts(self, ymin, ymax, h, *, keep_values=False):
        """Histogram of the set: bins of width `h` from `ymin`.

        Without `keep_values` it overwrites the values (faster): the set can then serve no
        further statistic.

        In chunks, so that the bin numbers need no buffer as large as the values: a
        transient workspace then stays small enough to be reused by the allocator rather than
        page-faulted afresh on every call.
        """
        scale = _bin_scale(h)
        nbins = int((ymax - ymin) * scale) + 1
        y = self.y
        if not keep_values:
            self.y = None
            np.subtract(y, ymin, out=y)
        rejected = self._rejected()  # sorted positions
        edges = np.searchsorted(rejected, np.arange(0, y.size + _CHUNK, _CHUNK))
        m = nbins + 1  # the last bin collects the rejected values
        counts = np.zeros(m, np.intp)
        pairs = None  # counts of pairs of bins (first half of a chunk, second half)
        with np.errstate(invalid="ignore"):  # far outliers overflow the cast; reset below
            for i, start in enumerate(range(0, y.size, _CHUNK)):
                t = y[start : start + _CHUNK]
                if keep_values:
                    t = np.subtract(t, ymin, out=self.work._floats(2, t.size))
                if m * m > t.size // _PAIR_RATIO:
                    idx = self.work._ints(t.size)
                    np.multiply(t, scale, out=idx, casting="unsafe")  # truncation: floor (t >= 0)
                    idx[rejected[edges[i] : edges[i + 1]] - start] = nbins
                    counts += np.bincount(idx, minlength=m)
                    continue
                # Few bins: count pairs of values (m * m bins) with half as many increments
                # and far fewer repeats of one bin in a row (each stalls the next increment);
                # bin numbers in int32 (bins <= 2**20; converting to int32 is the cheaper cast).
                idx = self.work._int32s(t.size)
                np.multiply(t, scale, out=idx, casting="unsafe")
                idx[rejected[edges[i] : edges[i + 1]] - start] = nbins
                half = t.size // 2
                pair = np.multiply(idx[:half], m, out=self.work._int32s2(half))
                np.add(pair, idx[half : 2 * half], out=pair)
                wide = self.work._ints2(half)
                np.copyto(wide, pair)
                found = np.bincount(wide, minlength=m * m)
                pairs = found if pairs is None else np.add(pairs, found, out=pairs)
                if t.size % 2:
                    counts[idx[-1]] += 1
        if pairs is not None:
            square = pairs.reshape(m, m)
            counts += square.sum(axis=0)
            counts += square.sum(axis=1)
        return counts[:nbins]


# -- the statistics of the final set ----------------------------------------------------------
def _constant_or_none(s: _ClippedSet):
    """(min, max, constant value or None) of the set."""
    ymin, ymax = s.value_range()
    return ymin, ymax, (ymin if ymin == ymax or s.std == 0 else None)


def _mean(s: _ClippedSet, params: StatParams):
    err = s.std / math.sqrt(s.n)
    if s.std <= _TINY * abs(s.mean):  # maybe constant: then exactly the constant
        ymin, ymax = s.value_range()
        if ymin == ymax:
            return ymin, err
    return s.mean, err


def _median(s: _ClippedSet, params: StatParams):
    err = _SQRT_HALF_PI * s.std / math.sqrt(s.n)
    ymin, ymax, const = _constant_or_none(s)
    if const is not None:
        return const, err
    # Locate the middle rank(s) in a fine histogram, then select among those bins' values.
    h = (ymax - ymin) / max(1, min(_MEDIAN_BINS, s.n // 32))
    counts = s.counts(ymin, ymax, h, keep_values=True)
    cum = np.cumsum(counts)
    r1, r2 = (s.n - 1) // 2, s.n // 2
    k1, k2 = (int(k) for k in np.searchsorted(cum, [r1, r2], side="right"))
    before = int(cum[k1 - 1]) if k1 > 0 else 0
    # The set is every base value in [ymin, ymax]. Candidates by value, one bin of margin for
    # rounding, then exactly those whose bin (computed as in `counts`) is k1..k2.
    lo, hi = max(ymin, ymin + (k1 - 1) * h), min(ymax, ymin + (k2 + 2) * h)
    near = np.greater_equal(s.y, lo, out=s.work._bools(0, s.nb))
    near &= np.less_equal(s.y, hi, out=s.work._bools(1, s.nb))
    vals = s.y[near]
    with np.errstate(invalid="ignore"):
        bins = ((vals - ymin) * _bin_scale(h)).astype(np.intp)
    vals = vals[(bins >= k1) & (bins <= k2)]
    vals.partition([r1 - before, r2 - before])
    value = 0.5 * (float(vals[r1 - before]) + float(vals[r2 - before]))
    s.median_hist = (ymin, h, counts, value)  # for `_noise_error`
    return value, err


def _too_coarse(s: _ClippedSet, binwidth: float) -> bool:
    """Whether bins of ``binwidth`` std span the set's range in fewer than ``_MIN_BINS``.

    A histogram of one or two bins places no peak and no median: the centre of a bin wider
    than the data lies outside them (data in [96, 104] with binwidth=1e6 gave a mode of 5e5).
    """
    if not s.std > 0:
        return False  # constant: every statistic gives the constant
    if 2.0 * math.sqrt((s.n - 1) / s.n) >= _MIN_BINS * binwidth:
        return False  # range >= that many std for any n values: no need to look (binwidth <= 0.47)
    ymin, ymax = s.value_range()
    return ymax - ymin < _MIN_BINS * binwidth * s.std


def _histogram(s: _ClippedSet, params: StatParams):
    """(min, bin width, counts) of the set, or (const, None, None) for constant data.

    Raises
    ------
    StatisticError
        When the histogram would need more than ``_MAX_BINS`` bins (``binwidth`` too small
        for the spread of the values): the message names ``binwidth`` and the way out.
    """
    ymin, ymax, const = _constant_or_none(s)
    if const is not None:
        return const, None, None
    h = params.binwidth * s.std
    _check_bins(ymax - ymin, s, params.binwidth)
    counts = s.counts(ymin, ymax, h)
    return ymin, h, counts


def _check_bins(span: float, s: _ClippedSet, binwidth: float) -> None:
    """Refuse a histogram of more than ``_MAX_BINS`` bins (it would take bins * 8 bytes)."""
    nbins = span / (binwidth * s.std) + 1
    if nbins > _MAX_BINS:
        smallest = span / (s.std * (_MAX_BINS - 1))
        raise StatisticError(
            f"binwidth={binwidth:g} (standard deviations) needs {nbins:.3g} histogram bins for "
            f"{s.n} values spanning {span / s.std:.4g} standard deviations; at most {_MAX_BINS} "
            f"are allowed. Use binwidth >= {smallest:.3g} (the default is 0.1), or clip the "
            "values (nclip, lsigma, usigma, lower, upper)"
        )


def _mode(s: _ClippedSet, params: StatParams):
    ymin, h, c = _histogram(s, params)
    if h is None:
        return ymin, 0.0
    kernels = [_mode_kernel(s.n, params.binwidth)]  # in units of the std, widening
    while kernels[-1] < _MODE_WIDEST:
        kernels.append(min(_MODE_WIDER * kernels[-1], _MODE_WIDEST))
    chosen = []  # (peak in bins, error in data units, kernel) accepted, narrowest first
    moves = []  # each wider kernel's move, over the largest allowed (1: the limit)
    tried = []  # (kernel, peak in bins) of every kernel whose peak was found (`mode_ladder`)
    counts = c.astype(np.float64)
    centres = np.arange(c.size) + 0.5  # of the bins, in bins from the minimum
    fits = _smoothed_peaks(counts, [k / params.binwidth for k in kernels], h, s.std, s.n,
                           kernels, centres)
    for kernel, (peak, err) in zip(kernels, fits):
        if peak is not None:
            tried.append((kernel, peak))
        if peak is None or any(abs(peak - p) * h > _MODE_STAY * e for p, e, _ in chosen):
            if peak is not None:
                moves.append(max(abs(peak - p) * h / (_MODE_STAY * e) for p, e, _ in chosen))
            break  # the peak moved (an asymmetric top) or vanished: keep the narrower kernel
        if chosen:
            moves.append(max(abs(peak - p) * h / (_MODE_STAY * e) for p, e, _ in chosen))
        chosen.append((peak, err, kernel))
    if not chosen:  # the peak is at an end of the histogram: no curvature to refine it with
        return ymin + (int(np.argmax(c)) + 0.5) * h, s.std
    peak, err, kernel = chosen[-1]
    s.mode_fit = (c, peak, kernel / params.binwidth)  # for `_noise_error`
    s.mode_bin, s.mode_binwidth = h, params.binwidth  # for `_mode_noise_spreads`
    # how near the closest decision of the widening was to going the other way (`_mode_noise_spreads`)
    s.mode_margin = min((abs(math.log(max(r, 1e-300))) for r in moves), default=math.inf)
    # the peak of every kernel tried, the rejected wider one too (`side_statistic`'s ladder)
    s.mode_ladder = tuple((k * s.std, ymin + p * h) for k, p in tried)
    return ymin + peak * h, err


def _smoothed_peak(c, width, h, std, n, kernel, centres):
    """Peak of the histogram smoothed by a Gaussian of ``width`` bins, and its error.

    ``c``: the counts (float64), ``centres``: ``arange(c.size) + 0.5``.  The peak in bins
    from the set's minimum, the error in data units; (None, None) when the peak is at an
    end of the histogram.
    """
    smooth = _smoothed(c, width)
    k = int(smooth.argmax())
    if not 0 < k < c.size - 1:
        return None, None
    peak = k + 0.5 + _log_parabola_vertex(smooth[k - 1 : k + 2])
    gaussian = std * math.sqrt(_gaussian_mode_variance(kernel) / n)
    return peak, min(max(h * _mode_error_bins(c, peak, width, centres), gaussian), std)


def _smoothed_peaks(c, widths, h, std, n, kernels, centres):
    """`_smoothed_peak` with each of ``widths`` (bins; ``kernels``: the same in std), in order.

    Histograms of at most `_PEAKS_TOGETHER` bins: all the kernels at once, each value that of
    `_smoothed_peak` alone, bit for bit (the kernels' weights and the error's terms element
    by element, the smoothing `numpy.convolve` per kernel, the error's sums `numpy.vecdot`,
    each row that of `numpy.dot`): a few calls instead of ~25 per kernel.  (The widening
    rule of `_mode` rarely stops before its widest kernel.)  Larger ones: one kernel at a
    time, as the rule asks for them (an iterator).
    """
    m = c.size
    if m > _PEAKS_TOGETHER or m < 3 or not hasattr(np, "vecdot"):
        return (_smoothed_peak(c, w, h, std, n, k, centres) for w, k in zip(widths, kernels))
    width = np.array(widths)
    reach = [math.ceil(_MODE_REACH * w) for w in widths]
    far = max(reach)
    weights = np.arange(-far, far + 1) / width[:, None]  # as `_smoothed`, row by row
    weights **= 2
    weights *= -0.5
    np.exp(weights, out=weights)
    smooth = np.empty((len(widths), m))
    for i, r in enumerate(reach):
        smooth[i] = np.convolve(c, weights[i, far - r : far + r + 1])[r : r + m]
    top = smooth.argmax(axis=1).tolist()
    found = [(None, None)] * len(widths)
    inside = [i for i, k in enumerate(top) if 0 < k < m - 1]
    if not inside:
        return found
    rows = np.array(inside)
    three = smooth[rows[:, None], np.array([top[i] for i in inside])[:, None] + _THREE]
    with np.errstate(divide="ignore", invalid="ignore"):  # (rows with a value <= 0: not used)
        logs = np.log(three).tolist()
    peaks = [top[i] + 0.5 + _parabola_vertex(t, lg) for i, t, lg in zip(inside, three.tolist(), logs)]
    u = centres - np.array(peaks)[:, None]  # `_mode_error_bins`, row by row
    z2 = u / width[rows][:, None]
    z2 **= 2
    g = z2 * -0.5
    np.exp(g, out=g)
    u *= g
    u **= 2
    slope = np.vecdot(c, u).tolist()
    z2 -= 1.0
    z2 *= g
    curvature = np.vecdot(c, z2).tolist()
    for i, peak, a, b in zip(inside, peaks, slope, curvature):
        bins = math.sqrt(a) / -b if b < 0 else math.inf
        gaussian = std * math.sqrt(_gaussian_mode_variance(kernels[i]) / n)
        found[i] = (peak, min(max(h * bins, gaussian), std))
    return found


_PEAKS_TOGETHER = 4096  # histograms of at most this many bins: `_smoothed_peaks` all at once
_THREE = np.array([-1, 0, 1])


def _parabola_vertex(top: list, logs: list) -> float:
    """`_log_parabola_vertex` of three values given with their logarithms."""
    a, b, c = top
    if a <= 0 or b <= 0 or c <= 0:
        return 0.0
    left, mid, right = logs
    denom = left - 2.0 * mid + right
    return float(0.5 * (left - right) / denom) if denom < 0 else 0.0


def _mode_kernel(n: int, binwidth: float) -> float:
    """Width (Gaussian sigma, in std) of the first kernel of ``mode`` for ``n`` values.

    ``5 * binwidth * (1000 / n)**(1/7)``, but never narrower than one bin nor than the
    statistical resolution ``(5.66 / n)**(1/5)`` (the width at which the peak's own error for
    Gaussian noise is a quarter of the kernel).
    """
    resolution = (_MODE_RESOLUTION / n) ** 0.2
    return max(binwidth, _MODE_KERNEL * binwidth * (_MODE_N / n) ** (1.0 / 7.0), resolution)


def _gaussian_mode_variance(kernel: float) -> float:
    """N times the variance of the peak of a kernel density estimate of a unit Gaussian.

    To first order, ``E[K'(X)**2] / f''(0)**2`` for a Gaussian kernel of sigma ``kernel``
    (``f`` the Gaussian smoothed by the kernel), in closed form.
    """
    half = 0.5 * kernel**2
    expect = (half / (half + 1.0)) / (2.0 * kernel**5 * math.sqrt(math.pi)
                                      * math.sqrt(2.0 * math.pi * (half + 1.0)))
    curvature2 = 1.0 / (2.0 * math.pi * (1.0 + kernel**2) ** 3)
    return expect / curvature2


def _smoothed(counts: np.ndarray, width: float) -> np.ndarray:
    """``counts`` (float64) convolved with a Gaussian of ``width`` bins (zero beyond the ends)."""
    reach = math.ceil(_MODE_REACH * width)
    kernel = np.arange(-reach, reach + 1) / width
    kernel **= 2
    kernel *= -0.5
    np.exp(kernel, out=kernel)
    return np.convolve(counts, kernel)[reach : reach + counts.size]


def _log_parabola_vertex(top: np.ndarray) -> float:
    """Vertex of the parabola through the logarithms of three values, the middle the largest.

    The offset in bins from the middle one (within +-1/2): exact for a Gaussian peak.
    """
    a, b, c = top.tolist()
    if a <= 0 or b <= 0 or c <= 0:  # cannot happen near the peak of a Gaussian-smoothed histogram
        return 0.0
    left, mid, right = np.log(top).tolist()
    denom = left - 2.0 * mid + right
    return float(0.5 * (left - right) / denom) if denom < 0 else 0.0


def _mode_error_bins(counts, peak: float, width: float, centres=None) -> float:
    """Standard error (bins) of the peak of the smoothed histogram, from the data themselves.

    The peak solves ``f'(m) = 0`` for the kernel estimate ``f``; to first order its error is
    ``f'(m)``'s noise over ``f''(m)``: ``var = sum c K'(u)**2 / (sum c K''(u))**2`` with
    ``u`` the bin centres' distances to the peak and ``K`` the kernel (constants cancel).
    """
    u = (np.arange(counts.size) + 0.5 if centres is None else centres) - peak
    z2 = u / width
    z2 **= 2
    g = z2 * -0.5
    np.exp(g, out=g)
    u *= g
    u **= 2
    slope = np.dot(counts, u)
    z2 -= 1.0
    z2 *= g
    curvature = np.dot(counts, z2)
    if not curvature < 0:  # no peak in the smoothed histogram
        return math.inf
    return math.sqrt(slope) / -curvature


def _midpt(s: _ClippedSet, params: StatParams):
    err = _SQRT_HALF_PI * s.std / math.sqrt(s.n)
    ymin, h, c = _histogram(s, params)
    if h is None:
        return ymin, err
    cum = np.cumsum(c)
    half = 0.5 * s.n
    k = int(np.searchsorted(cum, half, side="left"))
    before = float(cum[k - 1]) if k > 0 else 0.0
    value = ymin + (k + (half - before) / float(c[k])) * h
    s.median_hist = (ymin, h, c, value)  # for `_noise_error`
    return value, err


def _bin_scale(h: float) -> float:
    """Multiplier from a distance above the minimum to a bin number (before the floor).

    Bins are ``h`` wide, and a value on an edge in exact arithmetic belongs to the bin above
    it whatever the rounding (see `sky_statistic`, "Ties").
    """
    return (1.0 + _TIE) / h


def _float32_bounds(cl: float, ch: float, centre: float):
    """float32 bounds ``xl, xh`` with ``[xl - centre, xh - centre]`` inside ``[cl, ch]``.

    In float64 arithmetic, as ``y`` was computed; also returns those two float64 values.
    """
    xl, xh = (np.float32(min(max(v + centre, -_FLOAT32_MAX), _FLOAT32_MAX)) for v in (cl, ch))
    while float(xl) - centre < cl:
        xl = np.nextafter(xl, _F32_UP)
    while float(xh) - centre > ch:
        xh = np.nextafter(xh, _F32_DOWN)
    return xl, xh, float(xl) - centre, float(xh) - centre


def _sumsq(a: np.ndarray) -> float:
    """Sum of squares, by BLAS dot products on rows short enough to stay single-threaded.

    OpenBLAS spreads one ``ddot`` over several threads above 10000 elements; when the other
    core is busy, waking a sleeping helper thread stalls the call for ~8 ms (measured).
    """
    if a.size <= _SERIAL_DOT:
        return float(np.dot(a, a))
    k = a.size - a.size % _SERIAL_DOT
    rows = a[:k].reshape(-1, _SERIAL_DOT)
    tail = a[k:]
    return float(_rowdot(rows, rows).sum() + np.dot(tail, tail))


def _rowdot_einsum(a, b):
    return np.einsum("ij,ij->i", a, b)


_rowdot = getattr(np, "vecdot", _rowdot_einsum)  # numpy < 2 has no vecdot

_STATISTICS = {"mean": _mean, "median": _median, "mode": _mode, "midpt": _midpt}


def pixel_noise(values: np.ndarray, lower=None, upper=None) -> float:
    """The pixel noise of values in row order, from differences of neighbours.

    ``1.4826 * MAD / sqrt(2)`` of the differences of consecutive usable values (finite, within
    ``[lower, upper]``): pairs 0-1, 2-3, ... or, for more than ``2 * _NOISE_PAIRS`` of them,
    every k-th such pair, k the largest that leaves at least `_NOISE_PAIRS` (its cost does
    not grow with the values' number).  A smooth scene cancels in them and the
    median ignores stars and row ends.  NaN for fewer than two usable values.  Only the
    pairs used are converted to float64, so beyond one finiteness check the cost is that of
    the pairs.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ramp = np.linspace(0.0, 300.0, 20_000)  # a scene 300 sigma across
    >>> round(pixel_noise(ramp + rng.standard_normal(20_000)), 1)
    1.0
    """
    x = np.asarray(values).reshape(-1)
    if x.dtype.kind not in "fiu":
        x = np.asarray(x, dtype=np.float64)
    if lower is None and upper is None:
        usable = None if x.dtype.kind in "iu" or np.isfinite(x).all() else np.isfinite(x)
    else:
        with np.errstate(invalid="ignore"):  # compared in float64, as the values' own
            usable = _usable(x, None if lower is None else np.float64(lower),
                             None if upper is None else np.float64(upper),
                             np.empty(x.size, bool))
    if usable is not None and not usable.all():
        x = x[usable]
    return neighbour_noise(x)


def neighbour_noise(x: np.ndarray, *, work: Workspace | None = None) -> float:
    """`pixel_noise` of values known to be all usable (finite, within the limits): no check.

    The same value; with ``work`` its scratch arrays are reused (no fresh memory).

    Examples
    --------
    >>> x = np.random.default_rng(2).standard_normal(10_000)
    >>> neighbour_noise(x, work=Workspace()) == pixel_noise(x)
    True
    """
    half = x.size // 2
    if half < 1:
        return math.nan
    stride = 2 * max(1, half // _NOISE_PAIRS)
    count = (2 * half - 1) // stride + 1
    buffers = Workspace() if work is None else work
    d = buffers.floats(_NOISE_SLOT, count)
    first = buffers.floats(_NOISE_SLOT + 1, count)
    np.copyto(d, x[1 : 2 * half : stride], casting="unsafe")  # cast, then subtract: as
    np.copyto(first, x[0 : 2 * half : stride], casting="unsafe")  # one float64 subtract
    np.subtract(d, first, out=d)
    deviation = np.subtract(d, median_of(d, buffers.floats(_NOISE_SLOT + 1, count)), out=d)
    np.abs(deviation, out=deviation)
    return float(1.4826 * median_of(deviation, deviation) / math.sqrt(2.0))


def median_of(a: np.ndarray, out: np.ndarray) -> float:
    """`numpy.median` of a 1-D float64 array (no NaN), partitioned in ``out`` (may be ``a``).

    The same value as `numpy.median`, without its copies (no fresh memory).

    Examples
    --------
    >>> a = np.array([3.0, 1.0, 4.0, 1.5])
    >>> median_of(a, np.empty(4)) == float(np.median(a))
    True
    """
    if out is not a:
        out[...] = a
    k = a.size // 2
    out.partition(k)  # one selection: the value below is the largest of those before it
    if a.size % 2:
        return float(out[k])
    return float((out[:k].max() + out[k]) / 2.0)
