"""The test helpers: synthetic mosaics are what they claim, and the reference adapter is faithful.

The adapter is checked against the reference's documented example tables (constant skies,
so every statistic gives exact answers): if these fail, every oracle comparison is suspect.
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from skymatch_nb_ui import skymatch
from skymatch_nb_ui.testing import Mosaic, make_mosaic, reference_skymatch

GEOMETRIES = [("own", 0.0), ("shared", 0.0), ("own", 30.0), ("shared", -65.0)]


def sky_at(w, x, y):
    return SkyCoord(*w.all_pix2world(x, y, 0), unit="deg")


def angle_between(a, b):
    """a - b in degrees, wrapped into [-180, 180)."""
    return (a - b + 180) % 360 - 180


# -- geometry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
def test_neighbours_overlap_by_the_requested_fraction(tangent, rotation):
    ny, nx = 60, 80
    m = make_mosaic((2, 3), shape=(ny, nx), overlap=0.25, tangent=tangent, rotation=rotation)
    # image 0's lower-right pixel corner lies 25% of the width into its right-hand neighbour
    x, y = m.wcs[1].all_world2pix(*m.wcs[0].all_pix2world(nx - 0.5, -0.5, 0), 0)
    np.testing.assert_allclose([x, y], [0.25 * nx - 0.5, -0.5], atol=1e-5)
    # ... and its upper-left corner 25% of the height into the image above it
    x, y = m.wcs[3].all_world2pix(*m.wcs[0].all_pix2world(-0.5, ny - 0.5, 0), 0)
    np.testing.assert_allclose([x, y], [-0.5, 0.25 * ny - 0.5], atol=1e-5)


@pytest.mark.parametrize("tangent", ["own", "shared"])
@pytest.mark.parametrize("rotation", [0.0, 30.0, -65.0, 180.0])
def test_rotation_turns_the_images_and_the_grid(tangent, rotation):
    m = make_mosaic((1, 2), rotation=rotation, tangent=tangent)
    w = m.wcs[0]
    y_axis = sky_at(w, 49.5, 49.5).position_angle(sky_at(w, 49.5, 59.5)).deg
    next_image = sky_at(w, 49.5, 49.5).position_angle(sky_at(m.wcs[1], 49.5, 49.5)).deg
    # exact at the mosaic centre; off it, meridians converge (4e-5 degree here)
    assert angle_between(y_axis, rotation) == pytest.approx(0, abs=1e-3)
    assert angle_between(next_image, 270 + rotation) == pytest.approx(0, abs=1e-3)  # west


@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_own_and_shared_tangent_put_pixels_at_the_same_sky_positions(rotation):
    kwargs = dict(shape=(100, 120), rotation=rotation, jitter=3.0, seed=2)
    own, shared = make_mosaic((3, 4), **kwargs), make_mosaic((3, 4), tangent="shared", **kwargs)
    x = np.array([-0.5, 119.5, 119.5, -0.5, 59.5])
    y = np.array([-0.5, -0.5, 99.5, 99.5, 49.5])
    for w_own, w_shared in zip(own.wcs, shared.wcs):
        assert not np.allclose(w_own.wcs.crpix, w_shared.wcs.crpix)  # really different WCSs
        xs, ys = w_shared.all_world2pix(*w_own.all_pix2world(x, y, 0), 0)
        np.testing.assert_allclose(xs, x, atol=1e-5)
        np.testing.assert_allclose(ys, y, atol=1e-5)


@pytest.mark.parametrize("tangent", ["own", "shared"])
def test_ra_increases_to_the_left_and_the_grid_is_centred(tangent):
    m = make_mosaic((1, 1), shape=(50, 50), tangent=tangent, center=(10.0, -30.0), pixel_scale=0.2)
    w = m.wcs[0]
    assert w.wcs.cdelt[0] < 0
    ra_left, ra_right = w.all_pix2world([0, 49], [25, 25], 0)[0]
    assert ra_left > ra_right
    centre = sky_at(w, 24.5, 24.5)
    assert centre.separation(SkyCoord(10.0, -30.0, unit="deg")).arcsec < 1e-9
    assert centre.separation(sky_at(w, 25.5, 24.5)).arcsec == pytest.approx(0.2, rel=1e-6)


# -- pixels -------------------------------------------------------------------------------------
def test_shapes_dtypes_skies_names_nans_and_masks():
    m = make_mosaic((1, 2), shape=(50, 40), sky=[3, 7], dtype=np.float64, nan_fraction=0.1,
                    mask_fraction=0.2, seed=0)
    assert len(m) == 2 and m.names == ["img00", "img01"]
    assert m.sky.dtype == np.float64 and m.sky.tolist() == [3.0, 7.0]
    for image, mask, sky in zip(m.images, m.masks, m.sky):
        assert image.shape == mask.shape == (50, 40)
        assert image.dtype == np.float64 and mask.dtype == bool
        assert np.isnan(image).sum() == 200 and (~mask).sum() == 400
        assert np.all(image[np.isfinite(image)] == sky)
    plain = make_mosaic((2, 2), sky=5.0)
    assert plain.masks is None and plain.images[0].dtype == np.float32
    assert plain.sky.tolist() == [5.0] * 4
    assert make_mosaic((1, 3)).sky.tolist() == [100.0, 105.0, 110.0]  # the documented default


def test_noise_has_the_requested_sigma():
    image = make_mosaic((1, 1), shape=(200, 200), sky=10.0, noise=2.0, seed=1).images[0]
    assert np.mean(image) == pytest.approx(10.0, abs=0.05)
    assert np.std(image) == pytest.approx(2.0, rel=0.02)


def test_sources_are_positive_and_identical_in_both_images_of_an_overlap():
    m = make_mosaic((1, 2), shape=(100, 100), overlap=0.3, sky=0.0, sources=40,
                    tangent="shared", seed=4)
    left, right = m.images
    assert left.min() >= 0 and right.min() >= 0 and left.max() > 5
    # with a shared tangent the right image starts 70 columns into the left one
    np.testing.assert_allclose(left[:, 70:], right[:, :30], atol=1e-3)
    assert left[:, 70:].max() > 5  # the test does look at sources


def test_a_seed_reproduces_the_mosaic():
    kwargs = dict(noise=1.0, sources=5, jitter=2.0, nan_fraction=0.01, mask_fraction=0.01)
    a, b = make_mosaic((2, 2), seed=7, **kwargs), make_mosaic((2, 2), seed=7, **kwargs)
    c = make_mosaic((2, 2), seed=8, **kwargs)
    for k in range(4):
        np.testing.assert_array_equal(a.images[k], b.images[k])
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
        np.testing.assert_array_equal(a.wcs[k].wcs.crval, b.wcs[k].wcs.crval)
    assert not np.array_equal(a.images[0], c.images[0], equal_nan=True)


def test_adding_mosaics_concatenates_them():
    first = make_mosaic((2, 2), sky=1.0, mask_fraction=0.1, seed=0)
    second = make_mosaic((1, 3), sky=2.0, center=(150.1, 2.0), prefix="b")
    both = first + second
    assert isinstance(both, Mosaic) and len(both) == 7
    assert both.names == ["img00", "img01", "img02", "img03", "b00", "b01", "b02"]
    assert both.sky.tolist() == [1.0] * 4 + [2.0] * 3
    assert both.masks[0] is first.masks[0] and both.masks[4].all()
    with pytest.raises(ValueError, match="prefix"):
        first + first


# -- sky planes (scattered light) ----------------------------------------------------------------
def true_sky_on_sky(m, k, ra, dec):
    """Image k's true sky at sky positions (its plane evaluated at their pixel coordinates)."""
    x, y = m.wcs[k].all_world2pix(ra, dec, 0)
    ny, nx = m.images[k].shape
    return m.sky[k] + m.slope_x[k] * (x - (nx - 1) / 2) + m.slope_y[k] * (y - (ny - 1) / 2)


