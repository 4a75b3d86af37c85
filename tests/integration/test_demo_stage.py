"""The demo stage through Dagster (issue 19): synthetic days arriving one by one after the
study, a demo day per ingested day for every promoted blueprint, promotion to live after the
gate's demo days, archival when the planted effect is switched off.

Two worlds share the default study's January: one where the planted post-jump drift goes on,
one where it stops after January (``effect_until``, the synthetic source's switch). Each
builds January (ingest to promotion decisions), then February's days arrive one at a time:
the day's market data and research layers (``run``), then ``demo_job`` for that day. The
specs are the repository's with the demo gate shortened to ``DEMO_DAYS``.
"""

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from backtest_assets.cli import Runner, backtest, quality, report, run
from backtest_assets.definitions import defs
from backtest_assets.defs import automation
from backtest_assets.resources import WarehouseResource
from backtest_assets.specs import default_specs_dir

pytestmark = pytest.mark.slow  # two Januaries and 2 x 10 demo days: about 8 minutes

DEMO_DAYS = 10
# The blueprints the planted effect makes (Phase-2 survivors): they must decay without it.
PLANTED = ("p2_oi_flush_continuation_60m_all", "p2_volatility_shock_continuation_60m_all")


def _world(tmp_path_factory, name: str, effect_until: str | None):
    import shutil

    root = tmp_path_factory.mktemp(name)
    specs = root / "specs"
    shutil.copytree(default_specs_dir(), specs)
    gates = (specs / "gates.yaml").read_text()
    assert "min_demo_days: 30" in gates
    (specs / "gates.yaml").write_text(gates.replace("min_demo_days: 30",
                                                    f"min_demo_days: {DEMO_DAYS}"))
    config = {"warehouse": {"config": {"data_root": str(root / "data")}},
              "io_manager": {"config": {"data_root": str(root / "data")}},
              "specs": {"config": {"specs_dir": str(specs)}},
              "market_source": {"config": {"effect_until": effect_until}}}
    (root / "home").mkdir()
    return root, config


@pytest.fixture(scope="module", params=[None, "2024-01-31"], ids=["effect_on", "effect_off"])
def world(request, tmp_path_factory):
    effect_until = request.param
    root, config = _world(tmp_path_factory, "on" if effect_until is None else "off",
                          effect_until)
    with dg.instance_for_test(temp_dir=str(root / "home")) as instance:
        kw = {"instance": instance, "quiet": True, "resources_config": config}
        assert run(dt.date(2024, 1, 1), dt.date(2024, 1, 31), None, **kw)
        assert quality(**kw)
        assert backtest(**kw)
        assert backtest(job="walkforward_job", **kw)
        assert report(**kw)
        wh = WarehouseResource(data_root=str(root / "data")).warehouse()
        promoted = wh.study_rows("promotion_decisions", "default").filter(
            pl.col("to_stage") == "demo")["blueprint"].to_list()
        assert set(PLANTED) <= set(promoted), promoted
        days = []
        runner = Runner(instance, config, quiet=True)
        selection = dg.AssetSelection.groups("demo")
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 asset_selection=selection)
        for k in range(1, DEMO_DAYS + 1):
            day = dt.date(2024, 2, k)
            assert run(day, day, None, **kw)
            # the demo asset is what the automation asks for once the day has landed
            tick = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=selection, cursor=tick.cursor)
            asked = {key for r in tick.results if r.true_subset.size
                     for key in r.true_subset.expensively_compute_partition_keys()}
            assert day.isoformat() in asked, (day, sorted(asked))
            assert runner.execute("demo_job", f"demo {day}", partition_key=day.isoformat())
            days.append(wh.study_rows("demo_days", "default").filter(
                pl.col("date") == day))
        assert report(**kw)  # the promotion decisions and epochs after the demo days
        yield effect_until, promoted, days, wh


def _stage_after(days: list[pl.DataFrame], name: str) -> tuple[str, int, str]:
    """(stage, demo days, reasons) of ``name``'s last demo row."""
    for frame in reversed(days):
        mine = frame.filter(pl.col("blueprint") == name)
        if mine.height:
            r = mine.row(0, named=True)
            return r["stage"], r["demo_days"], r["reasons"]
    raise AssertionError(f"{name} has no demo day")


def test_one_demo_day_per_ingested_day_until_the_demo_ends(world):
    _, promoted, days, wh = world
    running = set(promoted)
    for k, frame in enumerate(days, start=1):
        assert sorted(frame["blueprint"]) == sorted(running), (k, frame)
        assert (frame["demo_days"] == k).all() and (frame["bars"] == 288).all()
        running -= set(frame.filter(pl.col("stage") != "demo")["blueprint"])
    # every stored day is what a rerun of the whole demo gives (forward refuses otherwise),
    # and the table holds each day once
    table = wh.study_rows("demo_days", "default")
    assert table.height == sum(f.height for f in days)
    assert table.select(pl.struct("blueprint", "date").is_unique().all()).item()


def test_promoted_to_live_with_the_effect_and_archived_without_it(world):
    effect_until, _, days, _ = world
    for name in PLANTED:
        stage, n, reasons = _stage_after(days, name)
        if effect_until is None:
            assert (stage, n) == ("live", DEMO_DAYS), (name, stage, n, reasons)
            assert "consistent with the backtest" in reasons
        else:
            assert stage == "archived" and n <= DEMO_DAYS, (name, stage, n, reasons)
            assert reasons.startswith("decaying"), reasons


def test_each_demo_day_is_an_epoch_and_the_decisions_follow_the_demo(world):
    _, _, days, wh = world
    epochs = wh.study_rows("run_epochs", "default").filter(pl.col("stage") == "demo")
    table = wh.study_rows("demo_days", "default")
    assert sorted(zip(epochs["blueprint"], epochs["evaluation"], strict=True)) == sorted(
        (b, str(d)) for b, d in zip(table["blueprint"], table["date"], strict=True))
    decisions = wh.study_rows("promotion_decisions", "default")
    for name in PLANTED:
        stage, _, _ = _stage_after(days, name)
        assert decisions.filter(pl.col("blueprint") == name)["to_stage"][0] == stage


def test_the_automation_targets_the_demo_group():
    assert "demo" in automation.AUTOMATED_GROUPS
