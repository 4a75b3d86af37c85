"""One book from several edges: netted per symbol, fees paid once, equity by hand."""

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import ExitRules, Instrument, backtest
from backtest_assets.engine.core import check_inputs
from backtest_assets.portfolio.book import (
    book_target,
    effective_position,
    run_book,
    weights_by_bar,
)

E0 = 100_000.0
OPEN = np.array([100.0, 101.0, 103.0, 102.0, 104.0, 106.0])
CLOSE = np.array([101.0, 103.0, 102.0, 104.0, 106.0, 105.0])
HIGH, LOW = np.maximum(OPEN, CLOSE) + 0.5, np.minimum(OPEN, CLOSE) - 0.5
INST = Instrument(symbol="BTCUSDT", taker_bps=5.0, max_leverage=2.0)
NAN = np.nan


def col(*values: float) -> np.ndarray:
    return np.array(values, dtype=float).reshape(-1, 1)


def test_opposite_edges_net_pay_fees_once_and_the_equity_is_the_netted_pnl():
    a = col(0.8, NAN, NAN, NAN, NAN, NAN)  # long 0.8 of its capital, decided at bar 0
    b = col(-0.4, NAN, NAN, NAN, NAN, NAN)  # short 0.4
    allocation = weights_by_bar(np.array([[0.5, 0.5]]), [0], 6)
    result, target = run_book(OPEN, HIGH, LOW, CLOSE, [a, b], [None, None], allocation,
                              [INST], init_cash=E0)
    assert target[:, 0] == pytest.approx(np.full(6, 0.2))  # 0.5 * 0.8 - 0.5 * 0.4
    # by hand: buy 0.2 of the equity at bar 1's open, pay the taker fee once, hold
    qty = 0.2 * E0 / OPEN[1]
    fee = 5e-4 * qty * OPEN[1]
    assert result.position[-1, 0] == pytest.approx(qty)
    assert result.fees.sum() == pytest.approx(fee)
    assert result.equity[-1] == pytest.approx(E0 - fee + qty * (CLOSE[-1] - OPEN[1]), rel=1e-12)
    # the two edges as two accounts on their halves pay fees on 0.4 + 0.2 of the book
    alone = [backtest(OPEN, HIGH, LOW, CLOSE, t, INST, init_cash=E0 / 2) for t in (a, b)]
    apart = sum(r.fees.sum() for r in alone)
    assert apart == pytest.approx(3 * fee) and result.fees.sum() < apart


def test_a_rebalance_changes_the_book_target_from_its_bar():
    a = col(1.0, NAN, NAN, NAN, NAN, NAN)
    b = col(0.0, NAN, NAN, 1.0, NAN, NAN)  # enters at bar 3
    allocation = weights_by_bar(np.array([[0.7, 0.3], [0.4, 0.6]]), [0, 4], 6)
    _, target = run_book(OPEN, HIGH, LOW, CLOSE, [a, b], [None, None], allocation, [INST],
                         init_cash=E0)
    assert target[:, 0] == pytest.approx([0.7, 0.7, 0.7, 1.0, 1.0, 1.0])
    assert weights_by_bar(np.array([[0.7, 0.3], [0.4, 0.6]]), [0, 4], 6)[3:5].tolist() == [
        [0.7, 0.3], [0.4, 0.6]]


def test_an_edge_stopped_out_counts_as_flat_until_its_target_changes():
    target = col(1.0, NAN, NAN, 0.5, NAN, NAN)  # a new target decided at bar 3
    low = LOW.copy()
    low[2] = 99.0  # bar 2 trades 2% under the entry at 101: a 1% stop fires in it
    own = backtest(OPEN, HIGH, low, CLOSE, target, INST, init_cash=E0,
                   exits=ExitRules(stop_loss=0.01))
    assert "stop_loss" in own.trades["exit_reason"].to_list()
    bars = check_inputs(OPEN, HIGH, low, CLOSE, np.zeros((6, 1)), [INST], init_cash=E0)
    exit_bar = own.trades.filter(pl.col("exit_reason") == "stop_loss")["exit_bar"][0]
    assert exit_bar == 2
    eff = effective_position(target, own.trades, bars)[:, 0]
    # long to the stop's bar, flat from its close, the new target from bar 3 on
    assert eff.tolist() == [1.0, 1.0, 0.0, 0.5, 0.5, 0.5]


def test_book_target_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="2 edges over 6 bars"):
        book_target([np.zeros((6, 1))] * 2, np.zeros((5, 2)))
