"""Dagster definitions, one folder per layer."""

import warnings

import dagster as dg

# Single-run backfills are a deliberate design choice (DESIGN.md), so their beta notice is
# noise on every import of the code location.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
