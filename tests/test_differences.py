"""Pixel differences of a pair without a common grid: the map between the two images, the
bilinear interpolation, what makes a difference unusable, and the error inflation."""

import math

import numpy as np
import pytest
from astropy.wcs import WCS

from skymatch_nb_ui.engine.differences import (
    DifferenceBuffers,
    interpolation_inflation,
    pair_differences,
    pixel_map,
)
from skymatch_nb_ui.engine.geometry import CelestialWCS, Runs, rasterize_polygon


def tan_wcs(crpix, *, rotation=0.0, scale=0.1, crval=(150.0, 2.0), sip=False):
    """A TAN WCS of ``scale`` arcsec pixels turned by ``rotation`` degrees."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    w.wcs.cd = scale / 3600 * np.array([[-c, s], [s, c]])
    w.wcs.crval = crval
    w.wcs.crpix = crpix
    if sip:
        from astropy.wcs import Sip

        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[0, 2], a[3, 0] = 2e-5, -1e-5, 3e-8  # strong, smooth distortion
        b[1, 1], b[0, 3] = 1.5e-5, -2e-8
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def overlap(wa, wb, shape_a, shape_b):
    """a's pixels whose centres fall inside b (as the geometry stage finds them)."""
    ny, nx = shape_b
    corners_x = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    corners_y = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    ra, dec = wb.all_pix2world(corners_x, corners_y, 0)
    px, py = wa.all_world2pix(ra, dec, 0)
    return rasterize_polygon(px, py, shape_a)


def linear_scene(w, shape, offset):
    """A plane on the sky (in the frame of tan_wcs((1, 1))) plus a constant offset."""
    frame = tan_wcs((1.0, 1.0))
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    ra, dec = w.all_pix2world(x, y, 0)
    fx, fy = frame.all_world2pix(ra, dec, 0)
    return 3.0 + 0.02 * fx - 0.015 * fy + offset


GEOMETRIES = [
    pytest.param({}, id="shifted"),
    pytest.param({"rotation": 30.0}, id="rotated"),
    pytest.param({"rotation": -7.0, "scale": 0.13}, id="rotated-coarser"),
]


@pytest.mark.parametrize("b_options", GEOMETRIES)
def test_a_plane_on_the_sky_cancels_exactly(b_options):
    # Bilinear interpolation is exact for a function linear in b's pixels: the differences
    # are the offset to rounding, whatever the relative shift, rotation and scale.
    shape = (60, 80)
    wa = tan_wcs((20.3, 25.7))
    wb = tan_wcs((-10.2, 12.4), **b_options)
    a = linear_scene(wa, shape, 7.0)
    b = linear_scene(wb, shape, 2.0)
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    d, (w2_a, w2_b) = pair_differences(a, None, b, None, runs, pmap)
    usable = np.isfinite(d)
    assert usable.sum() > 0.8 * runs.npix
    np.testing.assert_allclose(d[usable], 5.0, atol=2e-6)  # a's smoothing keeps a plane too
    assert 0.25 <= w2_b <= 1.0 and 0.25 < w2_a <= 1.0


def test_points_beyond_the_outer_pixel_centres_are_unusable():
    # b sits 40.25 pixels to the right: a's columns 40..79 fall in b; a's column 40 maps to
    # b's x = -0.25, between b's edge and its first pixel centre: nothing to interpolate.
    shape = (10, 80)
    wa = tan_wcs((1.0, 1.0))
    wb = tan_wcs((1.0 - 40.25, 1.0))
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    d, (_, w2) = pair_differences(np.ones(shape), None, np.zeros(shape), None, runs, pmap)
    d = d.reshape(10, -1)
    assert np.isnan(d[:, 0]).all() and np.isfinite(d[:, 1:]).all()
    np.testing.assert_allclose(d[:, 1:], 1.0)
    assert w2 == pytest.approx(0.625, abs=1e-6)  # x fraction 3/4: (1/16 + 9/16) * 1


@pytest.mark.parametrize("shift, expected", [((0.0, 0.0), 1.0), ((0.5, 0.0), 0.5),
                                             ((0.5, 0.5), 0.25), ((0.25, 0.0), 0.625)])
def test_mean_square_interpolation_weight(shift, expected):
    shape = (30, 30)
    wa = tan_wcs((1.0, 1.0))
    wb = tan_wcs((1.0 + shift[0] - 3, 1.0 + shift[1] - 3))
    runs = Runs(np.arange(8, 20), np.full(12, 8), np.full(12, 20))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    _, (w2_a, w2_b) = pair_differences(np.ones(shape), None, np.ones(shape), None, runs, pmap)
    assert w2_b == pytest.approx(expected, abs=1e-6)
    # a is smoothed as much as b is by the interpolation: [c, 1 - 2c, c], 2c = f (1 - f)
    cx, cy = shift[0] * (1 - shift[0]) / 2, shift[1] * (1 - shift[1]) / 2
    assert w2_a == pytest.approx((1 - 2 * cx - 2 * cy) ** 2 + 2 * cx**2 + 2 * cy**2, abs=1e-6)


