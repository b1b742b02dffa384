"""Sky statistics of many small pixel sets at once: the cells of ``skymodel="plane"``.

`segment_statistics` gives, for each segment ``values[start[k] : start[k] + count[k]]``, what
`stats.sky_statistic` gives for it (same limits, clipping, statistic and error), but for all
small segments together: one call costs a few vectorised passes over all the values instead
of ~0.2 ms of per-call work per cell (a mosaic of 256 images of 256 x 256 pixels has ~8,000
cells).  Large segments (more than `BATCH_MAX` values), where the per-call cost is nothing
beside the work, and the rare cases below go through `sky_statistic` itself.

How: the clipping passes keep a mask over all values and per-segment sums (``np.add.reduceat``
of the values less a per-segment centre); each segment stops at its own fixed point.  A
segment whose set ever *grows* back (clipping that could cycle), that holds values beyond
1e100 in size, or whose histogram would be wider than `MAX_BINS` bins, is handed to
`sky_statistic`.  Then:

- ``mean``: the final set's mean;
- ``median``: exact: each segment's set is binned into ``n // 32`` bins (at most 4096) over
  its range, the bins holding the middle ranks located by cumulative counts, and only their
  values sorted (by segment, then value);
- ``midpt`` and ``mode``: the histogram of `stats.sky_statistic` (bins of ``binwidth`` std from
  the set's minimum, the same tie rule) for all segments as one 2-D array; ``midpt``
  interpolates its cumulative counts, ``mode`` smooths each row with its own Gaussian kernels
  (by FFT: the same truncated kernels as `stats`, a convolution exact to rounding) and runs
  the same peak, error and widening rule.

The values agree with `sky_statistic`'s to rounding (the sums are taken in another order):
``mean``, ``median`` and ``midpt`` to ~1e-12 of the error (tested on random segments);
``mode`` likewise except where two smoothed bins tie to rounding (a symmetric top), where the
parabola through the other triple of bins moves the peak by a small part of its error.
"""

from __future__ import annotations

import math

import numpy as np

from .params import StatParams
from .stats import (
    _MODE_STAY,
    _MODE_WIDER,
    _MODE_WIDEST,
    _SQRT_HALF_PI,
    _TIE,
    _TINY,
    Workspace,
    _mode_kernel,
    sky_statistic,
)

__all__ = ["BATCH_MAX", "MAX_BINS", "large_statistics", "segment_statistics", "small_statistics"]

#: Segments with more values go through `stats.sky_statistic` one by one.
BATCH_MAX = 4096
#: Widest histogram (bins) of the batched ``midpt`` and ``mode``; wider ones go one by one.
MAX_BINS = 1024
_HUGE = 1e100
_MEDIAN_BINS = 4096
_REACH = 4.0  # stats._MODE_REACH
_CHUNK = 1024  # segments batched together, at most
_CHUNK_VALUES = 1 << 18  # and about this many values (bounded memory: ~40 MB of work arrays)


def segment_statistics(values: np.ndarray, start: np.ndarray, count: np.ndarray, params: StatParams,
                       work: Workspace | None = None):
    """`stats.sky_statistic` of each segment ``values[start[k] : start[k] + count[k]]``.

    Parameters
    ----------
    values : ndarray
        1-D, any real dtype; non-finite values and values outside ``lower``/``upper`` are
        ignored as by `sky_statistic`.
    start, count : ndarray of int
        The segments (they may not overlap; gaps are ignored).
    params : StatParams
        The statistic, limits and clipping.
    work : Workspace, optional
        Scratch buffers for the segments measured one by one.

    Returns
    -------
    value, npix, err : ndarray
        Per segment, as the fields of `stats.SkyStat`.

    Examples
    --------
    >>> v = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0, 40.0])
    >>> value, npix, err = segment_statistics(v, np.array([0, 3]), np.array([3, 4]),
    ...                                       StatParams(skystat="median"))
    >>> value.tolist(), npix.tolist()
    ([2.0, 25.0], [3, 4])
    """
    start = np.asarray(start, np.intp)
    count = np.asarray(count, np.intp)
    values = np.asarray(values)
    small = (count <= BATCH_MAX) & (count > 0)
    value, npix, err, left = small_statistics(values, start, count, small, params)
    one_by_one = np.concatenate([np.flatnonzero(~small & (count > 0)), left])
    if len(one_by_one):
        v, n, e = large_statistics([values[start[c] : start[c] + count[c]] for c in one_by_one],
                                   params, work)
        value[one_by_one], npix[one_by_one], err[one_by_one] = v, n, e
    return value, npix, err