@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
def test_gradient_puts_each_images_true_plane_in_its_pixels(tangent, rotation):
    m = make_mosaic((2, 3), shape=(40, 50), gradient=3.0, tangent=tangent, rotation=rotation,
                    dtype=np.float64, seed=4)
    for k in range(6):
        np.testing.assert_allclose(m.images[k], m.true_sky(k), rtol=0, atol=1e-12)
        # sky is the level at the centre; a plane's centre value is the mean of its corners
        corners = m.true_sky(k)[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.mean() == pytest.approx(m.sky[k], abs=1e-9)
    assert np.all(np.hypot(m.slope_x, m.slope_y) > 0)
    np.testing.assert_array_equal(m.planes, np.column_stack([m.sky, m.slope_x, m.slope_y]))


def test_gradient_ranges_are_up_to_the_requested_noise_sigmas_in_every_direction():
    m = make_mosaic((6, 6), shape=(30, 60), noise=2.0, gradient=4.0, seed=5)
    ranges = np.array([np.ptp(m.true_sky(k)) for k in range(len(m))])
    assert ranges.max() <= 4.0 * 2.0 + 1e-9 and ranges.max() > 0.7 * 8.0
    assert ranges.min() < 0.3 * 8.0  # drawn uniformly in [0, gradient], not all at the top
    angles = np.degrees(np.arctan2(m.slope_y, m.slope_x))
    assert np.histogram(angles, bins=4, range=(-180, 180))[0].min() > 0  # all directions


def test_gradient_without_noise_is_in_units_of_one():
    m = make_mosaic((1, 3), gradient=2.0, seed=1)
    assert 0 < max(np.ptp(m.true_sky(k)) for k in range(3)) <= 2.0


def test_gradient_leaves_the_rest_of_the_mosaic_as_it_was():
    kwargs = dict(noise=1.0, sources=5, jitter=2.0, nan_fraction=0.01, mask_fraction=0.01,
                  dtype=np.float64, seed=7)
    flat, tilted = make_mosaic((2, 2), **kwargs), make_mosaic((2, 2), gradient=5.0, **kwargs)
    again = make_mosaic((2, 2), gradient=5.0, **kwargs)
    np.testing.assert_array_equal(flat.sky, tilted.sky)
    for k in range(4):
        planes = tilted.true_sky(k) - tilted.sky[k]
        np.testing.assert_allclose(tilted.images[k] - planes, flat.images[k], atol=1e-12)
        np.testing.assert_array_equal(tilted.masks[k], flat.masks[k])
        np.testing.assert_array_equal(tilted.images[k], again.images[k])
    assert not flat.slope_x.any() and not flat.slope_y.any()


@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
def test_a_groups_images_share_one_plane_on_the_sky(tangent, rotation):
    groups = ["a", "a", None, "b", "b", "b"]
    m = make_mosaic((2, 3), shape=(40, 50), sky=[10, 20, 30, 40, 50, 60], groups=groups,
                    gradient=6.0, tangent=tangent, rotation=rotation, seed=3)
    assert m.groups == groups
    # at the sky positions of an image's pixels, every image of its group has the same sky
    y, x = np.mgrid[0:40:7, 0:50:7]
    for a, b in [(0, 1), (3, 4), (3, 5), (4, 5)]:
        ra, dec = m.wcs[a].all_pix2world(x.ravel(), y.ravel(), 0)
        np.testing.assert_allclose(true_sky_on_sky(m, b, ra, dec),
                                   true_sky_on_sky(m, a, ra, dec), atol=1e-4)
    # the group's constant is its first image's; the planes of groups differ
    assert m.sky[0] == 10 and m.sky[3] == 40 and m.sky[1] != 10
    assert abs(m.slope_x[0] - m.slope_x[3]) + abs(m.slope_y[0] - m.slope_y[3]) > 0
    assert m.sky[2] == 30  # alone: its own constant at its centre


def test_groups_without_gradient_share_the_first_images_constant():
    m = make_mosaic((1, 4), groups=["a", None, "a", "b"])
    assert m.sky.tolist() == [100.0, 105.0, 100.0, 115.0]
    np.testing.assert_array_equal(m.images[2], np.full((100, 100), 100.0, np.float32))


@pytest.mark.parametrize("tangent, rotation", GEOMETRIES)
def test_residual_sky_removes_the_gauge_and_nothing_else(tangent, rotation):
    m = make_mosaic((2, 3), shape=(40, 50), gradient=5.0, tangent=tangent, rotation=rotation, seed=6)
    exact = [m.true_sky(k) for k in range(6)]
    rms = lambda r: float(np.sqrt(np.mean(r**2)))
    # a common plane on the sky (what no overlap sees) is the gauge of a plane solve
    common = []
    for k in range(6):
        y, x = np.mgrid[0:40, 0:50]
        ra, dec = m.wcs[k].all_pix2world(x, y, 0)
        common.append(3.0 + 40.0 * (ra - 150.0) - 25.0 * (dec - 2.0))
    shifted = [e + c for e, c in zip(exact, common)]
    assert rms(m.residual_sky(shifted)) < 1e-6
    assert rms(m.residual_sky(shifted, gauge="constant")) > 1e-3
    assert rms(m.residual_sky([e + 2.0 for e in exact], gauge="constant")) < 1e-12
    assert rms(m.residual_sky([e + 2.0 for e in exact], gauge=None)) == pytest.approx(2.0)
    # constants leave the planes: about their range / sqrt(12) per axis
    constant = rms(m.residual_sky(list(m.sky)))
    assert 0.05 < constant < 5.0 / 2
    sub = m.residual_sky(list(m.sky), step=4)
    assert sub.size == 6 * 10 * 13 and rms(sub) == pytest.approx(constant, rel=0.1)
    with pytest.raises(ValueError, match="one fitted sky per image"):
        m.residual_sky([0.0])
    with pytest.raises(ValueError, match="gauge must be"):
        m.residual_sky(exact, gauge="quadratic")
    # planes instead of images: the same residuals, evaluated at the pixels used only
    np.testing.assert_allclose(m.residual_sky(planes=m.planes + [1.0, 1e-3, 0.0], step=3),
                               m.residual_sky([e + 1.0 + 1e-3 * (np.arange(50) - 24.5) for e in exact],
                                              step=3), atol=1e-9)
    assert rms(m.residual_sky(planes=m.planes)) < 1e-9
    with pytest.raises(ValueError, match=r"planes must have shape \(6, 3\)"):
        m.residual_sky(planes=m.planes[:, :2])
    with pytest.raises(TypeError, match="either models or planes"):
        m.residual_sky(exact, planes=m.planes)


def test_adding_mosaics_concatenates_planes_and_groups():
    first = make_mosaic((1, 2), gradient=1.0, groups=["a", "a"], seed=0)
    second = make_mosaic((1, 3), center=(150.1, 2.0), prefix="b", gradient=2.0, seed=1)
    both = first + second
    assert both.groups == ["a", "a", None, None, None]
    np.testing.assert_array_equal(both.slope_x, np.r_[first.slope_x, second.slope_x])
    np.testing.assert_array_equal(both.planes[2:], second.planes)
    np.testing.assert_array_equal(both.true_sky(4), second.true_sky(2))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(layout=(0, 2)), ValueError, "layout must be two positive integers"),
        (dict(shape=(10,)), ValueError, "shape must be two positive integers"),
        (dict(overlap=1.0), ValueError, "overlap .* below 1"),
        (dict(sky=[1, 2]), ValueError, "one value per image"),
        (dict(sky=[1, 2, 3, 4, 5, np.nan]), ValueError, "finite"),
        (dict(sky="high"), TypeError, "sky must be a number"),
        (dict(noise=-1.0), ValueError, "noise must be >= 0"),
        (dict(sources=2.5), TypeError, "sources must be an integer"),
        (dict(jitter=-1.0), ValueError, "jitter must be >= 0"),
        (dict(center=(150.0, 95.0)), ValueError, "Dec must be strictly between"),
        (dict(pixel_scale=0.0), ValueError, "pixel_scale .* must be positive"),
        (dict(tangent="both"), ValueError, "tangent must be one of"),
        (dict(nan_fraction=1.5), ValueError, r"nan_fraction .* \[0, 1\]"),
        (dict(mask_fraction=-0.1), ValueError, r"mask_fraction .* \[0, 1\]"),
        (dict(dtype=np.int16), ValueError, "floating-point dtype"),
        (dict(prefix=3), TypeError, "prefix must be a str"),
        (dict(gradient=-1.0), ValueError, "gradient must be >= 0"),
        (dict(gradient=np.inf), ValueError, "gradient must be finite"),
        (dict(groups=["a", "b"]), ValueError, "groups must have one label per image"),
        (dict(groups="aabbcc"), TypeError, "groups must be a sequence"),
        (dict(groups=[["a"]] * 6), TypeError, "unhashable"),
    ],
)
def test_bad_inputs_are_rejected_with_the_rule(kwargs, error, message):
    layout = kwargs.pop("layout", (2, 3))
    with pytest.raises(error, match=message):
        make_mosaic(layout, **kwargs)


