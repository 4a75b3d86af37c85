"""Funding strictness: the interval from the prints, missing times, constant runs, and the
backtests and walk-forwards that refuse them unless the specs allow them."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.core.funding import (
    DEFAULT_POLICY,
    FundingPolicy,
    audit_funding,
    constant_runs,
    enforce,
    funding_intervals,
    missing_prints,
)
from backtest_assets.specs.models import (
    Condition,
    CostStress,
    Entry,
    Exits,
    StrategySpec,
    WalkForwardSpec,
)
from backtest_assets.specs.registry import load_registry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.run import funding_policy, run_blueprint
from backtest_assets.walkforward.evaluate import Market, evaluate
from tests.support.bars import random_walk_frame

D = dt.datetime(2024, 1, 1)
H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def at(hours: float) -> dt.datetime:
    return D + dt.timedelta(hours=hours)


def prints(symbol: str, hours, rates=1e-4) -> pl.DataFrame:
    times = [at(h) for h in hours]
    rate = rates if isinstance(rates, list) else [rates] * len(times)
    return pl.DataFrame({"symbol": [symbol] * len(times), "ts": times, "funding_rate": rate},
                        schema={"symbol": pl.String, "ts": pl.Datetime("us"),
                                "funding_rate": pl.Float64})


def times(frame: pl.DataFrame, symbol: str | None = None) -> list[dt.datetime]:
    if symbol is not None:
        frame = frame.filter(pl.col("symbol") == symbol)
    return frame["ts"].to_list()


EIGHT = range(0, 72, 8)  # three days of 8-hourly prints
THREE_DAYS = [("BTCUSDT", D, D + 3 * DAY)]


# ---- the pure functions -------------------------------------------------------------------

def test_complete_8_hourly_prints_miss_nothing():
    assert missing_prints(prints("BTCUSDT", EIGHT), THREE_DAYS).is_empty()
    (row,) = funding_intervals(prints("BTCUSDT", EIGHT)).iter_rows(named=True)
    assert (row["start"], row["end"], row["interval_minutes"]) == (at(0), at(64), 480)


@pytest.mark.parametrize(("dropped", "missing"), [
    ([32], [32]),                      # one print inside
    ([32, 40], [32, 40]),              # two in a row
    ([0], [0]),                        # the first of the window: the grid extends back
    ([64], [64]),                      # the last: the grid extends forward
    ([8, 40], [8, 40]),                # two gaps
], ids=["one", "two-in-a-row", "first", "last", "two-gaps"])
def test_gaps_are_the_expected_times_without_a_print(dropped, missing):
    got = missing_prints(prints("BTCUSDT", [h for h in EIGHT if h not in dropped]),
                         THREE_DAYS)
    assert times(got) == [at(h) for h in missing]
    assert set(got["interval_minutes"]) == {480}


def test_only_times_inside_the_window_are_expected():
    # Prints outside the window inform the interval; missing times outside it are not named.
    f = prints("BTCUSDT", [h for h in range(-48, 120, 8) if h not in (-16, 40, 96)])
    assert times(missing_prints(f, [("BTCUSDT", D, D + 3 * DAY)])) == [at(40)]


def test_interval_change_8h_to_4h_is_followed_not_flagged():
    hours = [*range(0, 48, 8), *range(48, 96, 4)]  # 8-hourly for two days, then 4-hourly
    f = prints("ETHUSDT", hours)
    window = [("ETHUSDT", D, D + 4 * DAY)]
    assert missing_prints(f, window).is_empty()
    assert funding_intervals(f).select("start", "end", "interval_minutes").rows() == [
        (at(0), at(48), 480), (at(48), at(92), 240)]
    # A gap in the 4-hourly part is one 4-hourly print, not an 8-hourly one.
    gap = missing_prints(prints("ETHUSDT", [h for h in hours if h != 72]), window)
    assert gap.select("ts", "interval_minutes").rows() == [(at(72), 240)]
    # and 4 h -> 8 h back again
    back = prints("ETHUSDT", [*range(0, 48, 4), *range(48, 96, 8)])
    assert missing_prints(back, window).is_empty()


def test_hourly_symbol_with_one_missing_hour():
    f = prints("SOLUSDT", [h for h in range(24) if h != 13])
    got = missing_prints(f, [("SOLUSDT", D, D + DAY)])
    assert got.select("ts", "interval_minutes").rows() == [(at(13), 60)]


def test_prints_a_few_ms_late_are_on_time():
    late = prints("BTCUSDT", EIGHT).with_columns(
        pl.col("ts") + pl.duration(milliseconds=4) + pl.int_range(pl.len()).cast(
            pl.Duration("ms")))
    assert missing_prints(late, THREE_DAYS).is_empty()
    dropped = late.filter(pl.col("ts").dt.hour() != 16)
    assert times(missing_prints(dropped, THREE_DAYS)) == [at(16), at(40), at(64)]


def test_a_regular_16_hour_spacing_is_every_other_8_hourly_print_missing():
    got = missing_prints(prints("BTCUSDT", range(0, 72, 16)), THREE_DAYS)
    assert times(got) == [at(h) for h in (8, 24, 40, 56)]
    assert set(got["interval_minutes"]) == {480}


def test_a_symbol_without_prints_misses_every_8_hourly_time():
    # No print: the interval cannot be known; Binance USD-M's 8 h on 00/08/16 UTC is assumed.
    f = prints("BTCUSDT", EIGHT)
    got = missing_prints(f, [*THREE_DAYS, ("XRPUSDT", D + 3 * H, D + DAY)])
    assert times(got, "BTCUSDT") == []
    assert times(got, "XRPUSDT") == [at(8), at(16)]
    assert missing_prints(f.clear(), [("XRPUSDT", D, D + DAY)]).height == 3
    # One print: 8 h on the grid through it.
    one = missing_prints(prints("XRPUSDT", [12]), [("XRPUSDT", D, D + DAY)])
    assert times(one) == [at(4), at(20)]
    assert funding_intervals(prints("XRPUSDT", [12])).is_empty()


def test_constant_runs_longer_than_the_limit():
    rates = [1e-4] * 5 + [2e-4, 1e-4] + [1e-4] * 2
    f = prints("BTCUSDT", EIGHT, rates)
    assert constant_runs(f, THREE_DAYS, max_prints=4).rows() == [
        ("BTCUSDT", 1e-4, at(0), at(32), 5)]
    assert constant_runs(f, THREE_DAYS, max_prints=5).is_empty()
    # The run in the window only; a missing print does not break a run.
    assert constant_runs(f.filter(pl.col("ts") != at(16)), [("BTCUSDT", at(8), at(72))],
                         max_prints=2).rows() == [("BTCUSDT", 1e-4, at(8), at(32), 3),
                                                  ("BTCUSDT", 1e-4, at(48), at(64), 3)]
    other = prints("ETHUSDT", EIGHT, 3e-4)
    runs = constant_runs(pl.concat([f, other]), [*THREE_DAYS, ("ETHUSDT", D, D + 3 * DAY)],
                         max_prints=4)
    assert runs["symbol"].to_list() == ["BTCUSDT", "ETHUSDT"]


def test_enforce_names_symbols_times_and_counts():
    f = pl.concat([prints("BTCUSDT", [h for h in EIGHT if h not in (8, 16, 24, 32)]),
                   prints("ETHUSDT", [h for h in EIGHT if h != 40])])
    audit = audit_funding(f, [*THREE_DAYS, ("ETHUSDT", D, D + 3 * DAY)], max_prints=21)
    with pytest.raises(ValueError) as err:
        enforce(audit, DEFAULT_POLICY)
    message = str(err.value)
    assert "5 funding print(s) missing" in message
    assert ("BTCUSDT 4 missing (2024-01-01 08:00, 2024-01-01 16:00, 2024-01-02 00:00, "
            "and 1 more)") in message
    assert "ETHUSDT 1 missing (2024-01-02 16:00)" in message
    assert "allow_missing_funding: true" in message
    enforce(audit, FundingPolicy(allow_missing=True))  # allowed: no error

    stuck = audit_funding(prints("BTCUSDT", EIGHT), THREE_DAYS, max_prints=4)
    enforce(stuck, DEFAULT_POLICY)  # constant runs are allowed by default
    with pytest.raises(ValueError, match=r"BTCUSDT at 0\.0001 for 9 prints from "
                                         r"2024-01-01 00:00 to 2024-01-03 16:00"):
        enforce(stuck, FundingPolicy(allow_constant=False, constant_max_prints=4))


# ---- backtests and walk-forwards ----------------------------------------------------------

REG = load_registry()
VENUE = REG.fees.venues["binance_usdm_vip0"]
N = 3 * 288  # three days of 5-minute bars
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def panel(seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    ts = [D + dt.timedelta(minutes=5 * k) for k in range(N)]
    frames = [random_walk_frame(rng, s, ts, 40_000 / (i + 1)) for i, s in enumerate(SYMBOLS)]
    return Panel.from_bars(pl.concat(frames), SYMBOLS, D, D + 3 * DAY, 5)


def funding(drop: dict[str, list[float]] | None = None) -> pl.DataFrame:
    """8-hourly prints of both symbols over the three days, but the hours ``drop`` names."""
    rng = np.random.default_rng(1)
    return pl.concat([prints(s, EIGHT, list(rng.normal(1e-4, 1e-4, len(EIGHT)))).filter(
        ~pl.col("ts").is_in([at(h) for h in (drop or {}).get(s, [])])) for s in SYMBOLS])


def holding(**kw) -> StrategySpec:
    """Long both symbols from the first bar (the feature is always above its threshold)."""
    fields = dict(name="hold", symbols=SYMBOLS,
                  entry=Entry(condition=Condition(feature="one", op="gt", threshold=0.0)),
                  direction="long", target_weight=0.5, leverage=1.0)
    return StrategySpec(**{**fields, **kw})


def run(bp: StrategySpec, rates: pl.DataFrame | None, policy: FundingPolicy = DEFAULT_POLICY):
    p = panel()
    return run_blueprint(bp, p, features={"one": np.ones(p.open.shape)}, events=None,
                         funding=rates, venue=VENUE, init_cash=100_000.0,
                         funding_policy=policy)


def gappy(rates: pl.DataFrame) -> pl.DataFrame:
    """``rates`` with BTCUSDT's prints of 2024-01-02 08:00 and 16:00 gone."""
    return rates.filter(~((pl.col("symbol") == "BTCUSDT")
                          & pl.col("ts").is_in([at(32), at(40)])))


