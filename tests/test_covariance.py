"""Pairs of overlaps that share pixels of one image have correlated statistics."""

import numpy as np
import pytest

from skymatch_nb_ui import SkyMatcher
from skymatch_nb_ui.engine.covariance import (
    SharedSides,
    mode_coupling,
    pair_covariance,
    shared_pixels,
    shared_sides,
)
from skymatch_nb_ui.engine.geometry import Runs, runs_from_mask
from skymatch_nb_ui.engine.groups import group_inputs, input_overlaps
from skymatch_nb_ui.testing import make_mosaic


def test_shared_pixels_counts_the_pixels_in_both_sets():
    rng = np.random.default_rng(4)
    for _ in range(100):
        masks = [rng.random((30, 40)) < 0.4 for _ in range(2)]
        for m in masks:  # a block (one run per row of a range of rows), a block with rows
            kind = rng.random()  # missing (one run per row), or scattered pixels
            if kind < 0.6:
                m[...] = False
                r0, r1 = sorted(rng.integers(0, 30, 2))
                c0, c1 = sorted(rng.integers(0, 40, 2))
                m[r0 : r1 + 1, c0 : c1 + 1] = True
                if kind < 0.3:
                    m[rng.random(30) < 0.3] = False
        first, second = (runs_from_mask(m) for m in masks)
        assert shared_pixels(first, second) == np.count_nonzero(masks[0] & masks[1])
    empty = Runs(np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.intp))
    assert shared_pixels(empty, runs_from_mask(np.ones((3, 3), bool))) == 0
    # a set given as runs that overlap (two sets' runs one after the other): its pixels once
    for _ in range(50):
        parts = [rng.random((30, 40)) < 0.3 for _ in range(3)]
        runs = [runs_from_mask(m) for m in parts]
        both = Runs(*(np.concatenate([getattr(r, f) for r in runs[:2]])
                      for f in ("rows", "start", "stop")))
        expected = np.count_nonzero((parts[0] | parts[1]) & parts[2])
        assert shared_pixels(both, runs[2]) == shared_pixels(runs[2], both) == expected


def test_pairs_sharing_a_corner_are_correlated_with_the_right_sign():
    # 2x2 images: every pair involving image 0 measures its pixels in the shared corner.
    m = make_mosaic((2, 2), shape=(50, 50), overlap=0.3)
    matcher = SkyMatcher(m.images, m.wcs)
    grouping = group_inputs(None, 4)
    overlaps = input_overlaps(matcher.geometry.runs, grouping.label_of)
    keys = [(g, h) for g, h in overlaps if g < h]
    shared = shared_sides(overlaps, keys, matcher.geometry.runs, [im.shape for im in m.images])
    cov = pair_covariance(shared, np.ones((2, len(keys)))).toarray()
    k01, k02, k13 = keys.index((0, 1)), keys.index((0, 2)), keys.index((1, 3))
    assert cov[k01, k02] > 0  # image 0 is the first of both: its noise enters both the same way
    assert cov[k01, k13] < 0  # image 1 is first in one, second in the other
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.diag(cov) == 0)
    # the correlation of two sides is their shared fraction: 0.3 x 0.3 corner of 0.3 strips
    assert 0.2 < cov[k01, k02] < 0.4


