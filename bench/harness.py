"""Run a benchmark variant in a fresh process, so its peak RSS is its own."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spawn(script: str, name: str, days: int, root: Path) -> dict:
    """Run ``script --child name --days days`` on data root ``root``; its RESULT line, timed."""
    env = dict(os.environ, BACKTEST_DATA_ROOT=str(root / "data"),
               DAGSTER_HOME=str(root / "home"))
    (root / "home").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, script, "--child", name, "--days", str(days)],
                          env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    out["process_s"] = time.perf_counter() - t0  # including interpreter start and imports
    return out


def report_child(out: dict) -> None:
    """Print a child's result with its peak RSS, for :func:`spawn` to read."""
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def postgres_server(tmp: Path):
    """A local PostgreSQL cluster in ``tmp`` (durable settings, as deployed) on a free port,
    ``DAGSTER_PG_URL`` pointing at its database; stop it with ``.stop()``."""
    from backtest_assets.deploy.postgres import LocalPostgres, free_port
    from backtest_assets.deploy.settings import PG_URL_ENV

    if os.geteuid() == 0:  # the cluster's owner (user postgres) must reach its directory
        tmp.chmod(0o711)
    cluster = LocalPostgres(tmp / "pg", port=free_port()).start()
    os.environ[PG_URL_ENV] = cluster.url()
    return cluster


def load_line(loads: dict[str, float], what: str = "ratios") -> str:
    """The 1-minute load averages sampled during a run, and whether it was busier than its
    cores (then its ``what`` are not a result)."""
    cores = os.cpu_count() or 1
    return ("load average (1 min): " + ", ".join(f"{k} {v:.2f}" for k, v in loads.items())
            + f" on {cores} cpus" + ("" if max(loads.values()) <= cores
                                     else f" -- BUSIER THAN ITS CORES: the {what} are not a "
                                          "result"))
