"""Event detection: literal feature rows with the expected events written beside them."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from backtest_assets.events import EVENT_SCHEMA, detect_events, detect_events_by_day
from backtest_assets.specs import load_registry
from backtest_assets.specs.models import Condition, Direction, EventSpec

D1 = dt.datetime(2024, 3, 1)
D2 = D1 + dt.timedelta(days=1)
D3 = D2 + dt.timedelta(days=1)
NAN = float("nan")
IV = 5  # base interval, minutes


def at(hhmm: str, day: dt.datetime = D1) -> dt.datetime:
    h, m = hhmm.split(":")
    return day + dt.timedelta(hours=int(h), minutes=int(m))


def frame(cols: str, rows: list[tuple]) -> pl.DataFrame:
    """Feature rows ``(symbol, ts_open, *values)``; ``cols`` names the values. A bar that is
    not listed is missing."""
    names = cols.split()
    return pl.DataFrame(
        [{"symbol": r[0], "ts_open": r[1], "ts_close": r[1] + dt.timedelta(minutes=IV),
          **dict(zip(names, r[2:], strict=True))} for r in rows],
        schema={"symbol": pl.String, "ts_open": pl.Datetime("us"),
                "ts_close": pl.Datetime("us"), **dict.fromkeys(names, pl.Float64)},
    )


def spec(*conditions: tuple, detector: str = "all_of", cooldown: int = 1, name: str = "ev",
         sign_of: str | None = None, fixed: int = 1, severity: str = "x") -> EventSpec:
    """conditions: (feature, op, threshold) or (feature, op, threshold, lag); the direction
    is the sign of ``sign_of`` when given, else ``fixed``."""
    s = EventSpec(
        name=name, detector=detector,
        conditions=tuple(Condition(feature=c[0], op=c[1], threshold=c[2],
                                   lag=c[3] if len(c) > 3 else 0) for c in conditions),
        direction=Direction(sign_of=sign_of) if sign_of else Direction(fixed=fixed),
        severity_of=severity, cooldown_bars=cooldown)
    s.validate()
    return s


def fired(events: pl.DataFrame) -> list[str]:
    """Each event as "HH:MM" on BTCUSDT, else as "ETH mm-dd HH:MM"."""
    return [f"{r['symbol'][:3]} {r['ts']:%m-%d %H:%M}" if r["symbol"] != "BTCUSDT"
            else f"{r['ts']:%H:%M}" for r in events.iter_rows(named=True)]


def detect(features: pl.DataFrame, *specs: EventSpec, **kw) -> pl.DataFrame:
    out = detect_events(features, list(specs), interval_minutes=IV, **kw)
    assert list(out.schema.items()) == list(EVENT_SCHEMA.items())
    return out


# Bars 10 minutes apart so that a cooldown of one bar never hides the next row.
THRESHOLDS = frame("x", [
    # symbol     ts_open       x
    ("BTCUSDT", at("00:00"), 3.0),    # exactly at +3: strict, no gt / abs_gt
    ("BTCUSDT", at("00:10"), 3.1),    # gt, abs_gt
    ("BTCUSDT", at("00:20"), -3.0),   # exactly at -3: no lt / abs_gt
    ("BTCUSDT", at("00:30"), -3.1),   # lt, abs_gt
    ("BTCUSDT", at("00:40"), 0.5),    # abs_lt 1
    ("BTCUSDT", at("00:50"), -1.0),   # exactly |1|: no abs_lt
    ("BTCUSDT", at("01:00"), 0.0),    # abs_lt 1
    ("BTCUSDT", at("01:10"), None),   # null never satisfies anything
    ("BTCUSDT", at("01:20"), NAN),    # NaN neither (polars would order it above 3)
])


@pytest.mark.parametrize(("op", "threshold", "expected"), [
    ("gt", 3.0, ["00:10"]),
    ("lt", -3.0, ["00:30"]),
    ("abs_gt", 3.0, ["00:10", "00:30"]),
    ("abs_lt", 1.0, ["00:40", "01:00"]),
])
def test_threshold_ops_are_strict_and_never_fire_on_null(op, threshold, expected):
    assert fired(detect(THRESHOLDS, spec(("x", op, threshold)))) == expected


TWO_FEATURES = frame("x y", [
    # symbol     ts_open       x     y       all_of  any_of
    ("BTCUSDT", at("00:00"), 2.0, 2.0),    # fire    fire
    ("BTCUSDT", at("00:10"), 2.0, 0.0),    # -       fire
    ("BTCUSDT", at("00:20"), 0.0, 2.0),    # -       fire
    ("BTCUSDT", at("00:30"), 0.0, 0.0),    # -       -
    ("BTCUSDT", at("00:40"), 2.0, None),   # -       fire (the null condition just fails)
    ("BTCUSDT", at("00:50"), None, None),  # -       -
])


@pytest.mark.parametrize(("detector", "expected"), [
    ("all_of", ["00:00"]),
    ("any_of", ["00:00", "00:10", "00:20", "00:40"]),
])
def test_all_of_needs_every_condition_any_of_one(detector, expected):
    s = spec(("x", "gt", 1.0), ("y", "gt", 1.0), detector=detector)
    assert fired(detect(TWO_FEATURES, s)) == expected


LAGGED = frame("x y", [
    # symbol     ts_open       x     y      x one bar (5 min) earlier, by time
    ("BTCUSDT", at("00:00"), -1.0, 2.0),  # 23:55 absent -> null -> no fire
    ("BTCUSDT", at("00:05"), -1.0, 2.0),  # x@00:00 = -1 -> fire
    # 00:10 missing
    ("BTCUSDT", at("00:15"), 0.0, 2.0),   # x@00:10 absent -> null -> no fire, although
                                          # the previous ROW (00:05) has x = -1
    ("BTCUSDT", at("00:20"), -1.0, 2.0),  # x@00:15 = 0 -> no fire
    ("BTCUSDT", at("00:25"), None, 2.0),  # x@00:20 = -1 -> fire (x at t itself is unused)
    ("BTCUSDT", at("00:30"), 0.0, 2.0),   # x@00:25 is null -> no fire
])


def test_lag_is_found_by_time_and_a_missing_bar_is_null():
    s = spec(("x", "lt", 0.0, 1), ("y", "gt", 1.0))
    assert fired(detect(LAGGED, s)) == ["00:05", "00:25"]


EVERY_BAR = frame("x", [("BTCUSDT", at("00:00") + dt.timedelta(minutes=IV * i), 2.0)
                        for i in range(10)])


def test_cooldown_suppresses_consecutive_bars_and_refires_at_cooldown_plus_one():
    # cooldown 3: fire 00:00; 00:05, 00:10, 00:15 suppressed; 00:20 fires (= 4 bars later);
    # 00:25-00:35 suppressed; 00:40 fires.
    assert fired(detect(EVERY_BAR, spec(("x", "gt", 1.0), cooldown=3))) == \
        ["00:00", "00:20", "00:40"]


SPARSE_CANDIDATES = frame("x", [
    # symbol     ts_open       x      cooldown 3 (15 min)
    ("BTCUSDT", at("00:00"), 2.0),   # fire
    ("BTCUSDT", at("00:10"), 2.0),   # suppressed (within 00:00 + 15 min)
    ("BTCUSDT", at("00:20"), 2.0),   # fire: the suppressed 00:10 did not restart the
                                     # cooldown (it would have lasted to 00:25), and the
                                     # cooldown counts time, not rows (only 2 rows since 00:00)
    ("BTCUSDT", at("00:30"), 2.0),   # suppressed
    ("BTCUSDT", at("00:35"), 2.0),   # suppressed (00:20 + 15 min, inclusive)
    ("BTCUSDT", at("00:40"), 2.0),   # fire
])


def test_suppressed_candidates_do_not_extend_the_cooldown():
    assert fired(detect(SPARSE_CANDIDATES, spec(("x", "gt", 1.0), cooldown=3))) == \
        ["00:00", "00:20", "00:40"]


TWO_SYMBOLS = frame("x y", [
    # symbol     ts_open       x    y      event a (x, cooldown 3)  event b (y, cooldown 3)
    ("BTCUSDT", at("00:00"), 2.0, 0.0),  # a
    ("BTCUSDT", at("00:05"), 2.0, 2.0),  # (a suppressed)           b: a does not block b
    ("ETHUSDT", at("00:05"), 2.0, 0.0),  # a: BTC's cooldown does not block ETH
    ("ETHUSDT", at("00:10"), 2.0, 2.0),  # (a suppressed)           b
])


def test_cooldown_is_per_symbol_and_per_event_type():
    a = spec(("x", "gt", 1.0), cooldown=3, name="a")
    b = spec(("y", "gt", 1.0), cooldown=3, name="b")
    out = detect(TWO_SYMBOLS, b, a)
    assert out.select("event_type", "symbol", "ts").rows() == [
        ("a", "BTCUSDT", at("00:00")), ("a", "ETHUSDT", at("00:05")),
        ("b", "BTCUSDT", at("00:05")), ("b", "ETHUSDT", at("00:10")),
    ]


DIRECTIONS = frame("x d", [
    # symbol     ts_open       x      d       severity  sign_of d  fixed -1
    ("BTCUSDT", at("00:00"), -4.0, 0.5),    # 4.0       +1         -1
    ("BTCUSDT", at("00:10"), 3.5, -2.0),    # 3.5       -1         -1
    ("BTCUSDT", at("00:20"), -3.5, 0.0),    # 3.5        0         -1
    ("BTCUSDT", at("00:30"), 5.0, None),    # 5.0        0         -1
    ("BTCUSDT", at("00:40"), 6.0, NAN),     # 6.0        0         -1
])


def test_direction_from_sign_of_or_fixed_and_severity_is_absolute():
    by_sign = detect(DIRECTIONS, spec(("x", "abs_gt", 3.0), sign_of="d"))
    assert by_sign.select("severity", "direction").rows() == [
        (4.0, 1), (3.5, -1), (3.5, 0), (5.0, 0), (6.0, 0)]
    fixed = detect(DIRECTIONS, spec(("x", "abs_gt", 3.0), fixed=-1))
    assert fixed["direction"].to_list() == [-1] * 5
    assert fixed["severity"].to_list() == [4.0, 3.5, 3.5, 5.0, 6.0]


def test_severity_of_another_feature_and_null_severity_is_kept():
    s = spec(("x", "abs_gt", 3.0), severity="d")
    assert detect(DIRECTIONS, s)["severity"].to_list()[:4] == [0.5, 2.0, 0.0, None]


def test_ts_is_the_bar_label_and_ts_known_its_close():
    out = detect(EVERY_BAR, spec(("x", "gt", 1.0), cooldown=3))
    assert (out["ts_known"] - out["ts"]).to_list() == [dt.timedelta(minutes=IV)] * 3
    assert out["event_type"].to_list() == ["ev"] * 3


def test_empty_results_keep_the_schema():
    assert detect(EVERY_BAR, spec(("x", "gt", 9.0))).is_empty()
    assert detect(EVERY_BAR.clear(), spec(("x", "gt", 1.0))).is_empty()
    assert detect(EVERY_BAR).is_empty()
    empty = detect_events_by_day(EVERY_BAR, [], interval_minutes=IV, days=[D1.date()])
    assert list(empty.schema.items()) == list(EVENT_SCHEMA.items())


def test_duplicated_bars_are_refused():
    with pytest.raises(ValueError, match="share a"):
        detect(pl.concat([EVERY_BAR, EVERY_BAR.head(1)]), spec(("x", "gt", 1.0)))


def test_start_end_filter_with_cooldown_state_carried_from_before_start():
    s = spec(("x", "gt", 1.0), cooldown=3)
    # Unfiltered: 00:00, 00:20, 00:40. The 00:00 event is not returned, but it still
    # suppresses 00:05-00:15; end is exclusive, so 00:40 is out.
    out = detect(EVERY_BAR, s, start=at("00:05"), end=at("00:40"))
    assert fired(out) == ["00:20"]
    assert fired(detect(EVERY_BAR, s, start=at("00:20"), end=at("00:45"))) == ["00:20", "00:40"]


def test_unsorted_input_gives_the_same_events():
    s = spec(("x", "gt", 1.0), cooldown=3)
    shuffled = SPARSE_CANDIDATES.sample(fraction=1.0, shuffle=True, seed=3)
    assert detect(shuffled, s).equals(detect(SPARSE_CANDIDATES, s))


# ---- by day ------------------------------------------------------------------------------

MIDNIGHT = frame("x", [
    # symbol     ts_open             x     cooldown 3
    ("BTCUSDT", at("23:50", D1), 0.0),   #
    ("BTCUSDT", at("23:55", D1), 2.0),   # fire (day 1)
    ("BTCUSDT", at("00:00", D2), 2.0),   # suppressed by 23:55 across midnight
    ("BTCUSDT", at("00:10", D2), 2.0),   # suppressed
    ("BTCUSDT", at("00:15", D2), 2.0),   # fire (day 2): 23:55 + 4 bars
    ("ETHUSDT", at("00:00", D2), 2.0),   # fire: ETH has no event at 23:55
])


def by_day(features: pl.DataFrame, specs: list[EventSpec], *days: dt.datetime) -> pl.DataFrame:
    out = detect_events_by_day(features, specs, interval_minutes=IV,
                               days=[d.date() for d in days])
    assert list(out.schema.items()) == list(EVENT_SCHEMA.items())
    return out


def test_a_day_alone_equals_the_same_day_in_a_batch_across_midnight():
    s = [spec(("x", "gt", 1.0), cooldown=3)]
    batch = by_day(MIDNIGHT, s, D1, D2, D3)
    assert fired(batch) == ["23:55", "00:15", "ETH 03-02 00:00"]
    day2 = batch.filter(pl.col("ts") >= D2)
    assert by_day(MIDNIGHT, s, D2).equals(day2)
    # Alone, with only that day's window of features (day 1 is its lookback).
    assert by_day(MIDNIGHT.filter(pl.col("ts_open") >= D1), s, D2).equals(day2)
    assert by_day(MIDNIGHT, s, D1).equals(batch.filter(pl.col("ts") < D2))


# Cooldown 287 + lag 1 = 288 bars: a lookback of exactly one day, so day 3's window starts
# at day 2 00:00 and the lag of that first bar reaches before the window.
CHAIN = frame("x y", [
    # symbol     ts_open            x     y     all history         day 3's window
    ("BTCUSDT", at("23:55", D1), -1.0, 0.0),  #
    ("BTCUSDT", at("00:00", D2), 0.0, 2.0),   # fire (x@23:55)      x@23:55 outside: null
    ("BTCUSDT", at("23:50", D2), -1.0, 0.0),  #
    ("BTCUSDT", at("23:55", D2), 0.0, 2.0),   # suppressed          fire
    ("BTCUSDT", at("00:00", D3), -1.0, 0.0),  #
    ("BTCUSDT", at("00:05", D3), 0.0, 2.0),   # fire                suppressed by 23:55
])


def test_a_day_is_a_function_of_its_window_only_even_with_more_history():
    s = [spec(("x", "lt", 0.0, 1), ("y", "gt", 1.0), cooldown=287)]
    assert s[0].lookback_bars == 288
    assert fired(detect(CHAIN, *s)) == ["00:00", "00:05"]
    window = CHAIN.filter(pl.col("ts_open") >= D2)
    expected = detect(window, *s, start=D3, end=D3 + dt.timedelta(days=1))
    assert expected.is_empty()
    assert by_day(CHAIN, s, D3).equals(expected)
    assert by_day(window, s, D3).equals(expected)
    assert by_day(CHAIN, s, D1, D2, D3).filter(pl.col("ts") >= D3).is_empty()


def random_features(days: int, seed: int) -> pl.DataFrame:
    """Dense candidates on two symbols, with a few bars missing and a few nulls."""
    rng = np.random.default_rng(seed)
    n = days * 288
    ts = [D1 + dt.timedelta(minutes=IV * i) for i in range(n)]
    parts = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        x = np.where(rng.random(n) > 0.01, rng.standard_normal(n), np.nan)
        f = pl.DataFrame({"symbol": symbol, "ts_open": ts, "x": x,
                          "y": rng.standard_normal(n)}, nan_to_null=True)
        parts.append(f.filter(pl.Series(rng.random(n) > 0.02)))
    return pl.concat(parts).with_columns(ts_close=pl.col("ts_open") + dt.timedelta(minutes=IV))


def test_by_day_equals_detect_events_on_each_window():
    features = random_features(4, seed=7).filter(
        pl.col("ts_open").dt.date() < (D1 + dt.timedelta(days=4)).date())
    specs = [spec(("x", "gt", 0.5, 2), ("y", "lt", 0.0), detector="any_of", cooldown=40,
                  name="a", sign_of="y"),
             spec(("x", "abs_gt", 1.0), ("y", "gt", 0.0, 1), cooldown=7, name="b")]
    days = [D1 + dt.timedelta(days=i) for i in range(4)]
    batch = by_day(features, specs, *days)
    assert batch.height > 100
    for d in days:
        window = features.filter((pl.col("ts_open") >= d - dt.timedelta(days=1))
                                 & (pl.col("ts_open") < d + dt.timedelta(days=1)))
        expected = detect(window, *specs, start=d, end=d + dt.timedelta(days=1))
        assert by_day(features, specs, d).equals(expected)
        assert by_day(window, specs, d).equals(expected)
        assert batch.filter(pl.col("ts").dt.date() == d.date()).equals(expected)


def test_events_up_to_t_do_not_change_when_data_after_t_does():
    features = random_features(2, seed=11)
    specs = [spec(("x", "gt", 0.5, 3), ("y", "abs_gt", 1.0), cooldown=12, sign_of="y")]
    t = D1 + dt.timedelta(hours=30)
    after = pl.col("ts_open") > t
    changed = features.with_columns(x=pl.when(after).then(-pl.col("x")).otherwise("x"),
                                    y=pl.when(after).then(pl.col("y") * 3).otherwise("y"))
    before = detect(features, *specs).filter(pl.col("ts") <= t)
    assert before.height > 10
    assert detect(changed, *specs).filter(pl.col("ts") <= t).equals(before)
    assert not detect(changed, *specs).equals(detect(features, *specs))


# ---- the real specs ----------------------------------------------------------------------

def satisfying(c: Condition) -> float:
    return {"gt": c.threshold + 1, "lt": c.threshold - 1, "abs_gt": c.threshold + 1,
            "abs_lt": c.threshold / 2}[c.op]


@pytest.mark.parametrize("name", sorted(load_registry().events))
def test_each_real_spec_fires_on_a_frame_that_satisfies_its_conditions(name):
    s = load_registry().events[name]
    names = sorted({f for _, f in s.features()})
    last = max(c.lag for c in s.conditions)
    values = dict.fromkeys(names, 0.5) | {c.feature: satisfying(c) for c in s.conditions}
    rows = [("BTCUSDT", D1 + dt.timedelta(minutes=IV * i), *(values[n] for n in names))
            for i in range(last + 1)]
    features = frame(" ".join(names), rows)
    out = detect(features, s, start=rows[-1][1])
    assert out.select("event_type", "symbol", "ts").rows() == [(name, "BTCUSDT", rows[-1][1])]
    assert out["severity"].item() == abs(values[s.severity_of])
    assert out["direction"].item() == (s.direction.fixed or 1)
    # Every real spec is all_of: one condition's feature going null silences it.
    c = s.conditions[0]
    lag_row = pl.col("ts_open") == rows[-1 - c.lag][1]
    silenced = features.with_columns(pl.when(lag_row).then(None).otherwise(c.feature)
                                     .alias(c.feature))
    assert detect(silenced, s, start=rows[-1][1]).is_empty()
