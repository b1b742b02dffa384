"""Weighted least squares of sky offsets from pairwise differences, per connected component.

The numerical core of stage 3 (`solve`): a sparse problem over inputs and pairs, no pixels.
A mosaic's overlap graph has O(N) edges, and the work here grows about as fast: nothing of
size N x N or pairs x N is formed.

How `solve_offsets` works:

1. In each connected component one input is held at zero (*grounded*); the rest of the
   normal matrix ``L`` (a weighted graph Laplacian) is symmetric positive definite.  The
   zero-mean solution and its covariance follow exactly: ``delta = x - mean(x)`` and the
   gains of the pairs are centred the same way.
2. The inputs are ordered by breadth-first levels, farthest first, component after
   component: by distance from a pseudo-peripheral input (the grounded one), or from a
   side of the mosaic (bands across it, narrower than rings from one input), whichever
   gives narrower levels (`_levels`).  Edges join only the same or adjacent levels, so
   ``L`` is *block tridiagonal*; consecutive levels are merged into blocks of at least
   `BLOCK` inputs.  A block LDL^T (Cholesky-factored Schur complements, only triangular
   solves) gives the solution.
3. The covariance is a sandwich, ``C = G V G^T`` with the gains ``G = L^{-1} A^T W``,
   because the weights are pixel counts, not inverse variances.  Its diagonal is the
   squared norm of each row of the centred, variance-scaled gains ``X``: the pairs are
   grouped by the first block they touch, and each group's columns of ``X`` are carried
   block to block by the factors (``-P_k`` towards the far end, forward substitution towards
   the grounded one) as *square roots*, compressed by QR to one column per row, never as
   Gram matrices: the weights span many orders of magnitude, and a gain is a small
   difference of large numbers that a Gram matrix (or an explicit inverse) would lose.

Cost: the sum over blocks of (block size)^2 x (block size + pairs): about ``N w^2`` for
levels ``w`` inputs wide (``w ~ sqrt(N)`` for a 2-D mosaic, a few for a strip).  From
`HELPER_BLOCKS` large blocks on, a helper thread takes the work that no later block waits
for (each block's first solve, the residuals' norms) beside the two passes: the same bits.  The
offsets agree with a dense pseudo-inverse to rounding; the uncertainties are as accurate as
dense solves of the gains (measured against extended precision in the tests).

Pairs that share pixels (``diff_cov``, the covariance between pairs off the diagonal, ``C``)
add ``diag(G C G^T)`` to the offsets' variances and ``diag((I - A G) C (I - A G)^T)`` to the
residuals'.  Both are of the form ``E[(G z) * (G C z)]`` over unit vectors ``z``: with the
``P`` columns of the identity (in chunks, two sweeps of `_BlockSweep.solve` each) they are
exact.  Where it keeps its precision, the inverse of ``L`` (the factorisation's backward
recurrences, `_BlockSweep.inverse`) gives the same sums with far less work: ``diag(G C
G^T)`` and the residuals' terms are read off ``K (B C B^T) K^T`` at the inputs and the pairs'
ends (`_shared_terms_exact`), however many pairs there are (up to ~2,000 inputs,
`EXACT_INVERSE`).  Beyond it, and above `EXACT_PAIRS` pairs, the same sums run over `PROBES`
random +-1 vectors (Hutchinson's diagonal estimator: unbiased, fixed seed, so reproducible),
which keeps 10,000 inputs at a few seconds (a 100 x 100 grid with diagonals, 29,601 pairs: 0.5 s without a
covariance, 2.9 s with).  Measured on a 12 x 12 grid where the covariance adds 10% to the
offsets' variances: the probes leave them 2.4% rms off, and each residual variance 6% rms off
(its mean 0.3%): the residual variances serve the robust weights (a 4-sigma cut, hardly moved)
and the error scale (a sum over the pairs, where the noise averages out).  Where pairs share
far more (600 camera CCDs, each in ~30 pairs that overlap each other) they were 9% rms off,
one error 0, and 9 of the 10 pairs the robust solve flagged were the probes' noise: the
inverse serves such mosaics, at a fifth of the time.  Beyond it a probe estimate of an
offset's extra variance below zero is taken as zero (the exact terms were positive for every
input of every mosaic measured: the errors never fall below those without shared pixels).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.linalg.blas import dtrsm as _trsm
from scipy.linalg.lapack import dgeqrf as _geqrf
from scipy.linalg.lapack import dgeqrf_lwork as _geqrf_lwork
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path

__all__ = ["MatchSolution", "components", "solve_offsets"]

#: Smallest number of inputs per diagonal block (consecutive levels are merged up to it):
#: fewer, larger dense blocks cost less Python and more flops.
BLOCK = 48

#: Where the inverse of ``L`` cannot serve (`EXACT_INVERSE`, `EXACT_LOSS`): up to this many
#: pairs the pairs' covariance enters the uncertainties exactly (one pair's unit vector per
#: right-hand side); above it, through `PROBES` random +-1 vectors.
EXACT_PAIRS = 4096

#: From this many diagonal blocks on, of this many inputs on average, the uncertainties are
#: computed with a helper thread (`_BlockSweep.centred_gain_norms`): the same bits, ~12% less
#: time on two CPUs at 10,000 inputs (blocks of ~108), none with blocks of ~57 (5,000 inputs
#: in a 50 x 100 tiling: the work is then mostly Python's, and the thread only costs CPU).
HELPER_BLOCKS = 8
HELPER_SIZE = 96

#: Up to this many elements of the inverse of ``L`` (inputs x inputs not grounded) the exact
#: covariance terms come from it (`_shared_terms_exact`: 32 MB, any number of pairs); beyond,
#: from unit vectors (up to `EXACT_PAIRS` pairs) or random probes.
EXACT_INVERSE = 1 << 22

#: ... and while no pair's gain loses more than this factor of precision to cancellation
#: (`_shared_terms_exact`): measured, its errors are 20-600 eps times that factor.
EXACT_LOSS = 100.0

#: Random probes of the pairs' covariance above `EXACT_PAIRS` pairs.
PROBES = 256

#: Right-hand sides per sweep when the covariance of pairs is propagated.
_CHUNK = 512

#: Breadth-first searches tried per component for narrow levels (start, farthest, farthest).
_SEARCHES = 3


@cache
def _blas():
    """A controller that limits BLAS to one thread around the solve.

    For blocks this small a second thread only waits (a 100 x 100 solve took 37 ms instead of
    0.3 ms when the other core was busy); one thread also keeps the results bit-for-bit
    reproducible.
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
        propagated from the pair statistics' errors; NaN where unknown.
    component : ndarray of int
        Connected component of each input.
    residual_var : ndarray
        Per pair, the variance of its residual ``diff - (d_i - d_j)`` expected from the
        pairs' (co)variances: below the pair's own variance by what the fit absorbs (0 for
        a pair that no loop checks, e.g. in a tree); NaN in a component with a NaN variance.
    own_var, own_residual_var : ndarray
        The parts of ``delta_err**2`` and ``residual_var`` that the pairs' own variances
        (``diff_var``) give, without the covariances of pairs that share pixels
        (``diff_cov``): the same arrays as ``delta_err**2`` and ``residual_var`` without them.
        They let an error model grow the pairs' own errors alone (`robust.fit_offsets`).
    """

    delta: np.ndarray
    delta_err: np.ndarray
    component: np.ndarray
    residual_var: np.ndarray
    own_var: np.ndarray | None = None
    own_residual_var: np.ndarray | None = None


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
        Variance of ``diff``, for the uncertainties (NaN allowed: then those of the pair's
        component are NaN; the offsets are not affected).
    diff_cov : scipy.sparse matrix or ndarray, optional
        Covariances between pairs (off the diagonal; its diagonal is ignored), for pairs whose
        statistics share pixels.  They change the uncertainties and the residual variances,
        not the offsets.  Exact up to ~2,000 inputs (`EXACT_INVERSE`) or `EXACT_PAIRS`
        pairs, a random-probe estimate above.

    Returns
    -------
    MatchSolution

    Notes
    -----
    Within a component of ``m`` inputs the weighted Laplacian ``L`` has rank ``m - 1`` and its
    null space is the constant vector: the least-squares solutions are one solution plus a
    constant, and the one with zero mean is the minimum-norm one, which is what a
    pseudo-inverse of the full system (the reference) returns.  The work is sparse: see the
    module's documentation.

    Examples
    --------
    >>> sol = solve_offsets(3, np.array([0, 1]), np.array([1, 2]), np.array([-20.0, 15.0]),
    ...                   np.ones(2), np.full(2, 0.01))
    >>> np.round(sol.delta - sol.delta.min(), 12).tolist()
    [0.0, 20.0, 5.0]
    """
    i = np.asarray(i, dtype=np.intp)
    j = np.asarray(j, dtype=np.intp)
    if not len(i):
        return MatchSolution(delta=np.full(n, np.nan), delta_err=np.full(n, np.nan),
                             component=components(n, i, j), residual_var=np.zeros(0),
                             own_var=np.full(n, np.nan), own_residual_var=np.zeros(0))
    comp, level, order, bounds = _graph(n, i, j)
    comp = comp.copy()
    delta = np.full(n, np.nan)
    delta_err = np.full(n, np.nan)
    residual_var = np.zeros(len(i))
    with _blas().limit(limits=1, user_api="blas"):
        own = _solve(n, i, j, np.asarray(diff, float), np.asarray(weight, float),
                     np.asarray(diff_var, float), comp, delta, delta_err, residual_var,
                     _off_diagonal(diff_cov, len(i)), (level, order, bounds))
    own_var, own_residual_var = (delta_err**2, residual_var) if own is None else own
    return MatchSolution(delta=delta, delta_err=delta_err, component=comp,
                         residual_var=residual_var, own_var=own_var,
                         own_residual_var=own_residual_var)


