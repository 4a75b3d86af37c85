"""What the tear sheets read: a study's tables, read once and sliced per blueprint and per
portfolio into :mod:`backtest_assets.reporting.tearsheet` inputs, and the files written.

Every number a sheet shows comes from these rows as stored (``backtest_metrics`` for a
blueprint's headline, ``portfolio_metrics`` for a book's); a blueprint's charts carry the
``spec_hash``, ``dataset_hash`` and ``code_commit`` stamped on its backtest.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from backtest_assets.core.studies import study_files
from backtest_assets.core.traceability import code_commit
from backtest_assets.defs.shared import study_boxes, symbol_layout
from backtest_assets.discovery.phase2 import frame_hash
from backtest_assets.partitions import BASE_BARS
from backtest_assets.reporting.event_study import event_study
from backtest_assets.reporting.tearsheet import (
    BlueprintInputs,
    PortfolioInputs,
    Provenance,
    TearSheet,
    render_blueprint,
    render_portfolio,
)
from backtest_assets.strategies.catalog import load_blueprint
from backtest_assets.warehouse import WarehouseError

EVENT_WINDOW = (12, 24)  # event-study curves: bars before and after the entry (as the report)
SHEET_SCHEMA = {"study": pl.String, "kind": pl.String, "name": pl.String, "path": pl.String,
                "sha256": pl.String, "bytes": pl.Int64, "charts": pl.Int64,
                "total_return": pl.Float64, "sharpe": pl.Float64, "max_drawdown": pl.Float64,
                "trades": pl.Float64, "seconds": pl.Float64}


@dataclass(frozen=True)
class StudyFrames:
    """A study's rows of every table a sheet reads (empty frames where not materialized)."""

    tables: dict[str, pl.DataFrame]
    bars: pl.DataFrame  # symbol, ts_open, open, high, low, close (perp)
    events: pl.DataFrame  # event_type, symbol, ts, direction
    data_hash: str  # of bars and events, as the research report's

    def __getitem__(self, name: str) -> pl.DataFrame:
        return self.tables[name]


TABLES = ("strategy_blueprints", "backtest_metrics", "backtest_equity", "backtest_trades",
          "walkforward_results", "walkforward_equity", "walkforward_summary",
          "promotion_decisions", "phase2_fdr", "portfolio_metrics", "portfolio_equity",
          "portfolio_weights")


def study_frames(study, wh) -> StudyFrames:
    """Read ``study``'s tables once (the warehouse, ``wh``)."""
    def table(name: str) -> pl.DataFrame:
        frame = wh.study_rows(name, study.name)
        return pl.DataFrame() if frame is None else frame.drop("study", strict=False)

    boxes = study_boxes(list(study.symbols), study.start, study.end)
    try:
        bars = wh.read(BASE_BARS, symbol_layout("ts_open"), boxes).filter(
            pl.col("market") == "perp").select("symbol", "ts_open", "open", "high", "low",
                                               "close")
        events = wh.read("event_table", symbol_layout("ts"), boxes).select(
            "event_type", "symbol", "ts", "direction")
        data_hash = frame_hash({"bars": bars.select("symbol", "ts_open", "open", "close"),
                                "events": events})
    except WarehouseError:
        bars, events, data_hash = pl.DataFrame(), pl.DataFrame(), ""
    return StudyFrames(tables={t: table(t) for t in TABLES}, bars=bars, events=events,
                       data_hash=data_hash)


def _rows(frame: pl.DataFrame, col: str, value: str) -> pl.DataFrame:
    return frame.filter(pl.col(col) == value) if frame.height and col in frame.columns \
        else pl.DataFrame()


def _row(frame: pl.DataFrame, col: str, value: str) -> dict | None:
    rows = _rows(frame, col, value)
    return rows.row(0, named=True) if rows.height else None


