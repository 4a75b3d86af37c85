"""The spec-registry resource: ``specs/`` loaded once into typed, frozen, hashed objects."""

from __future__ import annotations

import dagster as dg

from backtest_assets.specs import SpecRegistry, load_registry


class SpecRegistryResource(dg.ConfigurableResource):
    """Specs directory (default ``$BACKTEST_SPECS_DIR`` or the repository's ``specs/``)."""

    specs_dir: str | None = None

    def registry(self) -> SpecRegistry:
        return load_registry(self.specs_dir)
