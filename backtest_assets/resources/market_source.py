"""The market-data source resource: ``synthetic`` (default, offline) or ``binance``."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg

from backtest_assets.sources.base import MarketDataSource

MARKET_SOURCE_ENV = "BACKTEST_MARKET_SOURCE"
BINANCE_BASE_URL_ENV = "BACKTEST_BINANCE_BASE_URL"


def market_source_kind(configured: str | None = None) -> str:
    """``configured``, else ``$BACKTEST_MARKET_SOURCE``, else ``synthetic``."""
    kind = configured or os.environ.get(MARKET_SOURCE_ENV) or "synthetic"
    if kind not in ("synthetic", "binance"):
        raise dg.Failure(f"market_source must be 'synthetic' or 'binance', got {kind!r}")
    return kind


class MarketSourceResource(dg.ConfigurableResource):
    """Which source the ingest assets read, and its settings.

    ``market_source`` defaults to ``$BACKTEST_MARKET_SOURCE`` or ``synthetic``;
    ``base_url`` to ``$BACKTEST_BINANCE_BASE_URL`` or data.binance.vision.
    """

    market_source: str | None = None  # "synthetic" or "binance"
    seed: int = 7
    # synthetic: the planted effect stops after this day (YYYY-MM-DD; None: never)
    effect_until: str | None = None
    base_url: str | None = None
    spot_api_url: str = "https://api.binance.com"
    futures_api_url: str = "https://fapi.binance.com"
    max_retries: int = 4
    rest_fallback_days: int = 2
    # whether the daemon's listings sensor registers specs/universe.yaml's generated
    # cross-section too (the CLI registers those a run asks for); default
    # $BACKTEST_GENERATED_SYMBOLS == "1"
    generated_symbols: bool | None = None

    @property
    def registers_generated(self) -> bool:
        if self.generated_symbols is not None:
            return self.generated_symbols
        return os.environ.get("BACKTEST_GENERATED_SYMBOLS", "") == "1"

    @property
    def kind(self) -> str:
        return market_source_kind(self.market_source)

    @property
    def identity(self) -> str:
        """What the ingested rows come from, for their lineage: a switch of source (or of
        the synthetic seed) makes every ingested key stale. Binance mirrors serve the same
        archive, so the base URL is not part of it."""
        if self.kind != "synthetic":
            return self.kind
        return f"synthetic seed {self.seed}" + (
            f", effect until {self.effect_until}" if self.effect_until else "")

    def source(self, data_root: Path) -> MarketDataSource:
        """The configured source; raw files are kept under ``data_root``."""
        if self.kind == "synthetic":
            from backtest_assets.sources.generated import GeneratedUniverseSource
            from backtest_assets.sources.synthetic import SyntheticSource
            from backtest_assets.specs import load_registry

            source = SyntheticSource(seed=self.seed, effect_until=dt.date.fromisoformat(
                self.effect_until) if self.effect_until else None)
            universe = load_registry().universe
            if universe.generated is None:
                return source
            # the universe's generated cross-section beside the listed symbols
            return GeneratedUniverseSource(universe.generated, universe.start_date,
                                           other=source)
        from backtest_assets.sources.binance import BinanceSource

        return BinanceSource(
            base_url=self.base_url or os.environ.get(BINANCE_BASE_URL_ENV)
            or "https://data.binance.vision",
            spot_api_url=self.spot_api_url,
            futures_api_url=self.futures_api_url,
            data_root=data_root,
            max_retries=self.max_retries,
            rest_fallback_days=self.rest_fallback_days,
        )
