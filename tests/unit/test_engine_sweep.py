"""A sweep's metrics equal those of one backtest per combination (same rules, same loop)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest_assets.engine import ExitRules, backtest
from backtest_assets.engine.metrics import metrics
from backtest_assets.engine.sweep import SWEEP_METRICS, sweep
from tests.unit.test_engine_parity import REGIMES, synthetic_case

COMPARED = ("total_return", "sharpe", "sortino", "max_drawdown", "trades", "win_rate",
            "fee_drag", "slippage_drag", "funding_pnl", "exposure")


def _random_targets(case: dict, rng: np.random.Generator, k: int) -> list[np.ndarray]:
    """k variants of the case's target: the same bars kept NaN (no order into a gap)."""
    base = case["target"]
    out = [base]
    for _ in range(k - 1):
        scale = rng.choice([-1.0, 0.5, 1.0])
        keep = rng.random(base.shape) < 0.7
        out.append(np.where(keep, base * scale, np.nan))
    return out


@pytest.mark.parametrize("regime", REGIMES)
def test_sweep_matches_one_backtest_per_combination(regime):
    checked = 0
    for seed in range(25):
        case = synthetic_case(seed, regime)
        rng = np.random.default_rng(seed)
        targets = _random_targets(case, rng, 4)
        exits = [case["exits"], None, ExitRules(stop_loss=0.02), ExitRules(time_stop=5)]
        args = {k: case[k] for k in ("open_", "high", "low", "close", "instruments",
                                     "funding", "init_cash", "risk", "day", "mark_open",
                                     "mark_high", "mark_low", "volume", "limits") if k in case}
        table = sweep(**args, targets=targets, exits=exits, bars_per_year=105_120, chunk=3)
        assert table["combo"].to_list() == [0, 1, 2, 3]
        for k, (tgt, ex) in enumerate(zip(targets, exits, strict=True)):
            res = backtest(**args, target=tgt, exits=ex)
            want = metrics(res, case["close"], init_cash=case["init_cash"],
                           bars_per_year=105_120)
            row = table.row(k, named=True)
            for name in COMPARED:
                w, g = want[name], row[name]
                if math.isnan(w):
                    assert math.isnan(g), (seed, k, name)
                else:
                    assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (seed, k, name)
            assert row["final_equity"] == pytest.approx(res.equity[-1], rel=1e-12)
            assert row["rejected"] == sum(res.rejected.values())
            assert row["blown_bar"] == (-1 if res.blown_bar is None else res.blown_bar)
            checked += 1
    assert checked == 100


def test_sweep_columns_and_2d_targets():
    case = synthetic_case(3, "closed_form")
    one = {k: (v[:, 0] if isinstance(v, np.ndarray) and v.ndim == 2 else v)
           for k, v in case.items() if k in ("open_", "high", "low", "close")}
    rng = np.random.default_rng(0)
    grid = np.where(rng.random((len(one["close"]), 5)) < 0.1,
                    rng.choice([-1.0, 0.0, 1.0], (len(one["close"]), 5)), np.nan)
    table = sweep(**one, targets=grid, instruments=case["instruments"][0])
    assert table.columns == ["combo", *SWEEP_METRICS]
    assert table.height == 5
    single = backtest(**one, target=grid[:, 3], instruments=case["instruments"][0])
    assert table["final_equity"][3] == pytest.approx(single.equity[-1], rel=1e-12)


def test_sweep_refuses_a_bad_target_naming_the_combination():
    case = synthetic_case(1, "closed_form")
    args = {k: case[k] for k in ("open_", "high", "low", "close", "instruments")}
    bad = case["target"].copy()
    bad[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"targets\[1\]: .* bar 5: target inf is not finite"):
        sweep(**args, targets=[case["target"], bad])
    over = np.full_like(case["target"], np.nan)
    over[2, 0] = 3.0  # above the 1x cap
    with pytest.raises(ValueError, match=r"targets\[1\]: .*exceeds the max leverage"):
        sweep(**args, targets=[case["target"], over])
    with pytest.raises(ValueError, match="exits: 1 rule sets for 2 targets"):
        sweep(**args, targets=[case["target"]] * 2, exits=[ExitRules()])


def test_sweep_block_stats_are_the_bar_returns_of_each_combination():
    """n, sum and sum of squares per block equal those of backtest's own equity curve."""
    case = synthetic_case(3, REGIMES[0])
    rng = np.random.default_rng(3)
    targets = _random_targets(case, rng, 5)
    args = {k: case[k] for k in ("open_", "high", "low", "close", "instruments", "funding",
                                 "init_cash")}
    t_n = case["close"].shape[0]
    bounds = [0, 7, t_n // 2, t_n - 1, t_n]
    table, stats = sweep(**args, targets=targets, exits=case["exits"], blocks=bounds, chunk=2)
    assert stats.shape == (5, 4, 3)
    for k, tgt in enumerate(targets):
        eq = backtest(**args, target=tgt, exits=case["exits"]).equity
        ret = eq / np.concatenate(([case["init_cash"]], eq[:-1])) - 1.0
        for b in range(4):
            r = ret[bounds[b]:bounds[b + 1]]
            np.testing.assert_allclose(stats[k, b], [r.size, r.sum(), (r * r).sum()],
                                       rtol=1e-10, atol=1e-14)
    plain = sweep(**args, targets=targets, exits=case["exits"], chunk=2)
    assert plain.equals(table)  # blocks change nothing else


@pytest.mark.parametrize("blocks", [[0, 5], [1, 10], [0, 0, 10]])
def test_sweep_refuses_blocks_that_do_not_tile_the_bars(blocks):
    case = synthetic_case(0, REGIMES[0])
    blocks = [b if b != 10 else case["close"].shape[0] for b in blocks]
    args = {k: case[k] for k in ("open_", "high", "low", "close", "instruments", "init_cash")}
    with pytest.raises(ValueError, match="blocks: need increasing bar indices"):
        sweep(**args, targets=[case["target"]], blocks=blocks)
