"""After an interrupted run (raw and bars_1m new, bars_5m old), the next ``run`` over the same
keys rebuilds exactly what is stale, in dependency order, and says which keys and why.

The interruption is made deterministic: a run of only the ingest assets and ``bars_1m``
(what a run killed between ``bars_1m`` and ``bars_5m`` leaves), from a source whose prices
moved for one day.
"""

import datetime as dt
import re

import polars as pl

from backtest_assets.cli import Runner, run
from backtest_assets.core import bars as core_bars
from backtest_assets.core.schedule import range_tags
from backtest_assets.resources import WarehouseResource
from backtest_assets.sources.synthetic import SyntheticSource

START, END = dt.date(2024, 1, 8), dt.date(2024, 1, 9)
CHANGED = dt.date(2024, 1, 7)  # a warm-up day of the features of START..END
SYMBOL = "BTCUSDT"


def read(table: str) -> pl.DataFrame:
    with WarehouseResource().warehouse().connect(read_only=True) as conn:
        return conn.sql(f"SELECT * FROM {table} ORDER BY ALL").pl()  # noqa: S608


def built_rows(out: str) -> dict[str, tuple[str, str, str]]:
    """asset -> (its keys, which, why) from the 'built' table of a run's output (a row names
    the assets sharing its keys and reason, wrapped onto the next lines when long; ``keys``
    counts them all)."""
    parsed: list[list] = []
    for line in out.splitlines():
        m = re.match(r"([\w, ]+?)\s{2,}(\d+)\s{2,}(\S+ x \S+)\s{2,}(.+?)\s{2,}"
                     r"(built|FAILED|not run)$", line)
        if m:
            parsed.append([m[1], int(m[2]), m[3], m[4]])
        elif parsed and re.fullmatch(r"[a-z_0-9]+(, [a-z_0-9]+)*,?", line.strip()) \
                and not line.startswith(" "):
            parsed[-1][0] += " " + line.strip()
    rows = {}
    for names, keys, which, why in parsed:
        assets = [a for a in names.replace(",", " ").split() if a]
        for asset in assets:
            rows[asset] = (str(keys // len(assets)), which, why)
    return rows


def test_an_interrupted_run_is_completed_by_the_next_and_the_summary_says_why(
        data_root, instance, monkeypatch, capsys):
    assert run(START, END, [SYMBOL], instance=instance, quiet=True)
    before = {t: read(t) for t in ("bars_5m", "pit_features", "event_table")}

    original = SyntheticSource.klines_1m

    def moved(self, market, symbol, day):
        batch = original(self, market, symbol, day)
        if day == CHANGED:
            px = ["open", "high", "low", "close"]
            batch.frame = batch.frame.with_columns([pl.col(c) * 1.01 for c in px])
        return batch

    monkeypatch.setattr(SyntheticSource, "klines_1m", moved)
    interrupted = Runner(instance, quiet=True)
    assert interrupted.execute(
        "market_data_job", "interrupted", tags=range_tags(CHANGED, CHANGED, [SYMBOL]),
        assets=["raw_perp_klines_1m", "raw_spot_klines_1m", "bars_1m"])
    monkeypatch.setattr(SyntheticSource, "klines_1m", original)
    bars_1m, bars_5m = read("bars_1m"), read("bars_5m")
    day = (pl.col("ts_open").dt.date() == CHANGED) & (pl.col("symbol") == SYMBOL)
    resampled = core_bars.resample(bars_1m.filter(day), 5).sort(core_bars.SORT_KEYS)
    assert not resampled.equals(bars_5m.filter(day).sort(core_bars.SORT_KEYS))  # stale now

    capsys.readouterr()
    assert run(START, END, [SYMBOL], instance=instance)
    out = capsys.readouterr().out
    rows = built_rows(out)
    # nothing of the ingest was rebuilt (the source is not asked again), nor bars_1m
    assert set(rows) == {"bars_5m", "bars_15m", "pit_features", "forward_labels",
                         "event_table"}, out
    assert rows["bars_5m"] == ("1", f"{CHANGED} x {SYMBOL}", "bars_1m rebuilt"), out
    assert rows["bars_15m"] == ("1", f"{CHANGED} x {SYMBOL}", "bars_1m rebuilt"), out
    # features read 7 warm-up days: every feature day of the window read the changed day
    assert rows["pit_features"] == ("3", f"{CHANGED}..{END} x {SYMBOL}",
                                    "bars_5m rebuilt"), out
    # labels read the day after: only the day before the changed one, and the changed day
    assert rows["forward_labels"][:2] == ("1", f"{CHANGED} x {SYMBOL}"), out
    # a run per group of assets sharing its keys, in dependency order
    run_lines = [s for s in out.splitlines() if s.startswith("run ")]
    assert [s.split(": ")[0].split(" ", 2)[2] for s in run_lines] == [
        f"bars_5m, bars_15m {CHANGED} x {SYMBOL}",
        f"pit_features {CHANGED}..{END} x {SYMBOL}",
        f"forward_labels {CHANGED} x {SYMBOL}",
        f"event_table {START}..{END} x {SYMBOL}"], out

    after = read("bars_5m").filter(day).sort(core_bars.SORT_KEYS)
    assert after.equals(resampled)  # bars_5m is built from the bars_1m now held
    assert not read("pit_features").equals(before["pit_features"])
    unchanged = pl.col("ts_open").dt.date() != CHANGED
    assert read("bars_5m").filter(unchanged).equals(before["bars_5m"].filter(unchanged))

    capsys.readouterr()
    assert run(START, END, [SYMBOL], instance=instance)
    assert "nothing to build: all" in capsys.readouterr().out


def test_rebuild_builds_every_key_again_and_an_unchanged_input_leaves_the_rest_fresh(
        data_root, instance, capsys):
    assert run(START, START, [SYMBOL], instance=instance, quiet=True, research=False)
    n_runs = len(instance.get_runs())
    capsys.readouterr()
    assert run(START, START, [SYMBOL], instance=instance, research=False, rebuild=True)
    out = capsys.readouterr().out
    assert set(built_rows(out)) == {"raw_perp_klines_1m", "raw_spot_klines_1m",
                                    "raw_mark_price_klines_1m", "raw_premium_index_klines_1m",
                                    "raw_funding_rates", "raw_open_interest", "bars_1m",
                                    "bars_5m", "bars_15m"}, out
    assert len(instance.get_runs()) == n_runs + 1  # one run: every asset shares the keys
    # the rebuilt ingest gave the same rows: its data versions did not change, so nothing
    # reading it is stale
    capsys.readouterr()
    assert run(START, START, [SYMBOL], instance=instance, research=False)
    assert "nothing to build" in capsys.readouterr().out
