"""Benchmark: our engine against the reference (stcal), reproject and Montage on nebula mosaics.

The mosaics are dominated by smooth diffuse emission (`make_mosaic` with ``nebula=25``: a
nebula spanning ~25 noise sigma per image, 50 stars per 1024^2 pixels, noise sigma 1, 20%
overlaps, 3 degrees rotation, 5 pixels jitter, skies 100 + 20 U(0, 1)), the case ``match``
exists for.  Engines:

- ``ours``: `skymatch_nb_ui.skymatch(..., skymethod="match")` for each statistic and each
  ``compare`` mode (when the engine has that parameter);
- ``reference``: ``stcal.skymatch`` (through `skymatch_nb_ui.testing.reference_skymatch`),
  its default statistic ``mode`` unless ``--ref-stats`` says otherwise;
- ``reproject``: ``reproject_and_coadd(..., match_background=True)`` onto the optimal
  celestial frame (``find_optimal_celestial_wcs``), bilinear interpolation; its background
  corrections are captured from its solver (``solve_corrections_sgd``);
- ``montage``: MontagePy from the images as FITS files on disk: mImgtbl, mMakeHdr, mProjExec,
  mImgtbl, mOverlaps, mDiffExec, mFitExec (level only), mBgModel (level only); the
  corrections are read from mBgModel's table.

``--scene gradient`` (issue 13) adds scattered light: each image its own random plane rising
by up to 4 noise sigma across it (`make_mosaic(..., gradient=4)`) over the same nebula scene.
Ours runs with ``skymodel="constant"`` and ``"plane"``, Montage with levels only and with
planes (mFitExec without ``levelOnly``, mBgModel with slopes; its corrections, planes on the
common grid, are carried into each image's pixels).  The error is then the true sky left after
correction: rms and max over all pixels of the images (every 4th along each axis), the common
plane that no overlap can see removed, in noise sigma (`bench/_gradients.py`).

``--scene hdf`` (issue 13) has real pixels and a real distortion: the Hubble Deep Field seen
through HST's ACS/WFC (its SIP polynomials), four dithered exposures of two chips
(`skymatch_nb_ui.datasets`, noise sigma 5), each exposure its own random plane on the sky
rising by up to 4 sigma across a chip (the same plane for both chips; `_gradients.hdf_exposures`).
One size (8 images of 512 x 256 pixels: ``--mosaics`` is ignored); every engine fits each
image alone (Montage cannot do otherwise; ours also with each exposure's chips one group,
``group=exposure``: one plane on the sky for both); the error as in the gradient scene (the
common plane removed in standard coordinates about the field's centre).  One scene's error
is one draw of few degrees of freedom: ``--seed 0-9`` runs ten scenes and sums them up.

Every engine runs in its own process (started once; the mosaic is loaded before timing), and
the runs are interleaved: round 1 runs each engine once, then round 2, ...  For each engine and
setting the script prints the time (min and median over rounds), the error of the estimated
skies in units of the noise sigma with the common offset removed (rms and max over images),
the spread (std) of the pulls ``error / sky_err`` where the engine reports errors (for ours
also, in the notes, the 68% interval of that spread for honest errors and the whitened
chi2/dof of the skies with its 95% interval: one mosaic's skies are correlated, so its pull
spread scatters widely; `_pulls.py`), and the peak memory of the run (growth of the
process's peak resident set over its resident set before the run; for ours, with the private
pages of the worker it may fork, sampled every 100 ms in a second, untimed run; Montage also
writes files, whose total size is shown).  The machine load (``uptime``) is printed before and after.

Usage::

    python bench/bench_vs_peers.py                          # N = 16, 64 (1024^2), 256 (256^2)
    python bench/bench_vs_peers.py --mosaics 16 --rounds 2 --engines ours,montage
    python bench/bench_vs_peers.py --stats median,mode --compare levels,differences
    python bench/bench_vs_peers.py --scene gradient --mosaics 16,64 --stats median
    python bench/bench_vs_peers.py --scene hdf --engines ours,montage --stats mode,median --seed 0-9
    python bench/bench_vs_peers.py --mosaics 1024 --engines ours --stats mode  # 32 x 32 of 256^2

The mosaics are built once and cached as FITS files under ``--cache`` (default: a temporary
directory removed at the end).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # measure this checkout

MOSAICS = {  # N -> (layout, image shape)
    16: ((4, 4), (1024, 1024)),
    64: ((8, 8), (1024, 1024)),
    256: ((16, 16), (256, 256)),
    1024: ((32, 32), (256, 256)),  # not in the default run: ours at a survey's scale
}
ENGINES = ("ours", "reference", "reproject", "montage")
STATS = ("mode", "median", "mean", "midpt")
COMPARES = ("levels", "differences")
NOISE = 1.0
NEBULA = 25.0  # range of the diffuse emission over one image, in noise sigma
SCENES = ("nebula", "gradient", "hdf")
HDF_IMAGES = 8  # the hdf scene's size
SKYMODELS = ("constant", "plane")
GRADIENT_STEP = 4  # the gradient scene's error: every 4th pixel along each axis
STARS = 50  # per 1024 x 1024 pixels


# -- the driver ------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_machine()
    print(f"load before: {load()}")
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="bench_peers_"))
    try:
        for n in [HDF_IMAGES] if args.scene == "hdf" else args.mosaics:
            found = []
            for seed in args.seed:
                directory = cache / f"{args.scene}_{n}_seed{seed}"
                truth = build_mosaic(n, directory, seed, args.scene)
                rows = bench_mosaic(n, directory, truth, args)
                if len(args.seed) > 1:
                    print(f"\nseed {seed}:", end="")
                print_table(n, rows, args.scene)
                found.append(rows)
            if len(found) > 1:
                print_seeds(n, found)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"load after: {load()}")
    return 0


def build_mosaic(n: int, directory: Path, seed: int, scene: str = "nebula"):
    """Write the mosaic of N images as FITS files (once); returns the true skies.

    The gradient scene's truth is a `Mosaic` of its true planes (no pixels), for
    `_gradients.sky_error`.
    """
    truth_file = directory / "truth.npy"
    if truth_file.exists():
        return _truth(directory, np.load(truth_file), scene, seed)
    from astropy.io import fits

    start = time.perf_counter()
    if scene == "hdf":
        from _gradients import fits_header, hdf_exposures

        exposures = hdf_exposures(seed)
        raw = directory / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, image, w in zip(exposures.names, exposures.images, exposures.wcs):
            fits.PrimaryHDU(image, header=fits_header(w)).writeto(raw / f"{name}.fits")
        np.save(truth_file, exposures.gradient)
        print(f"built the hdf scene: {len(exposures)} images, {time.perf_counter() - start:.0f} s",
              flush=True)
        return _truth(directory, np.load(truth_file), scene, seed)
    layout, shape = MOSAICS[n]
    if scene == "gradient":
        from _gradients import gradient_mosaic

        mosaic = gradient_mosaic(layout, shape, seed)
    else:
        mosaic = nebula_mosaic(layout, shape, seed)
    raw = directory / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, image, w in zip(mosaic.names, mosaic.images, mosaic.wcs):
        fits.PrimaryHDU(image, header=w.to_header()).writeto(raw / f"{name}.fits")
    np.save(truth_file, mosaic.planes if scene == "gradient" else mosaic.sky)
    print(f"built N={n}: {layout[0]}x{layout[1]} of {shape[0]}x{shape[1]}, "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return _truth(directory, np.load(truth_file), scene)


def _truth(directory: Path, saved: np.ndarray, scene: str, seed: int = 0):
    if scene == "hdf":  # the dataset again (deterministic), checked against the files' truth
        from _gradients import hdf_exposures

        exposures = hdf_exposures(seed)
        if not np.array_equal(exposures.gradient, saved):
            raise RuntimeError(f"{directory} holds another hdf scene: remove it")
        return exposures  # (its `residual_sky` and `noise`)
    if scene != "gradient":
        return saved
    from _gradients import truth_mosaic
    from astropy.io import fits
    from astropy.wcs import WCS

    wcs, shapes = [], []
    for f in sorted((directory / "raw").glob("*.fits")):
        header = fits.getheader(f)
        wcs.append(WCS(header))
        shapes.append((header["NAXIS2"], header["NAXIS1"]))
    return truth_mosaic(saved, wcs, shapes)


def nebula_mosaic(layout, shape, seed: int):
    """The bench mosaic: a nebula of 25 sigma per image, 50 stars per 1024^2 pixels."""
    from skymatch_nb_ui.testing import make_mosaic

    rng = np.random.default_rng(seed)
    n = layout[0] * layout[1]
    return make_mosaic(
        layout, shape=shape, overlap=0.2, sky=100.0 + 20.0 * rng.random(n), noise=NOISE,
        sources=round(STARS * shape[0] * shape[1] / 1024**2), rotation=3.0, jitter=5.0,
        nebula=NEBULA * NOISE, dtype=np.float32, seed=rng,
    )


def settings_of(args) -> list[tuple[str, dict]]:
    """The (engine, setting) entries of one round."""
    entries = []
    gradient = args.scene in ("gradient", "hdf")
    for engine in args.engines:
        if engine == "ours":
            models = [{"skymodel": m} for m in args.skymodels] if gradient else [{}]
            entries += [("ours", {"skystat": s, "compare": c, **m})
                        for m in models for c in args.compare for s in args.stats]
            if args.scene == "hdf":  # and each exposure's two chips one group (one plane)
                entries += [("ours", {"skystat": s, "compare": c, **m, "group": "exposure"})
                            for m in models for c in args.compare for s in args.stats]
        elif engine == "montage" and gradient:
            entries += [("montage", {"fit": fit}) for fit in args.montage_fits]
        elif engine == "reference":
            entries += [("reference", {"skystat": s}) for s in args.ref_stats]
        else:
            entries.append((engine, {}))
    return entries


def bench_mosaic(n: int, directory: Path, truth: np.ndarray, args) -> list[dict]:
    entries = settings_of(args)
    workers = {engine: Worker(engine, directory) for engine in dict.fromkeys(e for e, _ in entries)}
    records = {i: [] for i in range(len(entries))}
    try:
        for w in workers.values():
            w.ready()
        for r in range(args.rounds):
            order = list(range(len(entries)))
            if r % 2:  # alternate the order, so that no engine always follows the same one
                order.reverse()
            for i in order:
                engine, setting = entries[i]
                reply = workers[engine].run(setting)
                records[i].append(reply)
                if "error" in reply:
                    print(f"  {engine} {setting}: {reply['error']}", flush=True)
    finally:
        for w in workers.values():
            w.close()
    rows = []
    for i, (engine, setting) in enumerate(entries):
        replies = [rep for rep in records[i] if "error" not in rep]
        if not replies:
            continue
        rows.append(summarise(engine, setting, replies, truth))
    return rows


def summarise(engine: str, setting: dict, replies: list[dict], truth) -> dict:
    times = [rep["time"] for rep in replies]
    last = replies[-1]
    if not isinstance(truth, np.ndarray):  # the gradient scene: the true sky left, all pixels
        from _gradients import NOISE as GRADIENT_NOISE

        noise = getattr(truth, "noise", GRADIENT_NOISE)  # the hdf scene's own
        planes = np.array(last["planes"], dtype=float)
        ok = np.isfinite(planes).all(axis=1)
        left = truth.residual_sky(planes=np.where(ok[:, None], planes, 0.0), step=GRADIENT_STEP)
        return {"engine": engine, "setting": setting, "tmin": min(times),
                "tmed": statistics.median(times),
                "rms": float(np.sqrt(np.mean(left**2))) / noise,
                "max": float(np.abs(left).max()) / noise, "valid": int(ok.sum()),
                "n": len(planes), "mem": max(rep["peak_mb"] for rep in replies), "pull": None,
                "files_mb": last.get("files_mb"), "share": last.get("share")}
    sky = np.array(last["sky"], dtype=float)
    ok = np.isfinite(sky)
    error = sky[ok] - truth[ok]
    error -= error.mean()  # the common offset is a convention, not a measurement
    row = {
        "engine": engine, "setting": setting, "tmin": min(times), "tmed": statistics.median(times),
        "rms": float(np.sqrt(np.mean(error**2))) / NOISE, "max": float(np.abs(error).max()) / NOISE,
        "valid": int(ok.sum()), "n": len(sky), "mem": max(rep["peak_mb"] for rep in replies),
        "pull": None, "files_mb": last.get("files_mb"), "share": last.get("share"),
    }
    if last.get("err") is not None:
        err = np.array(last["err"], dtype=float)[ok]
        row["pull"] = float(np.std(error / err))
    if last.get("cov") is not None:  # the proper test of one mosaic's errors: see `_pulls`
        from _pulls import pull_statistics

        found = pull_statistics(sky - truth, np.array(last["err"], dtype=float),
                                np.array(last["cov"], dtype=float))
        row["pull_68"] = found["pull_sd_68"]
        row["chi2"] = (found["chi2_dof"], *found["chi2_95"])
    return row


def print_table(n: int, rows: list[dict], scene: str = "nebula") -> None:
    layout, shape = MOSAICS.get(n, ((0, 0), (0, 0)))
    if scene == "hdf":
        print(f"\nthe hdf scene ({n} ACS/WFC images of 512x256, SIP distortion); rms / max = "
              f"true sky left after correction over all pixels (every {GRADIENT_STEP}th), in "
              "sigma, common plane on the sky removed; memory = peak growth during the run")
    elif scene == "gradient":
        print(f"\nN={n} ({layout[0]}x{layout[1]} of {shape[0]}^2), gradient scene; rms / max = "
              f"true sky left after correction over all pixels (every {GRADIENT_STEP}th), in "
              "sigma, common plane removed; memory = peak growth during the run")
    else:
        print(f"\nN={n} ({layout[0]}x{layout[1]} of {shape[0]}^2); errors in sigma, common "
              "offset removed; memory = peak growth during the run")
    head = (f"{'engine':<10} {'setting':<36} {'t min s':>8} {'t med s':>8} {'rms':>8} "
            f"{'max':>8} {'pull sd':>8} {'mem MB':>8}  note")
    print(head)
    print("-" * len(head))
    for row in rows:
        setting = "/".join(str(v) for v in row["setting"].values()) or "-"
        notes = []
        if row["valid"] < row["n"]:
            notes.append(f"{row['n'] - row['valid']} invalid")
        if row["files_mb"] is not None:
            notes.append(f"files {row['files_mb']:.0f} MB")
        if row["share"] is not None:
            notes.append(f"{row['share'] * 100:.0f}% reprojection")
        pull = "-" if row["pull"] is None else f"{row['pull']:.2f}"
        if row.get("pull_68") is not None:
            notes.append("pull sd 68% for honest errors [{:.2f}, {:.2f}]".format(*row["pull_68"]))
        if row.get("chi2") is not None:
            notes.append("whitened chi2/dof {:.2f} (95% [{:.2f}, {:.2f}])".format(*row["chi2"]))
        print(f"{row['engine']:<10} {setting:<36} {row['tmin']:>8.3f} {row['tmed']:>8.3f} "
              f"{row['rms']:>8.4f} {row['max']:>8.4f} {pull:>8} {row['mem']:>8.0f}  "
              + ", ".join(notes), flush=True)


def print_seeds(n: int, found: list[list[dict]]) -> None:
    """Over the seeds (scenes) of one size: per engine and setting, the rms of their rms
    errors, the median and the largest, and the median time (one scene's error is one draw:
    a few images have few degrees of freedom)."""
    print(f"\nN={n}, over {len(found)} seeds (scenes): error = rms over the seeds of each "
          "scene's rms, in sigma")
    head = f"{'engine':<10} {'setting':<36} {'t med s':>8} {'rms':>8} {'median':>8} {'largest':>8}"
    print(head)
    print("-" * len(head))
    def key(row):
        return row["engine"], json.dumps(row["setting"], sort_keys=True)

    for row in found[0]:  # (a setting that failed in some scene: over the others)
        same = [r for rows in found for r in rows if key(r) == key(row)]
        errors = np.array([r["rms"] for r in same])
        setting = "/".join(str(v) for v in row["setting"].values()) or "-"
        print(f"{row['engine']:<10} {setting:<36} {statistics.median(r['tmed'] for r in same):>8.3f} "
              f"{np.sqrt(np.mean(errors**2)):>8.4f} {np.median(errors):>8.4f} {errors.max():>8.4f}",
              flush=True)


class Worker:
    """One engine in its own process, driven by JSON lines over its stdin/stdout."""

    def __init__(self, engine: str, directory: Path):
        self.engine = engine
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", engine, "--dir", str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def _ask(self, message: dict) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.engine} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def ready(self) -> None:
        reply = self._ask({"cmd": "ready"})
        assert reply.get("ready"), reply

    def run(self, setting: dict) -> dict:
        return self._ask({"cmd": "run", "setting": setting})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._ask({"cmd": "quit"})
            except (BrokenPipeError, RuntimeError):
                pass
        self.proc.wait(timeout=60)


# -- the workers -----------------------------------------------------------------------------
def worker_main(engine: str, directory: Path) -> int:
    """Serve run requests for one engine on stdin/stdout (JSON lines)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # engines' prints must not corrupt the protocol
    runner = RUNNERS[engine](directory)
    for line in sys.stdin:
        message = json.loads(line)
        if message["cmd"] == "quit":
            out.write(json.dumps({"bye": True}) + "\n")
            out.flush()
            break
        if message["cmd"] == "ready":
            reply = {"ready": True}
        else:
            reply = timed_run(runner, message["setting"])
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def timed_run(runner, setting: dict) -> dict:
    import gc

    gc.collect()
    base = rss_mb()
    reset_peak()
    start = time.perf_counter()
    try:
        result = runner.run(**setting)
        elapsed = time.perf_counter() - start
        peak = peak_mb()
        if getattr(runner, "forks", False):  # once more, untimed: sampling slows the worker
            with WorkerMemory() as workers:
                runner.run(**setting)
            peak = max(peak, workers.peak_mb)
    except Exception as exc:  # any engine failure is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    result = dict(result, time=elapsed, peak_mb=peak - base)
    if hasattr(runner, "extras"):  # not timed
        result.update(runner.extras())
    return result


