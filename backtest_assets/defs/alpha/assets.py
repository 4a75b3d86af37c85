"""The alpha bundle of a study (per study x alpha_model): the point-in-time liquid universe,
signals, the volatility regime, the orthogonalized ridge walked forward, its out-of-sample
scores, conditional expectancy and robustness, and the edge-candidate export.

``alpha_bundle`` writes its tables together or not at all; the computation is
:func:`backtest_assets.alpha.run.run_bundle` on the study's perp bars and funding (and its
events, for the expectancy per event type). The seeds' report files
(``conditional_expectancy.json``, ``conditional_expectancy_robustness.json``) go to the
run's report folder and ``edge_candidates_normalized.csv`` / ``.parquet`` to
``<data root>/exports/<study>/<alpha_model>/``.

Blocking checks beyond each table's pandera model: every member of a snapshot was liquid by
the data known then (recomputed independently from the bars with polars' rolling sums),
scores exist only out of sample (after the first refit, each from a model fitted before
it), and the signals do not change when the bars after a cut are removed (recomputed on the
panel cut at its middle bar).
"""

import datetime as dt
import json

import dagster as dg
import numpy as np
import polars as pl

from backtest_assets.alpha import export
from backtest_assets.alpha.panel import UniversePanel, panel_from_frames
from backtest_assets.alpha.run import BundleRun, run_bundle, universe_rule
from backtest_assets.alpha.signals import SIGNALS
from backtest_assets.alpha.universe import snapshots
from backtest_assets.defs.shared import (
    BY_STUDY_DIM,
    layer_checks,
    markdown_table,
    refuse_failed,
    report_folder,
    schema_result,
    study_boxes,
    symbol_layout,
)
from backtest_assets.defs.studies.assets import study_step
from backtest_assets.discovery.phase2 import frame_hash
from backtest_assets.partitions import (
    ALPHA_NAMES,
    BASE_BARS,
    STUDY_ALPHA_EXPR,
    study_alpha_partitions_def,
)
from backtest_assets.resources import SpecRegistryResource, WarehouseResource
from backtest_assets.schemas.alpha import (
    ALPHA_MODEL,
    ALPHA_SCORES,
    ALPHA_SIGNALS_MODEL,
    REGIME_SERIES,
    UNIVERSE_SNAPSHOT,
)
from backtest_assets.specs import spec_hash
from backtest_assets.warehouse import WarehouseError

TABLES = ("universe_snapshot", "alpha_signals", "regime_series", "alpha_model",
          "alpha_scores", "expectancy_report", "expectancy_robustness", "edge_candidates")
MODELS = {"universe_snapshot": UNIVERSE_SNAPSHOT, "alpha_signals": ALPHA_SIGNALS_MODEL,
          "regime_series": REGIME_SERIES, "alpha_model": ALPHA_MODEL,
          "alpha_scores": ALPHA_SCORES}
_CHECKS = {
    "members_were_liquid": ("universe_snapshot", "every member had a full trailing ADV "
                            "window of at least the universe's minimum, recomputed from the "
                            "bars known then"),
    "scores_out_of_sample": ("alpha_scores", "every score is at or after the first refit: "
                             "no bar is scored by a model fitted on it"),
    "signals_point_in_time": ("alpha_signals", "the signals before a cut are identical when "
                              "the bars after it are removed"),
}
_DATA = {dg.AssetKey(a) for a in (BASE_BARS, "event_table", "raw_funding_rates",
                                   "study_record")}
_INTERNAL = {
    "universe_snapshot": _DATA, "alpha_signals": {dg.AssetKey("universe_snapshot")},
    "regime_series": {dg.AssetKey("universe_snapshot")},
    "alpha_model": {dg.AssetKey("alpha_signals")},
    "alpha_scores": {dg.AssetKey("alpha_model"), dg.AssetKey("regime_series")},
    "expectancy_report": {dg.AssetKey("alpha_scores"), dg.AssetKey("alpha_signals")},
    "expectancy_robustness": {dg.AssetKey("alpha_scores"), dg.AssetKey("alpha_signals")},
    "edge_candidates": {dg.AssetKey("expectancy_report"), dg.AssetKey("phase2_fdr")},
}
ALPHA_CHECKS = layer_checks(list(MODELS), "schemas/alpha.py", _CHECKS,
                            study_alpha_partitions_def)


