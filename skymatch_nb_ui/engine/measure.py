"""Stage 2: sky statistics of images over their overlaps and over all their pixels.

The work splits into independent tasks, one per image (or, for images in memory on threads,
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
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import _execute, reads
from ._validate import check_pixels
from .differences import (
    DifferenceBuffers,
    DifferenceJob,
    PixelMap,
    batchable,
    interpolation_inflation,
    many_pair_differences,
    pair_differences,
)
from .geometry import GatherBuffers, Runs
from .loaders import ImageLoader
from .params import StatParams
from .segments import large_statistics
from .stats import (
    ModeBroad,
    SkyStat,
    StatisticError,
    Workspace,
    mode_broad_errors,
    neighbour_noise,
    pixel_noise,
    side_statistic,
    sky_statistic,
)

__all__ = [
    "NO_STAT",
    "Comparison",
    "DifferenceTask",
    "PairDifference",
    "PairStats",
    "Region",
    "Scratch",
    "SideStat",
    "Task",
    "batched_differences",
    "combine",
    "finish_sides",
    "input_pair_differences",
    "input_pair_stats",
    "load_pixels",
    "lowest",
    "measure_batch",
    "measure_differences",
    "measure_image",
    "release_scratch",
    "scene_error",
    "thread_scratch",
    "with_small_pair_errors",
]

#: The statistic of an empty pixel set.
NO_STAT = SkyStat(math.nan, 0, math.nan)

#: A pixel set of one image: None for all its pixels, else the union of these runs.
Region = tuple[Runs, ...] | None




#: Bytes of scratch buffers a thread keeps from one run to the next (`release_scratch`).  A
#: run on 256 x 256 to 1024 x 1024 images fills 1-30 MB: kept, so the next run does not
#: page-fault them again; one on Roman's 4088 x 4088 detectors ~470 MB, which a Jupyter
#: kernel and each worker of a pool had kept after the run.
SCRATCH_KEEP_BYTES = 64 * 2**20
_SCRATCHES: weakref.WeakSet = weakref.WeakSet()  # every thread's `Scratch` in this process
_SCRATCHES_LOCK = threading.Lock()


class Scratch:
    """Reusable buffers of one worker thread: gathered pixels, clipping, differences.

    Buffers grow as tasks need them; at the end of a run all but `SCRATCH_KEEP_BYTES` of
    them are let go (`release_scratch`).
    """

    def __init__(self) -> None:
        self.buffers = GatherBuffers()
        self.work = Workspace()
        self.differences = DifferenceBuffers()
        with _SCRATCHES_LOCK:
            _SCRATCHES.add(self)

    def held(self) -> list:
        """``(array, let_go)`` for each buffer held."""
        return [*self.buffers.held(), *self.work.held(), *self.differences.held()]

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers held."""
        return sum(buf.nbytes for buf, _ in self.held())

    def release(self, keep: int) -> int:
        """Let go of buffers, the largest first, until at most ``keep`` bytes are held.

        Safe while a task uses them: a buffer in use lives on with the task, and the pool
        makes a new one when next asked.  Returns the bytes let go.
        """
        held = sorted(self.held(), key=lambda item: item[0].nbytes, reverse=True)
        total = sum(buf.nbytes for buf, _ in held)
        freed = 0
        for buf, let_go in held:
            if total - freed <= keep:
                break
            let_go()
            freed += buf.nbytes
        return freed


def release_scratch(keep: int | None = None) -> int:
    """Let every thread's scratch buffers in this process go but ``keep`` bytes each.

    Called at the end of each run (`SkyMatcher.run`) and, in the workers of a pool or a
    cluster, when a run is over there (`_execute.WORKER_RUN_ENDS`); ``keep`` defaults to
    `SCRATCH_KEEP_BYTES`.  Returns the bytes let go.
    """
    keep = SCRATCH_KEEP_BYTES if keep is None else keep
    with _SCRATCHES_LOCK:
        scratches = list(_SCRATCHES)
    return sum(scratch.release(keep) for scratch in scratches)


_execute.WORKER_RUN_ENDS.append(release_scratch)