def test_a_perp_backtest_with_complete_funding_records_no_gap():
    m = run(holding(), funding()).metrics.row(0, named=True)
    assert (m["funding_missing"], m["funding_constant_runs"]) == (0, 0)
    assert m["funding_pnl"] != 0


def test_a_perp_backtest_refuses_missing_funding_naming_symbol_and_times():
    with pytest.raises(ValueError, match=r"funding: 2 funding print\(s\) missing .*BTCUSDT 2 "
                                         r"missing \(2024-01-02 08:00, 2024-01-02 16:00\)"):
        run(holding(), gappy(funding()))
    with pytest.raises(ValueError, match=r"ETHUSDT 9 missing \(2024-01-01 00:00, "):
        run(holding(), funding().filter(pl.col("symbol") == "BTCUSDT"))
    with pytest.raises(ValueError, match=r"BTCUSDT 9 missing .* ETHUSDT 9 missing"):
        run(holding(), funding().clear())  # a perp backtest with no print at all


def test_allow_missing_funding_runs_them_as_no_payment_and_counts_them():
    full = run(holding(), funding())
    allowed = run(holding(allow_missing_funding=True), gappy(funding()),
                  funding_policy(REG.default_study, holding(allow_missing_funding=True)))
    m = allowed.metrics.row(0, named=True)
    assert m["funding_missing"] == 2
    # The same run as with the two prints at a zero rate: missing means no payment.
    zero = funding().with_columns(pl.when((pl.col("symbol") == "BTCUSDT")
                                          & pl.col("ts").is_in([at(32), at(40)]))
                                  .then(0.0).otherwise(pl.col("funding_rate"))
                                  .alias("funding_rate"))
    as_zero = run(holding(), zero).metrics.row(0, named=True)
    assert m["funding_pnl"] == pytest.approx(as_zero["funding_pnl"], rel=1e-12)
    assert m["funding_pnl"] != pytest.approx(full.metrics["funding_pnl"][0], rel=1e-6)


