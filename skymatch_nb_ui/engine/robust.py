"""The offsets of the match methods: robust to spoiled pairs, with errors calibrated on the fit.

On top of the weighted least-squares primitive (`lstsq.solve_offsets`):

1. **Robust weights** (iteratively reweighted least squares).  Each pair's residual is
   compared with its expected spread (`lstsq.MatchSolution.residual_var`: it accounts for what
   the fit absorbs and for pairs that share pixels), in units of the residuals' own robust
   spread (1.4826 times their median absolute value, so that mis-scaled errors do not flag
   everything or nothing).  A pair beyond ``4`` such units has its weight multiplied by
   ``(4 / t)**2`` (``t``: its residual in those units) and is *flagged*; the others keep their
   weight, so a mosaic without outliers is solved exactly as by plain least squares.  Repeat
   until the weights settle.  The robust spread may only fall from one iteration to the next
   (re-estimated freely it could make the weights cycle for ever, and the answer then
   depended on rounding, e.g. on the order of the inputs).  The influence of a flagged pair,
   ``weight * residual``, falls as ``1 / t``: a satellite trail in one image of one overlap
   no longer drags the mosaic.  Reweighting settles at the solution nearest its start (plain
   least squares); an input whose every pair ends flagged is moved to where a majority of
   its pairs agree, when they do, and the fit restarts from there (`_reseat`).

2. **Error scale.**  The statistical errors of the pairs cover the pixel noise (and, for
   ``compare="levels"``, what the scene adds: ``extra_var``, `measure.scene_error`); what
   else makes two images disagree (interpolation residuals of stars, a wandering mode)
   shows in the residuals.  With ``chi2`` the sum of the unflagged pairs' squared residuals
   over their variances, ``E`` its expectation under the pairs' (co)variances and ``Q`` the
   part of ``E`` that the pairs' own variances give (`lstsq.MatchSolution.own_residual_var`;
   ``Q = E`` when no pairs share pixels), the residuals show a relative excess of the pairs'
   variances ``(chi2 - E) / (Q + 5)``: what each pair's own variance would need, 5
   pseudo-degrees of freedom shrinking it towards 0 so that a mosaic with few loops keeps
   its statistical errors.  The error scale is ``s = sqrt(1 + that)``.  Above 1 it multiplies
   every error: the excess may be each pair's own (a mode that wanders between nearly the
   same pixels) or each image's (a mode's error understated, a sky that differs across a
   group), which the pixels that pairs share would carry into the offsets, and the
   residuals cannot tell which.  Below 1 it shrinks each pair's own variance only, not the
   covariances of shared pixels, which move the offsets and hardly the residuals: an image's
   variance becomes its shared part plus ``s**2`` times its own
   (`lstsq.MatchSolution.own_var`).  Without shared pixels both are the plain
   ``sqrt((chi2 + 5) / (E + 5))`` on every error.  Where each pixel is in many pairs the
   difference counts (`bench/study_dithers.py`, `bench/README.md`): in a stack of 30
   dithers of 256 x 256 pixels (96% overlaps) ``chi2`` was 34-56 against ``E`` 0-9 and ``Q``
   ~400 (``skystat="mode"``, ``compare="levels"``), and ``sqrt((chi2 + 5) / (E + 5))`` (2.1-2.8
   on everything) had put the errors 2.3 times too large (whitened chi2/dof 0.36 over 6
   mosaics; now 0.85); with ``"median"``, ``compare="differences"`` (``chi2`` ~110, ``E`` ~157),
   shrinking everything by 0.84 had put them 16% too small (1.54; now 1.11).  On 600 dithered
   camera CCDs (each in ~30 pairs) the pull spreads went from 0.86 to 0.94 (mode, levels),
   and with the CCDs grouped by exposure from 0.50 to 0.94.
   With ``extra_var`` (``compare="levels"``) the residuals are judged in the inverse-variance
   fit of the same pairs, not in the solve's (pixel-count weights): there a pair of large
   variance (a mode that may move to another kernel's peak, a median over a broad scene) drags
   its neighbours' residuals, their expected spread grows with its variance, and a mosaic
   where it happened not to be far off read as one whose errors were all too large (N=16 bench
   mosaic seed 4, mode: expected chi2 334 against 47, every error shrunk by 0.4, whitened
   chi2/dof 2.96; judged in the inverse-variance fit: 1.04).  The offsets are the solve's
   either way.

3. **Flagged pairs' errors** (`flagged_variance`).  A flagged pair claimed an error its
   residual belies: for the skies' errors its variance grows to what its residual shows, and
   the errors are propagated through the final, reweighted solve.  An image whose every pair
   is flagged (its sky rests on pairs that disagree) gets an error of the size of their
   disagreement, not the small one they claimed (N=16 nebula mosaic of the bench, seed 5,
   ``skystat="mode"``, ``compare="levels"``: a corner image off by 6.4 had ``sky_err`` 0.02,
   now 5.9).  The errors are in the zero-mean gauge of the offsets, so such an image adds
   ``1/N`` of its error to every other image's.  Without flagged pairs nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .lstsq import solve_offsets

__all__ = ["Fit", "fit_offsets", "flagged_variance"]

#: Residuals beyond this many robust standard deviations are down-weighted.
CUT = 4.0
#: Pseudo-degrees of freedom that keep the error scale near 1 when few pairs check each other.
PRIOR_DOF = 5.0
_MAX_ITERATIONS = 200
_SETTLED = 1e-10  # largest change of a robust weight that counts as settled (tight:
# a loose stop makes the result depend on rounding, e.g. on the order of the inputs)
_CHECKED = 1e-6  # residual variance (relative to the pair's) below which a pair is unchecked
_MIN_CHECKED = 3  # pairs in loops needed to judge any


@dataclass(frozen=True, eq=False)
class Fit:
    """The offsets of the inputs and how each pair fared.

    Attributes
    ----------
    delta, delta_err, component : ndarray
        As `lstsq.MatchSolution`; ``delta_err`` multiplied by ``error_scale``, and with the
        flagged pairs' variances grown to their residuals (`flagged_variance`).
    robust_weight : ndarray
        Per pair, the factor (in (0, 1]) the robust solve applied to its weight.
    flagged : ndarray of bool
        Per pair, whether it was down-weighted (its residual beyond `CUT` robust standard
        deviations).
    error_scale : float
        The factor applied to the propagated errors (1 without residuals to judge them by).
    """

    delta: np.ndarray
    delta_err: np.ndarray
    component: np.ndarray
    robust_weight: np.ndarray
    flagged: np.ndarray
    error_scale: float


def fit_offsets(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    diff: np.ndarray,
    weight: np.ndarray,
    diff_var: np.ndarray,
    diff_cov=None,
    *,
    robust: bool = True,
    extra_var=None,
    error_cov=None,
    check=None,
) -> Fit:
    """Offsets of ``n`` inputs from the pairs ``(i, j)`` (``d_i - d_j ~ diff``).

    Parameters
    ----------
    n : int
        Number of inputs.
    i, j, diff, weight, diff_var, diff_cov
        As `lstsq.solve_offsets`.
    robust : bool
        Down-weight pairs whose residuals are far beyond the others' (see the module).
    extra_var : ndarray, optional
        Per pair, variance beyond ``diff_var`` that no other pair shares (e.g. how two pixel
        grids sample the scene: `measure.scene_error`).  It enters the errors and the
        error scale, not the robust weights: those judge the residuals against ``diff_var``
        alone, so the offsets are those without it.  Negative where ``diff_var`` overstates
        the error (the mode's first-order error, `measure.PairStats.scene_var`); the sum is
        never taken below ``diff_var / 4``.
    error_cov : optional
        The covariances between pairs for the errors and the error scale, when they differ
        from ``diff_cov`` (the modes' couplings, `covariance.error_covariance`); like
        ``extra_var`` they leave the robust weights, and so the offsets, as they are.
    check : callable, optional
        Called before each solve after the first (a robust fit makes tens of them: seconds
        at thousands of inputs); whatever it raises stops the fit (a run's cancel event).

    Returns
    -------
    Fit

    Examples
    --------
    A 4 x 4 grid of images (24 pairs), one pair off by 100 times its error:

    >>> k = np.arange(16).reshape(4, 4)
    >>> i = np.r_[k[:, :-1].ravel(), k[:-1].ravel()]
    >>> j = np.r_[k[:, 1:].ravel(), k[1:].ravel()]
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.uniform(0, 10, 16)
    >>> diff = truth[i] - truth[j] + rng.normal(0, 0.01, len(i))
    >>> diff[5] += 1.0
    >>> fit = fit_offsets(16, i, j, diff, np.ones(len(i)), np.full(len(i), 1e-4))
    >>> plain = fit_offsets(16, i, j, diff, np.ones(len(i)), np.full(len(i), 1e-4), robust=False)
    >>> def worst(f):
    ...     return round(float(np.abs(f.delta - f.delta.mean() - truth + truth.mean()).max()), 2)
    >>> np.flatnonzero(fit.flagged).tolist(), worst(fit), worst(plain)
    ([5], 0.01, 0.37)

    In a small graph one pair's error leaks into the residuals of the pairs in its loops,
    and may not stand out (an outlier in a single triangle cannot be told from its two
    neighbours at all).
    """
    weight = np.asarray(weight, float)
    diff_var = np.asarray(diff_var, float)
    problem = (n, i, j, diff, weight, diff_var, diff_cov)
    check = _no_check if check is None else check
    sol = solve_offsets(n, i, j, diff, weight, diff_var, diff_cov)
    sol, solved, factor, scale = _reweight(problem, sol, weight, np.ones(len(i)), math.inf, robust,
                                           check)
    if robust and scale is not None:
        sol, solved, factor = _reseat(problem, sol, solved, factor, scale, check)
    flagged = factor < 1.0
    judged = sol
    extra = extra_var is not None and np.any(np.asarray(extra_var) != 0)
    if error_cov is not None:
        diff_cov = error_cov
    if extra or error_cov is not None:
        # the same offsets, other errors (never below a quarter of the statistical variance)
        if extra:
            diff_var = np.maximum(diff_var + np.asarray(extra_var, float), 0.25 * diff_var)
        check()
        sol = replace(solve_offsets(n, i, j, diff, solved, diff_var, diff_cov), delta=sol.delta)
        judged = sol
        if extra:
            check()
            judged = _inverse_variance_fit(n, i, j, diff, diff_var, diff_cov, factor, sol)
    scale = _error_scale(judged, i, j, diff, diff_var, ~flagged)
    # residuals below their expectation shrink the pairs' own variances, not the covariances
    # of the pixels they share (which they hardly see); above it, every error grows
    excess = scale**2 - 1.0 if diff_cov is not None and scale < 1.0 else 0.0
    if excess:
        delta_err = np.sqrt(np.maximum(sol.delta_err**2 + excess * sol.own_var, 0.0))
    else:
        delta_err = sol.delta_err * scale
    if flagged.any():  # their errors are what their residuals show, not what they claimed
        shown = flagged_variance(sol, i, j, diff, diff_var, flagged, scale, grown=bool(excess))
        check()
        delta_err = solve_offsets(n, i, j, diff, solved, shown, diff_cov).delta_err
        if not excess:
            delta_err = delta_err * scale
    return Fit(
        delta=sol.delta, delta_err=delta_err, component=sol.component,
        robust_weight=factor, flagged=flagged, error_scale=scale,
    )


def _no_check() -> None:
    """`fit_offsets`'s ``check`` when none is given."""


def _reweight(problem, sol, solved, factor, spread: float, robust: bool = True, check=_no_check):
    """Iteratively reweighted least squares from ``sol`` (solved with weights ``solved``).

    Returns the settled solution, its weights, the robust factors and the last scale
    (`_robust_scale`; None when too few pairs are checked to judge any).  ``check()`` runs
    before each solve.
    """
    n, i, j, diff, weight, diff_var, diff_cov = problem
    scale = None
    for _ in range(_MAX_ITERATIONS if robust else 0):
        scale = _robust_scale(sol, i, j, diff, diff_var, spread)
        if scale is None:
            break
        spread = scale[2]
        new = _robust_factors(sol, i, j, diff, scale)
        settled = np.max(np.abs(new - factor), initial=0.0) < _SETTLED
        factor = new
        if settled:
            break
        solved = weight * np.sqrt(factor)
        check()
        sol = solve_offsets(n, i, j, diff, solved, diff_var, diff_cov)
    return sol, solved, factor, scale


def _evidence(t: np.ndarray) -> float:
    """``sum rho(t)``: residuals ``t`` in units of their errors, as a robust likelihood.

    ``rho(t) = t**2 / 2`` up to `CUT`, ``CUT**2 (1/2 + log(t / CUT))`` beyond (the loss whose
    reweighting is `_robust_factors`'s ``(CUT / t)**2``), every pair counted alike.
    """
    return float(np.sum(np.where(
        t <= CUT, 0.5 * t**2, CUT**2 * (0.5 + np.log(np.maximum(t, CUT) / CUT)))))


def _reseat(problem, sol, solved, factor, scale, check=_no_check):
    """Move an input whose every pair is flagged to where most of its pairs agree.

    Reweighting converges to the stationary point nearest its start, the plain least-squares
    solution.  When one of an input's pairs is off by far and outweighs the others (the
    reference's pixel-count weights: a side overlap outweighs a corner one), that start sits
    between the pairs' answers, every one of the input's pairs is flagged and the input stays
    in the middle (N=16 nebula mosaic of the bench, seed 5, ``skystat="mode"``,
    ``compare="levels"``: a corner 6.4 sigma off, while two of its three pairs agreed on its
    sky).  For each input with at least 3 checked pairs, all flagged, the offsets at which one
    of its pairs has no residual are tried (the others held): the one at which most of its
    pairs fall within `CUT` is kept, when they are at least two and a majority.  The
    reweighting then restarts from there, and its result replaces the first if the pairs'
    residuals in units of their errors (`_evidence`, the first fit's scale) are likelier.
    Which pairs agree is judged by their errors, not by the pixel-count weights: those say
    how to average pairs that agree, not which of two answers to believe.  Without such an
    input, or without a majority for it, nothing changes (an input whose pairs all disagree
    keeps its place and an error that covers their disagreement: `flagged_variance`).
    """
    n, i, j, diff, _, _, _ = problem
    checked, sd, spread = scale
    flagged = checked & (factor < 1.0)
    count = np.bincount(i[checked], minlength=n) + np.bincount(j[checked], minlength=n)
    bad = np.bincount(i[flagged], minlength=n) + np.bincount(j[flagged], minlength=n)
    stuck = np.flatnonzero((count >= 3) & (bad == count))
    if stuck.size == 0:
        return sol, solved, factor
    u = sd * spread
    where = np.flatnonzero(checked)
    r = _residuals(sol, i, j, diff)[checked]
    delta = sol.delta.copy()
    for k in stuck:
        mine = (i[where] == k) | (j[where] == k)
        sign = np.where(i[where][mine] == k, 1.0, -1.0)  # shifting input k by s: r -> r - sign s
        rk, uk = r[mine], u[mine]
        best = None
        for shift in sign * rk:
            t = np.abs(rk - sign * shift) / uk
            key = (int(np.sum(t <= CUT)), -_evidence(t))
            if best is None or key > best[0]:
                best = (key, float(shift))
        agree = best[0][0]
        if agree >= 2 and 2 * agree > rk.size:
            delta[k] += best[1]
    if np.array_equal(delta, sol.delta):
        return sol, solved, factor
    # (factors of 0 before: the restart always solves at least once from the moved start)
    again, solved_again, factor_again, _ = _reweight(
        problem, replace(sol, delta=delta), solved, np.zeros_like(factor), spread, True, check)

    def evidence(s):
        return _evidence(np.abs(_residuals(s, i, j, diff)[checked]) / u)

    if evidence(again) < evidence(sol):
        return again, solved_again, factor_again
    return sol, solved, factor


def flagged_variance(sol, i, j, diff, diff_var, flagged, scale: float = 1.0,
                     grown: bool = False) -> np.ndarray:
    """The pairs' variances for the skies' errors, each flagged pair's grown to its residual.

    A flagged pair is down-weighted, but what remains of it still moves the skies, and its
    error is the one its residual shows, not the one it claimed: its variance is multiplied by
    ``r**2 / (s**2 * residual_var)`` (``r`` its residual, ``residual_var`` the variance the
    solve expects for it, `lstsq.MatchSolution`, ``s`` the run's error scale, which the
    errors are multiplied by afterwards) when that is above 1.  The errors are then the
    propagation of these variances through the final, reweighted solve.  Most pairs of a
    flagged image keep some weight and this changes little; an image whose every pair is
    flagged has its sky from those pairs alone, and its error grows to their disagreement.

    With ``grown`` the scale multiplies the pairs' own variances only (pairs that share
    pixels, an error scale below 1: `fit_offsets`): the variances returned are then the
    pairs' own variances times ``scale**2``, a flagged pair's grown to its residual over
    ``residual_var`` with its own part times ``scale**2``, and they are propagated as they
    are (not multiplied by the scale afterwards).
    """
    var = np.array(diff_var, dtype=float)
    expected = np.asarray(sol.residual_var, float)[flagged]
    if grown:
        var *= scale**2
        expected = expected + (scale**2 - 1.0) * np.asarray(sol.own_residual_var, float)[flagged]
    else:
        expected = scale**2 * expected
    r = _residuals(sol, i, j, diff)[flagged]
    with np.errstate(divide="ignore", invalid="ignore"):
        grow = r**2 / expected
    grow = np.where(np.isfinite(grow) & (grow > 1.0), grow, 1.0)
    var[flagged] *= grow
    return var


def _inverse_variance_fit(n, i, j, diff, diff_var, diff_cov, factor, sol):
    """The fit the residuals are judged in when the pairs' errors differ by far (see the module).

    Weights ``1 / sqrt(diff_var)`` (times the robust factors); ``sol`` when a variance is not
    finite and positive.
    """
    if not np.all(np.isfinite(diff_var) & (diff_var > 0)):
        return sol
    return solve_offsets(n, i, j, diff, np.sqrt(factor / diff_var), diff_var, diff_cov)


def _residuals(sol, i, j, diff) -> np.ndarray:
    return diff - (sol.delta[i] - sol.delta[j])


def _robust_scale(sol, i, j, diff, diff_var, spread: float):
    """What a residual is measured in: the pairs checked, their standard deviations, the spread.

    The spread is the residuals' robust spread in units of their expected standard deviation,
    never above ``spread`` (the previous iteration's): it falls as outliers lose their grip,
    and being monotone it settles (re-estimated freely it could make the weights cycle for
    ever, and where the iterations stopped depended on rounding).  None when too few pairs
    are checked by loops to judge any.
    """
    checked = sol.residual_var > _CHECKED * np.nan_to_num(diff_var, nan=0.0)
    checked &= np.isfinite(sol.residual_var) & (sol.residual_var > 0)
    if checked.sum() < _MIN_CHECKED:
        return None
    sd = np.sqrt(sol.residual_var[checked])
    found = 1.4826 * float(np.median(np.abs(_residuals(sol, i, j, diff)[checked]) / sd))
    if not found > 0:
        return None
    return checked, sd, min(found, spread)


def _robust_factors(sol, i, j, diff, scale) -> np.ndarray:
    """The robust weight factor of each pair given the current solution."""
    factor = np.ones(len(i))
    checked, sd, spread = scale
    t = np.abs(_residuals(sol, i, j, diff)[checked]) / (sd * spread)
    factor[checked] = np.where(t <= CUT, 1.0, (CUT / np.maximum(t, CUT)) ** 2)
    return factor


def _error_scale(sol, i, j, diff, diff_var, inliers) -> float:
    """The error scale the residuals show (see the module).

    ``sqrt((chi2 + PRIOR_DOF + Q - E) / (Q + PRIOR_DOF))`` over the inlier pairs: ``chi2``
    the sum of their squared residuals over their variances, ``E`` its expectation under the
    pairs' (co)variances, ``Q`` its part from the pairs' own variances alone.  Without pixels
    that pairs share, ``Q = E`` and this is ``sqrt((chi2 + PRIOR_DOF) / (E + PRIOR_DOF))``.
    """
    usable = inliers & np.isfinite(diff_var) & (diff_var > 0)
    if not usable.any():
        return 1.0
    r = _residuals(sol, i, j, diff)[usable]
    chi2 = float(np.sum(r**2 / diff_var[usable]))
    expected = float(np.sum(sol.residual_var[usable] / diff_var[usable]))
    own = float(np.sum(sol.own_residual_var[usable] / diff_var[usable]))
    if not (math.isfinite(chi2) and math.isfinite(expected) and math.isfinite(own)):
        return 1.0
    return math.sqrt(max(chi2 + PRIOR_DOF + (own - expected), 0.0) / (own + PRIOR_DOF))
