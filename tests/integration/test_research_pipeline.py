"""Features, labels, events and Gate E-1 through Dagster on the synthetic source."""

import base64
import datetime as dt
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import PIL.Image
import polars as pl
import pytest

from backtest_assets.cli import Runner, backtest, quality, report, run
from backtest_assets.core.studies import study_files
from backtest_assets.defs.backtest.checks import BACKTEST_CHECKS
from backtest_assets.defs.lifecycle.assets import DEMO_CHECKS, EPOCH_CHECKS
from backtest_assets.defs.report.checks import REPORT_CHECKS, SECTIONS
from backtest_assets.defs.walkforward.checks import FOLD_CHECKS, WALKFORWARD_CHECKS
from backtest_assets.lifecycle.epochs import read_epoch
from backtest_assets.partitions import REGISTRY
from backtest_assets.reporting.tearsheet import page_values
from backtest_assets.resources import WarehouseResource
from backtest_assets.warehouse import PartitionLayout

DAY = dt.date(2024, 1, 20)


def warehouse_config(root) -> dict:
    return {"warehouse": {"config": {"data_root": str(root)}},
            "io_manager": {"config": {"data_root": str(root)}}}


def day_rows(root, table, time_col, day=DAY, symbol="BTCUSDT"):
    wh = WarehouseResource(data_root=str(root)).warehouse()
    with wh.connect(read_only=True) as conn:
        sql = (f"SELECT * FROM {table} WHERE symbol = ? "  # noqa: S608
               f"AND CAST({time_col} AS DATE) = ? ORDER BY ALL")
        return conn.sql(sql, params=[symbol, day]).pl()


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """January 2024 for the three symbols in one single run per block, then E-1."""
    root = tmp_path_factory.mktemp("month")
    (root / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        config = warehouse_config(root / "data")
        assert run(dt.date(2024, 1, 1), dt.date(2024, 1, 31), None, instance=instance,
                   quiet=True, resources_config=config)
        assert quality(instance=instance, quiet=True, resources_config=config)
        yield root / "data", instance


def test_research_tables_cover_the_month(month):
    root, _ = month
    features = day_rows(root, "pit_features", "ts_open")
    assert features.height == 288
    assert features.columns == ["symbol", "ts_open", "ts_close", *REGISTRY.features]
    # Every feature is warm by day 20. The only nulls allowed are a z-score whose window is
    # constant (undefined): synthetic funding sits at exactly 1e-4 for days at a time.
    nulls = {c: n for c, n in features.null_count().row(0, named=True).items() if n}
    assert set(nulls) <= {"funding_z"}, nulls
    if nulls:
        funding = day_rows(root, "raw_funding_rates", "ts", day=DAY - dt.timedelta(days=1))
        assert funding["funding_rate"].n_unique() == 1
    labels = day_rows(root, "forward_labels", "ts_open")
    assert labels.columns == ["symbol", "ts_open", *REGISTRY.label_bars()]
    assert labels.drop_nulls().height == 288  # day 21 is there, so every label is whole
    wh = WarehouseResource(data_root=str(root)).warehouse()
    with wh.connect(read_only=True) as conn:
        (n_types,) = conn.execute("SELECT count(DISTINCT event_type) FROM event_table").fetchone()
        leaked = conn.execute("SELECT count(*) FROM pit_features WHERE ts_open >= "
                              "TIMESTAMP '2024-02-02'").fetchone()[0]
    assert n_types == len(REGISTRY.events)
    assert leaked == 0


def test_gate_e1_report_per_event_type(month):
    root, instance = month
    report = WarehouseResource(data_root=str(root)).warehouse().read(
        "event_quality_report", PartitionLayout())
    assert sorted(report["event_type"].unique()) == sorted(REGISTRY.events)
    gate = REGISTRY.gates.e1
    for event_type, rows in report.group_by("event_type"):
        assert rows["symbol"].to_list() == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "ALL"]
        pooled = rows.filter(pl.col("symbol") == "ALL").row(0, named=True)
        assert pooled["bars"] == 3 * 31 * 288
        assert pooled["events"] == rows.filter(pl.col("symbol") != "ALL")["events"].sum()
        ok = (gate.prevalence_per_10k.min <= pooled["prevalence_per_10k"]
              <= gate.prevalence_per_10k.max and pooled["join_rate"] >= gate.join_rate_min)
        assert pooled["passed"] == ok, (event_type, pooled)
        # The blocking check's result belongs to this event type's partition.
        key = dg.AssetCheckKey(dg.AssetKey("event_quality_report"), "e1_gate")
        evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [key])[key]
        assert evaluation is not None
    files = sorted((root / "reports" / "default").rglob("event_quality_report.json"))
    assert len(files) == len(REGISTRY.events)
    doc = json.loads(files[0].read_text())
    # the study's record: every spec file but other studies' (a new study changes nothing)
    assert doc["spec_hashes"] == study_files(REGISTRY, "default")
    assert "studies/default" in doc["spec_hashes"] and not any(
        f.startswith("studies/") and f != "studies/default" for f in doc["spec_hashes"])
    assert doc["window"] == ["2024-01-01", "2024-01-31"]


