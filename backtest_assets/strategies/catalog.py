"""The blueprint catalog (pure; no Dagster): baselines from specs plus Phase-2 survivors.

One row per blueprint: ``blueprint`` (its name, the Dagster partition key), ``source``
("spec", "phase2" or "alpha"), ``hypothesis_id`` (null for a spec), ``spec_json`` (canonical JSON
of the :class:`StrategySpec` with its overlays resolved, read back by :func:`load_blueprint`),
``spec_hash``, and a readable summary (symbols, entry, direction, exits, overlays as
``name@hash8``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import polars as pl

from backtest_assets.specs.loader import build, canonical_json, spec_hash
from backtest_assets.specs.models import AlphaEntry, Entry, StrategySpec
from backtest_assets.specs.registry import SpecRegistry, blueprint_problems
from backtest_assets.strategies.blueprints import from_survivor, spec_name
from backtest_assets.strategies.overlays import versions

CATALOG_SCHEMA = {"blueprint": pl.String, "source": pl.String, "hypothesis_id": pl.String,
                  "spec_json": pl.String, "spec_hash": pl.String, "symbols": pl.String,
                  "entry": pl.String, "direction": pl.String, "exits": pl.String,
                  "overlays": pl.String}


def from_alpha_model(model: str, symbols: Sequence[str]) -> StrategySpec:
    """The blueprint that trades an alpha model's scores over the study's symbols: long the
    top quantile, short the bottom (``1 / n`` of equity each, so the book's gross is at most
    ``2 * quantile``), rebalanced hourly (12 bars of 5m, the model's horizon), flat where
    there is no score; its grid tries quantiles 0.2, 0.34 and 0.5 and rebalancing every 12
    or 48 bars. Leverage 2: headroom for the isolated margin."""
    symbols = tuple(symbols)
    bp = StrategySpec(
        name=spec_name(f"alpha_{model}"),
        description=f"the out-of-sample, regime-gated scores of alpha model {model}: long "
                    "the top quantile, short the bottom, every bar",
        symbols=symbols, entry=Entry(alpha=AlphaEntry(model=model, rebalance_bars=12)),
        direction="continuation", target_weight=1.0 / len(symbols), leverage=2.0,
        grid={"entry.alpha.quantile": (0.2, 0.34, 0.5),
              "entry.alpha.rebalance_bars": (12.0, 48.0)})
    bp.validate()
    return bp


def catalog(reg: SpecRegistry, survivors: pl.DataFrame | None,
            study_symbols: Sequence[str], alpha_models: Sequence[str] = ()) -> pl.DataFrame:
    """The blueprints of a study trading ``study_symbols``: the baselines of
    ``reg.strategies`` whose symbols it holds, then one per Phase-2 survivor row, then one
    per alpha model with scores in the study (``alpha_models``, :func:`from_alpha_model`).

    ``survivors``: rows of ``phase2_fdr`` with ``survivor`` true (hypothesis_id, event_type,
    rule_template, horizon, symbol, n, mean, q), or None before any Phase 2. A pooled
    survivor (symbol ``ALL``) trades every symbol of the study.
    """
    horizons = reg.phase2().horizon_bars if survivors is not None and survivors.height else {}
    specs = [("spec", None, bp) for bp in reg.strategies.values()
             if set(bp.symbols) <= set(study_symbols)]
    for row in (survivors.sort("hypothesis_id").iter_rows(named=True)
                if survivors is not None else []):
        bp = from_survivor(row, universe_symbols=tuple(study_symbols), horizon_bars=horizons)
        specs.append(("phase2", row["hypothesis_id"], bp))
    specs += [("alpha", None, from_alpha_model(m, study_symbols)) for m in sorted(alpha_models)]
    rows = [{"blueprint": bp.name, "source": source, "hypothesis_id": hyp,
             "spec_json": canonical_json(bp), "spec_hash": spec_hash(bp),
             "symbols": ",".join(bp.symbols), "entry": _entry(bp), "direction": bp.direction,
             "exits": _exits(bp), "overlays": versions(bp.overlays) or "none"}
            for source, hyp, bp in specs]
    return pl.DataFrame(rows, schema=CATALOG_SCHEMA)


# What the catalog reads of a Phase-2 survivor (``phase2_fdr`` records these rows in its
# materialization metadata, so the blueprint sensor can name new blueprints without the
# warehouse).
SURVIVOR_FIELDS = ("hypothesis_id", "event_type", "rule_template", "horizon", "symbol", "n",
                   "mean", "q")


def survivor_rows(fdr: pl.DataFrame) -> list[dict]:
    """The survivors of a ``phase2_fdr`` table, as the catalog reads them."""
    return fdr.filter(pl.col("survivor")).select(SURVIVOR_FIELDS).sort(
        "hypothesis_id").to_dicts()


def blueprint_names(reg: SpecRegistry, rows: list[dict], study_symbols: Sequence[str]
                    ) -> list[str]:
    """Names of a study's catalog built from ``rows`` (its survivor rows of every event
    type)."""
    survivors = pl.DataFrame(rows, schema={
        "hypothesis_id": pl.String, "event_type": pl.String, "rule_template": pl.String,
        "horizon": pl.String, "symbol": pl.String, "n": pl.Int64, "mean": pl.Float64,
        "q": pl.Float64}) if rows else None
    return catalog(reg, survivors, study_symbols)["blueprint"].to_list()


def problems(reg: SpecRegistry, table: pl.DataFrame) -> list[str]:
    """Why blueprints of ``table`` cannot be backtested: duplicated names, unknown symbols,
    events, features or venues, leverage above the venue's cap (one line each)."""
    out = [f"{name}: {n} blueprints share this name" for name, n in
           table.group_by("blueprint").len().filter(pl.col("len") > 1).iter_rows()]
    for row in table.iter_rows(named=True):
        try:
            bp = load_blueprint(row)
        except ValueError as exc:
            out.append(f"{row['blueprint']}: {exc}")
            continue
        out += [f"{bp.name}: {field}: {problem}" for field, problem in blueprint_problems(
            bp, reg.universe.symbol_names, reg.events, reg.features, reg.fees, reg.alpha)]
    return out


def load_blueprint(row: dict) -> StrategySpec:
    """The :class:`StrategySpec` of a catalog row (checked as a spec file would be)."""
    return build(StrategySpec, json.loads(row["spec_json"]),
                 file=f"strategy_blueprints[{row['blueprint']}]")


def _entry(bp: StrategySpec) -> str:
    if bp.entry.event is not None:
        return f"event {bp.entry.event}"
    if bp.entry.code is not None:
        c = bp.entry.code
        params = ", ".join(f"{k} {v:g}" for k, v in sorted((c.params or {}).items()))
        return f"code {c.strategy.rpartition(':')[2]}" + (f" ({params})" if params else "")
    if bp.entry.alpha is not None:
        a = bp.entry.alpha
        return (f"alpha {a.model} {a.mode}" + (f" {a.quantile:g}" if a.mode == "quantile"
                                                else "") + f" every {a.rebalance_bars} bars")
    c = bp.entry.condition
    lag = f" (lag {c.lag})" if c.lag else ""
    return f"{c.feature} {c.op} {c.threshold:g}{lag}"


def _exits(bp: StrategySpec) -> str:
    ex = bp.exits
    parts = [f"{k} {v:g}" for k, v in (("stop", ex.stop_loss), ("take", ex.take_profit),
                                       ("bars", ex.time_stop_bars)) if v is not None]
    return ", ".join(parts) or "none"
