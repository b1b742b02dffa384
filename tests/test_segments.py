"""The batched cell statistic (`segments.segment_statistics`) gives what `sky_statistic` gives per cell."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skymatch_nb_ui.engine.params import StatParams
from skymatch_nb_ui.engine.segments import BATCH_MAX, segment_statistics
from skymatch_nb_ui.engine.stats import sky_statistic

STATS = ("mean", "median", "midpt", "mode")


def _per_cell(values, start, count, params):
    out = [sky_statistic(values[a : a + n], params) for a, n in zip(start, count)]
    return (np.array([s.value for s in out]), np.array([s.npix for s in out]),
            np.array([s.err for s in out]))


def _assert_same(got, want):
    value, npix, err = got
    rv, rn, re = want
    np.testing.assert_array_equal(npix, rn)
    np.testing.assert_array_equal(np.isnan(value), np.isnan(rv))
    scale = np.where(np.isfinite(re) & (re > 0), re, np.maximum(np.abs(rv), 1.0))
    ok = np.isfinite(rv)
    # to rounding: the sums are taken in another order
    assert np.all(np.abs(value[ok] - rv[ok]) <= 1e-9 * scale[ok])
    np.testing.assert_array_equal(np.isnan(err), np.isnan(re))
    fin = np.isfinite(re)
    assert np.all(np.abs(err[fin] - re[fin]) <= 1e-9 * np.maximum(re[fin], 1e-300))


def _cells(seed: int, k: int = 300):
    """Random cells like the plane cells: noise about a level, faint sources, integers, NaN."""
    rng = np.random.default_rng(seed)
    count = rng.integers(1, 2500, k)
    count[:6] = [1, 2, 3, 64, BATCH_MAX + 500, 0]  # tiny, one by one, empty
    parts = []
    for i, c in enumerate(count):
        v = rng.normal(rng.normal(0, 100), rng.uniform(0.1, 5), c)
        if i % 3 == 0:  # a tail of sources
            v[: c // 10] += rng.exponential(20, c // 10)
        if i % 7 == 0:  # integer data: ties on clipping limits and bin edges
            v = np.round(v)
        if i % 11 == 0:  # constant
            v[:] = 3.0
        parts.append(v)
    values = np.concatenate(parts)
    values[::97] = np.nan
    start = np.cumsum(count) - count
    return values, start, count


@pytest.mark.parametrize("skystat", STATS)
@pytest.mark.parametrize("options", [{}, {"nclip": 0}, {"lower": -50.0, "upper": 80.0},
                                     {"lsigma": 2.0, "usigma": 2.0}, {"lsigma": 0.5, "usigma": 0.8},
                                     {"binwidth": 0.5}])
def test_batched_cells_equal_the_per_cell_statistic(skystat, options):
    values, start, count = _cells(seed=len(options) + len(skystat))
    params = StatParams(skystat=skystat, **options)
    _assert_same(segment_statistics(values, start, count, params),
                 _per_cell(values, start, count, params))


def test_float32_cells_with_gaps_between_them():
    values, start, count = _cells(seed=5, k=80)
    values = values.astype(np.float32)
    start = start + np.arange(len(start)) * 3  # gaps of three values, ignored
    spaced = np.full(int(start[-1] + count[-1]), np.float32(1e30))
    for a, n, b in zip(start, count, np.cumsum(count) - count):
        spaced[a : a + n] = values[b : b + n]
    for skystat in STATS:
        params = StatParams(skystat=skystat)
        _assert_same(segment_statistics(spaced, start, count, params),
                     _per_cell(spaced, start, count, params))


def test_huge_values_and_binwidth_errors_go_through_the_per_cell_statistic():
    values = np.concatenate([np.r_[np.ones(50), 1e200], np.arange(100.0)])
    start, count = np.array([0, 51]), np.array([51, 100])
    for skystat in STATS:
        params = StatParams(skystat=skystat)
        _assert_same(segment_statistics(values, start, count, params),
                     _per_cell(values, start, count, params))


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    cells=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=0, max_size=200),
        min_size=1, max_size=12),
    skystat=st.sampled_from(STATS),
    nclip=st.integers(0, 6),
    sigma=st.sampled_from([1.5, 3.0, 4.0]),
)
def test_any_cells_match_the_per_cell_statistic(cells, skystat, nclip, sigma):
    values = np.concatenate([np.asarray(c, np.float64) for c in cells]) if cells else np.empty(0)
    count = np.array([len(c) for c in cells])
    start = np.cumsum(count) - count
    params = StatParams(skystat=skystat, nclip=nclip, lsigma=sigma, usigma=sigma)
    try:
        want = _per_cell(values, start, count, params)
    except ValueError:  # a histogram of too many bins: the same error from both
        with pytest.raises(ValueError, match="binwidth"):
            segment_statistics(values, start, count, params)
        return
    _assert_same(segment_statistics(values, start, count, params), want)


def test_image_cells_use_exactly_their_usable_pixels():
    from skymatch_nb_ui.engine.loaders import ArrayImage
    from skymatch_nb_ui.engine.planes import CellGrid, measure_cells

    rng = np.random.default_rng(3)
    image = rng.normal(10.0, 1.0, (90, 130))
    image[rng.random(image.shape) < 0.05] = np.nan
    mask = rng.random(image.shape) > 0.1
    theta = np.radians(20.0)  # cells rotated against the pixel grid
    grid = CellGrid(np.array([[np.cos(theta), np.sin(theta)],
                              [-np.sin(theta), np.cos(theta)]]) / 23.0, np.array([0.3, 2.1]))
    params = StatParams(skystat="median")
    cells = measure_cells(ArrayImage(image, good=mask), [(None, grid)], params)[0]
    y, x = np.mgrid[0:90, 0:130]
    u = np.floor(grid.matrix[0, 0] * x + grid.matrix[0, 1] * y + grid.offset[0]).astype(int)
    v = np.floor(grid.matrix[1, 0] * x + grid.matrix[1, 1] * y + grid.offset[1]).astype(int)
    usable = mask & np.isfinite(image)
    offset = 1 << 20
    code = ((u + offset).astype(np.int64) << 21) | (v + offset)
    assert len(cells.cell) > 10
    for k, c in enumerate(cells.cell):
        inside = (code == c) & usable
        assert cells.x[k] == pytest.approx(x[inside].mean(), abs=1e-9)
        assert cells.y[k] == pytest.approx(y[inside].mean(), abs=1e-9)
        want = sky_statistic(image[inside], params)
        assert cells.value[k] == pytest.approx(want.value, abs=1e-12)
        assert cells.npix[k] == want.npix


@pytest.mark.parametrize("options", [{}, {"binwidth": 0.5}, {"binwidth": 2.0}, {"nclip": 0}])
def test_large_cells_mode_equals_the_per_cell_statistic(options):
    """Cells above BATCH_MAX: `stats`' clipped sets, the peaks of all of them at once."""
    rng = np.random.default_rng(11)
    count = rng.integers(BATCH_MAX + 1, 4 * BATCH_MAX, 24)
    parts = []
    for i, c in enumerate(count):
        v = rng.normal(rng.normal(0, 50), rng.uniform(0.5, 3), c)
        if i % 3 == 0:
            v[: c // 8] += rng.exponential(10, c // 8)  # an asymmetric top
        if i % 5 == 0:
            v = np.round(v)
        if i % 7 == 0:
            v[:] = -2.5
        parts.append(v.astype(np.float32))
    values = np.concatenate(parts)
    start = np.cumsum(count) - count
    params = StatParams(skystat="mode", **options)
    _assert_same(segment_statistics(values, start, count, params),
                 _per_cell(values, start, count, params))


# -- the cells of pixel differences (skymodel="plane", compare="differences") ---------------------
def _difference_jobs(seed: int):
    """Overlapping images (rotated, with NaNs and masks) and their difference jobs."""
    from skymatch_nb_ui.engine.differences import pixel_map
    from skymatch_nb_ui.engine.geometry import CelestialWCS, mosaic_geometry
    from skymatch_nb_ui.engine.loaders import ArrayImage
    from skymatch_nb_ui.engine.planes import CellGrid, DifferenceRegion
    from skymatch_nb_ui.testing import make_mosaic

    m = make_mosaic((2, 2), shape=(120, 150), overlap=0.35, noise=1.0, gradient=2.0,
                    sources=10, rotation=7.0, jitter=2.0, dtype=np.float32, seed=seed)
    rng = np.random.default_rng(seed)
    loaders = []
    for im in m.images:
        im = im.copy()
        im[rng.random(im.shape) < 0.02] = np.nan
        good = rng.random(im.shape) > 0.03
        good[5:20, 30:60] = False
        loaders.append(ArrayImage(im, good=good))
    wcs = [CelestialWCS(w) for w in m.wcs]
    geometry = mosaic_geometry(wcs, [im.shape for im in m.images])
    jobs = []  # (image, (region, grid)) for every overlap, each with its own rotated grid
    for (a, b), runs in sorted(geometry.runs.items()):
        if a == b or not runs:
            continue
        theta = rng.uniform(0, np.pi)
        side = rng.uniform(9.0, 40.0)
        rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        if len(jobs) % 3 == 0:  # axis-aligned cells: no cut along one axis
            rot = np.eye(2)
        grid = CellGrid(rot / side, rng.uniform(-3, 3, 2))
        jobs.append((a, (DifferenceRegion(loaders[b], runs, pixel_map(wcs[a], wcs[b], runs)), grid)))
    return loaders, jobs


@pytest.mark.parametrize("skystat", ["median", "mode"])
def test_difference_cells_use_exactly_their_usable_differences(skystat):
    """Each cell: the statistic of the pair's usable differences whose pixel is in it, at
    their centroid; the whole overlap's statistic as the constant model measures it; the
    same cells whether the pairs are measured in one batch or one by one."""
    from skymatch_nb_ui.engine.differences import (
        DifferenceJob,
        interpolation_inflation,
        many_pair_differences,
    )
    from skymatch_nb_ui.engine.measure import Comparison, measure_differences
    from skymatch_nb_ui.engine.planes import CellTask, measure_cell_batch

    loaders, jobs = _difference_jobs(4)
    params = StatParams(skystat=skystat, lower=-1e3, upper=1e4)
    tasks = [CellTask(loaders[a], (job,), 1, label=f"images[{a}]") for a, job in jobs]
    together = [c for cells in measure_cell_batch(tasks, params) for c in cells]
    alone = [measure_cell_batch([t], params)[0][0] for t in tasks]
    checked = 0
    for (a, (region, grid)), cells, single in zip(jobs, together, alone):
        image, good = loaders[a].pixels, loaders[a].good
        other = region.loader
        # the pair's differences as the batch computes them (`many_pair_differences`: small
        # images; a pair's values do not depend on the others of its batch)
        (d, w2), = many_pair_differences([DifferenceJob(image, good, other.pixels, other.good,
                                                        region.runs, region.pmap, a, -1)],
                                         lower=params.lower, upper=params.upper)
        inflation = interpolation_inflation(w2, region.pmap.area_ratio, skystat)
        r = region.runs
        y = np.repeat(r.rows, r.stop - r.start)
        x = np.concatenate([np.arange(s, e) for s, e in zip(r.start, r.stop)])
        u = np.floor(grid.matrix[0, 0] * x + grid.matrix[0, 1] * y + grid.offset[0]).astype(np.int64)
        v = np.floor(grid.matrix[1, 0] * x + grid.matrix[1, 1] * y + grid.offset[1]).astype(np.int64)
        code = ((u + (1 << 20)) << 21) | (v + (1 << 20))
        usable = np.isfinite(d)
        codes, counts = np.unique(code[usable], return_counts=True)
        assert np.array_equal(np.sort(cells.cell), codes[counts >= 64])
        of_differences = params.replace(lower=None, upper=None)
        for k, c in enumerate(cells.cell):
            inside = (code == c) & usable
            want = sky_statistic(d[inside], of_differences)
            assert cells.npix[k] == want.npix
            assert abs(cells.value[k] - want.value) <= 1e-9 * want.err
            assert abs(cells.err[k] - want.err * inflation) <= 1e-9 * want.err * inflation
            assert cells.x[k] == pytest.approx(x[inside].mean(), abs=1e-9)
            assert cells.y[k] == pytest.approx(y[inside].mean(), abs=1e-9)
            checked += 1
        # one by one: the same cells (the batched mode's smoothing to rounding)
        assert np.array_equal(single.cell, cells.cell) and np.array_equal(single.npix, cells.npix)
        assert np.allclose(single.value, cells.value, rtol=0, atol=1e-9 * np.nanmax(cells.err))
        # the whole overlap: what skymodel="constant" measures for the pair
        whole = measure_differences(loaders[a], [Comparison(other, region.runs, region.pmap)],
                                    params)[0]
        assert cells.whole == whole
    assert checked > 20


def test_a_batch_names_the_image_whose_cells_fail():
    """Several images' cells get their statistics together; an error names the right one."""
    from skymatch_nb_ui.engine.loaders import ArrayImage
    from skymatch_nb_ui.engine.planes import CellGrid, CellTask, measure_cell_batch
    from skymatch_nb_ui.engine.stats import StatisticError

    grid = CellGrid(np.eye(2) / 40.0, np.zeros(2))
    flat = ArrayImage(np.full((80, 120), 7.0))  # constant cells: no histogram
    noisy = ArrayImage(np.random.default_rng(0).normal(0.0, 1.0, (80, 120)))
    tasks = [CellTask(flat, ((None, grid),), 1, label="images[0]"),
             CellTask(noisy, ((None, grid),), 1, label="images[1]")]
    ok = measure_cell_batch(tasks, StatParams(skystat="mode"))
    assert np.all(ok[0][0].value == 7.0) and np.all(np.abs(ok[1][0].value) < 1.0)
    with pytest.raises(StatisticError, match=r"^images\[1\]: binwidth=1e-07"):
        measure_cell_batch(tasks, StatParams(skystat="mode", binwidth=1e-7))


@pytest.mark.parametrize("options", [{}, {"binwidth": 0.5}, {"nclip": 0}])
def test_large_modes_alone_do_not_depend_on_the_others(options):
    """``alone=True`` (the whole overlaps of batched pairs): each set's value and error are
    the same bits measured with any others or by itself, and `sky_statistic`'s to rounding."""
    from skymatch_nb_ui.engine.segments import large_statistics

    rng = np.random.default_rng(17)
    arrays = []
    for i, c in enumerate(rng.integers(BATCH_MAX + 1, 3 * BATCH_MAX, 30)):
        v = rng.normal(rng.normal(0, 5), rng.uniform(0.2, 4), c)  # histograms of many widths
        if i % 3 == 0:
            v[: c // 6] += rng.exponential(4, c // 6)
        if i % 7 == 0:
            v[:] = 1.5
        arrays.append(v.astype(np.float32 if i % 2 else np.float64))
    params = StatParams(skystat="mode", **options)
    value, npix, err = large_statistics(arrays, params, alone=True)
    for k, a in enumerate(arrays):
        want = sky_statistic(a, params)
        assert npix[k] == want.npix
        assert abs(value[k] - want.value) <= 1e-9 * max(want.err, 1e-12)
        assert err[k] == pytest.approx(want.err, rel=1e-12, abs=1e-300)
    for pick in ([5], [0, 29], list(range(29, -1, -2)), [3, 4, 6, 7, 9]):
        v, _, e = large_statistics([arrays[k] for k in pick], params, alone=True)
        assert np.array_equal(v, value[pick]) and np.array_equal(e, err[pick], equal_nan=True)