def test_a_day_alone_equals_the_day_in_a_30_day_run(month, tmp_path):
    """The month fixture built day 20 inside a 31-day run; here it is the only day built."""
    root, _ = month
    alone = tmp_path / "data"
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        config = warehouse_config(alone)
        assert run(DAY, DAY, ["BTCUSDT"], instance=instance, quiet=True,
                   resources_config=config)
        # The day by itself: one partition key, one run per layer.
        runner = Runner(instance, config, quiet=True)
        assert runner.execute("research_job", "features and labels of the day alone",
                              partition_key=f"{DAY}|BTCUSDT",
                              assets=["pit_features", "forward_labels", "event_table"])
        (last,) = instance.get_runs(limit=1)
        assert last.tags["dagster/partition"] == f"{DAY}|BTCUSDT"
    for table, tcol in (("pit_features", "ts_open"), ("forward_labels", "ts_open"),
                        ("event_table", "ts")):
        assert day_rows(alone, table, tcol).equals(day_rows(root, table, tcol)), table
    assert day_rows(root, "event_table", "ts").height > 0


def test_features_refuse_a_missing_warmup(tmp_path):
    (tmp_path / "home").mkdir()
    config = warehouse_config(tmp_path / "data")
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        assert run(DAY, DAY, ["BTCUSDT"], instance=instance, quiet=True,
                   resources_config=config, research=False)
        runner = Runner(instance, config, quiet=True)
        assert not runner.execute("research_job", "day alone, no warm-up",
                                  partition_key=f"{DAY}|BTCUSDT")
        (last,) = instance.get_runs(limit=1)
        failures = [r.event_log_entry.dagster_event.step_failure_data
                    for r in instance.get_records_for_run(last.run_id).records
                    if r.event_log_entry.dagster_event
                    and r.event_log_entry.dagster_event.is_step_failure]
    (failure,) = failures
    message = failure.user_failure_data.description
    assert "pit_features needs bars_5m for 7 partition(s) not materialized yet" in message
    assert "2024-01-13|BTCUSDT" in message


def _reports(root) -> dict[str, dict]:
    out = {}
    for path in sorted((root / "reports" / "default").rglob("phase2/*/report.json")):
        doc = json.loads(path.read_text())
        out.setdefault(doc["event_type"], {})[path] = doc
    return out


def test_phase2_report_per_event_type_with_files_and_hashes(month):
    root, _ = month
    reports = _reports(root)
    assert sorted(reports) == sorted(REGISTRY.events)
    p2 = REGISTRY.phase2()
    for docs in reports.values():
        ((path, doc),) = docs.items()
        assert doc["spec_hashes"] == p2.spec_hashes
        assert len(doc["dataset_hash"]) == 64
        assert doc["code_commit"]
        assert doc["hypotheses"] == 2 * 3 * 4  # templates x horizons x (3 symbols + ALL)
        assert sum(f["hypotheses"] for f in doc["families"]) == doc["hypotheses"]
        for name in ("candidates_raw.parquet", "pvals.parquet", "fdr.parquet"):
            assert (path.parent / name).is_file()
        fdr = pl.read_parquet(path.parent / "fdr.parquet")
        assert sorted(fdr.filter(pl.col("survivor"))["hypothesis_id"]) == \
            sorted(s["hypothesis_id"] for s in doc["survivors"])


def test_phase2_hashes_change_with_an_input_partition_and_not_otherwise(month, tmp_path):
    root, instance = month
    config = warehouse_config(root)
    event_type = "volatility_shock"
    first, other = _dataset_hash(root, event_type), _dataset_hash(root, "oi_flush")
    assert quality([event_type], instance=instance, quiet=True, resources_config=config)
    assert _dataset_hash(root, event_type) == first  # same inputs, same hash
    # Change one input partition: flip one event's direction on 2024-01-20|BTCUSDT.
    wh = WarehouseResource(data_root=str(root)).warehouse()
    layout = PartitionLayout(time_col="ts", time_dim="date", value_dims={"symbol": "symbol"})
    boxes = layout.boxes([{"date": str(DAY), "symbol": "BTCUSDT"}])
    day = wh.read("event_table", layout, boxes)
    assert day.filter(pl.col("event_type") == event_type).height > 0
    flipped = day.with_columns(
        pl.when((pl.col("event_type") == event_type)
                & (pl.col("ts") == day.filter(pl.col("event_type") == event_type)["ts"].min()))
        .then(-pl.col("direction")).otherwise(pl.col("direction")).cast(pl.Int8)
        .alias("direction"))
    wh.replace("event_table", flipped, layout, boxes)
    try:
        assert quality([event_type], instance=instance, quiet=True, resources_config=config)
        assert _dataset_hash(root, event_type) != first
        assert quality(["oi_flush"], instance=instance, quiet=True, resources_config=config)
        assert _dataset_hash(root, "oi_flush") == other  # its inputs did not change
    finally:
        wh.replace("event_table", day, layout, boxes)


