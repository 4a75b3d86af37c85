"""The point-in-time liquid universe: ADV by hand on literal bars, listings enter when their
window fills, delistings stay in earlier snapshots, gaps, ties by name, a 5-minute panel under
a 15-minute rule, and no look-ahead on a random heavy-tailed panel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
import pytest

from backtest_assets.alpha.panel import FIELDS, UniversePanel
from backtest_assets.alpha.universe import (
    UniverseRule,
    snapshot_frame,
    snapshots,
)

NAN = np.nan
T0 = np.datetime64("2024-03-01T00:00", "us")
# 4 bars of 15 minutes: a one-hour window, so ADV = window sum * 24.
HOURLY = UniverseRule(name="hourly", adv_bars=4, adv_interval_minutes=15, min_adv_usd=2500)


def volume_panel(qv: Sequence[Sequence[float]], symbols: Sequence[str],
                 interval: int = 15) -> UniversePanel:
    """A panel whose bars exist where ``qv`` is given (NaN = no bar)."""
    qv = np.array(qv, float)
    t = np.arange(qv.shape[0]) * np.timedelta64(interval, "m")
    close = np.where(np.isfinite(qv), 100.0, NAN)
    return UniversePanel(T0 + t, tuple(symbols), interval, close, close, close, close, qv,
                         qv / 2, np.full(qv.shape, NAN))


# bar:   AAA   BBB   CCC            ADV (x 24)              members (min 2500)
SCENARIO = [
    [10, 30, NAN],  # 0             -     -     -
    [20, 30, NAN],  # 1             -     -     -
    [30, 30, 50],   # 2 CCC lists   -     -     -
    [40, 30, 50],   # 3          2400  2880     -            BBB
    [50, 30, 50],   # 4          3360  2880     -            AAA BBB
    [60, NAN, 50],  # 5 BBB gone 4320     -  4800            AAA CCC
    [70, NAN, 50],  # 6          5280     -  4800            AAA CCC
]
SCENARIO_ADV = [
    [NAN, NAN, NAN],
    [NAN, NAN, NAN],
    [NAN, NAN, NAN],
    [2400, 2880, NAN],
    [3360, 2880, NAN],
    [4320, NAN, 4800],
    [5280, NAN, 4800],
]


def test_adv_is_the_window_volume_per_day_and_members_clear_the_minimum():
    panel = volume_panel(SCENARIO, ["AAA", "BBB", "CCC"])
    adv, member = snapshots(panel, HOURLY)
    np.testing.assert_array_equal(adv, SCENARIO_ADV)
    assert adv.dtype == np.float64 and member.dtype == bool
    np.testing.assert_array_equal(member, [
        [0, 0, 0], [0, 0, 0], [0, 0, 0],
        [0, 1, 0],  # AAA 2400 < 2500
        [1, 1, 0],
        [1, 0, 1],  # BBB delisted at 5: out from its first missing bar, in before
        [1, 0, 1],  # CCC listed at 2: in at 2 + 4 - 1 = 5, when its window is full
    ])


def test_top_n_keeps_the_largest_adv_at_each_bar():
    panel = volume_panel(SCENARIO, ["AAA", "BBB", "CCC"])
    _, member = snapshots(panel, HOURLY, top_n=1)
    np.testing.assert_array_equal(member[3:], [
        [0, 1, 0],  # only BBB eligible
        [1, 0, 0],  # AAA 3360 > BBB 2880
        [0, 0, 1],  # CCC 4800 > AAA 4320
        [1, 0, 0],  # AAA 5280 > CCC 4800
    ])


def test_a_gap_keeps_a_symbol_out_until_its_window_no_longer_holds_it():
    qv = np.full((14, 2), 1000.0)
    qv[6, 0] = NAN  # a volume gap in AAA at bar 6; BBB trades throughout
    adv, member = snapshots(volume_panel(qv, ["AAA", "BBB"]), HOURLY)
    np.testing.assert_array_equal(np.isnan(adv[:, 0]),
                                  [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(member[:, 0], ~np.isnan(adv[:, 0]))
    assert adv[10, 0] == 4000 * 24
    np.testing.assert_array_equal(member[3:, 1], True)


def test_equal_adv_is_ranked_by_symbol_name_whatever_the_history_before_the_window():
    # Columns out of name order; every window from bar 4 sums to 10 except DDD's. The bars
    # before the window differ (and are not whole in binary), yet the ADVs tie exactly.
    qv = [
        #  CCC  AAA  BBB  DDD
        [0.1, 0.7, 0.3, 50],
        [1.0, 4.0, 2.5, 50],
        [2.0, 3.0, 2.5, 50],
        [3.0, 2.0, 2.5, 50],
        [4.0, 1.0, 2.5, 50],
    ]
    panel = volume_panel(qv, ["CCC", "AAA", "BBB", "DDD"])
    adv, member = snapshots(panel, HOURLY, min_adv_usd=0, top_n=2)
    np.testing.assert_array_equal(adv[4], [240, 240, 240, 4800])
    np.testing.assert_array_equal(member[4], [False, True, False, True])  # DDD, then AAA
    frame = snapshot_frame(panel, HOURLY, min_adv_usd=0, top_n=2).filter(
        pl.col("ts") == panel.ts[4])
    assert frame["symbol"].to_list() == ["AAA", "BBB", "CCC", "DDD"]
    assert frame["rank"].to_list() == [2, 3, 4, 1]


def test_a_5_minute_panel_under_a_15_minute_rule_uses_three_times_the_bars():
    qv = np.arange(1.0, 16.0)[:, None]  # bars 0..14 trade 1..15
    panel = volume_panel(qv, ["AAA"], interval=5)
    assert HOURLY.window_bars(5) == 12 and HOURLY.window_bars(15) == 4
    adv, _ = snapshots(panel, HOURLY, min_adv_usd=0)
    np.testing.assert_array_equal(adv[:11, 0], NAN)
    np.testing.assert_array_equal(adv[11:, 0], [78 * 24, 90 * 24, 102 * 24, 114 * 24])
    # The seed rule (96 x 15 min = one day) on 5-minute bars: 288 bars, the plain sum.
    day = UniverseRule(name="day")
    assert day.window_bars(5) == 288
    adv, _ = snapshots(volume_panel(np.ones((290, 1)), ["AAA"], interval=5), day,
                       min_adv_usd=0)
    np.testing.assert_array_equal(adv[286:, 0], [NAN, 288, 288, 288])


def test_snapshot_frame_lists_every_known_adv_with_eligibility_and_rank():
    panel = volume_panel(SCENARIO, ["AAA", "BBB", "CCC"])
    frame = snapshot_frame(panel, HOURLY)
    assert frame.schema == pl.Schema({
        "ts": pl.Datetime("us"), "symbol": pl.String, "adv_usd": pl.Float64,
        "eligible": pl.Boolean, "member": pl.Boolean, "rank": pl.Int64})
    bar = [int((ts - T0) // np.timedelta64(15, "m")) for ts in frame["ts"].to_numpy()]
    rows = list(zip(bar, *(frame[c].to_list() for c in frame.columns[1:]), strict=True))
    assert rows == [
        (3, "AAA", 2400.0, False, False, None),
        (3, "BBB", 2880.0, True, True, 1),
        (4, "AAA", 3360.0, True, True, 1),
        (4, "BBB", 2880.0, True, True, 2),
        (5, "AAA", 4320.0, True, True, 2),
        (5, "CCC", 4800.0, True, True, 1),
        (6, "AAA", 5280.0, True, True, 1),
        (6, "CCC", 4800.0, True, True, 2),
    ]
    _, member = snapshots(panel, HOURLY)
    assert frame["member"].sum() == member.sum()


def test_plain_parameters_build_the_same_rule():
    panel = volume_panel(SCENARIO, ["AAA", "BBB", "CCC"])
    by_rule = snapshots(panel, HOURLY)
    by_params = snapshots(panel, adv_bars=4, adv_interval_minutes=15, min_adv_usd=2500)
    for a, b in zip(by_rule, by_params, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="adv_days"):
        snapshots(panel, HOURLY, adv_days=1)


@pytest.mark.parametrize(("params", "field"), [
    ({"adv_bars": 0}, "adv_bars"),
    ({"adv_interval_minutes": 2.5}, "adv_interval_minutes"),
    ({"min_adv_usd": -1.0}, "min_adv_usd"),
    ({"min_adv_usd": NAN}, "min_adv_usd"),
    ({"top_n": 0}, "top_n"),
    ({"name": ""}, "name"),
])
def test_a_bad_rule_is_refused_naming_its_field(params, field):
    with pytest.raises(ValueError, match=field):
        UniverseRule(**{"name": "bad", **params})


def test_bad_inputs_are_refused_naming_what_is_wrong():
    with pytest.raises(ValueError, match=r"60 min is not a whole number of the panel's 7-"):
        snapshots(volume_panel(np.ones((20, 1)), ["AAA"], interval=7), HOURLY)
    qv = np.ones((6, 2))
    qv[4, 1] = -5
    with pytest.raises(ValueError, match=r"negative \(-5.0\) for BBB at 2024-03-01T01:00"):
        snapshots(volume_panel(qv, ["AAA", "BBB"]), HOURLY)


# --- point in time on a random panel -------------------------------------------------------

RANDOM_T, RANDOM_S = 900, 8
CUTS = (60, 250, 420, 610, 800)
# 24 x 15 min = 6 hours = 72 bars of the 5-minute random panel.
RANDOM_RULE = UniverseRule(name="random", adv_bars=24, adv_interval_minutes=15,
                           min_adv_usd=3e6, top_n=3)


def random_panel(seed: int, t: int = RANDOM_T, s: int = RANDOM_S) -> UniversePanel:
    """5-minute bars with Student-t returns and volumes, funding prints every 8 hours,
    listings and delistings (NaN blocks), whole-bar gaps, volume-only gaps, a flat stretch
    and prices on a tick (ties)."""
    rng = np.random.default_rng(seed)
    close = 50 * rng.lognormal(0, 1, s) * np.exp(np.cumsum(0.004 * rng.standard_t(3, (t, s)),
                                                           axis=0))
    close[300:380, 1] = close[300, 1]  # flat: zero returns, a constant window
    close = np.round(close, 2)
    open_ = np.round(close * np.exp(0.002 * rng.standard_t(3, (t, s))), 2)
    wick = np.abs(0.002 * rng.standard_t(3, (t, s)))
    high, low = np.maximum(open_, close) * (1 + wick), np.minimum(open_, close) * (1 - wick)
    qv = rng.lognormal(np.log(2e4), 1.5, (t, s)) * rng.lognormal(0, 1, s)
    taker = qv * rng.uniform(0, 1, (t, s))
    prints = 1e-4 * rng.standard_t(3, (t // 96 + 1, s))
    funding = prints[np.arange(t) // 96]
    funding[: rng.integers(0, 200)] = NAN
    fields = [open_, high, low, close, qv, taker, funding]
    bars = np.ones((t, s), dtype=bool)
    listed = rng.integers(0, t // 3, s)
    listed[0] = 0
    delisted = rng.integers(2 * t // 3, t + 1, s)
    delisted[:2] = t
    for j in range(s):
        bars[:listed[j], j] = bars[delisted[j]:, j] = False
    bars &= rng.random((t, s)) > 0.003  # whole-bar gaps
    for f in fields:
        f[~bars] = NAN
    volume_gap = rng.random((t, s)) < 0.005
    qv[volume_gap] = taker[volume_gap] = NAN
    ts = np.datetime64("2024-01-01T00:00", "us") + np.arange(t) * np.timedelta64(5, "m")
    return UniversePanel(ts, tuple(f"S{j:02d}USDT" for j in range(s)), 5, *fields)


def splice(panel: UniversePanel, other: UniversePanel, t: int) -> UniversePanel:
    """``panel``'s bars ``<= t`` followed by ``other``'s bars after t (every field)."""
    return UniversePanel(panel.ts, panel.symbols, panel.interval_minutes,
                         *(np.concatenate([getattr(panel, f)[:t + 1],
                                           getattr(other, f)[t + 1:]]) for f in FIELDS))


def assert_point_in_time(fn: Callable[[UniversePanel], np.ndarray], panel: UniversePanel,
                         other: UniversePanel, cuts: Sequence[int] = CUTS) -> None:
    """``fn``'s values at bars ``<= t`` are bit-identical when every bar after t is replaced
    by ``other``'s or dropped, for each cut t; and replacing the future changes something."""
    full = np.asarray(fn(panel), float)
    changed = False
    for t in cuts:
        spliced = np.asarray(fn(splice(panel, other, t)), float)
        np.testing.assert_array_equal(spliced[:t + 1], full[:t + 1], err_msg=f"spliced at {t}")
        np.testing.assert_array_equal(np.asarray(fn(panel.rows(0, t + 1)), float),
                                      full[:t + 1], err_msg=f"truncated at {t}")
        changed |= not np.array_equal(spliced, full, equal_nan=True)
    assert changed, "replacing the bars after the cuts changed nothing: the check is vacuous"
    assert np.isfinite(full[:max(cuts) + 1]).any(), "no value before the last cut"


