"""The plain reference of ``bench/ingest_bars.py`` does the Dagster job's work.

The benchmark's ratio (Dagster run / plain run) only means Dagster's cost if the plain run
writes what the job writes: every table row for row, the side tables, and each key's lineage
record (its rows' hash and inputs), apart from the run id and build time of the lineage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_COLUMNS = {"lineage": ("run_id", "built_at")}


def _run(variant: str, root: Path) -> Path:
    env = dict(os.environ, BACKTEST_DATA_ROOT=str(root / "data"), DAGSTER_HOME=str(root))
    root.mkdir(parents=True)
    code = ("import sys; sys.path.insert(0, 'bench'); import ingest_bars as ib; "
            f"ib.variant_{variant}(2)")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, check=True,
                   capture_output=True)
    return root / "data" / "warehouse.duckdb"


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()]
        out = {}
        for name in names:
            frame = conn.execute(f"SELECT * FROM {name}").pl()  # noqa: S608
            frame = frame.drop(*RUN_COLUMNS.get(name, ()))
            out[name] = frame.sort(frame.columns)
        return out


@pytest.mark.slow  # guards a benchmark, not the product: out of CI's budget
def test_the_plain_reference_writes_the_jobs_tables(tmp_path):
    plain = _tables(_run("plain", tmp_path / "plain"))
    job = _tables(_run("dagster_memory", tmp_path / "job"))
    assert sorted(plain) == sorted(job)
    assert {"lineage", "ingest_files", "bars_1m", "raw_mark_price_klines_1m"} <= set(job)
    for name in sorted(job):
        assert plain[name].equals(job[name]), name
    assert job["bars_1m"].height == 2 * 2 * 1440  # perp and spot, two days
    assert job["lineage"].height == 9 * 2  # a record per asset and key
    assert job["bars_1m"]["n_mark_bars"].max() > 0  # the mark price was joined