def test_smoothing_a_cancels_the_interpolation_bias_on_a_curved_scene():
    # Bilinear interpolation at a fraction f overestimates a curved scene q by q'' f (1 - f) / 2
    # per axis; a's kernel [c, 1 - 2c, c] with 2c = f (1 - f) adds the same: any quadratic
    # scene cancels exactly under a sub-pixel shift (the bias here would be 0.01 to 0.02).
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 + 0.3 - 4, 1.0 + 0.6 - 2))
    runs = Runs(np.arange(6, 30), np.full(24, 6), np.full(24, 30))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)

    def quadratic(x, y):
        return 0.08 * (x - 17) ** 2 - 0.05 * (y - 21) ** 2 + 0.03 * x * y

    y, x = np.mgrid[0:40, 0:40].astype(float)
    a = quadratic(x, y) + 2.5
    b = quadratic(x + 4 - 0.3, y + 2 - 0.6)  # b's pixel (x, y) is a's (x + 3.7, y + 1.4)
    d, _ = pair_differences(a, None, b, None, runs, pmap)
    np.testing.assert_allclose(d, 2.5, atol=1e-9)


def test_constant_single_precision_images_differ_exactly():
    # The smoothing and the blends are written as corrections (c (left + right - 2 centre),
    # f (second - first)): constants come through exactly, even in float32.
    shape = (30, 30)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 + 0.37 - 3, 1.0 + 0.81 - 3), rotation=3.0)
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    a, b = np.full(shape, 149.3, np.float32), np.full(shape, 17.1, np.float32)
    d, _ = pair_differences(a, None, b, None, runs, pmap)
    assert d.dtype == np.float32
    usable = d[np.isfinite(d)]
    assert usable.size > 0.7 * runs.npix
    assert (usable == np.float32(149.3) - np.float32(17.1)).all()


def test_masks_nan_and_limits_apply_to_both_sides():
    shape = (20, 20)
    wa = tan_wcs((1.0, 1.0))
    wb = tan_wcs((1.4, 1.3))  # b's pixel of a's (x, y) is (x + 0.4, y + 0.3)
    runs = Runs(np.arange(2, 15), np.full(13, 2), np.full(13, 15))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    a, b = np.full(shape, 5.0), np.full(shape, 1.0)
    mask_a = np.ones(shape, bool)
    mask_a[5, 6] = False
    mask_b = np.ones(shape, bool)
    mask_b[10, 10] = False  # used by a's pixels (9..10, 9..10)
    b_nan = b.copy()
    b_nan[4, 12] = np.nan  # used by a's pixels (3..4, 11..12)
    a_high = a.copy()
    a_high[7, 3] = 50.0  # above upper
    d, _ = pair_differences(a_high, mask_a, b_nan, mask_b, runs, pmap, upper=20.0)
    d = d.reshape(13, 13)  # rows 2..14, columns 2..14
    bad = {(9, 9), (9, 10), (10, 9), (10, 10), (3, 11), (3, 12), (4, 11), (4, 12)}  # b's
    for y, x in ((5, 6), (7, 3)):  # a's, and their neighbours (a is smoothed along both axes)
        bad |= {(y, x), (y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)}
    for y in range(2, 15):
        for x in range(2, 15):
            assert np.isnan(d[y - 2, x - 2]) == ((y, x) in bad), (y, x)
    assert np.nanmax(np.abs(d - 4.0)) < 1e-12
    # a lower limit above b's values leaves nothing
    d, _ = pair_differences(a, None, b, None, runs, pmap, lower=2.0)
    assert np.isnan(d).all()


@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (np.float64, np.float32),
                                    (np.int16, np.uint8)])
def test_any_real_dtype(dtypes):
    shape = (12, 12)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.5, 1.0))
    runs = Runs(np.arange(2, 8), np.full(6, 2), np.full(6, 8))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    a = np.full(shape, 9, dtypes[0])
    b = np.full(shape, 4, dtypes[1])
    d, _ = pair_differences(a, None, b, None, runs, pmap, buffers=DifferenceBuffers())
    expected = np.float32 if dtypes == (np.float32, np.float32) else np.float64
    assert d.dtype == expected
    np.testing.assert_allclose(d, 5.0)
    assert (a == 9).all() and (b == 4).all()  # never changed


def test_the_map_follows_a_distorted_wcs():
    # Strong SIP distortion on b: the node spacing shrinks until the interpolated map is
    # within 0.001 pixel of the exact one.  Interpolating images equal to b's own x and y
    # (planes: bilinear is exact) gives the interpolated map at every pixel of the overlap.
    shape = (200, 200)
    wa = tan_wcs((60.0, 40.0), rotation=10.0)
    wb = tan_wcs((-20.0, 10.0), sip=True)
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    assert pmap.step < 32
    y = np.repeat(runs.rows, runs.stop - runs.start)
    x = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)])
    exact = wb.all_world2pix(*wa.all_pix2world(x, y, 0), 0)
    own = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)[::-1]  # b's x, then b's y
    for axis in (0, 1):
        d, _ = pair_differences(np.zeros(shape), None, own[axis], None, runs, pmap)
        ok = np.isfinite(d)
        assert ok.mean() > 0.95
        assert np.max(np.abs(-d[ok] - exact[axis][ok])) < 2e-3


