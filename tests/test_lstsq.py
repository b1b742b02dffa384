"""The least-squares step of the match methods, on known offsets (after reproject's test_background)."""

import numpy as np
import pytest

from skymatch_nb_ui.engine.lstsq import components, solve_offsets
from skymatch_nb_ui.testing import tiling_pairs

# sizes from 4 to 1441 inputs, offsets from 1e-50 to 1e30
CASES = [(4, 1.0), (33, 1e30), (44, 1e-50), (132, 1e10),
         pytest.param(1441, 1e-5, marks=pytest.mark.slow)]


def overlap_graph(n, rng):
    """A connected graph like a mosaic's: a chain plus about 2n random extra pairs, i < j."""
    extra = rng.integers(0, n, size=(2 * n, 2))
    pairs = np.vstack([np.column_stack([np.arange(n - 1), np.arange(1, n)]), extra])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
    return np.unique(pairs, axis=0)


@pytest.mark.parametrize(("n", "scale"), CASES)
def test_known_offsets_are_recovered(n, scale):
    rng = np.random.default_rng(n)
    expected = rng.uniform(-scale, scale, n)
    pairs = overlap_graph(n, rng)
    i, j = pairs[:, 0], pairs[:, 1]
    diff = expected[i] - expected[j]
    diff[1] = np.nan  # a NaN punched in: the engine leaves such a pair out of the solve
    ok = np.isfinite(diff)
    weight = rng.uniform(100, 10_000, len(i))  # pixel counts: any weights fit exact data
    sol = solve_offsets(n, i[ok], j[ok], diff[ok], weight[ok], np.full(ok.sum(), (scale / 1e3) ** 2))
    assert sol.component.tolist() == [0] * n
    np.testing.assert_allclose(sol.delta.mean(), 0.0, atol=1e-9 * scale)  # the zero-mean gauge
    np.testing.assert_allclose(sol.delta, expected - expected.mean(), rtol=0, atol=1e-9 * scale)
    assert np.all(np.isfinite(sol.delta_err)) and np.all(sol.delta_err > 0)


def test_noisy_differences_give_the_minimum_norm_weighted_least_squares():
    """What a pseudo-inverse of the full weighted system (the reference's solve) returns."""
    rng = np.random.default_rng(1)
    n = 12
    pairs = overlap_graph(n, rng)
    i, j = pairs[:, 0], pairs[:, 1]
    diff = rng.normal(0, 1, n)[i] - rng.normal(0, 1, n)[j] + rng.normal(0, 0.1, len(i))
    weight = rng.uniform(1, 10, len(i))
    design = np.zeros((len(i), n))
    design[np.arange(len(i)), i], design[np.arange(len(i)), j] = 1.0, -1.0
    expected = np.linalg.pinv(weight[:, None] * design) @ (weight * diff)
    sol = solve_offsets(n, i, j, diff, weight, np.full(len(i), 0.01))
    np.testing.assert_allclose(sol.delta, expected, atol=1e-12)


def test_components_are_solved_apart_and_isolated_inputs_have_no_offset():
    # inputs 0-1-2 (offsets 0, 5, 7) and 3-4 (offsets 1, -1); input 5 overlaps nothing
    i, j = np.array([0, 1, 3]), np.array([1, 2, 4])
    diff = np.array([0 - 5, 5 - 7, 1 - (-1)], float)
    sol = solve_offsets(6, i, j, diff, np.ones(3), np.array([0.01, np.nan, 0.01]))
    assert sol.component.tolist() == [0, 0, 0, 1, 1, 2]
    np.testing.assert_allclose(sol.delta[:3], np.array([0, 5, 7]) - 4, atol=1e-12)
    np.testing.assert_allclose(sol.delta[3:5], [1, -1], atol=1e-12)
    assert np.isnan(sol.delta[5]) and np.isnan(sol.delta_err[5])
    # a NaN variance spoils only the uncertainties of its own component, never the offsets
    assert np.isnan(sol.delta_err[:3]).all() and np.isfinite(sol.delta_err[3:5]).all()


def test_uncertainties_follow_the_pair_errors():
    # a chain 0-1-2 with pair errors sigma: relative to the mean, the middle one is best known
    sigma = 0.3
    sol = solve_offsets(3, np.array([0, 1]), np.array([1, 2]), np.zeros(2), np.ones(2),
                        np.full(2, sigma**2))
    np.testing.assert_allclose(sol.delta_err, sigma * np.sqrt([5 / 9, 2 / 9, 5 / 9]), rtol=1e-12)