def load_mosaic(directory: Path):
    from astropy.io import fits
    from astropy.wcs import WCS

    files = sorted((directory / "raw").glob("*.fits"))
    images, wcs = [], []
    for f in files:
        with fits.open(f, memmap=False) as hdul:
            images.append(np.array(hdul[0].data))
            wcs.append(WCS(hdul[0].header))
    return images, wcs, [f.stem for f in files]


class OursRunner:
    forks = True  # `scheduler="auto"` may fork a worker: its memory is measured (`WorkerMemory`)

    def __init__(self, directory: Path):
        import skymatch_nb_ui

        self.skymatch = skymatch_nb_ui.skymatch
        self.has_compare = "compare" in inspect.signature(self.skymatch).parameters
        self.images, self.wcs, self.names = load_mosaic(directory)
        with warnings.catch_warnings():  # two images: maybe disconnected (two chips)
            warnings.simplefilter("ignore")
            self.run(skystat="mode", compare="levels", warm=True)

    def run(self, skystat: str, compare: str, skymodel: str = "constant", group: str | None = None,
            warm: bool = False) -> dict:
        options = {"compare": compare} if self.has_compare else {}
        if not self.has_compare and compare != "levels":
            raise RuntimeError("this engine has no compare parameter (levels only)")
        if skymodel != "constant":
            options["skymodel"] = skymodel
        images, wcs = (self.images[:2], self.wcs[:2]) if warm else (self.images, self.wcs)
        if group == "exposure":  # the hdf scene's files: e<exposure>_wfc<chip>
            options["groups"] = [name.split("_")[0] for name in self.names[: len(images)]]
        if self.has_compare:  # what skymatch() does, keeping the matcher for `extras`
            from skymatch_nb_ui import SkyMatcher

            matcher = SkyMatcher(images, wcs)
            result = matcher.run(skymethod="match", skystat=skystat, **options)
            self.last = (matcher, result) if skymodel == "constant" else None
        else:
            result = self.skymatch(images, wcs, skymethod="match", skystat=skystat, **options)
        plane = getattr(result, "plane", None)  # skymodel="plane": the slopes
        slopes = (np.zeros((len(images), 2)) if plane is None
                  else np.column_stack([plane.slope_x, plane.slope_y]))
        planes = np.column_stack([result.sky, slopes])
        return {"sky": nan_list(result.sky), "err": nan_list(result.sky_err),
                "planes": [nan_list(row) for row in planes]}


    def extras(self) -> dict:
        """The covariance of the last run's skies (after the timing): for `_pulls`."""
        if getattr(self, "last", None) is None:
            return {}
        from _pulls import sky_covariance

        cov = sky_covariance(*self.last)
        self.last = None
        return {"cov": [nan_list(row) for row in cov]}


