"""Where match matters most, mosaics dominated by diffuse emission: pixel differences recover
the offsets far better than levels, the errors tell the truth (pulls of unit spread), groups
work, and the robust solve keeps a spoiled overlap from dragging the mosaic."""

from functools import cache

import numpy as np
import pytest

from skymatch_nb_ui import SkyMatcher, skymatch
from skymatch_nb_ui.engine import COMPARES
from skymatch_nb_ui.testing import make_mosaic

STATS = ["mode", "median", "mean", "midpt"]


@cache  # shared by the tests of both compare modes; the tests never change the images
def nebula(seed, layout=(3, 3), size=256):
    """A nebula of 25 sigma per image, ~3 stars per 256^2 pixels, noise sigma 1."""
    rng = np.random.default_rng(seed)
    n = layout[0] * layout[1]
    return make_mosaic(layout, shape=(size, size), overlap=0.2, sky=100 + 20 * rng.random(n),
                       noise=1.0, sources=3, rotation=3.0, jitter=5.0, nebula=25.0, seed=rng)


def errors(result, mosaic):
    """The matched offsets minus the truth, common offset removed (in noise sigma)."""
    error = result.delta - mosaic.sky
    return error - error.mean()


def rms(values):
    return float(np.sqrt(np.mean(np.square(values))))


def test_differences_recover_known_offsets_on_a_nebula_far_better_than_levels():
    # Levels compare two samplings of a scene 25 sigma deep through different pixel grids (and
    # the mode of such a broad distribution wanders); differences cancel the scene.  Measured
    # over these 8 mosaics (rms, sigma): median 0.011 vs 0.028, mean 0.008 vs 0.016, mode
    # 0.009 vs 0.44.
    found = {(c, s): [] for c in COMPARES for s in ("median", "mean", "mode")}
    for seed in range(8):
        mosaic = nebula(seed)
        matcher = SkyMatcher(mosaic.images, mosaic.wcs)
        for compare, stat in found:
            found[(compare, stat)].append(errors(matcher.run(skystat=stat, compare=compare), mosaic))
    error = {key: rms(np.concatenate(v)) for key, v in found.items()}
    for stat, factor in (("median", 0.6), ("mean", 0.75), ("mode", 0.2)):
        assert error[("differences", stat)] < factor * error[("levels", stat)], (stat, error)
        assert error[("differences", stat)] < 0.015, (stat, error)


@pytest.mark.parametrize("compare", COMPARES)
def test_pulls_have_unit_spread_on_a_nebula_mosaic(compare):
    # sky_err covers what the pixels' noise does not: the scene seen through two pixel grids
    # (levels), the interpolation's correlations (differences), pairs that share pixels, and
    # what the pairs' residuals reveal.  Pooled over 12 mosaics of 5x5 images (300 pulls);
    # measured 0.86-1.04 (levels), 0.99-1.09 (differences).
    pulls = {stat: [] for stat in STATS}
    for seed in range(12):
        mosaic = nebula(100 + seed, layout=(5, 5), size=160)
        matcher = SkyMatcher(mosaic.images, mosaic.wcs)
        for stat in STATS:
            result = matcher.run(skystat=stat, compare=compare)
            pulls[stat].append(errors(result, mosaic) / result.sky_err)
    spread = {stat: float(np.concatenate(p).std()) for stat, p in pulls.items()}
    assert all(0.8 <= v <= 1.25 for v in spread.values()), spread


