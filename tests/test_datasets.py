"""skymatch_nb_ui.datasets: real pixels through a real distorted WCS, with known skies."""

import doctest

import numpy as np
import pytest
from astropy.wcs import WCS

from skymatch_nb_ui import datasets
from skymatch_nb_ui.datasets import DitheredExposures, hubble_deep_field_exposures

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def hdf() -> DitheredExposures:
    return hubble_deep_field_exposures()


def test_exposures_are_acs_wfc_chips_with_sip_distortion(hdf):
    assert len(hdf) == 8 and hdf.names[:4] == ["e1_wfc1", "e1_wfc2", "e2_wfc1", "e2_wfc2"]
    assert [m["exposure"] for m in hdf.meta] == ["e1", "e1", "e2", "e2", "e3", "e3", "e4", "e4"]
    assert {m["instrument"] for m in hdf.meta} == {"ACS"}
    np.testing.assert_array_equal(hdf.sky, np.repeat(datasets.DEFAULT_SKY, 2))
    for image, w in zip(hdf.images, hdf.wcs):
        assert image.shape == (256, 512) and image.dtype == np.float32
        assert w.sip is not None and w.sip.a_order == 4
        assert list(w.wcs.ctype) == ["RA---TAN-SIP", "DEC--TAN-SIP"]
        # the distortion is real: without SIP the chip's corner lands pixels away
        linear = WCS(w.to_header(relax=False))  # the same WCS without its SIP terms
        corner = w.pixel_to_world(511, 255)
        assert np.hypot(*np.subtract(linear.world_to_pixel(corner), (511, 255))) > 2.0
    # the field is the Hubble Deep Field's, within the chips' extent
    ra, dec = np.mean([w.wcs.crval for w in hdf.wcs], axis=0)
    assert abs(ra - 189.2058) < 0.05 and abs(dec - 62.2161) < 0.02


@pytest.mark.parametrize("chip", [0, 1])
def test_binning_keeps_the_mapping_of_the_sky(chip):
    header = datasets._acs_wfc_headers()[chip]
    full = WCS(datasets._binned(header, 1))
    binned = WCS(datasets._binned(header, 8))
    rng = np.random.default_rng(chip)
    x, y = rng.uniform(-0.5, 511.5, 50), rng.uniform(-0.5, 255.5, 50)
    # binned pixel x' (0-based) is centred on detector pixel 8*x' + 3.5
    a = binned.pixel_to_world(x, y)
    b = full.pixel_to_world(8 * x + 3.5, 8 * y + 3.5)
    assert a.separation(b).arcsec.max() < 1e-6


def test_known_sky_differences_come_back_within_their_errors(hdf):
    coll = hdf.collection(group_by="exposure")
    for skystat in ("median", "mode"):
        result = coll.skymatch(skymethod="match", skystat=skystat)
        residual = result.sky.values - hdf.sky
        residual -= residual.mean()  # match finds differences: one constant is free
        assert np.all(np.abs(residual) <= 3 * result.sky_err.values), (skystat, residual)
    # and every image alone (the chips of one exposure then get their own skies)
    result = hdf.collection().skymatch(skymethod="match", skystat="median")
    residual = result.sky.values - hdf.sky
    assert np.all(np.abs(residual - residual.mean()) <= 3 * result.sky_err.values)


def test_the_same_seed_gives_the_same_pixels():
    kw = dict(dithers=[(0, 0), (30, 10)], sky=[10.0, 20.0])
    a, b = hubble_deep_field_exposures(seed=4, **kw), hubble_deep_field_exposures(seed=4, **kw)
    c = hubble_deep_field_exposures(seed=5, **kw)
    for x, y, z in zip(a.images, b.images, c.images):
        np.testing.assert_array_equal(x, y)
        assert not np.array_equal(x, z)
        assert np.std(x - z) == pytest.approx(np.sqrt(2) * 5.0, rel=0.05)  # only the noise differs
    quiet = [hubble_deep_field_exposures(noise=0, seed=s, **kw).images for s in (1, 2)]
    for x, y in zip(*quiet):
        np.testing.assert_array_equal(x, y)


def test_pixels_are_the_picture_plus_the_sky():
    quiet = hubble_deep_field_exposures(noise=0, dithers=[(0, 0), (30, 10)], sky=[10.0, 20.0])
    # where the two exposures' first chips overlap, the same sky position shows the same
    # picture: values differ by the sky difference (10) up to interpolation
    first, second = quiet.wcs[0], quiet.wcs[2]
    y, x = np.mgrid[100:150, 200:300]
    sx, sy = second.world_to_pixel(first.pixel_to_world(x, y))
    inside = (sx > 0) & (sx < 511) & (sy > 0) & (sy < 255)
    assert inside.sum() > 1000
    a = quiet.images[0][y[inside], x[inside]]
    b = quiet.images[2][np.round(sy[inside]).astype(int), np.round(sx[inside]).astype(int)]
    assert np.median(b - a) == pytest.approx(10.0, abs=1.0)


