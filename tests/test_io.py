"""FITS in and out: finding files, science/DQ extensions, lazy pixels, masks, copies."""

import hashlib
import os
import pickle
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, DistortionLookupTable, Sip

from skymatch_nb_ui import ImageCollection, SkyMatchWarning, io
from skymatch_nb_ui.collection import _FileLoader
from skymatch_nb_ui.io import (
    FitsImage,
    MixedUnitsWarning,
    check_units,
    find_fits,
    open_fits_image,
    write_array_fits,
    write_fits_copy,
)
from skymatch_nb_ui.testing import make_mosaic

SHAPE = (40, 50)
PIXELS = [(0, 0), (49, 39), (12.5, 30.25), (-3, 45)]

JUMP_DET, DO_NOT_USE, SATURATED = 4, 1, 2


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((1, 3), shape=SHAPE, sky=[100, 120, 105], noise=1.0, seed=3)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_sky(wcs_a, wcs_b):
    x, y = np.array(PIXELS, float).T
    np.testing.assert_allclose(wcs_a.all_pix2world(x, y, 0), wcs_b.all_pix2world(x, y, 0),
                               rtol=0, atol=1e-9)  # degrees: header round-off only


def write_primary(path, image, wcs, **cards):
    header = wcs.to_header()
    header.update(cards)
    fits.PrimaryHDU(image, header).writeto(path)
    return path


def dq_array():
    dq = np.zeros(SHAPE, np.uint32)
    dq[0, :5] = JUMP_DET
    dq[1, :3] = DO_NOT_USE
    dq[2, :2] = SATURATED | JUMP_DET
    return dq


def write_mef(path, mosaic, *, checksum=False):
    """HST-like layout: PRIMARY, (SCI,1), (DQ,1), (ERR,1), (SCI,2), (DQ,2)."""
    primary = fits.PrimaryHDU()
    primary.header.update(INSTRUME="NIRCAM", OBS_ID="V01234001001P0000000002101",
                          EXPOSURE="3", EXPTIME=107.4, FILTER="F200W")
    sci1 = fits.ImageHDU(mosaic.images[0], mosaic.wcs[0].to_header(), name="SCI", ver=1)
    sci1.header.update(BUNIT="MJy/sr", DETECTOR="NRCA1")
    sci2 = fits.ImageHDU(mosaic.images[1], mosaic.wcs[1].to_header(), name="SCI", ver=2)
    sci2.header["DETECTOR"] = "NRCA2"
    dq2 = np.zeros(SHAPE, np.uint32)
    dq2[5, 5] = DO_NOT_USE
    hdul = fits.HDUList([
        primary,
        sci1,
        fits.ImageHDU(dq_array(), name="DQ", ver=1),
        fits.ImageHDU(np.full(SHAPE, 0.5, np.float32), name="ERR", ver=1),
        sci2,
        fits.ImageHDU(dq2, name="DQ", ver=2),
    ])
    hdul.writeto(path, checksum=checksum)
    return path


@pytest.fixture
def primary_file(tmp_path, mosaic):
    return write_primary(tmp_path / "img00.fits", mosaic.images[0], mosaic.wcs[0])


@pytest.fixture
def mef_file(tmp_path, mosaic):
    return write_mef(tmp_path / "exp_cal.fits", mosaic)


