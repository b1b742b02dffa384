"""Benchmark: the publication figures (`skymatch_nb_ui.plotting`) at survey scale.

For each N (a square grid of N images of 32x32 pixels, matched with ``skymodel="plane"`` so
that the planes and their gradient arrows are drawn; every 40th image without a valid sky and
the images in groups of 8, as a JWST association's detectors are), draws each figure
function with its defaults and writes it as PNG at 150 dpi: the time to draw (the function's
call) and to save (matplotlib's rendering), and the PNG's size.

``--compare PATH`` times another checkout (e.g. an old worktree) on the same results, in its
own process, the two taking turns.

Usage::

    python bench/bench_figures.py                            # N = 1,024 and 10,000
    python bench/bench_figures.py --sizes 1024 --compare /tmp/old-wt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
FIGURES = ("plot_footprints", "plot_planes", "plot_sky", "plot_pair_residuals")


def make_result(n: int, path: Path) -> None:
    """A plane result of about ``n`` images, groups of 8 and some without a sky, as NetCDF."""
    sys.path.insert(0, str(HERE))
    import numpy as np

    from skymatch_nb_ui import ImageCollection
    from skymatch_nb_ui.testing import make_mosaic

    side = round(n ** 0.5)
    m = make_mosaic((side, side), shape=(32, 32), noise=1.0, gradient=2.0, seed=1)
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = coll.skymatch(skystat="mean", skymodel="plane")
    # groups of 8 and images without a sky, as labels of the result (the figures read them)
    result["group"] = ("image", np.array([f"exposure{k // 8:05d}" for k in range(result.sizes["image"])]))
    valid = result["valid"].values.copy()
    valid[::40] = False
    result["valid"] = ("image", valid)
    result["reason"] = ("image", np.where(valid, "", "no valid pixels"))
    result.to_netcdf(path)


def time_figures(checkout: str, path: str) -> dict:
    """{figure: (draw s, save s, PNG bytes)} of ``checkout`` on the result in ``path``."""
    sys.path.insert(0, checkout)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    from skymatch_nb_ui import plotting

    result = xr.load_dataset(path)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        png = Path(folder) / "figure.png"
        for name in FIGURES:
            start = time.perf_counter()
            ax = getattr(plotting, name)(result)
            drawn = time.perf_counter()
            ax.figure.savefig(png, dpi=150)
            out[name] = (drawn - start, time.perf_counter() - drawn, png.stat().st_size)
            plt.close("all")
    return out


def in_process(checkout: Path, path: Path) -> dict:
    """`time_figures` in a process of its own (its imports are the checkout's)."""
    code = (f"import json, sys; sys.path.insert(0, {str(HERE / 'bench')!r}); "
            f"from bench_figures import time_figures; "
            f"print(json.dumps(time_figures({str(checkout)!r}, {str(path)!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1024,10000", help="numbers of images (default: %(default)s)")
    parser.add_argument("--compare", type=Path, help="another checkout to time side by side")
    parser.add_argument("--rounds", type=int, default=1, help="turns of each checkout")
    args = parser.parse_args(argv)
    checkouts = [HERE] + ([args.compare.resolve()] if args.compare else [])
    print(f"load average {os.getloadavg()[0]:.2f}; checkouts: {', '.join(map(str, checkouts))}")
    print(f"{'N':>6} {'checkout':>24} {'figure':>20} {'draw s':>7} {'save s':>7} {'PNG KB':>7}")
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(folder) / f"result{n}.nc"
            start = time.perf_counter()
            make_result(n, path)
            print(f"(result of {n:,} images made in {time.perf_counter() - start:.1f} s)")
            for _ in range(args.rounds):
                for checkout in checkouts:
                    for name, (draw, save, size) in in_process(checkout, path).items():
                        print(f"{n:>6} {str(checkout)[-24:]:>24} {name:>20} {draw:7.2f} {save:7.2f} "
                              f"{size / 1024:7.0f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