def test_levels_pair_errors_cover_the_scene_without_help_from_the_residuals():
    # compare="levels": each pair's diff_err must cover what the scene adds to the difference
    # of the two sides (two pixel grids sample a sloping nebula with centroids up to half a
    # pixel apart; a median over a broad scene moves more with the noise), so that the pairs'
    # pulls have unit spread on their own and the residuals leave the errors alone.  With the
    # pixel noise's error alone (before): pair pulls 1.7 (mean) and 1.9-2.0 (median, midpt),
    # error scales 1.3-2.0; now 0.92-0.99 and 0.7-1.2.  (Mode: its sides' errors include the
    # spread of redrawn histograms, but a peak may still jump to another hill of a bimodal
    # scene, up to 60 errors here: the robust solve flags those pairs and their errors grow
    # with their residuals; see bench/README.md.)
    for stat in ("mean", "median", "midpt"):
        pulls, scales = [], []
        for seed in range(4):
            mosaic = nebula(seed)
            result = SkyMatcher(mosaic.images, mosaic.wcs).run(skystat=stat, compare="levels")
            p = result.pairs
            pulls.append((p.diff_before - (mosaic.sky[p.a] - mosaic.sky[p.b])) / p.diff_err)
            scales.append(result.error_scale)
        spread = float(np.concatenate(pulls).std())
        assert 0.8 <= spread <= 1.2, (stat, spread)
        assert 0.6 <= np.median(scales) <= 1.3, (stat, scales)


def test_levels_mode_side_errors_follow_the_scatter_of_the_mode():
    # One side of each overlap of a noiseless nebula mosaic, with the noise drawn 40 times:
    # the scatter of its mode against its errors.  The first-order error (`err`, which the
    # robust solve uses) was 0.30-0.45 of the scatter on 6 of these 20 sides (the mode's
    # widening rule picks another kernel for another draw of the noise, and the kernels'
    # peaks sit apart on an asymmetric top) and 1.2-1.7 on 10 (the noise is as wide as the
    # kernel); median |log(error / scatter)| 0.42.  The error that enters sky_err
    # (stats.side_statistic: redrawn histograms, or the first-order error exact in the
    # noise) measured 0.71-2.7 of it, median 1.03, median |log| 0.16.
    from skymatch_nb_ui.engine.params import StatParams
    from skymatch_nb_ui.engine.stats import pixel_noise, side_statistic, sky_statistic

    rng = np.random.default_rng(3)
    mosaic = make_mosaic((3, 3), shape=(256, 256), overlap=0.2, sky=100 + 20 * rng.random(9),
                         noise=0.0, sources=3, rotation=3.0, jitter=5.0, nebula=25.0, seed=rng)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    params = StatParams(skystat="mode")
    noise = np.random.default_rng(0)
    ratio, first = [], []
    for (a, b), runs in matcher.geometry.runs.items():
        if a > b or not runs:
            continue
        scene = runs.gather(mosaic.images[a]).astype(np.float64)
        found = []
        for _ in range(40):
            values = scene + noise.standard_normal(scene.size)
            stat, err = side_statistic(values, params, noise=pixel_noise(values))
            assert stat == sky_statistic(values, params, noise=pixel_noise(values))
            found.append((stat.value, stat.err, err))
        value, lin, broad = np.array(found).T
        scatter = value.std(ddof=1)
        ratio.append(np.sqrt(np.mean(broad**2)) / scatter)
        first.append(np.sqrt(np.mean(lin**2)) / scatter)
    ratio, first = np.array(ratio), np.array(first)
    assert first.min() < 0.5 and first.max() > 1.4  # the cases: both ways off
    assert ratio.min() > 0.65, ratio
    assert 0.8 < np.median(ratio) < 1.3, ratio
    assert np.median(np.abs(np.log(ratio))) < 0.6 * np.median(np.abs(np.log(first)))