# -- the reference adapter ----------------------------------------------------------------------
SKY_2X3 = [100, 120, 105, 110, 105, 115]
SKY_2X2, SKY_3 = [100, 120, 105, 110], [95, 90, 100]
TABLES = {
    "2x3": {
        "local": SKY_2X3,
        "global": [100] * 6,
        "match": [0, 20, 5, 10, 5, 15],
        "global+match": SKY_2X3,
    },
    "2x2+3": {
        "local": SKY_2X2 + SKY_3,
        "global": [90] * 7,
        "match": [0, 20, 5, 10, 8.75, 3.75, 13.75],
        "global+match": [86.25, 106.25, 91.25, 96.25, 95, 90, 100],
    },
}


def documented_mosaic(name, **kwargs):
    if name == "2x3":
        return make_mosaic((2, 3), sky=SKY_2X3, **kwargs)
    return make_mosaic((2, 2), sky=SKY_2X2, **kwargs) + make_mosaic(
        (1, 3), sky=SKY_3, center=(150.1, 2.0), prefix="b", **kwargs
    )


@pytest.mark.parametrize("skystat", ["mean", "median"])
@pytest.mark.parametrize("name", list(TABLES))
def test_reference_reproduces_the_documented_tables(name, skystat):
    m = documented_mosaic(name, shape=(40, 40))
    for method, expected in TABLES[name].items():
        sky, valid = reference_skymatch(m.images, m.wcs, skymethod=method, skystat=skystat)
        np.testing.assert_allclose(sky, expected, rtol=0, atol=1e-9, err_msg=method)
        assert valid.all()


