"""``skymodel="plane"`` from stage 1 to the result: frames, cell statistics, solve, per-image planes.

`PlaneStage` is what `SkyMatcher` calls for a plane run (the model, the cells and the
solve are described in `skymatch_nb_ui.engine.planes`):

1. `PlaneStage.layout`: per grouping, a frame per connected part of the overlap graph, each
   image's map into it, each input's centre, and per pair of inputs its cell grid (or why it
   can only give a constant);
2. the cell statistics not cached yet, as stage-2 tasks (`planes.measure_cell_batch`: one
   per image, in batches of about 2 million pixels whose cells get their statistics
   together, the same batches however they run; run where the constant statistics run);
3. `solve_planes`: equations from the cells, the sparse solve, the skymethod, and each
   image's own (level, slope_x, slope_y) with its covariance.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace

import numpy as np

from . import reads
from ._execute import batches_of
from .geometry import CelestialWCS, Geometry, Runs
from .groups import Grouping, input_overlaps
from .lstsq import components
from .measure import PairStats, in_batch, together
from .planes import (
    CELLS_PER_OVERLAP,
    LOCAL_CELLS,
    MIN_CELL_PIXELS,
    MIN_CELL_SIDE,
    MIN_CELLS,
    MIN_SPREAD,
    CellGrid,
    CellStats,
    CellTask,
    DifferenceRegion,
    Frame,
    ImageMap,
    PlaneFit,
    fit_plane,
    image_map,
    measure_cell_batch,
    solve_plane_offsets,
)

__all__ = ["PlaneResult", "PlaneStage"]

@dataclass(frozen=True, eq=False)
class PlaneResult:
    """The plane-specific part of a `SkyMatchResult` (``skymodel="plane"``), over images and pairs.

    Attributes
    ----------
    slope_x, slope_y : ndarray
        Per image, the sky's slope along its own pixel x and y (data units per pixel); the
        level at its centre is ``SkyMatchResult.sky``.
    cov : ndarray (n, 3, 3)
        Per image, the covariance of (level, slope_x, slope_y); the slopes' NaN for an image
        whose own pixels were too few for them (its level alone, slopes 0: see ``reason``).
    gradient : ndarray
        Per image, the size of the sky gradient, data units per arcsec on the sky.
    gradient_pa : ndarray
        Per image, the direction in which the sky increases, degrees east of north (NaN for
        a zero gradient).
    resid_gradient : ndarray
        Per pair of inputs, the size of the gradient of the pair's residuals after the solve
        (data units per arcsec; NaN for a pair that gave a constant only).
    plane_fallback : ndarray of str
        Per pair, "" when its cells constrained the planes, else why it counted as a constant.
    cells : ndarray of int
        Per pair, the equations (cells) it gave to the solve (1 for a constant, 0 for none).
    flat : bool
        True when the slope test found no gradient (``slope_significance``): the levels are
        those of ``skymodel="constant"``, the slopes 0 with their fitted errors.
    """

    slope_x: np.ndarray
    slope_y: np.ndarray
    cov: np.ndarray
    gradient: np.ndarray
    gradient_pa: np.ndarray
    resid_gradient: np.ndarray
    plane_fallback: np.ndarray
    cells: np.ndarray
    flat: bool = False


@dataclass(frozen=True, eq=False)
class _PairPlan:
    g: int
    h: int
    centroid: np.ndarray  # of the overlap, in the frame (arcsec)
    side: float  # the cells' smaller side (arcsec); NaN when the pair gives a constant only
    reason: str  # why a constant only ("" when cells are measured)
    jobs: tuple  # ((side 0|1, image, partners, CellGrid), ...)


@dataclass(frozen=True, eq=False)
class _Layout:
    frame_of: np.ndarray  # per input, its frame's index
    image_input: np.ndarray  # per image, its input
    frames: list
    maps: list  # per image, ImageMap in its input's frame
    centres: np.ndarray  # per input (n, 2), arcsec in its frame
    plans: list  # per pair of inputs, in the order of input_pair_stats
    local_grids: list  # per image, the CellGrid of its own cells


class PlaneStage:
    """The plane-specific stages of one `SkyMatcher`, with their caches."""

    def __init__(self, wcs: list[CelestialWCS], shapes: list[tuple[int, int]], footprints):
        self._wcs = wcs
        self._shapes = shapes
        self._footprints = footprints
        self._layouts: dict = {}  # labels -> _Layout
        self.cells: dict = {}  # (statistics key, image, partners or None, grid key) -> CellStats
        # (plan, sampled) -> `difference_jobs`; a bound method by its function and object's
        # id (`_token`): the matcher's, which holds this stage
        self._difference_jobs: dict = {}
        # (statistics key, image) -> (layout, cell keys, positions, multiplicity) of the image's
        # pair cells, computed by the task that measured them (`_cell_terms`)
        self._terms: dict = {}
        # (statistics key, pair index) -> (layout, `_pair_cells`), computed by the same tasks
        self._pair_terms: dict = {}

    # -- stage 1 for planes ------------------------------------------------------------------
    def layout(self, geometry: Geometry, grouping: Grouping, overlaps: dict | None = None) -> _Layout:
        """Frames, maps, centres and the pairs' cell grids for ``grouping`` (cached).

        ``overlaps``: `input_overlaps` of ``geometry`` for ``grouping``, if known.
        """
        labels = tuple(grouping.label_of.tolist())
        if labels not in self._layouts:
            self._layouts[labels] = self._make_layout(geometry, grouping, overlaps)
        return self._layouts[labels]

    def has_layout(self, grouping: Grouping) -> bool:
        """Whether the layout for ``grouping`` is cached (`layout`)."""
        return tuple(grouping.label_of.tolist()) in self._layouts

    def _make_layout(self, geometry: Geometry, grouping: Grouping, overlaps=None) -> _Layout:
        if overlaps is None:
            overlaps = input_overlaps(geometry.runs, grouping.label_of)
        keys = [(g, h) for g, h in overlaps if g < h]
        n = len(grouping)
        comp = components(n, np.array([k[0] for k in keys], np.intp),
                          np.array([k[1] for k in keys], np.intp))
        frames = []
        for c in range(int(comp.max()) + 1 if n else 0):
            images = [a for g in np.flatnonzero(comp == c) for a in grouping.members[g]]
            frames.append(Frame.at(np.array([self._footprints[a].center for a in images])))
        maps = [image_map(self._wcs[a], self._shapes[a], frames[comp[grouping.label_of[a]]])
                for a in range(len(self._shapes))]
        centres = np.array([np.mean([maps[a].q_affine for a in m], axis=0) for m in grouping.members])
        moments = _moments_of(geometry.runs)
        plans = self._plans(keys, overlaps, maps, moments)
        local = []
        for ny, nx in self._shapes:
            side = max(MIN_CELL_SIDE, min(nx, ny) / LOCAL_CELLS)
            local.append(CellGrid(np.eye(2) / side, np.zeros(2)))
        return _Layout(comp, grouping.label_of.copy(), frames, maps, centres.reshape(-1, 2), plans,
                       local)

    def _plans(self, keys, overlaps, maps, moments: dict) -> list[_PairPlan]:
        """The cell grids of the pairs ``keys`` (``moments``: `_moments_of` the runs).

        Each pair's pixel moments in the frame, from its members' moments through their
        affine maps: all the pairs' members at once (stacked 2 x 2 products, the same
        arithmetic member by member), summed per pair in member order.
        """
        pair_of, member, stats = [], [], []
        scale = np.zeros(len(keys))
        for p, (g, h) in enumerate(keys):
            sides = (overlaps[(g, h)], overlaps[(h, g)])
            for side in sides:
                for a in side:
                    scale[p] = max(scale[p], maps[a].pixel_scale)
            for a, partners in sides[0].items():
                for b in partners:
                    if (a, b) in moments:  # else no pixels
                        pair_of.append(p)
                        member.append(a)
                        stats.append(moments[(a, b)])
        n_pairs = len(keys)
        count = np.zeros(n_pairs)
        mean = np.zeros((n_pairs, 2))
        second = np.zeros((n_pairs, 2, 2))
        area = np.zeros(n_pairs)
        if stats:
            pair_of = np.array(pair_of, np.intp)
            n = np.array([t[0] for t in stats], float)
            mu = np.array([t[1] for t in stats])
            cov = np.array([t[2] for t in stats])
            jac = np.array([maps[a].jac for a in member])
            q = (np.matmul(jac, (mu - np.array([maps[a].pixel_centre for a in member]))[:, :, None])
                 [:, :, 0] + np.array([maps[a].q_affine for a in member]))
            c = jac @ cov @ jac.transpose(0, 2, 1)
            count = np.bincount(pair_of, n, minlength=n_pairs)
            weighted = n[:, None] * q
            mean = np.column_stack([np.bincount(pair_of, weighted[:, k], minlength=n_pairs)
                                    for k in (0, 1)])
            terms = n[:, None, None] * (c + q[:, :, None] * q[:, None, :])
            for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                second[:, i, j] = np.bincount(pair_of, terms[:, i, j], minlength=n_pairs)
            area = np.bincount(pair_of, n * np.array([maps[a].pixel_scale for a in member]) ** 2,
                               minlength=n_pairs)
        plans = [None] * n_pairs
        live = np.flatnonzero(count > 0)
        for p in np.flatnonzero(count == 0):
            g, h = keys[p]
            plans[p] = _PairPlan(g, h, np.full(2, np.nan), math.nan, "no pixels in the overlap", ())
        if len(live):
            m = mean[live] / count[live, None]
            spread = second[live] / count[live, None, None] - m[:, :, None] * m[:, None, :]
            eigen, axes = np.linalg.eigh(spread)  # across (smaller spread), then along
            for k, p in enumerate(live.tolist()):
                plans[p] = self._plan(keys[p], overlaps, maps, m[k], eigen[k], axes[k],
                                      float(area[p]), float(scale[p]))
        return plans

    @staticmethod
    def _plan(key, overlaps, maps, mean, eigen, axes, area: float, scale: float) -> _PairPlan:
        """The cell grid of the pair ``key`` from its pixels' mean, spread (eigen) and area."""
        g, h = key
        sides = (overlaps[(g, h)], overlaps[(h, g)])
        width, length = (math.sqrt(12.0 * max(float(v), 0.0)) for v in eigen)
        smallest = MIN_CELL_SIDE * scale
        if area < MIN_CELLS * smallest**2:
            reason = f"overlap too small for {MIN_CELLS} cells of {MIN_CELL_SIDE} x {MIN_CELL_SIDE} pixels"
            return _PairPlan(g, h, mean, math.nan, reason, ())
        if width < 2.0 * smallest:
            reason = f"overlap too thin for two cells of {MIN_CELL_SIDE} pixels across"
            return _PairPlan(g, h, mean, math.nan, reason, ())
        # cells along the overlap's axes, tiling the rectangle of its extent (a uniform strip's
        # length is sqrt(12 variance)): at least 2 across, about CELLS_PER_OVERLAP in all
        target = math.sqrt(width * length / CELLS_PER_OVERLAP)
        n_across = max(2, min(round(width / target), int(width // smallest)))
        n_along = max(1, min(round(length / target), int(length // smallest)))
        sizes = np.array([width / n_across, length / n_along])
        to_cells = axes.T / sizes[:, None]  # frame -> cell units
        start = np.array([n_across, n_along]) / 2.0
        jobs = []
        for s, sd in enumerate(sides):
            for a, partners in sd.items():
                m = maps[a]
                matrix = to_cells @ m.jac
                offset = to_cells @ (m.q_affine - m.jac @ m.pixel_centre - mean) + start
                jobs.append((s, a, partners, CellGrid(matrix, offset)))
        side = float(sizes.min())
        return _PairPlan(g, h, mean, side, "", tuple(jobs))

    # -- stage 2 for planes ------------------------------------------------------------------
    def measure(self, layout: _Layout, params, loaders, execution, *, pairs: bool, local: bool,
                sampled=None, pixel_map=None, on_whole=None) -> None:
        """Compute the cell statistics not cached yet (tasks per image, in batches).

        With ``compare="differences"`` a pair's cells hold the statistic of its pixel
        differences: ``sampled(a, b)`` says which image of a pair is compared, ``pixel_map(s,
        o)`` where its pixels fall in the other (the matcher's, shared with the constants).
        The same interpolation gives the whole overlap's statistic (what the constants and
        the pair table use): ``on_whole(s, o, PairDifference)`` receives it, so that the
        differences are interpolated once per pair.
        """
        key = params.key("statistics")
        todo: dict[int, list] = {}  # image -> [(cache key, what, grid)]
        if pairs and _differences(params):
            for plan in layout.plans:
                for _, s, o, grid in self.difference_jobs(plan, sampled):
                    ck = (key, s, ("-", o), grid.key())
                    if ck not in self.cells:
                        todo.setdefault(s, []).append((ck, ("-", o), grid))
        elif pairs:
            for plan in layout.plans:
                for _, a, partners, grid in plan.jobs:
                    ck = (key, a, partners, grid.key())
                    if ck not in self.cells:
                        todo.setdefault(a, []).append((ck, partners, grid))
        if local:
            for a, grid in enumerate(layout.local_grids):
                ck = (key, a, None, grid.key())
                if ck not in self.cells:
                    todo.setdefault(a, []).append((ck, None, grid))
        if not todo:
            execution.report("statistics", 0, 0)
            return
        images = sorted(todo)
        built: dict[int, list] = {}  # image -> [(job, size)] in todo order
        for a in images:
            built[a] = []
            for _, what, grid in todo[a]:
                if what is None:
                    job, size = (None, grid), self._shapes[a][0] * self._shapes[a][1]
                elif isinstance(what, tuple) and what and what[0] == "-":
                    o = what[1]
                    runs = self._geometry_runs[(a, o)]
                    job, size = (DifferenceRegion(loaders[o], runs, pixel_map(a, o)), grid), runs.npix
                else:
                    runs = self._runs(a, what)
                    job, size = (runs, grid), sum(r.npix for r in runs)
                built[a].append((job, size))
        files = any(not getattr(loaders[a], "in_memory", False) for a in images)
        image_sizes = [sum(size for _, size in built[a]) for a in images]
        differences = sum(image_sizes) if pairs and _differences(params) else 0
        # threads gain on pairs measured one at a time, not on many small ones batched
        gil_free = sum(
            size for a in images for (what, _), size in built[a]
            if isinstance(what, DifferenceRegion) and not in_batch(loaders[a], what)
        ) if differences else 0
        # the pixel sets: the sides and images whose cells are measured together (a pair's
        # differences are batched with other pairs': their fixed costs are counted by pixels)
        sets = sum(not isinstance(what, DifferenceRegion) for a in images for (what, _), _ in built[a])
        kind = execution.kind(files, image_sizes, gil_free=gil_free, forks=True,
                              differences=differences, sets=sets)
        # one task per image (its pixels read once), whatever runs them
        parts = [(a, list(range(len(built[a])))) for a in images]  # (image, indices into todo)
        whole_together = bool(differences) and together(loaders, self._geometry_runs)
        tasks = [CellTask(loaders[a], tuple(built[a][k][0] for k in ks),
                          sum(built[a][k][1] for k in ks), label=f"images[{a}]",
                          together=whole_together) for a, ks in parts]

        # tasks batched (several images' cells measured together: `segments` batches their
        # statistics, whose per-call cost dominates on small images), the same batches
        # whatever runs them
        batches = batches_of([t.size for t in tasks])
        planned = _planned_reads(tasks, batches) if files else None
        if planned is not None:  # large images from files, one a batch: read in a planned order
            tasks, batches = planned

        def keep(b: int, stats: list) -> None:
            for t, task_stats in zip(batches[b], stats):
                a, ks = parts[t]
                for k, cell in zip(ks, task_stats):
                    ck, what, _ = todo[a][k]
                    if cell.whole is not None:
                        if on_whole is not None:
                            on_whole(a, what[1], cell.whole)
                        cell = replace(cell, whole=None)
                    self.cells[ck] = cell

        function, on_result = measure_cell_batch, keep
        if kind == "fork" and pairs:
            # what `equations` needs of each batch's pair cells (their positions and
            # multiplicity, image by image, and the equations of the pairs whose cells are all
            # in the batch) computed where the batch is measured: in the forked workers' share
            # of the run, not after it (N = 256 images of 256 x 256: ~0.19 s of `equations`'
            # ~0.22 s).  (A closure: forked workers take it from memory.)
            sampled_eq = sampled if _differences(params) else None
            plan_images = {p: {a for _, a, _ in self._cell_keys(plan, key, sampled_eq)}
                           for p, plan in enumerate(layout.plans) if not plan.reason}

            def function(batch_tasks, stat, b):
                stats = measure_cell_batch(batch_tasks, stat)
                images = []
                for t, task_stats in zip(batches[b], stats):
                    a, ks = parts[t]
                    kept = [(todo[a][k][0], c) for k, c in zip(ks, task_stats)
                            if todo[a][k][1] is not None]
                    if kept:
                        images.append((a, [ck for ck, _ in kept], [c for _, c in kept]))
                terms = self._cell_terms(layout, images)
                positions, mult, measured = {}, {}, {}
                for (_, cks, cells), (_, _, q, counts) in zip(images, terms):
                    _split_terms(cks, cells, q, counts, positions, mult)
                    measured.update(zip(cks, cells))
                done = {a for a, _, _ in images}
                pair_cells = []
                for p, members in plan_images.items():
                    if members <= done:
                        plan = layout.plans[p]
                        if all(ck in positions for _, _, ck in self._cell_keys(plan, key, sampled_eq)):
                            pair_cells.append((p, self._pair_cells(plan, key, positions, sampled_eq,
                                                                   mult, measured)))
                return stats, terms, pair_cells

            def on_result(b: int, result) -> None:
                stats, terms, pair_cells = result
                for a, cks, q, counts in terms:
                    self._terms[(key, a)] = (layout, cks, q, counts)
                for p, found in pair_cells:
                    self._pair_terms[(key, p)] = (layout, found)
                keep(b, stats)

            arguments = [([tasks[t] for t in batch], params.stat, b)
                         for b, batch in enumerate(batches)]
        else:
            arguments = [([tasks[t] for t in batch], params.stat) for batch in batches]
        sizes = [sum(tasks[t].size for t in batch) for batch in batches]
        order = sorted(range(len(batches)), key=sizes.__getitem__, reverse=True)
        if planned is not None:
            order = list(range(len(batches)))  # (the planned order)
        execution.map("statistics", function, arguments,
                      units=[sum(len(parts[t][1]) for t in batch) for batch in batches], kind=kind,
                      on_result=on_result, order=order)

    def difference_jobs(self, plan: _PairPlan, sampled) -> list:
        """``(sign, compared image, other image, compared image's grid)`` of a pair's members.

        ``sign`` is +1 when the compared image is on the pair's first side (its differences
        are then ``g - h``), else -1.
        """
        key = (plan, *_token(sampled))
        cached = self._difference_jobs.get(key)
        if cached is not None:
            return cached
        grid_of = {a: grid for _, a, _, grid in plan.jobs}
        first = {a for side, a, _, _ in plan.jobs if side == 0}
        jobs = []
        for side, a, partners, _ in plan.jobs:
            if side != 0:
                continue
            for b in sorted(partners):
                if (b, a) not in self._geometry_runs or not self._geometry_runs[(b, a)]:
                    continue
                s, o = sampled(a, b)
                jobs.append((1.0 if s in first else -1.0, s, o, grid_of[s]))
        self._difference_jobs[key] = jobs
        return jobs

    def _runs(self, a: int, partners) -> tuple[Runs, ...]:
        return tuple(self._geometry_runs[(a, b)] for b in sorted(partners))

    def use_geometry(self, geometry: Geometry) -> None:
        """Make ``geometry`` current (a new one drops what depends on it)."""
        if getattr(self, "_geometry_runs", None) is not geometry.runs:
            self._geometry_runs = geometry.runs
            self._layouts.clear()
            self.cells.clear()
            self._difference_jobs.clear()
            self._terms.clear()
            self._pair_terms.clear()

    # -- stage 3 for planes ------------------------------------------------------------------
    def equations(self, layout: _Layout, params, pair_stats: PairStats, sampled=None):
        """The equations: (g, h, q, q_h, d, var, pair), and per pair its fallback reason and count."""
        key = params.key("statistics")
        rows = []
        reasons = []
        cells_of_pair = []
        sampled = sampled if _differences(params) else None
        positions, self._multiplicity, taken = self._image_terms(layout, key, sampled)
        valid = pair_stats.valid
        for p, plan in enumerate(layout.plans):
            reason = plan.reason
            got = None
            if not reason:
                found = self._pair_terms.get((key, p))  # (computed with the task's terms)
                if found is not None and found[0] is layout and all(
                        a in taken for _, a, _ in self._cell_keys(plan, key, sampled)):
                    got, reason = found[1]
                else:
                    got, reason = self._pair_cells(plan, key, positions, sampled)
            if got is None:
                if valid[p] and np.isfinite(plan.centroid).all():
                    d, err = _pair_difference(pair_stats, p)
                    got = (plan.centroid[None, :], plan.centroid[None, :], np.array([d]),
                           np.array([err**2]), np.array([err**2]))
                elif not valid[p]:
                    reason = "no valid pixels on one side"
            reasons.append(reason)
            if got is None:
                cells_of_pair.append(0)
                continue
            q, q_h, d, var, noise_var = got
            cells_of_pair.append(len(d))
            rows.append((np.full(len(d), plan.g), np.full(len(d), plan.h), q, q_h, d, var,
                         np.full(len(d), p), noise_var))
        if rows:
            g, h, q, q_h, d, var, pair, noise_var = (np.concatenate(x) for x in zip(*rows))
        else:
            g = h = pair = np.empty(0, np.intp)
            q, q_h, d, var = np.empty((0, 2)), np.empty((0, 2)), np.empty(0), np.empty(0)
            noise_var = np.empty(0)
        return (g.astype(np.intp), h.astype(np.intp), q, q_h, d, var, pair.astype(np.intp),
                np.array(reasons, dtype=object), np.array(cells_of_pair, np.int64), noise_var)

    def _cell_keys(self, plan: _PairPlan, key, sampled) -> list:
        """``(side sign, image, cache key)`` of a pair's cell statistics."""
        if sampled is not None:
            return [(sign, s, (key, s, ("-", o), grid.key()))
                    for sign, s, o, grid in self.difference_jobs(plan, sampled)]
        return [(side, a, (key, a, p, grid.key())) for side, a, p, grid in plan.jobs]

    def _per_image(self, layout: _Layout, key, sampled) -> dict[int, list]:
        """The cache keys of each image's pair cells, in the order of the plans."""
        per_image: dict[int, list] = {}
        for plan in layout.plans:
            for _, a, ck in self._cell_keys(plan, key, sampled):
                per_image.setdefault(a, []).append(ck)
        return per_image

    def _image_terms(self, layout: _Layout, key, sampled=None) -> tuple[dict, dict, set]:
        """The positions and multiplicity of every pair cell (`_cell_terms`) by cache key.

        ``({ck: positions}, {ck: multiplicity}, images whose terms came from their tasks)``.
        Those of an image whose task computed them (forked workers) for the same cells are
        taken from there; the others' are computed here, all at once.
        """
        per_image = self._per_image(layout, key, sampled)
        todo = []
        found = {}
        for a, cks in per_image.items():
            got = self._terms.get((key, a))
            if got is not None and got[0] is layout and got[1] == cks:
                found[a] = got[2:]
            else:
                todo.append((a, cks, [self.cells[ck] for ck in cks]))
        taken = set(found)
        for a, _, q, counts in self._cell_terms(layout, todo):
            found[a] = (q, counts)
        positions, multiplicity = {}, {}
        for a, cks in per_image.items():
            _split_terms(cks, [self.cells[ck] for ck in cks], *found[a], positions, multiplicity)
        return positions, multiplicity, taken

    def _cell_terms(self, layout: _Layout, images: list) -> list:
        """``(image, cell keys, positions, multiplicity)`` of ``images``' pair cells.

        ``images``: ``(image, cell keys, CellStats)``, each image's pair cells in the order of
        the plans.  The positions: the frame positions of the cells' pixel centroids, one
        WCS call per image (all its cells).  The multiplicity: per cell, in how many pairs of
        inputs its pixels are (at its centroid), at least 1.  A pixel in the overlaps of
        several other inputs enters several equations; the equations are solved as if
        independent, and their variances are inflated (`_inflation`) so that the errors stay
        honest where overlaps overlap.  The images' counts together (`_input_counts`: whole
        numbers, the same whichever images are counted together).
        """
        out = []
        px, py, sets, inputs = [], [], [], []
        runs = self._geometry_runs
        for a, cks, cells in images:
            x = np.concatenate([c.x for c in cells])
            y = np.concatenate([c.y for c in cells])
            if len(x):
                lon, lat = self._wcs[a].pixel_to_lonlat(x, y)
                frame = layout.frames[layout.frame_of[layout.image_input[a]]]
                q = frame.project(lon, lat)
            else:
                q = np.empty((0, 2))
            out.append((a, list(cks), q))
            px.append(np.rint(x).astype(np.intp))
            py.append(np.rint(y).astype(np.intp))
            others = self._partners(layout).get(a, [])
            sets.append([runs[(a, b)] for b in others])
            inputs.append(layout.image_input[others])
        counts = _input_counts(sets, inputs, px, py)
        return [(a, cks, q, np.maximum(count, 1)) for (a, cks, q), count in zip(out, counts)]

    def _partners(self, layout: _Layout) -> dict[int, list]:
        """Per image, the images of other inputs whose footprints hold some of its pixels."""
        cached = getattr(self, "_partners_of", None)
        if cached is not None and cached[0] is layout and cached[1] is self._geometry_runs:
            return cached[2]
        partners: dict[int, list] = {}
        for (a, b), r in self._geometry_runs.items():
            if r and layout.image_input[a] != layout.image_input[b]:
                partners.setdefault(a, []).append(b)
        self._partners_of = (layout, self._geometry_runs, partners)
        return partners

    def _pair_cells(self, plan: _PairPlan, key, positions, sampled=None, mult=None, cells=None):
        """(q, q_h, d, var) of a pair's cells (seen on both sides), or (None, why not).

        ``mult`` and ``cells``: the multiplicity and the cell statistics by cache key (default:
        those of `equations`, and `cells`).
        """
        mult = self._multiplicity if mult is None else mult
        cells = self.cells if cells is None else cells
        if sampled is not None:  # differences: one side, the compared images' pixels
            parts = [_inflated(cells[ck], mult[ck], positions[ck], sign)
                     for sign, _, ck in self._cell_keys(plan, key, sampled)]
            _, v, n, e, q, e0 = _combine_cells(parts)
            ok = (n >= MIN_CELL_PIXELS) & np.isfinite(v) & np.isfinite(e)
            return self._checked(plan, q[ok], q[ok], v[ok], e[ok] ** 2, e0[ok] ** 2)
        sides = []
        for s in (0, 1):
            parts = [_inflated(cells[ck], mult[ck], positions[ck])
                     for side, _, ck in self._cell_keys(plan, key, None) if side == s]
            sides.append(_combine_cells(parts))
        (ka, va, na, ea, qa, a0), (kb, vb, nb, eb, qb, b0) = sides
        _, ia, ib = np.intersect1d(ka, kb, return_indices=True)
        ok = (na[ia] >= MIN_CELL_PIXELS) & (nb[ib] >= MIN_CELL_PIXELS)
        ok &= np.isfinite(va[ia]) & np.isfinite(vb[ib]) & np.isfinite(ea[ia]) & np.isfinite(eb[ib])
        ia, ib = ia[ok], ib[ok]
        return self._checked(plan, qa[ia], qb[ib], va[ia] - vb[ib], ea[ia] ** 2 + eb[ib] ** 2,
                             a0[ia] ** 2 + b0[ib] ** 2)

    @staticmethod
    def _checked(plan: _PairPlan, q, q_h, d, var, noise_var):
        """The equations of a pair's cells if they can constrain a plane, else (None, why).

        ``var``: the equations' variances (each cell's noise inflated for its pixels'
        multiplicity, `_inflation`); ``noise_var``: the noise's alone (`_slope_gain`).
        """
        if len(d) < MIN_CELLS:
            return None, (f"only {len(d)} cells with {MIN_CELL_PIXELS} usable pixels on both "
                          f"sides (at least {MIN_CELLS} needed)")
        dq = q - q.mean(axis=0)  # the smaller eigenvalue of the positions' covariance
        sxx, syy, sxy = (float(dq[:, i] @ dq[:, j]) / len(dq) for i, j in ((0, 0), (1, 1), (0, 1)))
        spread = 0.5 * (sxx + syy) - math.hypot(0.5 * (sxx - syy), sxy)
        if spread < (MIN_SPREAD * plan.side) ** 2:
            return None, "its cells lie along a line (the overlap is one cell wide)"
        return (q, q_h, d, var, noise_var), ""

    def cell_pixels(self, layout: _Layout, params) -> np.ndarray:
        """Per image, the pixels behind its own cells' statistics."""
        key = params.key("statistics")
        return np.array([int(self.cells[(key, a, None, grid.key())].npix.sum())
                         for a, grid in enumerate(layout.local_grids)], dtype=np.int64)

    def local_planes(self, layout: _Layout, params, grouping: Grouping):
        """Per image its own plane (pixel frame) and per input its plane on the sky.

        An input whose images' usable pixels are too few for a plane (fewer than 3 cells of
        `MIN_CELL_PIXELS`, or all on a line) but not none gets a flat one: the level of its
        cells together (inverse-variance weighted), slopes 0 of unknown (NaN) variance, and
        ``used`` 0 (`_flat_fallback`).
        """
        key = params.key("statistics")
        image_fits, cells = [], []
        for a, grid in enumerate(layout.local_grids):
            c = self.cells[(key, a, None, grid.key())]
            m = layout.maps[a]
            image_fits.append(fit_plane(np.column_stack([c.x, c.y]), c.value, c.err**2, m.pixel_centre))
            cells.append(c)
        inputs = []
        for g, members in enumerate(grouping.members):
            fit = _combine_members(members, image_fits, layout.maps, layout.centres[g])
            if not fit.ok:
                fit = _flat_level([cells[a] for a in members]) or fit
            inputs.append(fit)
        return image_fits, inputs


def _split_terms(cks: list, cells: list, q: np.ndarray, counts: np.ndarray, positions: dict,
                 multiplicity: dict) -> None:
    """An image's `PlaneStage._cell_terms` cut per cell statistics, into the two dicts."""
    start = 0
    for ck, c in zip(cks, cells):
        n = len(c.x)
        positions[ck] = q[start : start + n]
        multiplicity[ck] = counts[start : start + n]
        start += n


def _input_counts(sets: list, inputs: list, px: list, py: list) -> list:
    """Per image, in how many inputs' pixel sets each of its pixels (px, py) is: int (pixels,).

    ``sets[k]`` are image k's non-empty `Runs` (each sorted by row, then start, not
    overlapping) and ``inputs[k]`` the input of each; a pixel counts once per input that
    holds it in any of its sets.  All the images at once (one sorted list of the runs of
    every set, keyed by (set, row, start)).
    """
    counts = [np.zeros(len(x), np.int64) for x in px]
    live = [k for k in range(len(sets)) if len(sets[k]) and len(px[k])]
    if not live:
        return counts
    flat = [r for k in live for r in sets[k]]
    width = int(max(max(int(r.stop.max()) for r in flat), max(int(px[k].max()) for k in live))) + 2
    height = int(max(max(int(r.rows.max()) for r in flat), max(int(py[k].max()) for k in live))) + 2
    rows = np.concatenate([r.rows for r in flat]).astype(np.int64)
    start = np.concatenate([r.start for r in flat])
    stop = np.concatenate([r.stop for r in flat])
    first = np.cumsum([0] + [len(r.rows) for r in flat])
    keys = (np.repeat(np.arange(len(flat), dtype=np.int64), np.diff(first)) * height + rows) * width \
        + start
    # one query per (pixel, set of its image): pixel-major, the sets of its image in order
    n_sets = np.array([len(sets[k]) for k in live], np.int64)
    n_px = np.array([len(px[k]) for k in live], np.int64)
    set0 = np.cumsum(n_sets) - n_sets  # the image's first set in ``flat``
    label = np.concatenate([np.asarray(inputs[k], np.int64) for k in live])
    qx = np.concatenate([np.repeat(px[k], len(sets[k])) for k in live]).astype(np.int64)
    qy = np.concatenate([np.repeat(py[k], len(sets[k])) for k in live]).astype(np.int64)
    per_pixel = np.repeat(n_sets, n_px)  # sets of each pixel's image
    pixel = np.repeat(np.arange(int(n_px.sum()), dtype=np.int64), per_pixel)
    within = np.arange(len(pixel), dtype=np.int64) - np.repeat(np.cumsum(per_pixel) - per_pixel,
                                                               per_pixel)
    which = np.repeat(np.repeat(set0, n_px), per_pixel) + within
    j = np.searchsorted(keys, (which * height + qy) * width + qx, side="right") - 1
    own = j >= first[:-1][which]
    j = np.maximum(j, 0)
    inside = own & (rows[j] == qy) & (start[j] <= qx) & (qx < stop[j])
    # distinct inputs per pixel among the sets that hold it
    hit = np.unique(pixel[inside] * (int(label.max()) + 1) + label[which[inside]])
    total = np.bincount(hit // (int(label.max()) + 1), minlength=int(n_px.sum()))
    for k, lo, hi in zip(live, (np.cumsum(n_px) - n_px).tolist(), np.cumsum(n_px).tolist()):
        counts[k] = total[lo:hi]
    return counts


def _inflation(multiplicity: np.ndarray) -> np.ndarray:
    """The factor on a cell's variance for pixels that other equations use too: ``(1 + m) / 2``.

    ``m`` (the multiplicity, at least 1) is the number of other inputs whose overlaps hold
    the cell's pixels: they enter ``m`` equations, which the solve takes as independent.
    Where the ``m + 1`` inputs over a pixel all overlap each other there (a stack of
    dithers), each input's noise enters its level once: the independent solve of the ``m``
    equations of a complete graph gives that variance when each equation's is multiplied by
    ``(1 + m) / 2``, exactly, for any ``m``; one overlap (``m = 1``) needs no factor.  (A factor
    of ``m`` had counted a deep stack's noise twice: pulls 0.6 at 9 and 30 dithers, 0.75 at
    half-overlapping 3 x 3 mosaics; now 0.8-1.0, and 1.0-1.17 on grids, where few pixels
    are in more than one overlap: ``bench/README.md``.)  The slope test still counts the
    noise ``m`` times (`_slope_gain`).
    """
    return 0.5 * (1.0 + multiplicity)


def _inflated(cells: CellStats, multiplicity: np.ndarray, positions, sign: float = 1.0):
    """A part of `_combine_cells`: the cells, their positions and their variances' factor.

    ``cells`` with values times ``sign`` and variances multiplied by `_inflation` of their
    pixels' multiplicity.
    """
    factor = _inflation(multiplicity)
    return (CellStats(cells.cell, sign * cells.value, cells.npix, cells.err * np.sqrt(factor),
                      cells.x, cells.y), positions, factor)


def _differences(params) -> bool:
    """Whether pairs are compared by their pixel differences (``compare="differences"``)."""
    return getattr(params, "compare", "levels") == "differences"


def _pair_difference(pairs: PairStats, p: int) -> tuple[float, float]:
    """A pair's whole-overlap difference ``g - h`` and its error (either way of comparing)."""
    if hasattr(pairs, "diff"):
        return float(pairs.diff[p]), float(pairs.diff_err[p])
    return (float(pairs.stat_a[p] - pairs.stat_b[p]),
            float(math.hypot(pairs.err_a[p], pairs.err_b[p])))


def _moments_of(runs: dict) -> dict:
    """(pixels, mean (x, y), covariance) of every non-empty ``runs[(a, b)]``, all at once.

    From the runs alone, without listing pixels: each run's sums in closed form, summed per
    set by ``np.add.reduceat`` (in order).
    """
    keys = [k for k, r in runs.items() if r]
    if not keys:
        return {}
    sets = [runs[k] for k in keys]
    count = np.array([len(r.rows) for r in sets], np.intp)
    edges = np.cumsum(count) - count
    start = np.concatenate([r.start for r in sets]).astype(float)
    stop = np.concatenate([r.stop for r in sets]).astype(float)
    y = np.concatenate([r.rows for r in sets]).astype(float)
    n = stop - start

    def s2(m):
        return m * (m + 1) * (2 * m + 1) / 6.0

    sx = n * (start + stop - 1) / 2.0
    sxx = s2(stop - 1) - s2(start - 1)
    sums = np.add.reduceat(np.stack([n, sx, n * y, sxx, n * y * y, y * sx]), edges, axis=1)
    total, ssx, sny, ssxx, snyy, sysx = sums
    mx, my = ssx / total, sny / total
    cxx = ssxx / total - mx * mx
    cyy = snyy / total - my * my
    cxy = sysx / total - mx * my
    return {k: (int(t), np.array([a, b]), np.array([[c1, c2], [c2, c3]]))
            for k, t, a, b, c1, c2, c3 in zip(keys, total.tolist(), mx.tolist(), my.tolist(),
                                              cxx.tolist(), cxy.tolist(), cyy.tolist())}


def _combine_cells(parts):
    """One side's cells from its members' (CellStats, positions, multiplicity): pixel-weighted.

    ``(cell, value, npix, err, position, noise)``: ``noise`` the error without the
    multiplicity's inflation (`_inflated`); the parts carry that inflation.
    """
    parts = [(c, q, m) for c, q, m in parts if len(c.cell)]
    if not parts:
        e = np.empty(0)
        return np.empty(0, np.int64), e, np.empty(0, np.int64), e, np.empty((0, 2)), e
    if len(parts) == 1:
        c, q, m = parts[0]
        return c.cell, c.value, c.npix, c.err, q, c.err / np.sqrt(m)
    cell = np.concatenate([c.cell for c, _, _ in parts])
    value = np.concatenate([c.value for c, _, _ in parts])
    npix = np.concatenate([c.npix for c, _, _ in parts]).astype(float)
    err = np.concatenate([c.err for c, _, _ in parts])
    noise = err / np.sqrt(np.concatenate([np.broadcast_to(m, c.cell.shape) for c, _, m in parts]))
    q = np.concatenate([q for _, q, _ in parts])
    keys, inv = np.unique(cell, return_inverse=True)
    inv = inv.ravel()
    ok = np.isfinite(value) & (npix > 0)
    w = np.where(ok, npix, 0.0)
    total = np.bincount(inv, w, minlength=len(keys))
    safe = np.where(total > 0, total, 1.0)
    v = np.bincount(inv, w * np.where(ok, value, 0.0), minlength=len(keys)) / safe
    e = np.sqrt(np.bincount(inv, (w * np.where(ok, err, 0.0)) ** 2, minlength=len(keys))) / safe
    e0 = np.sqrt(np.bincount(inv, (w * np.where(ok, noise, 0.0)) ** 2, minlength=len(keys))) / safe
    qq = np.column_stack([np.bincount(inv, w * q[:, k], minlength=len(keys)) for k in range(2)])
    qq /= safe[:, None]
    v[total == 0] = np.nan
    return keys, v, total.astype(np.int64), e, qq, e0


def _sky_transform(m: ImageMap) -> np.ndarray:
    """(level, slope_x, slope_y) in pixels -> (level, slope per arcsec east, north)."""
    t = np.eye(3)
    t[1:, 1:] = np.linalg.inv(m.jac).T
    return t


def _flat_level(cells: list) -> PlaneFit | None:
    """A flat plane from cells too few for a slope: their inverse-variance weighted level.

    Slopes 0 with NaN variance (not measured), ``used`` 0; None without a finite cell.
    """
    value = np.concatenate([c.value for c in cells])
    var = np.concatenate([c.err for c in cells]) ** 2
    ok = np.isfinite(value) & np.isfinite(var) & (var > 0)
    if not ok.any():
        return None
    w = 1.0 / var[ok]
    cov = np.full((3, 3), np.nan)
    cov[0, 0] = 1.0 / w.sum()
    return PlaneFit(np.array([float(np.sum(w * value[ok]) / w.sum()), 0.0, 0.0]), cov, 0)


def _flat_fallback(fit: PlaneFit) -> bool:
    """Whether an input's local `PlaneFit` is `_flat_level`'s: a level without measured slopes."""
    return fit.used == 0 and math.isfinite(fit.coef[0]) and not math.isfinite(fit.cov[1, 1])


def _combine_members(members, fits, maps, centre) -> PlaneFit:
    """An input's plane on the sky from its images' own planes (weighted least squares)."""
    normal, rhs = np.zeros((3, 3)), np.zeros(3)
    used = 0
    for a in members:
        f = fits[a]
        if not f.ok:
            continue
        t = _sky_transform(maps[a])
        coef, cov = t @ f.coef, t @ f.cov @ t.T
        design = np.eye(3)
        design[0, 1:] = maps[a].q_affine - centre  # the inverse of `image_planes`' map
        try:
            w = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            continue
        normal += design.T @ w @ design
        rhs += design.T @ w @ coef
        used += f.used
    if not used:
        return PlaneFit(np.full(3, np.nan), np.full((3, 3), np.nan), 0)
    cov = np.linalg.inv(normal)
    return PlaneFit(cov @ rhs, cov, used)


# -- stage 3 ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PlaneSolution:
    """Planes over inputs (frame coefficients) and over images (pixel coefficients)."""

    coef: np.ndarray  # (n_inputs, 3): level at the input's centre, slopes per arcsec (E, N)
    cov: np.ndarray  # (n_inputs, 3, 3)
    valid: np.ndarray
    reason: list
    component: np.ndarray
    delta: np.ndarray  # (n_inputs, 3): the match planes, zero-mean gauge (NaN: none)
    local: np.ndarray  # (n_inputs, 3): the local planes (NaN: not computed)
    warnings: tuple
    pair_residual: np.ndarray  # weighted mean residual per pair
    resid_gradient: np.ndarray
    plane_fallback: np.ndarray
    cells: np.ndarray
    slope_gain: tuple | None = None  # (chi2 gained by the slopes, their degrees of freedom)


def solve_planes(skymethod: str, layout: _Layout, grouping: Grouping, equations, local,
                 match_down: bool, anchor: str, disconnected) -> PlaneSolution:
    """Stage 3 with planes: ``skymethod`` over the equations and the local planes.

    ``equations`` is what `PlaneStage.equations` gives (None when not measured), ``local``
    the inputs' local `PlaneFit` (None for ``match``); ``disconnected(component, n_comp)``
    makes the message of a disconnected mosaic.
    """
    n = len(grouping)
    centres = layout.centres
    nan3 = np.full((n, 3), np.nan)
    reason = [""] * n
    warnings: list[str] = []
    n_pairs = len(layout.plans)
    pair_residual = np.full(n_pairs, np.nan)
    resid_gradient = np.full(n_pairs, np.nan)
    fallback = np.array([""] * n_pairs, dtype=object)
    cells = np.zeros(n_pairs, np.int64)
    loc = np.array([f.coef for f in local]) if local is not None else nan3.copy()
    loc_cov = np.array([f.cov for f in local]) if local is not None else np.full((n, 3, 3), np.nan)
    flat = np.array([_flat_fallback(f) for f in local], bool) if local is not None \
        else np.zeros(n, bool)  # a level of its own, too few pixels for slopes
    planar = np.isfinite(loc).all(axis=1) & ~flat  # a local plane, slopes measured
    too_few = ("too few usable pixels for a plane of its own (3 cells of "
               f"{MIN_CELL_PIXELS} needed)")
    delta = nan3.copy()
    geo_comp = layout.frame_of
    if "match" in skymethod:
        g, h, q, q_h, d, var, pair, fallback, cells, noise_var = equations
        off = solve_plane_offsets(n, g, h, q, d, var, centres, q_h,
                                  constant=fallback[pair] != "")
        comp = off.component
        n_comp = int(comp.max()) + 1 if n else 0
        if n_comp > 1 and n > 1:
            warnings.append(disconnected(comp, n_comp))
        matched = np.isfinite(off.coef).all(axis=1)
        delta = off.coef.copy()
        _pair_diagnostics(off, g, h, q, var, pair, centres, pair_residual, resid_gradient, fallback)
        slope_gain = _slope_gain(n, g, h, d, var, off, noise_var, pair, q)
        for k in np.flatnonzero(~matched):
            reason[k] = "no valid overlap with another input"
        for k in np.flatnonzero(off.slope_free & matched):
            reason[k] = ("its slopes are not determined by its overlaps (too small or thin for "
                         "cells): set to its component's mean slope")
        coef, cov = off.coef.copy(), off.cov.copy()
        if skymethod == "match":
            for members in _scopes(anchor, comp, matched):
                levels = coef[members, 0]
                coef[members, 0] -= levels.min() if match_down else levels.max()
        else:
            coef, cov = _lift(coef, cov, loc, loc_cov, centres, comp, matched & planar, matched,
                              anchor)
            lone = ~matched & np.isfinite(loc).all(axis=1)
            coef[lone], cov[lone] = loc[lone], loc_cov[lone]
            for k in np.flatnonzero(lone):
                reason[k] = ("not matched (no valid overlap with another input): its own local "
                             + ("sky, slopes 0: " + too_few if flat[k] else "plane"))
    else:
        comp = geo_comp
        if skymethod == "local":
            coef, cov = loc.copy(), loc_cov.copy()
            for k in np.flatnonzero(flat):
                reason[k] = too_few + ": its level, slopes 0"
        else:  # global: one plane, from the local planes alone, for every input with pixels
            targets = planar | flat
            zero = np.where(targets[:, None], 0.0, np.nan) * np.ones(3)
            coef, cov = _lift(zero, np.zeros((n, 3, 3)), loc, loc_cov, centres, comp, planar,
                              targets, "global")
        for k in np.flatnonzero(~(planar | flat)):
            reason[k] = (f"too few valid pixels for a sky of its own (no cell with "
                         f"{MIN_CELL_PIXELS}; the others masked, non-finite or outside lower/upper)")
    valid = np.isfinite(coef).all(axis=1)
    for k in np.flatnonzero(~valid):
        reason[k] = reason[k] or "no sky could be computed"
    return PlaneSolution(coef, cov, valid, reason, comp, delta, loc, tuple(warnings),
                         pair_residual, resid_gradient, fallback, cells,
                         slope_gain if "match" in skymethod else None)


def _slope_gain(n, g, h, d, var, off, noise_var, pair, q) -> tuple[float, int]:
    """How much the slopes lower the equations' chi-square, and how many slopes that took.

    The equations the plane solve kept, fitted again with the slopes fixed at 0 (levels
    only): for linear least squares the difference of the two chi-squares is the full
    ``s^T C^-1 s`` of all the slopes together (correlations included), a chi-square with as
    many degrees of freedom as slopes the overlaps determine when there is no gradient.  It
    is divided by what the cells see beyond their noise, when that exceeds 1
    (`_scene_scale`: what does not cancel between the two sides, stars above all; the
    errors are scaled alike).

    The test counts each cell's noise once per overlap that holds its pixels (``m`` times,
    ``2 var - noise_var``), not ``(1 + m) / 2`` times as the solve does (`_inflation`), and
    reads the residuals of the solve's fit: where pixels are in many overlaps it asks for
    more than the solve's own errors would.  With the solve's variances it kept planes on
    the flat skies with stars of 600 dithered camera CCDs, whose levels were then 5 times
    less precise than the constants' (what stars leave in the cells is shared by the
    overlaps that hold them, as the noise is not).
    """
    from scipy.sparse import coo_matrix as _coo
    from scipy.sparse import identity
    from scipy.sparse.linalg import spsolve

    from .planes import _floored

    used = off.used & np.isfinite(off.residual)
    gu, hu, du = g[used], h[used], d[used]
    shared = np.isfinite(noise_var) & (noise_var > 0)
    w = 1.0 / _floored(np.where(shared, 2.0 * var - noise_var, var))[used]
    chi2_plane = float(np.sum(off.residual[used] ** 2 * w))
    members = np.unique(np.concatenate([gu, hu]))
    comps = len(np.unique(off.component[members])) if len(members) else 0
    if not len(du):
        return 0.0, 0
    rows = np.concatenate([gu, hu, gu, hu])
    cols = np.concatenate([gu, hu, hu, gu])
    vals = np.concatenate([w, w, -w, -w])
    normal = _coo((vals, (rows, cols)), shape=(n, n)).tocsc()
    diag = normal.diagonal()
    ridge = 1e-10 * float(np.median(diag[diag > 0]))
    rhs = np.bincount(gu, w * du, minlength=n) - np.bincount(hu, w * du, minlength=n)
    levels = spsolve(normal + ridge * identity(n, format="csc"), rhs)
    chi2_const = float(np.sum(w * (du - levels[gu] + levels[hu]) ** 2))
    measured = int((~off.slope_free[members]).sum())
    dof = max(2 * measured - 2 * comps, 0)
    scale2 = max(1.0, _scene_scale(d, noise_var, q, pair, used))
    return max(chi2_const - chi2_plane, 0.0) / scale2, dof


def _scene_scale(d, noise_var, q, pair, used) -> float:
    """The scatter of the cells' differences about a plane per pair, over their noise's.

    Each pair's cells (disjoint pixel sets: independent noise) fitted with a plane of their
    own, weighted by their noise alone: the chi-square per degree of freedom is 1 when the
    cells see nothing but noise, more where the two sides see something that does not
    cancel (stars: their interpolation, their clipped wings).  The plane fit's own residuals
    cannot tell it: the equations count a cell's noise as often as its pixels are in
    overlaps, and those of different pairs share it.  Measured: 0.91-1.04 on camera and grid
    mosaics without stars; 1.27 (``differences``) and 1.53 (``levels``) with 5 stars per
    CCD on 600 dithered camera CCDs, where the slopes of flat skies had seemed significant
    (their chi-square 1.16 and 1.39 times their degrees of freedom).  1 when no pair has
    more than 3 cells (`_pair_planes`, as the pairs' residual gradients).
    """
    if not len(pair):
        return 1.0
    n_pairs = int(pair.max()) + 1
    rows = np.flatnonzero(used & np.isfinite(noise_var) & (noise_var > 0) & np.isfinite(d))
    w = np.zeros(len(d))
    w[rows] = 1.0 / noise_var[rows]
    at, sol, rows, (dx, dy) = _pair_planes(rows, pair, q, d, w, n_pairs, least=4)
    if not len(at):
        return 1.0
    slot = np.full(n_pairs, -1)
    slot[at] = np.arange(len(at))
    k = slot[pair[rows]]
    left = d[rows] - (sol[k, 0] + sol[k, 1] * dx + sol[k, 2] * dy)
    return float(np.sum(w[rows] * left**2) / (len(rows) - 3 * len(at)))


def _scopes(anchor: str, comp: np.ndarray, usable: np.ndarray) -> list[np.ndarray]:
    if not usable.any():
        return []
    if anchor == "global":
        return [np.flatnonzero(usable)]
    return [np.flatnonzero(usable & (comp == c)) for c in np.unique(comp[usable])]


def _lift(coef, cov, loc, loc_cov, centres, comp, ok, targets, anchor):
    """The planes lifted by one common plane towards the local planes (global+match, global).

    Per component, the common slope is the median over inputs of (local - match) slopes;
    the level is the lowest (local - match) level at the inputs' centres, over the anchor's
    scope.  Constants: exactly the reference's ``min(local - delta)``.
    """
    coef, cov = coef.copy(), cov.copy()
    n = len(coef)
    slope = np.full((n, 2), np.nan)
    mid = np.full((n, 2), np.nan)
    for c in np.unique(comp[ok]):
        members = np.flatnonzero(ok & (comp == c))
        slope[comp == c] = np.median(loc[members, 1:] - coef[members, 1:], axis=0)
        mid[comp == c] = centres[members].mean(axis=0)
    lifted = loc[:, 0] - coef[:, 0] - np.einsum("ij,ij->i", slope, centres - mid)
    for members in _scopes(anchor, comp, ok):
        k = members[np.argmin(lifted[members])]
        scope = members if anchor == "component" else np.flatnonzero(targets)
        scope = scope[np.isfinite(slope[scope]).all(axis=1)]
        coef[scope, 0] += lifted[k] + np.einsum("ij,ij->i", slope[scope], centres[scope] - mid[scope])
        coef[scope, 1:] += slope[scope]
        cov[scope, 0, 0] += loc_cov[k, 0, 0] + cov[k, 0, 0]
        m = max(int((ok & (comp == comp[k])).sum()), 1)
        extra = np.pi / 2 * np.nanmean(loc_cov[ok & (comp == comp[k])][:, 1:, 1:], axis=0) / m
        cov[scope, 1:, 1:] += extra
    return coef, cov


def _pair_diagnostics(off, g, h, q, var, pair, centres, mean_resid, resid_gradient, fallback):
    """Per pair: the weighted mean residual and the gradient of the residuals (cells only).

    The gradient: a weighted least-squares plane through the pair's used cells' residuals
    (`_pair_planes`).
    """
    if not len(pair):
        return
    w = np.where(off.used, 1.0 / np.maximum(var, 1e-300), 0.0)
    n_pairs = len(mean_resid)
    total = np.bincount(pair, w, minlength=n_pairs)
    r = np.where(np.isfinite(off.residual), off.residual, 0.0)
    has = total > 0
    mean_resid[has] = (np.bincount(pair, w * r, minlength=n_pairs) / np.where(has, total, 1))[has]
    rows = np.flatnonzero(off.used & (has & (fallback == ""))[pair])
    at, sol, _, _ = _pair_planes(rows, pair, q, r, w, n_pairs, least=3)
    resid_gradient[at] = np.hypot(sol[:, 1], sol[:, 2])


def _pair_planes(rows, pair, q, values, w, n_pairs: int, *, least: int):
    """Weighted least-squares planes ``a + b dx + c dy`` through each pair's ``rows``.

    The pairs with at least ``least`` rows, all at once by their normal equations (3 x 3,
    positions ``(dx, dy)`` about the pair's mean: well conditioned, the cells of a pair with
    its own cells are spread, `PlaneStage._checked`); a pair whose normal equations are not
    is fitted alone by `np.linalg.lstsq`.  Returns ``(pairs fitted, their (a, b, c), the rows
    fitted, their (dx, dy))``.
    """
    count = np.bincount(pair[rows], minlength=n_pairs)
    fitted = count >= least
    rows = rows[fitted[pair[rows]]]
    at = np.flatnonzero(fitted)
    if not len(rows):
        return at, np.empty((0, 3)), rows, [np.empty(0), np.empty(0)]
    p = pair[rows]
    safe = np.maximum(count, 1)
    dq = [q[rows, k] - (np.bincount(p, q[rows, k], minlength=n_pairs) / safe)[p] for k in (0, 1)]
    wr, terms = w[rows], [np.ones(len(rows)), dq[0], dq[1]]

    def sums(x):
        return np.bincount(p, wr * x, minlength=n_pairs)[fitted]

    normal = np.empty((len(at), 3, 3))
    for i in range(3):
        for j in range(i, 3):
            normal[:, i, j] = normal[:, j, i] = sums(terms[i] * terms[j])
    rhs = np.stack([sums(t * values[rows]) for t in terms], axis=1)
    good = np.linalg.cond(normal) < 1e8
    sol = np.full((len(normal), 3), np.nan)
    if good.any():
        sol[good] = np.linalg.solve(normal[good], rhs[good, :, None])[..., 0]
    for k in np.flatnonzero(~good):  # ill-conditioned: alone, by a least-squares solver
        these = rows[p == at[k]]
        design = np.column_stack([np.ones(len(these)), q[these] - q[these].mean(axis=0)])
        sw = np.sqrt(w[these])
        sol[k], *_ = np.linalg.lstsq(design * sw[:, None], values[these] * sw, rcond=None)
    return at, sol, rows, dq


def image_planes(sol: PlaneSolution, layout: _Layout):
    """Per image: level at its centre, slope_x, slope_y, covariance (n, 3, 3), gradient, PA."""
    n_images = len(layout.maps)
    level = np.full(n_images, np.nan)
    slopes = np.full((n_images, 2), np.nan)
    cov = np.full((n_images, 3, 3), np.nan)
    local = np.full(n_images, np.nan)
    delta = np.full(n_images, np.nan)
    gradient = np.full(n_images, np.nan)
    pa = np.full(n_images, np.nan)
    for a, m in enumerate(layout.maps):
        g = layout.image_input[a]
        # the least-squares plane in the pixels: the sky plane at the affine map's image of
        # the centre (not at the centre's exact position: a distortion's curvature lies between)
        offset = m.q_affine - layout.centres[g]
        t = np.zeros((3, 3))
        t[0, 0] = 1.0
        t[0, 1:] = offset
        t[1:, 1:] = m.jac.T
        c = sol.coef[g]
        out = t @ c
        level[a], slopes[a] = out[0], out[1:]
        unknown = np.isnan(sol.cov[g, 1, 1])  # slopes set, not measured: level exact given them
        cov[a] = t @ np.nan_to_num(sol.cov[g], nan=0.0) @ t.T
        if unknown:
            cov[a, 1:, :] = cov[a, :, 1:] = np.nan
        gradient[a] = math.hypot(c[1], c[2])
        if gradient[a] > 0:
            pa[a] = math.degrees(math.atan2(c[1], c[2])) % 360.0
        # the local and the match planes at the image's centre
        delta[a] = sol.delta[g, 0] + sol.delta[g, 1:] @ offset
        local[a] = sol.local[g, 0] + sol.local[g, 1:] @ offset
    return level, slopes, cov, gradient, pa, local, delta


def plane_result(sol: PlaneSolution, layout: _Layout, pairs: PairStats, grouping: Grouping,
                 own_npix, params: dict):
    """The `SkyMatchResult` of a plane run (``sky``: each image's level at its centre)."""
    from dataclasses import replace

    from .result import assemble_result
    from .solve import Solution

    solution = Solution(sol.coef[:, 0].copy(), np.sqrt(sol.cov[:, 0, 0]), sol.valid,
                        list(sol.reason), sol.component, sol.delta[:, 0], sol.warnings)
    result = assemble_result(solution, pairs, None, grouping, own_npix, params)
    level, slopes, cov, gradient, pa, local, delta = image_planes(sol, layout)
    invalid = ~result.valid
    level[invalid] = np.nan
    with np.errstate(invalid="ignore"):
        sky_err = np.sqrt(cov[:, 0, 0])
    sky_err[invalid] = np.nan  # (no sky, no error: not the 0 of an empty covariance)
    table = replace(result.pairs, diff_after=sol.pair_residual)
    plane = PlaneResult(
        slope_x=slopes[:, 0], slope_y=slopes[:, 1], cov=cov, gradient=gradient, gradient_pa=pa,
        resid_gradient=sol.resid_gradient, plane_fallback=np.asarray(sol.plane_fallback, dtype=object),
        cells=sol.cells,
    )
    return replace(result, sky=level, sky_err=sky_err, local=local, delta=delta, pairs=table,
                   plane=plane)


# -- the slope test ----------------------------------------------------------------------------------
def slope_chi2(sol: PlaneSolution) -> tuple[np.ndarray, int]:
    """Per input with measured slopes, ``s^T C^-1 s`` of its slopes ``s`` (covariance ``C``).

    Returns the chi-squares (NaN for inputs whose slopes were not measured) and the count
    of the others.
    """
    n = len(sol.coef)
    chi2 = np.full(n, np.nan)
    for k in range(n):
        s, c = sol.coef[k, 1:], sol.cov[k, 1:, 1:]
        if not (np.isfinite(s).all() and np.isfinite(c).all()):
            continue
        try:
            chi2[k] = float(s @ np.linalg.solve(c, s))
        except np.linalg.LinAlgError:
            continue
    return chi2, int(np.isfinite(chi2).sum())


def slopes_significant(sol: PlaneSolution, alpha: float) -> bool:
    """Whether the slopes of the inputs reject "no gradient anywhere" at false-alarm ``alpha``.

    Two chi-square tests of the fitted slopes against zero: all the slopes together (for the
    match methods the chi-square the slopes gain in the fit of the overlaps' equations,
    `_slope_gain`: their full covariance, correlations included; for ``local`` and
    ``global`` the sum over the independent per-image fits, 2 degrees of freedom each), and
    the largest single input's ``s^T C^-1 s`` with its own covariance (Bonferroni-corrected:
    ``alpha / inputs``), so that a gradient spread thinly over many images and one strong
    gradient in a single image are both found.  Either rejecting keeps the planes; ``alpha``
    0 always keeps them.
    """
    if alpha <= 0:
        return True
    from scipy.special import chdtri  # chi2.isf (scipy.stats costs ~0.5 s to import)

    chi2, m = slope_chi2(sol)
    if m == 0:
        return True  # nothing measured: nothing to test (the planes are whatever was set)
    alpha = min(float(alpha), 1.0)
    if sol.slope_gain is not None:  # matched: all the slopes together (`_slope_gain`)
        total, dof = sol.slope_gain
    else:  # local, global: independent fits per image
        total, dof = float(np.nansum(chi2)), 2 * m
    if dof > 0 and total > chdtri(dof, alpha):
        return True
    return bool(np.nanmax(chi2) > chdtri(2, alpha / m))


def constant_planes(result, constant, sol: PlaneSolution, layout: _Layout, equations):
    """A plane result whose planes are flat: ``constant``'s levels, slopes 0 with their errors.

    ``result`` is the plane fit, ``constant`` the ``skymodel="constant"`` result of the same
    parameters; per pair the residual gradient is that of the pair's cells after the
    constant levels (with zero slopes).
    """
    from dataclasses import replace as _replace

    plane = result.plane
    n = len(constant.sky)
    valid = constant.valid
    cov = np.zeros((n, 3, 3))
    cov[:, 0, 0] = constant.sky_err**2
    cov[:, 1:, 1:] = plane.cov[:, 1:, 1:]
    cov[~valid] = np.nan
    zero = np.where(valid, 0.0, np.nan)
    resid_gradient = np.full(len(plane.resid_gradient), np.nan)
    if equations is not None:
        g, h, q, _q_h, d, var, pair, fallback, _cells, _noise = equations
        level = np.full(len(layout.centres), np.nan)
        for a in range(n):  # an input's level: its members' (the constant model gives all one)
            level[layout.image_input[a]] = constant.sky[a]
        residual = d - (level[g] - level[h])

        class _Fit:
            pass

        fit = _Fit()
        fit.residual, fit.used = residual, np.isfinite(residual)
        mean = np.full(len(resid_gradient), np.nan)
        _pair_diagnostics(fit, g, h, q, var, pair, layout.centres, mean, resid_gradient,
                          np.asarray(fallback, dtype=object))
    flat = PlaneResult(
        slope_x=zero.copy(), slope_y=zero.copy(), cov=cov, gradient=zero.copy(),
        gradient_pa=np.full(n, np.nan), resid_gradient=resid_gradient,
        plane_fallback=plane.plane_fallback, cells=plane.cells, flat=True,
    )
    return _replace(constant, params=result.params, plane=flat)


def _token(function) -> tuple:
    """``function`` as (part of) a cache key that does not keep its object alive, if it is a bound method.

    A bound method is named by its function and its object's ``id``: a `PlaneStage` belongs
    to one matcher, alive while the stage is used, so the ``id`` cannot name another.  (A
    cache keyed by the matcher's own method made the matcher, its stage and all they hold a
    reference cycle: freed whenever the next full garbage collection came, not when the last
    reference went; a `weakref.WeakMethod` would add four objects per key for the collector.)
    """
    return (function.__func__, id(function.__self__)) if inspect.ismethod(function) else (function,)


def _planned_reads(tasks: list, batches: list):
    """``(tasks, batches)`` with the reads of large images from files planned, or None.

    As `matcher.SkyMatcher._planned_reads` plans the constant stage's (`reads.plan`): when
    the images' reads are planned (`reads.largest_planned`) and every batch holds one task
    (so that no batch changes: their cells' statistics are measured together), the tasks run
    in the planned order and each read of an image (its own, and the other image of each of
    its pairs) says whether the run reads it again later.
    """
    if any(len(batch) != 1 for batch in batches):
        return None
    used = {id(t.loader): t.loader for t in tasks}
    used.update((id(r.loader), r.loader) for t in tasks for r, _ in t.jobs
                if isinstance(r, DifferenceRegion))
    largest = reads.largest_planned(used.values())
    if largest is None:
        return None
    steps = [(reads.pixels_key(t.loader),
              *(reads.pixels_key(r.loader) for r, _ in t.jobs if isinstance(r, DifferenceRegion)))
             for t in tasks]
    order, flags = reads.plan(steps, largest)
    flagged = []
    for t, task_flags in zip(tasks, flags):
        others = iter(task_flags[1:])
        jobs = tuple((replace(r, keep=next(others)), grid) if isinstance(r, DifferenceRegion)
                     else (r, grid) for r, grid in t.jobs)
        flagged.append(replace(t, keep=task_flags[0], jobs=jobs))
    return flagged, [[t] for t in order]
