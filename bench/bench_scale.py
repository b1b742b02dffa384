"""Benchmark: the engine at scale, N = 100, 1,000, 10,000 images of 256x256 in FITS files.

For each N a mosaic is written to a temporary directory (removed when the script ends,
also on Ctrl-C or SIGTERM): a rows x cols tiling with 20% overlaps, a small rotation and
jitter, so that each image has 4 (corners) to 8 neighbours; sky level, noise and a few stars.

Each configuration runs in a child process, the whole chain as ``skymatch-nb FILES --table
T.ecsv --subtract --output-dir OUT`` does it: read the headers (``read``), ``geometry``,
``statistics``, ``solve``, the table (``table``), the sky-subtracted copies (``copies``), and
then a solve-only change (``resolve``: ``match_down`` flipped) and a change of statistic
(``restat``: all statistics again, with the workers already running).  Per stage it reports the
time and the peak memory: the PSS (proportional set size: shared pages counted once) of the
child and all its worker processes, sampled every 50 ms with psutil, and the child's own peak
RSS (``getrusage``); the total and the peak of a row are the chain's, from ``read`` to
``copies`` (the two re-runs after it have their own columns).  Configurations: ``serial``
(one worker), ``threads`` and ``processes`` (2 workers), ``auto`` (the command's default:
the engine chooses, 2 workers at most), ``cluster`` (a ``distributed.LocalCluster`` of 2
worker processes, one thread each; its start-up is reported apart).  The skies of all
configurations are compared bit for bit.

``--kind jwst`` writes JWST level-2 files instead (``*_cal.fits`` through ``stdatamodels``, each
with a NIRCam-like gwcs of its own in the ASDF extension, one exposure each), what a JWST
survey mosaic brings: the gwcs is read from each file, and every WCS call goes through it.

``--kind roman`` writes what one Roman WFI field brings: full detectors (4088x4088 float32, the
size romancal writes) as level-2 ASDF files through ``roman_datamodels``, 18 per exposure in
the WFI's 6 x 3 layout (each exposure's detectors share one pointing of a distorted gwcs),
exposures dithered by a fraction of a detector so that each detector overlaps detectors of
the other exposures (36 files: 53 pairs); N is the number of files (18 per exposure, the last exposure cut
short).  Each detector has a sky of its own (known: the skies are also compared with the
truth, the common offset removed, in units of the noise), stars at fixed sky positions and
DQ flags (``DO_NOT_USE`` on ~0.1% of pixels, which hold garbage).

Also: the reference (``stcal.skymatch``, pixels already in memory) at the sizes of
``--reference-sizes`` with a time limit (default 10 minutes), and the least-squares solve
alone on mosaic-like graphs of 1,000 to 10,000 inputs, with the dense solve it replaced at
the small end.

The machine is shared and noisy: compare figures of one run; the load is printed.

Usage::

    python bench/bench_scale.py                         # N = 100, 1000, 10000 (~40 min)
    python bench/bench_scale.py --sizes 100,1000 --configs threads,processes
    python bench/bench_scale.py --kind jwst --sizes 1000 --configs auto
    python bench/bench_scale.py --kind roman --sizes 36,72 --configs serial,auto
    python bench/bench_scale.py --solve-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout

STAGES = ("read", "geometry", "statistics", "solve", "table", "copies", "resolve", "restat")
AFTER = ("resolve", "restat")  # re-runs after the chain, not part of its total
CONFIGS = ("serial", "threads", "processes", "auto", "cluster")
SHAPE = (256, 256)
METHOD = "match"  # the command's default
#: ``--kind roman``: a WFI detector's science array, its scale (arcsec), the sky and noise
#: (MJy/sr, a zodiacal level), the exposures' dither steps (arcsec on the sky)
ROMAN_SHAPE, ROMAN_SCALE = (4088, 4088), 0.11
ROMAN_SKY, ROMAN_SKY_SPREAD, ROMAN_NOISE = 0.30, 0.02, 0.01
ROMAN_DITHERS = ((0.0, 0.0), (233.0, 131.0), (-161.0, 247.0), (71.0, -209.0))


def shape_of(kind: str) -> tuple[int, int]:
    return ROMAN_SHAPE if kind == "roman" else SHAPE


# -- the mosaic on disk ---------------------------------------------------------------------------
def layout(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n, as square as possible."""
    rows = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    return rows, n // rows


