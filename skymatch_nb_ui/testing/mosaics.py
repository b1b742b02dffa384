"""Synthetic mosaics with known skies: `make_mosaic` builds them, `Mosaic` holds them.

`make_mosaic` builds a grid of overlapping images with celestial TAN WCSs and a known sky
per image: a constant, or with ``gradient`` a plane (plus optional noise, sources, NaN holes
and bad-pixel masks); ``+`` concatenates mosaics (e.g. to build a disconnected one).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

__all__ = ["Mosaic", "make_mosaic", "tiling_pairs"]

TANGENTS = ("own", "shared")

# Sources: Gaussian width (pixels) and peak (in units of max(noise, 1)), log-uniform peaks.
SOURCE_SIGMA = (1.0, 2.5)
SOURCE_PEAK = (5.0, 500.0)
SOURCE_RADIUS = 5.0  # rendered out to this many sigma


# -- the container ---------------------------------------------------------------------------
@dataclass
class Mosaic:
    """Images with their WCSs, masks and true skies, as built by `make_mosaic`.

    Attributes
    ----------
    images : list of 2-D ndarray
        The images.
    wcs : list of astropy.wcs.WCS
        One celestial TAN WCS per image.
    masks : list of 2-D bool ndarray or None
        True marks a good pixel; None when every pixel is good.
    sky : ndarray of float64
        The true sky of each image at its centre (a constant sky: everywhere).
    names : list of str
        One name per image, e.g. ``"img00"``.
    slope_x, slope_y : ndarray of float64
        The true sky's slopes along each image's own pixel x and y (data units per pixel;
        zeros for a constant sky).  With `sky`, image ``k``'s sky at 0-based pixel (x, y) is
        ``sky[k] + slope_x[k] * (x - x0) + slope_y[k] * (y - y0)`` with (x0, y0) =
        ((nx - 1) / 2, (ny - 1) / 2) its centre: `true_sky` evaluates it.
    groups : list or None
        The labels `make_mosaic` was given with ``groups`` (images with the same label share
        one sky), to pass on to ``skymatch(..., groups=mosaic.groups)``; None: every image
        alone.

    Notes
    -----
    ``a + b`` concatenates two mosaics (images, WCSs, skies, names; masks become all-good
    arrays on the side that had none).  The arrays are shared, not copied.  Names must not
    clash: build one of the mosaics with another ``prefix``.

    Examples
    --------
    >>> both = make_mosaic((2, 2)) + make_mosaic((1, 3), center=(150.1, 2.0), prefix="b")
    >>> len(both), both.names[3:5]
    (7, ['img03', 'b00'])

    The sky planes of a mosaic with gradients (``planes``: level, slope_x, slope_y):

    >>> m = make_mosaic((1, 2), noise=1.0, gradient=3.0, seed=2)
    >>> m.planes.shape, bool(np.ptp(m.true_sky(0)) <= 3.0)
    ((2, 3), True)
    """

    images: list[np.ndarray]
    wcs: list[WCS]
    masks: list[np.ndarray] | None
    sky: np.ndarray
    names: list[str]
    slope_x: np.ndarray | None = None
    slope_y: np.ndarray | None = None
    groups: list | None = None

    def __post_init__(self):
        self.sky = np.asarray(self.sky, dtype=np.float64).reshape(-1)
        n = len(self.images)
        self.slope_x = _zeros_or_array(self.slope_x, n)
        self.slope_y = _zeros_or_array(self.slope_y, n)
        sizes = {"wcs": len(self.wcs), "sky": self.sky.size, "names": len(self.names),
                 "slope_x": self.slope_x.size, "slope_y": self.slope_y.size}
        if self.masks is not None:
            sizes["masks"] = len(self.masks)
        if self.groups is not None:
            sizes["groups"] = len(self.groups)
        wrong = [f"{field} has {size}" for field, size in sizes.items() if size != n]
        if wrong:
            raise ValueError(
                f"a Mosaic needs one entry per image in every field: {n} images, but "
                + ", ".join(wrong)
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def planes(self) -> np.ndarray:
        """The true sky planes, shape (n, 3): (level at the centre, slope_x, slope_y) per image.

        The columns are in the order of the ``coef`` dimension of a plane result's
        ``sky_cov``.
        """
        return np.column_stack([self.sky, self.slope_x, self.slope_y])

    def true_sky(self, k: int) -> np.ndarray:
        """The true sky of image ``k`` at every pixel (float64, the image's shape)."""
        ny, nx = self.images[k].shape
        return _plane_image(self.sky[k], self.slope_x[k], self.slope_y[k], (ny, nx))

    def residual_sky(self, models=None, *, planes=None, gauge: str | None = "plane",
                     step: int = 1) -> np.ndarray:
        """The true sky left after subtracting fitted ``models``, at every (``step``-th) pixel.

        Matching finds skies only up to what no overlap can see (the gauge): a common constant
        for constant skies, a common plane on the sky for planes.  The best-fitting common
        ``gauge`` over all the residuals (least squares; "plane": in the plane tangent at the
        images' mean centre, "constant", or None) is removed before they are returned.

        Parameters
        ----------
        models : sequence, optional
            One fitted sky per image: a number (a constant) or an array of the image's shape.
        planes : array_like, shape (n, 3), optional
            Instead of `models`: one fitted plane per image, (level at the centre, slope_x,
            slope_y) in its own pixels (as `planes`, or a plane result's ``sky``,
            ``slope_x``, ``slope_y``), evaluated at the pixels used only (big mosaics).
        gauge : {"plane", "constant", None}
            The common part to remove.
        step : int
            Use every ``step``-th pixel along each axis (big mosaics).

        Returns
        -------
        ndarray
            The residuals of all images' (sub-sampled) pixels, concatenated: the error of the
            matched sky, e.g. ``np.sqrt(np.mean(r**2)) / noise`` in noise sigma.

        Examples
        --------
        >>> m = make_mosaic((1, 2), gradient=4.0, seed=1)
        >>> rms = lambda r: float(np.sqrt(np.mean(r**2)))
        >>> round(rms(m.residual_sky([m.true_sky(k) + 7.0 for k in range(2)])), 9)  # an offset
        0.0
        >>> rms(m.residual_sky(list(m.sky))) > 0.1                       # constants miss planes
        True
        """
        if (models is None) == (planes is None):
            raise TypeError("residual_sky takes either models or planes")
        if planes is not None:
            planes = np.asarray(planes, dtype=np.float64)
            if planes.shape != (len(self), 3):
                raise ValueError(f"planes must have shape ({len(self)}, 3): (level, slope_x, "
                                 f"slope_y) per image; got {planes.shape}")
            models = planes
        if len(models) != len(self):
            raise ValueError(f"models must hold one fitted sky per image ({len(self)}); got {len(models)}")
        if gauge not in ("plane", "constant", None):
            raise ValueError(f"gauge must be 'plane', 'constant' or None; got {gauge!r}")
        residuals, coordinates = [], []
        ra0, dec0 = _mean_centre(self.wcs)
        for k, model in enumerate(models):
            ny, nx = self.images[k].shape
            y, x = np.mgrid[0:ny:step, 0:nx:step]
            if planes is not None:
                level, slope_x, slope_y = model
                model = level + slope_x * (x - (nx - 1) / 2) + slope_y * (y - (ny - 1) / 2)
            model = np.asarray(model, dtype=np.float64)
            model = model[::step, ::step] if model.shape == (ny, nx) else np.broadcast_to(model, x.shape)
            residuals.append((self.true_sky(k)[::step, ::step] - model).ravel())
            if gauge == "plane":
                xi, eta = _gnomonic(*self.wcs[k].all_pix2world(x.ravel(), y.ravel(), 0), ra0, dec0)
                coordinates.append(np.column_stack([np.ones(xi.size), xi, eta]))
        residual = np.concatenate(residuals)
        if gauge == "constant":
            return residual - residual.mean()
        if gauge == "plane":
            basis = np.concatenate(coordinates)
            residual = residual - basis @ np.linalg.lstsq(basis, residual, rcond=None)[0]
        return residual

    def __add__(self, other: Mosaic) -> Mosaic:
        if not isinstance(other, Mosaic):
            return NotImplemented
        clash = sorted(set(self.names) & set(other.names))
        if clash:
            raise ValueError(
                f"cannot add mosaics whose image names clash ({', '.join(clash[:3])}"
                f"{', ...' if len(clash) > 3 else ''}); build one of them with another "
                "prefix, e.g. make_mosaic(..., prefix='b')"
            )
        masks = None
        if self.masks is not None or other.masks is not None:
            masks = self._masks_or_all_good() + other._masks_or_all_good()
        groups = None
        if self.groups is not None or other.groups is not None:
            groups = self._groups_or_alone() + other._groups_or_alone()
        return Mosaic(
            images=self.images + other.images,
            wcs=self.wcs + other.wcs,
            masks=masks,
            sky=np.concatenate([self.sky, other.sky]),
            names=self.names + other.names,
            slope_x=np.concatenate([self.slope_x, other.slope_x]),
            slope_y=np.concatenate([self.slope_y, other.slope_y]),
            groups=groups,
        )

    def _groups_or_alone(self) -> list:
        return list(self.groups) if self.groups is not None else [None] * len(self)

    def _masks_or_all_good(self) -> list[np.ndarray]:
        if self.masks is not None:
            return list(self.masks)
        return [np.ones(image.shape, dtype=bool) for image in self.images]


# -- building mosaics ------------------------------------------------------------------------
def make_mosaic(
    layout: tuple[int, int] = (2, 3),
    *,
    shape: tuple[int, int] = (100, 100),
    overlap: float = 0.2,
    sky: float | Sequence[float] | None = None,
    groups: Sequence | None = None,
    noise: float = 0.0,
    gradient: float = 0.0,
    sources: int = 0,
    rotation: float = 0.0,
    jitter: float = 0.0,
    center: tuple[float, float] = (150.0, 2.0),
    pixel_scale: float = 0.1,
    tangent: str = "own",
    nan_fraction: float = 0.0,
    mask_fraction: float = 0.0,
    nebula: float = 0.0,
    dtype=np.float32,
    prefix: str = "img",
    seed=None,
) -> Mosaic:
    """A grid of overlapping images of known sky (constant or planes), with celestial TAN WCSs.

    Image ``k`` of the returned mosaic is at row ``k // cols``, column ``k % cols``
    (row-major).  Columns run towards decreasing RA (west, +x) and rows towards increasing
    Dec (north, +y) before rotation, as the pixels of one big image would.

    Parameters
    ----------
    layout : (int, int)
        Number of (rows, cols) of the grid.
    shape : (int, int)
        Shape (ny, nx) of every image, in pixels.
    overlap : float
        Fraction of the image size by which neighbours overlap along each axis: neighbours
        are ``nx * (1 - overlap)`` pixels apart in x (``ny * (1 - overlap)`` in y).  Must be
        below 1; 0 makes neighbours touch along a pixel edge, a negative value leaves gaps.
    sky : float or sequence of float, optional
        The constant sky of every image (a scalar) or of each image (one value per image,
        row-major).  Default: 100, 105, 110, ... (distinct levels, so that matching has
        something to find).  With `gradient`, the sky at each image's centre.
    groups : sequence, optional
        One label per image (None: alone), as ``skymatch(..., groups=)`` takes them: images
        with the same label share one sky, the sky of the group's first image (its constant
        and, with `gradient`, its plane on the sky).  The labels are kept in
        ``Mosaic.groups``.
    noise : float
        Standard deviation of the Gaussian pixel noise (0: none).
    gradient : float
        Scattered light: each image (each group) gets its own random sky plane, whose range
        across the image (max - min over its pixel centres) is drawn uniformly in
        ``[0, gradient]`` times ``max(noise, 1)``, in a uniformly random direction (0: a
        constant sky).  An image alone gets the plane in its own pixel frame; a group's
        images share one plane on the sky (drawn in the mosaic's tangent plane, its range
        across one image, the group's first), so their levels at their centres differ.  The
        true planes are ``Mosaic.sky`` (the level at each image's centre), ``slope_x`` and
        ``slope_y``.  The planes' random numbers come from their own stream
        (``Generator.spawn``): the rest of the mosaic is the same with or without them.
    sources : int
        Mean number of sources per image.  The sources are Gaussian blobs (sigma 1 to 2.5
        pixels, positive peaks of 5 to 500 times ``max(noise, 1)``) at random *sky*
        positions over the whole mosaic, rendered consistently in every image that covers
        them.
    rotation : float
        Position angle (degrees, north through east) of the images' +y axis at `center`.
        The whole mosaic turns rigidly about `center`: grid positions and each image's PC
        matrix (away from `center` the angle to local north changes as meridians converge).
    jitter : float
        Each image is shifted by a random offset drawn uniformly in ``[-jitter, jitter]``
        pixels along each axis of the grid.
    center : (float, float)
        (RA, Dec) in degrees of the centre of the grid.
    pixel_scale : float
        Pixel size in arcsec.  CDELT1 is negative: RA increases to the left (-x).
    tangent : {"own", "shared"}
        ``"own"``: each image is projected about its own centre (CRVAL at the image centre,
        CRPIX at its central pixel), as separate exposures are.  ``"shared"``: every image
        uses one tangent point (CRVAL = `center`) and differs only by CRPIX, so the mosaic is
        exactly a grid in one plane.  Both put the pixels at the same sky positions (to about
        1e-4 pixel for mosaics of a few arcminutes).
    nan_fraction : float
        Fraction of the pixels of each image set to NaN (chosen at random).
    mask_fraction : float
        Fraction of the pixels of each image marked bad (False) in a boolean mask.  When 0,
        ``masks`` is None.
    nebula : float
        Range (max - min, in data units) over the median image of a smooth diffuse emission
        added to every image: a random field of *sky position*, so that every image sees the
        same emission at the same place (0: none).  It is white noise on a coarse grid over
        the mosaic (a 16th of an image side apart), smoothed by Gaussians of a third and an
        eighth of an image side (the second at half the amplitude), shifted to be
        non-negative, and sampled through each image's WCS with a cubic spline.  Its random
        numbers are drawn after everything else, so the rest of the mosaic is the same with
        or without it.
    dtype : numpy floating dtype
        The dtype of the images.
    prefix : str
        Image names are ``prefix`` followed by the index, zero-padded to two digits or more.
    seed : int or numpy.random.Generator, optional
        Seed of `numpy.random.default_rng`; the same seed gives the same mosaic.

    Returns
    -------
    Mosaic

    Raises
    ------
    ValueError, TypeError
        For a parameter outside its documented range or of the wrong kind.

    Examples
    --------
    The reference's documented 2x3 example, and a mosaic disconnected from a 2x2 one:

    >>> m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115])
    >>> m.sky.tolist()
    [100.0, 120.0, 105.0, 110.0, 105.0, 115.0]
    >>> both = make_mosaic((2, 2), sky=[100, 120, 105, 110]) + make_mosaic(
    ...     (1, 3), sky=[95, 90, 100], center=(150.1, 2.0), prefix="b")
    >>> both.names
    ['img00', 'img01', 'img02', 'img03', 'b00', 'b01', 'b02']

    Noisy images with sources, a rotated mosaic and bad pixels:

    >>> m = make_mosaic((3, 3), shape=(64, 80), noise=1.0, sources=5, rotation=30,
    ...                 jitter=2, mask_fraction=0.01, seed=1)
    >>> m.images[0].shape, m.images[0].dtype.name, m.masks[0].dtype.name
    ((64, 80), 'float32', 'bool')

    Scattered light: a random plane per image of up to 4 noise sigma across it, and two
    images sharing one plane on the sky:

    >>> m = make_mosaic((2, 2), noise=1.0, gradient=4.0, groups=["a", "a", None, None], seed=3)
    >>> m.planes.shape, m.groups
    ((4, 3), ['a', 'a', None, None])
    >>> float(np.ptp(m.true_sky(2))) <= 4.0
    True

    A mosaic dominated by diffuse emission spanning 25 times the noise per image:

    >>> m = make_mosaic((2, 2), shape=(64, 64), noise=1.0, nebula=25.0, seed=1)
    >>> float(np.median([np.ptp(im - s) for im, s in zip(m.images, m.sky)])) > 25
    True
    """
    rows, cols = _positive_int_pair("layout", layout, "(rows, cols)")
    ny, nx = _positive_int_pair("shape", shape, "(ny, nx)")
    n = rows * cols
    overlap = _finite("overlap", overlap)
    if overlap >= 1:
        raise ValueError(
            "overlap is the fraction of the image size shared by neighbours and must be "
            f"below 1 (0: touching, negative: gaps); got {overlap}"
        )
    skies = _sky_levels(sky, n)
    labels = _group_labels(groups, n)
    noise = _non_negative("noise", noise)
    gradient = _non_negative("gradient", gradient)
    sources = _non_negative_int("sources", sources)
    rotation = _finite("rotation", rotation)
    jitter = _non_negative("jitter", jitter)
    ra0, dec0 = _sky_position(center)
    pixel_scale = _finite("pixel_scale", pixel_scale)
    if pixel_scale <= 0:
        raise ValueError(f"pixel_scale (arcsec per pixel) must be positive; got {pixel_scale}")
    if tangent not in TANGENTS:
        raise ValueError(f"tangent must be one of {TANGENTS}; got {tangent!r}")
    nan_fraction = _fraction("nan_fraction", nan_fraction)
    mask_fraction = _fraction("mask_fraction", mask_fraction)
    nebula = _non_negative("nebula", nebula)
    dtype = _float_dtype(dtype)
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str; got {type(prefix).__name__}")

    rng = np.random.default_rng(seed)
    centres = _grid_centres(rows, cols, (ny, nx), overlap)
    if jitter > 0:
        centres += rng.uniform(-jitter, jitter, size=centres.shape)
    cd = _cd_matrix(pixel_scale / 3600.0, rotation)
    frame = _tan_wcs((ra0, dec0), (1.0, 1.0), cd)  # pixel (0, 0) of the frame is `center`
    wcs = [_image_wcs(frame, centre, (ny, nx), tangent) for centre in centres]
    source_radec, peaks, sigmas = _draw_sources(rng, sources, centres, (ny, nx), frame, noise)
    first = _first_of_group(labels)
    skies = skies[first]
    slopes = np.zeros((n, 2))
    if gradient > 0:
        amplitude = gradient * max(noise, 1.0)
        skies, slopes = _draw_planes(rng.spawn(1)[0], skies, first, wcs, frame, amplitude)

    width = max(2, len(str(n - 1)))
    images, masks = [], []
    for k in range(n):
        image = _sky_and_noise(rng, (ny, nx), skies[k], noise, dtype)
        if slopes[k].any():
            image += _plane_image(0.0, slopes[k, 0], slopes[k, 1], (ny, nx)).astype(image.dtype)
        if peaks.size:
            x, y = wcs[k].all_world2pix(source_radec[0], source_radec[1], 0)
            _add_gaussians(image, x, y, peaks, sigmas)
        if nan_fraction > 0:
            image.flat[_random_pixels(rng, image.size, nan_fraction)] = np.nan
        images.append(image.astype(dtype, copy=False))
        if mask_fraction > 0:
            mask = np.ones((ny, nx), dtype=bool)
            mask.flat[_random_pixels(rng, mask.size, mask_fraction)] = False
            masks.append(mask)
    if nebula > 0:
        _add_nebula(rng, images, wcs, frame, nebula)
    return Mosaic(
        images=images,
        wcs=wcs,
        masks=masks if mask_fraction > 0 else None,
        sky=skies,
        names=[f"{prefix}{k:0{width}d}" for k in range(n)],
        slope_x=slopes[:, 0],
        slope_y=slopes[:, 1],
        groups=None if groups is None else list(groups),
    )


def _plane_image(level: float, slope_x: float, slope_y: float, shape: tuple[int, int]) -> np.ndarray:
    """``level + slope_x * (x - x0) + slope_y * (y - y0)`` on 0-based pixels, (x0, y0) the centre."""
    ny, nx = shape
    x = np.arange(nx, dtype=np.float64) - (nx - 1) / 2
    y = np.arange(ny, dtype=np.float64) - (ny - 1) / 2
    return level + slope_y * y[:, None] + slope_x * x[None, :]


def _mean_centre(wcs: list[WCS]) -> tuple[float, float]:
    """(RA, Dec) in degrees of the mean direction of the images' reference points."""
    ra, dec = np.radians([w.wcs.crval[0] for w in wcs]), np.radians([w.wcs.crval[1] for w in wcs])
    v = np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]).sum(axis=1)
    lon, lat = np.arctan2(v[1], v[0]), np.arctan2(v[2], np.hypot(v[0], v[1]))
    return float(np.degrees(lon)), float(np.degrees(lat))


