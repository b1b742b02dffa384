"""Scale: what a solve-only change re-uses, and the per-image sums over pairs."""

import numpy as np

import skymatch_nb_ui.engine.solve as solve_module
from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.testing import make_mosaic


def test_match_npix_counts_each_image_pixels_in_its_valid_overlaps():
    # 1 x 3 strip of 40 x 40 images overlapping by 8 columns: the middle one overlaps both
    m = make_mosaic((1, 3), shape=(40, 40), overlap=0.2, sky=[1.0, 2.0, 3.0])
    result = SkyMatcher(m.images, m.wcs).run(skymethod="match", skystat="mean")
    assert result.npix.tolist() == [8 * 40, 2 * 8 * 40, 8 * 40]
    # a group's members count their own pixels
    grouped = SkyMatcher(m.images, m.wcs).run(groups=["g", None, "g"], skymethod="match", skystat="mean")
    assert grouped.npix.tolist() == [8 * 40, 2 * 8 * 40, 8 * 40]


def test_a_solve_only_change_reuses_the_least_squares(monkeypatch):
    calls = []
    fit_offsets = solve_module.fit_offsets
    monkeypatch.setattr(solve_module, "fit_offsets",
                        lambda *a, **k: calls.append(1) or fit_offsets(*a, **k))
    m = make_mosaic((2, 3), shape=(30, 30), sky=[100, 120, 105, 110, 105, 115])
    matcher = SkyMatcher(m.images, m.wcs)
    first = matcher.run(skymethod="match", skystat="mean")
    for changes in ({"match_down": False}, {"skymethod": "global+match"}, {"anchor": "component"}):
        matcher.run(skystat="mean", **{"skymethod": "match", **changes})
    again = matcher.run(skymethod="match", skystat="mean")
    assert len(calls) == 1
    np.testing.assert_array_equal(again.sky, first.sky)
    matcher.run(skymethod="match", skystat="median")  # new statistics: new offsets
    assert len(calls) == 2


class CountingLoader:
    """A loader that hands out fresh arrays and counts how many are alive at once."""

    alive = 0
    most = 0

    def __init__(self, image):
        self.image = image
        self.shape = image.shape

    def data(self):
        import weakref

        copy = self.image.copy()
        CountingLoader.alive += 1
        CountingLoader.most = max(CountingLoader.most, CountingLoader.alive)
        weakref.finalize(copy, CountingLoader.release)
        return copy

    def mask(self):
        return None

    @staticmethod
    def release():
        CountingLoader.alive -= 1


def test_pixels_are_read_per_task_and_released_after_it():
    """Memory is bounded by one image per worker (two to compare pixels), not by the number of images."""
    m = make_mosaic((4, 5), shape=(40, 40), noise=1.0, seed=2)
    loaders = [CountingLoader(image) for image in m.images]
    for compare, most in (("levels", 1), ("differences", 2)):
        CountingLoader.alive = CountingLoader.most = 0
        result = SkyMatcher(loaders, m.wcs, scheduler="serial").run(skymethod="global+match",
                                                                     compare=compare)
        assert result.valid.all()
        assert CountingLoader.most == most and CountingLoader.alive == 0
        CountingLoader.most = 0
        SkyMatcher(loaders, m.wcs, scheduler="threads", workers=2).run(skymethod="global+match",
                                                                        compare=compare)
        assert CountingLoader.most <= 2 * most and CountingLoader.alive == 0
