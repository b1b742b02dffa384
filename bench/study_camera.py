"""Study: a dithered mosaic camera's CCDs, where pairs are many, overlap each other and some are slivers.

A camera of 6 x 10 CCDs (128 x 256 pixels of 0.26", gaps of 3% between them, as DECam's or
HSC's focal planes tile), 10 exposures dithered by up to 60" (a CCD's width) with a small
rotation each: 600 CCDs, each overlapping ~4 CCDs of every other exposure, ~7,900 pairs of
which some are corners of a few pixels.  Sky of each CCD known (100 + 5 per exposure, 0.5 rms
between CCDs), noise 1, a few stars.  For ``compare="levels"`` and ``"differences"``
(``match``, ``skystat="mode"``, one process) it reports:

- the run's time and a solve-only change's (``match_down`` flipped: the robust solve again);
- the sky errors: how many are NaN or 0, their median, and the pulls of the skies against
  the truth (zero-mean gauge: spread 1 when the errors are right);
- the pairs the robust solve flagged;
- the same with the pairs' covariance terms from random probes (as for a mosaic too large
  for the inverse of the normal matrix: ``lstsq.EXACT_INVERSE = 0``), side by side;
- the CCDs grouped by exposure (one sky each), and ``skymodel="plane"`` on these flat skies
  (whether the slope test kept planes: ``plane_flat``, and the levels' rms);
- with ``--files``: the exposures written as DECam's pipeline writes them (one tile-compressed
  HDU per CCD, ``c4d_<n>_ooi.fits.fz``, in a temporary directory) and run through
  ``skymatch-nb FILES --table --subtract --output-dir`` with each of ``--schedulers``
  (default ``auto,serial``), each in a fresh process: wall time and peak RSS.

Usage::

    python bench/study_camera.py                   # 10 exposures (~3 min)
    python bench/study_camera.py --exposures 4 --no-probes
    python bench/study_camera.py --files --no-solves  # the command line on .fits.fz files
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine import lstsq, measure
from skymatch_nb_ui.testing import make_mosaic

SMALL_PAIR = getattr(measure, "SMALL_PAIR", 25)  # (a checkout from before it, for comparison)


def camera(exposures: int, seed: int = 0):
    """The CCDs of ``exposures`` dithered exposures: images, WCSs and true skies."""
    rng = np.random.default_rng(seed)
    images, wcs, truth = [], [], []
    for e in range(exposures):
        dx, dy = rng.uniform(-60, 60, 2)  # arcsec
        skies = 100 + 5 * e + rng.normal(0, 0.5, 60)
        m = make_mosaic((6, 10), shape=(128, 256), overlap=-0.03, sky=skies, noise=1.0,
                        sources=5, center=(150.0 + dx / 3600, 2.0 + dy / 3600),
                        pixel_scale=0.26, seed=seed * 100 + e, rotation=rng.uniform(-0.2, 0.2))
        images += list(m.images)
        wcs += list(m.wcs)
        truth += list(skies)
    return images, wcs, np.array(truth)


def run(images, wcs, truth, compare: str, groups=None, **options) -> dict:
    coll = ImageCollection.from_arrays(images, wcs, groups=groups)
    coll.scheduler = "serial"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        ds = coll.skymatch(skymethod="match", skystat="mode", compare=compare, **options)
        total = time.perf_counter() - t
        t = time.perf_counter()
        coll.skymatch(skymethod="match", skystat="mode", compare=compare, match_down=False,
                      **options)
        resolve = time.perf_counter() - t
    err = ds.sky_err.values
    r = ds.sky.values - truth
    r = r - r.mean()
    good = np.isfinite(err) & (err > 0)
    return dict(total=total, resolve=resolve, pairs=ds.sizes["pair"],
                small=int((ds.pair_valid.values & (ds.weight.values < SMALL_PAIR)).sum()),
                nan=int(np.isnan(err).sum()), zero=int((err == 0).sum()),
                median_err=float(np.median(err[good])) if good.any() else float("nan"),
                rms=float(np.sqrt(np.mean(r**2))),
                pull=float(np.std(r[good] / err[good])) if good.any() else float("nan"),
                flagged=int(ds.flagged.values.sum()), flat=ds.attrs.get("plane_flat", ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exposures", type=int, default=10, help="exposures of 60 CCDs (10)")
    parser.add_argument("--no-probes", action="store_true", help="skip the probes' runs")
    parser.add_argument("--no-solves", action="store_true", help="skip the in-memory runs")
    parser.add_argument("--files", action="store_true",
                        help="also run skymatch-nb on the exposures as .fits.fz files")
    parser.add_argument("--schedulers", default="auto,serial",
                        help="skymatch-nb's --scheduler for --files (default auto,serial)")
    args = parser.parse_args(argv)
    images, wcs, truth = camera(args.exposures)
    print(f"{len(images)} CCDs; load average {os.getloadavg()[0]:.2f}")
    if not args.no_solves:
        solves(images, wcs, truth, args)
    if args.files:
        command_line(images, wcs, args.schedulers.split(","))
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


def command_line(images, wcs, schedulers) -> None:
    """``skymatch-nb`` on the CCDs as tile-compressed camera files, per scheduler."""
    from astropy.io import fits

    with tempfile.TemporaryDirectory(prefix="study-camera-") as folder:
        files = []
        for e in range(len(images) // 60):
            hdus = [fits.PrimaryHDU(header=fits.Header({"EXPNUM": 1000 + e}))]
            hdus += [fits.CompImageHDU(images[k], wcs[k].to_header(), name=f"S{k % 60 + 1}")
                     for k in range(60 * e, 60 * e + 60)]
            files.append(os.path.join(folder, f"c4d_{e}_ooi.fits.fz"))
            fits.HDUList(hdus).writeto(files[-1])
        command = [os.path.join(os.path.dirname(sys.executable), "skymatch-nb"), *files]
        for scheduler in schedulers:
            out = os.path.join(folder, f"out-{scheduler}")
            t = time.perf_counter()
            subprocess.run([*command, "--table", out + ".ecsv", "--subtract", "--output-dir",
                            out, "--scheduler", scheduler, "-q"], check=True)
            took = time.perf_counter() - t
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"skymatch-nb --scheduler {scheduler:<8} {took:6.1f} s  (peak RSS of the "
                  f"children so far {peak:.0f} MB)")


def solves(images, wcs, truth, args) -> None:
    """The in-memory runs' table."""
    print(f"{'compare':<12} {'run':<17} {'run s':>6} {'resolve s':>9} {'pairs':>6} "
          f"{'small':>5} {'NaN err':>7} {'0 err':>5} {'median err':>10} {'rms':>7} "
          f"{'pull sd':>7} {'flagged':>7} {'plane_flat':>10}")
    exposure = [k // 60 for k in range(len(images))]
    runs = [("inverse", {})] + ([] if args.no_probes else [("probes", {})])
    runs += [("by exposure", {"groups": exposure}), ("plane", {"skymodel": "plane"})]
    for compare in ("levels", "differences"):
        for label, options in runs:
            saved = lstsq.EXACT_INVERSE
            lstsq.EXACT_INVERSE = 0 if label == "probes" else saved
            try:
                f = run(images, wcs, truth, compare, **options)
            finally:
                lstsq.EXACT_INVERSE = saved
            print(f"{compare:<12} {label:<17} {f['total']:6.1f} {f['resolve']:9.2f} "
                  f"{f['pairs']:6d} {f['small']:5d} {f['nan']:7d} {f['zero']:5d} "
                  f"{f['median_err']:10.4f} {f['rms']:7.4f} {f['pull']:7.3f} {f['flagged']:7d} "
                  f"{f['flat']!s:>10}")


if __name__ == "__main__":
    raise SystemExit(main())
