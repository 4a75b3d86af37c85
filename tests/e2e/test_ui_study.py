"""A whole study in one launch from the UI gives the rows of the CLI's ``run-all``.

Through the real webserver and daemon: study ``by_cli`` is built by ``python -m
backtest_assets run-all`` (a subprocess on the servers' instance and warehouse); study
``by_ui``, the same window, symbols and specs under another name, becomes a partition (the
study sensor registers each spec of specs/studies) and is built by one launch of
``run_all_job`` for its partition (the Launchpad's ``launchPipelineExecution``). Every research
table then holds the same rows for both, but for the columns that name the study, a run or a
time. A second launch finds the study up to date and launches no run.

The specs are the certification batch's (Phase 2's minimum sample 5, so a week tests
hypotheses); the week is too short for walk-forward, which both paths skip, saying so.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from backtest_assets.certify import prepare
from backtest_assets.defs.studies.run_all import RUN_ALL_TAG
from tests.conftest import REPO
from tests.support.dagster_servers import DagsterServers, run_tags, wait_for

CLI, UI = "by_cli", "by_ui"
STUDY = "start: 2024-01-01\nend: 2024-01-07\nsymbols: [BTCUSDT, ETHUSDT]\nsource: synthetic\n"
TABLES = ("study_record", "event_quality_report", "phase2_candidates_raw", "phase2_inputs",
          "phase2_pvals", "phase2_fdr", "strategy_blueprints", "backtest_trades",
          "backtest_equity", "backtest_metrics", "promotion_decisions", "research_report")
# Columns that differ between two studies of the same data and specs by their nature: the
# study's name and the hash that includes it, when a record was made, where a report went
# (and, in the record's spec hashes, the study's own spec file, which holds its name).
# The report file's hash and size differ with them; its text is compared apart (report_text).
NAMING = {"study", "study_hash", "recorded_at", "path", "written_at", "run_id", "sha256",
          "bytes"}
LOCATION = {"repositoryLocationName": "backtest_assets", "repositoryName": "__repository__"}

STUDY_KEYS = """
{ assetNodeOrError(assetKey: {path: ["study_record"]}) { ... on AssetNode { partitionKeys } } }
"""
LAUNCH = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""
RUN = """
query($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { runId status tags { key value } } }
}"""
FAILED = """
{ runsOrError(filter: {statuses: [FAILURE]}) {
    ... on Runs { results { runId jobName tags { key value } } } } }
"""
CHILDREN = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags}) {
    __typename ... on Runs { results { runId status jobName tags { key value } } }
  }
}"""


