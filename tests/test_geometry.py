"""Stage 1: footprints, candidate pairs and overlap pixels, against brute force and spherical-geometry."""

import numpy as np
import pytest
from spherical_geometry.polygon import SphericalPolygon

from skymatch_nb_ui.engine import geometry
from skymatch_nb_ui.engine.geometry import (
    CelestialWCS,
    GatherBuffers,
    Runs,
    candidate_pairs,
    edge_pixels,
    footprint,
    overlap_runs,
    rasterize_polygon,
    runs_from_mask,
)
from skymatch_nb_ui.testing import make_mosaic


def inside_even_odd(px, py, x, y):
    """Brute force: is each point (x, y) inside the polygon, by counting edge crossings."""
    inside = np.zeros(x.shape, bool)
    n = len(px)
    for k in range(n):
        x0, y0, x1, y1 = px[k], py[k], px[(k + 1) % n], py[(k + 1) % n]
        if y0 == y1:
            continue
        spans = (np.minimum(y0, y1) <= y) & (y < np.maximum(y0, y1))
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= spans & (xc <= x)
    return inside


@pytest.mark.parametrize("seed", range(40))
def test_rasterize_matches_brute_force_point_in_polygon(seed):
    rng = np.random.default_rng(seed)
    k = rng.integers(3, 12)
    angles = np.sort(rng.uniform(0, 2 * np.pi, k))
    radii = rng.uniform(2, 25, k)  # star-shaped, often non-convex, partly outside the image
    px, py = 20 + radii * np.cos(angles), 12 + radii * np.sin(angles)
    runs = rasterize_polygon(px, py, (30, 40))
    mask = np.zeros((30, 40), bool)
    mask.reshape(-1)[runs.flat_indices(40)] = True
    yy, xx = np.mgrid[0:30, 0:40].astype(float)
    np.testing.assert_array_equal(mask, inside_even_odd(px, py, xx, yy))


def test_shared_pixel_edge_gives_each_pixel_to_one_side():
    left = rasterize_polygon(np.array([-0.5, 4.5, 4.5, -0.5]), np.array([-0.5, -0.5, 9.5, 9.5]), (10, 10))
    right = rasterize_polygon(np.array([4.5, 9.5, 9.5, 4.5]), np.array([-0.5, -0.5, 9.5, 9.5]), (10, 10))
    assert left.npix == right.npix == 50
    assert not set(left.flat_indices(10)) & set(right.flat_indices(10))


def test_flat_indices_and_gather_with_reused_buffers():
    rng = np.random.default_rng(1)
    mask = rng.random((50, 70)) < 0.3
    runs = runs_from_mask(mask)
    image = rng.normal(size=(50, 70)).astype(np.float32)
    np.testing.assert_array_equal(runs.flat_indices(70), np.flatnonzero(mask))
    buffers = GatherBuffers()
    np.testing.assert_array_equal(runs.gather(image, buffers), image[mask])
    np.testing.assert_array_equal(runs.gather(np.asfortranarray(image), buffers), image[mask])
    np.testing.assert_array_equal(runs.gather(image), image[mask])
    rect = runs_from_mask(np.pad(np.ones((5, 6), bool), ((3, 42), (10, 54))))
    np.testing.assert_array_equal(rect.gather(image, buffers), image[3:8, 10:16].ravel())


def test_gather_of_long_runs_row_by_row():
    """Runs as long as a large detector's overlaps are copied run by run: the same values, in
    the same order, into the reused buffer or a new array, for C and Fortran order and masks."""
    rng = np.random.default_rng(2)
    ny, nx = 40, 1200
    mask = np.zeros((ny, nx), bool)
    for r in range(ny):  # one or two long runs per row, rows skipped
        if r % 7:
            s = int(rng.integers(0, 300))
            mask[r, s : s + int(rng.integers(300, 800))] = True
            mask[r, 1150 - int(rng.integers(0, 40)) : 1190] = True
    runs = runs_from_mask(mask)
    assert runs.npix >= geometry._LONG_RUN * len(runs.rows)  # the run-by-run path
    image = rng.normal(size=(ny, nx)).astype(np.float32)
    buffers = GatherBuffers()
    buffers.values(np.float32, 5 * runs.npix)[:] = np.nan  # a larger, dirty buffer
    for img in (image, np.asfortranarray(image), image.astype(np.float64)):
        np.testing.assert_array_equal(runs.gather(img, buffers), image[mask])
        np.testing.assert_array_equal(runs.gather(img), image[mask])
    good = rng.random((ny, nx)) < 0.9
    np.testing.assert_array_equal(runs.gather(good), good[mask])
    assert runs.gather(good).dtype == bool


