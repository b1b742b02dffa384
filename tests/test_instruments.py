"""Files as their pipelines write them: JWST (stdatamodels), HST (two chips, lookup tables),
Roman (roman_datamodels), associations; in, matched, and out the way each pipeline records it.
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from skymatch_nb_ui import ImageCollection, io
from skymatch_nb_ui.cli import main
from skymatch_nb_ui.io import ApproximateWCSWarning
from skymatch_nb_ui.testing import (
    make_mosaic,
    nircam_like_gwcs,
    write_hst_flt,
    write_jwst_cal,
    write_roman_cal,
)

JW_SHAPE = (128, 128)
JW_SCALE = 0.5  # arcsec per pixel
EXPOSURE_SKY = [100.0, 110.0, 120.0]
DITHERS = [(0.0, 0.0), (20.0, 8.0), (8.0, 25.0)]  # arcsec


def jwst_exposure_files(directory, *, skies=EXPOSURE_SKY, noise=0.0, detector_offset=(0.0, 0.0),
                        dq=None, seed=0):
    """Three dithered exposures of two NIRCam-like detectors (files written by stdatamodels)."""
    rng = np.random.default_rng(seed)
    paths = []
    for e, ((dx, dy), sky) in enumerate(zip(DITHERS, skies), start=1):
        for d, v2 in enumerate([120.0, 120.0 + JW_SHAPE[1] * JW_SCALE + 5.0], start=1):
            wcs = nircam_like_gwcs((150 + dx / 3600, 2 + dy / 3600), shape=JW_SHAPE,
                                   pixel_scale=JW_SCALE, v2v3_ref=(v2, -450.0),
                                   pointing_v2v3=(120.0, -450.0))
            data = sky + detector_offset[d - 1] + rng.normal(0, noise, JW_SHAPE) if noise else \
                np.full(JW_SHAPE, sky + detector_offset[d - 1])
            paths.append(write_jwst_cal(
                directory / f"jw01234001001_02101_{e:05d}_nrcb{d}_cal.fits", data, wcs, dq=dq,
                observation=("01234", "001", "001", "02", "1", "01", f"{e:05d}"),
                detector=f"NRCB{d}",
            ))
    return paths


@pytest.fixture(scope="module")
def jwst_files(tmp_path_factory):
    return jwst_exposure_files(tmp_path_factory.mktemp("jwst"))


def hide(monkeypatch, *modules):
    """Make ``import module`` fail, as if the package were not installed."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# -- JWST --------------------------------------------------------------------------------------
def test_jwst_cal_files_bring_their_real_gwcs_and_the_pipeline_group_id(jwst_files):
    from stdatamodels.jwst import datamodels

    coll = ImageCollection.from_fits(jwst_files)
    assert all(type(w).__module__.startswith("gwcs") for w in coll.wcs)
    with datamodels.open(jwst_files[3]) as model:
        x, y = np.array([-0.5, 63.2, 127.5]), np.array([-0.5, 20.7, 127.5])
        np.testing.assert_allclose(coll.wcs[3](x, y), model.meta.wcs(x, y), rtol=0, atol=1e-12)
        assert coll.wcs[3].bounding_box is not None
    assert list(coll.groups.values()) == [f"jw01234001001_02101_0000{e}" for e in (1, 1, 2, 2, 3, 3)]
    assert coll.table.detector.values.tolist() == ["NRCB1", "NRCB2"] * 3


def test_jwst_detectors_of_one_exposure_share_one_sky_and_offsets_are_found(jwst_files):
    ds = ImageCollection.from_files(jwst_files).skymatch(skymethod="match", skystat="mean")
    assert ds.valid.all()
    np.testing.assert_allclose(ds.sky.values, [0, 0, 10, 10, 20, 20], atol=1e-4)


def test_jwst_preset_gives_each_detector_its_own_sky(tmp_path):
    paths = jwst_exposure_files(tmp_path, detector_offset=(0.0, 3.0))
    by_exposure = ImageCollection.from_files(paths)
    by_image = ImageCollection.from_files(paths, group_by="image")
    assert set(by_image.groups.values()) == {None}
    free = by_image.skymatch(skymethod="global+match", skystat="mean")
    np.testing.assert_allclose(free.sky.values, [100, 103, 110, 113, 120, 123], atol=1e-3)
    shared = by_exposure.skymatch(skymethod="global+match", skystat="mean")
    assert shared.sky.values[0] == shared.sky.values[1]  # one sky per exposure, as the pipeline


def test_jwst_dq_default_is_the_steps_do_not_use_and_non_science(tmp_path):
    dq = np.zeros(JW_SHAPE, np.uint32)
    dq[0, :10] = 1  # DO_NOT_USE
    dq[1, :10] = 512  # NON_SCIENCE
    dq[2, :10] = 4 | 16  # JUMP_DET | OUTLIER: good for the step
    path = write_jwst_cal(tmp_path / "jw_nrcb1_cal.fits", np.ones(JW_SHAPE),
                          nircam_like_gwcs(shape=JW_SHAPE), dq=dq)
    auto = ImageCollection.from_files(path).mask(0)
    assert not auto[0, :10].any() and not auto[1, :10].any() and auto[2].all()
    strict = ImageCollection.from_files(path, dqbits=0).mask(0)
    assert not strict[2, :10].any()
    assert ImageCollection.from_files(path, dqbits="~DO_NOT_USE").mask(0)[1].all()


