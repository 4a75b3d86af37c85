"""The demo stage as a forward test: one demo day per ingested day, the past never
rewritten, promotion to live on consistent days and archival when the planted effect is
switched off (pure; no Dagster)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest

from backtest_assets.lifecycle.demo import (
    DEMO_DAY_SCHEMA,
    Expectation,
    demo_start,
    evidence,
    expectation,
    forward,
)
from backtest_assets.specs.models import (
    CodeEntry,
    Condition,
    CostStress,
    Entry,
    Exits,
    PromotionGate,
    StrategySpec,
)
from backtest_assets.strategies.promotion import decide
from backtest_assets.walkforward.evaluate import Market, evaluate
from tests.unit.test_code_blueprint import SPEC
from tests.unit.test_code_blueprint import _market as planted

SPEC = dataclasses.replace(SPEC, train_days=6)
GATE = PromotionGate(min_deflated_sharpe=0.0, max_pbo=1.0, min_oos_sharpe=0.0,
                     max_oos_drawdown=0.5, min_oos_trades=1, min_demo_days=20,
                     cost_stress=CostStress(multiplier=1.0))  # the demo is under test here
STUDY_DAYS, PER_DAY = 20, 288


def _market(seed: int, days: int, effect_until: int) -> Market:
    """5m bars whose next return follows the feature ``sig`` (the planted effect) on the
    first ``effect_until`` days only; Student-t(3) noise."""
    return planted(seed, days, beta=0.0012, tails=True, effect_until=effect_until,
                   clustered=False)


def _cut(m: Market, days: int) -> Market:
    """The market as ingested through day ``days`` (its first ``days`` days)."""
    n = days * PER_DAY
    return dataclasses.replace(m, panel=m.panel.rows(0, n),
                               features={k: v[:n] for k, v in m.features.items()})


RULE = StrategySpec(name="sig", symbols=("BTCUSDT",),
                    entry=Entry(condition=Condition(feature="sig", op="abs_gt", threshold=1.0)),
                    direction="continuation", target_weight=0.8, leverage=2.0,
                    exits=Exits(time_stop_bars=1))
CODE = dataclasses.replace(RULE, entry=Entry(code=CodeEntry(
    strategy="tests.unit.test_code_blueprint:SigFollower", features=("sig",),
    params={"threshold": 1.0, "hold": 1.0})))


def _promoted(m: Market, bp: StrategySpec) -> Expectation:
    gridded = dataclasses.replace(bp, grid={"target_weight": (0.4, 0.8)})
    wf = evaluate(gridded, _cut(m, STUDY_DAYS), SPEC, stress=GATE.cost_stress)
    d = decide(wf.summary.row(0, named=True), GATE, from_stage="backtest")
    assert d.to_stage == "demo", d.reasons
    return expectation(wf.equity, m.init_cash)


@pytest.mark.parametrize("bp", [RULE, CODE], ids=["rule", "code"])
def test_each_ingested_day_adds_exactly_one_demo_day_and_keeps_the_past(bp):
    m = _market(0, STUDY_DAYS + 6, effect_until=STUDY_DAYS + 6)
    start = demo_start(m.panel.ts, np.datetime64("2024-01-21"))
    assert start == STUDY_DAYS * PER_DAY
    record = None
    for k in range(1, 7):  # days arriving one by one, as the daily schedule brings them
        record = forward(bp, _cut(m, STUDY_DAYS + k), start, on_record=record)
        assert record.height == k and record.schema == pl.Schema(DEMO_DAY_SCHEMA)
        assert record["date"][-1] == np.datetime64("2024-01-20") + np.timedelta64(k, "D")
        assert (record["bars"] == PER_DAY).all()
    # the whole demo run at once equals the days accrued one by one
    whole = forward(bp, m, start)
    assert whole.equals(record)
    assert record["trades"].sum() > 20
    # a day on record that the run no longer gives (data changed under the demo) is refused
    tampered = record.with_columns(pl.when(pl.col("date") == record["date"][2])
                                   .then(pl.col("equity") * 1.01).otherwise(pl.col("equity")))
    with pytest.raises(ValueError, match="demo day 2024-01-23 on record differs"):
        forward(bp, m, start, on_record=tampered)


@pytest.mark.parametrize("seed", [1, 2])
def test_promoted_after_consistent_days_and_archived_when_the_effect_is_switched_off(seed):
    total = STUDY_DAYS + GATE.min_demo_days
    on, off = (_market(seed, total, effect_until=e) for e in (total, STUDY_DAYS))
    expected = _promoted(on, RULE)
    assert expected.mean > 0 and expected.days >= 10
    start = STUDY_DAYS * PER_DAY
    stages = {}
    for name, m in (("on", on), ("off", off)):
        record, stage = None, "demo"
        for k in range(1, GATE.min_demo_days + 1):
            record = forward(RULE, _cut(m, STUDY_DAYS + k), start, on_record=record)
            d = decide({"deflated_sharpe": 1, "pbo": 0, "oos_sharpe": 2, "oos_max_drawdown": -0.1,
                        "oos_trades": 50, "stress_sharpe": 1, "trials": 1}, GATE,
                       from_stage=stage, demo=evidence(record, expected, GATE))
            stage = d.to_stage
            if stage != "demo":
                break
        stages[name] = (stage, k, d.reasons)
    assert stages["on"][0] == "live" and stages["on"][1] == GATE.min_demo_days, stages["on"]
    assert "consistent with the backtest" in stages["on"][2][-1]
    assert stages["off"][0] == "archived", stages["off"]
    assert stages["off"][2][0].startswith("decaying"), stages["off"]


def test_the_daily_test_keeps_its_size_over_every_look_under_heavy_tails():
    """Demo days drawn from the backtest's own distribution (Student-t(3) daily returns,
    tested after each of the 20 days, against a backtest of 40 days drawn alike) are
    archived before live at most demo_alpha of the time; a demo whose mean fell by 1.5 sd
    is archived within its 20 days nearly always."""
    rng = np.random.default_rng(11)
    mu, sd, n, m = 0.004, 0.02, GATE.min_demo_days, 40

    def t3(k):
        return sd * rng.standard_t(3, k) / math.sqrt(3)

    def archived(shift: float) -> bool:
        bt = mu + t3(m)
        exp = Expectation(float(bt.mean()), float(bt.std(ddof=1)), m)
        r = mu + shift + t3(n)
        eq = 1e5 * np.cumprod(1 + r)
        rec = pl.DataFrame({"date": np.arange(n).astype("datetime64[D]"), "bars": 288,
                            "equity": eq, "day_return": r, "drawdown": np.zeros(n),
                            "trades": 1, "liquidations": 0}).cast(DEMO_DAY_SCHEMA)
        return any(evidence(rec.head(k), exp, GATE).breaches for k in range(1, n + 1))

    null = np.mean([archived(0.0) for _ in range(600)])
    assert 0.005 < null <= GATE.demo_alpha, null
    worse = np.mean([archived(-1.5 * sd) for _ in range(200)])
    assert worse > 0.8, worse


def test_risk_breaches_archive_and_an_untested_demo_holds():
    r = np.full(5, -0.2)  # five days of -20 %: a 67 % drawdown
    eq = 1e5 * np.cumprod(1 + r)
    rec = pl.DataFrame({"date": np.arange(5).astype("datetime64[D]"), "bars": 288,
                        "equity": eq, "day_return": r, "drawdown": eq / 1e5 - 1,
                        "trades": 1, "liquidations": [0, 0, 1, 0, 0]}).cast(DEMO_DAY_SCHEMA)
    ev = evidence(rec, Expectation(0.001, 0.01, 40), GATE)
    assert any(b.startswith("demo drawdown 67.2%") for b in ev.breaches)
    assert "1 liquidation(s) in the demo" in ev.breaches
    good = {"deflated_sharpe": 1, "pbo": 0, "oos_sharpe": 2, "oos_max_drawdown": -0.1,
            "oos_trades": 50, "stress_sharpe": 1, "trials": 1}
    d = decide(good, GATE, from_stage="demo", demo=ev)
    assert (d.to_stage, d.decision) == ("archived", "archive")
    untested = evidence(rec.head(0), Expectation(0.001, 0.01, 40), GATE)
    d = decide(good, GATE, from_stage="demo", demo=untested)
    assert (d.to_stage, d.reasons) == ("demo", ("no demo day yet",))
