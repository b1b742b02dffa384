"""Stage 2: sky statistics of images over their overlaps and over all their pixels.

The work splits into independent tasks, one per image (or, for images already in memory,
one per pixel set): `measure_image` is a plain function of one image's loader, the pixel
sets to measure and the statistics parameters; `measure_differences` (for
``compare="differences"``) one of an image's loader and the pairs it is compared in (the
other image's loader, the pixels, the map between the two).  A task reads the pixels and the
mask when it runs, writes nothing shared and returns small results, so it can run on a thread, in another
process or on a Dask worker (its arguments pickle: paths travel, arrays do not).
`measure_batch` runs a few of them (the unit sent to a thread, a worker process or a Dask
worker: see `_execute`), with the scratch buffers of the thread it runs on.  The statistics
of one image over several pixel sets are then combined into the statistics of inputs
(`input_pair_stats`, `lowest`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from ._validate import check_pixels
from .differences import DifferenceBuffers, PixelMap, interpolation_inflation, pair_differences
from .geometry import GatherBuffers, Runs
from .loaders import ImageLoader
from .params import StatParams
from .stats import SkyStat, StatisticError, Workspace, pixel_noise, sky_statistic

__all__ = [
    "NO_STAT",
    "Comparison",
    "DifferenceTask",
    "PairDifference",
    "PairStats",
    "Region",
    "Scratch",
    "Task",
    "combine",
    "input_pair_differences",
    "input_pair_stats",
    "load_pixels",
    "lowest",
    "measure_batch",
    "measure_differences",
    "measure_image",
    "thread_scratch",
]

#: The statistic of an empty pixel set.
NO_STAT = SkyStat(math.nan, 0, math.nan)

#: A pixel set of one image: None for all its pixels, else the union of these runs.
Region = tuple[Runs, ...] | None




class Scratch:
    """Reusable buffers of one worker thread: gathered pixels, clipping, differences."""

    def __init__(self) -> None:
        self.buffers = GatherBuffers()
        self.work = Workspace()
        self.differences = DifferenceBuffers()


@dataclass(frozen=True, eq=False)
class Task:
    """The arguments of one `measure_image` call, and its size (pixels) for scheduling.

    ``label`` names the image in error messages (e.g. ``"images[3]"``).
    """

    loader: ImageLoader
    regions: tuple[Region, ...]
    size: int
    label: str = ""

    @property
    def units(self) -> int:
        """Statistics the task computes (for progress)."""
        return len(self.regions)

    def run(self, params: StatParams, scratch: Scratch | None = None) -> list[SkyStat]:
        """`measure_image` of this task."""
        return measure_image(self.loader, self.regions, params, scratch)


@dataclass(frozen=True, eq=False)
class Comparison:
    """One pair of a `measure_differences` task: the other image and where to compare.

    Attributes
    ----------
    loader : ImageLoader
        The other image (interpolated).
    runs : Runs
        The pixels of the task's image inside the other one.
    pmap : PixelMap
        Where those pixels fall in the other image.
    """

    loader: ImageLoader
    runs: Runs
    pmap: PixelMap


@dataclass(frozen=True, eq=False)
class DifferenceTask:
    """The arguments of one `measure_differences` call, and its size (pixels).

    ``label`` names the image whose pixels are compared, in error messages.
    """

    loader: ImageLoader
    comparisons: tuple[Comparison, ...]
    size: int
    label: str = ""

    @property
    def units(self) -> int:
        """Statistics the task computes (for progress)."""
        return len(self.comparisons)

    def run(self, params: StatParams, scratch: Scratch | None = None) -> list[SkyStat]:
        """`measure_differences` of this task."""
        return measure_differences(self.loader, self.comparisons, params, scratch)


def load_pixels(loader: ImageLoader) -> tuple[np.ndarray, np.ndarray | None]:
    """An image's pixels and mask, read now; checked unless they were checked in memory."""
    data, mask = loader.data(), loader.mask()
    if not getattr(loader, "in_memory", False):
        data, mask = check_pixels(data, mask, tuple(loader.shape), loader)
    return data, mask