@pytest.mark.parametrize("skymethod", ["match", "global+match"])
def test_jwst_files_give_the_steps_levels(tmp_path, skymethod):
    """What jwst's SkyMatchStep computes from the same _cal files (bench/study_jwst_step.py ran
    the step itself): stcal on the models' data, the step's DQ mask and one SkyGroup per
    group_id, each gwcs called and inverted.  With compare="levels" and the median, ours
    agrees to within the overlaps' edge pixels (the reference's scan-line fill)."""
    from astropy.nddata.bitmask import bitfield_to_boolean_mask, interpret_bit_flags
    from stdatamodels.jwst import datamodels
    from stdatamodels.jwst.datamodels.dqflags import pixel

    from skymatch_nb_ui.testing import reference_skymatch

    rng = np.random.default_rng(5)
    dq = np.zeros(JW_SHAPE, np.uint32)
    dq[rng.random(JW_SHAPE) < 0.02] = 1  # DO_NOT_USE
    dq[:, :3] |= 512  # NON_SCIENCE: a strip, and here and there
    dq[rng.random(JW_SHAPE) < 0.08] |= 512
    dq[rng.random(JW_SHAPE) < 0.05] |= 4  # JUMP_DET: good for the step
    # the second detector of each exposure 3 sigma above: one sky per exposure is then a
    # compromise that only the same groups reproduce
    paths = jwst_exposure_files(tmp_path, noise=1.0, dq=dq, seed=4, detector_offset=(0.0, 3.0))
    images, masks, wcs, groups = [], [], [], []
    bits = interpret_bit_flags("~DO_NOT_USE+NON_SCIENCE", flag_name_map=pixel)
    for path in paths:
        with datamodels.open(path) as model:
            data = np.array(model.data)
            data[(model.dq & 513) != 0] = 1e4  # garbage where flagged: the mask must drop it
            images.append(data)
            masks.append(bitfield_to_boolean_mask(model.dq, bits, good_mask_value=True, dtype=bool)
                         & np.isfinite(data))
            wcs.append(model.meta.wcs)
            obs = model.meta.observation  # the fields of the step's group_id
            groups.append(tuple(getattr(obs, f) for f in (
                "program_number", "observation_number", "visit_number", "visit_group",
                "sequence_id", "activity_id", "exposure_number")))
    for path, data in zip(paths, images):  # the files hold the garbage too
        with datamodels.open(path) as model:
            model.data = data.astype(np.float32)
            model.save(path)
    reference, _ = reference_skymatch(images, wcs, masks=masks, groups=groups,
                                      skymethod=skymethod, skystat="median")
    ours = ImageCollection.from_files(paths).skymatch(skymethod=skymethod, skystat="median",
                                                     compare="levels")
    assert ours.valid.all()
    np.testing.assert_allclose(ours.sky.values, reference, rtol=0, atol=0.02)


def test_jwst_dq_is_mapped_from_the_file_with_every_unsigned_flag(tmp_path, monkeypatch):
    # the pipeline's DQ is uint32, stored by FITS's convention as int32 with BZERO = 2**31: the
    # flags up to bit 31 as stdatamodels reads them, and no astropy re-read of the file per load
    from stdatamodels.jwst.datamodels import ImageModel

    rng = np.random.default_rng(3)
    dq = rng.integers(0, 2**32, JW_SHAPE, dtype=np.uint64).astype(np.uint32)
    dq[0, :4] = [0, 2**31 - 1, 2**31, 2**32 - 1]
    path = write_jwst_cal(tmp_path / "jw_nrcb1_cal.fits", np.ones(JW_SHAPE),
                          nircam_like_gwcs(shape=JW_SHAPE), dq=dq)
    with fits.open(path) as hdul:
        assert hdul["DQ"].header["BITPIX"] == 32 and hdul["DQ"].header["BZERO"] == 2**31
    with ImageModel(path) as model:
        expected = np.array(model.dq)
    np.testing.assert_array_equal(expected, dq)
    coll = ImageCollection.from_files(path, dqbits=2**31 + 4)

    def no_reopen(*args, **kwargs):
        raise AssertionError("the DQ was read through astropy again")

    monkeypatch.setattr(fits, "open", no_reopen)
    np.testing.assert_array_equal(coll.mask(0), (expected & ~np.uint32(2**31 + 4)) == 0)


def test_jwst_without_stdatamodels_falls_back_to_the_sip_header_with_one_warning(
    jwst_files, monkeypatch
):
    exact = ImageCollection.from_files(jwst_files)
    hide(monkeypatch, "stdatamodels")
    match = r"6 JWST image.*stdatamodels is not installed.*\[jwst\]"
    with pytest.warns(ApproximateWCSWarning, match=match) as caught:
        approx = ImageCollection.from_files(jwst_files)
    said = [w for w in caught if w.category is ApproximateWCSWarning]
    assert len(said) == 1 and said[0].filename == __file__  # once, at the caller's line
    assert all(isinstance(w, WCS) and w.sip is not None for w in approx.wcs)
    # the SIP approximation agrees with the gwcs to a small fraction of a pixel
    x, y = np.meshgrid(np.linspace(-0.5, 127.5, 9), np.linspace(-0.5, 127.5, 9))
    ra, dec = exact.wcs[2](x, y)
    px, py = approx.wcs[2].all_world2pix(ra, dec, 0)
    assert np.hypot(px - x, py - y).max() < 0.05
    assert list(approx.groups.values()) == list(exact.groups.values())  # group_id from the header
    ds = approx.skymatch(skymethod="match", skystat="mean")
    np.testing.assert_allclose(ds.sky.values, [0, 0, 10, 10, 20, 20], atol=1e-4)


def write_asn(path, members, *, products=1):
    asn = {"asn_type": "image3", "asn_pool": "pool", "products": [
        {"name": f"product{k}", "members": members} for k in range(products)]}
    path.write_text(json.dumps(asn))
    return path


