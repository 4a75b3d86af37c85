"""pit_features + forward_labels + event_table for one symbol-year of 5m bars, one single run.

Set-up (not timed): a Dagster instance with SQLite storage and a warehouse holding a year of
synthetic market data for one symbol (ingest -> bars, as ``market_data_job``). Then, each in
a fresh process so that peak RSS is the variant's own:

- ``dagster``: ``research_job`` as one single-run backfill over the year (366 days x 1
  symbol), in-process executor, on that instance: the three assets and their checks.
- ``plain``: the reference, the same reads, computations, checks and writes without Dagster.

The same single run also goes on the Postgres instance of real work (``dagster_home/postgres``
on a local cluster, with the CLI's run-creation settings and pooled connection).
Targets (issues 3 and 20): at most 20 s and under 2 GB for the single run.

    .venv/bin/python bench/research.py [--days 366] [--json bench/results/research.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from harness import load_line, postgres_server, report_child, spawn

REPO = Path(__file__).resolve().parents[1]
START = dt.date(2024, 1, 1)
SYMBOL = "BTCUSDT"


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()  # $DAGSTER_HOME: SQLite storage, kept across processes


def setup(days: int) -> dict:
    from backtest_assets.cli import run

    t0 = time.perf_counter()
    end = START + dt.timedelta(days=days)  # one day more: the labels' look-ahead
    assert run(START, end, [SYMBOL], instance=_instance(), quiet=True, research=False)
    return {"wall_s": time.perf_counter() - t0}


def variant_dagster(days: int) -> dict:
    from backtest_assets.cli import Runner
    from backtest_assets.core.schedule import range_tags

    end = START + dt.timedelta(days=days - 1)
    instance = _instance()
    runner = Runner(instance, quiet=True)
    t0 = time.perf_counter()
    ok = runner.execute("research_job", "year", tags=range_tags(START, end, [SYMBOL]))
    wall = time.perf_counter() - t0
    assert ok, "research_job failed"
    (last,) = instance.get_runs(limit=1)
    steps = {}
    starts = {}
    for rec in instance.get_records_for_run(last.run_id, limit=1_000_000).records:
        ev = rec.event_log_entry
        if ev.dagster_event is None:
            continue
        if ev.dagster_event.event_type_value == "STEP_START":
            starts[ev.step_key] = ev.timestamp
        elif ev.dagster_event.event_type_value == "STEP_SUCCESS":
            steps[ev.step_key] = round(ev.timestamp - starts[ev.step_key], 2)
    return {"wall_s": wall, "steps_s": steps}


def variant_plain(days: int) -> dict:
    """The three assets' work without Dagster: same reads, functions, checks and writes."""
    import polars as pl

    from backtest_assets.defs.events.checks import EVENTS_CONTRACT
    from backtest_assets.defs.features.checks import FEATURES_CONTRACT, LABELS_CONTRACT
    from backtest_assets.defs.shared import keep_keys
    from backtest_assets.events.detect import detect_events_by_day
    from backtest_assets.features.compute import compute_features
    from backtest_assets.features.labels import compute_labels
    from backtest_assets.partitions import BARS_PARTITION_EXPR, BASE_BARS, REGISTRY
    from backtest_assets.partitions import TS_PARTITION_EXPR as TS_EXPR
    from backtest_assets.resources import WarehouseResource
    from backtest_assets.resources.io_manager import layout_for
    from backtest_assets.schemas.checks import evaluate

    wh = WarehouseResource().warehouse()
    reg = REGISTRY
    keys = [(START + dt.timedelta(days=i), SYMBOL) for i in range(days)]
    steps = {}

    def key_dicts(first: dt.date, last: dt.date) -> list[dict[str, str]]:
        n = (last - first).days + 1
        return [{"date": (first + dt.timedelta(days=i)).isoformat(), "symbol": SYMBOL}
                for i in range(n) if first + dt.timedelta(days=i) >= START]

    def read(table: str, expr: dict, first: dt.date, last: dt.date) -> pl.DataFrame:
        layout = layout_for({"partition_expr": expr})
        return wh.read(table, layout, layout.boxes(key_dicts(first, last)),
                       order_by=[*layout.value_dims.values(), layout.time_col])

    def write(table: str, frame: pl.DataFrame, contract, expr: dict) -> None:
        assert not any(o.blocking_failure for o in evaluate(frame, contract)), table
        layout = layout_for({"partition_expr": expr})
        wh.replace(table, frame, layout, layout.boxes(key_dicts(keys[0][0], keys[-1][0])))

    first, last = keys[0][0], keys[-1][0]
    warm = first - dt.timedelta(days=reg.feature_warmup_days)
    t0 = time.perf_counter()
    bars = read(BASE_BARS, BARS_PARTITION_EXPR, warm, last)
    features = compute_features(
        bars.filter(pl.col("market") == "perp"), bars.filter(pl.col("market") == "spot"),
        read("raw_funding_rates", TS_EXPR, warm, last),
        read("raw_open_interest", TS_EXPR, warm, last),
        list(reg.features.values()), interval_minutes=reg.base_minutes)
    features = keep_keys(features, keys, "ts_open")
    write("pit_features", features, FEATURES_CONTRACT, BARS_PARTITION_EXPR)
    steps["pit_features"] = round(time.perf_counter() - t0, 2)
    t = time.perf_counter()
    ahead = read(BASE_BARS, BARS_PARTITION_EXPR, first, last + dt.timedelta(days=1))
    labels = keep_keys(compute_labels(ahead.filter(pl.col("market") == "perp"),
                                      reg.label_bars()), keys, "ts_open")
    write("forward_labels", labels, LABELS_CONTRACT, BARS_PARTITION_EXPR)
    steps["forward_labels"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    feats = read("pit_features", BARS_PARTITION_EXPR, first - dt.timedelta(days=1), last)
    events = keep_keys(detect_events_by_day(feats, list(reg.events.values()),
                                            interval_minutes=reg.base_minutes,
                                            days=[d for d, _ in keys]), keys, "ts")
    write("event_table", events, EVENTS_CONTRACT, TS_EXPR)
    steps["event_table"] = round(time.perf_counter() - t, 2)
    return {"wall_s": time.perf_counter() - t0, "steps_s": steps,
            "rows": {"pit_features": features.height, "forward_labels": labels.height,
                     "event_table": events.height}}


VARIANTS = {"setup": setup, "dagster": variant_dagster, "plain": variant_plain}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=366)
    p.add_argument("--child")
    p.add_argument("--json")
    args = p.parse_args()
    if args.child:
        report_child(VARIANTS[args.child](args.days))
        return
    loads = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = postgres_server(Path(tmp))
        try:
            worlds, preps = {}, {}
            for kind, yaml in (("sqlite", "dagster.yaml"), ("postgres", "postgres/dagster.yaml")):
                root = Path(tmp) / kind
                (root / "home").mkdir(parents=True)
                (root / "home" / "dagster.yaml").write_text(
                    (REPO / "dagster_home" / yaml).read_text())
                worlds[kind] = root
                preps[kind] = spawn(__file__, "setup", args.days, root)["wall_s"]
            loads["before"] = os.getloadavg()[0]
            dag = spawn(__file__, "dagster", args.days, worlds["sqlite"])
            pg = spawn(__file__, "dagster", args.days, worlds["postgres"])
            plain = spawn(__file__, "plain", args.days, worlds["sqlite"])
            loads["after"] = os.getloadavg()[0]
        finally:
            cluster.stop()
    print(f"pit_features + forward_labels + event_table, {SYMBOL}, {args.days} days of 5m bars "
          f"(set-up: market data {preps['sqlite']:.1f} s on SQLite, {preps['postgres']:.1f} s on "
          f"Postgres), python {platform.python_version()}, "
          f"cpus {os.cpu_count()}")
    print(f"{'variant':<36} {'wall s':>8} {'process s':>10} {'peak MB':>8}")
    for label, r in (("plain (reference, no Dagster)", plain),
                     ("dagster single run, SQLite instance", dag),
                     ("dagster single run, Postgres instance", pg)):
        print(f"{label:<38} {r['wall_s']:>8.2f} {r['process_s']:>10.2f} {r['max_rss_mb']:>8.0f}")
    for kind, r in (("SQLite", dag), ("Postgres", pg)):
        print(f"{kind}: dagster / plain = {r['wall_s'] / plain['wall_s']:.2f}; single run "
              f"{r['wall_s']:.1f} s (target <= 20 s), peak {r['max_rss_mb']:.0f} MB "
              "(target < 2 GB)")
    print(load_line(loads, "figures"))
    print("steps (s): plain " + json.dumps(plain["steps_s"]))
    print("           dagster SQLite " + json.dumps(dag["steps_s"]))
    print("           dagster Postgres " + json.dumps(pg["steps_s"]))
    print("rows: " + json.dumps(plain["rows"]))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"days": args.days, "setup_s": preps, "dagster": dag, "dagster_postgres": pg,
             "plain": plain, "load_avg_1m": loads}, indent=2))


if __name__ == "__main__":
    main()
