"""Ingest -> bars_15m for one symbol-year of synthetic 1m data, with and without Dagster.

Each variant runs in a fresh process (so peak RSS is its own) on a fresh data root:

- ``dagster``: ``market_data_job`` as one single-run backfill over 366 days x 1 symbol,
  in-process executor, on a real Dagster instance with SQLite storage (what ``make ui`` and
  ``make demo`` use): all seven assets and their checks.
- ``dagster_memory``: the same run on an in-memory instance, which separates Dagster's
  execution overhead from the cost of persisting its per-partition events.
- ``plain``: the reference, the same work without Dagster: the same source, collection,
  checks, warehouse writes and reads, and bar computations, called directly.
- ``dagster_postgres``: the same run on the Postgres instance of real work
  (``dagster_home/postgres``, a local durable cluster started for the benchmark), with the
  CLI's run-creation settings and pooled connection (issue 20: <= 1.15x plain).
- ``read``: reading the year back from DuckDB (every table of the job) into polars.

Dagster overhead = (dagster - plain) / dagster, for each instance storage. Targets (issue 2):
under 60 s for the symbol-year end to end on 2 cores; Dagster overhead under 10 %.

    .venv/bin/python bench/ingest_bars.py [--days 366] [--json bench/results/ingest_bars.json]
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
TABLES = ["raw_perp_klines_1m", "raw_spot_klines_1m", "raw_mark_price_klines_1m",
          "raw_premium_index_klines_1m", "raw_funding_rates", "raw_open_interest",
          "bars_1m", "bars_5m", "bars_15m"]


def variant_dagster(days: int) -> dict:
    import dagster as dg

    with dg.instance_for_test(temp_dir=os.environ["DAGSTER_HOME"]) as instance:
        return _timed_run(days, instance)


def variant_dagster_postgres(days: int) -> dict:
    """The instance of real work: dagster_home/postgres/dagster.yaml on the server the parent
    started (DAGSTER_PG_URL); the CLI's runner sets the run-creation settings and pools the
    connection itself (backtest_assets.instance.prepare)."""
    import dagster as dg

    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(
        (REPO / "dagster_home" / "postgres" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return _timed_run(days, instance)


def variant_dagster_memory(days: int) -> dict:
    import dagster as dg

    return _timed_run(days, dg.DagsterInstance.ephemeral())


def _timed_run(days: int, instance) -> dict:
    from backtest_assets.cli import run

    end = START + dt.timedelta(days=days - 1)
    t0 = time.perf_counter()
    ok = run(START, end, [SYMBOL], instance=instance, quiet=True, research=False)
    wall = time.perf_counter() - t0
    assert ok, "the job failed"
    (dagster_run,) = instance.get_runs()
    events = instance.get_records_for_run(dagster_run.run_id, limit=1_000_000).records
    return {"wall_s": wall, "steps_s": _step_seconds(instance), "events": len(events)}


def _step_seconds(instance) -> dict[str, float]:
    """Per-step wall time from the run's STEP_START/STEP_SUCCESS events."""
    import dagster as dg

    (run,) = instance.get_runs()
    starts, out = {}, {}
    for rec in instance.get_records_for_run(run.run_id, limit=1_000_000).records:
        ev = rec.event_log_entry
        if ev.dagster_event is None:
            continue
        if ev.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[ev.step_key] = ev.timestamp
        elif ev.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            out[ev.step_key] = round(ev.timestamp - starts[ev.step_key], 2)
    return out


