"""Event study: literal bars and events with the expected paths written beside them."""

import datetime as dt
import math

import polars as pl
import pytest

from backtest_assets.reporting.event_study import EVENT_STUDY_SCHEMA, event_study

T0 = dt.datetime(2024, 1, 1)
STEP = dt.timedelta(minutes=5)


def bars(rows: dict[str, list[float | None]]) -> pl.DataFrame:
    """symbol -> opens on the 5m grid from T0; None = the bar is missing (no row)."""
    return pl.DataFrame(
        [{"symbol": s, "ts_open": T0 + i * STEP, "open": o, "close": o}
         for s, opens in rows.items() for i, o in enumerate(opens) if o is not None],
        schema={"symbol": pl.String, "ts_open": pl.Datetime("us"), "open": pl.Float64,
                "close": pl.Float64})


def events(rows: list[tuple[str, str, int, int]]) -> pl.DataFrame:
    """(event_type, symbol, bar index t, direction)."""
    return pl.DataFrame(
        [{"event_type": e, "symbol": s, "ts": T0 + t * STEP, "direction": d}
         for e, s, t, d in rows],
        schema={"event_type": pl.String, "symbol": pl.String, "ts": pl.Datetime("us"),
                "direction": pl.Int8})


BARS = bars({
    #        bar  0      1      2      3      4      5      6
    "AAA": [100.0, 101.0, 102.0, 104.0, 103.0, 105.0, 106.0],
    "BBB": [50.0,  50.0,  51.0,  None,  49.0,  48.0,  50.0],   # bar 3 missing
})
EVENTS = events([
    # type   symbol t  dir   entry t+1 | v_-1              v_0  v_1               v_2
    ("spike", "AAA", 2, +1),  # 3: 104 | ln(102/104)       0    ln(103/104)       ln(105/104)
    ("spike", "BBB", 1, -1),  # 2: 51  | -ln(50/51)        0    missing (bar 3)   -ln(49/51)
    ("spike", "AAA", 0, -1),  # 1: 101 | -ln(100/101)      0    -ln(102/101)      -ln(104/101)
    ("dip", "BBB", 3, +1),    # 4: 49  | missing (bar 3)   0    ln(48/49)         ln(50/49)
])
ln = math.log
V = {  # expected v_k per (event type, offset), one entry per event with a value
    ("spike", -1): [ln(102 / 104), -ln(50 / 51), -ln(100 / 101)],
    ("spike", 0): [0.0, 0.0, 0.0],
    ("spike", 1): [ln(103 / 104), -ln(102 / 101)],
    ("spike", 2): [ln(105 / 104), -ln(49 / 51), -ln(104 / 101)],
    ("dip", -1): [],
    ("dip", 0): [0.0],
    ("dip", 1): [ln(48 / 49)],
    ("dip", 2): [ln(50 / 49)],
}


def expected(values: list[float], z: float) -> dict:
    n = len(values)
    mean = sum(values) / n if n else None
    if n < 2:
        return {"mean": mean, "se": None, "lo": None, "hi": None, "n": n}
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    se = math.sqrt(var) / math.sqrt(n)
    return {"mean": mean, "se": se, "lo": mean - z * se, "hi": mean + z * se, "n": n}


def test_paths_match_the_hand_computed_values():
    out = event_study(BARS, EVENTS, before=1, after=2, z=2.0)
    assert out.schema == pl.Schema(EVENT_STUDY_SCHEMA)
    assert out.select("event_type", "offset").rows() == [
        ("dip", -1), ("dip", 0), ("dip", 1), ("dip", 2),
        ("spike", -1), ("spike", 0), ("spike", 1), ("spike", 2)]
    for row in out.iter_rows(named=True):
        want = expected(V[row["event_type"], row["offset"]], z=2.0)
        assert row["n"] == want["n"], row
        for col in ("mean", "se", "lo", "hi"):
            if want[col] is None:
                assert row[col] is None, (row, col)
            else:
                assert row[col] == pytest.approx(want[col], rel=1e-12, abs=1e-15), (row, col)


def test_offset_zero_is_exactly_zero():
    out = event_study(BARS, EVENTS, before=1, after=2).filter(pl.col("offset") == 0)
    assert out["mean"].to_list() == [0.0, 0.0]  # exact, not approximately
    assert out.filter(pl.col("event_type") == "spike").select("se", "lo", "hi").row(0) == (
        0.0, 0.0, 0.0)


def test_band_is_mean_plus_minus_z_standard_errors():
    values = V["spike", 2]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # ddof = 1
    for z in (1.0, 1.96):
        row = event_study(BARS, EVENTS, before=0, after=2, z=z).filter(
            (pl.col("event_type") == "spike") & (pl.col("offset") == 2)).row(0, named=True)
        assert row["se"] == pytest.approx(sd / math.sqrt(3), rel=1e-12)
        assert row["lo"] == pytest.approx(mean - z * sd / math.sqrt(3), rel=1e-12)
        assert row["hi"] == pytest.approx(mean + z * sd / math.sqrt(3), rel=1e-12)


def test_event_near_the_start_counts_only_where_bars_exist():
    # AAA event at t = 0: entry bar 1; k = -1 is bar 0, k = -2 and -3 are before the data
    out = event_study(BARS, events([("early", "AAA", 0, +1)]), before=3, after=1)
    assert out.select("offset", "n").rows() == [(-3, 0), (-2, 0), (-1, 1), (0, 1), (1, 1)]
    assert out["mean"].to_list()[:2] == [None, None]
    assert out["mean"].to_list()[2:] == pytest.approx([ln(100 / 101), 0.0, ln(102 / 101)],
                                                      rel=1e-12)


def test_missing_entry_bar_nulls_the_whole_path():
    # BBB event at t = 2: entry bar 3 is missing, so not even k = 0 has a value
    out = event_study(BARS, events([("gap", "BBB", 2, +1)]), before=1, after=1)
    assert out["n"].to_list() == [0, 0, 0]
    assert out["mean"].to_list() == [None, None, None]


def test_unknown_symbol_and_zero_direction():
    out = event_study(BARS, events([("x", "ZZZ", 1, +1), ("x", "AAA", 1, 0)]),
                      before=0, after=1)
    # ZZZ has no bars: a row per offset with n = 0; the direction-0 event is dropped
    assert out.select("offset", "n").rows() == [(0, 0), (1, 0)]


def test_modal_step_ignores_gaps():
    # bars every 5 minutes with one 10-minute hole: the grid step is still 5 minutes
    out = event_study(BARS, events([("dip", "BBB", 4, +1)]), before=0, after=1)
    assert out["mean"].to_list() == pytest.approx([0.0, ln(50 / 48)], rel=1e-12)


def test_empty_events_give_an_empty_frame_with_the_columns():
    out = event_study(BARS, events([]), before=2, after=3)
    assert out.is_empty()
    assert out.schema == pl.Schema(EVENT_STUDY_SCHEMA)


def test_rejects_duplicated_bars_and_negative_windows():
    with pytest.raises(ValueError, match="not unique"):
        event_study(pl.concat([BARS, BARS.head(1)]), EVENTS, before=1, after=1)
    with pytest.raises(ValueError, match=">= 0"):
        event_study(BARS, EVENTS, before=-1, after=1)