def test_association_reads_science_members_with_their_group_ids(jwst_files):
    directory = jwst_files[0].parent
    members = [{"expname": p.name, "exptype": "science"} for p in jwst_files[:4]]
    members.append({"expname": jwst_files[4].name, "exptype": "background"})
    asn = write_asn(directory / "jw01234-o001_image3_00001_asn.json", members)
    coll = ImageCollection.from_files(asn)
    assert len(coll) == 4  # the background member is not matched
    assert list(coll.groups.values()) == ["jw01234001001_02101_00001"] * 2 + ["jw01234001001_02101_00002"] * 2

    members = [{"expname": p.name, "exptype": "SCIENCE", "group_id": f"g{k // 3}"}
               for k, p in enumerate(jwst_files)]
    asn = write_asn(directory / "custom_asn.json", members)
    assert list(ImageCollection.from_fits(asn).groups.values()) == ["g0"] * 3 + ["g1"] * 3


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        ("not json", ValueError, "is not an association"),
        ('{"products": [{"members": [{"expname": "x.fits", "exptype": "dark"}]}]}', ValueError,
         "no science member"),
        ('{"products": [{"members": [{"expname": "gone.fits", "exptype": "science"}]}]}',
         FileNotFoundError, "lists 'gone.fits'"),
    ],
)
def test_bad_associations_are_named(tmp_path, content, error, match):
    asn = tmp_path / "bad_asn.json"
    asn.write_text(content)
    with pytest.raises(error, match=match):
        ImageCollection.from_files(asn)


def test_jwst_copies_are_read_back_by_stdatamodels_as_the_step_leaves_them(jwst_files, tmp_path):
    from stdatamodels.jwst import datamodels

    coll = ImageCollection.from_files(jwst_files)
    ds = coll.skymatch(skymethod="global+match", skystat="mean")
    written = coll.write_copies(tmp_path, subtract=True)
    assert [p.name for p in written] == [p.name for p in jwst_files]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in jwst_files)
    for path, source, sky in zip(written, jwst_files, ds.sky.values):
        with datamodels.open(path) as model, datamodels.open(source) as original:
            assert model.meta.background.level == pytest.approx(sky)
            assert model.meta.background.subtracted is True
            assert model.meta.background.method == "global+match"
            assert model.meta.cal_step.skymatch == "COMPLETE"
            assert model.meta.filename == path.name
            np.testing.assert_allclose(model.data, original.data - np.float32(sky), atol=1e-4)
            assert model.data.dtype.kind == "f" and model.data.dtype.itemsize == 4
            np.testing.assert_array_equal(model.dq, original.dq)
            x = np.array([3.0, 77.7])
            np.testing.assert_allclose(model.meta.wcs(x, x), original.meta.wcs(x, x), atol=1e-12)
        header = fits.getheader(path)  # and the FITS keywords outlier_detection and resample read
        assert header["BKGLEVEL"] == pytest.approx(sky) and header["BKGSUB"] is True
        assert header["BKGMETH"] == "global+match" and header["S_SKYMAT"] == "COMPLETE"


def test_jwst_copy_without_subtracting_and_with_an_invalid_sky(jwst_files, tmp_path):
    from stdatamodels.jwst import datamodels

    coll = ImageCollection.from_files(jwst_files)
    ds = coll.skymatch(skymethod="match", skystat="mean")
    invalid = ds.copy(deep=True)
    invalid["valid"].values[:] = [False] + [True] * 5
    written = coll.write_copies(tmp_path, invalid, subtract=False)
    with datamodels.open(written[0]) as model, datamodels.open(jwst_files[0]) as original:
        assert model.meta.cal_step.skymatch == "SKIPPED"
        assert model.meta.background.level is None  # as the step: untouched
        np.testing.assert_array_equal(model.data, original.data)
    with datamodels.open(written[2]) as model:
        assert model.meta.background.level == pytest.approx(10.0, abs=1e-4)
        assert model.meta.background.subtracted is False


def test_jwst_already_subtracted_files_add_levels_or_are_refused_before_writing(tmp_path):
    from stdatamodels.jwst import datamodels

    sources = tmp_path / "in"
    sources.mkdir()
    w = nircam_like_gwcs(shape=JW_SHAPE)
    paths = [write_jwst_cal(sources / f"jw_{k}_cal.fits", np.full(JW_SHAPE, 1.0 + k), w,
                            observation=("01234", "001", "001", "02", "1", "01", f"0000{k}"),
                            background=(50.0, True, "local")) for k in range(2)]
    coll = ImageCollection.from_files(paths)
    coll.skymatch(skymethod="local", skystat="mean")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match=r"jw_0_cal\.fits.*already has its background subtracted"):
        coll.write_copies(out, subtract=False)
    assert list(out.iterdir()) == []
    written = coll.write_copies(out, subtract=True)
    with datamodels.open(written[1]) as model:
        assert model.meta.background.level == pytest.approx(52.0)  # 50 before, 2 now
        np.testing.assert_allclose(model.data, 0.0, atol=1e-6)


def test_jwst_copies_without_stdatamodels_carry_the_keywords_stdatamodels_reads(
    jwst_files, tmp_path, monkeypatch
):
    coll = ImageCollection.from_files(jwst_files)
    ds = coll.skymatch(skymethod="global+match", skystat="mean")
    hide(monkeypatch, "stdatamodels")
    written = coll.write_copies(tmp_path, ds, subtract=True)
    monkeypatch.undo()
    from stdatamodels.jwst import datamodels

    with datamodels.open(written[2]) as model:
        assert model.meta.background.level == pytest.approx(ds.sky.values[2])
        assert model.meta.background.subtracted is True
        assert model.meta.cal_step.skymatch == "COMPLETE"
        np.testing.assert_allclose(model.data, 0.0, atol=1e-4)


# -- HST ---------------------------------------------------------------------------------------
HST_SHAPE = (128, 256)


def hst_files(directory, *, chip_offset=0.0, lookup=True, noise=0.0, seed=1):
    rng = np.random.default_rng(seed)
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        for e, ((dx, dy), sky) in enumerate(zip([(0, 0), (3, 1), (1, 3)], EXPOSURE_SKY)):
            chips = [np.full(HST_SHAPE, sky + k * chip_offset, np.float32)
                     + (rng.normal(0, noise, HST_SHAPE).astype(np.float32) if noise else 0)
                     for k in range(2)]
            paths.append(write_hst_flt(directory / f"j9am0{e}q_flt.fits", chips,
                                       rootname=f"j9am0{e}q", offset=(dx, dy), lookup=lookup))
    return paths


@pytest.fixture(scope="module")
def hst_inputs(tmp_path_factory):
    return hst_files(tmp_path_factory.mktemp("hst"))


