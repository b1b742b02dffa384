"""The sky-matching engine: validated inputs, three cached stages, one result.

``SkyMatcher`` holds the stage results so that a change of parameters redoes only what it
must: ``skymethod``, ``match_down`` and ``anchor`` re-run the solve only; the statistics
parameters re-run the statistics on the cached overlap pixel sets; new groups compute only the
statistics of (image, partner set) combinations not seen before.  ``skymatch`` is the
one-call face for scripts.
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .exceptions import DisconnectedMosaicWarning
from .geometry import (
    MAX_FOOTPRINT_RADIUS,
    CelestialWCS,
    Footprint,
    GatherBuffers,
    Runs,
    candidate_pairs,
    footprint,
    overlap_runs,
)
from .result import PairTable, SkyMatchResult
from .solve import components, solve_match
from .stats import SkyStat, StatParams, Workspace, sky_statistic

__all__ = ["ANCHORS", "SKYMETHODS", "SkyMatcher", "skymatch"]

SKYMETHODS = ("local", "global", "match", "global+match")
ANCHORS = ("global", "component")

_NO_STAT = SkyStat(float("nan"), 0, float("nan"))


class _Scratch:
    """Reusable buffers of one thread of the statistics stage (gathered pixels, clipping)."""

    def __init__(self):
        self.buffers = GatherBuffers()
        self.work = Workspace()


@dataclass(frozen=True)
class Geometry:
    """Stage 1 results: footprints and, per ordered image pair (a, b), a's pixels inside b."""

    footprints: list[Footprint]
    runs: dict[tuple[int, int], Runs]

    def partners(self, a: int) -> list[int]:
        """Images whose footprint contains at least one pixel centre of image ``a``."""
        return [b for (x, b), r in self.runs.items() if x == a and r]