def _first_of_group(labels: list) -> np.ndarray:
    """For each image, the index of the first image with its label (itself when alone)."""
    first, seen = np.arange(len(labels)), {}
    for k, label in enumerate(labels):
        if label is not None:
            first[k] = seen.setdefault(label, k)
    return first


def _draw_planes(rng, skies: np.ndarray, first: np.ndarray, wcs: list[WCS], frame: WCS,
                 amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """(levels at the centres, slopes (n, 2) in each image's pixels) of random sky planes.

    Each input (an image alone, a group) gets a direction and a range across one image; a
    group's plane lives in the mosaic frame (its tangent plane) and is carried into each
    member's pixels by the local derivatives of the member's WCS.
    """
    n = len(wcs)
    ny, nx = wcs[0].pixel_shape[::-1]
    inputs = np.unique(first)
    theta = rng.uniform(0.0, 2 * np.pi, size=inputs.size)
    spread = rng.uniform(0.0, amplitude, size=inputs.size)
    direction = np.column_stack([np.cos(theta), np.sin(theta)])
    reach = np.abs(direction[:, 0]) * (nx - 1) + np.abs(direction[:, 1]) * (ny - 1)
    size = np.divide(spread, reach, out=np.zeros_like(spread), where=reach > 0)  # 1x1 images: flat
    gradient = dict(zip(inputs.tolist(), direction * size[:, None]))
    levels, slopes = skies.astype(np.float64).copy(), np.zeros((n, 2))
    members = np.bincount(first, minlength=n)
    for k in range(n):
        g = gradient[int(first[k])]
        if members[first[k]] == 1:  # alone: the plane in its own pixels
            slopes[k] = g
            continue
        jacobian, centre = _to_frame(wcs[k], frame)
        _, origin = _to_frame(wcs[first[k]], frame)
        slopes[k] = jacobian.T @ g
        levels[k] += g @ (centre - origin)
    return levels, slopes


def _to_frame(w: WCS, frame: WCS) -> tuple[np.ndarray, np.ndarray]:
    """(d(frame pixel)/d(image pixel) at the image centre (2x2), the centre in frame pixels)."""
    ny, nx = w.pixel_shape[::-1]
    x0, y0 = (nx - 1) / 2, (ny - 1) / 2
    x = x0 + np.array([0.0, 1.0, -1.0, 0.0, 0.0])
    y = y0 + np.array([0.0, 0.0, 0.0, 1.0, -1.0])
    fx, fy = frame.all_world2pix(*w.all_pix2world(x, y, 0), 0)
    jacobian = np.array([[fx[1] - fx[2], fx[3] - fx[4]], [fy[1] - fy[2], fy[3] - fy[4]]]) / 2
    return jacobian, np.array([fx[0], fy[0]])


def _grid_centres(rows: int, cols: int, shape: tuple[int, int], overlap: float) -> np.ndarray:
    """Image centres (x, y) in the pixel frame of the whole mosaic, centred on (0, 0)."""
    ny, nx = shape
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    x = (col.ravel() - (cols - 1) / 2) * nx * (1 - overlap)
    y = (row.ravel() - (rows - 1) / 2) * ny * (1 - overlap)
    return np.column_stack([x, y]).astype(np.float64)


def _cd_matrix(scale: float, rotation: float) -> np.ndarray:
    """CD (degrees per pixel) with +x west and +y at position angle `rotation` (degrees)."""
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    return scale * np.array([[-c, s], [s, c]])


def _tan_wcs(crval, crpix, cd: np.ndarray, shape: tuple[int, int] | None = None) -> WCS:
    """A celestial TAN WCS written as CDELT (CDELT1 negative) and PC."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    scale = np.sqrt(abs(np.linalg.det(cd)))
    cdelt = np.array([-scale, scale])
    w.wcs.cdelt = cdelt
    w.wcs.pc = cd / cdelt[:, None]
    w.wcs.crval = [float(crval[0]), float(crval[1])]
    w.wcs.crpix = [float(crpix[0]), float(crpix[1])]
    if shape is not None:
        w.pixel_shape = (shape[1], shape[0])
    w.wcs.set()
    return w


def _image_wcs(frame: WCS, centre: np.ndarray, shape: tuple[int, int], tangent: str) -> WCS:
    """The WCS of the image whose central pixel sits at `centre` of the mosaic frame."""
    ny, nx = shape
    mid = np.array([(nx - 1) / 2, (ny - 1) / 2])
    if tangent == "shared":
        return _tan_wcs(frame.wcs.crval, mid - centre + 1, frame.pixel_scale_matrix, shape)
    ra, dec = frame.wcs_pix2world(centre[0], centre[1], 0)
    return _tan_wcs((ra, dec), mid + 1, _local_cd(frame, centre, (ra, dec)), shape)


def _local_cd(frame: WCS, at: np.ndarray, tangent_point) -> np.ndarray:
    """The frame's CD seen from a tangent plane about `tangent_point` (central differences).

    Projecting about the image centre turns the frame's axes slightly (meridians converge)
    and scales them; matching the first derivatives keeps the two WCSs within ~1e-4 pixel.
    """
    steps = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    ra, dec = frame.wcs_pix2world(at[0] + steps[:, 0], at[1] + steps[:, 1], 0)
    xi, eta = _gnomonic(ra, dec, *tangent_point)
    return np.array([[xi[0] - xi[1], xi[2] - xi[3]], [eta[0] - eta[1], eta[2] - eta[3]]]) / 2


def _gnomonic(ra, dec, ra0, dec0) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (xi east, eta north; degrees) about (ra0, dec0)."""
    a, d = np.radians(ra) - np.radians(ra0), np.radians(dec)
    d0 = np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    xi = np.cos(d) * np.sin(a) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def _draw_sources(rng, per_image: int, centres, shape, frame: WCS, noise: float):
    """Random sources over the mosaic's bounding box: ((ra, dec), peaks, sigmas)."""
    if per_image == 0:
        return (np.empty(0), np.empty(0)), np.empty(0), np.empty(0)
    half = np.array([shape[1], shape[0]]) / 2
    low, high = centres.min(axis=0) - half, centres.max(axis=0) + half
    count = round(per_image * np.prod(high - low) / (shape[0] * shape[1]))
    xy = rng.uniform(low, high, size=(count, 2))
    peaks = max(noise, 1.0) * np.exp(rng.uniform(*np.log(SOURCE_PEAK), size=count))
    sigmas = rng.uniform(*SOURCE_SIGMA, size=count)
    return frame.wcs_pix2world(xy[:, 0], xy[:, 1], 0), peaks, sigmas


def _add_gaussians(image: np.ndarray, x, y, peaks, sigmas) -> None:
    """Add circular Gaussians centred at pixel (x, y), each on a stamp of +-5 sigma."""
    ny, nx = image.shape
    for x0, y0, peak, sigma in zip(x, y, peaks, sigmas):
        r = SOURCE_RADIUS * sigma
        x1, x2 = max(int(np.floor(x0 - r)), 0), min(int(np.ceil(x0 + r)) + 1, nx)
        y1, y2 = max(int(np.floor(y0 - r)), 0), min(int(np.ceil(y0 + r)) + 1, ny)
        if x1 >= x2 or y1 >= y2:
            continue
        gx = np.exp(-0.5 * ((np.arange(x1, x2) - x0) / sigma) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y1, y2) - y0) / sigma) ** 2)
        image[y1:y2, x1:x2] += peak * np.outer(gy, gx)


