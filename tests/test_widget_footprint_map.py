"""FootprintMap (Python side, no browser): projection, colours, tooltips, flags, pairs, selection."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from _plane_results import plane_result
from astropy import units as u
from astropy.coordinates import SkyCoord

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.display.colors import DIVERGING, MISSING, VIRIDIS, categorical
from skymatch_nb_ui.display.encodings import NO_GRADIENT
from skymatch_nb_ui.display.planes import ARROW_FRACTION
from skymatch_nb_ui.engine.exceptions import DisconnectedMosaicWarning
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets.footprint_map import COLOR_BY, FootprintMap, project_footprints


def collection(mosaic, **kwargs) -> ImageCollection:
    return ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names, **kwargs)


def quiet_skymatch(coll, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DisconnectedMosaicWarning)
        return coll.skymatch(skystat="mean", **params)


@pytest.fixture
def grid():
    """2 x 3 images of distinct constant skies, solved."""
    coll = collection(make_mosaic((2, 3), sky=[100, 120, 105, 110, 105, 115]))
    return coll, coll.skymatch(skystat="mean")


@pytest.fixture
def disconnected():
    """A 2x2 mosaic and, 0.1 deg east, a 1x3 strip that overlaps none of it."""
    coll = collection(make_mosaic((2, 2)) + make_mosaic((1, 3), center=(150.1, 2.0), prefix="b"))
    return coll, quiet_skymatch(coll)


@pytest.fixture
def with_invalid():
    """A 2x2 mosaic and one lone image far away: 'match' cannot give it a sky."""
    coll = collection(make_mosaic((2, 2)) + make_mosaic((1, 1), center=(150.1, 2.0), prefix="b"))
    return coll, quiet_skymatch(coll, skymethod="match")


# -- projection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("center", [(150.0, 2.0), (30.0, -45.0), (270.0, 80.0)])
def test_ra_increases_to_the_left_and_north_is_up(center):
    coll = collection(make_mosaic((3, 3), center=center, rotation=20.0))
    fmap = FootprintMap(coll)
    x, y = np.array(fmap.centers).T
    ra, dec = coll.table.ra.values, coll.table.dec.values
    dra = (ra - center[0] + 180.0) % 360.0 - 180.0
    east = dra * np.cos(np.radians(dec)) * 3600.0
    north = (dec - center[1]) * 3600.0
    assert np.corrcoef(x, east)[0, 1] < -0.999  # larger RA -> smaller x
    assert np.corrcoef(y, north)[0, 1] > 0.999  # larger Dec -> larger y
    # the image at the largest RA is the leftmost one
    assert np.argmax(dra) == np.argmin(x)


def test_polygons_are_tangent_plane_offsets_in_arcsec():
    mosaic = make_mosaic((2, 3), pixel_scale=0.1, shape=(100, 100))
    coll = collection(mosaic)
    fmap = FootprintMap(coll)
    lon, lat = coll.footprints
    tangent = SkyCoord(*fmap.tangent, unit="deg")
    corners = SkyCoord(lon.ravel(), lat.ravel(), unit="deg")
    # astropy's offset frame (north up, east = +lon) as an independent reference
    offsets = corners.transform_to(tangent.skyoffset_frame())
    expected_x = -offsets.lon.to_value(u.arcsec)
    expected_y = offsets.lat.to_value(u.arcsec)
    got = np.array(fmap.polygons).reshape(-1, 2)
    np.testing.assert_allclose(got[:, 0], expected_x, atol=0.011)
    np.testing.assert_allclose(got[:, 1], expected_y, atol=0.011)
    widths = np.ptp(np.array(fmap.polygons)[:, :, 0], axis=1)
    np.testing.assert_allclose(widths, 10.0, atol=0.02)  # 100 pixels of 0.1"
    assert np.array_equal(np.round(got, 2), got)  # rounded to 0.01"


def test_project_footprints_rejects_more_than_a_hemisphere():
    with pytest.raises(ValueError, match="hemisphere"):
        project_footprints([[0.0, 180.0]], [[0.0, 0.0]])


# -- colours -------------------------------------------------------------------------------------
def test_sky_colours_follow_the_ramp_with_a_colour_bar(grid):
    coll, result = grid
    fmap = FootprintMap(coll, result, color_by="sky")
    sky = result.sky.values
    assert fmap.fill[int(np.argmin(sky))] == VIRIDIS[0]
    assert fmap.fill[int(np.argmax(sky))] == VIRIDIS[-1]
    assert fmap.colorbar["kind"] == "ramp"
    assert (fmap.colorbar["vmin"], fmap.colorbar["vmax"]) == (sky.min(), sky.max())
    assert fmap.colorbar["label"].startswith("Sky")
    fmap.color_by = "sky_err"
    assert fmap.colorbar["label"].startswith("Sky uncertainty")


def test_units_appear_in_the_colour_bar():
    m = make_mosaic((1, 2))
    coll = collection(m, meta=[{"bunit": "MJy/sr"}] * 2)
    fmap = FootprintMap(coll, coll.skymatch(skystat="mean"))
    assert fmap.colorbar["label"] == "Sky offset [MJy/sr]"  # skymethod="match": offsets
    assert "MJy/sr" in fmap.tooltips[0]


def test_group_colours_and_legend(grid):
    coll, _ = grid
    coll.groups = {"img00": "east", "img03": "east", "img02": "west"}
    result = coll.skymatch(skystat="mean")
    fmap = FootprintMap(coll, result, color_by="group")
    palette = categorical(["east", "west"])
    assert fmap.fill[0] == fmap.fill[3] == palette["east"]
    assert fmap.fill[2] == palette["west"]
    assert fmap.fill[1] == MISSING  # alone: its own sky
    assert fmap.colorbar["kind"] == "categories"
    assert fmap.colorbar["labels"] == ["east", "west", "none (own sky)"]
    assert fmap.colorbar["colors"] == [palette["east"], palette["west"], MISSING]


def test_component_and_valid_colours(disconnected, with_invalid):
    coll, result = disconnected
    fmap = FootprintMap(coll, result, color_by="component")
    assert len(set(fmap.fill[:4])) == 1 and len(set(fmap.fill[4:])) == 1
    assert fmap.fill[0] != fmap.fill[4]
    assert fmap.colorbar["labels"] == ["0 (largest)", "1"]
    coll, result = with_invalid
    fmap = FootprintMap(coll, result, color_by="valid")
    assert fmap.fill[0] != fmap.fill[4]
    assert fmap.colorbar["labels"] == ["valid sky", "no valid sky"]
    fmap.color_by = "sky"
    assert fmap.fill[4] == MISSING  # no sky to show


def test_without_a_result_only_groups_are_coloured(grid):
    coll, _ = grid
    coll.groups = {"img00": "g", "img01": "g"}
    fmap = FootprintMap(coll, color_by="sky")
    assert fmap.fill == [MISSING] * 6
    assert "no result" in fmap.colorbar["labels"][0]
    assert all(flags == [] for flags in fmap.flags)
    fmap.color_by = "group"
    assert fmap.fill[0] == fmap.fill[1] != MISSING
    assert "no result yet" in fmap.tooltips[0]


def test_unknown_color_by_lists_the_choices(grid):
    coll, result = grid
    with pytest.raises(ValueError, match="sky_err.*'brightness'"):
        FootprintMap(coll, result, color_by="brightness")
    fmap = FootprintMap(coll, result)
    choices = r"\['sky', 'sky_err', 'gradient', 'group', 'component', 'valid', 'npix'\]"
    with pytest.raises(ValueError, match=choices):
        fmap.color_by = "brightness"
    assert fmap.color_by == "sky"
    assert fmap.color_by_options == list(COLOR_BY)


# -- tooltips and flags --------------------------------------------------------------------------
def test_tooltips_hold_name_group_sky_error_and_reason(with_invalid):
    coll, result = with_invalid
    fmap = FootprintMap(coll, result)
    assert fmap.tooltips[1].splitlines() == [
        "img01", "group: none (own sky)", f"sky: {result.sky.values[1]:.4g} ± {result.sky_err.values[1]:.4g}",
        "component: 0", "valid",
    ]
    assert fmap.tooltips[4].startswith("b00\n")
    assert "NOT valid: no valid overlap with another input" in fmap.tooltips[4]
    assert "sky: n/a" in fmap.tooltips[4]


def test_flags_mark_invalid_images_and_disconnected_components(disconnected, with_invalid):
    coll, result = disconnected
    fmap = FootprintMap(coll, result)
    assert fmap.flags == [[]] * 4 + [["disconnected"]] * 3
    coll, result = with_invalid
    fmap = FootprintMap(coll, result)
    assert fmap.flags == [[]] * 4 + [["invalid", "disconnected"]]


# -- fitted planes (skymodel="plane") -----------------------------------------------------------
@pytest.fixture
def planes():
    """A rotated 2x3 mosaic with scattered light, its true planes as a plane result."""
    mosaic = make_mosaic((2, 3), noise=1.0, gradient=4.0, rotation=30.0, seed=1)
    coll, result = plane_result(mosaic, fallback_pairs=(0,))
    return mosaic, coll, result


def test_plane_tooltips_give_the_slopes_and_the_gradient(planes):
    _, coll, result = planes
    fmap = FootprintMap(coll, result)
    f32 = {k: result[k].values.astype(np.float32) for k in ("slope_x", "slope_y", "gradient", "gradient_pa")}
    assert fmap.tooltips[2].splitlines()[2:5] == [
        f"sky: {result.sky.values[2]:.4g} ± 0.01",
        f"slopes x, y: {f32['slope_x'][2]:.4g}, {f32['slope_y'][2]:.4g}/pixel",
        f"gradient: {f32['gradient'][2]:.4g}/arcsec toward PA {f32['gradient_pa'][2]:.4g}°",
    ]
    assert "slopes" not in FootprintMap(coll, coll.skymatch(skystat="mean")).tooltips[2]


def test_plane_arrows_start_at_the_centres_and_point_where_the_sky_rises(planes):
    _, coll, result = planes
    fmap = FootprintMap(coll, result)
    tips = np.frombuffer(fmap.images["arrows"], np.float32).reshape(-1, 2)
    step = tips - np.array(fmap.centers)
    pa = np.radians(result.gradient_pa.values)
    # display frame: x = west, y = north; PA is east of north
    np.testing.assert_allclose(step / np.hypot(*step.T)[:, None],
                               np.column_stack([-np.sin(pa), np.cos(pa)]), atol=0.01)
    length = np.hypot(*step.T)
    np.testing.assert_allclose(length / length.max(), result.gradient / result.gradient.max(), atol=0.01)
    radius = 0.5 * np.hypot(10.0, 10.0)  # 100 x 100 pixels of 0.1"
    assert length.max() == pytest.approx(ARROW_FRACTION * radius, rel=0.01)


def test_no_arrow_without_a_gradient_or_a_valid_sky(planes):
    _, coll, result = planes
    result = result.copy()
    result["gradient"].values[1] = 0.0
    result["gradient_pa"].values[1] = np.nan
    result["valid"].values[4] = False
    tips = np.frombuffer(FootprintMap(coll, result).images["arrows"], np.float32).reshape(-1, 2)
    assert np.isnan(tips[[1, 4]]).all() and np.isfinite(tips[[0, 2, 3, 5]]).all()
    assert "\ngradient: 0/arcsec\n" in FootprintMap(coll, result).tooltips[1]  # no PA


def test_color_by_gradient_ramps_from_zero_and_says_when_there_are_none(planes):
    _, coll, result = planes
    fmap = FootprintMap(coll, result, color_by="gradient")
    assert fmap.colorbar["vmin"] == 0.0
    assert fmap.colorbar["vmax"] == pytest.approx(result.gradient.values.max())
    assert fmap.colorbar["label"] == "Sky gradient [per arcsec]"
    assert fmap.fill[int(np.argmax(result.gradient.values))] == VIRIDIS[-1]
    fmap.update(coll.skymatch(skystat="mean"))  # constants: nothing to colour by
    assert fmap.colorbar["labels"] == [NO_GRADIENT] and set(fmap.fill) == {MISSING}
    assert fmap.images["plane"] is False and fmap.images["arrows"] == b""


def test_plane_pair_titles_give_the_residual_gradient_or_the_fallback(planes):
    _, coll, result = planes
    titles = [p["title"] for p in FootprintMap(coll, result).pairs]
    assert titles[0].endswith("\nconstant only: overlap too thin for a slope")
    resid = np.float32(result.resid_gradient.values[1])
    assert titles[1].endswith(f"\nresidual gradient: {resid:.4g}/arcsec")


# -- overlap pairs -------------------------------------------------------------------------------
def test_pairs_join_input_centres_and_are_coloured_by_residual(grid):
    coll, result = grid
    pairs = result.copy()
    after = np.zeros(pairs.sizes["pair"])
    after[0], after[1] = 2.0, -2.0
    pairs["diff_after"] = ("pair", after)
    fmap = FootprintMap(coll, pairs)
    assert len(fmap.pairs) == pairs.sizes["pair"]
    assert [p["color"] for p in fmap.pairs[:3]] == [DIVERGING[-1], DIVERGING[0], DIVERGING[3]]
    centre = dict(zip(fmap.names, fmap.centers))
    first = fmap.pairs[0]
    assert first["a"] == centre[str(pairs.a.values[0])] and first["b"] == centre[str(pairs.b.values[0])]
    assert "residual after: 2" in first["title"]
    assert (fmap.pairs_colorbar["vmin"], fmap.pairs_colorbar["vmax"]) == (-2.0, 2.0)


def test_pairs_come_with_the_result_and_groups_meet_at_their_centre(grid):
    coll, _ = grid
    coll.groups = {"img00": "g", "img03": "g"}
    result = coll.skymatch(skystat="mean")
    fmap = FootprintMap(coll, result)  # the pairs of the result
    assert len(fmap.pairs) == result.sizes["pair"]
    k = list(result.a.values).index("g")
    expected = np.mean([fmap.centers[0], fmap.centers[3]], axis=0)
    np.testing.assert_allclose(fmap.pairs[k]["a"], expected, atol=0.01)
    assert FootprintMap(coll).pairs == []
    assert fmap.show_overlaps is False


def test_pairs_flagged_by_the_robust_solve_are_marked_with_their_weight():
    # a +3 sigma band across a quarter of one overlap, in one image only (as in test_compare)
    m = make_mosaic((4, 4), shape=(128, 128), noise=1.0, rotation=3.0, jitter=3.0, seed=1)
    runs = collection(m).matcher.overlap_pixels(5, 6)
    y = np.repeat(runs.rows, runs.stop - runs.start)
    x = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)])
    band = np.abs((x - x.mean()) - (y - y.mean())) < 15
    m.images[5][y[band], x[band]] += 3.0
    coll = collection(m)
    result = coll.skymatch(skystat="mean")
    flagged = result.flagged.values
    assert flagged.tolist() == [(a, b) == ("img05", "img06")
                                for a, b in zip(result.a.values, result.b.values)]
    fmap = FootprintMap(coll, result)
    assert [p["flagged"] for p in fmap.pairs] == flagged.tolist()
    (k,) = np.flatnonzero(flagged)
    assert "down-weighted by the robust solve (weight x 0." in fmap.pairs[k]["title"]
    weight = result.robust_weight.values
    assert 0 < weight[k] < 1 and (weight[~flagged] == 1).all()


def test_update_rejects_a_result_of_another_collection(grid):
    coll, _ = grid
    other = collection(make_mosaic((1, 2)))
    fmap = FootprintMap(coll)
    with pytest.raises(ValueError, match="image names differ"):
        fmap.update(other.skymatch(skystat="mean"))


# -- selection and hover -------------------------------------------------------------------------
def test_selection_api_and_validation(grid):
    coll, result = grid
    fmap = FootprintMap(coll, result)
    fmap.select(["img04", "img01", "img04"])
    assert fmap.selected == ["img01", "img04"]  # collection order, no duplicates
    fmap.select("img02")
    assert fmap.selected == ["img02"]
    with pytest.raises(ValueError, match=r"\['nope', 'zzz'\]"):
        fmap.select(["img00", "zzz", "nope"])
    assert fmap.selected == ["img02"]
    fmap.clear_selection()
    assert fmap.selected == []
    fmap.hovered = "img03"
    with pytest.raises(ValueError, match="hovered.*'img99'"):
        fmap.hovered = "img99"


def test_reset_view_sends_a_message(grid, monkeypatch):
    fmap = FootprintMap(grid[0])
    sent = []
    monkeypatch.setattr(fmap, "send", sent.append)
    fmap.reset_view()
    assert sent == [{"type": "reset_view"}]


def test_state_is_plain_json(grid):
    """JSON plus binary buffers for the arrays over images and pairs (what Jupyter sends)."""
    from ipywidgets.widgets.widget import _remove_buffers

    coll, result = grid
    state = FootprintMap(coll, result).get_state()
    state, paths, buffers = _remove_buffers({k: v for k, v in state.items() if not k.startswith("_")})
    json.dumps(state, allow_nan=False)
    assert ["shapes", "polygons"] in paths and ["fill_rgb"] in paths and ["pair_values", "after"] in paths
    assert len(buffers[paths.index(["fill_rgb"])]) == 3 * len(coll)


def test_update_of_500_images_is_fast():
    coll = collection(make_mosaic((20, 25), shape=(16, 16)))
    result = coll.skymatch(skystat="mean")
    t0 = time.perf_counter()
    fmap = FootprintMap(coll)
    t1 = time.perf_counter()
    fmap.update(result)
    t2 = time.perf_counter()
    fmap.color_by = "group"
    t3 = time.perf_counter()
    keys = ("polygons", "centers", "fill", "tooltips", "pairs")
    size = len(json.dumps({k: getattr(fmap, k) for k in keys}))
    print(f"\n500 images, {len(fmap.pairs)} pairs: projection + init {t1 - t0:.3f} s, "
          f"update {t2 - t1:.3f} s, recolour {t3 - t2:.4f} s, state {size / 1e3:.0f} kB")
    assert len(fmap.polygons) == 500