class SkyMatcher:
    """Sky matching of one set of images, keeping every stage's results for re-use.

    Parameters
    ----------
    images : sequence of 2-D array
        The images, of any real dtype and any shapes.  They are read, never changed; they may
        be memory-mapped (pixels are read per task).
    wcs : sequence
        One celestial WCS per image (`astropy.wcs.WCS`, distortions included, or
        ``gwcs.WCS``).
    masks : sequence of 2-D bool array, optional
        True marks a good pixel.  Non-finite pixels are always ignored.
    stepsize : int, optional
        Add footprint vertices at most this many pixels apart along each image edge, so that
        the outline of a distorted WCS is followed closely (None: the four corners only).
    workers : int, optional
        Threads for the statistics (None: one per CPU core, at most 4; 1: no pool).

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> matcher = SkyMatcher(m.images, m.wcs)
    >>> matcher.run(skymethod="match", skystat="mean").sky.round(6).tolist()
    [0.0, 20.0, 5.0, 10.0, 5.0, 15.0]
    >>> matcher.run(skymethod="global+match", skystat="mean").sky.round(6).tolist()
    [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
    """

    def __init__(self, images, wcs, *, masks=None, stepsize: int | None = None,
                 workers: int | None = None):
        self._images = _check_images(images)
        self._wcs = _check_wcs(wcs, len(self._images))
        self._masks = _check_masks(masks, self._images)
        self._stepsize = _check_stepsize(stepsize)
        self._geometry: Geometry | None = None
        self._pair_stats: dict = {}
        self._local_stats: dict = {}
        self._input_pair_cache: dict = {}  # (statistics, grouping) -> per input pair sides
        self._workers = _check_workers(workers)
        self._scratch = _Scratch()  # reused by serial runs of the statistics stage

    def __len__(self) -> int:
        return len(self._images)

    @property
    def geometry(self) -> Geometry:
        """Stage 1, computed on first use."""
        if self._geometry is None:
            self._geometry = _compute_geometry(self._images, self._wcs, self._stepsize)
        return self._geometry

    @property
    def footprints(self) -> list[Footprint]:
        """The footprint of each image on the sphere."""
        return self.geometry.footprints

    def overlap_pixels(self, a: int, b: int) -> Runs:
        """The pixels of image ``a`` whose centres fall inside image ``b``'s footprint."""
        return self.geometry.runs.get((a, b)) or Runs.union([], self._images[a].shape)

    def run(
        self,
        *,
        groups: Sequence[Hashable] | None = None,
        skymethod: str = "match",
        match_down: bool = True,
        subtract: bool = False,
        skystat: str = "mode",
        lower: float | None = None,
        upper: float | None = None,
        nclip: int = 5,
        lsigma: float = 4.0,
        usigma: float = 4.0,
        binwidth: float = 0.1,
        anchor: str = "global",
    ) -> SkyMatchResult:
        """Match the skies; parameters as in `skymatch`."""
        method = _check_choice("skymethod", skymethod, SKYMETHODS)
        anchor = _check_choice("anchor", anchor, ANCHORS)
        match_down = _check_bool("match_down", match_down)
        subtract = _check_bool("subtract", subtract)
        stat = StatParams(
            skystat=skystat, lower=lower, upper=upper, nclip=nclip,
            lsigma=lsigma, usigma=usigma, binwidth=binwidth,
        )
        label_of, inputs, members = _inputs(groups, len(self._images))
        params = dict(
            skymethod=method, match_down=match_down, subtract=subtract, skystat=stat.skystat,
            lower=stat.lower, upper=stat.upper, nclip=stat.nclip, lsigma=stat.lsigma,
            usigma=stat.usigma, binwidth=stat.binwidth, stepsize=self._stepsize, anchor=anchor,
        )
        pairs = self._input_pairs(label_of, stat if "match" in method else None)
        local = None
        npix = None
        if method != "match":
            self._fill(stat, images=range(len(self._images)))
            image_local = [self._local_stats[(stat, a)] for a in range(len(self._images))]
            local = [_lowest([image_local[a] for a in m]) for m in members]
            npix = np.array([s.npix for s in image_local], dtype=np.int64)
        solution = _solve(method, match_down, anchor, len(inputs), pairs, local)
        result = replace(_assemble(solution, pairs, local, label_of, inputs, npix), params=params)
        if subtract:
            result = _with_subtracted(result, self._images)
        for message in result.warnings:
            warnings.warn(message, DisconnectedMosaicWarning, stacklevel=3)
        return result

    # -- stage 2: statistics -------------------------------------------------------------
    def _pair_stat(self, stat: StatParams, a: int, partners: frozenset) -> SkyStat:
        """Image ``a``'s statistic over its pixels inside the union of ``partners``."""
        self._fill(stat, pairs=[(a, partners)])
        return self._pair_stats[(stat, a, partners)]

    def _local_stat(self, stat: StatParams, a: int) -> SkyStat:
        """Image ``a``'s statistic over all its good pixels."""
        self._fill(stat, images=[a])
        return self._local_stats[(stat, a)]

    def _fill(self, stat: StatParams, *, pairs=(), images=()) -> None:
        """Compute the statistics not cached yet, as independent tasks on a thread pool.

        Each task reads one image's pixels and writes nothing shared; results are stored
        afterwards, here.  Threads pay because the tasks are long numpy calls that release
        the GIL (the largest first, for balance); each thread has its own scratch buffers.
        """
        todo = [("local", a, None) for a in dict.fromkeys(images) if (stat, a) not in self._local_stats]
        todo += [("pair", a, p) for a, p in dict.fromkeys(pairs) if (stat, a, p) not in self._pair_stats]
        if not todo:
            return
        if self._workers == 1 or len(todo) == 1:
            results = [self._task(stat, item, self._scratch) for item in todo]
        else:
            local = threading.local()

            def run(item):
                if not hasattr(local, "scratch"):
                    local.scratch = _Scratch()
                return self._task(stat, item, local.scratch)

            todo.sort(key=self._task_size, reverse=True)
            with ThreadPoolExecutor(self._workers) as pool:
                results = list(pool.map(run, todo))
        for (kind, a, partners), value in zip(todo, results):
            if kind == "local":
                self._local_stats[(stat, a)] = value
            else:
                self._pair_stats[(stat, a, partners)] = value

    def _task_size(self, item) -> int:
        kind, a, partners = item
        if kind == "local":
            return self._images[a].size
        return sum(self.geometry.runs[(a, b)].npix for b in partners)

    def _task(self, stat: StatParams, item, scratch: _Scratch) -> SkyStat:
        kind, a, partners = item
        image, mask = self._images[a], self._masks[a]
        if kind == "local":
            values = np.asarray(image).reshape(-1)
            if mask is not None:
                values = values[np.asarray(mask).reshape(-1)]
            return sky_statistic(values, stat, work=scratch.work)
        geo = self.geometry
        runs = Runs.union([geo.runs[(a, b)] for b in sorted(partners)], image.shape)
        if not runs:
            return _NO_STAT
        values = runs.gather(image, scratch.buffers)
        if mask is not None:
            values = values[runs.gather(mask, scratch.buffers)]
        return sky_statistic(values, stat, work=scratch.work)

    def _input_pairs(self, label_of: np.ndarray, stat: StatParams | None) -> dict:
        """Per pair of inputs (g, h), g < h: the statistic of each side (None: geometry only).

        Group side: each member's statistic over its pixels inside the union of the other
        input's members, averaged with pixel-count weights (not pooled).
        """
        key = (stat, tuple(label_of))
        if key not in self._input_pair_cache:
            self._input_pair_cache[key] = self._compute_input_pairs(label_of, stat)
        return self._input_pair_cache[key]

    def _compute_input_pairs(self, label_of: np.ndarray, stat: StatParams | None) -> dict:
        geo = self.geometry
        partners: dict[tuple[int, int], dict[int, set]] = {}
        for (a, b), r in geo.runs.items():
            ga, gb = label_of[a], label_of[b]
            if ga == gb or not r:
                continue
            partners.setdefault((ga, gb), {}).setdefault(a, set()).add(b)
        if stat is not None:  # every statistic this grouping needs, computed together
            self._fill(stat, pairs=[(a, frozenset(bs)) for side in partners.values()
                                    for a, bs in side.items()])
        pairs = {}
        for (g, h), sides in partners.items():
            if g > h or (h, g) not in partners:
                continue
            if stat is None:
                pairs[(g, h)] = None
                continue
            pairs[(g, h)] = tuple(
                (
                    _combine([self._pair_stat(stat, a, frozenset(bs)) for a, bs in side.items()]),
                    {a: self._pair_stat(stat, a, frozenset(bs)).npix for a, bs in side.items()},
                )
                for side in (partners[(g, h)], partners[(h, g)])
            )
        return pairs