_NEBULA_GRID = 16  # coarse grid points per image side
_NEBULA_SCALES = ((1 / 3, 1.0), (1 / 8, 0.5))  # (Gaussian sigma in image sides, amplitude)


def _add_nebula(rng, images: list[np.ndarray], wcs: list[WCS], frame: WCS, amplitude: float):
    """Add the same smooth random field of sky position to every image (see `make_mosaic`)."""
    from scipy import ndimage

    shape = images[0].shape
    coords = [_frame_pixels(w, frame, shape) for w in wcs]
    step = max(shape) / _NEBULA_GRID
    lo = np.min([c.reshape(2, -1).min(axis=1) for c in coords], axis=0) - 8 * step
    hi = np.max([c.reshape(2, -1).max(axis=1) for c in coords], axis=0) + 8 * step
    size = np.ceil((hi - lo) / step).astype(int) + 1  # (x, y)
    field = np.zeros((size[1], size[0]))
    for sigma, weight in _NEBULA_SCALES:
        smooth = ndimage.gaussian_filter(rng.standard_normal(field.shape), sigma * _NEBULA_GRID)
        field += weight * smooth / smooth.std()
    spline = ndimage.spline_filter(field, order=3)
    values = [
        ndimage.map_coordinates(spline, [(c[1] - lo[1]) / step, (c[0] - lo[0]) / step],
                                order=3, prefilter=False)
        for c in coords
    ]
    scale = amplitude / np.median([np.ptp(v) for v in values])
    low = min(float(v.min()) for v in values)
    for image, v in zip(images, values):
        image += ((v - low) * scale).astype(image.dtype)


