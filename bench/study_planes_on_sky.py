"""Study: what subtracting a fitted sky plane *in each image's pixels* costs on distorted detectors.

``skymodel="plane"`` fits, per input (an image alone or a group), a plane in the mosaic's
tangent plane: a plane on the sky.  The result then gives each image a plane in its own
pixels (``sky`` at its centre, ``slope_x``, ``slope_y``: the sky plane through the image's
affine map, `planes.ImageMap`), and that pixel plane is what ``subtract``, `result_images`,
the copies and their headers use.  Through a real distortion a plane on the sky is not a
plane in the pixels, so the subtracted plane is not quite the fitted one.

This measures the difference on the real-pixel scene of ``bench_vs_peers.py --scene hdf``
(the Hubble Deep Field through ACS/WFC's SIP distortion, 8 chips, each exposure its own random
plane on the sky; `bench/_gradients.hdf_exposures` with the noise chosen here): for each
scene, the engine's default statistics (``mode``, ``compare="differences"``, ``match``), each
chip alone and each exposure's chips one group, and the true sky left (rms over every 4th
pixel, the common plane on the sky removed, in data units and in noise sigma) after
subtracting

1. **pixel planes**: what the engine subtracts today;
2. **sky planes**: the same fitted planes evaluated on the sky at every pixel: the level
   plus the fitted gradient (``gradient``, ``gradient_pa``: east and north per arcsec) times
   each pixel's standard coordinates less their mean over the image (through the chip's WCS;
   the level is the pixel plane's, the least-squares one over the image, so it is the sky
   plane's mean there; the dataset's tangent plane at the field's centre stands for the
   engine's, at the mosaic's centre: 4' apart, a second-order difference);
3. **the best pixel planes**: per image the least-squares plane in its pixels to its true sky
   (no engine: the floor of any engine that subtracts pixel planes).

Usage::

    python bench/study_planes_on_sky.py                 # seeds 0-4, noise 0.05 and 5 (~1 min)
    python bench/study_planes_on_sky.py --seeds 10 --noise 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout
sys.path.insert(0, str(HERE))  # _gradients

from _gradients import hdf_exposures  # noqa: E402

import skymatch_nb_ui  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="scenes 0 .. SEEDS-1 (default 5)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 5.0],
                        help="noise sigma per pixel (default 0.05 and 5, the dataset's)")
    args = parser.parse_args(argv)
    print(f"{'noise':>6} {'seed':>4} {'fit':<8} {'pixel planes':>13} {'sky planes':>11} "
          f"{'best pixel':>11}   (rms of the sky left, data units; sigma in brackets)")
    for noise in args.noise:
        found: dict = {}
        for seed in range(args.seeds):
            exposures = hdf_exposures(seed, noise)
            best = left_of(exposures, planes=exposures.best_pixel_planes())
            for fit in ("alone", "grouped"):
                groups = [m["exposure"] for m in exposures.meta] if fit == "grouped" else None
                result = skymatch_nb_ui.skymatch(exposures.images, exposures.wcs, skymethod="match",
                                                 skymodel="plane", groups=groups)
                pixel = left_of(exposures, pixel_planes(exposures, result))
                sky = left_of(exposures, sky_planes(exposures, result))
                found.setdefault(fit, []).append((pixel, sky, best))
                print(f"{noise:>6g} {seed:>4} {fit:<8} {pixel:>13.4f} {sky:>11.4f} {best:>11.4f}",
                      flush=True)
        for fit, rows in found.items():
            pixel, sky, best = np.sqrt(np.mean(np.square(rows), axis=0))
            print(f"{noise:>6g} {'all':>4} {fit:<8} {pixel:>13.4f} {sky:>11.4f} {best:>11.4f}   "
                  f"({pixel / noise:.4f} / {sky / noise:.4f} / {best / noise:.4f} sigma)")
    return 0


def pixel_planes(exposures, result) -> list:
    out = []
    for k, image in enumerate(exposures.images):
        ny, nx = image.shape
        y, x = np.mgrid[0:ny, 0:nx]
        out.append(result.sky[k] + result.plane.slope_x[k] * (x - (nx - 1) / 2)
                   + result.plane.slope_y[k] * (y - (ny - 1) / 2))
    return out


def sky_planes(exposures, result) -> list:
    out = []
    for k in range(len(exposures.images)):
        xi, eta = exposures.standard_coordinates(k)
        xc, yc = xi.mean(), eta.mean()
        pa = np.radians(result.plane.gradient_pa[k])
        g = result.plane.gradient[k]
        out.append(result.sky[k] + g * np.sin(pa) * (xi - xc) + g * np.cos(pa) * (eta - yc))
    return out


def left_of(exposures, models=None, *, planes=None) -> float:
    """rms of the true sky less ``models`` (or ``planes``) at every 4th pixel, less a common
    sky plane."""
    left = exposures.residual_sky(models, planes=planes, step=4)
    return float(np.sqrt(np.mean(left**2)))


if __name__ == "__main__":
    raise SystemExit(main())
