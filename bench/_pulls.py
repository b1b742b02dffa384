"""Pull statistics of one matched mosaic that account for the correlations of its errors.

The skies of one mosaic are correlated (every pair ties two of them, pairs share pixels, the
zero-mean gauge ties them all), so the spread of the pulls ``error / sky_err`` of one mosaic
scatters far more than ``1 / sqrt(2 N)`` around 1: a single mosaic of 16-64 images can show
0.6 or 1.4 with honest errors.  This module rebuilds the covariance of the skies the solve
implies (the sandwich ``G (s**2 D + t**2 C) G^T`` with the gains ``G`` of the weighted least
squares, ``D`` the pairs' own variances, ``C`` the covariances of pairs that share pixels, a
flagged pair's variance grown to what its residual shows, ``s`` the run's error scale and
``t = max(s, 1)``: `robust.fit_offsets`,
`robust.flagged_variance`, `covariance.pair_covariance`, for modes measured on each side
`covariance.error_covariance`, as the run) and gives:

- ``pull_sd``: the plain spread of ``error / sky_err`` (what the bench tables show), with its
  68% and 95% intervals for honest errors, drawn from that covariance;
- ``chi2_dof``: ``e^T C^+ e / dof`` of the error ``e`` whitened by the covariance (``dof`` =
  the valid skies less one per connected part), with its chi-square intervals: the proper
  test of calibration; its square root is the pull spread of independent, whitened errors.

Used by ``bench_vs_peers.py`` and ``study_accuracy.py --pulls``.
"""

from __future__ import annotations

import math

import numpy as np

from skymatch_nb_ui.engine.covariance import error_covariance, pair_covariance, shared_sides
from skymatch_nb_ui.engine.groups import input_overlaps


def sky_covariance(matcher, result) -> np.ndarray:
    """The covariance of ``result.delta`` (zero-mean gauge) implied by the solve's errors.

    For a run of ``matcher`` without groups, ``compare="levels"`` or ``"differences"``.
    Rows and columns of inputs without a sky are NaN.
    """
    t = result.pairs
    n = len(result.sky)
    v = np.asarray(t.valid, bool) & np.isfinite(np.asarray(t.robust_weight, float))
    a, b = np.asarray(t.a)[v], np.asarray(t.b)[v]
    w2 = (np.asarray(t.weight, float) ** 2 * np.asarray(t.robust_weight, float))[v]
    var = np.asarray(t.diff_err, float)[v] ** 2
    scale = float(result.error_scale) if math.isfinite(result.error_scale) else 1.0
    cov = np.diag(var) * scale**2
    labels = list(range(n))
    overlaps = input_overlaps(matcher.geometry.runs, labels)
    keys = [(g, h) for g, h in overlaps if g < h]
    shapes = [tuple(s) for s in matcher._shapes]
    if np.isfinite(np.asarray(t.err_a, float)).any():  # levels: each side's own error
        side_var = np.vstack([np.asarray(t.err_a, float), np.asarray(t.err_b, float)]) ** 2
    else:  # differences: each image's share of a difference's variance (input_pair_differences)
        share = 1.0 / 3.0 if result.params.get("skystat") in ("median", "midpt") else 0.5
        side_var = np.vstack([share * np.asarray(t.diff_err, float) ** 2] * 2)
    if len(keys) == len(t.a):  # pairs that share pixels
        sides = shared_sides(overlaps, keys, matcher.geometry.runs, shapes)
        stats = _pair_stats(matcher, t)
        coupled = None if stats is None else error_covariance(sides, stats)  # modes: as the run
        shared = (pair_covariance(sides, side_var) if coupled is None else coupled).toarray()
        order = {k: p for p, k in enumerate(keys)}
        rows = np.array([order[(int(x), int(y))] for x, y in zip(t.a, t.b)])[v]
        # (residuals below expectation shrink the pairs' own variances only: robust.fit_offsets)
        cov += (1.0 if scale < 1.0 else scale**2) * shared[np.ix_(rows, rows)]
    design = np.zeros((len(a), n))
    design[np.arange(len(a)), a] = 1.0
    design[np.arange(len(a)), b] = -1.0
    solved = np.isfinite(np.asarray(result.delta, float))
    design = design[:, solved]
    normal = design.T @ (w2[:, None] * design)
    gains = np.linalg.pinv(normal) @ (design.T * w2)  # minimum norm: zero mean per part
    flagged = np.asarray(t.flagged, bool)[v]
    if flagged.any():  # as `robust.flagged_variance`: a flagged pair's variance is its residual's
        free = np.eye(len(a)) - design @ gains
        expected = np.einsum("ij,jk,ik->i", free, cov, free)
        r = np.asarray(t.diff_after, float)[v]
        with np.errstate(divide="ignore", invalid="ignore"):
            grow = r**2 / expected
        grow = np.where(flagged & np.isfinite(grow) & (grow > 1.0), grow, 1.0)
        cov[np.diag_indices(len(a))] += scale**2 * var * (grow - 1.0)
    out = np.full((n, n), np.nan)
    out[np.ix_(solved, solved)] = gains @ cov @ gains.T
    return out


def _pair_stats(matcher, table):
    """The matcher's cached `PairStats` behind a result's pair table (None if not found)."""
    for pairs in getattr(matcher, "_input_pairs", {}).values():
        if len(pairs) == len(table.a) and np.array_equal(pairs.diff, table.diff_before,
                                                         equal_nan=True):
            return pairs
    return None


def pull_statistics(error, sky_err, cov, *, draws: int = 4000, seed: int = 0) -> dict:
    """Plain and whitened pull statistics of one mosaic, with their intervals for honest errors.

    ``error``: estimated minus true skies with the common offset removed (as the bench);
    ``sky_err``: the reported errors; ``cov``: `sky_covariance`.  Skies with a NaN anywhere
    are left out.
    """
    from scipy.stats import chi2

    error, sky_err = np.asarray(error, float), np.asarray(sky_err, float)
    ok = np.isfinite(error) & np.isfinite(sky_err) & np.isfinite(np.diag(cov))
    e, s, c = error[ok], sky_err[ok], cov[np.ix_(ok, ok)]
    e = e - e.mean()
    centre = np.eye(e.size) - 1.0 / e.size  # the bench removes the common offset
    c = centre @ c @ centre
    values, vectors = np.linalg.eigh(c)
    keep = values > 1e-9 * values.max()
    dof = int(keep.sum())
    whitened = (vectors[:, keep].T @ e) / np.sqrt(values[keep])
    chi2_dof = float(whitened @ whitened) / dof
    rng = np.random.default_rng(seed)
    draw = (vectors[:, keep] * np.sqrt(values[keep])) @ rng.standard_normal((dof, draws))
    draw -= draw.mean(axis=0)
    sds = (draw / s[:, None]).std(axis=0)
    return {
        "pull_sd": float(np.std(e / s)),
        "pull_sd_68": tuple(np.percentile(sds, [16, 84]).tolist()),
        "pull_sd_95": tuple(np.percentile(sds, [2.5, 97.5]).tolist()),
        "pull_sd_model": float(np.median(sds)),
        "chi2_dof": chi2_dof,
        "dof": dof,
        "chi2_68": tuple((chi2.ppf([0.16, 0.84], dof) / dof).tolist()),
        "chi2_95": tuple((chi2.ppf([0.025, 0.975], dof) / dof).tolist()),
        "err_vs_cov": float(np.median(s / np.sqrt(np.diag(cov)[ok]))),
    }
