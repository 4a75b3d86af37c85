"""The portfolio layer: allocating capital across edges (no Dagster)."""
