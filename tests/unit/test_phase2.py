"""Phase 2's pure core on constructed events: hypotheses, samples, statistics, gates, hashes."""

import dataclasses
import datetime as dt
import hashlib

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest

from backtest_assets.discovery import phase2
from backtest_assets.schemas.research import PHASE2_CANDIDATES, PHASE2_FDR, PHASE2_PVALS
from backtest_assets.specs import load_registry
from backtest_assets.specs.models import FeesSpec, Phase2Gate, StabilityGate, VenueSpec

P2 = load_registry().phase2()
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
T0 = dt.datetime(2024, 1, 1)
FEES = FeesSpec(default_venue="v", cost_multipliers=(1.0, 1.5, 2.0),
                venues={"v": VenueSpec(maker_bps=2.0, taker_bps=5.0, slippage_bps=1.0)})
GATE = Phase2Gate(min_sample=10, stability=StabilityGate(
    time_slice="week", min_slice_share=0.6, min_events_per_slice=3,
    regime_feature="rv_48_z", min_regime_share=1.0))


def inputs(events: list[tuple], *, fwd: dict[tuple, float] | None = None,
           regime: dict[tuple, float] | None = None) -> phase2.Phase2Inputs:
    """events: (symbol, minutes after T0, direction); labels default to +10 bps each."""
    ev = pl.DataFrame([{"symbol": s, "ts": T0 + dt.timedelta(minutes=m), "direction": d}
                       for s, m, d in events],
                      schema={"symbol": pl.String, "ts": pl.Datetime("us"), "direction": pl.Int8})
    keys = [(s, m) for s, m, _ in events]
    labels = pl.DataFrame([{"symbol": s, "ts_open": T0 + dt.timedelta(minutes=m),
                            **{c: (fwd or {}).get((s, m), 0.001) for c in P2.horizon_bars}}
                           for s, m in keys],
                          schema={"symbol": pl.String, "ts_open": pl.Datetime("us"),
                                  **dict.fromkeys(P2.horizon_bars, pl.Float64)})
    regimes = pl.DataFrame([{"symbol": s, "ts_open": T0 + dt.timedelta(minutes=m),
                             "rv_48_z": (regime or {}).get((s, m), float(m % 2))}
                            for s, m in keys],
                           schema={"symbol": pl.String, "ts_open": pl.Datetime("us"),
                                   "rv_48_z": pl.Float64})
    return phase2.Phase2Inputs(event_type="volatility_shock", symbols=SYMBOLS, events=ev,
                               labels=labels, regimes=regimes, regime_feature="rv_48_z",
                               interval_minutes=5)


def run(inp: phase2.Phase2Inputs, gate: Phase2Gate = GATE):
    sample = phase2.samples(inp, P2.families, gate)
    hyps = phase2.hypotheses(inp.event_type, inp.symbols, P2.families)
    pvals = phase2.pvalues(sample, hyps, P2.families, gate, P2.horizon_bars, 5)
    return sample, pvals, phase2.fdr(pvals, sample, P2.families, gate, FEES)


def test_every_template_horizon_and_symbol_plus_pooled_is_one_hypothesis_with_a_stable_id():
    hyps = phase2.hypotheses("oi_flush", SYMBOLS, P2.families)
    assert hyps.height == 2 * 3 * (2 + 1)
    assert hyps["hypothesis_id"].is_unique().all()
    expected = "h_" + hashlib.sha256(b"oi_flush|continuation|15m|ALL").hexdigest()[:12]
    row = hyps.filter((pl.col("rule_template") == "continuation") & (pl.col("horizon") == "15m")
                      & (pl.col("symbol") == "ALL"))
    assert row["hypothesis_id"].item() == expected
    assert row["family"].item() == "oi_flush|continuation|15m"
    assert hyps.group_by("family").len()["len"].to_list() == [3] * 6
    assert phase2.hypotheses("oi_flush", SYMBOLS, P2.families).equals(hyps)


def test_samples_sign_by_template_and_pool_symbols():
    inp = inputs([("BTCUSDT", 0, 1), ("ETHUSDT", 5, -1)],
                 fwd={("BTCUSDT", 0): 0.002, ("ETHUSDT", 5): 0.003})
    sample = phase2.samples(inp, P2.families, GATE).filter(pl.col("horizon") == "60m")
    got = {(r["rule_template"], r["symbol"], r["event_symbol"]): r["signed_return"]
           for r in sample.iter_rows(named=True)}
    assert got == {
        ("continuation", "BTCUSDT", "BTCUSDT"): 0.002,     # direction +1 x +0.002
        ("continuation", "ETHUSDT", "ETHUSDT"): -0.003,    # direction -1 x +0.003
        ("continuation", "ALL", "BTCUSDT"): 0.002,
        ("continuation", "ALL", "ETHUSDT"): -0.003,
        ("mean_reversion", "BTCUSDT", "BTCUSDT"): -0.002,  # against the direction
        ("mean_reversion", "ETHUSDT", "ETHUSDT"): 0.003,
        ("mean_reversion", "ALL", "BTCUSDT"): -0.002,
        ("mean_reversion", "ALL", "ETHUSDT"): 0.003,
    }