def test_a_gradient_is_one_plane_on_the_sky_for_both_chips_of_an_exposure():
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    from skymatch_nb_ui.testing.mosaics import _gnomonic

    kw = dict(dithers=[(0, 0), (30, 10)], sky=[10.0, 20.0], noise=0)
    slopes = [(0.05, -0.02), (0.0, 0.03)]  # (east, north) per arcsec
    flat = hubble_deep_field_exposures(**kw)
    tilted = hubble_deep_field_exposures(gradient=slopes, **kw)
    np.testing.assert_array_equal(tilted.gradient, np.repeat(slopes, 2, axis=0))
    np.testing.assert_array_equal(flat.gradient, np.zeros((4, 2)))
    centre = SkyCoord(*datasets.HDF_CENTER, unit="deg")
    x, y = np.array([0.0, 511.0, 200.0, 37.0]), np.array([0.0, 255.0, 100.0, 211.0])
    for k in range(4):
        # the pixels: the flat exposure's plus the plane (to float32 rounding)
        np.testing.assert_allclose(tilted.images[k] - flat.images[k],
                                   tilted.true_sky(k) - tilted.sky[k], rtol=0, atol=3e-4)
        np.testing.assert_array_equal(flat.true_sky(k), np.full((256, 512), flat.sky[k]))
        # the plane, from the gnomonic projection about the field's centre of the chip's
        # pixels through its SIP distortion: sky[k] at the exposure's pointing
        pointing = centre.spherical_offsets_by(*(np.array(kw["dithers"][k // 2]) * u.arcsec))
        x0, y0 = (3600 * v for v in _gnomonic(pointing.ra.deg, pointing.dec.deg, *datasets.HDF_CENTER))
        xi, eta = (3600 * v for v in _gnomonic(*tilted.wcs[k].all_pix2world(x, y, 0), *datasets.HDF_CENTER))
        east, north = slopes[k // 2]
        expected = kw["sky"][k // 2] + east * (xi - x0) + north * (eta - y0)
        np.testing.assert_allclose(tilted.true_sky(k)[y.astype(int), x.astype(int)], expected,
                                   rtol=0, atol=1e-8)


def test_residual_sky_removes_only_a_common_plane_on_the_sky():
    tilted = hubble_deep_field_exposures(gradient=[(0.05, -0.02), (0.0, 0.03)], noise=0,
                                         dithers=[(0, 0), (30, 10)], sky=[10.0, 20.0])
    truth = [tilted.true_sky(k) for k in range(4)]
    common = [3.0 + 0.01 * xi - 0.02 * eta for xi, eta in map(tilted.standard_coordinates, range(4))]
    rms = lambda r: float(np.sqrt(np.mean(r**2)))
    assert rms(tilted.residual_sky([t + c for t, c in zip(truth, common)])) < 1e-9
    assert rms(tilted.residual_sky([t + c for t, c in zip(truth, common)], step=4)) < 1e-9
    # a constant per image cannot follow the planes
    assert rms(tilted.residual_sky(list(tilted.sky))) > 1.0
    with pytest.raises(TypeError, match="either models or planes"):
        tilted.residual_sky()


@pytest.mark.parametrize("kw, match", [
    ({"noise": -1.0}, "noise must be a finite number >= 0"),
    ({"binning": 3}, "binning must be 1, 2, 4, 8 or 16"),
    ({"sky": [1.0, 2.0]}, r"sky must hold one finite level per exposure \(4\)"),
    ({"dithers": []}, "dithers must be a non-empty sequence"),
    ({"dithers": [(0, 0), (500, 0)]}, "within 120"),
    ({"dithers": [(0, 0)] * 5}, "sky must be given for more than 4 exposures"),
    ({"gradient": [(0.1, 0.0)] * 3}, r"one finite \(east, north\) slope per exposure \(4\)"),
    ({"gradient": [(0.1, np.nan)] * 4}, "gradient must hold one finite"),
    ({"gradient": "steep"}, "or be None for flat skies; got 'steep'"),
])
def test_bad_parameters_raise_with_the_parameter_named(kw, match):
    with pytest.raises(ValueError, match=match):
        hubble_deep_field_exposures(**kw)


def test_collection_groups_by_metadata(hdf):
    assert set(hdf.collection(group_by="detector").groups.values()) == {"WFC1", "WFC2"}
    assert set(hdf.collection().groups.values()) == {None}
    with pytest.raises(ValueError, match="group_by must be None, 'exposure' or 'detector'"):
        hdf.collection(group_by="filter")


def test_docstring_examples_run():
    failures, tried = doctest.testmod(datasets, optionflags=doctest.ELLIPSIS)
    assert tried >= 4 and failures == 0
