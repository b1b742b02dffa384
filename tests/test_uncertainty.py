"""sky_err is a calibrated 1-sigma uncertainty: pulls on pure-noise simulations have unit spread."""

import numpy as np
import pytest

from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.testing import make_mosaic

N_REALIZATIONS = 40


def pulls(method, skystat, n=N_REALIZATIONS):
    out = []
    for seed in range(n):
        truth = np.random.default_rng(1000 + seed).uniform(10, 20, 9)
        mosaic = make_mosaic(
            (3, 3), shape=(100, 100), overlap=0.25, sky=truth, noise=1.0, jitter=2.0,
            dtype=np.float64, seed=seed,
        )
        result = SkyMatcher(mosaic.images, mosaic.wcs).run(skymethod=method, skystat=skystat)
        assert result.valid.all()
        if method == "match":  # offsets are known up to a constant: use the zero-mean gauge
            error = result.delta - (truth - truth.mean())
        else:
            error = result.sky - truth
        out.append(error / result.sky_err)
    return np.concatenate(out)


@pytest.mark.parametrize("skystat", ["mean", "median", "midpt", "mode"])
@pytest.mark.parametrize("method", ["match", "local"])
def test_pulls_have_unit_spread(method, skystat):
    p = pulls(method, skystat)
    assert np.all(np.isfinite(p))
    assert 0.8 <= p.std() <= 1.25, f"pull std {p.std():.3f} for {method}/{skystat}"
    assert abs(p.mean()) < 0.3


def corner_mosaic(shift, seed):
    """Four images: three in a row and a fourth whose corner meets the third's on a few
    pixels (the fourth is the third moved by ``shift`` pixels); and their true skies."""
    truth = np.random.default_rng(100 + seed).uniform(10, 20, 4)
    mosaic = make_mosaic((1, 4), shape=(60, 60), overlap=0.25, sky=truth, noise=1.0,
                         dtype=np.float64, seed=seed)
    wcs = list(mosaic.wcs)
    wcs[3] = mosaic.wcs[2].deepcopy()
    wcs[3].wcs.crpix = wcs[3].wcs.crpix - np.array(shift)
    return mosaic.images, wcs, truth


def corner_pulls(compare, shift, n=30):
    """Pulls of the four images of `corner_mosaic` over ``n`` noise realisations."""
    out = []
    for seed in range(n):
        images, wcs, truth = corner_mosaic(shift, seed)
        result = SkyMatcher(images, wcs).run(skymethod="match", skystat="mean",
                                             compare=compare)
        assert result.valid.all()
        corner = result.pairs.npix_a[-1]
        out.append((result.delta - (truth - truth.mean())) / result.sky_err)
    return corner, np.array(out)


@pytest.mark.parametrize(("compare", "shift", "pixels"), [
    ("differences", (58.6, 58.6), 1), ("levels", (58.6, 58.6), 1), ("levels", (58.0, 58.6), 2),
])
def test_a_corner_of_a_few_pixels_has_an_error_and_spoils_none(compare, shift, pixels):
    """Where two detectors' corners meet on a pixel or two (dithered camera mosaics have
    many such pairs), the pair's own pixels cannot measure its noise: one pixel gave it no
    error and every image's error was NaN (and the robust solve judged nothing); two gave it
    none to speak of (a sky error of 0.03 for an image tied by two pixels of noise 1).  Its
    error now comes from the noise its images show in their larger pairs: every error
    finite and calibrated."""
    corner, p = corner_pulls(compare, shift)
    assert corner == pixels
    assert np.all(np.isfinite(p))
    assert 0.7 <= p[:, 3].std() <= 1.35, f"corner image's pull std {p[:, 3].std():.3f}"
    assert 0.7 <= p.std() <= 1.35


@pytest.mark.parametrize("compare", ["differences", "levels"])
def test_a_member_pair_of_one_pixel_leaves_its_groups_an_error(compare):
    """Groups (a camera's CCDs, one sky per exposure) whose members meet on a one-pixel
    corner besides large overlaps: that member pair has no error of its own, and it left
    the groups' pair without one, and so every sky error NaN (600 CCDs in 10 exposures,
    ``compare="differences"``).  Its error is now at least what the other members'
    noise gives: the groups' error is that of their large overlaps, hardly more."""
    images, wcs, _ = corner_mosaic((58.6, 58.6), 0)
    run = dict(skymethod="match", skystat="mean", compare=compare)
    result = SkyMatcher(images, wcs).run(groups=["a", "b", "a", "b"], **run)
    assert result.pairs.npix_a[0] == 900 + 900 + 1  # three member pairs, one of them a corner
    assert np.all(np.isfinite(result.sky_err)) and np.all(result.sky_err > 0)
    without = SkyMatcher(images[:3], wcs[:3]).run(groups=["a", "b", "a"], **run)
    np.testing.assert_allclose(result.sky_err[:3], without.sky_err, rtol=0.01)