def _dataset_hash(root, event_type) -> str:
    latest = max(_reports(root)[event_type].items(), key=lambda kv: kv[0].stat().st_mtime)
    return latest[1]["dataset_hash"]


def test_discovery_finds_the_planted_effect_and_rejects_the_nulls(month):
    """The synthetic source plants a drift after jumps (see its docstring): the event types
    jumps trigger show continuation; basis, funding and liquidity events are null."""
    root, _ = month
    fdr = WarehouseResource(data_root=str(root)).warehouse().read("phase2_fdr", PartitionLayout())
    planted = fdr.filter((pl.col("event_type") == "volatility_shock")
                         & (pl.col("rule_template") == "continuation")
                         & (pl.col("horizon") == "60m") & (pl.col("symbol") == "ALL"))
    assert planted["survivor"].to_list() == [True], planted.to_dicts()
    for null_type in ("basis_dislocation", "funding_extreme", "liquidity_vacuum"):
        assert not fdr.filter(pl.col("event_type") == null_type)["discovered"].any(), null_type
    # Every survivor trades with the jump's direction: no mean-reversion survivor anywhere.
    assert set(fdr.filter(pl.col("survivor"))["rule_template"]) == {"continuation"}


def test_discovery_refuses_an_event_type_that_failed_gate_e1(month):
    root, instance = month
    wh = WarehouseResource(data_root=str(root)).warehouse()
    by_type = PartitionLayout(value_dims={"study": "study", "event_type": "event_type"})
    keys = by_type.boxes([{"study": "default", "event_type": "funding_extreme"}])
    verdict = wh.read("event_quality_report", by_type, keys)
    failed = verdict.with_columns(pl.lit(False).alias("passed"),
                                  pl.lit("prevalence 0.5 per 10k below 1").alias("reasons"))
    wh.replace("event_quality_report", failed, by_type, keys)
    try:
        runner = Runner(instance, warehouse_config(root), quiet=True)
        assert not runner.execute("discovery_job", "phase 2 only",
                                  partition_key="funding_extreme|default",
                                  assets=["phase2_candidates_raw", "phase2_pvals",
                                          "phase2_fdr", "phase2_report"])
        assert _step_failure(instance) == (
            "funding_extreme did not pass Gate E-1 (prevalence 0.5 per 10k below 1): "
            "discovery does not read it")
    finally:
        wh.replace("event_quality_report", verdict, by_type, keys)


def _step_failure(instance) -> str:
    (last,) = instance.get_runs(limit=1)
    (failure,) = [r.event_log_entry.dagster_event.step_failure_data
                  for r in instance.get_records_for_run(last.run_id).records
                  if r.event_log_entry.dagster_event
                  and r.event_log_entry.dagster_event.is_step_failure]
    return failure.user_failure_data.description


@pytest.fixture(scope="module")
def backtested(month):
    root, instance = month
    assert backtest(instance=instance, quiet=True, resources_config=warehouse_config(root))
    return root, instance


