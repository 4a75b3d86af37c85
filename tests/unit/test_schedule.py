"""Keys to runs over ranges: the rectangles cover exactly the keys asked for."""

import datetime as dt
import random

import pytest

from backtest_assets.core.schedule import Rectangle, keys_of_tags, range_tags, rectangles

U = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
D = dt.date(2024, 1, 1)


def day(i: int) -> dt.date:
    return D + dt.timedelta(days=i)


def test_one_day_every_symbol_is_one_run():
    (rect,) = rectangles([(D, s) for s in U], U)
    assert rect == Rectangle(D, D, tuple(U))
    assert rect.tags == {"dagster/asset_partition_range_start": "2024-01-01|BTCUSDT",
                         "dagster/asset_partition_range_end": "2024-01-01|XRPUSDT"}
    assert rect.label == "2024-01-01 x BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"


def test_gaps_in_days_and_symbols_split_runs():
    keys = [(day(i), s) for i in (0, 1, 2, 5) for s in ("BTCUSDT", "SOLUSDT")]
    keys += [(day(i), "ETHUSDT") for i in (0, 1, 2)]
    assert rectangles(keys, U) == [
        Rectangle(day(0), day(2), ("BTCUSDT", "ETHUSDT", "SOLUSDT")),
        Rectangle(day(5), day(5), ("BTCUSDT",)),
        Rectangle(day(5), day(5), ("SOLUSDT",)),
    ]


def test_unknown_symbol_is_refused():
    with pytest.raises(ValueError, match="'DOGEUSDT' is not in the universe"):
        rectangles([(D, "DOGEUSDT")], U)


@pytest.mark.parametrize("seed", range(20))
def test_rectangles_cover_exactly_the_keys(seed):
    rng = random.Random(seed)
    keys = {(day(rng.randrange(30)), rng.choice(U)) for _ in range(rng.randrange(1, 60))}
    rects = rectangles(keys, U)
    covered = [k for r in rects for k in r.pairs()]
    assert len(covered) == len(set(covered)) == len(keys)  # no key twice
    assert set(covered) == keys
    for r in rects:  # each is a valid range run: adjacent symbols
        idx = [U.index(s) for s in r.symbols]
        assert idx == list(range(idx[0], idx[0] + len(idx)))
        assert keys_of_tags(r.tags, U) == r.pairs()


def test_keys_of_tags_reads_single_keys_and_ignores_others():
    assert keys_of_tags({"dagster/partition": "2024-01-03|ETHUSDT"}, U) == [
        (day(2), "ETHUSDT")]
    assert keys_of_tags({"dagster/partition": "momentum_v1"}, U) == []
    assert keys_of_tags(range_tags(D, day(1), ["ETHUSDT", "SOLUSDT"]), U) == [
        (D, "ETHUSDT"), (D, "SOLUSDT"), (day(1), "ETHUSDT"), (day(1), "SOLUSDT")]