def test_components_are_numbered_in_order_of_first_member():
    assert components(6, np.array([4, 0]), np.array([5, 2])).tolist() == [0, 1, 0, 2, 3, 3]


def test_covariance_of_pairs_changes_the_errors_and_residual_variances_not_the_offsets():
    # A 4-cycle with a diagonal; pairs 0 and 2 share noise (covariance 0.5 of their variance).
    i, j = np.array([0, 1, 2, 3, 0]), np.array([1, 2, 3, 0, 2])
    diff = np.array([1.0, -0.5, 0.25, -0.8, 0.6])
    weight, var = np.array([1.0, 2.0, 1.0, 1.5, 0.5]), np.array([0.01, 0.02, 0.01, 0.015, 0.03])
    cov = np.zeros((5, 5))
    cov[0, 2] = cov[2, 0] = 0.5 * np.sqrt(var[0] * var[2])
    plain = solve_offsets(4, i, j, diff, weight, var)
    shared = solve_offsets(4, i, j, diff, weight, var, cov)
    np.testing.assert_allclose(shared.delta, plain.delta, atol=1e-12)
    # the same by hand: d = G diff with G the gauge-fixed weighted least-squares gain
    a = np.zeros((5, 4))
    a[np.arange(5), i], a[np.arange(5), j] = 1.0, -1.0
    w2 = weight**2 / (weight**2).max()
    gain = np.linalg.solve(a.T @ (a * w2[:, None]) + 1 / 4, a.T * w2)
    s = np.diag(var) + cov
    np.testing.assert_allclose(shared.delta_err, np.sqrt(np.diag(gain @ s @ gain.T)), rtol=1e-10)
    resid = np.eye(5) - a @ gain
    np.testing.assert_allclose(shared.residual_var, np.diag(resid @ s @ resid.T), rtol=1e-10,
                               atol=1e-15)
    assert not np.allclose(shared.delta_err, plain.delta_err)


# -- the sparse solve against the dense formulas it replaces ---------------------------------
def dense_solution(n, i, j, diff, weight, var):
    """The zero-mean least-squares offsets and the diagonal of their sandwich covariance,
    with dense matrices per component (the pseudo-inverse of the weighted system)."""
    delta, err = np.full(n, np.nan), np.full(n, np.nan)
    comp = components(n, i, j)
    for c in np.unique(comp[i]):
        members = np.flatnonzero(comp == c)
        local = np.full(n, -1)
        local[members] = np.arange(len(members))
        in_c = comp[i] == c
        design = np.zeros((in_c.sum(), len(members)))
        rows = np.arange(in_c.sum())
        design[rows, local[i[in_c]]], design[rows, local[j[in_c]]] = 1.0, -1.0
        gain = np.linalg.pinv(weight[in_c, None] * design) * weight[in_c]  # d = gain @ diff
        delta[members] = gain @ diff[in_c]
        err[members] = np.sqrt((gain**2) @ var[in_c])
    return delta, err


def pair_data(pairs, rng, spread):
    """Differences, pixel-count weights spanning ``spread`` and variances ~ 1 / pixels."""
    npix = np.exp(rng.uniform(0, np.log(spread), len(pairs))) * 10
    diff = rng.normal(0, 5, len(pairs))
    var = rng.uniform(0.5, 2, len(pairs)) / npix
    return diff, npix, var


@pytest.mark.parametrize(("layout", "holes", "spread"), [
    ((1, 2), 0.0, 1.0),          # one pair
    ((3, 4), 0.0, 10.0),         # one block
    ((9, 11), 0.3, 1000.0),      # several components of several blocks
    ((1, 200), 0.0, 30.0),       # a strip: many narrow levels
    ((25, 30), 0.05, 1000.0),    # wide levels, blocks of several levels
])
def test_sparse_solve_matches_the_dense_pseudo_inverse(layout, holes, spread):
    rng = np.random.default_rng(sum(layout))
    n = layout[0] * layout[1] + 3  # and three inputs in no pair
    pairs = tiling_pairs(*layout, rng, holes=holes)
    i, j = pairs[:, 0], pairs[:, 1]
    diff, weight, var = pair_data(pairs, rng, spread)
    sol = solve_offsets(n, i, j, diff, weight, var)
    delta, err = dense_solution(n, i, j, diff, weight, var)
    np.testing.assert_array_equal(np.isnan(sol.delta), np.isnan(delta))
    np.testing.assert_allclose(sol.delta, delta, rtol=0, atol=1e-10 * np.nanmax(np.abs(delta)))
    np.testing.assert_allclose(sol.delta_err, err, rtol=1e-10)


