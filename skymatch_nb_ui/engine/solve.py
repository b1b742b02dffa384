"""Stage 3: from the statistics of stage 2 to one sky per input, one function per skymethod.

`solve` dispatches on ``skymethod`` to `solve_local`, `solve_global`, `solve_match` and
`solve_global_match`.  Each works on small arrays over inputs and pairs (no pixels), so a
re-solve after a change of ``skymethod``, ``match_down`` or ``anchor`` takes milliseconds.
The offsets of the match methods come from `robust.fit_offsets` (robust weights and errors
calibrated on the fit, over the least-squares step `lstsq.solve_offsets`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from .lstsq import components
from .measure import PairStats
from .robust import fit_offsets
from .stats import SkyStat

__all__ = [
    "Problem",
    "Solution",
    "solve",
    "solve_global",
    "solve_global_match",
    "solve_local",
    "solve_match",
]

_NO_PIXELS = "no valid pixels (masked, non-finite or outside lower/upper)"


@dataclass(frozen=True, eq=False)
class Problem:
    """What stage 3 needs.

    Attributes
    ----------
    n : int
        Number of inputs.
    pairs : PairStats
        The pairs of inputs that overlap, with their statistics (measured for the match
        methods only).
    local : list of SkyStat or None
        Each input's own statistic (the lowest of a group's members); None for ``match``.
    match_down : bool
        Anchor the match offsets to the lowest sky (True) or the highest.
    anchor : {'global', 'component'}
        One anchor for all inputs, or one per connected component.
    names : tuple of str
        How messages name each input (e.g. ``images[3]``, ``group 'e1'``); default
        ``input 0``, ``input 1``, ...
    robust : bool
        Down-weight pairs whose residuals are far beyond the others' (`robust.fit_offsets`).
    pair_cov : scipy.sparse matrix or None
        Covariances between the pairs' differences (pairs that share pixels), off the
        diagonal; None: independent pairs.
    error_cov : scipy.sparse matrix or None
        The same for the sky errors only, when it differs (`covariance.error_covariance`);
        None: ``pair_cov``.
    """

    n: int
    pairs: PairStats
    local: list[SkyStat] | None
    match_down: bool
    anchor: str
    names: tuple[str, ...] = ()
    robust: bool = True
    pair_cov: object = None
    error_cov: object = None


@dataclass(frozen=True, eq=False)
class Solution:
    """One sky per input, with why an input has none.

    Attributes
    ----------
    sky, sky_err : ndarray
        The sky of each input and its 1-sigma uncertainty (NaN where unknown).
    valid : ndarray of bool
        Whether a sky was found.
    reason : list of str
        Why an input is invalid, or a caveat; "" when all is well.
    component : ndarray of int
        Connected component of each input.
    delta : ndarray
        The match offsets (zero mean per component; NaN when not computed).
    warnings : tuple of str
        Messages for the caller to issue as warnings.
    robust_weight : ndarray or None
        Per pair, the factor the robust solve applied to its weight (NaN for pairs not in
        the solve); None when no offsets were solved.
    flagged : ndarray of bool or None
        Per pair, whether the robust solve down-weighted it.
    error_scale : float
        The factor the residuals put on the propagated errors (NaN: no offsets solved).
    """

    sky: np.ndarray
    sky_err: np.ndarray
    valid: np.ndarray
    reason: list[str]
    component: np.ndarray
    delta: np.ndarray
    warnings: tuple[str, ...] = ()
    robust_weight: np.ndarray | None = None
    flagged: np.ndarray | None = None
    error_scale: float = float("nan")


def solve(skymethod: str, problem: Problem, *, check=None) -> Solution:
    """Stage 3 by ``skymethod``: 'local', 'global', 'match' or 'global+match'.

    ``check``: called between the robust fit's solves (`robust.fit_offsets`); whatever it
    raises stops the solve (a run's cancel event).
    """
    return _SKYMETHODS[skymethod](problem, check=check)


def solve_local(p: Problem, *, check=None) -> Solution:
    """Each input's own statistic."""
    value, err = _local_arrays(p)
    sky, sky_err = value.copy(), err.copy()
    reason = _no_pixels(p, [""] * p.n)
    return _solution(sky, sky_err, reason, _graph(p), np.full(p.n, np.nan))


def solve_global(p: Problem, *, check=None) -> Solution:
    """The smallest finite local statistic, for every input (NaN for inputs with no pixels)."""
    value, err = _local_arrays(p)
    sky, sky_err = np.full(p.n, np.nan), np.full(p.n, np.nan)
    ok = np.isfinite(value)
    if ok.any():
        k = int(np.flatnonzero(ok)[np.argmin(value[ok])])
        sky[:], sky_err[:] = value[k], err[k]
    reason = _no_pixels(p, [""] * p.n)
    empty = np.array([s.npix == 0 for s in p.local], dtype=bool)
    sky[empty] = sky_err[empty] = np.nan
    return _solution(sky, sky_err, reason, _graph(p), np.full(p.n, np.nan))


def solve_match(p: Problem, *, check=None) -> Solution:
    """Offsets that make overlaps agree, relative to the lowest (or highest) of each anchor set."""
    m = _offsets(p, check)
    sky = np.full(p.n, np.nan)
    for members in _anchor_scope(p.anchor, m.component, np.isfinite(m.delta)):
        d = m.delta[members]
        sky[members] = d - (d.min() if p.match_down else d.max())
    reason = [""] * p.n
    for g, text in m.unmatched.items():
        reason[g] = text
    return _solution(sky, m.delta_err.copy(), reason, m.component, m.delta, m.warnings, m)


def solve_global_match(p: Problem, *, check=None) -> Solution:
    """The match offsets lifted to absolute level by the lowest local sky (less its offset).

    Inputs in no valid pair keep their own local sky, with a caveat in ``reason``.
    """
    m = _offsets(p, check)
    value, err = _local_arrays(p)
    sky, sky_err = np.full(p.n, np.nan), np.full(p.n, np.nan)
    matched = np.isfinite(m.delta)
    lifted = value - m.delta
    for members in _anchor_scope(p.anchor, m.component, matched & np.isfinite(value)):
        k = members[np.argmin(lifted[members])]
        targets = members if p.anchor == "component" else np.flatnonzero(matched)
        sky[targets] = m.delta[targets] + lifted[k]
        sky_err[targets] = np.sqrt(m.delta_err[targets] ** 2 + m.delta_err[k] ** 2 + err[k] ** 2)
    lone = ~matched & np.isfinite(value)
    sky[lone], sky_err[lone] = value[lone], err[lone]
    reason = [""] * p.n
    for g in np.flatnonzero(lone):
        reason[g] = f"not matched ({m.unmatched[g]}): its own local sky"
    for g in np.flatnonzero(~matched & ~np.isfinite(value)):
        reason[g] = m.unmatched[g]
    return _solution(sky, sky_err, reason, m.component, m.delta, m.warnings, m)


_SKYMETHODS = {
    "local": solve_local,
    "global": solve_global,
    "match": solve_match,
    "global+match": solve_global_match,
}


# -- shared steps ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Offsets:
    delta: np.ndarray
    delta_err: np.ndarray
    component: np.ndarray
    unmatched: dict  # input -> why it is in no valid pair
    warnings: tuple
    robust_weight: np.ndarray  # per pair (NaN outside the solve)
    flagged: np.ndarray
    error_scale: float


#: The offsets of each set of pair statistics (they do not depend on the solve parameters, so
#: a change of ``match_down``, ``anchor`` or between the match methods re-uses them).
_OFFSETS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _offsets(p: Problem, check=None) -> _Offsets:
    """The offsets over the valid pairs (computed once per `PairStats` and robust setting)."""
    found = _OFFSETS.get(p.pairs)
    # the pairs' covariance follows from the pairs and the grouping (as the pairs do)
    setting = (p.n, p.robust, p.pair_cov is not None, p.error_cov is not None)
    if found is None or found[0] != setting:
        offsets = _least_squares(p, check)
        for shared in (offsets.delta, offsets.delta_err, offsets.component):
            shared.flags.writeable = False  # every solve of these pairs reads them
        found = _OFFSETS[p.pairs] = (setting, offsets)
    return found[1]


def _least_squares(p: Problem, check=None) -> _Offsets:
    """The offsets over the valid pairs, and why the other inputs have none."""
    pairs, v = p.pairs, p.pairs.valid
    cov, error_cov = (_valid_block(c, v) for c in (p.pair_cov, p.error_cov))
    sol = fit_offsets(
        p.n, pairs.a[v], pairs.b[v], pairs.diff[v], pairs.weight[v], pairs.diff_err[v] ** 2,
        cov, robust=p.robust, extra_var=pairs.scene_var[v], error_cov=error_cov, check=check,
    )
    robust_weight = np.full(len(pairs), np.nan)
    robust_weight[v] = sol.robust_weight
    flagged = np.zeros(len(pairs), dtype=bool)
    flagged[v] = sol.flagged
    messages = []
    n_comp = int(sol.component.max()) + 1 if p.n else 0
    if n_comp > 1 and p.n > 1:
        messages.append(_disconnected_message(p, sol.component, n_comp))
    matched = np.isfinite(sol.delta)
    unmatched = dict.fromkeys(np.flatnonzero(~matched).tolist(), "no valid overlap with another input")
    in_invalid = np.zeros(p.n, dtype=bool)
    in_invalid[pairs.a[~v]] = in_invalid[pairs.b[~v]] = True
    unmatched.update(dict.fromkeys(np.flatnonzero(in_invalid & ~matched).tolist(),
                                   "no valid pixels in its overlaps with other inputs"))
    return _Offsets(sol.delta, sol.delta_err, sol.component, unmatched, tuple(messages),
                    robust_weight, flagged, sol.error_scale)


def _valid_block(cov, v):
    """The covariance between the valid pairs (None stays None)."""
    if cov is None:
        return None
    return cov.tocsr()[v][:, v] if hasattr(cov, "tocsr") else np.asarray(cov)[np.ix_(v, v)]


def _disconnected_message(p: Problem, component: np.ndarray, n_comp: int) -> str:
    """Why the mosaic falls apart: images that do not overlap, or overlaps without pixels."""
    pairs = p.pairs
    names = p.names or tuple(f"input {g}" for g in range(p.n))
    text = (
        f"the overlap graph has {n_comp} disconnected components: skies are matched within "
        "each but not between them"
    )
    # overlaps that would link two components but have no usable pixels on a side
    empty = [
        (int(g), int(h), int(na), int(nb))
        for g, h, na, nb, ok in zip(pairs.a, pairs.b, pairs.npix_a, pairs.npix_b, pairs.valid)
        if not ok and component[g] != component[h]
    ]
    if not empty:
        return (
            f"{text}; use anchor='component' (with global+match) to give each its own "
            "absolute sky, or add images that link them"
        )
    shown = []
    for g, h, na, nb in empty[:3]:
        without = [names[x] for x, n in ((g, na), (h, nb)) if n == 0]
        verb = "has" if len(without) == 1 else "have"
        shown.append(f"{names[g]} and {names[h]} ({' and '.join(without)} {verb} none)")
    more = f", and {len(empty) - 3} more pairs" if len(empty) > 3 else ""
    apart = int(components(p.n, pairs.a, pairs.b).max()) + 1 if p.n else 0
    rest = "; other parts do not overlap at all (add images that link them)" if apart > 1 else ""
    return (
        f"{text}. These overlap, but their overlap has no usable pixels (masked, non-finite, "
        f"outside lower/upper or clipped), so it cannot link them: {'; '.join(shown)}{more}"
        f"{rest}. Check those images' masks and lower/upper, or use anchor='component' (with "
        "global+match) to give each part its own absolute sky"
    )


def _graph(p: Problem) -> np.ndarray:
    """Connected components of the geometric overlap graph (local and global)."""
    return components(p.n, p.pairs.a, p.pairs.b)


def _local_arrays(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    return np.array([s.value for s in p.local]), np.array([s.err for s in p.local])


def _no_pixels(p: Problem, reason: list[str]) -> list[str]:
    for g, s in enumerate(p.local):
        if s.npix == 0:
            reason[g] = _NO_PIXELS
    return reason


def _anchor_scope(anchor: str, component: np.ndarray, usable: np.ndarray) -> list[np.ndarray]:
    """The sets of inputs that share one anchor: all usable inputs, or each component's."""
    if not usable.any():
        return []
    if anchor == "global":
        return [np.flatnonzero(usable)]
    return [np.flatnonzero(usable & (component == c)) for c in np.unique(component[usable])]


def _solution(sky, sky_err, reason, component, delta, warnings=(), offsets=None) -> Solution:
    valid = np.isfinite(sky)
    for g in np.flatnonzero(~valid):
        reason[g] = reason[g] or "no sky could be computed"
    if offsets is None:
        return Solution(sky, sky_err, valid, reason, component, delta, tuple(warnings))
    return Solution(sky, sky_err, valid, reason, component, delta, tuple(warnings),
                    offsets.robust_weight, offsets.flagged, offsets.error_scale)
