"""Point-in-time features and forward labels: pure polars, no Dagster."""

from backtest_assets.features.compute import FEATURE_KEYS, compute_features
from backtest_assets.features.labels import LABEL_KEYS, compute_labels

__all__ = ["FEATURE_KEYS", "LABEL_KEYS", "compute_features", "compute_labels"]
