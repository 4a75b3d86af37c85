"""Conditional expectancy: buckets, spread and robustness by hand on a literal 5-symbol panel,
the HAC standard error as the project's routine gives it, events by hand, the planted
one-day reversal found on the synthetic universe (and nothing without it), and the JSON
reports."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from backtest_assets.alpha.expectancy import (
    BUCKET_SCHEMA,
    EVENT_SCHEMA,
    ROBUSTNESS_SCHEMA,
    bucket_assignment,
    conditional_expectancy,
    event_expectancy,
    expectancy_json,
    plain,
    robustness,
    robustness_json,
)
from backtest_assets.alpha.panel import UniversePanel, forward_log_returns
from backtest_assets.alpha.regime import CALM, STORMY, UNKNOWN, RegimeRule, regime_series
from backtest_assets.alpha.signals import cs_rank
from backtest_assets.alpha.universe import UniverseRule, snapshots
from backtest_assets.sources.synthetic_universe import generate_universe
from backtest_assets.stats.inference import cr2_mean_test, hac_mean_test, naive_mean_test

NAN = np.nan
T0 = np.datetime64("2024-03-01T00:00", "us")

# Five symbols, two buckets: bucket = ceil(2 r / n) for the average rank r among n valid.
SIGNAL = [
    [1, 2, 3, 4, 5],    # 0  ranks 1..5: buckets 1 1 2 2 2
    [3, 1, 3, 2, 5],    # 1  tie at 3: both rank 3.5 -> bucket 2; 1, 2 -> bucket 1
    [9, 4, 6, 5, 1],    # 2  S0 has no label, S4 not a member: 4 5 6 -> buckets 1 2 2
    [1, 2, 3, 4, 5],    # 3  one member only: no buckets
]
LABEL = [
    [0.01, 0.02, 0.03, 0.04, 0.05],  # q1 (0.01 + 0.02) / 2 = 0.015   q2 0.12 / 3 = 0.04
    [0.10, -0.10, 0.20, 0.00, 0.30],  # q1 (-0.1 + 0) / 2 = -0.05     q2 0.6 / 3 = 0.2
    [NAN, 0.03, 0.06, 0.09, 1.00],    # q1 0.03                       q2 0.15 / 2 = 0.075
    [0.50, 0.50, 0.50, 0.50, 0.50],
]
MEMBER = [
    [1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0],
    [1, 0, 0, 0, 0],
]
BUCKETS = [
    [1, 1, 2, 2, 2],
    [2, 1, 2, 1, 2],
    [0, 1, 2, 2, 0],
    [0, 0, 0, 0, 0],
]
Q1, Q2 = [0.015, -0.05, 0.03], [0.04, 0.2, 0.075]
SPREAD = [0.025, 0.25, 0.045]


def hand() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array(SIGNAL, float), np.array(LABEL, float), np.array(MEMBER, bool))


def test_buckets_by_hand():
    np.testing.assert_array_equal(bucket_assignment(*hand(), buckets=2), BUCKETS)


def test_a_tie_shares_the_bucket_of_its_average_rank_and_can_leave_one_empty():
    out = bucket_assignment(*hand(), buckets=5)
    np.testing.assert_array_equal(out[0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(out[1], [4, 1, 4, 2, 5])  # rank 3.5: ceil(3.5), q3 empty
    np.testing.assert_array_equal(out[2:], 0)  # fewer than 5 valid cells


def test_bucket_table_by_hand():
    table = conditional_expectancy(*hand(), buckets=2, horizon=1, cost=0.001)
    assert dict(table.schema) == BUCKET_SCHEMA
    assert table["bucket"].to_list() == ["q1", "q2", "q2-q1"]
    assert table["n_bars"].to_list() == [3, 3, 3]
    assert table["n_cells"].to_list() == [5, 8, 13]
    np.testing.assert_allclose(table["mean"], [np.mean(Q1), np.mean(Q2), np.mean(SPREAD)],
                               rtol=1e-12)
    np.testing.assert_allclose(table["net_mean"], [np.mean(Q1) - 0.001, np.mean(Q2) - 0.001,
                                                   np.mean(SPREAD) - 0.002], rtol=1e-12)
    for row, series in zip(table.iter_rows(named=True), (Q1, Q2, SPREAD), strict=True):
        test = hac_mean_test(np.array(series), np.arange(3), lag=2)  # 2 x the horizon
        assert row["se_hac"] == pytest.approx(test.se, rel=1e-12)
        assert row["t_hac"] == pytest.approx(row["mean"] / row["se_hac"], rel=1e-12)


def test_a_bucket_without_bars_has_null_statistics():
    table = conditional_expectancy(*hand(), buckets=5, horizon=1)
    q3 = table.row(2, named=True)  # bar 0 only (S2); empty at bar 1
    assert (q3["bucket"], q3["n_bars"], q3["n_cells"]) == ("q3", 1, 1)
    assert (q3["mean"], q3["net_mean"]) == (0.03, 0.03)
    assert q3["se_hac"] is q3["t_hac"] is None
    q4 = table.row(3, named=True)  # bar 0: S3 (0.04); bar 1: S0 and S2 (0.15): one bar each
    assert (q4["n_bars"], q4["n_cells"]) == (2, 3)
    assert q4["mean"] == pytest.approx((0.04 + 0.15) / 2, rel=1e-12)
    assert table.row(5, named=True)["bucket"] == "q5-q1"
    signal, label, member = hand()
    empty = conditional_expectancy(signal, label, np.zeros_like(member), buckets=2, horizon=1)
    assert empty["n_bars"].to_list() == [0, 0, 0]
    assert empty["mean"].null_count() == empty["net_mean"].null_count() == 3


def random_inputs(seed: int, t: int = 1500, s: int = 12):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((t, s))
    signal[rng.random((t, s)) < 0.05] = NAN
    signal[:, 3] = np.round(signal[:, 3], 1)  # some ties
    label = 0.01 * rng.standard_t(4, (t, s)) + 0.001 * np.nan_to_num(signal)
    label[rng.random((t, s)) < 0.05] = NAN
    member = rng.random((t, s)) > 0.1
    return signal, label, member


def test_se_hac_is_the_project_hac_routine_on_the_bar_means():
    signal, label, member = random_inputs(1)
    horizon = 6
    table = conditional_expectancy(signal, label, member, buckets=4, horizon=horizon)
    bucket = bucket_assignment(signal, label, member, buckets=4)
    series = {}
    for k in range(1, 5):  # bar means computed cell by cell, apart from the module
        series[f"q{k}"] = np.array([label[t][bucket[t] == k].mean() if (bucket[t] == k).any()
                                    else NAN for t in range(label.shape[0])])
    series["q4-q1"] = series["q4"] - series["q1"]
    for row in table.iter_rows(named=True):
        x = series[row["bucket"]]
        bars = np.flatnonzero(np.isfinite(x))
        test = hac_mean_test(x[bars], bars, lag=2 * horizon)  # LAG_MULTIPLE x the horizon
        assert row["n_bars"] == test.n == bars.size
        assert row["mean"] == pytest.approx(test.mean, rel=1e-12)
        assert row["se_hac"] == pytest.approx(test.se, rel=1e-12)
        assert row["t_hac"] == pytest.approx(test.t, rel=1e-9)
    assert table["n_bars"][0] > 1300  # the check ran on real series


def test_on_independent_bars_the_hac_se_is_close_to_the_plain_se():
    rng = np.random.default_rng(5)
    signal = rng.standard_normal((3000, 10))
    label = 0.01 * rng.standard_normal((3000, 10))  # independent of everything
    member = np.ones(signal.shape, bool)
    table = conditional_expectancy(signal, label, member, buckets=5, horizon=5)
    bucket = bucket_assignment(signal, label, member, buckets=5)
    ratios = []
    for k, row in enumerate(table.rows(named=True)[:5], start=1):
        x = np.array([label[t][bucket[t] == k].mean() for t in range(3000)])
        ratios.append(row["se_hac"] / naive_mean_test(x).se)
    np.testing.assert_allclose(ratios, 1.0, atol=0.08)


# --- robustness by hand ---------------------------------------------------------------------

def test_robustness_by_hand():
    regime = np.array([CALM, STORMY, CALM, UNKNOWN], np.int8)
    rows = robustness(*hand(), horizon=1, regime=regime, buckets=2, n_periods=2,
                      cost_levels=(0.0, 0.01, 0.2), cost=0.001,
                      symbols=("AAA", "BBB", "CCC", "DDD", "EEE"))
    assert dict(rows.schema) == ROBUSTNESS_SCHEMA
    by = {(r["dimension"], r["value"]): r for r in rows.iter_rows(named=True)}
    assert list(by) == [("period", "1/2"), ("period", "2/2"),
                        ("symbol", "AAA"), ("symbol", "BBB"), ("symbol", "CCC"),
                        ("symbol", "DDD"), ("symbol", "EEE"),
                        ("regime", "calm"), ("regime", "stormy"),
                        ("cost", "0"), ("cost", "0.01"), ("cost", "0.2")]
    # periods: bars 0-1 and 2-3 (bar 3 has no spread)
    assert by["period", "1/2"]["n_bars"] == 2
    assert by["period", "1/2"]["mean"] == pytest.approx(np.mean(SPREAD[:2]), rel=1e-12)
    assert by["period", "1/2"]["net_mean"] == pytest.approx(np.mean(SPREAD[:2]) - 0.002)
    assert (by["period", "2/2"]["n_bars"], by["period", "2/2"]["se_hac"]) == (1, None)
    assert by["period", "2/2"]["mean"] == pytest.approx(0.045, rel=1e-12)
    # symbols: +-(label - the bar's mean over its bucketed cells), top +, bottom -
    # bar 0 mean 0.03: AAA -(0.01-0.03) BBB 0.01 CCC 0 DDD 0.01 EEE 0.02
    # bar 1 mean 0.1: AAA 0 BBB 0.2 CCC 0.1 DDD 0.1 EEE 0.2; bar 2 mean 0.06: BBB 0.03,
    # CCC 0, DDD 0.03
    expected = {"AAA": [0.02, 0.0], "BBB": [0.01, 0.2, 0.03], "CCC": [0.0, 0.1, 0.0],
                "DDD": [0.01, 0.1, 0.03], "EEE": [0.02, 0.2]}
    for name, values in expected.items():
        row = by["symbol", name]
        assert row["n_bars"] == len(values), name
        assert row["mean"] == pytest.approx(np.mean(values), abs=1e-15), name
        assert row["net_mean"] == pytest.approx(np.mean(values) - 0.001, abs=1e-15), name
        assert row["same_sign"] is bool(np.mean(values) > 0), name
    # regimes: calm bars 0 and 2, stormy bar 1, no normal bar, unknown in no row
    assert by["regime", "calm"]["mean"] == pytest.approx(0.035, rel=1e-12)
    assert by["regime", "stormy"]["n_bars"] == 1
    assert by["regime", "stormy"]["mean"] == pytest.approx(0.25, rel=1e-12)
    # costs: the full-sample spread net of 2 c; t of the net mean
    full = hac_mean_test(np.array(SPREAD), np.arange(3), lag=2)
    for c, same in ((0.0, True), (0.01, True), (0.2, False)):
        row = by["cost", f"{c:g}"]
        assert row["mean"] == pytest.approx(full.mean, rel=1e-12)
        assert row["net_mean"] == pytest.approx(full.mean - 2 * c, rel=1e-12)
        assert row["t_hac"] == pytest.approx((full.mean - 2 * c) / full.se, rel=1e-9)
        assert row["same_sign"] is same


def test_costs_work_against_a_negative_spread():
    signal, label, member = hand()
    rows = robustness(-signal, label, member, horizon=1, buckets=2, cost_levels=(0.0, 0.2))
    cost = rows.filter(pl.col("dimension") == "cost")
    mean = cost["mean"][0]
    assert -0.2 < mean < 0  # ties fall on the other side under -signal: not exactly -SPREAD
    assert cost["net_mean"].to_list() == pytest.approx([mean, mean + 0.4], rel=1e-12)
    assert cost["same_sign"].to_list() == [True, False]


# --- the planted one-day reversal ----------------------------------------------------------

def reversal_inputs(xs_effect: float):
    """Seed 0, 60 days: the reversal score -cs_rank(ln(c_t / c_{t-288})) on the seed's
    universe rule, the 12-bar label and the BTC regime."""
    panel = generate_universe(0, days=60, xs_effect=xs_effect).panel
    _, member = snapshots(panel, UniverseRule(name="seed"))
    close = panel.close
    past = np.full(close.shape, NAN)
    past[288:] = close[:-288]
    score = cs_rank(-np.log(close / past), member)
    label = forward_log_returns(panel.open, 12)
    return panel, score, label, member, regime_series(panel, RegimeRule(name="btc"))


@pytest.fixture(scope="module")
def planted():
    return reversal_inputs(0.01)


def test_the_planted_reversal_has_a_positive_spread(planted):
    panel, score, label, member, regime = planted
    table = conditional_expectancy(score, label, member, horizon=12, cost=0.0005)
    spread = table.row(-1, named=True)
    assert spread["bucket"] == "q5-q1"
    assert spread["t_hac"] > 2.5
    assert spread["t_hac"] == pytest.approx(3.740, abs=0.001)  # measured, seed 0 (lag 2h)
    assert spread["mean"] == pytest.approx(6.046e-4, abs=1e-7)  # 6 bps per 12 bars
    assert spread["net_mean"] == pytest.approx(spread["mean"] - 0.001, rel=1e-12)
    means = table["mean"].to_list()[:5]
    assert means[4] > means[0]  # the highest reversal scores do best
    rows = robustness(score, label, member, horizon=12, regime=regime,
                      symbols=panel.symbols)
    periods = rows.filter(pl.col("dimension") == "period")
    assert periods["same_sign"].sum() >= 3
    assert periods["n_bars"].sum() == spread["n_bars"]
    regimes = rows.filter(pl.col("dimension") == "regime")
    assert set(regimes["value"]) <= {"calm", "normal", "stormy"} and regimes.height >= 2
    bucket = bucket_assignment(score, label, member)
    spread_bars = (bucket == 1).any(axis=1) & (bucket == 5).any(axis=1)
    assert spread_bars.sum() == spread["n_bars"]
    assert regimes["n_bars"].sum() == (spread_bars & (regime != UNKNOWN)).sum()
    symbols = rows.filter(pl.col("dimension") == "symbol")
    assert symbols["value"].to_list() == list(panel.symbols)
    assert symbols["same_sign"].sum() >= 0.75 * len(panel.symbols)
    cost = rows.filter(pl.col("dimension") == "cost")
    assert cost["value"].to_list() == ["0", "0.0005", "0.001", "0.002"]
    assert cost["t_hac"][0] == pytest.approx(spread["t_hac"], rel=1e-12)


def test_without_the_effect_the_spread_is_not_significant():
    _, score, label, member, _ = reversal_inputs(0.0)
    spread = conditional_expectancy(score, label, member, horizon=12).row(-1, named=True)
    assert abs(spread["t_hac"]) < 2.5
    assert spread["t_hac"] == pytest.approx(0.393, abs=0.001)  # measured: same shocks
    assert spread["n_bars"] > 15_000


# --- events ---------------------------------------------------------------------------------

EVENT_LABEL = [
    [0.01, -0.02],
    [0.03, 0.04],
    [NAN, 0.05],
    [-0.01, 0.02],
    [0.02, NAN],
    [0.00, 0.01],
]


def event_panel() -> UniversePanel:
    c = np.full((6, 2), 100.0)
    ts = T0 + np.arange(6) * np.timedelta64(5, "m")
    return UniversePanel(ts, ("AAA", "BBB"), 5, c, c, c, c, c, c, c)


def events_frame(rows, tz: str | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"event_type": [r[0] for r in rows], "symbol": [r[1] for r in rows],
         "ts": [(T0 + r[2] * np.timedelta64(5, "m")).astype(object) for r in rows],
         "direction": [r[3] for r in rows]},
        schema={"event_type": pl.String, "symbol": pl.String, "ts": pl.Datetime("us"),
                "direction": pl.Int8})
    return frame.with_columns(pl.col("ts").dt.replace_time_zone(tz)) if tz else frame


EVENTS = [  # type, symbol, bar, direction     signed label
    ("A", "AAA", 1, 1),                     # +0.03
    ("A", "BBB", 3, -1),                    # -0.02
    ("A", "BBB", 4, 1),                     # no label
    ("B", "AAA", 0, -1),                    # -0.01
    ("B", "BBB", 2, -1),                    # -0.05
    ("B", "AAA", 5, 1),                     # 0.00
]


def test_event_expectancy_by_hand():
    table = event_expectancy(events_frame(EVENTS), event_panel(), np.array(EVENT_LABEL),
                             horizon=1, cost=0.001)
    assert dict(table.schema) == EVENT_SCHEMA
    a, b = table.rows(named=True)
    assert (a["event_type"], a["n"], a["n_no_label"], a["clusters"]) == ("A", 2, 1, 2)
    assert (b["event_type"], b["n"], b["n_no_label"], b["clusters"]) == ("B", 3, 0, 3)
    assert a["mean"] == pytest.approx(0.005, rel=1e-12)
    assert b["mean"] == pytest.approx(-0.02, rel=1e-12)
    assert a["net_mean"] == pytest.approx(0.004, rel=1e-12)
    assert b["net_mean"] == pytest.approx(-0.021, rel=1e-12)
    test = cr2_mean_test(np.array([-0.01, -0.05, 0.0]), np.array([0, 2, 5]), lag=1)
    assert (b["se"], b["t"]) == pytest.approx((test.se, test.t), rel=1e-12)
    aware = event_expectancy(events_frame(EVENTS, "UTC"), event_panel(),
                             np.array(EVENT_LABEL), horizon=1, cost=0.001)
    assert aware.equals(table)


@pytest.mark.parametrize(("rows", "match"), [
    ([("A", "AAA", 1, 0)], "direction"),
    ([("A", "CCC", 1, 1)], "CCC"),
    ([("A", "AAA", 9, 1)], "not a bar"),
    ([(None, "AAA", 1, 1)], "nulls"),
])
def test_event_expectancy_refuses(rows, match):
    with pytest.raises(ValueError, match=match):
        event_expectancy(events_frame(rows), event_panel(), np.array(EVENT_LABEL), horizon=1)


def test_an_event_off_the_bar_grid_is_refused():
    frame = events_frame([("A", "AAA", 1, 1)]).with_columns(
        pl.col("ts") + pl.duration(minutes=1))
    with pytest.raises(ValueError, match="not a bar"):
        event_expectancy(frame, event_panel(), np.array(EVENT_LABEL), horizon=1)


# --- inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "match"), [
    ({"buckets": 1}, "buckets"),
    ({"horizon": 0}, "horizon"),
    ({"cost": -0.001}, "cost"),
    ({"cost": NAN}, "cost"),
])
def test_conditional_expectancy_refuses(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conditional_expectancy(*hand(), **{"horizon": 1, **kwargs})


def test_shapes_and_member_dtype_are_checked():
    signal, label, member = hand()
    with pytest.raises(ValueError, match="member"):
        conditional_expectancy(signal, label, member.astype(float), horizon=1)
    with pytest.raises(ValueError, match="label"):
        conditional_expectancy(signal, label[:2], member, horizon=1)
    with pytest.raises(ValueError, match="regime"):
        robustness(signal, label, member, horizon=1, regime=np.zeros(3, np.int8))


# --- the JSON reports -----------------------------------------------------------------------

def test_plain_rounds_to_12_significant_digits_and_nulls_nan():
    assert plain(0.1234567890123456) == 0.123456789012
    assert plain(np.float64(1 / 3)) == 0.333333333333
    assert plain(-0.0) == 0.0 and str(plain(-0.0)) == "0.0"
    assert plain([NAN, np.inf, np.int64(3), True, None]) == [None, None, 3, True, None]
    with pytest.raises(TypeError, match="ndarray"):
        plain(np.zeros(2))


def test_reports_are_plain_json_and_round_trip():
    buckets = {"reversal": conditional_expectancy(*hand(), buckets=2, horizon=1, cost=0.001),
               "other": conditional_expectancy(*hand(), buckets=5, horizon=1, cost=0.001)}
    events = event_expectancy(events_frame(EVENTS), event_panel(), np.array(EVENT_LABEL),
                              horizon=1, cost=0.001)
    hashes = {"spec_hashes": {"alpha.yaml": "ab" * 32}, "dataset_hash": "cd" * 32,
              "code_commit": "fb76abd"}
    doc = expectancy_json(buckets, events, horizon=1, cost=0.001, hashes=hashes)
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc
    assert (doc["schema_version"], doc["report"], doc["horizon_bars"], doc["cost"]) == (
        1, "conditional_expectancy", 1, 0.001)
    assert doc["hashes"] == hashes
    assert list(doc["signals"]) == ["other", "reversal"]
    rows = doc["signals"]["reversal"]["buckets"]
    assert [r["bucket"] for r in rows] == ["q1", "q2", "q2-q1"]
    assert rows[2]["mean"] == float(f"{np.mean(SPREAD):.12g}")
    assert doc["signals"]["other"]["buckets"][2]["se_hac"] is None  # one bar: no se
    assert [r["event_type"] for r in doc["event_types"]] == ["A", "B"]

    rob = robustness_json({"reversal": robustness(*hand(), horizon=1, buckets=2)},
                          horizon=1, cost=0.001, hashes=hashes)
    assert json.loads(json.dumps(rob, allow_nan=False)) == rob
    assert rob["report"] == "conditional_expectancy_robustness"
    assert {r["dimension"] for r in rob["signals"]["reversal"]["rows"]} == {
        "period", "symbol", "cost"}
    with pytest.raises(ValueError, match="columns"):
        expectancy_json({"bad": events}, horizon=1, cost=0.0, hashes={})