@pytest.fixture(scope="module")
def panels() -> tuple[UniversePanel, UniversePanel]:
    return random_panel(7), random_panel(8)


def frame_as_array(panel: UniversePanel) -> np.ndarray:
    """The snapshot frame back on the (T, S) grid: rank, 0 = known ADV but not eligible."""
    frame = snapshot_frame(panel, RANDOM_RULE)
    out = np.full((len(panel.ts), len(panel.symbols)), NAN)
    bar = (frame["ts"].to_numpy() - panel.ts[0]) // np.timedelta64(5, "m")
    col = np.searchsorted(np.array(panel.symbols), frame["symbol"].to_numpy())
    out[bar.astype(int), col] = frame["rank"].fill_null(0).to_numpy()
    return out


@pytest.mark.parametrize("what", ["adv", "member", "frame"])
def test_snapshots_are_point_in_time(panels, what):
    fn = {"adv": lambda p: snapshots(p, RANDOM_RULE)[0],
          "member": lambda p: snapshots(p, RANDOM_RULE)[1],
          "frame": frame_as_array}[what]
    assert_point_in_time(fn, *panels)


def test_the_random_universe_is_not_trivial(panels):
    adv, member = snapshots(panels[0], RANDOM_RULE)
    eligible = np.isfinite(adv) & (adv >= RANDOM_RULE.min_adv_usd)
    assert member.sum(axis=1).max() == 3  # top_n binds
    assert (eligible & ~member).any() and (np.isfinite(adv) & ~eligible).any()
    assert member.any(axis=0).sum() >= 5  # membership rotates


def test_the_point_in_time_check_catches_a_look_ahead(panels):
    def peeks(p: UniversePanel) -> np.ndarray:  # the next bar's volume
        return np.concatenate([p.quote_volume[1:], np.full((1, p.close.shape[1]), NAN)])

    with pytest.raises(AssertionError):
        assert_point_in_time(peeks, *panels)
