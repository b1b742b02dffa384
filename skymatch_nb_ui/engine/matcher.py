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
import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace

import numpy as np

from . import reads
from ._execute import Execution, Progress, balanced, batches_of, check_scheduler
from ._validate import caller_stacklevel, check_images, check_wcs, check_workers
from .covariance import SharedSides, error_covariance, pair_covariance, shared_sides
from .differences import PixelMap, pixel_map, pixel_maps
from .exceptions import DisconnectedMosaicWarning
from .geometry import Footprint, Geometry, Runs, mosaic_geometry
from .groups import Grouping, group_inputs, input_overlaps
from .loaders import ImageLoader
from .measure import (
    Comparison,
    DifferenceTask,
    PairDifference,
    Task,
    finish_sides,
    in_batch,
    input_pair_differences,
    input_pair_stats,
    lowest,
    measure_batch,
    release_scratch,
    scene_error,
    together,
)
from .params import (
    Anchor,
    Compare,
    SkyMatchParams,
    SkyMethod,
    SkyModel,
    SkyStatName,
    parameters_doc,
)
from .result import SkyMatchResult, assemble_result, plane_of, subtracted_copy
from .solve import Problem, _disconnected_message, solve

__all__ = ["SkyMatcher", "skymatch"]

#: Most images per task sent to a worker process or a Dask worker.
BATCH = 64
#: Each set of pair statistics' covariances (`SkyMatcher._pair_covariances`); a `PairStats`
#: belongs to one grouping, and its covariances follow from it.
_COVARIANCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
        Threads or worker processes for the statistics (None: one per CPU core, at most 4;
        1: everything in the calling thread).
    scheduler : str, distributed.Client or concurrent.futures.Executor, optional
        Where the statistics run: ``"auto"`` (None; worker processes when there is much to
        measure, in files or in memory: images in memory are shared with workers forked for
        the run, on Linux when no other thread runs; else this process), ``"serial"``,
        ``"threads"``, ``"processes"``, a ``distributed.Client`` or a Dask scheduler's
        address (``"tcp://host:8786"``), or any ``concurrent.futures.Executor``.  Not a
        parameter of the science: every choice gives the same results, bit for bit.  See
        `skymatch_nb_ui.engine._execute`.

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
                 workers: int | None = None, scheduler=None):
        self._loaders: list[ImageLoader] = check_images(images, masks)
        self._wcs = check_wcs(wcs, len(self._loaders))
        self._stepsize = SkyMatchParams.specs()["stepsize"].check(stepsize)
        self.workers = workers
        self.scheduler = scheduler
        self._shapes = [tuple(loader.shape) for loader in self._loaders]
        self._geometry: Geometry | None = None
        self._local_stats: dict = {}  # (statistics key, image) -> SkyStat
        self._pair_stats: dict = {}  # (statistics key, image, partners) -> SkyStat
        self._input_pairs: dict = {}  # (statistics key or None, labels) -> PairStats
        self._planes = None  # PlaneStage, made by the first run with skymodel="plane"
        self._differences: dict = {}  # (statistics key, sampled, other) -> PairDifference
        self._maps: dict = {}  # (sampled, other) -> PixelMap
        self._shared: dict = {}  # labels -> SharedSides
        self._sampled_pairs: dict = {}  # (a, b) and (b, a) -> `_sampled(a, b)`
        self._overlaps: dict = {}  # labels -> `input_overlaps`
        self._lock = threading.RLock()  # runs from several threads take turns

    def __len__(self) -> int:
        return len(self._loaders)

    @property
    def workers(self) -> int:
        """Threads or worker processes for the statistics (settable; None: the default)."""
        return self._workers

    @workers.setter
    def workers(self, workers: int | None) -> None:
        self._workers = check_workers(workers)

    @property
    def scheduler(self):
        """Where the statistics run (settable; see the class's ``scheduler`` parameter)."""
        return self._scheduler

    @scheduler.setter
    def scheduler(self, scheduler) -> None:
        self._scheduler = check_scheduler(scheduler)

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
            return self._stage_geometry(None)

    def _stage_geometry(self, execution: Execution | None) -> Geometry:
        if self._geometry is None:
            step = None
            if execution is not None:
                def step(done: int, total: int) -> None:
                    if done % 16 == 0 or done == total:
                        execution.check("geometry", done, total)
                        execution.report("geometry", done, total)
            run = None
            kind = execution.geometry_kind(len(self)) if execution is not None else "serial"
            if kind != "serial":
                def run(function, arguments):  # one task per image with neighbours
                    n = len(self)
                    return execution.map("geometry", function, arguments, units=[1] * len(arguments),
                                         kind=kind, counted=(n, 2 * n))
            self._geometry = mosaic_geometry(self._wcs, self._shapes, self._stepsize, step=step,
                                             run=run)
        elif execution is not None:
            execution.report("geometry", 2 * len(self), 2 * len(self))
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
        progress: Callable[[Progress], object] | None = None,
        cancel=None,
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
        progress : callable, optional
            Called (in the calling thread) with a `Progress` ``(stage, done, total)`` as the
            run goes: stages ``"geometry"``, ``"statistics"``, ``"solve"`` and, with
            ``subtract``, ``"subtract"``; a stage whose results are cached reports
            ``done == total`` at once.
        cancel : threading.Event, optional
            Set it (from another thread, e.g. a Cancel button) to stop the run between
            tasks: `run` then raises `SkyMatchCancelled`.  The statistics that finished are
            kept, so the next run does not compute them again.
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
        SkyMatchCancelled
            When ``cancel`` was set before the run finished.

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
        execution = Execution(self._scheduler, self._workers, progress=progress, cancel=cancel)
        try:
            if params.skymodel == "plane":
                result = self._run_planes(params, grouping, execution)
            else:
                result = self._solve_constant(params, grouping, execution)
        finally:  # the buffers and the pixels of Roman-size images are not kept after the run
            release_scratch()
            reads.release_kept()
        execution.report("solve", 1, 1)
        if params.subtract:
            result = self._subtracted(result, execution)
        for message in result.warnings:
            warnings.warn(message, DisconnectedMosaicWarning, stacklevel=caller_stacklevel())
        return result

    def _solve_constant(self, params: SkyMatchParams, grouping: Grouping,
                        execution: Execution) -> SkyMatchResult:
        """Stages 1-3 with ``skymodel="constant"``: the result before any subtraction."""
        with self._lock:  # one run at a time: the caches are shared
            self._use_stepsize(params.stepsize)
            self._stage_geometry(execution)
            if "match" in params.skymethod:  # (cached; done while forked workers measure)
                execution.meanwhile(lambda: self._shared_sides(grouping))
            pairs, local, image_npix = self._statistics(params, grouping, execution)
            execution.check("solve")
            execution.report("solve", 0, 1)
            pair_cov = error_cov = None
            if "match" in params.skymethod:
                pair_cov, error_cov = self._pair_covariances(pairs, grouping)
            problem = Problem(len(grouping), pairs, local, params.match_down, params.anchor,
                              names=tuple(grouping.names()), robust=params.robust,
                              pair_cov=pair_cov, error_cov=error_cov)
            solution = solve(params.skymethod, problem, check=lambda: execution.check("solve"))
        return assemble_result(solution, pairs, local, grouping, image_npix, params.as_dict())

    def _subtracted(self, result: SkyMatchResult, execution: Execution) -> SkyMatchResult:
        """``result`` with sky-subtracted copies of the images (read one at a time)."""
        copies = []
        for k, loader in enumerate(self._loaders):
            execution.check("subtract", k, len(self))
            copies.append(subtracted_copy(loader.data(), result.sky[k], result.valid[k],
                                          **plane_of(result, k)))
            execution.report("subtract", k + 1, len(self))
        return replace(result, images=tuple(copies))

    def _run_planes(self, params: SkyMatchParams, grouping: Grouping, execution: Execution):
        """Stages 1-3 with ``skymodel="plane"`` (`plane_match`): the result before subtraction."""
        from .plane_match import (
            PlaneStage,
            constant_planes,
            plane_result,
            slopes_significant,
            solve_planes,
        )

        matching = "match" in params.skymethod
        own = params.skymethod != "match"
        with self._lock:
            self._use_stepsize(params.stepsize)
            geometry = self._stage_geometry(execution)
            if self._planes is None:
                self._planes = PlaneStage(self._wcs, self._shapes, geometry.footprints)
            stage = self._planes
            stage.use_geometry(geometry)
            if matching and params.compare == "differences":
                self._maps_beside_layout(stage, geometry, grouping, execution)
            layout = stage.layout(geometry, grouping, self._input_overlaps(grouping))
            sampled = getattr(self, "_sampled", None)  # compare="differences" (issue 11)
            key = params.key("statistics")

            def whole(s, o, value):  # the whole overlap's differences, from the cells' pass
                self._differences[(key, s, o)] = value

            if matching and params.compare == "differences":  # the pairs' maps, all at once
                self._fill_maps([(s, o) for plan in layout.plans
                                 for _, s, o, _ in stage.difference_jobs(plan, sampled)])
            stage.measure(layout, params, self._loaders, execution, pairs=matching, local=own,
                          sampled=sampled, pixel_map=getattr(self, "_map", None), on_whole=whole)
            if matching:  # the whole overlaps' statistics: the pair table, and the fallbacks
                pairs = self._statistics(params.replace(skymethod="match"), grouping, execution)[0]
            else:
                pairs = input_pair_stats(self._input_overlaps(grouping), None)
            execution.check("solve")
            execution.report("solve", 0, 1)
            equations = stage.equations(layout, params, pairs, sampled) if matching else None
            local = stage.local_planes(layout, params, grouping)[1] if own else None
            problem = Problem(len(grouping), pairs, None, params.match_down, params.anchor,
                              names=tuple(grouping.names()))
            solution = solve_planes(params.skymethod, layout, grouping, equations, local,
                                    params.match_down, params.anchor,
                                    lambda comp, n: _disconnected_message(problem, comp, n))
        own_npix = stage.cell_pixels(layout, params) if own else None
        result = plane_result(solution, layout, pairs, grouping, own_npix, params.as_dict())
        if not slopes_significant(solution, params.slope_significance):
            # no gradient to speak of: the constants' levels, slopes 0 (`slope_significance`)
            constant = self._solve_constant(params.replace(skymodel="constant"), grouping,
                                            execution)
            result = constant_planes(result, constant, solution, layout, equations)
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
            self._sampled_pairs.clear()
            self._overlaps.clear()

    def _pair_covariances(self, pairs, grouping: Grouping):
        """The pairs' covariances for the robust solve and for the errors.

        Computed once per set of pair statistics: a solve-only change re-uses them.
        """
        found = _COVARIANCES.get(pairs)
        if found is None:
            shared = self._shared_sides(grouping)
            found = _COVARIANCES[pairs] = (pair_covariance(shared, pairs.side_var),
                                           error_covariance(shared, pairs))
        return found

    def _input_overlaps(self, grouping: Grouping) -> dict:
        """`input_overlaps` of the geometry for ``grouping`` (kept: several stages ask)."""
        labels = tuple(grouping.label_of.tolist())
        if labels not in self._overlaps:
            self._overlaps[labels] = input_overlaps(self.geometry.runs, grouping.label_of)
        return self._overlaps[labels]

    def _shared_sides(self, grouping: Grouping) -> SharedSides:
        """Which sides of the input pairs share pixels (for the pairs' covariance)."""
        labels = tuple(grouping.label_of)
        if labels not in self._shared:
            overlaps = self._input_overlaps(grouping)
            keys = [(g, h) for g, h in overlaps if g < h]
            self._shared[labels] = shared_sides(overlaps, keys, self.geometry.runs, self._shapes)
        return self._shared[labels]

    # -- stage 2 ----------------------------------------------------------------------------
    def _statistics(self, params: SkyMatchParams, grouping: Grouping, execution: Execution):
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
            overlaps = self._input_overlaps(grouping)
            if matching and differences:
                compared = [self._sampled(a, b) for (g, h), side in overlaps.items() if g < h
                            for a, bs in side.items() for b in bs]
            elif matching:
                needed = [(a, bs) for side in overlaps.values() for a, bs in side.items()]
        images = range(len(self)) if params.skymethod != "match" else ()
        self._fill(params, execution, pairs=needed, images=images, compared=compared)
        if pairs is None:
            if matching and differences:
                pairs = input_pair_differences(overlaps, lambda a, b: self._difference(key, a, b),
                                               params.skystat)
            else:
                stat_of = (lambda a, bs: self._pair_stats[(key, a, bs)]) if matching else None
                pairs = input_pair_stats(overlaps, stat_of)
                if matching:  # what the scene adds to each pair's error (not noise)
                    extra = scene_error(pairs, overlaps, stat_of, self._wcs, signed=True)
                    pairs = replace(pairs, scene_err=np.sqrt(np.maximum(extra, 0.0)),
                                    scene_var=extra)
            self._input_pairs[pair_key] = pairs
        if params.skymethod == "match":
            return pairs, None, None
        image_local = [self._local_stats[(key, a)] for a in range(len(self))]
        local = [lowest([image_local[a] for a in members]) for members in grouping.members]
        return pairs, local, np.array([s.npix for s in image_local], dtype=np.int64)

    def _fill(self, params: SkyMatchParams, execution: Execution, *, pairs=(), images=(),
              compared=()) -> None:
        """Compute the statistics not cached yet, as independent tasks.

        `measure_image` tasks for the images' own statistics and, with ``compare="levels"``,
        the sides of the pairs (``pairs``); `measure_differences` tasks for the pixel
        differences of the ``compared`` pairs ``(sampled, other)`` with
        ``compare="differences"``.  An image read by a loader gets one task of each kind for
        all its pixel sets, so that its pixels are read once; on threads an image in memory
        gets one task per pixel set or pair (finer tasks balance the threads better), and in
        forked workers too when one image alone would be more than a worker's share (`_fair`;
        else one per image, its sides measured together).  For
        worker processes and clusters the tasks travel in batches of several images.  Each
        task's statistics are cached as it finishes.  Where they run is `Execution.kind`'s
        choice (see `_execute`).
        """
        key = params.key("statistics")
        todo = [(a, None) for a in dict.fromkeys(images) if (key, a) not in self._local_stats]
        todo += [(a, p) for a, p in dict.fromkeys(pairs) if (key, a, p) not in self._pair_stats]
        diff_todo = [c for c in dict.fromkeys(compared) if (key, *c) not in self._differences]
        if not todo and not diff_todo:
            execution.report("statistics", 0, 0)
            return
        files = any(not _in_memory(self._loaders[a]) for a, _ in todo + diff_todo)

        whole_together = bool(diff_todo) and together(self._loaders, self.geometry.runs)

        def owners_and_tasks(split: bool):
            owners = self._owners(todo, split=split)
            compares = self._owners(diff_todo, split=split)
            tasks = [self._task(a, partner_sets) for a, partner_sets in owners]
            tasks += [self._difference_task(s, others, whole_together) for s, others in compares]
            return owners, compares, tasks

        self._fill_maps(diff_todo)
        owners, compares, tasks = owners_and_tasks(True)
        differences = sum(t.size for t in tasks if isinstance(t, DifferenceTask))
        gil_free = sum(c.runs.npix for t in tasks if isinstance(t, DifferenceTask)
                       for c in t.comparisons if not in_batch(t.loader, c))
        kind = execution.kind(files, [t.size for t in tasks], gil_free=gil_free, forks=True,
                              differences=differences, sets=len(todo))
        if kind != "threads":  # one task per image: pixels read once, sent once, sides together
            whole = owners_and_tasks(False)
            if kind != "fork" or _fair([t.size for t in whole[2]], self._workers):
                owners, compares, tasks = whole
        if kind not in DEFERRING:  # the workers finish their sides' mode errors themselves
            tasks = [replace(t, defer=False) if isinstance(t, Task) else t for t in tasks]
        planned = self._planned_reads(todo, diff_todo, kind, tasks) if files and diff_todo else None
        if planned is not None:  # large images from files: the reads in a planned order
            compares, tasks, batches = planned
        elif kind in ("serial", "threads", "fork"):  # (forked workers share the arrays)
            batches = [[t] for t in range(len(owners))]
            # the differences in batches of about 2 million pixels (at least 6): the small
            # pairs of a batch are computed together (`measure.batched_differences`)
            first = len(owners)
            batches += [[first + t for t in batch]
                        for batch in batches_of([t.size for t in tasks[first:]])]
        else:  # a few tasks per worker for balance, at most BATCH images per task
            bins = min(len(tasks), max(4 * self._workers, -(-len(tasks) // BATCH)))
            batches = balanced([t.size for t in tasks], bins)

        waiting: list = []  # sides whose mode errors may be pending (`measure.finish_sides`)

        def keep(b: int, stats: list) -> None:
            for t, task_stats in zip(batches[b], stats):
                if t >= len(owners):  # a difference task
                    s, others = compares[t - len(owners)]
                    for o, value in zip(others, task_stats):
                        self._differences[(key, s, o)] = value
                    continue
                a, partner_sets = owners[t]
                for partners, value in zip(partner_sets, task_stats):
                    if partners is None:
                        self._local_stats[(key, a)] = value
                    else:
                        self._pair_stats[(key, a, partners)] = value
                        waiting.append((key, a, partners))
            if len(waiting) >= FINISH_EVERY:  # (with forked workers: while the others measure)
                finish_sides(self._pair_stats, waiting)
                waiting.clear()

        stat = params.stat
        arguments = [([tasks[t] for t in batch], stat) for batch in batches]
        units = [sum(tasks[t].units for t in batch) for batch in batches]
        sizes = [sum(tasks[t].size for t in batch) for batch in batches]
        order = sorted(range(len(batches)), key=sizes.__getitem__, reverse=True)
        if planned is not None:
            order = list(range(len(batches)))  # (the planned order)
        try:
            execution.map("statistics", measure_batch, arguments, units=units, kind=kind,
                          on_result=keep, order=order)
        finally:  # the last sides' mode errors (also of a cancelled run's)
            finish_sides(self._pair_stats, waiting)

    def _planned_reads(self, todo: list, diff_todo: list, kind: str, tasks: list):
        """The tasks and the batches of a run whose reads are planned (`reads`), or None.

        When the images' reads are planned (`reads.largest_planned`: large images from
        files): one `DifferenceTask` per pair, the tasks in
        the order `reads.plan` finds, each read flagged with whether the run reads the image
        again later.  ``tasks`` starts with those of the images' own statistics, as `_owners`
        gives them for ``todo`` (kept, flagged).  Returns ``(compares, tasks, batches)``: the
        pairs as `_owners` gives them, the tasks, the batches of task indices in the order to
        run them (one task a batch on this process's threads, else chunks of the order).
        Workers keep what the run reads later, whoever reads it: a worker that takes the next
        batch often reads the images its last one did, and what it kept for nothing is the
        least recently used, let go first.
        """
        loaders = self._loaders
        used = {a for a, _ in todo} | {i for pair in diff_todo for i in pair}
        largest = reads.largest_planned(loaders[i] for i in used)
        if largest is None:
            return None
        owners = self._owners(todo, split=False)
        compares = [(s, [o]) for s, o in diff_todo]
        key = [reads.pixels_key(ld) for ld in loaders]
        steps = [(key[a],) for a, _ in owners] + [(key[s], key[o]) for s, o in diff_todo]
        order, flags = reads.plan(steps, largest)
        tasks = [replace(t, keep=flags[k][0]) for k, t in enumerate(tasks[: len(owners)])]
        for (s, (o,)), (own, other) in zip(compares, flags[len(owners):]):
            task = self._difference_task(s, [o], False)
            tasks.append(replace(task, keep=own,
                                 comparisons=(replace(task.comparisons[0], keep=other),)))
        if kind in ("serial", "threads"):  # one task a batch, as they come
            return compares, tasks, [[t] for t in order]
        sizes = [tasks[t].size for t in order]
        bins = min(len(order), max(4 * self._workers, -(-len(order) // BATCH)))
        return compares, tasks, [[order[k] for k in chunk] for chunk in reads.chunks(sizes, bins)]

    def _difference_task(self, s: int, others: list, whole_together: bool) -> DifferenceTask:
        """The `measure_differences` task of image ``s``'s pixels against ``others``."""
        runs = self.geometry.runs
        return DifferenceTask(
            self._loaders[s],
            tuple(Comparison(self._loaders[o], runs[(s, o)], self._map(s, o)) for o in others),
            sum(runs[(s, o)].npix for o in others),
            label=f"images[{s}]",
            together=whole_together,
        )

    def _sampled(self, a: int, b: int) -> tuple[int, int]:
        """The pair (a, b) as (image whose pixels are compared, image interpolated).

        The image with more pixels in the overlap (the finer sampling) is compared, the other
        interpolated; on a tie, the one whose footprint centre comes first (by its unit
        vector), so that the choice does not depend on the order of the images.
        """
        found = self._sampled_pairs.get((a, b))  # (asked ~6 times per pair by a plane run)
        if found is None:
            geo = self.geometry
            na, nb = geo.runs[(a, b)].npix, geo.runs[(b, a)].npix
            if na != nb:
                found = (a, b) if na > nb else (b, a)
            else:
                ca, cb = tuple(geo.footprints[a].center), tuple(geo.footprints[b].center)
                found = (a, b) if (ca, a) <= (cb, b) else (b, a)
            self._sampled_pairs[(a, b)] = self._sampled_pairs[(b, a)] = found
        return found

    def _difference(self, key: tuple, a: int, b: int) -> PairDifference:
        """Image a's sky minus image b's over their overlap (measured one way or the other)."""
        s, o = self._sampled(a, b)
        found = self._differences[(key, s, o)]
        return found if s == a else found.reversed()

    def _map(self, s: int, o: int) -> PixelMap:
        """Where image s's pixels inside image o fall in image o (cached with the geometry)."""
        if (s, o) not in self._maps:
            self._maps[(s, o)] = pixel_map(self._wcs[s], self._wcs[o], self.geometry.runs[(s, o)])
        return self._maps[(s, o)]

    def _fill_maps(self, pairs) -> None:
        """`_map` of each ``(s, o)`` of ``pairs`` not cached yet, all at once (`pixel_maps`)."""
        todo = self._maps_todo(pairs)
        for (s, o, _), found in zip(todo, pixel_maps(self._wcs, todo)):
            self._maps[(s, o)] = found

    def _maps_todo(self, pairs) -> list:
        """The requests ``(s, o, runs)`` of `pixel_maps` for the maps of ``pairs`` not cached yet."""
        runs = self.geometry.runs
        return [(s, o, runs[(s, o)]) for s, o in dict.fromkeys(pairs)
                if (s, o) not in self._maps and runs.get((s, o))]

    def _maps_beside_layout(self, stage, geometry: Geometry, grouping: Grouping,
                            execution: Execution) -> None:
        """The pairs' pixel maps computed by a forked worker while this process lays out the planes.

        A plane run with ``compare="differences"`` needs the layout (`PlaneStage.layout`), then
        the maps of the pairs that get cells (`_fill_maps`, one `pixel_maps` call), before its
        statistics; neither needs the other's values, only the list of pairs: that of every
        pair of inputs, unless the layout finds some overlaps too small or thin for cells.  So
        a forked worker computes the maps of that whole list, in the very call `_fill_maps`
        would make (the same requests in the same order: the same WCS calls, the same bits,
        whatever the WCS), while this process computes the layout; they are kept only if the
        layout's list is that one (else dropped: `_fill_maps` computes its own, as without
        the worker).  When stage 1 forks (`Execution.geometry_kind`, many images and an idle
        core).  N = 256 images of 256 x 256: the layout (0.16-0.27 s) and the maps
        (0.14-0.22 s) took turns on the critical path.
        """
        if stage.has_layout(grouping) or execution.geometry_kind(len(self)) != "fork":
            return
        overlaps = self._input_overlaps(grouping)
        if self._maps and not self._maps_todo(self._difference_pairs(overlaps)):
            return  # (all cached: another grouping's run)

        def maps() -> list:  # in the worker (the pairs' list too: 0.02-0.03 s, off the path)
            return _maps_for_batches(self._wcs, self._maps_todo(self._difference_pairs(overlaps)))

        execution.meanwhile(lambda: stage.layout(geometry, grouping, overlaps))
        n = len(self)
        found = execution.map("geometry", maps, [()], units=[0], kind="fork",
                              counted=(2 * n, 2 * n))[0]
        layout = stage.layout(geometry, grouping, overlaps)  # (computed meanwhile)
        actual = [(s, o) for plan in layout.plans
                  for _, s, o, _ in stage.difference_jobs(plan, self._sampled)]
        if actual == self._difference_pairs(overlaps):  # (the maps untouched since the fork)
            todo = self._maps_todo(actual)
            if len(todo) == len(found):
                for (s, o, _), pmap in zip(todo, found):
                    self._maps[(s, o)] = pmap

    def _difference_pairs(self, overlaps: dict) -> list[tuple[int, int]]:
        """The ``(compared, other)`` pairs `PlaneStage.difference_jobs` lists, plan by plan.

        When every pair of inputs gets cells: the same pairs in the same order.
        """
        runs = self.geometry.runs
        return [self._sampled(a, b) for (g, h), side in overlaps.items() if g < h
                for a, partners in side.items() for b in sorted(partners) if runs.get((b, a))]

    def _owners(self, todo: list, *, split: bool) -> list[tuple[int, list]]:
        """``(image, [what to measure, ...])`` per task, in ``todo`` order.

        ``todo`` holds ``(image, what)`` (None for all pixels, a partner set, or the other
        image of a comparison).  With ``split`` an image in memory gets one task per item.
        """
        owners: list[tuple[int, list]] = []
        by_image: dict[int, list] = {}
        for a, partners in todo:
            if split and _in_memory(self._loaders[a]):
                owners.append((a, [partners]))
            elif a in by_image:
                by_image[a].append(partners)
            else:
                by_image[a] = [partners]
                owners.append((a, by_image[a]))
        return owners

    def _task(self, a: int, partner_sets: list) -> Task:
        runs = self.geometry.runs
        regions = tuple(
            None if p is None else tuple(runs[(a, b)] for b in sorted(p)) for p in partner_sets
        )
        size = sum(
            int(np.prod(self._shapes[a])) if r is None else sum(x.npix for x in r) for r in regions
        )
        return Task(self._loaders[a], regions, size, label=f"images[{a}]", defer=True)


def _maps_for_batches(wcs, requests) -> list[PixelMap]:
    """`pixel_maps` of ``requests``, with the test `measure.in_batch` asks of each (cached)."""
    found = pixel_maps(wcs, requests)
    for pmap in found:
        pmap.off_centres  # noqa: B018 (a cached property, computed where the maps are)
    return found


#: Where the statistics tasks leave the sides' mode errors for this process to compute many at
#: once (`measure.finish_sides`, ~2x cheaper than one by one), `FINISH_EVERY` sides at a time
#: as their results come in: where this process computes or receives them anyway (forked
#: workers: between its own tasks, while the others measure).  A pool's workers and a
#: cluster's compute theirs (here they would all wait for this one process).
DEFERRING = ("serial", "threads", "fork")
FINISH_EVERY = 128


def _fair(sizes: Sequence[int], workers: int) -> bool:
    """Whether forked workers take one task per image, of ``sizes``: none over a worker's share.

    An image's sides measured together share their fixed costs (plane fits and sample
    positions stacked per image), which one task per side (threads' rule, from before those
    were stacked) paid again: N = 64 of 1024 x 1024, levels, mode, 2 workers: 420 tasks of
    2-8 ms cost 1.14-1.19 s of CPU against 0.99-1.05 s for the 64 per-image tasks serially
    (+15-18%, load ~1.2); interleaved A/B at load 1.7-2.4, 8 rounds, min / median, both
    processes' CPU: match 1.27 / 1.62 -> 0.96 / 1.29 s, global+match 1.85 / 2.15 -> 1.63 /
    1.89 s.  Few images gain too (statistics stage wall, 6 rounds, load ~2.3, per side ->
    per image: 2 x 3 of 1024 x 1024: 0.113 / 0.119 -> 0.073 / 0.104 s; 3 x 3: 0.177 / 0.194
    -> 0.128 / 0.163 s; 2 x 2 the same).  Largest first, the last of 64 tasks leaves the other
    process idle ~7 ms.  Only an image whose sides are more than a worker's share of the
    work is split, so that no worker is left waiting for it.
    """
    return max(sizes, default=0) * workers <= sum(sizes)


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
    skymodel: SkyModel = "constant",
    slope_significance: float = 1e-3,
    scheduler=None,
    workers: int | None = None,
    progress: Callable[[Progress], object] | None = None,
    cancel=None,
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
    scheduler, workers
        Where and on how many workers the statistics run (see `SkyMatcher`); they never
        change the results.
    progress, cancel
        A progress callback and a cancel event, as `SkyMatcher.run` takes them.

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
        compare=compare, stepsize=stepsize, anchor=anchor, robust=robust, skymodel=skymodel,
        slope_significance=slope_significance,
    )
    matcher = SkyMatcher(images, wcs, masks=masks, stepsize=params.stepsize, workers=workers,
                         scheduler=scheduler)
    return matcher.run(params, groups=groups, progress=progress, cancel=cancel)


if skymatch.__doc__:  # None under python -OO
    skymatch.__doc__ = skymatch.__doc__.replace("{parameters}", parameters_doc().lstrip())