@pytest.mark.parametrize(("decades", "rtol"), [(2, 1e-10), (6, 2e-3)])
def test_uncertainties_on_a_tree_do_not_depend_on_the_weights(decades, rtol):
    """On a tree every difference is met exactly, whatever the weights: an input's offset from
    the root is the sum of the differences along its path, so its zero-mean uncertainty is
    known exactly.  With weights ``decades`` orders of magnitude apart (slivers next to whole
    detectors: 6) double precision keeps about 16 - 2 * decades digits of it (as the dense
    solve did): the sparse one must not lose more."""
    rng = np.random.default_rng(5)
    n = 400
    parent = np.array([rng.integers(max(0, k - 30), k) for k in range(1, n)])  # a deep tree
    i, j = parent, np.arange(1, n)
    var = rng.uniform(0.5, 2, n - 1)
    weight = 10.0 ** rng.uniform(0, decades, n - 1)
    on_path = np.zeros((n, n - 1))  # on_path[k, p]: pair p lies between the root and input k
    for k in range(1, n):
        on_path[k] = on_path[parent[k - 1]]
        on_path[k, k - 1] = 1.0
    centred = on_path - on_path.mean(axis=0)
    expected = np.sqrt((centred**2) @ var)
    sol = solve_offsets(n, i, j, rng.normal(0, 1, n - 1), weight, var)
    np.testing.assert_allclose(sol.delta_err, expected, rtol=rtol)


def test_thousands_of_inputs_are_solved_without_dense_matrices():
    """10,000 inputs (a 100 x 100 tiling, ~40,000 pairs): the dense solve needed 3 GB; this
    must run in a small fraction of that (no N x N or pairs x N array)."""
    import tracemalloc

    rng = np.random.default_rng(7)
    pairs = tiling_pairs(100, 100, rng)
    diff, weight, var = pair_data(pairs, rng, 100.0)
    tracemalloc.start()
    sol = solve_offsets(10_000, pairs[:, 0], pairs[:, 1], diff, weight, var)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert np.isfinite(sol.delta).all() and np.isfinite(sol.delta_err).all()
    assert peak < 200e6  # a 10,000 x 10,000 float matrix alone is 800 MB
    assert abs(sol.delta.mean()) < 1e-9 * np.abs(sol.delta).max()


# -- residual variances (what a robust solve compares each pair's residual with) --------------
def dense_gains(n, i, j, weight):
    """Per component: its inputs, its pairs, their design matrix and the weighted fit's gain
    (the offsets are ``gain @ diff``), from a dense pseudo-inverse."""
    comp = components(n, i, j)
    for c in np.unique(comp[i]):
        members = np.flatnonzero(comp == c)
        local = np.full(n, -1)
        local[members] = np.arange(len(members))
        in_c = np.flatnonzero(comp[i] == c)
        design = np.zeros((len(in_c), len(members)))
        design[np.arange(len(in_c)), local[i[in_c]]] = 1.0
        design[np.arange(len(in_c)), local[j[in_c]]] = -1.0
        yield members, in_c, design, np.linalg.pinv(weight[in_c, None] * design) * weight[in_c]


def dense_residual_var(n, i, j, weight, var):
    """diag((I - K) V (I - K)^T) with K the hat matrix of the weighted fit, per component."""
    out = np.zeros(len(i))
    for _, in_c, design, gain in dense_gains(n, i, j, weight):
        out[in_c] = ((np.eye(len(in_c)) - design @ gain) ** 2) @ var[in_c]
    return out


@pytest.mark.parametrize(("layout", "holes", "spread"), [
    ((3, 4), 0.0, 10.0), ((9, 11), 0.3, 100.0), ((1, 50), 0.0, 10.0), ((20, 20), 0.05, 100.0),
])
def test_residual_variances_match_the_dense_hat_matrix(layout, holes, spread):
    rng = np.random.default_rng(sum(layout) + 1)
    n = layout[0] * layout[1]
    pairs = tiling_pairs(*layout, rng, holes=holes)
    i, j = pairs[:, 0], pairs[:, 1]
    diff, weight, var = pair_data(pairs, rng, spread)
    sol = solve_offsets(n, i, j, diff, weight, var)
    np.testing.assert_allclose(sol.residual_var, dense_residual_var(n, i, j, weight, var),
                               rtol=1e-9, atol=1e-12 * var.max())


