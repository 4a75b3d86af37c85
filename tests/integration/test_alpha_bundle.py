"""The alpha bundle end to end on the synthetic universe (pure modules, no Dagster): the
point-in-time liquid universe, every signal, the orthogonalized ridge refitted walk-forward,
and its out-of-sample information coefficient. The universe's planted cross-sectional
one-day reversal (backtest_assets/sources/synthetic_universe.py) is found out of sample; the
same universe without it gives nothing."""

from __future__ import annotations

import numpy as np
import pytest

from backtest_assets.alpha.model import information_coefficient, walk_forward_scores
from backtest_assets.alpha.panel import forward_log_returns
from backtest_assets.alpha.signals import compute
from backtest_assets.alpha.universe import UniverseRule, snapshots
from backtest_assets.sources.synthetic_universe import generate_universe

HORIZON = 12  # one hour of 5m bars
LAMBDAS = [0.0, 0.1, 1.0, 10.0, 100.0]


def out_of_sample_ic(seed: int, **universe) -> dict:
    u = generate_universe(seed, days=120, **universe)
    p = u.panel
    _, member = snapshots(p, UniverseRule(name="top_liquid_v1", top_n=20))
    signals = compute(p, member)
    x = np.stack([np.where(member, signals[n], np.nan) for n in sorted(signals)], axis=2)
    y = np.where(member, forward_log_returns(p.open, HORIZON), np.nan)
    scores = walk_forward_scores(x, y, LAMBDAS, first_train_bars=30 * 288,
                                 refit_every=14 * 288, purge=HORIZON + 1, embargo=HORIZON)
    assert np.isnan(scores[:30 * 288]).all()  # nothing before the first refit
    assert (np.isfinite(scores) <= member).all()  # scores only for members
    return information_coefficient(scores, y, block_bars=288)


@pytest.mark.parametrize("seed", [1, pytest.param(4, marks=pytest.mark.slow)])  # CI time
def test_the_planted_cross_sectional_effect_is_found_out_of_sample(seed):
    ic = out_of_sample_ic(seed)
    assert ic["lo"] > 0 and ic["t"] > 3, ic
    assert 0.01 < ic["ic"] < 0.06  # the universe's documented IC is 0.02-0.05


def test_a_universe_without_it_gives_nothing():
    ic = out_of_sample_ic(1, xs_effect=0.0)
    assert ic["lo"] < 0 < ic["hi"], ic
