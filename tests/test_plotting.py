"""Publication figures: what is drawn must be the result, in the right place and colour."""

import doctest
import itertools
import struct
import subprocess
import sys
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from astropy.visualization.wcsaxes import WCSAxes
from matplotlib.colors import to_rgba

from skymatch_nb_ui import (
    DisconnectedMosaicWarning,
    ImageCollection,
    plotting,
)
from skymatch_nb_ui.display.encodings import short_names
from skymatch_nb_ui.plotting import (
    CATEGORICAL,
    COLOR_BY,
    MISSING,
    mosaic_wcs,
    plot_footprints,
    plot_pair_residuals,
    plot_sky,
)
from skymatch_nb_ui.testing import make_mosaic

SKY = [100.0, 120.0, 105.0, 110.0, 104.0, 115.0]
GROUPS = {"img01": "A", "img04": "A", "img02": "B", "img05": "B"}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((2, 3), sky=SKY, noise=1.0, seed=2)


@pytest.fixture(scope="module")
def coll(mosaic):
    """2x3 mosaic, two groups, and img03 without a single valid pixel."""
    images = [im.copy() for im in mosaic.images]
    images[3][:] = np.nan
    return ImageCollection.from_arrays(images, mosaic.wcs, names=mosaic.names, groups=GROUPS,
                                       meta=[{"bunit": "MJy/sr"}] * len(images))