def test_inflation_of_the_error_by_the_interpolation():
    # Equal pixel scales, points midway between four pixels, a not smoothed: the mean of n
    # differences has variance 2 s^2 / n while each difference has s^2 (1 + 1/4).
    assert interpolation_inflation((1.0, 0.25), 1.0, "mean") == pytest.approx(math.sqrt(1.6))
    assert interpolation_inflation((1.0, 1.0), 1.0, "mean") == 1.0  # aligned: no correlation
    median = interpolation_inflation((1.0, 0.25), 1.0, "median")
    assert 1.0 < median < interpolation_inflation((1.0, 0.25), 1.0, "mean")
    # a smoothed too: each difference varies less, the mean as much
    assert interpolation_inflation((0.6, 0.25), 1.0, "mean") == pytest.approx(math.sqrt(2 / 0.85))
    # b's pixels twice as large (a's pixel is a quarter of b's): each of b's pixels serves
    # four of a's: variance of the mean s^2 (1 + 4) / n
    assert interpolation_inflation((1.0, 0.25), 0.25, "mean") == pytest.approx(math.sqrt(5 / 1.25))
    assert interpolation_inflation((1.0, math.nan), 1.0, "mean") == 1.0


def test_inflation_matches_simulated_noise():
    # Pure noise, b shifted by (0.5, 0.5) pixel: the scatter of the mean of the differences
    # over realisations against the independent-pixel error times the inflation.
    rng = np.random.default_rng(3)
    shape = (64, 64)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.5 - 10, 1.5 - 10))
    runs = Runs(np.arange(12, 52), np.full(40, 12), np.full(40, 52))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    means, naive = [], []
    buffers = DifferenceBuffers()
    for _ in range(400):
        a = rng.standard_normal(shape)
        b = rng.standard_normal(shape)
        d, w2 = pair_differences(a, None, b, None, runs, pmap, buffers=buffers)
        d = d[np.isfinite(d)]  # a few points next to a steep step of b's noise are left out
        means.append(d.mean())
        naive.append(d.std(ddof=1) / math.sqrt(d.size))
    ratio = np.std(means) / np.sqrt(np.mean(np.square(naive)))
    assert ratio == pytest.approx(interpolation_inflation(w2, 1.0, "mean"), rel=0.1)


def test_aligned_grids_ignore_neighbours_of_zero_weight():
    # b shifted by whole pixels: every point falls on a pixel centre of b, so a masked pixel
    # of b spoils exactly one difference, not its neighbours (whose weight on it is 0).
    shape = (20, 20)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 + 3, 1.0 + 2))  # b's pixel = a's + (3, 2)
    runs = Runs(np.arange(2, 15), np.full(13, 2), np.full(13, 15))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    mask_b = np.ones(shape, bool)
    mask_b[10, 10] = False  # a's pixel (8, 7)
    d, w2 = pair_differences(np.full(shape, 2.0), None, np.ones(shape), mask_b, runs, pmap)
    d = d.reshape(13, 13)
    assert np.isnan(d).sum() == 1 and np.isnan(d[8 - 2, 7 - 2])
    assert w2 == (1.0, 1.0)


# -- the fast paths against straightforward implementations ------------------------------------
def straightforward_interpolation(b, runs, pmap):
    """b interpolated bilinearly at a's pixels ``runs``, one pixel at a time, in float64.

    The map is the bilinear interpolation of the nodes ``pmap`` at each pixel; a point is
    NaN when any of its four pixels is off b (beyond its outer pixel centres).
    """
    y = np.repeat(runs.rows, runs.stop - runs.start).astype(float)
    x = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)]).astype(float)
    gx, gy = (x - pmap.x0) / pmap.step, (y - pmap.y0) / pmap.step
    i = np.minimum(np.floor(gy).astype(int), pmap.bx.shape[0] - 2)
    j = np.minimum(np.floor(gx).astype(int), pmap.bx.shape[1] - 2)
    ty, tx = gy - i, gx - j

    def nodes(g):
        return ((g[i, j] * (1 - tx) + g[i, j + 1] * tx) * (1 - ty)
                + (g[i + 1, j] * (1 - tx) + g[i + 1, j + 1] * tx) * ty)

    xb, yb = nodes(pmap.bx), nodes(pmap.by)
    unmapped = ~(np.isfinite(xb) & np.isfinite(yb))  # nodes the inverse WCS could not map
    xb, yb = np.where(unmapped, -1.0, xb), np.where(unmapped, -1.0, yb)
    x0, y0 = np.floor(xb).astype(int), np.floor(yb).astype(int)
    fx, fy = xb - x0, yb - y0
    ny, nx = b.shape
    off = unmapped | (x0 < 0) | (x0 + 1 > nx - 1) | (y0 < 0) | (y0 + 1 > ny - 1)
    x0, y0 = np.clip(x0, 0, nx - 2), np.clip(y0, 0, ny - 2)
    b = b.astype(np.float64)
    value = ((b[y0, x0] * (1 - fx) + b[y0, x0 + 1] * fx) * (1 - fy)
             + (b[y0 + 1, x0] * (1 - fx) + b[y0 + 1, x0 + 1] * fx) * fy)
    return np.where(off, np.nan, value)