def skymatch(
    images,
    wcs,
    *,
    masks=None,
    groups: Sequence[Hashable] | None = None,
    skymethod: str = "match",
    match_down: bool = True,
    subtract: bool = False,
    skystat: str = "mode",
    lower: float | None = None,
    upper: float | None = None,
    nclip: int = 5,
    lsigma: float = 4.0,
    usigma: float = 4.0,
    binwidth: float = 0.1,
    stepsize: int | None = None,
    anchor: str = "global",
) -> SkyMatchResult:
    """Measure the sky of overlapping images and make it agree where they overlap.

    Parameters
    ----------
    images : sequence of 2-D array
        The images (any real dtype, any shapes).  Never changed.
    wcs : sequence
        One celestial WCS per image: `astropy.wcs.WCS` (SIP and other distortions honoured)
        or ``gwcs.WCS``.
    masks : sequence of 2-D bool array, optional
        True = good pixel.  Non-finite pixels are always ignored.
    groups : sequence of hashable, optional
        One label per image; images with the same label share one sky (e.g. the detectors of
        one exposure).  None (or a None label) leaves an image alone.
    skymethod : {'match', 'global+match', 'local', 'global'}
        ``local``: each input's own statistic; ``global``: the smallest local value, for all;
        ``match``: offsets that make overlaps agree (relative, the anchor at 0);
        ``global+match``: the match offsets lifted to absolute level by the global minimum.
    match_down : bool
        Anchor the match offsets to the lowest sky (True) or the highest (False).
    subtract : bool
        Return copies of the images with the sky subtracted in ``result.images``.
    skystat : {'mode', 'median', 'mean', 'midpt'}
        The statistic of the sky pixels.
    lower, upper : float, optional
        Pixel values outside [lower, upper] are ignored.
    nclip : int
        Passes of sigma clipping.
    lsigma, usigma : float
        Lower and upper clipping limits, in standard deviations.
    binwidth : float
        Histogram bin width for ``mode`` and ``midpt``, in standard deviations.
    stepsize : int, optional
        Footprint vertex spacing along image edges, in pixels, for distorted WCS.
    anchor : {'global', 'component'}
        ``global`` (the reference's behaviour): one anchor for the whole mosaic.
        ``component``: each connected component of the overlap graph is anchored on its own,
        so with ``global+match`` every component gets its own absolute sky.

    Returns
    -------
    SkyMatchResult

    Warns
    -----
    DisconnectedMosaicWarning
        When the overlap graph falls apart in several components under a match method.

    Examples
    --------
    >>> from skymatch_nb_ui.testing import make_mosaic
    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> skymatch(m.images, m.wcs, skymethod="match", skystat="mean").sky.round(6).tolist()
    [0.0, 20.0, 5.0, 10.0, 5.0, 15.0]
    """
    matcher = SkyMatcher(images, wcs, masks=masks, stepsize=stepsize)
    return matcher.run(
        groups=groups, skymethod=skymethod, match_down=match_down, subtract=subtract,
        skystat=skystat, lower=lower, upper=upper, nclip=nclip, lsigma=lsigma, usigma=usigma,
        binwidth=binwidth, anchor=anchor,
    )


