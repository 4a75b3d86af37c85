"""Specs: the YAML files under ``specs/`` parsed into frozen, typed objects with an identity."""

from backtest_assets.specs.loader import SpecError, canonical_json, spec_hash
from backtest_assets.specs.models import INTERVALS, SymbolSpec, UniverseSpec, interval_minutes
from backtest_assets.specs.registry import SpecRegistry, default_specs_dir, load_registry

__all__ = [
    "INTERVALS",
    "SpecError",
    "SpecRegistry",
    "SymbolSpec",
    "UniverseSpec",
    "canonical_json",
    "default_specs_dir",
    "interval_minutes",
    "load_registry",
    "spec_hash",
]
