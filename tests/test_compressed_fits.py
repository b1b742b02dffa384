"""Compressed FITS files: gzip-compressed files (``.fits.gz``) and fpack's tile-compressed
images (``.fits.fz``, `astropy.io.fits.CompImageHDU`), read and copied."""

import warnings

import numpy as np
import pytest
from astropy.io import fits

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.io import _fits
from skymatch_nb_ui.testing import make_mosaic

SKIES = [100.0, 103.0, 98.5]
#: name -> (file suffix, how the science image is stored)
KINDS = {
    "gzip": (".fits.gz", None),
    "rice": (".fits.fz", dict(compression_type="RICE_1", quantize_level=16.0)),  # lossy floats
    "lossless": (".fits.fz", dict(compression_type="GZIP_2", quantize_level=0.0)),
    "integers": (".fits.fz", dict(compression_type="RICE_1")),
}


@pytest.fixture(scope="module")
def mosaic():
    return make_mosaic((1, 3), shape=(60, 80), sky=SKIES, noise=1.0, seed=11, dtype=np.float32)


def write_set(folder, mosaic, kind, *, checksum=False):
    """The mosaic as files of ``kind`` (with a DQ extension) and, beside them, plain FITS files
    of the very pixels the compressed ones hold; (compressed names, plain names)."""
    suffix, options = KINDS[kind]
    folder.mkdir()
    packed, plain = [], []
    for k, (image, wcs) in enumerate(zip(mosaic.images, mosaic.wcs)):
        header = wcs.to_header()
        header["BUNIT"] = "MJy/sr"
        data = np.round(image * 8).astype(np.int16) if kind == "integers" else image
        dq = np.zeros(image.shape, np.int32)
        dq[:4] = 4
        if options is None:
            hdus = [fits.PrimaryHDU(), fits.ImageHDU(data, header, name="SCI"),
                    fits.ImageHDU(dq, name="DQ")]
        else:
            hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data, header, name="SCI", **options),
                    fits.CompImageHDU(dq, name="DQ", compression_type="PLIO_1")]
        name = folder / f"img{k}{suffix}"
        fits.HDUList(hdus).writeto(name, checksum=checksum)
        with fits.open(name) as hdul:  # what the file holds, decompressed
            stored = [fits.PrimaryHDU(), fits.ImageHDU(hdul["SCI"].data, hdul["SCI"].header),
                      fits.ImageHDU(hdul["DQ"].data, name="DQ")]
        plain.append(folder / f"plain{k}.fits")
        fits.HDUList(stored).writeto(plain[-1])
        packed.append(name)
    return packed, plain


@pytest.mark.parametrize("kind", KINDS)
def test_compressed_files_give_the_skies_of_their_pixels_uncompressed(tmp_path, mosaic, kind):
    packed, plain = write_set(tmp_path / kind, mosaic, kind)
    coll = ImageCollection.from_files(packed)
    reference = ImageCollection.from_files(plain)
    assert coll.names == ("img0", "img1", "img2")  # the suffix, compressed or not, dropped
    for name, other in zip(coll.names, reference.names):
        np.testing.assert_array_equal(coll.data(name), reference.data(other))
        np.testing.assert_array_equal(coll.mask(name), reference.mask(other))
        assert coll.mask(name)[:4].sum() == 0
    result, expected = coll.skymatch(skymethod="match"), reference.skymatch(skymethod="match")
    np.testing.assert_array_equal(result.sky.values, expected.sky.values)
    np.testing.assert_array_equal(result.sky_err.values, expected.sky_err.values)
    assert result.valid.values.all()


def raw_data(path, index):
    """The bytes of an HDU's data as the file stores them (a compressed table's, for tiles)."""
    with fits.open(path, disable_image_compression=True) as hdul:
        info = hdul.fileinfo(index)
    with open(path, "rb") as f:
        f.seek(info["datLoc"])
        return f.read(info["datSpan"])


def test_copies_of_gzip_files_are_gzip_with_the_plain_copies_pixels(tmp_path, mosaic):
    packed, plain = write_set(tmp_path / "in", mosaic, "gzip")
    coll, reference = ImageCollection.from_files(packed), ImageCollection.from_files(plain)
    result = coll.skymatch(skymethod="match")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    copies = coll.write_copies(tmp_path / "a", result)
    expected = reference.write_copies(tmp_path / "b", reference.skymatch(skymethod="match"))
    for copy, other, sky in zip(copies, expected, result.sky.values):
        assert copy.name.endswith(".fits.gz") and copy.read_bytes()[:2] == b"\x1f\x8b"
        with fits.open(copy) as got, fits.open(other) as want:
            np.testing.assert_array_equal(got["SCI"].data, want["SCI"].data)
            assert got["SCI"].header["BKGLEVEL"] == sky and got["SCI"].header["BKGSUB"] is True