# -- stage 1 -------------------------------------------------------------------------------
def _compute_geometry(images, wcs, stepsize) -> Geometry:
    footprints = []
    for k, (image, w) in enumerate(zip(images, wcs)):
        try:
            fp = footprint(w, image.shape, stepsize)
        except ValueError as exc:
            raise ValueError(f"wcs[{k}]: {exc}") from None
        if np.degrees(fp.radius) > MAX_FOOTPRINT_RADIUS:
            raise ValueError(
                f"images[{k}] spans {2 * np.degrees(fp.radius):.1f} degrees on the sky; the "
                f"engine supports footprints up to {2 * MAX_FOOTPRINT_RADIUS:.0f} degrees across "
                "(check its WCS: a wrong pixel scale gives this too)"
            )
        footprints.append(fp)
    neighbours: dict[int, list[int]] = {k: [] for k in range(len(images))}
    for i, j in candidate_pairs(footprints):
        neighbours[int(i)].append(int(j))
        neighbours[int(j)].append(int(i))
    runs = {}
    for a, others in neighbours.items():
        if others:
            found = overlap_runs(a, others, footprints, wcs[a], images[a].shape)
            runs.update({(a, b): r for b, r in found.items()})
    return Geometry(footprints=footprints, runs=runs)


# -- stage 2 helpers -----------------------------------------------------------------------
def _lowest(stats: list[SkyStat]) -> SkyStat:
    """An input's own sky: for a group, the smallest of its members' (as the reference)."""
    finite = [s for s in stats if np.isfinite(s.value)]
    return min(finite, key=lambda s: s.value) if finite else _NO_STAT


def _combine(stats: list[SkyStat]) -> SkyStat:
    """Pixel-count weighted mean of several statistics (a group's side of an overlap)."""
    good = [s for s in stats if s.npix > 0 and np.isfinite(s.value)]
    if not good:
        return _NO_STAT
    if len(good) == 1:
        return good[0]
    n = np.array([s.npix for s in good], float)
    v = np.array([s.value for s in good])
    e = np.array([s.err for s in good])
    total = n.sum()
    return SkyStat(float(n @ v / total), int(total), float(np.sqrt(np.sum((n * e) ** 2)) / total))


# -- stage 3 -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Solution:
    method: str
    sky: np.ndarray
    sky_err: np.ndarray
    valid: np.ndarray
    reason: list
    component: np.ndarray
    delta: np.ndarray
    pair_keys: list
    pair_valid: np.ndarray
    warnings: tuple