def test_backtests_of_every_blueprint_with_chart_and_reconciled_accounting(backtested):
    root, instance = backtested
    wh = WarehouseResource(data_root=str(root)).warehouse()
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    survivors = wh.read("phase2_fdr", PartitionLayout()).filter(pl.col("survivor"))
    assert catalog.height == len(REGISTRY.strategies) + survivors.height
    assert sorted(instance.get_dynamic_partitions("blueprint")) == sorted(catalog["blueprint"])
    metrics = wh.read("backtest_metrics", PartitionLayout())
    equity = wh.read("backtest_equity", PartitionLayout())
    trades = wh.read("backtest_trades", PartitionLayout())
    assert sorted(metrics["blueprint"]) == sorted(catalog["blueprint"])
    bars = 31 * 288
    assert equity.group_by("blueprint").len()["len"].to_list() == [bars] * catalog.height
    for name, rows in trades.group_by("blueprint"):
        m = metrics.filter(pl.col("blueprint") == name[0]).row(0, named=True)
        final = equity.filter(pl.col("blueprint") == name[0])["equity"][-1]
        assert rows["pnl"].sum() == pytest.approx(final - m["init_cash"], rel=1e-9, abs=1e-6)
        assert m["trades"] == rows.filter(pl.col("exit_reason") != "open").height
    assert (trades["entry_ts"] >= dt.datetime(2024, 1, 1)).all()
    # Synthetic funding is complete, and sits at exactly 1e-4 for weeks (BTCUSDT: 80 prints).
    assert (metrics["funding_missing"] == 0).all()
    assert metrics.filter(pl.col("blueprint") == "momentum_v1")["funding_constant_runs"][0] >= 1
    assert (trades["exit_ts"].drop_nulls() < dt.datetime(2024, 2, 1)).all()
    # The planted effect Phase 2 found pays after costs when traded: the pooled survivor
    # enters after each event and leaves 60 minutes later by the time stop.
    planted = metrics.filter(pl.col("blueprint")
                             == "p2_volatility_shock_continuation_60m_all").row(0, named=True)
    assert planted["total_return"] > 0 and planted["trades"] >= 30
    exits = trades.filter(pl.col("blueprint") == "p2_volatility_shock_continuation_60m_all")
    assert set(exits["exit_reason"]) <= {"time_stop", "open"}
    assert ((exits["exit_ts"] - exits["entry_ts"]).drop_nulls() == dt.timedelta(hours=1)).all()
    # The equity materialization carries the chart (a PNG that is not blank) and headlines.
    event = instance.get_latest_materialization_event(dg.AssetKey("backtest_equity"))
    meta = event.asset_materialization.metadata
    png = base64.b64decode(meta["chart"].value.split("base64,", 1)[1].rstrip(")"))
    image = np.asarray(PIL.Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and image.shape[0] > 300 and image.std() > 10
    assert "max_drawdown" in meta["headline"].value
    # Each blueprint partition carries its own curve and headline row.
    for name in ("momentum_v1", "p2_volatility_shock_continuation_60m_all"):
        (record,) = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("backtest_equity"), asset_partitions=[f"{name}|default"]),
            limit=1).records
        own = record.asset_materialization.metadata
        rows = own["headline"].value.splitlines()[2:]
        assert len(rows) == 1 and rows[0].startswith(f"| {name} |"), rows
        assert own["total_return"].value == pytest.approx(
            metrics.filter(pl.col("blueprint") == name)["total_return"][0], rel=1e-12)
        assert own["chart"].value.startswith("![equity and drawdown](data:image/png;base64,")
    keys = [dg.AssetCheckKey(dg.AssetKey(spec.asset_key.path), spec.name)
            for spec in BACKTEST_CHECKS]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert {k.name: r.status.value for k, r in records.items()} == dict.fromkeys(
        [k.name for k in keys], "SUCCEEDED")


def test_backtest_refuses_a_blueprint_naming_an_unknown_feature(backtested):
    root, instance = backtested
    wh = WarehouseResource(data_root=str(root)).warehouse()
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    row = catalog.filter(pl.col("blueprint") == "momentum_v1")
    bad = row.with_columns(pl.col("spec_json").str.replace('"ret_48"', '"ret_4800"'))
    before = wh.read("backtest_metrics", PartitionLayout()).filter(
        pl.col("blueprint") == "momentum_v1")
    wh.replace("strategy_blueprints", pl.concat([catalog.filter(
        pl.col("blueprint") != "momentum_v1"), bad]), PartitionLayout(), None)
    try:
        runner = Runner(instance, warehouse_config(root), quiet=True)
        assert not runner.execute("backtest_job", "bad", partition_key="momentum_v1|default")
        assert _step_failure(instance) == (
            "refused before simulating:\nmomentum_v1: entry.condition.feature: unknown "
            "feature 'ret_4800'")
        after = wh.read("backtest_metrics", PartitionLayout()).filter(
            pl.col("blueprint") == "momentum_v1")
        assert after.equals(before)  # nothing written
    finally:
        wh.replace("strategy_blueprints", catalog, PartitionLayout(), None)


def _check_statuses(instance, specs, partition=None) -> dict[str, str]:
    keys = [dg.AssetCheckKey(dg.AssetKey(spec.asset_key.path), spec.name) for spec in specs]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    return {f"{k.asset_key.to_user_string()}:{k.name}": r.status.value
            for k, r in records.items()}


@pytest.fixture(scope="module")
def evaluated(backtested):
    root, instance = backtested
    config = warehouse_config(root)
    assert backtest(instance=instance, quiet=True, resources_config=config,
                    job="walkforward_job")
    assert report(instance=instance, quiet=True, resources_config=config)
    return root, instance


