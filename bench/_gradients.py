"""Gradient mosaics for the peer benchmark: scattered light (a random plane per image), Montage
with planes, ours with planes, and the error measure: the true sky left after correction.

Used by ``bench_vs_peers.py --scene gradient`` (and runnable alone on a small mosaic:
``python bench/_gradients.py [--layout 4 4 --shape 1024 1024 --rounds 2]``, ours and
Montage side by side in one process).

- `gradient_mosaic`: the scene, `make_mosaic(..., gradient=GRADIENT)` (each image its own
  plane rising by up to ``GRADIENT`` noise sigma across it, random direction) over the nebula
  scene of the benchmark when the engine's `make_mosaic` has ``nebula`` (else without);
- `montage_planes`: MontagePy from FITS files on disk (mImgtbl, mMakeHdr, mProjExec, mImgtbl,
  mOverlaps, mDiffExec, mFitExec with slopes, mBgModel with slopes), its corrections (planes
  ``A x + B y + C`` on the common grid, x and y from its CRPIX, as mBackground subtracts them)
  carried into each input image's own pixels (level at the centre and slopes, by central
  differences through the WCSs: exact for these TAN images to far below the noise);
- `sky_error`: rms of the true sky minus the fitted planes over all (sub-sampled) pixels of
  the images, after removing the common plane no overlap can see, in noise sigma
  (`skymatch_nb_ui.testing.Mosaic.residual_sky`);
- `hdf_exposures`, `fits_header`: the real-pixel scene (``--scene hdf``): the
  Hubble Deep Field through ACS/WFC's SIP distortion (`skymatch_nb_ui.datasets`), four
  exposures of two chips, each exposure its own random plane on the sky (its truth and the
  error measure: `DitheredExposures.true_sky`, `residual_sky`), and
  headers Montage reads (a CD matrix, and the inverse SIP polynomials ``AP``/``BP`` that
  Montage needs to map the sky onto the chips, fitted here to 0.003 pixels).
"""

from __future__ import annotations

import inspect
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # measure this checkout

GRADIENT = 4.0  # each image's plane rises by up to this many noise sigma across it
NOISE = 1.0
NEBULA = 25.0
STARS = 50  # per 1024 x 1024 pixels


def gradient_mosaic(layout, shape, seed: int, *, nebula: bool = True):
    """The gradient scene: random planes over the nebula scene (see the module's notes)."""
    from skymatch_nb_ui.testing import make_mosaic

    rng = np.random.default_rng(seed)
    n = layout[0] * layout[1]
    extra = {}
    if nebula and "nebula" in inspect.signature(make_mosaic).parameters:
        extra["nebula"] = NEBULA * NOISE
    return make_mosaic(
        layout, shape=shape, overlap=0.2, sky=100.0 + 20.0 * rng.random(n), noise=NOISE,
        gradient=GRADIENT, sources=round(STARS * shape[0] * shape[1] / 1024**2), rotation=3.0,
        jitter=5.0, dtype=np.float32, seed=rng, **extra,
    )


HDF_RISE = 4.0  # each exposure's plane rises by up to this many noise sigma across a chip
HDF_CHIP = 205.0  # arcsec: an ACS/WFC chip's length


def hdf_exposures(seed: int, noise: float = 5.0):
    """The real-pixel scene: `hubble_deep_field_exposures` with a random plane per exposure.

    Directions uniform, sizes uniform up to `HDF_RISE` times 5 (the dataset's noise) over a
    chip's length; another ``noise`` keeps the planes of the seed.
    """
    from skymatch_nb_ui.datasets import DEFAULT_DITHERS, hubble_deep_field_exposures

    rng = np.random.default_rng(seed)
    n = len(DEFAULT_DITHERS)
    theta = rng.uniform(0.0, 2 * np.pi, n)
    size = rng.uniform(0.0, HDF_RISE * 5.0 / HDF_CHIP, n)
    slopes = np.column_stack([np.sin(theta), np.cos(theta)]) * size[:, None]
    return hubble_deep_field_exposures(gradient=slopes.tolist(), noise=noise, seed=seed)


