"""The gwcs of JWST and Roman files kept packed (`engine.packed.PackedWCS`): the same values
and skies, made once and kept, or only a bounded number at once when asked (`CACHE_SIZE`).
"""

from __future__ import annotations

import copy
import gc
import pickle

import numpy as np
import pytest
from test_instruments import jwst_exposure_files

from skymatch_nb_ui import ImageCollection, io
from skymatch_nb_ui.engine import packed
from skymatch_nb_ui.engine.geometry import CelestialWCS
from skymatch_nb_ui.engine.packed import PackedWCS, collector_paused
from skymatch_nb_ui.testing import nircam_like_gwcs

pytest.importorskip("stdatamodels")


def same(first, second) -> bool:
    """Two tuples of arrays equal bit for bit (NaN where the other has NaN)."""
    return len(first) == len(second) and all(
        np.array_equal(a, b, equal_nan=True) for a, b in zip(first, second))


def grid(shape=(128, 128)):
    ny, nx = shape
    y, x = np.mgrid[-3:ny + 3:6.3, -3:nx + 3:5.7]
    return x.ravel(), y.ravel()


@pytest.fixture(scope="module")
def jwst_files(tmp_path_factory):
    return jwst_exposure_files(tmp_path_factory.mktemp("jwst_packed"), noise=1.0, seed=3)


def test_a_packed_gwcs_gives_the_values_of_the_gwcs_bit_for_bit():
    wcs = nircam_like_gwcs((150.0, 2.0), roll=20.0, shape=(128, 128), pixel_scale=0.5)
    packed_wcs = PackedWCS(wcs)
    x, y = grid()
    world = wcs(x, y, with_bounding_box=False)
    assert same(packed_wcs(x, y, with_bounding_box=False), world)
    inside = packed_wcs.pixel_to_world_values(x, y)  # (NaN outside the bounding box)
    assert np.isnan(inside[0]).any() and not np.isnan(inside[0]).all()
    assert same(inside, wcs.pixel_to_world_values(x, y))
    assert same(packed_wcs.invert(*world, with_bounding_box=False),
                wcs.invert(*world, with_bounding_box=False))
    # the engine's view of it: the same both ways, through its steps
    ours, theirs = CelestialWCS(packed_wcs), CelestialWCS(wcs)
    assert same(ours.pixel_to_lonlat(x, y), theirs.pixel_to_lonlat(x, y))
    lon, lat = theirs.pixel_to_lonlat(x, y)
    assert same(ours.lonlat_to_pixel(lon, lat), theirs.lonlat_to_pixel(lon, lat))
    # what the engine checks first is kept beside the bytes: no WCS made for it
    assert (packed_wcs.pixel_n_dim, packed_wcs.world_n_dim) == (wcs.pixel_n_dim, wcs.world_n_dim)
    assert packed_wcs.world_axis_physical_types == tuple(wcs.world_axis_physical_types)
    assert packed_wcs.bounding_box.bounding_box() == wcs.bounding_box.bounding_box()
    assert packed_wcs.is_gwcs and packed_wcs.nbytes < 30_000


def test_a_packed_wcs_is_a_copy_and_travels_as_bytes():
    wcs = nircam_like_gwcs((150.0, 2.0), shape=(64, 64))
    packed_wcs = PackedWCS(wcs)
    wcs.forward_transform.parameters = wcs.forward_transform.parameters * 2  # the caller's own
    x, y = grid((64, 64))
    assert not np.array_equal(packed_wcs(x, y)[0], wcs(x, y)[0], equal_nan=True)
    made = packed_wcs.get()
    assert packed_wcs.get() is made  # kept made, shared
    mine = packed_wcs.unpack()
    assert mine is not made and same(mine(x, y), made(x, y))
    sent = pickle.dumps(packed_wcs)
    assert len(sent) < len(pickle.dumps(made)) / 2  # the bytes, not the made WCS
    back = pickle.loads(sent)
    assert back._live is None and same(back(x, y), made(x, y))
    for other in (copy.copy(packed_wcs), copy.deepcopy(packed_wcs)):
        assert other._live is None and other.nbytes == packed_wcs.nbytes


