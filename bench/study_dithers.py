"""Study: the errors of a stack of dithers, where every pixel is in every pair.

Most programs observe one field several times, each exposure shifted by a few arcseconds
(JWST's and HST's dither patterns): the images overlap by 90-99%, every pair of them shares
nearly all its pixels with every other pair, and each input's noise is in all its pairs.
This measures whether ``sky_err`` (and, for ``skymodel="plane"``, the planes' covariances)
are honest there, over noise realisations of ``make_mosaic`` stacks (a grid of dithers,
256 x 256 or 160 x 160 pixels, noise 1, stars, known skies):

- constants (``match``, both ``compare``, ``mode`` and ``median``): the whitened chi2/dof of
  the skies' errors under the covariance the solve implies (``_pulls.py``; 1 is honest), the
  plain pull spread, the error scale and the pairs flagged;
- planes (``skymodel="plane"``, a gradient of up to 3 sigma across each image): the pull
  spread of the level and the two slopes against the truth in the match gauge (as
  ``tests/test_planes.py``).

Run it in two checkouts (``PYTHONPATH=<checkout>``) to compare them.

Usage::

    python bench/study_dithers.py                       # 9 and 30 dithers, 6 seeds (~1.5 min)
    python bench/study_dithers.py --stacks 4,9,30 --seeds 10
    python bench/study_dithers.py --no-planes
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # measure this checkout
sys.path.insert(0, str(HERE))  # _pulls

from _pulls import pull_statistics, sky_covariance  # noqa: E402

from skymatch_nb_ui import SkyMatcher, skymatch  # noqa: E402
from skymatch_nb_ui.testing import make_mosaic  # noqa: E402

#: Stacks by number of dithers: (layout of the dither grid, overlap of neighbours).
STACKS = {4: ((2, 2), 0.97), 9: ((3, 3), 0.97), 16: ((4, 4), 0.95), 30: ((5, 6), 0.96)}
COMBOS = (("levels", "mode"), ("levels", "median"), ("differences", "mode"),
          ("differences", "median"))


def constants(n: int, seeds: int) -> None:
    layout, overlap = STACKS[n]
    for compare, stat in COMBOS:
        chi2, pulls, scales, flagged = [], [], [], []
        start = time.perf_counter()
        for seed in range(seeds):
            sky = 100 + np.random.default_rng(100 + seed).normal(0, 2, n)
            m = make_mosaic(layout, shape=(256, 256), overlap=overlap, jitter=3, noise=1.0,
                            sources=30, sky=sky, seed=seed, rotation=2)
            matcher = SkyMatcher(m.images, m.wcs, scheduler="serial")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = matcher.run(skymethod="match", skystat=stat, compare=compare)
            error = (r.sky - r.sky.mean()) - (sky - sky.mean())
            chi2.append(pull_statistics(error, r.sky_err, sky_covariance(matcher, r))["chi2_dof"])
            pulls.append(error / r.sky_err)
            scales.append(r.error_scale)
            flagged.append(int(np.sum(r.pairs.flagged)))
        print(f"{n:3d}  constant  {compare:11s} {stat:6s}  chi2/dof {np.mean(chi2):5.2f}  "
              f"pull sd {np.concatenate(pulls).std():5.2f}  scale {np.mean(scales):5.2f} "
              f"[{min(scales):.2f}, {max(scales):.2f}]  flagged/run {np.mean(flagged):4.1f}  "
              f"{time.perf_counter() - start:5.1f} s", flush=True)


def planes(n: int, seeds: int) -> None:
    layout, overlap = STACKS[n]
    shape = (160, 160)
    rows, cols = layout
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    centres = np.column_stack([(col.ravel() - (cols - 1) / 2) * shape[1] * (1 - overlap),
                               (row.ravel() - (rows - 1) / 2) * shape[0] * (1 - overlap)])
    for compare, stat in (("levels", "median"), ("differences", "mode")):
        pulls = []
        start = time.perf_counter()
        for seed in range(seeds):
            m = make_mosaic(layout, shape=shape, overlap=overlap, noise=1.0, sources=10,
                            seed=seed, gradient=3.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = skymatch(m.images, m.wcs, skymethod="match", skystat=stat, compare=compare,
                             skymodel="plane", scheduler="serial")
            est = np.column_stack([r.sky, r.plane.slope_x, r.plane.slope_y])
            est[:, 0] -= est[:, 0].mean()
            truth = np.array(m.planes, float)  # the match gauge: no mean slope, zero mean level
            slope = truth[:, 1:].mean(axis=0)
            truth[:, 1:] -= slope
            truth[:, 0] -= truth[:, 0].mean() + (centres - centres.mean(axis=0)) @ slope
            pulls.append((est - truth) / np.sqrt(np.einsum("kii->ki", r.plane.cov)))
        sd = np.concatenate(pulls).std(axis=0)
        print(f"{n:3d}  plane     {compare:11s} {stat:6s}  pull sd level {sd[0]:.2f}  "
              f"slope_x {sd[1]:.2f}  slope_y {sd[2]:.2f}  {time.perf_counter() - start:5.1f} s",
              flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stacks", default="9,30", help="dithers per stack, among 4, 9, 16, 30")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--no-planes", action="store_true")
    args = ap.parse_args(argv)
    stacks = [int(s) for s in args.stacks.split(",")]
    for n in stacks:
        if n not in STACKS:
            ap.error(f"--stacks: {n} is not one of {sorted(STACKS)}")
    import skymatch_nb_ui

    print(f"skymatch_nb_ui from {Path(skymatch_nb_ui.__file__).parent}; {args.seeds} seeds")
    for n in stacks:
        constants(n, args.seeds)
        if not args.no_planes:
            planes(n, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