def small_statistics(values, start, count, which, params: StatParams):
    """The batched part of `segment_statistics`: the segments ``which`` (a mask), `_CHUNK` at a time at most.

    Returns (value, npix, err) of all segments (NaN, 0, NaN where not computed) and, in
    order, the segments of ``which`` left to `large_statistics` (see the module's notes).
    """
    k = len(start)
    value, err = np.full(k, np.nan), np.full(k, np.nan)
    npix = np.zeros(k, np.int64)
    batch = np.flatnonzero(which)
    left = [np.empty(0, np.intp)]
    # chunks of at most _CHUNK segments and about _CHUNK_VALUES values
    cut = np.cumsum(count[batch]) // _CHUNK_VALUES
    bounds = np.flatnonzero(np.r_[True, cut[1:] != cut[:-1]]) if len(batch) else np.empty(0, int)
    bounds = np.unique(np.concatenate([bounds, np.arange(0, len(batch), _CHUNK)]))
    for lo, hi in zip(bounds, np.r_[bounds[1:], len(batch)]):
        part = batch[lo:hi]
        v, b, n, s = _batched(values, start[part], count[part], params)
        value[part], npix[part], err[part] = v, n, b
        left.append(part[s])
    return value, npix, err, np.concatenate(left)


def large_statistics(arrays, params: StatParams, work: Workspace | None = None, *,
                     alone: bool = False):
    """`stats.sky_statistic` of each of ``arrays`` (large ones: their per-value work dominates).

    For ``mode`` the smoothing, peak and widening of all their histograms run at once
    (`_large_modes`); the rest one by one.  Returns (value, npix, err) as `segment_statistics`.
    ``alone``: each array's values exactly as if it were measured alone (the same bits
    whatever the other arrays: see `_smoothed_peaks`), at some cost.
    """
    k = len(arrays)
    value, err = np.full(k, np.nan), np.full(k, np.nan)
    npix = np.zeros(k, np.int64)
    which = list(range(k))
    if params.skystat == "mode" and which:
        which = _large_modes(arrays, which, params, work, value, npix, err, alone)
    for c in which:
        stat = sky_statistic(arrays[c], params, work=work)
        value[c], npix[c], err[c] = stat.value, stat.npix, stat.err
    return value, npix, err


def _large_modes(arrays, which, params: StatParams, work, value, npix, err, alone=False):
    """``mode`` of large segments, their smoothed histograms' peaks all at once.

    `stats`' own clipped sets and histograms, one by one (their per-value work is what
    `stats` does best), then the smoothing, peak and widening of all of them at once
    (`_modes`: per segment ~4 smoothings of a ~100-bin histogram, whose per-call cost
    dominated).  Returns the segments left to `sky_statistic`.
    """
    from .stats import _clipped_set, _histogram, _too_coarse

    work = Workspace() if work is None else work
    left, rows = [], []
    for c in which:
        clipped = _clipped_set(arrays[c], params, work)
        if clipped is None:  # nothing usable: (nan, 0, nan)
            continue
        if _too_coarse(clipped, params.binwidth):
            left.append(c)
            continue
        ymin, h, counts = _histogram(clipped, params)  # raises for too many bins, as stats
        n = clipped.n
        if h is None:  # constant: the constant, error 0
            value[c], npix[c], err[c] = clipped.centre + ymin * clipped.scale, n, 0.0 if n >= 2 else np.nan
            continue
        if counts.size > MAX_BINS:
            left.append(c)
            continue
        rows.append((c, counts, ymin, h, clipped.std, n, clipped.centre, clipped.scale))
    if rows:
        width = max(r[1].size for r in rows)
        table = np.zeros((len(rows), width))
        for k, r in enumerate(rows):
            table[k, : r[1].size] = r[1]
        nb = np.array([r[1].size for r in rows], np.int64)
        ymin, h, std, n, centre, scale = (np.array([r[k] for r in rows], float) for k in range(2, 8))
        v, e = _modes(table, nb, ymin, h, std, n, params.binwidth, alone)
        at = np.array([r[0] for r in rows])
        value[at] = centre + v * scale
        npix[at] = n.astype(np.int64)
        err[at] = np.where(n >= 2, e * scale, np.nan)
    return left