def fits_header(w):
    """A FITS header of the SIP WCS ``w`` that Montage reads as astropy does.

    Montage takes the pixel scale from ``CDELT`` and ignores a ``PC`` matrix's scale (the
    header astropy writes for a CD matrix: ``PC`` = CD, ``CDELT`` = 1, which Montage read as
    1-degree pixels), and maps the sky onto the pixels with the inverse polynomials ``AP``,
    ``BP`` (without them it fails); ours and astropy use the forward ``A``, ``B`` (inverted
    iteratively), whatever ``AP``, ``BP`` say.
    """
    header = w.to_header(relax=True)
    cd = w.wcs.cd if w.wcs.has_cd() else w.wcs.get_pc() * w.wcs.cdelt[:, None]
    for i in (1, 2):
        header.remove(f"CDELT{i}", ignore_missing=True)
        for j in (1, 2):
            header.remove(f"PC{i}_{j}", ignore_missing=True)
            header[f"CD{i}_{j}"] = cd[i - 1, j - 1]
    if w.sip is None:
        return header
    nx, ny = w.pixel_shape
    order = w.sip.a_order
    x, y = np.meshgrid(np.linspace(0.5, nx + 0.5, 64), np.linspace(0.5, ny + 0.5, 64))  # 1-based
    u, v = x.ravel() - w.sip.crpix[0], y.ravel() - w.sip.crpix[1]
    big_u, big_v = u + _sip_poly(w.sip.a, u, v), v + _sip_poly(w.sip.b, u, v)
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p)]
    design = np.column_stack([big_u**p * big_v**q for p, q in terms])
    ap = np.linalg.lstsq(design, u - big_u, rcond=None)[0]
    bp = np.linalg.lstsq(design, v - big_v, rcond=None)[0]
    header["AP_ORDER"], header["BP_ORDER"] = order, order
    for (p, q), a, b in zip(terms, ap, bp):
        header[f"AP_{p}_{q}"], header[f"BP_{p}_{q}"] = a, b
    return header


def _sip_poly(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``sum coef[p, q] u**p v**q``."""
    out = np.zeros_like(u)
    for p, q in zip(*np.nonzero(coef)):
        out += coef[p, q] * u**p * v**q
    return out


def write_fits(mosaic, raw: Path) -> None:
    from astropy.io import fits

    raw.mkdir(parents=True, exist_ok=True)
    for name, image, w in zip(mosaic.names, mosaic.images, mosaic.wcs):
        fits.PrimaryHDU(image, header=w.to_header()).writeto(raw / f"{name}.fits")


def truth_mosaic(planes: np.ndarray, wcs: list, shapes: list):
    """A `Mosaic` of the true planes alone (no pixels: `residual_sky` needs only the shapes)."""
    from skymatch_nb_ui.testing import Mosaic

    empty = [np.broadcast_to(np.float32(0), shape) for shape in shapes]
    return Mosaic(images=empty, wcs=list(wcs), masks=None, sky=planes[:, 0],
                  names=[f"img{k}" for k in range(len(wcs))], slope_x=planes[:, 1],
                  slope_y=planes[:, 2])


def sky_error(truth, planes, *, step: int = 8) -> float:
    """rms of the true sky left after subtracting ``planes`` (n, 3), in noise sigma."""
    planes = np.asarray(planes, dtype=float)
    ok = np.isfinite(planes).all(axis=1)
    if not ok.all():
        return float("nan")
    return float(np.sqrt(np.mean(truth.residual_sky(planes=planes, step=step) ** 2))) / NOISE


def planes_in_images(a, b, c, header_wcs, wcs: list, shapes: list) -> np.ndarray:
    """Montage's corrections ``a x + b y + c`` (x, y: common-grid pixel - CRPIX) per image,
    as (level at the centre, slope_x, slope_y) in each image's own 0-based pixels."""
    crpix = header_wcs.wcs.crpix
    out = np.full((len(wcs), 3), np.nan)
    for k, (w, (ny, nx)) in enumerate(zip(wcs, shapes)):
        if not np.isfinite(c[k]):
            continue
        x0, y0 = (nx - 1) / 2, (ny - 1) / 2
        x = x0 + np.array([0.0, 1.0, -1.0, 0.0, 0.0])
        y = y0 + np.array([0.0, 0.0, 0.0, 1.0, -1.0])
        gx, gy = header_wcs.all_world2pix(*w.all_pix2world(x, y, 0), 0)
        value = a[k] * (gx - crpix[0]) + b[k] * (gy - crpix[1]) + c[k]
        out[k] = [value[0], (value[1] - value[2]) / 2, (value[3] - value[4]) / 2]
    return out


def montage_planes(raw: Path, work_root: Path, *, slopes: bool = True) -> dict:
    """Montage's background matching of the FITS files in ``raw`` (see the module's notes).

    Returns ``{"planes": (n, 3) list in file order, "steps": {step: seconds}, "files_mb",
    "share": mProjExec's share of the time}``.
    """
    import MontagePy.main as m
    from astropy.io import ascii, fits
    from astropy.wcs import WCS

    files = sorted(raw.glob("*.fits"))
    names = [f.stem for f in files]
    work = Path(tempfile.mkdtemp(prefix="montage_", dir=work_root))
    t: dict = {}

    def step(name, function, *args, **kwargs):
        start = time.perf_counter()
        status = function(*args, **kwargs)
        t[name] = time.perf_counter() - start
        if status["status"] != "0":
            raise RuntimeError(f"{name}: {status}")

    try:
        proj, diffs = work / "proj", work / "diffs"
        proj.mkdir()
        diffs.mkdir()
        raw_tbl, hdr = str(work / "images.tbl"), str(work / "region.hdr")
        proj_tbl, diff_tbl = str(work / "pimages.tbl"), str(work / "diffs.tbl")
        fit_tbl, corr_tbl = str(work / "fits.tbl"), str(work / "corrections.tbl")
        step("mImgtbl", m.mImgtbl, str(raw), raw_tbl)
        step("mMakeHdr", m.mMakeHdr, raw_tbl, hdr)
        step("mProjExec", m.mProjExec, str(raw), raw_tbl, hdr, projdir=str(proj))
        step("mImgtbl2", m.mImgtbl, str(proj), proj_tbl)
        step("mOverlaps", m.mOverlaps, proj_tbl, diff_tbl)
        step("mDiffExec", m.mDiffExec, str(proj), diff_tbl, hdr, diffdir=str(diffs))
        step("mFitExec", m.mFitExec, diff_tbl, fit_tbl, diffdir=str(diffs), levelOnly=not slopes)
        step("mBgModel", m.mBgModel, proj_tbl, fit_tbl, corr_tbl, noslope=not slopes)
        images = ascii.read(proj_tbl, format="ipac")
        corrections = ascii.read(corr_tbl, format="ipac")
        header_wcs = WCS(fits.Header.fromtextfile(hdr))
        files_mb = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) / 2**20
    finally:
        shutil.rmtree(work, ignore_errors=True)
    file_of = {int(c): Path(str(f)).stem.removeprefix("hdu0_")
               for c, f in zip(images["cntr"], images["fname"])}
    index = {name: k for k, name in enumerate(names)}
    a, b, c = (np.full(len(names), np.nan) for _ in range(3))
    for row in corrections:
        k = index[file_of[int(row["id"])]]
        a[k], b[k], c[k] = float(row["a"]), float(row["b"]), float(row["c"])
    headers = [fits.getheader(f) for f in files]  # headers only: no pixels read
    wcs = [WCS(h) for h in headers]
    shapes = [(h["NAXIS2"], h["NAXIS1"]) for h in headers]
    planes = planes_in_images(a, b, c, header_wcs, wcs, shapes)
    return {"planes": planes.tolist(), "steps": t, "files_mb": files_mb,
            "share": t["mProjExec"] / sum(t.values())}


