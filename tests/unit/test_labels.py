"""Forward labels: literal opens with the hand-computed labels written beside them."""

import datetime as dt
import math

import polars as pl
import pytest

from backtest_assets.features.labels import LABEL_KEYS, compute_labels
from backtest_assets.specs.registry import load_registry

T0 = dt.datetime(2024, 1, 1)
FIVE = dt.timedelta(minutes=5)
LN = math.log


def perp(rows, symbol="BTCUSDT", minutes=5):
    """rows: (k, open, close); bar k opens at T0 + k * minutes."""
    width = dt.timedelta(minutes=minutes)
    return pl.DataFrame({"symbol": [symbol] * len(rows),
                         "ts_open": [T0 + k * width for k, _, _ in rows],
                         "ts_close": [T0 + (k + 1) * width for k, _, _ in rows],
                         "open": [o for _, o, _ in rows], "close": [c for _, _, c in rows]})


# Closes are far from the next open, so a label built from close[t] cannot pass.
BARS = perp([
    # k open   close
    (0, 100.0, 500.0),
    (1, 110.0, 600.0),
    (2, 121.0, 700.0),
    # bar 3 missing
    (4, 100.0, 800.0),
    (5, 90.0,  900.0),
    (6, 99.0,  1.0),
    (7, 108.9, 2.0),   # last bar: nothing after it
])
EXPECTED = [
    # ts_open  h1 = ln(open[t+2] / open[t+1])   h2 = ln(open[t+3] / open[t+1])
    (0,        LN(121 / 110),                   None),           # open[3] missing
    (1,        None,                            LN(100 / 121)),  # h1 needs open[3]
    (2,        None,                            None),           # entry bar 3 missing
    (4,        LN(99 / 90),                     LN(108.9 / 90)),
    (5,        LN(108.9 / 99),                  None),           # open[8] beyond the data
    (6,        None,                            None),
    (7,        None,                            None),
]


def test_labels_match_hand_computed_values_across_a_gap_and_the_end():
    out = compute_labels(BARS, {"h1": 1, "h2": 2})
    assert out.columns == [*LABEL_KEYS, "h1", "h2"]
    assert out.schema["h1"] == out.schema["h2"] == pl.Float64
    assert out["ts_open"].to_list() == [T0 + k * FIVE for k, _, _ in EXPECTED]
    for name, col in (("h1", 1), ("h2", 2)):
        expected = [row[col] for row in EXPECTED]
        got = out[name].to_list()
        assert [g is None for g in got] == [e is None for e in expected], name
        assert [g for g in got if g is not None] == pytest.approx(
            [e for e in expected if e is not None], rel=1e-12)


def test_labels_enter_at_the_next_open_not_at_the_close():
    out = compute_labels(BARS, {"h1": 1})
    assert out["h1"][0] == pytest.approx(LN(121 / 110))
    assert out["h1"][0] != pytest.approx(LN(600 / 500))


def test_symbols_do_not_leak_and_rows_are_sorted():
    eth = perp([(k, 10.0 * (k + 1), 1.0) for k in range(3)], symbol="ETHUSDT")
    both = pl.concat([eth, BARS]).sample(fraction=1.0, shuffle=True, seed=2)
    out = compute_labels(both, {"h1": 1})
    assert out.select(LABEL_KEYS).equals(both.select(LABEL_KEYS).sort(LABEL_KEYS))
    assert out.filter(pl.col("symbol") == "BTCUSDT")["h1"].to_list()[-2:] == [None, None]
    assert out.filter(pl.col("symbol") == "ETHUSDT")["h1"].to_list() == \
        [pytest.approx(LN(30 / 20)), None, None]


def test_interval_is_inferred_from_the_bars_and_registry_horizons_apply():
    quarter = perp([(k, 100.0 + k, 1.0) for k in range(6)], minutes=15)
    horizons = load_registry().label_bars()
    assert horizons == {"fwd_ret_5m": 1, "fwd_ret_15m": 3, "fwd_ret_60m": 12}
    out = compute_labels(quarter, {"fwd_ret_15m": 1})
    assert out["fwd_ret_15m"].to_list()[:4] == pytest.approx(
        [LN((102 + k) / (101 + k)) for k in range(4)])
    out = compute_labels(quarter, horizons)
    assert out.columns == [*LABEL_KEYS, *horizons]
    assert out["fwd_ret_60m"].null_count() == 6


def test_mixed_intervals_and_bad_horizons_are_rejected():
    mixed = pl.concat([perp([(0, 1.0, 1.0)]), perp([(1, 1.0, 1.0)], minutes=15)])
    with pytest.raises(ValueError, match="interval"):
        compute_labels(mixed, {"h1": 1})
    with pytest.raises(ValueError, match="h0"):
        compute_labels(BARS, {"h0": 0})
