"""The universe's generated cross-section served as a market-data source, and the listing
calendar the dynamic symbol dimension follows (no Dagster).

The generator's truth (backtest_assets/sources/synthetic_universe.py) says which bars exist;
the source must serve exactly those, nothing before a listing or after a delisting, and keep
the planted cross-sectional reversal in what it serves."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.core.frames import KLINE_SCHEMA
from backtest_assets.defs.ingest.checks import FUNDING_CONTRACT, KLINES_CONTRACT
from backtest_assets.sources.generated import GeneratedUniverseSource, generated_spans
from backtest_assets.sources.listings import Listing, listed_by, listings, trading_keys
from backtest_assets.sources.synthetic import SyntheticSource
from backtest_assets.sources.synthetic_universe import generate_universe, universe_spans
from backtest_assets.specs.models import GeneratedSymbolsSpec, SymbolSpec, UniverseSpec

START = dt.date(2024, 1, 1)
SPEC = GeneratedSymbolsSpec(symbols=20, days=12, seed=3, xs_effect=0.01)
DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def served():
    return GeneratedUniverseSource(SPEC, START, other=SyntheticSource(seed=7))


@pytest.fixture(scope="module")
def truth():
    return generate_universe(SPEC.seed, symbols=SPEC.symbols + 1, days=SPEC.days,
                             interval_minutes=1, start=START, xs_effect=SPEC.xs_effect)


def _contract_problems(contract, frame: pl.DataFrame) -> list:
    """The contract's blocking failures (a gap is a WARN: missing minutes, as on Binance)."""
    from backtest_assets.schemas.checks import evaluate

    return [o.name for o in evaluate(frame, contract) if o.blocking_failure]


def test_the_spans_drawn_alone_are_the_generators(truth):
    listing, delisting = universe_spans(SPEC.seed, symbols=SPEC.symbols + 1, days=SPEC.days,
                                        interval_minutes=1)
    t = truth.truth
    assert [lb or 0 for lb in t.listing_bar] == listing.tolist()
    assert [db or SPEC.days * 1440 for db in t.delisting_bar] == delisting.tolist()
    spans = generated_spans(SPEC, START)
    assert list(spans) == list(SPEC.names) == [f"S{k:02d}USDT" for k in range(1, 21)]
    late = [n for n, (first, _) in spans.items() if first > START]
    gone = [n for n, (_, last) in spans.items() if last < START + (SPEC.days - 1) * DAY]
    assert late and gone and not set(late) & set(gone)  # listings and delistings both drawn


def test_a_day_serves_exactly_the_generators_bars(served, truth):
    p, t = truth.panel, truth.truth
    for s, name in enumerate(SPEC.names, start=1):
        first, last = generated_spans(SPEC, START)[name]
        for day in (first - DAY, first, last, last + DAY):
            got = served.klines_1m("perp", name, day)
            i = (day - START).days
            if not 0 <= i < SPEC.days or not first <= day <= last:
                assert got.missing and got.frame.is_empty(), (name, day)
                continue
            rows = slice(i * 1440, (i + 1) * 1440)
            have = np.isfinite(p.close[rows, s])
            assert not got.missing and got.frame.height == have.sum() > 0
            f = got.frame
            assert f.schema == pl.Schema(KLINE_SCHEMA)
            np.testing.assert_array_equal(f["close"].to_numpy(), p.close[rows, s][have])
            np.testing.assert_array_equal(f["quote_volume"].to_numpy(),
                                          p.quote_volume[rows, s][have])
            assert (f["ts_open"].to_numpy() == p.ts[rows][have]).all()
            assert _contract_problems(KLINES_CONTRACT, f) == []
        if t.delisting_bar[s] is not None:  # the delisting day ends before the delisting bar
            f = served.klines_1m("perp", name, last).frame
            assert f["ts_open"].max() < np.datetime64(START, "us") + np.timedelta64(
                t.delisting_bar[s], "m")


