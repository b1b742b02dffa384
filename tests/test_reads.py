"""A run's reads of large images from files: planned so that each image is read about once.

``compare="differences"`` reads an image for each pair it is in, ``global+match`` once more
for its own sky: 36 Roman detectors of 4088 x 4088 were read 86 and 122 times, about 40% of
the run.  The reads of large images are now ordered and kept between (`engine.reads`); the
values must not change by a bit, and nothing may be kept after the run.
"""
import pickle
import threading

import numpy as np
import pytest
from astropy.io import fits

from skymatch_nb_ui import ImageCollection
from skymatch_nb_ui.engine import SkyMatchCancelled, reads
from skymatch_nb_ui.engine.loaders import RecordLoader
from skymatch_nb_ui.io import _fits
from skymatch_nb_ui.testing import make_mosaic


def write_files(folder, grid, shape):
    """A mosaic's images as FITS files (SCI and DQ)."""
    mosaic = make_mosaic(grid, shape=shape, noise=1.0, sources=8, rotation=7, jitter=3,
                         mask_fraction=0.02, seed=3)
    paths = []
    for k, (image, wcs, mask) in enumerate(zip(mosaic.images, mosaic.wcs, mosaic.masks)):
        path = folder / f"img{k:02d}.fits"
        dq = fits.ImageHDU((~mask).astype(np.int16), name="DQ")
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, wcs.to_header(), name="SCI"),
                      dq]).writeto(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def fits_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("reads"), (3, 4), (60, 70))


@pytest.fixture(autouse=True)
def nothing_kept_after():
    yield
    reads.release_kept()  # (a failed test's kept pixels would fail the next ones)


@pytest.fixture
def counted(monkeypatch):
    """The science arrays read from the files (path names), and the bytes kept at each read."""
    read, kept = [], []
    original = _fits._read_pixels

    def counting(path, index, layout=None):
        if index == 1:  # (the SCI extension; DQ is HDU 2)
            read.append(path.name)
            kept.append(reads.kept_bytes())
        return original(path, index, layout)

    monkeypatch.setattr(_fits, "_read_pixels", counting)
    return read, kept


def run(paths, method, scheduler="serial", **options):
    coll = ImageCollection.from_fits(paths, group_by=None)
    coll.scheduler, coll.workers = scheduler, 2
    return coll.skymatch(skymethod=method, compare="differences", skystat="median", **options)


def assert_same_bits(first, second):
    for name in ("sky", "sky_err", "local", "delta", "npix", "stat_a", "stat_b", "err_a",
                 "err_b", "npix_a", "npix_b", "diff_before", "diff_err", "robust_weight"):
        np.testing.assert_array_equal(first[name].values, second[name].values, err_msg=name)


@pytest.mark.parametrize("method", ["match", "global+match"])
def test_planned_reads_read_each_image_once_with_the_same_bits(fits_files, counted, method,
                                                               monkeypatch):
    read, _ = counted
    monkeypatch.setattr(reads, "PLAN_PIXELS", 10**12)  # these small images: not planned
    before = run(fits_files, method)
    unplanned = len(read)
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)  # as if they were large
    read.clear()
    after = run(fits_files, method)
    assert sorted(read) == sorted(p.name for p in fits_files)  # each image read once
    assert unplanned >= len(read) + 12  # (an image per pair, and for its own sky)
    assert_same_bits(before, after)
    assert reads.kept_bytes() == 0  # nothing kept after the run


@pytest.fixture(scope="module")
def plane_files(tmp_path_factory):
    """Images large enough for cells in their overlaps (a plane run's pairs get some)."""
    return write_files(tmp_path_factory.mktemp("planes"), (2, 3), (160, 160))


@pytest.mark.parametrize("scheduler", ["serial", "processes"])
def test_planes_plan_their_reads_too_with_the_same_bits(plane_files, counted, scheduler,
                                                        monkeypatch):
    from skymatch_nb_ui.engine import _execute

    read, _ = counted
    # one image a batch, as for large images (the batches' cells are measured together: a
    # plan never changes them)
    monkeypatch.setattr(_execute, "MIN_BATCHES", 10**6)
    monkeypatch.setattr(reads, "PLAN_PIXELS", 10**12)
    before = run(plane_files, "global+match", skymodel="plane")
    unplanned = len(read)
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)
    read.clear()
    after = run(plane_files, "global+match", scheduler, skymodel="plane")
    if scheduler == "serial":  # (a pool's workers read in their own processes)
        # each image once for its cells and its pairs' cells, once for its whole sky (the
        # constants: these flat skies' slopes are not significant)
        assert sorted(read) == sorted(2 * [p.name for p in plane_files])
        assert unplanned >= len(read) + len(plane_files)
    for name in ("sky", "sky_err", "slope_x", "slope_y", "diff_before", "diff_err"):
        np.testing.assert_array_equal(after[name].values, before[name].values, err_msg=name)
    assert reads.kept_bytes() == 0


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_planned_reads_give_the_same_bits_on_threads_and_worker_processes(fits_files, scheduler,
                                                                        monkeypatch):
    expected = run(fits_files, "global+match")
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)
    assert_same_bits(expected, run(fits_files, "global+match", scheduler))
    assert reads.kept_bytes() == 0