def test_tile_compressed_chips_not_subtracted_keep_their_compressed_bytes(tmp_path, mosaic):
    packed, _ = write_set(tmp_path / "in", mosaic, "rice", checksum=True)
    coll = ImageCollection.from_files(packed)
    result = coll.skymatch(skymethod="match")
    (tmp_path / "out").mkdir()
    copies = coll.write_copies(tmp_path / "out", result, subtract=False)
    for source, copy, sky in zip(packed, copies, result.sky.values):
        assert raw_data(copy, 1) == raw_data(source, 1)  # no second quantization
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checksum that does not verify warns
            with fits.open(copy, checksum=True) as hdul:
                assert isinstance(hdul["SCI"], fits.CompImageHDU)
                assert hdul["SCI"].header["BKGLEVEL"] == sky
                assert hdul["SCI"].header["BKGSUB"] is False
                hdul["SCI"].data, hdul["DQ"].data


def test_quantized_chips_are_quantized_again_as_the_source_was(tmp_path, mosaic):
    packed, _ = write_set(tmp_path / "in", mosaic, "rice", checksum=True)
    coll = ImageCollection.from_files(packed)
    result = coll.skymatch(skymethod="match")
    (tmp_path / "out").mkdir()
    copies = coll.write_copies(tmp_path / "out", result)
    for source, copy, sky in zip(packed, copies, result.sky.values):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with fits.open(source) as src, fits.open(copy, checksum=True) as out:
                got, want = out["SCI"], src["SCI"]
                assert isinstance(got, fits.CompImageHDU)
                assert (got.compression_type, got.quantize_level, got.quantize_method) == (
                    want.compression_type, want.quantize_level, want.quantize_method)
                assert tuple(got.tile_shape) == tuple(want.tile_shape)
                left = got.data.astype(float) - (want.data.astype(float) - sky)
                assert raw_data(copy, 2) == raw_data(source, 2)  # the DQ as it was
        # Quantization at level 16 of noise of sigma 1: steps of ~1/16, errors uniform
        # within one (sd 1 / (16 sqrt(12)) = 0.018), unbiased: not the data unchanged.
        assert 0.005 < left.std() < 0.03 and abs(left.mean()) < 0.005
        assert np.abs(left).max() < 0.1


@pytest.mark.parametrize("kind", ["lossless", "integers"])
def test_losslessly_stored_chips_are_copied_losslessly(tmp_path, mosaic, kind):
    packed, plain = write_set(tmp_path / "in", mosaic, kind)
    coll, reference = ImageCollection.from_files(packed), ImageCollection.from_files(plain)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    copies = coll.write_copies(tmp_path / "a", coll.skymatch(skymethod="match"))
    expected = reference.write_copies(tmp_path / "b", reference.skymatch(skymethod="match"))
    for copy, other in zip(copies, expected):
        with fits.open(copy) as got, fits.open(other) as want:
            assert isinstance(got["SCI"], fits.CompImageHDU)
            assert got["SCI"].compression_type == "GZIP_2"
            assert got["SCI"].data.dtype.str[1:] == want["SCI"].data.dtype.str[1:]  # f8 from integers
            np.testing.assert_array_equal(got["SCI"].data, want["SCI"].data)


def test_a_compressed_file_cut_short_is_refused_naming_it(tmp_path, mosaic):
    packed, _ = write_set(tmp_path / "gz", mosaic, "gzip")
    tiles, _ = write_set(tmp_path / "fz", mosaic, "rice")
    with fits.open(tiles[0], disable_image_compression=True) as hdul:
        inside = hdul.fileinfo(1)["datLoc"] + 1000  # in the compressed table of SCI
    for source, keep, match in (
        (packed[0], packed[0].stat().st_size * 2 // 3,
         "is cut short or damaged: its HDUs as read end with HDU 0"),  # (SCI and DQ unseen)
        (packed[0], packed[0].stat().st_size - 1, "is cut short or damaged"),
        (tiles[0], inside, "is truncated: HDU 1 \\(SCI\\) needs"),
    ):
        cut = tmp_path / ("cut-" + source.name)
        cut.write_bytes(source.read_bytes()[:keep])
        with pytest.raises(OSError, match=match) as error:
            ImageCollection.from_files(cut)
        assert str(cut) in str(error.value)


def test_compressed_pixels_are_decoded_once_in_a_run_and_let_go_after(tmp_path, mosaic,
                                                                      monkeypatch):
    packed, _ = write_set(tmp_path / "in", mosaic, "rice")
    coll = ImageCollection.from_files(packed)
    coll.scheduler = "serial"  # (forked workers would decode in their own memory)
    decoded = []
    keep = _fits._keep_decoded
    monkeypatch.setattr(_fits, "_keep_decoded", lambda key, data: (decoded.append(key[:2]),
                                                                   keep(key, data)))
    coll.skymatch(skymethod="match", compare="differences")  # reads an image for each pair
    assert sorted(decoded) == sorted({(str(p.resolve()), k) for p in packed for k in (1, 2)})
    assert not _fits._DECODED  # nothing held after the run


