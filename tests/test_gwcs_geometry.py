"""Mosaics on real gwcs objects: bounding boxes and distortion, as JWST and Roman WCSs have.

A gwcs bounding box makes the WCS's inverse NaN on and just outside the image edge, where
footprint and overlap vertices lie.  These tests sweep dithered pairs of NIRCam-like gwcs
(distortion polynomial, fitted inverse, v2/v3, sky rotation) and the real NIRCam WCS that
stcal's source distribution ships, and require the same answer with the box as without it;
sky planes are fitted through that real WCS too.
"""

from __future__ import annotations

import copy
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skymatch_nb_ui import SkyMatcher, skymatch
from skymatch_nb_ui.engine.geometry import CelestialWCS, edge_pixels, rasterize_polygon
from skymatch_nb_ui.testing import nircam_like_gwcs

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (160, 200)  # (ny, nx)
SCALE = 0.5  # arcsec per pixel
CENTER = (150.0, 2.0)


def _pointing(dx: float, dy: float) -> tuple[float, float]:
    """(RA, Dec) of a pointing offset by (dx, dy) pixels (x towards -RA) from CENTER."""
    ra, dec = CENTER
    return ra - dx * SCALE / 3600 / np.cos(np.radians(dec)), dec + dy * SCALE / 3600


def _sweep(k: int) -> tuple[float, float, float]:
    """The k-th of 20 dithers: all directions, 5% to 95% of the image, a few rolls;
    every fifth one a whole-pixel shift without roll, so edges fall exactly on pixel edges."""
    angle = np.radians(37.0 * k)
    fraction = 0.05 + 0.9 * k / 19
    dx, dy = fraction * SHAPE[1] * np.cos(angle), fraction * SHAPE[0] * np.sin(angle)
    if k % 5 == 0:
        return float(round(dx)), float(round(dy)), 0.0
    return float(dx), float(dy), float((k % 7 - 3) * 4.0)


def _pair(k: int, bounding_box: bool):
    dx, dy, roll = _sweep(k)
    first = nircam_like_gwcs(CENTER, shape=SHAPE, pixel_scale=SCALE, bounding_box=bounding_box)
    second = nircam_like_gwcs(_pointing(dx, dy), roll=roll, shape=SHAPE, pixel_scale=SCALE,
                              bounding_box=bounding_box)
    return [first, second]


def _images(seed: int, skies=(100.0, 120.0), shape=SHAPE) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(sky + rng.normal(0, 1, shape)).astype(np.float32) for sky in skies]


@pytest.mark.parametrize("k", range(20))
def test_dithered_gwcs_pair_with_bounding_box_matches_as_without(k):
    images = _images(k)
    boxed = SkyMatcher(images, _pair(k, bounding_box=True))
    free = SkyMatcher(images, _pair(k, bounding_box=False))
    for a, b in ((0, 1), (1, 0)):
        with_box, without = boxed.overlap_pixels(a, b), free.overlap_pixels(a, b)
        assert with_box.npix > 0
        np.testing.assert_array_equal(with_box.rows, without.rows)
        np.testing.assert_array_equal(with_box.start, without.start)
        np.testing.assert_array_equal(with_box.stop, without.stop)
    result, expected = boxed.run(skystat="mean"), free.run(skystat="mean")
    assert result.valid.all()
    np.testing.assert_array_equal(result.sky, expected.sky)
    assert result.sky[1] - result.sky[0] == pytest.approx(20.0, abs=0.5)


@pytest.mark.parametrize("k", [0, 5, 10, 13])
def test_dithered_gwcs_pair_overlap_pixels_are_where_the_other_image_is(k):
    """Brute force: the pixels of image 0 whose centres map inside image 1's pixel area."""
    wcs = _pair(k, bounding_box=True)
    runs = SkyMatcher(_images(k), wcs).overlap_pixels(0, 1)
    mask = np.zeros(SHAPE, bool)
    mask.reshape(-1)[runs.flat_indices(SHAPE[1])] = True
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    ra, dec = wcs[0](xx, yy)
    x1, y1 = wcs[1].invert(ra, dec, with_bounding_box=False)
    inside = (x1 >= -0.5) & (x1 < SHAPE[1] - 0.5) & (y1 >= -0.5) & (y1 < SHAPE[0] - 0.5)
    # the overlap follows image 1's outline through its corners (great circles), the brute
    # force its true distorted outline: they differ only along that edge
    assert mask.sum() == pytest.approx(inside.sum(), rel=0.03)
    assert (mask != inside).sum() <= 0.03 * inside.sum()