def test_hst_every_chip_is_an_image_and_the_chips_of_an_exposure_share_a_sky(hst_inputs):
    coll = ImageCollection.from_fits(hst_inputs)
    assert coll.names == tuple(f"j9am0{e}q_flt[SCI,{k}]" for e in range(3) for k in (1, 2))
    assert coll.table.ext.values.tolist() == [1, 4] * 3
    assert list(coll.groups.values()) == ["j9am00q"] * 2 + ["j9am01q"] * 2 + ["j9am02q"] * 2
    ds = coll.skymatch(skymethod="match", skystat="mean")
    assert ds.valid.all()
    np.testing.assert_allclose(ds.sky.values, [0, 0, 10, 10, 20, 20], atol=1e-4)


def test_hst_lookup_table_distortions_are_honoured(hst_inputs):
    image = io.open_fits_images(hst_inputs[0])[1]
    assert image.wcs.sip is not None
    assert image.wcs.cpdis1 is not None and image.wcs.cpdis2 is not None
    assert image.wcs.det2im1 is not None
    with fits.open(hst_inputs[0]) as hdul:
        full = WCS(hdul["SCI", 2].header, hdul)
    sip_only = full.deepcopy()
    sip_only.cpdis1 = sip_only.cpdis2 = sip_only.det2im1 = None
    x, y = np.meshgrid(np.linspace(0, 255, 7), np.linspace(0, 127, 5))
    np.testing.assert_array_equal(image.wcs.all_pix2world(x, y, 0), full.all_pix2world(x, y, 0))
    ra, dec = image.wcs.all_pix2world(x, y, 0)
    px, py = sip_only.all_world2pix(ra, dec, 0)
    assert np.hypot(px - x, py - y).max() > 0.01  # pixels: the tables do move the sky


def test_hst_files_of_one_exposure_are_said_to_share_one_sky(hst_inputs, tmp_path):
    """An HST exposure is one file: an _flc beside the _flt of its ROOTNAME is one exposure
    twice (its chips would share one sky with each pixel counted twice), and the user is told."""
    import shutil

    from skymatch_nb_ui import SkyMatchWarning

    flc = shutil.copy(hst_inputs[0], tmp_path / "j9am00q_flc.fits")
    with pytest.warns(SkyMatchWarning, match=r"j9am00q_flc.fits and j9am00q_flt.fits are one "
                      r"HST exposure \(ROOTNAME j9am00q\).*pass one of them") as said:
        coll = ImageCollection.from_files([*hst_inputs, flc])
    assert said[0].filename == __file__  # at the caller's line
    assert list(coll.groups.values()).count("j9am00q") == 4
    with warnings.catch_warnings():  # each file once; or chips apart: nothing to say
        warnings.simplefilter("error")
        ImageCollection.from_files(hst_inputs)
        ImageCollection.from_files([*hst_inputs, flc], group_by="image")


def test_hst_preset_frees_the_chips(tmp_path):
    from skymatch_nb_ui import DisconnectedMosaicWarning

    paths = hst_files(tmp_path, chip_offset=4.0)
    free = ImageCollection.from_files(paths, group_by="image")
    # the corners of the two chips are far apart: each chip's images form their own mosaic
    with pytest.warns(DisconnectedMosaicWarning):
        free = free.skymatch(skymethod="global+match", skystat="mean", anchor="component")
    np.testing.assert_allclose(free.sky.values, [100, 104, 110, 114, 120, 124], atol=1e-3)


def test_hst_copy_is_one_file_with_every_chip_and_mdrizsky(hst_inputs, tmp_path):
    coll = ImageCollection.from_files(hst_inputs)
    ds = coll.skymatch(skymethod="global+match", skystat="mean")
    written = coll.write_copies(tmp_path, subtract=True)
    assert [p.name for p in written] == [p.name for p in hst_inputs]
    for path, source, sky in zip(written, hst_inputs, ds.sky.values[::2]):
        with fits.open(path) as out, fits.open(source) as src:
            assert [h.name for h in out] == [h.name for h in src]
            for k in (1, 2):
                sci = out["SCI", k]
                np.testing.assert_allclose(sci.data, src["SCI", k].data - np.float32(sky), atol=1e-4)
                assert sci.header["BKGLEVEL"] == pytest.approx(sky) and sci.header["BKGSUB"] is True
                assert sci.header["MDRIZSKY"] == 0.0  # drizzling has nothing left to subtract
            for name in ("D2IMARR", "WCSDVARR"):
                np.testing.assert_array_equal(out[name, 1].data, src[name, 1].data)
    kept = tmp_path / "kept"
    kept.mkdir()
    coll.write_copies(kept, subtract=False)
    with fits.open(kept / hst_inputs[1].name) as out:
        assert [out["SCI", k].header["MDRIZSKY"] for k in (1, 2)] == [pytest.approx(ds.sky.values[2])] * 2


RATES = [0.50, 0.55, 0.45]  # each exposure's sky, electrons per second
TIMES = [400.0, 800.0, 1200.0]


def hst_exposures_of_lengths(directory, times=TIMES):
    """Three ACS exposures in ELECTRONS, each as long as ``times`` says: their skies in
    electrons are RATES times their exposure times."""
    rng = np.random.default_rng(0)
    paths = []
    for e, ((dx, dy), rate, t) in enumerate(zip([(0, 0), (3, 1), (1, 3)], RATES, times)):
        chips = [(rate + rng.normal(0, 0.02, HST_SHAPE)).astype(np.float32) * np.float32(t)
                 for _ in range(2)]
        paths.append(write_hst_flt(directory / f"j9am0{e}q_flt.fits", chips, rootname=f"j9am0{e}q",
                                   offset=(dx, dy), exptime=t, lookup=False))
    return paths


def left_per_second(copies, times):
    """The sky rate each copy has left: what drizzling (which divides by EXPTIME) sees."""
    left = []
    for path, t in zip(copies, times):
        with fits.open(path) as hdul:
            left.append([float(np.median(hdul["SCI", k].data)) / t for k in (1, 2)])
    return np.array(left)


