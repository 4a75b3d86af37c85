"""What the feature and label frames must satisfy."""

from __future__ import annotations

from backtest_assets.partitions import REGISTRY
from backtest_assets.schemas.checks import FrameContract
from backtest_assets.schemas.models import features_model, labels_model

FEATURES_CONTRACT = FrameContract(
    schema=features_model(list(REGISTRY.features)), key_cols=("symbol", "ts_open"),
    time_col="ts_open", group_cols=("symbol",), slot_minutes=REGISTRY.base_minutes,
    value_checks=("finite_values",),
)
LABELS_CONTRACT = FrameContract(
    schema=labels_model(list(REGISTRY.label_bars())), key_cols=("symbol", "ts_open"),
    time_col="ts_open", group_cols=("symbol",), slot_minutes=REGISTRY.base_minutes,
    value_checks=("finite_values",),
)
