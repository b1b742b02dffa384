"""Stage 2: sky statistics of images over their overlaps and over all their pixels.

The work splits into independent tasks, one per image (or, for images already in memory,
one per pixel set): `measure_image` is a plain function of one image's loader, the pixel
sets to measure and the statistics parameters.  It reads the pixels and the mask when it
runs, writes nothing shared and returns small results, so it can run on a thread, in another
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

import numpy as np

from ._validate import check_pixels
from .geometry import GatherBuffers, Runs
from .loaders import ImageLoader
from .params import StatParams
from .stats import SkyStat, StatisticError, Workspace, sky_statistic

__all__ = [
    "NO_STAT",
    "PairStats",
    "Region",
    "Scratch",
    "Task",
    "combine",
    "input_pair_stats",
    "load_pixels",
    "lowest",
    "measure_batch",
    "measure_image",
    "thread_scratch",
]

#: The statistic of an empty pixel set.
NO_STAT = SkyStat(math.nan, 0, math.nan)

#: A pixel set of one image: None for all its pixels, else the union of these runs.
Region = tuple[Runs, ...] | None


class Scratch:
    """Reusable buffers of one worker thread: gathered pixels and clipping workspace."""

    def __init__(self) -> None:
        self.buffers = GatherBuffers()
        self.work = Workspace()


@dataclass(frozen=True, eq=False)
class Task:
    """The arguments of one `measure_image` call, and its size (pixels) for scheduling.

    ``label`` names the image in error messages (e.g. ``"images[3]"``).
    """

    loader: ImageLoader
    regions: tuple[Region, ...]
    size: int
    label: str = ""


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


def measure_batch(tasks: Sequence[Task], params: StatParams) -> list[list[SkyStat]]:
    """`measure_image` for each of ``tasks``.

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
    return sky_statistic(values, params, work=scratch.work)


def _run_task(task: Task, params: StatParams, scratch: Scratch | None) -> list[SkyStat]:
    """`measure_image` of a task; a statistic that fails names the task's image."""
    try:
        return measure_image(task.loader, task.regions, params, scratch)
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
    """Stage 2's output over the pairs of inputs that overlap: each side's statistic.

    Attributes
    ----------
    a, b : ndarray of int
        The two inputs of each pair, ``a < b``.
    stat_a, stat_b, npix_a, npix_b, err_a, err_b : ndarray
        Each side's statistic, pixel count and 1-sigma error (NaN, 0 when not measured).
    member_npix : tuple of (dict, dict)
        Per pair, the pixels of each member image behind each side's statistic.
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
        """Pairs with pixels and a finite statistic on both sides."""
        return (
            (self.npix_a > 0) & (self.npix_b > 0) & np.isfinite(self.stat_a) & np.isfinite(self.stat_b)
        )

    @property
    def weight(self) -> np.ndarray:
        """The pair's weight in the solve: the mean of the two pixel counts (as the reference)."""
        return 0.5 * (self.npix_a + self.npix_b)


def input_pair_stats(
    overlaps: dict[tuple[int, int], dict[int, frozenset[int]]],
    stat_of: Callable[[int, frozenset[int]], SkyStat] | None,
) -> PairStats:
    """Each pair of inputs' statistics (``stat_of`` None: the pairs only, nothing measured).

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
    )
