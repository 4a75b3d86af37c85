"""Charts and report rendering (pure; no Dagster)."""
