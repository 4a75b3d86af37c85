"""Shared fixtures: a fresh data root and Dagster instance per test, and the real Binance files."""

import os
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
# postgres_cluster and postgres_home: a real PostgreSQL server for the Postgres instance's tests
pytest_plugins = ["tests.support.postgres"]
SHARED_BINANCE = REPO.parent / "shared" / "data" / "binance"


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("BACKTEST_DATA_ROOT", str(root))
    monkeypatch.delenv("BACKTEST_MARKET_SOURCE", raising=False)
    return root


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        from backtest_assets.partitions import register_listed_symbols

        register_listed_symbols(inst)  # as the CLI and the listings sensor do
        yield inst


@pytest.fixture
def binance_files() -> Path:
    if not SHARED_BINANCE.is_dir():
        pytest.skip(f"real Binance sample files not found at {SHARED_BINANCE} "
                    "(they live in ../shared, present in CI, absent in a user's clone)")
    return SHARED_BINANCE


def subprocess_env(**extra: str) -> dict[str, str]:
    """The current environment for a child process, plus ``extra``."""
    env = dict(os.environ)
    env.update(extra)
    return env


# ------------------------------------------------------------------ claim verification log
# Each session that runs a test of golden/claim_test_map.csv appends every claim's status to
# the claim verification log (default: data/claim_verification_log.parquet, git-ignored;
# `make golden` writes the pinned one under golden/).
CLAIM_MAP = REPO / "golden" / "claim_test_map.csv"
_OUTCOMES: dict[str, str] = {}


# The longest files first: `make test` hands out whole files (xdist --dist loadfile) in
# collection order, and a long file started last leaves the other worker idle at the end.
LONGEST_FIRST = ("tests/e2e/test_ui_backfill.py", "tests/integration/test_studies.py",
                 "tests/integration/test_research_pipeline.py",
                 "tests/integration/test_lake_pipeline.py", "tests/e2e/test_ui_browser.py",
                 "tests/golden/test_contract.py", "tests/integration/test_celery.py",
                 "tests/e2e/test_crash_recovery.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable


def pytest_addoption(parser):
    parser.addoption("--claims-log", default=os.environ.get(
        "BACKTEST_CLAIMS_LOG", str(REPO / "data" / "claim_verification_log.parquet")),
        help="parquet log the claim statuses of this session are appended to ('' for none)")


def pytest_runtest_logreport(report):
    if report.failed:
        _OUTCOMES[report.nodeid] = "failed"
    elif report.skipped and report.when in ("setup", "call"):
        _OUTCOMES.setdefault(report.nodeid, "skipped")
    elif report.when == "call" and report.passed:
        _OUTCOMES.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--claims-log")
    if not path or hasattr(session.config, "workerinput"):
        return
    from backtest_assets.core.claims import append_log, base_id, load_map, statuses
    from backtest_assets.core.traceability import code_commit

    claims = load_map(CLAIM_MAP)
    if not {base_id(n) for n in _OUTCOMES} & set(claims["test_id"]):
        return  # no claim was tested in this session
    status = statuses(claims, _OUTCOMES)
    append_log(Path(path), status, commit=code_commit())
    counts = dict(status.group_by("status").len().iter_rows())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(
            "claims: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                   ("verified", "failed", "unverified")) + f" -> {path}")
