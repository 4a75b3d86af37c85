"""The combined alpha model: ridge against independent least squares, orthogonalization
properties, purged CV folds, no leakage, walk-forward point-in-time scores, planted and null
panels, deterministic hashes."""

import numpy as np
import pytest
from scipy import stats

from backtest_assets.alpha.model import (
    BOOTSTRAP_DRAWS,
    METHODS,
    cv_blocks,
    fit,
    information_coefficient,
    orthogonalize,
    ridge,
    walk_forward_scores,
)

GRID = [0.0, 0.1, 1.0, 10.0]


def correlated_rows(seed: int, n: int = 400) -> np.ndarray:
    """(n, 4) signals: 1 and 2 correlated with 0, 3 independent; different scales and means."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 4))
    x = np.column_stack([a[:, 0], 0.8 * a[:, 0] + 0.6 * a[:, 1],
                         0.5 * a[:, 0] - 0.3 * a[:, 1] + 0.7 * a[:, 2], a[:, 3]])
    return x * np.array([1.0, 250.0, 0.01, 3.0]) + np.array([5.0, -100.0, 0.2, 0.0])


def planted_panel(seed: int, n_bars: int, n_symbols: int, effect: float,
                  missing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(T, S, 4) signals and (T, S) labels: y = effect * (standardized cross-sectional rank
    of signal 0) + Student-t(3) noise; signals 1 and 2 correlated with signal 0, signal 3
    noise; a few unknown signals and labels."""
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((n_bars, n_symbols))
    x1 = 0.8 * x0 + 0.6 * rng.standard_normal((n_bars, n_symbols))
    x2 = 0.5 * x0 - 0.4 * x1 + 0.7 * rng.standard_normal((n_bars, n_symbols))
    x3 = rng.standard_normal((n_bars, n_symbols))
    X = np.stack([x0, x1, x2, x3], axis=2)
    rank = stats.rankdata(x0, axis=1)
    component = (rank - rank.mean(axis=1, keepdims=True)) / rank.std(axis=1, keepdims=True)
    y = effect * component + rng.standard_t(3, (n_bars, n_symbols))
    X[rng.random((n_bars, n_symbols)) < missing, 2] = np.nan
    y[rng.random((n_bars, n_symbols)) < missing] = np.nan
    return X, y


def pooled(X: np.ndarray, y: np.ndarray):
    t, s = np.nonzero(np.isfinite(X).all(axis=2) & np.isfinite(y))
    return t, s, X[t, s], y[t, s]


# --- ridge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0, 7.5])
def test_ridge_equals_augmented_least_squares(lam):
    rng = np.random.default_rng(3)
    n = 60
    z = rng.standard_normal((n, 3)) @ np.array([[1, 0.4, 0], [0, 1, -0.5], [0, 0, 2]]) + 0.7
    y = 0.3 + z @ np.array([0.5, -1.0, 0.2]) + rng.standard_normal(n)
    # Unpenalized intercept column, penalty rows sqrt(lam * N) * I on the slopes only.
    a = np.block([[np.ones((n, 1)), z], [np.zeros((3, 1)), np.sqrt(lam * n) * np.eye(3)]])
    expected = np.linalg.lstsq(a, np.r_[y, np.zeros(3)], rcond=None)[0]
    intercept, coef = ridge(z, y, lam)
    np.testing.assert_allclose(coef, expected[1:], rtol=0, atol=1e-10)
    assert abs(intercept - expected[0]) < 1e-10


def test_ridge_zero_lambda_is_ols_and_recovers_exact_line():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((30, 2))
    intercept, coef = ridge(z, 1.0 + 2.0 * z[:, 0] - z[:, 1], 0.0)
    np.testing.assert_allclose(coef, [2.0, -1.0], atol=1e-12)
    assert abs(intercept - 1.0) < 1e-12
    y = rng.standard_normal(30)
    ols = np.linalg.lstsq(np.column_stack([np.ones(30), z]), y, rcond=None)[0]
    intercept, coef = ridge(z, y, 0.0)
    np.testing.assert_allclose(np.r_[intercept, coef], ols, atol=1e-12)
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        ridge(z, y, -0.1)