FAST_GEOMETRIES = [
    pytest.param({}, (-180.3, 40.6), id="translated"),  # whole steps of 1 pixel per pixel
    pytest.param({"scale": 0.05}, (-360.7, 80.2), id="translated-finer-by-2"),  # steps of 2
    # a fraction drifts across a whole pixel within some pieces: no whole steps
    pytest.param({"rotation": 0.02}, (-180.3, 40.6), id="rotated-slightly"),
    pytest.param({"rotation": 3.0}, (-180.3, 40.6), id="rotated-3"),
    pytest.param({"rotation": 33.0, "scale": 0.13}, (-60.2, -30.9), id="rotated-coarser"),
    pytest.param({"rotation": 180.0, "scale": 0.07}, (420.6, 250.2), id="turned-finer"),
    pytest.param({"rotation": 10.0, "sip": True}, (-150.4, 20.7), id="distorted"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("b_options, crpix_b", FAST_GEOMETRIES)
def test_interpolation_equals_the_straightforward_bilinear_one(b_options, crpix_b, dtype):
    # pair_differences maps the points in relative coordinates (float32 for float32 images)
    # piece by piece along the runs and gathers b's four pixels by flat index: the same
    # values as mapping and interpolating each point by itself in float64, to the rounding
    # of the coordinates (< 2e-5 pixel; b's steps here are at most 1), the same NaNs.
    shape = (300, 400)
    rng = np.random.default_rng(11)
    wa = tan_wcs((10.5, 20.5))
    wb = tan_wcs(crpix_b, **b_options)
    b = rng.random(shape).astype(dtype)  # no step is 5 times the noise: none is steep
    runs = overlap(wa, wb, shape, shape)
    assert runs.npix > 10_000
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    expected = straightforward_interpolation(b, runs, pmap)
    d, _ = pair_differences(np.zeros(shape, dtype), None, b, None, runs, pmap)
    got = -d.astype(np.float64)  # a is 0 (and so is its smoothing)
    assert (np.isnan(got) == np.isnan(expected)).all()
    assert np.isfinite(got).mean() > 0.97
    tolerance = 2e-5 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(got)], rtol=0,
                               atol=tolerance)


def test_runs_reaching_beyond_b_read_nothing_there():
    # Runs of a that go on past b's edge (more than the overlap): the pieces of the runs are
    # cut at b's edge; beyond it every point is NaN, before it the values are b's.
    shape = (60, 120)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 - 30.3, 1.0 - 5.6), rotation=2.0)
    b = np.random.default_rng(2).random((50, 60))
    runs = Runs(np.arange(10, 40), np.full(30, 0), np.full(30, 120))  # whole rows of a
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    expected = straightforward_interpolation(b, runs, pmap)
    d, _ = pair_differences(np.zeros(shape), None, b, None, runs, pmap)
    assert (np.isnan(d) == np.isnan(expected)).all()
    assert 0.3 < np.isfinite(d).mean() < 0.7
    np.testing.assert_allclose(-d[np.isfinite(d)], expected[np.isfinite(d)], atol=1e-9)


