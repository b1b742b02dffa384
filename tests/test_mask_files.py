"""Masks in other files than the images: DECam's ``_ood`` flags and ``_oow`` weights beside
its ``_ooi`` images, SWarp's ``.weight.fits`` (`ImageCollection.from_files(masks=)`,
``skymatch-nb --masks``, `skymatch_nb_ui.io.with_mask_files`)."""

import pickle

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from skymatch_nb_ui import ImageCollection, io
from skymatch_nb_ui.cli import main
from skymatch_nb_ui.collection import _FileLoader
from skymatch_nb_ui.testing import make_mosaic

SKIES = [[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]]
TRUTH = np.ravel(SKIES) - SKIES[0][0]  # `match`: the first image at 0
SHAPE = (60, 90)


def bad_pixels():
    """A saturated bleed trail and unexposed rows, as a camera's pipeline flags them."""
    bleed, rows = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    bleed[:, 40:50] = True
    rows[:6] = True
    return bleed, rows


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """Two dithered exposures of a 2 x 2 CCD camera, as DECam's pipeline writes them: images
    (``_ooi``), flags (``_ood``, 0 good) and weights (``_oow``, 0 bad) in three tile-
    compressed files, one HDU per CCD in each; a bleed trail (+500) and zeroed rows in every
    CCD, flagged and given weight 0."""
    folder = tmp_path_factory.mktemp("decam")
    bleed, rows = bad_pixels()
    for e, skies in enumerate(SKIES):
        m = make_mosaic((2, 2), shape=SHAPE, overlap=0.0, sky=skies, noise=0.3, seed=e,
                        dtype=np.float32, sources=0)
        files = {kind: [fits.PrimaryHDU(header=fits.Header({"EXPNUM": 1000 + e}))]
                 for kind in ("ooi", "ood", "oow")}
        for k, (image, wcs) in enumerate(zip(m.images, m.wcs)):
            wcs.wcs.crval = wcs.wcs.crval + np.array([5.0, 2.0]) * e / 3600
            image = np.where(bleed, image + 500, np.where(rows, 0, image)).astype(np.float32)
            flags = np.where(bleed, 4, np.where(rows, 1, 0)).astype(np.int32)
            weights = np.where(bleed | rows, 0.0, 50.0).astype(np.float32)
            name = f"S{k + 1}"
            files["ooi"].append(fits.CompImageHDU(image, wcs.to_header(), name=name))
            files["ood"].append(fits.CompImageHDU(flags, name=name, compression_type="PLIO_1"))
            files["oow"].append(fits.CompImageHDU(weights, name=name))
        for kind, hdus in files.items():
            fits.HDUList(hdus).writeto(folder / f"c4d_{e}_{kind}_g.fits.fz")
    return folder


@pytest.mark.parametrize("kind", ["ood", "oow"])
def test_flags_or_weights_in_other_files_mask_the_bad_pixels(camera, kind):
    pattern = str(camera / "c4d_*_ooi_g.fits.fz")
    bare = ImageCollection.from_files(pattern)
    assert bare.mask(bare.names[0]) is None
    off = bare.skymatch(skymethod="match", skystat="mode").sky.values - TRUTH
    assert np.abs(off).max() > 1  # the bleed trails and zeros measured as sky (3.6 here)
    coll = ImageCollection.from_files(pattern, masks=("_ooi_", f"_{kind}_"))
    bleed, rows = bad_pixels()
    for name in coll.names:
        np.testing.assert_array_equal(coll.mask(name), ~(bleed | rows))
    for skystat in ("mode", "mean"):
        ds = coll.skymatch(skymethod="match", skystat=skystat)
        np.testing.assert_allclose(ds.sky.values, TRUTH, atol=0.05)


