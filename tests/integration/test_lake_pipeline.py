"""The pipeline on a DuckLake warehouse (Postgres catalog, Parquet files): two backfills at
once through the CLI give the tables one run gives on a DuckDB file, and a study re-run after
newer data landed reproduces its results from the snapshot it recorded."""

import datetime as dt
import subprocess
import sys

import dagster as dg
import polars as pl

from backtest_assets import cli
from backtest_assets.certify import prepare
from backtest_assets.resources.warehouse import make_warehouse
from backtest_assets.specs import reload_registries
from backtest_assets.warehouse import PartitionLayout, Warehouse
from tests.conftest import REPO, subprocess_env

D1, D3 = dt.date(2024, 1, 1), dt.date(2024, 1, 3)
# written by each run: who and when (equal tables otherwise)
RUN_COLUMNS = ("run_id", "built_at", "recorded_at", "code_commit", "path")


def tables(wh: Warehouse, only: set[str] | None = None, study: str | None = None
           ) -> dict[str, pl.DataFrame]:
    out = {}
    for t in sorted(only or wh.tables()):
        frame = wh.study_rows(t, study) if study else wh.read(t, PartitionLayout())
        frame = frame.drop([c for c in RUN_COLUMNS if c in frame.columns])
        out[t] = frame.sort(frame.columns, nulls_last=True)
    return out


def test_two_backfills_at_once_on_the_lake_give_one_runs_tables(lake_env, tmp_path,
                                                                monkeypatch):
    procs = {s: subprocess.Popen(
        [sys.executable, "-m", "backtest_assets", "run", "--start", str(D1), "--end", str(D3),
         "--symbols", s], env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for s in ("BTCUSDT", "ETHUSDT")}
    for symbol, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{symbol}: {out[-3000:]}"
    with dg.DagsterInstance.get() as instance:
        runs = [r for r in instance.get_run_records() if r.dagster_run.tags.get(
            "dagster/asset_partition_range_start")]
        spans = sorted((r.start_time, r.end_time) for r in runs)
    assert len(spans) >= 2
    assert spans[1][0] < spans[0][1], f"the backfills ran one after the other: {spans}"
    on_lake = tables(make_warehouse())

    # the same keys in one run, on a DuckDB file
    monkeypatch.setenv("BACKTEST_WAREHOUSE", "duckdb")
    monkeypatch.setenv("BACKTEST_DATA_ROOT", str(tmp_path / "file_data"))
    (tmp_path / "file_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "file_home")) as instance:
        assert cli.run(D1, D3, ["BTCUSDT", "ETHUSDT"], instance=instance, quiet=True)
    on_file = tables(make_warehouse())
    assert sorted(on_lake) == sorted(on_file)
    assert on_lake["bars_1m"].height >= 3 * 2 * 2 * 1440  # (and the look-ahead day)
    for name in on_file:
        assert on_lake[name].equals(on_file[name]), name


STUDY = "certify"
RESULTS = {"event_quality_report", "phase2_pvals", "phase2_fdr", "strategy_blueprints",
           "backtest_trades", "backtest_equity", "backtest_metrics"}


def test_a_study_rerun_after_newer_data_landed_reproduces_its_results(lake_env, tmp_path,
                                                                      monkeypatch):
    env = prepare(tmp_path / "batch")
    for k, v in env.items():
        if k != "DAGSTER_HOME":  # runs stay in Postgres
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("BACKTEST_DATA_ROOT", env["BACKTEST_DATA_ROOT"])
    reload_registries()
    config = {"market_source": {"config": {"market_source": "synthetic"}}}
    wh = make_warehouse()
    try:
        with dg.DagsterInstance.get() as instance:
            assert cli.run_all(STUDY, instance=instance, quiet=True, resources_config=config)
            record = wh.study_rows("study_record", STUDY)
            snap = record["lake_snapshot"][0]
            assert snap is not None and snap <= wh.snapshot()
            first = tables(wh, RESULTS, STUDY)
            assert first["backtest_trades"].height and first["phase2_pvals"].height

            # newer data lands: two more days, and the window's events re-detected (here: a
            # third of them gone), each a commit after the study's snapshot
            assert cli.run(dt.date(2024, 1, 10), dt.date(2024, 1, 11), None,
                           instance=instance, quiet=True, resources_config=config)
            layout = PartitionLayout(time_col="ts", time_dim="date",
                                     value_dims={"symbol": "symbol"})
            events = wh.read("event_table", layout)
            window = events.filter(pl.col("ts") < dt.datetime(2024, 1, 8))
            kept = window.filter(pl.int_range(pl.len()) % 3 != 0)
            wh.replace("event_table", kept, layout, layout.boxes(
                [{"date": d.isoformat(), "symbol": s}
                 for d in sorted(set(window["ts"].dt.date())) for s in set(window["symbol"])]))
            assert wh.snapshot() > snap
            pinned = wh.pinned(snap).read("event_table", layout).filter(
                pl.col("ts") < dt.datetime(2024, 1, 8))
            assert pinned.height == window.height > kept.height

            # the study again, from Gate E-1 to the backtests
            runs_before = len(instance.get_runs())
            assert cli.quality(study=STUDY, instance=instance, quiet=True,
                               resources_config=config)
            assert cli.backtest(study=STUDY, instance=instance, quiet=True,
                                resources_config=config)
            assert len(instance.get_runs()) > runs_before
        again = tables(wh, RESULTS, STUDY)
        for name in sorted(RESULTS):
            assert again[name].equals(first[name]), name
    finally:
        reload_registries()