def test_levels_mode_pair_errors_follow_the_kernels_the_two_sides_chose():
    # A difference of two modes over one scene: when both sides chose one kernel, the peak
    # moved with the noise only and the pair claims that (the redrawn spread of each side,
    # which counts moves to another kernel's peak, made these errors too large: robust spread
    # of the pulls 0.73); when they chose two, the move between the kernels' peaks is in the
    # difference and in its error (sd of the pulls 1.90 without it).  4x4 mosaics of 512^2
    # (a nebula of 25 sigma per image, 12 stars each), seeds 0-3: 147 pairs of one kernel,
    # 20 of two.
    one, two = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        mosaic = make_mosaic((4, 4), shape=(512, 512), overlap=0.2, sky=100 + 20 * rng.random(16),
                             noise=1.0, sources=12, rotation=3.0, jitter=5.0, nebula=25.0, seed=rng)
        matcher = SkyMatcher(mosaic.images, mosaic.wcs)
        pairs = matcher.run(skystat="mode", compare="levels").pairs
        (stats,) = matcher._input_pairs.values()  # the pair statistics behind the table
        kernel_a, kernel_b = stats.side_kernel
        same = np.abs(np.log(kernel_a / kernel_b)) < np.log(1.15)
        pull = (pairs.diff_before - (mosaic.sky[pairs.a] - mosaic.sky[pairs.b])) / pairs.diff_err
        kept = ~pairs.flagged
        one += list(pull[kept & same])
        two += list(pull[kept & ~same])
    assert len(one) > 100 and len(two) > 10
    assert 0.85 < 1.4826 * np.median(np.abs(one)) < 1.3
    assert np.std(two) < 1.6


def test_levels_scene_errors_leave_the_skies_alone():
    # The scene's share of a pair's error enters the sky errors, not the robust weights: the
    # skies (and the flagged pairs) are those of the reference-compatible errors alone.
    from skymatch_nb_ui.engine import matcher as matcher_module

    mosaic = nebula(100, layout=(5, 5), size=160)  # shared with the pulls test's mosaics
    runs = {}
    for name, extra in (("scene", matcher_module.scene_error),
                        ("noise only", lambda pairs, *args, **kw: np.zeros(len(pairs)))):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(matcher_module, "scene_error", extra)
            runs[name] = SkyMatcher(mosaic.images, mosaic.wcs).run(skystat="median",
                                                                   compare="levels")
    assert runs["scene"].pairs.flagged.any()  # the robust solve has work to do here
    np.testing.assert_array_equal(runs["scene"].sky, runs["noise only"].sky)
    np.testing.assert_array_equal(runs["scene"].pairs.flagged, runs["noise only"].pairs.flagged)
    assert np.all(runs["scene"].pairs.diff_err >= runs["noise only"].pairs.diff_err)
    assert np.any(runs["scene"].pairs.diff_err > 1.5 * runs["noise only"].pairs.diff_err)


