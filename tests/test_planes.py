"""skymodel="plane": known answers, gauge, fallbacks, groups, distorted WCS, calibrated errors."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.wcs import WCS

from skymatch_nb_ui import ImageCollection, SkyMatcher, skymatch
from skymatch_nb_ui.engine import SkyMatchParams
from skymatch_nb_ui.engine.geometry import CelestialWCS, lonlat_to_xyz
from skymatch_nb_ui.engine.planes import Frame, plane_values, solve_plane_offsets
from skymatch_nb_ui.engine.result import subtracted_copy
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.testing.instruments import nircam_like_gwcs

#: Compare by levels (the default before ``compare`` existed; noiseless images give no pixel
#: differences: their steepness check needs a pixel noise).
LEVELS = {"compare": "levels"} if "compare" in SkyMatchParams.specs() else {}


def _estimates(result) -> np.ndarray:
    return np.column_stack([result.sky, result.plane.slope_x, result.plane.slope_y])


def _gauge(planes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Planes of images of one orientation less their mean plane (the match gauge)."""
    out = planes.copy()
    slope = out[:, 1:].mean(axis=0)
    out[:, 1:] -= slope
    out[:, 0] -= out[:, 0].mean() + (centres - centres.mean(axis=0)) @ slope
    return out


def _grid_centres(layout, shape, overlap) -> np.ndarray:
    rows, cols = layout
    ny, nx = shape
    col, row = np.meshgrid(np.arange(cols), np.arange(rows))
    return np.column_stack([(col.ravel() - (cols - 1) / 2) * nx * (1 - overlap),
                            (row.ravel() - (rows - 1) / 2) * ny * (1 - overlap)])


# -- the model ---------------------------------------------------------------------------------
def test_plane_values_is_the_model_about_the_image_centre():
    p = plane_values(5.0, 0.5, -2.0, (3, 4))
    y, x = np.mgrid[0:3, 0:4]
    np.testing.assert_allclose(p, 5.0 + 0.5 * (x - 1.5) - 2.0 * (y - 1.0))
    assert p.mean() == pytest.approx(5.0)


def test_subtracted_copy_subtracts_the_plane_and_keeps_the_input():
    image = np.full((4, 6), 10.0, np.float32)
    out = subtracted_copy(image, 1.0, True, slope_x=0.25, slope_y=1.0)
    assert out.dtype == np.float32 and np.all(image == 10.0)
    np.testing.assert_allclose(out, 10.0 - plane_values(1.0, 0.25, 1.0, (4, 6)), rtol=1e-6)


def test_skymodel_is_a_validated_parameter_with_a_spec():
    spec = SkyMatchParams.specs()["skymodel"]
    assert spec.choices == ("constant", "plane") and spec.default == "constant"
    assert SkyMatchParams(skymodel="Plane").skymodel == "plane"
    with pytest.raises(ValueError, match="skymodel must be one of"):
        SkyMatchParams(skymodel="planes")