def king_pairs(m: int) -> np.ndarray:
    """The pairs of an m x m grid of inputs where each overlaps its 8 neighbours."""
    index = np.arange(m * m).reshape(m, m)
    pairs = [np.column_stack([index[:, :-1].ravel(), index[:, 1:].ravel()]),
             np.column_stack([index[:-1, :].ravel(), index[1:, :].ravel()]),
             np.column_stack([index[:-1, :-1].ravel(), index[1:, 1:].ravel()]),
             np.column_stack([index[:-1, 1:].ravel(), index[1:, :-1].ravel()])]
    return np.vstack(pairs)


def test_levels_cross_a_grid_in_bands_and_keep_the_grounded_inputs_neighbours_together():
    """The sweep's order.  A search from one input spreads in rings: from a corner of a grid
    whose inputs overlap all 8 neighbours, L-shaped levels up to 2m - 1 wide (the sweep's
    cost grows as the cube of its blocks' widths); the levels must step across in bands of
    m instead.  Whatever the layout, each component has one grounded input (level 0), all
    its neighbours at level 1 (the sweep counts on it), and every pair joins equal or
    consecutive levels."""
    from skymatch_nb_ui.engine.lstsq import _levels

    rng = np.random.default_rng(3)
    layouts = [("king", 30, king_pairs(30)), ("tiling", 40, tiling_pairs(40, 40, rng)),
               ("holes", None, tiling_pairs(9, 31, rng, holes=0.3)),
               ("strip", None, tiling_pairs(1, 60, rng))]
    for name, m, pairs in layouts:
        n = int(pairs.max()) + 1
        i, j = pairs[:, 0], pairs[:, 1]
        comp = components(n, i, j)
        level = _levels(n, i, j, comp)
        in_pairs = np.unique(pairs)
        assert (level[in_pairs] >= 0).all() and (np.delete(level, in_pairs) == -1).all()
        grounded = np.flatnonzero(level == 0)
        assert sorted(comp[grounded].tolist()) == np.unique(comp[in_pairs]).tolist()
        touches = np.isin(i, grounded) | np.isin(j, grounded)
        others = np.where(np.isin(i, grounded), j, i)[touches]
        assert (level[others] == 1).all(), name
        assert (np.abs(level[i] - level[j]) <= 1).all(), name
        if m is not None:
            widths = np.bincount(level[level >= 0])
            assert widths[2:].max() == m and widths[1] <= 2 * m, name


@pytest.mark.parametrize(("layout", "holes"), [((20, 20), 0.0), ((14, 17), 0.15), ("king", 0.0)])
def test_one_level_per_block_matches_the_dense_solve(layout, holes, monkeypatch):
    """Blocks of single levels (`BLOCK` small): the grounded inputs' pairs then reach only
    the last block of the sweep, and the uncertainties and residual variances of all pairs
    stay those of the dense solve (a level order that put a grounded input's neighbours in
    two blocks left errors 0.2-1% off)."""
    from skymatch_nb_ui.engine import lstsq

    monkeypatch.setattr(lstsq, "BLOCK", 4)
    rng = np.random.default_rng(len(layout) + 2)
    pairs = king_pairs(16) if layout == "king" else tiling_pairs(*layout, rng, holes=holes)
    n = int(pairs.max()) + 1
    i, j = pairs[:, 0], pairs[:, 1]
    diff, weight, var = pair_data(pairs, rng, 100.0)
    sol = solve_offsets(n, i, j, diff, weight, var)
    delta, err = dense_solution(n, i, j, diff, weight, var)
    np.testing.assert_allclose(sol.delta, delta, rtol=0, atol=1e-10 * np.nanmax(np.abs(delta)))
    np.testing.assert_allclose(sol.delta_err, err, rtol=1e-10)
    np.testing.assert_allclose(sol.residual_var, dense_residual_var(n, i, j, weight, var),
                               rtol=1e-9, atol=1e-12 * var.max())


