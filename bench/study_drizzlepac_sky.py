"""Study: ``skymatch-nb`` against AstroDrizzle's sky step (``drizzlepac``), on the same HST files.

The other benches compare our engine with ``stcal.skymatch``.  This one runs what an HST user
runs: ``drizzlepac.astrodrizzle.AstroDrizzle`` with only its sky step on (``skysub=True``,
``skymethod`` ``localmin``, ``globalmin``, ``match`` or ``globalmin+match``; the step is
``drizzlepac.sky``, which calls ``stsci.skypac.skymatch``) in its own environment, on ACS/WFC-like
``_flt`` files, and ``skymatch-nb`` (``ImageCollection.from_files`` + ``skymatch`` +
``write_copies(subtract=False)``) on the same files, and compares the ``MDRIZSKY`` each leaves in
every chip's SCI header (AstroDrizzle updates its input files: it runs on its own copy), both
against the truth, and the time.

The scene (`write_hst_flt`: real ACS/WFC headers, SIP + ``D2IMARR``/``WCSDVARR`` tables):

- ``--exposures`` dithered exposures (a few arcsec) of 2 chips (``SCI,1``, ``SCI,2``) of
  ``--shape`` pixels each, in ``ELECTRONS`` (counts), each of its own ``EXPTIME``;
- a known sky rate per exposure (0.100, 0.105, ... e-/s, shuffled), so a sky in counts of
  rate x EXPTIME, the same in both chips; Gaussian noise of sqrt(sky + 4**2) e-;
- stars at fixed sky positions (the same stars where exposures overlap);
- 0.3 % of the pixels and one column per chip flagged in DQ (4 or 16) holding garbage
  (-200 to 5000 e-);
- ``NPOLFILE`` and ``D2IMFILE`` named in the primary header, as ``updatewcs`` leaves them
  (`write_hst_flt` keeps the real header's ``DGEOFILE`` without them, and AstroDrizzle then
  asks on stdin whether to go on: an ``EOFError`` without a terminal).

How the two are configured alike:

- AstroDrizzle: ``updatewcs=False`` (its default: the files' own SIP and lookup tables, no
  IDCTAB / NPOLFILE / D2IMFILE, ``jref`` or CRDS needed), ``static=False`` and
  ``use_static=False`` (no static mask: DQ only), ``sky_bits=0`` (its default: every DQ flag
  bad), every later step off (``driz_separate``, ``median``, ``blot``, ``driz_cr``,
  ``driz_combine``), ``preserve=False`` (no ``OrIg_files``), ``in_memory=True``; its sky
  statistic is its default, ``skystat="median"`` with ``skywidth=0.1``, ``skyclip=5``,
  ``skylsigma=skyusigma=4``, no ``skylower``/``skyupper``.  It runs with its working directory
  in a temporary directory (it writes ``astrodrizzle.log`` there).
- ours: ``skymethod`` ``local``, ``global``, ``match``, ``global+match`` for those four,
  ``skystat="median"``, ``binwidth=0.1``, ``nclip=5``, ``lsigma=usigma=4`` (the defaults
  but the statistic), the HST defaults for the rest (one sky per exposure, ``dqbits=0``, counts
  compared as rates when the ``EXPTIME`` differ); ``write_copies(subtract=False)``, as
  AstroDrizzle's sky step leaves the data as they are (``MDRIZSKY`` = the sky).

Each method runs once; the last one also with ours ``write_copies(subtract=True)`` (``MDRIZSKY``
0, ``BKGLEVEL`` the sky, the data subtracted), which AstroDrizzle's sky step has no mode for.
Then AstroDrizzle drizzles our copies, kept and subtracted, each exposure alone
(``driz_separate``), its sky step off (``skysub=False``) with and without ``skyuser``: what
is left of the sky shows which way subtracts it, and ``MDRIZSKY`` after it which way
AstroDrizzle's noise model counts it (``skymatch_nb_ui.io.hst``).

Times: AstroDrizzle's call (reading its files included, its import not); ours
``from_files`` + ``skymatch`` + ``write_copies`` (imports not).  Errors in noise sigma of each
exposure (counts).  For ``match`` (relative skies, the lowest 0) both are compared with
(rate - lowest rate) x EXPTIME.

Usage::

    python3 -m venv .cache/drizzlepac-venv && .cache/drizzlepac-venv/bin/pip install drizzlepac
    .cache/drizzlepac-venv/bin/pip install "spherical_geometry<1.4"  # see below
    python bench/study_drizzlepac_sky.py --drizzlepac-python .cache/drizzlepac-venv/bin/python
    python bench/study_drizzlepac_sky.py --drizzlepac-python ... --shape 1024 --methods match

``stsci.skypac`` 1.0.12 (drizzlepac 3.11's) calls ``SphericalPolygon.iter_polygons_flat``, which
``spherical_geometry`` 1.4 no longer has: with it, ``match`` and ``globalmin+match`` fail, and
AstroDrizzle warns "Reverting sky computation to localmin" and leaves no ``MDRIZSKY`` at all
(shown here as nan); 1.3.5 works (pip then warns that ``tweakwcs`` wants >= 1.4: unused here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # _steps

from _steps import add_stars, in_peer_order, run_child  # noqa: E402

RATE0, RATE_STEP = 0.100, 0.005  # e-/s
READ_NOISE = 4.0  # e-
EXPTIMES = (400.0, 520.0, 350.0, 610.0, 480.0, 440.0)  # s
DITHERS = ((0.0, 0.0), (2.1, 1.3), (-1.6, 2.4), (2.7, -1.9), (-2.4, -2.2), (0.9, 3.1))  # arcsec
METHODS = {"localmin": "local", "globalmin": "global", "match": "match",
           "globalmin+match": "global+match"}  # AstroDrizzle's name: ours


# -- the scene ------------------------------------------------------------------------------------
def write_scene(folder: Path, exposures: int, shape: int, seed: int = 0) -> list[dict]:
    """The files; returns one row per exposure (file, rootname, EXPTIME, rate, sky, noise)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    from skymatch_nb_ui.testing import write_hst_flt

    rng = np.random.default_rng(seed)
    rates = RATE0 + RATE_STEP * rng.permutation(exposures)
    rows, stars = [], None
    for e, rate in enumerate(rates):
        t = EXPTIMES[e % len(EXPTIMES)]
        sky = float(rate * t)
        noise = float(np.hypot(np.sqrt(sky), READ_NOISE))
        rootname = f"j9zz0{e + 1}abq"
        chips = [rng.normal(sky, noise, (shape, shape)).astype(np.float32) for _ in (1, 2)]
        dq = [np.zeros((shape, shape), np.int16) for _ in (1, 2)]
        path = folder / f"{rootname}_flt.fits"
        write_hst_flt(path, chips, rootname=rootname, offset=DITHERS[e % len(DITHERS)],
                      dq=dq, bunit="ELECTRONS", exptime=t)
        with warnings.catch_warnings(), fits.open(path, mode="update") as hdul:
            warnings.simplefilter("ignore")
            # the reference files of the lookup tables, named as updatewcs leaves them (else
            # AstroDrizzle, seeing DGEOFILE without NPOLFILE, asks on stdin whether to go on)
            hdul[0].header["NPOLFILE"] = "jref$02c1450oj_npl.fits"
            hdul[0].header["D2IMFILE"] = "jref$02c1450rj_d2i.fits"
            wcs = [WCS(hdul["SCI", k].header, hdul) for k in (1, 2)]
            if stars is None:  # fixed on the sky: drawn in the first exposure's chips
                n = int(60 * (shape / 512) ** 2)
                stars = [w.all_pix2world(rng.uniform(-20, shape + 20, n),
                                         rng.uniform(-20, shape + 20, n), 0) for w in wcs]
                peaks = 10 ** rng.uniform(-1.0, 1.5, 2 * n)  # e-/s
            for k, w in enumerate(wcs, start=1):
                data, flags = hdul["SCI", k].data, hdul["DQ", k].data
                for (ra, dec), p in zip(stars, np.split(peaks, 2)):
                    x, y = w.all_world2pix(ra, dec, 0)
                    add_stars(data, x, y, p * t, sigma=1.2, half=6)
                bad = rng.random(data.shape) < 0.003
                bad[:, rng.integers(shape)] = True  # a bad column
                flags[bad] = rng.choice([4, 16], int(bad.sum()))
                data[bad] = rng.uniform(-200, 5000, int(bad.sum()))
        rows.append({"file": path.name, "rootname": rootname, "exptime": t,
                     "rate": float(rate), "sky": sky, "noise": noise})
    return rows


