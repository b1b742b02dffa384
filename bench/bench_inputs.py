"""Benchmark: the same mosaic as plain, gzip-compressed and tile-compressed FITS files.

One mosaic (a square grid of N images, 1024x1024 float32 by default, 20% overlap, noise of
sigma 1, sources), written as plain FITS (``.fits``), gzip-compressed (``.fits.gz``, as
``gzip`` at level 6 writes it) and tile-compressed (``.fits.fz``: RICE with fpack's
quantization level 4).  For each, in a fresh process per run: reading the files
(`ImageCollection.from_files`), the solve (``match``, ``skystat="mode"``, with each
``compare``), the sky-subtracted copies (`write_copies`), the peak resident memory, and the
skies' largest difference from the plain files' in sigma (the tile-compressed pixels are
quantized: not the same pixels).

Usage::

    python bench/bench_inputs.py                  # N = 16, 2 rounds
    python bench/bench_inputs.py --size 64 --rounds 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
KINDS = {"plain": "*.fits", "gzip": "*.fits.gz", "tiles": "*.fits.fz"}


def write_inputs(folder: Path, n: int, shape: int) -> None:
    """The mosaic as ``plain/``, ``gzip/`` and ``tiles/`` files."""
    sys.path.insert(0, str(HERE))
    import numpy as np
    from astropy.io import fits

    from skymatch_nb_ui.testing import make_mosaic

    side = round(n ** 0.5)
    m = make_mosaic((side, side), shape=(shape, shape), overlap=0.2, noise=1.0, sources=50,
                    sky=100 + 20 * np.random.default_rng(0).random(side * side), seed=0,
                    dtype=np.float32)
    for kind in KINDS:
        (folder / kind).mkdir()
    for name, image, wcs in zip(m.names, m.images, m.wcs):
        header = wcs.to_header()
        plain = folder / "plain" / f"{name}.fits"
        fits.PrimaryHDU(image, header).writeto(plain)
        (folder / "gzip" / f"{name}.fits.gz").write_bytes(gzip.compress(plain.read_bytes(), 6))
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image, header, name="SCI",
                                                           quantize_level=4.0)]).writeto(
            folder / "tiles" / f"{name}.fits.fz")


def run(folder: str, kind: str, compare: str) -> dict:
    """One run in this process: its stages' times, its peak memory, its skies."""
    sys.path.insert(0, str(HERE))
    import resource

    from skymatch_nb_ui import ImageCollection

    start = time.perf_counter()
    coll = ImageCollection.from_files(str(Path(folder) / kind / KINDS[kind]))
    read = time.perf_counter()
    result = coll.skymatch(skymethod="match", skystat="mode", compare=compare)
    solved = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        coll.write_copies(out, result)
        copied = time.perf_counter()
    return {"read": read - start, "solve": solved - read, "copies": copied - solved,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "sky": [float(v) for v in result.sky.values]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16, help="images (a square number; 16)")
    parser.add_argument("--shape", type=int, default=1024, help="pixels on a side (1024)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per case (2)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run(*args.child)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        write_inputs(Path(folder), args.size, args.shape)
        sizes = {kind: sum(p.stat().st_size for p in (Path(folder) / kind).iterdir()) / 2**20
                 for kind in KINDS}
        print(f"N={args.size} images of {args.shape}^2 float32; load {os.getloadavg()[0]:.2f}; "
              f"min (median) of {args.rounds} fresh processes each")
        print(f"{'files':<7} {'MB':>6} {'compare':<12} {'read s':>13} {'solve s':>13} "
              f"{'copies s':>13} {'peak MB':>8} {'max|dsky|':>10}")
        plain_skies = {}
        for compare in ("levels", "differences"):
            for kind in KINDS:
                runs = []
                for _ in range(args.rounds):
                    out = subprocess.run([sys.executable, __file__, "--child", folder, kind, compare],
                                         capture_output=True, text=True, check=True)
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                if kind == "plain":
                    plain_skies[compare] = runs[0]["sky"]
                diff = max(abs(a - b) for a, b in zip(runs[0]["sky"], plain_skies[compare]))

                def cell(key, runs=runs):
                    values = sorted(r[key] for r in runs)
                    return f"{values[0]:.2f} ({values[len(values) // 2]:.2f})"

                print(f"{kind:<7} {sizes[kind]:>6.0f} {compare:<12} {cell('read'):>13} "
                      f"{cell('solve'):>13} {cell('copies'):>13} "
                      f"{max(r['peak_mb'] for r in runs):>8.0f} {diff:>10.4f}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
