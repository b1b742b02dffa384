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


@pytest.mark.parametrize("kw, match", [
    ({"noise": -1.0}, "noise must be a finite number >= 0"),
    ({"binning": 3}, "binning must be 1, 2, 4, 8 or 16"),
    ({"sky": [1.0, 2.0]}, r"sky must hold one finite level per exposure \(4\)"),
    ({"dithers": []}, "dithers must be a non-empty sequence"),
    ({"dithers": [(0, 0), (500, 0)]}, "within 120"),
    ({"dithers": [(0, 0)] * 5}, "sky must be given for more than 4 exposures"),
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