# -- the two runs, each in a fresh process ------------------------------------------------------
def drizzlepac_child(inputs: str, method: str, out: str) -> None:
    """AstroDrizzle's sky step alone (run by the ``drizzlepac`` environment's Python), on its
    own copies of the files, with its working directory (its log) in a temporary directory."""
    import contextlib
    import io
    import logging
    import warnings

    from astropy.io import fits
    from drizzlepac import astrodrizzle

    warnings.simplefilter("ignore")
    notes = []

    class Keep(logging.Handler):  # its warnings (e.g. "Reverting sky computation to ...")
        def emit(self, record):
            notes.append(record.getMessage())

    keep = Keep(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="study-drizzlepac-run-") as work:
        names = sorted(p.name for p in Path(inputs).glob("*_flt.fits"))
        for name in names:
            shutil.copy2(Path(inputs) / name, Path(work) / name)
        os.chdir(work)
        logging.getLogger().addHandler(keep)
        chatter = io.StringIO()  # its console log: kept out of the study's output
        start = time.perf_counter()
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            astrodrizzle.AstroDrizzle(
                names, output="study", runfile="astrodrizzle.log", updatewcs=False,
                preserve=False, restore=False, clean=True, in_memory=True, build=False,
                context=False, static=False,
                skysub=True, skymethod=method, skystat="median", skywidth=0.1, skylower=None,
                skyupper=None, skyclip=5, skylsigma=4.0, skyusigma=4.0, use_static=False,
                sky_bits="0", skyfile="", skyuser="",
                driz_separate=False, median=False, blot=False, driz_cr=False,
                driz_combine=False)
        elapsed = time.perf_counter() - start
        logging.getLogger().removeHandler(keep)
        text = chatter.getvalue() + (Path("astrodrizzle.log").read_text(errors="replace")
                                     if Path("astrodrizzle.log").exists() else "")
        notes += [line.strip() for line in text.splitlines()
                  if "Reverting" in line or "Traceback" in line or "ERROR" in line]
        rows = [_chip_row(Path(work) / name, Path(inputs) / name, k, fits)
                for name in names for k in (1, 2)]
        left = sorted(p.name for p in Path(work).iterdir()
                      if p.name not in names and p.name != "astrodrizzle.log")
    Path(out).write_text(json.dumps({"time": elapsed, "rows": rows, "notes": sorted(set(notes)),
                                     "left_in_cwd": left}))