def test_hst_exposures_of_different_lengths_are_matched_as_count_rates(tmp_path):
    paths = hst_exposures_of_lengths(tmp_path)
    coll = ImageCollection.from_files(paths)
    assert coll.table.bunit.values.tolist() == ["ELECTRONS/S"] * 6
    assert float(np.median(coll.data(coll.names[2]))) == pytest.approx(RATES[1], abs=0.002)
    ds = coll.skymatch(skymethod="match", skystat="median")
    assert ds.sky.attrs["units"] == "ELECTRONS/S"
    np.testing.assert_allclose(ds.sky.values, np.repeat(np.subtract(RATES, min(RATES)), 2),
                               atol=0.002)
    (tmp_path / "out").mkdir()
    copies = coll.write_copies(tmp_path / "out", ds)
    np.testing.assert_allclose(left_per_second(copies, TIMES), min(RATES), atol=0.002)  # no seams
    for path, t, sky in zip(copies, TIMES, ds.sky.values[::2]):
        with fits.open(path) as hdul:  # the file's own unit: electrons
            assert hdul["SCI", 1].header["BKGLEVEL"] == pytest.approx(sky * t, rel=1e-6)
    kept = tmp_path / "kept"
    kept.mkdir()
    for path, t, sky in zip(coll.write_copies(kept, ds, subtract=False), TIMES, ds.sky.values[::2]):
        assert fits.getval(path, "MDRIZSKY", ("SCI", 2)) == pytest.approx(sky * t, rel=1e-6)
    loader = coll._sources[2].loader
    sent = pickle.loads(pickle.dumps(loader))  # as a pool's worker gets it
    np.testing.assert_array_equal(sent.data(), loader.data())
    forked = ImageCollection.from_files(paths)
    forked.scheduler, forked.workers = "processes", 2  # the loaders travel with their times
    np.testing.assert_array_equal(forked.skymatch(skymethod="match", skystat="median").sky.values,
                                  ds.sky.values)


def test_counts_compared_as_counts_only_when_asked_and_with_a_warning(tmp_path):
    paths = hst_exposures_of_lengths(tmp_path)
    with pytest.warns(io.MixedUnitsWarning, match=r"different exposure times \(400 to 1200 s\) "
                                                  r"are compared as counts \(rates=False\)") as said:
        coll = ImageCollection.from_files(paths, rates=False)
    assert said[0].filename == __file__  # at the caller's line
    ds = coll.skymatch(skymethod="match", skystat="median")
    assert ds.sky.attrs["units"] == "ELECTRONS"
    (tmp_path / "out").mkdir()
    left = left_per_second(coll.write_copies(tmp_path / "out", ds), TIMES)
    assert np.ptp(left) > 0.2  # 0.50, 0.25, 0.17 electrons/s left: the seams rates remove
    (tmp_path / "same").mkdir()
    same = hst_exposures_of_lengths(tmp_path / "same", times=[400.0] * 3)
    assert ImageCollection.from_files(same).table.bunit.values[0] == "ELECTRONS"  # comparable
    always = ImageCollection.from_files(same, rates=True)
    assert always.table.bunit.values[0] == "ELECTRONS/S"
    with fits.open(same[1], mode="update") as hdul:
        del hdul[0].header["EXPTIME"]
    with pytest.raises(ValueError, match="needs their exposure time .*j9am01q_flt.fits.* have "
                                         "none. Pass rates=False"):
        ImageCollection.from_files(same, rates=True)
    with pytest.raises(ValueError, match="rates must be 'auto', True or False; got 'yes'"):
        ImageCollection.from_files(same, rates="yes")


def test_counts_beside_count_rates_say_how_to_compare_them(tmp_path):
    paths = hst_exposures_of_lengths(tmp_path, times=[400.0] * 3)
    rate = write_hst_flt(tmp_path / "ibxx01q_flt.fits", [np.full(HST_SHAPE, 0.5, np.float32)] * 2,
                         rootname="ibxx01q", bunit="ELECTRONS/S", lookup=False)
    with pytest.warns(io.MixedUnitsWarning, match=r"rates=True \(--rates yes\) compares those "
                                                  "in counts as count rates"):
        ImageCollection.from_files([*paths, rate])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in count rates, all of them
        coll = ImageCollection.from_files([*paths, rate], rates=True)
    assert set(coll.table.bunit.values.tolist()) == {"ELECTRONS/S"}
    assert main([*map(str, paths), "--rates", "yes", "--table", str(tmp_path / "t.ecsv")]) == 0
    assert str(Table.read(tmp_path / "t.ecsv")["sky"].unit) == "ELECTRONS/S"  # (as written)


def drizzled_files(directory, *, skies=(10.0, 12.0, 15.0), dq=False):
    """HST drizzled images (``_drc.fits``: SCI, WHT, CTX), as AstroDrizzle writes them: the
    data cover a square turned by 29 degrees inside the array, 0 and weight 0 outside."""
    mosaic = make_mosaic((1, 3), shape=(160, 160), overlap=0.4, sky=list(skies), noise=1.0,
                         seed=2, dtype=np.float32, sources=15)
    yy, xx = np.mgrid[:160, :160] - 79.5
    turn = np.deg2rad(29.0)
    inside = (abs(xx * np.cos(turn) + yy * np.sin(turn)) < 68) & (
        abs(-xx * np.sin(turn) + yy * np.cos(turn)) < 68)
    paths = []
    for k, (image, wcs) in enumerate(zip(mosaic.images, mosaic.wcs)):
        primary = fits.Header({"TELESCOP": "HST", "INSTRUME": "ACS", "ROOTNAME": f"jabc0{k}010"})
        header = wcs.to_header()
        header["BUNIT"] = "ELECTRONS/S"
        hdus = [fits.PrimaryHDU(header=primary),
                fits.ImageHDU(np.where(inside, image, 0), header, name="SCI"),
                fits.ImageHDU(np.where(inside, 1200.0, 0).astype(np.float32), header, name="WHT"),
                fits.ImageHDU(inside.astype(np.int32), header, name="CTX")]
        if dq:
            hdus.append(fits.ImageHDU(np.zeros(inside.shape, np.int16), name="DQ"))
        paths.append(directory / f"jabc0{k}010_drc.fits")
        fits.HDUList(hdus).writeto(paths[-1])
    return paths, inside


