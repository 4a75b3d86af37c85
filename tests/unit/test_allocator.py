"""The multi-edge allocator: each mode on hand-checkable cases, the optimizer against an
independent formulation, caps as properties over random edge sets, infeasibility named."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import optimize

from backtest_assets.portfolio.allocator import (
    Edges,
    Infeasible,
    Limits,
    additive_drawdown,
    allocate,
    clusters,
    cvar,
    equal_risk_contribution,
    risk_contributions,
    shrunk_cov,
)


def edges_of(returns: np.ndarray, *, exposure=None, gross=None, net=None) -> Edges:
    n = returns.shape[1]
    return Edges(names=tuple(f"e{i}" for i in range(n)), returns=returns,
                 exposure=np.ones((n, 1)) if exposure is None else exposure,
                 gross=np.ones(n) if gross is None else gross,
                 net=np.ones(n) if net is None else net)


def student_t(rng, t: int, n: int, df: float = 3.0) -> np.ndarray:
    """Heavy tails: Student-t innovations scaled to unit variance."""
    return rng.standard_t(df, size=(t, n)) / math.sqrt(df / (df - 2))


# ---- covariance ---------------------------------------------------------------------------

def test_shrinkage_intensity_is_small_with_much_data_and_large_with_little():
    rng = np.random.default_rng(1)
    cov = np.diag([1.0, 4.0, 9.0])
    long = rng.multivariate_normal(np.zeros(3), cov, size=20_000)
    s_long, k_long = shrunk_cov(long)
    assert k_long < 0.01 and np.allclose(s_long, cov, rtol=0.05, atol=0.05)
    # 8 periods of 30 edges: the sample covariance is singular; the shrunk one is not
    short = rng.normal(size=(8, 30))
    s_short, k_short = shrunk_cov(short)
    assert k_short > 0.3 and np.linalg.eigvalsh(s_short).min() > 0


# ---- equal risk ---------------------------------------------------------------------------

def test_two_uncorrelated_edges_get_weights_proportional_to_one_over_sigma():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(50_000, 2))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # exactly uncorrelated columns of equal variance
    r = q * math.sqrt(z.shape[0]) * np.array([0.01, 0.03])
    for mode in ("inverse_vol", "equal_risk"):
        w = allocate(edges_of(r), Limits(), mode, shrinkage="none").weights
        assert w == pytest.approx([0.75, 0.25], abs=1e-9), mode  # 1/0.01 : 1/0.03
        # shrunk towards the mean variance: 1/sigma of the shrunk diagonal
        a = allocate(edges_of(r), Limits(), mode)
        k = a.detail["shrinkage"]
        var = (1 - k) * np.array([1e-4, 9e-4]) + k * 5e-4
        assert a.weights == pytest.approx(var ** -0.5 / (var ** -0.5).sum(), abs=1e-9)


def test_equal_risk_contributions_are_equal_on_correlated_edges():
    cov = np.array([[0.04, 0.018, 0.0], [0.018, 0.09, -0.01], [0.0, -0.01, 0.01]])
    w = equal_risk_contribution(cov)
    rc = risk_contributions(w, cov)
    assert rc == pytest.approx(np.full(3, 1 / 3), abs=1e-9) and w.sum() == pytest.approx(1)
    # risk budgets: contributions in proportion to them
    w = equal_risk_contribution(cov, np.array([0.5, 0.3, 0.2]))
    assert risk_contributions(w, cov) == pytest.approx([0.5, 0.3, 0.2], abs=1e-9)


def test_a_binding_edge_cap_takes_the_caps_value_and_the_rest_keep_their_proportions():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(5_000, 3)) * np.array([0.005, 0.02, 0.04])
    a = allocate(edges_of(r), Limits(edge_max=0.5), "inverse_vol")
    free = allocate(edges_of(r), Limits(), "inverse_vol").weights
    assert free[0] > 0.5  # the quiet edge would take more than its cap
    assert a.weights[0] == pytest.approx(0.5) and a.weights.sum() == pytest.approx(1)
    assert a.weights[1] / a.weights[2] == pytest.approx(free[1] / free[2])
    assert "edge_max" in a.binding


# ---- score weighted and clusters ----------------------------------------------------------

def test_score_weighted_is_proportional_shrunk_and_capped():
    r = np.random.default_rng(4).normal(size=(100, 4)) * 0.01
    e = edges_of(r)
    w = allocate(e, Limits(), "score_weighted", scores=[3, 1, 0, -2]).weights
    assert w == pytest.approx([0.75, 0.25, 0, 0])  # negative scores get nothing
    w = allocate(e, Limits(), "score_weighted", scores=[3, 1, 0, -2], shrink=0.5).weights
    assert w == pytest.approx([0.5 * 0.75 + 0.125, 0.5 * 0.25 + 0.125, 0.125, 0.125])
    w = allocate(e, Limits(edge_max=0.6), "score_weighted", scores=[3, 1, 0, -2]).weights
    assert w == pytest.approx([0.6, 0.4, 0, 0])


def test_cluster_mode_gives_each_cluster_an_equal_share_of_risk():
    rng = np.random.default_rng(5)
    t = 20_000
    f1, f2 = rng.normal(size=t), rng.normal(size=t)
    # three edges on one factor, one edge alone: clusters {0,1,2} and {3}
    r = np.column_stack([f1 + 0.3 * rng.normal(size=t) for _ in range(3)]
                        + [f2]) * 0.01
    labels = clusters(r, 0.5)
    assert len(set(labels[:3])) == 1 and labels[3] != labels[0]
    a = allocate(edges_of(r), Limits(), "cluster", cluster_corr=0.5)
    rc = a.risk_contributions
    assert rc[:3].sum() == pytest.approx(0.5, abs=0.02) and rc[3] == pytest.approx(0.5, abs=0.02)


# ---- the optimizer ------------------------------------------------------------------------

def test_max_return_with_caps_fills_the_best_edges_to_their_cap_kkt():
    r = np.array([[0.03, 0.02, 0.01], [0.01, 0.0, 0.005]])  # means 0.02, 0.01, 0.0075
    a = allocate(edges_of(r), Limits(edge_max=0.4), "constrained_optimizer")
    assert a.weights == pytest.approx([0.4, 0.4, 0.2], abs=1e-9)
    # KKT: stationarity mu_i = lambda + nu_i with nu_i >= 0 only on capped edges
    mu = r.mean(axis=0)
    lam = mu[2]  # the free edge prices the budget
    nu = mu - lam
    assert nu[2] == pytest.approx(0) and np.all(nu[:2] > 0)
    assert set(a.binding) >= {"budget", "edge_max"}


def cutting_plane_cvar(r: np.ndarray, mu: np.ndarray, cap: float, alpha: float,
                       edge_max: float) -> tuple[np.ndarray, float]:
    """An independent formulation: CVaR(w) <= cap as the cuts 'mean loss of every k-worst
    scenario set <= cap', added one at a time for the worst set at the current solution
    (Kelley's method on the polyhedral CVaR), until no cut is violated."""
    t, n = r.shape
    k_mass = (1 - alpha) * t
    cuts_a, cuts_b = [], []
    for _ in range(500):
        res = optimize.linprog(-mu, A_ub=np.array(cuts_a) if cuts_a else None,
                               b_ub=np.array(cuts_b) if cuts_b else None,
                               A_eq=np.ones((1, n)), b_eq=[1.0],
                               bounds=[(0, edge_max)] * n, method="highs")
        w = res.x
        loss = -(r @ w)
        order = np.argsort(-loss)
        whole = math.floor(k_mass + 1e-12)
        coef = -r[order[:whole]].sum(axis=0)
        if whole < t:
            coef = coef - (k_mass - whole) * r[order[whole]]
        coef = coef / k_mass
        if coef @ w <= cap + 1e-12:
            return w, float(-res.fun)
        cuts_a.append(coef)
        cuts_b.append(cap)
    raise AssertionError("cutting planes did not converge")


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_cvar_limit_matches_an_independent_cutting_plane_formulation(seed):
    rng = np.random.default_rng(seed)
    r = student_t(rng, 60, 3) * np.array([0.01, 0.02, 0.04]) + np.array([0.001, 0.002, 0.004])
    mu = r.mean(axis=0)
    e = edges_of(r)
    unconstrained = cvar(r @ allocate(e, Limits(edge_max=0.9), "constrained_optimizer")
                         .weights, 0.9)
    least = cvar(r @ allocate(e, Limits(edge_max=0.9, cvar_alpha=0.9), "constrained_optimizer",
                              risk_aversion=1e6).weights, 0.9)
    assert least < unconstrained
    cap = (least + unconstrained) / 2  # feasible and binding
    a = allocate(e, Limits(edge_max=0.9, cvar_max=cap, cvar_alpha=0.9),
                 "constrained_optimizer")
    w_ref, obj_ref = cutting_plane_cvar(r, mu, cap, 0.9, 0.9)
    assert mu @ a.weights == pytest.approx(obj_ref, abs=1e-6)
    assert a.weights == pytest.approx(w_ref, abs=1e-6)
    assert cvar(r @ a.weights, 0.9) <= cap + 1e-9 and "cvar_max" in a.binding


def test_drawdown_limit_holds_in_sample_and_binds():
    rng = np.random.default_rng(9)
    r = student_t(rng, 400, 4) * 0.01 + np.array([0.0005, 0.001, 0.0015, 0.002])
    e = edges_of(r)
    free = allocate(e, Limits(), "constrained_optimizer").weights
    limit = 0.5 * additive_drawdown(r @ free)
    a = allocate(e, Limits(max_drawdown=limit), "constrained_optimizer")
    assert additive_drawdown(r @ a.weights) <= limit + 1e-9
    assert "max_drawdown" in a.binding


def test_turnover_budget_is_measured_against_the_current_weights():
    r = np.array([[0.03, 0.02, 0.01], [0.01, 0.0, 0.005]])
    prev = np.array([0.0, 0.0, 1.0])
    a = allocate(edges_of(r), Limits(turnover_max=0.5), "constrained_optimizer", prev=prev)
    assert np.abs(a.weights - prev).sum() == pytest.approx(0.5)
    assert a.weights == pytest.approx([0.25, 0.0, 0.75])  # the best edge gets all it can
    assert "turnover_max" in a.binding


def test_exposure_caps_use_each_edges_worst_exposure():
    r = np.array([[0.03, 0.02], [0.01, 0.0]])
    exposure = np.array([[2.0, 0.0], [0.0, 1.0]])  # edge 0: 2x levered on symbol A
    e = edges_of(r, exposure=exposure, gross=np.array([2.0, 1.0]), net=np.array([2.0, 1.0]))
    a = allocate(e, Limits(symbol_max=1.0), "constrained_optimizer")
    assert a.weights == pytest.approx([0.5, 0.5]) and "symbol_max" in a.binding
    h = allocate(e, Limits(fully_invested=False, gross_max=1.0), "inverse_vol")
    assert h.weights @ e.gross == pytest.approx(1.0) and "gross_max" in h.binding


# ---- infeasible limits --------------------------------------------------------------------

def test_an_infeasible_set_of_limits_names_the_limit_that_cannot_hold():
    r = np.random.default_rng(10).normal(size=(50, 3)) * 0.01
    e = edges_of(r, gross=np.full(3, 2.0))
    with pytest.raises(Infeasible) as err:  # fully invested at gross 2 per unit > 1
        allocate(e, Limits(gross_max=1.0), "constrained_optimizer")
    assert set(err.value.binding) <= {"gross_max", "budget"} and err.value.binding
    assert "gross_max" in str(err.value) or "budget" in str(err.value)
    with pytest.raises(Infeasible, match="edge_max"):
        allocate(e, Limits(edge_max=0.2), "equal_risk")  # 3 x 0.2 < 1
    with pytest.raises(Infeasible, match="edge_max"):
        allocate(e, Limits(edge_max=0.2), "constrained_optimizer")
    with pytest.raises(Infeasible, match="cvar_max"):
        allocate(e, Limits(cvar_max=0.0, cvar_alpha=0.9), "constrained_optimizer")


def test_a_heuristic_mode_moves_part_way_within_its_turnover_budget():
    rng = np.random.default_rng(5)
    r = rng.normal(0, 0.01, (60, 2))
    r[:, 1] *= 1.0001  # nearly equal risk
    e = edges_of(r)
    a = allocate(e, Limits(turnover_max=0.4), "inverse_vol", prev=np.array([1.0, 0.0]))
    full = allocate(e, Limits(), "inverse_vol").weights
    assert np.abs(a.weights - [1, 0]).sum() == pytest.approx(0.4)
    np.testing.assert_allclose(a.weights, [1, 0] + (full - [1, 0]) * 0.4 / np.abs(
        full - [1, 0]).sum())
    assert "turnover_max" in a.binding and a.weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="constrained_optimizer mode only"):
        allocate(e, Limits(cvar_max=0.05), "equal_risk")