# -- find_fits ---------------------------------------------------------------------------------
def test_find_fits_expands_sorted_globs_and_keeps_literal_order(tmp_path, mosaic):
    for name in ["c.fits", "a.fits", "b.fits"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.fits").mkdir()  # a directory matching the pattern is skipped
    found = find_fits([tmp_path / "c.fits", str(tmp_path / "*.fits")])
    assert [p.name for p in found] == ["c.fits", "a.fits", "b.fits"]  # duplicate c dropped
    assert find_fits(tmp_path / "b.fits") == [tmp_path / "b.fits"]
    assert [p.name for p in find_fits(str(tmp_path / "[ab].fit?"))] == ["a.fits", "b.fits"]


def test_find_fits_takes_an_existing_name_literally(tmp_path):
    odd = tmp_path / "img[1].fits"
    odd.write_bytes(b"")
    assert find_fits(str(odd)) == [odd]


@pytest.mark.parametrize(
    ("paths", "error", "match"),
    [
        (lambda d: d / "missing.fits", FileNotFoundError, "missing.fits"),
        (lambda d: str(d / "nothing*.fits"), FileNotFoundError, r"pattern .*nothing\*\.fits"),
        (lambda d: [], ValueError, "no FITS files given"),
        (lambda d: d, ValueError, "is a directory"),
        (lambda d: 3, TypeError, "paths must be"),
        (lambda d: [d / "x.fits", 3], TypeError, "paths must hold"),
    ],
)
def test_find_fits_rejects(tmp_path, paths, error, match):
    with pytest.raises(error, match=match):
        find_fits(paths(tmp_path))


def test_a_directory_is_refused_with_a_pattern_for_its_files(tmp_path):
    for name in ["a.fits.fz", "b.fits.fz", "c.fits", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.fits.fz").mkdir()
    with pytest.raises(ValueError, match=r"name its files, e\.g\. '.*/\*\.fits\.fz' \(2 such"):
        find_fits(tmp_path)


# -- open_fits_image ---------------------------------------------------------------------------
def test_primary_hdu_file(primary_file, mosaic):
    image = open_fits_image(primary_file)
    assert isinstance(image, FitsImage)
    assert (image.path, image.ext, image.dq_ext, image.shape) == (primary_file, 0, None, SHAPE)
    assert_same_sky(image.wcs, mosaic.wcs[0])
    assert image.mask() is None
    np.testing.assert_array_equal(image.data(), mosaic.images[0])
    assert image.data().dtype.itemsize == 4


def test_data_is_a_read_only_view_of_the_file(primary_file):
    data = open_fits_image(primary_file).data()
    with pytest.raises(ValueError, match="read-only"):
        data[0, 0] = 0
    with pytest.raises(ValueError):
        data.flags.writeable = True


def test_multi_extension_file_finds_sci_and_its_dq(mef_file, mosaic):
    first = open_fits_image(mef_file)
    assert (first.ext, first.dq_ext, first.shape) == (1, 2, SHAPE)
    assert first.header["EXTNAME"] == "SCI" and first.primary_header["INSTRUME"] == "NIRCAM"
    assert_same_sky(first.wcs, mosaic.wcs[0])
    second = open_fits_image(mef_file, ext=("SCI", 2))
    assert (second.ext, second.dq_ext) == (4, 5)  # the DQ of the same EXTVER
    assert_same_sky(second.wcs, mosaic.wcs[1])
    np.testing.assert_array_equal(second.data(), mosaic.images[1])
    assert second.mask().sum() == SHAPE[0] * SHAPE[1] - 1
    assert open_fits_image(mef_file, ext=4).ext == 4
    assert open_fits_image(mef_file, ext="sci").ext == 1
    assert open_fits_image(mef_file, dq_ext=None).dq_ext is None


def test_headers_are_kept_as_text_and_handed_out_as_copies(mef_file, primary_file):
    """A record holds its headers as the cards' text (compact); each access parses a copy."""
    first = open_fits_image(mef_file)
    with fits.open(mef_file) as hdul:
        assert list(first.header.items()) == list(hdul[1].header.items())
        assert list(first.primary_header.items()) == list(hdul[0].header.items())
    assert isinstance(first.header_text, str) and len(first.header_text) % 80 == 0
    changed = first.header
    changed["EXTNAME"] = "OTHER"
    assert first.header["EXTNAME"] == "SCI" and first.label == "SCI,1"
    shown = first.meta  # computed once per record, handed out as a new dict
    shown["detector"] = "OTHER"
    assert first.meta["detector"] == "NRCA1"
    with fits.open(mef_file) as hdul:
        assert hdul[1].header["EXTNAME"] == "SCI"
    alone = open_fits_image(primary_file)  # the science HDU is the primary: one header
    assert alone.primary_text is None
    assert list(alone.primary_header.items()) == list(alone.header.items())
    assert alone.primary_header is not alone.header
    # a loader sent to a worker carries no headers and no WCS
    restored = pickle.loads(pickle.dumps(_FileLoader(first))).record
    assert restored.header_text == "" and restored.wcs is None and len(restored.header) == 0
    np.testing.assert_array_equal(restored.data(), first.data())


def test_without_sci_the_first_2d_image_with_a_celestial_wcs_is_used(tmp_path, mosaic):
    path = tmp_path / "mixed.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(3.0))]),
        fits.ImageHDU(np.zeros(SHAPE, np.float32), name="NOWCS"),
        fits.ImageHDU(mosaic.images[2], mosaic.wcs[2].to_header(), name="IMAGE"),
    ]).writeto(path)
    image = open_fits_image(path)
    assert image.ext == 3
    np.testing.assert_array_equal(image.data(), mosaic.images[2])


