"""The run parameters are defined once (SkyMatchParams) and every face agrees with it."""

import inspect
import typing

import numpy as np
import pytest

from skymatch_nb_ui import ImageCollection, SkyMatcher, SkyMatchParams, skymatch
from skymatch_nb_ui.cli import build_parser
from skymatch_nb_ui.engine import ANCHORS, SKYMETHODS, SKYSTATS, StatParams
from skymatch_nb_ui.engine.params import Anchor, SkyMethod, SkyStatName
from skymatch_nb_ui.testing import make_mosaic, reference_skymatch

NAMES = SkyMatchParams.names()


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((1, 3), shape=(40, 40), sky=[7, 5, 9])


def test_skymatch_signature_is_the_parameters_object():
    """skymatch() spells its keywords out (IDE help): the same names, order and defaults."""
    signature = inspect.signature(skymatch).parameters
    data = ("images", "wcs", "masks", "groups")
    execution = ("scheduler", "workers", "progress", "cancel")  # how it runs, not what it computes
    keywords = [name for name in signature if name not in data + execution]
    assert tuple(keywords) == NAMES
    for name, spec in SkyMatchParams.specs().items():
        assert signature[name].default == spec.default, name
        assert signature[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_skymatch_documents_every_parameter_from_its_spec():
    for name, spec in SkyMatchParams.specs().items():
        assert f"\n    {name} : {spec.type_doc}" in skymatch.__doc__, name
        assert " ".join(spec.doc.split()[:4]) in " ".join(skymatch.__doc__.split()), name


def test_choices_are_the_literal_types():
    assert SKYMETHODS == typing.get_args(SkyMethod) == SkyMatchParams.specs()["skymethod"].choices
    assert ANCHORS == typing.get_args(Anchor) == SkyMatchParams.specs()["anchor"].choices
    assert SKYSTATS == typing.get_args(SkyStatName) == SkyMatchParams.specs()["skystat"].choices


def test_defaults_are_valid_and_the_spec_bounds_hold():
    for name, spec in SkyMatchParams.specs().items():
        assert spec.check(spec.default) == spec.default, name
        if spec.minimum is not None:
            below = spec.minimum if spec.exclusive_minimum else spec.minimum - 1
            with pytest.raises(ValueError, match=f"{name} must be"):
                spec.check(below)
        if spec.widget_min is not None:  # a control's range lies inside the valid domain
            assert spec.check(spec.widget_min) is not None and spec.check(spec.widget_max) is not None


def test_stat_params_are_the_statistics_parameters():
    # compare chooses how a pair is measured (levels or pixel differences), not the statistic
    # of a pixel set: the one statistics-stage parameter that sky_statistic does not take
    others = tuple(n for n in SkyMatchParams.names("statistics") if n != "compare")
    assert StatParams.names() == others
    p = SkyMatchParams(skystat="Median", nclip=2, upper=9)
    assert p.stat == StatParams(skystat="median", nclip=2, upper=9.0)
    assert StatParams.specs() == {n: SkyMatchParams.specs()[n] for n in StatParams.names()}


def test_params_are_normalised_frozen_and_hashable():
    p = SkyMatchParams(skymethod="GLOBAL+match", nclip=np.int64(3), lsigma=3, upper=np.float32(2))
    assert (p.skymethod, type(p.nclip), type(p.lsigma), type(p.upper)) == ("global+match", int, float, float)
    assert p == SkyMatchParams(skymethod="global+match", nclip=3, lsigma=3.0, upper=2.0)
    assert hash(p) == hash(SkyMatchParams(skymethod="global+match", nclip=3, lsigma=3.0, upper=2.0))
    with pytest.raises(AttributeError):
        p.nclip = 4
    with pytest.raises(TypeError):
        SkyMatchParams("match")  # keyword-only


def test_replace_validates():
    p = SkyMatchParams()
    assert p.replace(anchor="component").anchor == "component"
    with pytest.raises(ValueError, match="nclip must be an integer >= 0"):
        p.replace(nclip=-1)
    with pytest.raises(ValueError, match="lower must be <= upper"):
        p.replace(lower=3, upper=2)


@pytest.mark.parametrize("call", [
    pytest.param(lambda m: SkyMatchParams(skymetod="local"), id="SkyMatchParams"),
    pytest.param(lambda m: SkyMatcher(m.images, m.wcs).run(skymetod="local"), id="SkyMatcher.run"),
    pytest.param(lambda m: ImageCollection.from_arrays(m.images, m.wcs).skymatch(skymetod="local"),
                 id="ImageCollection.skymatch"),
    pytest.param(lambda m: reference_skymatch(m.images, m.wcs, skymetod="local"), id="reference"),
])
def test_unknown_keyword_names_the_valid_ones_and_the_closest(mosaic, call):
    with pytest.raises(TypeError) as error:
        call(mosaic)
    message = str(error.value)
    assert "unknown parameter 'skymetod' (did you mean 'skymethod'?)" in message
    assert all(name in message for name in NAMES)


def test_unknown_keyword_without_a_close_name(mosaic):
    with pytest.raises(TypeError, match=r"unknown parameter 'zzz'; the valid names are skymethod"):
        SkyMatcher(mosaic.images, mosaic.wcs).run(zzz=1)


def test_run_takes_a_parameters_object_or_keywords(mosaic):
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    p = SkyMatchParams(skymethod="global+match", skystat="mean")
    by_object = matcher.run(p)
    by_keywords = matcher.run(skymethod="global+match", skystat="mean")
    np.testing.assert_array_equal(by_object.sky, by_keywords.sky)
    assert by_object.params == p.as_dict() == by_keywords.params
    changed = matcher.run(p, skymethod="local")  # the object, with changes
    assert changed.params["skymethod"] == "local" and changed.params["skystat"] == "mean"
    with pytest.raises(TypeError, match="params must be a SkyMatchParams; got dict"):
        matcher.run({"skymethod": "local"})


def test_collection_takes_a_parameters_object_but_never_subtracts(mosaic):
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs)
    ds = coll.skymatch(SkyMatchParams(skymethod="local", skystat="mean"))
    np.testing.assert_allclose(ds.sky.values, [7, 5, 9])
    with pytest.raises(TypeError, match="write_fits"):
        coll.skymatch(SkyMatchParams(subtract=True))


