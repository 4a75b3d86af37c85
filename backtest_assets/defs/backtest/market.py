"""The study's market data as the blueprints read it: shared by backtests and walk-forward."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import numpy as np
import polars as pl

from backtest_assets.defs.shared import study_boxes, symbol_layout
from backtest_assets.partitions import BASE_BARS
from backtest_assets.specs.models import StrategySpec, StudySpec
from backtest_assets.specs.registry import SpecRegistry
from backtest_assets.strategies import Panel
from backtest_assets.strategies.blueprints import alpha_feature
from backtest_assets.strategies.catalog import load_blueprint, problems
from backtest_assets.strategies.overlays import features_read
from backtest_assets.warehouse import Warehouse


@dataclass(frozen=True)
class StudyData:
    """Perp bars, the features and events the blueprints read, and funding, of a study."""

    bars: pl.DataFrame
    features: pl.DataFrame | None
    events: pl.DataFrame | None
    funding: pl.DataFrame
    start: dt.datetime
    end: dt.datetime  # exclusive: the day after the study's last
    # alpha model -> its out-of-sample gated scores (ts, symbol, gated_score)
    scores: dict[str, pl.DataFrame] = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, wh: Warehouse, study: StudySpec, blueprints: Sequence[StrategySpec]
             ) -> StudyData:
        symbols = sorted({s for bp in blueprints for s in bp.symbols})
        boxes = study_boxes(symbols, study.start, study.end)
        # in time order: a scan of a large table returns rows in no particular order
        by_bar, by_ts = ("symbol", "ts_open"), ("symbol", "ts")
        bars = wh.read(BASE_BARS, symbol_layout("ts_open"), boxes,
                       order_by=(*by_bar, "market")).filter(pl.col("market") == "perp")
        wanted = sorted({f for bp in blueprints for f in features_of(bp)
                         if not f.startswith("alpha:")})
        feats = wh.read("pit_features", symbol_layout("ts_open"), boxes,
                        order_by=by_bar).select("symbol", "ts_open", *wanted) if wanted else None
        events = wh.read("event_table", symbol_layout("ts"), boxes,
                         order_by=(*by_ts, "event_type")) \
            if any(events_of(bp) for bp in blueprints) else None
        funding = wh.read("raw_funding_rates", symbol_layout("ts"), boxes,
                          order_by=by_ts).select("symbol", "ts", "funding_rate")
        models = sorted({bp.entry.alpha.model for bp in blueprints if bp.entry.alpha})
        stored = wh.study_rows("alpha_scores", study.name) if models else None
        scores = {m: (stored.filter(pl.col("alpha_model") == m).select(
                      "ts", "symbol", "gated_score") if stored is not None
                      else pl.DataFrame(schema={"ts": pl.Datetime("us"), "symbol": pl.String,
                                                "gated_score": pl.Float64}))
                  for m in models}
        return cls(bars, feats, events, funding, boxes[0].start, boxes[0].end, scores)

    def for_blueprint(self, bp: StrategySpec, base_minutes: int, missing_marks: str = "refuse"
                      ) -> tuple[Panel, dict[str, np.ndarray], pl.DataFrame]:
        """The blueprint's panel (its marks completed by the study's ``missing_marks``
        policy: :meth:`Panel.with_mark_policy`), the features its entry and overlays read
        and its symbols' funding.

        Raises ``ValueError`` (naming symbol and time) for bars that do not fit the grid, or
        bars without a mark price the policy refuses.
        """
        panel = Panel.from_bars(self.bars, bp.symbols, self.start, self.end,
                                base_minutes).with_mark_policy(missing_marks)
        features = {f: panel.column(self.features, f) for f in features_of(bp)
                    if not f.startswith("alpha:")}
        if bp.entry.alpha is not None:
            scores = self.scores[bp.entry.alpha.model]
            if scores.is_empty():
                raise ValueError(f"{bp.name}: alpha model {bp.entry.alpha.model} has no "
                                 "scores in this study: materialize its alpha bundle first")
            features[alpha_feature(bp.entry.alpha.model)] = panel.column(
                scores, "gated_score", ts_col="ts")
        return panel, features, self.funding.filter(pl.col("symbol").is_in(bp.symbols))

    def inputs_of(self, bp: StrategySpec) -> dict[str, pl.DataFrame]:
        """The frames the blueprint read (for its dataset hash)."""
        inputs = {"bars": self.bars.filter(pl.col("symbol").is_in(bp.symbols)),
                  "funding": self.funding.filter(pl.col("symbol").is_in(bp.symbols))}
        if self.events is not None and events_of(bp):
            inputs["events"] = self.events.filter(pl.col("event_type").is_in(events_of(bp)))
        own = [f for f in features_of(bp) if not f.startswith("alpha:")]
        if self.features is not None and own:
            inputs["features"] = self.features.select("symbol", "ts_open", *own)
        if bp.entry.alpha is not None:
            inputs["scores"] = self.scores[bp.entry.alpha.model]
        return inputs


def features_of(bp: StrategySpec) -> tuple[str, ...]:
    """The features a blueprint reads: its entry condition's (a code entry's), then its
    overlays'."""
    entry = (bp.entry.condition.feature,) if bp.entry.condition else \
        (alpha_feature(bp.entry.alpha.model),) if bp.entry.alpha else \
        bp.entry.code.features if bp.entry.code else ()
    return tuple(dict.fromkeys((*entry, *features_read(bp.overlays))))


def events_of(bp: StrategySpec) -> tuple[str, ...]:
    """The event types a blueprint reads: its event entry's, or a code entry's."""
    if bp.entry.event is not None:
        return (bp.entry.event,)
    return bp.entry.code.events if bp.entry.code is not None else ()


def selected_blueprints(reg: SpecRegistry, catalog: pl.DataFrame, names: Sequence[str]
                        ) -> tuple[list[StrategySpec], dict[str, dict]]:
    """The blueprints ``names`` of the ``strategy_blueprints`` catalog and their rows.

    Fails the step (before any simulation) for a name missing from the catalog or a row
    the specs no longer accept (e.g. a spec edited since the catalog was written).
    """
    rows = {r["blueprint"]: r for r in catalog.iter_rows(named=True)}
    missing = [n for n in names if n not in rows]
    if missing:
        raise dg.Failure(description=f"blueprints {missing} are not in strategy_blueprints: "
                                     "materialize strategy_blueprints first")
    found = problems(reg, catalog.filter(pl.col("blueprint").is_in(names)))
    if found:
        raise dg.Failure(description="refused before simulating:\n" + "\n".join(found))
    return [load_blueprint(rows[n]) for n in names], rows
