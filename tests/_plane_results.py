"""Results of ``skymodel="plane"`` built by hand from a mosaic's true planes (for the views).

The variables and their meaning are those agreed for issue 13 (``/work/coord/NOTES.md``):
``sky`` (the level at the image centre), ``slope_x``/``slope_y`` (per pixel of the image's own
axes), their errors, ``sky_cov`` (image, coef, coef2), ``gradient`` (per arcsec on the sky)
and ``gradient_pa`` (degrees east of north of the direction the sky increases); per pair
``resid_gradient`` and ``plane_fallback``.  The views must show a real solve's result the
same way, so these tests do not depend on the engine's fit.
"""

from __future__ import annotations

import numpy as np

from skymatch_nb_ui import ImageCollection

COEF = ["level", "slope_x", "slope_y"]


def sky_gradient(w, shape, slope_x, slope_y) -> tuple[float, float]:
    """(|grad| per arcsec, PA east of north in degrees) of a pixel-frame plane through `w`."""
    ny, nx = shape
    x0, y0 = (nx - 1) / 2, (ny - 1) / 2
    ra, dec = w.all_pix2world([x0, x0 + 1, x0], [y0, y0, y0 + 1], 0)
    east = (ra - ra[0] + 180) % 360 - 180
    east = east * np.cos(np.radians(dec[0])) * 3600
    north = (dec - dec[0]) * 3600
    jacobian = np.array([[east[1], east[2]], [north[1], north[2]]])  # arcsec per pixel
    g_east, g_north = np.linalg.solve(jacobian.T, [slope_x, slope_y])
    size = float(np.hypot(g_east, g_north))
    pa = float(np.degrees(np.arctan2(g_east, g_north)) % 360) if size > 0 else float("nan")
    return size, pa


def plane_result(mosaic, *, fallback_pairs=(), **params):
    """(collection, Dataset): a constant solve of ``mosaic`` turned into its true planes."""
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names,
                                       groups=mosaic.groups)
    result = coll.skymatch(skystat="mean", **params)
    n, npair = len(mosaic), result.sizes["pair"]
    sizes = [sky_gradient(w, im.shape, sx, sy)
             for w, im, sx, sy in zip(mosaic.wcs, mosaic.images, mosaic.slope_x, mosaic.slope_y)]
    error = np.array([0.01, 1e-4, 1e-4])
    cov = np.zeros((n, 3, 3))
    cov[:, [0, 1, 2], [0, 1, 2]] = error**2
    unit = {"units": result["sky"].attrs["units"]} if "units" in result["sky"].attrs else {}
    fallback = np.array(["" if k not in fallback_pairs else "overlap too thin for a slope"
                         for k in range(npair)])
    return coll, result.assign(
        sky=("image", mosaic.sky, result["sky"].attrs),
        sky_err=("image", np.full(n, error[0]), result["sky_err"].attrs),
        slope_x=("image", mosaic.slope_x, unit),
        slope_y=("image", mosaic.slope_y, unit),
        slope_x_err=("image", np.full(n, error[1])),
        slope_y_err=("image", np.full(n, error[2])),
        sky_cov=(("image", "coef", "coef2"), cov),
        gradient=("image", np.array([s for s, _ in sizes])),
        gradient_pa=("image", np.array([pa for _, pa in sizes])),
        resid_gradient=("pair", np.where(fallback == "", 1e-4 * (1 + np.arange(npair)), np.nan)),
        plane_fallback=("pair", fallback),
    ).assign_coords(coef=COEF, coef2=COEF).assign_attrs(skymodel="plane")