def test_walk_forward_of_every_blueprint_with_trials_and_checks(evaluated):
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    summary = wh.read("walkforward_summary", PartitionLayout())
    assert sorted(summary["blueprint"]) == sorted(catalog["blueprint"])
    tested = wh.read("phase2_fdr", PartitionLayout()).filter(
        pl.col("status") == "tested").height
    trials = dict(zip(summary["blueprint"], summary["trials"], strict=True))
    assert trials["momentum_v1"] == 36  # its grid alone: a hand-written blueprint
    assert trials["p2_volatility_shock_continuation_60m_all"] == 9 + tested
    # 6 rolling folds of 3 days after 13 days of training; every combination in sample
    results = wh.read("walkforward_results", PartitionLayout())
    mom = results.filter(pl.col("blueprint") == "momentum_v1")
    assert mom.filter(pl.col("sample") == "train").height == 6 * 36
    assert mom.filter(pl.col("sample") == "test")["fold"].sort().to_list() == list(range(6))
    folds = wh.read("walkforward_folds", PartitionLayout())
    assert folds.filter((pl.col("blueprint") == "momentum_v1")
                        & (pl.col("kind") == "cpcv"))["fold"].n_unique() == 15
    # The planted effect survives out of sample and its deflated Sharpe says so.
    planted = summary.filter(pl.col("blueprint") == "p2_volatility_shock_continuation_60m_all"
                             ).row(0, named=True)
    assert planted["deflated_sharpe"] > 0.95 and planted["oos_sharpe"] > 1
    statuses = _check_statuses(instance, [*FOLD_CHECKS, *WALKFORWARD_CHECKS, *REPORT_CHECKS])
    assert statuses and set(statuses.values()) == {"SUCCEEDED"}, statuses


