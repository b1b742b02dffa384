"""Speed of `sky_statistic` against a naive numpy implementation and the reference.

Prints ns/pixel, side by side in one run, for 200k-pixel float32 Gaussian noise plus sources
(the engine's hot path: ~400 calls per mosaic run), with ``x.sum()`` as the floor. These
machines are shared and noisy: read the ratios, not the absolute figures.

    python bench/bench_stats.py [--npix 200000] [--repeats 30]

``--calibrate`` instead runs the simulation study behind the ``err`` of ``mode`` and
``midpt`` (see `skymatch_nb_ui.engine.stats.sky_statistic`): the scatter of each estimator
over independent Gaussian noise realisations against the formula (takes a few minutes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skymatch_nb_ui.engine import stats as _stats  # internals, for the calibration study only
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
SIZES = (500, 2000, 10_000, 50_000, 200_000, 1_000_000, 2_000_000)
WIDTHS = (0.02, 0.05, 0.1, 0.2, 0.5)


def simulate(skystat: str, npix: int, binwidth: float, shift: float, trials: int, rng):
    """Estimates of the centre of unit Gaussian noise (truth 0), float32, nclip=5.

    ``lsigma = usigma = 4 + shift*binwidth``: with many pixels the set's minimum sits at the
    clipping limit, so `shift` moves the peak from a bin edge (0) to a bin centre (0.5).
    Returns per trial: estimate / std, reported err / std, and the mode's parabola offset.
    """
    k = 4.0 + shift * binwidth
    p = StatParams(skystat=skystat, nclip=5, lsigma=k, usigma=k, binwidth=binwidth)
    work = Workspace()
    out = np.empty((3, trials))
    for i in range(trials):
        s = _stats._clipped_set(rng.standard_normal(npix, dtype=np.float32), p, work)
        value, err = _stats._STATISTICS[skystat](s, p)
        out[:, i] = (s.centre + value) / s.std, err / s.std, getattr(s, "mode_offset", 0.0)
    return out


def fit_mode_error(runs) -> np.ndarray:
    """Gaussian maximum likelihood of (A, ALPHA, K, Q), each configuration weighted equally."""
    from scipy.optimize import minimize

    z = np.concatenate([r[3][0] for r in runs])
    offset = np.concatenate([r[3][2] for r in runs])
    n = np.concatenate([np.full(r[3].shape[1], r[0]) for r in runs])
    bw = np.concatenate([np.full(r[3].shape[1], r[1]) for r in runs])
    weight = np.concatenate([np.full(r[3].shape[1], 1.0 / r[3].shape[1]) for r in runs])

    def nll(q):
        a, alpha, k, power = np.exp(q[0]), q[1], np.exp(q[2]), np.exp(q[3])
        wander = a * (n * bw) ** -alpha
        parabola = k * np.sqrt((1 + 12 * offset**2) / (2 * _stats._PHI0 * n)) / bw**1.5
        low, high = np.minimum(wander, parabola), np.maximum(wander, parabola)
        err = low * (1 + (low / high) ** power) ** (-1 / power)
        return np.sum(weight * (np.log(err) + 0.5 * (z / err) ** 2))

    q = minimize(nll, [np.log(0.77), 0.23, 0.0, np.log(4.0)], method="Nelder-Mead",
                 options={"maxiter": 4000, "xatol": 1e-5, "fatol": 1e-9}).x
    return np.array([np.exp(q[0]), q[1], np.exp(q[2]), np.exp(q[3])])


def calibrate(seed: int = 12345) -> None:
    rng = np.random.default_rng(seed)
    runs = []
    print("Gaussian noise, float32, nclip=5, lsigma=usigma=4+shift*binwidth; truth 0")
    print(f"{'stat':6} {'n':>8} {'bw':>5} {'shift':>5} {'trials':>6} {'scatter':>9} "
          f"{'rms err':>9} {'pull std':>8}")
    for skystat in ("mode", "midpt"):
        for npix in SIZES:
            trials = int(min(2000, max(200, 2e8 / npix)))
            for bw in WIDTHS:
                for shift in (0.0, 0.5) if skystat == "mode" else (0.0,):
                    out = simulate(skystat, npix, bw, shift, trials, rng)
                    z, err = out[0], out[1]
                    print(f"{skystat:6} {npix:8d} {bw:5.2f} {shift:5.2f} {trials:6d} "
                          f"{z.std(ddof=1):9.5f} {np.sqrt(np.mean(err**2)):9.5f} "
                          f"{(z / err).std(ddof=1):8.3f}", flush=True)
                    if skystat == "mode":
                        runs.append((npix, bw, shift, out))
    constants = fit_mode_error(runs)
    print("fitted mode error constants (A, ALPHA, K, Q):", np.round(constants, 3).tolist(),
          "in use:", _stats._MODE_ERROR)
    print("pull std with the fitted constants, per (n, binwidth, shift):")
    for npix, bw, shift, out in runs:
        err = np.array([_stats._mode_error_factor(npix, bw, o, tuple(constants)) for o in out[2]])
        print(f"  {npix:8d} {bw:5.2f} {shift:5.2f} {(out[0] / err).std(ddof=1):6.3f}")
    print("out-of-sample check, constants in use: pull std (n, binwidth, lsigma = usigma)")
    for skystat, npix, bw, k, trials in OFF_GRID:
        z, err, _ = simulate(skystat, npix, bw, (k - 4.0) / bw, trials, rng)
        print(f"  {skystat:6} {npix:8d} {bw:5.2f} {k:4.1f} {(z / err).std(ddof=1):6.3f}", flush=True)


OFF_GRID = [  # (skystat, n, binwidth, lsigma = usigma, trials)
    ("mode", 100, 0.5, 4, 3000), ("mode", 200, 0.1, 4, 3000), ("mode", 800, 0.35, 4, 3000),
    ("mode", 5_000, 0.25, 4, 2000), ("mode", 30_000, 0.03, 4, 1500),
    ("mode", 300_000, 0.15, 4, 400), ("mode", 3_000_000, 0.3, 4, 150),
    ("mode", 3_000_000, 0.03, 4, 150), ("mode", 200_000, 0.1, 3, 600),
    ("mode", 200_000, 0.3, 3, 600), ("mode", 50_000, 0.2, 5, 1000),
    ("midpt", 200_000, 0.1, 3, 600), ("median", 20_000, 0.1, 3, 1000),
    ("mean", 20_000, 0.1, 3, 1000),
]


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
