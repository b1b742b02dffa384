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
