"""Images given as loaders: pixels read only by the statistics tasks, once per image and run
(with ``compare="differences"``, also once by each task that interpolates an image)."""

import pickle
from dataclasses import dataclass

import numpy as np
import pytest
from astropy.io import fits

from skymatch_nb_ui import ImageCollection, SkyMatcher, skymatch
from skymatch_nb_ui import io as smio
from skymatch_nb_ui.engine.loaders import ArrayImage, is_loader
from skymatch_nb_ui.engine.measure import measure_image
from skymatch_nb_ui.engine.params import StatParams
from skymatch_nb_ui.testing import make_mosaic

READS: list = []  # (kind, index) of every read, by any CountingLoader


@dataclass(frozen=True)
class CountingLoader:
    """A loader that records its reads (module level, so that it pickles)."""

    pixels: np.ndarray
    good: np.ndarray | None
    index: int

    @property
    def shape(self):
        return self.pixels.shape

    def data(self):
        READS.append(("data", self.index))
        return self.pixels

    def mask(self):
        READS.append(("mask", self.index))
        return self.good


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((2, 2), shape=(50, 50), sky=[10, 12, 11, 13], noise=0.5, mask_fraction=0.02,
                       nan_fraction=0.01, seed=5)


def loaders(m):
    return [CountingLoader(im, mask, k) for k, (im, mask) in enumerate(zip(m.images, m.masks))]


@pytest.mark.parametrize("method", ["local", "global", "match", "global+match"])
def test_loaders_give_the_answers_of_arrays(mosaic, method):
    arrays = skymatch(mosaic.images, mosaic.wcs, masks=mosaic.masks, skymethod=method)
    loaded = skymatch(loaders(mosaic), mosaic.wcs, skymethod=method)
    np.testing.assert_array_equal(loaded.sky, arrays.sky)
    np.testing.assert_array_equal(loaded.sky_err, arrays.sky_err)
    np.testing.assert_array_equal(loaded.npix, arrays.npix)


def test_pixels_are_read_only_by_the_statistics_and_once_per_image(mosaic):
    READS.clear()
    matcher = SkyMatcher(loaders(mosaic), mosaic.wcs, workers=2)
    assert matcher.geometry.runs and READS == []  # stage 1 needs shapes and WCS only
    matcher.run(skymethod="global+match", compare="levels")
    assert sorted(READS) == sorted((kind, k) for k in range(4) for kind in ("data", "mask"))
    READS.clear()
    matcher.run(skymethod="match", match_down=False, compare="levels")  # solve only: no read
    assert READS == []
    # new statistics: each image read once more
    matcher.run(skymethod="match", skystat="mean", compare="levels")
    assert sorted(READS) == sorted((kind, k) for k in range(4) for kind in ("data", "mask"))


def test_pixel_differences_read_each_image_once_per_task_that_uses_it(mosaic):
    # One task per image whose pixels are compared; it reads that image once and each image
    # it interpolates once: 2x2 mosaic, 6 overlapping pairs, so 6 + (images compared) reads.
    READS.clear()
    matcher = SkyMatcher(loaders(mosaic), mosaic.wcs, workers=2)
    matcher.run(skymethod="match", compare="differences")
    compared = {matcher._sampled(a, b)[0] for a in range(4) for b in range(a + 1, 4)}
    data = [k for kind, k in READS if kind == "data"]
    assert len(data) == 6 + len(compared) and set(data) == set(range(4))
    assert sorted(k for kind, k in READS if kind == "mask") == sorted(data)
    READS.clear()
    matcher.run(skymethod="match", match_down=False, compare="differences")  # solve only
    assert READS == []


def test_a_task_is_a_plain_function_of_picklable_arguments(mosaic):
    loader = pickle.loads(pickle.dumps(loaders(mosaic)[1]))
    matcher = SkyMatcher(mosaic.images, mosaic.wcs, masks=mosaic.masks)
    regions = [None, (matcher.overlap_pixels(1, 0), matcher.overlap_pixels(1, 3))]
    stat = StatParams(skystat="median")
    whole, overlaps = measure_image(loader, regions, pickle.loads(pickle.dumps(stat)))
    result = matcher.run(skymethod="local", skystat="median")
    assert whole.value == result.local[1] and whole.npix == result.npix[1]
    assert 0 < overlaps.npix < whole.npix