def test_mask_files_by_function_and_mapping_and_in_worker_processes(camera):
    files = sorted(camera.glob("c4d_*_ooi_g.fits.fz"))
    by_pair = ImageCollection.from_files(files, masks=("_ooi_", "_ood_"))
    by_function = ImageCollection.from_files(
        files, masks=lambda path: path.with_name(path.name.replace("ooi", "ood")))
    by_mapping = ImageCollection.from_files(
        files, masks={str(f): f.with_name(f.name.replace("ooi", "ood")) for f in files[:1]})
    expected = by_pair.skymatch(skymethod="match")
    np.testing.assert_array_equal(by_function.skymatch(skymethod="match").sky.values,
                                  expected.sky.values)
    # the mapping gives a mask to the first file's CCDs only
    assert by_mapping.mask(by_mapping.names[0]) is not None
    assert by_mapping.mask(by_mapping.names[4]) is None
    record = io.with_mask_files(io.open_fits_images(files[0]), ("_ooi_", "_ood_"))[0]
    sent = pickle.loads(pickle.dumps(_FileLoader(record, 0)))  # what a pool's worker gets
    assert sent.record.mask_file == files[0].with_name("c4d_0_ood_g.fits.fz")
    np.testing.assert_array_equal(sent.mask(), by_pair.mask(by_pair.names[0]))
    forked = ImageCollection.from_files(files, masks=("_ooi_", "_ood_"))
    forked.scheduler, forked.workers = "processes", 2  # the loaders travel with their masks
    np.testing.assert_array_equal(forked.skymatch(skymethod="match").sky.values,
                                  expected.sky.values)


def test_a_mask_file_is_combined_with_the_files_own_dq(tmp_path):
    m = make_mosaic((1, 1), shape=SHAPE, sky=[5.0], noise=1.0, seed=1)
    dq = np.zeros(SHAPE, np.int16)
    dq[0] = 16
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(m.images[0], m.wcs[0].to_header(), name="SCI"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(tmp_path / "a.fits")
    weights = np.ones(SHAPE, np.float32)
    weights[:, 0] = 0
    weights[5, 5] = np.nan
    fits.PrimaryHDU(weights).writeto(tmp_path / "a.weight.fits")  # SWarp's: its only image
    coll = ImageCollection.from_files(tmp_path / "a.fits", masks=(".fits", ".weight.fits"))
    expected = np.ones(SHAPE, bool)
    expected[0], expected[:, 0], expected[5, 5] = False, False, False
    np.testing.assert_array_equal(coll.mask(coll.names[0]), expected)


def test_mask_files_that_do_not_fit_are_refused_naming_them(tmp_path, camera):
    image = camera / "c4d_0_ooi_g.fits.fz"
    with pytest.raises(TypeError, match="masks must be a function .* got 'ood'"):
        ImageCollection.from_files(image, masks="ood")
    with pytest.raises(ValueError, match="has no '_x_' to replace by '_y_'"):
        ImageCollection.from_files(image, masks=("_x_", "_y_"))
    with pytest.raises(FileNotFoundError, match="the mask file of .*c4d_0_ooi_g.fits.fz.*, "
                                                ".*c4d_0_oox_g.fits.fz.*, does not exist"):
        ImageCollection.from_files(image, masks=("_ooi_", "_oox_"))
    small = tmp_path / "small.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((5, 5), np.int16), name="S1"),
                  fits.ImageHDU(np.zeros((5, 5), np.int16), name="S2")]).writeto(small)
    with pytest.raises(ValueError, match=r"the mask of .*c4d_0_ooi_g.fits.fz' \[S1\] in "
                                         r".*small.fits' \(HDU 1\) has shape \(5, 5\), unlike "
                                         r"the image's \(60, 90\)"):
        ImageCollection.from_files(image, masks={image: small})
    other = tmp_path / "other.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(SHAPE, np.int16), name="X"),
                  fits.ImageHDU(np.zeros(SHAPE, np.int16), name="Y")]).writeto(other)
    with pytest.raises(ValueError, match=r"no 2-D image HDU named 'S3', at index 3 or alone"):
        ImageCollection.from_files(image, masks={image: other})


def test_the_command_line_takes_mask_files(camera, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [str(camera / "c4d_*_ooi_g.fits.fz"), "--masks", "_ooi_", "_oow_", "--table",
            "t.ecsv"]
    assert main(argv) == 0
    table = Table.read(tmp_path / "t.ecsv")
    np.testing.assert_allclose(np.asarray(table["sky"]), TRUTH, atol=0.05)
    assert main([str(camera / "c4d_*_ooi_g.fits.fz"), "--masks", "_ooi_", "_oox_"]) == 2
    assert "does not exist" in capsys.readouterr().err
