"""Claim statuses from test outcomes, and the append-only verification log."""

import datetime as dt

import polars as pl
import pytest

from backtest_assets.core.claims import append_log, latest, load_map, statuses

MAP = """claim_id,claim,test_id
C1,"no feature reads the future",tests/unit/test_a.py::test_x
C1,"no feature reads the future",tests/unit/test_a.py::test_y
C2,"engine matches the reference",tests/unit/test_b.py::test_z
"""


@pytest.fixture
def claims(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text(MAP)
    return load_map(path)


def test_status_counts_every_parametrization(claims):
    outcomes = {"tests/unit/test_a.py::test_x[1]": "passed",
                "tests/unit/test_a.py::test_x[2]": "passed",
                "tests/unit/test_a.py::test_y": "passed",
                "tests/unit/test_b.py::test_z[a]": "passed",
                "tests/unit/test_b.py::test_z[b]": "failed"}
    got = statuses(claims, outcomes)
    assert got.select("claim_id", "status", "tests", "passed").rows() == [
        ("C1", "verified", 2, 2), ("C2", "failed", 1, 0)]
    assert got["failed_tests"].to_list() == ["", "tests/unit/test_b.py::test_z"]


def test_a_test_not_run_or_skipped_leaves_the_claim_unverified(claims):
    got = statuses(claims, {"tests/unit/test_a.py::test_x": "passed",
                            "tests/unit/test_b.py::test_z": "skipped"})
    assert got.select("claim_id", "status", "not_run").rows() == [
        ("C1", "unverified", "tests/unit/test_a.py::test_y"),
        ("C2", "unverified", "tests/unit/test_b.py::test_z")]


def test_log_appends_and_latest_is_the_last_run(claims, tmp_path):
    log_path = tmp_path / "log" / "claim_verification_log.parquet"
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    bad = statuses(claims, {"tests/unit/test_a.py::test_x": "failed"})
    good = statuses(claims, {t: "passed" for t in claims["test_id"]})
    append_log(log_path, bad, commit="abc", run_at=t0)
    log = append_log(log_path, good, commit="def", run_at=t0 + dt.timedelta(hours=1))
    assert log.height == 4 and pl.read_parquet(log_path).equals(log)
    assert latest(log).select("claim_id", "status", "commit").rows() == [
        ("C1", "verified", "def"), ("C2", "verified", "def")]
    assert not list(log_path.parent.glob(".*tmp"))  # the temporary file was renamed


@pytest.mark.parametrize("bad, message", [
    ('C1,"x",tests/unit/test_a.py::test_x[1]\n', "not a pytest node id without parameters"),
    ('C1,"x",\n', "line 2: empty test_id"),
    ('C1,"x",tests/a.py::t\nC1,"y",tests/a.py::u\n', "claim C1 has two different texts"),
    ('C1,"x",tests/a.py::t\nC1,"x",tests/a.py::t\n', "claim C1 lists tests/a.py::t twice"),
])
def test_malformed_maps_are_refused_naming_the_problem(tmp_path, bad, message):
    path = tmp_path / "map.csv"
    path.write_text("claim_id,claim,test_id\n" + bad)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_map(path)