def _segsum(a, first, count):
    """Per segment ``a[first[k] : first[k] + count[k]]`` summed (segments contiguous, in order)."""
    out = np.zeros(len(count), np.result_type(a.dtype, np.float64) if a.dtype != bool else np.int64)
    has = count > 0
    if has.any():
        out[has] = np.add.reduceat(a, first[has])
    return out


def _batched(values, start, count, params: StatParams):
    """(value, err, npix, left to `sky_statistic`) of segments of at most `BATCH_MAX` values.

    The clipping as `stats._ClippedSet`: after the first pass over all values, a *core* of
    each segment (within 0.75 of the clipping half-widths) is known by its count and sums,
    and later passes read only the rest (the *fringe*); a segment whose limits come inside
    its core, or whose set grows back, is left to `sky_statistic`.
    """
    m = len(start)
    total = int(count.sum())
    contiguous = m and np.array_equal(start[1:], start[:-1] + count[:-1])
    if contiguous:  # (float32 values stay float32 until their first use in float64, exact)
        x = values[int(start[0]) : int(start[0]) + total]
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
    else:
        pos = np.repeat(start - np.cumsum(count) + count, count) + np.arange(total)
        x = values[pos].astype(np.float64)
    value, err = np.full(m, np.nan), np.full(m, np.nan)
    npix = np.zeros(m, np.int64)
    left = np.zeros(m, bool)
    first = np.cumsum(count) - count
    # the base set: finite, within the limits; values beyond 1e100 go one by one
    keep = None
    # (two reductions tell the common case: all finite, none huge)
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    plain = math.isfinite(low) and math.isfinite(high)  # NaN and inf make either non-finite
    if params.lower is not None or params.upper is not None or not plain:
        x = np.asarray(x, np.float64)  # (limits compared in float64)
        keep = np.isfinite(x)
        if params.lower is not None:
            keep &= x >= float(params.lower)
        if params.upper is not None:
            keep &= x <= float(params.upper)
    if not (plain and max(-low, high) <= _HUGE):
        with np.errstate(invalid="ignore"):
            huge = np.abs(x) > _HUGE
        if huge.any():
            left |= _segsum(huge, first, count) > 0
            keep = ~huge if keep is None else keep & ~huge
    if keep is not None:
        count = _segsum(keep, first, count)
        x = x[keep]
        first = np.cumsum(count) - count
    n = count.astype(np.int64)
    if not len(x):
        return value, err, npix, np.flatnonzero(left)
    has = n > 0
    centre = np.zeros(m)
    centre[has] = x[first[has]]  # each segment's first value: accurate sums
    y = x.astype(np.float64)  # (cast, then subtract: the same values as a mixed subtract)
    y -= np.repeat(centre, n)
    s1, s2 = _segsum(y, first, n), _segsum(y * y, first, n)
    mean, std = _moments(n, s1, s2)
    tie = 1.0 + _TIE
    inset = None  # all the base set
    core = None
    active = has & ~left
    for _ in range(params.nclip):
        active &= ~(std <= _TINY * np.abs(mean))  # limits below float64 resolution: done
        if not active.any():
            break
        lo = mean - params.lsigma * std * tie
        hi = mean + params.usigma * std * tie
        if core is None:  # the first pass: all values
            rl, rh = np.repeat(lo, n), np.repeat(hi, n)
            new = np.greater_equal(y, rl)
            new &= np.less_equal(y, rh, out=np.empty(len(y), bool))
            del rl, rh
            if not active.all():
                new |= ~np.repeat(active, n)
            inset = new
            k = _segsum(new, first, n)
            changed = k < n  # from the base set: only removals
            yi = np.where(new, y, 0.0)
            s1, s2 = _segsum(yi, first, n), _segsum(yi * yi, first, n)
            mean, std = _moments(k, s1, s2)
            # the core, inside every later pass's limits as long as they hold it
            cl = mean - 0.75 * params.lsigma * std
            ch = mean + 0.75 * params.usigma * std
            in_core = np.greater_equal(y, np.repeat(cl, n))
            in_core &= np.less_equal(y, np.repeat(ch, n))
            in_core &= new
            yc = np.where(in_core, y, 0.0)
            core = (_segsum(in_core, first, n), _segsum(yc, first, n), _segsum(yc * yc, first, n))
            fringe = np.flatnonzero(~in_core)
            fy, fseg = y[fringe], np.repeat(np.arange(m), n)[fringe]
            fin = inset[fringe]
            cnt = k
            active &= changed & (k > 0)
            continue
        broken = active & ((lo > cl) | (hi < ch))
        left |= broken
        active &= ~broken
        on = active[fseg]
        new = np.where(on, (fy >= lo[fseg]) & (fy <= hi[fseg]), fin)
        changed = np.bincount(fseg, new != fin, minlength=m) > 0
        grew = np.bincount(fseg, new & ~fin, minlength=m) > 0
        left |= grew & active  # a value back in: clipping might cycle, `sky_statistic` decides
        fin = new
        fy_in = np.where(fin, fy, 0.0)
        cnt = core[0] + np.bincount(fseg, fin, minlength=m).astype(np.int64)
        s1 = core[1] + np.bincount(fseg, fy_in, minlength=m)
        s2 = core[2] + np.bincount(fseg, fy_in * fy_in, minlength=m)
        mean, std = _moments(cnt, s1, s2)
        active &= changed & (cnt > 0) & ~left
    if core is not None:
        inset = inset.copy()
        inset[fringe] = fin
        n = cnt
    if inset is not None:
        y = y[inset]
    seg = None
    first = np.cumsum(n) - n
    ok = (n > 0) & ~left
    if not len(y):
        return value, err, npix, np.flatnonzero(left)
    has = n > 0
    ymin = np.full(m, np.inf)
    ymax = np.full(m, -np.inf)
    ymin[has] = np.minimum.reduceat(y, first[has])
    ymax[has] = np.maximum.reduceat(y, first[has])
    seg = np.repeat(np.arange(m), n)
    const = (ymin == ymax) | (std == 0)
    n_safe = np.maximum(n, 1)
    skystat = params.skystat
    if skystat == "mean":
        out = mean.copy()
        maybe = ok & (std <= _TINY * np.abs(mean)) & (ymin == ymax)
        out[maybe] = ymin[maybe]
        e = std / np.sqrt(n_safe)
    else:
        e = _SQRT_HALF_PI * std / np.sqrt(n_safe)
        if skystat == "median":
            use_median = np.ones(m, bool)
        else:  # mode, midpt: the median when fewer than 3 bins span the range
            coarse = (std > 0) & (2.0 * np.sqrt((n_safe - 1) / n_safe) < 3 * params.binwidth)
            use_median = coarse & ((ymax - ymin) < 3 * params.binwidth * std)
        out = np.full(m, np.nan)
        med = ok & use_median & ~const
        if med.any():
            out[med] = _medians(y, seg, n, ymin, ymax, med)
        hist = ok & ~use_median & ~const
        if hist.any():
            h = params.binwidth * std
            with np.errstate(divide="ignore", invalid="ignore"):
                nbins = np.floor((ymax - ymin) * (tie / h)) + 1
            wide = hist & ~(nbins <= MAX_BINS)
            left |= wide
            hist &= ~wide
            if hist.any():
                v, em = _histogram_statistic(skystat, y, seg, n, ymin, h, nbins, std, hist,
                                             params.binwidth)
                out[hist] = v
                if skystat == "mode":
                    e = e.copy()
                    e[hist] = em
        out[ok & const] = ymin[ok & const]
        if skystat == "mode":
            e = np.where(const, 0.0, e)
    ok &= ~left
    value[ok] = out[ok] + centre[ok]
    err[ok] = np.where(n[ok] >= 2, e[ok], np.nan)
    npix[ok] = n[ok]
    # an empty set: (nan, 0, nan), as `sky_statistic`
    return value, err, npix, np.flatnonzero(left)


