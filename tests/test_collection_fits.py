"""ImageCollection from FITS files: the same skies as from arrays, inputs untouched, lazy pixels."""

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.io import MixedUnitsWarning
from skymatch_nb_ui.testing import make_mosaic

SKY = [100, 120, 105, 110, 105, 115]


def noisy_mosaic():
    return make_mosaic((2, 3), shape=(80, 80), sky=SKY, noise=1.0, sources=5, mask_fraction=0.05,
                       rotation=20.0, seed=4)


def write_primary_files(mosaic, folder):
    paths = []
    for name, image, wcs in zip(mosaic.names, mosaic.images, mosaic.wcs):
        path = folder / f"{name}.fits"
        fits.PrimaryHDU(image, header=wcs.to_header()).writeto(path)
        paths.append(path)
    return paths


def write_multi_extension_files(mosaic, folder, *, exposures=None, bunit="MJy/sr"):
    paths = []
    for k, (name, image, wcs) in enumerate(zip(mosaic.names, mosaic.images, mosaic.wcs)):
        primary = fits.PrimaryHDU()
        if exposures is not None:
            primary.header["EXPOSURE"] = exposures[k]
        sci = fits.ImageHDU(image, header=wcs.to_header(), name="SCI")
        sci.header["BUNIT"] = bunit if isinstance(bunit, str) else bunit[k]
        bad = ~mosaic.masks[k]
        dq = fits.ImageHDU(np.where(bad, 1, 0).astype(np.uint32), name="DQ")
        err = fits.ImageHDU(np.ones_like(image), name="ERR")
        path = folder / f"{name}_cal.fits"
        fits.HDUList([primary, sci, err, dq]).writeto(path)
        paths.append(path)
    return paths


def digest(paths):
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


@pytest.mark.parametrize("method", ["match", "global+match"])
def test_fits_files_give_the_same_skies_as_the_arrays(tmp_path, method):
    mosaic = noisy_mosaic()
    from_arrays = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, masks=mosaic.masks)
    expected = from_arrays.skymatch(skymethod=method, skystat="median")
    mef = ImageCollection.from_fits(write_multi_extension_files(mosaic, tmp_path))
    np.testing.assert_allclose(mef.skymatch(skymethod=method, skystat="median").sky, expected.sky,
                               atol=1e-6)
    # primary-HDU files carry no DQ: compare with the unmasked arrays
    plain = ImageCollection.from_arrays(mosaic.images, mosaic.wcs).skymatch(skymethod=method,
                                                                          skystat="median")
    folder = tmp_path / "primary"
    folder.mkdir()
    write_primary_files(mosaic, folder)
    primary = ImageCollection.from_fits(str(folder / "*.fits"))  # a glob pattern
    np.testing.assert_allclose(primary.skymatch(skymethod=method, skystat="median").sky, plain.sky,
                               atol=1e-6)
    assert primary.names == tuple(mosaic.names)


def test_written_copies_are_subtracted_and_inputs_untouched(tmp_path):
    mosaic = make_mosaic((2, 3), shape=(60, 60), sky=SKY, mask_fraction=0.01, seed=1)
    paths = write_multi_extension_files(mosaic, tmp_path)
    before = digest(paths)
    coll = ImageCollection.from_fits(paths)
    result = coll.skymatch(skymethod="global+match", skystat="mean")
    out = tmp_path / "out"
    out.mkdir()
    written = coll.write_fits(out, result)
    assert [w.name for w in written] == [p.name for p in paths]
    for path, sky in zip(written, SKY):
        with fits.open(path) as hdul:
            assert hdul["SCI"].header["BKGLEVEL"] == pytest.approx(sky)
            assert hdul["SCI"].header["BKGSUB"] is True
            assert hdul["SCI"].header["BKGMETH"] == "global+match"
            np.testing.assert_allclose(hdul["SCI"].data, 0.0, atol=1e-4)
            assert "DQ" in hdul and "ERR" in hdul
    assert digest(paths) == before
    with pytest.raises(FileExistsError, match="overwrite=True"):
        coll.write_fits(out, result)
    coll.write_fits(out, result, overwrite=True, subtract=False)
    with fits.open(written[1]) as hdul:
        assert hdul["SCI"].header["BKGSUB"] is False
        np.testing.assert_allclose(hdul["SCI"].data, 120.0, atol=1e-4)
    assert digest(paths) == before