@pytest.mark.parametrize("case", ["noise", "nan", "noiseless", "empty"])
def test_noise_sample_is_pixel_noise_of_every_few_rows(case):
    # _noise_of reads only the pairs of neighbours pixel_noise uses when the sample is finite
    # (no converted copy): the same value as pixel_noise of the flattened rows.
    from skymatch_nb_ui.engine.differences import _noise_of
    from skymatch_nb_ui.engine.stats import pixel_noise

    rng = np.random.default_rng(5)
    box = np.full((260, 1026), np.nan, np.float32)  # a framed box of b
    inner = (100 + np.linspace(0, 30, 1024) + 2 * rng.standard_normal((258, 1024)))
    if case == "noiseless":
        inner = np.broadcast_to(np.linspace(0, 30, 1024), (258, 1024))
    box[1:-1, 1:-1] = inner
    if case == "nan":
        box[1:-1:10, 5] = np.nan
    if case == "empty":
        box = box[:2]
    rows = box[1:-1:max(1, (box.shape[0] - 2) // 24), 1:-1].reshape(-1)
    plain = pixel_noise(rows)
    scale = float(np.nanmax(np.abs(rows))) if np.isfinite(rows).any() else 0.0
    expected = plain if plain > 1e-7 * scale else math.inf
    assert _noise_of(box) == expected
    if case in ("noise", "nan"):
        assert expected == pytest.approx(2.0, rel=0.05)
    else:
        assert expected == math.inf


def test_reused_buffers_carry_nothing_from_one_pair_to_the_next():
    # A pair with steep points (stars) leaves flags in the reused buffers; an aligned pair
    # (every point on a pixel centre: no blend, no steepness check) must not inherit them.
    rng = np.random.default_rng(8)
    shape = (40, 40)
    buffers = DifferenceBuffers()
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 + 0.4 - 5, 1.0 + 0.3 - 5))
    runs = Runs(np.arange(2, 30), np.full(28, 2), np.full(28, 30))
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    stars = rng.standard_normal(shape)
    stars[::3, ::3] += 1000.0
    d, _ = pair_differences(rng.standard_normal(shape), None, stars, None, runs, pmap,
                            buffers=buffers)
    assert np.isnan(d).sum() > 100  # the stars' steep steps
    aligned = pixel_map(CelestialWCS(wa), CelestialWCS(tan_wcs((1.0 + 3, 1.0 + 2))), runs)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    d, w2 = pair_differences(a, None, b, None, runs, aligned, buffers=buffers)
    assert w2 == (1.0, 1.0)
    expected = np.concatenate([a[y, s:e] - b[y + 2, s + 3 : e + 3]
                               for y, s, e in zip(runs.rows, runs.start, runs.stop)])
    np.testing.assert_array_equal(d, expected)


def test_coordinates_in_float64_beyond_what_float32_counts_exactly(monkeypatch):
    # Single-precision images whose box of b holds 2**24 pixels or more get their
    # coordinates and flat indices in float64 (float32 would round the indices): forced here
    # on a small pair, the differences are those of the float32 path to its rounding.
    from skymatch_nb_ui.engine import differences

    shape = (120, 160)
    rng = np.random.default_rng(4)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 - 60.3, 1.0 - 20.8), rotation=5.0)
    a = rng.random(shape).astype(np.float32)
    b = rng.random(shape).astype(np.float32)
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    single, w2_single = pair_differences(a, None, b, None, runs, pmap)
    single = single.copy()
    monkeypatch.setattr(differences, "_EXACT", 100)
    double, w2_double = pair_differences(a, None, b, None, runs, pmap)
    assert double.dtype == np.float32
    assert (np.isnan(double) == np.isnan(single)).all() and np.isfinite(double).mean() > 0.95
    np.testing.assert_allclose(double, single, atol=2e-5)
    assert w2_double == pytest.approx(w2_single, abs=1e-5)
    expected = straightforward_interpolation(b, runs, pmap)  # and both are b interpolated
    smooth = pair_differences(a, None, np.zeros(shape, np.float32), None, runs, pmap)[0]
    np.testing.assert_allclose((smooth - double)[np.isfinite(double)],
                               expected[np.isfinite(double)], atol=2e-5)


def test_points_near_nodes_the_wcs_cannot_map_are_unusable():
    # A node outside the inverse WCS's domain (a gwcs bounding box) is NaN: the pieces of
    # rows in the cells around it have no coordinates and give NaN; the others are b's values.
    from dataclasses import replace

    shape = (300, 400)
    wa, wb = tan_wcs((10.5, 20.5)), tan_wcs((-180.3, 40.6), rotation=3.0)
    b = np.random.default_rng(6).random(shape).astype(np.float32)
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    bx = pmap.bx.copy()
    bx[1, 1] = np.nan
    pmap = replace(pmap, bx=bx)
    expected = straightforward_interpolation(b, runs, pmap)
    d, _ = pair_differences(np.zeros(shape, np.float32), None, b, None, runs, pmap)
    assert (np.isnan(d) == np.isnan(expected)).all()
    assert 0.2 < np.isnan(d).mean() < 0.9
    np.testing.assert_allclose(-d[np.isfinite(d)], expected[np.isfinite(d)], atol=2e-5)


# -- many small pairs at once (`many_pair_differences`) ---------------------------------------
def _many_jobs(dtype=np.float32, masked=False):
    """Pairs of small images: rotated, rescaled, distorted (SIP), sharing images, with masks."""
    from skymatch_nb_ui.engine.differences import DifferenceJob

    rng = np.random.default_rng(5)
    shape = (70, 90)
    specs = [((20.3, 25.7), {}), ((33.1, 20.2), {"rotation": 12.0}),
             ((28.6, 31.4), {"rotation": -7.0, "scale": 0.13}), ((25.2, 24.9), {"sip": True})]
    wcs = [tan_wcs(c, **o) for c, o in specs]
    images, masks = [], []
    for w in wcs:
        im = (linear_scene(w, shape, 0.0) + rng.standard_normal(shape)).astype(dtype)
        im[rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5)] += 40.0  # stars
        im[3, 4] = np.nan
        images.append(im)
        masks.append(rng.random(shape) > 0.05 if masked else None)
    jobs = []
    for a, b in ((0, 1), (1, 2), (2, 0), (3, 0), (0, 3), (1, 3)):
        runs = overlap(wcs[a], wcs[b], shape, shape)
        pmap = pixel_map(CelestialWCS(wcs[a]), CelestialWCS(wcs[b]), runs, step=32)
        jobs.append(DifferenceJob(images[a], masks[a], images[b], masks[b], runs, pmap, a, b))
    return jobs