def test_a_workers_tasks_of_one_run_decode_an_image_once(tmp_path, mosaic):
    """A pool's or a cluster's worker sees tasks, not runs: they carry the run's token
    (`_execute._in_run`), and the worker keeps the run's decoded pixels from task to task
    (600 camera CCDs: two pool workers had decompressed 8,479 times for 600 images, 33.9 s
    against 14.0 s in one process); another run's task lets them go, and so does a timer
    after the run's last task here."""
    from skymatch_nb_ui.engine import _execute

    packed, _ = write_set(tmp_path / "in", mosaic, "rice")
    image = _fits.open_fits_image(packed[0])
    assert _fits.held_decoded in _execute.WORKER_CONTEXTS
    here = _execute.Execution("serial", 1)._token  # a run of this process: nothing held
    assert _execute._in_run(here, image.data) is not _execute._in_run(here, image.data)
    assert _fits._held["token"] is None
    assert _fits._let_go_held in _execute.WORKER_RUN_ENDS
    first = _execute._in_run("1:run-1", image.data)  # (pid 1: another process's run)
    assert _execute._in_run("1:run-1", image.data) is first  # the next task: kept
    timer = _execute._worker_run["timer"]
    assert timer is not None and timer.interval == _execute.WORKER_IDLE_SECONDS
    assert _execute._in_run("1:run-2", image.data) is not first  # another run: let go
    assert len(_fits._DECODED) == 1
    timer = _execute._worker_run["timer"]
    timer.cancel()
    timer.function(*timer.args)  # the run's last task was WORKER_IDLE_SECONDS ago
    assert not _fits._DECODED and not _fits._decoded_state["runs"]
    assert image.data() is not image.data()  # nothing kept outside a run


def test_a_run_on_worker_processes_gives_the_serial_skies(tmp_path, mosaic):
    packed, _ = write_set(tmp_path / "in", mosaic, "rice")
    skies = {}
    for scheduler in ("serial", "processes"):
        coll = ImageCollection.from_files(packed)
        coll.scheduler = scheduler
        skies[scheduler] = coll.skymatch(skymethod="match", compare="differences").sky.values
    assert skies["serial"].tobytes() == skies["processes"].tobytes()


def test_kept_pixels_are_read_again_when_the_file_changes(tmp_path, mosaic, monkeypatch):
    packed, _ = write_set(tmp_path / "in", mosaic, "rice")
    image = _fits.open_fits_image(packed[0])
    assert image.data() is not image.data()  # outside a run: decoded at each read
    with _fits.keeping_decoded():
        first = image.data()
        assert image.data() is first and not first.flags.writeable
        replacement = tmp_path / "new.fits.fz"
        with fits.open(packed[0]) as hdul:
            hdul["SCI"].data = hdul["SCI"].data + np.float32(50)
            hdul.writeto(replacement)
        replacement.replace(packed[0])  # a new file under the old name
        np.testing.assert_allclose(image.data(), first + 50, atol=0.1)
    monkeypatch.setattr(_fits, "DECODED_CACHE_BYTES", first.nbytes - 1)
    with _fits.keeping_decoded():
        assert image.data() is not image.data()  # larger than what may be kept


def test_a_ccd_of_a_camera_file_is_read_alone_from_its_offset(tmp_path, monkeypatch):
    """A tile-compressed HDU is read from its byte offset: not by opening the file and
    walking its headers (45 CCDs before it: 87 against 5.5 ms a read)."""
    m = make_mosaic((1, 1), shape=(20, 30), sky=[5.0], noise=1.0, seed=4, dtype=np.float32)
    hdus = [fits.PrimaryHDU()]
    for k in range(12):
        wcs = m.wcs[0].deepcopy()
        wcs.wcs.crval = wcs.wcs.crval + [k * 0.01, 0.0]  # each CCD elsewhere
        hdus.append(fits.CompImageHDU(m.images[0] + np.float32(k), wcs.to_header(), name=f"S{k}"))
    path = tmp_path / "camera.fits.fz"
    fits.HDUList(hdus).writeto(path)
    chips = _fits.open_fits_images(path)
    assert len(chips) == 12
    opened = []
    real_open = fits.open
    monkeypatch.setattr(_fits.fits, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with real_open(path) as hdul:
        for chip in chips:
            np.testing.assert_array_equal(chip.data(), hdul[chip.ext].data)
        cut = hdul.fileinfo(12)["datLoc"] + 100
    assert opened == []  # no file walked through astropy
    path.write_bytes(path.read_bytes()[:cut])  # cut since it was opened
    with pytest.raises(OSError, match=r"camera\.fits\.fz' is truncated: HDU 12 needs"):
        chips[11].data()