def camera_file(path, *, dither, skies, seed):
    """A mosaic camera's exposure as DECam's pipeline writes it: one tile-compressed HDU per
    CCD, named after it (no SCI, no EXTVER), each with its own WCS; the exposure number in
    the primary header."""
    m = make_mosaic((2, 2), shape=(60, 90), overlap=0.0, sky=skies, noise=0.2, seed=seed,
                    dtype=np.float32, sources=3)
    hdus = [fits.PrimaryHDU(header=fits.Header({"EXPNUM": 1000 + seed}))]
    for k, (image, wcs) in enumerate(zip(m.images, m.wcs)):
        wcs.wcs.crval = wcs.wcs.crval + np.array(dither) / 3600
        hdus.append(fits.CompImageHDU(image, wcs.to_header(), name=f"S{k + 1}"))
    fits.HDUList(hdus).writeto(path)
    return path


def test_every_ccd_of_a_mosaic_camera_file_is_an_image(tmp_path):
    skies = [[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]]
    paths = [camera_file(tmp_path / f"c4d_{e}_ooi.fits.fz", dither=(5.0 * e, 2.0 * e),
                         skies=skies[e], seed=e) for e in range(2)]
    coll = ImageCollection.from_files(paths)
    assert coll.names == tuple(f"c4d_{e}_ooi[S{k}]" for e in range(2) for k in range(1, 5))
    ds = coll.skymatch(skymethod="match", skystat="mean")
    np.testing.assert_allclose(ds.sky.values, np.ravel(skies) - 10.0, atol=0.05)
    exposures = ImageCollection.from_files(paths, group_by="exposure").groups
    assert list(exposures.values()) == ["1000"] * 4 + ["1001"] * 4  # the CCDs of a file
    assert open_fits_image(paths[0]).ext == 1  # one image: the first
    assert [c.ext for c in io.open_fits_images(paths[0], ext="S3")] == [3]


def test_companions_of_an_image_are_not_images(tmp_path, mosaic):
    """A mask and a variance on the image's pixels (the Rubin pipeline's calexp) and a binned
    preview of it are not other detectors."""
    header = mosaic.wcs[0].to_header()
    binned = mosaic.wcs[0].deepcopy()
    binned.wcs.cdelt = binned.wcs.cdelt * 4
    binned.wcs.crpix = (binned.wcs.crpix - 0.5) / 4 + 0.5
    path = tmp_path / "calexp.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(mosaic.images[0], header, name="IMAGE"),
        fits.ImageHDU(np.zeros(SHAPE, np.int32), header, name="MASK"),
        fits.ImageHDU(np.ones(SHAPE, np.float32), header, name="VARIANCE"),
        fits.ImageHDU(mosaic.images[0][::4, ::4], binned.to_header(), name="PREVIEW"),
        fits.ImageHDU(mosaic.images[1], mosaic.wcs[1].to_header(), name="NEXT"),  # elsewhere
    ]).writeto(path)
    assert [c.label for c in io.open_fits_images(path)] == ["IMAGE", "NEXT"]


def test_sip_and_lookup_table_distortions_are_kept(tmp_path, mosaic):
    sip = WCS(mosaic.wcs[0].to_header())
    sip.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a, b = np.zeros((3, 3)), np.zeros((3, 3))
    a[2, 0], b[0, 2] = 2e-5, -3e-5
    sip.sip = Sip(a, b, None, None, sip.wcs.crpix)
    fits.PrimaryHDU(mosaic.images[0], sip.to_header(relax=True)).writeto(tmp_path / "sip.fits")
    assert_same_sky(open_fits_image(tmp_path / "sip.fits").wcs, sip)

    lookup = mosaic.wcs[0].deepcopy()
    table = np.linspace(0, 0.5, 20, dtype=np.float32).reshape(4, 5)
    lookup.cpdis1 = DistortionLookupTable(table, (1, 1), (1, 1), (12.0, 12.0))
    lookup.cpdis2 = DistortionLookupTable(table.T.copy(), (1, 1), (1, 1), (12.0, 12.0))
    hdul = lookup.to_fits()  # primary header + WCSDVARR extensions
    hdul[0].data = mosaic.images[0]
    hdul.writeto(tmp_path / "lookup.fits")
    read = open_fits_image(tmp_path / "lookup.fits").wcs
    assert_same_sky(read, lookup)
    x, y = np.array(PIXELS, float).T  # and the distortion does matter
    assert np.abs(np.subtract(read.all_pix2world(x, y, 0), mosaic.wcs[0].all_pix2world(x, y, 0))).max() > 1e-6


# -- laziness ----------------------------------------------------------------------------------
def test_opening_reads_no_pixels_new_bytes_on_disk_show_through_data(mef_file):
    image = open_fits_image(mef_file)
    with fits.open(mef_file, mode="update") as hdul:  # someone rewrites the pixels in place
        hdul["SCI", 1].data[:] = -7.0
        hdul["DQ", 1].data[:] = 0
    assert float(image.data()[3, 4]) == -7.0
    assert image.mask().all()