def measure_image(
    loader: ImageLoader,
    regions: Sequence[Region],
    params: StatParams,
    scratch: Scratch | None = None,
) -> list[SkyStat]:
    """The statistic of one image over each of ``regions``: one stage-2 task.

    The pixels and the mask are read once, used for every region and released on return.
    Non-finite and masked pixels are ignored.

    Parameters
    ----------
    loader : ImageLoader
        The image (`ArrayImage` for pixels in memory).
    regions : sequence of Region
        None for all the image's pixels, else a tuple of `Runs` whose union is measured.
    params : StatParams
        The statistic, limits and clipping.
    scratch : Scratch, optional
        Buffers reused across the tasks of one thread.

    Returns
    -------
    list of SkyStat
        One per region.

    Raises
    ------
    TypeError, ValueError
        When a loader's pixels or mask are not what it promised (real 2-D array of its
        shape, boolean mask).

    Examples
    --------
    >>> from skymatch_nb_ui.engine.geometry import Runs
    >>> from skymatch_nb_ui.engine.loaders import ArrayImage
    >>> image = ArrayImage(np.arange(12.0).reshape(3, 4))
    >>> left = Runs(np.array([0, 1, 2]), np.array([0, 0, 0]), np.array([2, 2, 2]))
    >>> [s.value for s in measure_image(image, [None, (left,)], StatParams(skystat="mean"))]
    [5.5, 4.5]
    """
    scratch = thread_scratch() if scratch is None else scratch
    image, mask = load_pixels(loader)
    return [_region_statistic(image, mask, region, params, scratch) for region in regions]


def measure_batch(tasks: Sequence[Task | DifferenceTask], params: StatParams) -> list[list[SkyStat]]:
    """`measure_image` (a `Task`) or `measure_differences` (a `DifferenceTask`) of each task.

    The unit of work sent to a thread, a worker process or a Dask worker: the tasks' loaders
    travel, their pixels are read there.
    """
    return [_run_task(t, params, None) for t in tasks]


_LOCAL = threading.local()


def thread_scratch() -> Scratch:
    """The scratch buffers of the calling thread (made on first use, kept while it lives)."""
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = Scratch()
    return scratch


def _region_statistic(image, mask, region: Region, params: StatParams, scratch: Scratch) -> SkyStat:
    """The statistic of an image over a region.

    Over all the pixels (``region`` None) the error is the statistic's own.  Over an overlap
    (one side of a pair in ``compare="levels"``) it is the error due to the pixel noise
    alone (`pixel_noise`, and ``noise`` in `sky_statistic`): the two sides of a pair see the
    same scene, which cancels in their difference, so the spread of the scene (a nebula
    across the overlap) is not an error of that difference, while the spread of the values
    counts it.
    """
    if region is None:
        values = np.asarray(image).reshape(-1)
        if mask is not None:
            values = values[np.asarray(mask).reshape(-1)]
        return sky_statistic(values, params, work=scratch.work)
    runs = Runs.union(list(region), image.shape)
    if not runs:
        return NO_STAT
    values = runs.gather(image, scratch.buffers)
    if mask is not None:
        values = values[runs.gather(mask, scratch.buffers)]
    noise = pixel_noise(values, params.lower, params.upper)
    return sky_statistic(values, params, work=scratch.work, noise=noise)