def test_either_spec_allows_missing_funding_the_constant_rule_is_the_study():
    study, bp = REG.default_study, holding()
    assert funding_policy(study, bp) == DEFAULT_POLICY
    assert funding_policy(study, holding(allow_missing_funding=True)).allow_missing
    loose = dataclasses.replace(study, allow_missing_funding=True, allow_constant_funding=False,
                                constant_funding_max_prints=5)
    assert funding_policy(loose, bp) == FundingPolicy(allow_missing=True, allow_constant=False,
                                                      constant_max_prints=5)


def test_constant_funding_is_counted_and_refused_when_not_allowed():
    flat = funding().with_columns(pl.lit(1e-4).alias("funding_rate"))
    m = run(holding(), flat).metrics.row(0, named=True)
    assert m["funding_constant_runs"] == 0  # 9 prints each: within the default 21
    counted = run(holding(), flat, FundingPolicy(constant_max_prints=8)).metrics
    assert counted["funding_constant_runs"][0] == 2
    with pytest.raises(ValueError, match=r"BTCUSDT at 0\.0001 for 9 prints from 2024-01-01 "
                                         r"00:00 to 2024-01-03 16:00"):
        run(holding(), flat, FundingPolicy(allow_constant=False, constant_max_prints=8))


def test_a_backtest_without_funding_is_not_audited():
    m = run(holding(), None).metrics.row(0, named=True)  # spot: no funding at all
    assert (m["funding_missing"], m["funding_constant_runs"], m["funding_pnl"]) == (0, 0, 0)


