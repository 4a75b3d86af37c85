"""Every PartitionsDefinition, declared once from ``specs/universe.yaml``, imported everywhere."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Collection

import dagster as dg

from backtest_assets.specs import load_registry

# The design relies on these on purpose (DESIGN.md: single-run backfills, warm-up and
# look-ahead partition mappings, Gate E-1 results per event-type partition); their beta and
# preview notices would otherwise print on every import of the code location.
for _message in ("Parameter `backfill_policy`", "Class `MultiPartitionMapping`",
                 "Class `MultiToSingleDimensionPartitionMapping`",
                 "Parameter `allow_nonexistent_upstream_partitions`",
                 "Specifying a partitions_def on an AssetCheckSpec"):
    warnings.filterwarnings("ignore", message=_message,
                            category=dg.BetaWarning if "Specifying" not in _message
                            else dg.PreviewWarning)

UNIVERSE = load_registry().universe

daily_partitions_def = dg.DailyPartitionsDefinition(
    start_date=UNIVERSE.start_date.isoformat(),
    # Dagster's end_date is exclusive; the spec's is the last day included.
    end_date=(UNIVERSE.end_date + dt.timedelta(days=1)).isoformat() if UNIVERSE.end_date else None,
    timezone="UTC",
)
# The symbol dimension is dynamic (DESIGN.md): a symbol becomes a partition once it lists
# (``register_listed_symbols``: the CLI before it runs, ``symbol_listings_sensor`` each day)
# and stays one after it delists, with its history.
SYMBOL_PARTITIONS = "symbol"
symbol_partitions_def = dg.DynamicPartitionsDefinition(name=SYMBOL_PARTITIONS)


def last_partition_day() -> dt.date | None:
    """The last daily partition: yesterday (UTC) or the universe's end_date; None before the
    first day is complete."""
    last = daily_partitions_def.get_last_partition_key()
    return dt.date.fromisoformat(last) if last else None


def universe_listings(source: str | None = None):
    """The universe's listing calendar as the market source (default: the configured one)
    serves it (:func:`backtest_assets.sources.listings.listings`)."""
    from backtest_assets.resources.market_source import market_source_kind
    from backtest_assets.sources.listings import listings

    return listings(UNIVERSE, source or market_source_kind())


def registered_symbols(instance: dg.DagsterInstance) -> list[str]:
    """The symbol partitions, in the order they were added (range runs follow it)."""
    return list(instance.get_dynamic_partitions(SYMBOL_PARTITIONS))


def symbols_to_register(instance: dg.DagsterInstance, *, through: dt.date | None = None,
                        source: str | None = None,
                        generated: bool | Collection[str] = False) -> list[str]:
    """The symbols listed by ``through`` (default: the last partition day, or the universe's
    start before it has one) that are not partitions yet, in listing order.

    The generated cross-section is opt-in (``generated``: True for all of it, or the names
    a run asks for): 23 more symbols multiply every date x symbol asset's partitions, which
    the daemon's automation and the UI evaluate on every tick."""
    from backtest_assets.sources.listings import listed_by

    day = through or last_partition_day() or UNIVERSE.start_date
    have = set(registered_symbols(instance))
    wanted = set(UNIVERSE.generated_names) if generated is True else set(generated or ())
    calendar = sorted((x for x in universe_listings(source)
                       if x.symbol not in UNIVERSE.generated_names or x.symbol in wanted),
                      key=lambda x: x.first_day)  # stable: universe order within a day
    return [s for s in listed_by(calendar, day) if s not in have]


def register_listed_symbols(instance: dg.DagsterInstance, *, through: dt.date | None = None,
                            source: str | None = None,
                            generated: bool | Collection[str] = False) -> list[str]:
    """Add the symbols listed by ``through`` as symbol partitions (never removes one);
    returns the new ones. ``generated``: as :func:`symbols_to_register`."""
    new = symbols_to_register(instance, through=through, source=source, generated=generated)
    if new:
        instance.add_dynamic_partitions(SYMBOL_PARTITIONS, new)
    return new


date_symbol_partitions_def = dg.MultiPartitionsDefinition(
    {"date": daily_partitions_def, "symbol": symbol_partitions_def}
)

# Where the date x symbol dimensions live in a market-data table (see warehouse.PartitionLayout).
BARS_PARTITION_EXPR = {"date": "ts_open", "symbol": "symbol"}
TS_PARTITION_EXPR = {"date": "ts", "symbol": "symbol"}

