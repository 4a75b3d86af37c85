"""A study end to end on synthetic data, timed per layer: what `run-all` costs at scale.

In a fresh Dagster home, data root and copy of specs/ (a new study file there), runs the
layers of ``run-all`` one after the other, timing each: market data and research days
(``run``), the study record, Gate E-1 + Phase 2, blueprints + backtests, walk-forward,
promotion + report; then ``run-all`` again, which must find every layer up to date.
Prints a table with the machine's load before and after (a run on a machine busier than
its cores is not a result).

Symbols the universe spec does not list (it lists BTCUSDT, ETHUSDT, SOLUSDT) are added to
the copy's universe, perp and spot: the synthetic source gives any ticker a profile of its
own (price, volatility, volumes, drawn from the ticker's hash).

    .venv/bin/python bench/studies.py --start 2022-01-01 --end 2023-12-31 \
        --symbols BTCUSDT,ETHUSDT,SOLUSDT [--out bench/results/studies_2y.txt]
    .venv/bin/python bench/studies.py --start 2024-01-01 --end 2024-06-30 --symbols \
        BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT,ADAUSDT,DOGEUSDT,AVAXUSDT,LINKUSDT,LTCUSDT
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--start", type=dt.date.fromisoformat, required=True)
    ap.add_argument("--end", type=dt.date.fromisoformat, required=True)
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    ap.add_argument("--name", default="bench_study")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-studies-"))
    home, data, specs = work / "dagster_home", work / "data", work / "specs"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home)
    shutil.copytree(REPO / "specs", specs)
    text = (f"name: {args.name}\nstart: {args.start}\nend: {args.end}\n"
            f"symbols: [{args.symbols}]\nsource: synthetic\n")
    universe = (specs / "universe.yaml").read_text()
    first = dt.date.fromisoformat(universe.split("start_date:")[1].split()[0])
    if args.start - dt.timedelta(days=8) < first:  # the warm-up before the window
        (specs / "universe.yaml").write_text(universe.replace(
            f"start_date: {first}", f"start_date: {args.start - dt.timedelta(days=8)}"))
    universe = (specs / "universe.yaml").read_text()
    extra = [s for s in args.symbols.split(",") if f"symbol: {s}\n" not in universe]
    (specs / "universe.yaml").write_text(universe.rstrip("\n") + "\n" + "".join(
        f"  - symbol: {s}\n    markets: [perp, spot]\n" for s in extra))
    (specs / "studies" / f"{args.name}.yaml").write_text(text)
    os.environ.update(DAGSTER_HOME=str(home), BACKTEST_DATA_ROOT=str(data),
                      BACKTEST_SPECS_DIR=str(specs), BACKTEST_MARKET_SOURCE="synthetic")
    sys.path.insert(0, str(REPO))
    import dagster as dg

    from backtest_assets import cli

    load0 = os.getloadavg()
    times: list[tuple[str, float]] = []
    symbols = args.symbols.split(",")
    kw = {"quiet": True}
    with dg.DagsterInstance.get() as instance:
        kw["instance"] = instance

        def timed(label, fn):
            t0 = time.perf_counter()
            ok = fn()
            times.append((label, time.perf_counter() - t0))
            if not ok:
                raise SystemExit(f"{label} failed")

        timed("market data + features, labels, events (run)",
              lambda: cli.run(args.start, args.end, symbols, **kw))
        timed("study record", lambda: cli.register_study(cli.Runner(instance, quiet=True),
                                                         args.name))
        timed("Gate E-1 + Phase 2", lambda: cli.quality(study=args.name, **kw))
        timed("blueprints + backtests", lambda: cli.backtest(study=args.name, **kw))
        timed("walk-forward", lambda: cli.backtest(study=args.name, job="walkforward_job", **kw))
        timed("promotion + report", lambda: cli.report(study=args.name, **kw))
        timed("run-all again (nothing to do)", lambda: cli.run_all(args.name, **kw))
        runs = len(instance.get_runs(limit=100_000))
    load1 = os.getloadavg()
    total = sum(t for label, t in times[:-1])
    days = (args.end - args.start).days + 1
    lines = [f"study {args.name}: {args.start}..{args.end} ({days} days) x {len(symbols)} "
             f"symbols ({args.symbols}), synthetic; {runs} Dagster runs",
             f"command: {' '.join(sys.argv)}",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
             f"load average before {load0[0]:.2f}, after {load1[0]:.2f}",
             f"{'layer':<48} {'seconds':>9} {'share':>7}"]
    for label, t in times:
        share = f"{t / total:7.1%}" if label != times[-1][0] else "      -"
        lines.append(f"{label:<48} {t:>9.1f} {share}")
    lines.append(f"{'total (first run-all)':<48} {total:>9.1f}")
    out = "\n".join(lines)
    print(out)
    if args.out:
        args.out.write_text(out + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
