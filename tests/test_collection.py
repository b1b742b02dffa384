"""ImageCollection on arrays: table, groups, results as xarray, stage cache, output."""

import numpy as np
import pytest
import xarray as xr
from astropy.table import Table

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine import measure
from skymatch_nb_ui.testing import make_mosaic

SKY = [100, 120, 105, 110, 105, 115]


@pytest.fixture
def mosaic():
    return make_mosaic((2, 3), sky=SKY)


@pytest.fixture
def coll(mosaic):
    return ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)


def test_table_has_one_row_per_image(coll, mosaic):
    table = coll.table
    assert isinstance(table, xr.Dataset)
    assert list(table.image.values) == mosaic.names
    assert table.ny.values.tolist() == [100] * 6
    assert table.footprint_ra.shape == (6, 4)
    # footprint centres are where the WCS puts the image centres
    ra, dec = mosaic.wcs[4].all_pix2world(49.5, 49.5, 0)
    assert abs(table.ra.values[4] - ra) < 1e-9 and abs(table.dec.values[4] - dec) < 1e-9


def test_images_are_nodes_of_a_datatree(coll, mosaic):
    assert isinstance(coll.tree, xr.DataTree)
    node = coll["img02"]
    np.testing.assert_array_equal(node.data.values, mosaic.images[2])
    assert node.data.dims == ("y", "x")
    np.testing.assert_array_equal(coll.data(2), coll.data("img02"))


def test_html_repr_shows_the_table_escaped(mosaic):
    names = ["a<b>", "x", "y", "z", "u", "v"]
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=names)
    coll.set_group(["x", "y"], "exp&1")
    text = coll._repr_html_()
    assert "a&lt;b&gt;" in text and "<b>" not in text
    assert "exp&amp;1" in text
    assert "var(--jp-" in text  # follows the JupyterLab theme



def test_html_repr_of_many_images_shows_the_first_and_last_and_says_how_many_more(
        mosaic, monkeypatch):
    # a survey's 10,000 rows would be a megabyte of page: above HTML_ROWS, the first and
    # last rows and a row saying how many are left out (all in .table)
    from skymatch_nb_ui import collection

    names = [f"im{k}" for k in range(6)]
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=names)
    assert all(f"<td>{n}</td>" in coll._repr_html_() for n in names)  # 6 <= 50: every row
    monkeypatch.setattr(collection, "HTML_ROWS", 4)
    monkeypatch.setattr(collection, "HTML_HEAD", 2)
    monkeypatch.setattr(collection, "HTML_TAIL", 1)
    text = coll._repr_html_()
    shown = [n for n in names if f"<td>{n}</td>" in text]
    assert shown == ["im0", "im1", "im5"]
    assert "3 more images" in text and "6 images" in text
    assert text.index("<td>im1</td>") < text.index("3 more images") < text.index("<td>im5</td>")


def test_an_unknown_image_name_is_answered_with_the_closest_and_a_few_names():
    # a survey's 10,000 names would bury the message: the closest name, a few, how many
    m = make_mosaic((6, 10), shape=(16, 16), seed=1)
    names = [f"jw01234001001_02101_{k:05d}_nrcb1_cal" for k in range(60)]
    coll = ImageCollection.from_arrays(m.images, m.wcs, names=names)
    with pytest.raises(KeyError) as caught:
        coll.data("jw01234001001_02101_00042_nrcb1_cal.fits")  # a file name
    message = str(caught.value)
    assert "did you mean 'jw01234001001_02101_00042_nrcb1_cal'?" in message
    assert "(60 images)" in message and len(message) < 500
    with pytest.raises(ValueError, match=r"not in the collection: \['nope'\]; the images are \["):
        ImageCollection.from_arrays(m.images, m.wcs, names=names, groups={"nope": "A"})

def test_duplicate_names_are_rejected(mosaic):
    with pytest.raises(ValueError, match=r"image names must be unique.*\['a'\]"):
        ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=["a", "a", "b", "c", "d", "e"])


def test_skymatch_returns_a_dataset_over_images(coll):
    ds = coll.skymatch(skymethod="global+match", skystat="mean")
    for name in ("sky", "valid", "reason", "component", "group", "sky_err", "npix"):
        assert name in ds and ds[name].dims == ("image",)
    np.testing.assert_allclose(ds.sky.values, SKY, atol=1e-9)
    assert ds.attrs["skymethod"] == "global+match" and ds.attrs["skystat"] == "mean"
    assert coll.last_result is ds
    pairs = ds  # the pair diagnostics of the same run, over "pair"
    assert pairs.sizes["pair"] == 11 and "img00|img01" in pairs.pair.values
    np.testing.assert_allclose(pairs.diff_before.sel(pair="img00|img01"), -20.0)
    np.testing.assert_allclose(pairs.diff_after.values, 0.0, atol=1e-9)


def test_groups_can_be_read_changed_and_validated(coll):
    assert coll.groups == {n: None for n in coll.names}
    coll.groups = {"img02": "g", "img04": "g"}
    assert coll.groups["img02"] == "g" and coll.groups["img00"] is None
    ds = coll.skymatch(skymethod="match", skystat="mean")
    assert ds.group.values.tolist() == ["", "", "g", "", "g", ""]
    np.testing.assert_allclose(ds.sky.values, np.array(SKY) - 100, atol=1e-9)
    coll.set_group("img02", None)
    assert coll.groups["img02"] is None
    coll.groups = ["a", "a", "b", "b", "c", "c"]
    assert coll.groups["img05"] == "c"
    with pytest.raises(ValueError, match=r"groups names images that are not in the collection: \['nope'\]"):
        coll.groups = {"nope": 1}
    with pytest.raises(ValueError, match="one label per image: got 2 labels for 6 images"):
        coll.groups = [1, 2]
    with pytest.raises(KeyError, match="no image named 'nope'"):
        coll.set_group("nope", 1)