def test_union_of_runs():
    a = runs_from_mask(np.eye(6, dtype=bool))
    b = runs_from_mask(np.fliplr(np.eye(6, dtype=bool)))
    u = Runs.union([a, b], (6, 6))
    np.testing.assert_array_equal(np.sort(u.flat_indices(6)),
                                  np.union1d(a.flat_indices(6), b.flat_indices(6)))


def test_union_gives_the_runs_of_the_pixels_mask():
    """Merged as intervals, the runs are those of the sets' pixels' mask: row-major, touching
    and overlapping runs joined, none empty (sides and statistics take them as they come)."""
    rng = np.random.default_rng(3)
    for _ in range(400):
        ny, nx = (int(v) for v in rng.integers(1, 14, 2))
        sets = [runs_from_mask(rng.random((ny, nx)) < rng.random())
                for _ in range(rng.integers(2, 6))]
        mask = np.zeros(ny * nx, bool)
        for r in sets:
            mask[r.flat_indices(nx)] = True
        u, expected = Runs.union(sets, (ny, nx)), runs_from_mask(mask.reshape(ny, nx))
        for got, want in zip((u.rows, u.start, u.stop), (expected.rows, expected.start, expected.stop)):
            np.testing.assert_array_equal(got, want)
    # runs given out of order and overlapping within one set
    odd = Runs(np.array([2, 0, 2, 0]), np.array([5, 1, 0, 3]), np.array([7, 4, 6, 5]))
    u = Runs.union([odd, Runs(np.array([1]), np.array([0]), np.array([1]))], (3, 8))
    assert (u.rows.tolist(), u.start.tolist(), u.stop.tolist()) == ([0, 1, 2], [1, 0, 0], [5, 1, 7])


def test_edge_pixels_trace_the_pixel_edges():
    x, y = edge_pixels((10, 20))
    assert list(zip(x, y)) == [(-0.5, -0.5), (19.5, -0.5), (19.5, 9.5), (-0.5, 9.5)]
    x, y = edge_pixels((10, 20), stepsize=5)
    assert len(x) == 2 * (4 + 2)
    assert set(x) <= {-0.5, 19.5} | set(np.linspace(-0.5, 19.5, 5))


def test_candidate_pairs_equal_brute_force_cap_test():
    m = make_mosaic((5, 6), shape=(40, 40), overlap=0.1, rotation=17.0, jitter=8.0, seed=2)
    fps = [footprint(CelestialWCS(w), im.shape) for w, im in zip(m.wcs, m.images)]
    found = {tuple(p) for p in candidate_pairs(fps).tolist()}
    expected = set()
    for i in range(len(fps)):
        for j in range(i + 1, len(fps)):
            sep = np.arccos(np.clip(fps[i].center @ fps[j].center, -1, 1))
            if sep <= fps[i].radius + fps[j].radius:
                expected.add((i, j))
    assert found == expected
    assert len(found) < len(fps) * (len(fps) - 1) // 2


def test_overlap_pixels_cover_the_spherical_intersection():
    """npix x pixel area equals the area of the overlap that spherical-geometry computes."""
    m = make_mosaic((1, 2), shape=(300, 300), overlap=0.3, rotation=33.0, jitter=20.0, seed=5)
    wcs = [CelestialWCS(w) for w in m.wcs]
    fps = [footprint(w, (300, 300)) for w in wcs]
    polys = [SphericalPolygon.from_radec(*f.lonlat) for f in fps]
    area = polys[0].intersection(polys[1]).area()  # steradians
    pixel_area = np.radians(0.1 / 3600) ** 2
    area_px = area / pixel_area
    for a, b in ((0, 1), (1, 0)):
        runs = overlap_runs(a, [b], fps, wcs[a], (300, 300))[b]
        # counting pixel centres in a ~90 x 300 px region can be off by up to one column or
        # row along each edge: at most half the perimeter (390 px), never more
        assert abs(runs.npix - area_px) < 0.5 * 2 * (90 + 300)
        assert 0.3 * 300 * 300 * 0.8 < runs.npix < 0.3 * 300 * 300 * 1.2