def test_a_difference_task_is_a_plain_function_of_picklable_arguments(mosaic):
    from skymatch_nb_ui.engine.measure import Comparison, DifferenceTask

    matcher = SkyMatcher(mosaic.images, mosaic.wcs, masks=mosaic.masks)
    result = matcher.run(skymethod="match", skystat="median", compare="differences")
    s, o = matcher._sampled(0, 1)
    task = DifferenceTask(loaders(mosaic)[s], (Comparison(loaders(mosaic)[o],
                          matcher.overlap_pixels(s, o), matcher._map(s, o)),), 0)
    (stat,) = pickle.loads(pickle.dumps(task)).run(StatParams(skystat="median"))
    k = np.flatnonzero((result.pairs.a == 0) & (result.pairs.b == 1))[0]
    assert stat.value * (1 if s == 0 else -1) == result.pairs.diff_before[k]
    assert stat.npix == result.pairs.npix_a[k]


class LyingLoader:
    shape = (50, 50)

    def data(self):
        return np.zeros((50, 49), np.float32)

    def mask(self):
        return None

    def __repr__(self):
        return "LyingLoader()"


def test_a_loader_that_breaks_its_promise_is_named(mosaic):
    images = [ArrayImage(im) for im in mosaic.images]
    images[2] = LyingLoader()
    with pytest.raises(ValueError, match=r"LyingLoader\(\) promised shape \(50, 50\) but its pixels"):
        SkyMatcher(images, mosaic.wcs).run(skymethod="local")


def test_a_loader_takes_no_separate_mask(mosaic):
    masks = [None, None, np.ones((50, 50), bool), None]
    with pytest.raises(ValueError, match=r"masks\[2\] must be None: images\[2\] is a loader"):
        SkyMatcher(loaders(mosaic), mosaic.wcs, masks=masks)


def test_arrays_and_array_likes_are_not_loaders():
    assert not is_loader(np.zeros((2, 2))) and not is_loader([[1, 2]])
    assert is_loader(ArrayImage(np.zeros((2, 2))))


def test_a_fits_collection_reads_each_file_once_per_run(tmp_path, monkeypatch):
    """The collection hands the engine loaders: no image or mask is read before a task needs it."""
    m = make_mosaic((2, 3), shape=(40, 40), sky=[100, 120, 105, 110, 105, 115])
    paths = []
    for k, (image, w) in enumerate(zip(m.images, m.wcs)):
        dq = np.zeros(image.shape, np.uint32)
        dq[:3] = 4
        hdus = [fits.PrimaryHDU(), fits.ImageHDU(image, w.to_header(), name="SCI"),
                fits.ImageHDU(dq, name="DQ")]
        paths.append(tmp_path / f"img{k}.fits")
        fits.HDUList(hdus).writeto(paths[-1])
    calls = []
    data, mask = smio.FitsImage.data, smio.FitsImage.mask
    monkeypatch.setattr(smio.FitsImage, "data", lambda self: calls.append("data") or data(self))
    monkeypatch.setattr(smio.FitsImage, "mask", lambda self, bits=0: calls.append("mask") or mask(self, bits))
    coll = ImageCollection.from_fits(paths)
    assert coll.matcher.geometry.runs and calls == []
    ds = coll.skymatch(skymethod="global+match", skystat="mean", compare="levels")
    np.testing.assert_allclose(ds.sky.values, m.sky, atol=1e-4)
    assert sorted(calls) == ["data"] * 6 + ["mask"] * 6
    loader = pickle.loads(pickle.dumps(coll.matcher.loaders[0]))
    np.testing.assert_array_equal(loader.mask()[:3], False)
