"""Engine behaviour that users rely on: bad input, per-image reasons, groups, cache, WCS kinds."""

import warnings

import numpy as np
import pytest
from astropy.wcs import WCS

import skymatch_nb_ui as sm
from skymatch_nb_ui import DisconnectedMosaicWarning, SkyMatcher, skymatch
from skymatch_nb_ui.engine import measure
from skymatch_nb_ui.testing import make_mosaic


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((2, 2), shape=(60, 60), sky=[10, 12, 11, 13], noise=0.5, seed=3)


# -- bad input: clear errors naming the parameter ------------------------------------------
@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(images=[]), ValueError, "images must contain at least one"),
        (dict(skymethod="best"), ValueError, "skymethod must be one of"),
        (dict(skystat="avg"), ValueError, "skystat must be one of"),
        (dict(lsigma=0.0), ValueError, "lsigma"),
        (dict(usigma=-1.0), ValueError, "usigma"),
        (dict(binwidth=0.0), ValueError, "binwidth"),
        (dict(nclip=-1), ValueError, "nclip"),
        (dict(lower=5.0, upper=1.0), ValueError, "lower"),
        (dict(anchor="local"), ValueError, "anchor must be one of"),
        (dict(match_down="yes"), TypeError, "match_down must be True or False"),
        (dict(stepsize=0), ValueError, "stepsize must be None or a positive integer"),
    ],
)
def test_bad_parameters_raise_clear_errors(mosaic, change, error, match):
    kwargs = dict(images=mosaic.images, wcs=mosaic.wcs)
    kwargs.update(change)
    images, wcs = kwargs.pop("images"), kwargs.pop("wcs")
    with pytest.raises(error, match=match):
        skymatch(images, wcs if images else [], **kwargs)


def test_non_2d_image_is_rejected(mosaic):
    images = list(mosaic.images)
    images[2] = np.zeros((3, 4, 5))
    with pytest.raises(ValueError, match=r"images\[2\] must be a 2-D array; got shape \(3, 4, 5\)"):
        skymatch(images, mosaic.wcs)


def test_single_2d_array_instead_of_list_is_rejected(mosaic):
    with pytest.raises(TypeError, match="Wrap it in a list"):
        skymatch(mosaic.images[0], mosaic.wcs[:1])


def test_complex_image_is_rejected(mosaic):
    images = list(mosaic.images)
    images[1] = images[1].astype(complex)
    with pytest.raises(TypeError, match=r"images\[1\] must hold real numbers"):
        skymatch(images, mosaic.wcs)


def test_length_mismatches_are_rejected(mosaic):
    with pytest.raises(ValueError, match="wcs must have one entry per image: got 3 WCS for 4"):
        skymatch(mosaic.images, mosaic.wcs[:3])
    with pytest.raises(ValueError, match="masks must have one entry per image"):
        skymatch(mosaic.images, mosaic.wcs, masks=[np.ones((60, 60), bool)])
    with pytest.raises(ValueError, match="groups must have one label per image: got 2 labels"):
        skymatch(mosaic.images, mosaic.wcs, groups=["a", "b"])


def test_mask_problems_are_rejected(mosaic):
    masks = [np.ones((60, 60), bool) for _ in range(4)]
    masks[3] = np.ones((60, 59), bool)
    with pytest.raises(ValueError, match=r"masks\[3\] must have the shape of images\[3\]"):
        skymatch(mosaic.images, mosaic.wcs, masks=masks)
    masks[3] = np.ones((60, 60), np.uint16)
    with pytest.raises(TypeError, match=r"masks\[3\] must be a boolean array.*bitfield_to_boolean_mask"):
        skymatch(mosaic.images, mosaic.wcs, masks=masks)


