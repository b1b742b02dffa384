"""What the studies beside the pipelines' own sky steps share (``study_jwst_step.py``,
``study_romancal_step.py``, ``study_drizzlepac_sky.py``).

Each study runs a pipeline's step in that pipeline's environment and ours in this one, each
in a fresh process: the study's own script again with ``--child KIND ... --out FILE``, the
child writing what it found as JSON.  Only numpy and the standard library here: the
pipelines' environments import this too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def add_stars(image: np.ndarray, x, y, peaks, sigma: float = 1.5, half: int = 7) -> None:
    """Add Gaussian stars of ``sigma`` pixels at (x, y), each cut to its box of ``2 half + 2``."""
    ny, nx = image.shape
    for xc, yc, peak in zip(x, y, peaks):
        x0, y0 = int(np.floor(xc)) - half, int(np.floor(yc)) - half
        xs, ys = np.arange(x0, x0 + 2 * half + 2), np.arange(y0, y0 + 2 * half + 2)
        kx, ky = xs[(xs >= 0) & (xs < nx)], ys[(ys >= 0) & (ys < ny)]
        if kx.size and ky.size:
            stamp = np.exp(-((kx[None, :] - xc) ** 2 + (ky[:, None] - yc) ** 2) / (2 * sigma**2))
            image[ky[0] : ky[-1] + 1, kx[0] : kx[-1] + 1] += (peak * stamp).astype(image.dtype)


def run_child(python: str, script: str, args: list[str]) -> dict:
    """Run ``python script --child *args --out FILE`` and return the JSON it wrote there.

    A child that fails raises, with the last lines it printed.
    """
    with tempfile.TemporaryDirectory(prefix="study-out-") as tmp:
        out = str(Path(tmp) / "out.json")
        done = subprocess.run([python, script, "--child", *args, "--out", out],
                              capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
            raise RuntimeError(f"child {args[0]} failed (exit {done.returncode}):\n{tail}")
        return json.loads(Path(out).read_text())


def run_methods(args, script: str, peer: str, python: str, asn, truth, compare_runs) -> None:
    """Each of ``args.methods`` without subtracting, the last one also with ``subtract``.

    For each: the peer's child (``peer`` with its ``python``), then ours for each of
    ``args.compare`` (``ours:<compare>``), all on ``asn`` with ``args.skystat``; then
    ``compare_runs(method, subtract, truth, runs)`` and the machine's load.
    """
    plan = [(m, False) for m in args.methods] + [(args.methods[-1], True)]
    for method, subtract in plan:
        common = ["--asn", str(asn), "--method", method, "--skystat", args.skystat]
        common += ["--subtract"] if subtract else []
        runs = {peer: run_child(python, script, [peer, *common])}
        for compare in args.compare:
            runs[f"ours ({compare})"] = run_child(sys.executable, script,
                                                  [f"ours:{compare}", *common])
        compare_runs(method, subtract, truth, runs)
        print(f"  (load {os.getloadavg()[0]:.2f})", flush=True)


def add_run_options(parser: argparse.ArgumentParser, methods, skystat_help: str) -> None:
    """``--methods``, ``--compare``, ``--skystat`` and the children's hidden options."""
    parser.add_argument("--methods", type=lambda t: t.split(","), default=["match", "global+match"],
                        help=f"among {', '.join(methods)} (default match,global+match)")
    parser.add_argument("--compare", type=lambda t: t.split(","), default=["differences", "levels"],
                        help="our compare settings (default differences,levels)")
    parser.add_argument("--skystat", default="mode", help=skystat_help)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--asn", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--subtract", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)


def in_peer_order(runs: dict, peer: str) -> dict:
    """Each run's ``rows`` in the order of the peer's (by ``name``): they must name the same
    files (or chips), else a `RuntimeError` says which."""
    names = [r["name"] for r in runs[peer]["rows"]]
    ordered = {}
    for key, run in runs.items():
        by_name = {r["name"]: r for r in run["rows"]}
        if sorted(by_name) != sorted(names):
            raise RuntimeError(f"{key} wrote other files than {peer}: {sorted(by_name)}")
        ordered[key] = [by_name[n] for n in names]
    return ordered


def compare_levels(method: str, truth, runs: dict, peer: str, noise: float, extra=None) -> None:
    """Print what each run recorded (``meta.background``, ``cal_step``) against the truth and
    against the peer's run.

    ``runs``: per run, ``rows`` of ``name``, ``level``, ``subtracted``, ``method``,
    ``cal_step``, ``removed_error``; each run must have written the peer's files.  ``match``
    skies are relative: their mean error is removed.  ``extra(rows)``: more to say of a run.
    """
    truth = np.asarray(truth)
    levels = {}
    for key, rows in in_peer_order(runs, peer).items():
        levels[key] = np.array([np.nan if r["level"] is None else r["level"] for r in rows])
        fields = sorted({(r["subtracted"], r["method"], r["cal_step"]) for r in rows})
        worst = max(r["removed_error"] for r in rows)
        err = levels[key] - truth
        if method == "match":  # relative skies: the lowest is 0 (match_down), compare shapes
            err = err - np.nanmean(err)
        print(f"  {key:>18}: (subtracted, method, cal_step) {fields}"
              f"{extra(rows) if extra else ''}; pixels removed = level to {worst:.1e}; sky - "
              f"truth rms {np.sqrt(np.nanmean(err**2)) / noise:.4f} sigma, max "
              f"{np.nanmax(np.abs(err)) / noise:.4f}")
    for key in runs:
        if key != peer:
            d = levels[key] - levels[peer]
            print(f"  {key} - {peer}: max |level difference| {np.nanmax(np.abs(d)) / noise:.4f} "
                  f"sigma ({np.nanmax(np.abs(d)):.2e})")