def test_kept_pixels_stay_within_their_bytes(fits_files, counted, monkeypatch):
    read, kept = counted
    image_bytes = 60 * 70 * (4 + 1)  # float32 pixels and a bool mask
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)
    monkeypatch.setattr(reads, "KEEP_PIXELS_BYTES", 2 * image_bytes)
    expected = run(fits_files, "match")
    assert max(kept) <= 2 * image_bytes
    assert len(fits_files) < len(read) < 3 * len(fits_files)  # more reads, still planned
    monkeypatch.setattr(reads, "KEEP_PIXELS_BYTES", 0)  # nothing kept: every task reads
    read.clear(), kept.clear()
    assert_same_bits(expected, run(fits_files, "match"))
    assert max(kept) == 0 and len(read) > 2 * len(fits_files)


def test_a_cancelled_run_keeps_nothing_and_the_next_carries_on(fits_files, counted, monkeypatch):
    _, kept = counted
    monkeypatch.setattr(reads, "PLAN_PIXELS", 1)
    expected = run(fits_files, "global+match")
    coll = ImageCollection.from_fits(fits_files, group_by=None)
    coll.scheduler = "serial"
    cancel = threading.Event()

    def progress(p):
        if p.stage == "statistics" and p.done >= 5:
            cancel.set()  # (after a few tasks: images kept for the next ones)

    with pytest.raises(SkyMatchCancelled):
        coll.skymatch(skymethod="global+match", compare="differences", skystat="median",
                      progress=progress, cancel=cancel)
    assert max(kept) > 0 and reads.kept_bytes() == 0  # let go at the run's end
    cancel.clear()
    assert_same_bits(expected, coll.skymatch(skymethod="global+match", compare="differences",
                                             skystat="median", cancel=cancel))


def test_a_worker_lets_go_of_what_it_kept_when_the_run_is_over_there():
    from skymatch_nb_ui.engine import _execute

    assert reads.release_kept in _execute.WORKER_RUN_ENDS
    loader = type("Loader", (), {"pixels_key": ("worker",)})()
    pixels = (np.zeros((10, 10), np.float32), None)
    assert reads.load(loader, lambda: pixels, keep=True)[0] is pixels[0]
    assert reads.kept_bytes() == 400
    assert reads.load(loader, lambda: 1 / 0, keep=True)[0] is pixels[0]  # kept: not read
    assert reads.release_kept() == 400 and reads.kept_bytes() == 0


def test_the_last_planned_read_hands_the_pixels_over_and_lets_them_go():
    loader = type("Loader", (), {"pixels_key": ("last",)})()
    pixels = (np.zeros((10, 10), np.float32), np.ones((10, 10), bool))
    reads.load(loader, lambda: pixels, keep=True)
    assert reads.load(loader, lambda: 1 / 0, keep=False)[1] is pixels[1]
    assert reads.kept_bytes() == 0
    reads.load(loader, lambda: pixels, keep=True)
    assert reads.load(loader, lambda: 1 / 0)[0] is pixels[0]  # a read no plan knows of:
    assert reads.kept_bytes() == 500  # it uses what is kept and leaves it for the plan's
    reads.release_kept()
    mine = type("Loader", (), {})()  # a loader without a key (e.g. a user's): read each time
    assert reads.load(mine, lambda: pixels, keep=True) is pixels and reads.kept_bytes() == 0
    mine.pixels_key = ["a list"]  # a key that cannot be hashed: as none
    assert reads.load(mine, lambda: pixels, keep=True) is pixels and reads.kept_bytes() == 0


def test_file_loaders_name_their_pixels_alike_in_every_process(fits_files):
    coll = ImageCollection.from_fits(fits_files[:2], group_by=None)
    loaders = coll.matcher._loaders
    travelled = pickle.loads(pickle.dumps(loaders[0]))
    assert isinstance(travelled, RecordLoader)  # (what a worker gets: the path and HDUs)
    assert travelled.pixels_key == loaders[0].pixels_key != loaders[1].pixels_key
    other_bits = ImageCollection.from_fits(fits_files[:1], group_by=None, dqbits=4)
    assert other_bits.matcher._loaders[0].pixels_key != loaders[0].pixels_key
    hash(loaders[0].pixels_key)


def reads_with_kept(order, steps, kept):
    """Images read when ``steps`` run in ``order``, as a run keeps them: an image read again
    later is kept, within ``kept`` images (the least recently read let go first)."""
    sequence = [i for k in order for i in steps[k]]
    recent, count = [], 0
    for i, again in zip(sequence, reads.keep_flags(sequence)):
        if i in recent:
            recent.remove(i)
        else:
            count += 1
        if again:
            recent.append(i)
        del recent[:-kept]
    return count


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_runs_every_step_once_and_reads_less(seed):
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(2, 7, 2)
    n = rows * cols
    shuffled = rng.permutation(n)  # images numbered in no spatial order
    pairs = [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
    pairs += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
    steps = [tuple(int(shuffled[i]) for i in p) for p in pairs] + [(int(i),) for i in range(n)]
    for kept in (2, 4):
        order = reads.planned(steps, kept)
        assert sorted(order) == list(range(len(steps)))
        assert reads_with_kept(order, steps, kept) <= reads_with_kept(range(len(steps)), steps, kept)
    kept = int(max(rows, cols)) + 1  # (a sweep along the other side would read each once)
    assert reads_with_kept(reads.planned(steps, kept), steps, kept) <= 1.25 * n


def test_a_chain_is_read_once_with_two_kept():
    steps = [(5, 2), (0, 3), (2, 4), (3, 5), (4, 1)]  # 0-3-5-2-4-1
    order = reads.planned(steps, 2)
    assert reads_with_kept(order, steps, 2) == 6