def variant_plain(days: int) -> dict:
    """The job's work without Dagster: same functions, same warehouse writes (the rows, the
    side tables and each key's lineage record) and reads (bars_1m joins the mark price)."""
    import polars as pl

    from backtest_assets.core import bars as core_bars
    from backtest_assets.core.frames import FUNDING_SCHEMA, KLINE_SCHEMA, OPEN_INTEREST_SCHEMA
    from backtest_assets.core.ingest import collect
    from backtest_assets.core.lineage import LineageWrite
    from backtest_assets.definitions import defs
    from backtest_assets.defs.bars.checks import bars_contract, source_bars_reconcile
    from backtest_assets.defs.ingest.checks import (
        FUNDING_CONTRACT,
        KLINES_CONTRACT,
        OPEN_INTEREST_CONTRACT,
        PREMIUM_KLINES_CONTRACT,
    )
    from backtest_assets.defs.shared import lineage_spec
    from backtest_assets.partitions import BARS_PARTITION_EXPR, TS_PARTITION_EXPR
    from backtest_assets.resources import MarketSourceResource, WarehouseResource
    from backtest_assets.resources.io_manager import layout_for
    from backtest_assets.schemas.checks import evaluate
    from backtest_assets.sources.synthetic import SyntheticSource
    from backtest_assets.specs import load_registry
    from backtest_assets.warehouse import SideWrite

    registry, identity = load_registry(), MarketSourceResource().identity
    specs = {name: lineage_spec(defs.resolve_assets_def(name), registry, identity)
             for name in TABLES}  # what each key's lineage records (not timed: definitions)
    t0 = time.perf_counter()
    wh = WarehouseResource().warehouse()
    src = SyntheticSource(seed=7)
    keys = [(START + dt.timedelta(days=i), SYMBOL) for i in range(days)]
    key_dicts = [{"date": d.isoformat(), "symbol": s} for d, s in keys]
    timings = {}

    def write(name, frame, contract, expr, side=(), extra=(), incomplete=()):
        outcomes = [*evaluate(frame, contract, keys=keys), *extra]
        assert not any(o.blocking_failure for o in outcomes), name
        layout = layout_for({"partition_expr": expr})
        wh.replace(name, frame, layout, layout.boxes(key_dicts), side=side,
                   lineage=LineageWrite(specs[name], tuple(keys), "plain",
                                        frozenset(incomplete)))

    def read(name, expr):
        layout = layout_for({"partition_expr": expr})
        return wh.read(name, layout, layout.boxes(key_dicts),
                       order_by=[*layout.value_dims.values(), layout.time_col])

    ingest = [
        ("raw_funding_rates", src.funding_rates, FUNDING_SCHEMA, FUNDING_CONTRACT,
         TS_PARTITION_EXPR),
        ("raw_open_interest", src.open_interest, OPEN_INTEREST_SCHEMA, OPEN_INTEREST_CONTRACT,
         TS_PARTITION_EXPR),
        ("raw_perp_klines_1m", lambda s, d: src.klines_1m("perp", s, d), KLINE_SCHEMA,
         KLINES_CONTRACT, BARS_PARTITION_EXPR),
        ("raw_spot_klines_1m", lambda s, d: src.klines_1m("spot", s, d), KLINE_SCHEMA,
         KLINES_CONTRACT, BARS_PARTITION_EXPR),
        ("raw_mark_price_klines_1m", src.mark_klines_1m, KLINE_SCHEMA, KLINES_CONTRACT,
         BARS_PARTITION_EXPR),
        ("raw_premium_index_klines_1m", src.premium_klines_1m, KLINE_SCHEMA,
         PREMIUM_KLINES_CONTRACT, BARS_PARTITION_EXPR),
    ]
    for name, fetch, schema, contract, expr in ingest:
        t = time.perf_counter()
        got = collect(name, keys, fetch, schema)
        write(name, got.frame, contract, expr, side=[
            SideWrite("ingest_quarantine", got.quarantine, got.keys),
            SideWrite("ingest_files", got.files, got.keys)], incomplete=got.missing_keys)
        timings[name] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    one = pl.concat([core_bars.bars_1m(read("raw_perp_klines_1m", BARS_PARTITION_EXPR), "perp",
                                       read("raw_mark_price_klines_1m", BARS_PARTITION_EXPR)),
                     core_bars.bars_1m(read("raw_spot_klines_1m", BARS_PARTITION_EXPR), "spot")]
                    ).sort(core_bars.SORT_KEYS)
    write("bars_1m", one, bars_contract(1), BARS_PARTITION_EXPR)
    timings["bars_1m"] = round(time.perf_counter() - t, 2)
    for minutes in (15, 5):
        t = time.perf_counter()
        src_1m = read("bars_1m", BARS_PARTITION_EXPR)
        frame = core_bars.resample(src_1m, minutes)
        write(f"bars_{minutes}m", frame, bars_contract(minutes), BARS_PARTITION_EXPR,
              extra=[source_bars_reconcile(frame, src_1m, minutes)])
        timings[f"bars_{minutes}m"] = round(time.perf_counter() - t, 2)
    return {"wall_s": time.perf_counter() - t0, "steps_s": timings}


