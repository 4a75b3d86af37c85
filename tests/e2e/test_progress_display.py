"""In a terminal, a CLI run shows a status line (the step running, steps done, partitions
materialized) while it executes; piped into a file or another program, it prints none."""

import os
import pty
import select
import shutil
import subprocess
import sys
import time

from tests.conftest import REPO, subprocess_env

ARGS = ["-m", "backtest_assets", "run", "--market-data-only", "--start", "2024-01-01",
        "--end", "2024-01-02", "--symbols", "BTCUSDT"]


def env_for(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = subprocess_env(DAGSTER_HOME=str(home), BACKTEST_DATA_ROOT=str(tmp_path / "data"),
                         COLUMNS="120", TERM="xterm-256color")
    env.pop("BACKTEST_MARKET_SOURCE", None)
    return env


def run_in_terminal(env, timeout=240) -> str:
    """The command's output as a terminal shows it (stdout and stderr on one pty)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, *ARGS], cwd=REPO, env=env, stdin=secondary,
                            stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_the_running_step_and_the_partitions_done(tmp_path):
    out = run_in_terminal(env_for(tmp_path))
    label = "ingest, bars 2024-01-01..2024-01-02 x BTCUSDT"
    # rich redraws the status line in place; each redraw names the step and the counts
    assert f"{label} | " in out, out[-3000:]
    assert "steps done," in out and "partitions materialized" in out, out[-3000:]
    assert any(f"| {step} | " in out for step in ("raw_perp_klines_1m", "bars_1m", "bars_5m")), \
        out[-3000:]
    assert "run " in out and f"{label}: succeeded" in out


def test_piped_output_has_no_status_line(tmp_path):
    proc = subprocess.run([sys.executable, *ARGS], cwd=REPO, env=env_for(tmp_path),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "partitions materialized" not in out and "\x1b[" not in out, out[-3000:]
    assert ": succeeded in " in out