def ours_planes(images, wcs, *, skymodel: str, **params) -> np.ndarray:
    """Our `skymatch` (match), as (n, 3) planes; constant skies have zero slopes."""
    from skymatch_nb_ui import skymatch

    options = {"skymodel": skymodel} if skymodel != "constant" else {}
    result = skymatch(images, wcs, skymethod="match", **options, **params)
    plane = getattr(result, "plane", None)  # SkyMatchResult.plane (skymodel="plane")
    if plane is None:
        return np.column_stack([result.sky, np.zeros((len(images), 2))])
    return np.column_stack([result.sky, plane.slope_x, plane.slope_y])


def main(argv=None) -> int:
    """Ours and Montage on one gradient mosaic, side by side, in this process (a check of the
    runners; ``bench_vs_peers.py --scene gradient`` runs each engine in its own process)."""
    import argparse
    import statistics
    import subprocess

    from skymatch_nb_ui.engine.params import SkyMatchParams

    parser = argparse.ArgumentParser(description=main.__doc__.split(";")[0])
    parser.add_argument("--layout", type=int, nargs=2, default=(3, 3))
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    has_planes = "skymodel" in SkyMatchParams.names()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load before:", uptime())
    mosaic = gradient_mosaic(tuple(args.layout), tuple(args.shape), seed=args.seed)
    shapes = [im.shape for im in mosaic.images]
    truth = truth_mosaic(mosaic.planes, mosaic.wcs, shapes)
    exact = np.column_stack([mosaic.sky, np.zeros((len(mosaic), 2))])
    print(f"{args.layout[0]}x{args.layout[1]} of {args.shape[0]}x{args.shape[1]}, planes up to "
          f"{GRADIENT} sigma; the true constants would leave {sky_error(truth, exact):.3f} sigma")
    runs: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_gradients_") as tmp:
        raw = Path(tmp) / "raw"
        write_fits(mosaic, raw)
        for _ in range(args.rounds):
            for model in ["constant"] + (["plane"] if has_planes else []):
                start = time.perf_counter()
                planes = ours_planes(mosaic.images, mosaic.wcs, skymodel=model, skystat="median")
                runs.setdefault(f"ours {model}", []).append((time.perf_counter() - start, planes))
            for slopes in (False, True):
                start = time.perf_counter()
                planes = np.array(montage_planes(raw, Path(tmp), slopes=slopes)["planes"])
                runs.setdefault(f"montage {'planes' if slopes else 'levels'}", []).append(
                    (time.perf_counter() - start, planes))
    for name, results in runs.items():
        times = [t for t, _ in results]
        print(f"{name:<16} min {min(times):8.2f} s  median {statistics.median(times):8.2f} s   "
              f"sky left {sky_error(truth, results[-1][1]):.4f} sigma rms")
    print("load after:", uptime())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
