"""Which instance a Dagster home holds, the settings its processes get, and the local
cluster's refusals (no server started here: tests/integration/test_postgres_instance.py)."""

from __future__ import annotations

import pytest

from backtest_assets.deploy import postgres
from backtest_assets.deploy.postgres import LocalPostgres, PostgresError
from backtest_assets.deploy.settings import RUN_CREATION_ENV, instance_kind, run_creation_env
from tests.conftest import REPO


def test_the_repository_homes_are_one_sqlite_and_one_postgres_instance(tmp_path):
    assert instance_kind(REPO / "dagster_home") == "sqlite"
    assert instance_kind(REPO / "dagster_home" / "postgres") == "postgres"
    assert instance_kind(tmp_path) == "sqlite"  # no dagster.yaml: Dagster's default storage
    assert run_creation_env(REPO / "dagster_home") == {}
    assert run_creation_env(REPO / "dagster_home" / "postgres") == RUN_CREATION_ENV
    assert RUN_CREATION_ENV == {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
                                "DAGSTER_EVENT_BATCH_SIZE": "1000"}


def test_a_postgres_storage_written_inline_is_recognized(tmp_path):
    (tmp_path / "dagster.yaml").write_text(
        "run_storage:\n  module: x\nstorage:\n  postgres:\n    postgres_url: postgresql://h/d\n")
    assert instance_kind(tmp_path) == "postgres"


def test_missing_programs_and_bad_database_names_are_refused_in_words(tmp_path, monkeypatch):
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(PostgresError, match="initdb not found: install Debian's postgresql"):
        postgres.postgres_bin("initdb")
    with pytest.raises(PostgresError, match="letters, digits and _ only"):
        LocalPostgres(tmp_path).create_database("x; DROP DATABASE y")
    assert LocalPostgres(tmp_path, port=5999).url("d") == \
        "postgresql+psycopg2://postgres@127.0.0.1:5999/d"
