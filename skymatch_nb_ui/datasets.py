"""Real pixels to try sky matching on: the Hubble Deep Field seen through a real HST camera.

`hubble_deep_field_exposures` cuts the Hubble Deep Field picture that scikit-image ships into a
dithered set of exposures of HST's ACS/WFC camera (two detectors per exposure), each sampled
through the camera's real distortion solution (a SIP polynomial) from a real ACS/WFC header
that astropy ships with its tests, and adds a known sky per exposure (a level, or a plane on the
sky) and noise. Matching should bring the sky differences back; `DitheredExposures.sky` (and
`DitheredExposures.true_sky`) holds the truth.

Everything comes from installed packages (no download): needs the ``data`` extra,
``pip install "skymatch-nb-ui[data]"`` (scikit-image).

>>> from skymatch_nb_ui.datasets import hubble_deep_field_exposures
>>> hdf = hubble_deep_field_exposures()
>>> len(hdf), hdf.names[:2], hdf.images[0].shape
(8, ['e1_wfc1', 'e1_wfc2'], (256, 512))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from numbers import Integral, Real

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["DitheredExposures", "hubble_deep_field_exposures"]

#: Where the Hubble Deep Field (North) is on the sky (ICRS, degrees).
HDF_CENTER = (189.2058, 62.2161)
#: The ACS/WFC header: ``j94f05bgq_flt.fits`` of astropy's WCS tests (F606W, 2002; two chips,
#: each 4096 x 2048 pixels of 0.05", SIP distortion of order 4).
ACS_HEADER = ("astropy.wcs.tests", "data/j94f05bgq_flt.fits")
#: The chip size of ACS/WFC (x, y), unbinned.
WFC_SHAPE = (4096, 2048)
#: Pointing offsets (east, north) of each exposure, arcsec: four overlapping exposures.
DEFAULT_DITHERS = ((0.0, 0.0), (40.0, 24.0), (-28.0, 44.0), (16.0, -38.0))
#: The sky of each exposure (both detectors): what matching should find, up to one constant.
DEFAULT_SKY = (100.0, 112.5, 94.0, 121.0)
#: The picture's brightness (0..1 grey) is scaled to these units per pixel.
SIGNAL = 1000.0
#: The picture extends this fraction beyond the field the exposures cover.
MARGIN = 0.04


@dataclass(frozen=True)
class DitheredExposures:
    """Exposures of the Hubble Deep Field with a real HST camera's WCS and known skies.

    Attributes
    ----------
    images : list of 2-D numpy.ndarray
        float32 pixels: the picture sampled through the WCS, plus ``sky``, plus noise.
    wcs : list of astropy.wcs.WCS
        One celestial WCS per image: ACS/WFC with its SIP distortion (binned).
    names : list of str
        ``"e<exposure>_wfc<chip>"``, e.g. ``"e2_wfc1"``.
    meta : list of dict
        Per image: ``exposure``, ``detector``, ``instrument``, ``filter`` (as the metadata
        columns of `ImageCollection` name them).
    sky : numpy.ndarray
        The sky level added to each image (one value per exposure, repeated per detector);
        with a ``gradient``, the sky's level at its exposure's pointing.
    noise : float
        The standard deviation of the Gaussian noise added to each pixel.
    picture_wcs : astropy.wcs.WCS
        Where the picture lies on the sky (TAN, north up), for drawing or re-sampling it.
    gradient : numpy.ndarray
        Shape (n, 2): the slope of each image's sky on the sky, (east, north) in data units
        per arcsec (one per exposure, repeated per detector; zeros for flat skies).
    pointing : numpy.ndarray
        Shape (n, 2): each image's exposure pointing in standard coordinates about the
        field's centre (xi east, eta north, arcsec; see `standard_coordinates`): where its
        sky is ``sky``.

    Examples
    --------
    >>> hdf = hubble_deep_field_exposures(seed=3)
    >>> coll = hdf.collection(group_by="exposure")
    >>> coll.groups["e2_wfc1"] == coll.groups["e2_wfc2"] == "e2"
    True
    """

    images: list
    wcs: list
    names: list
    meta: list
    sky: np.ndarray
    noise: float
    picture_wcs: WCS
    gradient: np.ndarray
    pointing: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def standard_coordinates(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Where each pixel of image ``k`` is on the sky: standard coordinates, arcsec.

        The gnomonic (tangent-plane) projection about the field's centre, ``xi`` towards the
        east and ``eta`` towards the north (the picture's TAN intermediate world
        coordinates), each of the image's shape; through the chip's SIP distortion.
        """
        return _standard(self.picture_wcs, self.wcs[k])

    def true_sky(self, k: int) -> np.ndarray:
        """The sky added to image ``k`` at every pixel (float64, the image's shape).

        ``sky[k]`` plus, with a ``gradient``, the plane ``gradient[k] . (q - pointing[k])``
        in standard coordinates ``q`` (`standard_coordinates`): one plane on the sky for both
        chips of an exposure, not quite a plane in the pixels of a distorted chip.

        Examples
        --------
        >>> hdf = hubble_deep_field_exposures(gradient=[(0.1, 0.0)] * 4, noise=0)
        >>> sky = hdf.true_sky(0)
        >>> step = np.hypot(sky[100, 201] - sky[100, 200], sky[101, 200] - sky[100, 200])
        >>> round(float(step), 3)  # 0.1 per arcsec eastwards, pixels of ~0.4"
        0.04
        """
        if not self.gradient[k].any():
            return np.full(self.images[k].shape, float(self.sky[k]))
        return self._sky_at(k, *self.standard_coordinates(k))

    def _sky_at(self, k: int, xi: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Image ``k``'s true sky at standard coordinates ``xi``, ``eta`` (arcsec)."""
        return self.sky[k] + _plane(xi, eta, self.gradient[k], self.pointing[k])

    def best_pixel_planes(self) -> np.ndarray:
        """Per image, the least-squares plane in its pixels to its true sky (`true_sky`).

        What no engine that subtracts a plane in each image's pixels can beat: through the
        chips' distortion a plane on the sky is curved in them.

        Returns
        -------
        ndarray, shape (n, 3)
            (level at the image's centre, slope_x, slope_y) per image, as `residual_sky`'s
            ``planes`` take them.
        """
        out = []
        for k in range(len(self)):
            sky = self.true_sky(k)
            ny, nx = sky.shape
            y, x = np.mgrid[0:ny, 0:nx]
            design = np.column_stack([np.ones(sky.size), (x - (nx - 1) / 2).ravel(),
                                      (y - (ny - 1) / 2).ravel()])
            out.append(np.linalg.lstsq(design, sky.ravel(), rcond=None)[0])
        return np.array(out)

    def residual_sky(self, models=None, *, planes=None, step: int = 1) -> np.ndarray:
        """The true sky left after subtracting fitted ``models``, at every (``step``-th) pixel.

        As `skymatch_nb_ui.testing.Mosaic.residual_sky` with its ``gauge="plane"``: matching
        finds skies only up to a common plane on the sky, and the best-fitting one (least
        squares, in standard coordinates about the field's centre) is removed.

        Parameters
        ----------
        models : sequence, optional
            One fitted sky per image: a number or an array of the image's shape.
        planes : array_like, shape (n, 3), optional
            Instead of `models`: one fitted plane per image, (level at the centre, slope_x,
            slope_y) in its own pixels (a plane result's ``sky``, ``slope_x``, ``slope_y``).
        step : int
            Use every ``step``-th pixel along each axis.

        Returns
        -------
        ndarray
            The residuals of all images' (sub-sampled) pixels, concatenated; e.g.
            ``np.sqrt(np.mean(r**2)) / noise`` is the error in noise sigma.
        """
        if (models is None) == (planes is None):
            raise TypeError("residual_sky takes either models or planes")
        left, basis = [], []
        for k, image in enumerate(self.images):
            ny, nx = image.shape
            xi, eta = (c[::step, ::step] for c in self.standard_coordinates(k))
            if planes is not None:
                level, slope_x, slope_y = np.asarray(planes[k], dtype=float)
                y, x = np.mgrid[0:ny:step, 0:nx:step]
                model = level + slope_x * (x - (nx - 1) / 2) + slope_y * (y - (ny - 1) / 2)
            else:
                model = np.asarray(models[k], dtype=float)
                model = model[::step, ::step] if model.shape == (ny, nx) else model
            left.append((self._sky_at(k, xi, eta) - model).ravel())
            basis.append(np.column_stack([np.ones(xi.size), xi.ravel(), eta.ravel()]))
        left, basis = np.concatenate(left), np.concatenate(basis)
        return left - basis @ np.linalg.lstsq(basis, left, rcond=None)[0]

    def collection(self, *, group_by: str | None = None):
        """The exposures as an `ImageCollection`.

        Parameters
        ----------
        group_by : {None, 'exposure', 'detector'}
            Start with the images grouped by this metadata key (None: every image alone).
            The group editor of the app offers the same as presets.

        Returns
        -------
        ImageCollection
        """
        from .collection import ImageCollection

        if group_by not in (None, "exposure", "detector"):
            raise ValueError(f"group_by must be None, 'exposure' or 'detector'; got {group_by!r}")
        groups = None if group_by is None else [m[group_by] for m in self.meta]
        return ImageCollection.from_arrays(self.images, self.wcs, names=self.names,
                                           groups=groups, meta=self.meta)


def hubble_deep_field_exposures(
    *,
    dithers: Sequence[tuple[float, float]] = DEFAULT_DITHERS,
    sky: Sequence[float] | None = None,
    gradient: Sequence[tuple[float, float]] | None = None,
    noise: float = 5.0,
    binning: int = 8,
    seed: int = 0,
) -> DitheredExposures:
    """Dithered ACS/WFC exposures of the Hubble Deep Field with a known sky per exposure.

    How they are made:

    1. the picture: scikit-image's Hubble Deep Field (``skimage.data.hubble_deep_field``, a
       colour JPEG of 1000 x 872 pixels) as grey levels times `SIGNAL`, placed on the sky at
       the field's true position, north up, stretched to cover every exposure (the JPEG
       carries no WCS of its own);
    2. the camera: the two chips of the ACS/WFC header that astropy ships with its tests,
       with their real relative placement and SIP distortion, moved to the field and binned
       ``binning`` x ``binning`` (CD and CRPIX rescaled, the SIP coefficients ``A_p_q``,
       ``B_p_q`` multiplied by ``binning**(p+q-1)``: the same mapping of the sky onto the
       detector, in bigger pixels);
    3. each exposure: the telescope pointed ``dithers[k]`` from the field's centre; every
       pixel centre mapped through its chip's WCS onto the picture (bilinear interpolation),
       then its sky (``sky[k]``, or with ``gradient`` a plane on the sky,
       `DitheredExposures.true_sky`) and Gaussian noise of standard deviation ``noise``
       added.

    Parameters
    ----------
    dithers : sequence of (float, float)
        Pointing offset of each exposure, (east, north) in arcsec; one exposure per entry.
    sky : sequence of float, optional
        The sky level of each exposure (default `DEFAULT_SKY`, for up to four exposures).
    gradient : sequence of (float, float), optional
        Per exposure, a sky that is not flat (scattered light, a zodiacal gradient): its slope
        on the sky, (east, north) in data units per arcsec, a plane in standard coordinates
        about the field's centre, ``sky[k]`` at the exposure's pointing, the same plane for
        both chips (what ``skymodel="plane"`` fits for an exposure's group).  None: flat.
    noise : float
        Standard deviation of the noise per pixel, >= 0.
    binning : int
        Detector pixels per image pixel along each axis: 1, 2, 4, 8 or 16 (8: two images of
        512 x 256 pixels of 0.4" per exposure).
    seed : int
        Seed of the noise: the same seed gives the same pixels.

    Returns
    -------
    DitheredExposures
        Two images per exposure, ``e1_wfc1``, ``e1_wfc2``, ``e2_wfc1``, ...

    Raises
    ------
    ValueError
        For a parameter outside its domain (named in the message).

    Examples
    --------
    >>> hdf = hubble_deep_field_exposures(sky=[50.0, 60.0], dithers=[(0, 0), (30, 10)])
    >>> hdf.sky.tolist(), hdf.wcs[0].sip is not None
    ([50.0, 50.0, 60.0, 60.0], True)
    """
    dithers = _checked_dithers(dithers)
    sky = _checked_sky(sky, len(dithers))
    gradient = _checked_gradient(gradient, len(dithers))
    noise = _checked_noise(noise)
    binning = _checked_binning(binning)
    headers = _acs_wfc_headers()
    origin = _middle(headers)
    chips = [_binned(header, binning) for header in headers]
    center = SkyCoord(*HDF_CENTER, unit="deg")
    pointings = [center.spherical_offsets_by(e * u.arcsec, n * u.arcsec) for e, n in dithers]
    wcs = [_pointed(chip, origin, pointing) for pointing in pointings for chip in chips]
    picture, picture_wcs = _picture_on_sky(center, wcs)
    where = _imgcrd(picture_wcs, [[p.ra.deg, p.dec.deg] for p in pointings]) * 3600.0
    rng = np.random.default_rng(seed)
    images, names, meta, truth = [], [], [], []
    for k, w in enumerate(wcs):
        exposure, chip = divmod(k, len(chips))
        image = _sample(picture, picture_wcs, w) + sky[exposure]
        if any(gradient[exposure]):
            image += _plane(*_standard(picture_wcs, w), gradient[exposure], where[exposure])
        image += rng.normal(0.0, noise, image.shape) if noise > 0 else 0.0
        images.append(image.astype(np.float32))
        detector = f"WFC{chips[chip]['CCDCHIP']}"
        names.append(f"e{exposure + 1}_{detector.lower()}")
        meta.append({"exposure": f"e{exposure + 1}", "detector": detector, "instrument": "ACS",
                     "filter": "F606W"})
        truth.append(sky[exposure])
    per_image = np.repeat(np.arange(len(dithers)), len(chips))
    return DitheredExposures(images=images, wcs=wcs, names=names, meta=meta,
                             sky=np.array(truth), noise=noise, picture_wcs=picture_wcs,
                             gradient=np.array(gradient, dtype=float)[per_image],
                             pointing=where[per_image])


# -- the camera ----------------------------------------------------------------------------------
def _acs_wfc_headers() -> list[fits.Header]:
    """The SCI headers of the two ACS/WFC chips: WFC1 (``SCI,2``), then WFC2 (``SCI,1``)."""
    package, name = ACS_HEADER
    try:
        path = resources.files(package).joinpath(name)
        with resources.as_file(path) as local, fits.open(local) as hdul:
            return [hdul["SCI", v].header.copy() for v in (2, 1)]
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise FileNotFoundError(
            f"the ACS/WFC header {name} of {package} is missing ({exc}); it comes with "
            "astropy's wheels: reinstall astropy (pip install --force-reinstall astropy)"
        ) from None


def _binned(header: fits.Header, b: int) -> fits.Header:
    """The chip's WCS header for ``b`` x ``b`` binned pixels: the same sky, bigger pixels.

    A binned pixel i' (1-based) covers detector pixels b*(i'-1)+1 .. b*i', so detector
    coordinate x = b*(x' - 0.5) + 0.5; SIP's distortion f(u, v) (in pixels, u = x - CRPIX)
    becomes f(b*u', b*v') / b.
    """
    h = fits.Header()
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CCDCHIP", "A_ORDER", "B_ORDER"):
        h[key] = header[key]
    nx, ny = WFC_SHAPE
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, nx // b, ny // b
    for axis in (1, 2):
        h[f"CRPIX{axis}"] = (header[f"CRPIX{axis}"] - 0.5) / b + 0.5
    for i in (1, 2):
        for j in (1, 2):
            h[f"CD{i}_{j}"] = header[f"CD{i}_{j}"] * b
    for poly in ("A", "B"):
        order = header[f"{poly}_ORDER"]
        for p in range(order + 1):
            for q in range(order + 1 - p):
                key = f"{poly}_{p}_{q}"
                if key in header:
                    h[key] = header[key] * float(b) ** (p + q - 1)
    return h


def _pointed(header: fits.Header, origin: SkyCoord, pointing: SkyCoord) -> WCS:
    """The chip's WCS moved from pointing ``origin`` to ``pointing``.

    The chip keeps its place and orientation relative to the pointing.
    """
    here = SkyCoord(header["CRVAL1"], header["CRVAL2"], unit="deg")
    dlon, dlat = origin.spherical_offsets_to(here)
    moved = pointing.spherical_offsets_by(dlon, dlat)
    h = header.copy()
    h["CRVAL1"], h["CRVAL2"] = moved.ra.deg, moved.dec.deg
    w = WCS(h)
    w.pixel_shape = (h["NAXIS1"], h["NAXIS2"])
    return w


def _middle(headers) -> SkyCoord:
    """The middle of the two chips' reference points: the pointing of the original header."""
    a, b = (SkyCoord(h["CRVAL1"], h["CRVAL2"], unit="deg") for h in headers)
    dlon, dlat = a.spherical_offsets_to(b)
    return a.spherical_offsets_by(dlon / 2, dlat / 2)


# -- the picture ---------------------------------------------------------------------------------
def _picture_on_sky(center: SkyCoord, wcs: list[WCS]) -> tuple[np.ndarray, WCS]:
    """The grey picture (rows from south to north) and its north-up TAN WCS.

    The WCS stretches the picture over every footprint in ``wcs``, with a margin.
    """
    try:
        from skimage import color, data
    except ImportError as exc:
        raise ImportError(
            "hubble_deep_field_exposures needs scikit-image (its Hubble Deep Field picture); "
            'install it with: pip install "skymatch-nb-ui[data]"'
        ) from exc
    grey = color.rgb2gray(data.hubble_deep_field())[::-1]  # FITS rows run upwards
    ny, nx = grey.shape
    xi, eta = [], []
    for w in wcs:
        corners = w.pixel_to_world(*_edge_points(w.pixel_shape))
        dlon, dlat = center.spherical_offsets_to(corners)
        xi.append(dlon.to_value(u.deg))
        eta.append(dlat.to_value(u.deg))
    xi, eta = np.abs(np.concatenate(xi)), np.abs(np.concatenate(eta))
    scale = (1 + MARGIN) * 2 * max(xi.max() / nx, eta.max() / ny)  # degrees per picture pixel
    pw = WCS(naxis=2)
    pw.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    pw.wcs.crval = [center.ra.deg, center.dec.deg]
    pw.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    pw.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    pw.pixel_shape = (nx, ny)
    return grey * SIGNAL, pw


def _edge_points(shape, per_side: int = 16):
    """Pixel coordinates along the outer edges of an image of ``shape`` (x, y)."""
    nx, ny = shape
    t = np.linspace(0.0, 1.0, per_side)
    x = np.concatenate([t * nx, np.full(per_side, nx), (1 - t) * nx, np.zeros(per_side)]) - 0.5
    y = np.concatenate([np.zeros(per_side), t * ny, np.full(per_side, ny), (1 - t) * ny]) - 0.5
    return x, y


def _sample(picture: np.ndarray, picture_wcs: WCS, w: WCS) -> np.ndarray:
    """The picture at every pixel centre of an image with WCS ``w`` (bilinear)."""
    from scipy.ndimage import map_coordinates

    nx, ny = w.pixel_shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    px, py = picture_wcs.world_to_pixel(w.pixel_to_world(x, y))
    return map_coordinates(picture, [py, px], order=1, mode="nearest")


def _standard(picture_wcs: WCS, w: WCS) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi east, eta north; arcsec) of every pixel centre of ``w``.

    The picture's TAN intermediate world coordinates: the gnomonic projection about the
    field's centre, north up.
    """
    nx, ny = w.pixel_shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    world = np.column_stack(w.all_pix2world(x.ravel(), y.ravel(), 0))
    q = _imgcrd(picture_wcs, world) * 3600.0
    return q[:, 0].reshape(ny, nx), q[:, 1].reshape(ny, nx)


def _plane(xi, eta, slope, origin) -> np.ndarray:
    """``slope . (q - origin)`` at standard coordinates ``q = (xi, eta)`` (arcsec)."""
    return slope[0] * (xi - origin[0]) + slope[1] * (eta - origin[1])


def _imgcrd(picture_wcs: WCS, world) -> np.ndarray:
    """The TAN intermediate world coordinates (degrees) of points (n, 2) in degrees.

    (Origin 1: astropy shifts ``imgcrd`` by the origin as it does ``pixcrd``.)
    """
    return picture_wcs.wcs.s2p(np.asarray(world, dtype=float), 1)["imgcrd"]


# -- validation ----------------------------------------------------------------------------------
def _checked_dithers(dithers) -> list[tuple[float, float]]:
    rule = "dithers must be a non-empty sequence of (east, north) offsets in arcsec"
    try:
        pairs = [(float(e), float(n)) for e, n in dithers]
    except (TypeError, ValueError):
        raise ValueError(f"{rule}; got {dithers!r}") from None
    if not pairs or not all(math.isfinite(v) for pair in pairs for v in pair):
        raise ValueError(f"{rule}; got {dithers!r}")
    if any(math.hypot(*pair) > 120 for pair in pairs):
        raise ValueError(f"{rule}, each within 120\" of the field's centre (the picture); "
                         f"got {dithers!r}")
    return pairs


def _checked_sky(sky, n: int) -> list[float]:
    if sky is None:
        if n > len(DEFAULT_SKY):
            raise ValueError(f"sky must be given for more than {len(DEFAULT_SKY)} exposures "
                             f"(one value per dither); got {n} dithers and sky=None")
        return list(DEFAULT_SKY[:n])
    values = np.asarray(sky, dtype=float).reshape(-1)
    if values.size != n or not np.all(np.isfinite(values)):
        raise ValueError(f"sky must hold one finite level per exposure ({n}); got {sky!r}")
    return values.tolist()


def _checked_gradient(gradient, n: int) -> list[tuple[float, float]]:
    if gradient is None:
        return [(0.0, 0.0)] * n
    try:
        values = np.asarray(gradient, dtype=float)
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (n, 2) or not np.all(np.isfinite(values)):
        raise ValueError(f"gradient must hold one finite (east, north) slope per exposure ({n}), "
                         f"in data units per arcsec, or be None for flat skies; got {gradient!r}")
    return [(float(e), float(nn)) for e, nn in values]


def _checked_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, Real) or not (0 <= noise < math.inf):
        raise ValueError(f"noise must be a finite number >= 0 (the noise sigma per pixel); got {noise!r}")
    return float(noise)


def _checked_binning(binning) -> int:
    if isinstance(binning, bool) or not isinstance(binning, Integral) or binning not in (1, 2, 4, 8, 16):
        raise ValueError(f"binning must be 1, 2, 4, 8 or 16 (detector pixels per image pixel); "
                         f"got {binning!r}")
    return int(binning)