# ---- properties over random edge sets -----------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_no_cap_is_ever_violated_over_random_edge_sets(seed):
    rng = np.random.default_rng(100 + seed)
    n, t, m = int(rng.integers(2, 9)), int(rng.integers(30, 200)), 3
    vol = rng.uniform(0.002, 0.05, n)
    r = student_t(rng, t, n) * vol + rng.normal(0, 0.002, n)
    if seed % 3 == 0:  # clustered: half the edges share a factor
        r[:, : n // 2] += rng.normal(size=(t, 1)) * 0.02
    exposure = rng.uniform(0, 1.5, (n, m))
    e = edges_of(r, exposure=exposure, gross=exposure.sum(axis=1) * rng.uniform(0.8, 1, n),
                 net=exposure.max(axis=1))
    prev = rng.dirichlet(np.ones(n))
    limits = Limits(fully_invested=False, edge_max=max(0.3, 1.5 / n), gross_max=1.5,
                    net_max=1.0, symbol_max=0.8, turnover_max=0.6)
    # random current weights may break a cap: a heuristic then moves only towards its
    # target, and refuses (naming turnover_max) when the budget cannot get back within it
    for prev in (rng.dirichlet(np.ones(n)),
                 allocate(e, dataclasses.replace(limits, turnover_max=None), "inverse_vol"
                          ).weights):
        for mode in ("inverse_vol", "equal_risk", "score_weighted", "cluster",
                     "constrained_optimizer"):
            try:
                a = allocate(e, limits, mode, scores=rng.normal(size=n), prev=prev)
            except Infeasible as exc:
                assert mode != "constrained_optimizer" and "turnover_max" in exc.binding
                assert len(exc.binding) == 2, exc.binding  # and the cap prev breaks
                continue
            w = a.weights
            assert np.all(w >= -1e-12) and w.sum() <= 1 + 1e-9, mode
            assert np.all(w <= limits.edge_max + 1e-9), mode
            assert w @ e.gross <= limits.gross_max + 1e-9
            assert w @ e.net <= limits.net_max + 1e-9
            assert np.all(w @ e.exposure <= limits.symbol_max + 1e-9), mode
            assert np.abs(w - prev).sum() <= limits.turnover_max + 1e-9, mode
    exact = allocate(e, Limits(edge_max=max(0.3, 1.5 / n)), "equal_risk").weights
    assert exact.sum() == pytest.approx(1.0)  # fully invested: weights sum to the budget


# ---- walk-forward -------------------------------------------------------------------------

def test_walk_forward_weights_see_only_their_training_window():
    from backtest_assets.portfolio.walkforward import walk_forward

    rng = np.random.default_rng(11)
    r = student_t(rng, 40 * 24, 5) * 0.003 + rng.normal(0, 0.0005, 5)
    limits = Limits(edge_max=0.4, cvar_max=0.5, cvar_alpha=0.9, turnover_max=0.3)
    kw = dict(every=48, lookback=10 * 24, scenario_bars=24, limits=limits,
              mode="constrained_optimizer")
    wf = walk_forward(r, **kw)
    assert wf.rebalance_bars[0] == 240 and np.all(np.diff(wf.rebalance_bars) == 48)
    # turnover within budget at every rebalance after the first (from cash)
    assert np.all(wf.turnover[1:] <= 0.3 + 1e-9) and wf.weights.max() <= 0.4 + 1e-9
    # the out-of-sample return of each bar: the last rebalance's weights at or before it
    k = wf.rebalance_bars
    for bar in (240, 287, 288, r.shape[0] - 1):
        i = np.searchsorted(k, bar, side="right") - 1
        assert wf.oos_returns[bar - 240] == pytest.approx(r[bar] @ wf.weights[i])
    # changing the future never changes a rebalance's weights: the 5th rebalance and those
    # before it are the same when every bar from the 5th on is replaced
    cut = k[4]
    other = r.copy()
    other[cut:] = rng.normal(0, 0.01, other[cut:].shape)
    again = walk_forward(other, **kw)
    assert np.array_equal(again.weights[:5], wf.weights[:5])
    assert not np.allclose(again.weights[5:], wf.weights[5:])


@pytest.mark.parametrize("seed", range(8))
def test_walk_forward_over_changing_eligible_edges_keeps_every_limit(seed):
    """Random eligibility (edges approved and retired at random rebalances), heavy-tailed
    clustered returns: an ineligible edge weighs 0, every cap holds at every rebalance,
    turnover is in budget wherever the eligible set did not change, risk shares sum to 1."""
    from backtest_assets.portfolio.walkforward import walk_forward

    rng = np.random.default_rng(300 + seed)
    n = int(rng.integers(3, 8))
    r = student_t(rng, 60 * 24, n) * rng.uniform(0.002, 0.01, n)
    r[:, : n // 2] += student_t(rng, 60 * 24, 1) * 0.004  # a shared factor
    k_all = len(range(10 * 24, 60 * 24, 48))
    eligible = rng.random((k_all, n)) < 0.6
    eligible[rng.integers(0, k_all, 3)] = False  # some rebalances with nothing eligible
    limits = Limits(fully_invested=False, edge_max=0.5, gross_max=1.2, turnover_max=0.4)
    for mode in ("equal_risk", "score_weighted", "constrained_optimizer"):
        wf = walk_forward(r, every=48, lookback=10 * 24, scenario_bars=24, limits=limits,
                          mode=mode, eligible=eligible,
                          scores=rng.uniform(0, 1, (k_all, n)))
        w = wf.weights
        assert np.all(w[~eligible] == 0), mode
        assert np.all(w >= -1e-12) and np.all(w <= 0.5 + 1e-9), mode
        assert np.all(w.sum(axis=1) <= 1 + 1e-9) and np.all(w.sum(axis=1) <= 1.2 + 1e-9)
        same = np.all(eligible[1:] == eligible[:-1], axis=1)
        assert np.all(wf.turnover[1:][same] <= 0.4 + 1e-9), mode
        for j in np.flatnonzero(~same) + 1:
            assert "members changed" in wf.binding[j]
        held = w.sum(axis=1) > 0
        np.testing.assert_allclose(wf.risk_contribution[held].sum(axis=1), 1.0, atol=1e-9)
        assert np.all(wf.risk_contribution[~held] == 0)


def test_a_book_that_may_hold_cash_fills_edges_to_their_cap_and_keeps_the_rest():
    r = np.random.default_rng(12).normal(size=(50, 1)) * 0.01
    a = allocate(edges_of(r), Limits(edge_max=0.6, fully_invested=False), "equal_risk")
    assert a.weights == pytest.approx([0.6])
    with pytest.raises(Infeasible, match="edge_max"):
        allocate(edges_of(r), Limits(edge_max=0.6), "equal_risk")  # fully invested
