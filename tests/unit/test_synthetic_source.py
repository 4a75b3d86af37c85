"""The synthetic market: determinism, continuity, schemas and the stylized facts it promises."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import numpy as np
import polars as pl
import pytest

from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA
from backtest_assets.core.keys import InvalidKeyError
from backtest_assets.sources.base import SourceBatch
from backtest_assets.sources.synthetic import SyntheticSource

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
START = dt.date(2024, 1, 1)
DAYS = [START + dt.timedelta(days=k) for k in range(60)]
DAY = dt.date(2024, 3, 5)


def _batches(source: SyntheticSource, symbol: str, day: dt.date) -> list[SourceBatch]:
    return [
        source.klines_1m("perp", symbol, day),
        source.klines_1m("spot", symbol, day),
        source.funding_rates(symbol, day),
        source.open_interest(symbol, day),
    ]


@pytest.fixture(scope="module")
def sample() -> dict[str, dict[str, pl.DataFrame]]:
    """60 days of every dataset for three symbols, concatenated per symbol."""
    source = SyntheticSource(seed=7)
    out: dict[str, dict[str, pl.DataFrame]] = {}
    for symbol in SYMBOLS:
        per_day = [_batches(source, symbol, day) for day in DAYS]
        out[symbol] = {
            name: pl.concat([batches[k].frame for batches in per_day])
            for k, name in enumerate(("perp", "spot", "funding", "oi"))
        }
    return out


def _autocorr(x: np.ndarray, lag: int) -> float:
    return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])


def _log_returns(klines: pl.DataFrame) -> np.ndarray:
    return np.log(klines["close"].to_numpy() / klines["open"].to_numpy())


# --- determinism -----------------------------------------------------------------------------


def test_two_instances_give_identical_batches() -> None:
    first = _batches(SyntheticSource(seed=7), "BTCUSDT", DAY)
    second = _batches(SyntheticSource(seed=7), "BTCUSDT", DAY)
    for a, b in zip(first, second, strict=True):
        assert a.frame.equals(b.frame)
        assert a.files == b.files


def test_a_day_does_not_depend_on_what_was_generated_before() -> None:
    alone = _batches(SyntheticSource(seed=7), "ETHUSDT", DAY)

    busy = SyntheticSource(seed=7)
    for k in range(30, 0, -1):  # neighbours first, newest first, other symbols in between
        other = DAY + dt.timedelta(days=k if k % 2 else -k)
        busy.klines_1m("spot", "ETHUSDT", other)
        busy.open_interest(SYMBOLS[k % 3], other)
    after = _batches(busy, "ETHUSDT", DAY)

    for a, b in zip(alone, after, strict=True):
        assert a.frame.equals(b.frame)
        assert a.files[0].sha256 == b.files[0].sha256


def test_pinned_values_do_not_depend_on_the_process() -> None:
    """Pinned numbers: fails if generation uses salted hash() or the model changes silently."""
    perp, spot, funding, oi = _batches(SyntheticSource(seed=7), "BTCUSDT", DAY)
    assert perp.frame["close"][-1] == pytest.approx(44095.22260101296, rel=1e-9)
    assert perp.frame["volume"].sum() == pytest.approx(460476.0138717963, rel=1e-9)
    assert spot.frame["close"][-1] == pytest.approx(44085.88230355824, rel=1e-9)
    assert oi.frame["open_interest"][0] == pytest.approx(77071.00492643028, rel=1e-9)
    assert funding.frame["funding_rate"].to_list() == pytest.approx(
        [0.0003426193853614677, 0.0006579828499729578, 0.0004663737039158207], rel=1e-9
    )


def test_different_seeds_give_different_markets() -> None:
    a = SyntheticSource(seed=7).klines_1m("perp", "BTCUSDT", DAY).frame
    b = SyntheticSource(seed=8).klines_1m("perp", "BTCUSDT", DAY).frame
    assert not np.allclose(a["close"].to_numpy(), b["close"].to_numpy())
    assert not np.allclose(a["volume"].to_numpy(), b["volume"].to_numpy())


def test_symbols_have_their_own_price_scale() -> None:
    source = SyntheticSource(seed=7)
    btc = source.klines_1m("perp", "BTCUSDT", START).frame["open"][0]
    eth = source.klines_1m("perp", "ETHUSDT", START).frame["open"][0]
    sol = source.klines_1m("perp", "SOLUSDT", START).frame["open"][0]
    assert (btc, eth, sol) == pytest.approx((40_000.0, 2_300.0, 100.0))
    other = source.klines_1m("perp", "DOGEUSDT", START).frame
    assert other["open"][0] not in (btc, eth, sol)
    assert other["close"].min() > 0


# --- records, range and inputs ---------------------------------------------------------------


def test_raw_file_record_hashes_the_arrow_ipc_bytes() -> None:
    source = SyntheticSource(seed=7)
    urls = [
        "synthetic://seed=7/perp/klines_1m/BTCUSDT/2024-03-05",
        "synthetic://seed=7/spot/klines_1m/BTCUSDT/2024-03-05",
        "synthetic://seed=7/perp/funding_rates/BTCUSDT/2024-03-05",
        "synthetic://seed=7/perp/open_interest/BTCUSDT/2024-03-05",
    ]
    for batch, url in zip(_batches(source, "BTCUSDT", DAY), urls, strict=True):
        buffer = io.BytesIO()
        batch.frame.write_ipc(buffer, compression="uncompressed")
        data = buffer.getvalue()
        (record,) = batch.files
        assert record.url == url
        assert record.status == "generated"
        assert record.path is None
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        assert record.size == len(data)
        assert not batch.missing
        assert batch.quarantine == []


@pytest.mark.parametrize("day", [dt.date(2016, 12, 31), dt.date(2017, 1, 1), dt.date(2041, 1, 1)])
def test_days_outside_the_generated_range_are_missing(day: dt.date) -> None:
    source = SyntheticSource(seed=7)
    for batch, schema in zip(
        _batches(source, "BTCUSDT", day),
        (KLINE_SCHEMA, KLINE_SCHEMA, FUNDING_SCHEMA, OPEN_INTEREST_SCHEMA),
        strict=True,
    ):
        assert batch.missing
        assert batch.frame.is_empty()
        assert batch.frame.schema == pl.Schema(schema)
        assert batch.files[0].status == "missing"


def test_first_and_last_served_days_are_generated() -> None:
    source = SyntheticSource(seed=7)
    for day in (dt.date(2017, 1, 2), dt.date(2040, 12, 31)):
        assert not any(batch.missing for batch in _batches(source, "BTCUSDT", day))


def test_inputs_are_validated() -> None:
    source = SyntheticSource(seed=7)
    with pytest.raises(InvalidKeyError):
        source.klines_1m("perp", "btc/../usdt", DAY)
    with pytest.raises(InvalidKeyError):
        source.funding_rates("BTCUSDT", "2024-3-5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="market"):
        source.klines_1m("futures", "BTCUSDT", DAY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        SyntheticSource(seed=-1)
    as_text = source.open_interest("BTCUSDT", "2024-03-05")  # type: ignore[arg-type]
    assert as_text.frame.equals(source.open_interest("BTCUSDT", DAY).frame)


# --- layout ----------------------------------------------------------------------------------


def test_frames_have_the_canonical_layout_and_stamps() -> None:
    perp, spot, funding, oi = _batches(SyntheticSource(seed=7), "SOLUSDT", DAY)
    midnight = dt.datetime(2024, 3, 5)
    for klines in (perp.frame, spot.frame):
        assert klines.schema == pl.Schema(KLINE_SCHEMA)
        assert klines.height == 1440
        assert klines["ts_open"].to_list() == [
            midnight + dt.timedelta(minutes=k) for k in range(1440)
        ]
    assert funding.frame.schema == pl.Schema(FUNDING_SCHEMA)
    assert funding.frame["ts"].to_list() == [midnight + dt.timedelta(hours=h) for h in (0, 8, 16)]
    assert funding.frame["funding_interval_hours"].to_list() == [8, 8, 8]
    assert oi.frame.schema == pl.Schema(OPEN_INTEREST_SCHEMA)
    assert oi.frame["ts"].to_list() == [midnight + dt.timedelta(minutes=5 * k) for k in range(288)]
    for frame in (perp.frame, spot.frame, funding.frame, oi.frame):
        assert frame.null_count().sum_horizontal().item() == 0
        assert frame["symbol"].unique().to_list() == ["SOLUSDT"]


def test_mark_price_and_oi_value_use_the_perp_price_at_the_stamp() -> None:
    perp, _, funding, oi = _batches(SyntheticSource(seed=7), "BTCUSDT", DAY)
    opens = perp.frame["open"].to_numpy()
    np.testing.assert_allclose(funding.frame["mark_price"].to_numpy(), opens[[0, 480, 960]])
    np.testing.assert_allclose(
        oi.frame["open_interest_value"].to_numpy(),
        oi.frame["open_interest"].to_numpy() * opens[::5],
    )


# --- bar sanity and continuity ---------------------------------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_bars_are_sane(sample: dict[str, dict[str, pl.DataFrame]], symbol: str) -> None:
    for market in ("perp", "spot"):
        k = sample[symbol][market]
        o, h, lo, c = (k[name].to_numpy() for name in ("open", "high", "low", "close"))
        volume, taker = k["volume"].to_numpy(), k["taker_buy_volume"].to_numpy()
        assert (h >= np.maximum(o, c)).all()
        assert (lo <= np.minimum(o, c)).all()
        assert (h > lo).all()
        assert (lo > 0).all()
        assert (volume > 0).all()
        assert (taker >= 0).all()
        assert (taker <= volume).all()
        assert (k["taker_buy_quote_volume"] <= k["quote_volume"]).all()
        assert (k["trade_count"] >= 1).all()
        assert k["ts_open"].diff().drop_nulls().eq(dt.timedelta(minutes=1)).all()
        # quote volume is volume times a price inside the bar
        price = k["quote_volume"].to_numpy() / volume
        assert ((price >= lo * (1 - 1e-12)) & (price <= h * (1 + 1e-12))).all()
    oi = sample[symbol]["oi"]
    assert oi["ts"].diff().drop_nulls().eq(dt.timedelta(minutes=5)).all()
    ratios = oi.select(
        "toptrader_ls_ratio_count", "toptrader_ls_ratio_sum", "ls_ratio_count", "taker_ls_vol_ratio"
    ).to_numpy()
    assert (oi["open_interest"] > 0).all()
    assert (ratios > 0).all()
    assert np.isfinite(ratios).all()
    assert ((np.median(ratios, axis=0) > 0.8) & (np.median(ratios, axis=0) < 2.5)).all()


@pytest.mark.parametrize("symbol", SYMBOLS)
@pytest.mark.parametrize("market", ["perp", "spot"])
def test_prices_are_continuous_across_midnight(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str, market: str
) -> None:
    k = sample[symbol][market]
    first_open = k["open"].to_numpy()[1440::1440]
    last_close = k["close"].to_numpy()[1439:-1:1440]
    assert first_open.size == len(DAYS) - 1
    assert np.abs(np.log(first_open / last_close)).max() < 5e-4


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_open_interest_and_basis_have_no_midnight_gap(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str
) -> None:
    log_oi = np.log(sample[symbol]["oi"]["open_interest"].to_numpy())
    steps = np.diff(log_oi)
    at_midnight = steps[287::288]
    assert np.abs(at_midnight).mean() < 2 * np.abs(steps).mean()

    basis = np.log(sample[symbol]["perp"]["open"] / sample[symbol]["spot"]["open"]).to_numpy()
    basis_steps = np.diff(basis)
    assert np.abs(basis_steps[1439::1440]).mean() < 2 * np.abs(basis_steps).mean()


# --- stylized facts --------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_returns_have_fat_tails_and_volatility_clustering(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str
) -> None:
    r = _log_returns(sample[symbol]["perp"])
    z = (r - r.mean()) / r.std()
    assert np.mean(z**4) - 3 > 1
    assert _autocorr(np.abs(r), 1) > 0.05
    assert _autocorr(np.abs(r), 30) > 0.05
    assert abs(_autocorr(r, 1)) < 0.05


def test_volatility_and_volume_peak_in_the_us_session(
    sample: dict[str, dict[str, pl.DataFrame]],
) -> None:
    perp = sample["BTCUSDT"]["perp"].with_columns(
        hour=pl.col("ts_open").dt.hour(), abs_r=(pl.col("close") / pl.col("open")).log().abs()
    )
    us = perp.filter(pl.col("hour").is_between(13, 16))
    asia_night = perp.filter(pl.col("hour").is_between(1, 4))
    assert us["abs_r"].mean() > 1.2 * asia_night["abs_r"].mean()
    assert us["volume"].mean() > 1.2 * asia_night["volume"].mean()


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_volume_and_order_flow_carry_information(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str
) -> None:
    for market in ("perp", "spot"):
        k = sample[symbol][market]
        r = _log_returns(k)
        volume = k["volume"].to_numpy()
        assert np.corrcoef(np.log(volume), np.abs(r))[0, 1] > 0.2
        share = k["taker_buy_volume"].to_numpy() / volume
        assert share[r > 0].mean() > 0.53
        assert share[r < 0].mean() < 0.47
    assert sample[symbol]["spot"]["volume"].sum() < 0.7 * sample[symbol]["perp"]["volume"].sum()


def test_basis_is_a_few_bps_around_a_small_premium(
    sample: dict[str, dict[str, pl.DataFrame]],
) -> None:
    basis_bp = 1e4 * np.concatenate(
        [
            np.log(sample[s]["perp"]["close"] / sample[s]["spot"]["close"]).to_numpy()
            for s in SYMBOLS
        ]
    )
    assert 0 <= basis_bp.mean() <= 5
    assert 1 <= basis_bp.std() <= 15
    assert np.abs(basis_bp).max() > 10  # dislocations happen
    assert _autocorr(basis_bp, 1) > 0.8  # and revert slowly, not from minute to minute


def test_funding_sits_at_the_baseline_with_persistent_excursions(
    sample: dict[str, dict[str, pl.DataFrame]],
) -> None:
    rates = [sample[s]["funding"]["funding_rate"].to_numpy() for s in SYMBOLS]
    pooled = np.concatenate(rates)
    away = pooled != 1e-4
    assert np.median(pooled) == 1e-4
    assert 0.02 < away.mean() < 0.5
    assert np.abs(pooled).max() <= 0.0075
    # excursions come in runs: a rate away from the baseline is usually followed by another
    away_runs = np.concatenate([(r[:-1] != 1e-4) & (r[1:] != 1e-4) for r in rates])
    assert away_runs.sum() > 0.5 * np.concatenate([r[:-1] != 1e-4 for r in rates]).sum()


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_funding_follows_the_premium_known_before_the_fixing(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str
) -> None:
    """Each rate is Binance's rule applied to the mean basis of the 8 h before it."""
    basis = np.log(sample[symbol]["perp"]["open"] / sample[symbol]["spot"]["open"]).to_numpy()
    premium = basis.reshape(-1, 480).mean(axis=1)[:-1]  # windows ending at 08:00, 16:00, ...
    excess = premium - 1e-4
    expected = 1e-4 + np.sign(excess) * np.maximum(np.abs(excess) - 5e-4, 0)
    rates = sample[symbol]["funding"]["funding_rate"].to_numpy()[1:]
    np.testing.assert_allclose(rates, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_open_interest_flushes_coincide_with_large_moves(
    sample: dict[str, dict[str, pl.DataFrame]], symbol: str
) -> None:
    oi_steps = np.diff(np.log(sample[symbol]["oi"]["open_interest"].to_numpy()))
    perp = sample[symbol]["perp"]
    log_close = np.log(perp["close"].to_numpy())
    log_open = np.log(perp["open"].to_numpy())
    move = np.abs(log_close[4::5] - log_open[::5])[: oi_steps.size]  # the 5 min of each step
    largest_drops = np.argsort(oi_steps)[:20]
    assert oi_steps[largest_drops].max() < -0.01  # sharp: over 1 % in 5 minutes
    assert (move[largest_drops] > np.median(move)).all()
    assert move[largest_drops].mean() > 3 * move.mean()
