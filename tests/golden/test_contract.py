"""The golden contract: the certification batch, built afresh in a new Dagster instance, passes
every asset check and reproduces the artifacts pinned under golden/; a changed pinned number
is caught; every claim of golden/claim_test_map.csv was verified when golden/ was pinned."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from backtest_assets import certify
from backtest_assets.core.claims import STATUSES, latest, load_map
from tests.conftest import REPO, subprocess_env

GOLDEN = REPO / "golden"


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``python -m backtest_assets certify`` against golden/, in a fresh work directory."""
    work = tmp_path_factory.mktemp("certify")
    proc = subprocess.run(
        [sys.executable, "-m", "backtest_assets", "certify", "--workdir", str(work),
         "--golden", str(GOLDEN)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    return work / "artifacts", proc


def test_certification_batch_matches_golden(batch):
    fresh, proc = batch
    # on failure the command's output lists the failing runs and checks, or the diff
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    assert "certification passed" in proc.stdout
    assert certify.compare(GOLDEN, fresh) == []
    # its instance was fresh: one evaluation of each check per partition run, nothing older
    checks = pl.read_csv(fresh / "check_results.csv")
    assert checks.filter(pl.col("check") == "e1_gate")["passed"].item() >= 1
    assert set(checks["severity"]) <= {"ERROR", "WARN"}


def mutated(tmp_path: Path, file: str, edit) -> Path:
    """A copy of golden/ with one artifact edited by ``edit(lines) -> lines``."""
    copy = tmp_path / "golden"
    shutil.copytree(GOLDEN, copy)
    path = copy / file
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    return copy


def test_a_changed_pinned_number_fails_the_contract_with_a_readable_diff(batch, tmp_path):
    fresh, _ = batch
    metrics = pl.read_csv(GOLDEN / "backtest_metrics.csv")
    name, sharpe = metrics.row(0, named=True)["blueprint"], metrics["sharpe"][0]
    col = metrics.columns.index("sharpe")

    def bump(lines, factor):
        cells = lines[1].split(",")
        cells[col] = repr(float(cells[col]) * factor)
        return [lines[0], ",".join(cells), *lines[2:]]

    diff = certify.compare(mutated(tmp_path / "a", "backtest_metrics.csv",
                                   lambda lines: bump(lines, 1 + 1e-6)), fresh)
    assert diff == [f"backtest_metrics.csv: blueprint={name}: sharpe: pinned "
                    f"{sharpe * (1 + 1e-6)!r} != fresh {sharpe!r}"]
    # within the stated tolerance (rel 1e-9) a float may move: parallel sums change order
    assert certify.compare(mutated(tmp_path / "b", "backtest_metrics.csv",
                                   lambda lines: bump(lines, 1 + 1e-12)), fresh) == []


def test_changed_verdicts_and_rows_are_named(batch, tmp_path):
    fresh, _ = batch
    e1 = mutated(tmp_path / "a", "e1_report.csv", lambda lines: [
        lines[0], re.sub(r",true,\"\"$", ",false,\"\"", lines[1]), *lines[2:]])
    (line,) = certify.compare(e1, fresh)
    assert line.startswith("e1_report.csv: event_type=") and "passed: pinned false != " \
        "fresh true" in line
    fdr = mutated(tmp_path / "b", "phase2_fdr.csv", lambda lines: [lines[0], *lines[2:]])
    (line,) = certify.compare(fdr, fresh)
    assert re.fullmatch(r"phase2_fdr\.csv: row event_type=\w+, hypothesis_id=h_\w+ is "
                        r"produced but not pinned", line)
    checks = mutated(tmp_path / "c", "check_results.csv",
                     lambda lines: [lines[0].replace("passed", "ok"), *lines[1:]])
    assert certify.compare(checks, fresh) == [
        "check_results.csv: columns differ: pinned only ['ok'], fresh only ['passed']"]


def test_failing_checks_are_listed_and_gate_verdicts_are_not_failures():
    checks = pl.DataFrame({
        "asset": ["bars_5m", "event_quality_report", "pit_features"],
        "check": ["row_count", "e1_gate", "complete_days"],
        "severity": ["ERROR", "ERROR", "WARN"], "passed": [2, 5, 0], "failed": [1, 1, 3]})
    assert certify.check_problems(checks) == [
        "asset check bars_5m:row_count failed 1 of 3 evaluations (ERROR)",
        "asset check pit_features:complete_days failed 3 of 3 evaluations (WARN)"]


def test_every_claim_maps_to_existing_tests_and_was_verified_when_pinned():
    claims = load_map(GOLDEN / "claim_test_map.csv")
    for test_id in claims["test_id"].unique():
        file, name = test_id.split("::")
        assert re.search(rf"^def {name}\(", (REPO / file).read_text(), re.M), test_id
    log = pl.read_parquet(GOLDEN / "claim_verification_log.parquet")
    assert set(log["status"]) <= set(STATUSES)
    pinned = latest(log)
    assert sorted(pinned["claim_id"]) == sorted(claims["claim_id"].unique())
    not_verified = pinned.filter(pl.col("status") != "verified")
    assert not_verified.height == 0, not_verified.select("claim_id", "status", "failed_tests",
                                                         "not_run").to_dicts()
