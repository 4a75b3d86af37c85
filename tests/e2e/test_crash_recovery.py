"""A CLI run killed with SIGKILL while it holds the ``duckdb`` pool slot: the next CLI run on
the same instance fails it (saying so in one line), frees the slot and finishes.

Without the reclaim, the dead run stays STARTED with the only slot and the next run waits
forever ("Step still blocked by limit for pool duckdb"), printing nothing.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg

from backtest_assets.recovery import HOST_TAG, PID_TAG
from tests.conftest import REPO, subprocess_env
from tests.support.dagster_servers import tail, wait_for

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
