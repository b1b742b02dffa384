"""Benchmark: our engine against the reference (stcal.skymatch) on the same synthetic mosaics.

For each mosaic size N (a square-ish grid of 1024x1024 float32 images, 20% overlap, noise of
sigma 1, sources, a small rotation and jitter) and each sky method, prints:

- the reference's time and ours (medians), their ratio, and the largest |sky difference|
  between the two engines in units of the noise sigma;
- the time of our first run of each (N, method), separately: fresh large arrays are
  page-faulted on these VMs, so a first run can cost several times the median (it depends
  on the state of the process's memory allocator, e.g. on what ran before);
- the "floor": one plain numpy pass over every pixel (summing each image), and our time
  in units of it;
- the time of a re-solve in which only ``match_down`` changes (our stage cache);
- the load average (1 min) when the row was printed.

Our engine runs with each of ``--schedulers``, side by side: ``serial`` (one process),
``threads`` (2), ``processes`` (2 processes: for these arrays in memory, on Linux in a script,
one worker forked for the run shares them and this process works too), ``pool`` (2 worker
processes of a ``ProcessPoolExecutor`` started from a fork server, passed as the scheduler:
the arrays are pickled to them, what ``processes`` did before forked workers) and ``auto``
(the default: what the engine picks by itself, 2 workers).

The machines are shared and noisy: compare figures of one run, as ratios.

Usage::

    python bench/bench_vs_stcal.py                       # N = 4, 16, 64; match, global+match
    python bench/bench_vs_stcal.py --sizes 4,16 --repeat 5
    python bench/bench_vs_stcal.py --no-reference        # our engine only (quick)
    python bench/bench_vs_stcal.py --wcs gwcs --sizes 16  # NIRCam-like gwcs, distortion
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

import skymatch_nb_ui
from skymatch_nb_ui.testing import make_mosaic, reference_skymatch

METHODS = ("local", "global", "match", "global+match")
NOISE = 1.0
STATS = dict(skystat="mode", nclip=5)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print_machine(args.no_reference)
    warm_up(args.no_reference, args.schedulers, args.compare)
    print(
        f"images {args.shape}x{args.shape} float32, overlap 0.2, noise sigma {NOISE}, "
        f"{args.sources} sources/image, rotation {args.rotation} deg, jitter {args.jitter} px, "
        f"skystat={STATS['skystat']}, nclip={STATS['nclip']}, ours compare={args.compare}, "
        f"WCS {args.wcs}; medians of "
        f"{args.ref_repeat} (reference) and {args.repeat} (ours) runs\n"
    )
    columns = (
        f"{'N':>4} {'grid':>5} {'method':>13} {'scheduler':>10} {'ref s':>8} {'ours s':>8} "
        f"{'ours 1st':>9} "
        f"{'ref/ours':>9} "
        f"{'max|dsky|/sig':>14} {'floor s':>8} {'ours/floor':>11} {'re-solve ms':>12} {'load':>5}"
    )
    print(columns)
    print("-" * len(columns))
    for n in args.sizes:
        rows, cols = square_grid(n)
        mosaic = make_mosaic(
            (rows, cols), shape=(args.shape, args.shape), overlap=0.2,
            sky=100.0 + 20.0 * np.random.default_rng(args.seed).random(n), noise=NOISE,
            sources=args.sources, rotation=args.rotation, jitter=args.jitter,
            dtype=np.float32, seed=args.seed,
        )
        if args.wcs == "gwcs":
            mosaic = with_gwcs(mosaic, args.seed)
        floor = floor_time(mosaic.images, args.repeat)
        for method in args.methods:
            for scheduler, row in bench_one(mosaic, method, args):
                print(
                    f"{n:>4} {f'{rows}x{cols}':>5} {method:>13} {scheduler:>10} "
                    f"{fmt(row['ref'], '8.3f')} {row['ours']:>8.3f} {row['first']:>9.3f} "
                    f"{fmt(ratio(row['ref'], row['ours']), '9.1f')} "
                    f"{fmt(row['diff'], '14.1e')} {floor:>8.4f} "
                    f"{row['ours'] / floor:>11.1f} {row['resolve'] * 1e3:>12.2f} "
                    f"{os.getloadavg()[0]:>5.2f}",
                    flush=True,
                )
        del mosaic
        gc.collect()
    return 0


def with_gwcs(mosaic, seed: int):
    """The mosaic's pixels, each image with a NIRCam-like gwcs where its TAN WCS points.

    `nircam_like_gwcs`: a distortion polynomial (4 pixels at the corners), its fitted inverse,
    the telescope's frames and a roll of up to 3 degrees, the pixel scale of `make_mosaic`.
    The scene was drawn through the TAN WCS, so the sources do not fall where the distorted
    WCS says (by up to 4 pixels); the skies are constants, and both engines see the same
    pixels and WCSs.
    """
    from types import SimpleNamespace

    from skymatch_nb_ui.testing import nircam_like_gwcs

    rng = np.random.default_rng(seed)
    wcs = []
    for image, tan in zip(mosaic.images, mosaic.wcs):
        ny, nx = image.shape
        ra, dec = (float(v) for v in tan.pixel_to_world_values((nx - 1) / 2, (ny - 1) / 2))
        wcs.append(nircam_like_gwcs((ra, dec), roll=rng.uniform(-3.0, 3.0), shape=(ny, nx),
                                    pixel_scale=0.1))
    return SimpleNamespace(images=mosaic.images, wcs=wcs)


def floor_time(images, repeat: int) -> float:
    """The floor: one numpy pass over every pixel (median seconds)."""
    return median_time(lambda: [float(im.sum()) for im in images], repeat)


def bench_one(mosaic, method: str, args) -> list[tuple[str, dict]]:
    """Time both engines on one mosaic and one method (ours with each scheduler, side by
    side); compare their skies."""
    images, wcs = mosaic.images, mosaic.wcs
    rows = []
    for scheduler in args.schedulers:
        ours = None
        with scheduler_of(scheduler, args.compare) as where:

            def run_ours(where=where, workers=1 if scheduler == "serial" else 2):
                nonlocal ours
                ours = skymatch_nb_ui.skymatch(images, wcs, skymethod=method, scheduler=where,
                                               workers=workers, compare=args.compare, **STATS)

            times = run_times(run_ours, args.repeat)
        row = {"ours": statistics.median(times), "first": times[0], "ref": None, "diff": None}
        row["resolve"] = resolve_time(images, wcs, method, args.repeat, args.compare)
        rows.append((scheduler, row))
    row = rows[0][1]
    if not args.no_reference:
        ref_sky = None

        def run_reference():
            nonlocal ref_sky
            ref_sky, _ = reference_skymatch(images, wcs, skymethod=method, **STATS)

        row["ref"] = median_time(run_reference, args.ref_repeat)
        both = np.isfinite(ref_sky) & np.isfinite(ours.sky)
        if both.any():
            row["diff"] = float(np.max(np.abs(ours.sky[both] - ref_sky[both]))) / NOISE
        if not np.array_equal(np.isfinite(ref_sky), np.asarray(ours.valid, bool)):
            print(f"  note: validity differs for {method}: ours {ours.valid.tolist()}, "
                  f"reference {np.isfinite(ref_sky).tolist()}")
        for _, other in rows[1:]:
            other["ref"], other["diff"] = row["ref"], row["diff"]
    return rows


def resolve_time(images, wcs, method: str, repeat: int, compare: str) -> float:
    """Median time of a run that differs from the previous one in ``match_down`` only."""
    matcher = skymatch_nb_ui.SkyMatcher(images, wcs)
    options = dict(STATS, compare=compare)
    matcher.run(skymethod=method, match_down=True, **options)  # fills the stage cache
    flips = iter([False, True] * repeat)
    return median_time(
        lambda: matcher.run(skymethod=method, match_down=next(flips), **options), repeat
    )


@contextmanager
def scheduler_of(name: str, compare: str = "levels"):
    """What to pass as ``scheduler`` for ``name``: the name, or for "pool" a started
    ``ProcessPoolExecutor`` of 2 workers (from a fork server), shut down afterwards (its
    manager thread would keep the engine from forking workers for the other schedulers)."""
    if name != "pool":
        yield name
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    try:
        tiny = make_mosaic((1, 2), shape=(64, 64), noise=NOISE, seed=0)
        skymatch_nb_ui.skymatch(tiny.images, tiny.wcs, scheduler=pool, workers=2,
                                compare=compare, **STATS)  # its workers started and warm
        yield pool
    finally:
        pool.shutdown()


def warm_up(no_reference: bool, schedulers=("serial",), compare: str = "levels") -> None:
    """Run both engines once on a tiny mosaic, so that no timing includes lazy imports (nor
    the start of a pool of worker processes)."""
    tiny = make_mosaic((1, 2), shape=(64, 64), noise=NOISE, seed=0)
    for scheduler in schedulers:
        if scheduler == "pool":
            continue  # started and warmed for each of its rows (`scheduler_of`)
        skymatch_nb_ui.skymatch(tiny.images, tiny.wcs, scheduler=scheduler,
                                workers=1 if scheduler == "serial" else 2, compare=compare,
                                **STATS)
    if not no_reference:
        reference_skymatch(tiny.images, tiny.wcs, **STATS)


def median_time(function, repeat: int) -> float:
    return statistics.median(run_times(function, repeat))


def run_times(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def square_grid(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n and rows the largest divisor <= sqrt(n)."""
    rows = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    return rows, n // rows


