"""Point in time, generated from the specs: every feature in specs/features/*.yaml and every
event type in specs/events/*.yaml at bar t is unchanged when all bars after t and all prints
published at or after ts_close(t) become garbage."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_series_equal

from backtest_assets.core.bars import bars_1m, resample
from backtest_assets.events.detect import detect_events
from backtest_assets.features.compute import compute_features
from backtest_assets.sources.synthetic import SyntheticSource
from backtest_assets.specs.registry import load_registry

REGISTRY = load_registry()
SYMBOLS = ("BTCUSDT", "ETHUSDT")
# Sixteen days: the funding z-score needs 21 prints (7 days) before its first value, and
# every event type must have fired before the cuts for their test to mean anything.
DAYS = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(16)]
INTERVAL = dt.timedelta(minutes=REGISTRY.base_minutes)
CUTS = [  # ts_open of bar t; funding prints at 00:00, 08:00 and 16:00 UTC
    dt.datetime(2024, 1, 15, 12, 0),    # mid-day
    dt.datetime(2024, 1, 15, 15, 50),   # the bar before the one whose ts_close is a print
    dt.datetime(2024, 1, 15, 15, 55),   # ts_close(t) = 16:00 print: not used at t
    dt.datetime(2024, 1, 15, 23, 55),   # the last bar of a day (ts_close = 00:00 print)
    dt.datetime(2024, 1, 16, 7, 55),    # ts_close(t) = 08:00 print
]


def _market_data() -> dict[str, pl.DataFrame]:
    src = SyntheticSource(seed=3)

    def bars(market):
        klines = pl.concat([src.klines_1m(market, s, d).frame for s in SYMBOLS for d in DAYS])
        return resample(bars_1m(klines, market), REGISTRY.base_minutes)

    return {
        "perp": bars("perp"),
        "spot": bars("spot"),
        "funding": pl.concat([src.funding_rates(s, d).frame for s in SYMBOLS for d in DAYS]),
        "oi": pl.concat([src.open_interest(s, d).frame for s in SYMBOLS for d in DAYS]),
    }


def _garbage(frame: pl.DataFrame, after: pl.Expr, columns: dict[str, tuple[float, float]],
             rng: np.random.Generator) -> pl.DataFrame:
    """``frame`` with ``columns`` drawn uniformly from their range on the rows ``after``."""
    n = frame.height
    return frame.with_columns(
        pl.when(after).then(pl.Series(name, rng.uniform(lo, hi, n))).otherwise(pl.col(name))
        .alias(name)
        for name, (lo, hi) in columns.items())


_BAR_GARBAGE = {**dict.fromkeys(("open", "high", "low", "close"), (1.0, 1e5)),
                **dict.fromkeys(("volume", "quote_volume", "taker_buy_volume"), (1e-3, 1e6))}


def _features(data: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return compute_features(data["perp"], data["spot"], data["funding"], data["oi"],
                            list(REGISTRY.features.values()),
                            interval_minutes=REGISTRY.base_minutes)


@pytest.fixture(scope="module")
def runs() -> tuple[pl.DataFrame, dict[dt.datetime, pl.DataFrame]]:
    """The clean features and, per cut t, the features on data that is garbage after t."""
    data = _market_data()
    clean = _features(data)
    poisoned = {}
    for i, t in enumerate(CUTS):
        rng = np.random.default_rng(100 + i)
        known = t + INTERVAL  # ts_close(t)
        bad = {m: _garbage(data[m], pl.col("ts_open") > t, _BAR_GARBAGE, rng)
               for m in ("perp", "spot")}
        # Garbage rates take the sign opposite to the clean print's (negative on 0): else a
        # sign-only feature (persistence, capped) could see no change after t.
        bad["funding"] = _garbage(data["funding"], pl.col("ts") >= known,
                                  {"funding_rate": (1e-3, 1e-2)}, rng).with_columns(
            pl.when((pl.col("ts") >= known) & (data["funding"]["funding_rate"] >= 0))
            .then(-pl.col("funding_rate")).otherwise(pl.col("funding_rate")))
        bad["oi"] = _garbage(data["oi"], pl.col("ts") >= known,
                             {"open_interest": (1.0, 1e9)}, rng)
        poisoned[t] = _features(bad)
    return clean, poisoned


@pytest.mark.parametrize("feature", list(REGISTRY.features))
def test_feature_at_t_ignores_everything_after_t(feature, runs):
    clean, poisoned = runs
    for t, bad in poisoned.items():
        before, after = pl.col("ts_open") <= t, pl.col("ts_open") > t
        assert bad.select("symbol", "ts_open").equals(clean.select("symbol", "ts_open"))
        assert clean.filter(pl.col("ts_open") == t)[feature].null_count() == 0, \
            f"{feature} is not warm at {t}: the cut proves nothing"
        assert_series_equal(bad.filter(before)[feature], clean.filter(before)[feature],
                            check_exact=True)
        changed = bad.filter(after)[feature].ne_missing(clean.filter(after)[feature])
        assert changed.any(), f"garbage after {t} changed no value of {feature}"


def test_a_day_does_not_depend_on_how_much_history_precedes_its_warmup():
    """Bit-identical values on the last day from 16 days of data or from just its warm-up."""
    data = _market_data()
    last_day = DAYS[-1]
    start = dt.datetime.combine(last_day - dt.timedelta(days=REGISTRY.feature_warmup_days),
                                dt.time())
    short = {m: f.filter(pl.col("ts_open" if m in ("perp", "spot") else "ts") >= start)
             for m, f in data.items()}
    day = pl.col("ts_open").dt.date() == last_day
    long_run, short_run = _features(data).filter(day), _features(short).filter(day)
    assert long_run.height == 2 * 288
    assert long_run.equals(short_run)


def _events(features: pl.DataFrame, event_type: str) -> pl.DataFrame:
    return detect_events(features, [REGISTRY.events[event_type]],
                         interval_minutes=REGISTRY.base_minutes)


@pytest.mark.parametrize("event_type", list(REGISTRY.events))
def test_event_at_t_ignores_everything_after_t(event_type, runs):
    clean, poisoned = runs
    clean_events = _events(clean, event_type)
    changed_after = False
    for t, bad in poisoned.items():
        bad_events = _events(bad, event_type)
        before = pl.col("ts") <= t
        assert bad_events.filter(before).equals(clean_events.filter(before)), (event_type, t)
        changed_after |= not bad_events.filter(~before).equals(clean_events.filter(~before))
    assert clean_events.filter(pl.col("ts") <= max(poisoned)).height > 0, \
        f"{event_type} never fired before the cuts: the test proves nothing"
    assert changed_after, f"garbage after the cuts changed no {event_type} event"
