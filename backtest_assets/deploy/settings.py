"""The Dagster instance of real work: which instance a home holds, and the settings its
run-creating processes need. No Dagster import (``make`` and the tests read it too).

Measured (``shared/docs/dagster-stack.md``, a symbol-year of ingest -> bars as one range run):
with default settings Postgres is slower than SQLite, because every partition of a range run
gets its own planned event and every event its own insert. Two settings of Dagster's change
that, and both must be set in each process that creates runs or writes their events (the CLI,
the daemon, the webserver, the run workers they start):

- ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1``: one planned event per asset of a range
  run, holding the whole partition subset, instead of one per partition. Dagster then no
  longer marks the partitions of a failed range run as failed;
  ``backtest_assets.instance.mark_unmaterialized`` restores that (the CLI and the daemon's
  ``run_failure_recorder`` call it and name those partitions).
- ``DAGSTER_EVENT_BATCH_SIZE=1000``: a step's per-partition materializations stored in bulk
  (Postgres only; SQLite has no batched write).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_CREATION_ENV = {
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
    "DAGSTER_EVENT_BATCH_SIZE": "1000",
}
# Postgres connection of the instance in dagster_home/postgres/dagster.yaml
PG_URL_ENV = "DAGSTER_PG_URL"
# The pooled connection of a long-lived process (what the webserver sets up for itself)
POOL = {"statement_timeout": 0, "pool_recycle": 3600, "max_overflow": 10}


def instance_kind(home: str | os.PathLike | None = None) -> str:
    """``postgres`` if the instance in ``home`` (default ``$DAGSTER_HOME``) stores runs and
    events in Postgres, else ``sqlite``."""
    home = home or os.environ.get("DAGSTER_HOME")
    config = Path(home or ".") / "dagster.yaml"
    text = config.read_text() if config.is_file() else ""
    return "postgres" if re.search(r"^\s*(storage:\s*)?postgres:|dagster_postgres", text,
                                   re.M) else "sqlite"


def run_creation_env(home: str | os.PathLike | None = None) -> dict[str, str]:
    """The settings the processes of the instance in ``home`` need (none for SQLite)."""
    return dict(RUN_CREATION_ENV) if instance_kind(home) == "postgres" else {}