def ratio(a, b):
    return None if a is None else a / b


def fmt(value, spec: str) -> str:
    """``value`` formatted with ``spec`` (e.g. "8.3f"), or a right-aligned dash for None."""
    if value is None:
        return f"{'-':>{spec.split('.')[0]}}"
    return f"{value:>{spec}}"


def print_machine(no_reference: bool) -> None:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    print(f"machine: {platform.machine()} {platform.system()}, nproc {usable} "
          f"(cpu_count {os.cpu_count()}), python {platform.python_version()}")
    versions = [f"numpy {np.__version__}", f"skymatch_nb_ui {skymatch_nb_ui.__version__}"]
    if not no_reference:
        import stcal

        versions.append(f"stcal {stcal.__version__}")
    print("versions: " + ", ".join(versions))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list, default=[4, 16, 64],
                        help="numbers of images, comma-separated (default 4,16,64)")
    parser.add_argument("--methods", type=method_list, default=["match", "global+match"],
                        help="sky methods, comma-separated (default match,global+match)")
    parser.add_argument("--repeat", type=positive_int, default=3,
                        help="runs of our engine per figure (median; default 3)")
    parser.add_argument("--ref-repeat", type=positive_int, default=1,
                        help="runs of the reference per figure (median; default 1)")
    parser.add_argument("--no-reference", action="store_true", help="skip stcal")
    parser.add_argument("--schedulers", type=lambda t: t.split(","),
                        default=["serial", "threads", "processes", "pool", "auto"],
                        help="where our statistics run, side by side: serial (one process), "
                        "threads, processes, pool or auto (2 workers; see the top of this "
                        "file); default serial,threads,processes,pool,auto")
    parser.add_argument("--shape", type=positive_int, default=1024,
                        help="image size in pixels (default 1024)")
    parser.add_argument("--sources", type=int, default=50, help="sources per image (50)")
    parser.add_argument("--rotation", type=float, default=3.0, help="degrees (default 3)")
    parser.add_argument("--jitter", type=float, default=5.0, help="pixels (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wcs", choices=("tan", "gwcs"), default="tan",
                        help="each image's WCS: the mosaic's TAN (default) or a NIRCam-like "
                        "gwcs with distortion, as JWST and Roman files bring (`with_gwcs`)")
    parser.add_argument("--compare", choices=("levels", "differences"), default="levels",
                        help="how our engine compares a pair: 'levels' (default) is the "
                        "reference's own computation, like for like; 'differences' is our "
                        "default, more accurate and slower (bench_vs_peers.py)")
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def int_list(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",") if part.strip()]


def method_list(text: str) -> list[str]:
    methods = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {METHODS}")
    return methods


if __name__ == "__main__":
    raise SystemExit(main())