def test_residual_variances_of_a_triangle_and_of_a_tree():
    # a loop of three equal pairs: each residual keeps a third of the pair's variance
    sol = solve_offsets(3, np.array([0, 1, 0]), np.array([1, 2, 2]), np.zeros(3), np.ones(3),
                        np.full(3, 0.09))
    np.testing.assert_allclose(sol.residual_var, 0.03, rtol=1e-12)
    # a pair that no loop checks is met exactly: nothing is left to compare its residual with
    tree = solve_offsets(4, np.array([0, 1, 1]), np.array([1, 2, 3]), np.ones(3),
                         np.array([1.0, 50.0, 2.0]), np.array([0.1, 0.2, np.nan]))
    assert np.isnan(tree.residual_var).all()  # a NaN variance spoils its component
    tree = solve_offsets(4, np.array([0, 1, 1]), np.array([1, 2, 3]), np.ones(3),
                         np.array([1.0, 50.0, 2.0]), np.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(tree.residual_var, 0.0, atol=1e-15)


def shared_pixel_covariance(n, i, j, var, share):
    """Pairs that share an input share ``share`` of their noise (as two sides of one image)."""
    ends, pair = np.r_[i, j], np.r_[np.arange(len(i)), np.arange(len(i))]
    cov = np.zeros((len(i), len(i)))
    for node in range(n):
        at = pair[ends == node]
        cov[np.ix_(at, at)] = share * np.sqrt(np.outer(var[at], var[at]))
    return cov


def dense_shared(n, i, j, weight, var, cov):
    """The offsets' and residuals' variances with the pairs' covariance, densely per component:
    ``diag(G S G^T)`` and ``diag((I - A G) S (I - A G)^T)``, ``S = diag(var) + cov``."""
    err, res = np.full(n, np.nan), np.zeros(len(i))
    s = np.diag(var) + cov - np.diag(np.diag(cov))
    for members, in_c, design, gain in dense_gains(n, i, j, weight):
        sc = s[np.ix_(in_c, in_c)]
        err[members] = np.sqrt(np.diag(gain @ sc @ gain.T))
        left = np.eye(len(in_c)) - design @ gain
        res[in_c] = np.diag(left @ sc @ left.T)
    return err, res


@pytest.mark.parametrize(("layout", "holes", "spread", "inverse"), [
    ((3, 4), 0.0, 10.0, True), ((14, 17), 0.1, 30.0, True), ((20, 20), 0.05, 100.0, True),
    ((1, 200), 0.0, 1e4, False),  # a long strip, weights over 4 decades: the inverse would lose 1e-5
])
def test_pair_covariance_below_the_exact_limit_is_exact(layout, holes, spread, inverse,
                                                        monkeypatch):
    """Up to `EXACT_PAIRS` pairs the covariance of pairs that share pixels enters the errors
    and the residual variances exactly, as the dense sandwich formulas give them: from the
    centred inverse of the normal matrix (`_shared_terms_exact`) where it keeps its precision
    (the same values as the pairs' unit vectors give, to rounding), else from those."""
    from skymatch_nb_ui.engine import lstsq

    used = []
    exact_terms = lstsq._shared_terms_exact
    monkeypatch.setattr(lstsq, "_shared_terms_exact",
                        lambda *a: used.append(r := exact_terms(*a)) or r)
    rng = np.random.default_rng(sum(layout) + 7)
    pairs = tiling_pairs(*layout, rng, holes=holes)
    n = int(pairs.max()) + 1
    i, j = pairs[:, 0], pairs[:, 1]
    diff, weight, var = pair_data(pairs, rng, spread)
    cov = shared_pixel_covariance(n, i, j, var, 0.3)
    exact = solve_offsets(n, i, j, diff, weight, var, cov)
    assert (used[0] is not None) == inverse
    err, res = dense_shared(n, i, j, weight, var, cov)
    np.testing.assert_allclose(exact.delta_err, err, rtol=1e-6 if spread > 1e3 else 1e-10)
    np.testing.assert_allclose(exact.residual_var, res, rtol=1e-8, atol=1e-11 * var.max())
    monkeypatch.setattr(lstsq, "EXACT_INVERSE", 0)  # the pairs' unit vectors instead
    units = solve_offsets(n, i, j, diff, weight, var, cov)
    assert units.delta.tobytes() == exact.delta.tobytes()
    np.testing.assert_allclose(exact.delta_err, units.delta_err, rtol=1e-12)
    np.testing.assert_allclose(exact.residual_var, units.residual_var, rtol=1e-10,
                               atol=1e-14 * var.max())
    plain = solve_offsets(n, i, j, diff, weight, var)
    assert not np.allclose(exact.delta_err, plain.delta_err, rtol=1e-3)  # the covariance counts


def test_pair_covariance_of_many_pairs_is_exact_while_the_inverse_serves(monkeypatch):
    """The inverse's terms do not depend on the number of pairs: a mosaic denser than
    `EXACT_PAIRS` (camera CCDs in ~30 pairs each) gets exact errors from it, not the random
    probes' estimate (measured there: errors 9% rms off, one of them 0, pairs flagged for
    the probes' noise)."""
    from skymatch_nb_ui.engine import lstsq

    used = []
    exact_terms = lstsq._shared_terms_exact
    monkeypatch.setattr(lstsq, "_shared_terms_exact",
                        lambda *a: used.append(r := exact_terms(*a)) or r)
    monkeypatch.setattr(lstsq, "EXACT_PAIRS", 10)
    rng = np.random.default_rng(5)
    pairs = tiling_pairs(9, 11, rng, holes=0.1)
    n = int(pairs.max()) + 1
    i, j = pairs[:, 0], pairs[:, 1]
    assert len(i) > lstsq.EXACT_PAIRS
    diff, weight, var = pair_data(pairs, rng, 10.0)
    cov = shared_pixel_covariance(n, i, j, var, 0.3)
    found = solve_offsets(n, i, j, diff, weight, var, cov)
    assert used and used[0] is not None
    err, res = dense_shared(n, i, j, weight, var, cov)
    np.testing.assert_allclose(found.delta_err, err, rtol=1e-10)
    np.testing.assert_allclose(found.residual_var, res, rtol=1e-8, atol=1e-11 * var.max())


def test_the_kept_graph_is_recognised_by_its_pairs_not_by_the_arrays():
    """A robust fit solves one graph tens of times: its ordering is kept (`lstsq._graph`),
    and an array changed in place between two solves is a new graph."""
    i, j = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 4])
    diff, weight, var = np.array([1.0, -2.0, 0.5, -0.4]), np.ones(4), np.full(4, 0.01)
    first = solve_offsets(5, i, j, diff, weight, var)
    assert first.component.tolist() == [0, 0, 0, 0, 0]
    i[2], j[2] = 0, 2  # another graph, in the same arrays: 0-1-2 and 3-4
    changed = solve_offsets(5, i, j, diff, weight, var)
    fresh = solve_offsets(5, i.copy(), j.copy(), diff, weight, var)
    assert changed.component.tolist() == [0, 0, 0, 1, 1]
    assert changed.delta.tobytes() == fresh.delta.tobytes()
    assert changed.residual_var.tobytes() == fresh.residual_var.tobytes()
    changed.component[:] = 7  # the caller's copy: the kept one is not touched
    assert solve_offsets(5, i, j, diff, weight, var).component.tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("layout", [(1, 2), (3, 4), (9, 11), (1, 60)])