def test_reference_on_a_rotated_shared_tangent_mosaic():
    m = documented_mosaic("2x2+3", shape=(40, 40), tangent="shared", rotation=-65.0)
    sky, _ = reference_skymatch(m.images, m.wcs, skymethod="global+match", skystat="mean")
    np.testing.assert_allclose(sky, TABLES["2x2+3"]["global+match"], atol=1e-9)


def test_reference_groups_masks_invalid_images_and_untouched_inputs():
    m = make_mosaic((2, 2), shape=(40, 40), sky=[100, 100, 130, 130])
    images = [im.copy() for im in m.images]
    images[0][:20] = 1000.0  # hidden by the mask below
    masks = [np.ones((40, 40), bool) for _ in range(4)]
    masks[0][:20] = False
    kept = [im.copy() for im in images], [mask.copy() for mask in masks]
    sky, valid = reference_skymatch(images, m.wcs, masks=masks, skymethod="local", skystat="mean")
    np.testing.assert_allclose(sky, [100, 100, 130, 130])
    sky, valid = reference_skymatch(images, m.wcs, masks=masks, groups=["e1", "e1", "e2", "e2"],
                                    skymethod="match", skystat="mean")
    np.testing.assert_allclose(sky, [0, 0, 30, 30], atol=1e-9)
    for before, after in zip(kept[0] + kept[1], images + masks):
        np.testing.assert_array_equal(before, after)
    # an image overlapping nothing has no matched sky: NaN and invalid, as the reference says
    lone = m + make_mosaic((1, 1), shape=(40, 40), sky=50, center=(150.1, 2.0), prefix="b")
    sky, valid = reference_skymatch(lone.images, lone.wcs, skymethod="match", skystat="mean")
    assert valid.tolist() == [True] * 4 + [False] and np.isnan(sky[4])