def test_non_celestial_wcs_is_rejected(mosaic):
    spectral = WCS(naxis=2)
    spectral.wcs.ctype = ["WAVE", "FREQ"]
    wcs = list(mosaic.wcs)
    wcs[1] = spectral
    with pytest.raises(ValueError, match=r"wcs\[1\] must map 2 pixel axes to 2 celestial axes"):
        skymatch(mosaic.images, wcs)
    wcs[1] = "not a wcs"
    with pytest.raises(TypeError, match=r"wcs\[1\] must be a celestial WCS"):
        skymatch(mosaic.images, wcs)


# -- reported per image, never a crash -------------------------------------------------------
def test_fully_masked_and_all_nan_images_are_reported(mosaic):
    images = [im.astype(float) for im in mosaic.images]
    images[2][:] = np.nan
    masks = [np.ones(im.shape, bool) for im in images]
    masks[1][:] = False
    for method in ("local", "global", "match", "global+match"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DisconnectedMosaicWarning)
            result = skymatch(images, mosaic.wcs, masks=masks, skymethod=method, skystat="mean")
        assert result.valid.tolist() == [True, False, False, True], method
        assert np.isnan(result.sky[1]) and np.isnan(result.sky[2])
        assert "no valid pixels" in result.reason[1], (method, result.reason[1])
        assert result.reason[0] == ""


def test_global_with_a_fully_masked_image_after_a_valid_one(mosaic):
    """The reference crashes here (comparing None with a float)."""
    masks = [np.ones((60, 60), bool) for _ in range(4)]
    masks[1][:] = False
    result = skymatch(mosaic.images, mosaic.wcs, masks=masks, skymethod="global", skystat="mean")
    assert result.valid.tolist() == [True, False, True, True]
    good = result.local[[0, 2, 3]]
    np.testing.assert_allclose(result.sky[[0, 2, 3]], good.min())


def test_single_image_under_match_is_invalid_with_a_reason(mosaic):
    result = skymatch(mosaic.images[:1], mosaic.wcs[:1], skymethod="match")
    assert not result.valid[0]
    assert "no valid overlap" in result.reason[0]
    # global+match falls back on the image's own sky, and says so
    result = skymatch(mosaic.images[:1], mosaic.wcs[:1], skymethod="global+match", skystat="mean")
    assert result.valid[0] and "its own local sky" in result.reason[0]


def test_edge_only_contact_is_no_overlap():
    """Two images that touch along a pixel edge share no pixel centre: no pair, two components."""
    m = make_mosaic((1, 2), shape=(50, 50), overlap=0.0, sky=[1, 2])
    with pytest.warns(DisconnectedMosaicWarning):
        result = skymatch(m.images, m.wcs, skymethod="match", skystat="mean")
    assert not result.valid.any()
    assert len(result.pairs) == 0
    assert result.component.tolist() == [0, 1]


def test_nan_pixels_never_poison_a_sky(mosaic):
    images = [im.astype(np.float64) for im in mosaic.images]
    clean = skymatch(images, mosaic.wcs, skymethod="match", skystat="median")
    rng = np.random.default_rng(0)
    holes = [im.copy() for im in images]
    for im in holes:
        im[rng.random(im.shape) < 0.01] = np.nan
        im[0, 0] = np.inf
    dirty = skymatch(holes, mosaic.wcs, skymethod="match", skystat="median")
    assert dirty.valid.all()
    np.testing.assert_allclose(dirty.sky, clean.sky, atol=0.1)


# -- groups ------------------------------------------------------------------------------------
def test_group_shares_one_sky_and_is_not_compared_with_itself():
    # detectors 0 and 1 of one exposure (same sky), 2 and 3 another exposure
    m = make_mosaic((2, 2), shape=(80, 80), sky=[100, 100, 130, 130])
    result = skymatch(m.images, m.wcs, groups=["e1", "e1", "e2", "e2"], skymethod="match",
                      skystat="mean")
    np.testing.assert_allclose(result.sky, [0, 0, 30, 30], atol=1e-9)
    assert result.inputs == ("e1", "e2")
    assert result.group.tolist() == [0, 0, 1, 1]
    assert len(result.pairs) == 1  # one pair of inputs, the group's inner overlaps are not used