def test_a_new_stepsize_recomputes_the_geometry_and_stays(mosaic):
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    corners = matcher.geometry
    assert len(corners.footprints[0].xyz) == 4
    result = matcher.run(stepsize=10, skystat="mean")
    assert result.params["stepsize"] == 10 and len(matcher.footprints[0].xyz) == 16
    assert matcher.run(skystat="mean").params["stepsize"] == 10  # the matcher's default now
    assert matcher.params == SkyMatchParams(stepsize=10)


def test_cli_has_one_option_per_parameter_with_its_default():
    args = build_parser().parse_args(["x.fits"])
    for name, spec in SkyMatchParams.specs().items():
        if spec.stage != "output":
            assert getattr(args, name) == spec.default, name
    args = build_parser().parse_args(["x.fits", "--match-up", "--nclip", "2", "--lower", "1.5"])
    assert (args.match_down, args.nclip, args.lower) == (False, 2, 1.5)


def test_a_flag_that_turns_a_parameter_off_says_what_off_does():
    # the spec's help says what True does (the app's checkbox tooltip); --no-robust and
    # --match-up set False and printed that text: "--no-robust  down-weight overlaps ..."
    options = {a.dest: a for a in build_parser()._actions}
    for name, spec in SkyMatchParams.specs().items():
        if spec.kind == "bool" and spec.default and spec.stage != "output":
            assert spec.cli_help and spec.cli_help != spec.help, name
            assert options[name].help == spec.cli_help and options[name].option_strings == [spec.cli_flag]
    assert "plain least squares" in options["robust"].help
    assert "highest sky instead of the lowest" in options["match_down"].help
    assert "lowest sky (off: to the highest)" in SkyMatchParams.specs()["match_down"].help


def test_cli_writes_copies_without_tqdm(tmp_path, monkeypatch):
    """tqdm is optional (the cli extra): without it the command writes, with no progress bar."""
    from astropy.io import fits

    from skymatch_nb_ui.cli import main

    m = make_mosaic((1, 2), shape=(30, 30), sky=[3, 4])
    for k, (image, w) in enumerate(zip(m.images, m.wcs)):
        fits.PrimaryHDU(image, w.to_header()).writeto(tmp_path / f"img{k}.fits")
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)
    out = tmp_path / "out"
    assert main([str(tmp_path / "img*.fits"), "--output-dir", str(out), "--quiet"]) == 0
    assert main([str(tmp_path / "img*.fits"), "--output-dir", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0.fits", "img1.fits"]