def _whole_noise(image, mask, lower=None, upper=None):
    from skymatch_nb_ui.engine.differences import _framed, _noise_of

    work = np.float32 if image.dtype == np.float32 else np.float64
    box = _framed(image, mask, (0, image.shape[0], 0, image.shape[1]), work, lower, upper,
                  DifferenceBuffers(), "box")
    return _noise_of(box)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("limits", [(None, None), (-2.0, 30.0)])
def test_many_pair_differences_are_those_of_pair_differences(dtype, masked, limits):
    # The batched path: the same differences as pair by pair with the whole image's noise
    # (to the rounding of the fractions, which pair_differences may take by whole steps)
    from skymatch_nb_ui.engine.differences import batchable, many_pair_differences

    lower, upper = limits
    jobs = _many_jobs(dtype, masked)
    assert all(batchable(j.image_a.shape, j.image_b.shape, j.runs.npix, j.pmap) for j in jobs)
    found = many_pair_differences(jobs, lower=lower, upper=upper)
    for job, (d, w2) in zip(jobs, found):
        one, w2_one = pair_differences(job.image_a, job.mask_a, job.image_b, job.mask_b, job.runs,
                                       job.pmap, lower=lower, upper=upper,
                                       noise=_whole_noise(job.image_b, job.mask_b, lower, upper))
        assert d.dtype == one.dtype and d.shape == one.shape
        assert 0 < np.isfinite(d).sum() < d.size
        assert np.count_nonzero(np.isfinite(d) != np.isfinite(one)) <= 2  # steep, near the limit
        both = np.isfinite(d) & np.isfinite(one)
        tol = 2e-4 if dtype == np.float32 else 1e-9
        assert np.abs(d[both] - one[both]).max() <= tol * (1.0 + np.abs(one[both]).max())
        assert w2 == pytest.approx(w2_one, rel=1e-4)


def test_a_batched_pair_does_not_depend_on_the_others():
    # Every batching (scheduler, batch of tasks) gives a pair the same bits
    from skymatch_nb_ui.engine.differences import many_pair_differences

    jobs = _many_jobs(np.float32, True)
    together = many_pair_differences(jobs, lower=-2.0)
    for k in (0, 3, 5):
        alone = many_pair_differences([jobs[k]], lower=-2.0)[0]
        assert np.array_equal(alone[0], together[k][0], equal_nan=True)
        assert alone[1] == together[k][1]
    reverse = many_pair_differences(jobs[::-1], lower=-2.0)[::-1]
    for (d, w2), (e, v2) in zip(together, reverse):
        assert np.array_equal(d, e, equal_nan=True) and w2 == v2


def test_pairs_the_batch_does_not_take_go_one_by_one():
    # Aligned grids (points on pixel centres), large images: `pair_differences` itself
    from skymatch_nb_ui.engine.differences import (
        DifferenceJob,
        batchable,
        many_pair_differences,
    )

    rng = np.random.default_rng(2)
    shape = (40, 50)
    wa, wb = tan_wcs((1.0, 1.0)), tan_wcs((1.0 + 3, 1.0 + 2))  # a whole-pixel shift
    a, b = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    runs = overlap(wa, wb, shape, shape)
    pmap = pixel_map(CelestialWCS(wa), CelestialWCS(wb), runs)
    assert not batchable(shape, shape, runs.npix, pmap)
    big = (1024, 1024)
    assert not batchable(big, shape, runs.npix, pmap)
    (d, w2), = many_pair_differences([DifferenceJob(a, None, b, None, runs, pmap, 0, 1)])
    one, w2_one = pair_differences(a, None, b, None, runs, pmap)
    assert np.array_equal(d, one, equal_nan=True) and w2 == w2_one


