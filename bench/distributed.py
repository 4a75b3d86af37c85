"""Two workers against one: the speed-up that grounds the README's N-worker projection.

A worker here is a process with one core's worth of threads (``--threads 1``: polars,
DuckDB and numba each limited to one): on this 2-core machine a single process otherwise
already spreads its work over both cores, and two would only fight over them. Postgres, Redis
and Dagster's orchestration share the same two cores.

The same backfill (ingest -> bars -> features, labels, events for ``--days`` days x 2
symbols, synthetic source) on the lake instance (runs in Postgres, the warehouse a DuckLake
with its catalog in the same local cluster, Parquet files on local disk), three ways:

- ``serial``: two CLI processes one after the other, a symbol each: one worker taking two
  tasks off a queue;
- ``parallel``: the same two processes at once: two workers (what N machines do with N
  shares of the symbols). serial / parallel is the 2-worker speed-up;
- ``batched``: one CLI process for both symbols (one run per layer covers both: the fixed
  costs of a process, about 8 s of imports, planning and run creation, paid once);
- ``celery``: ``dagster job execute`` of market_data_job over both symbols, its steps on two
  Celery workers (Redis broker on loopback), against ``inproc``: the same run in process.

    .venv/bin/python bench/distributed.py [--days 60] [--json bench/results/distributed.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import load_line, postgres_server

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
START = dt.date(2024, 1, 1)


def _env(root: Path, cluster, name: str, **extra: str) -> dict[str, str]:
    from backtest_assets.deploy.settings import RUN_CREATION_ENV

    home = root / name / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "lake" / "dagster.yaml")
                                       .read_text())
    return {**os.environ, **RUN_CREATION_ENV, "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": cluster.create_database(f"runs_{name}"),
            "BACKTEST_WAREHOUSE": "ducklake",
            "BACKTEST_LAKE_CATALOG": _lake(cluster, f"lake_{name}"),
            "BACKTEST_DATA_ROOT": str(root / name / "data"), **extra}


def _lake(cluster, database: str) -> str:
    cluster.create_database(database)
    return cluster.lake_catalog(database)


def _cli_run(env: dict, symbols: list[str], end: dt.date) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backtest_assets", "run", "--start",
                             str(START), "--end", str(end), "--symbols", ",".join(symbols)],
                            env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait(procs: list[subprocess.Popen], what: str) -> None:
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"{what} failed:\n{out[-3000:]}")


def _execute(env: dict, end: dt.date) -> None:
    from backtest_assets.core.schedule import range_tags

    # the symbols' partitions, as the CLI and the listings sensor register them
    subprocess.run([sys.executable, "-c", "import dagster as dg; from backtest_assets."
                    "partitions import register_listed_symbols as r; "
                    "r(dg.DagsterInstance.get())"], env=env, cwd=REPO, check=True)
    proc = subprocess.run([str(Path(sys.executable).with_name("dagster")), "job", "execute",
                           "-m", "backtest_assets.definitions", "-j", "market_data_job",
                           "--tags", json.dumps(range_tags(START, end, SYMBOLS))],
                          env=env, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"dagster job execute failed:\n{proc.stdout[-2000:]}"
                         f"\n{proc.stderr[-2000:]}")


def _load() -> float:
    return os.getloadavg()[0]


def _settle(loads: dict[str, float], name: str, wait_s: float = 90) -> None:
    """Wait (up to ``wait_s``) for the 1-minute load to fall below the cores, then record
    it as the load ``name`` starts under: what else the machine is doing. The load a phase
    ends with is its own processes' (two workers, the orchestrator, Postgres and Redis on
    two cores), recorded apart and not held against it."""
    deadline = time.monotonic() + wait_s
    while _load() >= (os.cpu_count() or 1) and time.monotonic() < deadline:
        time.sleep(2)
    loads[name] = _load()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads per worker (polars, DuckDB, numba; 0: each library's "
                             "default, one per core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:  # every process below inherits it
        os.environ.update({k: str(args.threads) for k in (
            "POLARS_MAX_THREADS", "BACKTEST_DUCKDB_THREADS", "NUMBA_NUM_THREADS",
            "OMP_NUM_THREADS")})
    sys.path.insert(0, str(REPO))
    from backtest_assets.deploy.celery import LocalRedis, Workers
    from backtest_assets.deploy.postgres import free_port

    end = START + dt.timedelta(days=args.days - 1)
    out: dict = {"days": args.days, "symbols": SYMBOLS, "machine": platform.node(),
                 "threads_per_worker": args.threads or "default",
                 "cpus": os.cpu_count()}
    loads: dict[str, float] = {}  # at the start of each phase
    ends: dict[str, float] = {}  # at its end
    with tempfile.TemporaryDirectory(prefix="bench_dist_") as tmp:
        root = Path(tmp)
        cluster = postgres_server(root)
        try:
            env = _env(root, cluster, "serial")
            _settle(loads, "serial")
            t0 = time.perf_counter()
            for s in SYMBOLS:
                _wait([_cli_run(env, [s], end)], "serial")
            out["serial_s"] = time.perf_counter() - t0
            ends["serial"] = _load()

            env = _env(root, cluster, "parallel")
            _settle(loads, "parallel")
            t0 = time.perf_counter()
            _wait([_cli_run(env, [s], end) for s in SYMBOLS], "parallel")
            out["parallel_s"] = time.perf_counter() - t0
            ends["parallel"] = _load()

            env = _env(root, cluster, "batched")
            _settle(loads, "batched")
            t0 = time.perf_counter()
            _wait([_cli_run(env, SYMBOLS, end)], "batched")
            out["batched_s"] = time.perf_counter() - t0
            ends["batched"] = _load()
            lake = root / "batched" / "data" / "lake"
            out["lake_mb"] = sum(f.stat().st_size for f in lake.rglob("*") if f.is_file()) / 2**20
            out["lake_mb_per_symbol_day"] = out["lake_mb"] / (len(SYMBOLS) * (args.days + 1))

            env = _env(root, cluster, "inproc", BACKTEST_EXECUTOR="in_process")
            _settle(loads, "inproc")
            t0 = time.perf_counter()
            _execute(env, end)
            out["inproc_s"] = time.perf_counter() - t0
            ends["inproc"] = _load()

            redis = LocalRedis(root / "redis", port=free_port()).start()
            env = _env(root, cluster, "celery", BACKTEST_EXECUTOR="celery",
                       BACKTEST_CELERY_BROKER=redis.url(0))
            workers = Workers(root / "workers", redis.url(0), redis.url(1), count=2,
                              env=env).start()
            try:
                _settle(loads, "celery")
                t0 = time.perf_counter()
                _execute(env, end)
                out["celery_s"] = time.perf_counter() - t0
                ends["celery"] = _load()
            finally:
                workers.stop()
                redis.stop()
        finally:
            cluster.stop()
    out["speedup_two_workers"] = out["serial_s"] / out["parallel_s"]
    out["speedup_celery"] = out["inproc_s"] / out["celery_s"]
    out["load_1min_at_start"] = loads
    out["load_1min_at_end"] = ends
    lines = [
        f"{args.days} days x {len(SYMBOLS)} symbols on the lake instance "
        f"({platform.node()}, {os.cpu_count()} cpus; threads per worker: "
        f"{args.threads or 'each library default'})",
        f"{'variant':44} {'wall s':>8}",
        f"{'2 CLI runs one after the other, a symbol each':44} {out['serial_s']:8.1f}",
        f"{'the same 2 at once (2 workers)':44} {out['parallel_s']:8.1f}",
        f"{'1 CLI run of both symbols (batched)':44} {out['batched_s']:8.1f}",
        f"{'market_data_job in process':44} {out['inproc_s']:8.1f}",
        f"{'market_data_job on 2 Celery workers':44} {out['celery_s']:8.1f}",
        f"lake (Parquet files, ingest to events): {out['lake_mb']:.1f} MB, "
        f"{out['lake_mb_per_symbol_day']:.3f} MB per symbol-day",
        f"speed-up of 2 workers: {out['speedup_two_workers']:.2f}x (two backfills), "
        f"{out['speedup_celery']:.2f}x (Celery, one run)",
        load_line(loads, "speed-ups").replace("load average (1 min):",
                                              "load average (1 min) at each start:"),
        "at each end (its own processes): " + ", ".join(f"{k} {v:.2f}"
                                                         for k, v in ends.items()),
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        args.json.with_suffix(".txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
