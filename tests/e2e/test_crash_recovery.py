"""A CLI run killed with SIGKILL while it holds the ``duckdb`` pool slot: the next CLI run on
the same instance fails it (saying so in one line), frees the slot and finishes.

Without the reclaim, the dead run stays STARTED with the only slot and the next run waits
forever ("Step still blocked by limit for pool duckdb"), printing nothing.

A run the daemon launched whose worker is killed: the code server fails it at once, and the
run monitoring of ``dagster_home/dagster.yaml`` frees its slot (``slow``: up to a minute).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from backtest_assets.recovery import HOST_TAG, PID_TAG
from tests.conftest import REPO, subprocess_env
from tests.support.dagster_servers import DagsterServers, group_members, tail, wait_for

POOL = "duckdb"
SECOND_RUN_TIMEOUT = 120


def cli(env: dict[str, str], log, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backtest_assets", "run", *args], cwd=REPO,
                            env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_next_cli_run_reclaims_the_slot_of_a_killed_one(tmp_path):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = subprocess_env(DAGSTER_HOME=str(home), BACKTEST_DATA_ROOT=str(data))
    env.pop("BACKTEST_MARKET_SOURCE", None)
    first_log = tmp_path / "first.log"
    # The instance's storage is created here first: two processes creating a fresh SQLite
    # schema at once race ("table ... already exists").
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with first_log.open("w") as log:
            first = cli(env, log, "--market-data-only", "--start", "2024-01-01",
                        "--end", "2024-01-31", "--symbols", "BTCUSDT,ETHUSDT")
        try:
            def holding() -> str | None:
                assert first.poll() is None, f"the first run ended\n{tail(first_log)}"
                info = instance.event_log_storage.get_concurrency_info(POOL)
                return next(iter(info.active_run_ids), None)

            run_id = wait_for(holding, timeout=60, interval=0.05,
                              what="the first run to hold the duckdb slot",
                              details=lambda: tail(first_log))
            os.killpg(first.pid, signal.SIGKILL)  # mid-write, holding the slot
            first.wait(timeout=30)
            dead = instance.get_run_by_id(run_id)
            assert dead.status == dg.DagsterRunStatus.STARTED
            assert dead.tags[PID_TAG] == str(first.pid) and HOST_TAG in dead.tags

            t0 = time.monotonic()
            second = subprocess.run(
                [sys.executable, "-m", "backtest_assets", "run", "--market-data-only",
                 "--start", "2024-01-01", "--end", "2024-01-01", "--symbols", "BTCUSDT"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=SECOND_RUN_TIMEOUT)
            out = second.stdout + second.stderr
            assert second.returncode == 0, out
            assert time.monotonic() - t0 < SECOND_RUN_TIMEOUT
            (line,) = [s for s in out.splitlines() if s.startswith(f"run {run_id[:8]} (pid")]
            assert line.endswith("is gone: marked failed, its duckdb slot freed"), line
            assert f"pid {first.pid} on host " in line
            assert "succeeded" in out and "all runs succeeded" in out, out

            dead = instance.get_run_by_id(run_id)
            assert dead.status == dg.DagsterRunStatus.FAILURE
            (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert f"(pid {first.pid} on host" in failure.message
            assert "is gone" in failure.message
            info = instance.event_log_storage.get_concurrency_info(POOL)
            assert not info.claimed_slots and not info.pending_steps
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=30)


# ------------------------------------------------------------------ runs the daemon launches

def run_workers(pgid: int) -> list[int]:
    """Run worker processes of a process group (the default launcher's code server starts
    each run as a multiprocessing child)."""
    out = []
    for pid in group_members(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            out.append(pid)
    return out


@pytest.mark.slow  # the monitoring daemon polls every 30 s and frees slots 30 s after a run ends
def test_daemon_run_whose_worker_is_killed_is_failed_and_its_slot_freed(tmp_path):
    with DagsterServers(tmp_path / "servers") as servers:
        servers.start()
        servers.launch_backfill(
            ["raw_perp_klines_1m", "raw_spot_klines_1m", "raw_funding_rates",
             "raw_open_interest", "bars_1m", "bars_5m", "bars_15m"],
            [f"2024-01-{d:02d}|BTCUSDT" for d in range(1, 32)], "killed worker")
        daemon = servers.processes["dagster-daemon"]
        with dg.DagsterInstance.from_config(str(servers.home)) as instance:
            def holding() -> str | None:
                info = instance.event_log_storage.get_concurrency_info(POOL)
                return next(iter(info.active_run_ids), None)

            run_id = wait_for(holding, timeout=120, interval=0.1,
                              what="a daemon-launched run holding the duckdb slot",
                              details=servers.log_tails)
            (worker,) = wait_for(lambda: run_workers(daemon.pgid), timeout=10,
                                 what="the run worker", details=servers.log_tails)
            os.kill(worker, signal.SIGKILL)

            def failed_and_freed() -> bool:
                run = instance.get_run_by_id(run_id)
                info = instance.event_log_storage.get_concurrency_info(POOL)
                return run.status == dg.DagsterRunStatus.FAILURE and run_id not in {
                    s.run_id for s in info.claimed_slots}

            wait_for(failed_and_freed, timeout=150, interval=1,
                     what="the run failed and its slot freed", details=servers.log_tails)
