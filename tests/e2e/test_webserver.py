"""The real dagster-webserver on 127.0.0.1 loads the code location and serves its assets."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env
from tests.unit.test_definitions import ASSETS, DATE_SYMBOL_ASSETS

QUERY = """{
  workspaceOrError { ... on Workspace { locationEntries { name
    locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } partitionKeysByDimension { name }
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, query: str) -> dict:
    req = urllib.request.Request(url, data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def webserver(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home)
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=subprocess_env(DAGSTER_HOME=str(home),
                                     BACKTEST_DATA_ROOT=str(tmp_path / "data")),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "webserver.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "webserver did not answer in 90 s"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_webserver_serves_the_asset_graph(webserver):
    data = post(f"{webserver}/graphql", QUERY)["data"]
    (entry,) = data["workspaceOrError"]["locationEntries"]
    assert entry["name"] == "backtest_assets"
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert sorted(nodes) == ASSETS
    for name in DATE_SYMBOL_ASSETS:
        node = nodes[name]
        assert [d["name"] for d in node["partitionKeysByDimension"]] == ["date", "symbol"], name
        checks = {c["name"]: c["blocking"] for c in node["assetChecksOrError"]["checks"]}
        assert checks["schema"] is True and checks["unique_keys"] is True, name
        assert checks["complete_days"] is False, name