#: The last graph `_graph` ordered: ``((n, BLOCK), i, j, (comp, level, order, bounds))``.
_LAST_GRAPH: tuple | None = None


def _graph(n: int, i: np.ndarray, j: np.ndarray) -> tuple:
    """The components, levels and block order of the pairs ``(i, j)`` of ``n`` inputs.

    They depend on the graph alone, not on the weights: a robust fit solves the same pairs
    tens of times, so the last graph's are kept (compared by value; read-only arrays).
    """
    global _LAST_GRAPH
    last = _LAST_GRAPH
    if last is not None and last[0] == (n, BLOCK) and np.array_equal(last[1], i) \
            and np.array_equal(last[2], j):
        return last[3]
    comp = components(n, i, j)
    level = _levels(n, i, j, comp)
    order, bounds = _block_order(level, comp)
    found = (comp, level, order, bounds)
    for a in found:
        a.flags.writeable = False
    _LAST_GRAPH = ((n, BLOCK), i.copy(), j.copy(), found)
    return found


def _off_diagonal(diff_cov, pairs: int) -> csr_matrix | None:
    """``diff_cov`` as a sparse matrix without its diagonal (None when it has nothing)."""
    if diff_cov is None:
        return None
    cov = csr_matrix(diff_cov, dtype=float)
    if cov.shape != (pairs, pairs):
        raise ValueError(f"diff_cov must be {pairs} x {pairs} (one row and column per pair); "
                         f"got {cov.shape[0]} x {cov.shape[1]}")
    cov = cov.copy()
    cov.sum_duplicates()  # sorted indices, one entry per element
    data = np.nan_to_num(cov.data, nan=0.0)
    data[np.repeat(np.arange(pairs), np.diff(cov.indptr)) == cov.indices] = 0.0  # the diagonal
    cov.data = data
    cov.eliminate_zeros()
    return cov if cov.nnz else None


