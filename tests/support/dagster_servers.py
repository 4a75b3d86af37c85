"""The real Dagster servers for end-to-end tests: dagster-webserver and dagster-daemon.

``DagsterServers(tmp_path, env)`` runs both on 127.0.0.1 (free port) in a fresh
``DAGSTER_HOME`` (a copy of the repository's ``dagster_home/dagster.yaml``) and a fresh
``BACKTEST_DATA_ROOT``, each in its own session with default signal handlers, logging to files
under ``tmp_path``; ``stop()`` ends each by its process group (SIGTERM, then SIGKILL).

GraphQL helpers (``gql``, backfills, runs) and a deadline-bounded ``wait_for`` live here too, so
the backfill and browser tests share them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from backtest_assets.deploy.postgres import free_port
from backtest_assets.deploy.settings import run_creation_env
from tests.conftest import REPO, subprocess_env

BIN = Path(sys.executable).parent
BACKFILL_TAG = "dagster/backfill"
TERMINAL_BACKFILL = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED",
                               "CANCELED"})

# Ignored signals survive exec: a test runner started in the background (SIGINT ignored) would
# hand that on, and `dagster dev`/the daemon would then ignore Ctrl-C and SIGTERM. Reset them,
# then exec the server (same pid, so its process group id is the pid Popen returns).
_EXEC_WITH_DEFAULT_SIGNALS = (
    "import os, signal, sys\n"
    "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):\n"
    "    signal.signal(s, signal.SIG_DFL)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)

T = TypeVar("T")


def post(url: str, query: str, variables: Mapping[str, Any] | None = None, *,
         timeout: float = 60) -> dict:
    """POST a GraphQL query; the whole response (``data`` and maybe ``errors``)."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_for(probe: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 1.0, details: Callable[[], str] = lambda: "") -> T:
    """Call ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{details()}")
        time.sleep(interval)


def tail(path: Path, n: int = 60) -> str:
    if not path.is_file():
        return f"({path} absent)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


@dataclass
class ServerProcess:
    """One server started in its own session; stopped through its process group."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    log: IO[str]

    @property
    def pgid(self) -> int:
        return self.proc.pid  # start_new_session: the leader's pid is the group id

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout``; then wait (bounded) until no
        process of the group is left: code servers and run workers share it."""
        try:
            if self.proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(self.pgid, signal.SIGKILL)
                    self.proc.wait(timeout=30)
            deadline = time.monotonic() + timeout
            while group_members(self.pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if group_members(self.pgid):
                with suppress(ProcessLookupError):
                    os.killpg(self.pgid, signal.SIGKILL)
                time.sleep(2)
                left = group_members(self.pgid)
                assert not left, f"{self.name}: {left} of group {self.pgid} survived SIGKILL"
        finally:
            self.log.close()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass
class DagsterServers:
    """dagster-webserver and dagster-daemon over ``workspace.yaml`` in a fresh instance."""

    tmp: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # the instance's dagster.yaml (the Postgres one: dagster_home/postgres/dagster.yaml, with
    # DAGSTER_PG_URL in the environment)
    instance_yaml: Path = REPO / "dagster_home" / "dagster.yaml"
    processes: dict[str, ServerProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.tmp / "dagster_home"
        self.data_root = self.tmp / "data"
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.instance_yaml, self.home / "dagster.yaml")
        # the settings the processes that create runs need on this instance, as `make ui` sets
        self.env = subprocess_env(DAGSTER_HOME=str(self.home),
                                  BACKTEST_DATA_ROOT=str(self.data_root),
                                  **run_creation_env(self.home), **self.extra_env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def warehouse(self) -> Path:
        return self.data_root / "warehouse.duckdb"

    # ------------------------------------------------------------------ processes

    def _start(self, name: str, *args: str) -> ServerProcess:
        assert name not in self.processes or not self.processes[name].alive(), name
        log_path = self.tmp / f"{name}.log"
        log = log_path.open("a")
        proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGNALS, str(BIN / name), *args],
            cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = server = ServerProcess(name, proc, log_path, log)
        return server

    def start_webserver(self, timeout: float = 90) -> None:
        web = self._start("dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1",
                          "-p", str(self.port))

        def answers() -> bool:
            assert web.alive(), f"dagster-webserver exited\n{tail(web.log_path)}"
            try:
                with urllib.request.urlopen(f"{self.base_url}/server_info", timeout=2):
                    return True
            except OSError:
                return False

        wait_for(answers, timeout=timeout, interval=0.5, what="/server_info",
                 details=self.log_tails)

    def start_daemon(self) -> None:
        self._start("dagster-daemon", "run", "-w", "workspace.yaml")

    def stop_process(self, name: str) -> None:
        if name in self.processes:
            self.processes.pop(name).stop()

    def start(self) -> None:
        """The webserver, then the daemon; returns when the webserver answers.

        Not both at once: two processes creating a fresh instance's SQLite schema together
        race (``table job_ticks already exists``, ``alembic_version has more than one head``).
        The daemon's first backfill iteration comes ~5 s after its start, so a backfill
        launched as soon as this returns is picked up without waiting for its 30 s loop.
        """
        self.start_webserver()
        self.register_symbols()
        self.start_daemon()

    def register_symbols(self) -> None:
        """The listed symbols as symbol partitions, as the CLI does before it runs and the
        daemon's listings sensor on its first tick (a backfill launched at once needs them)."""
        import dagster as dg

        from backtest_assets.partitions import register_listed_symbols

        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            register_listed_symbols(instance, source=self.env.get("BACKTEST_MARKET_SOURCE"))

    def stop(self) -> None:
        """SIGTERM to every group at once, then wait for each (SIGKILL after a timeout)."""
        for server in self.processes.values():
            if server.alive():
                with suppress(ProcessLookupError):
                    os.killpg(server.pgid, signal.SIGTERM)
        errors = []
        for name in list(self.processes):
            try:
                self.stop_process(name)
            except AssertionError as exc:  # stop the others all the same
                errors.append(str(exc))
        assert not errors, errors

    def log_tails(self, n: int = 60) -> str:
        logs = sorted(self.tmp.glob("*.log"))
        return "\n".join(f"--- {p.name} (last {n} lines)\n{tail(p, n)}" for p in logs)

    # ------------------------------------------------------------------ GraphQL

    def gql(self, query: str, **variables: Any) -> dict:
        """``data`` of a GraphQL query; fails on GraphQL errors."""
        answer = post(f"{self.base_url}/graphql", query, variables)
        assert not answer.get("errors"), json.dumps(answer["errors"], indent=1)[:4000]
        return answer["data"]

    def launch_backfill(self, assets: Iterable[str], partition_names: Sequence[str],
                        title: str) -> str:
        """An asset backfill of ``assets`` × ``partition_names``, with the parameters the UI's
        launch dialog sends (``assetSelection`` and ``partitionNames``; it never sends
        ``partitionsByAssets``, whose range over a date x symbol asset is a rectangle)."""
        data = self.gql(LAUNCH_BACKFILL, params={
            "assetSelection": [{"path": [a]} for a in assets],
            "partitionNames": list(partition_names),
            "fromFailure": False,
            "title": title,
        })["launchPartitionBackfill"]
        assert data["__typename"] == "LaunchBackfillSuccess", data
        return data["backfillId"]

    def reexecute_backfill(self, backfill_id: str, strategy: str) -> str:
        data = self.gql(REEXECUTE_BACKFILL, params={"parentRunId": backfill_id,
                                                    "strategy": strategy})
        data = data["reexecutePartitionBackfill"]
        assert data["__typename"] == "LaunchBackfillSuccess", data
        return data["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        data = self.gql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        assert data["__typename"] == "PartitionBackfill", data
        return data

    def runs(self, backfill_id: str) -> list[dict]:
        """Runs of a backfill (by the ``dagster/backfill`` tag), oldest first."""
        data = self.gql(RUNS, tags=[{"key": BACKFILL_TAG, "value": backfill_id}])["runsOrError"]
        assert data["__typename"] == "Runs", data
        return sorted(data["results"], key=lambda r: r["creationTime"])

    def failures(self, run_id: str) -> list[str]:
        """Step and run failure messages of a run."""
        data = self.gql(RUN_EVENTS, runId=run_id)["runOrError"]
        events = data.get("eventConnection", {}).get("events", [])
        out = []
        for e in events:
            if e["__typename"] not in ("ExecutionStepFailureEvent", "RunFailureEvent"):
                continue
            error = e.get("error") or {}
            causes = [f"{c['className']}: {c['message'].strip()}"
                      for c in error.get("causes") or []]
            out.append(" / ".join([f"{e.get('stepKey') or 'run'}: {e['message']}",
                                   *([error["message"].strip()] if error else []), *causes]))
        return out

    def describe_backfill(self, backfill_id: str) -> str:
        """Everything useful when a backfill did not end as expected."""
        lines = []
        try:
            b = self.backfill(backfill_id)
            lines.append(f"backfill {backfill_id}: {b['status']} error={b['error']}")
            for run in self.runs(backfill_id):
                lines.append(f"run {run['runId']} {run['status']} "
                             f"tags={ {t['key']: t['value'] for t in run['tags']} }")
                lines += [f"    {m[:1500]}" for m in self.failures(run["runId"])]
        except Exception as exc:  # the report must not hide the original failure
            lines.append(f"(could not describe the backfill: {exc!r})")
        return "\n".join(lines) + "\n" + self.log_tails()

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no run of the instance is queued or in progress (nobody writes DuckDB)."""
        def idle() -> bool:
            data = self.gql(ACTIVE_RUNS)["runsOrError"]
            assert data["__typename"] == "Runs", data
            return not data["results"]

        wait_for(idle, timeout=timeout, interval=1, what="no run in progress",
                 details=self.log_tails)

    def wait_backfill(self, backfill_id: str, *, timeout: float = 240) -> dict:
        """The backfill once its status is terminal."""
        def done() -> dict | None:
            for proc in self.processes.values():
                assert proc.alive(), f"{proc.name} exited\n{self.log_tails()}"
            b = self.backfill(backfill_id)
            return b if b["status"] in TERMINAL_BACKFILL else None

        return wait_for(done, timeout=timeout, interval=1, what=f"backfill {backfill_id}",
                        details=lambda: self.describe_backfill(backfill_id))

    def __enter__(self) -> DagsterServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

REEXECUTE_BACKFILL = """
mutation($params: ReexecutionParams!) {
  reexecutePartitionBackfill(reexecutionParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions isAssetBackfill timestamp endTimestamp
      error { message }
      tags { key value }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress
            numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

RUNS = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    __typename
    ... on Runs {
      results {
        runId status creationTime startTime endTime
        tags { key value }
        assetSelection { path }
        stepStats { stepKey status startTime endTime }
      }
    }
    ... on PythonError { message }
  }
}"""

RUN_EVENTS = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      eventConnection(limit: 5000) {
        events {
          __typename
          ... on MessageEvent { message }
          ... on StepEvent { stepKey }
          ... on ErrorEvent { error { message causes { className message } } }
        }
      }
    }
  }
}"""

ACTIVE_RUNS = """
{
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    __typename
    ... on Runs { results { runId status } }
  }
}"""

CONCURRENCY = """
query($pool: String!) {
  instance {
    poolConfig { poolGranularity defaultPoolLimit }
    concurrencyLimit(concurrencyKey: $pool) {
      concurrencyKey slotCount limit usingDefaultLimit activeSlotCount pendingStepCount
    }
  }
}"""
