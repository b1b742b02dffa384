"""Study: ``skymatch-nb`` against romancal's own ``SkyMatchStep``, on the same Roman files.

The other benches compare our engine with ``stcal.skymatch``, the engine the pipeline calls.
This one runs what a Roman user runs: ``romancal.skymatch.SkyMatchStep`` (the pipeline's
step, in its own environment: ``romancal`` pins its own ``roman_datamodels``, ``rad`` and
``stcal``) on an association of level-2 ``_cal.asdf`` files written by ``roman_datamodels``,
and ``skymatch-nb`` on the same association, and compares what each leaves in the files'
metadata (``meta.background.level``, ``.subtracted``, ``.method``,
``meta.cal_step.skymatch``), the subtracted pixels, the skies against the truth, and the time.

The scene, a corner of the WFI focal plane as romancal's mosaic pipeline sees it (after its
``flux`` step: ``meta.cal_step.flux`` ``COMPLETE``, data in MJy/sr):

- ``--exposures`` dithered exposures of 4 detectors (2 x 2, gaps of 0.07 and 0.14 detector
  side; dithers of up to 0.43 side, so that all overlap), each detector ``--shape`` pixels
  of 0.11 arcsec, its own distortion (`nircam_like_gwcs`) and one pointing per exposure;
  the detectors of an exposure share ``meta.observation.observation_id`` (romancal's
  ``group_id``), but romancal's step gives every detector its own sky;
- a known sky per detector (0.30 MJy/sr, spread 0.02), noise 0.01 MJy/sr, stars at fixed sky
  positions (real overlaps see the same stars);
- 0.1 % of the pixels ``DO_NOT_USE`` holding garbage, 0.2 % ``JUMP_DET`` holding good values
  (romancal's default ``dqbits="~DO_NOT_USE"`` keeps them).

The files are written by this environment's ``roman_datamodels`` (our `write_roman_cal`)
when romancal's can open them, else (a newer schema tag than romancal knows, e.g.
``wfi_image-2.2.0`` of roman_datamodels 1.2 against romancal 1.1's ``roman_datamodels<1.2``:
said so) by romancal's own ``roman_datamodels`` with the same helper, the same seed and
pixels.  romancal's step runs with ``STPIPE_DISABLE_CRDS_STEPPARS=true`` (its defaults; the
step has no reference files): without it, stpipe asks CRDS for the step's parameters and
CRDS exits the process when it has neither a server nor a cache.

Each method (``--methods``) runs once without subtracting; the last one also with
``subtract=True`` (romancal's data and ours, each against its input). romancal's time is its
step's ``call`` (reading the files included, its import not); ours is
``ImageCollection.from_files`` + ``skymatch`` + ``write_copies`` in a fresh process (the
command's chain, its imports not), and without the copies.  Both use ``--skystat`` (default
``mode``, romancal's): our ``mode`` is a smoothed histogram peak, not the reference's raw
argmax (`skymatch_nb_ui.engine.stats`), so ``mean`` or ``median`` show the rest of the
differences alone.

Usage::

    python -m venv .cache/romancal-venv && .cache/romancal-venv/bin/pip install romancal
    python bench/study_romancal_step.py --romancal-python .cache/romancal-venv/bin/python
    python bench/study_romancal_step.py --romancal-python ... --shape 512 --exposures 2
    python bench/study_romancal_step.py --romancal-python ... --skystat median
"""

from __future__ import annotations

import argparse
import importlib.util
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

from _steps import (  # noqa: E402
    add_run_options,
    add_stars,
    compare_levels,
    run_child,
    run_methods,
)

SCALE = 0.11  # arcsec per pixel: WFI
GAPS = (0.07, 0.14)  # between the detectors, along v2 and v3, in detector sides
SKY0, SKY_SPREAD, NOISE = 0.30, 0.02, 0.01  # MJy/sr
DITHERS = ((0.0, 0.0), (0.37, 0.21), (-0.29, 0.43), (0.18, -0.34), (-0.41, -0.17))  # detector sides
DO_NOT_USE, JUMP_DET = 1, 4
METHODS = ("local", "global", "match", "global+match")