class ReferenceRunner:
    def __init__(self, directory: Path):
        from skymatch_nb_ui.testing import reference_skymatch

        self.reference = reference_skymatch
        self.images, self.wcs, _ = load_mosaic(directory)
        self.reference(self.images[:2], self.wcs[:2], skymethod="match")  # warm up imports

    def run(self, skystat: str) -> dict:
        sky, _ = self.reference(self.images, self.wcs, skymethod="match", skystat=skystat)
        return {"sky": nan_list(sky), "err": None}


class ReprojectRunner:
    def __init__(self, directory: Path):
        import reproject.mosaicking._coadd as coadd
        from reproject import reproject_interp
        from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

        self.images, self.wcs, _ = load_mosaic(directory)
        self.coadd_module = coadd
        self.solver = coadd.solve_corrections_sgd
        self.offsets = coadd.determine_offset_matrix
        self.find_wcs = find_optimal_celestial_wcs
        self.coadd = reproject_and_coadd
        self.interp = reproject_interp
        self.captured: list = []
        self.matching = 0.0

        def capture_offsets(arrays):
            start = time.perf_counter()
            matrix = self.offsets(arrays)
            self.matching += time.perf_counter() - start
            return matrix

        def capture_corrections(matrix, **kwargs):
            start = time.perf_counter()
            corrections = self.solver(matrix, **kwargs)
            self.matching += time.perf_counter() - start
            self.captured.append(np.array(corrections))
            return corrections

        coadd.determine_offset_matrix = capture_offsets
        coadd.solve_corrections_sgd = capture_corrections
        self.run(warm=True)

    def run(self, warm: bool = False) -> dict:
        np.random.seed(0)  # noqa: NPY002 (reproject shuffles with numpy's global RNG)
        self.captured.clear()
        self.matching = 0.0
        images, wcs = (self.images[:2], self.wcs[:2]) if warm else (self.images, self.wcs)
        inputs = list(zip(images, wcs))
        start = time.perf_counter()
        frame, shape = self.find_wcs(inputs)
        self.coadd(inputs, frame, shape_out=shape, reproject_function=self.interp,
                   match_background=True)
        total = time.perf_counter() - start
        (corrections,) = self.captured
        return {"sky": nan_list(corrections), "err": None,
                "share": 1.0 - self.matching / total}


