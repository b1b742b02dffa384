"""The reliability sweep of issue 9 (items 2-13): awkward input gives a correct result or a
clear error that names the input, the rule and the way out; never a silent wrong answer."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from skymatch_nb_ui import ImageCollection, SkyMatcher, skymatch
from skymatch_nb_ui.testing import make_mosaic


@pytest.fixture(scope="module")
def pair():
    return make_mosaic((1, 2), shape=(60, 60), overlap=0.5, sky=[100, 120], noise=1.0, seed=5)


# -- item 2: numpy.ma.MaskedArray images ----------------------------------------------------------
def garbage_masked(image, value=-1.0e5):
    """``image`` with its left third set to ``value`` and masked (numpy: True = bad)."""
    data = np.array(image, copy=True)
    data[:, :20] = value
    bad = np.zeros(data.shape, bool)
    bad[:, :20] = True
    return np.ma.MaskedArray(data, mask=bad)


def test_masked_array_mask_is_honoured(pair):
    images = [garbage_masked(im) for im in pair.images]
    plain = skymatch(pair.images, pair.wcs, skymethod="local", skystat="mean", nclip=0)
    result = skymatch(images, pair.wcs, skymethod="local", skystat="mean", nclip=0)
    np.testing.assert_allclose(result.sky, [100, 120], atol=0.2)
    assert (result.npix == 60 * 40).all() and (plain.npix == 3600).all()
    masks = [np.ma.getmaskarray(im).copy() for im in images]
    matched = skymatch(images, pair.wcs, skystat="mean")
    np.testing.assert_allclose(matched.sky, [0, 20], atol=0.3)
    for image, mask in zip(images, masks):  # the caller's arrays are not changed
        np.testing.assert_array_equal(np.ma.getmaskarray(image), mask)


def test_masked_array_mask_combines_with_masks(pair):
    images = [garbage_masked(im) for im in pair.images]
    images[0].data[40:, :] = 1.0e6  # bad in masks= only
    good = [np.ones((60, 60), bool), np.ones((60, 60), bool)]
    good[0][40:, :] = False
    result = skymatch(images, pair.wcs, masks=good, skymethod="local", skystat="mean", nclip=0)
    np.testing.assert_allclose(result.sky, [100, 120], atol=0.3)
    assert result.npix.tolist() == [40 * 40, 60 * 40]


class _MaskedLoader:
    """A loader whose data() is a MaskedArray (as some readers return)."""

    def __init__(self, image, mask=None):
        self.image, self.good = image, mask
        self.shape = image.shape

    def data(self):
        return self.image

    def mask(self):
        return self.good


def test_masked_array_from_a_loader_is_honoured(pair):
    loaders = [_MaskedLoader(garbage_masked(im)) for im in pair.images]
    result = skymatch(loaders, pair.wcs, skymethod="local", skystat="median")
    np.testing.assert_allclose(result.sky, [100, 120], atol=0.3)


def test_collection_of_masked_arrays_reports_the_combined_mask(pair):
    images = [garbage_masked(im) for im in pair.images]
    coll = ImageCollection.from_arrays(images, pair.wcs)
    assert not coll.mask(0)[:, :20].any() and coll.mask(0)[:, 20:].all()
    assert type(coll.data(0)) is np.ndarray
    ds = coll.skymatch(skymethod="local", skystat="mean")
    np.testing.assert_allclose(ds.sky.values, [100, 120], atol=0.2)


# -- item 10: undefined or singular WCS ------------------------------------------------------------
def wcs_from(header_changes, base):
    header = base.to_header()
    header.update(header_changes)
    return WCS(header)


def test_nan_crval_is_refused(pair):
    broken = pair.wcs[1].deepcopy()
    broken.wcs.crval = [np.nan, 2.0]
    assert np.isfinite(broken.pixel_to_world_values(0, 0)[0])  # wcslib's 9.87654321e+107
    with pytest.raises(ValueError, match=r"wcs\[1\] has an undefined reference point: CRVAL = \[nan, 2.0\]"):
        SkyMatcher(pair.images, [pair.wcs[0], broken])


def test_singular_cd_matrix_is_refused(pair):
    header = pair.wcs[1].to_header()
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        header.remove(key, ignore_missing=True)
    header.update({"CD1_1": -1e-5, "CD1_2": -1e-5, "CD2_1": 1e-5, "CD2_2": 1e-5})
    singular = WCS(header)
    with pytest.raises(ValueError, match=r"wcs\[1\] is singular: .* determinant .*zero to rounding"):
        SkyMatcher(pair.images, [pair.wcs[0], singular])
    zero = pair.wcs[1].deepcopy()
    zero.wcs.cdelt = [0.0, 1e-5]
    with pytest.raises(ValueError, match=r"wcs\[1\] (cannot map pixels to the sky|is singular)"):
        SkyMatcher(pair.images, [pair.wcs[0], zero])


class _Plain:
    """A WCS known only through APE 14's low-level mapping (as any non-astropy WCS)."""

    def __init__(self, wcs):
        self._w = wcs
        self.pixel_n_dim = self.world_n_dim = 2
        self.world_axis_physical_types = wcs.world_axis_physical_types

    def pixel_to_world_values(self, x, y):
        return self._w.pixel_to_world_values(x, y)

    def world_to_pixel_values(self, lon, lat):
        return self._w.world_to_pixel_values(lon, lat)