def test_levels_mode_couplings_change_the_errors_not_the_skies():
    # Sides that share pixels are correlated as modes (`covariance.mode_coupling`) in the sky
    # errors only: the robust weights, the flags and the skies are those of the mean-like model.
    from skymatch_nb_ui.engine import matcher as matcher_module

    mosaic = nebula(100, layout=(5, 5), size=160)  # shared with the pulls test's mosaics
    runs = {}
    for name, coupled in (("modes", matcher_module.error_covariance),
                          ("mean-like", lambda shared, pairs: None)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(matcher_module, "error_covariance", coupled)
            runs[name] = SkyMatcher(mosaic.images, mosaic.wcs).run(skystat="mode", compare="levels")
    np.testing.assert_array_equal(runs["modes"].sky, runs["mean-like"].sky)
    np.testing.assert_array_equal(runs["modes"].pairs.flagged, runs["mean-like"].pairs.flagged)
    np.testing.assert_array_equal(runs["modes"].pairs.robust_weight,
                                  runs["mean-like"].pairs.robust_weight)
    assert not np.allclose(runs["modes"].sky_err, runs["mean-like"].sky_err)


def test_levels_mode_errors_are_calibrated_on_scene_dominated_mosaics():
    # Whitened by the covariance the solve implies (bench/_pulls.py), the errors of 6 mosaics
    # of 4x4 images of 512^2 (a nebula of 25 sigma per image, 12 stars each) give a pooled
    # chi2/dof of 0.82 over 90 degrees of freedom (95% for honest errors: 0.73-1.29).  With
    # the modes of sides that share pixels correlated as means it was 0.65: errors too large.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from _pulls import pull_statistics, sky_covariance

    chi2, dof = 0.0, 0
    for seed in range(6):
        rng = np.random.default_rng(seed)
        mosaic = make_mosaic((4, 4), shape=(512, 512), overlap=0.2, sky=100 + 20 * rng.random(16),
                             noise=1.0, sources=12, rotation=3.0, jitter=5.0, nebula=25.0, seed=rng)
        matcher = SkyMatcher(mosaic.images, mosaic.wcs)
        result = matcher.run(skystat="mode", compare="levels")
        found = pull_statistics(errors(result, mosaic), result.sky_err,
                                sky_covariance(matcher, result))
        chi2 += found["chi2_dof"] * found["dof"]
        dof += found["dof"]
    assert dof == 90
    assert 0.72 < chi2 / dof < 1.4, chi2 / dof


def test_differences_with_groups_recover_the_group_skies():
    # Two exposures of three detectors each (rows of the grid): one sky per exposure.  The
    # offset of two groups is the pixel-count weighted mean of their members' differences.
    mosaic = make_mosaic((2, 3), shape=(120, 120), sky=[10, 10, 10, 13, 13, 13], noise=0.5,
                         nebula=10.0, rotation=20.0, seed=3)
    groups = ["e1", "e1", "e1", "e2", "e2", "e2"]
    result = skymatch(mosaic.images, mosaic.wcs, groups=groups, skystat="median")
    assert len(result.pairs) == 1 and result.pairs.npix_a[0] == result.pairs.npix_b[0] > 0
    np.testing.assert_allclose(result.sky, [0, 0, 0, 3, 3, 3], atol=0.05)
    levels = skymatch(mosaic.images, mosaic.wcs, groups=groups, skystat="median",
                      compare="levels")
    assert abs(result.sky[3] - 3) < abs(levels.sky[3] - 3)


def add_trail(image, runs, level, width):
    """A band of +level, width pixels wide, diagonally across the pixels runs of image."""
    y = np.repeat(runs.rows, runs.stop - runs.start)
    x = np.concatenate([np.arange(s, e) for s, e in zip(runs.start, runs.stop)])
    band = np.abs((x - x.mean()) - (y - y.mean())) < width / 2
    image[y[band], x[band]] += level


def test_a_satellite_trail_in_one_image_is_flagged_and_does_not_drag_the_mosaic():
    # A +3 sigma trail across a quarter of one overlap, in one image only: the mean of that
    # pair's differences is off by ~0.7 sigma, 20 times its error.  Measured max error: clean
    # 0.059, plain least squares 0.198, robust 0.054 sigma.
    mosaic = make_mosaic((4, 4), shape=(128, 128), noise=1.0, rotation=3.0, jitter=3.0, seed=1)
    clean = SkyMatcher(mosaic.images, mosaic.wcs)
    clean_error = np.abs(errors(clean.run(skystat="mean"), mosaic)).max()
    images = [im.copy() for im in mosaic.images]
    add_trail(images[5], clean.geometry.runs[(5, 6)], 3.0, 30)
    matcher = SkyMatcher(images, mosaic.wcs)
    plain = matcher.run(skystat="mean", robust=False)
    robust = matcher.run(skystat="mean")
    trail = (robust.pairs.a == 5) & (robust.pairs.b == 6)
    assert robust.pairs.flagged.tolist() == trail.tolist()  # that pair, and only that pair
    assert robust.pairs.robust_weight[trail][0] < 0.2
    assert np.all(robust.pairs.robust_weight[~trail] == 1.0)
    assert not plain.pairs.flagged.any() and np.all(plain.pairs.robust_weight == 1.0)
    plain_error = np.abs(errors(plain, mosaic)).max()
    robust_error = np.abs(errors(robust, mosaic)).max()
    assert robust_error < 0.4 * plain_error and robust_error < 1.5 * clean_error


def test_an_image_whose_every_pair_is_flagged_gets_an_error_that_covers_its_sky():
    # Image 8 (a corner: pairs with 4, 5 and 7) is spoiled differently on each overlap
    # (+6 where only 5 sees it, -2 where only 7 does): its three pairs disagree and the robust
    # solve flags all three.  Its sky then rests on pairs that disagree, and its error must
    # say so.  Measured: error -0.53 sigma; sky_err 0.034 before (the flagged pairs' own
    # claims), 1.01 now; the other images' largest pull 4.5 before, 0.8 now.
    mosaic = make_mosaic((3, 3), shape=(128, 128), noise=1.0, rotation=3.0, jitter=3.0, seed=2)
    clean = SkyMatcher(mosaic.images, mosaic.wcs)
    runs = clean.geometry.runs
    only = {}
    for other in (4, 5, 7):
        mask = np.zeros(mosaic.images[8].shape, bool)
        r = runs[(8, other)]
        for row, start, stop in zip(r.rows, r.start, r.stop):
            mask[row, start:stop] = True
        only[other] = mask
    images = [im.copy() for im in mosaic.images]
    images[8][only[5] & ~only[4]] += 6.0
    images[8][only[7] & ~only[4]] -= 2.0
    result = SkyMatcher(images, mosaic.wcs).run(skystat="median", compare="levels")
    mine = (result.pairs.a == 8) | (result.pairs.b == 8)
    assert result.pairs.flagged.tolist() == mine.tolist()  # all of image 8's pairs, no other
    error = errors(result, mosaic)
    clean_err = clean.run(skystat="median", compare="levels").sky_err
    assert abs(error[8]) > 10 * clean_err[8]  # the spoiled sky is really off...
    assert abs(error[8]) < 2.0 * result.sky_err[8]  # ...and its error says so
    assert np.abs(error[:8] / result.sky_err[:8]).max() < 2.0


def _corner_grid(spoil_11_15: float, spoil_14_15: float):
    """A 4 x 4 grid with diagonals (42 pairs, errors 0.02); the corner's pair 11-15 outweighs
    its two others (weights 1 against 0.2 and 0.5); two of its pairs spoiled as asked."""
    k = np.arange(16).reshape(4, 4)
    i = np.r_[k[:, :-1].ravel(), k[:-1].ravel(), k[:-1, :-1].ravel(), k[:-1, 1:].ravel()]
    j = np.r_[k[:, 1:].ravel(), k[1:].ravel(), k[1:, 1:].ravel(), k[1:, :-1].ravel()]
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 10, 16)
    sd = np.full(len(i), 0.02)
    diff = truth[i] - truth[j] + rng.normal(0, 1, len(i)) * sd
    weight = np.ones(len(i))
    weight[(i == 10) & (j == 15)], weight[(i == 14) & (j == 15)] = 0.2, 0.5
    diff[(i == 11) & (j == 15)] += spoil_11_15
    diff[(i == 14) & (j == 15)] += spoil_14_15
    return i, j, diff, weight, sd, truth


