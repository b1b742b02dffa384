"""`SkyMatcher`: the three stages in order, each one's results cached; `skymatch`, in one call.

A change of parameters redoes only what it must: ``skymethod``, ``match_down`` and ``anchor``
re-run the solve only (stage 3); the statistics parameters re-run the statistics on the
cached overlap pixel sets (stage 2); new groups compute only the statistics of (image,
partner set) combinations not seen before; a new ``stepsize`` recomputes the geometry
(stage 1).  Which stage a parameter belongs to is in its `ParamSpec`.

The stages live in their own modules: ``geometry`` (1), ``measure`` (2, with ``stats`` for the
statistic of one pixel set), ``solve`` (3, with ``lstsq``); ``groups`` maps images to inputs
and ``result`` assembles what a run returns.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Hashable, Sequence

import numpy as np

from ._validate import check_images, check_wcs, check_workers
from .covariance import SharedSides, pair_covariance, shared_sides
from .differences import PixelMap, pixel_map
from .exceptions import DisconnectedMosaicWarning
from .geometry import Footprint, Geometry, Runs, mosaic_geometry
from .groups import Grouping, group_inputs, input_overlaps
from .loaders import ImageLoader
from .measure import (
    Comparison,
    DifferenceTask,
    PairDifference,
    Scratch,
    Task,
    input_pair_differences,
    input_pair_stats,
    lowest,
    run_tasks,
)
from .params import Anchor, Compare, SkyMatchParams, SkyMethod, SkyStatName, parameters_doc
from .result import SkyMatchResult, assemble_result, with_subtracted
from .solve import Problem, solve

__all__ = ["SkyMatcher", "skymatch"]


class SkyMatcher:
    """Sky matching of one set of images, keeping every stage's results for re-use.

    Parameters
    ----------
    images : sequence of 2-D array or ImageLoader
        The images, of any real dtype and any shapes.  They are read, never changed; they may
        be memory-mapped (pixels are read per task).  An image may also be a *loader*: an
        object with a ``shape`` and methods ``data()`` and ``mask()`` (see
        `skymatch_nb_ui.engine.loaders`), called only when its pixels are needed.
    wcs : sequence
        One celestial WCS per image (`astropy.wcs.WCS`, distortions included, or
        ``gwcs.WCS``).  WCS in different celestial frames (ICRS, FK5, FK4 at any equinox,
        galactic, ...) are converted to ICRS with `astropy.coordinates`.
    masks : sequence of 2-D bool array, optional
        True marks a good pixel.  Non-finite pixels are always ignored, and so are the
        masked pixels of a `numpy.ma.MaskedArray` image.  None for an image given as a
        loader (its ``mask()`` gives its mask).
    stepsize : int, optional
        Add footprint vertices at most this many pixels apart along each image edge, so that
        the outline of a distorted WCS is followed closely (None: the four corners only).
        The default of `run`; a run with another ``stepsize`` recomputes the geometry and
        makes that one the default.
    workers : int, optional
        Threads for the statistics (None: one per CPU core, at most 4; 1: no pool).

    Raises
    ------
    TypeError, ValueError
        For bad images, WCS, masks, ``stepsize`` or ``workers``; the message names the
        argument (and the image) and the rule.

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> matcher = SkyMatcher(m.images, m.wcs)
    >>> matcher.run(skymethod="match", skystat="mean").sky.round(6).tolist()
    [0.0, 20.0, 5.0, 10.0, 5.0, 15.0]
    >>> matcher.run(skymethod="global+match", skystat="mean").sky.round(6).tolist()
    [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
    >>> params = SkyMatchParams(skymethod="local", skystat="median")
    >>> matcher.run(params).sky.round(6).tolist()
    [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
    """

    def __init__(self, images, wcs, *, masks=None, stepsize: int | None = None,
                 workers: int | None = None):
        self._loaders: list[ImageLoader] = check_images(images, masks)
        self._wcs = check_wcs(wcs, len(self._loaders))
        self._stepsize = SkyMatchParams.specs()["stepsize"].check(stepsize)
        self._workers = check_workers(workers)
        self._shapes = [tuple(loader.shape) for loader in self._loaders]
        self._geometry: Geometry | None = None
        self._local_stats: dict = {}  # (statistics key, image) -> SkyStat
        self._pair_stats: dict = {}  # (statistics key, image, partners) -> SkyStat
        self._input_pairs: dict = {}  # (statistics key or None, labels) -> PairStats
        self._differences: dict = {}  # (statistics key, sampled, other) -> SkyStat
        self._maps: dict = {}  # (sampled, other) -> PixelMap
        self._shared: dict = {}  # labels -> SharedSides
        self._scratch = Scratch()  # reused by serial runs of the statistics stage
        self._lock = threading.RLock()  # runs from several threads take turns

    def __len__(self) -> int:
        return len(self._loaders)

    @property
    def loaders(self) -> tuple[ImageLoader, ...]:
        """One loader per image (`ArrayImage` for arrays): what a statistics task reads."""
        return tuple(self._loaders)

    @property
    def params(self) -> SkyMatchParams:
        """The parameters `run` starts from: the defaults, with the matcher's ``stepsize``."""
        return SkyMatchParams(stepsize=self._stepsize)

    @property
    def geometry(self) -> Geometry:
        """Stage 1 (for the current ``stepsize``), computed on first use."""
        with self._lock:
            if self._geometry is None:
                self._geometry = mosaic_geometry(self._wcs, self._shapes, self._stepsize)
            return self._geometry

    @property
    def footprints(self) -> list[Footprint]:
        """The footprint of each image on the sphere."""
        return self.geometry.footprints

    def overlap_pixels(self, a: int, b: int) -> Runs:
        """The pixels of image ``a`` whose centres fall inside image ``b``'s footprint."""
        return self.geometry.runs.get((a, b)) or Runs.union([], self._shapes[a])

    def run(
        self,
        params: SkyMatchParams | None = None,
        *,
        groups: Sequence[Hashable] | None = None,
        **changes,
    ) -> SkyMatchResult:
        """Match the skies.

        Parameters
        ----------
        params : SkyMatchParams, optional
            All the parameters at once (default: `params`, the defaults with the matcher's
            ``stepsize``).
        groups : sequence of hashable, optional
            One label per image; images with the same label share one sky.  None (or a
            missing label: None, NaN, ``pandas.NA``) leaves an image alone.
        **changes
            Parameters that differ from ``params``: any of `SkyMatchParams` (``skymethod``,
            ``skystat``, ...), as in `skymatch`.

        Returns
        -------
        SkyMatchResult

        Raises
        ------
        TypeError
            For an unknown parameter (the message lists the valid names) or a value of the
            wrong kind.
        ValueError
            For a value outside its domain, or groups without one label per image.

        Warns
        -----
        DisconnectedMosaicWarning
            When the overlap graph falls apart in several components under a match method.

        Notes
        -----
        One matcher may be used from several threads: their runs take turns (a lock), since
        they share the stage caches; each gets the result it would get alone.

        Examples
        --------
        >>> from skymatch_nb_ui.testing import make_mosaic
        >>> m = make_mosaic((1, 3), sky=[7, 5, 9])
        >>> matcher = SkyMatcher(m.images, m.wcs)
        >>> matcher.run(skymethod="local", skystat="mean").sky.tolist()
        [7.0, 5.0, 9.0]
        >>> mean = matcher.params.replace(skystat="mean")
        >>> matcher.run(mean, skymethod="global").sky.tolist()
        [5.0, 5.0, 5.0]
        """
        if params is None:
            params = self.params
        elif not isinstance(params, SkyMatchParams):
            raise TypeError(f"params must be a SkyMatchParams; got {type(params).__name__}")
        if changes:
            params = params.replace(**changes)
        grouping = group_inputs(groups, len(self))
        with self._lock:  # one run at a time: the caches and the serial scratch are shared
            self._use_stepsize(params.stepsize)
            pairs, local, image_npix = self._statistics(params, grouping)
            pair_cov = None
            if "match" in params.skymethod:
                pair_cov = pair_covariance(self._shared_sides(grouping), pairs.side_var)
            problem = Problem(len(grouping), pairs, local, params.match_down, params.anchor,
                              names=tuple(grouping.names()), robust=params.robust,
                              pair_cov=pair_cov)
            solution = solve(params.skymethod, problem)
        result = assemble_result(solution, pairs, local, grouping, image_npix, params.as_dict())
        if params.subtract:
            result = with_subtracted(result, (loader.data() for loader in self._loaders))
        for message in result.warnings:
            warnings.warn(message, DisconnectedMosaicWarning, stacklevel=3)
        return result

    # -- stage 1 ----------------------------------------------------------------------------
    def _use_stepsize(self, stepsize: int | None) -> None:
        """Make ``stepsize`` current; a new one drops the geometry and what depends on it."""
        if stepsize != self._stepsize:
            self._stepsize, self._geometry = stepsize, None
            self._pair_stats.clear()
            self._input_pairs.clear()
            self._differences.clear()
            self._maps.clear()
            self._shared.clear()

    def _shared_sides(self, grouping: Grouping) -> SharedSides:
        """Which sides of the input pairs share pixels (for the pairs' covariance)."""
        labels = tuple(grouping.label_of)
        if labels not in self._shared:
            overlaps = input_overlaps(self.geometry.runs, grouping.label_of)
            keys = [(g, h) for g, h in overlaps if g < h]
            self._shared[labels] = shared_sides(overlaps, keys, self.geometry.runs, self._shapes)
        return self._shared[labels]

    # -- stage 2 ----------------------------------------------------------------------------
    def _statistics(self, params: SkyMatchParams, grouping: Grouping):
        """Pair statistics of the inputs, their own statistics and each image's pixel count.

        The statistics not cached yet are computed together, in one batch of tasks.
        """
        matching = "match" in params.skymethod
        key = params.key("statistics")
        pair_key = (key if matching else None, tuple(grouping.label_of))
        pairs = self._input_pairs.get(pair_key)
        overlaps = None
        needed: list = []
        compared: list = []
        differences = params.compare == "differences"
        if pairs is None:
            overlaps = input_overlaps(self.geometry.runs, grouping.label_of)
            if matching and differences:
                compared = [self._sampled(a, b) for (g, h), side in overlaps.items() if g < h
                            for a, bs in side.items() for b in bs]
            elif matching:
                needed = [(a, bs) for side in overlaps.values() for a, bs in side.items()]
        images = range(len(self)) if params.skymethod != "match" else ()
        self._fill(params, pairs=needed, images=images)
        self._fill_differences(params, compared)
        if pairs is None:
            if matching and differences:
                pairs = input_pair_differences(overlaps, lambda a, b: self._difference(key, a, b))
            else:
                stat_of = (lambda a, bs: self._pair_stats[(key, a, bs)]) if matching else None
                pairs = input_pair_stats(overlaps, stat_of)
            self._input_pairs[pair_key] = pairs
        if params.skymethod == "match":
            return pairs, None, None
        image_local = [self._local_stats[(key, a)] for a in range(len(self))]
        local = [lowest([image_local[a] for a in members]) for members in grouping.members]
        return pairs, local, np.array([s.npix for s in image_local], dtype=np.int64)

    def _fill(self, params: SkyMatchParams, *, pairs=(), images=()) -> None:
        """Compute the statistics not cached yet, as independent tasks (`measure_image`).

        An image in memory gets one task per pixel set (finer tasks balance the threads
        better); an image read by a loader gets one task for all its pixel sets, so that its
        pixels are read once.
        """
        key = params.key("statistics")
        todo = [(a, None) for a in dict.fromkeys(images) if (key, a) not in self._local_stats]
        todo += [(a, p) for a, p in dict.fromkeys(pairs) if (key, a, p) not in self._pair_stats]
        if not todo:
            return
        owners = self._batches(todo)
        tasks = [self._task(a, partner_sets) for a, partner_sets in owners]
        results = run_tasks(tasks, params.stat, workers=self._workers, scratch=self._scratch)
        for (a, partner_sets), stats in zip(owners, results):
            for partners, value in zip(partner_sets, stats):
                if partners is None:
                    self._local_stats[(key, a)] = value
                else:
                    self._pair_stats[(key, a, partners)] = value

    def _sampled(self, a: int, b: int) -> tuple[int, int]:
        """The pair (a, b) as (image whose pixels are compared, image interpolated).

        The image with more pixels in the overlap (the finer sampling) is compared, the other
        interpolated; on a tie, the one whose footprint centre comes first (by its unit
        vector), so that the choice does not depend on the order of the images.
        """
        geo = self.geometry
        na, nb = geo.runs[(a, b)].npix, geo.runs[(b, a)].npix
        if na != nb:
            return (a, b) if na > nb else (b, a)
        ca, cb = tuple(geo.footprints[a].center), tuple(geo.footprints[b].center)
        return (a, b) if (ca, a) <= (cb, b) else (b, a)

    def _difference(self, key: tuple, a: int, b: int) -> PairDifference:
        """Image a's sky minus image b's over their overlap (measured one way or the other)."""
        s, o = self._sampled(a, b)
        found = self._differences[(key, s, o)]
        return found if s == a else found.reversed()

    def _fill_differences(self, params: SkyMatchParams, compared: list) -> None:
        """Measure the pixel differences not cached yet (`measure_differences` tasks).

        An image in memory gets one task per pair; an image read by a loader one task for all
        the pairs in which its pixels are compared, so that they are read once.
        """
        key = params.key("statistics")
        todo = [c for c in dict.fromkeys(compared) if (key, *c) not in self._differences]
        if not todo:
            return
        by_image: dict[int, list] = {}
        batches: list[list] = []
        for s, o in todo:
            if _in_memory(self._loaders[s]) or s not in by_image:
                by_image[s] = [(s, o)]
                batches.append(by_image[s])
            else:
                by_image[s].append((s, o))
        tasks = [
            DifferenceTask(
                self._loaders[batch[0][0]],
                tuple(Comparison(self._loaders[o], self.geometry.runs[(s, o)], self._map(s, o))
                      for s, o in batch),
                sum(self.geometry.runs[(s, o)].npix for s, o in batch),
                label=f"images[{batch[0][0]}]",
            )
            for batch in batches
        ]
        results = run_tasks(tasks, params.stat, workers=self._workers, scratch=self._scratch)
        for batch, stats in zip(batches, results):
            for (s, o), stat in zip(batch, stats):
                self._differences[(key, s, o)] = stat

    def _map(self, s: int, o: int) -> PixelMap:
        """Where image s's pixels inside image o fall in image o (cached with the geometry)."""
        if (s, o) not in self._maps:
            self._maps[(s, o)] = pixel_map(self._wcs[s], self._wcs[o], self.geometry.runs[(s, o)])
        return self._maps[(s, o)]

    def _batches(self, todo: list) -> list[tuple[int, list]]:
        """``(image, [None (all pixels) or partner set, ...])`` per task, in ``todo`` order."""
        batches: list[tuple[int, list]] = []
        by_image: dict[int, list] = {}
        for a, partners in todo:
            if _in_memory(self._loaders[a]):
                batches.append((a, [partners]))
            elif a in by_image:
                by_image[a].append(partners)
            else:
                by_image[a] = [partners]
                batches.append((a, by_image[a]))
        return batches

    def _task(self, a: int, partner_sets: list) -> Task:
        runs = self.geometry.runs
        regions = tuple(
            None if p is None else tuple(runs[(a, b)] for b in sorted(p)) for p in partner_sets
        )
        size = sum(
            int(np.prod(self._shapes[a])) if r is None else sum(x.npix for x in r) for r in regions
        )
        return Task(self._loaders[a], regions, size, label=f"images[{a}]")


def _in_memory(loader: ImageLoader) -> bool:
    return bool(getattr(loader, "in_memory", False))


def skymatch(
    images,
    wcs,
    *,
    masks=None,
    groups: Sequence[Hashable] | None = None,
    skymethod: SkyMethod = "match",
    match_down: bool = True,
    subtract: bool = False,
    skystat: SkyStatName = "mode",
    lower: float | None = None,
    upper: float | None = None,
    nclip: int = 5,
    lsigma: float = 4.0,
    usigma: float = 4.0,
    binwidth: float = 0.1,
    compare: Compare = "differences",
    stepsize: int | None = None,
    anchor: Anchor = "global",
    robust: bool = True,
) -> SkyMatchResult:
    """Measure the sky of overlapping images and make it agree where they overlap.

    Parameters
    ----------
    images : sequence of 2-D array or ImageLoader
        The images (any real dtype, any shapes).  Never changed.  An image may be a loader
        (see `SkyMatcher`), read only when its pixels are needed.
    wcs : sequence
        One celestial WCS per image: `astropy.wcs.WCS` (SIP and other distortions honoured)
        or ``gwcs.WCS``, in any celestial frames (converted to ICRS when they differ).
    masks : sequence of 2-D bool array, optional
        True = good pixel.  Non-finite pixels are always ignored, and so are the masked
        pixels of a `numpy.ma.MaskedArray` image.
    groups : sequence of hashable, optional
        One label per image; images with the same label share one sky (e.g. the detectors of
        one exposure).  None (or a missing label: None, NaN, ``pandas.NA``) leaves an
        image alone.
    {parameters}

    Returns
    -------
    SkyMatchResult

    Raises
    ------
    TypeError
        For an argument of the wrong kind (the message names it and what it must be).
    ValueError
        For a value outside its domain: e.g. an unknown ``skymethod``, ``lower > upper``,
        masks or groups that do not match the images.

    Warns
    -----
    DisconnectedMosaicWarning
        When the overlap graph falls apart in several components under a match method.

    See Also
    --------
    SkyMatcher : the same with every stage's results kept, for fast re-runs.
    SkyMatchParams : the parameters as one validated object.

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> skymatch(m.images, m.wcs, skymethod="match", skystat="mean").sky.round(6).tolist()
    [0.0, 20.0, 5.0, 10.0, 5.0, 15.0]
    """
    params = SkyMatchParams(
        skymethod=skymethod, match_down=match_down, subtract=subtract, skystat=skystat,
        lower=lower, upper=upper, nclip=nclip, lsigma=lsigma, usigma=usigma, binwidth=binwidth,
        compare=compare, stepsize=stepsize, anchor=anchor, robust=robust,
    )
    matcher = SkyMatcher(images, wcs, masks=masks, stepsize=params.stepsize)
    return matcher.run(params, groups=groups)


if skymatch.__doc__:  # None under python -OO
    skymatch.__doc__ = skymatch.__doc__.replace("{parameters}", parameters_doc().lstrip())
