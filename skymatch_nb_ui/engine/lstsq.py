"""Weighted least squares of sky offsets from pairwise differences, per connected component.

The numerical core of stage 3 (`solve`): small dense systems over inputs and pairs (no
pixels), so a re-solve costs well under a millisecond for hundreds of inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["MatchSolution", "components", "solve_offsets"]


@cache
def _blas():
    """A controller that limits BLAS to one thread around the solve.

    For systems this small a second thread only waits (a 100 x 100 solve took 37 ms instead of
    0.3 ms when the other core was busy).
    """
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph on ``n`` nodes with edges (i, j).

    Components are numbered 0, 1, ... in order of their first node, so that the numbering is
    stable and readable (an isolated node is a component of its own).

    Examples
    --------
    >>> components(5, np.array([0, 3]), np.array([1, 4])).tolist()
    [0, 0, 1, 2, 2]
    """
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)
    renumber = np.empty(len(first), dtype=np.intp)
    renumber[np.argsort(np.argsort(first))] = np.arange(len(first))
    return renumber[labels]


@dataclass(frozen=True)
class MatchSolution:
    """Relative sky offsets from pairwise differences.

    Attributes
    ----------
    delta : ndarray
        Offset of each input; inside each connected component of the graph of valid pairs the
        offsets have zero (unweighted) mean, which is the minimum-norm least-squares solution.
        NaN for inputs in no valid pair.
    delta_err : ndarray
        1-sigma uncertainty of ``delta`` (in the zero-mean gauge of its component),
        propagated from the pair statistics' (co)variances; NaN where unknown.
    component : ndarray of int
        Connected component of each input.
    residual_var : ndarray
        Per pair, the variance of its residual ``diff - (d_i - d_j)`` expected from the
        pairs' (co)variances: what a residual should be compared with (it is below the pair's
        own variance by what the fit absorbs; 0 for a pair no loop checks).
    """

    delta: np.ndarray
    delta_err: np.ndarray
    component: np.ndarray
    residual_var: np.ndarray


def solve_offsets(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    diff: np.ndarray,
    weight: np.ndarray,
    diff_var: np.ndarray,
    diff_cov=None,
) -> MatchSolution:
    """Solve ``min sum_p weight_p**2 * (d_i - d_j - diff_p)**2`` per connected component.

    Parameters
    ----------
    n : int
        Number of inputs.
    i, j : ndarray of int
        The two inputs of each valid pair.
    diff : ndarray
        ``s_i^(j) - s_j^(i)``: input i's statistic minus input j's over their overlap.
    weight : ndarray
        The pair's weight (the reference uses the mean of the two pixel counts; the equations
        are multiplied by it, so the effective weight is its square).
    diff_var : ndarray
        Variance of ``diff``, for the uncertainties (NaN allowed: then those are NaN).
    diff_cov : scipy.sparse matrix or ndarray, optional
        Covariances between pairs (off the diagonal; its diagonal is ignored), for pairs whose
        statistics share pixels.  They change the uncertainties, not the solution.

    Returns
    -------
    MatchSolution

    Notes
    -----
    Within a component of ``m`` inputs the weighted Laplacian ``L`` has rank ``m - 1`` and
    its null space is the constant vector, so ``(L + 11^T/m) d = b`` gives the least-squares
    solution with zero mean: the minimum-norm one, which is what a pseudo-inverse of the full
    system (the reference) returns.

    Examples
    --------
    >>> sol = solve_offsets(3, np.array([0, 1]), np.array([1, 2]), np.array([-20.0, 15.0]),
    ...                   np.ones(2), np.full(2, 0.01))
    >>> np.round(sol.delta - sol.delta.min(), 12).tolist()
    [0.0, 20.0, 5.0]
    """
    with _blas().limit(limits=1, user_api="blas"):
        return _solve_components(n, i, j, diff, weight, diff_var, diff_cov)


def _solve_components(n, i, j, diff, weight, diff_var, diff_cov) -> MatchSolution:
    comp = components(n, i, j)
    delta = np.full(n, np.nan)
    delta_err = np.full(n, np.nan)
    residual_var = np.zeros(len(i))
    w2 = np.asarray(weight, float) ** 2
    if len(w2) and w2.max() > 0:
        w2 = w2 / w2.max()  # scale-free; keeps L and the 11^T/m term of comparable size
    covariance = _covariance(diff_cov, diff_var)
    for c in np.unique(comp[i]) if len(i) else ():
        members = np.flatnonzero(comp == c)
        local = np.full(n, -1, dtype=np.intp)
        local[members] = np.arange(len(members))
        in_c = np.flatnonzero(comp[i] == c)
        li, lj = local[i[in_c]], local[j[in_c]]
        m, p = len(members), len(li)
        incidence = np.zeros((p, m))
        incidence[np.arange(p), li] = 1.0
        incidence[np.arange(p), lj] = -1.0
        weighted = incidence.T * w2[in_c]  # (m, p)
        laplacian = weighted @ incidence + 1.0 / m
        gain = np.linalg.solve(laplacian, weighted)  # d = gain @ diff
        delta[members] = gain @ diff[in_c]
        # Propagation: cov(d) = G S G^T with S the pairs' covariance (sparse).
        spread = np.asarray((covariance[in_c][:, in_c] @ gain.T).T)  # G S, (m, p)
        cov = spread @ gain.T
        delta_err[members] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        # Residual r_p = diff_p - (d_i - d_j): var(diff_p) + var(d_i - d_j)
        # - 2 cov(diff_p, d_i - d_j), the last from G S.
        fitted = cov[li, li] + cov[lj, lj] - 2.0 * cov[li, lj]
        cross = spread[li, np.arange(p)] - spread[lj, np.arange(p)]
        residual_var[in_c] = np.clip(diff_var[in_c] + fitted - 2.0 * cross, 0.0, None)
    return MatchSolution(delta=delta, delta_err=delta_err, component=comp,
                         residual_var=residual_var)


def _covariance(diff_cov, diff_var):
    """The pairs' covariance matrix (sparse): ``diff_var`` on the diagonal, ``diff_cov`` off it."""
    from scipy.sparse import csr_matrix, diags

    var = np.asarray(diff_var, float)
    full = diags(var, format="csr")
    if diff_cov is not None:
        off = csr_matrix(diff_cov)
        off = off - diags(off.diagonal(), format="csr")
        full = (full + off).tocsr()
    return full
