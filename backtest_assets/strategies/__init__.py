"""Blueprints to backtest inputs (pure functions, no Dagster): bars on a regular grid
(:class:`Panel`), a blueprint's target weights (:func:`targets`) and exit rules
(:func:`exit_rules`), and the blueprint of a Phase-2 survivor (:func:`from_survivor`); the
rules are documented in :mod:`backtest_assets.strategies.blueprints`."""

from backtest_assets.strategies.blueprints import (
    Panel,
    exit_rules,
    from_survivor,
    spec_name,
    targets,
)

__all__ = ["Panel", "exit_rules", "from_survivor", "spec_name", "targets"]