def test_a_corner_outweighed_by_its_one_bad_pair_goes_where_its_other_pairs_agree():
    # The corner's pair 11-15 is off by 750 errors and outweighs the two good ones: least
    # squares starts between their answers, and the reweighting used to settle there, all
    # three pairs flagged and the corner's sky 10 off (the bench's N=16 nebula mosaic, seed 5,
    # mode, levels: a corner 6.4 sigma off, two of its three pairs agreeing).  Now the corner
    # goes where two of its three pairs agree, and only the bad pair is flagged.
    from skymatch_nb_ui.engine.robust import fit_offsets

    i, j, diff, weight, sd, truth = _corner_grid(15.0, 0.0)
    fit = fit_offsets(16, i, j, diff, weight, sd**2)
    assert np.flatnonzero(fit.flagged).tolist() == np.flatnonzero((i == 11) & (j == 15)).tolist()
    error = fit.delta - truth
    error -= error.mean()
    assert abs(error[15]) < 3 * sd[0]
    # as if the bad pair were not there, to a fraction of the errors
    kept = ~((i == 11) & (j == 15))
    without = fit_offsets(16, i[kept], j[kept], diff[kept], weight[kept], sd[kept] ** 2)
    np.testing.assert_allclose(fit.delta, without.delta, atol=0.2 * sd[0])
    clean = fit_offsets(16, i, j, *_corner_grid(0.0, 0.0)[2:4], sd**2)
    # without flagged pairs nothing changes
    plain = fit_offsets(16, i, j, *_corner_grid(0.0, 0.0)[2:4], sd**2, robust=False)
    assert not clean.flagged.any()
    np.testing.assert_array_equal(clean.delta_err, plain.delta_err)
    np.testing.assert_array_equal(clean.delta, plain.delta)