def test_an_event_without_a_label_is_in_no_sample():
    inp = inputs([("BTCUSDT", 0, 1), ("BTCUSDT", 60, 1)])
    labels = inp.labels.with_columns(
        pl.when(pl.col("ts_open") == T0).then(None).otherwise(pl.col("fwd_ret_60m"))
        .alias("fwd_ret_60m"))
    inp = phase2.Phase2Inputs(**{**inp.__dict__, "labels": labels})
    sample = phase2.samples(inp, P2.families, GATE)
    assert sample.filter(pl.col("horizon") == "60m")["ts"].unique().to_list() == [
        T0 + dt.timedelta(minutes=60)]
    assert sample.filter(pl.col("horizon") == "5m")["ts"].n_unique() == 2


def test_no_events_gives_every_hypothesis_as_insufficient_sample_never_a_crash():
    sample, pvals, fdr = run(inputs([]))
    assert sample.is_empty()
    assert pvals.height == 18 and set(pvals["status"]) == {phase2.INSUFFICIENT}
    assert fdr["q"].to_list() == [1.0] * 18 and not fdr["survivor"].any()
    assert set(fdr["reasons"]) == {"insufficient_sample (0 < 10 events)"}
    counts = phase2.family_counts(fdr)
    assert counts["insufficient_sample"].to_list() == [3] * 6


def _weekly_events(n_weeks: int, per_week: int, sign_by_week=None) -> tuple[list, dict]:
    events, fwd = [], {}
    rng = np.random.default_rng(0)
    for w in range(n_weeks):
        for k in range(per_week):
            m = w * 7 * 1440 + k * 240
            sym = SYMBOLS[k % 2]
            events.append((sym, m, 1))
            sign = 1 if sign_by_week is None else sign_by_week[w]
            fwd[(sym, m)] = sign * 0.004 + rng.normal(0, 0.001)  # 40 bps, noise 10 bps
    return events, fwd


def test_a_strong_stable_effect_survives_every_gate():
    events, fwd = _weekly_events(4, 12)
    _, _, fdr = run(inputs(events, fwd=fwd))
    row = fdr.filter((pl.col("rule_template") == "continuation") & (pl.col("horizon") == "60m")
                     & (pl.col("symbol") == "ALL")).row(0, named=True)
    assert row["status"] == phase2.TESTED and row["n"] == 48
    assert row["mean"] == pytest.approx(0.004, abs=5e-4)
    assert row["discovered"] and row["economic"] and row["stable"] and row["survivor"]
    assert row["reasons"] == ""
    assert row["net_2x"] == pytest.approx(row["mean"] - 2 * 0.0012)
    flipped = fdr.filter((pl.col("rule_template") == "mean_reversion")
                         & (pl.col("horizon") == "60m") & (pl.col("symbol") == "ALL"))
    assert not flipped["survivor"].item() and "after 1x costs" in flipped["reasons"].item()


def test_an_effect_below_twice_the_costs_fails_the_economic_gate():
    events, fwd = _weekly_events(4, 12)
    fwd = {k: v - 0.004 + 0.0016 for k, v in fwd.items()}  # 16 bps: above 1x, below 1.5x
    _, _, fdr = run(inputs(events, fwd=fwd))
    row = fdr.filter((pl.col("rule_template") == "continuation") & (pl.col("horizon") == "60m")
                     & (pl.col("symbol") == "ALL")).row(0, named=True)
    assert row["discovered"] and not row["economic"] and not row["survivor"]
    assert "after 1.5x costs (18.0 bps) is not positive" in row["reasons"]


