"""Dagster's own cost of a range run, apart from any work: the floor under ingest -> bars.

``market_data_job`` over a symbol-year is one range run of 9 date x symbol assets: Dagster
stores one materialization per asset and partition (3,294 for 366 days). This benchmark runs
the same shape with assets that do nothing (the same multi-partitions, single-run backfill
policy, dependency chain and number of asset checks, an output of one row and no IO manager
work) on the Postgres instance of real work, with the CLI's run-creation settings and pooled
connection, in process. What it takes is the part of ``bench/ingest_bars.py``'s Dagster run
that no change to this project's code can remove; set beside the plain run it gives the best
ratio a range run can reach on this machine.

    .venv/bin/python bench/dagster_floor.py [--days 366] [--plain-s 16.2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import dagster as dg
from harness import load_line, postgres_server

REPO = Path(__file__).resolve().parents[1]
INGEST = ["raw_perp_klines_1m", "raw_spot_klines_1m", "raw_mark_price_klines_1m",
          "raw_premium_index_klines_1m", "raw_funding_rates", "raw_open_interest"]
CHECKS_PER_ASSET = 9  # the contract's checks (schema, values, keys, time, rows, days)


def floor_defs() -> dg.Definitions:
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2025-01-01")
    parts = dg.MultiPartitionsDefinition(
        {"date": days, "symbol": dg.StaticPartitionsDefinition(["BTCUSDT"])})

    def make(name: str, deps: list[str]) -> dg.AssetsDefinition:
        checks = [dg.AssetCheckSpec(f"c{i}", asset=name) for i in range(CHECKS_PER_ASSET)]

        @dg.asset(name=name, deps=deps, partitions_def=parts, check_specs=checks,
                  backfill_policy=dg.BackfillPolicy.single_run(), pool="duckdb",
                  io_manager_key="mem")
        def _asset(context):  # (a string annotation Dagster cannot resolve here)
            yield dg.Output(None, metadata={"rows": len(context.partition_keys)})
            for c in checks:
                yield dg.AssetCheckResult(check_name=c.name, passed=True)

        return _asset

    assets = [make(n, []) for n in INGEST]
    assets += [make("bars_1m", ["raw_perp_klines_1m", "raw_spot_klines_1m",
                                "raw_mark_price_klines_1m"]),
               make("bars_5m", ["bars_1m"]), make("bars_15m", ["bars_1m"])]
    job = dg.define_asset_job("floor_job", selection=[a.key for a in assets])

    class Nothing(dg.ConfigurableIOManager):
        def handle_output(self, context, obj) -> None:
            pass

        def load_input(self, context) -> None:
            return None

    return dg.Definitions(assets=assets, jobs=[job], resources={"mem": Nothing()})


def child(days: int) -> None:
    from backtest_assets.instance import prepare

    t_import = time.perf_counter()
    defs = floor_defs()
    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(
        (REPO / "dagster_home" / "postgres" / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        prepare(instance)  # the CLI's run-creation settings and pooled connection
        first, last = dt.date(2024, 1, 1), dt.date(2024, 1, 1) + dt.timedelta(days=days - 1)
        job = defs.resolve_job_def("floor_job")
        t0 = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": f"{first.isoformat()}|BTCUSDT",
            "dagster/asset_partition_range_end": f"{last.isoformat()}|BTCUSDT"})
        wall = time.perf_counter() - t0
        assert result.success
        events = len(instance.get_records_for_run(result.run_id, limit=1_000_000).records)
        mats = len(result.get_asset_materialization_events())
    print(f"floor: {days} days, {mats} materializations, {events} events, run {wall:.2f} s "
          f"({wall / mats * 1e3:.2f} ms per materialization), definitions "
          f"{t0 - t_import:.2f} s")
    print(f"RESULT {wall:.4f} {mats}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--days", type=int, default=366)
    p.add_argument("--plain-s", type=float, help="the plain run's wall (bench/ingest_bars.py)")
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args.days)
        return
    import subprocess

    loads = {"before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = postgres_server(Path(tmp))
        try:
            (Path(tmp) / "home").mkdir()
            env = dict(os.environ, DAGSTER_HOME=str(Path(tmp) / "home"))
            proc = subprocess.run([sys.executable, __file__, "--child", "--days",
                                   str(args.days)], env=env, capture_output=True, text=True)
            loads["after"] = os.getloadavg()[0]
        finally:
            cluster.stop()
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    lines = proc.stdout.splitlines()
    print("\n".join(x for x in lines if not x.startswith("RESULT ")))
    print(load_line(loads))
    wall = float(next(x for x in lines if x.startswith("RESULT ")).split()[1])
    if args.plain_s:
        print(f"a range run can at best take (plain + floor) / plain = "
              f"{(args.plain_s + wall) / args.plain_s:.2f}x the plain run's "
              f"{args.plain_s:.1f} s (target 1.15x)")


if __name__ == "__main__":
    main()