def test_the_maps_of_many_pairs_are_those_of_one_pair_at_a_time():
    # `pixel_maps`: one WCS call per image and direction, the same nodes and spacing (TAN:
    # bit for bit; into a SIP image, whose inverse iterates, to its tolerance)
    from skymatch_nb_ui.engine.differences import pixel_maps

    shape = (300, 260)
    wcs = [tan_wcs((20.3, 25.7)), tan_wcs((120.1, 30.2), rotation=12.0),
           tan_wcs((80.6, 190.4), rotation=-7.0, scale=0.13), tan_wcs((60.2, 90.9), sip=True)]
    cw = [CelestialWCS(w) for w in wcs]
    requests = []
    for a in range(4):
        for b in range(4):
            if a != b:
                runs = overlap(wcs[a], wcs[b], shape, shape)
                if runs:
                    requests.append((a, b, runs))
    assert len(requests) >= 8
    found = pixel_maps(cw, requests)
    steps = set()
    for (a, b, runs), pmap in zip(requests, found):
        one = pixel_map(cw[a], cw[b], runs)
        assert (pmap.x0, pmap.y0, pmap.step) == (one.x0, one.y0, one.step)
        if b == 3:  # SIP's iterative inverse stops when all its points converge
            np.testing.assert_allclose(pmap.bx, one.bx, rtol=0, atol=1e-6)
            np.testing.assert_allclose(pmap.by, one.by, rtol=0, atol=1e-6)
        else:
            assert np.array_equal(pmap.bx, one.bx) and np.array_equal(pmap.by, one.by)
        steps.add(pmap.step)
    assert len(steps) > 1  # some pairs refined


def test_the_maps_through_gwcs_refine_in_few_calls_to_the_same_nodes(monkeypatch):
    # A gwcs call costs ~1-2 ms whatever its points: the finer steps' nodes and centres are
    # mapped ahead, in the same call.  The steps and nodes are pixel_map's, bit for bit.
    from skymatch_nb_ui.engine.differences import pixel_maps
    from skymatch_nb_ui.testing import nircam_like_gwcs

    shape, scale = (256, 256), 0.1
    step = 200 * scale / 3600  # 200 pixels: overlaps of ~56 pixels
    gw = [nircam_like_gwcs((150.0 + i * step, 2.0 + j * step), roll=2.0 * i - j, shape=shape,
                           pixel_scale=scale, distortion=2.0) for j in range(2) for i in range(2)]
    cw = [CelestialWCS(w) for w in gw]
    calls = {"n": 0}

    def counting(method):
        def counted(*args):
            calls["n"] += 1
            return method(*args)
        return counted

    for w in cw:
        for name in ("pixel_to_lonlat", "lonlat_to_pixel"):
            monkeypatch.setattr(w, name, counting(getattr(w, name)))
    requests = []
    for a in range(4):
        for b in range(4):
            if a != b:
                lon, lat = cw[b].pixel_to_lonlat(np.array([-0.5, 255.5, 255.5, -0.5]),
                                                 np.array([-0.5, -0.5, 255.5, 255.5]))
                runs = rasterize_polygon(*cw[a].lonlat_to_pixel(lon, lat), shape)
                if runs:
                    requests.append((a, b, runs))
    assert len(requests) == 12
    calls["n"] = 0
    found = pixel_maps(cw, requests)
    few = calls["n"]
    calls["n"] = 0
    for (a, b, runs), pmap in zip(requests, found):
        one = pixel_map(cw[a], cw[b], runs)
        assert (pmap.x0, pmap.y0, pmap.step) == (one.x0, one.y0, one.step)
        assert np.array_equal(pmap.bx, one.bx) and np.array_equal(pmap.by, one.by)
    assert max(p.step for p in found) <= 16  # the distortion asks for fine nodes
    assert few <= 2 * 8 < calls["n"] / 4  # two rounds at most, one call per image and direction


def test_many_pairs_framed_a_group_at_a_time_give_the_same_values(monkeypatch):
    # The images of a call are framed a group at a time (memory): no effect on the values
    from skymatch_nb_ui.engine import differences
    from skymatch_nb_ui.engine.differences import many_pair_differences

    jobs = _many_jobs(np.float32, True)
    together = many_pair_differences(jobs, upper=30.0)
    monkeypatch.setattr(differences, "_FRAME_PIXELS", 2 * 70 * 90)  # one pair per group
    assert len(differences._framed_groups(jobs)) == len(jobs)
    apart = many_pair_differences(jobs, upper=30.0)
    for (d, w2), (e, v2) in zip(together, apart):
        assert np.array_equal(d, e, equal_nan=True) and w2 == v2


def test_many_pairs_of_mixed_shapes_and_dtypes():
    # Images of several shapes (chunks of one width each), integers, big-endian floats
    from skymatch_nb_ui.engine.differences import DifferenceJob, many_pair_differences

    rng = np.random.default_rng(1)
    shapes = [(70, 90), (64, 100), (81, 77), (70, 90)]
    wcs = [tan_wcs((20.3, 25.7)), tan_wcs((33.1, 20.2), rotation=12.0),
           tan_wcs((28.6, 31.4), rotation=-7.0, scale=0.13), tan_wcs((25.2, 24.9), sip=True)]
    images = [(linear_scene(w, shape, 100.0) * 10 + 3 * rng.standard_normal(shape)).astype(dtype)
              for w, shape, dtype in zip(wcs, shapes, [np.int16, ">f4", np.float32, np.uint16])]
    jobs = []
    for a, b in ((0, 1), (1, 2), (2, 0), (3, 0), (0, 3), (1, 3), (2, 1)):
        runs = overlap(wcs[a], wcs[b], shapes[a], shapes[b])
        pmap = pixel_map(CelestialWCS(wcs[a]), CelestialWCS(wcs[b]), runs, step=32)
        jobs.append(DifferenceJob(images[a], None, images[b], None, runs, pmap, a, b))
    for job, (d, w2) in zip(jobs, many_pair_differences(jobs)):
        one, w2_one = pair_differences(job.image_a, None, job.image_b, None, job.runs, job.pmap,
                                       noise=_whole_noise(job.image_b, None))
        assert d.dtype == one.dtype and np.array_equal(np.isfinite(d), np.isfinite(one))
        ok = np.isfinite(d)
        assert ok.sum() > 3000
        assert np.abs(d[ok] - one[ok]).max() <= 1e-4 * np.abs(one[ok]).max()
        assert w2 == pytest.approx(w2_one, rel=1e-4)