def variant_read(days: int) -> dict:
    from backtest_assets.resources import WarehouseResource

    wh = WarehouseResource().warehouse()
    t0 = time.perf_counter()
    rows = {}
    with wh.connect(read_only=True) as conn:
        for t in TABLES:
            rows[t] = conn.sql(f"SELECT * FROM {t} ORDER BY ALL").pl().height  # noqa: S608
    return {"wall_s": time.perf_counter() - t0, "rows": rows,
            "warehouse_mb": wh.path.stat().st_size / 2**20}


VARIANTS = {"dagster": variant_dagster, "dagster_memory": variant_dagster_memory,
            "dagster_postgres": variant_dagster_postgres, "plain": variant_plain,
            "read": variant_read}


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
            loads["before"] = os.getloadavg()[0]
            plain = spawn(__file__, "plain", args.days, Path(tmp) / "plain")
            pg = spawn(__file__, "dagster_postgres", args.days, Path(tmp) / "postgres")
            plain2 = spawn(__file__, "plain", args.days, Path(tmp) / "plain2")
            loads["after postgres"] = os.getloadavg()[0]
            dag = spawn(__file__, "dagster", args.days, Path(tmp) / "dagster")
            mem = spawn(__file__, "dagster_memory", args.days, Path(tmp) / "memory")
            read = spawn(__file__, "read", args.days, Path(tmp) / "dagster")
            loads["after"] = os.getloadavg()[0]
        finally:
            cluster.stop()
    # the reference twice, around the Postgres run: the better of the two (a quiet moment)
    plain = min(plain, plain2, key=lambda r: r["wall_s"])
    overhead = (dag["wall_s"] - plain["wall_s"]) / dag["wall_s"]
    overhead_mem = (mem["wall_s"] - plain["wall_s"]) / mem["wall_s"]
    print(f"ingest -> bars_15m, {SYMBOL}, {args.days} days of synthetic 1m data "
          f"(perp + spot + funding + OI), python {platform.python_version()}, "
          f"cpus {os.cpu_count()}")
    print(f"{'variant':<34} {'wall s':>8} {'process s':>10} {'peak MB':>8}")
    for label, r in (("plain (reference, no Dagster)", plain),
                     ("dagster, Postgres instance", pg),
                     ("dagster, SQLite instance", dag),
                     ("dagster, in-memory instance", mem),
                     ("read year back from DuckDB", read)):
        print(f"{label:<34} {r['wall_s']:>8.2f} {r['process_s']:>10.2f} {r['max_rss_mb']:>8.0f}")
    print(f"end to end (SQLite instance, incl. process start): {dag['process_s']:.1f} s "
          "(target < 60 s)")
    print(f"Dagster overhead, in-memory instance: {overhead_mem:.1%} "
          f"(dagster/plain = {mem['wall_s'] / plain['wall_s']:.3f}; target < 10 %)")
    per_event_ms = 1e3 * (dag["wall_s"] - mem["wall_s"]) / dag["events"]
    print(f"Dagster overhead, SQLite instance: {overhead:.1%} "
          f"(dagster/plain = {dag['wall_s'] / plain['wall_s']:.3f}); persisting the run's "
          f"{dag['events']:,} events costs {dag['wall_s'] - mem['wall_s']:.1f} s "
          f"({per_event_ms:.1f} ms per event)")
    print(f"Postgres instance (the instance of real work): dagster/plain = "
          f"{pg['wall_s'] / plain['wall_s']:.3f} in the run, code location import included; "
          f"{pg['process_s'] / plain['process_s']:.3f} for the whole process (target <= 1.15); "
          f"{pg['events']:,} events")
    print(load_line(loads))
    print("steps (s): plain " + json.dumps(plain["steps_s"]))
    print("           dagster Postgres " + json.dumps(pg["steps_s"]))
    print("           dagster SQLite " + json.dumps(dag["steps_s"]))
    print("           dagster memory " + json.dumps(mem["steps_s"]))
    print("rows read back: " + json.dumps(read["rows"])
          + f"; warehouse file {read['warehouse_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"days": args.days, "plain": plain, "dagster": dag, "dagster_memory": mem,
             "dagster_postgres": pg, "load_avg_1m": loads,
             "read": read, "overhead_sqlite": overhead, "overhead_memory": overhead_mem},
            indent=2))


if __name__ == "__main__":
    main()
