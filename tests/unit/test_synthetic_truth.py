"""Synthetic truth: the generator's planted post-jump drift, seen through the research layers.

The module docstring of :mod:`backtest_assets.sources.synthetic` ("Planted effects") says
which event types should show a continuation effect and which should be null. These tests
measure that the way Phase 2 will: 5m bars, point-in-time features, events by day,
forward-return labels, each signed with its event's direction ("continuation").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest

from backtest_assets.core.bars import bars_1m, resample
from backtest_assets.events.detect import detect_events_by_day
from backtest_assets.features.compute import compute_features
from backtest_assets.features.labels import compute_labels
from backtest_assets.sources import synthetic
from backtest_assets.sources.base import SourceBatch
from backtest_assets.sources.synthetic import SyntheticSource
from backtest_assets.specs.registry import SpecRegistry, load_registry

DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")  # specs/studies/default.yaml
DEMO_START, DEMO_DAYS = dt.date(2024, 1, 1), 31  # 2024-01-01 .. 2024-01-31
HORIZON = "fwd_ret_60m"
PLANTED = "volatility_shock"
ALSO_JUMP_DRIVEN = ("oi_flush", "vol_compression_breakout")
NULLS = ("basis_dislocation", "funding_extreme", "liquidity_vacuum")


@dataclass(frozen=True)
class Truth:
    """Events of every type in a window, each with its signed forward return."""

    events: pl.DataFrame  # EVENT_SCHEMA + the label column + ``signed``
    base_bars: int  # perp base bars in the window, pooled over symbols

    def signed(self, event_type: str) -> np.ndarray:
        rows = self.events.filter(pl.col("event_type") == event_type)
        return rows["signed"].drop_nulls().to_numpy()

    def stats(self, event_type: str) -> tuple[int, float, float]:
        """(n, mean in bps, naive t) of the pooled continuation return."""
        x = self.signed(event_type)
        return x.size, 1e4 * x.mean(), x.mean() / x.std(ddof=1) * np.sqrt(x.size)

    def per_10k(self, event_type: str) -> float:
        n = self.events.filter(pl.col("event_type") == event_type).height
        return 1e4 * n / self.base_bars


def measure_truth(
    source: SyntheticSource,
    symbols: Sequence[str],
    start: dt.date,
    days: int,
    *,
    horizon: str = HORIZON,
    registry: SpecRegistry | None = None,
) -> Truth:
    """Events of ``days`` days from ``start`` with ``direction * horizon`` as ``signed``.

    The data run one day past the window so that its last events have their labels; the
    window has no history before it, so features are null (and events absent) during their
    warm-up at its start, as in the demo.
    """
    reg = registry or load_registry()
    minutes = reg.base_minutes
    dates = [start + dt.timedelta(days=k) for k in range(days + 1)]

    def frames(fetch: Callable[[str, dt.date], SourceBatch]) -> pl.DataFrame:
        return pl.concat([fetch(s, d).frame for s in symbols for d in dates])

    perp = resample(bars_1m(frames(lambda s, d: source.klines_1m("perp", s, d)), "perp"), minutes)
    spot = resample(bars_1m(frames(lambda s, d: source.klines_1m("spot", s, d)), "spot"), minutes)
    features = compute_features(
        perp,
        spot,
        frames(source.funding_rates),
        frames(source.open_interest),
        list(reg.features.values()),
        interval_minutes=minutes,
    )
    labels = compute_labels(perp, reg.label_bars())
    events = detect_events_by_day(
        features, list(reg.events.values()), interval_minutes=minutes, days=dates[:-1]
    )
    joined = events.join(
        labels.select("symbol", "ts_open", horizon),
        left_on=["symbol", "ts"],
        right_on=["symbol", "ts_open"],
        how="left",
    ).with_columns(signed=pl.col("direction").cast(pl.Float64) * pl.col(horizon))
    end = dt.datetime.combine(dates[-1], dt.time())
    base_bars = perp.filter(pl.col("ts_open") < end).height
    return Truth(joined, base_bars)


def _round_trip_bps(reg: SpecRegistry) -> float:
    venue = reg.fees.venues[reg.fees.default_venue]
    return 2 * (venue.taker_bps + venue.slippage_bps) * max(reg.fees.cost_multipliers)


@pytest.fixture(scope="module")
def demo() -> Truth:
    return measure_truth(SyntheticSource(seed=7), DEMO_SYMBOLS, DEMO_START, DEMO_DAYS)


# --- the demo window -------------------------------------------------------------------------


def test_every_event_type_passes_gate_e1(demo: Truth) -> None:
    reg = load_registry()
    bounds = reg.gates.e1.prevalence_per_10k
    for event_type in reg.events:
        assert bounds.min <= demo.per_10k(event_type) <= bounds.max, event_type
    # every event has its label (Gate E-1 join rate)
    assert demo.events[HORIZON].null_count() == 0


def test_volatility_shock_continues_above_costs(demo: Truth) -> None:
    reg = load_registry()
    n, mean_bps, t = demo.stats(PLANTED)
    assert n >= reg.gates.phase2.min_sample
    assert mean_bps > _round_trip_bps(reg)  # 24 bps: round trip at the highest multiplier
    assert t > 3
    weekly = (
        demo.events.filter(pl.col("event_type") == PLANTED)
        .group_by(pl.col("ts").dt.truncate("1w"))
        .agg(pl.col("signed").mean(), pl.len())
        .filter(pl.col("len") >= reg.gates.phase2.stability.min_events_per_slice)
    )
    assert (weekly["signed"] > 0).mean() >= reg.gates.phase2.stability.min_slice_share


def test_other_jump_driven_events_continue(demo: Truth) -> None:
    for event_type in ALSO_JUMP_DRIVEN:
        _, mean_bps, t = demo.stats(event_type)
        assert mean_bps > 0 and t > 2, event_type


@pytest.mark.parametrize("event_type", NULLS)
def test_events_the_jumps_do_not_drive_stay_null(demo: Truth, event_type: str) -> None:
    n, _, t = demo.stats(event_type)
    assert n >= 5
    assert abs(t) < 2.5


# --- the mechanism in the generator ----------------------------------------------------------


def test_drift_follows_the_jump_and_stops_at_midnight() -> None:
    jump = np.zeros(1440)
    jump[[100, 1420]] = [0.01, -0.02]
    drift = synthetic._after_jumps(jump)
    kappa, h = synthetic._JUMP_DRIFT_KAPPA, synthetic._DRIFT_MINUTES
    assert drift[:101].sum() == 0
    assert drift[101 : 101 + h].sum() == pytest.approx(kappa * 0.01)
    assert drift[101 + h : 1421].sum() == 0
    assert drift[1421:].sum() == pytest.approx(-kappa * 0.02 * 19 / h)  # truncated at midnight
    reach = synthetic._drift_reach(jump)
    assert reach[100] == 1 and reach[1420] == pytest.approx(19 / h)
    assert reach[jump == 0].sum() == 0


def test_post_jump_drift_survives_the_bridge_in_perp_and_spot() -> None:
    """Over the hour after a jump, perp and spot move ~κ times the jump minute's return."""
    source = SyntheticSource(seed=7)
    h = synthetic._DRIFT_MINUTES
    jump_ret, perp_move, spot_move = [], [], []
    for symbol in DEMO_SYMBOLS:
        for k in range(91):  # 2024 Q1
            day = DEMO_START + dt.timedelta(days=k)
            index = (day - synthetic._EPOCH).days
            minutes = np.flatnonzero(synthetic._draw_shocks(7, symbol, index).jump)
            minutes = minutes[minutes + 1 + h <= 1439]  # the whole hour within the day
            perp = np.log(source.klines_1m("perp", symbol, day).frame["open"].to_numpy())
            spot = np.log(source.klines_1m("spot", symbol, day).frame["open"].to_numpy())
            jump_ret.extend(perp[minutes + 1] - perp[minutes])
            perp_move.extend(perp[minutes + 1 + h] - perp[minutes + 1])
            spot_move.extend(spot[minutes + 1 + h] - spot[minutes + 1])
    x, perp_y, spot_y = np.array(jump_ret), np.array(perp_move), np.array(spot_move)
    assert x.size > 500
    slope = np.cov(perp_y, x)[0, 1] / x.var(ddof=1)
    assert slope == pytest.approx(synthetic._JUMP_DRIFT_KAPPA, abs=0.2)
    # the basis does not absorb the drift: spot moves with the perp
    assert np.mean(np.sign(x) * spot_y) == pytest.approx(np.mean(np.sign(x) * perp_y), rel=0.05)
    assert np.abs(perp_y - spot_y).mean() < 0.001  # 10 bp: the basis' own noise