def test_drizzled_images_mask_their_pixels_of_weight_zero(tmp_path):
    paths, inside = drizzled_files(tmp_path)
    coll = ImageCollection.from_files(paths)
    for name in coll.names:
        np.testing.assert_array_equal(coll.mask(name), inside)  # 31% of each array: no data
    for skystat in ("mode", "median", "mean"):
        ds = coll.skymatch(skymethod="match", skystat=skystat)
        np.testing.assert_allclose(ds.sky.values, [0.0, 2.0, 5.0], atol=0.05)
    # The zeros counted as sky: every statistic off by 0.3-2 units (what the mask is for).
    bare = ImageCollection.from_files(paths, dq_ext=None)
    assert bare.mask(bare.names[0]) is None
    for skystat in ("mode", "median", "mean"):
        off = bare.skymatch(skymethod="match", skystat=skystat).sky.values - [0.0, 2.0, 5.0]
        assert np.abs(off).max() > 0.3


def test_drizzled_hst_copies_have_no_mdrizsky_and_dq_comes_before_weights(tmp_path):
    paths, _ = drizzled_files(tmp_path)
    coll = ImageCollection.from_files(paths)
    (tmp_path / "out").mkdir()
    for copy in coll.write_copies(tmp_path / "out", coll.skymatch(skymethod="match")):
        with fits.open(copy) as hdul:
            assert "BKGLEVEL" in hdul["SCI"].header and "MDRIZSKY" not in hdul["SCI"].header
    (tmp_path / "dq").mkdir()
    with_dq, _ = drizzled_files(tmp_path / "dq", dq=True)
    coll = ImageCollection.from_files(with_dq)
    assert coll.mask(coll.names[0]).all()  # the DQ says every pixel is good: it decides


# -- Roman -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roman_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("roman")
    paths = []
    dq = np.zeros(JW_SHAPE, np.uint32)
    dq[0, :5] = 1  # DO_NOT_USE
    dq[1, :5] = 128  # Roman OUTLIER (JWST's CHARGELOSS bit): good for romancal's default
    for k, ((dx, dy), sky) in enumerate(zip(DITHERS, EXPOSURE_SKY)):
        wcs = nircam_like_gwcs((150 + dx / 3600, 2 + dy / 3600), shape=JW_SHAPE, pixel_scale=JW_SCALE)
        paths.append(write_roman_cal(
            directory / f"r0000101001001001001_000{k + 1}_wfi01_cal.asdf", np.full(JW_SHAPE, sky),
            wcs, dq=dq, observation_id=f"r0000101001001001001_000{k + 1}",
        ))
    return paths


def test_roman_files_are_read_with_their_gwcs_and_dq(roman_files):
    coll = ImageCollection.from_files(roman_files)
    assert coll.names == tuple(p.name.removesuffix(".asdf") for p in roman_files)
    assert all(type(w).__module__.startswith("gwcs") and w.bounding_box is not None for w in coll.wcs)
    assert set(coll.groups.values()) == {None}  # romancal: every detector its own sky
    mask = coll.mask(0)
    assert not mask[0, :5].any() and mask[1].all()
    assert coll.table.detector.values.tolist() == ["WFI01"] * 3
    assert coll.table.bunit.values.tolist() == ["MJy/sr"] * 3  # the flux step has run
    ds = coll.skymatch(skymethod="match", skystat="mean")
    np.testing.assert_allclose(ds.sky.values, [0, 10, 20], atol=1e-4)
    assert ds.sky.attrs["units"] == "MJy/sr"
    exposures = ImageCollection.from_files(roman_files, group_by="exposure")
    assert list(exposures.groups.values()) == [f"r0000101001001001001_000{k}" for k in (1, 2, 3)]


@pytest.mark.filterwarnings("ignore:The fit may be poorly conditioned")  # (the gwcs's inverse)
def test_roman_pixels_are_the_files_to_the_bit(tmp_path):
    """Read with asdf's lazy tree and 1 MiB reads (a 4088 x 4088 detector's lz4-compressed
    data in half the time): the pixels and the DQ that roman_datamodels reads, several lz4
    blocks and reads of them, and asdf's configuration left as it was."""
    import asdf
    import roman_datamodels.datamodels as rdm

    rng = np.random.default_rng(5)
    shape = (1100, 1000)  # 4.4 MB: two of asdf's lz4 blocks, five 1 MiB reads
    data = rng.normal(0.3, 0.01, shape).astype(np.float32)
    dq = rng.integers(0, 2**12, shape, dtype=np.uint32)
    path = write_roman_cal(tmp_path / "r0000101001001001001_0001_wfi01_cal.asdf", data,
                           nircam_like_gwcs(shape=shape), dq=dq)
    block = asdf.get_config().io_block_size
    image = io.open_roman_image(path)
    with rdm.open(path) as model:
        assert image.data().tobytes() == np.asarray(model.data).tobytes() == data.tobytes()
        good = (np.asarray(model.dq) & 1) == 0  # romancal's default: only DO_NOT_USE is bad
    np.testing.assert_array_equal(image.mask(), good)
    assert 0 < good.mean() < 1
    assert asdf.get_config().io_block_size == block


def test_roman_reads_load_asdfs_plugins_once_in_a_process(roman_files, monkeypatch):
    """Each read opens the file in an asdf configuration of its own; a fresh process (a pool
    worker) loaded asdf's extensions and resources again at every read of its copy, and two
    workers took longer than one process (36 detectors of 4088 x 4088: 16.8 s against 14.8 s;
    9.6 s once loaded once)."""
    import asdf
    from asdf import _entry_points

    loads = []
    for name in ("get_extensions", "get_resource_mappings"):
        original = getattr(_entry_points, name)
        monkeypatch.setattr(_entry_points, name,
                            lambda original=original: (loads.append(1), original())[1])
    image = io.open_roman_image(roman_files[0])
    with asdf.config_context() as fresh:  # nothing loaded yet, as in a fresh process
        fresh.reset_extensions()
        fresh.reset_resources()
        first = image.data()
        loaded = len(loads)
        for _ in range(3):
            assert image.data().tobytes() == first.tobytes() and image.mask() is not None
        assert len(loads) == loaded <= 2