def test_opening_reads_no_pixels_spy(mef_file, monkeypatch):
    from astropy.io.fits.file import _File

    calls = []
    original = _File.readarray

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    def map_spy(*args, **kwargs):
        calls.append(args)
        return map_readonly(*args, **kwargs)

    from skymatch_nb_ui.io import _fits
    from skymatch_nb_ui.io._mapping import map_readonly

    monkeypatch.setattr(_File, "readarray", spy)
    monkeypatch.setattr(_fits, "map_readonly", map_spy)
    image = open_fits_image(mef_file)
    assert calls == []
    image.data()
    image.mask()
    assert len(calls) == 2  # the spies do see pixel reads (science mapped, scaled DQ read)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_opening_closes_the_file(mef_file):
    def open_on_file():
        fds = os.listdir("/proc/self/fd")
        return sum(1 for fd in fds if _readlink(f"/proc/self/fd/{fd}") == str(mef_file))

    before = open_on_file()
    image = open_fits_image(mef_file)
    assert open_on_file() == before
    assert image.header is not None


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


# -- masks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dqbits", "good_in_row"),
    [
        (0, {0: 45, 1: 47, 2: 48}),  # any flag is bad
        (JUMP_DET, {0: 50, 1: 47, 2: 48}),  # SATURATED|JUMP_DET is still bad
        ("4", {0: 50, 1: 47, 2: 48}),
        ("JUMP_DET", {0: 50, 1: 47, 2: 48}),
        ("4,2", {0: 50, 1: 47, 2: 50}),
        ("JUMP_DET+SATURATED", {0: 50, 1: 47, 2: 50}),
        ("~DO_NOT_USE", {0: 50, 1: 47, 2: 50}),  # ignore everything but DO_NOT_USE
        (None, {0: 50, 1: 50, 2: 50}),  # ignore all flags
    ],
)
def test_mask_from_dq_ignores_the_given_flags(mef_file, dqbits, good_in_row):
    mask = open_fits_image(mef_file).mask(dqbits)
    assert mask.dtype == bool and mask.shape == SHAPE
    assert {row: int(mask[row].sum()) for row in good_in_row} == good_in_row
    assert mask[3:].all()


@pytest.mark.parametrize(("dqbits", "error"), [("NOT_A_FLAG", ValueError), ("1,+2", ValueError),
                                                (-1, ValueError), (1.5, TypeError)])
def test_bad_dqbits_are_rejected(mef_file, dqbits, error):
    with pytest.raises(error, match="dqbits"):
        open_fits_image(mef_file).mask(dqbits)


# -- keywords and metadata ---------------------------------------------------------------------
def test_keyword_from_science_then_primary_header(mef_file):
    image = open_fits_image(mef_file)
    assert image.keyword("DETECTOR") == "NRCA1"
    assert image.keyword("instrume") == "NIRCAM"
    with pytest.raises(KeyError, match=r"'NOPE'.*exp_cal\.fits"):
        image.keyword("NOPE")


def test_meta(mef_file, primary_file):
    assert open_fits_image(mef_file, ext=("SCI", 2)).meta == {
        "bunit": None, "exptime": 107.4, "filter": "F200W", "detector": "NRCA2",
        "instrument": "NIRCAM", "date_obs": None,
        "exposure": "V01234001001P0000000002101_3",
    }
    assert open_fits_image(mef_file).meta["bunit"] == "MJy/sr"
    assert set(open_fits_image(primary_file).meta.values()) == {None}


def test_meta_exposure_falls_back_to_other_keywords(tmp_path, mosaic):
    path = write_primary(tmp_path / "hst.fits", mosaic.images[0], mosaic.wcs[0],
                         ROOTNAME="j8xi01abq", FILTER1="F606W")
    meta = open_fits_image(path).meta
    assert meta["exposure"] == "j8xi01abq" and meta["filter"] == "F606W"


# -- errors name the file ----------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.fits"):
        open_fits_image(tmp_path / "gone.fits")


def test_corrupt_file(tmp_path):
    path = tmp_path / "junk.fits"
    path.write_bytes(b"this is not a FITS file" * 200)
    with pytest.raises((OSError, ValueError), match="junk.fits"):
        open_fits_image(path)


@pytest.mark.filterwarnings("ignore:Error validating header")
def test_truncated_header(tmp_path, primary_file):
    path = tmp_path / "cut.fits"
    path.write_bytes(primary_file.read_bytes()[:1000])
    with pytest.raises((OSError, ValueError), match="cut.fits"):
        open_fits_image(path)