def test_dithered_gwcs_mosaic_recovers_offsets_like_the_reference():
    from skymatch_nb_ui.testing import reference_skymatch

    skies = [100.0, 120.0, 105.0, 110.0]
    offsets = [(0, 0, 0), (150, 10, 2), (10, 120, -3), (160, 130, 5)]
    wcs = [nircam_like_gwcs(_pointing(dx, dy), roll=roll, shape=SHAPE, pixel_scale=SCALE)
           for dx, dy, roll in offsets]
    images = [np.full(SHAPE, sky, np.float32) for sky in skies]
    ours = skymatch(images, wcs, skymethod="global+match", skystat="mean")
    reference, _ = reference_skymatch(images, wcs, skymethod="global+match", skystat="mean")
    np.testing.assert_allclose(ours.sky, skies, atol=1e-4)
    np.testing.assert_allclose(ours.sky, reference, atol=1e-4)


def test_gwcs_footprint_is_traced_without_the_bounding_box_cutting_it():
    w = nircam_like_gwcs(CENTER, shape=SHAPE, pixel_scale=SCALE)
    x, y = edge_pixels(SHAPE, stepsize=10)
    lon, lat = CelestialWCS(w).pixel_to_lonlat(x, y)
    assert np.isfinite(lon).all() and np.isfinite(lat).all()
    back_x, back_y = CelestialWCS(w).lonlat_to_pixel(lon, lat)
    # the fitted inverse is approximate, so some edge points land just outside the box
    assert np.isfinite(back_x).all() and np.isfinite(back_y).all()
    assert np.abs(back_x - x).max() < 0.05 and np.abs(back_y - y).max() < 0.05


def test_a_wrapped_wcs_that_returns_nan_inside_its_footprint_is_refused_by_name():
    """A WCS the engine cannot unwrap keeps its NaN: a clear error, not a silent loss."""
    from astropy.wcs.wcsapi import SlicedLowLevelWCS

    wcs = [SlicedLowLevelWCS(w, Ellipsis) for w in _pair(3, bounding_box=True)]
    with pytest.raises(ValueError, match=r"wcs\[\d\] cannot map .* back to pixels"):
        skymatch(_images(3), wcs, skystat="mean")


def _maps_like_gwcs_without_composing_it(wcs, shape, monkeypatch):
    """gwcs composes its pipeline (and inverts the compound model) on every call: ~2 ms each.
    The adapter applies the steps in turn, their inverses made once, and must give gwcs's
    own values, bit for bit."""
    import pickle

    from astropy.modeling.core import CompoundModel
    from gwcs import WCS as GWCS

    rng = np.random.default_rng(5)
    points = [(rng.uniform(-0.5, shape[1] - 0.5, n), rng.uniform(-0.5, shape[0] - 0.5, n))
              for n in (1, 7, 500)]
    expected = []
    for x, y in points:
        lon, lat = wcs(x, y, with_bounding_box=False)
        expected.append(((lon, lat), wcs.invert(lon, lat, with_bounding_box=False)))

    made = {"forward_transform": 0, "backward_transform": 0, "inverse": 0}

    def counting(owner, name):
        prop = getattr(owner, name)

        def counted(self):
            made[name] += 1
            return prop.fget(self)

        monkeypatch.setattr(owner, name, property(counted, prop.fset, prop.fdel))

    counting(GWCS, "forward_transform")
    counting(GWCS, "backward_transform")
    counting(CompoundModel, "inverse")
    adapter = CelestialWCS(wcs)
    fresh = pickle.dumps(adapter)
    for rounds in range(3):
        for (x, y), (world, pixel) in zip(points, expected):
            for found, wanted in zip(adapter.pixel_to_lonlat(x, y) + adapter.lonlat_to_pixel(*world),
                                     world + pixel):
                np.testing.assert_array_equal(found, wanted)
        if rounds == 0:
            first = dict(made)
    assert first["inverse"] > 0 and made == first  # the steps' inverses made once
    assert made["forward_transform"] == made["backward_transform"] == 0  # never composed
    # the inverses stay here: a pickled adapter is what it was before any call
    assert len(pickle.dumps(adapter)) == len(fresh)
    restored = pickle.loads(pickle.dumps(adapter))
    np.testing.assert_array_equal(restored.lonlat_to_pixel(*expected[2][0])[0], expected[2][1][0])
    return expected