def study_panel(wh, study, interval_minutes: int
                ) -> tuple[UniversePanel, pl.DataFrame, pl.DataFrame | None]:
    """The study's perp bars and funding as a panel, the bars frame, its events."""
    boxes = study_boxes(study.symbols, study.start, study.end)
    bars = wh.read(BASE_BARS, symbol_layout("ts_open"), boxes,
                   order_by=("symbol", "ts_open", "market")).filter(pl.col("market") == "perp")
    funding = wh.read("raw_funding_rates", symbol_layout("ts"), boxes,
                      order_by=("symbol", "ts")).select("symbol", "ts", "funding_rate")
    try:
        events = wh.read("event_table", symbol_layout("ts"), boxes,
                         order_by=("symbol", "ts", "event_type"))
    except WarehouseError:  # no events yet: the expectancy per event type is left out
        events = None
    panel = panel_from_frames(bars, funding, study.symbols, boxes[0].start, boxes[0].end,
                              interval_minutes)
    return panel, bars, events


def liquid_members_problems(bars: pl.DataFrame, snapshot: pl.DataFrame, universe,
                            interval_minutes: int) -> list[str]:
    """Members whose trailing window, recomputed from the bars with polars, was not full or
    below the minimum ADV (independent of alpha.universe's cumulative sums)."""
    window = universe.adv_bars * universe.adv_interval_minutes // interval_minutes
    per_day = 1440 / (universe.adv_bars * universe.adv_interval_minutes)
    step = dt.timedelta(minutes=interval_minutes)
    grid = bars.select("symbol", "ts_open", "quote_volume").sort("symbol", "ts_open")
    adv = grid.with_columns(
        (pl.col("quote_volume").rolling_sum(window, min_samples=window).over("symbol")
         * per_day).alias("adv_check"),
        (pl.col("ts_open") - pl.col("ts_open").shift(window - 1).over("symbol")
         ).alias("span"))
    members = snapshot.filter(pl.col("member")).join(
        adv.rename({"ts_open": "ts"}), on=["symbol", "ts"], how="left")
    bad = members.filter(
        pl.col("adv_check").is_null()
        | (pl.col("span") != step * (window - 1))  # a gap inside the window
        | (pl.col("adv_check") < universe.min_adv_usd * (1 - 1e-9)))
    return [f"{r['symbol']} at {r['ts']}: a member without a full window of ADV >= "
            f"{universe.min_adv_usd:,.0f}" for r in bad.head(5).iter_rows(named=True)]


def _checks(run: BundleRun, bars, panel, spec, universe, interval: int, frames
            ) -> list[dg.AssetCheckResult]:
    liquid = liquid_members_problems(bars, run.snapshot, universe, interval)
    first = run.model["refit_ts"].min() if run.model.height else None
    scores = run.scores
    oos = []
    if scores.height and first is not None:
        early = scores.filter(pl.col("ts") < first)
        if early.height:
            oos.append(f"{early.height} scores before the first refit {first}")
    cut = len(panel.ts) // 2
    part = panel.rows(0, cut)
    _, m_full = snapshots(panel, universe_rule(universe))
    _, m_part = snapshots(part, universe_rule(universe))
    pit = [n for n in spec.signals
           if not np.array_equal(SIGNALS[n](panel, m_full)[:cut], SIGNALS[n](part, m_part),
                                 equal_nan=True)]
    return [
        dg.AssetCheckResult(check_name="members_were_liquid", asset_key="universe_snapshot",
                            passed=not liquid, description="; ".join(liquid) or None),
        dg.AssetCheckResult(check_name="scores_out_of_sample", asset_key="alpha_scores",
                            passed=not oos, description="; ".join(oos) or None),
        dg.AssetCheckResult(check_name="signals_point_in_time", asset_key="alpha_signals",
                            passed=not pit, description=f"changed when later bars were "
                            f"removed: {', '.join(pit)}" if pit else None,
                            metadata={"cut": str(panel.ts[cut])}),
        *[schema_result(t, frames[t], MODELS[t]) for t in MODELS],
    ]


