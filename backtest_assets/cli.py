"""Command line: ``python -m backtest_assets demo | run | summary``.

``run`` materializes the market-data job for a date range and symbols as single runs over
ranges (one run per contiguous block of symbols), on the Dagster instance in
``$DAGSTER_HOME`` (default: the repository's ``dagster_home/``), so the runs show in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagster import DagsterInstance

DEMO_START, DEMO_END = dt.date(2024, 1, 1), dt.date(2024, 1, 31)
REPO = Path(__file__).resolve().parents[1]


def symbol_blocks(selected: Sequence[str], universe: Sequence[str]) -> list[list[str]]:
    """Split ``selected`` into blocks adjacent in ``universe`` (one range run each)."""
    unknown = sorted(set(selected) - set(universe))
    if unknown:
        raise SystemExit(f"unknown symbol(s) {unknown}: specs/universe.yaml has {list(universe)}")
    idx = sorted(universe.index(s) for s in set(selected))
    blocks: list[list[str]] = []
    for i in idx:
        if blocks and universe.index(blocks[-1][-1]) == i - 1:
            blocks[-1].append(universe[i])
        else:
            blocks.append([universe[i]])
    return blocks


def run(start: dt.date, end: dt.date, symbols: Sequence[str] | None, *,
        resources_config: dict | None = None, quiet: bool = False,
        instance: DagsterInstance | None = None) -> bool:
    """Materialize ``market_data_job`` for [start, end] x symbols; True if every run passed.

    ``instance`` defaults to the one in ``$DAGSTER_HOME`` (the repository's ``dagster_home/``
    when unset), so the runs show in the UI.
    """
    import dagster as dg

    from backtest_assets.definitions import defs
    from backtest_assets.partitions import UNIVERSE

    job = defs.resolve_job_def("market_data_job")
    if instance is None:
        os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
        instance = dg.DagsterInstance.get()
    ok = True
    checks: Counter[tuple[str, str]] = Counter()
    for block in symbol_blocks(symbols or UNIVERSE.symbol_names, UNIVERSE.symbol_names):
        tags = {
            "dagster/asset_partition_range_start": f"{start.isoformat()}|{block[0]}",
            "dagster/asset_partition_range_end": f"{end.isoformat()}|{block[-1]}",
        }
        t0 = time.perf_counter()
        run_config: dict = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        if resources_config:
            run_config["resources"] = resources_config
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False,
                                        run_config=run_config)
        ok &= result.success
        for ev in result.get_asset_check_evaluations():
            status = "passed" if ev.passed else ev.severity.value.lower()
            checks[(ev.asset_check_key.name, status)] += 1
        if not quiet:
            state = "succeeded" if result.success else "FAILED"
            print(f"run {result.run_id[:8]} {start}..{end} x {','.join(block)}: {state} "
                  f"in {time.perf_counter() - t0:.1f}s")
            for ev in result.all_events:
                if ev.is_step_failure:
                    print(f"  step {ev.step_key} failed: {_root_cause(ev.step_failure_data)}")
    if not quiet:
        print(_check_table(checks))
    return ok


def _root_cause(failure) -> str:
    """The innermost error of a failed step (Dagster wraps the user's exception)."""
    if failure.user_failure_data is not None and failure.user_failure_data.description:
        return failure.user_failure_data.description
    error = failure.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _check_table(checks: Counter[tuple[str, str]]) -> str:
    names = sorted({n for n, _ in checks})
    lines = ["asset checks (evaluations per check):"]
    for n in names:
        parts = [f"{s} {checks[(n, s)]}" for s in ("passed", "warn", "error") if checks[(n, s)]]
        lines.append(f"  {n:<24} {', '.join(parts)}")
    return "\n".join(lines)


def summary(start: dt.date, end: dt.date) -> str:
    """What the warehouse holds for [start, end]: rows, gaps and quarantine per table."""
    from backtest_assets.core.summary import warehouse_summary
    from backtest_assets.resources import WarehouseResource

    return warehouse_summary(WarehouseResource().warehouse(), start, end)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backtest_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="synthetic data, 3 symbols, January 2024")
    for name in ("run", "summary"):
        p = sub.add_parser(name)
        p.add_argument("--start", type=dt.date.fromisoformat, required=True)
        p.add_argument("--end", type=dt.date.fromisoformat, required=True,
                       help="last day included")
        if name == "run":
            p.add_argument("--symbols", help="comma-separated (default: the universe's)")
            p.add_argument("--source", choices=["synthetic", "binance"])
            p.add_argument("--base-url", help="Binance archive base URL")
    args = parser.parse_args(argv)
    if args.cmd == "summary":
        print(summary(args.start, args.end))
        return 0
    if args.cmd == "demo":
        args = argparse.Namespace(start=DEMO_START, end=DEMO_END, symbols=None,
                                  source="synthetic", base_url=None)
    if args.end < args.start:
        parser.error("--end is before --start")
    config = {k: v for k, v in (("market_source", args.source), ("base_url", args.base_url)) if v}
    t0 = time.perf_counter()
    ok = run(args.start, args.end, args.symbols.split(",") if args.symbols else None,
             resources_config={"market_source": {"config": config}} if config else None)
    print(summary(args.start, args.end))
    print(f"done in {time.perf_counter() - t0:.1f}s: {'all runs succeeded' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
