"""Lean models (`engine.lean`): a gwcs's transforms evaluated without astropy's per-call
machinery, giving the models' own values bit for bit, with anything unusual left to astropy.
"""

from __future__ import annotations

import copy
import gc
import tracemalloc

import numpy as np
import pytest
from test_gwcs_geometry import _stcal_data

from skymatch_nb_ui.engine import lean as lean_module
from skymatch_nb_ui.engine.geometry import CelestialWCS
from skymatch_nb_ui.engine.lean import LeanModel, lean
from skymatch_nb_ui.engine.packed import PackedWCS
from skymatch_nb_ui.testing import nircam_like_gwcs

models = pytest.importorskip("astropy.modeling.models")
u = pytest.importorskip("astropy.units")


def _inputs(n_inputs: int, rng):
    """Every kind of input the engine may pass, and the 0-d and Python numbers it does not."""
    shapes = [(500,), (7, 9), (1,), (0,), ()]
    found = [tuple(rng.uniform(-50.0, 2100.0, shape) for _ in range(n_inputs)) for shape in shapes]
    found.append(tuple(float(v) for v in rng.uniform(0.0, 80.0, n_inputs)))  # Python floats
    found.append(tuple(rng.uniform(0.0, 80.0, 5).astype(np.float32) for _ in range(n_inputs)))
    found.append(tuple(np.arange(k, k + 6) for k in range(n_inputs)))  # integers
    return found


def _same_as_model(model, lean_model, rng) -> None:
    for inputs in _inputs(model.n_inputs, rng):
        wanted = model(*inputs, with_bounding_box=False)
        found = lean_model(*inputs)
        wanted = wanted if isinstance(wanted, tuple) else (wanted,)
        found = found if isinstance(found, tuple) else (found,)
        assert len(found) == len(wanted) == model.n_outputs
        for a, b in zip(found, wanted):
            assert type(a) is type(b) and np.shape(a) == np.shape(b)
            assert np.array_equal(a, b, equal_nan=True)
            assert np.asarray(a).dtype == np.asarray(b).dtype


def _real_gwcs():
    found = [nircam_like_gwcs((150.0, 2.0), roll=7.0), nircam_like_gwcs((10.0, -80.0), roll=-3.0)]
    path = _stcal_data()
    if path is not None:  # the real NIRCam detector of stcal's test data
        import asdf

        with asdf.open(path) as f:
            found.append(copy.deepcopy(f.tree["wcs"]))
    return found


@pytest.mark.parametrize("k", range(3))
def test_every_step_of_a_jwst_gwcs_and_its_inverse_give_the_models_own_bits(k):
    wcs_list = _real_gwcs()
    if k >= len(wcs_list):
        pytest.skip("stcal's NIRCam WCS is not here: run scripts/fetch_test_data.sh")
    rng = np.random.default_rng(k)
    wcs = wcs_list[k]
    for step in wcs.pipeline[:-1]:
        for model in (step.transform, step.transform.inverse):
            found = lean(model)
            # what a JWST step is made of is all taken apart (gwcs's SphericalToCartesian,
            # in degrees, takes numbers): the tree is not kept
            assert isinstance(found, LeanModel) and found._model is None
            _same_as_model(model, found, rng)


def test_a_polynomial_with_a_domain_and_of_degree_zero_gives_its_own_bits():
    rng = np.random.default_rng(3)
    poly = models.Polynomial2D(3, x_domain=(-10, 500), y_domain=(0, 300), x_window=(-1, 1),
                               y_window=(-1, 1), **{f"c{i}_{j}": rng.normal()
                                                    for i in range(4) for j in range(4) if i + j <= 3})
    constant = models.Polynomial2D(0, c0_0=4.25)
    for model in (poly, constant, models.Shift(2.0) & models.Scale(3.0) | poly, models.Mapping((1, 0)),
                  models.Mapping((0, 1, 0)) | models.Polynomial1D(2, c0=1.0, c1=-2.0, c2=0.5) & poly):
        _same_as_model(model, lean(model), rng)