def measure_differences(
    loader: ImageLoader,
    comparisons: Sequence[Comparison],
    params: StatParams,
    scratch: Scratch | None = None,
) -> list[SkyStat]:
    """The statistic of the pixel differences of one image with each of several others.

    At most two images are held at a time: this one, and the other of the current comparison.

    One stage-2 task of ``compare="differences"``: for each comparison, the values of this
    image at its pixels inside the other minus the other image interpolated there
    (`differences.pair_differences`; masks, non-finite pixels and ``lower``/``upper`` apply to
    both sides), then their clipped statistic.  The error is the statistic's own times the
    inflation by the interpolation's correlations (`differences.interpolation_inflation`).

    Parameters
    ----------
    loader : ImageLoader
        The image whose pixels are compared (read once).
    comparisons : sequence of Comparison
        The other images, the pixels and the maps.
    params : StatParams
        The statistic, limits and clipping.
    scratch : Scratch, optional
        Buffers reused across the tasks of one thread.

    Returns
    -------
    list of PairDifference
        One per comparison: this image's sky minus the other's.
    """
    scratch = thread_scratch() if scratch is None else scratch
    image, mask = load_pixels(loader)
    of_differences = params.replace(lower=None, upper=None)  # limits apply to the pixels
    results = []
    for c in comparisons:
        other, other_mask = load_pixels(c.loader)
        d, w2 = pair_differences(image, mask, other, other_mask, c.runs, c.pmap,
                                 lower=params.lower, upper=params.upper,
                                 buffers=scratch.differences)
        stat = sky_statistic(_finite(d, scratch.differences), of_differences, work=scratch.work)
        inflation = interpolation_inflation(w2, c.pmap.area_ratio, params.skystat)
        usable = (stat.npix, stat.npix)
        if stat.npix == 0:  # say which side has nothing to compare
            usable = (_usable_count(image, mask, c.runs, params), 0)
        results.append(PairDifference(stat.value, stat.npix, stat.err * inflation, *usable))
        del other, other_mask  # released before the next one is read: two images at a time
    return results


def _finite(d: np.ndarray, buffers: DifferenceBuffers) -> np.ndarray:
    """The usable (finite) differences, packed into a reused buffer.

    The statistic then takes its fast path (no non-finite value to filter, float32 values
    compared as they are): 30% less time on the nebula mosaics, the same values (but for
    the last bit of a mean, from a rough centre sampled from the packed values).
    """
    finite = np.isfinite(d, out=buffers.get("finite", bool, d.size))
    count = int(np.count_nonzero(finite))
    if count == d.size:
        return d
    return np.compress(finite, d, out=buffers.get("packed", d.dtype, count))


class PairDifference(NamedTuple):
    """The statistic of one pair's pixel differences, with its usable pixels on each side.

    ``value``, ``npix``, ``err`` as `SkyStat` (``npix``: differences used).  ``npix_a``,
    ``npix_b``: ``npix`` both, except when no difference is usable: then the compared
    image's usable pixels in the overlap and 0 (if it has some, the other image has none
    there, or none next to them).
    """

    value: float
    npix: int
    err: float
    npix_a: int
    npix_b: int

    @property
    def stat(self) -> SkyStat:
        """As a `SkyStat`."""
        return SkyStat(self.value, self.npix, self.err)

    def reversed(self) -> PairDifference:
        """The other image's sky minus this one's."""
        return PairDifference(-self.value, self.npix, self.err, self.npix_b, self.npix_a)


def _usable_count(image, mask, runs: Runs, params: StatParams) -> int:
    """Pixels of ``runs`` that are finite, unmasked and within the limits."""
    values = runs.gather(np.asarray(image)).astype(np.float64)
    usable = np.isfinite(values)
    if mask is not None:
        usable &= runs.gather(np.asarray(mask))
    if params.lower is not None:
        usable &= values >= params.lower
    if params.upper is not None:
        usable &= values <= params.upper
    return int(np.count_nonzero(usable))


def _run_task(task: Task | DifferenceTask, params: StatParams, scratch: Scratch | None) -> list[SkyStat]:
    """A task's statistics; a statistic that fails names the task's image."""
    try:
        return task.run(params, scratch)
    except StatisticError as exc:
        raise StatisticError(f"{task.label or repr(task.loader)}: {exc}") from None


# -- from images to inputs ------------------------------------------------------------------
def lowest(stats: list[SkyStat]) -> SkyStat:
    """An input's own sky: for a group, the smallest of its members' (as the reference)."""
    finite = [s for s in stats if np.isfinite(s.value)]
    return min(finite, key=lambda s: s.value) if finite else NO_STAT


