"""What the event table must satisfy."""

from __future__ import annotations

from backtest_assets.partitions import REGISTRY
from backtest_assets.schemas.checks import FrameContract
from backtest_assets.schemas.models import events_model

EVENTS_CONTRACT = FrameContract(
    schema=events_model(list(REGISTRY.events), REGISTRY.base_minutes),
    key_cols=("event_type", "symbol", "ts"), time_col="ts", group_cols=("event_type", "symbol"),
    slot_minutes=None, value_checks=("known_at_bar_close",),
    max_rows_per_day=REGISTRY.bars_per_day,  # at most one event per bar and type
)