def test_solve_only_change_reuses_the_engine_cache(coll, monkeypatch):
    calls = []
    real = measure.sky_statistic
    monkeypatch.setattr(measure, "sky_statistic", lambda v, p, **k: calls.append(1) or real(v, p, **k))
    coll.skymatch(skymethod="match", skystat="median")
    n = len(calls)
    coll.skymatch(skymethod="match", skystat="median", match_down=False)
    assert len(calls) == n


def test_subtract_is_refused_with_the_way_out(coll):
    with pytest.raises(TypeError, match="write_fits"):
        coll.skymatch(subtract=True)


@pytest.mark.parametrize("name, value", [("scheduler", "processes"), ("workers", 2)])
def test_scheduler_and_workers_in_a_call_are_refused_with_the_way_out(coll, name, value):
    with pytest.raises(TypeError, match=rf"no {name} \(got {name}={value!r}\).*Set coll\.{name} = "):
        coll.skymatch(skymethod="match", **{name: value})
    setattr(coll, name, value)  # the way out works
    assert getattr(coll, name) == value
    assert coll.skymatch(skymethod="match", skystat="mean").valid.all()


def test_result_images_are_new_arrays(coll, mosaic):
    coll.skymatch(skymethod="global+match", skystat="mean")
    before = [im.copy() for im in mosaic.images]
    flat = coll.result_images()
    for name, original, kept in zip(coll.names, before, mosaic.images):
        np.testing.assert_allclose(flat[name], 0.0, atol=1e-4)
        np.testing.assert_array_equal(kept, original)


def test_to_table_round_trips_through_ecsv(coll, tmp_path):
    coll.skymatch(skymethod="global+match", skystat="mean")
    table = coll.to_table()
    assert table.colnames[:4] == ["name", "group", "component", "sky"]
    path = tmp_path / "sky.ecsv"
    table.write(path)
    back = Table.read(path)
    np.testing.assert_allclose(back["sky"], SKY, atol=1e-9)
    assert back.meta["skymethod"] == "global+match"
    # parameters keep their types (booleans, None), not netCDF's 1/0 and "none"
    assert back.meta["match_down"] is True and back.meta["subtract"] is False
    assert back.meta["lower"] is None and back.meta["upper"] is None
    assert back.meta["nclip"] == 5 and back.meta["binwidth"] == 0.1
    assert table.meta == back.meta


def test_to_table_carries_the_units_through_ecsv(mosaic, tmp_path):
    from astropy import units as u

    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names,
                                       meta=[{"bunit": "MJy/sr"}] * len(mosaic))
    coll.skymatch(skystat="mean", skymodel="plane", slope_significance=1.0)
    table = coll.to_table()
    assert table["sky"].unit == table["sky_err"].unit == u.MJy / u.sr
    assert table["slope_x_err"].unit == u.MJy / u.sr / u.pix
    assert table["gradient"].unit == u.MJy / u.sr / u.arcsec and table["gradient_pa"].unit == u.deg
    assert table["npix"].unit is None and table["component"].unit is None
    table.write(tmp_path / "sky.ecsv")
    assert Table.read(tmp_path / "sky.ecsv")["sky"].unit == u.MJy / u.sr
    # an unknown or mixed unit: none
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs)
    coll.skymatch(skystat="mean")
    assert coll.to_table()["sky"].unit is None
    # a unit astropy does not know (HST's ELECTRONS) is kept as written
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, meta=[{"bunit": "ELECTRONS"}] * 6)
    coll.skymatch(skystat="mean")
    assert str(coll.to_table()["sky"].unit) == "ELECTRONS"


def test_to_table_needs_a_result(coll):
    with pytest.raises(ValueError, match="call skymatch"):
        coll.to_table()


def test_stepsize_recomputes_the_geometry(coll):
    first = coll.skymatch(skystat="mean")
    again = coll.skymatch(skystat="mean", stepsize=20)
    assert again.attrs["stepsize"] == 20
    np.testing.assert_allclose(again.sky.values, first.sky.values, atol=1e-9)


def test_one_result_holds_images_and_pairs_and_last_pairs_is_deprecated(coll):
    ds = coll.skymatch(skymethod="match", skystat="mean")
    assert ds.sky.dims == ("image",) and ds.diff_after.dims == ("pair",)
    assert ds.pair_valid.dims == ("pair",) and ds.valid.dims == ("image",)
    with pytest.warns(DeprecationWarning, match="last_pairs is deprecated"):
        old = coll.last_pairs
    assert list(old.pair.values) == list(ds.pair.values) and old.valid.dims == ("pair",)
    np.testing.assert_array_equal(old.diff_before.values, ds.diff_before.values)


def test_what_views_need_from_the_collection(coll):
    pairs = coll.overlapping_pairs()  # a 2x3 grid: 7 edge and 4 corner neighbours
    assert len(pairs) == 11 and ("img00", "img01") in pairs and ("img00", "img04") in pairs
    assert all(coll.names.index(a) < coll.names.index(b) for a, b in pairs)
    assert coll.isolated_groups() == []
    coll.groups = {n: "all" for n in coll.names}
    assert coll.isolated_groups() == ["all"]  # one group of every image: nothing to match it to