def test_sparse_solve_recovers_planes_of_a_grid_exactly_up_to_the_gauge():
    rng = np.random.default_rng(1)
    side = 9  # 81 inputs: several blocks of the block-tridiagonal solve
    n = side * side
    centres = np.array([(k % side * 100.0, k // side * 100.0) for k in range(n)])
    truth = np.column_stack([rng.normal(0, 5, n), rng.normal(0, 0.01, (n, 2))])
    g, h, q = [], [], []
    for k in range(n):
        r, c = divmod(k, side)
        for nb in ([k + 1] if c + 1 < side else []) + ([k + side] if r + 1 < side else []):
            mid = (centres[k] + centres[nb]) / 2
            along = (centres[nb] - centres[k]) / 100
            across = np.array([-along[1], along[0]])
            for a in np.linspace(-40, 40, 5):
                for b in (-8, 8):
                    g.append(k), h.append(nb), q.append(mid + a * across + b * along)
    g, h, q = np.array(g), np.array(h), np.array(q)

    def at(c, k, p):
        return c[k, 0] + np.einsum("ij,ij->i", c[k, 1:], p - centres[k])

    d = at(truth, g, q) - at(truth, h, q)
    sol = solve_plane_offsets(n, g, h, q, d, np.ones(len(d)), centres)
    np.testing.assert_allclose(sol.coef, _gauge(truth, centres), atol=1e-7)
    assert np.abs(sol.coef[:, 1:].mean(axis=0)).max() < 1e-12  # no net slope
    assert sol.used.all() and not sol.slope_free.any()


# -- known answers on mosaics -------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"rotation": 33.0, "jitter": 3.0}, {"tangent": "shared"}])
def test_noiseless_planes_are_recovered(kw):
    m = make_mosaic((2, 3), shape=(160, 200), gradient=5.0, seed=4, dtype=np.float64, **kw)
    r = skymatch(m.images, m.wcs, skymethod="global+match", skystat="mean", skymodel="plane", **LEVELS)
    assert (r.plane.plane_fallback == "").all() and r.valid.all()
    np.testing.assert_allclose(_estimates(r), m.planes, atol=1e-6)
    np.testing.assert_allclose(r.local, m.sky, atol=1e-6)  # the local planes at the centres
    assert np.nanmax(r.plane.resid_gradient) < 1e-7 * np.max(r.plane.gradient)
    local = skymatch(m.images, m.wcs, skymethod="local", skystat="median", skymodel="plane", **LEVELS)
    np.testing.assert_allclose(_estimates(local), m.planes, atol=1e-6)


def test_match_planes_are_the_truth_up_to_a_common_plane_and_match_down():
    layout, shape, overlap = (2, 3), (160, 200), 0.2
    m = make_mosaic(layout, shape=shape, overlap=overlap, gradient=5.0, seed=5, dtype=np.float64)
    matcher = SkyMatcher(m.images, m.wcs)
    down = matcher.run(skymethod="match", skystat="mean", skymodel="plane", **LEVELS)
    up = matcher.run(skymethod="match", skystat="mean", skymodel="plane", match_down=False,
                     **LEVELS)
    est = _estimates(down)
    assert est[:, 0].min() == pytest.approx(0.0, abs=1e-12)
    assert _estimates(up)[:, 0].max() == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(est[:, 1:] - _estimates(up)[:, 1:], 0.0, atol=1e-12)
    # the gauge: no net slope; otherwise the truth
    centres = _grid_centres(layout, shape, overlap)
    est[:, 0] -= est[:, 0].mean()
    np.testing.assert_allclose(est, _gauge(m.planes, centres), atol=1e-6)
    assert np.abs(est[:, 1:].mean(axis=0)).max() < 1e-12


def test_constant_sky_gives_zero_slopes_within_errors_and_the_same_constants():
    pulls, plane_err, fitted_err, constant_err = [], [], [], []
    for seed in range(12):
        m = make_mosaic((2, 3), shape=(160, 160), overlap=0.25, noise=1.0, seed=seed)
        matcher = SkyMatcher(m.images, m.wcs)
        plane = matcher.run(skymethod="match", skystat="median", skymodel="plane", **LEVELS)
        fitted = matcher.run(skymethod="match", skystat="median", skymodel="plane",
                             slope_significance=0, **LEVELS)
        constant = matcher.run(skymethod="match", skystat="median", **LEVELS)
        # the slope test finds no gradient: the constants' levels, slopes 0 with errors
        assert plane.plane.flat and not fitted.plane.flat
        np.testing.assert_array_equal(plane.sky, constant.sky)
        np.testing.assert_array_equal(plane.sky_err, constant.sky_err)
        assert np.all(plane.plane.slope_x == 0) and np.all(plane.plane.slope_y == 0)
        np.testing.assert_array_equal(plane.plane.cov[:, 1:, 1:], fitted.plane.cov[:, 1:, 1:])
        # the fitted slopes are zero within their errors
        err = np.sqrt(np.stack([fitted.plane.cov[:, 1, 1], fitted.plane.cov[:, 2, 2]], axis=1))
        pulls.append(np.column_stack([fitted.plane.slope_x, fitted.plane.slope_y]) / err)
        truth = m.sky - m.sky.mean()
        plane_err.append(np.std(plane.sky - plane.sky.mean() - truth))
        fitted_err.append(np.std(fitted.sky - fitted.sky.mean() - truth))
        constant_err.append(np.std(constant.sky - constant.sky.mean() - truth))
    pulls = np.concatenate(pulls)
    assert np.abs(pulls).max() < 4.5
    assert 0.7 < pulls.std() < 1.3
    # constants as good as skymodel="constant"'s (issue 13); the fitted planes' levels at the
    # centres are extrapolations from the overlaps, several times less precise
    assert np.mean(plane_err) <= 1.2 * np.mean(constant_err)
    assert np.mean(fitted_err) > 2 * np.mean(constant_err)


def dithered_camera(exposures, *, gradient=0.0, stars=5):
    """A 6 x 10 CCD camera (128 x 256 pixels, 3% gaps), dithered by up to a CCD's width:
    each pixel in the overlaps of several other exposures' CCDs; the true skies."""
    rng = np.random.default_rng(0)
    images, wcs, sky = [], [], []
    for e in range(exposures):
        dx, dy = rng.uniform(-60, 60, 2) / 3600
        m = make_mosaic((6, 10), shape=(128, 256), overlap=-0.03, noise=1.0, sources=stars,
                        sky=100 + 5 * e + rng.normal(0, 0.5, 60), gradient=gradient,
                        center=(150.0 + dx, 2.0 + dy), pixel_scale=0.26, seed=e,
                        rotation=rng.uniform(-0.2, 0.2))
        images += m.images
        wcs += m.wcs
        sky += list(m.sky)
    return images, wcs, np.array(sky)


@pytest.mark.parametrize("compare", ["levels", "differences"])
def test_flat_skies_with_stars_keep_their_constants_at_camera_density(compare):
    """Stars leave in the cells what does not cancel between two images (interpolated peaks,
    clipped wings); where each pixel is in several overlaps the plane fit's residuals hide it
    (they count a cell's noise as often as its overlaps), and the slopes of 240 dithered
    CCDs' flat skies looked significant (chi-square 1.40 times their degrees of freedom):
    planes whose levels were several times less precise than the constants'.  The cells' scatter
    about a plane per pair measures it (`plane_match._scene_scale`)."""
    images, wcs, _ = dithered_camera(4)
    matcher = SkyMatcher(images, wcs)
    run = dict(skymethod="match", skystat="mode", compare=compare)
    plane = matcher.run(skymodel="plane", **run)
    assert plane.plane.flat
    np.testing.assert_array_equal(plane.sky, matcher.run(**run).sky)


# (6 exposures of this dither pattern leave 11 parts: a few edge CCDs overlap no other exposure)
@pytest.mark.filterwarnings("ignore::skymatch_nb_ui.DisconnectedMosaicWarning")
def test_the_slope_test_counts_shared_pixels_as_often_as_their_overlaps():
    # The solve counts a cell's noise (1 + m) / 2 times for pixels in m overlaps
    # (`plane_match._inflation`); what stars leave in the cells is shared by those overlaps
    # as the noise is not, and with the solve's variances the slope test kept planes on the
    # flat skies of 360 CCDs (6 exposures; 600: levels 5 times less precise).  It counts the
    # noise m times.
    images, wcs, _ = dithered_camera(6)
    plane = SkyMatcher(images, wcs).run(skymethod="match", skystat="mode", skymodel="plane")
    assert plane.plane.flat


@pytest.mark.filterwarnings("ignore::skymatch_nb_ui.DisconnectedMosaicWarning")
@pytest.mark.parametrize("exposures", [4, 6])
def test_the_slope_test_keeps_a_weak_real_gradient_among_stars_at_camera_density(exposures):
    images, wcs, _ = dithered_camera(exposures, gradient=0.3)
    plane = SkyMatcher(images, wcs).run(skymethod="match", skystat="mode", skymodel="plane")
    assert not plane.plane.flat


def test_the_slope_test_keeps_a_weak_real_gradient():
    layout, shape, overlap = (3, 3), (200, 200), 0.2
    m = make_mosaic(layout, shape=shape, overlap=overlap, noise=1.0, gradient=0.6, seed=3)
    matcher = SkyMatcher(m.images, m.wcs)
    plane = matcher.run(skymethod="match", skystat="median", skymodel="plane", **LEVELS)
    constant = matcher.run(skymethod="match", skystat="median", **LEVELS)
    assert not plane.plane.flat and np.all(plane.plane.slope_x != 0)
    planes = _estimates(plane)
    model_plane = m.residual_sky(planes=planes, gauge="plane")
    model_constant = m.residual_sky(constant.sky, gauge="plane")
    assert np.std(model_plane) < np.std(model_constant)  # the gradient was worth fitting


def test_slope_significance_is_a_probability():
    assert SkyMatchParams().slope_significance == 1e-3
    with pytest.raises(ValueError, match="slope_significance must be a probability"):
        SkyMatchParams(slope_significance=2.0)
    with pytest.raises(ValueError, match="slope_significance"):
        SkyMatchParams(slope_significance=-0.1)


def test_errors_are_calibrated_over_noise_realisations():
    spread = _plane_pull_spread((2, 3), (160, 160), 0.25, 40, dtype=np.float64)
    assert np.all((0.8 <= spread) & (spread <= 1.25)), spread


def test_errors_are_calibrated_on_a_stack_of_dithers():
    # Nine dithers of one field (90% overlaps): each pixel is in the overlaps of the 8 other
    # inputs, and so in 8 equations solved as if independent.  Its cells' variances were
    # multiplied by 8, which counted a stack's noise twice (pulls 0.63-0.72); by (1 + 8) / 2,
    # exact where the inputs over a pixel all overlap each other: 0.83-0.96.
    spread = _plane_pull_spread((3, 3), (160, 160), 0.9, 12, sources=10)
    assert np.all((0.75 <= spread) & (spread <= 1.25)), spread


def _plane_pull_spread(layout, shape, overlap, seeds, **mosaic) -> np.ndarray:
    """The spread of (level, slope_x, slope_y) pulls in the match gauge over ``seeds`` mosaics
    with gradients of up to 3 sigma (levels compared, median)."""
    centres = _grid_centres(layout, shape, overlap)
    pulls = []
    for seed in range(seeds):
        m = make_mosaic(layout, shape=shape, overlap=overlap, noise=1.0, gradient=3.0, seed=seed,
                        **mosaic)
        r = skymatch(m.images, m.wcs, skymethod="match", skystat="median", skymodel="plane", **LEVELS)
        assert not r.plane.flat
        est = _estimates(r)
        est[:, 0] -= est[:, 0].mean()
        err = np.sqrt(np.einsum("kii->ki", r.plane.cov))
        pulls.append((est - _gauge(m.planes, centres)) / err)
    return np.concatenate(pulls).std(axis=0)


# -- groups, orientations, distortion -----------------------------------------------------------
def _sky_plane_images(wcs, shape, planes, frame):
    """Images whose every pixel is its input's plane on the sky (level, east, north per arcsec)."""
    images = []
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    for w, (level, east, north) in zip(wcs, planes):
        lon, lat = CelestialWCS(w).pixel_to_lonlat(x.ravel(), y.ravel())
        q = frame.project(lon, lat)
        images.append((level + q @ np.array([east, north])).reshape(shape))
    return images


def _tan(center, roll, shape, scale=0.2):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = center
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    c, s = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    w.wcs.cd = scale / 3600 * np.array([[-c, s], [s, c]])
    return w


@pytest.mark.parametrize("maker", ["tan", "nircam"])
def test_a_group_shares_one_plane_on_the_sky_across_rotated_detectors(maker):
    shape = (200, 200)
    offsets = [(-15, -12), (15, -12), (-15, 12), (15, 12)]  # arcsec: four overlapping detectors
    rolls = [0.0, 35.0, 80.0, 150.0]
    centers = [(150.0 + dx / 3600 / np.cos(np.radians(2.0)), 2.0 + dy / 3600) for dx, dy in offsets]
    if maker == "tan":
        wcs = [_tan(c, r, shape) for c, r in zip(centers, rolls)]
    else:
        wcs = [nircam_like_gwcs(c, roll=r, shape=shape, pixel_scale=0.2, distortion=4.0)
               for c, r in zip(centers, rolls)]
    groups = ["A", "A", "B", "B"]
    frame = Frame.at(lonlat_to_xyz(np.array([150.0]), np.array([2.0])))
    sky = {"A": (10.0, 0.05, -0.03), "B": (12.0, -0.02, 0.04)}  # per arcsec east, north
    images = _sky_plane_images(wcs, shape, [sky[g] for g in groups], frame)
    r = skymatch(images, wcs, groups=groups, skymethod="global+match", skystat="mean",
                 skymodel="plane", **LEVELS)
    assert r.valid.all() and (r.plane.plane_fallback == "").all()
    span = max(np.ptp(im) for im in images)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    design = np.column_stack([np.ones(x.size), x.ravel() - 99.5, y.ravel() - 99.5])
    for k, image in enumerate(images):
        fitted = plane_values(r.sky[k], r.plane.slope_x[k], r.plane.slope_y[k], shape)
        # a plane on the sky is a plane in the pixels of a TAN image; through a distorted
        # WCS it is not: then the fitted pixel plane is about as close as the best one
        best = np.linalg.lstsq(design, image.ravel(), rcond=None)[0]
        floor = np.abs(image.ravel() - design @ best).max()
        assert np.abs(image - fitted).max() < 1.5 * floor + 1e-5 * span, k
    # one plane per group: the same gradient on the sky for both detectors
    for a, b in ((0, 1), (2, 3)):
        assert r.plane.gradient[a] == pytest.approx(r.plane.gradient[b], rel=1e-9)
        assert r.plane.gradient_pa[a] == pytest.approx(r.plane.gradient_pa[b], abs=1e-7)
    east, north = sky["A"][1:]
    assert r.plane.gradient[0] == pytest.approx(np.hypot(east, north), rel=1e-3)
    assert r.plane.gradient_pa[0] == pytest.approx(np.degrees(np.arctan2(east, north)) % 360, abs=0.1)


def _sky_gradients(coll_result, hdf) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the fitted gradient on the sky (east, north per arcsec) and its covariance.

    A plane of slopes ``s`` (per pixel) is the gradient ``g`` with ``s = J^T g``, ``J`` the
    chip's d(xi, eta)/d(x, y) at its centre (from the dataset's standard coordinates).
    """
    gradients, covs = [], []
    for k in range(len(hdf)):
        xi, eta = hdf.standard_coordinates(k)
        ny, nx = xi.shape
        y, x = ny // 2, nx // 2
        jac = np.array([[xi[y, x + 1] - xi[y, x - 1], xi[y + 1, x] - xi[y - 1, x]],
                        [eta[y, x + 1] - eta[y, x - 1], eta[y + 1, x] - eta[y - 1, x]]]) / 2
        to_sky = np.linalg.inv(jac.T)
        s = np.array([coll_result.slope_x.values[k], coll_result.slope_y.values[k]])
        gradients.append(to_sky @ s)
        covs.append(to_sky @ coll_result.sky_cov.values[k, 1:, 1:] @ to_sky.T)
    return np.array(gradients), np.array(covs)


def _assert_gradients_within_errors(planes, hdf, truth, label=""):
    """Every two exposures' fitted gradients on the sky, less the truth, within 5 errors (chi2
    of 2 dof < 25): the truth up to a common gradient, which no overlap sees."""
    fitted, cov = _sky_gradients(planes, hdf)
    off, err = fitted[0::2] - np.array(truth), cov[0::2]
    for e in range(len(off)):
        for f in range(e + 1, len(off)):
            d = off[e] - off[f]
            assert d @ np.linalg.solve(err[e] + err[f], d) < 25.0, (label, e, f, d)
    return fitted


def _sky_left(hdf, result) -> float:
    """rms (noise sigma) of the true sky less the fitted planes, less a common plane on the sky."""
    zeros = np.zeros(len(hdf))
    planes = np.column_stack([result.sky, result.slope_x if "slope_x" in result else zeros,
                              result.slope_y if "slope_y" in result else zeros])
    return float(np.sqrt(np.mean(hdf.residual_sky(planes=planes) ** 2))) / hdf.noise


@pytest.mark.parametrize("compare", ["differences", "levels"])
def test_real_pixels_through_acs_distortion_give_each_exposures_gradient_on_the_sky(compare):
    """The Hubble Deep Field through ACS/WFC's SIP distortion, a plane on the sky per exposure.

    Both chips of an exposure share its plane (a group): one gradient on the sky for the
    two, found within its errors up to the common plane no overlap sees, and the seams of
    constant skies gone.
    """
    pytest.importorskip("skimage")
    from skymatch_nb_ui.datasets import hubble_deep_field_exposures

    truth = [(0.06, -0.02), (-0.05, 0.04), (0.02, 0.07), (-0.03, -0.06)]  # /arcsec: ~3 sigma a chip
    hdf = hubble_deep_field_exposures(gradient=truth, seed=2)
    coll = hdf.collection(group_by="exposure")
    planes = coll.skymatch(skymethod="match", skymodel="plane", compare=compare)
    constants = coll.skymatch(skymethod="match", compare=compare)
    assert planes.attrs["plane_flat"] == 0 and (planes.plane_fallback.values == "").all()
    fitted = _assert_gradients_within_errors(planes, hdf, truth, compare)
    # one plane per exposure: the same gradient on the sky from both chips' slopes
    np.testing.assert_allclose(fitted[0::2], fitted[1::2], rtol=1e-3, atol=1e-6)
    assert planes.gradient.values[0::2] == pytest.approx(planes.gradient.values[1::2], rel=1e-9)
    # and what is left of the sky after the planes, against the constants' seams
    left_planes, left_constants = _sky_left(hdf, planes), _sky_left(hdf, constants)
    assert left_planes < 0.05 and left_planes < left_constants / 10, (left_planes, left_constants)


def test_through_acs_distortion_the_pixel_planes_are_as_good_as_pixel_planes_can_be():
    """A plane on the sky is curved in a distorted chip's pixels: the plane subtracted in the
    pixels is the least-squares one over the chip (not the sky plane's tangent at the centre),
    so with little noise it leaves what the best pixel plane to the true sky leaves."""
    pytest.importorskip("skimage")
    from skymatch_nb_ui.datasets import hubble_deep_field_exposures

    truth = [(0.06, -0.02), (-0.05, 0.04), (0.02, 0.07), (-0.03, -0.06)]
    hdf = hubble_deep_field_exposures(gradient=truth, seed=2, noise=1.0)
    floor = np.sqrt(np.mean(hdf.residual_sky(planes=hdf.best_pixel_planes()) ** 2)) / hdf.noise
    planes = hdf.collection(group_by="exposure").skymatch(skymethod="match", skymodel="plane")
    left = _sky_left(hdf, planes)
    # measured 1.06x the floor (the sky plane's level at each chip's exact centre: 1.36x)
    assert left < 1.15 * floor, (left, floor)


def test_real_pixels_with_cosmic_rays_and_a_bad_column_keep_each_exposures_gradient():
    """The same exposures as they come off a detector: 1% of the pixels hit by cosmic rays
    (50-2000 counts, one image each), and a dead column (NaN) per chip."""
    pytest.importorskip("skimage")
    from skymatch_nb_ui.datasets import hubble_deep_field_exposures

    truth = [(0.06, -0.02), (-0.05, 0.04), (0.02, 0.07), (-0.03, -0.06)]
    hdf = hubble_deep_field_exposures(gradient=truth, seed=2)
    rng = np.random.default_rng(7)
    images = []
    for image in hdf.images:
        image = image.copy()
        hit = rng.random(image.shape) < 0.01
        image[hit] += rng.uniform(50.0, 2000.0, int(hit.sum())).astype(np.float32)
        image[:, rng.integers(0, image.shape[1])] = np.nan
        images.append(image)
    kept = [image.copy() for image in images]
    coll = ImageCollection.from_arrays(images, hdf.wcs, names=hdf.names,
                                       groups=[m["exposure"] for m in hdf.meta])
    planes = coll.skymatch(skymethod="match", skymodel="plane")
    assert planes.valid.all() and (planes.plane_fallback.values == "").all()
    _assert_gradients_within_errors(planes, hdf, truth)
    assert _sky_left(hdf, planes) < 0.05
    for image, given in zip(images, kept):  # the caller's arrays are not touched
        np.testing.assert_array_equal(image, given)


# -- fallbacks -----------------------------------------------------------------------------------
def test_a_thin_overlap_counts_as_a_constant_with_a_reason():
    m = make_mosaic((1, 2), shape=(200, 200), overlap=0.08, noise=0.1, seed=2)  # 16 px wide
    r = skymatch(m.images, m.wcs, skystat="median", skymodel="plane", **LEVELS)
    assert r.plane.plane_fallback[0].startswith("overlap too thin")
    assert np.isnan(r.plane.resid_gradient[0]) and r.plane.cells[0] == 1
    assert r.valid.all()
    assert all("slopes are not determined" in text for text in r.reason)
    assert np.isnan(r.plane.cov[:, 1, 1]).all() and np.isfinite(r.sky_err).all()
    # the constant of the pair is the constant model's
    constant = skymatch(m.images, m.wcs, skystat="median", **LEVELS)
    assert r.sky[1] - r.sky[0] == pytest.approx(constant.sky[1] - constant.sky[0], abs=1e-9)


def test_a_thin_pair_among_wide_ones_constrains_a_constant_only():
    # two images overlapping by 50 px, a third overlapping the second by 10 px only
    m = make_mosaic((1, 2), shape=(200, 200), overlap=0.25, gradient=4.0, seed=3,
                    dtype=np.float64)
    ra = 150.0 - 265 * 0.1 / 3600 / np.cos(np.radians(2.0))
    m = m + make_mosaic((1, 1), shape=(200, 200), center=(ra, 2.0), gradient=4.0, seed=4,
                        dtype=np.float64, prefix="c")
    r = skymatch(m.images, m.wcs, skymethod="global+match", skystat="mean", skymodel="plane", **LEVELS)
    table = r.pairs
    thin = next(k for k in range(len(table)) if {table.a[k], table.b[k]} == {1, 2})
    assert r.plane.plane_fallback[thin].startswith("overlap too thin")
    assert np.isnan(r.plane.resid_gradient[thin])
    assert (r.plane.plane_fallback != "").sum() == 1
    assert r.reason[0] == r.reason[1] == ""
    assert "slopes are not determined" in r.reason[2]
    # the two wide ones: planes; the third: its slopes are its neighbour's, its level at
    # the thin overlap right, so its sky agrees with its neighbour's there
    np.testing.assert_allclose(_estimates(r)[:2], m.planes[:2], atol=1e-6)
    np.testing.assert_allclose(r.plane.slope_x[2], r.plane.slope_x[1], atol=1e-3)


def test_clipping_never_cuts_the_only_link_between_two_parts():
    # inputs 0 and 1 share many good cells; input 2 overlaps input 1 only, by a pair whose
    # four cells disagree in a saddle no plane can follow: each is beyond CLIP errors, but
    # dropping them all would leave input 2 in a component of its own (its own gauge: its
    # level and slopes no longer related to the others')
    centres = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0]])
    truth = np.array([[1.0, 0.01, -0.02], [3.0, -0.01, 0.02], [-2.0, 0.0, 0.01]])
    rng = np.random.default_rng(3)
    good = np.column_stack([rng.uniform(40, 60, 400), rng.uniform(-30, 30, 400)])
    saddle = np.array([[140.0, -20.0], [160.0, 20.0], [140.0, 20.0], [160.0, -20.0]])
    g = np.r_[np.zeros(400, int), np.ones(4, int)]
    h = np.r_[np.ones(400, int), np.full(4, 2)]
    q = np.r_[good, saddle]

    def at(k, p):
        return truth[k, 0] + np.einsum("ij,ij->i", truth[k, 1:], p - centres[k])

    d = at(g, q) - at(h, q) + np.r_[rng.normal(0, 0.1, 400), [30.0, 30.0, -30.0, -30.0]]
    var = np.full(len(d), 0.01)
    sol = solve_plane_offsets(3, g, h, q, d, var, centres)
    assert sol.component.tolist() == [0, 0, 0]
    assert sol.used[:400].all() and sol.used[400:].all()  # the link kept, all its cells
    assert np.isfinite(sol.coef).all()
    # where a second pair links the parts, the saddle is dropped as before
    g2, h2 = np.r_[g, np.zeros(40, int)], np.r_[h, np.full(40, 2)]
    q2 = np.r_[q, np.column_stack([rng.uniform(90, 110, 40), rng.uniform(-30, 30, 40)])]
    d2 = np.r_[d, at(np.zeros(40, int), q2[-40:]) - at(np.full(40, 2), q2[-40:])]
    sol = solve_plane_offsets(3, g2, h2, q2, d2, np.full(len(d2), 0.01), centres)
    assert sol.component.tolist() == [0, 0, 0] and not sol.used[400:404].any()


def test_groups_whose_planes_disagree_stay_one_mosaic():
    # each image its own plane but grouped by eight along the rows (a wrong grouping, or
    # skies that are not one plane per exposure): the rows' links disagree with the model
    # and clipping dropped them all; the mosaic fell apart into components (rows of images
    # invalid: "no valid overlap"), where constants kept it whole
    m = make_mosaic((4, 50), shape=(16, 16), noise=1.0, gradient=2.0, seed=1)
    groups = {name: f"g{k // 8:03d}" for k, name in enumerate(m.names)}
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names, groups=groups)
    for skymodel in ("constant", "plane"):
        result = coll.skymatch(skymethod="global+match", skystat="mean", skymodel=skymodel)
        assert set(result.component.values.tolist()) == {0}, skymodel
        assert result.valid.all(), skymodel


# -- everywhere the result goes -------------------------------------------------------------------
def test_collection_dataset_and_copies_carry_the_planes(tmp_path):
    from astropy.io import fits

    m = make_mosaic((1, 3), shape=(160, 160), overlap=0.3, gradient=5.0, seed=6, dtype=np.float64)
    coll = ImageCollection.from_arrays(m.images, m.wcs)
    ds = coll.skymatch(skymethod="global+match", skystat="mean", skymodel="plane", **LEVELS)
    assert ds.attrs["skymodel"] == "plane"
    assert ds.sky_cov.dims == ("image", "coef", "coef2")
    assert list(ds.coef.values) == ["level", "slope_x", "slope_y"]
    for name in ("slope_x_err", "slope_y_err", "gradient", "gradient_pa"):
        assert ds[name].dims == ("image",)
    assert ds.resid_gradient.dims == ("pair",) and ds.plane_fallback.dims == ("pair",)
    np.testing.assert_allclose(ds.slope_x_err, np.sqrt(ds.sky_cov[:, 1, 1]))
    residual = coll.result_images(ds)
    for name in coll.names:
        assert np.abs(residual[name]).max() < 1e-5
    paths = coll.write_copies(tmp_path, ds)
    header = fits.getheader(paths[0])
    assert header["BKGMODEL"] == "plane" and header["BKGMETH"] == "global+match+plane"
    assert header["BKGSLPX"] == pytest.approx(float(ds.slope_x[0]))
    assert (header["BKGXREF"], header["BKGYREF"]) == (80.5, 80.5)
    assert np.abs(fits.getdata(paths[0])).max() < 1e-5
    constant = coll.skymatch(skystat="mean", **LEVELS)
    assert constant.attrs["skymodel"] == "constant" and "slope_x" not in constant


def test_subtract_with_the_engine_removes_the_planes():
    m = make_mosaic((1, 2), shape=(160, 160), overlap=0.3, gradient=5.0, seed=7, dtype=np.float64)
    r = skymatch(m.images, m.wcs, skymethod="global+match", skystat="mean", skymodel="plane",
                 subtract=True, **LEVELS)
    assert max(np.abs(im).max() for im in r.images) < 1e-5


@pytest.mark.filterwarnings("ignore:the images are in different units")
def test_jwst_and_roman_copies_record_the_plane(tmp_path):
    pytest.importorskip("stdatamodels")
    rdm = pytest.importorskip("roman_datamodels.datamodels")
    from stdatamodels.jwst import datamodels

    from skymatch_nb_ui.testing.instruments import write_jwst_cal, write_roman_cal

    shape = (160, 160)
    wcs = [nircam_like_gwcs((150.0, 2.0 + k * 20 / 3600), shape=shape, pixel_scale=0.2)
           for k in range(2)]
    frame = Frame.at(lonlat_to_xyz(np.array([150.0]), np.array([2.0])))
    images = _sky_plane_images(wcs, shape, [(1.0, 0.01, 0.02), (1.5, -0.01, 0.01)], frame)
    paths = []
    for k, (image, w) in enumerate(zip(images, wcs)):
        path = tmp_path / f"jw01234001001_02101_0000{k + 1}_nrcb1_cal.fits"
        write_jwst_cal(path, image.astype(np.float32), w, observation=(
            "01234", "001", "001", "02", "1", "01", f"0000{k + 1}"))
        paths.append(path)
    coll = ImageCollection.from_files(paths)
    ds = coll.skymatch(skymethod="match", skystat="mean", skymodel="plane", **LEVELS)
    out = coll.write_copies(tmp_path / "out", ds)
    with datamodels.open(out[1]) as model:
        assert model.meta.background.method == "match+plane"
        assert model.meta.background.level == pytest.approx(float(ds.sky[1]))
    from astropy.io import fits

    assert fits.getheader(out[1])["BKGMODEL"] == "plane"
    roman = tmp_path / "r.asdf"
    write_roman_cal(roman, images[0].astype(np.float32), wcs[0])
    rcoll = ImageCollection.from_files([roman, paths[1]])
    rds = rcoll.skymatch(skymethod="match", skystat="mean", skymodel="plane", **LEVELS)
    rout = rcoll.write_copies(tmp_path / "rout", rds)
    with rdm.open(rout[0]) as model:
        assert str(model.meta.background.method) == "match"  # the schema's enum has no plane
        assert model.meta.background.plane["slope_x"] == pytest.approx(float(rds.slope_x[0]))


def test_global_is_one_plane_on_the_sky_for_every_image():
    m = make_mosaic((1, 3), shape=(160, 160), overlap=0.3, gradient=5.0, seed=8, dtype=np.float64)
    r = skymatch(m.images, m.wcs, skymethod="global", skystat="mean", skymodel="plane", **LEVELS)
    assert np.ptp(r.plane.gradient) < 1e-9 * r.plane.gradient.max()
    assert np.ptp(r.plane.gradient_pa) < 1e-6
    # the same plane: the images' fitted skies agree where they overlap (a one-orientation
    # mosaic: neighbours are 112 pixels apart along x)
    a = plane_values(r.sky[0], r.plane.slope_x[0], r.plane.slope_y[0], (160, 160))
    b = plane_values(r.sky[1], r.plane.slope_x[1], r.plane.slope_y[1], (160, 160))
    np.testing.assert_allclose(a[:, 112:], b[:, :48], atol=1e-9)


def test_command_line_subtracts_planes(tmp_path):
    from astropy.io import fits

    from skymatch_nb_ui.cli import main

    m = make_mosaic((1, 2), shape=(160, 160), overlap=0.3, gradient=5.0, seed=9, dtype=np.float64)
    paths = []
    for name, image, wcs in zip(m.names, m.images, m.wcs):
        paths.append(tmp_path / f"{name}.fits")
        fits.PrimaryHDU(image, wcs.to_header()).writeto(paths[-1])
    out = tmp_path / "out"
    levels = ["--compare", "levels"] if LEVELS else []
    assert main([str(p) for p in paths] + levels + [
        "--skymodel", "plane", "--skymethod", "global+match", "--skystat", "mean", "--subtract",
        "--output-dir", str(out), "-q"]) == 0
    for path, truth in zip(paths, m.planes):
        with fits.open(out / path.name) as hdul:
            header = hdul[0].header
            assert header["BKGMODEL"] == "plane"
            assert header["BKGSLPX"] == pytest.approx(truth[1], abs=1e-7)
            assert np.abs(hdul[0].data).max() < 1e-5


@pytest.mark.skipif(not LEVELS, reason="needs compare='differences' (issue 11)")
def test_pixel_differences_in_cells_cancel_the_scene():
    import inspect

    if "nebula" not in inspect.signature(make_mosaic).parameters:
        pytest.skip("needs make_mosaic(nebula=)")
    layout, shape, overlap = (2, 3), (200, 200), 0.25
    centres = _grid_centres(layout, shape, overlap)
    pulls = []
    for seed in range(12):
        runs = {}
        for nebula in (0.0, 25.0):
            m = make_mosaic(layout, shape=shape, overlap=overlap, noise=1.0, gradient=3.0,
                            nebula=nebula, seed=seed, dtype=np.float64)
            runs[nebula] = skymatch(m.images, m.wcs, skystat="median", skymodel="plane",
                                    compare="differences")
        plain, scene = runs[0.0], runs[25.0]
        err = np.sqrt(np.einsum("kii->ki", scene.plane.cov))
        # a nebula of 25 sigma changes the planes by far less than their errors
        assert (np.abs(_estimates(scene) - _estimates(plain)) < 0.2 * err).all()
        est = _estimates(scene)
        est[:, 0] -= est[:, 0].mean()
        pulls.append((est - _gauge(m.planes, centres)) / err)
    spread = np.concatenate(pulls).std(axis=0)
    assert np.all((0.7 <= spread) & (spread <= 1.3)), spread


def test_every_scheduler_gives_the_same_planes_bit_for_bit():
    m = make_mosaic((2, 3), shape=(160, 160), overlap=0.3, noise=1.0, gradient=4.0, seed=1)
    out = []
    for scheduler in ("serial", "threads", "processes"):
        r = skymatch(m.images, m.wcs, skymethod="global+match", skystat="median",
                     skymodel="plane", scheduler=scheduler, workers=2, **LEVELS)
        out.append(np.column_stack([r.sky, r.plane.slope_x, r.plane.slope_y, r.sky_err]))
    assert all(np.array_equal(out[0], o) for o in out[1:])


def test_every_scheduler_gives_the_same_default_planes_bit_for_bit():
    """mode / differences (the defaults): the cells of several images get their statistics
    in batches, the same batches whatever runs them."""
    m = make_mosaic((3, 3), shape=(150, 170), overlap=0.3, noise=1.0, gradient=4.0, sources=10,
                    rotation=3.0, seed=2, dtype=np.float32)
    out = []
    for scheduler in ("serial", "threads", "processes"):
        r = skymatch(m.images, m.wcs, skymodel="plane", slope_significance=0.0,
                     scheduler=scheduler, workers=2)
        out.append(np.column_stack([r.sky, r.plane.slope_x, r.plane.slope_y, r.sky_err,
                                    r.plane.cov.reshape(len(r.sky), -1)]))
        # the whole overlaps' statistics (measured together per batch) and the residuals
        out.append(np.column_stack([r.pairs.diff_before, r.pairs.diff_err, r.pairs.diff_after,
                                    r.plane.resid_gradient]))
    assert np.isfinite(out[0]).all()
    assert all(np.array_equal(out[k], out[k + 2], equal_nan=True) for k in (0, 1, 2, 3))


@pytest.mark.parametrize("scheduler", ["serial", "threads"])
def test_a_statistic_error_in_the_batched_cells_names_the_image_and_the_way_out(scheduler):
    from skymatch_nb_ui.engine.stats import StatisticError

    m = make_mosaic((2, 3), shape=(150, 150), overlap=0.3, noise=1.0, gradient=3.0, seed=1)
    with pytest.raises(StatisticError, match=r"images\[\d+\]: binwidth=1e-06 .* Use binwidth >="):
        skymatch(m.images, m.wcs, skymodel="plane", binwidth=1e-6, scheduler=scheduler)


def test_an_image_without_pixels_is_invalid_with_a_reason_and_no_warning_but_the_mosaic_one():
    import warnings

    from skymatch_nb_ui.engine.exceptions import DisconnectedMosaicWarning

    m = make_mosaic((2, 2), shape=(160, 160), overlap=0.3, noise=1.0, gradient=3.0, seed=1)
    images = [im.copy() for im in m.images]
    images[1][:] = np.nan
    for method in ("match", "global+match", "local", "global"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("ignore", DisconnectedMosaicWarning)
            r = skymatch(images, m.wcs, skymethod=method, skystat="median", skymodel="plane",
                         **LEVELS)
        assert r.valid.tolist() == [True, False, True, True], method
        assert r.reason[1] and np.isnan(r.sky[1]) and np.isfinite(r.plane.slope_x[[0, 2, 3]]).all()


def test_pair_residual_gradients_all_at_once_are_each_pairs_own_least_squares_plane():
    """`_pair_diagnostics` fits every pair's residual plane at once (normal equations); each
    is the weighted least-squares plane of its own cells, the ill-conditioned one included."""
    from types import SimpleNamespace

    from skymatch_nb_ui.engine.plane_match import _pair_diagnostics

    rng = np.random.default_rng(3)
    sizes = [12, 5, 2, 8, 6]  # pair 2: too few cells; pair 3: a constant; pair 4: on a line
    pair = np.repeat(np.arange(len(sizes)), sizes)
    q = rng.normal(size=(len(pair), 2)) * 50 + 1000
    q[pair == 4, 1] = 7.0 + 1e-9 * rng.normal(size=sizes[4])  # (nearly) collinear cells
    residual = rng.normal(size=len(pair))
    var = rng.uniform(0.5, 2.0, len(pair))
    used = rng.uniform(size=len(pair)) > 0.1
    used[pair == 1] = True
    fallback = np.array(["", "", "", "constant", ""], dtype=object)
    off = SimpleNamespace(used=used, residual=residual)
    mean = np.full(len(sizes), np.nan)
    grad = np.full(len(sizes), np.nan)
    _pair_diagnostics(off, None, None, q, var, pair, None, mean, grad, fallback)
    w = 1.0 / var
    for p in range(len(sizes)):
        rows = np.flatnonzero((pair == p) & used)
        if fallback[p] or len(rows) < 3:
            assert np.isnan(grad[p])
            continue
        design = np.column_stack([np.ones(len(rows)), q[rows] - q[rows].mean(axis=0)])
        sw = np.sqrt(w[rows])
        sol = np.linalg.lstsq(design * sw[:, None], residual[rows] * sw, rcond=None)[0]
        assert grad[p] == pytest.approx(np.hypot(sol[1], sol[2]), rel=1e-9)
        assert mean[p] == pytest.approx(np.average(residual[rows], weights=w[rows]), rel=1e-12)


def test_the_inputs_holding_each_pixel_of_many_images_are_counted_at_once():
    """`_input_counts` (all images at once) against painted masks, image by image."""
    from skymatch_nb_ui.engine.geometry import Runs
    from skymatch_nb_ui.engine.plane_match import _input_counts

    rng = np.random.default_rng(9)
    sets, inputs, px, py, expected = [], [], [], [], []
    for image in range(7):
        shape = (int(rng.integers(20, 45)), int(rng.integers(20, 60)))
        n_sets = [0, 1, 3, 5, 2, 4, 6][image]
        image_sets, masks = [], []
        for _ in range(n_sets):
            rows, start, stop = [], [], []
            mask = np.zeros(shape, bool)
            for y in sorted(rng.choice(shape[0], shape[0] // 2, replace=False)):
                edges = np.sort(rng.choice(shape[1] + 1, 4, replace=False))
                for lo, hi in ((edges[0], edges[1]), (edges[2], edges[3])):
                    rows.append(y), start.append(lo), stop.append(hi)
                    mask[y, lo:hi] = True
            image_sets.append(Runs(np.array(rows, np.intp), np.array(start, np.intp),
                                   np.array(stop, np.intp)))
            masks.append(mask)
        labels = rng.integers(0, 3, n_sets)  # several sets of one input count once
        n = [30, 0, 50, 40, 10, 25, 60][image]
        x, y = rng.integers(0, shape[1], n), rng.integers(0, shape[0], n)
        held = [np.any([masks[k][y, x] for k in np.flatnonzero(labels == g)], axis=0)
                if np.any(labels == g) else np.zeros(n, bool) for g in range(3)]
        sets.append(image_sets), inputs.append(labels), px.append(x), py.append(y)
        expected.append(np.sum(held, axis=0) if n_sets else np.zeros(n, int))
    got = _input_counts(sets, inputs, px, py)
    assert len(got) == 7
    for k in range(7):
        assert np.array_equal(got[k], expected[k]), k
    assert [len(c) for c in _input_counts([[]], [np.empty(0, int)], px[:1], py[:1])] == [30]


def test_whole_overlaps_measured_together_give_the_planes_and_fallbacks_of_one_by_one(monkeypatch):
    """Mosaics of many small pairs measure the pairs' whole overlaps together
    (`measure.TOGETHER_FROM`): the same planes to ~1e-9 of their errors, the same
    fallbacks (a thin pair falls back to its whole-overlap constant), and the same bits
    whatever the scheduler."""
    from skymatch_nb_ui.engine import measure

    m = make_mosaic((1, 2), shape=(200, 200), overlap=0.25, gradient=4.0, noise=1.0, seed=3)
    ra = 150.0 - 265 * 0.1 / 3600 / np.cos(np.radians(2.0))
    m = m + make_mosaic((1, 1), shape=(200, 200), center=(ra, 2.0), gradient=4.0, noise=1.0,
                        seed=4, prefix="c")
    runs = {}
    for threshold in (10**9, 1):
        monkeypatch.setattr(measure, "TOGETHER_FROM", threshold)
        for scheduler in ("serial", "processes"):
            runs[threshold, scheduler] = skymatch(m.images, m.wcs, skymodel="plane",
                                                  slope_significance=0.0, scheduler=scheduler,
                                                  workers=2)
    one, together = runs[10**9, "serial"], runs[1, "serial"]
    assert (together.plane.plane_fallback != "").sum() == 1
    assert together.plane.plane_fallback.tolist() == one.plane.plane_fallback.tolist()
    assert np.abs(together.sky - one.sky).max() <= 1e-9 * one.sky_err.min()
    np.testing.assert_allclose(together.sky_err, one.sky_err, rtol=1e-9)
    np.testing.assert_allclose(together.pairs.diff_before, one.pairs.diff_before,
                               atol=1e-9 * one.pairs.diff_err.min())
    for threshold in (10**9, 1):
        a, b = runs[threshold, "serial"], runs[threshold, "processes"]
        assert np.array_equal(a.sky, b.sky)
        assert np.array_equal(a.plane.cov, b.plane.cov, equal_nan=True)
        assert np.array_equal(a.pairs.diff_before, b.pairs.diff_before)


@pytest.mark.filterwarnings("ignore::skymatch_nb_ui.DisconnectedMosaicWarning")
def test_an_image_with_too_few_pixels_for_a_plane_keeps_a_level_of_its_own():
    # The centre image of a 3 x 3 mosaic masked but for a 20 x 20 patch: one cell, no slopes.
    # Its local plane failed and it was reported as having "no valid pixels" (sky NaN, error
    # 0) with local, global and global+match, where skymodel="constant" gives it its sky.
    m = make_mosaic((3, 3), shape=(256, 256), overlap=0.2, noise=1.0, seed=1, sources=5,
                    gradient=2.0)
    masks = [np.ones((256, 256), bool) for _ in range(9)]
    masks[4][:] = False
    masks[4][100:120, 100:120] = True
    for method in ("local", "global", "global+match"):
        constant = skymatch(m.images, m.wcs, masks=masks, skymethod=method)
        plane = skymatch(m.images, m.wcs, masks=masks, skymethod=method, skymodel="plane")
        assert plane.valid.all(), (method, plane.reason[4])
        if method != "global":  # its own sky: the constant's, slopes 0 (not measured)
            assert plane.sky[4] == pytest.approx(constant.sky[4], abs=1e-9)
            assert plane.sky_err[4] == pytest.approx(constant.sky_err[4], rel=1e-6)
            assert plane.plane.slope_x[4] == 0 and plane.plane.slope_y[4] == 0
            assert np.isnan(plane.plane.cov[4, 1, 1])
            assert "too few usable pixels for a plane" in plane.reason[4]
    masks[4][:] = False  # none at all: no sky, and no error either
    plane = skymatch(m.images, m.wcs, masks=masks, skymethod="local", skymodel="plane")
    assert not plane.valid[4] and np.isnan(plane.sky_err[4])
    assert "too few valid pixels" in plane.reason[4]
