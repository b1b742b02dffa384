"""The sides of ``compare="levels"`` computed together give what each side gives alone.

Two terms of a side's statistic are computed for many sides at once (issue 12's small end):
the plane fitted to a sample of its pixels (`measure._plane_fits`, all the sides of an
image, stacked by sample size) and the mode's error for the sky errors (`stats.
mode_broad_errors`, all the sides of a run, stacked by histogram size).  Promised: bit for
bit the values of one side at a time, and the old per-side computations' (the plane fit
exactly; the redrawn histograms' smoothing to rounding).
"""

import math
import pickle

import numpy as np
import pytest
from scipy.ndimage import convolve1d

from skymatch_nb_ui import skymatch
from skymatch_nb_ui.engine import stats
from skymatch_nb_ui.engine.geometry import Runs
from skymatch_nb_ui.engine.loaders import ArrayImage
from skymatch_nb_ui.engine.measure import (
    Task,
    _clean_samples,
    _CleanSide,
    _plane_fits,
    _plane_sample,
    _spread_sample,
    finish_sides,
    measure_image,
)
from skymatch_nb_ui.engine.params import StatParams
from skymatch_nb_ui.testing import make_mosaic


def _bits(values) -> tuple:
    """Exact identity of a tuple of numbers (or tuples of them), NaN equal to NaN."""
    return tuple(_bits(v) if isinstance(v, tuple) else np.float64(v).tobytes() for v in values)


def _plane_alone(sample: np.ndarray) -> tuple[float, float]:
    """The side's plane fit as it was computed one side at a time (the oracle)."""
    design, v = np.ascontiguousarray(sample[:3]), sample[3].copy()
    keep = coef = None
    for _ in range(2):
        if keep is None:
            normal, rhs = design @ design.T, design @ v
        else:
            if np.count_nonzero(keep) < 64:
                break
            weighted = design * keep
            normal, rhs = weighted @ design.T, weighted @ v
        try:
            coef = np.linalg.solve(normal, rhs)
        except np.linalg.LinAlgError:
            return math.nan, math.nan
        residual = np.abs(v - np.dot(coef, design))
        spread = 1.4826 * float(np.median(residual))
        if not spread > 0:
            break
        keep = residual <= 4.0 * spread
        if keep.all():
            break
    return float(coef[1]), float(coef[2])


def _sample(rng, k, *, slope=(0.01, -0.02), stars=0, constant=False, line=False):
    x = rng.integers(0, 1000, k).astype(float)
    y = x.copy() if line else rng.integers(0, 300, k).astype(float)
    v = np.full(k, 7.0) if constant else 100.0 + slope[0] * x + slope[1] * y + rng.standard_normal(k)
    v[rng.choice(k, stars, replace=False)] += 50.0
    return np.array([np.ones(k), x - x.mean(), y - y.mean(), v])


def test_plane_fits_together_are_each_sides_fit_alone():
    rng = np.random.default_rng(3)
    samples = [
        _sample(rng, 1024), _sample(rng, 1024, stars=40), _sample(rng, 1024, stars=3),
        _sample(rng, 500), _sample(rng, 500, stars=20), _sample(rng, 64), _sample(rng, 777),
        _sample(rng, 1024, constant=True),  # no spread: the first fit stands
        _sample(rng, 70, stars=12),  # the refit would keep fewer than 64: the first stands
        _sample(rng, 1024, line=True),  # x = y: singular, NaN
    ]
    together = _plane_fits(samples)
    for sample, got in zip(samples, together):
        assert _bits(got) == _bits(_plane_alone(sample))
        assert _bits(got) == _bits(_plane_fits([sample])[0])
    assert np.isnan(together[-1]).all() and np.isfinite(together[:-1]).all()
    assert together[1] != _plane_fits([samples[1][:, :800]])[0]  # (the sample matters)
    assert abs(together[1][0] - 0.01) < 0.005 and abs(together[1][1] + 0.02) < 0.005


def _regions():
    def rect(y0, y1, x0, x1):
        rows = np.arange(y0, y1)
        return Runs(rows, np.full(rows.size, x0), np.full(rows.size, x1))

    rows = np.arange(40, 200)
    slanted = Runs(rows, 10 + rows // 3, 120 + rows // 2)
    empty = Runs(np.array([], int), np.array([], int), np.array([], int))
    return [None, (rect(0, 60, 0, 240),), (rect(180, 240, 0, 240),),  # two of one size
            (slanted,), (rect(0, 30, 200, 240), rect(200, 240, 0, 30)),  # a union
            (rect(100, 102, 100, 103),),  # 6 pixels: no plane
            (rect(0, 4, 250, 260),),  # all NaN below
            (empty,)]


def _image(kind: str):
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:240, :260]
    image = (100.0 + 0.02 * xx - 0.01 * yy + 5.0 * np.sin(xx / 30.0)
             + rng.standard_normal((240, 260))).astype(np.float32)
    image[rng.random(image.shape) < 0.002] += 80.0  # stars
    good = None
    if kind == "constant":
        image[...] = 42.0
    if kind == "holes":
        image[rng.random(image.shape) < 0.01] = np.nan
        image[:4, 250:] = np.nan
        good = rng.random(image.shape) > 0.05
    return ArrayImage(image, good)


