"""Speed of `sky_statistic` against a naive numpy implementation and the reference.

Prints ns/pixel, side by side in one run, for 200k-pixel float32 Gaussian noise plus sources
(the engine's hot path: ~400 calls per mosaic run), with ``x.sum()`` as the floor. These
machines are shared and noisy: read the ratios, not the absolute figures.

    python bench/bench_stats.py [--npix 200000] [--repeats 30]

``--calibrate`` instead runs the simulation study behind the ``err`` of ``mode`` and
``midpt`` (see `skymatch_nb_ui.engine.stats.sky_statistic`): the scatter of each estimator
over independent Gaussian noise realisations against its reported error, and the mode's
scatter against the reference's (takes a few minutes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skymatch_nb_ui.engine.stats import SKYSTATS, StatParams, Workspace, sky_statistic


def make_sky(npix: int, seed: int = 1) -> np.ndarray:
    """Gaussian sky (100 +- 5) with 1% of pixels in sources (exponential, mean 100 sigma)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(100.0, 5.0, npix)
    src = rng.random(npix) < 0.01
    x[src] += rng.exponential(500.0, src.sum())
    return x.astype(np.float32)


def naive_statistic(x: np.ndarray, p: StatParams) -> tuple[float, int]:
    """The textbook algorithm: every clipping pass re-reads and re-masks all pixels."""
    x = x.astype(np.float64)
    x = x[np.isfinite(x)]
    s = x
    for _ in range(p.nclip):
        m, sd = s.mean(), s.std(ddof=1)
        new = x[(x >= m - p.lsigma * sd) & (x <= m + p.usigma * sd)]
        if new.size == s.size:
            break
        s = new
    if p.skystat == "mean":
        return float(s.mean()), s.size
    if p.skystat == "median":
        return float(np.median(s)), s.size
    h = p.binwidth * s.std(ddof=1)
    counts = np.bincount(np.floor((s - s.min()) / h).astype(np.intp))
    if p.skystat == "mode":
        k = int(np.argmax(counts))
        return float(s.min() + (k + 0.5) * h), s.size
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, s.size / 2))
    before = cum[k - 1] if k else 0
    return float(s.min() + (k + (s.size / 2 - before) / counts[k]) * h), s.size


def reference_statistic(skystat: str):
    from stcal.skymatch.skystatistics import SkyStats

    return SkyStats(skystat=skystat, nclip=5, lsig=4.0, usig=4.0, binwidth=0.1).calc_sky


def time_ns_per_pixel(func, x: np.ndarray, repeats: int) -> float:
    func(x)  # warm up (buffers, imports)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / x.size * 1e9


def bench(npix: int, repeats: int) -> None:
    x = make_sky(npix)
    work = Workspace()
    floor = time_ns_per_pixel(lambda a: a.sum(), x, repeats)
    print(f"{npix} float32 pixels, nclip=5, lsigma=usigma=4, binwidth=0.1; "
          f"median of {repeats} repeats; floor x.sum(): {floor:.2f} ns/pixel")
    print(f"{'skystat':8} {'ours':>7} {'no-work':>8} {'naive':>7} {'stcal':>7}   "
          f"{'naive/ours':>10} {'stcal/ours':>10} {'ours/floor':>10}")
    for skystat in SKYSTATS:
        p = StatParams(skystat=skystat, nclip=5)
        ours = time_ns_per_pixel(lambda a, p=p: sky_statistic(a, p, work=work), x, repeats)
        fresh = time_ns_per_pixel(lambda a, p=p: sky_statistic(a, p), x, repeats)
        naive = time_ns_per_pixel(lambda a, p=p: naive_statistic(a, p), x, max(3, repeats // 3))
        ref = time_ns_per_pixel(reference_statistic(skystat), x, max(3, repeats // 3))
        print(f"{skystat:8} {ours:7.2f} {fresh:8.2f} {naive:7.2f} {ref:7.2f}   "
              f"{naive / ours:10.1f} {ref / ours:10.1f} {ours / floor:10.1f}")
    print("ns/pixel; 'no-work': a fresh Workspace in every call (work=None)")


# -- calibration of the uncertainties ---------------------------------------------------------
SIZES = (300, 1000, 10_000, 100_000, 1_000_000)
WIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5)


def simulate(skystat: str, npix: int, binwidth: float, trials: int, rng, reference=None):
    """Estimates of the centre of unit Gaussian noise (truth 0), float32, nclip=5, and their
    reported errors; with ``reference`` also the reference's estimates (same data)."""
    p = StatParams(skystat=skystat, nclip=5, binwidth=binwidth)
    work = Workspace()
    out = np.full((3, trials), np.nan)
    for i in range(trials):
        x = rng.standard_normal(npix, dtype=np.float32)
        r = sky_statistic(x, p, work=work)
        out[0, i], out[1, i] = r.value, r.err
        if reference is not None:
            out[2, i] = reference(x)[0]
    return out


def calibrate(seed: int = 12345) -> None:
    """Scatter of mode and midpt against their reported errors on Gaussian noise, and the
    mode's scatter against the reference's (binwidth 0.1)."""
    rng = np.random.default_rng(seed)
    ref_mode = reference_statistic("mode")
    print("Gaussian noise, float32, nclip=5, lsigma=usigma=4; truth 0")
    print(f"{'stat':6} {'n':>8} {'bw':>5} {'trials':>6} {'scatter':>9} {'rms err':>9} "
          f"{'pull std':>8} {'reference':>10} {'ref/ours':>8}")
    for skystat in ("mode", "midpt"):
        for npix in SIZES:
            trials = int(min(1000, max(40, 3e7 / npix)))
            for bw in WIDTHS:
                with_ref = skystat == "mode" and bw == 0.1 and npix <= 100_000
                out = simulate(skystat, npix, bw, trials, rng, ref_mode if with_ref else None)
                z, err = out[0], out[1]
                scatter = np.sqrt(np.mean(z**2))
                ref = np.sqrt(np.mean(out[2] ** 2)) if with_ref else np.nan
                print(f"{skystat:6} {npix:8d} {bw:5.2f} {trials:6d} {scatter:9.5f} "
                      f"{np.sqrt(np.mean(err**2)):9.5f} {(z / err).std(ddof=1):8.3f} "
                      f"{ref:10.5f} {ref / scatter:8.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npix", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--calibrate", action="store_true", help="run the error calibration study")
    args = ap.parse_args()
    if args.calibrate:
        calibrate()
    else:
        bench(args.npix, args.repeats)


if __name__ == "__main__":
    main()