def test_no_image_hdu(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))])]).writeto(path)
    with pytest.raises(ValueError, match=r"no 2-D image HDU .*table\.fits.*BinTableHDU"):
        open_fits_image(path)


def test_image_without_celestial_wcs(tmp_path):
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros(SHAPE, np.float32)).writeto(path)
    with pytest.raises(ValueError, match=r"plain\.fits.*without a celestial WCS"):
        open_fits_image(path)
    with pytest.raises(ValueError, match=r"HDU 0 .*plain\.fits.* no celestial WCS"):
        open_fits_image(path, ext=0)


def test_chosen_hdu_not_2d(tmp_path, mosaic):
    path = tmp_path / "cube.fits"
    header = mosaic.wcs[0].to_header()
    fits.PrimaryHDU(np.zeros((3, *SHAPE), np.float32), header).writeto(path)
    with pytest.raises(ValueError, match=r"HDU 0 .*cube\.fits.* 2-D data.*\(3, 40, 50\)"):
        open_fits_image(path, ext=0)


def test_chosen_hdu_is_a_table(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))])]).writeto(path)
    with pytest.raises(ValueError, match=r"HDU 1 .*table\.fits.*not an image"):
        open_fits_image(path, ext=1)


@pytest.mark.parametrize("ext", ["FOO", ("SCI", 7), 9])
def test_extension_not_found(mef_file, ext):
    with pytest.raises(ValueError, match=r"extension .* not found in .*exp_cal\.fits"):
        open_fits_image(mef_file, ext=ext)


@pytest.mark.parametrize("ext", [1.0, True, ("SCI",), ["SCI", 1]])
def test_bad_ext_type(mef_file, ext):
    with pytest.raises(TypeError, match="ext must be"):
        open_fits_image(mef_file, ext=ext)


def test_dq_of_another_shape(tmp_path, mosaic):
    path = tmp_path / "baddq.fits"
    fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(mosaic.images[0], mosaic.wcs[0].to_header(), name="SCI"),
        fits.ImageHDU(np.zeros((10, 10), np.int16), name="DQ"),
    ]).writeto(path)
    with pytest.raises(ValueError, match=r"baddq\.fits.*\(10, 10\).*\(40, 50\)"):
        open_fits_image(path)
    assert open_fits_image(path, dq_ext=None).dq_ext is None


