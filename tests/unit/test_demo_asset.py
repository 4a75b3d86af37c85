"""Which blueprints a demo day trades (defs.lifecycle.in_demo), on warehouse rows."""

from __future__ import annotations

import datetime as dt

import polars as pl

from backtest_assets.defs.lifecycle.assets import in_demo

H = "h" * 64


class Rows:
    """A warehouse's study_rows over in-memory tables."""

    def __init__(self, **tables: pl.DataFrame) -> None:
        self.tables = tables

    def study_rows(self, table: str, *studies: str) -> pl.DataFrame | None:
        return self.tables.get(table)


def _decision(name: str, from_stage: str, to_stage: str) -> dict:
    return {"study": "s", "blueprint": name, "spec_hash": H, "from_stage": from_stage,
            "to_stage": to_stage}


def test_a_day_run_again_after_the_demo_ended_trades_the_blueprint_again():
    decisions = pl.DataFrame([_decision("a", "idea", "demo"), _decision("b", "demo", "live"),
                              _decision("c", "idea", "archived")])
    days = pl.DataFrame({"study": "s", "blueprint": "b", "spec_hash": H,
                         "date": [dt.date(2024, 2, d) for d in (1, 2, 3)],
                         "stage": ["demo", "demo", "live"]})
    wh = Rows(promotion_decisions=decisions, demo_days=days)
    # b went live on Feb 3: Feb 1 to 3 are its days, Feb 4 is not
    for d in (1, 2, 3):
        assert in_demo(wh, dt.date(2024, 2, d)) == {"s": {"a": H, "b": H}}, d
    assert in_demo(wh, dt.date(2024, 2, 4)) == {"s": {"a": H}}
    assert in_demo(Rows(promotion_decisions=decisions), dt.date(2024, 2, 1)) == {
        "s": {"a": H, "b": H}}
    assert in_demo(Rows(), dt.date(2024, 2, 1)) == {}
