"""Instrument-like WCSs and files for tests, benchmarks and tutorials (see `testing`).

Each maker builds its object the way the instrument's own software does, with that software:
a gwcs pipeline of the JWST/Roman kind (distortion polynomial, v2/v3 offsets, sky rotation,
a bounding box), and later in this module files written by ``stdatamodels``,
``roman_datamodels`` and astropy.  The optional packages are imported when a maker is called.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nircam_like_gwcs"]


def nircam_like_gwcs(
    center: tuple[float, float] = (150.0, 2.0),
    *,
    roll: float = 0.0,
    shape: tuple[int, int] = (256, 256),
    pixel_scale: float = 0.5,
    distortion: float = 4.0,
    bounding_box: bool = True,
    v2v3_ref: tuple[float, float] = (120.0, -450.0),
):
    """A ``gwcs.WCS`` built like a JWST NIRCam imaging WCS, with distortion and bounding box.

    The pipeline has the frames ``detector -> v2v3 -> world``, as the JWST pipeline builds
    them: pixel offsets from the detector centre, a cubic distortion polynomial in arcsec
    (plus the reference point's v2/v3), then the telescope-to-sky rotation of the pointing
    (``RotationSequence3D`` between spherical/Cartesian conversions).  The inverse of the
    distortion is a degree-5 polynomial *fitted* to the forward one, so, as with the real
    reference files, it is accurate to a small fraction of a pixel but not exact.

    Parameters
    ----------
    center : (float, float)
        (RA, Dec) in degrees of the v2/v3 reference point (the detector centre).
    roll : float
        Roll angle about the reference point, degrees.
    shape : (int, int)
        (ny, nx) of the detector.
    pixel_scale : float
        Arcsec per pixel at the centre.
    distortion : float
        How far (pixels) the distortion moves the detector corners from where a linear WCS
        would put them.
    bounding_box : bool
        Give the WCS the bounding box ``((-0.5, nx - 0.5), (-0.5, ny - 0.5))``, the detector
        outline, as every JWST and Roman WCS has.
    v2v3_ref : (float, float)
        Telescope (v2, v3) of the detector centre, arcsec.

    Returns
    -------
    gwcs.WCS

    Examples
    --------
    >>> w = nircam_like_gwcs((10.0, -30.0), shape=(100, 120))
    >>> w.bounding_box.bounding_box()
    ((-0.5, 119.5), (-0.5, 99.5))
    >>> ra, dec = w(59.5, 49.5)
    >>> round(float(ra), 6), round(float(dec), 6)
    (10.0, -30.0)
    """
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import fitting, models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gwcs_wcs
    from gwcs.geometry import CartesianToSpherical, SphericalToCartesian

    ny, nx = shape
    cx, cy = (nx - 1) / 2.0, (ny - 1) / 2.0
    r = float(np.hypot(cx, cy))
    k2 = distortion * pixel_scale / r**2  # quadratic terms: ~`distortion` px at the corners
    k3 = 0.5 * distortion * pixel_scale / r**3
    poly_v2 = models.Polynomial2D(
        3, c1_0=pixel_scale, c2_0=k2, c1_1=-0.6 * k2, c0_2=0.3 * k2, c3_0=k3, c1_2=k3
    )
    poly_v3 = models.Polynomial2D(
        3, c0_1=pixel_scale * 1.002, c0_2=-0.8 * k2, c1_1=0.4 * k2, c2_0=0.2 * k2, c0_3=-k3,
        c2_1=0.7 * k3,
    )
    distort = models.Shift(-cx) & models.Shift(-cy) | models.Mapping((0, 1, 0, 1)) | poly_v2 & poly_v3
    # the inverse is fitted over the detector and a margin around it, as reference files are
    gx, gy = np.meshgrid(np.linspace(-0.5 * nx, 1.5 * nx, 61), np.linspace(-0.5 * ny, 1.5 * ny, 61))
    dv2, dv3 = distort(gx, gy)
    fitter = fitting.LinearLSQFitter()
    inv_x = fitter(models.Polynomial2D(5), dv2, dv3, gx - cx)
    inv_y = fitter(models.Polynomial2D(5), dv2, dv3, gy - cy)
    distort.inverse = models.Mapping((0, 1, 0, 1)) | inv_x & inv_y | models.Shift(cx) & models.Shift(cy)
    v2_ref, v3_ref = v2v3_ref
    det_to_v2v3 = distort | models.Shift(v2_ref) & models.Shift(v3_ref)

    ra, dec = center
    rotation = models.RotationSequence3D(
        [v2_ref / 3600.0, -v3_ref / 3600.0, roll, dec, -ra], axes_order="zyxyz"
    )
    v2v3_to_sky = (
        (models.Scale(1 / 3600.0) & models.Scale(1 / 3600.0))
        | SphericalToCartesian(wrap_lon_at=180)
        | rotation
        | CartesianToSpherical(wrap_lon_at=360)
    )
    v2v3_to_sky.name = "v23tosky"
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    v2v3 = cf.Frame2D(name="v2v3", axes_order=(0, 1), axes_names=("v2", "v3"),
                      unit=(u.arcsec, u.arcsec))
    world = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world")
    wcs = gwcs_wcs.WCS([(detector, det_to_v2v3), (v2v3, v2v3_to_sky), (world, None)])
    if bounding_box:
        wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    wcs.pixel_shape = (nx, ny)
    return wcs