# --- orthogonalize ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scale", ["unit", "kept"])
def test_orthogonalize_is_orthogonal_and_spans_the_signals(method, scale):
    x = correlated_rows(0)
    orth = orthogonalize(x, method, scale=scale)
    z = orth.apply(x)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    cov = z.T @ z / len(z)
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    if scale == "unit" or method == "lowdin":
        variances = np.ones(4)
    elif method == "pca":  # the eigenvalues of the correlation matrix, largest first
        variances = np.sort(np.linalg.eigvalsh(xs.T @ xs / len(x)))[::-1]
    else:  # the share of each standardized signal the earlier ones do not explain
        variances = [1.0] + [
            np.mean((xs[:, j] - xs[:, :j] @ np.linalg.lstsq(xs[:, :j], xs[:, j],
                                                             rcond=None)[0]) ** 2)
            for j in range(1, 4)]
    np.testing.assert_allclose(np.diag(cov), variances, atol=1e-10)
    if scale == "kept" and method != "lowdin":
        assert min(variances) < 0.5  # the correlated signals' residuals are small
    off = np.corrcoef(z, rowvar=False)[~np.eye(4, dtype=bool)]
    assert np.abs(off).max() < 1e-10
    xc = x - x.mean(axis=0)
    back = z @ np.linalg.lstsq(z, xc, rcond=None)[0]
    assert (np.abs(back - xc).max(axis=0) / xc.std(axis=0)).max() < 1e-10
    assert orth.matrix.shape == (4, 4) and orth.mean.shape == (4,)