def test_gaps_are_missing_minutes_not_rows(served, truth):
    t = truth.truth
    s, a, b = next(g for g in t.gaps if g[0] >= 1)
    day = START + DAY * (a // 1440)
    f = served.klines_1m("perp", SPEC.names[s - 1], day).frame
    gap = set((np.datetime64(START, "us") + np.arange(a, b) * np.timedelta64(1, "m")).tolist())
    assert not gap & set(f["ts_open"].to_list())
    assert f.height <= 1440 - (b - a)


def test_funding_prints_only_while_trading_and_no_spot_or_open_interest(served, truth):
    t = truth.truth
    for s, name in enumerate(SPEC.names, start=1):
        first, last = generated_spans(SPEC, START)[name]
        frames = [served.funding_rates(name, first + DAY * k).frame
                  for k in range((last - first).days + 1)]
        f = pl.concat(frames)
        assert _contract_problems(FUNDING_CONTRACT, f) == []
        minutes = ((f["ts"].to_numpy() - np.datetime64(START, "us"))
                   // np.timedelta64(1, "m")).astype(int)
        assert (minutes % 480 == 0).all()
        assert (minutes > (t.listing_bar[s] or -1)).all()  # strictly after listing
        if t.delisting_bar[s] is not None:
            assert (minutes < t.delisting_bar[s]).all()
        np.testing.assert_array_equal(f["funding_rate"].to_numpy(),
                                      truth.funding_prints[minutes // 480, s])
        assert served.klines_1m("spot", name, first).missing
        assert served.open_interest(name, first).missing


def test_other_symbols_come_from_the_wrapped_source(served):
    mine = served.klines_1m("perp", "BTCUSDT", START + DAY)
    theirs = SyntheticSource(seed=7).klines_1m("perp", "BTCUSDT", START + DAY)
    assert mine.frame.equals(theirs.frame) and mine.files == theirs.files
    assert served.open_interest("BTCUSDT", START).frame.height == 288


def _served_reversal_t(source: GeneratedUniverseSource, spec: GeneratedSymbolsSpec) -> float:
    """t-stat over days of the daily cross-sectional Spearman correlation between the served
    symbols' one-day log return to 12:00 and their next 12 hours (the planted reversal is
    negative)."""
    closes = {}
    for name in spec.names:
        days = [source.klines_1m("perp", name, START + DAY * k).frame
                for k in range(spec.days)]
        f = pl.concat(days).select("ts_open", "close")
        closes[name] = dict(zip(f["ts_open"].to_list(), f["close"].to_list(), strict=True))
    ics = []
    for k in range(1, spec.days - 1):
        noon = dt.datetime.combine(START + DAY * k, dt.time(12))
        a, b, c = noon - dt.timedelta(days=1), noon, noon + dt.timedelta(hours=12)
        rows = [(np.log(x[b] / x[a]), np.log(x[c] / x[b])) for x in closes.values()
                if a in x and b in x and c in x]
        if len(rows) < 8:
            continue
        past, future = np.array(rows).T
        ics.append(np.corrcoef(_rank(past), _rank(future))[0, 1])
    ics = np.array(ics)
    return float(ics.mean() / ics.std(ddof=1) * np.sqrt(ics.size))


def _rank(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v)).astype(float)


def test_the_served_data_keep_the_planted_reversal():
    """With a strong effect (0.05 bar sigmas a minute) the served closes show it in every
    seed tried; with none, they do not."""
    strong = dataclasses.replace(SPEC, symbols=24, days=30, xs_effect=0.05)
    for seed in (0, 1):
        spec = dataclasses.replace(strong, seed=seed)
        t = _served_reversal_t(GeneratedUniverseSource(spec, START, other=SyntheticSource()),
                               spec)
        assert t < -3, (seed, t)
    null = dataclasses.replace(strong, xs_effect=0.0)
    t0 = _served_reversal_t(GeneratedUniverseSource(null, START, other=SyntheticSource()), null)
    assert abs(t0) < 3, t0


def _universe(**symbol_fields) -> UniverseSpec:
    return UniverseSpec(
        name="u", start_date=START, base_interval="5m", bar_intervals=("1m", "5m"),
        symbols=(SymbolSpec(symbol="BTCUSDT", markets=("perp", "spot")),
                 SymbolSpec(symbol="NEWUSDT", markets=("perp",), **symbol_fields)),
        generated=SPEC)


def test_the_listing_calendar():
    u = _universe(listed=START + 3 * DAY, delisted=START + 6 * DAY)
    cal = listings(u, "synthetic")
    assert [x.symbol for x in cal][:2] == ["BTCUSDT", "NEWUSDT"]
    assert cal[1] == Listing("NEWUSDT", ("perp",), START + 3 * DAY, START + 6 * DAY)
    assert [x.symbol for x in listings(u, "binance")] == ["BTCUSDT", "NEWUSDT"]  # none made
    # listed by a day: a delisted symbol stays listed (its history is kept)
    assert "NEWUSDT" not in listed_by(cal, START + 2 * DAY)
    assert "NEWUSDT" in listed_by(cal, START + 3 * DAY)
    assert "NEWUSDT" in listed_by(cal, START + 30 * DAY)
    # the keys a run asks for: only days each symbol trades
    keys = trading_keys(cal, START, START + 9 * DAY, ["NEWUSDT", "BTCUSDT"])
    assert sorted(d for d, s in keys if s == "NEWUSDT") == [START + k * DAY for k in range(3, 7)]
    assert len([1 for _, s in keys if s == "BTCUSDT"]) == 10
    spans = generated_spans(SPEC, START)
    for x in cal[2:]:
        assert (x.first_day, x.last_day) == spans[x.symbol]


def test_a_symbol_cannot_delist_before_it_lists():
    with pytest.raises(ValueError, match="delisted"):
        SymbolSpec(symbol="NEWUSDT", markets=("perp",), listed=START + DAY,
                   delisted=START).validate()
    with pytest.raises(ValueError, match=r"generated\.symbols"):
        GeneratedSymbolsSpec(symbols=0).validate()


def test_what_each_symbol_offers():
    u = _universe()
    assert u.offers("BTCUSDT", "spot", "klines") and u.offers("BTCUSDT", "perp", "open_interest")
    assert u.offers("NEWUSDT", "perp", "funding") and not u.offers("NEWUSDT", "spot", "klines")
    name = SPEC.names[0]
    assert u.offers(name, "perp", "klines") and u.offers(name, "perp", "funding")
    assert not u.offers(name, "perp", "open_interest")  # the generator draws none
    assert not u.offers(name, "spot", "klines")
    with pytest.raises(KeyError):
        u.offers("NOPEUSDT", "perp", "klines")
