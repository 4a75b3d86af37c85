"""Features: literal bars and prints with the hand-computed values written beside them."""

import datetime as dt
import math
import statistics

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from backtest_assets.core.bars import BAR_SCHEMA
from backtest_assets.core.frames import FUNDING_SCHEMA, OPEN_INTEREST_SCHEMA, conform, empty
from backtest_assets.features.compute import FEATURE_KEYS, compute_features
from backtest_assets.specs.models import FeatureSpec

T0 = dt.datetime(2024, 1, 1)
FIVE = dt.timedelta(minutes=5)
US = dt.timedelta(microseconds=1)
L = math.log(1.1)


def at(k: int) -> dt.datetime:
    """ts_open of bar k (so ts_close of bar k is at(k + 1))."""
    return T0 + k * FIVE


def bars(rows, market="perp", symbol="BTCUSDT"):
    """rows: (k, open, high, low, close, volume, taker_buy_volume, quote_volume)."""
    return conform(pl.DataFrame(
        [{"symbol": symbol, "market": market, "ts_open": at(k), "ts_close": at(k + 1),
          "open": o, "high": h, "low": lo, "close": c, "volume": v, "taker_buy_volume": tb,
          "quote_volume": qv, "trade_count": 1, "taker_buy_quote_volume": tb * c,
          "n_source_bars": 5}
         for k, o, h, lo, c, v, tb, qv in rows], schema_overrides={"trade_count": pl.Int64}),
        BAR_SCHEMA)


def prints(rows, schema=FUNDING_SCHEMA, column="funding_rate", symbol="BTCUSDT"):
    """rows: (ts, value)."""
    return conform(pl.DataFrame({"symbol": [symbol] * len(rows), "ts": [t for t, _ in rows],
                                 column: [v for _, v in rows]}), schema)


def spec(name, family, *inputs, window=1, z_window=None):
    return FeatureSpec(name=name, family=family, inputs=tuple(inputs), window=window,
                       z_window=z_window, warmup_bars=window + (z_window or 0))


def z(*xs):
    """Reference z-score of the last value against the window (statistics, ddof=1)."""
    return (xs[-1] - statistics.mean(xs)) / statistics.stdev(xs)


PERP = bars([
    # k open   high   low    close  volume taker_buy quote_volume   TR (prev close)
    (0, 100.0, 101.0, 99.0,  100.0, 10.0,  5.0,      1e6),        # -
    (1, 100.0, 112.0, 100.0, 110.0, 10.0,  8.0,      1e6),        # 112 - 100 = 12
    (2, 110.0, 122.0, 109.0, 121.0, 20.0,  5.0,      2e6),        # 122 - 109 = 13
    (3, 118.0, 118.0, 108.0, 110.0, 10.0,  10.0,     1e6),        # 121 - 108 = 13 (gap down)
    (4, 110.0, 133.0, 109.0, 132.0, 5.0,   0.0,      4e6),        # 133 - 109 = 24
])
SPOT = bars([(0, 100.0, 100.0, 100.0, 100.0, 1.0, 0.5, 100.0),
             (1, 100.0, 100.0, 100.0, 100.0, 1.0, 0.5, 100.0),
             (2, 110.0, 110.0, 110.0, 110.0, 1.0, 0.5, 110.0),
             # bar 3 missing on spot
             (4, 120.0, 120.0, 120.0, 120.0, 1.0, 0.5, 120.0)], market="spot")
FUNDING = prints([
    (at(0) - dt.timedelta(hours=1), 0.0001),
    (at(1), 0.0003),        # exactly ts_close(0): used from bar 1 (acting on bar 0 is then)
    (at(2) + US, -0.0002),  # 1 µs after ts_close(1): not known at bar 1, known at bar 2
    (at(4), -0.0001),       # exactly ts_close(3): used from bar 4
])
OI = prints([(at(k), math.exp(x)) for k, x in enumerate([0, 1, 3, 3, 6, 6])],
            OPEN_INTEREST_SCHEMA, "open_interest")
# ln OI = 0 1 3 3 6 6 at ts_open(k), so bar k sees snapshot k; change over 1 snapshot
# d = - 1 2 0 3 0.