def _pair_arrays(pairs: dict, matching: bool):
    keys = list(pairs)
    if not matching:
        return keys, None
    sides = [pairs[k] for k in keys]
    sa = [s[0][0] for s in sides]
    sb = [s[1][0] for s in sides]
    stat_a = np.array([s.value for s in sa])
    stat_b = np.array([s.value for s in sb])
    npix_a = np.array([s.npix for s in sa], dtype=np.int64)
    npix_b = np.array([s.npix for s in sb], dtype=np.int64)
    err_a = np.array([s.err for s in sa])
    err_b = np.array([s.err for s in sb])
    valid = (npix_a > 0) & (npix_b > 0) & np.isfinite(stat_a) & np.isfinite(stat_b)
    return keys, (stat_a, stat_b, npix_a, npix_b, err_a, err_b, valid)


def _solve(method, match_down, anchor, n_inputs, pairs, local) -> _Solution:
    keys, arrays = _pair_arrays(pairs, "match" in method)
    reason = [""] * n_inputs
    sky = np.full(n_inputs, np.nan)
    err = np.full(n_inputs, np.nan)
    delta = np.full(n_inputs, np.nan)
    pair_valid = np.zeros(len(keys), dtype=bool)
    msgs: list[str] = []
    ga = np.array([k[0] for k in keys], dtype=np.intp)
    gb = np.array([k[1] for k in keys], dtype=np.intp)

    if arrays is None:  # local or global: the graph is the geometric one
        component = components(n_inputs, ga, gb)
    else:
        stat_a, stat_b, npix_a, npix_b, err_a, err_b, pair_valid = arrays
        v = pair_valid
        weight = 0.5 * (npix_a + npix_b)
        sol = solve_match(
            n_inputs, ga[v], gb[v], (stat_a - stat_b)[v], weight[v], (err_a**2 + err_b**2)[v]
        )
        component, delta = sol.component, sol.delta
        n_comp = int(component.max()) + 1 if n_inputs else 0
        if n_comp > 1 and n_inputs > 1:
            msgs.append(
                f"the overlap graph has {n_comp} disconnected components: skies are matched "
                "within each but not between them; use anchor='component' (with "
                "global+match) to give each its own absolute sky, or add images that link them"
            )
        matched = np.isfinite(delta)
        unmatched_reason = {
            g: "no valid overlap with another input" for g in range(n_inputs) if not matched[g]
        }
        for g, h in zip(ga[~v], gb[~v]):
            for x in (g, h):
                if not matched[x]:
                    unmatched_reason[x] = "no valid pixels in its overlaps with other inputs"

    local_val = np.array([s.value for s in local]) if local is not None else None
    local_err = np.array([s.err for s in local]) if local is not None else None

    if method == "local":
        sky, err = local_val.copy(), local_err.copy()
    elif method == "global":
        ok = np.isfinite(local_val)
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmin(local_val[ok])])
            sky[:] = local_val[k]
            err[:] = local_err[k]
    elif method == "match":
        scope = _anchor_scope(anchor, component, np.isfinite(delta))
        for members in scope:
            d = delta[members]
            ref = d.min() if match_down else d.max()
            sky[members] = d - ref
        err = sol.delta_err.copy()
        for g, text in unmatched_reason.items():
            reason[g] = text
    else:  # global+match
        matched = np.isfinite(delta)
        lifted = local_val - delta
        for members in _anchor_scope(anchor, component, matched & np.isfinite(local_val)):
            k = members[np.argmin(lifted[members])]
            targets = members if anchor == "component" else np.flatnonzero(matched)
            sky[targets] = delta[targets] + lifted[k]
            err[targets] = np.sqrt(sol.delta_err[targets] ** 2 + sol.delta_err[k] ** 2 + local_err[k] ** 2)
        lone = ~matched & np.isfinite(local_val)
        sky[lone], err[lone] = local_val[lone], local_err[lone]
        for g in np.flatnonzero(lone):
            reason[g] = f"not matched ({unmatched_reason[g]}): its own local sky"
        for g in np.flatnonzero(~matched & ~np.isfinite(local_val)):
            reason[g] = unmatched_reason[g]
    if local is not None and method in ("local", "global"):
        for g, s in enumerate(local):
            if s.npix == 0:
                reason[g] = "no valid pixels (masked, non-finite or outside lower/upper)"
                if method == "global":
                    sky[g] = err[g] = np.nan
    valid = np.isfinite(sky)
    for g in np.flatnonzero(~valid):
        reason[g] = reason[g] or "no sky could be computed"
    return _Solution(method, sky, err, valid, reason, component, delta, keys, pair_valid, tuple(msgs))


