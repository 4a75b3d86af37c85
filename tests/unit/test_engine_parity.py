"""Fast engine (closed form and compiled loop) against the reference loop on random strategies.

Synthetic OHLC for 1-3 symbols (fat-tailed returns, open gaps, late listings), random
target weights held for random spans, and four regimes of rules: ``closed_form`` (nothing
path dependent, so the closed form must be taken), ``exchange_rules`` (lots, ticks, min
notional: rejections), ``exits`` (stop-loss, take-profit, time stop) and ``leverage``
(isolated margin up to 10x with targets up to the setting, and gaps at the open past the
bankruptcy price: liquidations, insurance-fund forfeits, insufficient margin and blown
accounts) and ``brackets`` (the same with random margin tiers whose caps fall around the
positions' notionals: liquidation levels from the tier of the notional there, and orders
refused above the largest notional the leverage setting allows) and ``risk`` (the same with
a pre-trade risk manager: daily loss cap over random UTC days, position, total and leverage
limits around the positions' notionals) and ``venue`` (brackets, and often the risk manager
and exits, with mark prices off the last by a drifting basis, volume that binds a
participation cap or is missing, square-root impact, limit orders with maker fees). On
every run the engines
agree on every bar to 1e-9 relative and on every trade, and the accounting invariants hold.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from backtest_assets.engine import ExitRules, Instrument, Result, backtest, backtest_reference
from backtest_assets.engine.core import (
    _rules,
    forward_fill,
    liquidation_price,
    tier_liquidation_price,
)
from backtest_assets.engine.ledger import ledger_residual
from backtest_assets.engine.venue import LimitOrders, RiskLimits

REGIMES = ("closed_form", "exchange_rules", "exits", "leverage", "brackets", "risk", "venue")
SEEDS = range(150)
SLOW_SEEDS = range(150, 1150)
RTOL = 1e-9


def synthetic_case(seed: int, regime: str, bars: int = 240) -> dict:
    """Keyword arguments of ``backtest`` for one random strategy."""
    rng = np.random.default_rng([seed, REGIMES.index(regime)])
    t_n, s_n = int(rng.integers(bars // 2, bars)), int(rng.integers(1, 4))
    vol = rng.uniform(0.003, 0.04)
    jump = np.zeros((t_n, s_n))  # at the open: gaps past a leveraged position's bankruptcy
    if levered_regime(regime) and rng.random() < 0.5:
        at = rng.random((t_n, s_n)) < 0.02
        jump[at] = rng.choice([-1.0, 1.0], at.sum()) * rng.uniform(0.08, 0.3, at.sum())
    ret = rng.standard_t(4, size=(t_n, s_n)) * vol + jump
    close = np.exp(np.cumsum(ret, axis=0)) * rng.choice([0.5, 30.0, 2_000.0, 40_000.0], s_n)
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, vol / 4, (t_n, s_n))
                                                        + jump)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, (t_n, s_n))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, (t_n, s_n))))
    missing = np.zeros((t_n, s_n), dtype=bool)
    if s_n > 1 and rng.random() < 0.5:  # one symbol listed late
        missing[: int(rng.integers(1, t_n // 3)), int(rng.integers(s_n))] = True
    for a in (open_, high, low, close):
        a[missing] = np.nan

    # Gross targets up to the leverage setting: at the full level the last order of an open
    # asks for more margin than is left (slippage, price drift): insufficient_margin. The
    # closed_form regime trades at most 1x under a setting of 2 (headroom), so that margin
    # never refuses its orders and the closed form applies.
    levered = levered_regime(regime)
    gross = float(rng.choice([3.0, 10.0])) if levered else 1.0
    max_lev = 2.0 if regime == "closed_form" else gross
    levels = np.array([-1.0, -0.6, -0.25, 0.0, 0.25, 0.6, 1.0]) * gross / s_n
    target = np.where(rng.random((t_n, s_n)) < rng.uniform(0.03, 0.3),
                      rng.choice(levels, (t_n, s_n)), np.nan)
    if rng.random() < 0.5:  # continuous weights: same-side resizes
        target *= rng.uniform(0.5, 1.0, (t_n, s_n))
    target[missing] = np.nan
    target[:-1][missing[1:]] = np.nan  # no order into a bar without a price
    funding = None
    if rng.random() < 0.6:
        funding = np.where(rng.random((t_n, s_n)) < 0.15,
                           rng.normal(1e-4, 1e-3, (t_n, s_n)), np.nan)
        funding[missing] = np.nan
        funding[:, np.isnan(target).all(axis=0)] = np.nan

    rules = regime == "exchange_rules"
    margined = regime == "brackets" or rng.random() < (0.7 if regime == "leverage" else 0.3)
    init_cash = float(rng.choice([2_000.0, 1e6]))
    instruments = [Instrument(
        symbol=f"S{s}USDT",
        taker_bps=float(rng.choice([0.0, 2.0, 5.0])),
        slippage_bps=float(rng.choice([0.0, 1.0, 3.0])),
        lot_size=float(10.0 ** rng.integers(-3, 1)) / np.nanmax(close[:, s]) * 1_000
        if rules else 0.0,
        tick_size=float(rng.choice([0.0, 1e-3, 1e-2])),
        min_notional=float(rng.choice([5.0, 50.0, 400.0])) if rules else 0.0,
        max_leverage=max_lev,
        maintenance_margin_rate=float(rng.choice([0.0, 0.004, 0.02])) if margined else None,
        liquidation_fee_rate=float(rng.choice([0.0, 0.005])),
    ) for s in range(s_n)]
    if regime in ("brackets", "venue"):
        notional = init_cash * gross / s_n  # a full position's notional, roughly
        instruments = [with_brackets(rng, i, notional) for i in instruments]
    exits = None
    if regime == "exits" or (levered and rng.random() < 0.4):
        exits = ExitRules(
            stop_loss=float(rng.uniform(0.01, 0.1)) if rng.random() < 0.6 else None,
            take_profit=float(rng.uniform(0.01, 0.15)) if rng.random() < 0.6 else None,
            time_stop=int(rng.integers(1, 25)) if rng.random() < 0.5 else None)
    case = {"open_": open_, "high": high, "low": low, "close": close, "target": target,
            "instruments": instruments, "funding": funding, "exits": exits,
            "init_cash": init_cash}
    if regime == "venue":
        venue_rules(rng, case, gross)
    if regime == "risk" or (regime == "venue" and rng.random() < 0.5):
        notional = init_cash * gross / s_n
        case["day"] = np.arange(t_n) // int(rng.integers(3, 25))
        case["risk"] = RiskLimits(
            daily_loss_cap=float(rng.choice([0.01, 0.03, 0.1])),
            max_position_notional=float(notional * rng.uniform(0.3, 1.5))
            if rng.random() < 0.5 else None,
            max_total_notional=float(notional * s_n * rng.uniform(0.3, 1.2))
            if rng.random() < 0.5 else None,
            max_leverage=float(rng.uniform(0.5, gross)) if rng.random() < 0.5 else None)
    return case


def levered_regime(regime: str) -> bool:
    return regime in ("leverage", "brackets", "risk", "venue")


def venue_rules(rng: np.random.Generator, case: dict, gross: float) -> None:
    """Mark prices off the last by a drifting basis (their extremes beyond or short of the
    last's), volume that sometimes binds a participation cap (and some bars without any),
    square-root impact, limit orders and maker fees, on ``case`` in place."""
    o, h, lo, c = (case[k] for k in ("open_", "high", "low", "close"))
    t_n, s_n = o.shape
    scale = float(rng.choice([0.002, 0.01, 0.03]))
    basis = np.cumsum(rng.normal(0, scale / 3, (t_n, s_n)), axis=0) * 0.3
    basis = np.clip(basis, -3 * scale, 3 * scale)
    m_open = o * np.exp(basis)
    m_high = np.maximum(m_open, h * np.exp(basis + rng.normal(0, scale, (t_n, s_n))))
    m_low = np.minimum(m_open, lo * np.exp(basis + rng.normal(0, scale, (t_n, s_n))))
    units = case["init_cash"] * gross / s_n / np.nanmean(c, axis=0)  # a full position
    volume = units * np.exp(rng.normal(np.log(rng.choice([0.3, 3.0, 30.0])), 1.0, (t_n, s_n)))
    volume[rng.random((t_n, s_n)) < 0.05] = 0.0
    volume[np.isnan(o)] = np.nan
    case.update(mark_open=m_open, mark_high=m_high, mark_low=m_low, volume=volume)
    case["instruments"] = [dataclasses.replace(
        i, maker_bps=float(rng.choice([-0.0, 1.0, 2.0])),
        participation=None if rng.random() < 0.3 else float(rng.choice([0.05, 0.3, 1.0])),
        impact_coef=float(rng.choice([0.0, 0.001, 0.02])),
        maintenance_at=str(rng.choice(["level", "entry"]))) for i in case["instruments"]]
    if rng.random() < 0.7:
        entries = bool(rng.random() < 0.7)
        case["limits"] = LimitOrders(
            offset_bps=float(rng.choice([0.0, 5.0, 40.0])), valid_bars=int(rng.integers(1, 7)),
            entries=entries, exits=not entries or bool(rng.random() < 0.5))


def with_brackets(rng: np.random.Generator, inst: Instrument, notional: float) -> Instrument:
    """``inst`` with 2-4 random tiers: caps from 0.1 to 3 full positions, rates rising (the
    maintenance amounts that keep the margin continuous), leverage falling; a later tier
    may allow less than the setting, so an order can be refused."""
    from backtest_assets.engine.venue import Bracket

    k = int(rng.integers(2, 5))
    caps = np.cumsum(rng.uniform(0.1, 1.0, k)) * notional
    if rng.random() < 0.5:
        caps[-1] = np.inf
    rates = np.sort(rng.choice([0.0, 0.004, 0.01, 0.02, 0.04], k))
    lev = inst.max_leverage
    tiers, amount, floor, prev_rate, top = [], 0.0, 0.0, rates[0], lev * 2
    for cap, rate in zip(caps, rates, strict=True):
        amount += floor * (rate - prev_rate)
        top = min(top, float(rng.choice([lev * 2, lev, max(1.0, lev / 2)])) if tiers else top)
        top = min(top, 0.99 / rate) if rate > 0 else top
        tiers.append(Bracket(cap=float(cap), max_leverage=max(1.0, top), mmr=float(rate),
                             maint_amount=amount))
        floor, prev_rate = cap, rate
    setting = min(lev, tiers[0].max_leverage)
    return Instrument(symbol=inst.symbol, taker_bps=inst.taker_bps,
                      slippage_bps=inst.slippage_bps, lot_size=inst.lot_size,
                      tick_size=inst.tick_size, min_notional=inst.min_notional,
                      max_leverage=setting, maintenance_margin_rate=tiers[0].mmr,
                      liquidation_fee_rate=inst.liquidation_fee_rate, brackets=tuple(tiers))


def assert_same(fast: Result, ref: Result) -> None:
    # Money is compared to 1e-9 of the account (a liquidation's margin left over, exactly 0
    # in one engine, can be 1e-9 in absolute terms in the other on a million of equity).
    account = float(np.abs(ref.equity).max(initial=0.0))
    for name in ("equity", "cash", "position", "exposure", "fees", "slippage", "funding",
                 "liquidation_fees", "insurance"):
        got, want = getattr(fast, name), getattr(ref, name)
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        if name in ("fees", "slippage", "funding", "liquidation_fees", "insurance"):
            scale = max(scale, account)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=name)
    assert fast.rejected == ref.rejected
    assert fast.orders == ref.orders
    assert fast.blown_bar == ref.blown_bar
    assert fast.trades.drop(pl.selectors.float()).equals(ref.trades.drop(pl.selectors.float()))
    for name in ("qty", "entry_price", "exit_price", "fees", "funding", "insurance", "pnl"):
        want = ref.trades[name].to_numpy()
        scale = max(1.0, float(np.abs(want).max(initial=0.0)))
        if name in ("fees", "funding", "insurance", "pnl"):
            scale = max(scale, account)
        np.testing.assert_allclose(fast.trades[name].to_numpy(), want, rtol=RTOL,
                                   atol=RTOL * scale, err_msg=f"trades.{name}")


def assert_invariants(r: Result, case: dict) -> None:
    scale = float(np.abs(r.equity).max()) + case["init_cash"]
    marks = np.nan_to_num(forward_fill(np.asarray(case["close"], dtype=float), np.nan))
    held = (r.position * marks).sum(axis=1)
    np.testing.assert_allclose(r.equity, r.cash + held, rtol=0, atol=1e-9 * scale)
    assert (r.fees >= 0).all() and (r.slippage >= -1e-9 * scale).all()
    assert (r.exposure >= 0).all()
    # Every cash flow belongs to a trade, so the trades' P&L adds up to the equity change.
    assert r.trades["pnl"].sum() == pytest.approx(r.equity[-1] - case["init_cash"],
                                                  abs=1e-8 * scale)
    assert (r.trades["qty"] > 0).all()
    assert (r.trades["exit_bar"].fill_null(len(r.equity)) >= r.trades["entry_bar"]).all()
    if r.blown_bar is not None:
        b = r.blown_bar
        assert r.equity[b] <= 0 or r.trades["exit_reason"].is_in(["blown", "liquidation"]).any()
        assert (r.position[b:] == 0).all()
        assert (r.fees[b + 1:] == 0).all() and (r.slippage[b + 1:] == 0).all()
        assert (r.cash[b:] == r.cash[b]).all()
        assert (r.trades["entry_bar"] <= b).all()


def check_case(seed: int, regime: str, bars: int = 240) -> list[Result]:
    case = synthetic_case(seed, regime, bars)
    ref = backtest_reference(**case)
    assert_invariants(ref, case)
    results = [ref]
    for path in ("closed_form", "compiled"):
        fast = backtest(**case, path=path)
        assert_same(fast, ref)
        assert_invariants(fast, case)
        results.append(fast)
    return results


@pytest.mark.parametrize("regime", REGIMES)
def test_fast_engine_matches_reference(regime):
    outcomes = [check_case(seed, regime) for seed in SEEDS]
    # The generator must exercise what the regime is about, or the parity proves little.
    fast = [r[1] for r in outcomes]
    reasons = set().union(*(set(r.trades["exit_reason"]) for r in fast))
    rejected = {k for r in fast for k, v in r.rejected.items() if v}
    if regime == "closed_form":
        assert sum(r.path == "closed_form" for r in fast) >= 0.9 * len(fast)
    if regime == "exchange_rules":
        assert {"zero_qty", "min_notional"} <= rejected
    if regime == "exits":
        assert {"stop_loss", "take_profit", "time_stop"} <= reasons
    if regime == "risk":
        assert {"daily_loss", "max_position", "max_total", "max_leverage"} <= rejected
    if regime == "venue":
        assert_venue_rules_exercised(fast, rejected)
    if regime == "brackets":
        assert "liquidation" in reasons
        assert {"leverage_bracket", "insufficient_margin"} <= rejected
        # liquidations priced in a tier other than the first (the single-rate level differs)
        tiered = 0
        for seed, r in zip(SEEDS, fast, strict=True):
            insts = {i.symbol: i for i in synthetic_case(seed, regime)["instruments"]}
            for row in r.trades.filter(pl.col("exit_reason") == "liquidation").iter_rows(
                    named=True):
                i = insts[row["symbol"]]
                single = liquidation_price(row["entry_price"], i.max_leverage,
                                           i.maintenance_margin_rate,
                                           1.0 if row["side"] == "long" else -1.0)
                tiered += abs(single - row["exit_price"]) > 1e-9 * row["exit_price"]
        assert tiered >= 20
    if regime == "leverage":
        assert {"liquidation", "blown"} <= reasons
        assert {"blown", "insufficient_margin"} <= rejected
        assert sum((r.insurance > 0).any() for r in fast) >= 10
        assert sum(r.path == "closed_form" for r in fast) >= 10  # margin verified in closed form


def assert_venue_rules_exercised(fast: list[Result], rejected: set[str]) -> None:
    """Every new rule happens in the venue regime's runs: limits of each outcome, cut fills,
    bars refused for want of volume, liquidations on the mark that the last price would not
    have triggered (and the reverse: the last price through the level, the mark not)."""
    orders = {k: sum(r.orders[k] for r in fast) for k in fast[0].orders}
    assert min(orders.values()) >= 5, orders
    assert {"no_volume", "leverage_bracket", "insufficient_margin", "daily_loss"} <= rejected
    by_mark = by_last = 0
    for seed, r in zip(SEEDS, fast, strict=True):
        case = synthetic_case(seed, "venue")
        for row in r.trades.filter(pl.col("exit_reason") == "liquidation").iter_rows(
                named=True):
            t, s = row["exit_bar"], int(row["symbol"][1:-4])
            long = row["side"] == "long"
            last = case["low"][t, s] if long else case["high"][t, s]
            by_mark += (last > row["exit_price"]) if long else (last < row["exit_price"])
        # the last price through a live position's level while the mark stays short of it
        for row in r.trades.filter(pl.col("exit_reason") != "liquidation").iter_rows(
                named=True):
            end = row["exit_bar"] if row["exit_bar"] is not None else len(r.equity) - 1
            s, long = int(row["symbol"][1:-4]), row["side"] == "long"
            i = case["instruments"][s]
            if i.maintenance_margin_rate is None:
                continue
            span = slice(row["entry_bar"] + 1, end)
            qty = np.array([[row["qty"] if long else -row["qty"]]])
            level = tier_liquidation_price(_rules([i]), np.array([[row["entry_price"]]]),
                                           qty)[0, 0]
            last = case["low"][span, s] if long else case["high"][span, s]
            by_last += bool(((last <= level) if long else (last >= level)).any())
    assert by_mark >= 5 and by_last >= 5, (by_mark, by_last)


@pytest.mark.slow
@pytest.mark.parametrize("regime", REGIMES)
def test_fast_engine_matches_reference_sweep(regime):
    for seed in SLOW_SEEDS:
        check_case(seed, regime, bars=1_000)


def _sma(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    cs = np.cumsum(x)
    out[w - 1] = cs[w - 1] / w
    out[w:] = (cs[w:] - cs[:-w]) / w
    return out


def test_sma_crossover_total_return_matches_per_trade_closed_form():
    """SMA(20/100) long/short, taker 4 bps, slippage 1 bp: the engine's total return equals
    the per-trade-factor form of its conventions (DESIGN.md costs; the peers' numpy exact
    with the engine's sizing: |qty| = equity at the open / open, longs not capped by cash).

    At trade k (fill at open p_k, new target d_k, weight held before u_k):
    side = sign(d_k - d_{k-1}); cost per unit of notional at the raw open
    c = slip + fee * (1 + slip) to buy, slip + fee * (1 - slip) to sell; equity factor
    g_k = 1 - |d_k - u_k| * c; post-trade weight w_k = d_k / g_k; holding to the next fill
    h_k = 1 + w_k * (p_{k+1} / p_k - 1) and u_{k+1} = w_k * (p_{k+1} / p_k) / h_k.
    """
    rng = np.random.default_rng(7)
    n = 20_000
    close = 20_000 * np.exp(np.cumsum(rng.standard_t(5, n) * 1e-3))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 5e-5, n))
    high, low = np.maximum(open_, close) * 1.0005, np.minimum(open_, close) * 0.9995
    signal = np.sign(_sma(close, 20) - _sma(close, 100))
    signal[np.isnan(signal)] = 0.0
    fee, slip = 4e-4, 1e-4
    result = backtest(open_, high, low, close, signal,
                      Instrument(symbol="BTCUSDT", taker_bps=4, slippage_bps=1),
                      path="closed_form")
    assert result.path == "closed_form"

    decided = np.flatnonzero(np.diff(np.concatenate([[0.0], signal[:-1]])) != 0)
    d, p = signal[decided], open_[decided + 1]
    d_prev = np.concatenate([[0.0], d[:-1]])
    cost = np.where(d > d_prev, slip + fee * (1 + slip), slip + fee * (1 - slip))
    growth, u = 1.0, 0.0
    for k in range(len(d)):
        g = 1 - abs(d[k] - u) * cost[k]
        w = d[k] / g
        nxt = p[k + 1] if k + 1 < len(d) else close[-1]
        h = 1 + w * (nxt / p[k] - 1)
        growth *= g * h
        u = w * (nxt / p[k]) / h
    assert len(d) > 100
    assert result.trades.height == len(d) - np.count_nonzero(d == 0)
    assert result.equity[-1] / 1e6 - 1 == pytest.approx(growth - 1, rel=1e-9)


@pytest.mark.parametrize("regime", REGIMES)
def test_the_futures_ledger_balances_on_every_bar(regime):
    """available + posted margin + unrealized, rebuilt from the trades and the per-bar
    fees, funding and insurance forfeits (engine/ledger.py), equal the equity of every bar
    on every engine (at most 6e-14 of the capital measured)."""
    for seed in SEEDS[:40]:
        case = synthetic_case(seed, regime)
        for r in check_case(seed, regime):
            assert ledger_residual(r, case["close"], case["instruments"],
                                   case["init_cash"]) < 1e-12, (seed, r.path)


def test_the_ledger_catches_a_misbooked_run():
    """Adversarial: each corruption of a leveraged run's result shows as a residual of at
    least its size (a fee booked a bar late, an exit price off by a tick, a funding payment
    the equity missed, equity that moved without a flow)."""
    import dataclasses

    case = next(c for c in (synthetic_case(s, "leverage") for s in SEEDS)
                if backtest(**c).trades.height >= 5 and c["funding"] is not None)
    r = backtest(**case, path="compiled")
    args = (case["close"], case["instruments"], case["init_cash"])
    assert ledger_residual(r, *args) < 1e-12
    scale = max(case["init_cash"], float(np.abs(r.equity).max()))
    t, s = np.argwhere(r.fees > 0)[0]
    late = r.fees.copy()
    late[t + 1, s] += late[t, s]
    late[t, s] = 0.0
    assert ledger_residual(dataclasses.replace(r, fees=late), *args) >= r.fees[t, s] / scale * 0.999
    closed = r.trades.filter(pl.col("exit_bar").is_not_null())
    off = r.trades.with_columns(
        pl.when(pl.int_range(pl.len()) == closed.height - 1).then(pl.col("exit_price") * 1.001)
        .otherwise(pl.col("exit_price")).alias("exit_price"))
    assert ledger_residual(dataclasses.replace(r, trades=off), *args) > 1e-7
    t, s = np.argwhere(r.funding != 0)[0]
    missed = r.funding.copy()
    missed[t, s] = 0.0
    assert ledger_residual(dataclasses.replace(r, funding=missed), *args) >= abs(
        r.funding[t, s]) / scale * 0.999
    bumped = r.equity.copy()
    bumped[len(bumped) // 2] += 1e-6 * case["init_cash"]
    assert ledger_residual(dataclasses.replace(r, equity=bumped), *args) >= 1e-6 * case[
        "init_cash"] / scale * 0.999