def test_write_fits_creates_the_directory_as_the_command_line_does(tmp_path):
    mosaic = make_mosaic((1, 2), shape=(30, 30), sky=[5.0, 7.0])
    coll = ImageCollection.from_arrays(mosaic.images, mosaic.wcs, names=mosaic.names)
    result = coll.skymatch(skymethod="local", skystat="mean")
    out = tmp_path / "matched" / "v1"  # neither exists
    written = coll.write_fits(out, result)
    assert sorted(p.name for p in out.iterdir()) == ["img00.fits", "img01.fits"] == [w.name for w in written]
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="a_file"):
        coll.write_fits(tmp_path / "a_file", result)
    with pytest.raises(FileExistsError):  # checked before anything is created or written
        coll.write_fits(out, result)
    assert not (tmp_path / "other").exists()


def test_constructing_a_collection_reads_no_pixels(tmp_path):
    """New bytes written into the files after construction show through: nothing was cached."""
    mosaic = make_mosaic((3, 4), shape=(40, 40), sky=7.0)
    paths = write_primary_files(mosaic, tmp_path)
    coll = ImageCollection.from_fits(paths)
    assert len(coll) == 12 and coll._matcher is None  # the engine (which reads masks) not built
    for path in paths:
        with fits.open(path, mode="update") as hdul:
            hdul[0].data[...] = 3.0
    np.testing.assert_array_equal(coll.data(5), 3.0)
    result = coll.skymatch(skymethod="local", skystat="mean")
    np.testing.assert_allclose(result.sky, 3.0)


def test_group_by_a_header_keyword(tmp_path):
    mosaic = make_mosaic((2, 3), shape=(50, 50), sky=[100, 100, 100, 130, 130, 130], mask_fraction=0.01,
                         seed=2)
    paths = write_multi_extension_files(mosaic, tmp_path, exposures=["e1"] * 3 + ["e2"] * 3)
    coll = ImageCollection.from_fits(paths, group_by="EXPOSURE")
    assert set(coll.groups.values()) == {"e1", "e2"}
    ds = coll.skymatch(skymethod="match", skystat="mean")
    np.testing.assert_allclose(ds.sky, [0, 0, 0, 30, 30, 30], atol=1e-9)
    assert coll.table.exposure.values.tolist() == ["e1"] * 3 + ["e2"] * 3
    by_function = ImageCollection.from_fits(paths, group_by=lambda header: header["BUNIT"])
    assert set(by_function.groups.values()) == {"MJy/sr"}


def test_unknown_group_by_keyword_names_it(tmp_path):
    mosaic = make_mosaic((1, 2), shape=(30, 30), mask_fraction=0.01)
    paths = write_multi_extension_files(mosaic, tmp_path)
    with pytest.raises(KeyError, match="NOPE") as caught:
        ImageCollection.from_fits(paths, group_by="NOPE")
    assert "did you mean" not in str(caught.value)
    # a rule's name mistyped is read as a keyword (FITS keywords are case-blind): say so
    with pytest.raises(KeyError, match=r"'exposures'.*did you mean group_by='exposure'\?"):
        ImageCollection.from_fits(paths, group_by="exposures")


def test_duplicate_file_names_in_two_folders_need_names(tmp_path):
    mosaic = make_mosaic((1, 2), shape=(30, 30))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_primary_files(mosaic, tmp_path / "a")
    second = write_primary_files(mosaic, tmp_path / "b")
    with pytest.raises(ValueError, match="image names must be unique"):
        ImageCollection.from_fits([first[0], second[0]])
    coll = ImageCollection.from_fits([first[0], second[0]], names=["a", "b"])
    assert coll.names == ("a", "b")


def test_mixed_units_warn(tmp_path):
    mosaic = make_mosaic((1, 2), shape=(30, 30), mask_fraction=0.01)
    paths = write_multi_extension_files(mosaic, tmp_path, bunit=["MJy/sr", "DN/s"])
    with pytest.warns(MixedUnitsWarning, match="DN/s") as said:
        ImageCollection.from_fits(paths)
    assert said[0].filename == __file__  # at the caller's line, not inside the package


def test_bad_dqbits_fail_at_construction(tmp_path):
    mosaic = make_mosaic((1, 2), shape=(30, 30), mask_fraction=0.01)
    paths = write_multi_extension_files(mosaic, tmp_path)
    with pytest.raises(ValueError, match="dqbits"):
        ImageCollection.from_fits(paths, dqbits="NOT_A_FLAG")
