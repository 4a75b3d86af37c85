"""Per-key lineage: what a write records, when a key is stale and why, and the build plan."""

import datetime as dt

import polars as pl
import pytest

from backtest_assets.core.lineage import (
    FRESH,
    MISSING,
    NEVER_BUILT,
    STALE,
    Dep,
    LineageSpec,
    LineageWrite,
    classify,
    describe_keys,
    plan,
)
from backtest_assets.warehouse import PartitionLayout, Warehouse, WarehouseError

D = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(5)]
LAYOUT = PartitionLayout(time_col="ts", time_dim="date", value_dims={"symbol": "symbol"})
UP = LineageSpec("up", "ts", first_day=D[0], last_day=D[-1])
DOWN = LineageSpec("down", "ts", deps=(Dep("up", -1, 0),), version="specs/x=1",
                   first_day=D[0], last_day=D[-1])
LABEL = LineageSpec("label", "ts", deps=(Dep("up", 0, 1),), first_day=D[0], last_day=D[2])


def frame(days, symbol="A", scale=1.0, per_day=3):
    rows = [(symbol, dt.datetime.combine(d, dt.time(h)), scale * (i * 10 + h))
            for i, d in enumerate(days) for h in range(per_day)]
    return pl.DataFrame(rows, schema={"symbol": pl.String, "ts": pl.Datetime("us"),
                                      "x": pl.Float64}, orient="row")


def write(wh, spec, days, data, *, symbol="A", run="r", incomplete=()):
    keys = [(d, symbol) for d in days]
    boxes = LAYOUT.boxes([{"date": d.isoformat(), "symbol": symbol} for d in days])
    return wh.replace(spec.asset, data, LAYOUT, boxes,
                      lineage=LineageWrite(spec, tuple(keys), run, frozenset(incomplete)))


def states(wh, spec, days, symbol="A"):
    got = classify(wh.lineage_status(spec, [(d, symbol) for d in days]), spec.version)
    return dict(zip(got["date"], zip(got["state"], got["reason"], strict=True), strict=True))


@pytest.fixture
def wh(tmp_path):
    return Warehouse(tmp_path / "w.duckdb")


def test_keys_never_built_are_missing_even_before_the_warehouse_exists(wh):
    assert set(states(wh, DOWN, D[:2]).values()) == {
        (MISSING, NEVER_BUILT)}


def test_a_key_is_fresh_until_an_input_it_reads_is_rebuilt_with_other_rows(wh):
    write(wh, UP, D, frame(D))
    write(wh, DOWN, D, frame(D))
    assert {s for s, _ in states(wh, DOWN, D).values()} == {FRESH}
    # rebuilt with the same rows: the data version is the same, nothing below goes stale
    write(wh, UP, D, frame(D), run="again")
    assert {s for s, _ in states(wh, DOWN, D).values()} == {FRESH}
    # day 2 of "up" rebuilt with other rows: "down" of day 2 and day 3 (warm-up 1) are stale
    changed = frame(D).with_columns(x=pl.when(pl.col("ts").dt.day() == 2).then(-1.0)
                                    .otherwise(pl.col("x")))
    write(wh, UP, D, changed)
    got = states(wh, DOWN, D)
    assert got[D[1]] == got[D[2]] == (STALE, "up rebuilt")
    assert {got[d][0] for d in (D[0], D[3], D[4])} == {FRESH}


def test_a_rebuild_of_a_single_key_changes_only_its_own_data_version(wh):
    write(wh, UP, D, frame(D))
    write(wh, DOWN, D, frame(D))
    write(wh, UP, [D[4]], frame([D[4]], scale=2.0))  # one key, other rows
    got = states(wh, DOWN, D)
    assert [got[d][0] for d in D] == [FRESH] * 4 + [STALE]


def test_a_changed_spec_version_makes_every_key_stale_naming_the_spec(wh):
    write(wh, UP, D, frame(D))
    write(wh, DOWN, D, frame(D))
    newer = LineageSpec("down", "ts", deps=DOWN.deps, version="specs/x=2",
                        first_day=D[0], last_day=D[-1])
    got = states(wh, newer, D)
    assert set(got.values()) == {(STALE, "version changed: specs/x 1 -> 2")}


