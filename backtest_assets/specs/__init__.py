"""Specs: the YAML files under ``specs/`` parsed into frozen, typed objects with an identity."""

from backtest_assets.specs.loader import SpecError, canonical_json, spec_hash
from backtest_assets.specs.models import (
    INTERVALS,
    EventSpec,
    FeatureSpec,
    StudySpec,
    SymbolSpec,
    UniverseSpec,
    interval_minutes,
)
from backtest_assets.specs.registry import (
    SpecRegistry,
    default_specs_dir,
    lint,
    load_registry,
    reload_registries,
)

__all__ = [
    "INTERVALS",
    "EventSpec",
    "FeatureSpec",
    "SpecError",
    "SpecRegistry",
    "StudySpec",
    "SymbolSpec",
    "UniverseSpec",
    "canonical_json",
    "default_specs_dir",
    "interval_minutes",
    "lint",
    "load_registry",
    "reload_registries",
    "spec_hash",
]
