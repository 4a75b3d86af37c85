"""Events: detection on point-in-time features and the Gate E-1 quality report (no Dagster)."""

from backtest_assets.events.detect import EVENT_SCHEMA, detect_events, detect_events_by_day
from backtest_assets.events.quality import REPORT_SCHEMA, event_quality, quality_json

__all__ = [
    "EVENT_SCHEMA",
    "REPORT_SCHEMA",
    "detect_events",
    "detect_events_by_day",
    "event_quality",
    "quality_json",
]