def _anchor_scope(anchor: str, component: np.ndarray, usable: np.ndarray) -> list[np.ndarray]:
    """The sets of inputs that share one anchor: all usable inputs, or each component's."""
    if not usable.any():
        return []
    if anchor == "global":
        return [np.flatnonzero(usable)]
    return [np.flatnonzero(usable & (component == c)) for c in np.unique(component[usable])]


def _assemble(sol, pairs, local, label_of, inputs, local_npix) -> SkyMatchResult:
    keys, arrays = _pair_arrays(pairs, "match" in sol.method)
    if arrays is None:
        nan = np.full(len(keys), np.nan)
        stat_a = stat_b = err_a = err_b = nan
        npix_a = npix_b = np.zeros(len(keys), dtype=np.int64)
        valid = np.zeros(len(keys), dtype=bool)
    else:
        stat_a, stat_b, npix_a, npix_b, err_a, err_b, valid = arrays
    if local_npix is not None and sol.method in ("local", "global"):
        npix = local_npix
    else:  # pixels of each image in the overlaps that entered the solve
        npix = np.zeros(len(label_of), dtype=np.int64)
        for key, ok in zip(keys, valid):
            if ok:
                for _, per_member in pairs[key]:
                    for a, n in per_member.items():
                        npix[a] += n
    ga = np.array([k[0] for k in keys], dtype=np.intp)
    gb = np.array([k[1] for k in keys], dtype=np.intp)
    before = stat_a - stat_b
    after = (stat_a - sol.sky[ga]) - (stat_b - sol.sky[gb])
    table = PairTable(
        a=ga, b=gb, stat_a=stat_a, stat_b=stat_b, npix_a=npix_a, npix_b=npix_b,
        err_a=err_a, err_b=err_b, weight=0.5 * (npix_a + npix_b), valid=valid,
        diff_before=before, diff_after=after,
    )
    local_in = np.array([s.value for s in local]) if local is not None else np.full(len(inputs), np.nan)
    return SkyMatchResult(
        sky=sol.sky[label_of],
        sky_err=sol.sky_err[label_of],
        valid=sol.valid[label_of],
        reason=np.array([sol.reason[g] for g in label_of], dtype=object),
        component=sol.component[label_of],
        group=label_of.copy(),
        npix=npix,
        local=local_in[label_of],
        delta=sol.delta[label_of],
        inputs=tuple(inputs),
        pairs=table,
        params={},
        warnings=sol.warnings,
    )


def subtracted_copy(image, sky: float, valid: bool) -> np.ndarray:
    """A new array: ``image - sky`` when ``valid``, else an unchanged copy.

    Float images keep their dtype, integer images become float64.  ``image`` is never changed.
    """
    image = np.asarray(image)
    dtype = image.dtype if image.dtype.kind == "f" else np.float64
    copy = np.array(image, dtype=dtype, copy=True)
    if valid:
        copy -= sky
    return copy


def _with_subtracted(result: SkyMatchResult, images) -> SkyMatchResult:
    out = tuple(subtracted_copy(im, sky, ok) for im, sky, ok in zip(images, result.sky, result.valid))
    return replace(result, images=out)


