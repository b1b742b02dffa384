"""Bench scenes: mosaics dominated by smooth diffuse emission (a "nebula"), with known skies.

A prototype for the benchmarks (``bench_vs_peers.py``) and the calibration studies; the
nebula is a function of *sky position*, so every image that covers a point sees the same
emission there and only the constant skies differ between images.

The emission is a smooth random field: white noise on a coarse grid over the whole mosaic
(spacing 1/16 of an image side), smoothed with Gaussians of 1/3 and 1/8 of an image side
(two scales, the smaller one at half the amplitude), rescaled so that its range over one image
(max - min) is ``amplitude`` in the median image, and shifted to be non-negative.  Each
image samples it through its own WCS and the mosaic's frame, with a cubic spline of the
coarse grid (so it is smooth to well below the noise).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from skymatch_nb_ui.testing import (  # the private helpers: the frame make_mosaic uses
    Mosaic,
    _cd_matrix,
    _tan_wcs,
    make_mosaic,
)

COARSE = 16  # coarse grid cells per image side
SCALES = ((1 / 3, 1.0), (1 / 8, 0.5))  # (smoothing sigma in image sides, relative amplitude)


def nebula_mosaic(
    layout: tuple[int, int],
    *,
    shape: tuple[int, int] = (1024, 1024),
    amplitude: float = 25.0,
    noise: float = 1.0,
    star_density: float = 50.0,
    rotation: float = 3.0,
    jitter: float = 5.0,
    overlap: float = 0.2,
    sky=None,
    center=(150.0, 2.0),
    pixel_scale: float = 0.1,
    dtype=np.float32,
    seed: int = 0,
) -> tuple[Mosaic, np.ndarray]:
    """A mosaic of `make_mosaic` plus a nebula; returns (mosaic, per-image nebula range).

    ``star_density`` is the mean number of stars per 1024 x 1024 pixels (so 50 gives 50 per
    1024^2 image and about 3 per 256^2 image).  ``sky`` defaults to 100 + 20 * U(0, 1) per
    image.  The truth is ``mosaic.sky``.
    """
    rng = np.random.default_rng(seed)
    rows, cols = layout
    n = rows * cols
    if sky is None:
        sky = 100.0 + 20.0 * rng.random(n)
    ny, nx = shape
    stars = round(star_density * nx * ny / 1024**2)
    mosaic = make_mosaic(
        layout, shape=shape, overlap=overlap, sky=sky, noise=noise, sources=stars,
        rotation=rotation, jitter=jitter, center=center, pixel_scale=pixel_scale,
        dtype=dtype, seed=rng,
    )
    if amplitude <= 0:
        return mosaic, np.zeros(n)
    frame = _tan_wcs(center, (1.0, 1.0), _cd_matrix(pixel_scale / 3600.0, rotation))
    coords = [_frame_coordinates(w, frame, shape) for w in mosaic.wcs]
    field, origin, step = _coarse_field(rng, coords, shape)
    values = [_sample(field, origin, step, xy) for xy in coords]
    ranges = np.array([v.max() - v.min() for v in values])
    scale = amplitude / np.median(ranges)
    low = min(v.min() for v in values)
    for image, v in zip(mosaic.images, values):
        image += ((v - low) * scale).astype(image.dtype)
    return mosaic, ranges * scale


def _frame_coordinates(w, frame, shape):
    """Pixel coordinates in the mosaic frame of every pixel centre of an image (2, ny, nx)."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    ra, dec = w.all_pix2world(x.ravel(), y.ravel(), 0)
    fx, fy = frame.all_world2pix(ra, dec, 0)
    return np.stack([fx.reshape(shape), fy.reshape(shape)])


def _coarse_field(rng, coords, shape):
    """Smoothed white noise on a coarse grid covering every image: (field, origin, step)."""
    side = max(shape)
    step = side / COARSE
    lo = np.min([c.reshape(2, -1).min(axis=1) for c in coords], axis=0) - 8 * step
    hi = np.max([c.reshape(2, -1).max(axis=1) for c in coords], axis=0) + 8 * step
    size = np.ceil((hi - lo) / step).astype(int) + 1  # (x, y)
    field = np.zeros((size[1], size[0]))
    for sigma, weight in SCALES:
        white = rng.standard_normal(field.shape)
        smooth = ndimage.gaussian_filter(white, sigma * COARSE, mode="reflect")
        field += weight * smooth / smooth.std()
    return ndimage.spline_filter(field, order=3), lo, step


def _sample(coefficients, origin, step, xy):
    """The cubic-spline field at frame pixel coordinates ``xy`` (2, ny, nx)."""
    gx = (xy[0] - origin[0]) / step
    gy = (xy[1] - origin[1]) / step
    return ndimage.map_coordinates(
        coefficients, [gy.ravel(), gx.ravel()], order=3, prefilter=False
    ).reshape(xy.shape[1:])