def test_keys_built_with_missing_source_files_are_stale_until_rebuilt_complete(wh):
    write(wh, UP, D[:2], frame(D[:1]), incomplete=[(D[1], "A")])
    got = states(wh, UP, D[:2])
    assert got[D[0]][0] == FRESH
    assert got[D[1]] == (STALE, "source files were missing when built (retried)")
    write(wh, UP, [D[1]], frame([D[1]]))
    assert states(wh, UP, [D[1]])[D[1]][0] == FRESH


def test_an_upstream_key_that_appears_or_enters_the_window_makes_the_key_stale(wh):
    write(wh, UP, D[:3], frame(D[:3]))
    write(wh, LABEL, D[:3], frame(D[:3]))  # the day after D[2] does not exist yet
    assert {s for s, _ in states(wh, LABEL, D[:3]).values()} == {FRESH}
    later = LineageSpec("label", "ts", deps=LABEL.deps, first_day=D[0], last_day=D[3])
    assert states(wh, later, [D[2]])[D[2]] == (STALE, "up window moved")
    write(wh, later, [D[2]], frame([D[2]]))
    write(wh, UP, [D[3]], frame([D[3]]))  # D[3] of "up" had no record when it was built
    assert states(wh, later, [D[2]])[D[2]] == (STALE, "up appeared")


def test_a_refused_write_leaves_rows_and_lineage_as_they_were(wh):
    write(wh, UP, D, frame(D))
    with wh.connect(read_only=True) as conn:
        before = conn.sql("SELECT * FROM lineage ORDER BY ALL").pl()
    outside = frame([D[0]]).with_columns(ts=pl.col("ts") + dt.timedelta(days=9))
    with pytest.raises(WarehouseError, match="outside the partitions"):
        write(wh, UP, [D[0]], outside, run="refused")
    with wh.connect(read_only=True) as conn:
        assert conn.sql("SELECT * FROM lineage ORDER BY ALL").pl().equals(before)


def test_lineage_records_rows_and_a_content_hash_per_key_including_empty_ones(wh):
    write(wh, UP, D[:2], frame(D[:1]))  # D[1] written with no rows
    with wh.connect(read_only=True) as conn:
        rows = conn.sql("SELECT date, rows, data_hash, complete, run_id FROM lineage "
                        "ORDER BY date").pl()
    assert rows["rows"].to_list() == [3, 0]
    assert rows["data_hash"][1] == "empty" and len(rows["data_hash"][0]) == 16
    assert rows["complete"].to_list() == [True, True] and set(rows["run_id"]) == {"r"}


def _state_frame(spec, keys, state):
    return pl.DataFrame({"date": [d for d, _ in keys], "symbol": [s for _, s in keys],
                         "state": [state] * len(keys), "reason": ["r"] * len(keys)},
                        schema={"date": pl.Date, "symbol": pl.String, "state": pl.String,
                                "reason": pl.String})


def test_the_plan_builds_what_reads_a_key_it_builds_and_nothing_unrequested():
    keys = [(d, "A") for d in D]
    states_ = {"up": _state_frame(UP, keys, FRESH).with_columns(
        state=pl.when(pl.col("date") == D[1]).then(pl.lit(STALE)).otherwise(pl.lit(FRESH))),
        "down": _state_frame(DOWN, keys[:4], FRESH)}
    got = plan([UP, DOWN], {"up": keys, "down": keys[:4]}, states_)
    assert list(got["up"]) == [(D[1], "A")]
    # down reads up at d-1..d: days 2 and 3 read the rebuilt day 2; day 5 was not requested
    assert got["down"] == {(D[1], "A"): "up rebuilt in this run",
                           (D[2], "A"): "up rebuilt in this run"}
    forced = plan([UP, DOWN], {"up": keys, "down": keys[:4]}, states_, rebuild=True)
    assert len(forced["up"]) == 5 and set(forced["down"].values()) == {"--rebuild"}


def test_keys_are_described_as_rectangles_of_days_and_adjacent_symbols():
    keys = [(d, s) for d in D[:3] for s in ("A", "B")] + [(D[4], "C")]
    assert describe_keys(keys, ["A", "B", "C"]) == \
        "2024-01-01..2024-01-03 x A,B; 2024-01-05 x C"
