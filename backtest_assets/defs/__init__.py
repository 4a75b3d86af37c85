"""Dagster definitions, one folder per layer."""
