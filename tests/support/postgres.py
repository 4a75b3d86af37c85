"""A real PostgreSQL server for tests of the Postgres Dagster instance.

One disposable cluster per test session (per xdist worker) on a free loopback port, a fresh
database per test. Without Debian's ``postgresql`` programs the tests skip, except under CI
(``.ci/run`` installs them; a skip there would hide the instance's tests).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from backtest_assets.deploy.postgres import LocalPostgres, PostgresError, free_port, postgres_bin
from backtest_assets.deploy.settings import PG_URL_ENV
from tests.conftest import REPO

PG_DAGSTER_YAML = REPO / "dagster_home" / "postgres" / "dagster.yaml"


def available() -> str | None:
    """Why the tests cannot start a cluster here, or None."""
    try:
        postgres_bin("initdb")
    except PostgresError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def postgres_cluster(tmp_path_factory) -> Iterator[LocalPostgres]:
    missing = available()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Postgres instance's tests: {missing}")
        pytest.skip(missing)
    directory = tmp_path_factory.mktemp("postgres")
    if os.geteuid() == 0:  # the cluster's owner must reach it (pytest's tmp is 0700)
        for parent in (directory, *directory.parents):
            if parent == Path("/"):
                break
            parent.chmod(stat.S_IMODE(parent.stat().st_mode) | 0o711)
    cluster = LocalPostgres(directory / "cluster", port=free_port(), disposable=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_home(postgres_cluster, tmp_path, request, monkeypatch) -> Path:
    """A DAGSTER_HOME holding the repository's Postgres instance, on a fresh database;
    DAGSTER_PG_URL set in this process (children get it through ``subprocess_env``)."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    name = f"{name}_{os.getpid()}"
    url = postgres_cluster.create_database(name)
    monkeypatch.setenv(PG_URL_ENV, url)
    home = tmp_path / "pg_home"
    home.mkdir()
    shutil.copy(PG_DAGSTER_YAML, home / "dagster.yaml")
    return home


def planned_events(instance, run_id: str
                   ) -> tuple[list[tuple[str, list[str]]], list[tuple[str, str]]]:
    """A run's planned events, each sorted: (asset, its subset's partitions) of those holding a
    subset (one per asset with the run-creation setting), and (asset, partition) of those
    naming one partition (without it, or marked by ``instance.mark_unmaterialized``)."""
    from dagster._core.events import DagsterEventType

    planned = [r.event_log_entry.dagster_event.asset_materialization_planned_data
               for r in instance.get_records_for_run(
                   run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records]
    subsets = sorted((p.asset_key.to_user_string(),
                      sorted(p.partitions_subset.get_partition_keys()))
                     for p in planned if p.partitions_subset is not None)
    singles = sorted((p.asset_key.to_user_string(), p.partition)
                     for p in planned if p.partitions_subset is None)
    return subsets, singles


def lake_catalog(cluster: LocalPostgres, request) -> str:
    """A fresh catalog database for one test: the string DuckLake attaches."""
    name = "lake_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    cluster.create_database(name)
    return cluster.lake_catalog(name)


@pytest.fixture
def lake_env(postgres_cluster, tmp_path, request, monkeypatch):
    """This process and its children on the lake instance: runs in Postgres
    (dagster_home/lake), the warehouse a DuckLake with its catalog in the same cluster."""
    home = tmp_path / "lake_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "lake" / "dagster.yaml", home)
    name = f"runs_{os.getpid()}_{request.node.name[:20].lower()}".replace("-", "_")
    env = {"DAGSTER_HOME": str(home),
           "DAGSTER_PG_URL": postgres_cluster.create_database(
               "".join(c for c in name if c.isalnum() or c == "_")),
           "BACKTEST_WAREHOUSE": "ducklake",
           "BACKTEST_LAKE_CATALOG": lake_catalog(postgres_cluster, request),
           "BACKTEST_DATA_ROOT": str(tmp_path / "data")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