def test_only_the_last_made_stay_made_and_a_dropped_one_is_made_again_the_same(monkeypatch):
    monkeypatch.setattr(packed, "CACHE_SIZE", 3)
    many = [PackedWCS(nircam_like_gwcs((150.0 + k / 100, 2.0), shape=(64, 64))) for k in range(5)]
    x, y = grid((64, 64))
    first = [np.array(w(x, y)) for w in many]
    assert sum(w._live is not None for w in many) == 3
    assert [w._live is not None for w in many] == [False, False, True, True, True]
    before = packed.made_count()
    again = np.array(many[0](x, y))  # made again
    assert packed.made_count() == before + 1 and np.array_equal(again, first[0], equal_nan=True)
    assert [w._live is not None for w in many] == [True, False, False, True, True]
    # a CelestialWCS keeps its lean steps with the packed WCS: it makes the WCS once for
    # them and keeps nothing made; they give the made WCS's values
    adapter = CelestialWCS(many[1])
    before = packed.made_count()
    lon, lat = adapter.pixel_to_lonlat(x, y)
    pixel = adapter.lonlat_to_pixel(lon, lat)
    assert packed.made_count() == before + 1 and many[1]._live is None
    assert same(adapter.lonlat_to_pixel(lon, lat), pixel) and packed.made_count() == before + 1
    made = many[1].unpack()
    assert same((lon, lat), made(x, y, with_bounding_box=False))
    assert same(pixel, made.invert(lon, lat, with_bounding_box=False))
    # a packed WCS that goes away leaves nothing made behind
    kept = len(packed._MADE)
    del many[-1]
    gc.collect()
    assert len(packed._MADE) == kept - 1


def test_the_collector_is_paused_only_for_the_block_and_left_as_it_was():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(KeyError), collector_paused():
        raise KeyError("x")
    assert gc.isenabled()


def test_jwst_records_keep_the_gwcs_packed_and_match_as_the_gwcs_does(jwst_files, monkeypatch):
    records = io.open_images(jwst_files, scheduler="serial")
    assert all(isinstance(r.wcs, PackedWCS) and r.wcs.is_gwcs for r in records)
    coll = ImageCollection.from_files(jwst_files, scheduler="serial")
    made = list(coll.wcs)  # the collection gives the gwcs themselves
    assert all(type(w).__module__.startswith("gwcs") for w in made) and len(made) == len(jwst_files)
    assert coll.wcs[2] is made[2] and coll.wcs[-1] is made[-1]
    assert isinstance(coll.wcs[1:3], list) and len(coll.wcs[1:3]) == 2
    options = dict(skymethod="match", skystat="mode", compare="differences")
    kept = coll.skymatch(**options)
    # the files read with their gwcs kept as objects, as before packing: the same, bit for bit
    with monkeypatch.context() as m:
        m.setattr(io.jwst, "packed_or_copy", lambda w: None if w is None else copy.deepcopy(w))
        objects = ImageCollection.from_files(jwst_files, scheduler="serial")
        assert not any(isinstance(s.wcs, PackedWCS) for s in objects._sources)
        plain = objects.skymatch(**options)
    assert np.array_equal(kept.sky.values, plain.sky.values, equal_nan=True)
    assert np.array_equal(kept.sky_err.values, plain.sky_err.values, equal_nan=True)
    # at most one WCS made at a time (what a run keeps is the lean steps): the same again
    monkeypatch.setattr(packed, "CACHE_SIZE", 1)
    again = ImageCollection.from_files(jwst_files, scheduler="serial").skymatch(**options)
    assert np.array_equal(again.sky.values, kept.sky.values, equal_nan=True)
    assert np.array_equal(again.sky_err.values, kept.sky_err.values, equal_nan=True)


def test_documented_example():
    import doctest

    failures, tried = doctest.testmod(packed)
    assert tried > 0 and failures == 0