def test_a_corner_whose_pairs_all_disagree_stays_with_an_error_that_covers_it():
    # Two of the corner's three pairs spoiled, differently (+15 and +6): no two of its pairs
    # agree, so no answer is believed over the others: all three are flagged and the corner's
    # error (the flagged pairs' variances grown to their residuals) covers its sky, which is
    # 12 off.  Before `flagged_variance` it claimed 0.013.
    from skymatch_nb_ui.engine.robust import fit_offsets

    i, j, diff, weight, sd, truth = _corner_grid(15.0, 6.0)
    fit = fit_offsets(16, i, j, diff, weight, sd**2)
    assert np.flatnonzero(fit.flagged).tolist() == np.flatnonzero(j == 15).tolist()
    error = fit.delta - truth
    error -= error.mean()
    assert abs(error[15]) > 5.0
    # the corner's error in the zero-mean gauge moves every sky by 1/16 of it: all pulls < 3
    assert np.abs(error / fit.delta_err).max() < 3.0


def test_without_outliers_the_robust_solve_is_plain_least_squares():
    mosaic = make_mosaic((3, 3), shape=(100, 100), noise=1.0, sources=3, seed=8)
    matcher = SkyMatcher(mosaic.images, mosaic.wcs)
    for compare in COMPARES:
        robust = matcher.run(skystat="median", compare=compare)
        plain = matcher.run(skystat="median", compare=compare, robust=False)
        assert not robust.pairs.flagged.any()
        np.testing.assert_array_equal(robust.sky, plain.sky)
        np.testing.assert_array_equal(robust.sky_err, plain.sky_err)


def test_the_pair_table_reports_the_difference_its_error_and_the_residual():
    mosaic = nebula(4)
    result = skymatch(mosaic.images, mosaic.wcs, skystat="median")
    p = result.pairs
    truth = mosaic.sky[p.a] - mosaic.sky[p.b]
    assert np.all(np.isnan(p.stat_a)) and np.all(np.isnan(p.err_a))  # differences: no sides
    assert np.all(p.diff_err > 0) and np.all(p.npix_a == p.npix_b)
    assert np.abs((p.diff_before - truth) / p.diff_err).max() < 5
    np.testing.assert_allclose(p.diff_after, p.diff_before - (result.sky[p.a] - result.sky[p.b]))
    assert 0.5 < result.error_scale < 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noiseless_images_with_gradients_and_stars_keep_every_pixel_difference(dtype):
    # no noise to judge a step by: nothing may count as too steep to interpolate (a noise
    # estimate of 0 once made every difference unusable and every pair invalid)
    mosaic = make_mosaic((2, 3), shape=(120, 120), overlap=0.25, sky=[10, 30, 15, 20, 15, 25],
                         noise=0.0, sources=15, rotation=2.0, dtype=dtype, seed=4)
    y, x = np.mgrid[0:120, 0:120]
    rng = np.random.default_rng(4)
    images = [(image + rng.uniform(-0.05, 0.05) * x + rng.uniform(-0.05, 0.05) * y).astype(dtype)
              for image in mosaic.images]
    levels = skymatch(images, mosaic.wcs, skymethod="match", skystat="median", compare="levels")
    differences = skymatch(images, mosaic.wcs, skymethod="match", skystat="median",
                           compare="differences")
    assert differences.valid.all() and (differences.pairs.npix_a > 500).all()
    np.testing.assert_allclose(differences.sky, levels.sky, atol=1.0)


