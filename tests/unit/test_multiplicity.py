"""BH / BY q-values: hand-worked examples, agreement with scipy, monotonicity, bad input."""

import numpy as np
import pytest
from scipy import stats

from backtest_assets.stats.multiplicity import bh_qvalues, by_qvalues, discoveries, qvalues

# m = 6, given out of order so that the result must be put back in input order.
P = np.array([0.5, 0.021, 0.001, 0.6, 0.04, 0.02])
# Sorted ascending, with rank i and BH's raw m * p / i (m = 6):
#   i=1  p=0.001  6 * 0.001 / 1 = 0.006
#   i=2  p=0.02   6 * 0.02  / 2 = 0.06
#   i=3  p=0.021  6 * 0.021 / 3 = 0.042
#   i=4  p=0.04   6 * 0.04  / 4 = 0.06
#   i=5  p=0.5    6 * 0.5   / 5 = 0.6
#   i=6  p=0.6    6 * 0.6   / 6 = 0.6
# Minimum from the end (step-up): 0.6, 0.6, 0.06, 0.042, min(0.06, 0.042) = 0.042, 0.006.
# Rank 2 is pulled down from 0.06 to 0.042 by rank 3: at alpha = 0.05 BH rejects ranks 1-3.
# Back in input order (0.5, 0.021, 0.001, 0.6, 0.04, 0.02):
BH_Q = np.array([0.6, 0.042, 0.006, 0.6, 0.06, 0.042])
# BY: c(6) = 1 + 1/2 + 1/3 + 1/4 + 1/5 + 1/6 = (60 + 30 + 20 + 15 + 12 + 10) / 60 = 2.45,
# times the BH values before the cap: 0.6 * 2.45 = 1.47 -> 1; 0.042 * 2.45 = 0.1029;
# 0.006 * 2.45 = 0.0147; 0.06 * 2.45 = 0.147.
BY_Q = np.array([1.0, 0.1029, 0.0147, 1.0, 0.147, 0.1029])


def test_bh_hand_worked():
    np.testing.assert_allclose(bh_qvalues(P), BH_Q, rtol=1e-12)
    assert discoveries(bh_qvalues(P), 0.05).tolist() == [False, True, True, False, False, True]


def test_by_hand_worked():
    np.testing.assert_allclose(by_qvalues(P), BY_Q, rtol=1e-12)
    # BY's price for arbitrary dependence: at 0.05 only the smallest p survives (BH kept 3).
    assert discoveries(by_qvalues(P), 0.05).tolist() == [False, False, True, False, False, False]
    assert not discoveries(by_qvalues(P), 0.01).any()


def test_m1_and_cap():
    # m = 1: q = p for both (c(1) = 1); nothing exceeds 1.
    for method in ("bh", "by"):
        assert qvalues(np.array([0.03]), method).tolist() == [0.03]
    # All p = 1: every raw m * p / i >= 1, so every q is capped to exactly 1.
    assert bh_qvalues(np.ones(4)).tolist() == [1.0] * 4


def _random_pvalues(rng: np.random.Generator, m: int) -> np.ndarray:
    """Uniform nulls mixed with small p-values, exact 0s and 1s, and ties."""
    p = np.where(rng.random(m) < 0.3, rng.random(m) * 1e-3, rng.random(m))
    p[rng.random(m) < 0.05] = 0.0
    p[rng.random(m) < 0.05] = 1.0
    if m > 3:  # ties: copy some entries onto others
        idx = rng.integers(0, m, size=m // 3)
        p[rng.integers(0, m, size=m // 3)] = p[idx]
    return p


@pytest.mark.parametrize("method", ["bh", "by"])
def test_equals_scipy_on_random_vectors(method):
    rng = np.random.default_rng(20240607)
    for trial in range(500):
        m = 1 if trial < 20 else int(rng.integers(2, 300))
        p = _random_pvalues(rng, m)
        if trial % 7 == 0:
            p = np.round(p, 2)  # heavy ties
        expected = stats.false_discovery_control(p, method=method)
        np.testing.assert_allclose(qvalues(p, method), expected, rtol=1e-13, atol=0,
                                   err_msg=f"trial {trial}, m={m}")


@pytest.mark.parametrize("method", ["bh", "by"])
def test_monotone_and_bounded(method):
    rng = np.random.default_rng(7)
    for _ in range(200):
        p = _random_pvalues(rng, int(rng.integers(1, 200)))
        q = qvalues(p, method)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(q[order]) >= 0), "q must be non-decreasing in p"
        assert np.all(q >= p) and np.all(q <= 1)
        # Equal p-values get equal q-values.
        _, inverse = np.unique(p, return_inverse=True)
        for g in np.unique(inverse):
            assert np.ptp(q[inverse == g]) == 0


def test_by_is_bh_times_harmonic_number_capped():
    rng = np.random.default_rng(3)
    p = rng.random(40) * 0.01
    c = (1.0 / np.arange(1, 41)).sum()
    np.testing.assert_allclose(by_qvalues(p), np.minimum(bh_qvalues(p) * c, 1.0), rtol=1e-14)


def test_discoveries_are_the_step_up_rejections():
    # BH at alpha rejects the k smallest, k = max{i : p_(i) <= i * alpha / m}.
    rng = np.random.default_rng(11)
    for _ in range(200):
        p = _random_pvalues(rng, int(rng.integers(1, 100)))
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        m = p.size
        sorted_p = np.sort(p)
        below = np.flatnonzero(sorted_p <= np.arange(1, m + 1) * alpha / m)
        k = below[-1] + 1 if below.size else 0
        expected = p <= sorted_p[k - 1] if k else np.zeros(m, dtype=bool)
        assert discoveries(bh_qvalues(p), alpha).tolist() == expected.tolist()


def test_empty():
    for method in ("bh", "by"):
        q = qvalues(np.array([]), method)
        assert q.shape == (0,) and q.dtype == np.float64
    assert discoveries(np.array([]), 0.05).shape == (0,)


def test_nan_is_refused_with_its_position():
    with pytest.raises(ValueError, match="position 2 is NaN"):
        bh_qvalues(np.array([0.1, 0.2, np.nan, 0.3]))
    with pytest.raises(ValueError, match="position 0 is NaN"):
        by_qvalues(np.array([np.nan]))
    with pytest.raises(ValueError, match="position 1 is NaN"):
        discoveries(np.array([0.1, np.nan]), 0.05)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"position 1 is 1\.5"):
        bh_qvalues(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="outside"):
        bh_qvalues(np.array([-0.01]))
    with pytest.raises(ValueError, match="1-D"):
        bh_qvalues(np.array([[0.1, 0.2]]))
    with pytest.raises(ValueError, match="unknown FDR method"):
        qvalues(np.array([0.1]), "holm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        discoveries(np.array([0.1]), 0.0)
