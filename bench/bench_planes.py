"""Benchmark: ``skymodel="plane"`` against ``"constant"``: the solve alone, and whole runs.

1. The solve alone, on mosaic-like graphs (a square grid, each input overlapping its 4 side
   and 4 corner neighbours; 16 cells per side overlap, 4 per corner for the planes, one
   equation per overlap for the constants) of 64 and 10,000 inputs: `lstsq.solve_offsets`
   against `planes.solve_plane_offsets` (covariances included), best of 3.
2. Whole runs (statistics + solve) on gradient mosaics (`make_mosaic(..., gradient=4,
   noise=1, sources=50)`: each image its own random plane of up to 4 sigma across it):
   time (best of 2), and the error = the residual sky after correction (true sky minus fitted sky, per
   pixel), rms over all pixels of the mosaic in units of the noise, after removing one
   common plane on the sky (what no overlap can see: the gauge).

The machine is shared and noisy: compare figures of one run; the load is printed.

Usage::

    python bench/bench_planes.py                 # both parts (~2 min)
    python bench/bench_planes.py --solve-only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout

from skymatch_nb_ui import SkyMatcher  # noqa: E402
from skymatch_nb_ui.engine.lstsq import solve_offsets  # noqa: E402
from skymatch_nb_ui.engine.planes import plane_values, solve_plane_offsets  # noqa: E402
from skymatch_nb_ui.testing import make_mosaic  # noqa: E402


def grid_equations(side: int, rng):
    """Equations of a side x side grid: constants (one per overlap) and planes (cells)."""
    n = side * side
    centres = np.array([(k % side * 100.0, k // side * 100.0) for k in range(n)])
    truth = np.column_stack([rng.normal(0, 5, n), rng.normal(0, 0.01, (n, 2))])
    g, h, q, pg, ph = [], [], [], [], []
    for k in range(n):
        r, c = divmod(k, side)
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if 0 <= r + dr < side and 0 <= c + dc < side:
                nb = k + dr * side + dc
                pg.append(k), ph.append(nb)
                mid = (centres[k] + centres[nb]) / 2
                if dr and dc:  # a corner: 2 x 2 cells
                    cells = [mid + (a, b) for a in (-4, 4) for b in (-4, 4)]
                else:
                    along = (centres[nb] - centres[k]) / 100
                    across = np.array([-along[1], along[0]])
                    cells = [mid + a * across + b * along for a in np.linspace(-40, 40, 8)
                             for b in (-5, 5)]
                g += [k] * len(cells)
                h += [nb] * len(cells)
                q += cells
    g, h, q = np.array(g), np.array(h), np.array(q)

    def at(coef, k, p):
        return coef[k, 0] + np.einsum("ij,ij->i", coef[k, 1:], p - centres[k])

    d = at(truth, g, q) - at(truth, h, q) + rng.normal(0, 0.1, len(g))
    pg, ph = np.array(pg), np.array(ph)
    dc = truth[pg, 0] - truth[ph, 0] + rng.normal(0, 0.1, len(pg))
    return n, centres, (g, h, q, d), (pg, ph, dc)


def best_of(fn, *args, repeat=3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return min(times)


def solve_only() -> None:
    print("solve alone (best of 3):")
    print(f"{'inputs':>7} {'pairs':>6} {'cells':>7} {'constant s':>11} {'plane s':>9} {'ratio':>6}")
    rng = np.random.default_rng(0)
    for side in (8, 100):
        n, centres, (g, h, q, d), (pg, ph, dc) = grid_equations(side, rng)
        t_const = best_of(solve_offsets, n, pg, ph, dc, np.ones(len(pg)), np.full(len(pg), 0.01))
        t_plane = best_of(solve_plane_offsets, n, g, h, q, d, np.full(len(d), 0.01), centres)
        print(f"{n:>7} {len(pg):>6} {len(d):>7} {t_const:>11.3f} {t_plane:>9.3f} "
              f"{t_plane / t_const:>6.1f}")


def residual_rms(m, result, planes: bool) -> float:
    """rms over all pixels of true minus fitted sky, in sigma, less one common plane."""
    ny, nx = m.images[0].shape
    y, x = np.mgrid[0:ny, 0:nx]
    residuals, xs, ys = [], [], []
    for k in range(len(m)):
        fitted = (plane_values(result.sky[k], result.plane.slope_x[k], result.plane.slope_y[k],
                               (ny, nx)) if planes else result.sky[k])
        residuals.append((m.true_sky(k) - fitted)[::8, ::8].ravel())
        # the images share one orientation: the mosaic's pixel frame is a plane on the sky
        cx, cy = m.wcs[k].wcs_world2pix([[m.wcs[0].wcs.crval[0], m.wcs[0].wcs.crval[1]]], 0)[0]
        xs.append((x - cx)[::8, ::8].ravel())
        ys.append((y - cy)[::8, ::8].ravel())
    r, xs, ys = np.concatenate(residuals), np.concatenate(xs), np.concatenate(ys)
    design = np.column_stack([np.ones_like(xs), xs, ys]).astype(float)
    coef = np.linalg.lstsq(design, r, rcond=None)[0]
    return float(np.sqrt(np.mean((r - design @ coef) ** 2)))


def whole_runs() -> None:
    print("\nwhole runs on mosaics with noise 1, 50 sources per image and gradient 4 (a random "
          "plane per image of up to 4 sigma across it) or 0 (constant skies):")
    print(f"{'mosaic':>16} {'gradient':>8} {'skystat':>7} {'model':>9} {'time s':>7} "
          f"{'rms (sigma)':>12}")
    for layout, shape, gradient in (((4, 4), (1024, 1024), 4.0), ((4, 4), (1024, 1024), 0.0),
                                    ((8, 8), (512, 512), 4.0)):
        m = make_mosaic(layout, shape=shape, noise=1.0, gradient=gradient, sources=50, seed=1)
        for stat in ("median", "mode"):
            for model in ("constant", "plane"):
                times = []
                for _ in range(2):
                    matcher = SkyMatcher(m.images, m.wcs)
                    t = time.perf_counter()
                    r = matcher.run(skymethod="match", skystat=stat, skymodel=model)
                    times.append(time.perf_counter() - t)
                rms = residual_rms(m, r, model == "plane")
                label = f"{len(m)} x {shape[0]}^2"
                print(f"{label:>16} {gradient:>8g} {stat:>7} {model:>9} {min(times):>7.2f} "
                      f"{rms:>12.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solve-only", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}")
    solve_only()
    if not args.solve_only:
        whole_runs()
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