def _frame_pixels(w: WCS, frame: WCS, shape: tuple[int, int]) -> np.ndarray:
    """Mosaic-frame pixel coordinates (2, ny, nx) of every pixel centre of an image."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    ra, dec = w.all_pix2world(x, y, 0)
    return np.stack(frame.all_world2pix(ra, dec, 0))


def _sky_and_noise(rng, shape, sky: float, noise: float, dtype: np.dtype) -> np.ndarray:
    """A constant-sky image with Gaussian noise, in float32 or float64 (the closest to dtype)."""
    work = dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.float64
    if noise == 0:
        return np.full(shape, sky, dtype=work)
    image = rng.standard_normal(shape, dtype=work)
    image *= noise
    image += sky
    return image


def _random_pixels(rng, size: int, fraction: float) -> np.ndarray:
    """round(fraction * size) distinct flat pixel indices."""
    return rng.choice(size, size=round(fraction * size), replace=False)


# -- input checks ----------------------------------------------------------------------------
def _finite(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    return float(value)


def _non_negative(name: str, value) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def _fraction(name: str, value) -> float:
    value = _finite(name, value)
    if not 0 <= value <= 1:
        raise ValueError(f"{name} is a fraction of the pixels and must be in [0, 1]; got {value}")
    return value


def _non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return int(value)


def _positive_int_pair(name: str, value, meaning: str) -> tuple[int, int]:
    ok = (
        isinstance(value, (Sequence, np.ndarray))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    )
    if not ok or min(value) < 1:
        raise ValueError(f"{name} must be two positive integers {meaning}; got {value!r}")
    return int(value[0]), int(value[1])


def _sky_levels(sky, n: int) -> np.ndarray:
    if sky is None:
        return 100.0 + 5.0 * np.arange(n)
    try:
        levels = np.asarray(sky, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"sky must be a number or a sequence of numbers; got {sky!r}") from None
    if levels.ndim == 0:
        levels = np.full(n, float(levels))
    if levels.shape != (n,):
        raise ValueError(
            f"sky must be a scalar or one value per image ({n} for this layout); "
            f"got {levels.size} values"
        )
    if not np.isfinite(levels).all():
        raise ValueError(f"sky values must be finite; got {levels.tolist()}")
    return levels


def _group_labels(groups, n: int) -> list:
    """The labels of `groups` (None: every image alone), one per image."""
    if groups is None:
        return [None] * n
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (Sequence, np.ndarray)):
        raise TypeError(f"groups must be a sequence of one label per image; got {groups!r}")
    if len(groups) != n:
        raise ValueError(f"groups must have one label per image ({n} for this layout); "
                         f"got {len(groups)}")
    labels = list(groups)
    for label in labels:
        if label is not None:
            hash(label)  # a TypeError naming the type for lists and other unhashables
    return labels


def _zeros_or_array(values, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _sky_position(center) -> tuple[float, float]:
    if not (isinstance(center, (Sequence, np.ndarray)) and len(center) == 2):
        raise ValueError(f"center must be (RA, Dec) in degrees; got {center!r}")
    ra, dec = _finite("center RA", center[0]), _finite("center Dec", center[1])
    if not -90 < dec < 90:
        raise ValueError(f"center Dec must be strictly between -90 and 90 degrees; got {dec}")
    return ra, dec


def _float_dtype(dtype) -> np.dtype:
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a numpy floating dtype; got {dtype!r}") from None
    if dtype.kind != "f":
        raise ValueError(
            f"dtype must be a floating-point dtype (the images hold NaN and fractional "
            f"values); got {dtype.name}"
        )
    return dtype


def tiling_pairs(rows: int, cols: int, rng: np.random.Generator, *, holes: float = 0.0) -> np.ndarray:
    """The overlap graph of a ``rows`` x ``cols`` tiling with 8 neighbours per image.

    For solves without pixels (tests and benchmarks of `skymatch_nb_ui.engine.lstsq`): the
    inputs are numbered in a random order, and a fraction ``holes`` of the pairs is dropped
    (which can split the graph into components).

    Returns
    -------
    ndarray of int, shape (pairs, 2)
        Each pair ``(i, j)`` with ``i < j``.

    Examples
    --------
    >>> tiling_pairs(2, 2, np.random.default_rng(0)).shape  # 2 + 2 sides, 2 diagonals
    (6, 2)
    """
    idx = np.arange(rows * cols).reshape(rows, cols)
    pairs = np.vstack([
        np.column_stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()]),
        np.column_stack([idx[:-1].ravel(), idx[1:].ravel()]),
        np.column_stack([idx[:-1, :-1].ravel(), idx[1:, 1:].ravel()]),
        np.column_stack([idx[:-1, 1:].ravel(), idx[1:, :-1].ravel()]),
    ])
    pairs = rng.permutation(rows * cols)[pairs]
    pairs = pairs[rng.random(len(pairs)) >= holes]
    return np.sort(pairs, axis=1)