def test_residual_is_the_default_and_follows_the_stated_order():
    x = correlated_rows(1)
    assert orthogonalize(x).method == "residual"
    assert orthogonalize(x).order == (0, 1, 2, 3)
    orth = orthogonalize(x, "residual", order=[2, 0, 3, 1], scale="unit")
    z = orth.apply(x)
    # First column: signal 2 standardized; second: signal 0's standardized residual on it.
    np.testing.assert_allclose(z[:, 0], (x[:, 2] - x[:, 2].mean()) / x[:, 2].std(), atol=1e-10)
    a = np.column_stack([np.ones(len(x)), x[:, 2]])
    resid = x[:, 0] - a @ np.linalg.lstsq(a, x[:, 0], rcond=None)[0]
    np.testing.assert_allclose(z[:, 1], resid / resid.std(), atol=1e-10)
    # Column k uses only the first k + 1 signals of the order: triangular in that order.
    assert np.allclose(np.tril(orth.matrix[[2, 0, 3, 1]], -1), 0.0, atol=0)
    default = orthogonalize(x).apply(x)
    np.testing.assert_allclose(default[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(),
                               atol=1e-10)
    assert np.abs(default[:, 0] - z[:, 0]).max() > 0.5
    # the default keeps each residual's variance: signal 0's residual on signal 2, both
    # standardized, not re-standardized
    kept = orthogonalize(x, "residual", order=[2, 0, 3, 1]).apply(x)
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    resid = xs[:, 0] - xs[:, 2] * np.mean(xs[:, 0] * xs[:, 2])
    np.testing.assert_allclose(kept[:, 1], resid, atol=1e-10)


def test_lowdin_is_symmetric_in_the_signals():
    x = correlated_rows(2)
    z = orthogonalize(x, "lowdin").apply(x)
    perm = [3, 1, 0, 2]
    zp = orthogonalize(x[:, perm], "lowdin").apply(x[:, perm])
    np.testing.assert_allclose(zp, z[:, perm], atol=1e-10)
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    overlap = z.T @ xs / len(x)  # C^(1/2): symmetric, positive definite
    np.testing.assert_allclose(overlap, overlap.T, atol=1e-10)
    assert np.linalg.eigvalsh(overlap).min() > 0


def test_pca_components_explain_decreasing_variance():
    x = correlated_rows(3)
    z = orthogonalize(x, "pca", scale="unit").apply(x)
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    explained = ((xs.T @ z / len(x)) ** 2).sum(axis=0)  # eigenvalues of the correlation
    assert np.all(np.diff(explained) < 0)
    np.testing.assert_allclose(explained.sum(), 4.0, atol=1e-10)


def test_apply_reuses_the_training_mean_and_matrix():
    x = correlated_rows(4)
    orth = orthogonalize(x[:300])
    z = orth.apply(x[:300])
    np.testing.assert_allclose(orth.apply(x[:300]), z, rtol=0, atol=0)
    np.testing.assert_allclose(orth.apply(x[:10]), z[:10], atol=1e-12)  # no re-centering
    new = orth.apply(x[300:])
    np.testing.assert_allclose(new, (x[300:] - orth.mean) @ orth.matrix, atol=1e-12)
    assert np.abs(new - orthogonalize(x[300:]).apply(x[300:])).max() > 1e-3
    stack = x[:300].reshape(30, 10, 4)
    np.testing.assert_allclose(orth.apply(stack).reshape(300, 4), z, atol=1e-12)


@pytest.mark.parametrize(("build", "method", "order", "message"), [
    (lambda x: np.column_stack([x[:, :2], 2 * x[:, 0] - 3 * x[:, 1] + 1, x[:, 3]]),
     "residual", None, r"column 2 is collinear with columns \[0, 1\]"),
    (lambda x: np.column_stack([x[:, :2], 2 * x[:, 0] - 3 * x[:, 1] + 1, x[:, 3]]),
     "residual", [2, 0, 3, 1], r"column 1 is collinear with columns \[2, 0, 3\]"),
    (lambda x: np.column_stack([x[:, :2], 2 * x[:, 0] - 3 * x[:, 1], x[:, 3]]),
     "lowdin", None, "column 2 is collinear"),
    (lambda x: np.column_stack([x[:, 0], np.full(len(x), 7.0), x[:, 2:]]),
     "pca", None, "column 1 is constant"),
])
def test_rank_deficient_signals_are_refused_naming_the_column(build, method, order, message):
    with pytest.raises(ValueError, match=message):
        orthogonalize(build(correlated_rows(5)), method, order)


def test_orthogonalize_argument_errors():
    x = correlated_rows(6)
    with pytest.raises(ValueError, match="order applies to method 'residual'"):
        orthogonalize(x, "pca", order=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not a permutation"):
        orthogonalize(x, order=[0, 1, 1, 3])
    with pytest.raises(ValueError, match="method 'qr' is not one of"):
        orthogonalize(x, "qr")
    with pytest.raises(ValueError, match=r"columns \[1\] have non-finite"):
        orthogonalize(np.where(np.arange(4) == 1, np.nan, x))


def test_orthogonalization_hash_is_deterministic():
    x = correlated_rows(7)
    first = orthogonalize(x, order=[1, 0, 2, 3])
    assert first.hash == orthogonalize(x.copy(), order=[1, 0, 2, 3]).hash
    assert len(first.hash) == 64
    assert first.hash != orthogonalize(x).hash
    assert first.hash != orthogonalize(x, "lowdin").hash
    assert first.hash != orthogonalize(x[:-1], order=[1, 0, 2, 3]).hash


# --- cv_blocks -------------------------------------------------------------------------------

# Bars 0..11, two rows each, 3 blocks, purge 1, embargo 2.
#  test bars | dropped window | train bars
SCENARIO = [
    ([0, 1, 2, 3], (-1, 5), [6, 7, 8, 9, 10, 11]),   # nothing before the first block
    ([4, 5, 6, 7], (3, 9), [0, 1, 2, 10, 11]),       # bar 3 purged, bars 8, 9 embargoed
    ([8, 9, 10, 11], (7, 13), [0, 1, 2, 3, 4, 5, 6]),  # bar 7 purged
]


def test_cv_blocks_scenario():
    times = np.repeat(np.arange(12), 2)
    folds = cv_blocks(times, n_blocks=3, purge=1, embargo=2)
    assert len(folds) == 3
    for (train, test), (test_bars, _, train_bars) in zip(folds, SCENARIO, strict=True):
        assert np.unique(times[test]).tolist() == test_bars
        assert np.unique(times[train]).tolist() == train_bars
        assert train.size == 2 * len(train_bars) and test.size == 2 * len(test_bars)


def test_cv_blocks_never_train_inside_the_purged_window():
    rng = np.random.default_rng(11)
    for _ in range(300):
        n_blocks, purge, embargo = rng.integers(2, 9), rng.integers(0, 6), rng.integers(0, 6)
        n_bars = int(rng.integers(12 * n_blocks, 400))
        # Repeated bars (several symbols) and gaps (bars with no row), shuffled.
        times = rng.permutation(np.repeat(rng.choice(n_bars, n_bars * 3 // 4, replace=False),
                                          rng.integers(1, 4, n_bars * 3 // 4)))
        folds = cv_blocks(times, int(n_blocks), int(purge), int(embargo))
        assert len(folds) == n_blocks
        seen = np.zeros(times.size, dtype=int)
        for train, test in folds:
            start, end = times[test].min(), times[test].max()
            window = (times >= start - purge) & (times <= end + embargo)
            assert not window[train].any()
            np.testing.assert_array_equal(train, np.flatnonzero(~window))  # nothing more
            inside = (times >= start) & (times <= end)
            np.testing.assert_array_equal(test, np.flatnonzero(inside))  # contiguous block
            seen[test] += 1
        assert (seen == 1).all()  # the test blocks partition the rows


def test_cv_blocks_refuses_impossible_folds():
    with pytest.raises(ValueError, match=r"fold 0 \(bars 0..2\) has no training rows"):
        cv_blocks(np.arange(6), n_blocks=2, purge=0, embargo=3)
    with pytest.raises(ValueError, match="3 distinct bars cannot make 4 blocks"):
        cv_blocks(np.array([0, 0, 1, 2]), n_blocks=4)
    with pytest.raises(TypeError, match="integer array"):
        cv_blocks(np.arange(10.0))


# --- fit -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_panel():
    return planted_panel(21, 240, 10, effect=0.3, missing=0.1)


def test_fit_cv_scores_come_from_train_only_orthogonalizations(small_panel):
    X, y = small_panel
    grid = [0.0, 0.3, 2.0]
    model = fit(X, y, grid, n_blocks=5, purge=2, embargo=1, order=[1, 0, 2, 3])
    t, _, xr, yr = pooled(X, y)
    folds = cv_blocks(t, 5, 2, 1)
    for b, (train, test) in enumerate(folds):
        orth = orthogonalize(xr[train], order=[1, 0, 2, 3])
        leaky = orthogonalize(xr, order=[1, 0, 2, 3])  # fitted on the test rows too
        for i, lam in enumerate(grid):
            intercept, coef = ridge(orth.apply(xr[train]), yr[train], lam)
            pred = intercept + orth.apply(xr[test]) @ coef
            assert abs(model.cv_mse[i, b] - np.mean((pred - yr[test]) ** 2)) < 1e-12
            ics = [stats.spearmanr(pred[t[test] == bar], yr[test][t[test] == bar])[0]
                   for bar in np.unique(t[test]) if (t[test] == bar).sum() >= 3]
            assert abs(model.cv_ic[i, b] - np.mean(ics)) < 1e-12
            if lam > 0:
                li, lc = ridge(leaky.apply(xr[train]), yr[train], lam)
                leaky_pred = li + leaky.apply(xr[test]) @ lc
                assert abs(np.mean((leaky_pred - yr[test]) ** 2) - model.cv_mse[i, b]) > 1e-9


@pytest.mark.parametrize("method", METHODS)
def test_white_columns_make_fit_predictions_shrunk_ols_for_every_method(small_panel, method):
    X, y = small_panel
    grid = np.array([0.0, 0.5, 3.0])
    model = fit(X, y, grid, n_blocks=4, purge=2, embargo=1, method=method, score="mse",
                scale="unit")
    t, s, xr, yr = pooled(X, y)
    a = np.column_stack([np.ones(len(yr)), xr])
    ols = a @ np.linalg.lstsq(a, yr, rcond=None)[0]
    expected = yr.mean() + (ols - yr.mean()) / (1 + model.lam)
    pred = model.predict(X)
    np.testing.assert_allclose(pred[t, s], expected, atol=1e-10)
    np.testing.assert_allclose(model.path, model.path[:1] / (1 + grid[:, None]), atol=1e-12)
    assert model.n_rows == len(yr) and model.orthogonalization.method == method


def test_fit_chooses_a_grid_lambda_and_the_path_shrinks(small_panel):
    X, y = small_panel
    grid = [10.0, 0.0, 0.03, 1.0, 0.3]  # any order; stored ascending
    by_ic = fit(X, y, grid, n_blocks=4, purge=2, embargo=1)
    np.testing.assert_array_equal(by_ic.lambdas, sorted(grid))
    assert by_ic.lam in grid
    norms = np.linalg.norm(by_ic.path, axis=1)
    assert np.all(np.diff(norms) < 0) and norms[-1] < norms[0] / 5
    assert by_ic.cv_ic.shape == by_ic.cv_mse.shape == (5, 4)
    # kept variances (the default): lambda shrinks the small residual columns most, so it
    # changes the ranking and the IC differs across the grid
    assert np.ptp(by_ic.cv_ic.mean(axis=1)) > 1e-6
    # Whitened columns: every lambda ranks the symbols alike, so the IC ties -> largest lambda.
    white = fit(X, y, grid, n_blocks=4, purge=2, embargo=1, scale="unit")
    np.testing.assert_allclose(white.cv_ic, white.cv_ic[:1].repeat(5, axis=0), atol=1e-12)
    assert white.lam == 10.0
    by_mse = fit(X, y, grid, n_blocks=4, purge=2, embargo=1, score="mse")
    assert by_mse.lam == sorted(grid)[int(np.argmin(by_mse.cv_mse.mean(axis=1)))]
    chosen = int(np.flatnonzero(by_mse.lambdas == by_mse.lam)[0])
    np.testing.assert_array_equal(by_mse.coef, by_mse.path[chosen])
    assert by_mse.intercept == by_mse.path_intercept[chosen]


def test_predict_is_nan_where_a_signal_is_unknown(small_panel):
    X, y = small_panel
    model = fit(X, y, GRID, n_blocks=4, purge=2, embargo=1)
    pred = model.predict(X)
    np.testing.assert_array_equal(np.isnan(pred), ~np.isfinite(X).all(axis=2))
    assert np.isnan(X[..., 2]).any()


def test_fit_hash_is_deterministic_and_sees_the_grid(small_panel):
    X, y = small_panel
    first = fit(X, y, GRID, n_blocks=4, purge=2, embargo=1)
    assert first.hash == fit(X.copy(), y.copy(), GRID, n_blocks=4, purge=2, embargo=1).hash
    assert first.hash != fit(X, y, [0.0, 0.1, 1.0, 20.0], n_blocks=4, purge=2, embargo=1).hash
    assert first.hash != fit(X, y, GRID, n_blocks=4, purge=3, embargo=1).hash
    assert first.hash != fit(X, y, GRID, n_blocks=4, purge=2, embargo=1, method="pca").hash


def test_fit_names_the_failing_fold():
    X, y = planted_panel(5, 60, 6, effect=0.0, missing=0.0)
    # signal 3 a copy of signal 0 after bar 9: fold 0 trains on bars 10.. only
    X[10:, :, 3] = 2 * X[10:, :, 0]
    with pytest.raises(ValueError,
                       match=r"fit: fold 0 \(bars 0..9\): .*column 3 is collinear"):
        fit(X, y, GRID, n_blocks=6, purge=0, embargo=0)


# --- walk-forward ----------------------------------------------------------------------------

WF = {"first_train_bars": 120, "refit_every": 40, "purge": 3, "embargo": 2, "n_blocks": 4}


def test_walk_forward_scores_are_point_in_time(small_panel):
    X, y = small_panel
    base = walk_forward_scores(X, y, GRID, **WF)
    assert np.isnan(base[:120]).all()
    np.testing.assert_array_equal(np.isnan(base[120:]), ~np.isfinite(X[120:]).all(axis=2))
    r, step, purge = 160, 40, 3
    rng = np.random.default_rng(0)
    # The future (X and y from bar r on) does not move any score before r.
    X2, y2 = X.copy(), y.copy()
    X2[r:] += rng.standard_normal(X2[r:].shape)
    y2[r:] += rng.standard_normal(y2[r:].shape)
    future = walk_forward_scores(X2, y2, GRID, **WF)
    np.testing.assert_array_equal(future[:r], base[:r])  # bit-identical
    assert np.nanmax(np.abs(future[r:] - base[r:])) > 1e-3
    # The scores of bars r .. r + step - 1 read X at those bars and X, y before r - purge only.
    X3, y3 = X.copy(), y.copy()
    y3[r - purge:] += rng.standard_normal(y3[r - purge:].shape)
    X3[r - purge:r] += rng.standard_normal(X3[r - purge:r].shape)
    X3[r + step:] += rng.standard_normal(X3[r + step:].shape)
    window = walk_forward_scores(X3, y3, GRID, **WF)
    np.testing.assert_array_equal(window[r:r + step], base[r:r + step])
    np.testing.assert_array_equal(window[:r - purge], base[:r - purge])
    # The last training bar of the refit at r is r - purge - 1: it does move those scores.
    y4 = y.copy()
    y4[r - purge - 1] += 5.0
    edge = walk_forward_scores(X, y4, GRID, **WF)
    np.testing.assert_array_equal(edge[:r], base[:r])
    assert np.nanmax(np.abs(edge[r:r + step] - base[r:r + step])) > 0


def test_walk_forward_names_the_failing_refit(small_panel):
    X, y = small_panel
    with pytest.raises(ValueError, match=r"refit at bar 6 \(training bars 0..2\)"):
        walk_forward_scores(X, y, GRID, first_train_bars=6, refit_every=100, purge=3,
                            embargo=0, n_blocks=4)


@pytest.fixture(scope="module")
def planted_ic():
    out = {}
    for name, seed, effect in (("planted", 1, 0.05), ("null", 102, 0.0)):
        X, y = planted_panel(seed, 3000, 25, effect)
        scores = walk_forward_scores(X, y, GRID, first_train_bars=1000, refit_every=500,
                                     purge=2, embargo=1)
        out[name] = information_coefficient(scores, y, block_bars=10)
    return out


def test_planted_effect_has_a_positive_out_of_sample_ic(planted_ic):
    result = planted_ic["planted"]
    assert result["bars"] == 2000
    assert 0 < result["lo"] < result["ic"] < result["hi"]
    assert result["t"] > 3


def test_null_panel_ic_interval_covers_zero(planted_ic):
    result = planted_ic["null"]
    assert result["bars"] == 2000
    assert result["lo"] < 0 < result["hi"]


def test_null_ic_intervals_rarely_exclude_zero():
    excluded = 0
    for seed in range(20):
        X, y = planted_panel(500 + seed, 500, 12, effect=0.0)
        scores = walk_forward_scores(X, y, [0.0, 1.0], first_train_bars=200, refit_every=150,
                                     purge=2, embargo=1, n_blocks=4)
        result = information_coefficient(scores, y, block_bars=5)
        assert result["bars"] > 250
        excluded += not result["lo"] <= 0 <= result["hi"]
    assert excluded / 20 <= 0.2


# --- information coefficient -----------------------------------------------------------------


def test_information_coefficient_series_is_per_bar_spearman():
    rng = np.random.default_rng(8)
    scores = np.round(rng.standard_normal((40, 9)), 1)  # ties
    y = scores + rng.standard_normal((40, 9))
    scores[rng.random((40, 9)) < 0.2] = np.nan
    y[rng.random((40, 9)) < 0.2] = np.nan
    y[3, 2:] = np.nan  # fewer than 3 cells
    y[5] = 1.0  # constant labels
    result = information_coefficient(scores, y, block_bars=4)
    skipped = []
    for bar in range(40):
        ok = np.isfinite(scores[bar]) & np.isfinite(y[bar])
        if bar == 5 or ok.sum() < 3:
            assert np.isnan(result["series"][bar])
            skipped.append(bar)
            continue
        expected = stats.spearmanr(scores[bar, ok], y[bar, ok])[0]
        assert abs(result["series"][bar] - expected) < 1e-12
    assert skipped == [3, 5, 33]  # bar 33 has two cells by chance
    assert result["bars"] == 37
    assert result["ic"] == pytest.approx(np.nanmean(result["series"]), abs=1e-15)


def test_information_coefficient_bootstrap_is_seeded_and_scaled():
    rng = np.random.default_rng(9)
    scores, y = rng.standard_normal((1500, 20)), rng.standard_normal((1500, 20))
    first = information_coefficient(scores, y, block_bars=5)
    again = information_coefficient(scores, y, block_bars=5, seed=0)
    other = information_coefficient(scores, y, block_bars=5, seed=1)
    assert (first["lo"], first["hi"]) == (again["lo"], again["hi"])
    assert (first["lo"], first["hi"]) != (other["lo"], other["hi"])
    # Independent bars: the bootstrap sd of the mean is close to sd / sqrt(n).
    series = first["series"]
    iid_se = np.std(series, ddof=1) / np.sqrt(series.size)
    half_width = (first["hi"] - first["lo"]) / 2
    assert half_width / (1.96 * iid_se) == pytest.approx(1.0, abs=0.15)
    assert first["ic"] / first["t"] / iid_se == pytest.approx(1.0, abs=0.15)
    assert BOOTSTRAP_DRAWS == 2000
    short = information_coefficient(scores[:9], y[:9], block_bars=5)
    assert short["bars"] == 9 and np.isnan(short["lo"]) and np.isfinite(short["ic"])


def test_kept_variances_shrink_each_column_by_its_variance(small_panel):
    """Uncorrelated columns of variances d_k: ridge coef_k(lambda) = coef_k(0) d_k / (d_k +
    lambda) (lambda per observation), so the redundant (small) columns shrink most."""
    X, y = small_panel
    grid = np.array([0.0, 0.1, 1.0, 10.0])
    model = fit(X, y, grid, n_blocks=4, purge=2, embargo=1, score="mse")
    _, _, xr, _ = pooled(X, y)
    z = model.orthogonalization.apply(xr)
    d = np.diag(z.T @ z / len(z))
    assert d.min() < 0.9 * d.max()  # the columns' variances differ
    np.testing.assert_allclose(model.path, model.path[:1] * d / (d + grid[:, None]),
                               atol=1e-12)


def test_a_signal_constant_on_the_training_rows_gets_coefficient_zero(small_panel):
    """A funding carry that sits at 0 for weeks: the fit leaves it out, not the model."""
    X, y = small_panel
    flat = X.copy()
    flat[..., 1] = np.where(np.isnan(X[..., 1]), np.nan, 0.25)
    model = fit(flat, y, GRID, n_blocks=4, purge=2, embargo=1)
    assert model.coef[1] == 0 and np.all(model.path[:, 1] == 0)
    assert np.all(model.orthogonalization.matrix[1] == 0)
    assert np.all(model.orthogonalization.matrix[:, 1] == 0)
    # the others are fitted as without the column
    rest = fit(np.delete(flat, 1, axis=2), y, GRID, n_blocks=4, purge=2, embargo=1)
    np.testing.assert_allclose(np.delete(model.coef, 1), rest.coef, atol=1e-12)
    np.testing.assert_allclose(model.predict(flat), rest.predict(np.delete(flat, 1, axis=2)),
                               atol=1e-12)
    with pytest.raises(ValueError, match="constant"):
        orthogonalize(np.column_stack([np.ones(20), np.arange(20.0)]))