def write_mosaic(n: int, folder: Path, seed: int = 0, kind: str = "fits") -> list[Path]:
    """N files of one 256x256 float32 image each, written one by one.

    ``kind="fits"``: a plain FITS file with its TAN WCS in the header; ``"jwst"``: a JWST
    ``_cal.fits`` written by ``stdatamodels`` with a NIRCam-like gwcs (a distortion polynomial
    and its fitted inverse, as `nircam_like_gwcs` builds them) centred where the TAN image is.
    """
    from astropy.io import fits

    from skymatch_nb_ui.testing import nircam_like_gwcs, write_jwst_cal
    from skymatch_nb_ui.testing.mosaics import _cd_matrix, _grid_centres, _image_wcs, _tan_wcs

    if kind == "roman":
        return write_roman_field(n, folder, seed)
    rows, cols = layout(n)
    rng = np.random.default_rng(seed)
    centres = _grid_centres(rows, cols, SHAPE, 0.2) + rng.uniform(-3, 3, size=(n, 2))
    frame = _tan_wcs((150.0, 2.0), (1.0, 1.0), _cd_matrix(0.1 / 3600, 2.0))
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    paths = []
    for k, centre in enumerate(centres):
        image = rng.normal(100.0 + 10.0 * rng.random(), 1.0, SHAPE).astype(np.float32)
        for x, y, peak in zip(*rng.uniform((0, 0, 5), (SHAPE[1], SHAPE[0], 200), (5, 3)).T):
            image += (peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)).astype(np.float32)
        wcs = _image_wcs(frame, centre, SHAPE, "own")
        if kind == "jwst":
            ra, dec = (float(v) for v in wcs.pixel_to_world_values((SHAPE[1] - 1) / 2, (SHAPE[0] - 1) / 2))
            gwcs = nircam_like_gwcs((ra, dec), roll=rng.uniform(-1.0, 1.0), shape=SHAPE,
                                    pixel_scale=0.1, distortion=1.0)
            path = folder / f"img{k:05d}_cal.fits"
            write_jwst_cal(path, image, gwcs,
                           observation=("01234", "001", "001", "02", "1", "01", f"{k + 1:05d}"))
        else:
            path = folder / f"img{k:05d}.fits"
            fits.PrimaryHDU(image, header=wcs.to_header()).writeto(path)
        paths.append(path)
    return paths


def wfi_detectors() -> np.ndarray:
    """(v2, v3) in arcsec of the 18 WFI detectors' centres: 6 columns of 3, the outer ones
    higher (the focal plane's arc), ~30" and ~60" gaps; close to the real layout, not it."""
    side = ROMAN_SHAPE[0] * ROMAN_SCALE
    columns = (np.arange(6) - 2.5) * (side + 30.0)
    lift = np.array([150.0, 60.0, 0.0, 0.0, 60.0, 150.0])
    rows = (np.arange(3) - 1.0) * (side + 60.0)
    return np.array([(c, r + h) for c, h in zip(columns, lift) for r in rows])