def recipe_child(inputs: str, skyuser: str, out: str) -> None:
    """AstroDrizzle on our copies with its sky step off (``skysub=False``, ``skyuser``):
    each exposure drizzled alone (``driz_separate``), and what is left of the sky there."""
    import contextlib
    import glob
    import io
    import warnings

    from astropy.io import fits
    from drizzlepac import astrodrizzle

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="study-drizzlepac-recipe-") as work:
        names = sorted(p.name for p in Path(inputs).glob("*_flt.fits"))
        for name in names:
            shutil.copy2(Path(inputs) / name, Path(work) / name)
        os.chdir(work)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            astrodrizzle.AstroDrizzle(
                names, output="study", updatewcs=False, preserve=False, clean=False,
                in_memory=True, build=False, context=False, static=False, skysub=False,
                skyuser=skyuser, driz_separate=True, driz_sep_bits="~0", median=False,
                blot=False, driz_cr=False, driz_combine=False)
        left = []
        for single in sorted(glob.glob("*single_sci.fits")):
            data = fits.getdata(single)
            left.append(float(np.nanmedian(data[data != 0])))
        after = [float(fits.getheader(name, ("SCI", 1))["MDRIZSKY"]) for name in names]
    Path(out).write_text(json.dumps({"left": left, "mdrizsky": after}))


