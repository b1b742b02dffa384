"""Instrument-like WCSs and files for tests, benchmarks and tutorials.

Each maker builds its object the way the instrument's own software does, with that software:
a gwcs pipeline of the JWST/Roman kind (distortion polynomial, v2/v3 offsets, sky rotation,
a bounding box), and files written by ``stdatamodels`` (JWST), astropy with real ACS headers
(HST) and ``roman_datamodels`` (Roman).  The optional packages are imported when a maker is
called.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nircam_like_gwcs", "write_hst_flt", "write_jwst_cal", "write_roman_cal"]


def nircam_like_gwcs(
    center: tuple[float, float] = (150.0, 2.0),
    *,
    roll: float = 0.0,
    shape: tuple[int, int] = (256, 256),
    pixel_scale: float = 0.5,
    distortion: float = 4.0,
    bounding_box: bool = True,
    v2v3_ref: tuple[float, float] = (120.0, -450.0),
    pointing_v2v3: tuple[float, float] | None = None,
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
        (RA, Dec) in degrees of the pointing: where ``pointing_v2v3`` is on the sky.
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
    pointing_v2v3 : (float, float), optional
        Telescope (v2, v3) that the pointing puts at ``center`` (default ``v2v3_ref``: the
        detector centre).  Detectors of one exposure share it and differ in ``v2v3_ref``.

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
    v2_point, v3_point = v2v3_ref if pointing_v2v3 is None else pointing_v2v3
    rotation = models.RotationSequence3D(
        [v2_point / 3600.0, -v3_point / 3600.0, roll, dec, -ra], axes_order="zyxyz"
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


# -- files written by the instruments' own libraries ------------------------------------------
def write_jwst_cal(
    path,
    data: np.ndarray,
    wcs,
    *,
    dq: np.ndarray | None = None,
    observation: tuple[str, ...] = ("01234", "001", "001", "02", "1", "01", "00001"),
    detector: str = "NRCB1",
    group_id: str | None = None,
    bunit: str = "MJy/sr",
    background: tuple[float, bool, str] | None = None,
):
    """Write a JWST level-2 image (``_cal.fits``) with ``stdatamodels``, as the pipeline does.

    The model is a ``stdatamodels.jwst.datamodels.ImageModel`` with ``data``, ``dq`` and
    ``err``, its gwcs in ``meta.wcs`` (saved in the ASDF extension), its SIP approximation in
    ``meta.wcsinfo`` (the SCI header, as ``assign_wcs`` writes it), and ``meta.observation``
    from ``observation`` = (program, observation, visit, visit group, sequence, activity,
    exposure), the fields of the pipeline's ``group_id``.

    Parameters
    ----------
    path : str or Path
        The file to write (its name becomes ``meta.filename``).
    data : 2-D array
        The science data (stored as float32).
    wcs : gwcs.WCS
        Its WCS, e.g. from `nircam_like_gwcs`.
    dq : 2-D integer array, optional
        DQ flags (default: none set).
    observation : tuple of 7 str
        ``meta.observation`` fields of the group_id.
    detector : str
        ``meta.instrument.detector``.
    group_id : str, optional
        ``meta.group_id``, which the pipeline prefers to the observation fields.
    bunit : str
        ``meta.bunit_data``.
    background : (float, bool, str), optional
        ``meta.background`` (level, subtracted, method) of a file that went through skymatch.

    Returns
    -------
    Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> w = nircam_like_gwcs(shape=(64, 64))
    >>> path = write_jwst_cal(pathlib.Path(tempfile.mkdtemp()) / "jw_nrcb1_cal.fits",
    ...                       np.full((64, 64), 3.0), w)
    >>> from astropy.io import fits
    >>> [h.name for h in fits.open(path)]
    ['PRIMARY', 'SCI', 'DQ', 'ERR', 'ASDF']
    """
    from pathlib import Path

    from stdatamodels.jwst import datamodels

    path = Path(path)
    data = np.asarray(data, dtype=np.float32)
    ny, nx = data.shape
    model = datamodels.ImageModel(
        data=data,
        dq=np.zeros(data.shape, np.uint32) if dq is None else np.asarray(dq, np.uint32),
        err=np.ones(data.shape, np.float32),
    )
    meta = model.meta
    meta.telescope = "JWST"
    meta.instrument.name = "NIRCAM"
    meta.instrument.detector = detector
    meta.instrument.filter = "F200W"
    meta.exposure.type = "NRC_IMAGE"
    meta.bunit_data = bunit
    fields = ("program_number", "observation_number", "visit_number", "visit_group",
              "sequence_id", "activity_id", "exposure_number")
    for name, value in zip(fields, observation):
        setattr(meta.observation, name, value)
    if group_id is not None:
        meta.group_id = group_id
    meta.wcs = wcs
    sip = wcs.to_fits_sip(bounding_box=((-0.5, nx - 0.5), (-0.5, ny - 0.5)), max_pix_error=0.01,
                          max_inv_pix_error=0.01)
    for key, value in sip.items():
        if key not in ("NAXIS", "NAXIS1", "NAXIS2", "WCSAXES", "MJDREF"):
            setattr(meta.wcsinfo, key.lower(), value)
    if background is not None:
        meta.background.level, meta.background.subtracted, meta.background.method = background
    meta.filename = path.name
    model.save(path)
    model.close()
    return path


def write_hst_flt(
    path,
    chips: list,
    *,
    rootname: str,
    offset: tuple[float, float] = (0.0, 0.0),
    lookup: bool = True,
    dq: list | None = None,
    bunit: str = "ELECTRONS",
    exptime: float | None = None,
):
    """Write an HST ACS/WFC-like ``_flt.fits`` file: two chips with real ACS WCS headers.

    The primary and ``SCI,1`` / ``SCI,2`` headers are those of a real ACS/WFC exposure
    (``j94f05bgq_flt.fits``, SIP of order 4) from astropy's test data; with ``lookup`` the
    chips also get real lookup-table distortions (``D2IMARR`` detector-to-image and
    ``WCSDVARR`` non-polynomial corrections from astropy's ``dist_lookup.fits.gz``), each chip
    its own extensions, as ACS files have.  Each chip image is the corner of its chip
    (pixel (0, 0) of the image is pixel (0, 0) of the chip).

    Parameters
    ----------
    path : str or Path
        The file to write.
    chips : [2-D array, 2-D array]
        Data of ``SCI,1`` and ``SCI,2`` (float32).
    rootname : str
        ``ROOTNAME`` of the exposure.
    offset : (float, float)
        Pointing offset (east, north) in arcsec: a dither.
    lookup : bool
        Add the lookup-table distortions.
    dq : [2-D array, 2-D array], optional
        DQ of each chip (int16; default none set).
    bunit : str
        ``BUNIT`` of the chips.
    exptime : float, optional
        ``EXPTIME`` of the exposure (default: the real header's).

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        When astropy was installed without its test data.
    """
    import warnings
    from pathlib import Path

    from astropy.io import fits
    from astropy.utils.data import get_pkg_data_filename

    path = Path(path)
    flt = get_pkg_data_filename("data/j94f05bgq_flt.fits", package="astropy.wcs.tests")
    tables = get_pkg_data_filename("data/dist_lookup.fits.gz", package="astropy.wcs.tests")
    with fits.open(flt) as source, fits.open(tables) as lookups:
        primary = source[0].header.copy()
        sci_headers = [source["SCI", k].header.copy() for k in (1, 2)]
        distortion_cards = [card for card in lookups[1].header.cards
                            if card.keyword.startswith(("D2IM", "CPDIS", "DP1", "DP2", "CPERR"))
                            and card.keyword != "D2IMEXT"]
        d2im = (lookups["D2IMARR", 1].header.copy(), lookups["D2IMARR", 1].data.copy())
        npol = [(lookups["WCSDVARR", k].header.copy(), lookups["WCSDVARR", k].data.copy())
                for k in (1, 2)]
    primary["ROOTNAME"] = rootname
    primary["FILENAME"] = path.name
    if exptime is not None:
        primary["EXPTIME"] = float(exptime)
    hdus = [fits.PrimaryHDU(header=primary)]
    extra = []
    for k, (header, data) in enumerate(zip(sci_headers, chips), start=1):
        data = np.asarray(data, np.float32)
        header["NAXIS1"], header["NAXIS2"] = data.shape[1], data.shape[0]
        header["BUNIT"] = bunit
        dec = header["CRVAL2"]
        header["CRVAL1"] += offset[0] / 3600.0 / np.cos(np.radians(dec))
        header["CRVAL2"] += offset[1] / 3600.0
        if lookup:
            for card in distortion_cards:
                header.append(card.copy() if hasattr(card, "copy") else fits.Card(*card))
            header["D2IM1.EXTVER"] = float(k)
            header["DP1.EXTVER"] = float(2 * k - 1)
            header["DP2.EXTVER"] = float(2 * k)
            sign = 1.0 if k == 1 else -1.0  # the chips' tables differ, as real ones do
            extra.append(fits.ImageHDU(d2im[1] * sign, d2im[0].copy(), name="D2IMARR", ver=k))
            for axis, (table_header, table) in enumerate(npol):
                extra.append(fits.ImageHDU(table * sign, table_header.copy(), name="WCSDVARR",
                                           ver=2 * k - 1 + axis))
        quality = np.zeros(data.shape, np.int16) if dq is None else np.asarray(dq[k - 1], np.int16)
        hdus += [
            fits.ImageHDU(data, header, name="SCI", ver=k),
            fits.ImageHDU(np.ones(data.shape, np.float32), name="ERR", ver=k),
            fits.ImageHDU(quality, name="DQ", ver=k),
        ]
    with warnings.catch_warnings():  # the record-valued distortion cards have long comments
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        fits.HDUList(hdus + extra).writeto(path)
    return path


def write_roman_cal(
    path,
    data: np.ndarray,
    wcs,
    *,
    dq: np.ndarray | None = None,
    detector: str = "WFI01",
    observation_id: str = "r0000101001001001001_0001",
    background: tuple[float | None, bool, str] | None = None,
    flux: bool = True,
    conversion: float | None = None,
):
    """Write a Roman WFI level-2 image (ASDF) with ``roman_datamodels``, as romancal does.

    The model is a ``roman_datamodels.datamodels.ImageModel`` made by its own maker
    (``create_fake_data``: every required array and metadata field), with ``data``, ``dq``,
    ``meta.wcs``, the detector and ``meta.observation.observation_id`` set, and
    ``meta.cal_step`` as romancal's level-2 pipeline leaves it before skymatch (every step of
    the current schema ``COMPLETE``, ``skymatch`` ``INCOMPLETE``).

    With ``flux=False`` the ``flux`` step is ``INCOMPLETE`` (the data in DN/s, as the
    exposure-level pipeline writes them); ``conversion`` sets
    ``meta.photometry.conversion_megajanskys`` (its maker's placeholder otherwise).

    Returns
    -------
    Path
    """
    from pathlib import Path

    import roman_datamodels
    import roman_datamodels.datamodels as rdm

    path = Path(path)
    data = np.asarray(data, dtype=np.float32)
    model = rdm.ImageModel.create_fake_data(shape=data.shape)
    _, steps = roman_datamodels.get_latest_schema(
        "asdf://stsci.edu/datamodels/roman/schemas/meta/l2_cal_step"
    )
    model.meta["cal_step"] = {step: "COMPLETE" for step in steps["required"]}
    model.meta.cal_step.skymatch = "INCOMPLETE"
    if not flux:
        model.meta.cal_step.flux = "INCOMPLETE"
    if conversion is not None:
        model.meta.photometry.conversion_megajanskys = float(conversion)
    model.data = data
    model.dq = np.zeros(data.shape, np.uint32) if dq is None else np.asarray(dq, np.uint32)
    model.meta.wcs = wcs
    model.meta.instrument.detector = detector
    model.meta.observation.observation_id = observation_id
    if background is not None:
        level, subtracted, method = background
        model.meta["background"] = {"level": level, "subtracted": subtracted, "method": method}
    model.meta.filename = path.name
    model.save(path)
    return path