def test_footprints_far_apart_share_nothing():
    a = make_mosaic((1, 1), shape=(50, 50), center=(10.0, 0.0))
    b = make_mosaic((1, 1), shape=(50, 50), center=(190.0, 0.0), prefix="b")
    fps = [footprint(CelestialWCS(w), (50, 50)) for w in (a + b).wcs]
    assert len(candidate_pairs(fps)) == 0


def test_many_polygons_rasterise_as_one_at_a_time():
    # `rasterize_polygons` (all of an image's overlaps at once): the same runs, ties included
    from skymatch_nb_ui.engine.geometry import rasterize_polygons

    rng = np.random.default_rng(3)
    polygons = [(np.array([-0.5, 4.5, 4.5, -0.5]), np.array([-0.5, -0.5, 9.5, 9.5])),  # edges
                (np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])),  # no area
                (np.array([-50.0, 80.0, 60.0]), np.array([-20.0, 5.0, 70.0])),  # beyond
                (np.array([0.2, 3.7, 3.7, 0.2]), np.array([-1, -1, 1.5, 1.5]))]
    for _ in range(20):  # convex and not: random stars
        k = int(rng.integers(3, 9))
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(2, 25, k)
        polygons.append((20 + radius * np.cos(angle), 15 + radius * np.sin(angle)))
    x = np.concatenate([p[0] for p in polygons]).astype(float)
    y = np.concatenate([p[1] for p in polygons]).astype(float)
    sizes = np.array([len(p[0]) for p in polygons])
    found = rasterize_polygons(x, y, np.cumsum(sizes) - sizes, sizes, range(len(polygons)), (30, 40))
    for (px, py), runs in zip(polygons, found):
        one = rasterize_polygon(px, py, (30, 40))
        assert runs.npix == one.npix
        for name in ("rows", "start", "stop"):
            assert np.array_equal(getattr(runs, name), getattr(one, name))


def test_plain_fits_wcs_is_evaluated_by_wcslib_directly_with_astropys_bits():
    from astropy.wcs import WCS, Sip

    from skymatch_nb_ui.engine.geometry import CelestialWCS

    rng = np.random.default_rng(4)
    plain = make_mosaic((1, 2), shape=(90, 80), rotation=5, seed=2).wcs[0]
    sip = WCS(naxis=2)
    sip.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    sip.wcs.crval, sip.wcs.crpix, sip.wcs.cdelt = [150.0, 2.0], [45.0, 40.0], [-1e-4, 1e-4]
    a = np.zeros((3, 3))
    a[2, 0] = 1e-6
    sip.sip = Sip(a, np.zeros((3, 3)), None, None, sip.wcs.crpix)
    assert CelestialWCS(plain)._plain and not CelestialWCS(sip)._plain
    for w in (plain, sip):
        c = CelestialWCS(w)
        for n in (1, 26, 3000):
            x, y = rng.uniform(-20, 110, n), rng.uniform(-20, 110, n)
            lon, lat = c.pixel_to_lonlat(x, y)
            ref = w.pixel_to_world_values(x, y)
            assert np.array_equal(lon, ref[0]) and np.array_equal(lat, ref[1])
            px, py = c.lonlat_to_pixel(lon, lat)
            back = w.world_to_pixel_values(lon, lat)
            assert np.array_equal(px, back[0]) and np.array_equal(py, back[1])
    # scalars and 2-D arrays keep astropy's way (and its shapes)
    lon, lat = CelestialWCS(plain).pixel_to_lonlat(3.0, 4.0)
    assert np.shape(lon) == () and lon == plain.pixel_to_world_values(3.0, 4.0)[0]