def _moments(n, s1, s2):
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s1 / np.maximum(n, 1), np.nan)
        var = np.where(n > 1, (s2 - s1 * mean) / np.maximum(n - 1, 1), 0.0)
    std = np.sqrt(np.where(var > 0, var, 0.0))
    return mean, std


def _medians(y, seg, n, ymin, ymax, which):
    """Exact medians of the segments ``which`` (values ``y`` by segment ``seg``)."""
    sel = np.repeat(which, n)
    ys, ss = y[sel], seg[sel]
    bins = np.maximum(1, np.minimum(_MEDIAN_BINS, n // 32))
    span = ymax - ymin
    b = np.floor((ys - ymin[ss]) / span[ss] * bins[ss]).astype(np.int64)
    b = np.clip(b, 0, bins[ss] - 1)
    width = int(bins[which].max())
    counts = np.bincount(ss * width + b, minlength=len(n) * width).reshape(len(n), width)
    cum = np.cumsum(counts, axis=1)
    r1, r2 = (n - 1) // 2, n // 2
    rows = np.flatnonzero(which)
    k1 = (cum[rows] <= r1[rows, None]).sum(axis=1)
    k2 = (cum[rows] <= r2[rows, None]).sum(axis=1)
    lo_bin, hi_bin = np.zeros(len(n), np.int64), np.zeros(len(n), np.int64)
    lo_bin[rows], hi_bin[rows] = k1, k2
    before = np.zeros(len(n), np.int64)
    before[rows] = np.where(k1 > 0, cum[rows, np.maximum(k1 - 1, 0)], 0)
    cand = (b >= lo_bin[ss]) & (b <= hi_bin[ss])
    cv, cs = ys[cand], ss[cand]
    order = np.lexsort((cv, cs))
    cv, cs = cv[order], cs[order]
    offset = np.searchsorted(cs, rows)
    a = cv[offset + r1[rows] - before[rows]]
    c = cv[offset + r2[rows] - before[rows]]
    return 0.5 * (a + c)


def _histogram_statistic(skystat, y, seg, n, ymin, h, nbins, std, which, binwidth):
    """``midpt`` or ``mode`` (value less centre, and the mode's error) of segments ``which``."""
    rows = np.flatnonzero(which)
    r = len(rows)
    ys = y if which[n > 0].all() else y[np.repeat(which, n)]
    counts_r = n[rows]
    hr, nb = h[rows], nbins[rows].astype(np.int64)
    width = int(nb.max())
    # bins as `stats` (values >= the minimum: truncation is the floor)
    t = np.subtract(ys, np.repeat(ymin[rows], counts_r))
    t *= np.repeat((1.0 + _TIE) / hr, counts_r)
    b = t.astype(np.int64)
    del t
    np.minimum(b, np.repeat(nb - 1, counts_r), out=b)
    b += np.repeat(np.arange(r, dtype=np.int64) * width, counts_r)
    counts = np.bincount(b, minlength=r * width).reshape(r, width).astype(np.float64)
    nr, sr = n[rows].astype(np.float64), std[rows]
    if skystat == "midpt":
        cum = np.cumsum(counts, axis=1)
        half = 0.5 * nr
        k = (cum < half[:, None]).sum(axis=1)
        before = np.where(k > 0, cum[np.arange(r), np.maximum(k - 1, 0)], 0.0)
        value = ymin[rows] + (k + (half - before) / counts[np.arange(r), k]) * hr
        return value, None
    return _modes(counts, nb, ymin[rows], hr, sr, nr, binwidth)


def _modes(counts, nb, ymin, h, std, n, binwidth, alone=False):
    """`stats._mode` for each row of ``counts`` (rows of ``nb`` bins): (value, err).

    ``alone``: each row's result independent of the other rows (`_smoothed_peaks`).
    """
    r, width = counts.shape
    kernel = _kernels(n, binwidth)
    chosen_peak = np.full((r, 8), np.nan)
    chosen_err = np.full((r, 8), np.nan)
    chosen_k = np.zeros(r, np.int64)
    active = np.ones(r, bool)
    idx = np.arange(width)
    spectra: dict = {}  # the rows' spectra by FFT size, for every level (`_spectra`)
    for level in range(8):
        if not active.any():
            break
        rows = np.flatnonzero(active)
        w = kernel[rows] / binwidth
        peak, err = _smoothed_peaks(counts, rows, nb[rows], w, h[rows], std[rows], n[rows],
                                    kernel[rows], idx, alone, spectra)
        prev = chosen_peak[rows, :level]
        moved = np.any(np.abs(peak[:, None] - prev) * h[rows, None]
                       > _MODE_STAY * chosen_err[rows, :level], axis=1)
        stop = np.isnan(peak) | moved
        go = rows[~stop]
        chosen_peak[go, level] = peak[~stop]
        chosen_err[go, level] = err[~stop]
        chosen_k[go] = level + 1
        active[rows[stop]] = False
        wide = kernel >= _MODE_WIDEST
        active &= ~wide
        kernel = np.where(active, np.minimum(_MODE_WIDER * kernel, _MODE_WIDEST), kernel)
    value = np.empty(r)
    err = np.empty(r)
    none = chosen_k == 0
    raw = np.argmax(np.where(idx[None, :] < nb[:, None], counts, -1.0), axis=1)
    value[none] = ymin[none] + (raw[none] + 0.5) * h[none]
    err[none] = std[none]
    got = np.flatnonzero(~none)
    last = chosen_k[got] - 1
    value[got] = ymin[got] + chosen_peak[got, last] * h[got]
    err[got] = chosen_err[got, last]
    return value, err


def _smoothed_peaks(counts, rows, nb, w, h, std, n, kernel, idx, alone=False, spectra=None):
    """`stats._smoothed_peak` per row ``rows`` of ``counts``: (peak in bins or NaN, error in data units).

    The rows are smoothed together by FFT, of a size that fits the widest histogram and
    kernel.  ``alone``: each row's bits independent of the other rows: each is smoothed by
    an FFT of the size its own histogram and kernel need (rows of one size together: their
    rows are the same numbers however many there are), and the error's sums run along its
    own bins in order (`np.cumsum`), not over the width of the widest row (numpy's pairwise
    sums group the terms by the row's length).

    (An FFT's rows are transformed one by one: a row's spectrum is the same numbers whatever
    the other rows.  So the kernels' spectra are taken once per kernel width, and the
    histograms' once per FFT size for all the levels of `_modes` (``spectra``).)
    """
    r, width = len(rows), counts.shape[1]
    spectra = {} if spectra is None else spectra
    reach = np.ceil(_REACH * w).astype(np.int64)
    if alone:
        need = np.maximum(nb + reach + 1, 2 * reach + 2)
        sizes = np.left_shift(1, np.ceil(np.log2(need)).astype(np.int64))
        groups = [np.flatnonzero(sizes == size) for size in np.unique(sizes)]
    else:  # a circular convolution of this size is the linear one on the first `width` bins
        need = max(width + int(reach.max()) + 1, 2 * int(reach.max()) + 2)
        groups = [None]
        sizes = [1 << math.ceil(math.log2(need))]
    smooth = np.empty((r, width))  # (-inf beyond each row's bins, below)
    for part, size in zip(groups, np.unique(sizes) if alone else sizes):
        size = int(size)
        part = slice(None) if part is None else part
        span = width if not alone else min(width, int(nb[part].max()))
        # the kernel at circular offsets -R..R (zero beyond its reach), placed at their
        # columns: the same values as over all the columns, where the rest are zeros; one
        # per kernel width (exp(-x**2/2) of -x is that of x: the half 0..R mirrored)
        wu, which = np.unique(w[part], return_inverse=True)
        ru = np.ceil(_REACH * wu).astype(np.int64)
        most = int(ru.max())
        j = np.arange(most + 1)
        half = np.exp(-0.5 * (j[None, :] / wu[:, None]) ** 2)
        half[j[None, :] > ru[:, None]] = 0.0
        kern = np.zeros((len(wu), size))
        kern[:, : most + 1] = half
        if most:
            kern[:, size - most :] = half[:, most:0:-1]
        product = _spectra(counts, rows[part], size, spectra) * np.fft.rfft(kern, axis=1)[which]
        smooth[part, :span] = np.fft.irfft(product, n=size, axis=1)[:, :span]
    np.copyto(smooth, -np.inf, where=idx[None, :] >= nb[:, None])
    k = np.argmax(smooth, axis=1)
    peak = np.full(r, np.nan)
    err = np.full(r, np.nan)
    ok = (k > 0) & (k < nb - 1)
    if not ok.any():
        return peak, err
    rr = np.flatnonzero(ok)
    kk = k[rr]
    top = np.stack([smooth[rr, kk - 1], smooth[rr, kk], smooth[rr, kk + 1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.where(top > 0, top, 1.0))
        left_, mid, right = logs.T
        denom = left_ - 2.0 * mid + right
        vertex = np.where((top.min(axis=1) > 0) & (denom < 0), 0.5 * (left_ - right) / denom, 0.0)
    pk = kk + 0.5 + vertex
    u = idx[None, :] + 0.5 - pk[:, None]
    ww = w[rr, None]
    q = (u / ww) ** 2
    g = np.exp(-0.5 * q)
    c = counts[rows[rr]]
    q -= 1.0  # ((u / ww) ** 2 - 1.0)
    if alone:  # each row's own bins, in order
        last = nb[rr, None] - 1
        slope = np.take_along_axis(np.cumsum(c * (u * g) ** 2, axis=1), last, axis=1)[:, 0]
        curvature = np.take_along_axis(np.cumsum(c * q * g, axis=1), last, axis=1)[:, 0]
    else:
        slope = np.sum(c * (u * g) ** 2, axis=1)
        curvature = np.sum(c * q * g, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bins_err = np.where(curvature < 0, np.sqrt(slope) / -curvature, np.inf)
    gaussian = std[rr] * np.sqrt(_gaussian_mode_variance(kernel[rr]) / n[rr])
    peak[rr] = pk
    err[rr] = np.minimum(np.maximum(h[rr] * bins_err, gaussian), std[rr])
    return peak, err


def _spectra(counts, rows, size: int, spectra: dict):
    """The spectra (``rfft``) of ``counts``' ``rows``, each zero-padded to ``size`` bins.

    Kept in ``spectra`` by size (for the next levels of `_modes`), made for the rows that
    have none yet.  (Each row's columns beyond its bins are zeros: cut at ``size``, as
    `_smoothed_peaks` cuts them at its span.)
    """
    found = spectra.get(size)
    if found is None:
        found = spectra[size] = (np.empty((len(counts), size // 2 + 1), complex),
                                 np.zeros(len(counts), bool))
    table, done = found
    missing = rows[~done[rows]]
    if len(missing):
        padded = np.zeros((len(missing), size))
        cut = min(size, counts.shape[1])
        padded[:, :cut] = counts[missing, :cut]
        table[missing] = np.fft.rfft(padded, axis=1)
        done[missing] = True
    return table[rows]


_KERNELS: dict = {}


def _kernels(n, binwidth: float) -> np.ndarray:
    """`stats._mode_kernel` of each count ``n`` (the same floats, remembered per count)."""
    counts, which = np.unique(np.asarray(n).astype(np.int64), return_inverse=True)
    out = np.empty(len(counts))
    for i, k in enumerate(counts.tolist()):
        key = (k, binwidth)
        found = _KERNELS.get(key)
        if found is None:
            if len(_KERNELS) > 1 << 16:
                _KERNELS.clear()
            found = _KERNELS[key] = _mode_kernel(k, binwidth)
        out[i] = found
    return out[which]


def _gaussian_mode_variance(kernel):
    """`stats._gaussian_mode_variance` on arrays."""
    half = 0.5 * kernel**2
    expect = (half / (half + 1.0)) / (2.0 * kernel**5 * math.sqrt(math.pi)
                                      * np.sqrt(2.0 * math.pi * (half + 1.0)))
    curvature2 = 1.0 / (2.0 * math.pi * (1.0 + kernel**2) ** 3)
    return expect / curvature2