def test_a_small_pairs_error_comes_from_its_images_larger_pairs():
    """`with_small_pair_errors` on a table: a small pair's variance per pixel is the mean of
    its two images' medians over their larger pairs (one image's when the other has none,
    every larger pair's when neither has), never below its own; invalid pairs untouched."""
    from skymatch_nb_ui.engine.measure import PairStats, with_small_pair_errors

    a, b = np.array([0, 1, 0, 2, 4, 6, 8]), np.array([1, 2, 2, 3, 5, 7, 9])
    npix = np.array([1000, 1000, 400, 1, 2, 20, 3])
    err = np.array([0.1, 0.2, 0.05, np.nan, 0.01, 5.0, np.nan])
    diff = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan])  # the last pair: not valid
    nan = np.full(len(a), np.nan)
    pairs = PairStats(a=a, b=b, stat_a=nan, stat_b=nan, npix_a=npix, npix_b=npix, err_a=nan,
                      err_b=nan, member_npix=((), ) * len(a), diff=diff, diff_err=err,
                      weight=npix.astype(float), side_var=np.vstack([err**2 / 2] * 2))
    found = with_small_pair_errors(pairs, share=0.5)
    u = err[:3] ** 2 * npix[:3]  # per pixel: 10, 40, 1
    image2 = np.median([u[1], u[2]])  # image 3 has no larger pair
    np.testing.assert_allclose(found.diff_err[3], np.sqrt(image2 / 1))
    np.testing.assert_allclose(found.diff_err[4], np.sqrt(np.median(u) / 2))  # neither has
    assert found.diff_err[5] == 5.0  # its own is larger
    assert np.isnan(found.diff_err[6])  # not valid: as it was
    np.testing.assert_array_equal(found.diff_err[:3], err[:3])
    np.testing.assert_allclose(found.side_var[:, 3], 0.5 * found.diff_err[3] ** 2)
    np.testing.assert_allclose(found.side_var[:, 4].sum(), found.diff_err[4] ** 2)
    np.testing.assert_array_equal(found.diff, diff)
    np.testing.assert_array_equal(found.weight, pairs.weight)


def test_errors_shrink_with_more_pixels():
    small = make_mosaic((1, 2), shape=(50, 50), noise=1.0, seed=1)
    large = make_mosaic((1, 2), shape=(200, 200), noise=1.0, seed=1)
    e_small = SkyMatcher(small.images, small.wcs).run(skymethod="match", skystat="mean").sky_err
    e_large = SkyMatcher(large.images, large.wcs).run(skymethod="match", skystat="mean").sky_err
    np.testing.assert_allclose(e_small / e_large, 4.0, rtol=0.15)  # 16x the pixels


@pytest.mark.parametrize("skystat, compare", [("mode", "levels"), ("median", "differences")])
def test_a_stack_of_dithers_has_calibrated_errors(skystat, compare):
    # 16 dithers of one field (95% overlaps: every pixel in every pair).  The pixels the
    # pairs share move the offsets and hardly the residuals, so the residuals' excess is
    # measured against the pairs' own variances (robust.py).  Against the whole expectation
    # it had put these errors 1.8 times too large (mode: it wanders between nearly the same
    # pixels, scales 1.6-1.9, pull spread 0.56) and, shrinking everything, 20% too small
    # (median of differences: scales 0.75-0.91, pull spread 1.22); now 0.91 and 1.03.
    out, scales = [], []
    for seed in range(8):
        m = make_mosaic((4, 4), shape=(128, 128), overlap=0.95, jitter=2.0, rotation=2.0,
                        noise=1.0, sources=8, seed=seed)
        r = SkyMatcher(m.images, m.wcs).run(skystat=skystat, compare=compare)
        out.append((r.sky - r.sky.mean() - (m.sky - m.sky.mean())) / r.sky_err)
        scales.append(r.error_scale)
    spread = np.concatenate(out).std()
    assert 0.8 <= spread <= 1.15, (spread, scales)
    assert 0.85 <= np.median(scales) <= 1.15, scales


def test_small_median_sides_of_camera_ccds_leave_the_errors_finite():
    # 240 CCDs of 4 dithered exposures (`compare="levels"`, median): sides of a few tens of
    # pixels with a star's wing have a median histogram of one or two bins, too coarse for
    # the noise; their broad-scene errors came out as 1e17-1e37 and, through the solve,
    # every sky error with them (pull spread 0).
    from test_planes import dithered_camera

    images, wcs, truth = dithered_camera(4)
    r = SkyMatcher(images, wcs).run(skystat="median", compare="levels")
    assert np.all(np.isfinite(r.sky_err)) and r.sky_err.max() < 0.1
    pull = ((r.sky - r.sky.mean()) - (truth - truth.mean())) / r.sky_err
    assert 0.75 <= pull.std() <= 1.25