@pytest.mark.parametrize("together", [True, False])
def test_whole_overlaps_of_batched_pairs_are_the_same_however_measured(together, monkeypatch):
    """A batched pair's whole-overlap statistic (measured with its batch's others,
    `measure.difference_statistics`, in mosaics of many small pairs; else one by one) is the
    same bits in the constant stage, in the plane stage (a plane run's pair table seeds the
    constant run's), and every scheduler's."""
    from skymatch_nb_ui import SkyMatcher
    from skymatch_nb_ui.engine import measure
    from skymatch_nb_ui.testing import make_mosaic

    monkeypatch.setattr(measure, "TOGETHER_FROM", 1 if together else 10**9)
    calls = []
    real = measure.difference_statistics
    monkeypatch.setattr(measure, "difference_statistics",
                        lambda *args: calls.append(len(args[0])) or real(*args))

    m = make_mosaic((3, 3), shape=(128, 128), overlap=0.3, noise=1.0, gradient=2.0, sources=5,
                    seed=4)
    options = {"skymethod": "match", "skystat": "mode", "compare": "differences"}

    def table(r):
        return np.column_stack([r.pairs.diff_before, r.pairs.diff_err])

    fresh = SkyMatcher(m.images, m.wcs, scheduler="serial").run(**options)
    after_plane = SkyMatcher(m.images, m.wcs, scheduler="serial")
    after_plane.run(skymodel="plane", slope_significance=0.0, **options)
    assert np.array_equal(table(after_plane.run(**options)), table(fresh), equal_nan=True)
    for scheduler in ("threads", "processes"):
        again = SkyMatcher(m.images, m.wcs, scheduler=scheduler).run(**options)
        assert np.array_equal(table(again), table(fresh), equal_nan=True)
        assert np.array_equal(again.sky, fresh.sky, equal_nan=True)
    assert (sum(calls) > 0) == together


def test_an_images_noise_is_remembered_by_the_values_it_samples():
    # `_noise_remembered`: `_noise_of` computed once per sampled content, whatever the array
    from skymatch_nb_ui.engine import differences

    rng = np.random.default_rng(4)
    buffers = DifferenceBuffers()
    box = np.full((82, 66), np.nan, np.float32)
    box[1:-1, 1:-1] = rng.normal(5.0, 2.0, (80, 64))
    first = differences._noise_remembered(box, buffers)
    assert first == differences._noise_of(box) and len(buffers.noise) == 1
    assert differences._noise_remembered(box.copy(), buffers) == first  # a copy: found
    assert len(buffers.noise) == 1
    box[22, 5] += 1.0  # a sampled value (every third row from 1) changed: measured again
    assert differences._noise_remembered(box, buffers) == differences._noise_of(box)
    assert len(buffers.noise) == 2
    wide = box.astype(np.float64)  # another dtype: another key
    assert differences._noise_remembered(wide, buffers) == differences._noise_of(wide)
    assert len(buffers.noise) == 3


def test_area_ratios_of_many_maps_are_each_maps_own():
    from skymatch_nb_ui.engine.differences import PixelMap, area_ratios

    rng = np.random.default_rng(5)
    maps = []
    for shape in [(2, 2), (3, 3), (3, 3), (9, 4), (9, 4), (17, 12), (17, 12), (1, 5)]:
        bx = np.add.outer(np.zeros(shape[0]), np.arange(shape[1]) * 32.0) + rng.normal(0, 2, shape)
        by = np.add.outer(np.arange(shape[0]) * 32.0, np.zeros(shape[1])) + rng.normal(0, 2, shape)
        maps.append(PixelMap(0, 0, 32, bx, by))
    bad = maps[4].bx.copy()
    bad[1, 1] = np.nan
    maps[4] = PixelMap(0, 0, 32, bad, maps[4].by)
    fresh = [PixelMap(m.x0, m.y0, m.step, m.bx, m.by) for m in maps]
    area_ratios(fresh)
    assert sum("area_ratio" in m.__dict__ for m in fresh) == 5  # alone or non-finite: later
    for m, f in zip(maps, fresh):
        assert f.area_ratio == m.area_ratio