@dataclass(frozen=True, eq=False)
class Task:
    """The arguments of one `measure_image` call, and its size (pixels) for scheduling.

    ``label`` names the image in error messages (e.g. ``"images[3]"``); with ``defer`` the
    sides' mode errors are left to `finish_sides` (`measure_image`).
    """

    loader: ImageLoader
    regions: tuple[Region, ...]
    size: int
    label: str = ""
    defer: bool = False
    keep: bool | None = None  # the run reads the image again later: keep it (`reads.load`)

    @property
    def units(self) -> int:
        """Statistics the task computes (for progress)."""
        return len(self.regions)

    def run(self, params: StatParams, scratch: Scratch | None = None) -> list[SkyStat]:
        """`measure_image` of this task."""
        return measure_image(self.loader, self.regions, params, scratch, defer=self.defer,
                             keep=self.keep)


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
    keep : bool or None
        Whether the run reads the other image again later (`reads.load`; None: no plan).
    """

    loader: ImageLoader
    runs: Runs
    pmap: PixelMap
    keep: bool | None = None


@dataclass(frozen=True, eq=False)
class DifferenceTask:
    """The arguments of one `measure_differences` call, and its size (pixels).

    ``label`` names the image whose pixels are compared, in error messages.
    """

    loader: ImageLoader
    comparisons: tuple[Comparison, ...]
    size: int
    label: str = ""
    together: bool = False  # the batched pairs' whole overlaps measured together (`together`)
    keep: bool | None = None  # the run reads the image again later: keep it (`reads.load`)

    @property
    def units(self) -> int:
        """Statistics the task computes (for progress)."""
        return len(self.comparisons)

    def run(self, params: StatParams, scratch: Scratch | None = None, found=None,
            later: list | None = None) -> list[SkyStat]:
        """`measure_differences` of this task."""
        return measure_differences(self.loader, self.comparisons, params, scratch, found,
                                   later=later, together=self.together, keep=self.keep)


def load_pixels(loader: ImageLoader, keep: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """An image's pixels and mask, read now; checked unless they were checked in memory.

    Or those an earlier read of the run kept (`reads.load`: ``keep`` says whether the run's
    plan reads them again later; None, not planned).
    """
    return reads.load(loader, lambda: _read_checked(loader), keep)


def _read_checked(loader: ImageLoader) -> tuple[np.ndarray, np.ndarray | None]:
    data, mask = loader.data(), loader.mask()
    if not getattr(loader, "in_memory", False):
        data, mask = check_pixels(data, mask, tuple(loader.shape), loader)
    return data, mask


def measure_image(
    loader: ImageLoader,
    regions: Sequence[Region],
    params: StatParams,
    scratch: Scratch | None = None,
    *,
    defer: bool = False,
    keep: bool | None = None,
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
    defer : bool
        Leave the sides' mode errors for the sky errors (`SideStat.broad_err`) as a
        `stats.ModeBroad`, for `finish_sides` to compute with other tasks' (fewer, larger
        calls; the same values).
    keep : bool or None
        Whether the run reads this image again later: its pixels are then kept for that read
        (`reads.load`; None: the run's reads are not planned).

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
    image, mask = load_pixels(loader, keep)
    found = _region_statistics(image, mask, regions, params, scratch, defer=True)
    return found if defer else _finished(found)


def finish_sides(found: dict, keys=None) -> None:
    """Compute, all at once, the mode errors `measure_image` left pending with ``defer``.

    (Not the spreads of redrawn histograms: those wait in `SideStat.redraw` until
    `scene_error` needs one.)

    ``found`` maps keys to statistics (`SkyStat` or `SideStat`); those of ``keys`` (default:
    all) still pending are replaced by their finished `SideStat`.
    """
    keys = list(found) if keys is None else [k for k in keys if k in found]
    keys = [k for k in keys if isinstance(getattr(found[k], "broad_err", None), ModeBroad)]
    for k, stat in zip(keys, _finished([found[k] for k in keys])):
        found[k] = stat


def _finished(stats: list) -> list:
    """``stats`` with their pending mode errors (`ModeBroad`) computed, together."""
    pending = [i for i, s in enumerate(stats) if isinstance(getattr(s, "broad_err", None), ModeBroad)]
    if not pending:
        return stats
    stats = list(stats)
    sides = [stats[i].broad_err for i in pending]
    for i, side, (broad, fixed) in zip(pending, sides, mode_broad_errors(sides, spreads=False)):
        later = _kept(side) if side.redraw else None  # its broad_err when asked (`_broad_errors`)
        stats[i] = stats[i]._replace(broad_err=broad, fixed_err=fixed, redraw=later)
    return stats


def _kept(side: ModeBroad) -> ModeBroad:
    """``side`` with its counts in a small array of their own (held until the run ends)."""
    small = np.int32 if side.n < 2**31 else np.intp
    return side._replace(counts=np.array(side.counts, dtype=small))


def measure_batch(tasks: Sequence[Task | DifferenceTask], params: StatParams) -> list[list[SkyStat]]:
    """`measure_image` (a `Task`) or `measure_differences` (a `DifferenceTask`) of each task.

    The unit of work sent to a thread, a worker process or a Dask worker: the tasks' loaders
    travel, their pixels are read there.  The pixel differences of the small pairs of images
    in memory are computed together first (`batched_differences`).
    """
    found = batched_differences([t for t in tasks if isinstance(t, DifferenceTask)], params)
    later: list = []  # the batched pairs' whole statistics: all the tasks' at once
    out = [_run_task(t, params, None, found, later) for t in tasks]
    try:
        finish_differences(later, params)
    except StatisticError:
        for t in tasks:  # whose differences: each task alone
            _run_task(t, params, None, found)
        raise
    return out


def batched_differences(tasks: Sequence, params: StatParams, scratch: Scratch | None = None) -> dict:
    """The differences of the pairs of ``tasks`` that take the batched path, all at once.

    ``tasks``: `DifferenceTask` (their comparisons) or `planes.CellTask` (their
    `planes.DifferenceRegion` jobs).  A pair takes it when both images are in memory and
    `differences.batchable` says so (properties of the pair alone: the same pairs whatever
    the batches).  Returns ``{id(comparison or region): (differences, w2)}`` (the differences
    copied out of the thread's buffers).
    """
    scratch = thread_scratch() if scratch is None else scratch
    jobs, keys = [], []
    for task in tasks:
        if not getattr(task.loader, "in_memory", False):
            continue
        items = getattr(task, "comparisons", None)
        if items is None:  # a CellTask
            items = [region for region, _ in task.jobs if hasattr(region, "pmap")]
        image = mask = None
        for c in items:
            if not in_batch(task.loader, c):
                continue
            if image is None:
                image, mask = load_pixels(task.loader)
            other, other_mask = load_pixels(c.loader)
            jobs.append(DifferenceJob(image, mask, other, other_mask, c.runs, c.pmap,
                                      id(task.loader), id(c.loader)))
            keys.append(id(c))
    if not jobs:
        return {}
    found = many_pair_differences(jobs, lower=params.lower, upper=params.upper,
                                  buffers=scratch.differences)
    return dict(zip(keys, found))


def in_batch(loader, comparison) -> bool:
    """Whether `batched_differences` measures ``loader``'s pair ``comparison`` with others.

    ``comparison``: a `Comparison` or `planes.DifferenceRegion` (the other image's loader,
    the runs, the pixel map).  Both images in memory and `differences.batchable`.
    """
    return (getattr(loader, "in_memory", False) and getattr(comparison.loader, "in_memory", False)
            and batchable(loader.shape, comparison.loader.shape, comparison.runs.npix,
                          comparison.pmap))


_LOCAL = threading.local()


def thread_scratch() -> Scratch:
    """The scratch buffers of the calling thread (made on first use, kept while it lives)."""
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = Scratch()
    return scratch


def _region_statistics(image, mask, regions: Sequence[Region], params: StatParams,
                       scratch: Scratch, *, defer: bool = False) -> list[SkyStat]:
    """`_region_statistic` of each region; the sides' plane fits together (`_plane_fits`).

    The same results as one region at a time, bit for bit: the fits of sides with equally
    many sampled pixels are stacked, and stacked products and solves give each side's bits.
    With ``defer``, the mode errors left pending (`measure_image`).
    """
    found = [_region_statistic(image, mask, region, params, scratch, defer=defer)
             for region in regions]
    results = [stat for stat, _ in found]
    samples = [sample for _, sample in found]
    clean = [k for k, sample in enumerate(samples) if isinstance(sample, _CleanSide)]
    for k, (cx, cy, sample) in zip(clean, _clean_samples([samples[k] for k in clean])):
        results[k] = results[k]._replace(x=cx, y=cy)
        samples[k] = sample
    sides = [k for k, sample in enumerate(samples) if sample is not None]
    slopes = _plane_fits([samples[k] for k in sides], scratch.work)
    for k, (gx, gy) in zip(sides, slopes):
        results[k] = results[k]._replace(gx=gx, gy=gy)
    return results


def _region_statistic(image, mask, region: Region, params: StatParams, scratch: Scratch, *,
                      defer: bool = False):
    """The statistic of an image over a region, and the sample of its plane fit.

    Over all the pixels (``region`` None) the error is the statistic's own.  Over an overlap
    (one side of a pair in ``compare="levels"``) it is the error due to the pixel noise
    alone (`pixel_noise`, and ``noise`` in `sky_statistic`): the two sides of a pair see the
    same scene, which cancels in their difference, so the spread of the scene (a nebula
    across the overlap) is not an error of that difference, while the spread of the values
    counts it.  What the scene does *not* cancel (two grids sampling it, the noise over a
    broad scene) is in the returned `SideStat`'s other fields, for `scene_error`.

    Returns ``(statistic, sample)``: the side's plane is not fitted yet (its slopes NaN; the
    fits of a task's sides are made together, `_region_statistics`), ``sample`` is what to
    fit it to (`_plane_sample`; None when there is none), or for a side whose every pixel
    is usable a `_CleanSide`, its centroid (NaN here) and sample to be completed with the
    task's other such sides (`_clean_samples`).  With ``defer``, the mode's error
    for the sky errors may be left pending (`measure_image`).
    """
    if region is None:
        values = np.asarray(image).reshape(-1)
        if mask is not None:
            values = values[np.asarray(mask).reshape(-1)]
        return sky_statistic(values, params, work=scratch.work), None
    runs = Runs.union(list(region), image.shape)
    if not runs:
        return NO_STAT, None
    values = runs.gather(image, scratch.buffers)
    good = None if mask is None else runs.gather(mask)
    usable = values if good is None else values[good]
    # Every pixel usable (the common case: the statistic's base set tells, no check of our
    # own): no mask of them is needed anywhere below.
    clean, noise = False, math.nan

    def noise_of(every: bool) -> float:
        nonlocal clean, noise
        clean = every and good is None
        if clean:
            noise = neighbour_noise(usable, work=scratch.work)
        else:
            noise = pixel_noise(usable, params.lower, params.upper)
        return noise

    stat, broad, mode = side_statistic(usable, params, work=scratch.work, noise=noise_of,
                                       kernel=True, defer=defer)
    if clean:  # its centroid and sample found with the task's other clean sides
        t = _spread_sample(runs.npix)
        cx, cy, sample = math.nan, math.nan, _CleanSide(runs, t, values[t].astype(np.float64))
    else:
        cx, cy, sample = _plane_sample(values, good, runs, params)
    side = SideStat(*stat, cx, cy, math.nan, math.nan, broad, mode.kernel, noise, mode.fixed_err,
                    mode.ladder)
    return side, sample


class SideStat(NamedTuple):
    """The statistic of one side of an overlap (``compare="levels"``), with how it sampled the scene.

    ``value``, ``npix``, ``err`` as `SkyStat`.  ``x``, ``y``: the centroid of the usable pixels
    (finite, unmasked, within the limits; 0-based, the image's own pixel frame); ``gx``,
    ``gy``: the slope of a plane fitted to their values (data units per pixel along x and y;
    NaN when fewer than `_PLANE_MIN` pixels).  Two images sample an overlap on different
    pixel grids, and the centroids of their pixel sets differ by up to half a pixel: across
    a sloping scene that alone moves one side's statistic against the other's by
    ``slope . (centroid shift)`` (`scene_error`), an error the pixel noise does not cover.
    ``broad_err``: the noise's error of the statistic over a scene broader than the noise
    (`stats.side_statistic`: the median's and midpt's over a broad scene, the mode's from
    redrawn histograms or exact in the noise, possibly below ``err``; ``err`` for the mean).
    ``kernel``: the mode's kernel width (values' units; NaN for the other statistics) and
    ``noise``: the pixel noise of the values, for how the modes of two sides that share
    pixels are correlated (`covariance.mode_coupling`).  ``fixed_err`` and ``ladder``: the
    mode's error with its kernel held and the peaks of the kernels it tried
    (`stats.ModeShape`), for the error of a difference of two modes (`scene_error`).
    ``redraw``: for a mode whose ``broad_err`` is the spread of its redrawn histograms
    (`stats.ModeBroad.redraw`), its histogram (a `stats.ModeBroad`), ``broad_err`` then NaN
    until `_broad_errors` computes it: `scene_error` needs it only for the pairs it cannot
    judge from ``fixed_err`` and ``ladder`` (`_broad_excess`), rarely.
    """

    value: float
    npix: int
    err: float
    x: float = math.nan
    y: float = math.nan
    gx: float = math.nan
    gy: float = math.nan
    broad_err: float = math.nan
    kernel: float = math.nan
    noise: float = math.nan
    fixed_err: float = math.nan
    ladder: tuple = ()
    redraw: ModeBroad | None = None

    @property
    def stat(self) -> SkyStat:
        """As a `SkyStat`."""
        return SkyStat(self.value, self.npix, self.err)


_PLANE_SAMPLE = 1024  # pixels (about) for the plane fit of a side's values
_PLANE_MIN = 64
_PLANE_SLOT = 8  # first of the four Workspace float slots of `_plane_fits`


def _plane_sample(values, good, runs: Runs, params: StatParams):
    """Centroid ``(cx, cy)`` of the usable pixels of ``runs`` and the sample of their plane fit.

    ``values`` are the image's values at ``runs`` (row-major), ``good`` the mask's there (or
    None).  The centroid is exact (from the runs, less the unusable pixels).  The sample: an
    array of shape (4, k), rows ``1, x - cx, y - cy`` (the design of the fit) and the values
    (float64) at about `_PLANE_SAMPLE` usable pixels, spread without aliasing
    (`_spread_sample`), for `_plane_fits`; None when fewer than `_PLANE_MIN` are usable (the
    centroid NaN when none is).  Sides whose every pixel is usable take `_clean_samples`.
    """
    lengths = runs.stop - runs.start
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    sx = float(np.dot(lengths, 0.5 * (runs.start + runs.stop - 1)))
    sy = float(np.dot(lengths, runs.rows))
    usable = None
    if (good is not None or params.lower is not None or params.upper is not None
            or not np.isfinite(values).all()):
        usable = np.isfinite(values)
        if good is not None:
            usable &= good
        with np.errstate(invalid="ignore"):
            if params.lower is not None:
                usable &= values >= params.lower
            if params.upper is not None:
                usable &= values <= params.upper
        if usable.all():
            usable = None
    count = total
    if usable is not None:
        x, y = _positions(runs, ends, np.flatnonzero(~usable))
        count -= x.size
        sx -= float(x.sum())
        sy -= float(y.sum())
    if count < 1:
        return math.nan, math.nan, None
    cx, cy = sx / count, sy / count
    t = _spread_sample(total)
    if usable is not None:
        t = t[usable[t]]
    if t.size < _PLANE_MIN:
        return cx, cy, None
    sample = np.empty((4, t.size))
    sample[0] = 1.0
    _positions(runs, ends, t, out=sample[1:3])
    sample[1] -= cx
    sample[2] -= cy
    sample[3] = values[t]
    return cx, cy, sample


class _CleanSide(NamedTuple):
    """A side whose every pixel is usable, for `_clean_samples`.

    Its runs, the positions of its plane-fit sample (`_spread_sample`) and the values there
    (float64, read from the side's gathered values while they are at hand).
    """

    runs: Runs
    t: np.ndarray
    values: np.ndarray


def _clean_samples(plans: Sequence[_CleanSide]) -> list:
    """`_plane_sample` ``(cx, cy, sample)`` of sides whose every pixel is usable, together.

    The same values, bit for bit: the centroid's sums are of integers and half-integers
    (exact in any order: one `numpy.add.reduceat` for all sides); the samples' positions in
    a side that is a rectangle (most) are its corner plus ``(t % columns, t // columns)``,
    in the others they are found by one `searchsorted` in their runs end to end.
    """
    if not plans:
        return []
    sides = [plan.runs for plan in plans]
    lengths = np.concatenate([r.stop - r.start for r in sides])
    start = np.concatenate([r.start for r in sides])
    rows = np.concatenate([r.rows for r in sides])
    counts = np.array([len(r.rows) for r in sides])
    firsts = np.cumsum(counts) - counts
    ends = np.cumsum(lengths)
    totals = np.add.reduceat(lengths, firsts)
    sx = np.add.reduceat(lengths * (0.5 * (start + (start + lengths) - 1)), firsts)
    sy = np.add.reduceat(lengths * rows.astype(np.float64), firsts)
    with np.errstate(invalid="ignore", divide="ignore"):  # (no pixel: NaN, as one side alone)
        cx, cy = sx / totals, sy / totals
    box = _rectangles(rows, start, lengths, firsts, counts)
    picks = [plan.t for plan in plans]
    sizes = [p.size for p in picks]
    bounds = np.cumsum([0] + sizes).tolist()
    out = np.empty((4, bounds[-1]))
    out[0] = 1.0
    out[3] = np.concatenate([plan.values for plan in plans])
    other = [i for i, b in enumerate(box.tolist()) if not b]
    for i in set(range(len(plans))).difference(other):  # a rectangle: by division
        f, t = int(firsts[i]), picks[i]
        width = int(lengths[f])
        y = t // width
        x = t - y * width
        x += int(start[f])
        y += int(rows[f])
        np.subtract(x, cx[i], out=out[1, bounds[i] : bounds[i + 1]], casting="unsafe")
        np.subtract(y, cy[i], out=out[2, bounds[i] : bounds[i + 1]], casting="unsafe")
    if other:  # the positions in the runs of all other sides end to end
        side = np.repeat(other, [sizes[i] for i in other])
        base = ends[firsts] - lengths[firsts]  # of each side's positions, end to end
        t = np.concatenate([picks[i] + base[i] for i in other])
        k = np.searchsorted(ends, t, side="right")
        x = start[k] + (t - (ends[k] - lengths[k]))
        at = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in other])
        out[1, at] = x - cx[side]
        out[2, at] = rows[k] - cy[side]
    found, at = [], 0
    for i, size in enumerate(sizes):
        sample = out[:, at : at + size] if size >= _PLANE_MIN else None
        found.append((float(cx[i]), float(cy[i]), sample))
        at += size
    return found


def _rectangles(rows, start, lengths, firsts, counts) -> np.ndarray:
    """Which sides are rectangles: one run per row, on consecutive rows, all alike.

    The runs of all sides end to end, side ``i``'s from ``firsts[i]``, ``counts[i]`` of them.
    """
    same_start = np.minimum.reduceat(start, firsts) == np.maximum.reduceat(start, firsts)
    same_length = np.minimum.reduceat(lengths, firsts) == np.maximum.reduceat(lengths, firsts)
    step = np.ones(rows.size, dtype=np.intp)  # the row step to each run from the one before
    step[1:] = np.diff(rows)
    step[firsts] = 1
    consecutive = (np.minimum.reduceat(step, firsts) == 1) & (np.maximum.reduceat(step, firsts) == 1)
    return same_start & same_length & consecutive & (counts > 0)


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _spread_sample(total: int) -> np.ndarray:
    """About `_PLANE_SAMPLE` positions spread over ``range(total)``, sorted, no aliasing.

    A regular stride aliases with the rows: with a stride of about a row's length the sample
    runs down a diagonal (x + y constant) and the plane's two slopes cannot be told apart
    (measured: slopes of -1 per pixel and a scene error 100 times the noise's on a flat
    sky).  The golden-ratio sequence fills the positions evenly without a period.
    """
    if total >= _PLANE_SAMPLE:  # the fractions sorted once: floor(f * total) keeps their order
        t = np.multiply(_GOLDEN_SORTED, total)
        np.floor(t, out=t)
        t = t.astype(np.intp)
        if total * _GOLDEN_GAP > 2.0:  # the products at least 2 apart: their floors all differ
            return t
        if t[0] == t[-1]:
            return t[:1]
        new = np.empty(t.size, dtype=bool)  # each position that differs from the one before
        new[0] = True
        np.not_equal(t[1:], t[:-1], out=new[1:])
        return t[new]
    k = min(total, _PLANE_SAMPLE)
    t = np.floor(np.mod(np.arange(k) * _GOLDEN, 1.0) * total).astype(np.intp)
    t.sort()
    return np.unique(t)


#: The golden-ratio fractions of `_spread_sample`, in increasing order.
_GOLDEN_SORTED = np.sort(np.mod(np.arange(_PLANE_SAMPLE) * _GOLDEN, 1.0))
_GOLDEN_GAP = float(np.diff(_GOLDEN_SORTED).min())  # (about 1/2,700)


def _plane_fits(samples, work: Workspace | None = None) -> list[tuple[float, float]]:
    """Slopes (x, y) of the plane fitted to each sample of `_plane_sample`, all at once.

    Least squares through the normal equations of the design ``[1, x - cx, y - cy]``, refitted
    once without the pixels beyond 4 robust standard deviations of the first fit (stars), when
    there are some and at least `_PLANE_MIN` pixels stay.  (NaN, NaN) when a system is
    singular (all pixels on one line).  The samples of equal size are fitted together
    (`_plane_coefficients`): each side's result is that of fitting it alone, bit for bit.
    Scratch arrays come from ``work`` (fresh arrays cost page faults here: PERFORMANCE.md).
    """
    work = Workspace() if work is None else work
    slopes = [(math.nan, math.nan)] * len(samples)
    sizes: dict[int, list[int]] = {}
    for i, sample in enumerate(samples):
        sizes.setdefault(sample.shape[1], []).append(i)
    for k, members in sizes.items():
        n = len(members)
        design = work.floats(_PLANE_SLOT, n * 3 * k).reshape(n, 3, k)
        v = work.floats(_PLANE_SLOT + 1, n * k).reshape(n, k)
        for j, i in enumerate(members):
            design[j] = samples[i][:3]
            v[j] = samples[i][3]
        coef = _plane_coefficients(design, v, work)
        for j, i in enumerate(members):
            slopes[i] = (float(coef[j, 1]), float(coef[j, 2]))
    return slopes


def _plane_coefficients(design: np.ndarray, v: np.ndarray, work: Workspace) -> np.ndarray:
    """`_plane_fits` of ``n`` samples of ``k`` pixels: designs (n, 3, k), values (n, k).

    The coefficients (n, 3), NaN where singular.  Stacked products and solves give each
    sample's bits alone (the same BLAS and LAPACK calls per sample); the medians are exact.
    """
    n, _, k = design.shape
    coef = _solve_stacked(design @ design.transpose(0, 2, 1), design @ v[:, :, None])
    residual = work.floats(_PLANE_SLOT + 2, n * k).reshape(n, k)
    np.matmul(coef.transpose(0, 2, 1), design, out=residual[:, None, :])
    np.subtract(v, residual, out=residual)
    np.abs(residual, out=residual)
    spread = 1.4826 * _row_medians(residual, work.floats(_PLANE_SLOT + 3, n * k).reshape(n, k))
    with np.errstate(invalid="ignore"):  # NaN rows (singular) are done
        keep = residual <= (4.0 * spread)[:, None]
        kept = np.count_nonzero(keep, axis=1)
        again = np.flatnonzero((spread > 0) & (kept < k) & (kept >= _PLANE_MIN))
    if again.size:
        sub = design[again]
        weighted = np.multiply(sub, keep[again][:, None, :])
        coef[again] = _solve_stacked(weighted @ sub.transpose(0, 2, 1),
                                     weighted @ v[again][:, :, None])
    return coef[:, :, 0]


def _solve_stacked(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """`numpy.linalg.solve` of stacked systems, NaN for each singular one."""
    try:
        return np.linalg.solve(normal, rhs)
    except np.linalg.LinAlgError:
        out = np.full(rhs.shape, math.nan)
        for i in range(len(normal)):
            try:
                out[i] = np.linalg.solve(normal[i], rhs[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _row_medians(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`median_of` of each row of ``a`` (no NaN), partitioned in ``out``: the same values."""
    k = a.shape[1] // 2
    out[...] = a
    if a.shape[1] % 2:
        out.partition(k, axis=1)
        return out[:, k].copy()
    out.partition([k - 1, k], axis=1)
    return (out[:, k - 1] + out[:, k]) / 2.0


def _positions(runs: Runs, ends: np.ndarray, t: np.ndarray, out: np.ndarray | None = None):
    """Columns and rows (float) of the pixels at positions ``t`` of ``runs``' row-major order.

    Into ``out`` (shape (2, len(t)), float64) when given.
    """
    k = np.searchsorted(ends, t, side="right")
    first = ends[k] - (runs.stop[k] - runs.start[k])
    if out is None:
        out = np.empty((2, t.size))
    np.add(runs.start[k], t - first, out=out[0], casting="unsafe")
    np.copyto(out[1], runs.rows[k], casting="unsafe")
    return out[0], out[1]


def measure_differences(
    loader: ImageLoader,
    comparisons: Sequence[Comparison],
    params: StatParams,
    scratch: Scratch | None = None,
    found: dict | None = None,
    *,
    later: list | None = None,
    together: bool = False,
    keep: bool | None = None,
) -> list[SkyStat]:
    """The statistic of the pixel differences of one image with each of several others.

    The task holds at most two images at a time: this one, and the other of the current
    comparison (besides those the run keeps for its later reads: `reads`).

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
    found : dict, optional
        Differences already computed (`batched_differences`), by ``id`` of the comparison.
    together : bool
        Whether the statistics of those are measured together (`difference_statistics`; the
        run has many small pairs: `together`), else one by one by `sky_statistic`.
    later : list, optional
        Where to leave the statistics measured together (`finish_differences` fills the
        returned list's places then, with other tasks' at once); else they are computed here.
    keep : bool or None
        Whether the run reads this image again later (`reads.load`; the other images' say so
        in their `Comparison`; None: not planned).

    Returns
    -------
    list of PairDifference
        One per comparison: this image's sky minus the other's.
    """
    scratch = thread_scratch() if scratch is None else scratch
    if found is None:  # the small pairs as in a batch: the same values however measured
        found = batched_differences([DifferenceTask(loader, tuple(comparisons), 0)], params,
                                    scratch)
    image, mask = load_pixels(loader, keep)
    of_differences = params.replace(lower=None, upper=None)  # limits apply to the pixels
    results: list = []
    batched: list = []  # (index in results, packed differences, inflation): measured together
    for c in comparisons:
        other, other_mask = load_pixels(c.loader, c.keep)
        in_found = bool(found) and id(c) in found
        if in_found:
            d, w2 = found[id(c)]
        else:
            d, w2 = pair_differences(image, mask, other, other_mask, c.runs, c.pmap,
                                     lower=params.lower, upper=params.upper,
                                     buffers=scratch.differences)
        inflation = interpolation_inflation(w2, c.pmap.area_ratio, params.skystat)
        packed = _finite(d, scratch.differences)
        if together and in_found and len(packed):  # (`found` holds copies: kept until measured)
            batched.append(_Whole(results, len(results), packed, inflation, loader, c.runs))
            results.append(None)
        else:
            stat = sky_statistic(packed, of_differences, work=scratch.work)
            results.append(pair_difference(stat, inflation, lambda: (image, mask), c.runs, params))
        del other, other_mask  # released before the next one is read: two images at a time
    if later is None:
        finish_differences(batched, params, scratch)
    else:
        later.extend(batched)
    return results


class _Whole(NamedTuple):
    """A batched pair's whole overlap left to `finish_differences`: where its result goes."""

    results: list
    index: int
    packed: np.ndarray
    inflation: float
    loader: ImageLoader
    runs: Runs


def finish_differences(pending: list, params: StatParams, scratch: Scratch | None = None) -> None:
    """The whole-overlap statistics of batched pairs (`_Whole`), all at once, put in place."""
    if not pending:
        return
    scratch = thread_scratch() if scratch is None else scratch
    of_differences = params.replace(lower=None, upper=None)
    stats = difference_statistics([w.packed for w in pending], of_differences, scratch.work)
    for w, stat in zip(pending, stats):
        w.results[w.index] = pair_difference(stat, w.inflation, lambda w=w: load_pixels(w.loader),
                                             w.runs, params)


#: Small pairs (both images in memory, at most `differences.BATCH_IMAGE_PIXELS` pixels each)
#: in a mosaic from which the whole-overlap statistics of those taking the batched
#: interpolation are measured together (`difference_statistics`): its fixed cost (~2 ms a
#: call) pays over ~25 sets (930 sets of ~7,900 differences: 0.31 s one by one, 0.22 s
#: together), so only mosaics with enough of them to fill the batches (at least 6) do it; the
#: others keep `sky_statistic` one by one (3 x 3 images of 128 x 128: 46 against 55-85 ms).
TOGETHER_FROM = 150


def together(loaders: Sequence, runs: dict) -> bool:
    """Whether a mosaic's small pairs' whole overlaps are measured together (`TOGETHER_FROM`).

    A property of the mosaic (its images and overlaps), not of a run's tasks or of what
    is cached: the constant and the plane stage, every scheduler, measure alike.
    """
    from .differences import BATCH_IMAGE_PIXELS

    small = [bool(getattr(ld, "in_memory", False)) and ld.shape[0] * ld.shape[1] <= BATCH_IMAGE_PIXELS
             for ld in loaders]
    count = sum(1 for (a, b), r in runs.items() if a < b and r and small[a] and small[b])
    return count >= TOGETHER_FROM


def difference_statistics(packed: list, params: StatParams, work: Workspace) -> list[SkyStat]:
    """The statistics of several pairs' packed differences (the small pairs batched together).

    The same as `sky_statistic` of each (``mode``: to ~1e-11 of its error, its smoothing by
    FFT for all at once, `segments.large_statistics`), and each pair's bits do not depend
    on which pairs are measured with it: the constant and the plane stage, every scheduler
    and every batch give the same values.
    """
    if not packed:
        return []
    value, npix, err = large_statistics(packed, params, work, alone=True)
    return [SkyStat(v, n, e) for v, n, e in zip(value.tolist(), npix.tolist(), err.tolist())]


def pair_difference(stat: SkyStat, inflation: float, pixels: Callable, runs: Runs,
                    params: StatParams) -> PairDifference:
    """A pair's `PairDifference` from its differences' statistic (errors inflated).

    ``pixels()``: the compared image and its mask (read only when no difference is usable).
    """
    usable = (stat.npix, stat.npix)
    if stat.npix == 0:  # say which side has nothing to compare
        usable = (_usable_count(*pixels(), runs, params), 0)
    return PairDifference(stat.value, stat.npix, stat.err * inflation, *usable)


def _finite(d: np.ndarray, buffers: DifferenceBuffers) -> np.ndarray:
    """The usable (finite) differences, packed.

    The statistic then takes its fast path (no non-finite value to filter, float32 values
    compared as they are): 30% less time on the nebula mosaics, the same values (but for
    the last bit of a mean, from a rough centre sampled from the packed values).  Boolean
    indexing packs them in half the time of ``np.compress`` into a buffer.
    """
    finite = np.isfinite(d, out=buffers.get("finite", bool, d.size))
    if finite.all():
        return d
    return d[finite]


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


def _run_task(task: Task | DifferenceTask, params: StatParams, scratch: Scratch | None,
              found: dict | None = None, later: list | None = None) -> list[SkyStat]:
    """A task's statistics; a statistic that fails names the task's image."""
    try:
        if isinstance(task, DifferenceTask):
            return task.run(params, scratch, found, later)
        return task.run(params, scratch)
    except StatisticError as exc:
        raise StatisticError(f"{task.label or repr(task.loader)}: {exc}") from None


# -- from images to inputs ------------------------------------------------------------------
def lowest(stats: list[SkyStat]) -> SkyStat:
    """An input's own sky: for a group, the smallest of its members' (as the reference)."""
    finite = [s for s in stats if np.isfinite(s.value)]
    return min(finite, key=lambda s: s.value) if finite else NO_STAT


def combine(stats: list[SkyStat]) -> SkyStat:
    """Pixel-count weighted mean of several statistics (a group's side of an overlap).

    A member of fewer than `SMALL_PAIR` pixels has at least the error of the larger members'
    median variance per pixel (as `with_small_pair_errors`): the corner of one pixel that a
    member of a camera's exposure has with another exposure has no error of its own, and it
    would leave the group's without one.
    """
    good = [s for s in stats if s.npix > 0 and np.isfinite(s.value)]
    if not good:
        return NO_STAT
    if len(good) == 1:
        return good[0]
    n = np.array([s.npix for s in good], float)
    v = np.array([s.value for s in good])
    e = np.array([s.err for s in good])
    small = n < SMALL_PAIR
    large = ~small & np.isfinite(e) & (e > 0)
    if small.any() and large.any():
        u = float(np.median(e[large] ** 2 * n[large]))
        e = np.where(small, np.sqrt(np.fmax(e**2, u / n)), e)
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
        difference of the two sides' statistics, or the statistic of the pixel differences
        (for pairs of fewer than `SMALL_PAIR` pixels, at least what their images' noise in
        larger pairs gives: `with_small_pair_errors`).
    weight : ndarray
        The pair's weight in the solve (its equation is multiplied by it, so the effective
        weight is its square): the mean of the two pixel counts, as the reference (for
        ``differences`` the number of differences).  Inverse-variance weights were measured
        3-10% less accurate: pairs that share pixels are correlated, and these weights
        happen to discount the small corner overlaps that mostly repeat the edges' pixels.
    side_var : ndarray, shape (2, P)
        The variance of each side of each pair: what the covariance between pairs that share
        pixels is made of (`covariance.pair_covariance`).
    scene_err : ndarray
        Per pair, the error of ``diff`` from how the two pixel grids sample the scene
        (`scene_error`; ``compare="levels"``), beyond ``diff_err``; zeros when not known.
        Not shared between pairs; it enters the sky errors, not the robust weights.
    scene_var : ndarray
        Per pair, the variance added to ``diff_err**2`` for the sky errors: ``scene_err**2``,
        less where a side's error for the sky errors is below the one the robust solve uses
        (`scene_error` with ``signed``; the mode); ``scene_err**2`` when not given.
    side_kernel, side_noise : ndarray, shape (2, P)
        Each side's mode kernel width and pixel noise (`SideStat`; NaN for other statistics
        and for a group's side): how the modes of sides that share pixels are correlated in
        the sky errors (`covariance.mode_coupling`).
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
    scene_err: np.ndarray | None = None
    scene_var: np.ndarray | None = None
    side_kernel: np.ndarray | None = None
    side_noise: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.scene_err is None:
            object.__setattr__(self, "scene_err", np.zeros(len(self.a)))
        if self.scene_var is None:
            object.__setattr__(self, "scene_var", self.scene_err**2)
        for name in ("side_kernel", "side_noise"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full((2, len(self.a)), np.nan))

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
    kernel, noise = np.full((2, n), np.nan), np.full((2, n), np.nan)
    member_npix = []
    for p, (g, h) in enumerate(keys):
        if stat_of is None:
            member_npix.append(({}, {}))
            continue
        counts = []
        for s, side in enumerate((overlaps[(g, h)], overlaps[(h, g)])):
            stats = {a: stat_of(a, bs) for a, bs in side.items()}
            found = combine(list(stats.values()))
            values[s, p], npix[s, p], errs[s, p] = found.value, found.npix, found.err
            kernel[s, p] = getattr(found, "kernel", math.nan)
            noise[s, p] = getattr(found, "noise", math.nan)
            counts.append({a: st.npix for a, st in stats.items()})
        member_npix.append(tuple(counts))
    return with_small_pair_errors(PairStats(
        a=np.array([k[0] for k in keys], dtype=np.intp),
        b=np.array([k[1] for k in keys], dtype=np.intp),
        stat_a=values[0], stat_b=values[1], npix_a=npix[0], npix_b=npix[1],
        err_a=errs[0], err_b=errs[1], member_npix=tuple(member_npix),
        diff=values[0] - values[1], diff_err=np.hypot(errs[0], errs[1]),
        weight=0.5 * (npix[0] + npix[1]), side_var=errs**2, side_kernel=kernel, side_noise=noise,
    ))


def scene_error(
    pairs: PairStats,
    overlaps: dict[tuple[int, int], dict[int, frozenset[int]]],
    stat_of: Callable[[int, frozenset[int]], SkyStat],
    wcs: Sequence,
    *,
    signed: bool = False,
) -> np.ndarray:
    """Per pair of `input_pair_stats`, the error of its difference that the scene adds.

    Two terms in quadrature, for pairs of two single images (0 when a side is a group):

    1. **The noise over a broad scene** (median, midpt, mode): ``err_a`` and ``err_b`` are
       the noise's error for values as narrow as the noise (the reference's formula, which
       the robust solve judges residuals with); across a nebula the median moves more, and
       the mode may move to another kernel's peak or wander less than its first-order error
       says (`SideStat.broad_err`).  The excess, ``broad_err**2 - err**2`` of both sides; for
       two modes, that of each with its kernel held and the move between the two sides'
       kernels' peaks when they differ (`_broad_excess`).
    2. **How the two grids sample the scene**:

    The two sides of an overlap are the pixel centres of each image inside it: the same sky,
    but on two grids, so the centroids of the two pixel sets differ by up to half a pixel
    (each set ends wherever its grid's rows and columns end inside the overlap; masked and
    non-finite pixels move them too).  Across a scene that slopes by ``g`` per pixel, that
    shift ``c`` moves one side's statistic against the other's by ``g . c``: the mean, and to
    first order every other statistic of a smooth scene.  It does not cancel in the
    difference, it is not pixel noise, and for a given pair it is one number, so loops of
    pairs only see it as scatter of the residuals.  Measured without noise on a nebula mosaic
    (4x4 of 512^2, 25 sigma per image): ``g . c`` reproduced every pair's error (0.002-0.04
    noise sigma, 1-2 times the pixel noise's error of the mean).  This returns
    ``|g . c|``: the average of the two sides' estimates, each with its own slope and the
    other's centroid carried into its pixel frame through the two WCSs (0 when a slope is
    unknown).

    Returns ``sqrt(term 1 + term 2**2)``, term 1 counted where it is positive; with
    ``signed``, the variance ``term 1 + term 2**2`` itself (`PairStats.scene_var`), which may
    be negative: the mode's error from its smoothed histogram (`SideStat.broad_err`) may be
    below the first-order one the robust solve uses, which overstates the peak's wander when
    the noise is as wide as the kernel.
    """
    out = np.zeros(len(pairs))
    broad = np.zeros(len(pairs))
    shrink = np.zeros(len(pairs))  # the negative part of term 1
    todo = []  # (pair, a, b, side a, side b)
    single = []  # (pair, a, b, side a, side b) of the pairs of two single images
    for p, (g, h) in enumerate(zip(pairs.a.tolist(), pairs.b.tolist())):
        side_a, side_b = overlaps[(g, h)], overlaps[(h, g)]
        if len(side_a) != 1 or len(side_b) != 1:
            continue
        (a, pa), (b, pb) = next(iter(side_a.items())), next(iter(side_b.items()))
        if pa != frozenset({b}) or pb != frozenset({a}):
            continue
        single.append((p, a, b, stat_of(a, pa), stat_of(b, pb)))
    # the redrawn spreads of the sides whose pairs fall back on them, computed together
    jumps = [_known_jump(sa, sb) for _, _, _, sa, sb in single]
    spreads = _broad_errors([s for (_, _, _, sa, sb), jump in zip(single, jumps) if jump is None
                             for s in (sa, sb)])
    for (p, a, b, sa, sb), jump in zip(single, jumps):
        excess = _broad_excess(sa, sb, spreads, jump)
        broad[p] = sum(e for e in excess if e > 0)
        shrink[p] = sum(e for e in excess if e < 0)
        known = [getattr(s, f, math.nan) for s in (sa, sb) for f in ("x", "y", "gx", "gy")]
        if all(map(math.isfinite, known)):
            todo.append((p, a, b, sa, sb))
    if not todo:
        return broad + shrink if signed else np.sqrt(broad)
    # every centroid carried into the other image's frame, one WCS call per image and way
    points: dict[int, list] = {}
    for k, (_, a, b, sa, sb) in enumerate(todo):
        points.setdefault(a, []).append((k, 0, sa.x, sa.y, b))
        points.setdefault(b, []).append((k, 1, sb.x, sb.y, a))
    lonlat: dict[int, list] = {}
    for image, entries in points.items():
        _, _, x, y, _ = zip(*entries)
        lon, lat = wcs[image].pixel_to_lonlat(np.array(x), np.array(y))
        for (k, s, _, _, target), lo, la in zip(entries, np.atleast_1d(lon), np.atleast_1d(lat)):
            lonlat.setdefault(target, []).append((k, s, lo, la))
    moved = np.full((len(todo), 2, 2), np.nan)  # [k, side whose centroid moved, (x, y)]
    for target, entries in lonlat.items():
        _, _, lon, lat = zip(*entries)
        x, y = wcs[target].lonlat_to_pixel(np.array(lon), np.array(lat))
        for (k, s, _, _), xx, yy in zip(entries, np.atleast_1d(x), np.atleast_1d(y)):
            moved[k, s] = xx, yy
    for k, (p, _, _, sa, sb) in enumerate(todo):
        in_b = sb.gx * (moved[k, 0, 0] - sb.x) + sb.gy * (moved[k, 0, 1] - sb.y)
        in_a = sa.gx * (sa.x - moved[k, 1, 0]) + sa.gy * (sa.y - moved[k, 1, 1])
        value = 0.5 * (in_a + in_b)
        out[p] = abs(value) if math.isfinite(value) else 0.0
    return broad + shrink + out**2 if signed else np.sqrt(broad + out**2)


#: Two modes' kernels count as one when their widths differ by less than this factor (the
#: widening rule's kernels are a factor 2 apart, or less at its widest; the two sides of an
#: overlap differ in spread, hence in width, by a few percent).
_SAME_KERNEL = 1.15


def _broad_excess(sa, sb, spreads: dict | None = None, jump=False) -> list[float]:
    """Term 1 of `scene_error` for one pair: what the noise over a broad scene adds, per part.

    Each side's ``broad_err**2 - err**2``; for two modes, that of the mode with its kernel
    held (`SideStat.fixed_err`) and, when the two sides chose different kernels, the squared
    move between the two kernels' peaks (`_kernel_jump`).  Over a nebula a side's mode may
    move to another kernel's peak with another draw of the noise (`SideStat.broad_err`, the
    spread of redrawn histograms, includes that), but which kernel each side chose is seen:
    the two sides of an overlap see one scene, so with one kernel their peaks move with the
    noise only, and with two their difference carries the move between the kernels' peaks
    in full.  Measured on the nebula mosaics of ``bench_vs_peers.py`` (N=16 seeds 0-3, N=64
    seed 0, mode): pairs with one kernel where the redrawn spread was used, true error over
    the error claimed 0.40 (sd; 87 pairs); pairs with two kernels, 2.0 (13 pairs).

    ``spreads``: the waiting ``broad_err`` of sides (`_broad_errors`; computed here when
    not given), ``jump``: `_known_jump` of the pair when known.
    """
    jump = _known_jump(sa, sb) if jump is False else jump
    if jump is not None:
        return [sa.fixed_err**2 - sa.err**2, sb.fixed_err**2 - sb.err**2, jump**2]
    spreads = _broad_errors([sa, sb]) if spreads is None else spreads
    broad = [spreads[id(s)] if getattr(s, "redraw", None) is not None
             else getattr(s, "broad_err", math.nan) for s in (sa, sb)]
    return [e**2 - s.err**2 for e, s in zip(broad, (sa, sb))]


def _known_jump(sa, sb) -> float | None:
    """`_kernel_jump` of two modes, or None when `_broad_excess` falls back on ``broad_err``.

    It does when a side has no ladder of kernels or no finite ``fixed_err`` (not a mode, or
    no smoothed peak), or the move between the two sides' kernels is not known.
    """
    if all(getattr(s, "ladder", ()) and math.isfinite(getattr(s, "fixed_err", math.nan))
           for s in (sa, sb)):
        jump = _kernel_jump(sa, sb)
        return jump if math.isfinite(jump) else None
    return None


def _broad_errors(sides) -> dict[int, float]:
    """``{id(side): broad_err}`` of the `SideStat` s whose ``broad_err`` waits (``redraw``).

    The spreads of their redrawn histograms (`stats.mode_broad_errors`), together: each the
    value of the side computed alone, as the statistics tasks would have.
    """
    waiting = {id(s): s.redraw for s in sides if getattr(s, "redraw", None) is not None}
    found = mode_broad_errors(list(waiting.values()))
    return {k: broad for k, (broad, _) in zip(waiting, found)}


def _kernel_jump(sa, sb) -> float:
    """How far apart the peaks of the two sides' kernels are (0 for one kernel; NaN if unknown).

    The root mean square, over the sides that tried the other side's kernel, of the move of
    their peak from their own kernel's to that one's (the wider side tried every narrower
    kernel, the narrower one the next wider).
    """
    if abs(math.log(sa.kernel / sb.kernel)) < math.log(_SAME_KERNEL):
        return 0.0
    moves = [peak - own.value for own, other in ((sa, sb), (sb, sa)) for width, peak in own.ladder
             if abs(math.log(width / other.kernel)) < math.log(_SAME_KERNEL)]
    return math.sqrt(sum(m * m for m in moves) / len(moves)) if moves else math.nan


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
    return with_small_pair_errors(PairStats(
        a=np.array([k[0] for k in keys], dtype=np.intp),
        b=np.array([k[1] for k in keys], dtype=np.intp),
        stat_a=nan, stat_b=nan.copy(), npix_a=npix[0], npix_b=npix[1], err_a=nan.copy(),
        err_b=nan.copy(), member_npix=tuple(member_npix), diff=diff, diff_err=err,
        weight=0.5 * (npix[0] + npix[1]), side_var=np.vstack([half, half]),
    ), share)


#: Pairs of fewer pixels than this (``weight``: differences, or the mean of the two sides'
#: counts) measure their own pixel noise poorly, or from one pixel not at all: their error
#: is the larger of their own and one from the noise their images show in larger pairs
#: (`with_small_pair_errors`).
SMALL_PAIR = 25


def with_small_pair_errors(pairs: PairStats, share: float | None = None) -> PairStats:
    """`pairs` with the errors of its small pairs (below `SMALL_PAIR` pixels) made sound.

    A pair of a few pixels (a sliver where two detectors' corners meet, common in dithered
    camera mosaics) estimates its pixel noise from those pixels: from one pixel it has no
    error at all (NaN, which would leave every sky error of its component unknown and its
    residuals unjudged by the robust solve), from two it may claim nearly none.  Its
    variance becomes at least ``u / weight``, ``u`` the variance per pixel
    (``diff_err**2 * weight``) of its images' larger valid pairs: the mean of the two
    images' medians (the median of every larger pair when an image has none; unchanged
    when there are none at all).  The difference and the weight (the offsets) do not change.

    ``side_var`` follows: scaled with the pair's variance, or, where the pair had none,
    ``share`` of it on each side (None: half, as for two sides of equal noise).
    """
    n = np.asarray(pairs.weight, float)
    err = pairs.diff_err
    valid = pairs.valid
    small = valid & (n < SMALL_PAIR)
    large = valid & ~small & np.isfinite(err) & (err > 0)
    if not small.any() or not large.any():
        return pairs
    per_pixel = err[large] ** 2 * n[large]
    image = np.concatenate([pairs.a[large], pairs.b[large]])
    values = np.concatenate([per_pixel, per_pixel])
    order = np.lexsort((values, image))
    image, values = image[order], values[order]
    starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]])
    counts = np.diff(np.r_[starts, image.size])
    lower = values[starts + (counts - 1) // 2]
    upper = values[starts + counts // 2]
    median = np.full(max(int(pairs.a.max()), int(pairs.b.max())) + 1, np.nan)
    median[image[starts]] = 0.5 * (lower + upper)
    fallback = float(np.median(per_pixel))
    p = np.flatnonzero(small)
    ends = np.vstack([median[pairs.a[p]], median[pairs.b[p]]])
    known = np.isfinite(ends)
    count = known.sum(axis=0)
    u = np.where(count > 0, np.where(known, ends, 0.0).sum(axis=0) / np.maximum(count, 1), fallback)
    own = err[p] ** 2
    var = np.fmax(own, u / np.maximum(n[p], 1.0))
    diff_err = err.copy()
    diff_err[p] = np.sqrt(var)
    side_var = pairs.side_var.copy()
    had = np.isfinite(own) & (own > 0) & np.isfinite(side_var[:, p]).all(axis=0)
    side_var[:, p] = np.where(had, side_var[:, p] * (var / np.where(had, own, 1.0)),
                              (0.5 if share is None else share) * var)
    return replace(pairs, diff_err=diff_err, side_var=side_var)
