"""Study: would compiled code (numba) make the small end's statistics faster?

Issue 12 asks for 60x the reference at N = 64 in one process, about twice what the numpy
engine reaches.  Its per-pixel work (the base set, the clipping passes, the histogram) is
numpy calls of a few passes each, and the obvious question is whether a compiled loop that
does it all in one go would be faster.  This measures it on the sides of the
``bench_vs_stcal.py`` N = 64 mosaic (1024 x 1024 float32 images, 20% overlap, sources),
side by side in one process, CPU time, best of ``--rounds``:

1. **ours**: `stats._clipped_set` then `stats._histogram`, what `sky_statistic` does for the
   mode before its smoothing, with one reused `stats.Workspace` (as the engine does);
2. **fused**: one numba function that does less arithmetic than ours but reads every pixel
   once per clipping pass (so it says little about compiled code as such; item 3 runs our
   algorithm): values minus a centre into float64 with their sums, up to ``nclip`` full
   clipping passes (sums in four accumulators, no core/fringe split, no cycle detection, no
   recentring), the set's range and its histogram (four interleaved sub-histograms);
3. **two-pass**: numba kernels that do *what ours does*, in two passes over the pixels: the
   base set's sums and the fringe outside our first core (`stats._rough_centre`,
   `stats._CORE`) in one, the histogram of the final set in the other, the clipping on the
   sorted fringe in numpy between them (as ours); the same sets and counts as ours, checked
   side by side (a plain compiled version of our algorithm, without SIMD tuning);
4. **counts**: the histogram alone, ours (`_ClippedSet.counts`) against a numba loop that
   gives the same counts, bit for bit;
5. **engine**: N = 64 ``match`` in one process, interleaved, with and without the two
   kernels that give the same bits as numpy (the histogram's counts and the gather of a
   side's pixels, patched in for this study only), checked for identical skies and errors.

Needs numba (``pip install numba``); it is not a dependency of the package.

Usage::

    python bench/study_compiled.py              # ~2 minutes of CPU
    python bench/study_compiled.py --rounds 3 --engine-rounds 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

import skymatch_nb_ui
from skymatch_nb_ui.engine import geometry, stats
from skymatch_nb_ui.engine.matcher import SkyMatcher
from skymatch_nb_ui.testing import make_mosaic

try:
    from numba import __version__ as NUMBA_VERSION
    from numba import njit
except ImportError:  # pragma: no cover - a study, not a test
    njit = None


def main(argv=None) -> int:
    args = parse_args(argv)
    if njit is None:
        print("numba is not installed: pip install numba")
        return 1
    kernels = _kernels()
    print(f"numpy {np.__version__}, numba {NUMBA_VERSION}, load {_load()}")
    mosaic = make_mosaic(
        (8, 8), shape=(1024, 1024), overlap=0.2,
        sky=100.0 + 20.0 * np.random.default_rng(0).random(64), noise=1.0, sources=50,
        rotation=3.0, jitter=5.0, dtype=np.float32, seed=0,
    )
    runs = SkyMatcher(mosaic.images, mosaic.wcs).geometry.runs
    sides = [r.gather(mosaic.images[s]) for (s, _), r in sorted(runs.items()) if r]
    pixels = sum(x.size for x in sides)
    print(f"{len(sides)} sides, {pixels / 1e6:.1f}M pixels (the N = 64 match run's overlaps)")
    params = stats.StatParams(skystat="mode", nclip=5)

    work = stats.Workspace()

    def ours(x):
        s = stats._clipped_set(x, params, work)
        return s, stats._histogram(s, params)

    y = np.empty(max(x.size for x in sides))
    hist = np.zeros((4, 1 << 16), np.int64)

    def fused(x):
        centre = float(np.median(x[:: max(1, x.size // 1000)]))
        return kernels["fused"](x, centre, params.nclip, params.lsigma, params.usigma,
                                params.binwidth, y, hist)

    _check_fused(sides, ours, fused)
    for x in sides[:2]:  # compile before timing
        fused(x)
    a, b = _best(sides, ours, args.rounds), _best(sides, fused, args.rounds)
    print(f"clip + histogram, ours:  {a * 1e3:7.1f} ms  {a / pixels * 1e9:5.2f} ns/pixel")
    print(f"clip + histogram, fused: {b * 1e3:7.1f} ms  {b / pixels * 1e9:5.2f} ns/pixel"
          f"   ours/fused {a / b:.2f}   load {_load()}")

    _two_pass_study(sides, ours, params, kernels, args.rounds)

    sets = []
    for x in sides:
        s = stats._clipped_set(x, params, stats.Workspace())
        ymin, ymax = s.value_range()
        h = params.binwidth * s.std
        sets.append((s, ymin, ymax, h))
    counts = kernels["counts"]

    def count_ours(item):
        s, ymin, ymax, h = item
        return s.counts(ymin, ymax, h, keep_values=True)

    def count_numba(item):
        s, ymin, ymax, h = item
        scale = stats._bin_scale(h)
        nbins = int((ymax - ymin) * scale) + 1
        return counts(s.y, ymin, scale, nbins, s._rejected(), hist)

    same = all(np.array_equal(count_ours(i), count_numba(i)) for i in sets)
    a, b = _best(sets, count_ours, args.rounds), _best(sets, count_numba, args.rounds)
    print(f"histogram counts, ours {a * 1e3:.1f} ms, numba {b * 1e3:.1f} ms: ours/numba "
          f"{a / b:.2f}, same counts: {same}   load {_load()}")

    _engine(mosaic, kernels, args.engine_rounds)
    return 0


def _engine(mosaic, kernels, rounds: int) -> None:
    """N = 64 match, serial, with and without the numba counts and gather (same bits)."""
    counts, gather = kernels["counts"], kernels["gather"]
    plain_counts, plain_gather = stats._ClippedSet.counts, geometry.Runs.gather
    hist = np.zeros((4, 1 << 16), np.int64)

    def counts_numba(self, ymin, ymax, h, *, keep_values=False):
        scale = stats._bin_scale(h)
        nbins = int((ymax - ymin) * scale) + 1
        y = self.y
        if not keep_values:
            self.y = None
        if nbins > hist.shape[1]:
            return plain_counts(self, ymin, ymax, h, keep_values=True)
        return counts(y, ymin, scale, nbins, self._rejected(), hist)

    def gather_numba(self, image, buffers=None):
        if self.npix == 0 or geometry._is_rectangle(self) or not image.flags.c_contiguous:
            return plain_gather(self, image, buffers)
        out = (np.empty(self.npix, image.dtype) if buffers is None
               else buffers.values(image.dtype, self.npix))
        gather(image.reshape(-1), image.shape[1], self.rows, self.start, self.stop, out)
        return out

    def use(numba: bool) -> None:
        stats._ClippedSet.counts = counts_numba if numba else plain_counts
        geometry.Runs.gather = gather_numba if numba else plain_gather

    def run():
        return skymatch_nb_ui.skymatch(mosaic.images, mosaic.wcs, skymethod="match",
                                       scheduler="serial", compare="levels", skystat="mode",
                                       nclip=5)

    found, cpu = {}, {False: [], True: []}
    try:
        for numba in (False, True):
            use(numba)
            found[numba] = run()
        for _ in range(rounds):
            for numba in (False, True):
                use(numba)
                t = time.process_time()
                run()
                cpu[numba].append(time.process_time() - t)
    finally:
        use(False)
    same = all(np.array_equal(getattr(found[False], k), getattr(found[True], k), equal_nan=True)
               for k in ("sky", "sky_err", "valid"))
    a, b = min(cpu[False]), min(cpu[True])
    print(f"engine, N = 64 match, serial CPU (best of {rounds}): numpy {a:.3f} s, with the "
          f"numba counts and gather {b:.3f} s: {100 * (1 - b / a):.0f}% less; same skies, "
          f"errors and flags: {same}   load {_load()}")


def _two_pass_study(sides, ours, params, kernels, rounds: int) -> None:
    """Item 3: ours against the two-pass kernels, the same sets and counts."""
    pass1, pass2 = kernels["pass1"], kernels["pass2"]
    fringe = np.empty(max(x.size for x in sides))
    hist = np.zeros((4, 1 << 16), np.int64)
    pixels = sum(x.size for x in sides)

    def two_pass(x):
        centre, spread = stats._rough_centre(x, None, None)
        cl = -stats._CORE * params.lsigma * spread
        ch = stats._CORE * params.usigma * spread
        s1, s2, nf, cmin, cmax = pass1(x, centre, cl, ch, fringe)
        fv = np.sort(fringe[:nf])
        core = (x.size - nf, s1 - float(fv.sum()), s2 - float(fv @ fv))
        n, t1, t2, i, j = x.size, s1, s2, 0, nf
        for _ in range(params.nclip):
            mean = t1 / n
            std = math.sqrt(max((t2 - t1 * mean) / (n - 1), 0.0))
            lo = mean - params.lsigma * std * (1.0 + stats._TIE)
            hi = mean + params.usigma * std * (1.0 + stats._TIE)
            if lo > cl or hi < ch:
                return None  # ours would partition again: not emulated here
            i2, j2 = int(fv.searchsorted(lo, "left")), int(fv.searchsorted(hi, "right"))
            if (i2, j2) == (i, j):
                break
            part = fv[i2:j2]
            i, j = i2, j2
            n, t1, t2 = core[0] + part.size, core[1] + float(part.sum()), core[2] + float(part @ part)
        mean = t1 / n
        std = math.sqrt(max((t2 - t1 * mean) / (n - 1), 0.0))
        part = fv[i:j]
        low = float(part[0]) if part.size and part[0] < cl else cmin
        high = float(part[-1]) if part.size and part[-1] > ch else cmax
        scale = stats._bin_scale(params.binwidth * std)
        nbins = int((high - low) * scale) + 1
        return n, pass2(x, centre, low, high, low, scale, hist[:, :nbins])

    same = 0
    for x in sides:
        s, (_, _, c) = ours(x)
        found = two_pass(x)
        same += found is not None and found[0] == s.n and np.array_equal(found[1], c)
    a, b = _best(sides, ours, rounds), _best(sides, two_pass, rounds)
    edges = [(x, *stats._rough_centre(x, None, None)) for x in sides]
    p1 = _best(edges, lambda e: pass1(e[0], e[1], -3 * e[2], 3 * e[2], fringe), rounds)
    p2 = _best(edges, lambda e: pass2(e[0], e[1], -4 * e[2], 4 * e[2], -4 * e[2],
                                      1.0 / (0.1 * e[2]), hist[:, :81]), rounds)
    print(f"clip + histogram, two-pass: {b * 1e3:7.1f} ms  {b / pixels * 1e9:5.2f} ns/pixel"
          f"   ours/two-pass {a / b:.2f}; the same sets and counts as ours: {same} of "
          f"{len(sides)} sides; the passes alone {p1 / pixels * 1e9:.2f} (sums and fringe) and "
          f"{p2 / pixels * 1e9:.2f} ns/pixel (histogram)   load {_load()}")


def _check_fused(sides, ours, fused) -> None:
    """The fused kernel keeps the same sets (a cruder algorithm than ours, not a copy)."""
    for x in sides[:8]:
        s, (_, _, c) = ours(x)
        n, _, std, _, hist = fused(x)
        assert n == s.n and hist.size == c.size, "the fused kernel clipped another set"
        assert abs(std - s.std) <= 1e-12 * s.std


def _best(items, function, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for item in items:
            function(item)
        best = min(best, time.process_time() - t)
    return best


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def _kernels() -> dict:
    @njit(nogil=True)
    def fused(x, centre, nclip, lsig, usig, binwidth, y, hist):
        n = x.size
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
        k = 0
        while k + 4 <= n:  # four accumulators: the adds need not wait for each other
            v0, v1 = np.float64(x[k]) - centre, np.float64(x[k + 1]) - centre
            v2, v3 = np.float64(x[k + 2]) - centre, np.float64(x[k + 3]) - centre
            y[k], y[k + 1], y[k + 2], y[k + 3] = v0, v1, v2, v3
            a0, a1, a2, a3 = a0 + v0, a1 + v1, a2 + v2, a3 + v3
            b0, b1, b2, b3 = b0 + v0 * v0, b1 + v1 * v1, b2 + v2 * v2, b3 + v3 * v3
            k += 4
        while k < n:
            v0 = np.float64(x[k]) - centre
            y[k] = v0
            a0 += v0
            b0 += v0 * v0
            k += 1
        count = n
        s1, s2 = (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
        mean = s1 / count
        std = np.sqrt((s2 - s1 * mean) / (count - 1))
        lo, hi = -np.inf, np.inf
        for _ in range(nclip):
            lo, hi = mean - lsig * std, mean + usig * std
            c0 = c1 = c2 = c3 = 0
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
            k = 0
            while k + 4 <= n:  # branch-free: a value outside counts as 0
                v0, v1, v2, v3 = y[k], y[k + 1], y[k + 2], y[k + 3]
                m0, m1 = (v0 >= lo) & (v0 <= hi), (v1 >= lo) & (v1 <= hi)
                m2, m3 = (v2 >= lo) & (v2 <= hi), (v3 >= lo) & (v3 <= hi)
                c0, c1, c2, c3 = c0 + m0, c1 + m1, c2 + m2, c3 + m3
                w0, w1 = (v0 if m0 else 0.0), (v1 if m1 else 0.0)
                w2, w3 = (v2 if m2 else 0.0), (v3 if m3 else 0.0)
                a0, a1, a2, a3 = a0 + w0, a1 + w1, a2 + w2, a3 + w3
                b0, b1, b2, b3 = b0 + w0 * w0, b1 + w1 * w1, b2 + w2 * w2, b3 + w3 * w3
                k += 4
            while k < n:
                v0 = y[k]
                if v0 >= lo and v0 <= hi:
                    c0 += 1
                    a0 += v0
                    b0 += v0 * v0
                k += 1
            if c0 + c1 + c2 + c3 == count:
                break
            count = c0 + c1 + c2 + c3
            s1, s2 = (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
            mean = s1 / count
            std = np.sqrt((s2 - s1 * mean) / (count - 1))
        ymin, ymax = np.inf, -np.inf
        for k in range(n):
            v = y[k]
            if v >= lo and v <= hi:
                ymin = min(ymin, v)
                ymax = max(ymax, v)
        scale = 1.0 / (binwidth * std)
        nbins = int((ymax - ymin) * scale) + 1
        hist[:, :nbins] = 0
        k = 0
        while k + 4 <= n:  # four sub-histograms: repeats of one bin do not stall
            for j in range(4):
                v = y[k + j]
                if v >= lo and v <= hi:
                    hist[j, int((v - ymin) * scale)] += 1
            k += 4
        while k < n:
            v = y[k]
            if v >= lo and v <= hi:
                hist[0, int((v - ymin) * scale)] += 1
            k += 1
        return count, mean, std, ymin, hist[:, :nbins].sum(axis=0)

    @njit(nogil=True)
    def counts(y, ymin, scale, nbins, rejected, hist):
        """`_ClippedSet.counts`: the same counts (integers), four interleaved histograms."""
        hist[:, :nbins] = 0
        start = 0
        for r in range(rejected.size + 1):
            stop = rejected[r] if r < rejected.size else y.size
            k = start
            while k + 4 <= stop:
                hist[0, int((y[k] - ymin) * scale)] += 1
                hist[1, int((y[k + 1] - ymin) * scale)] += 1
                hist[2, int((y[k + 2] - ymin) * scale)] += 1
                hist[3, int((y[k + 3] - ymin) * scale)] += 1
                k += 4
            while k < stop:
                hist[0, int((y[k] - ymin) * scale)] += 1
                k += 1
            start = stop + 1
        return hist[:, :nbins].sum(axis=0)

    @njit(nogil=True)
    def gather(flat, columns, rows, start, stop, out):
        """`Runs.gather` of a C-contiguous image: the same values."""
        m = 0
        for r in range(rows.size):
            base = rows[r] * columns
            for c in range(start[r], stop[r]):
                out[m] = flat[base + c]
                m += 1
        return m

    @njit(nogil=True)
    def pass1(x, centre, cl, ch, fringe):
        """Sums of ``x - centre`` (four accumulators), the values outside [cl, ch] and the
        range of those inside."""
        s1 = np.zeros(4)
        s2 = np.zeros(4)
        nf = 0
        cmin, cmax = np.inf, -np.inf
        for i in range(x.size):
            v = np.float64(x[i]) - centre
            s1[i & 3] += v
            s2[i & 3] += v * v
            if v < cl or v > ch:
                fringe[nf] = v
                nf += 1
            else:
                cmin = min(cmin, v)
                cmax = max(cmax, v)
        return s1.sum(), s2.sum(), nf, cmin, cmax

    @njit(nogil=True)
    def pass2(x, centre, low, high, ymin, scale, hist):
        """Counts of the values ``x - centre`` in [low, high], bins of ``1 / scale`` from
        ``ymin`` (four interleaved histograms)."""
        hist[:, :] = 0
        for i in range(x.size):
            v = np.float64(x[i]) - centre
            if low <= v <= high:
                hist[i & 3, int((v - ymin) * scale)] += 1
        return hist.sum(axis=0)

    return {"fused": fused, "counts": counts, "gather": gather, "pass1": pass1, "pass2": pass2}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds of the kernels (best of)")
    p.add_argument("--engine-rounds", type=int, default=4, help="rounds of the engine A/B")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