def test_group_local_is_the_lowest_member():
    m = make_mosaic((1, 3), shape=(40, 40), sky=[7, 5, 9])
    result = skymatch(m.images, m.wcs, groups=[0, 0, None], skymethod="local", skystat="mean")
    np.testing.assert_allclose(result.sky, [5, 5, 9])


def test_unhashable_group_label_is_rejected(mosaic):
    with pytest.raises(TypeError, match=r"groups\[1\] must be a hashable label"):
        skymatch(mosaic.images, mosaic.wcs, groups=["a", ["b"], "c", "d"])


# -- the stage cache ---------------------------------------------------------------------------
def test_solve_only_changes_reuse_the_statistics(mosaic, monkeypatch):
    calls = []
    real = measure.sky_statistic

    def counting(values, params, **kw):
        calls.append(params)
        return real(values, params, **kw)

    monkeypatch.setattr(measure, "sky_statistic", counting)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    first = matcher.run(skymethod="match", skystat="mean")
    n_first = len(calls)
    assert n_first > 0
    second = matcher.run(skymethod="match", match_down=False, skystat="mean")
    assert len(calls) == n_first  # a solve-only change computes no statistic
    np.testing.assert_allclose(second.sky - second.sky.max(), first.sky - first.sky.max())
    matcher.run(skymethod="match", skystat="median")
    assert len(calls) == 2 * n_first  # new statistic: computed again, geometry reused
    matcher.run(skymethod="match", groups=[1, 1, None, None], skystat="mean")
    assert len(calls) < 3 * n_first  # new groups: only new (image, partners) sets


@pytest.mark.parametrize("options", [
    dict(compare="levels"),
    dict(compare="differences"),
    dict(skymethod="global+match", skymodel="plane", compare="levels"),
    dict(skymodel="plane", compare="differences", groups=["a", "a", None, "b", "b", None],
         subtract=True),
])
def test_a_matcher_is_freed_as_soon_as_it_is_dropped(options):
    # a matcher holds its images' overlaps, maps and statistics (GBs at 10,000 images): they
    # go with its last reference, not whenever the next full garbage collection comes (a
    # reference cycle through a cache of its plane stage left them to it)
    import gc
    import weakref

    m = make_mosaic((2, 3), shape=(160, 160), noise=1.0, gradient=2.0, sources=3, seed=6)
    matcher = SkyMatcher(m.images, m.wcs)
    result = matcher.run(**options)
    assert np.isfinite(result.sky).all()
    gone = weakref.ref(matcher)
    enabled = gc.isenabled()
    gc.disable()  # freed by reference counting alone
    try:
        del matcher, result
        assert gone() is None
    finally:
        if enabled:
            gc.enable()


def test_overlap_pixels_are_symmetric_for_matching_grids():
    m = make_mosaic((1, 2), shape=(100, 100), overlap=0.2, tangent="shared")
    matcher = SkyMatcher(m.images, m.wcs)
    assert matcher.overlap_pixels(0, 1).npix == matcher.overlap_pixels(1, 0).npix == 20 * 100


# -- WCS kinds -----------------------------------------------------------------------------------
def test_gwcs_gives_the_same_skies_as_astropy(mosaic):
    gwcs = pytest.importorskip("gwcs")
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf

    def to_gwcs(w):
        shift = models.Shift(-(w.wcs.crpix[0] - 1)) & models.Shift(-(w.wcs.crpix[1] - 1))
        matrix = models.AffineTransformation2D(matrix=w.pixel_scale_matrix, translation=[0, 0])
        sky = models.Pix2Sky_TAN() | models.RotateNative2Celestial(*w.wcs.crval, 180)
        detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
        icrs = cf.CelestialFrame(reference_frame=coord.ICRS(), name="icrs", unit=(u.deg, u.deg))
        return gwcs.WCS([(detector, shift | matrix | sky), (icrs, None)])

    astropy_result = skymatch(mosaic.images, mosaic.wcs, skymethod="match", skystat="mean")
    gwcs_result = skymatch(mosaic.images, [to_gwcs(w) for w in mosaic.wcs], skymethod="match",
                           skystat="mean")
    np.testing.assert_allclose(gwcs_result.sky, astropy_result.sky, atol=1e-6)
    np.testing.assert_array_equal(gwcs_result.npix, astropy_result.npix)


