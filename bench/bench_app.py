"""Benchmark: from a parameter change that needs only a new solve to updated views (the app).

Builds a SkyMatchApp on a synthetic mosaic of N images (default 100 and 500; 100x100 pixels:
the pixels do not matter for a solve-only change, the number of images and pairs does), then
times assignments to ``app.params`` that need only the solve (``match_down``, ``skymethod``
between match and global+match after both were computed once, ``anchor``): the engine's
re-solve, the result Datasets, and the traitlet updates of the map, the table and the plots
(what a kernel sends to the browser).  Target (issue 3/4): under 100 ms for 100 images.

Usage::

    python bench/bench_app.py
    python bench/bench_app.py --sizes 100,500 --repeat 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout

from skymatch_nb_ui import ImageCollection  # noqa: E402
from skymatch_nb_ui.testing import make_mosaic  # noqa: E402
from skymatch_nb_ui.widgets import SkyMatchApp  # noqa: E402


def grid(n: int) -> tuple[int, int]:
    rows = int(np.floor(np.sqrt(n)))
    while n % rows:
        rows -= 1
    return rows, n // rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500")
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args(argv)
    print(f"{'N':>5} {'pairs':>6} {'change':>24} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for n in (int(s) for s in args.sizes.split(",")):
        mosaic = make_mosaic(grid(n), shape=(100, 100), noise=1.0, seed=1)
        coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
        app = SkyMatchApp(coll, debounce=0, skymethod="match", skystat="median")
        app.params = {"skymethod": "global+match"}  # compute the local statistics once
        changes = {
            "match_down": [{"match_down": False}, {"match_down": True}],
            "skymethod": [{"skymethod": "match"}, {"skymethod": "global+match"}],
            "anchor": [{"anchor": "component"}, {"anchor": "global"}],
        }
        for label, values in changes.items():
            times = []
            for k in range(args.repeat):
                start = time.perf_counter()
                app.params = values[k % 2]
                times.append((time.perf_counter() - start) * 1e3)
            print(f"{n:>5} {len(coll.last_pairs.pair):>6} {label:>24} {statistics.median(times):>10.1f} "
                  f"{min(times):>8.1f} {max(times):>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