def test_a_gwcs_maps_exactly_as_gwcs_does_without_composing_its_pipeline(monkeypatch):
    wcs = nircam_like_gwcs(CENTER, roll=7.0, shape=SHAPE, pixel_scale=SCALE)
    expected = _maps_like_gwcs_without_composing_it(wcs, SHAPE, monkeypatch)
    # no analytical inverse: gwcs inverts in its own (numerical) way, as before
    inverse_free = copy.deepcopy(wcs)
    inverse_free.pipeline[0].transform.left.inverse = None
    with pytest.raises(NotImplementedError):
        assert inverse_free.backward_transform is None  # (raises)
    monkeypatch.setattr(inverse_free, "invert", lambda lon, lat, **kw: (lon * 0 + 1.5, lat * 0 - 2.5),
                        raising=False)
    x, y = CelestialWCS(inverse_free).lonlat_to_pixel(*expected[1][0])
    assert (x == 1.5).all() and (y == -2.5).all()


# -- the real NIRCam WCS of stcal's test data ------------------------------------------------
def _stcal_data() -> Path | None:
    root = Path(os.environ.get("SKYMATCH_NB_TEST_DATA", ROOT / ".cache" / "test-data"))
    found = sorted(root.glob("stcal-*/nrcb1-wcs.asdf"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def nircam_wcs():
    path = _stcal_data()
    if path is None:
        pytest.skip("stcal's NIRCam WCS is not here: run scripts/fetch_test_data.sh (scripts/test.sh does)")
    import asdf

    with asdf.open(path) as f:
        return copy.deepcopy(f.tree["wcs"])


def _dithered(wcs, dra_arcsec: float, ddec_arcsec: float, droll: float = 0.0, box=True):
    """A copy of a JWST gwcs pointed elsewhere: the pointing angles of its sky rotation."""
    from astropy.modeling.rotations import RotationSequence3D

    moved = copy.deepcopy(wcs)
    sky = moved.get_transform("v2v3vacorr", "world")
    (rotation,) = [m for m in sky.traverse_postorder() if isinstance(m, RotationSequence3D)]
    angles = rotation.angles.value.copy()
    angles[2] += droll
    angles[3] += ddec_arcsec / 3600.0
    angles[4] -= dra_arcsec / 3600.0 / np.cos(np.radians(angles[3]))
    rotation.angles = angles
    if not box:
        moved.bounding_box = None
    return moved


def test_the_real_nircam_gwcs_maps_exactly_as_gwcs_does_without_composing_it(nircam_wcs, monkeypatch):
    _maps_like_gwcs_without_composing_it(nircam_wcs, (2048, 2048), monkeypatch)


def test_real_nircam_gwcs_dithers_with_bounding_box_match_as_without(nircam_wcs):
    shape = (2048, 2048)
    assert nircam_wcs.bounding_box is not None
    dithers = [(0, 0, 0), (23.0, 7.5, 0), (-11.3, 21.7, 0.2), (30.1, -10.2, -0.3)]  # arcsec
    skies = [100.0, 120.0, 105.0, 110.0]
    images = _images(0, skies, shape)
    boxed = SkyMatcher(images, [_dithered(nircam_wcs, *d) for d in dithers])
    free = SkyMatcher(images, [_dithered(nircam_wcs, *d, box=False) for d in dithers])
    for a in range(4):
        for b in range(4):
            if a != b:
                assert boxed.overlap_pixels(a, b).npix == free.overlap_pixels(a, b).npix > 0
    result, expected = boxed.run(skystat="mean"), free.run(skystat="mean")
    assert result.valid.all()
    np.testing.assert_array_equal(result.sky, expected.sky)
    np.testing.assert_allclose(result.sky, np.subtract(skies, 100.0), atol=0.05)


def test_real_nircam_gwcs_gives_each_images_sky_gradient(nircam_wcs):
    """Sky planes through JWST's own NIRCam distortion and bounding box: four dithers, each
    with its own plane on the sky; the fitted gradients are the true ones up to the common
    gradient that no overlap sees, and that common plane is all the sky they leave."""
    from scipy.ndimage import map_coordinates

    from skymatch_nb_ui.testing.mosaics import _gnomonic  # the mosaics' truth: not the engine's

    shape, step = (2048, 2048), 32
    dithers = [(0, 0, 0), (23.0, 7.5, 0), (-11.3, 21.7, 0.2), (30.1, -10.2, -0.3)]  # arcsec
    gradients = np.array([(0.025, -0.01), (-0.015, 0.03), (0.01, 0.02), (-0.03, -0.005)])  # /"
    wcs = [_dithered(nircam_wcs, *d) for d in dithers]
    centre = wcs[0](1023.5, 1023.5)
    rng = np.random.default_rng(11)
    nodes = np.arange(0, shape[0] + step, step, dtype=float)
    gx, gy = np.meshgrid(nodes, nodes)  # the grid where each dither's WCS is evaluated
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / step
    images, truths, coords = [], [], []
    for w, (ge, gn), sky in zip(wcs, gradients, (100.0, 120.0, 105.0, 110.0)):
        xi, eta = (3600.0 * v for v in _gnomonic(*w(gx, gy, with_bounding_box=False), *centre))
        xi, eta = (map_coordinates(v, [y, x], order=1) for v in (xi, eta))  # to 3e-5"
        coords.append((xi, eta))
        truths.append(sky + ge * (xi - xi.mean()) + gn * (eta - eta.mean()))
        images.append((truths[-1] + rng.standard_normal(shape)).astype(np.float32))
    result = SkyMatcher(images, wcs).run(skymethod="match", skymodel="plane")
    assert not result.plane.flat and result.valid.all()
    pa = np.radians(result.plane.gradient_pa)
    fitted = np.column_stack([np.sin(pa), np.cos(pa)]) * result.plane.gradient[:, None]
    off = fitted - gradients
    # up to a common gradient: measured spread 1e-4 per arcsec, for gradients of 0.01-0.03
    np.testing.assert_allclose(off, np.broadcast_to(off.mean(axis=0), off.shape), atol=5e-4)
    # the true sky left once the common plane on the sky is removed (measured 0.0016 sigma;
    # constant skies leave 0.50)
    yy, xx = np.mgrid[0 : shape[0] : 8, 0 : shape[1] : 8]
    left, design = [], []
    for k, (xi, eta) in enumerate(coords):
        sky = truths[k][::8, ::8] - (result.sky[k] + result.plane.slope_x[k] * (xx - 1023.5)
                                     + result.plane.slope_y[k] * (yy - 1023.5))
        left.append(sky.ravel())
        design.append(np.column_stack([np.ones(sky.size), xi[::8, ::8].ravel(), eta[::8, ::8].ravel()]))
    left, design = np.concatenate(left), np.concatenate(design)
    left -= design @ np.linalg.lstsq(design, left, rcond=None)[0]
    assert np.sqrt(np.mean(left**2)) < 0.005, np.sqrt(np.mean(left**2))


# -- rasterisation is total ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rasterize_refuses_a_polygon_with_an_unknown_vertex(bad):
    with pytest.raises(ValueError, match="non-finite vertices"):
        rasterize_polygon(np.array([1.0, 8.0, bad]), np.array([1.0, 2.0, 9.0]), (10, 10))


@pytest.mark.parametrize(
    "px, py",
    [
        ([-1e308, 1e308, 1e308, -1e308], [-1e308, -1e308, 1e308, 1e308]),  # overflowing spans
        ([0.0, 1e300, 3.0], [2.0, 2.0, 7.0]),  # a huge vertex on a row
        ([2.0, 2.0, 2.0], [1.0, 5.0, 8.0]),  # zero area
        ([3.0, 3.0, 6.0, 6.0, 3.0], [3.0, 3.0, 3.0, 6.0, 6.0]),  # repeated vertex
    ],
)
def test_rasterize_survives_extreme_finite_polygons(px, py):
    runs = rasterize_polygon(np.array(px), np.array(py), (10, 10))
    assert 0 <= runs.npix <= 100
    assert np.all((runs.start >= 0) & (runs.stop <= 10) & (runs.start < runs.stop))


def _inside_exact(px, py, x: int, y: int) -> bool:
    """Even-odd rule with the half-open conventions, in exact rational arithmetic."""
    inside = False
    n = len(px)
    for k in range(n):
        x0, y0 = Fraction(px[k]), Fraction(py[k])
        x1, y1 = Fraction(px[(k + 1) % n]), Fraction(py[(k + 1) % n])
        if y0 == y1 or not (min(y0, y1) <= y < max(y0, y1)):
            continue
        if x0 + (y - y0) * (x1 - x0) / (y1 - y0) <= x:
            inside = not inside
    return inside


half_grid = st.integers(-6, 46).map(lambda v: v / 2)  # -3 .. 23 in steps of 0.5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(half_grid, half_grid), min_size=3, max_size=9))
def test_rasterize_decides_ties_exactly_on_pixel_grid_vertices(vertices):
    """Vertices on pixel centres and edges: every tie is decided as the half-open rule says."""
    px = [v[0] for v in vertices]
    py = [v[1] for v in vertices]
    shape = (20, 20)
    runs = rasterize_polygon(np.array(px), np.array(py), shape)
    got = np.zeros(shape, bool)
    got.reshape(-1)[runs.flat_indices(shape[1])] = True
    want = np.array([[_inside_exact(px, py, x, y) for x in range(20)] for y in range(20)])
    np.testing.assert_array_equal(got, want)