def blueprint_inputs(reg, study, frames: StudyFrames, name: str) -> BlueprintInputs:
    """The :class:`BlueprintInputs` of blueprint ``name`` of ``study``."""
    catalog = _row(frames["strategy_blueprints"], "blueprint", name) or {}
    bp = load_blueprint(catalog) if catalog else None
    metrics = _row(frames["backtest_metrics"], "blueprint", name) or {}
    symbols = list(bp.symbols) if bp is not None else list(study.symbols)
    bars = frames.bars.filter(pl.col("symbol").is_in(symbols)) if frames.bars.height \
        else frames.bars
    event_type = bp.entry.event if bp is not None else None
    events = (frames.events.filter((pl.col("event_type") == event_type)
                                   & pl.col("symbol").is_in(symbols))
              if event_type and frames.events.height else pl.DataFrame())
    fdr = frames["phase2_fdr"]
    if catalog.get("hypothesis_id") and fdr.height:
        hypotheses = fdr.filter(pl.col("hypothesis_id") == catalog["hypothesis_id"])
    elif event_type and fdr.height:
        hypotheses = fdr.filter((pl.col("event_type") == event_type) & pl.col("survivor"))
    else:
        hypotheses = pl.DataFrame()
    curve = (event_study(bars, events, before=EVENT_WINDOW[0], after=EVENT_WINDOW[1])
             if events.height else pl.DataFrame())
    results = _rows(frames["walkforward_results"], "blueprint", name)
    trace = Provenance(study=study.name, spec_hashes=study_files(reg, study.name),
                       spec_hash=metrics.get("spec_hash") or catalog.get("spec_hash") or "",
                       dataset_hash=metrics.get("dataset_hash") or frames.data_hash,
                       code_commit=metrics.get("code_commit") or code_commit())
    return BlueprintInputs(
        blueprint=name, window=(study.start, study.end), interval_minutes=reg.base_minutes,
        init_cash=float(metrics.get("init_cash") or study.capital), trace=trace,
        catalog=catalog, metrics=metrics,
        equity=_rows(frames["backtest_equity"], "blueprint", name),
        trades=_rows(frames["backtest_trades"], "blueprint", name), bars=bars, events=events,
        folds=results.filter(pl.col("sample") == "test") if results.height else results,
        oos_equity=_rows(frames["walkforward_equity"], "blueprint", name),
        summary=_row(frames["walkforward_summary"], "blueprint", name),
        decision=_row(frames["promotion_decisions"], "blueprint", name),
        hypotheses=hypotheses, event_curve=curve,
        leverage=bp.leverage if bp is not None else None)


def portfolio_inputs(reg, study, frames: StudyFrames, name: str) -> PortfolioInputs:
    """The :class:`PortfolioInputs` of portfolio ``name`` of ``study``."""
    metrics = _rows(frames["portfolio_metrics"], "portfolio", name)
    spec_hash = metrics["spec_hash"][0] if metrics.height else ""
    return PortfolioInputs(
        portfolio=name, window=(study.start, study.end), interval_minutes=reg.base_minutes,
        init_cash=float(study.capital),
        trace=Provenance(study=study.name, spec_hashes=study_files(reg, study.name),
                         spec_hash=spec_hash, dataset_hash=frames.data_hash,
                         code_commit=code_commit()),
        metrics=metrics, equity=_rows(frames["portfolio_equity"], "portfolio", name),
        weights=_rows(frames["portfolio_weights"], "portfolio", name),
        closes=frames.bars.select("symbol", "ts_open", "close") if frames.bars.height
        else frames.bars)


def sheet_file(folder: Path, kind: str, name: str) -> Path:
    return folder / (f"{name}.html" if kind == "blueprint" else f"portfolio_{name}.html")


def write_sheets(reg, study, frames: StudyFrames, folder: Path) -> pl.DataFrame:
    """Render and write every blueprint's and portfolio's sheet into ``folder`` (each file
    replaced whole); one row per sheet (``SHEET_SCHEMA``)."""
    folder.mkdir(parents=True, exist_ok=True)
    catalog = frames["strategy_blueprints"]
    names = [("blueprint", n) for n in (catalog["blueprint"].to_list() if catalog.height
                                        else [])]
    book = frames["portfolio_metrics"]
    names += [("portfolio", n) for n in (sorted(book["portfolio"].unique()) if book.height
                                         else [])]
    rows = []
    for kind, name in names:
        t0 = time.perf_counter()
        sheet: TearSheet = (render_blueprint(blueprint_inputs(reg, study, frames, name))
                            if kind == "blueprint" else
                            render_portfolio(portfolio_inputs(reg, study, frames, name)))
        data = sheet.html.encode()
        path = sheet_file(folder, kind, name)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a reader never sees half a sheet
        h = sheet.headline
        rows.append({"study": study.name, "kind": kind, "name": name, "path": str(path),
                     "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                     "charts": len(sheet.charts), "total_return": h.get("total_return"),
                     "sharpe": h.get("sharpe"), "max_drawdown": h.get("max_drawdown"),
                     "trades": h.get("trades"), "seconds": time.perf_counter() - t0})
    return pl.DataFrame(rows, schema=SHEET_SCHEMA)
