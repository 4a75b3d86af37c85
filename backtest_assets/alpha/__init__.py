"""Cross-sectional alpha research (pure; no Dagster): the universe, signals, the combined
model and its out-of-sample scores."""