def test_an_effect_that_flips_across_weeks_fails_the_stability_gate():
    events, fwd = _weekly_events(5, 12, sign_by_week=[1, 1, 1, -1, -1])
    _, _, fdr = run(inputs(events, fwd=fwd))
    row = fdr.filter((pl.col("rule_template") == "continuation") & (pl.col("horizon") == "60m")
                     & (pl.col("symbol") == "ALL")).row(0, named=True)
    assert row["slice_share"] == pytest.approx(0.6 if row["mean"] > 0 else 0.4)
    events, fwd = _weekly_events(5, 12, sign_by_week=[1, 1, -1, -1, 1])
    regime = {k: float(i % 2) for i, k in enumerate(fwd)}
    _, _, fdr = run(inputs(events, fwd=fwd, regime=regime),
                    Phase2Gate(min_sample=10, stability=StabilityGate(
                        time_slice="week", min_slice_share=0.8, min_events_per_slice=3,
                        regime_feature="rv_48_z", min_regime_share=1.0)))
    row = fdr.filter((pl.col("rule_template") == "continuation") & (pl.col("horizon") == "60m")
                     & (pl.col("symbol") == "ALL")).row(0, named=True)
    assert not row["stable"] and "weeks with >= 3 events (< 80%)" in row["reasons"]


def test_too_few_events_is_recorded_and_counted_in_its_family():
    events, fwd = _weekly_events(1, 12)  # 6 per symbol, 12 pooled; min_sample 10
    _, pvals, fdr = run(inputs(events, fwd=fwd))
    per_symbol = pvals.filter(pl.col("symbol") != "ALL")
    assert set(per_symbol["status"]) == {phase2.INSUFFICIENT}
    assert set(pvals.filter(pl.col("symbol") == "ALL")["status"]) == {phase2.TESTED}
    fam = phase2.family_counts(fdr).filter(pl.col("family") ==
                                           "volatility_shock|continuation|60m")
    assert fam.select("hypotheses", "tested", "insufficient_sample").row(0) == (3, 1, 2)


def test_events_in_a_single_cluster_are_untestable_counted_with_p_1():
    # 12 ETH events 65 minutes (13 bars) apart: none inside another's horizon (at most 12
    # bars), so all are tested. The cluster lag is 2 x the horizon: 2 bars at 5m (12
    # clusters), 24 bars at 60m (one chain). A huge consistent effect, but at 60m no
    # independent replication: ETH and the pooled ALL (the same events) are untestable.
    events = [("ETHUSDT", 65 * k, 1) for k in range(12)]
    fwd = {("ETHUSDT", 65 * k): 0.01 + 0.0001 * k for k in range(12)}
    _, pvals, fdr = run(inputs(events, fwd=fwd))
    eth = fdr.filter((pl.col("symbol") == "ETHUSDT") & (pl.col("rule_template") ==
                                                         "continuation"))
    by_h = {r["horizon"]: r for r in eth.iter_rows(named=True)}
    h60 = by_h["60m"]
    assert h60["status"] == phase2.UNTESTABLE and h60["clusters"] == 1
    assert h60["p"] is None and h60["q"] == 1.0 and not h60["discovered"]
    assert h60["reasons"] == ("untestable (all 12 events in one cluster: gaps <= 24 bars, "
                              "no independent replication)")
    assert by_h["5m"]["status"] == phase2.TESTED and by_h["5m"]["clusters"] == 12
    assert h60["n"] == 12 and h60["n_overlapping"] == 0
    assert by_h["5m"]["inference"] == "signflip+cr2"
    assert by_h["5m"]["df"] == pytest.approx(11)  # 12 equal clusters: Bell-McCaffrey G - 1
    fam = phase2.family_counts(fdr).filter(pl.col("family") ==
                                           "volatility_shock|continuation|60m")
    assert fam.select("hypotheses", "tested", "insufficient_sample", "untestable"
                      ).row(0) == (3, 0, 1, 2)
    # ETH and ALL, both templates, at 60m only.
    untestable = pvals.filter(pl.col("status") == phase2.UNTESTABLE)
    assert untestable.height == 4 and set(untestable["horizon"]) == {"60m"}


