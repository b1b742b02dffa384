"""Benchmark: from a parameter change that needs only a new solve to updated views (the app).

Builds a SkyMatchApp on a synthetic mosaic of N images (100x100 pixels: the pixels do not
matter for a solve-only change, the number of images and pairs does), then times assignments
to ``app.params`` that need only the solve (``match_down``, ``skymethod`` between match and
global+match after both were computed once, ``anchor``): the engine's re-solve, the result
Dataset, the traitlet updates of the map, the table and the plots, and what a kernel does to
send them to the browser (every widget message serialised to JSON, binary buffers counted,
as ipykernel would).  Targets: under 100 ms at 1,000 images, under 1 s at 10,000 (issue 12).

``--compare PATH`` measures another checkout (e.g. ``/work/main``) side by side: each checkout
runs in its own worker process, and the workers take turns, one round of every change each,
so that both see the same machine load.

Usage::

    python bench/bench_app.py
    python bench/bench_app.py --sizes 100,500,1000 --repeat 11 --compare /work/main
    python bench/bench_app.py --sizes 10000 --repeat 5 --shape 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: The solve-only changes, each as two assignments that alternate.
CHANGES = {
    "match_down": [{"match_down": False}, {"match_down": True}],
    "skymethod": [{"skymethod": "match"}, {"skymethod": "global+match"}],
    "anchor": [{"anchor": "component"}, {"anchor": "global"}],
}


def grid(n: int) -> tuple[int, int]:
    import numpy as np

    rows = int(np.floor(np.sqrt(n)))
    while n % rows:
        rows -= 1
    return rows, n // rows


# -- the worker: one checkout, its apps, timed on request --------------------------------------
class _Sent:
    """Counts what the widgets send, serialised as a kernel would (ipykernel: json.dumps)."""

    bytes = 0
    messages = 0

    @classmethod
    def install(cls) -> None:
        import comm

        def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
            cls.bytes += len(json.dumps(data, default=str, allow_nan=False).encode())
            cls.bytes += sum(memoryview(b).nbytes for b in buffers or ())
            cls.messages += 1

        comm.DummyComm.publish_msg = publish_msg


def _build(n: int, shape: int):
    from skymatch_nb_ui import ImageCollection
    from skymatch_nb_ui.testing import make_mosaic
    from skymatch_nb_ui.widgets import SkyMatchApp

    mosaic = make_mosaic(grid(n), shape=(shape, shape), noise=1.0, seed=1)
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
    start = time.perf_counter()
    app = SkyMatchApp(coll, debounce=0, skymethod="match", skystat="median")
    built = time.perf_counter() - start
    app.params = {"skymethod": "global+match"}  # compute the local statistics once
    result = app.result
    pairs = result.sizes["pair"] if "pair" in result.dims else len(app.pairs.pair)  # older API
    return app, pairs, built


def worker(root: str, sizes: list[int], shape: int) -> None:
    """Serve rounds on stdin ("round" -> one JSON line of times), for the checkout ``root``."""
    sys.path.insert(0, root)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _Sent.install()
    apps = {}
    for n in sizes:
        app, pairs, built = _build(n, shape)
        apps[n] = app
        print(json.dumps({"n": n, "pairs": pairs, "built": built}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        out = {}
        for n, app in apps.items():
            for label, values in CHANGES.items():
                for value in values:
                    _Sent.bytes = _Sent.messages = 0
                    start = time.perf_counter()
                    app.params = value
                    elapsed = time.perf_counter() - start
                    out.setdefault(f"{n}:{label}", []).append([elapsed * 1e3, _Sent.bytes])
        print(json.dumps(out), flush=True)


# -- the driver ---------------------------------------------------------------------------------
def _start(root: Path, sizes: list[int], shape: int) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", str(root), "--sizes", ",".join(map(str, sizes)),
         "--shape", str(shape)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root),
    )
    info = {}
    for _ in sizes:
        record = json.loads(proc.stdout.readline())
        info[record["n"]] = record
    return proc, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--repeat", type=int, default=11, help="rounds (each change twice per round)")
    parser.add_argument("--compare", default="", help="another checkout to measure side by side")
    parser.add_argument("--shape", type=int, default=100, help="pixels per side of each image")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        worker(args.worker, sizes, args.shape)
        return 0

    roots = {"this": HERE} | ({"compare": Path(args.compare).resolve()} if args.compare else {})
    workers = {name: _start(root, sizes, args.shape) for name, root in roots.items()}
    times: dict = {name: {} for name in roots}
    for _ in range(args.repeat):
        for name, (proc, _) in workers.items():  # the checkouts take turns
            proc.stdin.write("round\n")
            proc.stdin.flush()
            for key, values in json.loads(proc.stdout.readline()).items():
                times[name].setdefault(key, []).extend(values)
    for proc, _ in workers.values():
        proc.stdin.close()
        proc.wait()

    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
    for name, root in roots.items():
        print(f"{name}: {root}")
    header = f"{'N':>6} {'pairs':>6} {'change':>11}"
    for name in roots:
        header += f" | {name + ' ms':>10} {'min':>7} {'kB sent':>8}"
    if args.compare:
        header += " | ratio"
    print(header)
    for n in sizes:
        built = "  ".join(f"{name} built in {info[n]['built']:.1f} s" for name, (_, info) in workers.items())
        print(f"{n:>6} {'':>6} {'':>11} | {built}")
        for label in CHANGES:
            row = f"{n:>6} {workers['this'][1][n]['pairs']:>6} {label:>11}"
            medians = {}
            for name in roots:
                ms = [t for t, _ in times[name][f"{n}:{label}"]]
                kb = statistics.median(b for _, b in times[name][f"{n}:{label}"]) / 1e3
                medians[name] = statistics.median(ms)
                row += f" | {medians[name]:>10.1f} {min(ms):>7.1f} {kb:>8.0f}"
            if args.compare:
                row += f" | {medians['compare'] / medians['this']:.2f}x"
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