def test_what_cannot_be_taken_apart_is_called_as_it_is():
    rng = np.random.default_rng(4)
    arithmetic = models.Shift(1.0) + models.Scale(2.0)  # arithmetic between models
    vector = models.Shift([1.0, 2.0, 3.0])  # a parameter broadcast with the inputs
    in_units = models.Shift(3.0 * u.deg)
    assert lean(arithmetic) is arithmetic and lean(vector) is vector and lean(in_units) is in_units
    # inside a tree: the plain parts lean, the others called; the same bits
    tree = models.Shift(1.5) & models.Scale(2.0) | (models.Shift(1.0) + models.Scale(2.0)) & vector
    found = lean(tree)
    assert isinstance(found, LeanModel)
    x, y = rng.uniform(0, 10, 3), rng.uniform(0, 10, 3)
    for a, b in zip(found(x, y), tree(x, y)):
        assert np.array_equal(a, b)

    class Own(models.Shift):  # a class with its own call is not second-guessed
        def __call__(self, *args, **kwargs):
            return super().__call__(*args, **kwargs) * 0 + 7.0

    own = Own(1.0)
    assert lean(own) is own
    assert np.array_equal(lean(own & models.Shift(1.0))(x, y)[0], np.full(3, 7.0))


def test_quantities_from_a_part_called_as_it_is_go_through_the_trees_own_call():
    # a lookup table in degrees gives quantities for numbers in: the lean Scale after it
    # would not take them as astropy does, so the tree (kept for that) is called instead
    table = models.Tabular1D(points=np.arange(5.0), lookup_table=np.arange(5.0) * 10 * u.deg)
    tree = table | models.Scale(2.0)
    found = lean(tree)
    assert isinstance(found, LeanModel) and found._model is tree
    x = np.array([0.5, 1.5, 3.25])
    wanted = tree(x)
    got = found(x)
    assert got.unit == wanted.unit == u.deg and np.array_equal(got.value, wanted.value)


def test_a_lean_model_refuses_what_it_does_not_do_by_name():
    found = lean(models.Shift(1.0) & models.Shift(2.0))
    x = np.arange(3.0)
    with pytest.raises(ValueError, match="bounding box"):
        found(x, x, with_bounding_box=True)
    with pytest.raises(TypeError, match="quantities"):
        found(x * u.deg, x * u.deg)
    with pytest.raises(TypeError, match="takes 2 inputs"):
        found(x)
    assert "Shift" not in repr(found) and "CompoundModel: 2 -> 2" in repr(found)


def test_a_packed_gwcs_keeps_its_lean_steps_and_not_the_made_wcs():
    wcs = nircam_like_gwcs((150.0, 2.0), shape=(64, 64))
    x, y = np.meshgrid(np.arange(-0.5, 64.0, 3.0), np.arange(-0.5, 64.0, 5.0))
    lon, lat = wcs(x, y, with_bounding_box=False)
    pixel = wcs.invert(lon, lat, with_bounding_box=False)
    packed = [PackedWCS(wcs) for _ in range(8)]
    CelestialWCS(packed[0]).pixel_to_lonlat(x, y)  # (imports and first-call caches)
    gc.collect()
    tracemalloc.start()
    try:
        for p in packed[1:]:
            adapter = CelestialWCS(p)
            found = adapter.pixel_to_lonlat(x, y)
            back = adapter.lonlat_to_pixel(*found)
            assert p._live is None  # nothing kept made
            assert all(np.array_equal(a, b) for a, b in zip(found + back, (lon, lat) + pixel))
        del adapter, found, back
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] / 7
    finally:
        tracemalloc.stop()
    made = PackedWCS(wcs).unpack()
    gc.collect()
    tracemalloc.start()
    try:
        again = copy.deepcopy(made)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert again is not made and held < size / 3  # (~55 KB against ~370 KB made)


def test_documented_example():
    import doctest

    failures, tried = doctest.testmod(lean_module, extraglobs={"np": np})
    assert tried > 0 and failures == 0