@dg.multi_asset(
    outs={t: dg.AssetOut(kinds={"duckdb", "polars"}, group_name="alpha",
                         metadata={"partition_expr": STUDY_ALPHA_EXPR}) for t in TABLES},
    deps=[dg.AssetDep("study_record", partition_mapping=BY_STUDY_DIM),
          dg.AssetDep("phase2_fdr", partition_mapping=dg.MultiPartitionMapping({
              "study": dg.DimensionPartitionMapping("study", dg.IdentityPartitionMapping())})),
          *[dg.AssetDep(a, partition_mapping=dg.AllPartitionMapping())
            for a in (BASE_BARS, "event_table", "raw_funding_rates")]],
    # the lineage inside the bundle (one step computes it all): the data enter through the
    # universe; signals and regime follow it, the model the signals, the scores the model
    # and regime, the rest the scores
    internal_asset_deps=_INTERNAL,
    partitions_def=study_alpha_partitions_def,
    backfill_policy=dg.BackfillPolicy.multi_run(1),
    pool="duckdb",
    check_specs=ALPHA_CHECKS,
)
def alpha_bundle(context: dg.AssetExecutionContext, specs: SpecRegistryResource,
                 warehouse: WarehouseResource):
    """The study's universe, signals, regime, model, out-of-sample scores and expectancy."""
    reg, wh, study, name = study_step(context, "alpha_model", specs, warehouse)
    spec = reg.alpha[name]
    universe = reg.universes[spec.universe]
    panel, bars, events = study_panel(wh, study, reg.base_minutes)
    try:
        run = run_bundle(spec, universe, panel, events)
    except ValueError as exc:
        raise dg.Failure(description=f"alpha model {name} of study {study.name}: {exc}"
                         ) from None
    hashes = {"alpha": spec_hash(spec), "universe": spec_hash(universe),
              "dataset": frame_hash({"bars": bars}),
              "study": json.dumps(sorted(study.symbols))}
    key = [pl.lit(study.name).alias("study"), pl.lit(name).alias("alpha_model")]
    survivors = wh.study_rows("phase2_fdr", study.name)
    created = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    candidates = export.normalize([
        *([export.from_phase2(survivors.filter(pl.col("survivor")), study=study.name,
                              spec_hash=hashes["alpha"], dataset_hash=hashes["dataset"],
                              created_at=created)]
          if survivors is not None and survivors.height else []),
        export.from_alpha(run.by_signal, {"score": run.ic}, study=study.name,
                          horizon=spec.horizon, spec_hash=hashes["alpha"],
                          dataset_hash=hashes["dataset"], created_at=created)])
    frames = {
        "universe_snapshot": run.snapshot, "alpha_signals": run.signals,
        "regime_series": run.regime, "alpha_model": run.model, "alpha_scores": run.scores,
        "expectancy_report": run.expectancy, "expectancy_robustness": run.robustness,
        "edge_candidates": candidates}
    frames = {t: f.select(*key, pl.exclude("study", "alpha_model")) for t, f in frames.items()}
    checks = _checks(run, bars, panel, spec, universe, reg.base_minutes, frames)
    yield from refuse_failed(checks, f"alpha model {name} of study {study.name}")
    folder = report_folder(warehouse, study.name, context) / "alpha" / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for file, doc in run.reports(hashes).items():
        tmp = folder / f".{file}.tmp"
        tmp.write_text(json.dumps(doc, allow_nan=False, indent=1))
        tmp.replace(folder / file)
        files[file] = str(folder / file)
    csv, parquet = export.write(candidates, warehouse.root / "exports" / study.name / name)
    meta = {
        "alpha_scores": {"out_of_sample_ic": run.ic["ic"], "ic_lo": run.ic["lo"],
                         "ic_hi": run.ic["hi"], "bars": int(run.ic["bars"])},
        "alpha_model": {"refits": run.model.height, "coefficients": dg.MetadataValue.md(
            markdown_table(_coefficients(run.model)))},
        "expectancy_report": {"files": dg.MetadataValue.json(files), "spread": dg.MetadataValue.md(
            markdown_table(run.expectancy.filter(pl.col("bucket").str.contains("-"))))},
        "edge_candidates": {"csv": dg.MetadataValue.path(str(csv)),
                            "parquet": dg.MetadataValue.path(str(parquet))},
        "universe_snapshot": {"members_per_bar": float(
            run.snapshot.filter(pl.col("member")).group_by("ts").len()["len"].mean() or 0)},
    }
    for t in TABLES:
        yield dg.Output(frames[t], output_name=t,
                        metadata={"rows": frames[t].height, **meta.get(t, {})})
    yield from checks


def _coefficients(model: pl.DataFrame) -> pl.DataFrame:
    rows = [{"refit": r["refit_ts"], "lambda": r["lambda"], **json.loads(r["coefficients"])}
            for r in model.iter_rows(named=True)]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


defs = dg.Definitions(assets=[alpha_bundle]) if ALPHA_NAMES else dg.Definitions()