def copies_child(inputs: str, method: str, subtract: bool, out: str) -> None:
    """Our copies of the inputs, in ``out`` (a directory)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    from skymatch_nb_ui import ImageCollection

    warnings.simplefilter("ignore")
    coll = ImageCollection.from_files(sorted(Path(inputs).glob("*_flt.fits")))
    coll.skymatch(skymethod=method, skystat="median")
    coll.write_copies(out, subtract=subtract)


def ours_child(inputs: str, method: str, compare: str, subtract: bool, out: str) -> None:
    """``skymatch-nb``'s chain: read, match, write the copies (then read them back)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    import xarray as xr
    from astropy.io import fits

    from skymatch_nb_ui import ImageCollection

    warnings.simplefilter("ignore")
    xr.Dataset({"a": ("x", [0.0])})  # xarray's first Dataset imports dask (~0.6 s): an import
    files = sorted(Path(inputs).glob("*_flt.fits"))
    start = time.perf_counter()
    coll = ImageCollection.from_files(files)
    result = coll.skymatch(skymethod=method, compare=compare, skystat="median", binwidth=0.1,
                           nclip=5, lsigma=4.0, usigma=4.0, lower=None, upper=None)
    matched = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="study-drizzlepac-ours-") as copies:
        paths = coll.write_copies(copies, subtract=subtract)
        elapsed = time.perf_counter() - start
        rows = [_chip_row(path, Path(inputs) / path.name, k, fits) for path in paths
                for k in (1, 2)]
    extra = {"units": str(result.sky.attrs.get("units")), "groups": sorted(set(coll.groups.values())),
             "sky": [float(v) for v in result.sky.values], "names": list(coll.names)}
    Path(out).write_text(json.dumps({"time": elapsed, "read_match": matched, "rows": rows,
                                     **extra}))


def _chip_row(path: Path, source: Path, k: int, fits) -> dict:
    """What a run left in the header of chip ``k`` of a file, and how its data changed: the
    largest |input - output - what it says it subtracted| (BKGLEVEL when BKGSUB, else 0)."""
    with fits.open(path) as hdul, fits.open(source) as src:
        header = hdul["SCI", k].header
        removed = src["SCI", k].data.astype(np.float64) - hdul["SCI", k].data
        expected = float(header["BKGLEVEL"]) if header.get("BKGSUB") else 0.0
        return {"name": f"{path.name}[SCI,{k}]", "file": path.name, "chip": k,
                **{key.lower(): header.get(key) for key in
                   ("MDRIZSKY", "BKGLEVEL", "BKGSUB", "BKGMETH")},
                "comment": header.comments["MDRIZSKY"] if "MDRIZSKY" in header else None,
                "removed_error": float(np.max(np.abs(removed - expected)))}