# -- validation at the boundary -------------------------------------------------------------
def _check_images(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise TypeError(
            "images must be a sequence of 2-D arrays (one per image); got a single 2-D array. "
            "Wrap it in a list: [image]"
        )
    try:
        images = list(images)
    except TypeError:
        raise TypeError(f"images must be a sequence of 2-D arrays; got {type(images).__name__}") from None
    if not images:
        raise ValueError("images must contain at least one 2-D array; got an empty sequence")
    checked = []
    for k, image in enumerate(images):
        arr = image if isinstance(image, np.ndarray) else np.asanyarray(image)
        if arr.dtype.kind not in "fiu":
            raise TypeError(
                f"images[{k}] must hold real numbers (float or integer); got dtype {arr.dtype}"
            )
        if arr.ndim != 2:
            raise ValueError(f"images[{k}] must be a 2-D array; got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"images[{k}] must not be empty; got shape {arr.shape}")
        checked.append(arr)
    return checked


def _check_wcs(wcs, n: int) -> list[CelestialWCS]:
    if wcs is None or not isinstance(wcs, Sequence) and not isinstance(wcs, np.ndarray):
        raise TypeError(
            f"wcs must be a sequence with one celestial WCS per image; got {type(wcs).__name__}"
        )
    if len(wcs) != n:
        raise ValueError(f"wcs must have one entry per image: got {len(wcs)} WCS for {n} images")
    adapters = [CelestialWCS(w, name=f"wcs[{k}]") for k, w in enumerate(wcs)]
    frames = {a.frame for a in adapters}
    if len(frames) > 1:
        raise ValueError(
            f"all WCS must use the same celestial frame; got {sorted(frames)}. "
            "Convert them to one frame (e.g. ICRS) first."
        )
    return adapters


def _check_masks(masks, images) -> list[np.ndarray | None]:
    if masks is None:
        return [None] * len(images)
    masks = list(masks)
    if len(masks) != len(images):
        raise ValueError(
            f"masks must have one entry per image (or be None): got {len(masks)} masks for "
            f"{len(images)} images"
        )
    checked = []
    for k, (mask, image) in enumerate(zip(masks, images)):
        if mask is None:
            checked.append(None)
            continue
        mask = np.asanyarray(mask)
        if mask.dtype != bool:
            raise TypeError(
                f"masks[{k}] must be a boolean array (True = good pixel); got dtype {mask.dtype}. "
                "For a data-quality array use astropy.nddata.bitfield_to_boolean_mask(dq, "
                "good_mask_value=True)"
            )
        if mask.shape != image.shape:
            raise ValueError(
                f"masks[{k}] must have the shape of images[{k}] {image.shape}; got {mask.shape}"
            )
        checked.append(mask)
    return checked


def _check_workers(workers) -> int:
    if workers is None:
        return max(1, min(os.cpu_count() or 1, 4))
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be None or a positive integer (threads); got {workers!r}")
    return int(workers)


def _check_stepsize(stepsize):
    if stepsize is None:
        return None
    if isinstance(stepsize, bool) or not isinstance(stepsize, numbers.Integral) or stepsize < 1:
        raise ValueError(
            f"stepsize must be None or a positive integer (pixels between footprint vertices); "
            f"got {stepsize!r}"
        )
    return int(stepsize)


def _check_choice(name: str, value, choices: tuple) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value.lower()


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _inputs(groups, n: int):
    """Map images to inputs: (input index per image, input labels, members per input)."""
    if groups is None:
        groups = [None] * n
    elif isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(
            f"groups must be a sequence with one label per image (or None); got {type(groups).__name__}"
        )
    if len(groups) != n:
        raise ValueError(f"groups must have one label per image: got {len(groups)} labels for {n} images")
    index: dict = {}
    labels: list = []
    label_of = np.empty(n, dtype=np.intp)
    for k, label in enumerate(groups):
        if isinstance(label, np.generic):
            label = label.item()
        if label is None:
            key = ("__alone__", k)
            shown = k
        else:
            if not isinstance(label, Hashable):
                raise TypeError(f"groups[{k}] must be a hashable label; got {type(label).__name__}")
            key, shown = label, label
        if key not in index:
            index[key] = len(labels)
            labels.append(shown)
        label_of[k] = index[key]
    members = [[] for _ in labels]
    for k, g in enumerate(label_of):
        members[g].append(k)
    return label_of, labels, members
