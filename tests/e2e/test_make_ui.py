"""`make ui` starts the UI and the daemon with the current command: no superseded `dagster dev`
(its SupersessionWarning printed on every start), and the webserver answers on 127.0.0.1."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.dagster_servers import (
    _EXEC_WITH_DEFAULT_SIGNALS,
    ServerProcess,
    free_port,
    post,
    tail,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


def test_make_ui_serves_without_a_supersession_warning(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_path = tmp_path / "make_ui.log"
    log = log_path.open("w")
    env = dict(os.environ, BACKTEST_DATA_ROOT=str(tmp_path / "data"))
    make = shutil.which("make")
    assert make, "make is not installed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, make, "-s", "ui",
         f"UI_PORT={port}", f"DAGSTER_HOME={home}"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess("make ui", proc, log_path, log)
    try:
        url = f"http://127.0.0.1:{port}/graphql"

        def answers() -> bool:
            assert server.alive(), f"make ui exited\n{tail(log_path)}"
            try:
                return bool(post(url, "{ version }", timeout=5)["data"]["version"])
            except OSError:
                return False

        wait_for(answers, timeout=180, what=f"make ui on port {port}",
                 details=lambda: tail(log_path))
        wait_for(lambda: "daemon" in log_path.read_text(errors="replace").lower(),
                 timeout=60, what="the daemon's first log line", details=lambda: tail(log_path))
    finally:
        server.stop()
    text = log_path.read_text(errors="replace")
    assert "SupersessionWarning" not in text and "superseded" not in text, tail(log_path)