def test_reference_needs_stcal_and_says_how_to_get_it(monkeypatch):
    m = make_mosaic((1, 2), shape=(20, 20))
    monkeypatch.setitem(__import__("sys").modules, "stcal.skymatch", None)
    with pytest.raises(ImportError, match=r"pip install skymatch-nb-ui\[test\]"):
        reference_skymatch(m.images, m.wcs)


def test_reference_rejects_inputs_of_mismatched_lengths():
    m = make_mosaic((1, 2), shape=(20, 20))
    with pytest.raises(ValueError, match="wcs must have one entry per image"):
        reference_skymatch(m.images, m.wcs[:1])
    with pytest.raises(ValueError, match=r"masks\[1\] must have the shape"):
        reference_skymatch(m.images, m.wcs, masks=[np.ones((20, 20), bool), np.ones((5, 5), bool)])


def test_reference_leaves_none_labelled_images_alone_as_the_engine_does():
    m = make_mosaic((2, 2), shape=(40, 40), sky=[100, 110, 120, 120])
    groups = [None, None, "a", "a"]
    sky, valid = reference_skymatch(m.images, m.wcs, groups=groups, skymethod="match", skystat="mean")
    ours = skymatch(m.images, m.wcs, groups=groups, skymethod="match", skystat="mean")
    np.testing.assert_allclose(sky, [0, 10, 20, 20], atol=1e-9)
    np.testing.assert_allclose(ours.sky, sky, atol=1e-9)
    assert valid.all() and ours.valid.all()


def test_reference_refuses_what_it_cannot_do():
    m = make_mosaic((1, 2), shape=(20, 20))
    with pytest.raises(ValueError, match="anchor must be 'global'; got 'component'"):
        reference_skymatch(m.images, m.wcs, anchor="component")
    with pytest.raises(ValueError, match="never subtracts"):
        reference_skymatch(m.images, m.wcs, subtract=True)
    with pytest.raises(ValueError, match="skystat must be one of"):
        reference_skymatch(m.images, m.wcs, skystat="avg")


def test_a_jupyterlab_server_that_does_not_answer_in_time_is_stopped_with_its_log(
        tmp_path, monkeypatch):
    import subprocess

    from skymatch_nb_ui.testing import lab

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(lab.subprocess, "Popen", Recorded)
    with pytest.raises(RuntimeError, match="jupyter lab did not start"):
        with lab.jupyterlab_server(tmp_path, tmp_path / "home", timeout=0):
            pass
    assert len(started) == 1 and started[0].poll() is not None  # no server outlives the error
    assert (tmp_path / "home" / "lab.log").exists()