SPECS = [
    spec("r2", "log_return", "perp.close", window=2),
    spec("rv2", "realized_vol", "perp.close", window=2),
    spec("cz3", "zscore", "perp.close", window=3),
    spec("vz3", "volume_zscore", "perp.volume", window=3),
    spec("atr2", "range_atr", window=2),
    spec("ami2", "amihud", window=2),
    spec("ofi2", "order_flow_imbalance", window=2),
    spec("vpin2", "vpin", window=2),
    spec("fr", "funding_rate", "funding.funding_rate"),
    spec("fz3", "funding_zscore", "funding.funding_rate", window=3),
    spec("fp2", "funding_persistence", "funding.funding_rate", window=2),
    spec("oiz", "oi_change_zscore", "oi.open_interest", window=1, z_window=3),
    spec("basis", "basis", "perp.close", "spot.close"),
    spec("r2z2", "zscore", "feature.r2", window=2),
]
LN = math.log
EXPECTED = {
    #        bar 0   bar 1      bar 2                      bar 3                bar 4
    "r2":    [None,  None,      LN(121 / 100),             0.0,                 LN(132 / 121)],
    "rv2":   [None,  None,      math.sqrt(2) * L,          math.sqrt(2) * L,
              math.hypot(L, LN(1.2))],
    "cz3":   [None,  None,      z(100, 110, 121),          z(110, 121, 110),    z(121, 110, 132)],
    "vz3":   [None,  None,      z(LN(10), LN(10), LN(20)), z(LN(10), LN(20), LN(10)),
              z(LN(20), LN(10), LN(5))],
    "atr2":  [None,  None,      13 / 12.5,                 10 / 13,             24 / 18.5],
    # |r| / quote_volume * 1e6: -, L, L/2, L, ln(1.2)/4
    "ami2":  [None,  None,      0.75 * L,                  0.75 * L,
              (L + LN(1.2) / 4) / 2],
    # 2 taker_buy - volume: 0 6 -10 10 -5; volume: 10 10 20 10 5
    "ofi2":  [None,  6 / 20,    -4 / 30,                   0.0,                 5 / 15],
    "vpin2": [None,  6 / 20,    16 / 30,                   20 / 30,             1.0],
    # bars see prints 0, 1, 2, 2, 3 (a print at a bar's close counts from the next bar)
    "fr":    [0.0001, 0.0003,   -0.0002,                   -0.0002,             -0.0001],
    "fz3":   [None,  None,      z(0.0001, 0.0003, -0.0002), z(0.0001, 0.0003, -0.0002),
              z(0.0003, -0.0002, -0.0001)],
    # print signs + + - -: runs 1 2 1 2, capped at 2
    "fp2":   [1.0,   2.0,       -1.0,                      -1.0,                -2.0],
    # bar j sees snapshot j: z over d_{j-2..j} from j = 3 on, d = - 1 2 0 3 0
    "oiz":   [None,  None,      None,                      z(1, 2, 0),          z(2, 0, 3)],
    "basis": [0.0,   LN(1.1),   LN(1.1),                   None,                LN(1.1)],
    "r2z2":  [None,  None,      None,                      z(LN(1.21), 0.0),
              z(0.0, LN(132 / 121))],
}


def run(perp=PERP, spot=SPOT, funding=FUNDING, oi=OI, specs=SPECS):
    return compute_features(perp, spot, funding, oi, specs, interval_minutes=5)


def assert_column(out, name, expected):
    got = out[name].to_list()
    assert [g is None for g in got] == [e is None for e in expected], (name, got)
    assert [g for g in got if g is not None] == pytest.approx(
        [e for e in expected if e is not None], rel=1e-12, abs=1e-15), (name, got)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_family_matches_hand_computed_values(name):
    assert_column(run(), name, EXPECTED[name])


def test_output_contract_columns_dtypes_and_rows():
    shuffled = pl.concat([PERP, bars([(0, 10.0, 11.0, 9.0, 10.0, 1.0, 0.5, 10.0)],
                                     symbol="ETHUSDT")]).sample(fraction=1.0, shuffle=True, seed=1)
    out = run(perp=shuffled)
    assert out.columns == FEATURE_KEYS + [s.name for s in SPECS]
    assert out.schema["ts_open"] == out.schema["ts_close"] == pl.Datetime("us")
    assert all(out.schema[s.name] == pl.Float64 for s in SPECS)
    assert out.select("symbol", "ts_open", "ts_close").equals(
        shuffled.select("symbol", "ts_open", "ts_close").sort("symbol", "ts_open"))
    assert not any("fwd" in c or "label" in c for c in out.columns)


def test_a_missing_bar_nulls_the_windows_touching_it_and_is_not_skipped():
    gapped = PERP.filter(pl.col("ts_open") != at(2))
    specs = [spec("r1", "log_return", "perp.close"), spec("r2", "log_return", "perp.close",
                                                          window=2),
             spec("ofi2", "order_flow_imbalance", window=2), spec("fr", "funding_rate",
                                                                  "funding.funding_rate")]
    out = run(perp=gapped, specs=specs)
    assert out["ts_open"].to_list() == [at(0), at(1), at(3), at(4)]
    assert_column(out, "r1", [None, LN(1.1), None, LN(1.2)])    # bar 3: c_2 missing
    assert_column(out, "r2", [None, None, LN(110 / 110), None])  # by time: c_3 / c_1, c_4 / c_2
    assert_column(out, "ofi2", [None, 6 / 20, None, 5 / 15])     # window {2, 3} touches the gap
    assert_column(out, "fr", [0.0001, 0.0003, -0.0002, -0.0001])  # as-of needs no window


def test_print_at_exactly_ts_close_counts_from_the_next_bar_one_microsecond_earlier_does_not():
    specs = [spec("fr", "funding_rate", "funding.funding_rate")]
    exact = prints([(at(0), 1.0), (at(2), 2.0)])  # at(2) = ts_close(1)
    early = prints([(at(0), 1.0), (at(2) - US, 2.0)])
    assert run(funding=exact, specs=specs)["fr"].to_list()[:3] == [1.0, 1.0, 2.0]
    assert run(funding=early, specs=specs)["fr"].to_list()[:3] == [1.0, 2.0, 2.0]


