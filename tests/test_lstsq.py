"""The least-squares step of the match methods, on known offsets (after reproject's test_background)."""

import numpy as np
import pytest

from skymatch_nb_ui.engine.lstsq import components, solve_offsets

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
