"""Run epochs: every backtest, walk-forward and demo evaluation of a blueprint as one record,
and its files (pure; no Dagster).

An epoch is (study, blueprint, spec hash, stage, evaluation, the run that produced it, its
config, its metrics, the verdict it led to and the reason). The stages are those of the
lifecycle (:mod:`backtest_assets.strategies.promotion`):

- ``backtest``: the blueprint's backtest over the study (``backtest_metrics``); its verdict
  is the promotion decision's for the move out of ``idea`` (a backtest alone is held);
- ``walkforward``: its walk-forward evidence (``walkforward_summary``) and the promotion
  decision taken on it (promote to demo, or archive with the failed gates);
- ``demo``: one epoch per demo day (``demo_days``): that day's paper trading, the test
  against the backtest and the decision (hold, promote to live, archive).

:func:`write_epoch` writes an epoch's files in its own folder, as the seeds' ``run_epoch``
does: ``config.json`` (what was run: the spec, the study, the stage, the run, the hashes),
``results.json`` (every metric), ``summary.json`` (the verdict, the stage it moves to, the
reason and the headline figures) and ``trades.jsonl`` (one JSON object per trade; empty where
the evaluation stores no trades). The folder is written under a temporary name and renamed,
so a reader never sees half an epoch.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

EPOCH_SCHEMA = {"study": pl.String, "blueprint": pl.String, "spec_hash": pl.String,
                "stage": pl.String, "evaluation": pl.String, "run_id": pl.String,
                "config": pl.String, "metrics": pl.String, "verdict": pl.String,
                "to_stage": pl.String, "reason": pl.String, "folder": pl.String}
FILES = ("config.json", "results.json", "summary.json", "trades.jsonl")
HEADLINE = ("total_return", "sharpe", "max_drawdown", "trades", "oos_sharpe", "deflated_sharpe",
            "pbo", "day_return", "equity", "demo_days", "t_stat")


@dataclass(frozen=True)
class Epoch:
    """One evaluation of a blueprint (module docstring)."""

    study: str
    blueprint: str
    spec_hash: str
    stage: str  # backtest | walkforward | demo
    evaluation: str  # what was evaluated: the study window, or the demo day
    run_id: str  # the Dagster run that produced the evaluation
    config: Mapping
    metrics: Mapping
    verdict: str  # promote | hold | archive
    to_stage: str
    reason: str

    @property
    def name(self) -> str:
        """The epoch's folder name under its blueprint: the stage and what it evaluated."""
        return f"{self.stage}_{self.evaluation}"

    def row(self, folder: Path | None = None) -> dict:
        return {"study": self.study, "blueprint": self.blueprint, "spec_hash": self.spec_hash,
                "stage": self.stage, "evaluation": self.evaluation, "run_id": self.run_id,
                "config": _json(self.config), "metrics": _json(self.metrics),
                "verdict": self.verdict, "to_stage": self.to_stage, "reason": self.reason,
                "folder": None if folder is None else str(folder)}


def write_epoch(root: Path, epoch: Epoch, trades: pl.DataFrame | None = None) -> Path:
    """The epoch's four files in ``root / blueprint / name``; returns that folder.

    Raises ``TypeError`` when a metric or config value is not JSON (NaN and infinities are
    written as null, as JSON has none); the epoch's previous files are then left as they
    were."""
    folder = root / epoch.blueprint / epoch.name
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_files(tmp, epoch, trades)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def _write_files(tmp: Path, epoch: Epoch, trades: pl.DataFrame | None) -> None:
    summary = {"study": epoch.study, "blueprint": epoch.blueprint, "stage": epoch.stage,
               "evaluation": epoch.evaluation, "run_id": epoch.run_id,
               "verdict": epoch.verdict, "to_stage": epoch.to_stage, "reason": epoch.reason,
               **{k: epoch.metrics[k] for k in HEADLINE if k in epoch.metrics}}
    config = {"study": epoch.study, "blueprint": epoch.blueprint,
              "spec_hash": epoch.spec_hash, "stage": epoch.stage,
              "evaluation": epoch.evaluation, "run_id": epoch.run_id, **epoch.config}
    for name, data in (("config.json", config), ("results.json", epoch.metrics),
                       ("summary.json", summary)):
        (tmp / name).write_text(_json(data, indent=2) + "\n", encoding="utf-8")
    lines = [] if trades is None else [_json(r) for r in trades.iter_rows(named=True)]
    (tmp / "trades.jsonl").write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")


def read_epoch(folder: Path) -> dict[str, object]:
    """An epoch's files as written: the three JSON documents and the trades' rows."""
    out: dict[str, object] = {n: json.loads((folder / n).read_text())
                              for n in FILES if n.endswith(".json")}
    out["trades"] = [json.loads(x) for x in (folder / "trades.jsonl").read_text().splitlines()]
    return out


def _plain(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v


def _json(data, indent: int | None = None) -> str:
    return json.dumps(_plain(data), sort_keys=True, indent=indent, allow_nan=False,
                      separators=None if indent else (",", ":"))