# -- the comparison -------------------------------------------------------------------------------
def compare_runs(method: str, truth: list[dict], runs: dict) -> None:
    ours_name = METHODS[method]
    driz = runs["drizzlepac"]
    print(f"\n{method} (ours {ours_name}): time AstroDrizzle {driz['time']:.2f} s; "
          + "; ".join(f"{k} {r['time']:.2f} s (read and match {r['read_match']:.2f} s)"
                      for k, r in runs.items() if k != "drizzlepac"))
    for note in driz["notes"]:
        print(f"  drizzlepac said: {note[:150]}")
    if driz["left_in_cwd"]:
        print(f"  drizzlepac wrote into its cwd: {', '.join(driz['left_in_cwd'])}")
    by_file = {t["file"]: t for t in truth}
    lowest = min(t["rate"] for t in truth)
    names = [r["name"] for r in driz["rows"]]
    expected = np.array([  # counts: what MDRIZSKY should be
        (by_file[r["file"]]["rate"] - lowest if method == "match" else
         lowest if method == "globalmin" else by_file[r["file"]]["rate"])
        * by_file[r["file"]]["exptime"] for r in driz["rows"]])
    noise = np.array([by_file[r["file"]]["noise"] for r in driz["rows"]])
    sky = {}
    for key, rows in in_peer_order(runs, "drizzlepac").items():
        sky[key] = np.array([np.nan if r["mdrizsky"] is None else r["mdrizsky"] for r in rows])
        err = (sky[key] - expected) / noise
        same = all(a["mdrizsky"] == b["mdrizsky"] for a, b in zip(rows[::2], rows[1::2]))
        fields = sorted({(r["bkgsub"], r["bkgmeth"]) for r in rows}, key=str)
        print(f"  {key:>20}: MDRIZSKY - truth rms {np.sqrt(np.nanmean(err**2)):.4f} sigma, "
              f"max {np.nanmax(np.abs(err)):.4f}; chips of an exposure equal: {same}; "
              f"pixels removed = what BKGSUB says to {max(r['removed_error'] for r in rows):.1e}; "
              f"(BKGSUB, BKGMETH) {fields}")
        if key != "drizzlepac":
            print(f"  {'':>20}  BKGLEVEL == MDRIZSKY: "
                  f"{all(r['bkglevel'] == r['mdrizsky'] for r in rows)}; units of the result "
                  f"{runs[key]['units']}; {len(runs[key]['groups'])} groups")
    comments = {r["comment"] for run in runs.values() for r in run["rows"]}
    print(f"  MDRIZSKY comments: {sorted(comments, key=str)}")
    keys = [k for k in runs if k != "drizzlepac"]
    print(f"  {'chip':>24} {'EXPTIME':>7} {'truth':>8} {'drizzlepac':>10} "
          + " ".join(f"{k[6:-1][:11]:>11}" for k in keys)
          + "   (MDRIZSKY in e-; then [value - drizzlepac] / sigma)")
    for i, name in enumerate(names):
        t = by_file[driz["rows"][i]["file"]]
        print(f"  {name:>24} {t['exptime']:7.0f} {expected[i]:8.3f} {sky['drizzlepac'][i]:10.3f} "
              + " ".join(f"{sky[k][i]:11.3f}" for k in keys)
              + "   [" + ", ".join(f"{(sky[k][i] - sky['drizzlepac'][i]) / noise[i]:+.4f}"
                                   for k in keys) + "]")
    for key in keys:
        d = (sky[key] - sky["drizzlepac"]) / noise
        print(f"  {key} - drizzlepac: max |difference| {np.nanmax(np.abs(d)):.4f} sigma "
              f"({np.nanmax(np.abs(sky[key] - sky['drizzlepac'])):.2e} e-)")


