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
from skymatch_nb_ui.plotting import mosaic_wcs, plot_footprints
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
