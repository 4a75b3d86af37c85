"""Run-epoch files (pure): the four files of an epoch, written whole or not at all."""

from __future__ import annotations

import math

import polars as pl
import pytest

from backtest_assets.lifecycle.epochs import FILES, Epoch, read_epoch, write_epoch


def _epoch(**kw) -> Epoch:
    base = {"study": "s", "blueprint": "b", "spec_hash": "h" * 64, "stage": "demo",
            "evaluation": "2024-02-01", "run_id": "r1", "config": {"spec": {"x": 1}},
            "metrics": {"sharpe": 1.5, "pbo": math.nan, "trades": 3, "equity": 101.0},
            "verdict": "hold", "to_stage": "demo", "reason": "live needs 10 days"}
    return Epoch(**{**base, **kw})


def test_an_epoch_writes_its_four_files_and_reads_back(tmp_path):
    trades = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "pnl": [1.0, -2.0],
                           "entry_ts": pl.Series([0, 1]).cast(pl.Datetime("us"))})
    folder = write_epoch(tmp_path, _epoch(), trades)
    assert folder == tmp_path / "b" / "demo_2024-02-01"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    got = read_epoch(folder)
    assert got["results.json"]["pbo"] is None  # NaN is not JSON: null
    assert got["summary.json"]["verdict"] == "hold" and got["summary.json"]["sharpe"] == 1.5
    assert got["config.json"]["spec"] == {"x": 1} and got["config.json"]["run_id"] == "r1"
    assert [t["pnl"] for t in got["trades"]] == [1.0, -2.0]
    assert got["trades"][1]["entry_ts"] == "1970-01-01T00:00:00.000001"
    row = _epoch().row(folder)
    assert row["folder"] == str(folder) and '"pbo":null' in row["metrics"]


def test_a_rewritten_epoch_replaces_the_old_one_and_a_failed_write_leaves_it(tmp_path):
    first = write_epoch(tmp_path, _epoch(), None)
    assert (first / "trades.jsonl").read_text() == ""
    write_epoch(tmp_path, _epoch(verdict="archive", to_stage="archived"), None)
    assert read_epoch(first)["summary.json"]["verdict"] == "archive"
    with pytest.raises(TypeError):  # a metric that is not JSON: nothing half-written
        write_epoch(tmp_path, _epoch(verdict="promote", metrics={"bad": object()}), None)
    assert read_epoch(first)["summary.json"]["verdict"] == "archive"
    assert not list(tmp_path.glob("b/*.tmp"))  # the half-written folder is gone