def _solve(n, i, j, diff, weight, var, comp, delta, delta_err, residual_var, cov,
           graph):
    """Fill ``delta``, ``delta_err`` and ``residual_var`` (see the module's doc).

    ``graph``: ``(level, order, bounds)`` of the pairs (`_graph`).  Returns None without
    ``cov``, else the variances without it (``MatchSolution.own_var``, ``own_residual_var``).
    """
    w2 = weight**2
    w2 = w2 / w2.max()  # scale-free
    level, order, bounds = graph
    pos = np.full(n, -1, dtype=np.intp)
    pos[order] = np.arange(len(order))
    sweep = _BlockSweep(_grounded_laplacian(pos, i, j, w2), bounds)
    rhs = np.zeros((len(order), 2))
    for end, sign in ((i, 1.0), (j, -1.0)):  # A^T W diff, without the grounded inputs' rows
        keep = pos[end] >= 0
        rhs[:, 0] += sign * np.bincount(pos[end[keep]], (w2 * diff)[keep], minlength=len(order))
    rhs[:, 1] = 1.0
    solved = sweep.solve(rhs)  # x = L^-1 b, and u = L^-1 1 for the components' means of the gains
    x, u = np.zeros(n), np.zeros(n)  # the grounded inputs are at 0
    x[order], u[order] = solved[:, 0], solved[:, 1]
    members = np.flatnonzero(level >= 0)
    cm = comp[members]
    size = np.bincount(cm, minlength=int(comp.max()) + 1).astype(float)
    mean = np.bincount(cm, x[members], minlength=len(size)) / np.maximum(size, 1.0)
    delta[members] = x[members] - mean[cm]
    # uncertainties; non-finite variances spoil those of their component only
    finite = np.isfinite(var)
    f = w2 * np.sqrt(np.where(finite, var, 0.0))  # the pairs' columns of A^T W V^1/2
    scale = float(f.max()) or 1.0
    f = f / scale
    f_mean = f * (u[i] - u[j]) / size[comp[i]]  # each gain column's mean over its component
    own_sd = np.sqrt(np.where(finite, var, 0.0)) / scale
    variance = np.zeros(n)
    with _helper(len(bounds) - 1, len(order)) as pool:
        variance[order], residual = sweep.centred_gain_norms(
            pos[i], pos[j], f, f_mean, comp[order], comp[i], own_sd, pool)
    grounded = members[level[members] == 0]
    variance[grounded] = np.bincount(comp[i], f_mean**2, minlength=len(size))[comp[grounded]]
    spoiled = np.zeros(len(size), dtype=bool)
    spoiled[comp[i[~finite]]] = True

    def filled(variance, residual):  # the errors and residual variances, spoiled parts NaN
        err = np.full(n, np.nan)
        err[members] = np.where(spoiled[cm], np.nan,
                                scale * np.sqrt(np.clip(variance[members], 0.0, None)))
        return err, np.where(spoiled[comp[i]], np.nan, scale**2 * np.clip(residual, 0.0, None))

    own = None
    if cov is not None:  # pairs that share pixels: G C G^T and (I - AG) C (I - AG)^T
        own_err, own_residual = filled(variance, residual)
        own = (own_err**2, own_residual)
        extra_var, extra_res = _shared_terms(sweep, order, pos, i, j, w2, cov, members, cm, size)
        variance += extra_var / scale**2
        residual = residual + extra_res / scale**2
    err, residual_var[:] = filled(variance, residual)
    delta_err[members] = err[members]
    return own


@contextmanager
def _helper(blocks: int, inputs: int):
    """One helper thread for `_BlockSweep.centred_gain_norms` (None: work in this one).

    Only with `HELPER_BLOCKS` blocks or more of `HELPER_SIZE` inputs or more on average, and
    a second CPU for this process; a new thread each time (a pool kept between calls would be
    left without its thread in a forked child).
    """
    if blocks < HELPER_BLOCKS or inputs < HELPER_SIZE * blocks or _cpus() < 2:
        yield None
        return
    with ThreadPoolExecutor(1, thread_name_prefix="skymatch-solve") as pool:
        yield pool


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _shared_terms(sweep, order, pos, i, j, w2, cov, members, cm, size):
    """The pairs' covariance ``C`` (off-diagonal, sparse) in the offsets' and residuals' variances.

    ``G y`` (the zero-mean offsets a vector ``y`` of differences gives) is one sweep; with
    unit vectors ``z``, ``diag(G C G^T) = sum_z (G z) * (G C z)`` and the residuals' extra
    ``diag(H C H^T) - 2 diag(H C) = sum_z (H z) * (H C z - 2 C z)``, ``H = A G``.  Exact
    while the inverse of ``L`` is small enough and keeps its precision
    (`_shared_terms_exact`, however many pairs), else with the unit vectors in chunks up to
    `EXACT_PAIRS` pairs; random probes above.
    """
    n, pairs = len(pos), len(i)
    if n * len(order) <= EXACT_INVERSE:
        found = _shared_terms_exact(sweep, order, pos, i, j, w2, cov, members, cm, size)
        if found is not None:
            return found
    centre = _component_centring(members, cm, n, size)
    incidence_t = _incidence_t(pos, i, j, len(order), w2)  # A^T W

    def gain(y):  # G y for a block of right-hand sides (pairs x k)
        rhs = incidence_t @ y
        x = np.zeros((n, y.shape[1]))
        x[order] = sweep.solve(rhs)
        centre(x)
        return x

    extra_var, extra_res = np.zeros(n), np.zeros(pairs)
    if pairs <= EXACT_PAIRS:
        blocks = [(start, None) for start in range(0, pairs, _CHUNK)]
    else:
        blocks = [(None, index) for index in _probe_signs(pairs)]
    for start, z in blocks:
        if z is None:
            cols = np.arange(start, min(start + _CHUNK, pairs))
            z = np.zeros((pairs, len(cols)))
            z[cols, np.arange(len(cols))] = 1.0
            norm = 1.0
        else:
            norm = 1.0 / PROBES
        cz, gz, gcz = _gains(gain, cov, z, n)
        extra_var += norm * np.einsum("ij,ij->i", gz, gcz)
        for lo in range(0, pairs, _ROWS):  # (in slices: a few MB at a time, not pairs x k)
            at = slice(lo, lo + _ROWS)
            a = _row_differences(i[at], j[at], n)  # A, these rows
            hz = a @ gz
            hcz = a @ gcz
            hcz -= 2.0 * cz[at]
            extra_res[at] += norm * np.einsum("ij,ij->i", hz, hcz)
    if pairs > EXACT_PAIRS:
        # Pixels that pairs share add to the offsets' variances (measured exactly: positive
        # for every input of camera, grid, group and strip mosaics); a probe estimate below
        # zero is noise, and it could take an error to 0 (one of 600 camera CCDs).
        np.maximum(extra_var, 0.0, out=extra_var)
    return extra_var, extra_res