def launch_study(servers: DagsterServers, study: str) -> dict:
    """One launch of ``run_all_job`` for ``study``'s partition; the run once it ended."""
    data = servers.gql(LAUNCH, params={
        "selector": {**LOCATION, "pipelineName": "run_all_job"}, "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": study}]},
    })["launchPipelineExecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    run_id = data["run"]["runId"]

    def ended() -> dict | None:
        run = servers.gql(RUN, runId=run_id)["runOrError"]
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    run = wait_for(ended, timeout=600, interval=2, what=f"run_all_job run {run_id}",
                   details=lambda: "\n".join(servers.failures(run_id)) + servers.log_tails())
    assert run["status"] == "SUCCESS", "\n".join(servers.failures(run_id)) + servers.log_tails()
    return run


def children(servers: DagsterServers, run_id: str) -> list[dict]:
    data = servers.gql(CHILDREN, tags=[{"key": RUN_ALL_TAG, "value": run_id}])["runsOrError"]
    assert data["__typename"] == "Runs", data
    return data["results"]


def failed_partitions(servers: DagsterServers, study: str) -> set[str]:
    """Event types whose E-1 + Phase 2 run of ``study`` failed (other runs must not fail)."""
    runs = servers.gql(FAILED)["runsOrError"]["results"]
    keys = {run_tags(r).get("dagster/partition", "") for r in runs}
    mine = {k for k in keys if k.endswith(f"|{study}") or k == study}
    assert all(r["jobName"] == "discovery_job" for r in runs
               if run_tags(r).get("dagster/partition") in mine), runs
    return {k.split("|")[0] for k in mine}


def report_text(row: pl.DataFrame, study: str) -> str:
    """The study's HTML report without its images (their titles name the study), its name
    replaced by STUDY and the hash of its own spec file left out."""
    html = Path(row["path"][0]).read_text()
    html = re.sub(r"<img[^>]*>", "IMG", html).replace(study, "STUDY")
    return re.sub(r"<tr><td>studies/STUDY</td>.*?</tr>", "", html)


def study_rows(db: Path, table: str, study: str, keep: set[str] = frozenset()
               ) -> pl.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        frame = con.sql(f"SELECT * FROM {table} WHERE study = ?",  # noqa: S608
                        params=[study]).pl()
    finally:
        con.close()
    if "spec_hashes" in frame.columns:  # every spec file but the study's own (its name)
        own = f"studies/{study}"  # the record names its study
        hashes = [json.loads(h) for h in frame["spec_hashes"]]
        assert all(own in h for h in hashes), hashes
        frame = frame.with_columns(spec_hashes=pl.Series(
            [json.dumps({f: v for f, v in h.items() if f != own}) for h in hashes]))
    return frame.drop([c for c in frame.columns if c in NAMING - keep]).sort(pl.all())


@pytest.fixture
def servers(tmp_path):
    env = prepare(tmp_path / "batch")
    specs = Path(env["BACKTEST_SPECS_DIR"])
    for name in (CLI, UI):
        (specs / "studies" / f"{name}.yaml").write_text(f"name: {name}\n{STUDY}")
    with DagsterServers(tmp_path / "servers", {
            "BACKTEST_SPECS_DIR": str(specs), "BACKTEST_MARKET_SOURCE": "synthetic"}) as s:
        s.start()
        yield s


# Two whole studies (the CLI's and the UI's): 110-150 s, slow to keep CI within its budget
# (it passed in the CI run of this change; `make test-all` runs it).
@pytest.mark.slow
def test_one_launch_builds_every_layer_of_a_study_with_the_rows_of_the_cli(servers):
    done = subprocess.run([sys.executable, "-m", "backtest_assets", "run-all", "--study", CLI],
                          cwd=REPO, env=servers.env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    # specs/studies/by_ui.yaml becomes a study partition (study_partitions_sensor)
    wait_for(lambda: UI in servers.gql(STUDY_KEYS)["assetNodeOrError"]["partitionKeys"],
             timeout=120, what=f"study partition {UI}", details=servers.log_tails)
    run = launch_study(servers, UI)
    assert run_tags(run)["dagster/partition"] == UI
    launched = children(servers, run["runId"])
    jobs = {r["jobName"] for r in launched}
    # the data days are the CLI's already: one launch builds the study's own layers
    assert {"study_job", "discovery_job", "blueprints_job", "backtest_job",
            "report_job"} <= jobs, jobs
    # a closed gate fails its run (a verdict: the CLI's "gate closed"): the same event types
    # as for the CLI's study, and no other run
    assert failed_partitions(servers, UI) == failed_partitions(servers, CLI) != set()
    assert {run_tags(r)["dagster/partition"] for r in launched if r["status"] != "SUCCESS"} \
        == {f"{e}|{UI}" for e in failed_partitions(servers, UI)}

    servers.wait_idle()
    for table in TABLES:
        cli_rows, ui_rows = (study_rows(servers.warehouse, table, s) for s in (CLI, UI))
        assert cli_rows.height, f"{table}: no rows for {CLI}"
        differ = [c for c in cli_rows.columns if not ui_rows[c].equals(cli_rows[c])]
        assert ui_rows.columns == cli_rows.columns and not differ, \
            (table, {c: (ui_rows[c].head(3).to_list(), cli_rows[c].head(3).to_list())
                     for c in differ})

    texts = [report_text(study_rows(servers.warehouse, "research_report", s, keep={"path"}),
                         s) for s in (CLI, UI)]
    assert texts[0] == texts[1] and "STUDY" in texts[0]

    # idempotent: launched again, it finds every layer up to date and launches nothing
    again = launch_study(servers, UI)
    assert children(servers, again["runId"]) == []