def test_two_modes_are_correlated_as_means_at_one_value_and_hardly_at_distant_values():
    from scipy.sparse import csr_matrix

    # sides 0 and 2 (first sides of pairs 0 and 1) share pixels: mean-like correlation 0.4
    corr = csr_matrix(np.array([[0, 0, 0.4, 0], [0, 0, 0, 0], [0.4, 0, 0, 0], [0, 0, 0, 0.0]]))
    shared = SharedSides(correlation=corr, npix=np.ones(4))

    def coupled(delta, kernel=(1.0, 1.0), noise=1.0):
        level = np.array([[0.0, delta], [5.0, 5.0]])  # (side, pair): sides 0 and 2 are row 0
        width = np.array([[kernel[0], kernel[1]], [1.0, 1.0]])
        return mode_coupling(shared, level, width, np.full((2, 2), noise)).correlation.toarray()

    assert coupled(0.0)[0, 2] == pytest.approx(0.4)  # one value, one kernel: as means
    assert coupled(0.0, noise=1e-3)[0, 2] == pytest.approx(0.4)
    assert abs(coupled(10.0)[0, 2]) < 0.4 * 0.01  # modes 10 kernels apart
    assert abs(coupled(0.0, kernel=(0.3, 3.0))[0, 2]) < 0.4  # different kernels
    assert coupled(1.0)[0, 2] == coupled(1.0)[2, 0] == coupled(-1.0)[0, 2]
    unknown = mode_coupling(shared, np.zeros((2, 2)), np.full((2, 2), np.nan), np.ones((2, 2)))
    np.testing.assert_array_equal(unknown.correlation.toarray(), corr.toarray())  # not modes


def test_shared_sides_counts_each_pair_of_sides_as_shared_pixels_does(monkeypatch):
    """All pairs of sides are counted at once; each must be what `shared_pixels` says of it,
    for convex overlaps and for sides with rows missing or holes in their rows, in groups,
    a few images at a time or all at once."""
    from skymatch_nb_ui.engine import covariance

    m = make_mosaic((4, 5), shape=(60, 60), overlap=0.3, rotation=5.0, jitter=2.0, seed=3)
    matcher = SkyMatcher(m.images, m.wcs)
    runs = dict(matcher.geometry.runs)
    for k, key in enumerate(sorted(runs)):
        r = runs[key]
        if k % 3 == 1 and len(r.rows) > 2:  # every other row only: one run per row
            runs[key] = Runs(r.rows[::2], r.start[::2], r.stop[::2])
        elif k % 3 == 2:  # a one-pixel hole in each row long enough: two runs per row
            cut = (r.stop - r.start) >= 3
            middle = (r.start + r.stop) // 2
            rows = np.concatenate([r.rows, r.rows[cut]])
            start = np.concatenate([r.start, middle[cut] + 1])
            stop = np.concatenate([np.where(cut, middle, r.stop), r.stop[cut]])
            order = np.lexsort((start, rows))
            runs[key] = Runs(rows[order], start[order], stop[order])
    shapes = [im.shape for im in m.images]
    for labels, at_once in ((None, 512), (None, 3), ([k // 2 for k in range(20)], 4)):
        monkeypatch.setattr(covariance, "_IMAGES_AT_ONCE", at_once)
        grouping = group_inputs(labels, 20)  # single images; pairs of them
        overlaps = input_overlaps(runs, grouping.label_of)
        keys = [(g, h) for g, h in overlaps if g < h]
        found = shared_sides(overlaps, keys, runs, shapes)
        sides, npix = [], np.zeros(2 * len(keys))  # side, image, pixels
        for p, (g, h) in enumerate(keys):
            for s, key in enumerate(((g, h), (h, g))):
                for a, partners in overlaps[key].items():
                    pixels = Runs.union([runs[(a, b)] for b in sorted(partners)], shapes[a])
                    sides.append((2 * p + s, a, pixels))
                    npix[2 * p + s] += pixels.npix
        expected = np.zeros((2 * len(keys), 2 * len(keys)))
        for x, (s1, a1, pix1) in enumerate(sides):
            for s2, a2, pix2 in sides[x + 1 :]:
                if a1 == a2 and s1 // 2 != s2 // 2:
                    value = (1 - 2 * (s1 % 2)) * (1 - 2 * (s2 % 2)) * shared_pixels(pix1, pix2)
                    expected[s1, s2] += value / np.sqrt(npix[s1] * npix[s2])
                    expected[s2, s1] += value / np.sqrt(npix[s1] * npix[s2])
        assert np.count_nonzero(expected) > 20
        np.testing.assert_array_equal(found.npix, npix)
        np.testing.assert_allclose(found.correlation.toarray(), expected, rtol=1e-14, atol=0)