def compare_subtracted(method: str, compare: str, truth: list[dict], driz: dict, sub: dict) -> None:
    by_name = {r["name"]: r for r in sub["rows"]}
    noise = {t["file"]: t["noise"] for t in truth}
    rows = [(r, by_name[r["name"]]) for r in driz["rows"]]
    level = max(abs(o["bkglevel"] - d["mdrizsky"]) / noise[d["file"]] for d, o in rows)
    print(f"\n{method}, ours ({compare}) with write_copies(subtract=True): time {sub['time']:.2f} s; "
          f"MDRIZSKY {sorted({o['mdrizsky'] for _, o in rows})}, BKGSUB "
          f"{sorted({o['bkgsub'] for _, o in rows})}; BKGLEVEL - drizzlepac's MDRIZSKY max "
          f"{level:.4f} sigma; pixels removed = BKGLEVEL to "
          f"{max(o['removed_error'] for _, o in rows):.1e} e-")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.child == "drizzlepac":
            drizzlepac_child(args.inputs, args.method, args.out)
        elif args.child == "recipe":
            recipe_child(args.inputs, args.skyuser, args.out)
        elif args.child == "copies":
            copies_child(args.inputs, METHODS[args.method], args.subtract, args.out)
        else:
            ours_child(args.inputs, METHODS[args.method], args.child.split(":")[1], args.subtract,
                       args.out)
        return 0
    if not args.drizzlepac_python:
        raise SystemExit("--drizzlepac-python: the Python of an environment with drizzlepac "
                         "installed (see the usage)")
    print(f"== {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    version = subprocess.run(
        [args.drizzlepac_python, "-c", "import drizzlepac, stsci.skypac, stwcs; "
         "print(drizzlepac.__version__, stsci.skypac.__version__, stwcs.__version__)"],
        check=True, capture_output=True, text=True)
    print(f"drizzlepac, stsci.skypac, stwcs in drizzlepac's environment: {version.stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="study-drizzlepac-") as tmp:
        start = time.perf_counter()
        truth = write_scene(Path(tmp), args.exposures, args.shape)
        print(f"wrote {len(truth)} _flt files of 2 chips of {args.shape}x{args.shape} in "
              f"{time.perf_counter() - start:.0f} s:")
        for t in truth:
            print(f"  {t['file']}: EXPTIME {t['exptime']:.0f} s, sky {t['rate']:.3f} e-/s = "
                  f"{t['sky']:.2f} e-, noise {t['noise']:.2f} e-")
        for method in args.methods:
            common = ["--inputs", tmp, "--method", method]
            runs = {"drizzlepac": run_child(args.drizzlepac_python, __file__, ["drizzlepac", *common])}
            for compare in args.compare:
                runs[f"ours ({compare})"] = run_child(sys.executable, __file__, [f"ours:{compare}", *common])
            compare_runs(method, truth, runs)
            print(f"  (load {os.getloadavg()[0]:.2f})", flush=True)
        # ours with subtract=True (AstroDrizzle's sky step has no such mode: it only records)
        compare = args.compare[0]
        sub = run_child(sys.executable, __file__, [f"ours:{compare}", *common, "--subtract"])
        compare_subtracted(method, compare, truth, runs["drizzlepac"], sub)
        drizzle_our_copies(args.drizzlepac_python, tmp, "globalmin+match", truth)  # absolute skies
    return 0


def drizzle_our_copies(python: str, inputs: str, method: str, truth: list[dict]) -> None:
    """AstroDrizzle (its sky step off) on our copies, as ``io.hst`` says to drizzle them."""
    rates = ", ".join(f"{t['rate']:.3f}" for t in truth)
    print("\nAstroDrizzle on our copies (skysub=False; each exposure drizzled alone): the sky "
          f"left, e-/s (true skies {rates})")
    for subtract, skyuser in ((False, ""), (False, "MDRIZSKY"), (True, ""), (True, "BKGLEVEL")):
        with tempfile.TemporaryDirectory(prefix="study-drizzlepac-copies-") as copies:
            subprocess.run([sys.executable, __file__, "--child", "copies", "--inputs", inputs,
                            "--method", method, "--out", copies]
                           + (["--subtract"] if subtract else []), check=True)
            found = run_child(python, __file__, ["recipe", "--inputs", copies, "--skyuser", skyuser])
        print(f"  copies {'subtracted' if subtract else 'keeping their sky':>17}, "
              f"skyuser={skyuser!r:>10}: sky left {', '.join(f'{v:.4f}' for v in found['left'])}; "
              f"MDRIZSKY after {', '.join(f'{v:.2f}' for v in found['mdrizsky'])}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drizzlepac-python", help="the Python of an environment with drizzlepac")
    parser.add_argument("--exposures", type=int, default=4, help="dithered exposures (default 4)")
    parser.add_argument("--shape", type=int, default=512, help="chip side (default 512)")
    parser.add_argument("--methods", type=lambda t: t.split(","), default=list(METHODS),
                        help=f"AstroDrizzle's skymethods among {', '.join(METHODS)} (default all)")
    parser.add_argument("--compare", type=lambda t: t.split(","), default=["levels", "differences"],
                        help="our compare settings (default levels,differences)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--subtract", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skyuser", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