def test_the_sweeps_inverse_is_the_inverse(layout):
    """`_BlockSweep.inverse` (backward recurrences) against solving for the identity."""
    from skymatch_nb_ui.engine.lstsq import _block_order, _BlockSweep, _grounded_laplacian, _levels

    rng = np.random.default_rng(sum(layout))
    pairs = tiling_pairs(*layout, rng)
    n = int(pairs.max()) + 1
    i, j = pairs[:, 0], pairs[:, 1]
    comp = components(n, i, j)
    order, bounds = _block_order(_levels(n, i, j, comp), comp)
    pos = np.full(n, -1, dtype=np.intp)
    pos[order] = np.arange(len(order))
    w2 = rng.uniform(0.01, 1.0, len(i))
    sweep = _BlockSweep(_grounded_laplacian(pos, i, j, w2), bounds)
    z = sweep.inverse()
    np.testing.assert_allclose(z, sweep.solve(np.eye(len(order))), rtol=0,
                               atol=1e-13 * np.abs(z).max())
    np.testing.assert_allclose(z, z.T, rtol=0, atol=1e-13 * np.abs(z).max())


def test_pair_covariance_above_the_exact_limit_is_estimated_by_random_probes(monkeypatch):
    # A 12 x 12 grid with diagonals; the pairs that share an input share noise.  Beyond the
    # inverse's reach (EXACT_INVERSE) and above EXACT_PAIRS the covariance's part of the
    # variances is estimated from random probes: unbiased, with a noise that averages out
    # over pairs (what the error scale sums).
    # Measured: offsets' variances 2.4% rms off (the covariance adds 10%), residual variances
    # 6% rms off each, their mean 0.3%.
    import skymatch_nb_ui.engine.lstsq as lstsq

    k = np.arange(144).reshape(12, 12)
    i = np.r_[k[:, :-1].ravel(), k[:-1].ravel(), k[:-1, :-1].ravel()]
    j = np.r_[k[:, 1:].ravel(), k[1:].ravel(), k[1:, 1:].ravel()]
    rng = np.random.default_rng(3)
    diff, var = rng.normal(0, 1, len(i)), rng.uniform(0.5, 2.0, len(i))
    weight = rng.uniform(100, 1000, len(i))
    ends, pair = np.r_[i, j], np.r_[np.arange(len(i)), np.arange(len(i))]
    cov = np.zeros((len(i), len(i)))
    for node in range(144):
        at = pair[ends == node]
        cov[np.ix_(at, at)] = 0.1 * np.sqrt(np.outer(var[at], var[at]))
    plain = solve_offsets(144, i, j, diff, weight, var)
    exact = solve_offsets(144, i, j, diff, weight, var, cov)
    monkeypatch.setattr(lstsq, "EXACT_PAIRS", 0)
    monkeypatch.setattr(lstsq, "EXACT_INVERSE", 0)  # as for a mosaic too large for the inverse
    probed = solve_offsets(144, i, j, diff, weight, var, cov)
    np.testing.assert_array_equal(probed.delta, exact.delta)

    def rms(x):
        return float(np.sqrt(np.mean(x**2)))

    share = rms(exact.delta_err**2 / plain.delta_err**2 - 1)
    assert share > 0.05  # the covariance matters
    assert rms(probed.delta_err**2 / exact.delta_err**2 - 1) < 0.4 * share
    assert rms(probed.residual_var / exact.residual_var - 1) < 0.12
    # an estimate below the errors without shared pixels is the probes' noise (600 camera
    # CCDs: one error 0): never below them
    assert np.all(probed.delta_err >= plain.delta_err)
    assert np.any(exact.delta_err < plain.delta_err)  # (this covariance's exact terms can be)
    assert abs(probed.residual_var.mean() / exact.residual_var.mean() - 1) < 0.02
    # the probes are expanded a few columns at a time (memory): the same values as all at
    # once, to the last bit (a robust solve's path depends on them)
    for columns in (lstsq.PROBES, 32):
        monkeypatch.setattr(lstsq, "_COLUMNS", columns)
        other = solve_offsets(144, i, j, diff, weight, var, cov)
        for name in ("delta", "delta_err", "residual_var"):
            assert getattr(other, name).tobytes() == getattr(probed, name).tobytes(), name