# -- units -------------------------------------------------------------------------------------
def test_check_units_warns_on_mixed_units(tmp_path, mosaic):
    paths = [
        write_primary(tmp_path / f"u{k}.fits", mosaic.images[k], mosaic.wcs[k], **cards)
        for k, cards in enumerate([{"BUNIT": "MJy/sr"}, {"BUNIT": "MJy/sr"}, {"BUNIT": "DN/s"}])
    ]
    images = [open_fits_image(p) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_units(images[:2])
    with pytest.warns(MixedUnitsWarning, match=r"'MJy/sr' \(u0.fits, u1.fits\); 'DN/s' \(u2.fits\)"):
        check_units(images)
    assert issubclass(MixedUnitsWarning, SkyMatchWarning)


def test_images_in_counts_of_different_pixel_scales_warn(tmp_path, mosaic):
    """A sky per pixel grows with the pixel's area: images in counts (or count rates) of two
    pixel scales (ACS/WFC's 0.05 arcsec beside WFC3/UVIS's 0.04) are not comparable as they
    are, and `from_files` says so; surface brightness (MJy/sr) is, and a few percent is one
    camera's pixel."""
    def written(name, k, unit, scale):
        w = mosaic.wcs[k].deepcopy()
        if w.wcs.has_cd():
            w.wcs.cd = w.wcs.cd * scale
        else:
            w.wcs.cdelt = w.wcs.cdelt * scale
        return write_primary(tmp_path / name, mosaic.images[k], w, BUNIT=unit, EXPTIME=500.0)

    wfc_uvis = [written("a0.fits", 0, "ELECTRONS", 1.0), written("a1.fits", 1, "ELECTRONS", 0.79)]
    with pytest.warns(MixedUnitsWarning, match=r"different areas on the sky: .*\(a1.fits\) to "
                      r".*\(a0.fits\).*match the images of each pixel scale apart") as said:
        ImageCollection.from_files(wfc_uvis)
    assert said[0].filename == __file__  # at the caller's line, not inside the package
    rates = [written("r0.fits", 0, "ELECTRONS/S", 1.0), written("r1.fits", 1, "ELECTRONS/S", 0.79)]
    with pytest.warns(MixedUnitsWarning, match="different areas"):
        ImageCollection.from_files(rates)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageCollection.from_files([written("s0.fits", 0, "MJy/sr", 1.0),
                                    written("s1.fits", 1, "MJy/sr", 0.79)])
        ImageCollection.from_files([written("c0.fits", 0, "ELECTRONS", 1.0),
                                    written("c1.fits", 1, "ELECTRONS", 0.97)])


# -- write_fits_copy ---------------------------------------------------------------------------
def test_copy_subtracts_and_records_the_sky(tmp_path, mef_file, mosaic):
    source_hash = sha256(mef_file)
    image = open_fits_image(mef_file, ext=("SCI", 2))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = write_fits_copy(image, out_dir / mef_file.name, sky=119.5, valid=True,
                           method="global+match", subtract=True)
    assert dest == out_dir / mef_file.name
    assert sha256(mef_file) == source_hash
    with fits.open(dest) as out, fits.open(mef_file) as src:
        assert [h.name for h in out] == [h.name for h in src]
        sci = out["SCI", 2]
        assert sci.data.dtype.itemsize == 4  # float32 stays float32
        np.testing.assert_allclose(sci.data, mosaic.images[1] - np.float32(119.5), rtol=0, atol=0)
        assert sci.header["BKGLEVEL"] == 119.5 and sci.header["BKGSUB"] is True
        assert sci.header["BKGMETH"] == "global+match"
        assert sci.header.comments["BKGLEVEL"] == "Total background level"
        assert "BKGLEVEL" not in out["SCI", 1].header  # other images untouched
        for k in (1, 2, 3, 5):
            np.testing.assert_array_equal(out[k].data, src[k].data)
        assert out[0].header == src[0].header


def test_copy_without_subtracting_or_without_a_valid_sky(tmp_path, primary_file, mosaic):
    image = open_fits_image(primary_file)
    kept = write_fits_copy(image, tmp_path / "kept.fits", sky=100.0, valid=True, method="match",
                           subtract=False)
    header, data = fits.getheader(kept), fits.getdata(kept)
    assert header["BKGLEVEL"] == 100.0 and header["BKGSUB"] is False
    np.testing.assert_array_equal(data, mosaic.images[0])

    invalid = write_fits_copy(image, tmp_path / "invalid.fits", sky=float("nan"), valid=False,
                              method="match", subtract=True)
    header, data = fits.getheader(invalid), fits.getdata(invalid)
    assert "BKGLEVEL" not in header and header["BKGSUB"] is False and header["BKGMETH"] == "match"
    np.testing.assert_array_equal(data, mosaic.images[0])

    # a stale BKGLEVEL of the source is removed when the new sky is invalid
    again = write_fits_copy(open_fits_image(kept), tmp_path / "again.fits", sky=0.0, valid=False,
                            method="local", subtract=True)
    assert "BKGLEVEL" not in fits.getheader(again)


def test_copy_of_integer_and_scaled_data_is_float64(tmp_path, mosaic):
    path = tmp_path / "int.fits"
    hdu = fits.PrimaryHDU(np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE),
                          mosaic.wcs[0].to_header())
    hdu.writeto(path)  # uint16 is stored with BZERO = 32768: not memory-mappable
    image = open_fits_image(path)
    assert image.data().dtype == np.uint16 and not image.data().flags.writeable
    out = write_fits_copy(image, tmp_path / "out.fits", sky=10.0, valid=True, method="local",
                          subtract=True)
    data = fits.getdata(out)
    assert data.dtype.kind == "f" and data.dtype.itemsize == 8
    np.testing.assert_array_equal(data, image.data().astype(float) - 10.0)
    assert "BZERO" not in fits.getheader(out)


def test_copy_updates_checksums(tmp_path, mosaic):
    path = write_mef(tmp_path / "sums.fits", mosaic, checksum=True)
    image = open_fits_image(path)
    out = write_fits_copy(image, tmp_path / "out.fits", sky=1.0, valid=True, method="match",
                          subtract=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a wrong checksum warns
        with fits.open(out, checksum=True) as hdul:
            assert all("CHECKSUM" in h.header for h in hdul)


def test_copy_refuses_to_overwrite(tmp_path, primary_file):
    image = open_fits_image(primary_file)
    dest = tmp_path / "out.fits"
    dest.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"out\.fits.*overwrite=True"):
        write_fits_copy(image, dest, sky=1.0, valid=True, method="match", subtract=True)
    assert dest.read_bytes() == b"precious"
    write_fits_copy(image, dest, sky=1.0, valid=True, method="match", subtract=True, overwrite=True)
    assert fits.getheader(dest)["BKGLEVEL"] == 1.0