def test_events_inside_an_earlier_events_horizon_are_recorded_but_not_tested():
    # BTC events at bars 0, 4, 8, 13, 30 (5m bars); the 60m horizon is 12 bars: 4 and 8 fall
    # inside bar 0's horizon, 13 does not, 30 does not. At 5m (1 bar) all are tested.
    # ETH has an event at bar 4 too: the pooled ALL keeps bar 0 (BTC) and drops bar 4 (both).
    bars = [0, 4, 8, 13, 30]
    events = [("BTCUSDT", 5 * b, 1) for b in bars] + [("ETHUSDT", 20, -1)]
    sample, pvals, _ = run(inputs(events), Phase2Gate(min_sample=2, stability=GATE.stability))
    cont = sample.filter(pl.col("rule_template") == "continuation")

    def kept(symbol: str, horizon: str) -> list[tuple[str, int]]:
        rows = cont.filter((pl.col("symbol") == symbol) & (pl.col("horizon") == horizon)
                           & ~pl.col("overlapping"))
        return [(r["event_symbol"], int((r["ts"] - T0).total_seconds()) // 300)
                for r in rows.iter_rows(named=True)]

    assert kept("BTCUSDT", "60m") == [("BTCUSDT", 0), ("BTCUSDT", 13), ("BTCUSDT", 30)]
    assert kept("BTCUSDT", "5m") == [("BTCUSDT", b) for b in bars]
    assert kept("ALL", "60m") == [("BTCUSDT", 0), ("BTCUSDT", 13), ("BTCUSDT", 30)]
    assert kept("ALL", "15m") == [("BTCUSDT", 0), ("BTCUSDT", 4), ("ETHUSDT", 4),
                                  ("BTCUSDT", 8), ("BTCUSDT", 13), ("BTCUSDT", 30)]
    row = pvals.filter((pl.col("symbol") == "BTCUSDT") & (pl.col("horizon") == "60m")
                       & (pl.col("rule_template") == "continuation")).row(0, named=True)
    assert (row["n"], row["n_overlapping"]) == (3, 2)


def test_the_families_spec_chooses_the_test():
    events, fwd = _weekly_events(4, 12)
    cr2 = dataclasses.replace(P2.families, inference="cr2")
    inp = inputs(events, fwd=fwd)
    sample = phase2.samples(inp, cr2, GATE)
    hyps = phase2.hypotheses(inp.event_type, inp.symbols, cr2)
    pvals = phase2.pvalues(sample, hyps, cr2, GATE, P2.horizon_bars, 5)
    assert set(pvals["inference"]) == {"cr2"}
    row = pvals.filter((pl.col("symbol") == "ALL") & (pl.col("horizon") == "60m")
                       & (pl.col("rule_template") == "continuation")).row(0, named=True)
    assert 0 < row["df"] < row["clusters"] - 1 + 1e-9  # Bell-McCaffrey, fractional


def test_frame_hash_sees_content_not_row_order():
    a = pl.DataFrame({"s": ["x", "y", None], "v": [1.0, None, 3.0], "t": [3, 2, 1]})
    assert phase2.frame_hash({"a": a}) == phase2.frame_hash({"a": a.reverse()})
    assert phase2.frame_hash({"a": a}) != phase2.frame_hash(
        {"a": a.with_columns(pl.col("v").fill_null(0.0))})
    assert phase2.frame_hash({"a": a}) != phase2.frame_hash({"b": a})
    assert phase2.frame_hash({"a": a}) != phase2.frame_hash(
        {"a": a.with_columns(pl.col("s").replace("x", "xy"))})


def test_the_frames_satisfy_their_pandera_models():
    events, fwd = _weekly_events(4, 12)
    sample, pvals, fdr = (f.with_columns(study=pl.lit("default"))  # as the assets write
                          for f in run(inputs(events, fwd=fwd)))
    PHASE2_CANDIDATES.validate(sample)
    PHASE2_PVALS.validate(pvals)
    PHASE2_FDR.validate(fdr)
    # What the models refuse: a p outside [0, 1], an unknown status, a direction of 0.
    with pytest.raises(pa.errors.SchemaError, match="p"):
        PHASE2_PVALS.validate(pvals.with_columns(pl.col("p") * 3 + 1))
    with pytest.raises(pa.errors.SchemaError, match="status"):
        PHASE2_FDR.validate(fdr.with_columns(pl.lit("maybe").alias("status")))
    with pytest.raises(pa.errors.SchemaError, match="direction"):
        PHASE2_CANDIDATES.validate(sample.with_columns(pl.lit(0, pl.Int8).alias("direction")))


def test_the_dataset_hash_ignores_last_bit_differences_of_floats_only():
    """Data computed on another CPU differs in its floats' last bits: the same dataset. A
    difference in the 12th significant digit, or in any other column, is another one."""
    base = pl.DataFrame({"symbol": ["A", "B", "A"], "x": [1.0, 2.5, -3.25e-7],
                         "n": [1, 2, 3]})
    ulp = base.with_columns(pl.col("x").map_elements(lambda v: float(np.nextafter(v, 9.0)),
                                                     return_dtype=pl.Float64))
    assert not ulp["x"].equals(base["x"])
    assert phase2.frame_hash({"f": base}) == phase2.frame_hash({"f": ulp})
    assert phase2.frame_hash({"f": base}) != phase2.frame_hash(
        {"f": base.with_columns(pl.col("x") * (1 + 1e-10))})
    assert phase2.frame_hash({"f": base}) != phase2.frame_hash(
        {"f": base.with_columns(pl.col("n") + 1)})
