"""Study: ``skymatch-nb`` against the JWST pipeline's own ``SkyMatchStep``, on the same files.

The other benches compare our engine with ``stcal.skymatch``, the engine the pipeline calls.
This one runs what a JWST user runs: ``jwst.skymatch.SkyMatchStep`` (the pipeline's step, in
its own environment: ``jwst`` is large and pins its own versions) on an association of
level-2 ``_cal.fits`` files written by ``stdatamodels``, and ``skymatch-nb`` on the same
association, and compares what each leaves in the files' metadata (``meta.background.level``,
``.subtracted``, ``.method``, ``meta.cal_step.skymatch``), the subtracted pixels, the skies
against the truth, and the time.

The scene, a NIRCam short-wavelength module seen as its pipeline writes it:

- ``--exposures`` dithered exposures of 4 detectors (2 x 2, gaps of 5 arcsec), each detector
  ``--shape`` pixels of 0.031 arcsec, its own distortion (`nircam_like_gwcs`) and one
  pointing per exposure, so that the detectors of an exposure share the pipeline's
  ``group_id`` (one sky per exposure, as the step fits it);
- a known sky per exposure (0.20, 0.22, ... MJy/sr, shuffled), noise 0.01 MJy/sr, stars at fixed sky
  positions (real overlaps see the same stars);
- the 4-pixel border of reference pixels flagged ``DO_NOT_USE + REFERENCE_PIXEL`` and 0 in
  the data, as ``_cal`` files have it; 0.1 % of the pixels ``DO_NOT_USE`` holding garbage.

Each method (``--methods``) runs once without subtracting; the last one also with
``subtract=True`` (the pipeline's data and ours, each against its input). The pipeline's
time is its step's ``call`` (reading the files included, its import not); ours is
``ImageCollection.from_files`` + ``skymatch`` + ``write_copies`` in a fresh process (the
command's chain, its imports not), and without the copies.  Both use ``--skystat`` (default
``mode``, the step's): our ``mode`` is the peak of a smoothed histogram, the reference's the
fullest bin of a raw one, so ``median`` shows the rest of the differences alone.

Usage::

    python -m venv .cache/jwst-venv && .cache/jwst-venv/bin/pip install jwst
    python bench/study_jwst_step.py --jwst-python .cache/jwst-venv/bin/python
    python bench/study_jwst_step.py --jwst-python ... --shape 1024 --exposures 3 --methods match
    python bench/study_jwst_step.py --jwst-python ... --skystat median
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # _steps

from _steps import add_run_options, add_stars, compare_levels, run_methods  # noqa: E402

SCALE = 0.031  # arcsec per pixel: NIRCam's short-wavelength detectors
GAP = 5.0  # arcsec between the module's detectors
SKY0, SKY_STEP, NOISE = 0.20, 0.02, 0.01  # MJy/sr
DITHERS = ((0.0, 0.0), (11.3, 6.1), (-7.9, 13.4), (15.2, -9.6), (-12.7, -11.8), (4.1, 17.9))
BORDER = 4  # reference pixels
DO_NOT_USE, REFERENCE_PIXEL = 1, 2**31
METHODS = ("local", "global", "match", "global+match")


# -- the scene ------------------------------------------------------------------------------------
def write_scene(folder: Path, exposures: int, shape: int, seed: int = 0) -> tuple[Path, list]:
    """The association and its files; returns (asn path, each file's true sky)."""
    sys.path.insert(0, str(ROOT))
    from skymatch_nb_ui.testing import nircam_like_gwcs, write_jwst_cal

    rng = np.random.default_rng(seed)
    side = shape * SCALE  # arcsec
    v2v3 = [(120.0 + i * (side + GAP), -450.0 + j * (side + GAP)) for j in (0, 1) for i in (0, 1)]
    pointing = (120.0 + (side + GAP) / 2, -450.0 + (side + GAP) / 2)
    # stars at fixed sky positions over the whole field, with margins for the dithers
    field = (2 * side + GAP + 40.0) / 3600.0
    n_stars = int(250 * (shape / 1024) ** 2 * 4)
    star_ra = 150.0 + rng.uniform(-field / 2, field / 2, n_stars) / np.cos(np.radians(2.0))
    star_dec = 2.0 + rng.uniform(-field / 2, field / 2, n_stars)
    star_peak = NOISE * 10 ** rng.uniform(0.5, 3.0, n_stars)
    skies = SKY0 + SKY_STEP * rng.permutation(exposures)
    paths, truth = [], []
    for e, sky in enumerate(skies):
        dx, dy = DITHERS[e % len(DITHERS)]
        for d, ref in enumerate(v2v3, start=1):
            wcs = nircam_like_gwcs((150.0 + dx / 3600, 2.0 + dy / 3600), shape=(shape, shape),
                                   pixel_scale=SCALE, distortion=2.0, v2v3_ref=ref,
                                   pointing_v2v3=pointing, roll=0.3)
            data = rng.normal(sky, NOISE, (shape, shape)).astype(np.float32)
            x, y = wcs.invert(star_ra, star_dec, with_bounding_box=False)
            inside = (x > -6) & (x < shape + 5) & (y > -6) & (y < shape + 5)
            add_stars(data, x[inside], y[inside], star_peak[inside])
            dq = np.zeros((shape, shape), np.uint32)
            dq[:BORDER], dq[-BORDER:], dq[:, :BORDER], dq[:, -BORDER:] = (DO_NOT_USE | REFERENCE_PIXEL,) * 4
            data[dq != 0] = 0.0
            bad = rng.random((shape, shape)) < 0.001
            dq[bad] |= DO_NOT_USE
            data[bad] = rng.uniform(-50, 5000, int(bad.sum()))
            name = f"jw01234001001_02101_{e + 1:05d}_nrcb{d}_cal.fits"
            paths.append(write_jwst_cal(
                folder / name, data, wcs, dq=dq, detector=f"NRCB{d}",
                observation=("01234", "001", "001", "02", "1", "01", f"{e + 1:05d}")))
            truth.append(sky)
    asn = {
        "asn_type": "image3", "asn_rule": "candidate_Asn_Lv3Image", "asn_id": "a3001",
        "program": "01234", "target": "t001", "asn_pool": "study_pool",
        "products": [{"name": "jw01234-a3001_t001_nircam_clear-f200w",
                      "members": [{"expname": p.name, "exptype": "science"} for p in paths]}],
    }
    path = folder / "jw01234-a3001_image3_asn.json"
    path.write_text(json.dumps(asn, indent=1))
    return path, truth


# -- the two runs, each in a fresh process ------------------------------------------------------
def jwst_child(asn: str, method: str, subtract: bool, out: str, skystat: str) -> None:
    """The pipeline's step (run by the ``jwst`` environment's Python)."""
    import logging

    logging.disable(logging.WARNING)  # the step's INFO lines
    os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"  # no CRDS server here: the defaults
    from jwst.skymatch import SkyMatchStep, skymatch_step
    from stdatamodels.jwst import datamodels

    engine = skymatch_step.skymatch  # stcal's skymatch(), as the step calls it: timed apart
    engine_time = []

    def timed(*args, **kwargs):
        begin = time.perf_counter()
        try:
            return engine(*args, **kwargs)
        finally:
            engine_time.append(time.perf_counter() - begin)

    skymatch_step.skymatch = timed
    start = time.perf_counter()
    library = SkyMatchStep.call(asn, skymethod=method, subtract=subtract, skystat=skystat)
    elapsed = time.perf_counter() - start
    rows = []
    with library:
        for index in range(len(library)):
            model = library.borrow(index)
            rows.append(_meta_row(model, Path(asn).parent, datamodels))
            library.shelve(model, index, modify=False)
    Path(out).write_text(json.dumps({"time": elapsed, "engine": sum(engine_time), "rows": rows}))


def ours_child(asn: str, method: str, subtract: bool, out: str, compare: str,
               skystat: str) -> None:
    """``skymatch-nb``'s chain: read, match, write the copies (and then read them back)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    import xarray as xr
    from stdatamodels.jwst import datamodels

    from skymatch_nb_ui import ImageCollection

    warnings.simplefilter("ignore")
    xr.Dataset({"a": ("x", [0.0])})  # xarray's first Dataset imports dask (~0.6 s): an import
    start = time.perf_counter()
    coll = ImageCollection.from_files(asn)
    opened = time.perf_counter()
    coll.skymatch(skymethod=method, compare=compare, skystat=skystat)
    matched = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="study-jwst-") as copies:
        paths = coll.write_copies(copies, subtract=subtract)
        elapsed = time.perf_counter() - start
        rows = []
        for path in paths:
            with datamodels.open(path) as model:
                rows.append(_meta_row(model, Path(asn).parent, datamodels))
    Path(out).write_text(json.dumps({"time": elapsed, "engine": matched - opened,
                                     "copies": elapsed - (matched - start), "rows": rows}))


def _meta_row(model, inputs: Path, datamodels) -> dict:
    """What a run left in one model, and how its data differ from the input's."""
    background = model.meta.background
    level = background.level
    with datamodels.open(inputs / model.meta.filename) as source:
        good = ((source.dq & DO_NOT_USE) == 0) & np.isfinite(source.data)
        removed = (source.data - model.data)[good].astype(np.float64)
    expected = float(level) if (level is not None and background.subtracted) else 0.0
    return {
        "name": model.meta.filename, "level": None if level is None else float(level),
        "subtracted": background.subtracted, "method": background.method,
        "cal_step": model.meta.cal_step.skymatch,
        "removed_error": float(np.max(np.abs(removed - expected))) if removed.size else 0.0,
    }


# -- the comparison -------------------------------------------------------------------------------
def compare_runs(method: str, subtract: bool, truth: list[float], runs: dict) -> None:
    pipe = runs["jwst"]
    print(f"\n{method}, subtract={subtract}: time pipeline step {pipe['time']:.2f} s (stcal's "
          f"skymatch {pipe['engine']:.2f} s); "
          + "; ".join(f"{k} {r['time']:.2f} s (skymatch {r['engine']:.2f} s, copies "
                      f"{r['copies']:.2f} s)" for k, r in runs.items() if k != "jwst"))
    compare_levels(method, truth, runs, "jwst", NOISE)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.child == "jwst":
            jwst_child(args.asn, args.method, args.subtract, args.out, args.skystat)
        else:
            ours_child(args.asn, args.method, args.subtract, args.out, args.child.split(":")[1],
                       args.skystat)
        return 0
    if not args.jwst_python:
        raise SystemExit("--jwst-python: the Python of an environment with jwst installed (see "
                         "the usage)")
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    version = subprocess.run([args.jwst_python, "-c", "import jwst, stcal; print(jwst.__version__,"
                              " stcal.__version__)"], check=True, capture_output=True, text=True)
    print(f"jwst, stcal in the pipeline's environment: {version.stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="study-jwst-") as tmp:
        start = time.perf_counter()
        asn, truth = write_scene(Path(tmp), args.exposures, args.shape)
        print(f"wrote {len(truth)} _cal files of {args.shape}x{args.shape} "
              f"({args.exposures} exposures x 4 detectors) in {time.perf_counter() - start:.0f} s")
        run_methods(args, __file__, "jwst", args.jwst_python, asn, truth, compare_runs)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jwst-python", help="the Python of an environment with jwst")
    parser.add_argument("--exposures", type=int, default=4, help="dithered exposures (default 4)")
    parser.add_argument("--shape", type=int, default=2048, help="detector side (default 2048)")
    add_run_options(parser, METHODS, "the statistic of both (default mode, the step's)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