def combine(stats: list[SkyStat]) -> SkyStat:
    """Pixel-count weighted mean of several statistics (a group's side of an overlap)."""
    good = [s for s in stats if s.npix > 0 and np.isfinite(s.value)]
    if not good:
        return NO_STAT
    if len(good) == 1:
        return good[0]
    n = np.array([s.npix for s in good], float)
    v = np.array([s.value for s in good])
    e = np.array([s.err for s in good])
    total = n.sum()
    return SkyStat(float(n @ v / total), int(total), float(np.sqrt(np.sum((n * e) ** 2)) / total))


@dataclass(frozen=True, eq=False)
class PairStats:
    """Stage 2's output over the pairs of inputs that overlap.

    Attributes
    ----------
    a, b : ndarray of int
        The two inputs of each pair, ``a < b``.
    stat_a, stat_b, npix_a, npix_b, err_a, err_b : ndarray
        Each side's statistic, pixel count and 1-sigma error (NaN, 0 when not measured).  With
        ``compare="differences"`` the sides are not measured apart: the statistics and errors
        are NaN and both counts are the number of pixel differences used.
    member_npix : tuple of (dict, dict)
        Per pair, the pixels of each member image behind each side's statistic.
    diff, diff_err : ndarray
        The measured sky difference ``a - b`` and its 1-sigma statistical error: the
        difference of the two sides' statistics, or the statistic of the pixel differences.
    weight : ndarray
        The pair's weight in the solve (its equation is multiplied by it, so the effective
        weight is its square): the mean of the two pixel counts, as the reference (for
        ``differences`` the number of differences).  Inverse-variance weights were measured
        3-10% less accurate: pairs that share pixels are correlated, and these weights
        happen to discount the small corner overlaps that mostly repeat the edges' pixels.
    side_var : ndarray, shape (2, P)
        The variance of each side of each pair: what the covariance between pairs that share
        pixels is made of (`covariance.pair_covariance`).
    """

    a: np.ndarray
    b: np.ndarray
    stat_a: np.ndarray
    stat_b: np.ndarray
    npix_a: np.ndarray
    npix_b: np.ndarray
    err_a: np.ndarray
    err_b: np.ndarray
    member_npix: tuple
    diff: np.ndarray
    diff_err: np.ndarray
    weight: np.ndarray
    side_var: np.ndarray

    def __len__(self) -> int:
        return len(self.a)

    @cached_property
    def member_pixels(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``member_npix`` as flat arrays ``(pair, image, npix)``, for sums without loops."""
        entries = [
            (p, a, n) for p, sides in enumerate(self.member_npix) for side in sides for a, n in side.items()
        ]
        if not entries:
            return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int64)
        pair, image, npix = zip(*entries)
        return np.array(pair, np.intp), np.array(image, np.intp), np.array(npix, np.int64)

    @property
    def valid(self) -> np.ndarray:
        """Pairs with pixels on both sides and a finite measured difference."""
        return (self.npix_a > 0) & (self.npix_b > 0) & np.isfinite(self.diff)


def input_pair_stats(
    overlaps: dict[tuple[int, int], dict[int, frozenset[int]]],
    stat_of: Callable[[int, frozenset[int]], SkyStat] | None,
) -> PairStats:
    """Each pair of inputs' statistics, ``compare="levels"``.

    With ``stat_of`` None: the pairs only, nothing measured.
    A group's side is its members' statistics over their pixels inside the other input,
    averaged with pixel-count weights (`combine`), not pooled.  ``overlaps`` is what
    `input_overlaps` gives; ``stat_of(a, partners)`` is image ``a``'s statistic over its
    pixels inside the union of ``partners``.
    """
    keys = [(g, h) for g, h in overlaps if g < h]
    n = len(keys)
    values, npix, errs = np.full((2, n), np.nan), np.zeros((2, n), np.int64), np.full((2, n), np.nan)
    member_npix = []
    for p, (g, h) in enumerate(keys):
        if stat_of is None:
            member_npix.append(({}, {}))
            continue
        counts = []
        for s, side in enumerate((overlaps[(g, h)], overlaps[(h, g)])):
            stats = {a: stat_of(a, bs) for a, bs in side.items()}
            values[s, p], npix[s, p], errs[s, p] = combine(list(stats.values()))
            counts.append({a: st.npix for a, st in stats.items()})
        member_npix.append(tuple(counts))
    return PairStats(
        a=np.array([k[0] for k in keys], dtype=np.intp),
        b=np.array([k[1] for k in keys], dtype=np.intp),
        stat_a=values[0], stat_b=values[1], npix_a=npix[0], npix_b=npix[1],
        err_a=errs[0], err_b=errs[1], member_npix=tuple(member_npix),
        diff=values[0] - values[1], diff_err=np.hypot(errs[0], errs[1]),
        weight=0.5 * (npix[0] + npix[1]), side_var=errs**2,
    )


def input_pair_differences(
    overlaps: dict[tuple[int, int], dict[int, frozenset[int]]],
    difference_of: Callable[[int, int], PairDifference],
    skystat: str = "mean",
) -> PairStats:
    """Each pair of inputs' sky difference, ``compare="differences"``.

    For two groups, each pair of members that overlap gives a difference (its pixel
    differences; `measure_differences`), and the inputs' difference is their pixel-count
    weighted mean (as a group's side in `input_pair_stats`).  ``difference_of(a, b)`` is the
    statistic of image ``a`` minus image ``b`` over their overlap.  A pair without usable
    differences gets the usable pixels of each side (`PairDifference`), so that the solve
    can say which side has none.

    ``side_var`` (what pairs that share an image's pixels share of their variance) is each
    side's part of a difference's variance, half with equal noise, times the correlation of
    the statistic's influence: for the median and midpt that of the signs of the differences,
    ``(2/pi) arcsin(1/2) = 1/3`` for a correlation of 1/2 (the mean and the mode: 1/2).
    Measured on the N=256 nebula mosaic of ``bench_vs_peers.py``: the median's and midpt's
    pull spread went from 0.78 to 0.83 with it (the mean's is 1.03).
    """
    keys = [(g, h) for g, h in overlaps if g < h]
    n = len(keys)
    diff, err = np.full(n, np.nan), np.full(n, np.nan)
    npix = np.zeros((2, n), np.int64)
    member_npix = []
    for p, (g, h) in enumerate(keys):
        members = [(a, b) for a, bs in overlaps[(g, h)].items() for b in sorted(bs)
                   if a in overlaps[(h, g)].get(b, ())]
        found = [difference_of(a, b) for a, b in members]
        diff[p], count, err[p] = combine([f.stat for f in found])
        npix[:, p] = count
        if count == 0:
            npix[:, p] = sum(f.npix_a for f in found), sum(f.npix_b for f in found)
        side_a: dict[int, int] = {}
        side_b: dict[int, int] = {}
        for (a, b), f in zip(members, found):
            side_a[a] = side_a.get(a, 0) + f.npix
            side_b[b] = side_b.get(b, 0) + f.npix
        member_npix.append((side_a, side_b))
    nan = np.full(n, np.nan)
    share = 2.0 / math.pi * math.asin(0.5) if skystat in ("median", "midpt") else 0.5
    half = share * err**2  # equal noise: each image carries half the variance of a difference
    return PairStats(
        a=np.array([k[0] for k in keys], dtype=np.intp),
        b=np.array([k[1] for k in keys], dtype=np.intp),
        stat_a=nan, stat_b=nan.copy(), npix_a=npix[0], npix_b=npix[1], err_a=nan.copy(),
        err_b=nan.copy(), member_npix=tuple(member_npix), diff=diff, diff_err=err,
        weight=0.5 * (npix[0] + npix[1]), side_var=np.vstack([half, half]),
    )