def test_funding_is_expected_only_where_the_symbol_has_prices():
    # ETHUSDT trades from the second day on: its first day's prints are not expected.
    p = panel()
    p.open[:288, 1] = p.high[:288, 1] = p.low[:288, 1] = p.close[:288, 1] = np.nan
    rates = funding(drop={"ETHUSDT": [0, 8, 16]})
    features = {"one": np.ones(p.open.shape)}
    features["one"][:288, 1] = np.nan  # no signal without a price
    run_blueprint(holding(), p, features=features, events=None, funding=rates, venue=VENUE,
                  init_cash=1e5)
    with pytest.raises(ValueError, match=r"ETHUSDT 1 missing \(2024-01-02 00:00\)"):
        run_blueprint(holding(), p, features=features, events=None, venue=VENUE,
                      funding=funding(drop={"ETHUSDT": [0, 8, 16, 24]}), init_cash=1e5)


WF = WalkForwardSpec(scheme="rolling", folds=2, train_days=1, purge_bars=12,
                     cpcv_groups=4, cpcv_test_groups=1, cscv_groups=4)


def market(rates: pl.DataFrame | None, policy: FundingPolicy = DEFAULT_POLICY) -> Market:
    p = panel()
    return Market(p, {"one": np.ones(p.open.shape)}, None, rates, VENUE, 100_000.0, policy)


def test_walk_forward_refuses_missing_funding_unless_allowed():
    bp = holding(exits=Exits(time_stop_bars=12), grid={"exits.time_stop_bars": (6.0, 12.0)})
    with pytest.raises(ValueError, match=r"BTCUSDT 2 missing \(2024-01-02 08:00, "
                                         r"2024-01-02 16:00\)"):
        evaluate(bp, market(gappy(funding())), WF, stress=CostStress())
    wf = evaluate(bp, market(gappy(funding()), FundingPolicy(allow_missing=True)), WF,
                  stress=CostStress())
    row = wf.summary.row(0, named=True)
    assert (row["funding_missing"], row["funding_constant_runs"]) == (2, 0)
    clean = evaluate(bp, market(funding()), WF, stress=CostStress()).summary
    assert clean["funding_missing"][0] == 0
    assert evaluate(bp, market(None), WF, stress=CostStress()).summary[
        "funding_missing"][0] == 0