def test_copy_refuses_the_source_itself(primary_file):
    image = open_fits_image(primary_file)
    source_hash = sha256(primary_file)
    for dest in (primary_file, primary_file.parent / "." / primary_file.name):
        with pytest.raises(ValueError, match="source file"):
            write_fits_copy(image, dest, sky=1.0, valid=True, method="match", subtract=True,
                            overwrite=True)
    assert sha256(primary_file) == source_hash


def test_copy_needs_an_existing_directory(tmp_path, primary_file):
    with pytest.raises(FileNotFoundError, match="nodir"):
        write_fits_copy(open_fits_image(primary_file), tmp_path / "nodir" / "x.fits", sky=1.0,
                        valid=True, method="match", subtract=True)


def test_copy_is_atomic(tmp_path, primary_file, monkeypatch):
    image = open_fits_image(primary_file)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    original = fits.HDUList.writeto

    def half_then_crash(self, fileobj, *args, **kwargs):
        original(self, fileobj, *args, **kwargs)
        with open(fileobj, "r+b") as f:
            f.truncate(1000)
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        write_fits_copy(image, out_dir / "x.fits", sky=1.0, valid=True, method="match",
                        subtract=True)
    assert list(out_dir.iterdir()) == []

    (out_dir / "x.fits").write_bytes(b"old")  # and an existing file survives a failed overwrite
    with pytest.raises(OSError, match="disk full"):
        write_fits_copy(image, out_dir / "x.fits", sky=1.0, valid=True, method="match",
                        subtract=True, overwrite=True)
    assert [p.name for p in out_dir.iterdir()] == ["x.fits"]
    assert (out_dir / "x.fits").read_bytes() == b"old"


# -- write_array_fits --------------------------------------------------------------------------
def test_write_array_fits(tmp_path, mosaic):
    dest = write_array_fits(tmp_path / "a.fits", mosaic.images[0], mosaic.wcs[0], sky=100.0,
                            valid=True, method="match", subtract=True)
    image = open_fits_image(dest)
    assert_same_sky(image.wcs, mosaic.wcs[0])
    np.testing.assert_allclose(image.data(), mosaic.images[0] - np.float32(100), atol=0)
    assert image.header["BKGSUB"] is True and image.header["BKGLEVEL"] == 100.0
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_array_fits(dest, mosaic.images[0], mosaic.wcs[0], sky=1.0, valid=True,
                         method="match", subtract=True)


def test_write_array_fits_warns_when_the_wcs_cannot_be_written(tmp_path, mosaic):
    with pytest.warns(SkyMatchWarning, match="cannot be written"):
        write_array_fits(tmp_path / "a.fits", mosaic.images[0], object(), sky=1.0, valid=True,
                         method="match", subtract=False)
    assert "CTYPE1" not in fits.getheader(tmp_path / "a.fits")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "t.ecsv") as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith("t.ecsv")
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# -- truncated files name themselves -----------------------------------------------------------
def test_truncated_data_section_is_refused_at_open_naming_the_file(tmp_path, mef_file):
    cut = tmp_path / "cut_cal.fits"
    cut.write_bytes(mef_file.read_bytes()[: 2880 * 3 + 100])  # headers whole, SCI data cut
    with pytest.raises(OSError, match=r"cut_cal\.fits.* is truncated: HDU 1 \(SCI\) needs 8000 bytes"):
        open_fits_image(cut)


def test_data_truncated_after_opening_names_the_file(tmp_path, primary_file):
    image = open_fits_image(primary_file)
    data = primary_file.read_bytes()
    primary_file.write_bytes(data[: len(data) - 2880])  # someone cuts the file short
    with pytest.raises(OSError, match=r"img00\.fits.* is truncated"):
        image.data()


def test_a_file_cut_between_its_hdus_is_refused_not_read_without_them(tmp_path, mef_file):
    """A cut in the padding after (SCI,2)'s data: astropy lists the HDUs before it and
    quietly drops (DQ,2), whose mask would have been lost."""
    with fits.open(mef_file) as hdul:
        end = hdul.fileinfo(4)["datLoc"] + hdul[4].data.nbytes  # (SCI,2)
        last = hdul.fileinfo(5)["datLoc"] + hdul[5].data.nbytes  # (DQ,2)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(mef_file.read_bytes()[: end + 100])
    with warnings.catch_warnings(), fits.open(cut) as hdul:
        warnings.simplefilter("ignore")  # ("may have been truncated", when warnings are shown)
        assert [h.name for h in hdul][-1] == "SCI"  # (DQ,2) gone
    with pytest.raises(OSError, match=r"cut\.fits.* is cut short: its HDUs as read end with "
                                      r"HDU 4 \(SCI\).* whatever followed is missing"):
        io.open_fits_images(cut)
    unpadded = tmp_path / "unpadded.fits"  # ends where its last data end: whole, and read
    unpadded.write_bytes(mef_file.read_bytes()[:last])
    assert [c.dq_ext for c in io.open_fits_images(unpadded)] == [2, 5]


