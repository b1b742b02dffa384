"""The reference engine (stcal.skymatch) as oracle on randomized noisy mosaics.

Our overlap pixels are the pixel centres inside the overlap, the reference's come from a
scan-line fill that rounds vertices, so the two engines use slightly different pixels along
the edges of each overlap (REFERENCE.md).  With noise sigma = 1 that moves a mean or median
over a few thousand pixels by a few thousandths; we allow 0.02 sigma.

``midpt`` interpolates the cumulative histogram: the reference's bins are (max-min)/(nbins-1)
wide but converted with binwidth*std, a systematic offset of a fraction of a bin; measured up
to 0.07 sigma, we allow 0.1 sigma.

``mode``: the reference takes the fullest bin of a histogram with bins 0.1 sigma wide.  With a
few thousand to 25,000 pixels that bin wanders over the flat top of the distribution by
0.1-0.3 sigma (measured on Gaussian noise: 1.3 * n**-0.22 sigma, `reference_mode_error`); ours
is the peak of a smoothed histogram, several times less noisy (its ``sky_err``).  The two are
close to independent draws around the peak: we allow 4 times their combined spread, plus
0.05 sigma for the smoothing of a top made asymmetric by the sources.  A matched sky is the
difference of modes over overlaps (a few thousand pixels, twice the variance): there the
reference's spread is that of its smallest overlap, times sqrt(2).  (The mode itself is
checked against the reference on noise-free data in ``test_stats.py``.)

All of this is ``compare="levels"``, the reference's way of comparing two images.
"""

import numpy as np
import pytest

from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.testing import make_mosaic, reference_skymatch

TOLERANCE = {"mean": 0.02, "median": 0.02, "mode": 0.05, "midpt": 0.1}


def reference_mode_error(npix):
    """The scatter (sigma) of the reference's mode of npix Gaussian values, binwidth 0.1."""
    return 1.3 * np.asarray(npix, float) ** -0.22


def reference_spread(result, method):
    """The reference's mode scatter for each image's sky (see the module's notes)."""
    if method in ("local", "global"):
        return reference_mode_error(result.npix)
    p = result.pairs
    smallest = np.full(len(result), np.inf)
    for a, b, na, nb in zip(p.a, p.b, p.npix_a, p.npix_b):
        for k in (a, b):
            smallest[k] = min(smallest[k], na, nb)
    return np.sqrt(2) * reference_mode_error(smallest)
METHODS = ["local", "global", "match", "global+match"]


def random_mosaic(seed, **overrides):
    rng = np.random.default_rng(seed)
    options = dict(
        shape=(160, 160),
        sky=rng.uniform(50, 150, size=9),
        noise=1.0,
        sources=15,
        rotation=float(rng.uniform(-180, 180)),
        jitter=3.0,
        nan_fraction=0.002,
        mask_fraction=0.01,
        overlap=0.25,
        seed=seed,
    )
    options.update(overrides)
    return make_mosaic((3, 3), **options)


def reference_masks(mosaic):
    """The reference loses a whole sky to one unmasked NaN: hand it the NaNs as masked."""
    masks = mosaic.masks or [np.ones(im.shape, bool) for im in mosaic.images]
    return [m & np.isfinite(im) for m, im in zip(masks, mosaic.images)]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("skystat", ["mean", "median", "mode", "midpt"])
def test_agrees_with_reference(seed, skystat):
    mosaic = random_mosaic(seed)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, masks=mosaic.masks)
    for method in METHODS:
        ours = matcher.run(skymethod=method, skystat=skystat, compare="levels")
        sky, valid = reference_skymatch(
            mosaic.images, mosaic.wcs, masks=reference_masks(mosaic), skymethod=method,
            skystat=skystat,
        )
        assert ours.valid.tolist() == valid.tolist(), method
        bound = TOLERANCE[skystat]
        if skystat == "mode":
            bound = bound + 4 * np.hypot(ours.sky_err, reference_spread(ours, method))
        assert np.all(np.abs(ours.sky - sky) <= bound), (method, ours.sky - sky, bound)


@pytest.mark.parametrize("skystat", ["mean", "median"])
def test_agrees_with_reference_with_groups(skystat):
    mosaic = random_mosaic(7, sky=np.repeat([80.0, 95.0, 120.0], 3))
    groups = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]  # the rows share a sky
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, masks=mosaic.masks)
    for method in METHODS:
        ours = matcher.run(skymethod=method, skystat=skystat, groups=groups, compare="levels")
        sky, valid = reference_skymatch(
            mosaic.images, mosaic.wcs, masks=reference_masks(mosaic), groups=groups,
            skymethod=method, skystat=skystat,
        )
        assert ours.valid.tolist() == valid.tolist(), method
        np.testing.assert_allclose(ours.sky, sky, rtol=0, atol=TOLERANCE[skystat], err_msg=method)


def test_agrees_with_reference_with_clipping_limits():
    mosaic = random_mosaic(11, sky=np.full(9, 100.0) + np.arange(9))
    params = dict(skystat="mean", lower=95.0, upper=112.0, nclip=3, lsigma=3.0, usigma=2.5,
                  compare="levels")
    ours = SkyMatcher(mosaic.images, mosaic.wcs, masks=mosaic.masks).run(
        skymethod="global+match", **params
    )
    sky, valid = reference_skymatch(
        mosaic.images, mosaic.wcs, masks=reference_masks(mosaic), skymethod="global+match", **params
    )
    assert valid.all() and ours.valid.all()
    np.testing.assert_allclose(ours.sky, sky, atol=TOLERANCE["mean"])