def write_roman_field(n: int, folder: Path, seed: int = 0) -> list[Path]:
    """N Roman WFI level-2 files (see ``--kind roman``): 18 detectors per exposure."""
    from skymatch_nb_ui.testing import nircam_like_gwcs, write_roman_cal

    rng = np.random.default_rng(seed)
    centre = np.array([150.0, 2.0])
    detectors = wfi_detectors()
    pointing = (0.0, 0.0)
    # arcsec: the field, dithers included; ~200 stars a detector
    extent = np.abs(detectors).max(axis=0) + ROMAN_SHAPE[0] * ROMAN_SCALE + 300.0
    stars = rng.uniform(-1, 1, (int(1e-3 * np.prod(2 * extent)), 2)) * extent / 3600.0
    star_ra = centre[0] + stars[:, 0] / np.cos(np.radians(centre[1]))
    star_dec = centre[1] + stars[:, 1]
    peaks = ROMAN_NOISE * np.exp(rng.uniform(np.log(3.0), np.log(3000.0), len(stars)))
    skies, paths = [], []
    for k in range(n):
        exposure, detector = divmod(k, len(detectors))
        dx, dy = ROMAN_DITHERS[exposure % len(ROMAN_DITHERS)]
        dx += 23.0 * (exposure // len(ROMAN_DITHERS))  # past 4 exposures: the pattern again, moved
        here = (centre[0] + dx / 3600.0 / np.cos(np.radians(centre[1])), centre[1] + dy / 3600.0)
        with warnings.catch_warnings():  # the inverse's fit "may be poorly conditioned":
            warnings.simplefilter("ignore")  # it round-trips to < 0.01 pixel here
            gwcs = nircam_like_gwcs(here, shape=ROMAN_SHAPE, pixel_scale=ROMAN_SCALE,
                                    distortion=8.0, v2v3_ref=tuple(detectors[detector]),
                                    pointing_v2v3=pointing)
        sky = ROMAN_SKY + ROMAN_SKY_SPREAD * rng.standard_normal()
        image = rng.standard_normal(ROMAN_SHAPE, dtype=np.float32)
        image *= ROMAN_NOISE
        image += sky
        x, y = gwcs.invert(star_ra, star_dec, with_bounding_box=False)
        inside = (x > -20) & (x < ROMAN_SHAPE[1] + 20) & (y > -20) & (y < ROMAN_SHAPE[0] + 20)
        _add_stars(image, x[inside], y[inside], peaks[inside])
        dq = np.zeros(ROMAN_SHAPE, np.uint32)
        bad = rng.integers(0, image.size, image.size // 1000)
        dq.flat[bad] = 1  # DO_NOT_USE
        image.flat[bad] = rng.choice(np.array([0.0, 1e4, -50.0], np.float32), len(bad))
        path = folder / f"img{k:05d}_wfi{detector + 1:02d}_cal.asdf"
        write_roman_cal(path, image, gwcs, dq=dq, detector=f"WFI{detector + 1:02d}",
                        observation_id=f"r0000101001001001{exposure + 1:03d}_0001")
        skies.append(sky)
        paths.append(path)
    np.save(folder / "sky_true.npy", np.array(skies))
    return paths


def _add_stars(image: np.ndarray, x, y, peaks, sigma: float = 1.2) -> None:
    """Gaussian stars (sigma in pixels) on stamps of +-6 sigma."""
    ny, nx = image.shape
    r = 6 * sigma
    for x0, y0, peak in zip(x, y, peaks):
        x1, x2 = max(int(x0 - r), 0), min(int(x0 + r) + 2, nx)
        y1, y2 = max(int(y0 - r), 0), min(int(y0 + r) + 2, ny)
        if x1 < x2 and y1 < y2:
            gx = np.exp(-0.5 * ((np.arange(x1, x2) - x0) / sigma) ** 2)
            gy = np.exp(-0.5 * ((np.arange(y1, y2) - y0) / sigma) ** 2)
            image[y1:y2, x1:x2] += (peak * np.outer(gy, gx)).astype(np.float32)


def input_paths(folder) -> list[Path]:
    """The mosaic's input files in ``folder`` (FITS, or Roman's ASDF)."""
    return sorted(p for p in Path(folder).glob("img*") if p.suffix in (".fits", ".asdf"))


# -- one configuration, in a child process --------------------------------------------------------
#: The stages a `Sampler` records, in the order they may come.
SAMPLED = ("start", *STAGES, "subtract", "done", "end")


class Sampler:
    """Peak memory per stage: PSS of this process and its descendants, sampled by a process.

    Not by a thread: while another thread runs, the engine does not fork workers
    (`skymatch_nb_ui.engine._fork.fork_safe`), and the runs measured would not be the
    command's.  The sampling process is started fresh (spawn), shares the current stage and
    the peaks with this one, and leaves itself out of the tree it measures; the end of each
    stage is sampled here, when the next one begins.  A sample reads the kernel's page
    counts of every process (5-20 ms for a process of ~1 GB): every 0.1 s, so that "auto",
    which forks only while fewer than ~1.5 tasks run (`engine._execute._idle_core`), sees
    it running as rarely as it can.
    """

    def __init__(self, interval: float = 0.1):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._stage = context.Value("i", 0, lock=False)
        self._peaks = context.Array("d", len(SAMPLED), lock=False)
        self._stop = context.Event()
        ready = context.Event()
        self._process = context.Process(
            target=_sample, args=(os.getpid(), self._stage, self._peaks, self._stop, interval, ready),
            daemon=True)
        self._process.start()
        # its start-up (a new interpreter) is over before the run begins: "auto" would see
        # two tasks running and not fork the reading
        ready.wait(60)

    @property
    def peak(self) -> dict[str, float]:
        return {name: self._peaks[k] for k, name in enumerate(SAMPLED) if self._peaks[k]}

    def enter(self, stage: str) -> None:
        k = self._stage.value  # the end of the previous stage
        self._peaks[k] = max(self._peaks[k], _tree_pss(os.getpid(), self._process.pid))
        self._stage.value = SAMPLED.index(stage)

    def stop(self) -> None:
        self.enter("end")
        self._stop.set()
        self._process.join()


def _tree_pss(pid: int, leave_out: int | None) -> float | None:
    """PSS (else RSS) of process ``pid`` and its descendants but ``leave_out``; None if gone."""
    import psutil

    try:
        target = psutil.Process(pid)
        tree = [target, *target.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for proc in tree:
        if proc.pid == leave_out:
            continue
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _sample(pid: int, stage, peaks, stop, interval: float, ready) -> None:
    """The sampling process's loop (`Sampler`); ``ready`` is set after its first sample."""
    while not stop.is_set():
        total = _tree_pss(pid, os.getpid())
        if total is None:
            return
        k = stage.value
        peaks[k] = max(peaks[k], total)
        ready.set()
        stop.wait(interval)


def child(config: str, folder: str, out: str) -> None:
    """Run one configuration on the files of ``folder``; print one JSON line of figures."""
    import warnings

    from skymatch_nb_ui import ImageCollection
    from skymatch_nb_ui.cli import _write_table
    from skymatch_nb_ui.engine._execute import release_process_pools

    warnings.simplefilter("ignore")
    paths = input_paths(folder)
    sampler = Sampler()
    times: dict[str, float] = {}
    extra: dict[str, float] = {}
    clock = {"stage": None, "start": 0.0}

    def enter(stage: str) -> None:
        now = time.perf_counter()
        if clock["stage"] is not None:
            times[clock["stage"]] = times.get(clock["stage"], 0.0) + now - clock["start"]
        clock["stage"], clock["start"] = stage, now
        sampler.enter(stage)

    def progress(p) -> None:
        if p.stage != clock["stage"]:
            enter(p.stage)

    cluster = client = None
    if config == "cluster":
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        extra["cluster_start"] = time.perf_counter() - start
    try:
        enter("read")
        scheduler = {"serial": "serial", "threads": "threads", "processes": "processes",
                     "auto": "auto", "cluster": client}[config]
        # as the command reads them: forked workers for "auto" and "processes" (when safe)
        coll = ImageCollection.from_files(paths, scheduler=scheduler,
                                          workers=1 if config == "serial" else 2)
        result = coll.skymatch(skymethod=METHOD, progress=progress)
        enter("table")
        table = coll.to_table(result)
        _write_table(table, Path(out) / "skies.ecsv", "ascii.ecsv", overwrite=True)
        enter("copies")
        release_process_pools()  # as the command does before its copies
        copies = Path(out) / "copies"
        copies.mkdir()
        coll.write_copies(copies, result, subtract=True)
        enter("resolve")
        coll.skymatch(skymethod=METHOD, match_down=False)
        enter("restat")
        coll.skymatch(skymethod=METHOD, skystat="median")
        enter("done")
    finally:
        if client is not None:
            client.close()
            cluster.close()
    sampler.stop()
    np.save(Path(out) / "sky.npy", result.sky.values)
    print(json.dumps({
        "config": config, "n": len(paths), "pairs": len(coll.last_result.pair),
        "times": times, "peak_pss": {s: sampler.peak.get(s, 0.0) for s in STAGES},
        "max_pss": max(sampler.peak.values()),
        "chain_pss": max(sampler.peak.get(s, 0.0) for s in STAGES if s not in AFTER),
        "rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0,
        "valid": int(result.valid.values.sum()), **extra,
    }))


def reference_child(folder: str, out: str) -> None:
    """The reference on the same images (read into memory first; the read is not timed)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS

    from skymatch_nb_ui.testing import reference_skymatch

    warnings.simplefilter("ignore")
    images, wcs = [], []
    for path in input_paths(folder):
        if path.suffix == ".asdf":  # as romancal reads them: the model's gwcs
            import roman_datamodels.datamodels as rdm

            with rdm.open(path) as model:
                images.append(np.array(model.data))
                wcs.append(model.meta.wcs)
            continue
        if path.name.endswith("_cal.fits"):  # as the JWST step reads them: the model's gwcs
            from stdatamodels.jwst.datamodels import ImageModel

            with ImageModel(path) as model:
                images.append(np.array(model.data))
                wcs.append(model.meta.wcs)
            continue
        with fits.open(path) as hdul:
            images.append(np.array(hdul[0].data))
            wcs.append(WCS(hdul[0].header))
    start = time.perf_counter()
    sky, _ = reference_skymatch(images, wcs, skymethod=METHOD)
    elapsed = time.perf_counter() - start
    np.save(Path(out) / "sky_ref.npy", sky)
    print(json.dumps({"config": "reference", "time": elapsed,
                      "rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0}))


def run_child(args: list[str], timeout: float) -> dict | None:
    """Run this script as a child with ``args``; its last JSON line, or None on timeout/error."""
    command = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    except subprocess.TimeoutExpired:
        return None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        print(f"  child {args[:2]} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(lines[-1])


# -- the solve alone ---------------------------------------------------------------------------------
def dense_offsets(n, i, j, diff, weight, var):
    """The dense solve the sparse one replaced (normal equations plus 11^T/m, one component)."""
    w2 = weight**2 / (weight**2).max()
    incidence = np.zeros((len(i), n))
    incidence[np.arange(len(i)), i], incidence[np.arange(len(i)), j] = 1.0, -1.0
    weighted = incidence.T * w2
    gain = np.linalg.solve(weighted @ incidence + 1.0 / n, weighted)
    return gain @ diff, np.sqrt(np.diag((gain * var) @ gain.T))


def bench_solve(sizes: list[int], dense_up_to: int) -> None:
    from threadpoolctl import threadpool_limits

    from skymatch_nb_ui.engine.lstsq import solve_offsets
    from skymatch_nb_ui.testing import tiling_pairs

    print("\nthe least-squares solve alone (8-neighbour tilings; medians of 3)")
    print(f"{'inputs':>7} {'pairs':>7} {'sparse s':>9} {'dense s':>9} {'max |diff|':>11}")
    for n in sizes:
        rng = np.random.default_rng(n)
        pairs = tiling_pairs(*layout(n), rng)
        i, j = pairs[:, 0], pairs[:, 1]
        npix = rng.uniform(2e3, 2e4, len(i))
        diff, var = rng.normal(0, 1, len(i)), 1.0 / npix
        times = []
        for _ in range(3):
            start = time.perf_counter()
            sol = solve_offsets(n, i, j, diff, npix, var)
            times.append(time.perf_counter() - start)
        dense = agree = "-"
        if n <= dense_up_to:
            start = time.perf_counter()
            with threadpool_limits(1):
                delta, _ = dense_offsets(n, i, j, diff, npix, var)
            dense = f"{time.perf_counter() - start:9.2f}"
            agree = f"{np.abs(delta - sol.delta).max():11.1e}"
        print(f"{n:>7} {len(i):>7} {np.median(times):>9.3f} {dense:>9} {agree:>11}", flush=True)


# -- the report ----------------------------------------------------------------------------------------
def mb(value: float) -> str:
    return f"{value / 2**20:.0f}"


def report(n: int, pairs: int, rows: list[dict], ref: dict | None, ref_note: str,
           kind: str = "fits") -> None:
    shape = shape_of(kind)
    print(f"\nN = {n} {kind} images of {shape[1]}x{shape[0]} ({pairs} pairs), method {METHOD}")
    header = (f"{'config':>10} " + " ".join(f"{s:>10}" for s in STAGES)
              + f" {'total':>8} {'peak MB':>8} {'rss MB':>7}")
    print("(total and peak MB: the chain, from read to copies; rss MB: the child's own peak RSS,"
          " the re-runs after the chain included)")
    print(header + "\n" + "-" * len(header))
    for row in rows:
        t = row["times"]
        total = sum(t.get(s, 0.0) for s in STAGES if s not in AFTER)
        print(f"{row['config']:>10} " + " ".join(f"{t.get(s, 0.0):>10.3f}" for s in STAGES)
              + f" {total:>8.1f} {mb(row.get('chain_pss', row['max_pss'])):>8} "
              f"{mb(row['rss_self']):>7}")
        print(f"{'  peak MB':>10} " + " ".join(f"{mb(row['peak_pss'][s]):>10}" for s in STAGES))
        if "cluster_start" in row:
            print(f"{'':>10} (cluster start-up {row['cluster_start']:.1f} s, not counted)")
    if ref is not None:
        ours = next((r for r in rows if r["config"] == "serial"), rows[0])
        engine = sum(ours["times"].get(s, 0.0) for s in ("geometry", "statistics", "solve"))
        print(f"{'reference':>10} {ref['time']:.1f} s (pixels in memory), peak RSS "
              f"{mb(ref['rss_self'])} MB; {ours['config']} geometry+statistics+solve "
              f"{engine:.2f} s: {ref['time'] / engine:.0f}x {ref_note}")
    elif ref_note:
        print(f"{'reference':>10} {ref_note}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        if args.child == "reference":
            reference_child(args.folder, args.out)
        else:
            child(args.child, args.folder, args.out)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    print(f"machine: {platform.machine()}, nproc {len(os.sched_getaffinity(0))}, python "
          f"{platform.python_version()}, numpy {np.__version__}; load {os.getloadavg()}")
    if not args.solve_only:
        for n in args.sizes:
            with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp:
                folder = Path(tmp) / "in"
                folder.mkdir()
                start = time.perf_counter()
                write_mosaic(n, folder, kind=args.kind)
                print(f"\n(wrote {n} {args.kind} files in {time.perf_counter() - start:.0f} s; load "
                      f"{os.getloadavg()[0]:.2f})", flush=True)
                rows, skies = [], {}
                for config in args.configs:
                    out = Path(tmp) / config
                    out.mkdir()
                    row = run_child(["--child", config, "--folder", str(folder), "--out", str(out)],
                                    timeout=args.timeout)
                    if row is not None:
                        rows.append(row)
                        skies[config] = np.load(out / "sky.npy")
                ref, note = None, ""
                if n in args.reference_sizes:
                    out = Path(tmp) / "reference"
                    out.mkdir()
                    ref = run_child(["--child", "reference", "--folder", str(folder), "--out",
                                     str(out)], timeout=args.reference_timeout)
                    if ref is None:
                        note = f"did not finish within {args.reference_timeout / 60:.0f} minutes"
                    else:
                        theirs = np.load(out / "sky_ref.npy")
                        ours = next(iter(skies.values()))
                        both = np.isfinite(theirs) & np.isfinite(ours)
                        noise = ROMAN_NOISE if args.kind == "roman" else 1.0
                        note = (f"(max |sky difference| "
                                f"{np.abs(theirs - ours)[both].max() / noise:.3f} sigma)")
                if rows:
                    report(n, rows[0]["pairs"], rows, ref, note, args.kind)
                    first = next(iter(skies))
                    same = [c for c in skies if np.array_equal(skies[c], skies[first], equal_nan=True)]
                    print(f"  skies identical to the last bit: {', '.join(same)}"
                          + ("" if len(same) == len(skies) else
                             f"; DIFFERENT: {', '.join(c for c in skies if c not in same)}"))
                    truth = folder / "sky_true.npy"
                    if truth.exists():  # --kind roman: the skies against the truth
                        true = np.load(truth)
                        found = {"ours": skies[first]}
                        if ref is not None:
                            found["reference"] = np.load(Path(tmp) / "reference" / "sky_ref.npy")
                        for name, sky in found.items():
                            off = sky - true
                            off = off[np.isfinite(off)]
                            off -= off.mean()
                            print(f"  {name}: sky - truth, common offset removed: rms "
                                  f"{np.sqrt(np.mean(off**2)) / ROMAN_NOISE:.4f}, max "
                                  f"{np.abs(off).max() / ROMAN_NOISE:.4f} noise sigma "
                                  f"({off.size} skies)")
                print(f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    bench_solve(args.solve_sizes, args.dense_up_to)
    print(f"\nload at the end {os.getloadavg()}")
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list, default=[100, 1000, 10000])
    parser.add_argument("--configs", type=lambda t: t.split(","), default=list(CONFIGS))
    parser.add_argument("--reference-sizes", type=int_list, default=[100, 1000])
    parser.add_argument("--reference-timeout", type=float, default=600.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per configuration (s)")
    parser.add_argument("--solve-sizes", type=int_list, default=[1000, 2000, 5000, 10000])
    parser.add_argument("--dense-up-to", type=int, default=2000)
    parser.add_argument("--solve-only", action="store_true")
    parser.add_argument("--kind", choices=("fits", "jwst", "roman"), default="fits",
                        help="the files: FITS with a TAN header, JWST _cal.fits with a gwcs, or "
                             "Roman WFI detectors (4088x4088 ASDF, 18 per exposure)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    raise SystemExit(main())