def test_roman_detectors_are_read_once_a_run(roman_files, monkeypatch):
    """``compare="differences"`` reads an image for each pair it is in and ``global+match``
    once more for its own sky: 36 detectors of 4088 x 4088 were read 122 times, ~0.085 s
    each.  A run of images that large plans its reads (`engine.reads`); these small files
    are planned as if they were large."""
    from skymatch_nb_ui.engine import reads
    from skymatch_nb_ui.io import roman

    names = []
    original = roman._read
    monkeypatch.setattr(roman, "_read", lambda path, name: (names.append((path.name, name)),
                                                           original(path, name))[1])

    def run():
        coll = ImageCollection.from_files(roman_files)
        coll.scheduler = "serial"
        return coll.skymatch(skymethod="global+match", compare="differences", skystat="median")

    monkeypatch.setattr(reads, "PLAN_PIXELS", 10**12)  # not planned: as before
    expected = run()
    # data and dq: 3 own skies; for 3 pairs, each task's image once and each partner's
    assert len(names) >= 2 * (3 + 2 + 3)
    names.clear()
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)
    found = run()
    assert sorted(names) == sorted((p.name, a) for p in roman_files for a in ("data", "dq"))
    for name in ("sky", "sky_err", "local", "diff_before", "diff_err"):
        np.testing.assert_array_equal(found[name].values, expected[name].values, err_msg=name)


def write_roman_detectors(folder, *, flux, conversions):
    """Three dithered Roman files, one detector each, with the flux step run or not."""
    paths = []
    for k, ((dx, dy), sky, conversion) in enumerate(zip(DITHERS, EXPOSURE_SKY, conversions)):
        wcs = nircam_like_gwcs((150 + dx / 3600, 2 + dy / 3600), shape=JW_SHAPE, pixel_scale=JW_SCALE)
        paths.append(write_roman_cal(
            folder / f"r0000101001001001001_0001_wfi0{k + 1}_cal.asdf", np.full(JW_SHAPE, sky), wcs,
            detector=f"WFI0{k + 1}", flux=flux, conversion=conversion,
        ))
    return paths


def test_roman_unit_follows_the_flux_step(tmp_path):
    # DN/s before romancal's flux step, whose mark the unit is read from
    paths = write_roman_detectors(tmp_path, flux=False, conversions=[0.5] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one conversion: comparable, no warning
        coll = ImageCollection.from_files(paths)
    assert coll.table.bunit.values.tolist() == ["DN/s"] * 3
    assert coll.skymatch(skymethod="match", skystat="mean").sky.attrs["units"] == "DN/s"
    # one file flux-calibrated among DN/s ones: different units
    (tmp_path / "mjy").mkdir()
    calibrated = write_roman_detectors(tmp_path / "mjy", flux=True, conversions=[0.5] * 3)
    with pytest.warns(io.MixedUnitsWarning, match=r"'DN/s' \(.*wfi01.*\); 'MJy/sr' \(.*wfi03"):
        ImageCollection.from_files(paths[:2] + calibrated[2:])


def test_roman_dn_per_s_with_different_conversions_warn_with_the_way_out(tmp_path):
    paths = write_roman_detectors(tmp_path, flux=False, conversions=[0.5, 0.5, 0.55])
    with pytest.warns(io.MixedUnitsWarning) as caught:
        coll = ImageCollection.from_files(paths)
    message = str(caught[0].message)
    assert caught[0].filename == __file__  # at the caller's line
    assert "conversion_megajanskys: 0.5 (r0000101001001001001_0001_wfi01_cal.asdf, " in message
    assert "0.55 (r0000101001001001001_0001_wfi03_cal.asdf)" in message
    assert "romancal.flux.FluxStep" in message
    assert len(coll) == 3  # a warning: the images are still read
    # flux-calibrated, the same conversions are harmless: the data are in MJy/sr already
    (tmp_path / "mjy").mkdir()
    calibrated = write_roman_detectors(tmp_path / "mjy", flux=True, conversions=[0.5, 0.5, 0.55])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageCollection.from_files(calibrated)


def test_roman_files_are_refused_by_from_fits(roman_files):
    with pytest.raises(ValueError, match="ASDF file, not FITS.*from_files"):
        ImageCollection.from_fits(roman_files)


def test_roman_copies_are_read_back_by_roman_datamodels_as_romancal_leaves_them(roman_files, tmp_path):
    import roman_datamodels.datamodels as rdm

    coll = ImageCollection.from_files(roman_files)
    ds = coll.skymatch(skymethod="global+match", skystat="mean")
    written = coll.write_copies(tmp_path, subtract=True)
    assert [p.name for p in written] == [p.name for p in roman_files]
    for path, source, sky in zip(written, roman_files, ds.sky.values):
        with rdm.open(path) as model, rdm.open(source) as original:
            assert model.meta.background.level == pytest.approx(sky)
            assert model.meta.background.subtracted is True
            assert model.meta.background.method == "global+match"
            assert model.meta.cal_step.skymatch == "COMPLETE"
            assert model.meta.filename == path.name
            np.testing.assert_allclose(model.data, np.asarray(original.data) - np.float32(sky), atol=1e-4)
            np.testing.assert_array_equal(model.dq, original.dq)
    kept = tmp_path / "kept"
    kept.mkdir()
    invalid = ds.copy(deep=True)
    invalid["valid"].values[:] = [True, False, True]
    coll.write_copies(kept, invalid, subtract=False)
    with rdm.open(kept / roman_files[1].name) as model:
        assert model.meta.cal_step.skymatch == "SKIPPED"
        assert model.meta.background.level is None and model.meta.background.subtracted is False
        assert model.meta.background.method == "None"  # no method claimed for no sky
    with rdm.open(kept / roman_files[2].name) as model:
        assert model.meta.background.subtracted is False
        np.testing.assert_array_equal(model.data, np.full(JW_SHAPE, 120.0, np.float32))


def test_roman_without_roman_datamodels_names_the_extra(roman_files, monkeypatch):
    hide(monkeypatch, "roman_datamodels")
    with pytest.raises(ImportError, match=r"roman_datamodels.*skymatch-nb-ui\[roman\]"):
        ImageCollection.from_files(roman_files)


# -- a mosaic of several kinds -----------------------------------------------------------------
def test_group_by_exposure_needs_files_that_say_their_exposure(tmp_path):
    from skymatch_nb_ui.testing import make_mosaic

    m = make_mosaic((1, 2))
    paths = []
    for name, image, w in zip(m.names, m.images, m.wcs):
        paths.append(tmp_path / f"{name}.fits")
        fits.PrimaryHDU(image, w.to_header()).writeto(paths[-1])
    with pytest.raises(ValueError, match=r"group_by='exposure': 2 image\(s\) \(img00.fits, img01.fits\)"):
        ImageCollection.from_files(paths, group_by="exposure")
    assert set(ImageCollection.from_files(paths).groups.values()) == {None}
    with pytest.raises(TypeError, match="group_by must be"):
        ImageCollection.from_files(paths, group_by=3)


# -- the command line --------------------------------------------------------------------------
def test_cli_reads_an_association_and_writes_pipeline_copies(jwst_files, tmp_path, capsys):
    from stdatamodels.jwst import datamodels

    from skymatch_nb_ui.cli import main

    members = [{"expname": p.name, "exptype": "science"} for p in jwst_files]
    asn = write_asn(jwst_files[0].parent / "cli_asn.json", members)
    table = tmp_path / "skies.ecsv"
    out = tmp_path / "matched"
    status = main([str(asn), "--skystat", "mean", "--skymethod", "global+match", "--table",
                   str(table), "--output-dir", str(out), "--subtract", "--quiet"])
    assert status == 0, capsys.readouterr().err
    from astropy.table import Table

    rows = Table.read(table)
    assert rows["group"].tolist() == [f"jw01234001001_02101_0000{e}" for e in (1, 1, 2, 2, 3, 3)]
    np.testing.assert_allclose(rows["sky"], [100, 100, 110, 110, 120, 120], atol=1e-3)
    with datamodels.open(out / jwst_files[5].name) as model:
        assert model.meta.background.level == pytest.approx(120.0, abs=1e-3)
        assert model.meta.cal_step.skymatch == "COMPLETE"


def test_cli_group_by_image_and_every_hst_chip_in_one_copy(hst_inputs, tmp_path, capsys):
    from skymatch_nb_ui.cli import main

    out = tmp_path / "matched"
    status = main([*map(str, hst_inputs), "--skystat", "mean", "--group-by", "image",
                   "--anchor", "component", "--skymethod", "global+match", "--output-dir",
                   str(out), "--subtract", "--quiet"])
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in hst_inputs)
    with fits.open(out / hst_inputs[2].name) as hdul:
        for k in (1, 2):
            np.testing.assert_allclose(hdul["SCI", k].data, 0.0, atol=1e-3)
            assert hdul["SCI", k].header["MDRIZSKY"] == 0.0