def test_a_last_table_cut_short_is_refused(tmp_path, primary_file):
    """The last HDU need not be an image (JWST's ASDF extension is a table)."""
    with fits.open(primary_file) as hdul:
        table = fits.BinTableHDU.from_columns([fits.Column("a", "D", array=np.arange(2000.0))])
        fits.HDUList([hdul[0].copy(), table]).writeto(tmp_path / "t.fits")
    data = (tmp_path / "t.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[: len(data) - 5000])
    with pytest.raises(OSError, match="is cut short: its HDUs as read end with HDU 1"):
        open_fits_image(tmp_path / "t.fits")


# -- scaled integers are copied as they are --------------------------------------------------
def test_copy_without_subtracting_keeps_bzero_bscale_int16(tmp_path, mosaic):
    path = tmp_path / "scaled.fits"
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    hdu = fits.PrimaryHDU(raw * 0.5 + 100.0, mosaic.wcs[0].to_header())
    hdu.scale("int16", bscale=0.5, bzero=100.0)
    hdu.writeto(path)
    image = open_fits_image(path)
    np.testing.assert_array_equal(image.data(), raw * 0.5 + 100.0)
    out = write_fits_copy(image, tmp_path / "kept.fits", sky=101.0, valid=True, method="match",
                          subtract=False)
    with fits.open(out, do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["BITPIX"] == 16
        assert (hdul[0].header["BSCALE"], hdul[0].header["BZERO"]) == (0.5, 100.0)
        np.testing.assert_array_equal(hdul[0].data, raw)
        assert hdul[0].header["BKGLEVEL"] == 101.0 and hdul[0].header["BKGSUB"] is False
    subtracted = write_fits_copy(image, tmp_path / "sub.fits", sky=101.0, valid=True,
                                 method="match", subtract=True)
    np.testing.assert_array_equal(fits.getdata(subtracted), raw * 0.5 + 100.0 - 101.0)


def test_blank_integer_pixels_become_nan_when_subtracted(tmp_path, mosaic):
    path = tmp_path / "blank.fits"
    raw = np.full(SHAPE, 7, dtype=np.int16)
    raw[0, 0] = -32768
    header = mosaic.wcs[0].to_header()
    header.update(BLANK=-32768)
    fits.PrimaryHDU(raw, header).writeto(path)
    out = write_fits_copy(open_fits_image(path), tmp_path / "sub.fits", sky=2.0, valid=True,
                          method="match", subtract=True)
    data = fits.getdata(out)
    assert np.isnan(data[0, 0]) and np.all(data.ravel()[1:] == 5.0)


# -- every chip of a file ----------------------------------------------------------------------
def test_open_fits_images_gives_every_chip(mef_file):
    chips = io.open_fits_images(mef_file)
    assert [(c.ext, c.dq_ext, c.label) for c in chips] == [(1, 2, "SCI,1"), (4, 5, "SCI,2")]
    assert [c.ext for c in io.open_fits_images(mef_file, ext=("SCI", 2))] == [4]


def test_write_fits_file_processes_every_chip_in_one_copy(tmp_path, mef_file, mosaic):
    chips = io.open_fits_images(mef_file)
    out = io.write_fits_file(chips, tmp_path / "copy.fits", skies=[100.0, 120.0],
                             valid=[True, False], method="match", subtract=True)
    with fits.open(out) as hdul:
        np.testing.assert_allclose(hdul["SCI", 1].data, mosaic.images[0] - np.float32(100.0))
        assert hdul["SCI", 1].header["BKGSUB"] is True
        np.testing.assert_array_equal(hdul["SCI", 2].data, mosaic.images[1])
        assert hdul["SCI", 2].header["BKGSUB"] is False and "BKGLEVEL" not in hdul["SCI", 2].header
    other = write_primary(tmp_path / "other.fits", mosaic.images[2], mosaic.wcs[2])
    with pytest.raises(ValueError, match="one file"):
        io.write_fits_file([chips[0], open_fits_image(other)], tmp_path / "x.fits", skies=[0, 0],
                           valid=[True, True], method="match", subtract=True)