def test_promotions_and_the_research_report(evaluated):
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    decisions = wh.read("promotion_decisions", PartitionLayout())
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    assert sorted(decisions["blueprint"]) == sorted(catalog["blueprint"])
    rev = decisions.filter(pl.col("blueprint") == "reversion_v1").row(0, named=True)
    assert (rev["to_stage"], rev["decision"]) == ("archived", "archive")
    assert "deflated Sharpe over 36 trials" in rev["reasons"]
    promoted = decisions.filter(pl.col("decision") == "promote")
    assert promoted.height >= 1 and (promoted["to_stage"] == "demo").all()
    row = wh.read("research_report", PartitionLayout()).row(0, named=True)
    data = Path(row["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == row["sha256"]
    html = data.decode()
    for section in SECTIONS:
        assert f'<section id="{section}"' in html
    assert "http://" not in html and "https://" not in html
    assert row["promoted"] == promoted.height
    summary = html[html.index('<section id="summary">'):html.index("</section>")]
    assert "funding prints missing (run as no payment)" in summary
    assert "constant funding runs" in summary
    event = instance.get_latest_materialization_event(dg.AssetKey("research_report"))
    assert "base64," in event.asset_materialization.metadata["chart"].value


def test_tear_sheets_show_the_warehouse_numbers(evaluated):
    """A tear sheet per blueprint beside the report, linked from it; each page's total return,
    Sharpe, max drawdown, trades (and its hypothesis's q) are the warehouse's, to the last
    bit, and its charts name the hashes stamped on the backtest."""
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    sheets = wh.read("tear_sheets", PartitionLayout())
    metrics = wh.read("backtest_metrics", PartitionLayout())
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    fdr = wh.read("phase2_fdr", PartitionLayout())
    decisions = wh.read("promotion_decisions", PartitionLayout())
    assert sorted(sheets.filter(pl.col("kind") == "blueprint")["name"]) == sorted(
        catalog["blueprint"])
    report = Path(wh.read("research_report", PartitionLayout())["path"][0])
    links = dict(re.findall(r'<a class="sheet" href="([^"]+)">([^<]+)</a>',
                            report.read_text()))
    for row in sheets.iter_rows(named=True):
        path = Path(row["path"])
        assert path.parent == report.parent / "tear_sheets"
        page = path.read_text()
        assert hashlib.sha256(page.encode()).hexdigest() == row["sha256"]
        assert row["bytes"] < 5_000_000
        name = row["name"]
        assert (report.parent / {v: k for k, v in links.items()}[name]).resolve() == path
        m = metrics.filter(pl.col("blueprint") == name).row(0, named=True)
        got = page_values(page)
        for key in ("total_return", "sharpe", "max_drawdown", "trades"):
            assert float(got[key]) == m[key] == row[key], (name, key)
        decision = decisions.filter(pl.col("blueprint") == name)["decision"][0]
        assert f'data-key="decision">{decision}<' in page
        assert f"spec {m['spec_hash'][:12]} \u00b7 data {m['dataset_hash'][:12]}" in page
        hyp = catalog.filter(pl.col("blueprint") == name)["hypothesis_id"][0]
        if hyp is not None:
            assert float(got["q"]) == fdr.filter(pl.col("hypothesis_id") == hyp)["q"][0]
    survivors = fdr.filter(pl.col("survivor"))
    shown = dict(re.findall(r"<code>(h_[0-9a-f]+)</code>.*?data-key=\"q\" data-value=\"([^\"]+)\"",
                            report.read_text()))
    assert {h: float(q) for h, q in shown.items()} == dict(zip(
        survivors["hypothesis_id"], survivors["q"], strict=True))
    event = instance.get_latest_materialization_event(dg.AssetKey("tear_sheets"))
    meta = event.asset_materialization.metadata
    assert meta["sheets"].value == sheets.height
    assert meta["folder"].value == str(report.parent / "tear_sheets")
    assert "momentum_v1" in meta["headline"].value


def test_every_backtest_and_walk_forward_is_an_epoch_with_its_files(evaluated):
    """run_epochs (built with the report): one backtest and one walk-forward epoch per
    blueprint, each with the run that produced it and its four files; the files hold the
    table's verdict and the warehouse's figures and trades."""
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    epochs = wh.read("run_epochs", PartitionLayout())
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    for stage in ("backtest", "walkforward"):
        mine = epochs.filter(pl.col("stage") == stage)
        assert sorted(mine["blueprint"]) == sorted(catalog["blueprint"]), stage
    metrics = wh.read("backtest_metrics", PartitionLayout())
    trades = wh.read("backtest_trades", PartitionLayout())
    decisions = wh.read("promotion_decisions", PartitionLayout())
    for row in epochs.iter_rows(named=True):
        files = read_epoch(Path(row["folder"]))
        assert files["summary.json"]["verdict"] == row["verdict"]
        assert files["config.json"]["run_id"] == row["run_id"]
        run = instance.get_run_by_id(row["run_id"])
        assert run is not None and run.job_name == f"{row['stage']}_job"
        name = row["blueprint"]
        if row["stage"] == "backtest":
            m = metrics.filter(pl.col("blueprint") == name).row(0, named=True)
            assert files["results.json"]["sharpe"] == pytest.approx(m["sharpe"], rel=1e-12)
            assert len(files["trades"]) == trades.filter(pl.col("blueprint") == name).height
        else:  # the decision its evidence got: the study's promotion decision
            d = decisions.filter(pl.col("blueprint") == name).row(0, named=True)
            assert (row["verdict"], row["to_stage"]) == (d["decision"], d["to_stage"])
    statuses = _check_statuses(instance, EPOCH_CHECKS)
    assert statuses and set(statuses.values()) == {"SUCCEEDED"}, statuses


def test_a_promotion_decision_is_reproducible(evaluated):
    """Deciding again moves promoted blueprints on from demo (live needs demo days), then the
    same inputs give the same decisions, hash for hash."""
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    first = wh.read("promotion_decisions", PartitionLayout()).sort("blueprint")
    config = warehouse_config(root)
    assert report(instance=instance, quiet=True, resources_config=config)
    second = wh.read("promotion_decisions", PartitionLayout()).sort("blueprint")
    assert second["from_stage"].to_list() == first["to_stage"].to_list()
    demo = second.filter(pl.col("from_stage") == "demo")
    assert (demo["to_stage"] == "demo").all() and demo["reasons"].str.contains(
        "live needs 30 days of demo trading").all()
    assert report(instance=instance, quiet=True, resources_config=config)
    third = wh.read("promotion_decisions", PartitionLayout()).sort("blueprint")
    assert third.equals(second)


def test_a_portfolio_of_the_approved_edges_as_one_netted_book(evaluated):
    """Contracts reviewed at every rebalance on the evidence before it; only edges approved
    as of a rebalance are weighted there; every check passes; the book reconciles."""
    root, instance = evaluated
    runner = Runner(instance, warehouse_config(root), quiet=True)
    for portfolio in REGISTRY.portfolios:
        assert runner.execute("portfolio_job", portfolio,
                              partition_key=f"{portfolio}|default"), portfolio
    wh = WarehouseResource(data_root=str(root)).warehouse()
    contracts = wh.read("edge_contracts", PartitionLayout())
    catalog = wh.read("strategy_blueprints", PartitionLayout())
    weights_all = wh.read("portfolio_weights", PartitionLayout())
    for portfolio in REGISTRY.portfolios:
        spec = REGISTRY.portfolios[portfolio]
        mine = contracts.filter(pl.col("portfolio") == portfolio)
        reviews = sorted(mine["as_of"].unique())
        # the month: rebalances after 14, 21 and 28 days, each a review of every blueprint
        assert [r.day for r in reviews] == [15, 22, 29], reviews
        assert mine.height == len(reviews) * catalog.height
        assert mine.group_by("edge").len()["len"].unique().to_list() == [len(reviews)]
        weights = weights_all.filter(pl.col("portfolio") == portfolio)
        assert sorted(weights["rebalance_ts"].unique()) == reviews
        approved = mine.filter(pl.col("state") == "APPROVED").select(
            pl.col("as_of").alias("rebalance_ts"), "edge", pl.lit(True).alias("ok"))
        joined = weights.join(approved, on=["rebalance_ts", "edge"], how="left")
        assert (joined["eligible"] == joined["ok"].fill_null(False)).all()
        assert (joined.filter(~pl.col("eligible"))["weight"] == 0).all()
        metrics = wh.read("portfolio_metrics", PartitionLayout()).filter(
            pl.col("portfolio") == portfolio)
        assert sorted(metrics["book"]) == ["book", "equal_weight"]
        assert set(metrics["selection"]) == {spec.selection}
        book = metrics.filter(pl.col("book") == "book").row(0, named=True)
        assert book["edges"] == weights["edge"].n_unique()
        assert book["max_target_gross"] <= spec.limits.gross_max + 1e-9
    checks = runner.checks
    failed = {k: n for k, n in checks.items() if k[1] != "passed" and k[0] in (
        "weights_within_caps", "turnover_within_budget", "exposure_within_limits",
        "equity_reconciles", "schema")}
    assert not failed, failed
    assert checks[("equity_reconciles", "passed")] == len(REGISTRY.portfolios)


def test_the_first_demo_day_after_the_study(evaluated):
    """A day after the study lands: demo_days paper-trades every blueprint the promotion put
    in demo through it, one row each, on that day's 288 bars; a rerun of the day is the same
    row (the demo is causal: tests/integration/test_demo_stage.py has the days arriving one
    by one, slow)."""
    root, instance = evaluated
    config = warehouse_config(root)
    day = dt.date(2024, 2, 1)
    assert run(day, day, None, instance=instance, quiet=True, resources_config=config)
    runner = Runner(instance, config, quiet=True)
    assert runner.execute("demo_job", "demo", partition_key=day.isoformat())
    wh = WarehouseResource(data_root=str(root)).warehouse()
    promoted = wh.read("promotion_decisions", PartitionLayout()).filter(
        pl.col("to_stage") == "demo")["blueprint"].sort().to_list()
    rows = wh.read("demo_days", PartitionLayout())
    assert promoted and rows["blueprint"].sort().to_list() == promoted
    assert (rows["date"] == day).all() and (rows["bars"] == 288).all()
    assert (rows["demo_days"] == 1).all() and (rows["stage"] == "demo").all()
    assert rows["reasons"].str.contains("live needs 30 days").all()
    assert runner.execute("demo_job", "demo again", partition_key=day.isoformat())
    assert wh.read("demo_days", PartitionLayout()).sort("blueprint").equals(
        rows.sort("blueprint"))
    statuses = _check_statuses(instance, DEMO_CHECKS)
    assert statuses and set(statuses.values()) == {"SUCCEEDED"}, statuses


def test_missing_funding_refuses_the_backtest_and_walk_forward_unless_the_study_allows(
        evaluated, tmp_path):
    """A funding print gone from the warehouse: both runs refuse naming it, nothing written;
    a study allowing missing funding backtests over it and counts it. Runs last: it rewrites
    momentum_v1's metrics."""
    root, instance = evaluated
    wh = WarehouseResource(data_root=str(root)).warehouse()
    where = "symbol = 'BTCUSDT' AND ts = TIMESTAMP '2024-01-10 08:00:00'"
    with wh.connect(read_only=True) as conn:
        gone = conn.sql(f"SELECT * FROM raw_funding_rates WHERE {where}").pl()  # noqa: S608
    assert gone.height == 1
    before = wh.read("backtest_metrics", PartitionLayout()).filter(
        pl.col("blueprint") == "momentum_v1")
    with wh.connect() as conn:
        conn.execute(f"DELETE FROM raw_funding_rates WHERE {where}")  # noqa: S608
    try:
        runner = Runner(instance, warehouse_config(root), quiet=True)
        for job in ("backtest_job", "walkforward_job"):
            assert not runner.execute(job, "gap", partition_key="momentum_v1|default")
            failure = _step_failure(instance)
            assert "funding: 1 funding print(s) missing" in failure, failure
            assert "BTCUSDT 1 missing (2024-01-10 08:00)" in failure, failure
        after = wh.read("backtest_metrics", PartitionLayout()).filter(
            pl.col("blueprint") == "momentum_v1")
        assert after.equals(before)  # nothing written

        # The default study's specs cannot change under it: a new study allows the gap.
        specs = tmp_path / "specs"
        shutil.copytree(REGISTRY.specs_dir, specs)
        default = (specs / "studies" / "default.yaml").read_text()
        (specs / "studies" / "gaps_allowed.yaml").write_text(
            default.replace("name: default", "name: gaps_allowed")
            .replace("allow_missing_funding: false", "allow_missing_funding: true"))
        allowed = Runner(instance, {**warehouse_config(root),
                                    "specs": {"config": {"specs_dir": str(specs)}}}, quiet=True)
        instance.add_dynamic_partitions("study", ["gaps_allowed"])
        for job, key in (("study_job", "gaps_allowed"), ("blueprints_job", "gaps_allowed"),
                         ("backtest_job", "momentum_v1|gaps_allowed")):
            assert allowed.execute(job, "allowed", partition_key=key), job
        m = wh.read("backtest_metrics", PartitionLayout()).filter(
            (pl.col("blueprint") == "momentum_v1") & (pl.col("study") == "gaps_allowed")
        ).row(0, named=True)
        assert m["funding_missing"] == 1
        # and the default study's rows are untouched
        assert wh.read("backtest_metrics", PartitionLayout()).filter(
            (pl.col("blueprint") == "momentum_v1") & (pl.col("study") == "default")
        ).equals(before)
    finally:
        with wh.connect() as conn:
            conn.register("gone", gone.to_arrow())
            conn.execute("INSERT INTO raw_funding_rates BY NAME SELECT * FROM gone")


def test_the_alpha_bundle_of_the_month_with_its_checks_files_and_export(month):
    """The alpha job of the month: every blocking check passes; scores only after the first
    refit; the stored signals equal the pure signals of the warehouse's bars; the two JSON
    report files are valid; the export files hold the edge_candidates table."""
    from backtest_assets.alpha import export
    from backtest_assets.alpha.run import universe_rule
    from backtest_assets.alpha.signals import SIGNALS
    from backtest_assets.alpha.universe import snapshots
    from backtest_assets.defs.alpha.assets import ALPHA_CHECKS, study_panel

    root, instance = month
    runner = Runner(instance, warehouse_config(root), quiet=True)
    for name in REGISTRY.alpha:
        assert runner.execute("alpha_job", name, partition_key=f"{name}|default"), name
    names = {c.name for c in ALPHA_CHECKS}
    failed = {k: n for k, n in runner.checks.items() if k[0] in names and k[1] != "passed"}
    assert not failed, failed
    assert runner.checks[("members_were_liquid", "passed")] == len(REGISTRY.alpha)
    wh = WarehouseResource(data_root=str(root)).warehouse()
    spec = REGISTRY.alpha["combined_model_v1"]
    model = wh.study_rows("alpha_model", "default")
    scores = wh.study_rows("alpha_scores", "default")
    assert model.height == 3 and model["refit_ts"].min() == dt.datetime(2024, 1, 15)
    assert scores["ts"].min() >= model["refit_ts"].min() and scores.height
    gated = scores.filter(pl.col("regime").is_in(list(spec.regime.allowed)).not_())
    assert gated["gated_score"].is_nan().all()
    # the stored signals are the pure ones on the warehouse's bars
    panel, _, _ = study_panel(wh, REGISTRY.studies["default"], REGISTRY.base_minutes)
    _, member = snapshots(panel, universe_rule(REGISTRY.universes[spec.universe]))
    stored = wh.study_rows("alpha_signals", "default").sort("ts", "symbol")
    for name in spec.signals:
        pure = SIGNALS[name](panel, member).ravel()
        keep = np.isin(np.repeat(panel.ts, len(panel.symbols)),
                       stored["ts"].to_numpy()) & np.isfinite(pure)
        np.testing.assert_array_equal(stored[name].drop_nans().drop_nulls().to_numpy(),
                                      pure[keep], err_msg=name)
    folder = sorted((root / "reports" / "default").glob("*/alpha/combined_model_v1"))[-1]
    for file in ("conditional_expectancy.json", "conditional_expectancy_robustness.json"):
        doc = json.loads((folder / file).read_text())
        assert doc["horizon_bars"] == 12 and set(doc["signals"]) >= set(spec.signals)
    table = wh.study_rows("edge_candidates", "default").drop("alpha_model")
    csv = root / "exports" / "default" / "combined_model_v1" / "edge_candidates_normalized.csv"
    assert export.read(csv).sort("candidate_id").equals(
        table.select(list(export.EDGE_CANDIDATE_COLUMNS)).sort("candidate_id"))
    # the scores are one more blueprint: cataloged, backtested through the engine
    config = warehouse_config(root)
    assert backtest(["alpha_combined_model_v1"], instance=instance, quiet=True,
                    resources_config=config)
    catalog = wh.study_rows("strategy_blueprints", "default")
    row = catalog.filter(pl.col("blueprint") == "alpha_combined_model_v1").row(0, named=True)
    assert row["source"] == "alpha"
    assert row["entry"] == "alpha combined_model_v1 quantile 0.2 every 12 bars"
    trades = wh.study_rows("backtest_trades", "default").filter(
        pl.col("blueprint") == "alpha_combined_model_v1")
    assert trades.height and trades["entry_ts"].min() > model["refit_ts"].min()