@pytest.mark.parametrize("kind", ["clean", "holes", "constant"])
@pytest.mark.parametrize("params", [StatParams(skystat="mode"), StatParams(skystat="median"),
                                    StatParams(skystat="mode", lower=99.0, upper=140.0),
                                    StatParams(skystat="mean", nclip=0)])
def test_an_images_sides_together_are_each_side_alone(kind, params):
    loader, regions = _image(kind), _regions()
    together = measure_image(loader, regions, params)
    alone = [measure_image(loader, [region], params)[0] for region in regions]
    assert [_bits(s) for s in together] == [_bits(s) for s in alone]
    deferred = measure_image(loader, regions, params, defer=True)
    found = dict(enumerate(deferred))
    finish_sides(found)
    assert [_bits(found[k]) for k in range(len(regions))] == [_bits(s) for s in together]
    assert together[-1].npix == 0  # the empty region
    if kind == "holes":
        assert together[-2].npix == 0 and math.isnan(together[-2].x)  # all NaN
    if kind != "constant":
        assert np.isnan(together[5].gx) and np.isfinite(together[1].gx)


def _mode_sides(count=40):
    """`ModeBroad`s of sets of values like the overlaps of a nebula: some redraw."""
    rng = np.random.default_rng(11)
    params, sides = StatParams(skystat="mode"), []
    for i in range(count):
        n = int(rng.integers(2_000, 60_000))
        scene = rng.choice([0.0, 0.6, 1.2], n, p=[0.5, 0.3, 0.2]) * (i % 4)
        values = 100.0 + scene + rng.standard_normal(n)
        _, broad, _ = stats.side_statistic(values, params, noise=1.0, kernel=True, defer=True)
        if isinstance(broad, stats.ModeBroad):
            sides.append(broad)
    return sides


def test_mode_errors_of_a_run_together_are_each_sides_alone():
    sides = _mode_sides()
    assert sum(side.redraw for side in sides) >= 3 and sum(not side.redraw for side in sides) >= 3
    assert len({side.counts.size for side in sides}) < len(sides)  # some stacked
    together = stats.mode_broad_errors(sides)
    alone = [stats.mode_broad_errors([side])[0] for side in sides]
    assert _bits(together) == _bits(alone)
    assert all(broad > 0 and fixed > 0 for broad, fixed in together)
    pickle.loads(pickle.dumps(sides[0]))  # travels from a worker


@pytest.mark.parametrize("bins", [5, 80, 300])
def test_redrawn_histograms_are_smoothed_as_by_a_convolution(bins):
    # The redrawn histograms of all sides are smoothed by one stacked product with each
    # side's banded kernel matrix; before, by scipy's convolution of each side's rows (and
    # the observed histogram by `_smoothed`, numpy's): the same to rounding, kernels
    # narrower and wider than the histogram.
    widths = np.array([0.7, 3.2, 12.5, 40.0])
    counts = np.random.default_rng(2).poisson(50.0, (len(widths), 3, bins)).astype(float)
    smooth = counts @ stats._kernel_matrices(widths, bins)
    for s, width in enumerate(widths):
        reach = math.ceil(stats._MODE_REACH * width)
        weights = np.exp(-0.5 * (np.arange(-reach, reach + 1) / width) ** 2)
        expected = convolve1d(counts[s], weights, axis=1, mode="constant")
        np.testing.assert_allclose(smooth[s], expected, rtol=1e-13, atol=0)
        np.testing.assert_allclose(smooth[s, 0], stats._smoothed(counts[s, 0], width),
                                   rtol=1e-13, atol=0)


def test_a_task_defers_and_the_run_finishes():
    mosaic = make_mosaic((2, 2), shape=(160, 160), noise=1.0, nebula=20.0, seed=4)
    task = pickle.loads(pickle.dumps(Task(ArrayImage(mosaic.images[0]), (None,), 1, defer=True)))
    assert task.defer
    kwargs = dict(skymethod="match", compare="levels", skystat="mode")
    serial = skymatch(mosaic.images, mosaic.wcs, scheduler="serial", **kwargs)
    threads = skymatch(mosaic.images, mosaic.wcs, scheduler="threads", workers=2, **kwargs)
    assert _bits(serial.sky_err) == _bits(threads.sky_err) and _bits(serial.sky) == _bits(threads.sky)
    assert np.isfinite(serial.sky_err).all()


