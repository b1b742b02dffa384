"""One place decides how a result is shown: the map widget and the figures agree on it.

Colours, legends, flags, units and the map projection come from `skymatch_nb_ui.display`;
these tests draw the same result in both views and compare what a reader would see.
"""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.legend
import matplotlib.pyplot as plt
import numpy as np
import pytest
from _plane_results import plane_result
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from matplotlib.colors import to_rgba

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.display.colors import VIRIDIS_LUT, luminance, ramp, theme_colors
from skymatch_nb_ui.display.encodings import COLOR_BY, MAX_LEGEND, image_fill
from skymatch_nb_ui.display.projection import (
    MAX_TANGENT_RADIUS,
    sky_projection,
    tangent_projection,
)
from skymatch_nb_ui.plotting import mosaic_wcs, plot_footprints, plot_planes
from skymatch_nb_ui.testing import make_mosaic
from skymatch_nb_ui.widgets import FootprintMap


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def solved():
    """2x3 grid in two groups, one image without valid pixels, a strip far away: every case."""
    m = make_mosaic((2, 3), sky=[100, 120, 105, 110, 104, 115], noise=1.0, seed=2) + make_mosaic(
        (1, 2), center=(150.1, 2.0), prefix="far", seed=3)
    images = [im.copy() for im in m.images]
    images[3][:] = np.nan
    coll = ImageCollection.from_arrays(images, m.wcs, names=m.names, meta=[{"bunit": "MJy/sr"}] * len(m),
                                       groups={"img01": "A", "img04": "A", "img02": "B", "img05": "B"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return coll, coll.skymatch(skymethod="global+match", skystat="mean")


def figure_fills(ax) -> dict:
    return {p.get_gid().split("-", 1)[1]: np.array(p.get_facecolor()) for p in ax.patches
            if (p.get_gid() or "").startswith("footprint-")}


def legend_entries(ax) -> list[str]:
    texts = []
    for legend in ax.findobj(matplotlib.legend.Legend):
        texts += [t.get_text() for t in legend.texts]
    return texts


@pytest.mark.parametrize("color_by", COLOR_BY)
def test_the_map_and_the_figure_give_every_image_the_same_colour(solved, color_by):
    coll, result = solved
    fmap = FootprintMap(coll, result, color_by=color_by)
    fills = figure_fills(plot_footprints(result, color_by=color_by))
    for name, colour in zip(fmap.names, fmap.fill):
        np.testing.assert_allclose(fills[name], to_rgba(colour), atol=0.5 / 255, err_msg=name)


@pytest.mark.parametrize("color_by", COLOR_BY)
def test_the_map_and_the_figure_explain_the_colours_alike(solved, color_by):
    coll, result = solved
    legend = FootprintMap(coll, result, color_by=color_by).colorbar
    ax = plot_footprints(result, color_by=color_by)
    if legend["kind"] == "ramp":
        (bar,) = [a for a in ax.figure.axes if a.get_label() == "<colorbar>"]
        assert bar.get_ylabel() == legend["label"]
        assert bar.get_ylim() == pytest.approx((legend["vmin"], legend["vmax"]))
    else:
        entries = legend_entries(ax)
        assert all(label in entries for label in legend["labels"]), (legend["labels"], entries)
        if legend["label"]:
            assert legend["label"] in {t.get_text() for lg in ax.findobj(matplotlib.legend.Legend)
                                       for t in [lg.get_title()]}


@pytest.fixture(scope="module")
def planes():
    """A rotated 2x3 mosaic with scattered light, its true planes as a plane result."""
    mosaic = make_mosaic((2, 3), noise=1.0, gradient=4.0, rotation=30.0, seed=1)
    return (mosaic, *plane_result(mosaic))


def test_the_map_and_the_figure_colour_by_gradient_alike(planes):
    _, coll, result = planes
    fmap = FootprintMap(coll, result, color_by="gradient")
    ax = plot_footprints(result, color_by="gradient")
    fills = figure_fills(ax)
    for name, colour in zip(fmap.names, fmap.fill):
        np.testing.assert_allclose(fills[name], to_rgba(colour), atol=0.5 / 255, err_msg=name)
    (bar,) = [a for a in ax.figure.axes if a.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == fmap.colorbar["label"] == "Sky gradient [per arcsec]"


def arrow_directions(ax) -> dict:
    """{image: unit vector (east, north) of its figure arrow, from pixel positions}."""
    ax.figure.canvas.draw()  # the equal aspect is applied when drawing
    out = {}
    for a in ax.texts:
        gid = a.get_gid() or ""
        if gid.startswith("gradient-"):
            world = ax.get_transform("world")
            (x0, y0), (x1, y1) = world.transform([a.xyann, a.xy])
            step = np.array([-(x1 - x0), y1 - y0])  # east is left on the map
            out[gid.split("-", 1)[1]] = step / np.hypot(*step)
    return out


def test_the_map_and_the_figure_draw_the_same_gradient_arrows(planes):
    _, coll, result = planes
    fmap = FootprintMap(coll, result)
    tips = np.frombuffer(fmap.images["arrows"], np.float32).reshape(-1, 2)
    step = tips - np.array(fmap.centers)
    widget = {n: np.array([-dx, dy]) / np.hypot(dx, dy) for n, (dx, dy) in zip(fmap.names, step)}
    ax = plot_footprints(result)
    figure = arrow_directions(ax)
    assert set(figure) == set(widget)
    for name in widget:
        np.testing.assert_allclose(figure[name], widget[name], atol=0.02, err_msg=name)
    assert "sky gradient" in legend_entries(ax)
    assert arrow_directions(plot_footprints(result, show_gradient=False)) == {}
    constant = coll.skymatch(skystat="mean")
    assert arrow_directions(plot_footprints(constant)) == {}


def test_plot_planes_fills_each_footprint_with_its_plane(planes):
    mosaic, _, result = planes
    ax = plot_planes(result, cells=8)
    meshes = {c.get_gid().split("-", 1)[1]: c for c in ax.collections
              if (c.get_gid() or "").startswith("plane-")}
    assert list(meshes) == list(result.image.values)
    for k, name in enumerate(result.image.values):
        values = np.asarray(meshes[name].get_array()).reshape(8, 8)
        # the true plane at the cells' centres (fractional pixel positions of the footprint)
        y, x = (np.mgrid[0:8, 0:8] + 0.5) / 8 * 100 - 0.5
        expected = mosaic.sky[k] + mosaic.slope_x[k] * (x - 49.5) + mosaic.slope_y[k] * (y - 49.5)
        np.testing.assert_allclose(values, expected, atol=2e-3 * np.ptp(expected) + 1e-9)
    assert len(arrow_directions(ax)) == 6
    (bar,) = [a for a in ax.figure.axes if a.get_label() == "<colorbar>"]
    assert bar.get_ylabel() == "Fitted sky offset"


def test_plot_planes_of_constant_skies_is_flat_and_marks_invalid_images(solved):
    _, result = solved
    ax = plot_planes(result, cells=3)
    meshes = [c for c in ax.collections if (c.get_gid() or "").startswith("plane-")]
    assert len(meshes) == result.sizes["image"] - 1  # img03 has no valid sky: hatched
    for mesh in meshes:
        assert np.ptp(np.asarray(mesh.get_array())) == 0
    assert any(p.get_hatch() for p in ax.patches if p.get_gid() == "footprint-img03")
    assert "no valid sky" in legend_entries(ax)
    with pytest.raises(ValueError, match="cells must be a positive integer"):
        plot_planes(result, cells=0)


def drawn_planes(result, monkeypatch, *, limit, **kw):
    from skymatch_nb_ui import plotting

    monkeypatch.setattr(plotting, "FOOTPRINT_PATCHES", limit)
    ax = plot_planes(result, colorbar=False, **kw)
    ax.figure.canvas.draw()
    return ax


def test_many_planes_are_one_mesh_with_the_same_cells_on_the_page(planes, solved, monkeypatch):
    # above FOOTPRINT_PATCHES images the planes are one mesh: each image's cells at the same
    # places on the page with the same values, nothing drawn between two images' grids
    for result in (planes[2], solved[1]):  # (solved: an image without a valid sky)
        one_by_one = drawn_planes(result, monkeypatch, limit=10**6, cells=5, show_gradient=False)
        together = drawn_planes(result, monkeypatch, limit=0, cells=5, show_gradient=False)
        meshes = [c for c in one_by_one.collections if (c.get_gid() or "").startswith("plane-")]
        (mesh,) = [c for c in together.collections if c.get_gid() == "planes"]
        assert not [c for c in together.collections if (c.get_gid() or "").startswith("plane-")]
        nodes = mesh.get_transform().transform(mesh.get_coordinates().reshape(-1, 2))
        nodes = nodes.reshape(len(meshes), 6, 6, 2)
        values = np.ma.asarray(mesh.get_array()).reshape(-1, 5)
        for j, one in enumerate(meshes):
            page = one.get_transform().transform(one.get_coordinates().reshape(-1, 2))
            np.testing.assert_allclose(nodes[j].reshape(-1, 2), page, atol=1e-6)
            assert np.array_equal(values[6 * j:6 * j + 5], np.asarray(one.get_array()).reshape(5, 5))
        assert values.mask.sum() == 5 * (len(meshes) - 1)  # the rows between two grids
        assert values[5::6].mask.all()
        assert mesh.get_zorder() == meshes[0].get_zorder() and mesh.get_rasterized()
        # the same picture, pixel for pixel but for a few edge pixels of the cells
        one, two = (np.asarray(ax.figure.canvas.buffer_rgba())[..., :3].astype(int)
                    for ax in (one_by_one, together))
        assert one.shape == two.shape
        assert np.mean(np.abs(one - two).max(axis=-1) > 8) < 0.005


def test_many_planes_arrows_are_one_quiver_at_the_annotations_places(planes, monkeypatch):
    _, _, result = planes
    one_by_one = drawn_planes(result, monkeypatch, limit=10**6)
    together = drawn_planes(result, monkeypatch, limit=0)
    arrows = {a.get_gid(): a for a in one_by_one.texts if (a.get_gid() or "").startswith("gradient-")}
    assert len(arrows) == 6
    (quiver,) = [c for c in together.collections if c.get_gid() == "gradients"]
    starts = quiver.get_offset_transform().transform(quiver.get_offsets())
    tips = together.transData.transform(quiver.get_offsets() + np.column_stack([quiver.U, quiver.V]))
    world = one_by_one.get_transform("world")
    for k, a in enumerate(arrows.values()):
        (x0, y0), (x1, y1) = world.transform([a.xyann, a.xy])
        np.testing.assert_allclose(starts[k], (x0, y0), atol=1e-6)
        np.testing.assert_allclose(tips[k], (x1, y1), atol=1e-6)
    assert "sky gradient" in legend_entries(together)


def test_small_footprints_keep_their_colours(planes, monkeypatch):
    # many footprints small on the page: lines thinner than the footprints, no arrows unless
    # asked for (at 0.6 pt outlines and arrows on 3-point footprints, 10,000 images were black)
    from skymatch_nb_ui import plotting

    _, _, result = planes
    monkeypatch.setattr(plotting, "FOOTPRINT_PATCHES", 0)
    for draw in (plot_planes, plot_footprints):
        large = draw(result)
        small = draw(result, ax=plt.figure(figsize=(0.3, 0.3)).add_subplot(
            projection=mosaic_wcs(result)))
        widths = {ax: {c.get_gid(): c.get_linewidths()[0] for c in ax.collections} for ax in (large, small)}
        assert widths[large]["outlines"] == 0.6
        assert 0 < widths[small]["outlines"] < 0.6
        assert "gradients" in widths[large] and "gradients" not in widths[small]
        asked = draw(result, show_gradient=True,
                     ax=plt.figure(figsize=(0.3, 0.3)).add_subplot(projection=mosaic_wcs(result)))
        assert any(c.get_gid() == "gradients" for c in asked.collections)
    monkeypatch.setattr(plotting, "FOOTPRINT_PATCHES", 10**6)  # as patches: as before
    small = plot_planes(result, ax=plt.figure(figsize=(0.3, 0.3)).add_subplot(
        projection=mosaic_wcs(result)))
    assert {p.get_linewidth() for p in small.patches if p.get_gid().startswith("outline-")} == {0.6}
    assert len(arrow_directions(small)) == 6


def test_flags_agree_hatched_invalid_dashed_outside_the_largest_component(solved):
    coll, result = solved
    flags = dict(zip(coll.names, FootprintMap(coll, result).flags))
    ax = plot_footprints(result)
    hatched = {p.get_gid().split("-", 1)[1] for p in ax.patches
               if (p.get_gid() or "").startswith("footprint-") and p.get_hatch()}
    dashed = {p.get_gid().split("-", 1)[1] for p in ax.patches
              if (p.get_gid() or "").startswith("outline-") and p.get_linestyle() not in ("-", "solid")}
    assert hatched == {n for n, f in flags.items() if "invalid" in f} == {"img03"}
    # img03 (no valid pixel) is alone in its component too
    assert dashed == {n for n, f in flags.items() if "disconnected" in f} == {"far00", "far01", "img03"}


def test_the_ramp_is_matplotlibs_viridis_entry_for_entry():
    values = np.linspace(0.0, 1.0, 1001)
    expected = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["viridis"](values)]
    assert ramp(values, 0.0, 1.0) == expected
    assert len(VIRIDIS_LUT) == 256


def test_legends_are_cut_at_one_length_in_both_views():
    m = make_mosaic((3, 4))
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names, groups=list(range(12)))
    result = coll.skymatch(skystat="mean")
    legend = FootprintMap(coll, result, color_by="group").colorbar
    assert len(legend["labels"]) == MAX_LEGEND and legend["more"] == 12 - MAX_LEGEND
    entries = legend_entries(plot_footprints(result, color_by="group"))
    assert entries[:MAX_LEGEND] == legend["labels"] and entries[MAX_LEGEND] == f"… {12 - MAX_LEGEND} more"


def test_one_sky_value_takes_the_middle_of_the_ramp_in_both_views():
    m = make_mosaic((1, 3), sky=[7.0, 7.0, 7.0])
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    result = coll.skymatch(skymethod="global+match", skystat="mean")
    fill = image_fill(result, "sky")
    assert fill.legend.vmin < 7.0 < fill.legend.vmax
    assert set(fill.colors) == {VIRIDIS_LUT[128]}
    np.testing.assert_allclose(figure_fills(plot_footprints(result))["img00"], to_rgba(VIRIDIS_LUT[128]),
                               atol=0.5 / 255)


def test_the_result_carries_the_unit_to_every_view(solved):
    coll, result = solved
    assert result.sky.attrs["units"] == "MJy/sr" and result.diff_after.attrs["units"] == "MJy/sr"
    assert FootprintMap(coll, result).colorbar["label"] == "Sky level [MJy/sr]"
    m = make_mosaic((1, 2))
    mixed = ImageCollection.from_arrays(m.images, m.wcs, meta=[{"bunit": "MJy/sr"}, {"bunit": "DN/s"}])
    assert "units" not in mixed.skymatch(skystat="mean").sky.attrs  # no common unit: none claimed


# -- the projection ------------------------------------------------------------------------------
def test_centres_are_the_mean_direction_of_the_corners_everywhere(solved):
    coll, result = solved
    fmap = FootprintMap(coll, result, color_by="group")
    tangent = SkyCoord(*fmap.tangent, unit="deg")
    centres = SkyCoord(result.ra.values, result.dec.values, unit="deg")
    centres = centres.transform_to(tangent.skyoffset_frame())
    np.testing.assert_allclose(np.array(fmap.centers)[:, 0], -centres.lon.to_value(u.arcsec), atol=0.011)
    np.testing.assert_allclose(np.array(fmap.centers)[:, 1], centres.lat.to_value(u.arcsec), atol=0.011)
    np.testing.assert_allclose(mosaic_wcs(result).wcs.crval, fmap.tangent, atol=1e-9)


def test_fields_far_apart_get_an_all_sky_map_in_both_views():
    """Issue 9 item 20: images 180 degrees apart are drawn (the engine handles them too)."""
    m = make_mosaic((1, 2), center=(10.0, 5.0)) + make_mosaic((1, 2), center=(190.0, -5.0), prefix="b")
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    result = coll.skymatch(skymethod="local", skystat="mean")
    with pytest.raises(ValueError, match="hemisphere"):
        tangent_projection(*coll.footprints)
    fmap = FootprintMap(coll, result)
    assert fmap.projection["kind"] == "allsky" and "Hammer-Aitoff" in fmap.projection["label"]
    # the positions are wcslib's Hammer-Aitoff (FITS AIT) about the map's centre, in arcsec
    w = mosaic_wcs(result)
    assert list(w.wcs.ctype) == ["RA---AIT", "DEC--AIT"]
    reference = WCS(naxis=2)
    reference.wcs.ctype, reference.wcs.crval = ["RA---AIT", "DEC--AIT"], list(w.wcs.crval)
    reference.wcs.cdelt, reference.wcs.crpix = [-1 / 3600, 1 / 3600], [0.0, 0.0]
    x, y = reference.wcs_world2pix(result.ra.values, result.dec.values, 0)
    np.testing.assert_allclose(np.array(fmap.centers), np.column_stack([x, y]) + 1, atol=0.02)
    ra = result.ra.values
    assert fmap.centers[0][1] > fmap.centers[2][1]  # Dec 5 above Dec -5
    assert (ra[0] > ra[1]) == (fmap.centers[0][0] < fmap.centers[1][0])  # RA increases leftwards
    ax = plot_footprints(result)
    assert len(figure_fills(ax)) == 4


def test_all_sky_footprints_on_the_seam_stay_whole():
    lon = np.array([[179.9, 180.1, 180.1, 179.9], [0.0, 0.2, 0.2, 0.0]])
    lat = np.array([[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.2, 0.2]])
    projection = sky_projection(lon, lat)
    assert projection.kind == "allsky"
    xi, _ = projection.project(lon, lat)
    assert np.ptp(xi, axis=1).max() < 1.0  # degrees: no footprint torn across the map


def test_the_tangent_limit_is_one_number():
    lon = np.array([[0.0, 1.0, 1.0, 0.0], [MAX_TANGENT_RADIUS * 2 + 10, MAX_TANGENT_RADIUS * 2 + 11] * 2])
    lat = np.zeros_like(lon)
    assert sky_projection(lon, lat).kind == "allsky"
    assert sky_projection(lon[:1], lat[:1]).kind == "tangent"


def test_dark_page_colours_keep_their_contrast():
    for dark, background in ((False, "#ffffff"), (True, "#111111"), (True, "#212121")):
        colors = theme_colors(dark)
        for colour in (colors.data, colors.bad, colors.before):
            high, low = sorted([luminance(colour), luminance(background)], reverse=True)
            assert (high + 0.05) / (low + 0.05) > 3.5, (dark, background, colour)


@pytest.mark.parametrize("module", ["skymatch_nb_ui.display.colors", "skymatch_nb_ui.display.encodings",
                                    "skymatch_nb_ui.display.projection", "skymatch_nb_ui.collection",
                                    "skymatch_nb_ui.widgets.footprint_map",
                                    "skymatch_nb_ui.widgets.group_editor",
                                    "skymatch_nb_ui.widgets.results_table", "skymatch_nb_ui.widgets.app"])
def test_documented_examples(module, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


# -- a real plane solve (skymodel="plane") in every view -------------------------------------------
def test_a_real_plane_solve_is_shown_by_the_map_the_table_and_the_figures():
    from skymatch_nb_ui.widgets import ResultsTable

    mosaic = make_mosaic((2, 3), shape=(200, 200), overlap=0.3, noise=1.0, gradient=6.0,
                         rotation=15.0, seed=5)
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
    result = coll.skymatch(skystat="median", skymodel="plane")
    fmap = FootprintMap(coll, result, color_by="gradient", show_overlaps=True)
    assert fmap.images["plane"] and fmap.colorbar["label"] == "Sky gradient [per arcsec]"
    assert all("\nslopes x, y: " in t and "\ngradient: " in t for t in fmap.tooltips)
    assert all(("residual gradient: " in p["title"]) or ("constant only: " in p["title"])
               for p in fmap.pairs if p["valid"])
    assert "gradient" in [c["key"] for c in ResultsTable(coll, result).columns]
    # the figure's planes (drawn from the gradient on the sky) are the engine's pixel planes
    ax = plot_planes(result, cells=4)
    for k, name in enumerate(result.image.values):
        (mesh,) = [c for c in ax.collections if c.get_gid() == f"plane-{name}"]
        y, x = (np.mgrid[0:4, 0:4] + 0.5) / 4 * 200 - 0.5
        expected = (result.sky.values[k] + result.slope_x.values[k] * (x - 99.5)
                    + result.slope_y.values[k] * (y - 99.5))
        np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(4, 4), expected,
                                   atol=1e-3 * max(np.ptp(expected), 1.0))
    # the figure's arrows point where the map's do
    tips = np.frombuffer(fmap.images["arrows"], np.float32).reshape(-1, 2)
    step = tips - np.array(fmap.centers)
    figure = arrow_directions(plot_footprints(result))
    for k, name in enumerate(fmap.names):
        if np.isfinite(step[k]).all() and np.hypot(*step[k]) > 0.5:
            np.testing.assert_allclose(figure[name], np.array([-step[k, 0], step[k, 1]])
                                       / np.hypot(*step[k]), atol=0.03, err_msg=name)