def test_sip_distortion_is_followed_with_stepsize():
    m = make_mosaic((1, 2), shape=(100, 100), overlap=0.3, sky=[3, 8])
    for w in m.wcs:
        w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
        w.sip = None
        from astropy.wcs import Sip

        a = np.zeros((3, 3))
        b = np.zeros((3, 3))
        a[2, 0] = 2e-4  # a bowed outline: a few pixels at the corners
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    result = skymatch(m.images, m.wcs, skymethod="match", skystat="mean", stepsize=10)
    np.testing.assert_allclose(result.sky, [0, 5], atol=1e-9)
    assert result.npix[0] > 0


def test_public_names():
    for name in ("skymatch", "SkyMatcher", "SkyMatchResult", "DisconnectedMosaicWarning"):
        assert name in sm.__all__ and hasattr(sm, name)


def test_threads_give_the_same_answers_as_one(mosaic):
    serial = SkyMatcher(mosaic.images, mosaic.wcs, workers=1).run(skymethod="global+match")
    pooled = SkyMatcher(mosaic.images, mosaic.wcs, workers=3).run(skymethod="global+match")
    np.testing.assert_array_equal(pooled.sky, serial.sky)
    np.testing.assert_array_equal(pooled.sky_err, serial.sky_err)
    with pytest.raises(ValueError, match="workers must be None or a positive integer"):
        SkyMatcher(mosaic.images, mosaic.wcs, workers=0)


@pytest.mark.parametrize("skymodel", ["constant", "plane"])
def test_the_disconnected_mosaic_warning_points_at_the_callers_line(skymodel):
    """Whatever the sky model, the warning names the line that called `skymatch` or
    `SkyMatcher.run`, not ours."""
    m = make_mosaic((1, 2), shape=(50, 50), overlap=0.0, sky=[1, 2])
    with pytest.warns(DisconnectedMosaicWarning) as record:
        skymatch(m.images, m.wcs, skymethod="match", skystat="mean", skymodel=skymodel)
    assert [w.filename for w in record] == [__file__]
    with pytest.warns(DisconnectedMosaicWarning) as record:
        SkyMatcher(m.images, m.wcs).run(skymethod="match", skystat="mean", skymodel=skymodel)
    assert [w.filename for w in record] == [__file__]


@pytest.mark.parametrize("skymodel", ["constant", "plane"])
def test_the_skies_do_not_depend_on_where_the_mosaic_is_on_the_sky(skymodel):
    # The same 3 x 3 mosaic (turned by 20 degrees, stars, gradients) at the equator, across
    # RA 0 and around both celestial poles: overlaps are computed on the sphere, so the
    # skies agree to a small part of their errors (a few pixel centres fall on the other
    # side of an overlap's edge: 0.002-0.015 sigma).
    def run(center):
        m = make_mosaic((3, 3), shape=(80, 80), overlap=0.25, center=center, rotation=20.0,
                        noise=1.0, sources=3, gradient=3.0, seed=3)
        return skymatch(m.images, m.wcs, skymethod="global+match", skystat="mode",
                        skymodel=skymodel)

    here = run((150.0, 2.0))
    for center in [(359.995, -30.0), (0.0, 89.99), (180.0, -89.995), (45.0, 89.9999)]:
        there = run(center)
        assert there.valid.all() and not there.warnings
        assert np.all(np.abs(there.sky - here.sky) < 0.2 * here.sky_err), center
        np.testing.assert_allclose(there.sky_err, here.sky_err, rtol=0.1)