def test_only_small_histograms_wait_for_the_run():
    # A pending side holds its histogram until the run computes it: at most 1024 bins.
    values = 100.0 + np.random.default_rng(5).standard_normal(20_000)
    for binwidth, waits in ((0.1, True), (0.002, False)):
        params = StatParams(skystat="mode", binwidth=binwidth)
        _, broad, _ = stats.side_statistic(values, params, noise=1.0, kernel=True, defer=True)
        _, now, _ = stats.side_statistic(values, params, noise=1.0, kernel=True)
        assert isinstance(broad, stats.ModeBroad) == waits
        assert (stats.mode_broad_errors([broad])[0][0] if waits else broad) == now


def test_clean_sides_are_sampled_together_as_each_alone():
    # The centroid and the plane-fit sample of an image's sides whose every pixel is usable,
    # found for all of them at once (one searchsorted, exact sums): each side's own, bit for bit.
    image = _image("clean").pixels
    sides = [r for region in _regions()[1:] if region and region[0]
             for r in [Runs.union(list(region), image.shape)]]
    sides += [Runs(np.array([5]), np.array([3]), np.array([4]))]  # one pixel: no sample
    plans = []
    for runs in sides:
        t = _spread_sample(runs.npix)
        plans.append(_CleanSide(runs, t, runs.gather(image)[t].astype(np.float64)))
    together = _clean_samples(plans)
    for runs, (cx, cy, sample) in zip(sides, together):
        ax, ay, alone = _plane_sample(runs.gather(image), None, runs, StatParams())
        assert _bits((cx, cy)) == _bits((ax, ay))
        assert (sample is None) == (alone is None)
        if sample is not None:
            assert sample.tobytes() == alone.tobytes()  # (C order, the view's too)
    assert together[-1][2] is None and together[0][2].shape == (4, 1024)


def test_a_redrawn_spread_waits_until_a_pair_needs_it():
    # The spread of a side's redrawn histograms serves only the pairs whose two modes'
    # kernels say nothing (`measure._broad_excess`'s fallback): finishing a run's sides
    # leaves it waiting (`SideStat.redraw`), and a pair that falls back on it gets the value
    # computed at once (`side_statistic` without deferring), bit for bit.
    from skymatch_nb_ui.engine.measure import SideStat, _broad_excess, _finished

    waiting = []
    for side in _mode_sides():
        if not side.redraw:
            continue
        stat = stats.SkyStat(100.0, side.n, side.err)
        (finished,) = _finished([SideStat(*stat, broad_err=side, ladder=((1.0, 100.0),))])
        assert math.isnan(finished.broad_err) and finished.redraw is not None
        assert finished.fixed_err == stats.mode_broad_errors([side])[0][1]
        waiting.append((side, finished))
    assert len(waiting) >= 3
    plain = SideStat(100.0, 1000, 0.1, broad_err=0.2)  # no ladder: the pair falls back
    for side, finished in waiting:
        (now, _), = stats.mode_broad_errors([side])
        assert _broad_excess(finished, plain) == [now**2 - side.err**2, 0.2**2 - 0.1**2]
        pickle.loads(pickle.dumps(finished))


@pytest.mark.parametrize("seed", range(4))
def test_a_modes_kernels_together_are_each_kernel_alone(seed):
    # `_mode` locates the peak with all its kernels at once (`stats._smoothed_peaks`): the
    # peaks and errors of `_smoothed_peak` with one kernel at a time, bit for bit (they
    # decide the sky).  Histograms of few and many bins, narrow and wide kernels, peaks at
    # an end (no peak), skewed and flat tops.
    rng = np.random.default_rng(seed)
    for bins in (3, 4, 17, 80, 300, 1500):
        counts = rng.poisson(rng.uniform(1, 400) * np.exp(-0.5 * np.linspace(-3, 3, bins) ** 2))
        if seed == 1:
            counts = np.sort(counts)  # the peak at the last bin
        if seed == 2:
            counts = counts + rng.poisson(50.0, bins) * (np.arange(bins) > bins // 2)
        counts = counts.astype(float)
        kernels = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
        widths = [k / 0.1 for k in kernels]
        centres = np.arange(bins) + 0.5
        n = int(counts.sum()) + 1
        together = list(stats._smoothed_peaks(counts, widths, 0.1, 1.0, n, kernels, centres))
        alone = [stats._smoothed_peak(counts, w, 0.1, 1.0, n, k, centres)
                 for w, k in zip(widths, kernels)]
        assert [_bits(f) for f in together] == [_bits(f) for f in alone]
