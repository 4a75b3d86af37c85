"""Shared fixtures: a fresh data root and Dagster instance per test, and the real Binance files."""

import os
from pathlib import Path

import dagster as dg
import pytest

REPO = Path(__file__).resolve().parents[1]
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
