"""An edge's walk-forward evidence as of a bar: what a contract review could know then
(pure; no Dagster).

The study's ``walkforward_summary`` is computed on the whole study: an edge approved on it
and weighted from the study's first weeks was chosen with figures from weeks that had not
happened yet. :func:`as_of` re-runs the same walk-forward
(:func:`backtest_assets.walkforward.evaluate.evaluate`: folds, CPCV, PBO, deflated Sharpe,
cost stress) on the bars before the review only. The features are point in time and the
events are those detected up to then, so the prefix is exactly what a desk had at the
review. A prefix too short for the walk-forward spec yields no evidence, with the reason.

What it cannot undo: a Phase-2 survivor's blueprint exists because Phase 2 found it on the
whole study; its as-of evidence is honest for the blueprint, not for its discovery (its
deflated Sharpe counts Phase 2's trials, ``trials_phase2``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import numpy as np
import polars as pl

from backtest_assets.specs.models import CostStress, StrategySpec, WalkForwardSpec
from backtest_assets.walkforward.evaluate import Market, evaluate


def prefix(market: Market, bar: int) -> Market:
    """``market`` cut to its bars ``[0, bar)`` (features, events and funding alike)."""
    p = market.panel
    end = p.ts[bar].astype("datetime64[us]").item() if bar < len(p.ts) else None
    if end is None:
        return market

    def before(frame: pl.DataFrame | None) -> pl.DataFrame | None:
        return None if frame is None else frame.filter(
            pl.col("ts").cast(pl.Datetime("us")) < end)

    return dataclasses.replace(
        market, panel=p.rows(0, bar),
        features={k: np.asarray(v)[:bar] for k, v in market.features.items()},
        events=before(market.events), funding=before(market.funding))


def as_of(bp: StrategySpec, market: Market, spec: WalkForwardSpec, *, stress: CostStress,
          trials_phase2: int = 0) -> Callable[[int], Mapping[str, float] | str]:
    """``evidence(bar)``: the walk-forward summary row of ``bp`` on ``market``'s bars before
    ``bar``, or why there is none (cached per bar)."""

    @functools.cache
    def evidence(bar: int) -> Mapping[str, float] | str:
        when = market.panel.ts[min(bar, len(market.panel.ts) - 1)].astype("datetime64[m]")
        try:
            wf = evaluate(bp, prefix(market, bar), spec, stress=stress,
                          trials_phase2=trials_phase2)
        except ValueError as exc:
            return f"no walk-forward evidence as of {when}: {exc}"
        return wf.summary.row(0, named=True)

    return evidence