# -- the scene ------------------------------------------------------------------------------------
def _instruments():
    """`skymatch_nb_ui.testing.instruments`, loaded alone: romancal's environment lacks our
    package's dependencies, and the module needs only numpy, astropy, gwcs, roman_datamodels."""
    spec = importlib.util.spec_from_file_location(
        "_study_instruments", ROOT / "skymatch_nb_ui" / "testing" / "instruments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_scene(folder: Path, exposures: int, shape: int, seed: int = 0) -> tuple[Path, list]:
    """The association and its files; returns (asn path, each file's true sky)."""
    import warnings

    instruments = _instruments()
    rng = np.random.default_rng(seed)
    side = shape * SCALE  # arcsec
    gap_x, gap_y = side * GAPS[0], side * GAPS[1]
    v2v3 = [(i * (side + gap_x), -j * (side + gap_y)) for j in (0, 1) for i in (0, 1)]
    pointing = ((side + gap_x) / 2, -(side + gap_y) / 2)
    # stars at fixed sky positions over the whole field, with margins for the dithers
    field = (2 * side + gap_y) * 1.9 / 3600.0
    n_stars = int(250 * (shape / 1024) ** 2 * 4 * 1.9**2)
    star_ra = 150.0 + rng.uniform(-field / 2, field / 2, n_stars) / np.cos(np.radians(2.0))
    star_dec = 2.0 + rng.uniform(-field / 2, field / 2, n_stars)
    star_peak = NOISE * 10 ** rng.uniform(0.5, 3.0, n_stars)
    skies = SKY0 + SKY_SPREAD * rng.standard_normal((exposures, len(v2v3)))
    paths, truth = [], []
    for e in range(exposures):
        dx, dy = (side * f for f in DITHERS[e % len(DITHERS)])
        for d, ref in enumerate(v2v3, start=1):
            with warnings.catch_warnings():  # the inverse's fit "may be poorly conditioned"
                warnings.simplefilter("ignore")
                wcs = instruments.nircam_like_gwcs(
                    (150.0 + dx / 3600 / np.cos(np.radians(2.0)), 2.0 + dy / 3600),
                    shape=(shape, shape), pixel_scale=SCALE, distortion=4.0, v2v3_ref=ref,
                    pointing_v2v3=pointing, roll=0.3)
            data = rng.normal(skies[e, d - 1], NOISE, (shape, shape)).astype(np.float32)
            x, y = wcs.invert(star_ra, star_dec, with_bounding_box=False)
            inside = (x > -6) & (x < shape + 5) & (y > -6) & (y < shape + 5)
            add_stars(data, x[inside], y[inside], star_peak[inside], sigma=1.2)
            dq = np.zeros((shape, shape), np.uint32)
            jump = rng.random((shape, shape)) < 0.002
            dq[jump] |= JUMP_DET
            bad = rng.random((shape, shape)) < 0.001
            dq[bad] |= DO_NOT_USE
            data[bad] = rng.choice(np.array([0.0, 1e4, -50.0, np.nan], np.float32), int(bad.sum()))
            name = f"r0000101001001001{e + 1:03d}_0001_wfi{d:02d}_cal.asdf"
            paths.append(instruments.write_roman_cal(
                folder / name, data, wcs, dq=dq, detector=f"WFI{d:02d}",
                observation_id=f"r0000101001001001{e + 1:03d}_0001"))
            truth.append(float(skies[e, d - 1]))
    asn = {
        "asn_type": "image", "asn_rule": "candidate_Asn_Lv2Image", "asn_id": "a3001",
        "program": "00001", "target": "t001", "asn_pool": "study_pool", "data_release_id": "p",
        "products": [{"name": "r00001_p_full_wfi_f158",
                      "members": [{"expname": p.name, "exptype": "science"} for p in paths]}],
    }
    path = folder / "r00001_p_full_wfi_f158_asn.json"
    path.write_text(json.dumps(asn, indent=1))
    return path, truth


# -- the runs, each in a fresh process ------------------------------------------------------------
def write_child(folder: str, exposures: int, shape: int, out: str) -> None:
    """The scene written by this Python's ``roman_datamodels`` (romancal's)."""
    asn, truth = write_scene(Path(folder), exposures, shape)
    Path(out).write_text(json.dumps({"asn": str(asn), "truth": truth}))


def probe_child(asn: str, out: str) -> None:
    """Whether this Python's ``roman_datamodels`` (romancal's) opens the association's files."""
    import warnings

    import roman_datamodels.datamodels as rdm

    member = json.loads(Path(asn).read_text())["products"][0]["members"][0]["expname"]
    error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # asdf's version chatter
            with rdm.open(Path(asn).parent / member) as model:
                _ = model.meta.wcs, model.data.shape
    except Exception as exc:  # the clash of versions, reported as it is
        error = f"{type(exc).__name__}: {exc}"
    Path(out).write_text(json.dumps({"error": error}))


def romancal_child(asn: str, method: str, subtract: bool, out: str, skystat: str) -> None:
    """romancal's step (run by the ``romancal`` environment's Python)."""
    import logging
    import warnings

    logging.disable(logging.WARNING)  # the step's INFO lines
    warnings.simplefilter("ignore")
    os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"  # no CRDS server here: the defaults
    import roman_datamodels.datamodels as rdm
    from romancal.skymatch import SkyMatchStep

    start = time.perf_counter()
    library = SkyMatchStep.call(asn, skymethod=method, subtract=subtract, skystat=skystat)
    elapsed = time.perf_counter() - start
    rows = []
    with library:
        for index in range(len(library)):
            model = library.borrow(index)
            rows.append(_meta_row(model, Path(asn).parent, rdm))
            library.shelve(model, index, modify=False)
    Path(out).write_text(json.dumps({"time": elapsed, "rows": rows}))


def ours_child(asn: str, method: str, subtract: bool, out: str, compare: str, skystat: str) -> None:
    """``skymatch-nb``'s chain: read, match, write the copies (and then read them back)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    import roman_datamodels.datamodels as rdm
    import xarray as xr

    from skymatch_nb_ui import ImageCollection

    warnings.simplefilter("ignore")
    xr.Dataset({"a": ("x", [0.0])})  # xarray's first Dataset imports dask (~0.6 s): an import
    start = time.perf_counter()
    coll = ImageCollection.from_files(asn)
    coll.skymatch(skymethod=method, compare=compare, skystat=skystat)
    matched = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="study-romancal-") as copies:
        paths = coll.write_copies(copies, subtract=subtract)
        elapsed = time.perf_counter() - start
        rows = []
        for path in paths:
            with rdm.open(path) as model:
                rows.append(_meta_row(model, Path(asn).parent, rdm))
    result = coll.last_result
    groups = [str(g) for g in result["group"].values]  # "": the image alone
    skies = groups.count("") + len(set(groups) - {""})
    Path(out).write_text(json.dumps({"time": elapsed, "read_match": matched, "rows": rows,
                                     "skies": skies,
                                     "components": int(result["component"].max()) + 1}))


def _meta_row(model, inputs: Path, rdm) -> dict:
    """What a run left in one model, and how its data differ from the input's."""
    background = model.meta.background
    level = background.level
    with rdm.open(inputs / model.meta.filename) as source:
        good = ((np.asarray(source.dq) & DO_NOT_USE) == 0) & np.isfinite(source.data)
        removed = (np.asarray(source.data) - np.asarray(model.data))[good].astype(np.float64)
    expected = float(level) if (level is not None and background.subtracted) else 0.0
    return {
        "name": model.meta.filename, "level": None if level is None else float(level),
        "subtracted": background.subtracted, "method": background.method,
        "cal_step": model.meta.cal_step.skymatch,
        "tag": getattr(model._instance, "_tag", None),
        "removed_error": float(np.max(np.abs(removed - expected))) if removed.size else 0.0,
    }


# -- the comparison -------------------------------------------------------------------------------
def compare_runs(method: str, subtract: bool, truth: list[float], runs: dict) -> None:
    pipe = runs["romancal"]
    print(f"\n{method}, subtract={subtract}: time romancal step {pipe['time']:.2f} s; "
          + "; ".join(f"{k} {r['time']:.2f} s (read and match {r['read_match']:.2f} s, "
                      f"{r['skies']} skies, {r['components']} components)"
                      for k, r in runs.items() if k != "romancal"))
    def tags(rows):
        return "; tag " + ", ".join(sorted({str(r["tag"]).rsplit("/", 1)[-1] for r in rows}))

    compare_levels(method, truth, runs, "romancal", NOISE, extra=tags)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.child == "romancal":
            romancal_child(args.asn, args.method, args.subtract, args.out, args.skystat)
        elif args.child == "probe":
            probe_child(args.asn, args.out)
        elif args.child == "write":
            write_child(args.asn, args.exposures, args.shape, args.out)
        else:
            ours_child(args.asn, args.method, args.subtract, args.out, args.child.split(":")[1],
                       args.skystat)
        return 0
    if not args.romancal_python:
        raise SystemExit("--romancal-python: the Python of an environment with romancal "
                         "installed (see the usage)")
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    code = ("import romancal, roman_datamodels, rad, stcal, stpipe; print(romancal.__version__, "
            "roman_datamodels.__version__, rad.__version__, stcal.__version__, stpipe.__version__)")
    theirs = subprocess.run([args.romancal_python, "-c", code], check=True, capture_output=True,
                            text=True).stdout.split()
    import rad
    import roman_datamodels

    print("romancal, roman_datamodels, rad, stcal, stpipe in romancal's environment: "
          f"{', '.join(theirs)}; roman_datamodels, rad here: {roman_datamodels.__version__}, "
          f"{rad.__version__}")
    with tempfile.TemporaryDirectory(prefix="study-romancal-") as tmp:
        start = time.perf_counter()
        ours_dir, theirs_dir = Path(tmp) / "ours", Path(tmp) / "romancal"
        ours_dir.mkdir()
        asn, truth = write_scene(ours_dir, args.exposures, args.shape)
        print(f"wrote {len(truth)} _cal.asdf files of {args.shape}x{args.shape} "
              f"({args.exposures} exposures x 4 detectors) with roman_datamodels "
              f"{roman_datamodels.__version__} in {time.perf_counter() - start:.0f} s")
        probe = run_child(args.romancal_python, __file__, ["probe", "--asn", str(asn)])
        if probe["error"]:
            print(f"romancal's roman_datamodels {theirs[1]} cannot open them: {probe['error']}")
            start = time.perf_counter()
            theirs_dir.mkdir()
            written = run_child(args.romancal_python, __file__, [
                "write", "--asn", str(theirs_dir), "--exposures", str(args.exposures),
                "--shape", str(args.shape)])
            asn, truth = Path(written["asn"]), written["truth"]
            print(f"wrote them again with romancal's roman_datamodels {theirs[1]} (same helper, "
                  f"seed and pixels) in {time.perf_counter() - start:.0f} s")
        run_methods(args, __file__, "romancal", args.romancal_python, asn, truth, compare_runs)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--romancal-python", help="the Python of an environment with romancal")
    parser.add_argument("--exposures", type=int, default=3, help="dithered exposures (default 3)")
    parser.add_argument("--shape", type=int, default=1024, help="detector side (default 1024)")
    add_run_options(parser, METHODS, "the sky statistic of both (default mode, romancal's); "
                    "ours is not the reference's histogram argmax (`skymatch_nb_ui.engine.stats`)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