# --- a whole year (slow) ---------------------------------------------------------------------


@pytest.mark.slow
def test_truth_table_over_a_year() -> None:
    year = measure_truth(SyntheticSource(seed=7), DEMO_SYMBOLS, DEMO_START, 366)
    for event_type in (PLANTED, *ALSO_JUMP_DRIVEN):
        _, mean_bps, t = year.stats(event_type)
        assert mean_bps > 50 and t > 8, event_type
    for event_type in NULLS:
        _, mean_bps, t = year.stats(event_type)
        assert abs(mean_bps) < 15 and abs(t) < 2.5, event_type


def test_the_planted_effect_can_be_switched_off_after_a_day() -> None:
    """``effect_until``: days up to it equal the default source's; after it the post-jump
    drift is gone (the next hour's move no longer follows the jump) while every draw and
    each day's close stay the default's."""
    until = DEMO_START + dt.timedelta(days=4)
    on, off = SyntheticSource(seed=7), SyntheticSource(seed=7, effect_until=until)
    h = synthetic._DRIFT_MINUTES
    moves = {"on": ([], []), "off": ([], [])}
    for k in range(40):
        day = DEMO_START + dt.timedelta(days=k)
        a, b = (s.klines_1m("perp", "BTCUSDT", day).frame for s in (on, off))
        if day <= until:
            assert a.equals(b)
            continue
        assert a["close"][-1] == pytest.approx(b["close"][-1], rel=1e-12)  # the day's anchor
        index = (day - synthetic._EPOCH).days
        minutes = np.flatnonzero(synthetic._draw_shocks(7, "BTCUSDT", index).jump)
        minutes = minutes[minutes + 1 + h <= 1439]
        for name, frame in (("on", a), ("off", b)):
            p = np.log(frame["open"].to_numpy())
            moves[name][0].extend(p[minutes + 1] - p[minutes])
            moves[name][1].extend(p[minutes + 1 + h] - p[minutes + 1])
    slope = {k: np.polyfit(np.array(j), np.array(m), 1)[0] for k, (j, m) in moves.items()}
    assert slope["on"] > 0.6 and abs(slope["off"]) < 0.3, slope