class MontageRunner:
    """Montage from the FITS files: `_gradients.montage_planes` (levels only, or planes)."""

    def __init__(self, directory: Path):
        import MontagePy.main  # noqa: F401 (imported before timing)
        from _gradients import montage_planes

        self.montage_planes = montage_planes
        self.raw = directory / "raw"
        self.work_root = directory

    def run(self, fit: str = "levels") -> dict:
        reply = self.montage_planes(self.raw, self.work_root, slopes=fit == "planes")
        planes = np.array(reply["planes"], dtype=float)
        return {"sky": nan_list(planes[:, 0]), "err": None,
                "planes": [nan_list(row) for row in planes], "files_mb": reply["files_mb"],
                "share": reply["share"], "steps": reply["steps"]}


RUNNERS = {"ours": OursRunner, "reference": ReferenceRunner, "reproject": ReprojectRunner,
           "montage": MontageRunner}


# -- memory and machine ----------------------------------------------------------------------
def _status_kb(field: str, pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak() -> None:
    """Reset the peak resident set (VmHWM) to the current one (Linux clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class WorkerMemory:
    """Peak of this process's resident set plus its child processes' private pages.

    Our engine may fork a worker for pixel differences; the child shares the parent's pages
    (the images) copy-on-write, so only its private pages (``Private_Clean + Private_Dirty``
    of ``/proc/PID/smaps_rollup``) are memory the run adds.  A separate sampler process
    (``--sample-memory PID``; not a thread: with another thread running, the engine may not
    fork, the very worker to be measured) reads them every 100 ms while the run goes (short
    peaks between samples are missed: a lower bound, but one that sees a worker at all).
    Reading a process's ``smaps_rollup`` walks its page tables and slowed the worker by
    10-25%, so `timed_run` samples a second, untimed run of the engines that may fork (ours).
    The peers' engines run in this process (or, Montage, in library calls).
    """

    def __init__(self):
        self.peak_mb = 0.0

    def __enter__(self):
        self._sampler = subprocess.Popen(
            [sys.executable, __file__, "--sample-memory", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._sampler.stdout.readline()  # "ready": sampling before the run starts
        return self

    def __exit__(self, *exc):
        out, _ = self._sampler.communicate("")  # stdin closed: it prints its peak and ends
        self.peak_mb = float(out.strip() or 0.0)
        return False


def sample_memory(pid: int, interval: float = 0.1) -> int:
    """The sampler of `WorkerMemory`: until stdin closes, the peak of ``pid``'s resident set
    plus its children's private pages (this sampler excluded), in MB, when any child ran."""
    import selectors

    me, peak = str(os.getpid()), 0.0
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    while not selector.select(interval):
        children = 0.0
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                pids = task.read_text().split()
            except OSError:
                continue
            for child in pids:
                if child == me:
                    continue
                try:
                    with open(f"/proc/{child}/smaps_rollup") as f:
                        for line in f:
                            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                                children += float(line.split()[1])
                except OSError:  # the child ended meanwhile
                    pass
        if children:
            try:
                rss = _status_kb("VmRSS", pid)
            except OSError:
                break
            peak = max(peak, (rss + children) / 1024)
    print(peak, flush=True)
    return 0


def nan_list(values) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, float)]


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load averages: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_machine() -> None:
    import astropy
    import scipy

    versions = [f"python {platform.python_version()}", f"numpy {np.__version__}",
                f"scipy {scipy.__version__}", f"astropy {astropy.__version__}"]
    for module in ("skymatch_nb_ui", "stcal", "reproject", "MontagePy"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{module} ?")
    print(f"machine: {platform.machine()} {platform.system()}, nproc {os.cpu_count()}")
    print("versions: " + ", ".join(versions))


# -- command line ----------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mosaics", type=mosaic_list, default=[16, 64, 256],
                        help="mosaic sizes N among 16, 64, 256, 1024 (default 16, 64, 256)")
    parser.add_argument("--engines", type=choice_list(ENGINES), default=list(ENGINES))
    parser.add_argument("--stats", type=choice_list(STATS), default=list(STATS),
                        help="our statistics (default all)")
    parser.add_argument("--compare", type=choice_list(COMPARES), default=list(COMPARES),
                        help="our compare modes (default both; levels only without compare)")
    parser.add_argument("--ref-stats", type=choice_list(STATS), default=["mode"],
                        help="the reference's statistics (default its default, mode)")
    parser.add_argument("--scene", choices=SCENES, default="nebula",
                        help="nebula (default), gradient (a random sky plane per image on top) "
                             "or hdf (real pixels through ACS/WFC, a plane per exposure)")
    parser.add_argument("--skymodels", type=choice_list(SKYMODELS), default=list(SKYMODELS),
                        help="our sky models in the gradient scene (default both)")
    parser.add_argument("--montage-fits", type=choice_list(("levels", "planes")),
                        default=["levels", "planes"],
                        help="Montage's fits in the gradient scene (default both)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seed", type=seed_list, default=[0],
                        help="the scene's seed, or several (0,3,5 or 0-9): each a scene, then "
                             "a summary over them")
    parser.add_argument("--cache", help="keep the mosaics' FITS files in this directory")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def mosaic_list(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    unknown = [n for n in sizes if n not in MOSAICS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mosaic size(s) {unknown}; choose from "
                                         f"{sorted(MOSAICS)}")
    return sizes


def seed_list(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        seeds += list(range(int(first), int(last) + 1)) if last else [int(first)]
    return seeds


def choice_list(choices):
    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {choices}")
        return values

    return parse


sys.path.insert(0, str(HERE))  # bench/_gradients.py

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--sample-memory":  # `WorkerMemory`'s sampler
        raise SystemExit(sample_memory(int(sys.argv[2])))
    if "--worker" in sys.argv:
        options = parse_args(sys.argv[1:])
        raise SystemExit(worker_main(options.worker, Path(options.dir)))
    raise SystemExit(main())