def test_undefined_and_singular_are_refused_for_any_wcs(pair):
    broken = pair.wcs[1].deepcopy()
    broken.wcs.crval = [np.nan, 2.0]
    matcher = SkyMatcher(pair.images, [pair.wcs[0], _Plain(broken)])
    with pytest.raises(ValueError, match=r"wcs\[1\]: .*undefined sky coordinates"):
        matcher.run()
    header = pair.wcs[1].to_header()
    for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
        header.remove(key, ignore_missing=True)
    header.update({"CD1_1": -1e-5, "CD1_2": -1e-5, "CD2_1": 1e-5, "CD2_2": 1e-5})
    matcher = SkyMatcher(pair.images, [pair.wcs[0], _Plain(WCS(header))])
    with pytest.raises(ValueError, match=r"wcs\[1\]: the WCS maps the image onto a line"):
        matcher.run()


def test_fits_file_with_singular_cd_is_refused_by_name(pair, tmp_path):
    paths = []
    for k, (image, wcs) in enumerate(zip(pair.images, pair.wcs)):
        header = wcs.to_header()
        if k == 1:
            for key in ("PC1_1", "PC1_2", "PC2_1", "PC2_2", "CDELT1", "CDELT2"):
                header.remove(key, ignore_missing=True)
            header.update({"CD1_1": 1e-5, "CD1_2": 2e-5, "CD2_1": 1e-5, "CD2_2": 2e-5})
        paths.append(tmp_path / f"im{k}.fits")
        fits.PrimaryHDU(image, header).writeto(paths[-1])
    coll = ImageCollection.from_fits(paths, dq_ext=None)
    with pytest.raises(ValueError, match=r"wcs\[1\] is singular"):
        coll.skymatch()


# -- items 3 and 4: group labels -------------------------------------------------------------------
@pytest.fixture(scope="module")
def row():
    return make_mosaic((1, 4), shape=(40, 40), overlap=0.3, sky=[10, 20, 30, 40], seed=1)


def missing_labels():
    pd = pytest.importorskip("pandas")
    return [
        float("nan"), np.float64("nan"), np.float32("nan"), pd.NA, pd.NaT, np.datetime64("NaT"),
        complex("nan"),
    ]


def test_missing_labels_leave_images_alone_like_none(row):
    """NaN-like labels (each a distinct object, as read from a table) mean 'no group'."""
    matcher = SkyMatcher(row.images, row.wcs)
    alone = matcher.run(skymethod="local", skystat="mean", groups=[None, "g", "g", None])
    for missing in missing_labels():
        groups = [missing, "g", "g", missing]
        result = matcher.run(skymethod="local", skystat="mean", groups=groups)
        assert result.group.tolist() == alone.group.tolist() == [0, 1, 1, 2]
        assert result.inputs == alone.inputs == (0, "g", 3)
        np.testing.assert_array_equal(result.sky, alone.sky)
    # the same in one call with different NaN objects and pandas.NA mixed
    result = matcher.run(skymethod="local", skystat="mean", groups=[float("nan"), "g", "g", missing_labels()[3]])
    assert result.group.tolist() == [0, 1, 1, 2]
    nan_array = np.array([np.nan, 1.0, 1.0, np.nan])
    assert matcher.run(groups=nan_array, skymethod="local").group.tolist() == [0, 1, 1, 2]


def test_collection_stores_missing_labels_as_none(row):
    pd = pytest.importorskip("pandas")
    coll = ImageCollection.from_arrays(row.images, row.wcs)
    coll.groups = pd.Series([np.nan, "g", "g", pd.NA], dtype=object)
    assert list(coll.groups.values()) == [None, "g", "g", None]
    coll.set_group("image3", float("nan"))
    assert coll.groups["image3"] is None
    assert coll.table.group.values.tolist() == ["", "g", "g", ""]


@pytest.mark.parametrize("label", [("__alone__", 0), ("__alone__", 3), "__alone__"])
def test_labels_like_the_internal_alone_key_are_ordinary_labels(row, label):
    """A user label never collides with the key of an image left alone."""
    result = skymatch(row.images, row.wcs, skymethod="local", skystat="mean",
                      groups=[None, label, label, None])
    assert result.group.tolist() == [0, 1, 1, 2]
    assert result.inputs == (0, label, 3)
    np.testing.assert_allclose(result.sky, [10, 20, 20, 40])