@pytest.fixture(scope="module")
def result(coll):
    """The collection's result: images and overlap pairs in one Dataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return coll.skymatch(skymethod="global+match", skystat="mean")


@pytest.fixture(scope="module")
def disconnected():
    """The result of a 2x2 mosaic and a 1x3 strip that overlaps none of it."""
    m = make_mosaic((2, 2)) + make_mosaic((1, 3), center=(150.1, 2.0), prefix="b")
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    with pytest.warns(DisconnectedMosaicWarning):
        return coll.skymatch(skystat="mean")


def patches(ax, kind):
    """{image name: patch} of one kind: "footprint" (fill), "outline" or "group"."""
    return {p.get_gid().split("-", 1)[1]: p for p in ax.patches
            if (p.get_gid() or "").startswith(kind + "-")}


def world_vertices(ax, patch):
    """The patch's vertices in world coordinates, read back through the axes' WCS."""
    display = patch.get_transform().transform(patch.get_path().vertices)
    return ax.get_transform("world").inverted().transform(display)


def colorbar_axes(ax):
    return [a for a in ax.figure.axes if a.get_label() == "<colorbar>"]


def legend_texts(ax):
    legends = ax.findobj(matplotlib.legend.Legend)
    return {t.get_text() for legend in legends for t in [*legend.texts, legend.get_title()]}


def rgba(color):
    return np.array(to_rgba(color))


# -- the footprint map ----------------------------------------------------------------------------
def test_one_polygon_per_image_at_its_footprint_corners(result):
    ax = plot_footprints(result)
    assert isinstance(ax, WCSAxes)
    fills = patches(ax, "footprint")
    assert list(fills) == list(result.image.values)
    assert set(patches(ax, "outline")) == set(fills)
    for k, name in enumerate(result.image.values):
        corners = np.column_stack([result.footprint_ra.values[k], result.footprint_dec.values[k]])
        vertices = world_vertices(ax, fills[name])[: len(corners)]
        np.testing.assert_allclose(vertices, corners, rtol=0, atol=1e-9)


def test_map_has_north_up_and_east_left(result):
    ax = plot_footprints(result)
    to_display = ax.get_transform("world")
    xy = to_display.transform(np.column_stack([result.ra.values, result.dec.values]))
    ra, dec = result.ra.values, result.dec.values
    for i in range(len(ra)):
        for j in range(len(ra)):
            if ra[i] > ra[j] + 1e-4:  # columns of the grid differ by ~2.2e-3 degrees
                assert xy[i, 0] < xy[j, 0]
            if dec[i] > dec[j] + 1e-4:
                assert xy[i, 1] > xy[j, 1]
    assert ax.coords[0].get_axislabel() == "Right ascension"
    assert ax.coords[1].get_axislabel() == "Declination"


def test_mosaic_wcs_is_a_north_up_tangent_plane_at_the_mosaic_centre(result, coll):
    w = mosaic_wcs(result)
    assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    assert w.wcs.cdelt[0] < 0 < w.wcs.cdelt[1] and np.allclose(w.wcs.get_pc(), np.eye(2))
    np.testing.assert_allclose(w.wcs.crval, [150.0, 2.0], atol=1e-9)  # the grid's centre
    x, y = w.world_to_pixel_values(result.footprint_ra.values.ravel(),
                                   result.footprint_dec.values.ravel())
    nx, ny = w.pixel_shape
    assert x.min() > 0 and y.min() > 0 and x.max() < nx - 1 and y.max() < ny - 1
    np.testing.assert_allclose(mosaic_wcs(coll).wcs.crval, w.wcs.crval)


def test_fill_follows_the_values_along_the_colormap(result):
    sky = np.where(result.valid.values, result.sky.values, np.nan)
    lo, hi = np.nanmin(sky), np.nanmax(sky)
    for cmap in (None, "magma"):
        ax = plot_footprints(result, color_by="sky", cmap=cmap)
        colormap = matplotlib.colormaps[cmap or "viridis"]
        fills = patches(ax, "footprint")
        for k, name in enumerate(result.image.values):
            expected = MISSING if np.isnan(sky[k]) else colormap((sky[k] - lo) / (hi - lo))
            np.testing.assert_allclose(fills[name].get_facecolor(), rgba(expected), atol=1e-12)
        names = result.image.values
        np.testing.assert_allclose(fills[names[np.nanargmin(sky)]].get_facecolor(), colormap(0.0))
        np.testing.assert_allclose(fills[names[np.nanargmax(sky)]].get_facecolor(), colormap(1.0))


def test_npix_fill_and_a_single_value_gets_the_middle_colour(result, disconnected):
    ax = plot_footprints(result, color_by="npix")
    npix = np.where(result.valid.values, result.npix.values, np.nan)
    largest = result.image.values[np.nanargmax(npix)]
    assert np.allclose(patches(ax, "footprint")[largest].get_facecolor(),
                       matplotlib.colormaps["viridis"](1.0))
    ax = plot_footprints(disconnected, color_by="sky_err")  # no noise: every sky_err is 0
    middle = rgba(matplotlib.colormaps["viridis"](0.5))
    for patch in patches(ax, "footprint").values():
        np.testing.assert_allclose(patch.get_facecolor(), middle)


@pytest.mark.parametrize("color_by, text", [
    ("sky", "Sky level [MJy/sr]"),
    ("sky_err", "Sky uncertainty (1σ) [MJy/sr]"),
    ("npix", "Pixels used"),
])
def test_colour_bar_label(result, color_by, text):
    ax = plot_footprints(result, color_by=color_by)
    (cax,) = colorbar_axes(ax)
    assert cax.get_ylabel() == text


def test_colour_bar_label_of_relative_skies_custom_label_and_none(disconnected):
    (cax,) = colorbar_axes(plot_footprints(disconnected))  # skymethod="match": offsets
    assert cax.get_ylabel() == "Sky offset"
    (cax,) = colorbar_axes(plot_footprints(disconnected, label="Background (e$^-$/s)"))
    assert cax.get_ylabel() == "Background (e$^-$/s)"
    assert colorbar_axes(plot_footprints(disconnected, colorbar=False)) == []


def test_invalid_images_are_hatched(result):
    ax = plot_footprints(result)
    fills = patches(ax, "footprint")
    for name, valid in zip(result.image.values, result.valid.values):
        assert fills[name].get_hatch() == (None if valid else "////"), name
    assert "no valid sky" in legend_texts(ax)


def test_disconnected_components_have_dashed_outlines(disconnected):
    result = disconnected
    assert result.component.values.tolist() == [0, 0, 0, 0, 1, 1, 1]
    ax = plot_footprints(disconnected)
    outlines = patches(ax, "outline")
    for name in result.image.values:
        dashed = outlines[name].get_linestyle() not in ("-", "solid")
        assert dashed == name.startswith("b"), name
    assert "disconnected" in legend_texts(ax)
    ax = plot_footprints(disconnected, mark_disconnected=False)
    assert all(p.get_linestyle() in ("-", "solid") for p in patches(ax, "outline").values())
    assert "disconnected" not in legend_texts(ax)


def test_component_colours_and_legend(disconnected):
    ax = plot_footprints(disconnected, color_by="component")
    fills = patches(ax, "footprint")
    for name in disconnected.image.values:
        expected = CATEGORICAL[1] if name.startswith("b") else CATEGORICAL[0]
        np.testing.assert_allclose(fills[name].get_facecolor(), rgba(expected))
    assert {"Component", "0 (largest)", "1"} <= legend_texts(ax)
    assert colorbar_axes(ax) == []


def test_groups_share_a_colour_and_have_a_thick_outline_of_it(result):
    ax = plot_footprints(result, color_by="group")
    fills = patches(ax, "footprint")
    halos = patches(ax, "group")
    assert set(halos) == set(GROUPS)  # only the members of groups
    for name in result.image.values:
        if name in GROUPS:
            assert halos[name].get_linewidth() > patches(ax, "outline")[name].get_linewidth()
            np.testing.assert_allclose(halos[name].get_edgecolor(), fills[name].get_facecolor())
        else:
            np.testing.assert_allclose(fills[name].get_facecolor(), rgba(MISSING))
    colors = {n: tuple(fills[n].get_facecolor()) for n in GROUPS}
    assert colors["img01"] == colors["img04"] != colors["img02"] == colors["img05"]
    assert {"Group", "A", "B", "none (own sky)"} <= legend_texts(ax)
    assert patches(plot_footprints(result, show_groups=False), "group") == {}


def test_valid_colours(result):
    ax = plot_footprints(result, color_by="valid")
    for name, valid, patch in zip(result.image.values, result.valid.values,
                                  patches(ax, "footprint").values()):
        expected = CATEGORICAL[4] if valid else CATEGORICAL[5]
        np.testing.assert_allclose(patch.get_facecolor(), rgba(expected), err_msg=name)
    assert {"valid sky", "no valid sky"} <= legend_texts(ax)


def test_collection_without_result_draws_outlines_or_groups(mosaic):
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names,
                                       groups=GROUPS)
    ax = plot_footprints(coll, color_by="sky")
    assert len(patches(ax, "footprint")) == len(coll)
    assert all(np.allclose(p.get_facecolor(), rgba("white")) for p in patches(ax, "footprint").values())
    assert colorbar_axes(ax) == []
    fills = patches(plot_footprints(coll, color_by="group"), "footprint")
    np.testing.assert_allclose(fills["img01"].get_facecolor(), fills["img04"].get_facecolor())
    np.testing.assert_allclose(fills["img00"].get_facecolor(), rgba(MISSING))


def test_names_are_written_at_the_centres(result):
    ax = plot_footprints(result, show_names=True)
    texts = {t.get_text(): t for t in ax.texts}
    assert set(result.image.values) <= set(texts)
    for name, ra, dec in zip(result.image.values, result.ra.values, result.dec.values):
        np.testing.assert_allclose(texts[name].get_position(), (ra, dec), atol=1e-9)


def test_draws_into_given_wcs_axes(result):
    fig = plt.figure(figsize=(7, 3))
    ax = fig.add_subplot(1, 2, 2, projection=mosaic_wcs(result))
    assert plot_footprints(result, ax=ax) is ax
    assert len(patches(ax, "footprint")) == result.sizes["image"]


def test_legends_and_labels_stay_inside_the_figure(result, disconnected):
    for ax in (plot_footprints(result, color_by="group"), plot_footprints(result),
               plot_footprints(disconnected, color_by="component"),
               plot_sky(result), plot_pair_residuals(result)):
        fig = ax.figure
        fig.canvas.draw()
        box = fig.bbox
        for artist in ax.findobj(matplotlib.legend.Legend) + [ax.xaxis.label]:
            extent = artist.get_window_extent()
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, artist
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, artist


# -- the overlap residuals ------------------------------------------------------------------------
def test_pair_plot_shows_each_valid_pair_before_and_after(result):
    pairs = result
    valid = pairs.pair_valid.values
    assert not valid.all() and valid.any()  # img03's pairs have no valid pixels
    ax = plot_pair_residuals(result, sort=False)
    series = {c.get_label(): c for c in ax.containers}
    error = pairs.diff_err.values[valid]
    for label, variable in (("before matching", "diff_before"), ("after matching", "diff_after")):
        line, _, (bars,) = series[label].lines
        np.testing.assert_allclose(line.get_ydata(), pairs[variable].values[valid])
        half = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
        np.testing.assert_allclose(half, error)
    names = [f"{a}–{b}" for a, b in zip(pairs.a.values, pairs.b.values)]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(np.array(names)[valid])
    assert ax.get_ylabel() == "Sky difference [MJy/sr]"
    assert f"{(~valid).sum()} pairs without valid pixels not shown" in ax.get_xlabel()
    assert any(line.get_ydata()[0] == 0 == line.get_ydata()[1] for line in ax.lines)  # zero line


def test_pair_plot_sorts_worst_residual_first(result):
    ax = plot_pair_residuals(result)
    after = {c.get_label(): c for c in ax.containers}["after matching"].lines[0].get_ydata()
    assert np.all(np.diff(np.abs(after)) <= 0)
    pairs = result
    worst = np.nanargmax(np.where(pairs.pair_valid.values, np.abs(pairs.diff_after.values), np.nan))
    assert ax.get_xticklabels()[0].get_text() == f"{pairs.a.values[worst]}–{pairs.b.values[worst]}"


def test_pair_plot_without_names_when_many_pairs():
    m = make_mosaic((5, 5))
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=m.names)
    result = coll.skymatch(skystat="mean")
    assert result.sizes["pair"] > 30
    ax = plot_pair_residuals(result)
    assert "–" not in "".join(t.get_text() for t in ax.get_xticklabels())
    assert ax.get_xlabel() == "Overlapping pair (index)"


# -- the skies ------------------------------------------------------------------------------------
def test_sky_plot_orders_by_group_with_error_bars(result):
    ax = plot_sky(result)
    order = ["img00", "img01", "img04", "img02", "img05", "img03"]  # A at img01, B at img02
    assert [t.get_text() for t in ax.get_xticklabels()] == order
    by_name = result.sel(image=order)
    valid = by_name.valid.values
    line, _, (bars,) = {c.get_label(): c for c in ax.containers}["sky ± 1σ"].lines
    np.testing.assert_allclose(line.get_xdata(), np.arange(len(order))[valid])
    np.testing.assert_allclose(line.get_ydata(), by_name.sky.values[valid])
    half = np.array([abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bars.get_segments()])
    np.testing.assert_allclose(half, by_name.sky_err.values[valid])
    # the groups' bands and names
    assert {"A", "B"} <= {t.get_text() for t in ax.texts}
    assert ax.get_ylabel() == "Sky level [MJy/sr]"  # the unit travels with the result
    assert [t.get_text() for t in plot_sky(result, group_order=False).get_xticklabels()] == list(
        result.image.values)


def test_sky_plot_marks_invalid_images_with_their_reason(result):
    ax = plot_sky(result)
    (cross,) = [line for line in ax.lines if line.get_label() == "no valid sky"]
    assert cross.get_xdata().tolist() == [5]  # img03, last in group order
    assert cross.get_marker() == "x"
    assert ax.get_xticklabels()[5].get_color() == CATEGORICAL[5]
    reason = str(result.reason.sel(image="img03").item())
    assert reason and f"img03: {reason}"[:30] in ax.get_xlabel().replace("\n", " ")


def test_sky_plot_with_truth(result, mosaic):
    ax = plot_sky(result, truth=mosaic.sky)
    (truth,) = [line for line in ax.lines if line.get_label() == "true sky"]
    order = [t.get_text() for t in ax.get_xticklabels()]
    np.testing.assert_allclose(truth.get_ydata(), [SKY[mosaic.names.index(n)] for n in order])
    assert "true sky" in legend_texts(ax)


# -- output ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("plot", ["footprints", "pairs", "sky"])
def test_saves_as_pdf_svg_and_png(tmp_path, result, plot):
    ax = {"footprints": lambda: plot_footprints(result, show_names=True),
          "pairs": lambda: plot_pair_residuals(result),
          "sky": lambda: plot_sky(result)}[plot]()
    fig = ax.figure
    fig.savefig(tmp_path / "f.pdf")
    fig.savefig(tmp_path / "f.svg")
    fig.savefig(tmp_path / "f.png", dpi=300)
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF-")
    svg = (tmp_path / "f.svg").read_text()
    assert "<svg" in svg[:1000]
    png = (tmp_path / "f.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    expected = np.round(np.array(fig.get_size_inches()) * 300)
    assert (width, height) == tuple(expected)
    if plot == "footprints":
        assert (width, height) == (1050, 960)  # one journal column, 3.5 x 3.2 in
        assert 'id="footprint-img00"' in svg  # each footprint stays an object in vector output


# -- bad input ------------------------------------------------------------------------------------
def test_unknown_color_by_lists_the_choices(result):
    with pytest.raises(ValueError, match="color_by must be one of") as info:
        plot_footprints(result, color_by="brightness")
    assert all(choice in str(info.value) for choice in COLOR_BY)


def test_dataset_without_footprints_says_what_is_missing(result):
    bare = result.drop_vars(["footprint_ra", "footprint_dec"])
    for func in (plot_footprints, mosaic_wcs):
        with pytest.raises(ValueError, match=r"footprint_ra.*ImageCollection\.skymatch\(\)"):
            func(bare)
    with pytest.raises(ValueError, match=r"\['npix'\]"):
        plot_footprints(result.drop_vars("npix"), color_by="npix")
    with pytest.raises(ValueError, match=r"\['sky_err'\]"):
        plot_sky(result.drop_vars("sky_err"))


def test_wrong_kinds_of_input(result, coll):
    with pytest.raises(TypeError, match="ImageCollection"):
        plot_footprints([1, 2, 3])
    with pytest.raises(TypeError, match=r"projection=mosaic_wcs\(result\)"):
        plot_footprints(result, ax=plt.figure().add_subplot())
    with pytest.raises(ValueError, match="'pair' dimension"):
        plot_pair_residuals(result.drop_dims("pair"))  # the per-image part alone
    with pytest.raises(ValueError, match="over 'image'"):
        plot_sky(result.drop_dims(["image", "corner"]))  # the per-pair part alone
    with pytest.raises(ValueError, match="one sky per image"):
        plot_sky(result, truth=[1.0, 2.0])


def test_collection_without_result_for_the_panels(mosaic):
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
    with pytest.raises(ValueError, match=r"skymatch\(\) first"):
        plot_sky(coll)
    with pytest.raises(ValueError, match=r"skymatch\(\) first"):
        plot_pair_residuals(coll)


# -- packaging ------------------------------------------------------------------------------------
def test_matplotlib_is_imported_only_by_the_plotting_module_with_an_install_hint():
    # one interpreter for both checks: importing the package must leave matplotlib out, and
    # without matplotlib the plotting module must say how to install it
    code = (
        "import sys, skymatch_nb_ui\n"
        "skymatch_nb_ui.ImageCollection\n"
        "print('matplotlib' in sys.modules)\n"
        "sys.modules['matplotlib'] = None\n"
        "try:\n    import skymatch_nb_ui.plotting\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported, message = out.stdout.strip().split("\n", 1)
    assert imported == "False"
    assert "pip install skymatch-nb-ui[plot]" in message


def test_documented_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failures, tried = doctest.testmod(plotting, verbose=False)
    assert tried > 10 and failures == 0


JWST_NAMES = [f"jw01234001001_02101_0000{1 + k // 2}_nrcb{1 + k % 2}_cal" for k in range(6)]


@pytest.mark.parametrize(("names", "labels", "pattern"), [
    (JWST_NAMES, ["00001_nrcb1", "00001_nrcb2", "00002_nrcb1", "00002_nrcb2", "00003_nrcb1",
                  "00003_nrcb2"], "jw01234001001_02101_…_cal"),
    (["r0000101001001001001_0001_wfi01_cal", "r0000101001001001001_0001_wfi02_cal"],
     ["wfi01", "wfi02"], "r0000101001001001001_0001_…_cal"),
    (["img00", "img01"], ["img00", "img01"], ""),  # cut only at a separator
    (["a_b", "a_b_c"], ["b", "b_c"], "a_…"),
    (["x_cal", "x_y_cal"], ["x", "x_y"], "…_cal"),
    (["ab_cal", "ab_cal_cal"], ["ab", "ab_cal"], "…_cal"),  # both cuts: a name left empty
    (["only_one"], ["only_one"], ""),
])
def test_short_names_drop_only_whole_parts_every_name_shares(names, labels, pattern):
    assert short_names(names) == (labels, pattern)


def test_the_figures_name_pipeline_files_by_what_differs_and_say_the_rest_once(mosaic):
    # jw01234001001_02101_00001_nrcb1_cal and its neighbours: ticks of 11 characters, not 35
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=JWST_NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = coll.skymatch(skymethod="match", skystat="mean")
    ax = plot_sky(result, group_order=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == short_names(JWST_NAMES)[0]
    assert ax.get_xlabel() == "jw01234001001_02101_…_cal"
    ax = plot_pair_residuals(result, sort=False)
    assert ax.get_xticklabels()[0].get_text() == "00001_nrcb1–00001_nrcb2"
    assert ax.get_xlabel() == "jw01234001001_02101_…_cal"


@pytest.mark.parametrize("which", ["result", "disconnected"])
def test_many_footprints_are_drawn_as_collections_with_the_patches_marks(which, request, monkeypatch):
    # above FOOTPRINT_PATCHES images every kind of mark is one collection: the same polygons
    # on the page, the same fills, hatches, group colours and dashes, in the same layers
    result = request.getfixturevalue(which)
    monkeypatch.setattr(plotting, "LINE_FRACTION", 1e9)  # full lines however small the footprints

    def drawn(limit):
        monkeypatch.setattr(plotting, "FOOTPRINT_PATCHES", limit)
        ax = plot_footprints(result, colorbar=False)
        ax.figure.canvas.draw()
        return ax

    def on_page(path, transform):
        return np.round(transform.transform(path.vertices), 6)

    one_by_one, together = drawn(10**6), drawn(0)
    seen = set()
    assert not together.patches or all(not (p.get_gid() or "").startswith(("footprint-", "outline-"))
                                       for p in together.patches)
    for kind, gids in (("footprint", ("footprints", "footprints-invalid")), ("group", ("groups",)),
                       ("outline", ("outlines", "outlines-disconnected"))):
        expected = {}  # gid -> [(corners on the page, face, edge, width, hatch, dashed, zorder)]
        for p in patches(one_by_one, kind).values():
            dashed = p.get_linestyle() not in ("-", "solid")
            gid = gids[bool(p.get_hatch()) or dashed] if len(gids) > 1 else gids[0]
            face = to_rgba(p.get_facecolor()) if p.get_fill() else None
            expected.setdefault(gid, []).append((
                on_page(p.get_path(), p.get_transform()), face, to_rgba(p.get_edgecolor()),
                p.get_linewidth(), p.get_hatch(), dashed, p.get_zorder()))
        found = {}
        for c in together.collections:
            if c.get_gid() not in gids:
                continue
            faces, edges = c.get_facecolors(), c.get_edgecolors()
            for i, path in enumerate(c.get_paths()):
                face = None if len(faces) == 0 else tuple(faces[i % len(faces)])
                edge = tuple(edges[i % len(edges)]) if len(edges) else None
                found.setdefault(c.get_gid(), []).append((
                    on_page(path, c.get_transform()), face, edge,
                    c.get_linewidths()[0], c.get_hatch(), c.get_linestyles()[0][1] is not None,
                    c.get_zorder()))
        assert found.keys() == expected.keys()
        seen.update(expected)
        for gid in expected:
            assert len(found[gid]) == len(expected[gid])
            for (v1, *rest1), (v2, *rest2) in zip(found[gid], expected[gid]):
                np.testing.assert_allclose(v1, v2, atol=1e-6)
                face1, edge1, width1, hatch1, dashed1, z1 = rest1
                face2, edge2, width2, hatch2, dashed2, z2 = rest2
                if face2 is None:  # an outline: no fill
                    assert face1 is None or face1[3] == 0
                else:
                    assert face1 == face2
                if width2:  # (a line without width has no colour to see)
                    assert edge1 == edge2
                assert (width1, hatch1, dashed1, z1) == (width2, hatch2, dashed2, z2)
    # each kind of mark was there to compare: invalid (hatched) images and groups in one,
    # images outside the largest component (dashed) in the other
    assert {"footprints", "outlines"} <= seen
    assert {"footprints-invalid", "groups"} <= seen if which == "result" else "outlines-disconnected" in seen


def test_many_pairs_and_images_get_few_readable_index_ticks(result):
    # past the named ticks the x axis is an index: 40,000 pairs gave nine five-digit labels
    # run together under a column-wide plot
    many_pairs = result.isel(pair=np.resize(np.arange(result.sizes["pair"]), 40_000))
    many_images = result.isel(image=np.resize(np.arange(result.sizes["image"]), 12_000))
    for ax in (plot_pair_residuals(many_pairs, sort=False), plot_sky(many_images)):
        ax.figure.canvas.draw()
        low, high = ax.get_xlim()
        shown = [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if low <= x <= high]
        assert 2 <= len(shown) <= 5
        assert any("," in t.get_text() for t in shown)  # 10,000 not 10000
        boxes = [t.get_window_extent() for t in shown]
        for a, b in itertools.pairwise(boxes):
            assert a.x1 < b.x0, [t.get_text() for t in shown]


def test_a_sky_plot_of_thousands_of_images_names_what_fits(result):
    many = result.isel(image=np.resize(np.arange(result.sizes["image"]), 12_000))  # 2,000 img03
    ax = plot_sky(many, group_order=False)  # groups in runs of one or two images
    ax.figure.canvas.draw()
    # the invalid images' note: the first few names and how many more, inside the figure
    note = ax.get_xlabel()
    assert "img03, img03" in note and "and 1,992 more: " in " ".join(note.split())
    assert note.count("\n") <= 5
    figure = ax.figure.bbox
    label = ax.xaxis.label.get_window_extent()
    assert figure.x0 <= label.x0 and label.x1 <= figure.x1
    # bands a fraction of a point wide carry no names (2,000 stacked names hid the plot)
    assert not {"A", "B"} & {t.get_text() for t in ax.texts}
    # in group order each group is one wide band, named
    assert {"A", "B"} <= {t.get_text() for t in plot_sky(many).texts}