REGISTRY = load_registry()
# One partition per event type in specs/events (Gate E-1 and discovery run per event type).
event_type_partitions_def = dg.StaticPartitionsDefinition(list(REGISTRY.events))
# The bar table features, labels and events are computed on (the universe's base interval).
BASE_BARS = f"bars_{UNIVERSE.base_interval}"


def date_window_mapping(start_offset: int = 0, end_offset: int = 0) -> dg.MultiPartitionMapping:
    """Same symbol, days ``[d + start_offset, d + end_offset]``: warm-up or look-ahead.

    Days before the first partition (or after the last) simply do not exist upstream.
    """
    return dg.MultiPartitionMapping({
        "date": dg.DimensionPartitionMapping(
            "date", dg.TimeWindowPartitionMapping(
                start_offset=start_offset, end_offset=end_offset,
                allow_nonexistent_upstream_partitions=True)),
        "symbol": dg.DimensionPartitionMapping("symbol", dg.IdentityPartitionMapping()),
    })

# Studies (specs/studies): every layer from Gate E-1 on is computed per study. A study is a
# dynamic partition, registered when its record is first made (``study_record``).
STUDY_PARTITIONS = "study"
study_partitions_def = dg.DynamicPartitionsDefinition(name=STUDY_PARTITIONS)

# Blueprints: the hand-written baselines of specs/strategies plus Phase-2 survivors, added by
# the strategy_blueprints asset (a sensor or the CLI) as they appear. A blueprint's name is
# the same in every study.
BLUEPRINT_PARTITIONS = "blueprint"
blueprint_partitions_def = dg.DynamicPartitionsDefinition(name=BLUEPRINT_PARTITIONS)

# Gate E-1 and Phase 2: study x event type; blueprints' backtests and walk-forwards: study x
# blueprint. Dagster orders a multi-partition key's dimensions by name:
# ``oi_flush|default``, ``momentum_v1|default``.
study_event_type_partitions_def = dg.MultiPartitionsDefinition(
    {STUDY_PARTITIONS: study_partitions_def, "event_type": event_type_partitions_def})
study_blueprint_partitions_def = dg.MultiPartitionsDefinition(
    {STUDY_PARTITIONS: study_partitions_def, BLUEPRINT_PARTITIONS: blueprint_partitions_def})
# Portfolios of a study's edges (specs/portfolios): study x portfolio.
PORTFOLIO_NAMES = list(REGISTRY.portfolios)
portfolio_partitions_def = dg.StaticPartitionsDefinition(PORTFOLIO_NAMES)
study_portfolio_partitions_def = dg.MultiPartitionsDefinition(
    {STUDY_PARTITIONS: study_partitions_def, "portfolio": portfolio_partitions_def})
# Combined alpha models of a study's universe (specs/alpha): study x alpha_model.
ALPHA_NAMES = list(REGISTRY.alpha)
alpha_partitions_def = dg.StaticPartitionsDefinition(ALPHA_NAMES)
study_alpha_partitions_def = dg.MultiPartitionsDefinition(
    {STUDY_PARTITIONS: study_partitions_def, "alpha_model": alpha_partitions_def})
# Where the study dimensions live in a research table (see warehouse.PartitionLayout).
STUDY_ALPHA_EXPR = {STUDY_PARTITIONS: "study", "alpha_model": "alpha_model"}
STUDY_PORTFOLIO_EXPR = {STUDY_PARTITIONS: "study", "portfolio": "portfolio"}
STUDY_EVENT_TYPE_EXPR = {STUDY_PARTITIONS: "study", "event_type": "event_type"}
STUDY_BLUEPRINT_EXPR = {STUDY_PARTITIONS: "study", BLUEPRINT_PARTITIONS: "blueprint"}


def study_event_type_key(study: str, event_type: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({STUDY_PARTITIONS: study, "event_type": event_type})


def study_portfolio_key(study: str, portfolio: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({STUDY_PARTITIONS: study, "portfolio": portfolio})


def study_blueprint_key(study: str, blueprint: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({STUDY_PARTITIONS: study, BLUEPRINT_PARTITIONS: blueprint})


def study_alpha_key(study: str, model: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({STUDY_PARTITIONS: study, "alpha_model": model})