def test_cli_refuses_outputs_before_the_solve(hst_inputs, tmp_path, capsys):
    from skymatch_nb_ui.cli import main

    out = tmp_path / "matched"
    out.mkdir()
    (out / hst_inputs[0].name).write_bytes(b"precious")
    status = main([*map(str, hst_inputs), "--output-dir", str(out), "--quiet"])
    assert status == 2
    assert "exist" in capsys.readouterr().err
    assert (out / hst_inputs[0].name).read_bytes() == b"precious"


# -- gzip-compressed files ---------------------------------------------------------------------
def gzipped(paths, directory):
    """Copies of ``paths`` compressed as ``gzip`` does (``name.fits.gz``)."""
    directory.mkdir()
    out = []
    for path in paths:
        out.append(directory / (path.name + ".gz"))
        out[-1].write_bytes(gzip.compress(path.read_bytes()))
    return out


@pytest.mark.parametrize("instrument", ["jwst", "hst"])
def test_gzip_compressed_pipeline_files_read_and_copy_as_the_plain_ones(tmp_path, instrument):
    if instrument == "jwst":
        plain = jwst_exposure_files(tmp_path, noise=0.5, seed=4)
    else:
        plain = hst_files(tmp_path, noise=0.5, seed=4)
    packed = gzipped(plain, tmp_path / "gz")
    coll, reference = ImageCollection.from_files(packed), ImageCollection.from_files(plain)
    assert coll.names == reference.names
    assert coll.groups == reference.groups  # the pipeline's grouping, from the same headers
    assert type(coll.wcs[0]) is type(reference.wcs[0])  # JWST: the file's gwcs
    result, expected = coll.skymatch(skymethod="match"), reference.skymatch(skymethod="match")
    np.testing.assert_array_equal(result.sky.values, expected.sky.values)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    copies = coll.write_copies(tmp_path / "a", result)
    wanted = reference.write_copies(tmp_path / "b", expected)
    for copy, want in zip(copies, wanted):
        assert copy.name == want.name + ".gz" and copy.read_bytes()[:2] == b"\x1f\x8b"
        with fits.open(copy) as got, fits.open(want) as other:
            assert [hdu.name for hdu in got] == [hdu.name for hdu in other]
            for a, b in zip(got, other):
                if a.is_image and a.data is not None:
                    np.testing.assert_array_equal(a.data, b.data)
                for key in ("BKGLEVEL", "BKGSUB", "BKGMETH", "MDRIZSKY"):
                    assert a.header.get(key) == b.header.get(key)
            if instrument == "jwst":
                assert got[0].header["FILENAME"] == copy.name