def test_persistence_counts_runs_caps_them_and_gives_zero_on_zero():
    perp = bars([(k, 100.0, 100.0, 100.0, 100.0, 1.0, 0.5, 100.0) for k in range(7)])
    rates = [0.1, 0.2, 0.1, 0.0, -0.1, -0.3, 0.1]
    funding = prints([(at(k), r) for k, r in enumerate(rates)])  # bar k sees print k
    specs = [spec("p2", "funding_persistence", "funding.funding_rate", window=2),
             spec("p9", "funding_persistence", "funding.funding_rate", window=9)]
    out = run(perp=perp, funding=funding, specs=specs)
    assert out["p2"].to_list() == [1.0, 2.0, 2.0, 0.0, -1.0, -2.0, 1.0]
    assert out["p9"].to_list() == [1.0, 2.0, 3.0, 0.0, -1.0, -2.0, 1.0]


def test_constant_windows_and_non_positive_volumes_give_null():
    perp = bars([
        # k open   high   low   close  volume taker quote_volume
        (0, 100.0, 100.0, 100.0, 100.0, 1.0,  0.5,  100.0),
        (1, 100.0, 100.0, 100.0, 100.0, 0.0,  0.0,  0.0),
        (2, 100.0, 100.0, 100.0, 100.0, 1.0,  0.5,  100.0),
        (3, 100.0, 100.0, 100.0, 100.0, 1.0,  0.5,  100.0),
    ])
    funding = prints([(at(k), 0.0001) for k in range(5)])  # stuck at 0.01 %: std 0
    specs = [spec("cz2", "zscore", "perp.close", window=2),
             spec("vz2", "volume_zscore", "perp.volume", window=2),
             spec("ami1", "amihud", window=1),
             spec("atr1", "range_atr", window=1),
             spec("fz3", "funding_zscore", "funding.funding_rate", window=3)]
    out = run(perp=perp, funding=funding, specs=specs)
    assert out["cz2"].null_count() == 4
    assert out["vz2"].null_count() == 4  # ln(0) is null; the rest are constant windows
    assert out["ami1"].to_list() == [None, None, 0.0, 0.0]  # quote_volume 0 at bar 1
    assert out["atr1"].to_list() == [None, None, None, None]  # zero true range
    assert out["fz3"].null_count() == 4


def test_symbols_do_not_leak_into_each_other():
    eth = bars([(k, 10.0 + k, 12.0 + k, 9.0 + k, 11.0 + k, 3.0, 1.0, 30.0) for k in range(5)],
               symbol="ETHUSDT")
    eth_funding = prints([(at(0), -0.5)], symbol="ETHUSDT")
    eth_oi = prints([(at(k), 50.0 + k) for k in range(6)], OPEN_INTEREST_SCHEMA,
                    "open_interest", symbol="ETHUSDT")
    both = run(perp=pl.concat([eth, PERP]), funding=pl.concat([FUNDING, eth_funding]),
               oi=pl.concat([eth_oi, OI]))
    assert_frame_equal(both.filter(pl.col("symbol") == "BTCUSDT"), run(), check_exact=True)
    alone = run(perp=eth, spot=SPOT.clear(), funding=eth_funding, oi=eth_oi)
    assert_frame_equal(both.filter(pl.col("symbol") == "ETHUSDT"), alone, check_exact=True)
    eth_out = both.filter(pl.col("symbol") == "ETHUSDT")
    assert eth_out["basis"].null_count() == 5  # BTC's spot is not ETH's
    assert eth_out["fr"].to_list() == [-0.5] * 5
    assert eth_out["r2"][:2].to_list() == [None, None]  # no window reaches into BTC's bars


def test_empty_spot_gives_null_basis():
    out = run(spot=empty(BAR_SCHEMA))
    assert out["basis"].null_count() == out.height == 5
    assert_column(out, "r2", EXPECTED["r2"])


def test_unknown_family_and_unordered_dependency_name_the_feature():
    bad = FeatureSpec(name="mystery", family="astrology", window=1,  # type: ignore[arg-type]
                      warmup_bars=1)
    with pytest.raises(ValueError, match="mystery"):
        run(specs=[bad])
    with pytest.raises(ValueError, match=r"'late_z'.*feature\.r9"):
        run(specs=[spec("late_z", "zscore", "feature.r9", window=2),
                   spec("r9", "log_return", "perp.close")])


def test_no_bars_give_an_empty_frame_with_the_columns():
    out = compute_features(empty(BAR_SCHEMA), empty(BAR_SCHEMA), empty(FUNDING_SCHEMA),
                           empty(OPEN_INTEREST_SCHEMA), SPECS, interval_minutes=5)
    assert out.is_empty()
    assert out.columns == FEATURE_KEYS + [s.name for s in SPECS]


def test_bars_off_the_interval_are_rejected():
    with pytest.raises(ValueError, match="ts_close"):
        compute_features(PERP, SPOT, FUNDING, OI, SPECS, interval_minutes=15)