def _shared_terms_exact(sweep, order, pos, i, j, w2, cov, members, cm, size):
    """`_shared_terms` from the inverse of ``L`` (`_BlockSweep.inverse`), not two sweeps per pair.

    ``K`` is ``L^{-1}`` with each column centred over its component (the zero-mean offsets
    of a unit right-hand side), so that the gains are ``G = K B``, ``B = A^T W``, and
    ``S = G C G^T = K (B C B^T) K^T``.  The offsets' extra variances are ``diag(S)``; pair
    ``p``'s (ends ``i``, ``j``) residual extra is ``S_ii + S_jj - S_ij - S_ji`` less twice
    ``sum_q H_pq C_pq``, read at the nonzeros of ``C`` (``G_aq = w_q (K_{a i_q} - K_{a j_q})``).

    A gain is then a difference of two columns of ``K``: it loses about the precision that
    the ratio of ``Z_ii`` to the pair's effective resistance ``Z_ii + Z_jj - 2 Z_ij`` says
    (``Z = L^{-1}``; in a long strip with weights over decades, 1e-5 relative).  Beyond
    `EXACT_LOSS` this returns None, and the unit vectors serve.  At 3,906 pairs of a
    32 x 32 nebula mosaic (a loss of 8): 0.075 s a solve instead of 0.40 s, the same values
    to 1e-14.
    """
    n, pairs, m = len(pos), len(i), len(order)
    z = sweep.inverse()  # L^-1 (the grounded inputs have no row nor column)
    pi, pj = pos[i], pos[j]
    zii = np.where(pi >= 0, z[pi, pi], 0.0)
    zjj = np.where(pj >= 0, z[pj, pj], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        resistance = zii + zjj - 2.0 * np.where((pi >= 0) & (pj >= 0), z[pi, pj], 0.0)
        lost = np.maximum(zii, zjj) / resistance
    if not np.all(resistance > 0) or lost.max(initial=0.0) > EXACT_LOSS:
        return None
    k = np.zeros((n, m))  # row a: the centred offsets of input a for each unit right-hand side
    k[order] = z
    del z
    _component_centring(members, cm, n, size)(k)
    kt = np.ascontiguousarray(k.T)
    b = _incidence_t(pos, i, j, m, w2)  # B = A^T W
    u = (b @ (cov @ b.T.tocsr())) @ kt  # M K^T (inputs x inputs)
    extra_var = np.einsum("ca,ca->a", kt, u)  # diag(K M K^T)
    ut = np.ascontiguousarray(u.T)  # (M K^T)^T: S_ab = k[a] . ut[b]
    extra_res = extra_var[i] + extra_var[j]
    for lo in range(0, pairs, _ROWS):  # S_ij and S_ji (in slices: a few MB at a time)
        at = slice(lo, lo + _ROWS)
        extra_res[at] -= np.einsum("pc,pc->p", k[i[at]], ut[j[at]])
        extra_res[at] -= np.einsum("pc,pc->p", k[j[at]], ut[i[at]])
    # sum_q H_pq C_pq over the nonzeros (p, q) of C, with H_pq = G_{i_p q} - G_{j_p q}
    c = cov.tocoo()
    p, q = c.row, c.col
    qi, qj = pi[q], pj[q]  # pair q's ends in K's columns (-1: grounded, no column)

    def g(a):  # G[a, q] at the nonzeros
        return w2[q] * (np.where(qi >= 0, kt[qi, a], 0.0) - np.where(qj >= 0, kt[qj, a], 0.0))

    extra_res -= 2.0 * np.bincount(p, c.data * (g(i[p]) - g(j[p])), minlength=pairs)
    return extra_var, extra_res


def _gains(gain, cov, z, n):
    """``(C z, G z, G C z)``; ``z`` unit vectors (floats) or probes (int8: 0 for -1, 1 for +1).

    Probes are expanded `_COLUMNS` at a time: at 39,402 pairs the 256 probes as floats, their
    ``C z`` and the weighted copy a gain makes took 80 MB each, all at once.  Every column
    of a product is computed as alone (sparse products go column by column, and BLAS's
    kernels do too for blocks whose width is a multiple of their unrolling, 4 or 8: a width of
    7 changed the last bit), so the values are those of all probes at once.
    """
    if z.dtype != np.int8:
        cz = np.asarray(cov @ z)
        return cz, gain(z), gain(cz)
    pairs, k = z.shape
    cz, gz, gcz = np.empty((pairs, k)), np.empty((n, k)), np.empty((n, k))
    block = np.empty((pairs, min(k, _COLUMNS)))
    for lo in range(0, k, _COLUMNS):
        at = slice(lo, lo + _COLUMNS)
        signs = np.ascontiguousarray(z[:, at])
        block = block[:, : signs.shape[1]]
        np.multiply(signs, 2.0, out=block)  # indices 0 / 1 -> -1.0 / +1.0, exactly
        block -= 1.0
        cz[:, at] = c_block = cov @ block
        gz[:, at] = gain(block)
        gcz[:, at] = gain(c_block)
    return cz, gz, gcz


_COLUMNS = 64  # probes expanded at a time in `_gains` (a multiple of 8 that divides PROBES)
_ROWS = 2048  # pairs per slice of the residuals' products in `_shared_terms`


@lru_cache(maxsize=2)
def _probe_signs(pairs: int) -> tuple[np.ndarray, ...]:
    """The random +-1 probes of `_shared_terms` (as int8: 0 for -1, 1 for +1), per block of columns.

    Always the same for a number of pairs (seed 0): the values of ``rng.choice([-1.0, 1.0],
    (pairs, k))`` for each block in turn, kept as int8 (a robust solve at 10,000 images asks
    for them ~18 times; 10 MB kept where the floats would take 80 MB).
    """
    rng = np.random.default_rng(0)
    out = []
    for k in range(0, PROBES, _CHUNK):
        index = rng.integers(0, 2, size=(pairs, min(_CHUNK, PROBES - k))).astype(np.int8)
        index.flags.writeable = False
        out.append(index)
    return tuple(out)


def _incidence_t(pos, i, j, rows: int, w2=None) -> csr_matrix:
    """``A^T`` over the non-grounded inputs: ``rows x pairs``, entries +-1 (+-``w2``: ``A^T W``).

    With ``w2``, each entry is +-1 times its pair's ``w2``: exactly +-``w2``.

    ``A^T @ weighted`` (``weighted``: pairs x k): row ``pos[i_p]`` gains ``weighted[p]``, row
    ``pos[j_p]`` loses it (grounded ends, at -1, drop out).  Each cell sums from 0 in pair
    order, the first ends before the second ones: the order and the sums of ``np.add.at``
    for each end in turn, since scipy's ``csr_matvecs`` adds ``+-1 * weighted[p]`` (exact)
    in the order of a row's entries (kept as built, not sorted).  At 39,402 pairs and 256
    columns that is 0.03 s where one ``bincount`` of the cells took 0.3 s and 320 MB.
    """
    pairs = len(i)
    ends = np.concatenate([pos[i], pos[j]])
    keep = np.flatnonzero(ends >= 0)
    order = keep[np.argsort(ends[keep], kind="stable")]  # by row; first ends first
    counts = np.bincount(ends[order], minlength=rows)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    signs = np.where(order < pairs, 1.0, -1.0)
    matrix = csr_matrix((signs, order % pairs, indptr), shape=(rows, pairs))
    if w2 is not None:
        matrix.data *= w2[matrix.indices]
    return matrix


def _component_centring(members, cm, n: int, size):
    """A function that centres the rows ``members`` of an ``n x k`` array in place.

    Each column less its mean over the rows of each component (``cm``: the members'
    components, ``size``: their sizes): the zero-mean offsets of `solve_offsets`' gauge.
    """
    indicator = csr_matrix((np.ones(len(members)), (members, cm)), shape=(n, len(size)))
    counts = np.maximum(size, 1.0)[:, None]

    def centre(x: np.ndarray) -> None:
        x[members] -= ((indicator.T @ x) / counts)[cm]

    return centre


def _levels(n, i, j, comp) -> np.ndarray:
    """Breadth-first levels of the inputs in pairs (-1 for the others), per component.

    Level 0 is the grounded input, one per component, and every input that shares a pair
    with it is at level 1 (`_BlockSweep.centred_gain_norms` counts on it: an edge to a
    grounded input must lie in the last block); every pair joins equal or consecutive levels.

    Several searches are made per component, and the one whose levels cost least (sum of
    their widths cubed) is kept: from its first input, then from the farthest input of the
    previous search (the way a pseudo-peripheral input is found); then, when a level of the
    best of those is wider than `BLOCK`, from its whole farthest level, and from the half
    of that level nearer one of its ends (`_bands`).  A search from one input spreads in
    rings until they reach the far side (on a grid of m x m, from a corner: L-shaped levels
    up to 2m wide); one from a side of the mosaic steps across it in bands as wide as that
    side.  All components are searched at once, from an extra node linked to the inputs
    searched from.
    """
    in_pairs = np.zeros(n, dtype=bool)
    in_pairs[i] = in_pairs[j] = True
    nodes = np.flatnonzero(in_pairs)
    node_comp = comp[nodes]
    labels, first = np.unique(node_comp, return_index=True)
    slot = np.searchsorted(labels, node_comp)
    best_cost = np.full(len(labels), np.inf)
    level = np.full(n, -1, dtype=np.intp)

    def distance(sources: np.ndarray) -> np.ndarray:  # of each of nodes, 0 at the sources
        rows = np.concatenate([i, np.full(len(sources), n)])
        cols = np.concatenate([j, nodes[sources]])
        graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
        dist = shortest_path(graph, method="D", directed=False, unweighted=True, indices=n)
        return dist[nodes].astype(np.intp) - 1

    def farthest(found: np.ndarray, among: np.ndarray) -> np.ndarray:  # per component, first of equals
        at = np.flatnonzero(among)
        at = at[np.lexsort((at, -found[at], slot[at]))]
        return at[np.r_[True, slot[at][1:] != slot[at][:-1]]]

    def consider(found: np.ndarray) -> None:  # kept where it costs less
        width, depth = _widths(slot, found, len(labels))
        cost = (width.astype(float) ** 3).reshape(len(labels), depth).sum(axis=1)
        better = cost < best_cost
        best_cost[better] = cost[better]
        take = better[slot]
        level[nodes[take]] = found[take]

    everywhere = np.ones(len(nodes), dtype=bool)
    starts = first
    for _ in range(_SEARCHES):
        found = distance(starts)
        consider(found)
        starts = farthest(found, everywhere)
    best = level[nodes]
    if _widths(slot, best, len(labels))[0].max() <= BLOCK:
        return level  # (levels no wider than a block: narrower ones would not make smaller blocks)
    # the far side of the best search, and the half of it nearer one of its ends (the end
    # farthest from its first input)
    top = np.zeros(len(labels), dtype=np.intp)
    np.maximum.at(top, slot, best)
    far = best == top[slot]
    consider(_bands(distance(np.flatnonzero(far)), far, slot))
    from_end = distance(farthest(distance(_first_of(far, slot)), far))
    from_other = distance(farthest(from_end, far))
    half = far & (from_end < from_other)
    half |= far & ~np.isin(slot, slot[half])  # (a far side of one input: all of it)
    consider(_bands(distance(np.flatnonzero(half)), half, slot))
    return level


def _bands(found: np.ndarray, source: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Levels for `_levels` from the distances ``found`` to a set of inputs (``source``).

    The first input of each component's ``source`` is grounded (level 0); the rest of the
    source and the inputs next to it are at level 1, so that every neighbour of the grounded
    input is; the others at their distance from the source.
    """
    found = np.maximum(found, 1)
    found[_first_of(source, slot)] = 0
    return found


def _first_of(among: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The first of ``among`` (a mask) in each component (``slot``), as indices."""
    at = np.flatnonzero(among)
    return at[np.unique(slot[at], return_index=True)[1]]


def _widths(slot, level, components) -> tuple[np.ndarray, int]:
    """Inputs per (component, level), flat (component-major), and the number of levels."""
    depth = int(level.max()) + 1
    return np.bincount(slot * depth + level, minlength=components * depth), depth


def _block_order(level: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-grounded inputs in block order, and the blocks' bounds in that order.

    Component after component, farthest level first (the grounded input would come last);
    a block is a run of whole levels of one component, or of several whole components, with
    at least `BLOCK` inputs (or what is left).  Inside a block the inputs are in increasing
    order.  Edges then join only consecutive blocks.
    """
    unknown = np.flatnonzero(level > 0)
    key = np.lexsort((unknown, -level[unknown], comp[unknown]))
    unknown = unknown[key]
    c, lev = comp[unknown], level[unknown]
    starts = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (lev[1:] != lev[:-1])])
    sizes = np.diff(np.r_[starts, len(unknown)]).tolist()
    run_block = np.empty(len(starts), dtype=np.intp)
    block, count = 0, 0
    for r, size in enumerate(sizes):  # a run is one level of one component
        if count >= BLOCK:
            block, count = block + 1, 0
        run_block[r] = block
        count += size
    blocks = np.repeat(run_block, sizes)
    order = unknown[np.lexsort((unknown, blocks))]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(blocks))])
    return order, bounds


def _grounded_laplacian(pos, i, j, w) -> csr_matrix:
    """The weighted Laplacian of the edges (i, j) over the non-grounded inputs (at ``pos``).

    An edge to a grounded input adds to the other end's diagonal only.
    """
    size = int(pos.max()) + 1
    pi, pj = pos[i], pos[j]
    both = (pi >= 0) & (pj >= 0)
    rows = np.concatenate([pi[pi >= 0], pj[pj >= 0], pi[both], pj[both]])
    cols = np.concatenate([pi[pi >= 0], pj[pj >= 0], pj[both], pi[both]])
    vals = np.concatenate([w[pi >= 0], w[pj >= 0], -w[both], -w[both]])
    return coo_matrix((vals, (rows, cols)), shape=(size, size)).tocsr()


def _square_root(columns: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """A matrix ``R`` with ``R R^T = columns columns^T`` and at most as many columns as rows.

    The triangle of a Householder QR of ``columns^T`` (LAPACK's ``dgeqrf``, as
    `scipy.linalg.qr` calls it, with the same work size: the same bits); with `overwrite`
    ``columns`` (C-ordered float64) serves as its work space.
    """
    rows, cols = columns.shape
    if cols <= rows:
        return columns
    qr, _, _, info = _geqrf(columns.T, lwork=_geqrf_work(cols, rows), overwrite_a=overwrite)
    if info < 0:
        raise ValueError(f"illegal value in argument {-info} of LAPACK's dgeqrf")
    return np.triu(qr[:rows]).T


def _geqrf_work(m: int, n: int) -> int:
    """The optimal work size of ``dgeqrf`` for an m x n matrix (its own work-size query)."""
    work, info = _geqrf_lwork(m, n)
    if info != 0:
        raise ValueError(f"LAPACK's dgeqrf work-size query failed (info {info})")
    return int(work)


class _BlockSweep:
    """Block LDL^T of a symmetric positive definite block-tridiagonal matrix ``L``.

    With ``L_k`` / ``U_k`` its diagonal / upper blocks: the Schur complements ``S_k = L_k -
    U_{k-1}^T P_{k-1}`` (Cholesky-factored) and ``P_k = S_k^{-1} U_k``.  Every product with an
    ``S_k^{-1}`` is a triangular solve, never an explicit inverse times a right-hand side.
    The diagonal blocks of ``Z = L^{-1}`` follow backwards, ``Z_k = S_k^{-1} + P_k Z_{k+1}
    P_k^T``, its off-diagonal ones from them: ``Z_{k,e} = -P_k Z_{k+1,e}`` for ``e > k``.
    The ``U_k`` (the edges between consecutive blocks: a few per input) are kept sparse.
    """

    def __init__(self, lap: csr_matrix, bounds: np.ndarray):
        self.bounds = bounds
        n_blocks = len(bounds) - 1
        self.chol: list = []
        self.P: list[np.ndarray] = []
        self.Ut: list[csr_matrix] = []  # U_k^T
        s = self._block(lap, 0, 0)
        for k in range(n_blocks):
            self.chol.append(cho_factor(s, lower=True, check_finite=False))
            if k + 1 == n_blocks:
                break
            ut = lap[self.bounds[k + 1] : self.bounds[k + 2], self.bounds[k] : self.bounds[k + 1]]
            p = self._solve(k, ut.T.toarray())
            s = self._block(lap, k + 1, k + 1) - ut @ p
            self.P.append(p)
            self.Ut.append(ut)

    def _block(self, matrix: csr_matrix, a: int, b: int) -> np.ndarray:
        return matrix[self.bounds[a] : self.bounds[a + 1], self.bounds[b] : self.bounds[b + 1]].toarray()

    def _solve(self, k: int, rhs: np.ndarray) -> np.ndarray:
        """``S_k^{-1} rhs``, by the two triangular solves of `scipy.linalg.cho_solve`.

        LAPACK's ``dpotrs`` is these two ``dtrsm``, called directly here: the same bits, a
        third less time for blocks of ~100 (the wrapper's checks).
        """
        rhs = np.asarray(rhs, dtype=float)
        if rhs.ndim != 2 or rhs.shape[1] == 0:
            return cho_solve(self.chol[k], rhs, check_finite=False)
        factor = self.chol[k][0]  # lower triangle (the other holds what cho_factor left)
        y = _trsm(1.0, factor, rhs, side=0, lower=1, trans_a=0, diag=0)
        return _trsm(1.0, factor, y, side=0, lower=1, trans_a=1, diag=0, overwrite_b=1)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``L^{-1} rhs`` for a matrix of right-hand sides (rows in block order)."""
        b = self.bounds
        y = [rhs[b[k] : b[k + 1]] for k in range(len(b) - 1)]
        for k, p in enumerate(self.P):
            y[k + 1] = y[k + 1] - p.T @ y[k]
        x = self._solve(len(y) - 1, y[-1])
        out = [x]
        for k in range(len(self.P) - 1, -1, -1):
            x = self._solve(k, y[k]) - self.P[k] @ x
            out.append(x)
        return np.concatenate(out[::-1])

    def inverse(self) -> np.ndarray:
        """``Z = L^{-1}`` (rows and columns in block order), by the backward recurrences.

        ``Z_k = S_k^{-1} + P_k Z_{k+1} P_k^T`` and ``Z_{k,e} = -P_k Z_{k+1,e}`` for ``e > k``
        (the blocks below the diagonal: their transposes), last block first: no forward pass
        over the identity.  `solve` of the identity gives the same values to rounding with
        about five times the work (1,023 inputs: 24 ms against 4.5 ms).
        """
        b = self.bounds
        n_blocks = len(b) - 1
        z = np.empty((b[-1], b[-1]))
        for k in range(n_blocks - 1, -1, -1):
            lo, hi = b[k], b[k + 1]
            own = self._solve(k, np.eye(hi - lo))  # S_k^{-1}
            if k + 1 < n_blocks:
                p = self.P[k]
                q = p @ z[hi : b[k + 2], hi:]  # P_k Z_{k+1, e} for e > k
                z[lo:hi, hi:] = -q
                z[hi:, lo:hi] = -q.T
                own += q[:, : b[k + 2] - hi] @ p.T
            z[lo:hi, lo:hi] = own
        return z

    def centred_gain_norms(self, pi, pj, f, f_mean, node_comp, edge_comp, own_sd, pool=None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """Squared norms of the rows of ``X`` and of the edges' residual rows.

        ``X = L^{-1} A^T diag(f) - (component means)``; an edge's residual row is
        ``e_p own_sd_p - (X_i - X_j)``.

        ``A`` is the incidence matrix of the edges (``pi``, ``pj``: their ends' positions, -1
        for a grounded end), ``f_mean`` the mean of each column of ``L^{-1} A^T diag(f)``
        over its component (grounded input included), ``node_comp`` / ``edge_comp`` the
        components of the rows and of the edges.  ``own_sd`` is each edge's own standard
        deviation in the units of ``f``: the residual of an edge moves with its own
        difference (``e_p``) less with what the solution makes of it (``X_i - X_j``).

        The edges are grouped by the first block they touch (``e``); ``F_e`` / ``F'_e`` are
        their columns of ``A^T diag(f)`` in blocks ``e`` / ``e + 1``.  With ``Y_e = S_e^{-1}
        F_e`` and ``Phi_e = F'_e - U_e^T Y_e`` (forward substitution), a group's columns of
        ``X`` are, in its own block, ``Y_k - P_k Z_{k+1} Phi_k`` less the means; ``-P_k`` times
        those of block ``k + 1`` in blocks before it (``P_k`` maps a component's constant
        vector to minus itself there, so the centring carries over); and ``Z_{k,e+1}
        y_{k,e}`` less the means in blocks after it, ``y_{k,e}`` being ``Phi_e`` carried
        forward (``y_{k+1} = -P_k^T y_k``).  Both families are kept as square roots.

        With ``pool`` (an executor of one helper thread) the groups' ``Y_e`` and ``Phi_e`` and
        the edges' residual norms are computed there, beside the two passes: the same
        operations on the same values, so the same bits.
        """
        b = self.bounds
        n_blocks = len(b) - 1
        block_i = np.searchsorted(b, pi, side="right") - 1
        block_j = np.searchsorted(b, pj, side="right") - 1
        home = np.where(pi < 0, block_j, np.where(pj < 0, block_i, np.minimum(block_i, block_j)))
        order = np.argsort(home, kind="stable")
        starts = np.searchsorted(home[order], np.arange(n_blocks + 1))
        def group(e):  # block e's group of edges, its Y_e and Phi_e
            edges = order[starts[e] : starts[e + 1]]
            here = np.zeros((b[e + 1] - b[e], len(edges)))
            after = np.zeros((b[e + 2] - b[e + 1] if e + 1 < n_blocks else 0, len(edges)))
            cols = np.arange(len(edges))
            for ends, sign in ((pi[edges], 1.0), (pj[edges], -1.0)):
                value = sign * f[edges]
                at = (ends >= b[e]) & (ends < b[e + 1])
                here[ends[at] - b[e], cols[at]] = value[at]
                nxt = ends >= b[e + 1]
                after[ends[nxt] - b[e + 1], cols[nxt]] = value[nxt]
            y = self._solve(e, here)
            return edges, y, (after - self.Ut[e] @ y if e + 1 < n_blocks else after)

        # (with a helper thread: the groups computed there, in order, while the forward pass
        # runs here; then the edges' residuals there while the backward pass goes on)
        run = pool.submit if pool is not None else _Done.of
        found = [run(group, e) for e in range(n_blocks)]
        y_own, phi, groups = [None] * n_blocks, [None] * n_blocks, [None] * n_blocks

        def take(e):
            if groups[e] is None:
                groups[e], y_own[e], phi[e] = found[e].result()
                found[e] = None

        # forward: the groups before each block, as [rows of y; one row of means per component]
        comps = [np.unique(node_comp[b[k] : b[k + 1]]) for k in range(n_blocks)]
        before = [np.zeros((b[1] - b[0] + len(comps[0]), 0))]
        for k, p in enumerate(self.P):
            take(k)
            nk, edges, prev = b[k + 1] - b[k], groups[k], before[k]
            carried = -p.T @ prev[:nk]
            # the means of the columns, one row per component that goes on into block k + 1
            means = np.zeros((len(comps[k + 1]), len(edges) + prev.shape[1]))
            on = _isin(edge_comp[edges], comps[k + 1])
            rows = np.searchsorted(comps[k + 1], edge_comp[edges][on])
            means[rows, np.flatnonzero(on)] = f_mean[edges][on]
            kept = _isin(comps[k], comps[k + 1])
            means[np.searchsorted(comps[k + 1], comps[k][kept]), len(edges) :] = prev[nk:][kept]
            before.append(_square_root(np.vstack([np.hstack([phi[k], carried]), means]), overwrite=True))
        # backward: Z_k, the groups from k on (square root), and the norms
        take(n_blocks - 1)
        out = [None] * n_blocks
        residual = np.zeros(len(pi))
        pending = []
        z_next = from_here = None
        for k in range(n_blocks - 1, -1, -1):
            nk, edges, prev = b[k + 1] - b[k], groups[k], before[k]
            n_next = b[k + 2] - b[k + 1] if k + 1 < n_blocks else 0
            carried = 0 if from_here is None else from_here.shape[1]
            # the rows of block k, of block k + 1 and of the grounded inputs (one per component
            # of block k) over the groups from k on: the group's own columns, then the later
            # groups' (as block k + 1's square root), filled in place
            right = np.zeros((nk + n_next + len(comps[k]), len(edges) + carried))
            own = right[:nk, : len(edges)]
            own[...] = y_own[k]
            _centre(own, node_comp[b[k] : b[k + 1]], edge_comp[edges], f_mean[edges])
            g = self._solve(k, np.eye(nk))
            if k + 1 == n_blocks:
                z = g
                left = z @ prev[:nk]
            else:
                p = self.P[k]
                q = p @ z_next
                z = g + q @ p.T
                own -= q @ phi[k]
                right[:nk, len(edges) :] = -p @ from_here
                # block k + 1's rows in the same columns, for the edges that reach it
                nxt = slice(b[k + 1], b[k + 2])
                group_next = right[nk : nk + n_next, : len(edges)]
                group_next[...] = z_next @ phi[k]
                _centre(group_next, node_comp[nxt], edge_comp[edges], f_mean[edges])
                right[nk : nk + n_next, len(edges) :] = from_here
                next_left = z_next @ (-p.T @ prev[:nk])
                kept = _isin(node_comp[nxt], comps[k])
                next_left[kept] -= prev[nk:][np.searchsorted(comps[k], node_comp[nxt][kept])]
                left = z @ prev[:nk]
            member = np.searchsorted(comps[k], node_comp[b[k] : b[k + 1]])
            left -= prev[nk:][member]
            if len(edges):
                left_rows = np.vstack([left, next_left, -prev[nk:]] if n_next else [left, -prev[nk:]])
                pending.append((edges, run(_residuals, k, b, edges, pi, pj, edge_comp, f_mean,
                                           own_sd, comps[k], left_rows, right)))
                if len(pending) > 2:  # (a helper that falls behind keeps two blocks' rows)
                    done, norms = pending.pop(0)
                    residual[done] = norms.result()
            # (right serves the residuals still: overwritten only when they are done)
            from_here = _square_root(right[:nk], overwrite=pool is None)
            out[k] = np.einsum("ij,ij->i", left, left) + np.einsum("ij,ij->i", from_here, from_here)
            z_next = z
        for edges, norms in pending:
            residual[edges] = norms.result()
        return np.concatenate(out), residual


class _Done:
    """A finished future: what `centred_gain_norms` runs when it has no helper thread."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    @classmethod
    def of(cls, function, *args):
        return cls(function(*args))

    def result(self):
        return self.value


def _residuals(k, bounds, edges, pi, pj, edge_comp, f_mean, own_sd, comps, left, right):
    """Squared norms of the residual rows of the edges of block ``k``'s group.

    An edge's residual row is ``e_p own_sd_p - (X_i - X_j)``.

    ``left`` holds the rows over the groups before ``k`` (block ``k``'s, then block ``k +
    1``'s, then the grounded inputs', one per component of ``comps``), ``right`` the rows
    over the groups from ``k`` on in the same order, the group's own columns first, its
    grounded rows still zero (filled here: minus the means of their component's columns).
    """
    nk = bounds[k + 1] - bounds[k]
    n_next = bounds[k + 2] - bounds[k + 1] if k + 2 < len(bounds) else 0
    rows = np.searchsorted(comps, edge_comp[edges])
    ok = (rows < len(comps)) & (comps[np.minimum(rows, len(comps) - 1)] == edge_comp[edges])
    right[nk + n_next + rows[ok], np.flatnonzero(ok)] = -f_mean[edges][ok]

    def row(ends):
        index = np.where(ends < bounds[k + 1], ends - bounds[k], nk + ends - bounds[k + 1])
        return np.where(ends < 0, nk + n_next + rows, index)

    n = len(edges)
    differences = _row_differences(row(pi[edges]), row(pj[edges]), right.shape[0])
    d_left = differences @ left
    d_right = differences @ right
    d_right[np.arange(n), np.arange(n)] -= own_sd[edges]
    return np.einsum("ij,ij->i", d_left, d_left) + np.einsum("ij,ij->i", d_right, d_right)


def _row_differences(first: np.ndarray, second: np.ndarray, width: int) -> csr_matrix:
    """The sparse matrix whose row ``p`` is ``+1`` at ``first[p]``, ``-1`` at ``second[p]``.

    ``D @ rows`` is ``rows[first] - rows[second]``, each row less a row exactly as the
    subtraction (``0 + a``, then ``+ (-1) b``): the same bits, with a third of the memory
    traffic of gathering both rows first.
    """
    n = len(first)
    ends = np.empty(2 * n, dtype=np.intp)
    ends[0::2], ends[1::2] = first, second
    return csr_matrix((np.tile([1.0, -1.0], n), ends, np.arange(0, 2 * n + 1, 2)),
                      shape=(n, width))


def _isin(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``np.isin(values, labels)``, faster for one label (one component: the common case)."""
    return values == labels[0] if len(labels) == 1 else np.isin(values, labels)


def _centre(columns, row_comp, col_comp, col_mean) -> None:
    """Subtract from ``columns``, in place, each column's mean on the rows of its own component."""
    if len(row_comp) and (row_comp == row_comp[0]).all():  # rows of one component: one row
        np.subtract(columns, np.where(col_comp == row_comp[0], col_mean, 0.0), out=columns)
    else:
        np.subtract(columns, np.where(row_comp[:, None] == col_comp[None, :], col_mean, 0.0),
                    out=columns)
