"""Simulation studies behind the accuracy choices of the engine (they measure and print).

``--pulls`` (default)
    Over many realisations of each scene, for each ``compare`` and ``skystat``: the rms error
    of the matched skies (common offset removed, in noise sigma), the spread of the pulls
    ``error / sky_err`` (pooled over images and realisations; the target is 0.8-1.25), the mean
    error scale of the runs and the pairs flagged by the robust solve.  Scenes: the bench's
    nebula mosaics (a nebula of 25 sigma per image, 50 stars per 1024^2 pixels; 4x4 of
    1024^2 and 8x8 of 256^2 images), a flat sky with stars, and pure noise.
``--interpolation``
    Nearest, bilinear and bicubic sampling of the other image for pixel differences, on the
    nebula mosaics: per-pair bias and rms error of the difference statistics, and their error
    against the independent-pixel error (the inflation by the interpolation's correlations).
``--robust``
    A bright-ish satellite trail across one image of one overlap: the offsets' errors with and
    without the robust solve, and which pairs it flags.

Usage::

    python bench/study_accuracy.py --pulls --seeds 10
    python bench/study_accuracy.py --interpolation
    python bench/study_accuracy.py --robust
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout

from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.engine.differences import pair_differences, pixel_map
from skymatch_nb_ui.engine.stats import StatParams, Workspace, sky_statistic
from skymatch_nb_ui.testing import make_mosaic

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_pulls.py
from _pulls import pull_statistics, sky_covariance

STATS = ("mode", "median", "mean", "midpt")
COMPARES = ("levels", "differences")


def scene(kind: str, seed: int):
    """One realisation of a study scene (noise sigma 1)."""
    rng = np.random.default_rng(seed)
    if kind == "nebula-1024":
        layout, shape, stars, nebula = (4, 4), (1024, 1024), 50, 25.0
    elif kind == "nebula-1024-nostars":
        layout, shape, stars, nebula = (4, 4), (1024, 1024), 0, 25.0
    elif kind == "noise-1024":
        layout, shape, stars, nebula = (4, 4), (1024, 1024), 0, 0.0
    elif kind == "stars-4x4-256":
        layout, shape, stars, nebula = (4, 4), (256, 256), 3, 0.0
    elif kind == "stars-1024":
        layout, shape, stars, nebula = (4, 4), (1024, 1024), 50, 0.0
    elif kind == "nebula-256":
        layout, shape, stars, nebula = (8, 8), (256, 256), 3, 25.0
    elif kind == "stars-256":
        layout, shape, stars, nebula = (6, 6), (256, 256), 10, 0.0
    elif kind == "noise-100":
        layout, shape, stars, nebula = (3, 3), (100, 100), 0, 0.0
    else:
        raise ValueError(kind)
    n = layout[0] * layout[1]
    return make_mosaic(layout, shape=shape, overlap=0.2, sky=100 + 20 * rng.random(n), noise=1.0,
                       sources=stars, rotation=3.0, jitter=5.0, nebula=nebula, seed=rng)


def pulls(kinds, seeds: int) -> None:
    print("pooled over images and realisations; errors in noise sigma, common offset removed")
    print("chi2/dof: the skies' errors whitened by the covariance the solve implies (_pulls.py), "
          "median over realisations [range]; 1 is honest")
    print(f"{'scene':12} {'compare':11} {'stat':6} {'rms':>8} {'pull sd':>8} {'[68% CI]':>13} "
          f"{'scale':>6} {'flagged':>7} {'chi2/dof':>8} {'[range]':>13}")
    for kind in kinds:
        acc: dict = {}
        start = time.perf_counter()
        for seed in range(seeds):
            m = scene(kind, 1000 + seed)
            matcher = SkyMatcher(m.images, m.wcs)
            for compare in COMPARES:
                for stat in STATS:
                    r = matcher.run(skymethod="match", skystat=stat, compare=compare)
                    error = r.delta - m.sky
                    error -= error.mean()
                    chi2 = pull_statistics(error, r.sky_err, sky_covariance(matcher, r))["chi2_dof"]
                    acc.setdefault((compare, stat), []).append(
                        (error, r.sky_err, r.error_scale, int(r.pairs.flagged.sum()), chi2))
        for (compare, stat), runs in acc.items():
            error = np.concatenate([x[0] for x in runs])
            pull = error / np.concatenate([x[1] for x in runs])
            lo, hi = _bootstrap_std(pull, [x[0].size for x in runs])
            print(f"{kind:12} {compare:11} {stat:6} {np.sqrt(np.mean(error**2)):8.4f} "
                  f"{pull.std():8.3f} [{lo:5.2f},{hi:5.2f}] {np.mean([x[2] for x in runs]):6.2f} "
                  f"{np.mean([x[3] for x in runs]):7.1f} {np.median([x[4] for x in runs]):8.2f} "
                  f"[{min(x[4] for x in runs):5.2f},{max(x[4] for x in runs):5.2f}]", flush=True)
        print(f"  ({seeds} realisations, {time.perf_counter() - start:.0f} s)")


def _bootstrap_std(pull, sizes, draws: int = 400):
    """68% interval of the pull spread, resampling whole realisations."""
    rng = np.random.default_rng(0)
    groups = np.split(pull, np.cumsum(sizes)[:-1])
    stds = [np.concatenate([groups[k] for k in rng.integers(0, len(groups), len(groups))]).std()
            for _ in range(draws)]
    return np.percentile(stds, [16, 84])


def interpolation(seeds: int) -> None:
    from scipy import ndimage

    params = {s: StatParams(skystat=s) for s in ("mean", "median", "mode")}
    work = Workspace()
    print("per pair: mean error, rms error (noise sigma), rms of error / independent-pixel error")
    for kind in ("nebula-1024", "nebula-256", "stars-256"):
        acc: dict = {}
        for seed in range(seeds):
            m = scene(kind, 2000 + seed)
            matcher = SkyMatcher(m.images, m.wcs)
            geo = matcher.geometry
            for (a, b), runs in geo.runs.items():
                if a > b or not runs or not geo.runs[(b, a)]:
                    continue
                truth = m.sky[a] - m.sky[b]
                pmap = pixel_map(matcher._wcs[a], matcher._wcs[b], runs)
                bilinear, _ = pair_differences(m.images[a], None, m.images[b], None, runs, pmap)
                samples = {"bilinear": bilinear.copy()}
                ys = np.repeat(runs.rows, runs.stop - runs.start)
                xs = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)])
                bx, by = matcher._wcs[b].lonlat_to_pixel(*matcher._wcs[a].pixel_to_lonlat(xs, ys))
                for name, order in (("nearest", 0), ("bicubic", 3)):
                    vb = ndimage.map_coordinates(m.images[b].astype(float), [by, bx], order=order,
                                                 mode="constant", cval=np.nan)
                    samples[name] = m.images[a][ys, xs] - vb
                for name, d in samples.items():
                    for stat, p in params.items():
                        s = sky_statistic(d, p, work=work)
                        acc.setdefault((name, stat), []).append((s.value - truth, s.err))
        print(kind)
        for (name, stat), v in acc.items():
            v = np.array(v)
            print(f"  {name:9} {stat:6} mean {v[:, 0].mean():+.4f} rms {np.sqrt(np.mean(v[:, 0]**2)):.4f}"
                  f"  rms/err {np.sqrt(np.mean((v[:, 0] / v[:, 1])**2)):.2f}", flush=True)


def robust(seeds: int) -> None:
    print("trail: +3 sigma, 12 pixels wide, across one image of one overlap (nebula 256^2, 6x6)")
    print(f"{'robust':7} {'stat':6} {'rms':>8} {'max':>8} {'flagged (trail pair first)':>28}")
    for stat in ("median", "mode", "mean"):
        for flag in (False, True):
            rms, worst, flags = [], [], []
            for seed in range(seeds):
                m = make_mosaic((6, 6), shape=(256, 256), overlap=0.2, noise=1.0, sources=3,
                                rotation=3.0, jitter=5.0, nebula=25.0,
                                sky=100 + 20 * np.random.default_rng(seed).random(36), seed=seed)
                matcher = SkyMatcher(m.images, m.wcs)
                runs = matcher.geometry.runs[(14, 15)]  # image 14's pixels inside image 15
                add_trail(m.images[14], runs, 3.0, 12)
                r = matcher.run(skymethod="match", skystat=stat, robust=flag)
                error = r.delta - m.sky
                error -= error.mean()
                rms.append(np.sqrt(np.mean(error**2)))
                worst.append(np.abs(error).max())
                trail = np.flatnonzero((r.pairs.a == 14) & (r.pairs.b == 15))
                flags.append((bool(r.pairs.flagged[trail].any()), int(r.pairs.flagged.sum())))
            print(f"{flag!s:7} {stat:6} {np.mean(rms):8.4f} {np.max(worst):8.4f} "
                  f"{sum(f[0] for f in flags)}/{seeds} trail, {np.mean([f[1] for f in flags]):.1f} pairs")


def add_trail(image: np.ndarray, runs, level: float, width: int) -> None:
    """A band of +level across the pixels ``runs`` of image (a diagonal, width pixels)."""
    y = np.repeat(runs.rows, runs.stop - runs.start)
    x = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)])
    cx, cy = x.mean(), y.mean()
    band = np.abs((x - cx) - (y - cy)) < width / 2
    image[y[band], x[band]] += level


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pulls", action="store_true")
    ap.add_argument("--interpolation", action="store_true")
    ap.add_argument("--robust", action="store_true")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--scenes", default="nebula-1024,nebula-256,stars-256,noise-100")
    args = ap.parse_args(argv)
    if args.interpolation:
        interpolation(max(1, args.seeds // 5))
    if args.robust:
        robust(args.seeds)
    if args.pulls or not (args.interpolation or args.robust):
        pulls(args.scenes.split(","), args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