def test_incidence_right_hand_sides_sum_like_add_at_to_the_last_bit():
    # inputs met by many pairs, grounded ends (-1) and values of mixed signs and magnitudes:
    # the same sums, in the same order, as np.add.at on the first ends and then the second
    from skymatch_nb_ui.engine.lstsq import _incidence_t

    rng = np.random.default_rng(3)
    for rows, pairs, k in [(5, 40, 1), (30, 200, 17), (1, 3, 4), (64, 210, 210)]:
        pos = np.append(np.arange(rows), -1)
        i, j = rng.integers(0, rows + 1, pairs), rng.integers(0, rows + 1, pairs)
        weighted = rng.standard_normal((pairs, k)) * 10.0 ** rng.integers(-8, 8, (pairs, 1))
        expected = np.zeros((rows, k))
        for end, sign in ((i, 1.0), (j, -1.0)):
            keep = pos[end] >= 0
            np.add.at(expected, pos[end[keep]], sign * weighted[keep])
        got = _incidence_t(pos, i, j, rows) @ weighted
        assert got.shape == expected.shape and got.tobytes() == expected.tobytes()


def test_pair_covariance_loses_its_diagonal_and_nans_only():
    from scipy.sparse import csr_matrix

    from skymatch_nb_ui.engine.lstsq import _off_diagonal

    dense = np.array([[5.0, 0.1, 0.0, np.nan], [0.1, 3.0, -0.2, 0.0], [0.0, -0.2, 1.0, 0.0],
                      [np.nan, 0.0, 0.0, 2.0]])
    got = _off_diagonal(csr_matrix(dense), 4)
    expected = np.nan_to_num(dense, nan=0.0) * (1 - np.eye(4))
    assert np.array_equal(got.toarray(), expected)
    assert got.nnz == 4 and got.has_sorted_indices
    assert _off_diagonal(np.diag([1.0, 2.0]), 2) is None