def test_a_sides_plane_fit_does_not_alias_with_its_rows():
    # The sampled pixels of a side's plane fit (measure._region_statistics): a regular stride
    # of about a row's length ran down a diagonal, x + y constant, and the fit returned slopes
    # of -1 per pixel on a flat sky (a scene error 100x the noise's, and the error scale fell
    # to 0.06 on a flat 4x4 mosaic).
    from skymatch_nb_ui.engine.geometry import Runs
    from skymatch_nb_ui.engine.measure import _region_statistics, thread_scratch
    from skymatch_nb_ui.engine.params import StatParams

    image = 100.0 + np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    for width in (198, 199, 200, 205):  # rows about the sample's stride long
        runs = Runs(np.arange(1024), np.full(1024, 1024 - width), np.full(1024, 1024))
        side, = _region_statistics(image, None, [(runs,)], StatParams(), thread_scratch())
        x, y, gx, gy = side.x, side.y, side.gx, side.gy
        assert abs(x - (1024 - (width + 1) / 2)) < 1e-9 and abs(y - 511.5) < 1e-9
        assert abs(gx) < 0.01 and abs(gy) < 0.001, (width, gx, gy)


def _gwcs_mosaic(seed):
    """Four distorted NIRCam-like detectors (gwcs) of 160^2 pixels, a nebula, masks and NaNs."""
    from skymatch_nb_ui.testing.instruments import nircam_like_gwcs

    rng = np.random.default_rng(seed)
    shape = (160, 160)
    offsets = [(-12, -12), (12, -12), (-12, 12), (12, 12)]  # arcsec
    wcs = [nircam_like_gwcs((150.0 + dx / 3600 / np.cos(np.radians(2.0)), 2.0 + dy / 3600),
                            roll=r, shape=shape, pixel_scale=0.2, distortion=4.0)
           for (dx, dy), r in zip(offsets, (0.0, 20.0, 50.0, 80.0))]
    images, masks = [], []
    for k, w in enumerate(wcs):
        y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
        lon, lat = w(x, y, with_bounding_box=False)
        scene = 8.0 * np.sin((lon - 150.0) * 3600 / 9.0) * np.cos((lat - 2.0) * 3600 / 7.0)
        im = (scene + 3.0 * k + rng.standard_normal(shape)).astype(np.float32)
        im[rng.random(shape) < 0.01] = np.nan
        images.append(im)
        masks.append(rng.random(shape) > 0.03)
    return images, wcs, masks


@pytest.mark.parametrize("skymodel", ["constant", "plane"])
@pytest.mark.parametrize("kind", ["masked-groups", "gwcs"])
def test_batched_differences_agree_with_pair_by_pair(monkeypatch, kind, skymodel):
    # Small images' pairs are interpolated together (`many_pair_differences`); the same skies
    # as one pair at a time (which it differs from only in the noise that flags steep points:
    # the whole image's), far within their errors, with masks, NaNs, limits, groups and gwcs.
    from skymatch_nb_ui.engine import differences

    options = {"skystat": "mode", "compare": "differences", "skymodel": skymodel}
    if kind == "gwcs":
        images, wcs, masks = _gwcs_mosaic(1)
        groups = None
    else:
        m = make_mosaic((3, 3), shape=(128, 128), overlap=0.25, noise=1.0, gradient=2.0,
                        sources=4, rotation=3.0, jitter=3.0, nebula=10.0, nan_fraction=0.01,
                        mask_fraction=0.02, seed=7)
        images, wcs, masks = m.images, m.wcs, m.masks
        groups = [0, 0, 1, 2, 3, 4, 5, 6, 6]
        options.update(lower=-50.0, upper=1e4)

    def run():
        return SkyMatcher(images, wcs, masks=masks).run(groups=groups, skymethod="match", **options)

    batched = run()
    monkeypatch.setattr(differences, "BATCH_IMAGE_PIXELS", 0)  # every pair one by one
    single = run()
    assert batched.valid.all() and single.valid.all()
    assert np.all(np.abs(batched.sky - single.sky) <= 0.05 * single.sky_err)
    np.testing.assert_allclose(batched.sky_err, single.sky_err, rtol=0.03)
    assert np.all(np.abs(batched.pairs.diff_before - single.pairs.diff_before)
                  <= 0.05 * single.pairs.diff_err)