def test_the_helper_thread_changes_no_bit_and_is_gone_afterwards(monkeypatch):
    """With many large blocks the uncertainties are computed with a helper thread; the
    results must be those of one thread, bit for bit, and no thread may outlive the solve."""
    import threading

    from skymatch_nb_ui.engine import lstsq

    rng = np.random.default_rng(11)
    pairs = tiling_pairs(30, 40, rng, holes=0.1)  # several components, ~25 blocks
    i, j = pairs[:, 0], pairs[:, 1]
    diff, weight, var = pair_data(pairs, rng, 1000.0)
    cov = np.zeros((len(i), len(i)))  # pairs that share an input share some pixels
    for p in range(len(i) - 1):
        if {i[p], j[p]} & {i[p + 1], j[p + 1]}:
            cov[p, p + 1] = cov[p + 1, p] = 0.2 * np.sqrt(var[p] * var[p + 1])
    monkeypatch.setattr(lstsq, "_cpus", lambda: 2)
    started = []
    real = lstsq.ThreadPoolExecutor

    def counted(*args, **kwargs):
        started.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lstsq, "ThreadPoolExecutor", counted)
    results = {}
    monkeypatch.setattr(lstsq, "HELPER_SIZE", 1)
    for blocks in (1, 10**9):  # with the helper, without
        monkeypatch.setattr(lstsq, "HELPER_BLOCKS", blocks)
        results[blocks] = solve_offsets(1200, i, j, diff, weight, var, cov)
    assert started == [1]
    for field in ("delta", "delta_err", "residual_var"):
        assert getattr(results[1], field).tobytes() == getattr(results[10**9], field).tobytes()
    assert not [t for t in threading.enumerate() if t.name.startswith("skymatch-solve")]


def _stack_problem(noise_factor: float, seed: int = 0):
    """7 inputs, every pair (21): each pair's difference shares its inputs' noise with the
    pairs of the same inputs (covariance +var/2 for a shared input, sign by side)."""
    rng = np.random.default_rng(seed)
    n = 7
    i, j = (np.array(x) for x in zip(*[(a, b) for a in range(n) for b in range(a + 1, n)]))
    own = rng.normal(0, 1e-2, n)  # each input's noise, in all its pairs
    truth = rng.uniform(0, 10, n)
    diff = truth[i] - truth[j] + own[i] - own[j] + rng.normal(0, noise_factor * 1e-2, len(i))
    var = np.full(len(i), 2e-4 + 1e-4)  # 2 inputs' noise + the pair's own 1e-4
    a = np.zeros((len(i), n))
    a[np.arange(len(i)), i], a[np.arange(len(i)), j] = 1.0, -1.0
    cov = 1e-4 * (a @ a.T)
    np.fill_diagonal(cov, 0.0)
    return n, i, j, diff, var, cov


def test_an_error_scale_below_one_shrinks_the_pairs_own_variances_only():
    # Residuals below their expectation say the pairs' own variances were overstated; the
    # covariances of the inputs they share move the offsets and hardly the residuals, and
    # stay as they are (robust.py).  The errors are the propagation of the pairs' own
    # variances times scale**2 and of the covariances as given.
    from skymatch_nb_ui.engine.robust import fit_offsets

    n, i, j, diff, var, cov = _stack_problem(noise_factor=0.3)
    fit = fit_offsets(n, i, j, diff, np.ones(len(i)), var, cov)
    assert fit.error_scale < 1.0 and not fit.flagged.any()
    a = np.zeros((len(i), n))
    a[np.arange(len(i)), i], a[np.arange(len(i)), j] = 1.0, -1.0
    gains = np.linalg.pinv(a.T @ a) @ a.T  # zero-mean least squares, equal weights
    expected = np.diag(gains @ (np.diag(fit.error_scale**2 * var) + cov) @ gains.T)
    np.testing.assert_allclose(fit.delta_err**2, expected, rtol=1e-9)
    # (scaling the covariances too gave errors error_scale times these)
    assert np.all(fit.delta_err > fit.error_scale * solve_offsets(
        n, i, j, diff, np.ones(len(i)), var, cov).delta_err)
