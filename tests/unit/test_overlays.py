"""Overlays on a blueprint's target: each kind by hand, the rules no overlay may break over
random targets and heavy-tailed features, no look-ahead, and their place in backtests,
walk-forward and the spec linter."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from backtest_assets.specs import default_specs_dir, lint
from backtest_assets.specs.loader import spec_hash
from backtest_assets.specs.models import OverlaySpec, VetoRule
from backtest_assets.specs.registry import load_registry
from backtest_assets.strategies.overlays import apply, brake_state
from backtest_assets.strategies.run import edge_target, instruments_for, run_blueprint
from backtest_assets.walkforward.evaluate import Market, Simulator
from tests.unit.test_blueprint_run import VENUE, market, momentum, ret_12

NAN = np.nan
VETO = OverlaySpec(name="veto_v1", kind="veto", rules=(
    VetoRule(side="long", feature="f", op="gt", threshold=1.0),
    VetoRule(side="short", feature="f", op="lt", threshold=-1.0)))
REGIME = OverlaySpec(name="regime_v1", kind="regime_filter", feature="z", min=-2.0, max=2.0)
VOLT = OverlaySpec(name="volt_v1", kind="vol_target", feature="rv", target=0.01,
                   min_scale=0.5, max_scale=2.0)
BRAKE = OverlaySpec(name="brake_v1", kind="drawdown_brake", max_drawdown=0.1,
                    resume_drawdown=0.05, scale=0.0)


def col(*values) -> np.ndarray:
    return np.array(values, float)[:, None]


def test_veto_blocks_entries_of_its_side_and_keeps_a_position_already_held():
    target = col(0, 0.5, NAN, 0, -0.5, NAN, 0.5, 0.5, NAN, -0.5)
    f = col(0, 2, 2, 2, 2, 0, 2, 2, 0, -2)
    out, (c,) = apply(target, [VETO], features={"f": f}, max_weight=1)
    # bar 1: a long into f > 1 -> flat; bar 4: a short is not vetoed by f = 2; bar 6: the
    # long closes the short (blocked -> 0); bar 7: a long again, still flat -> 0; bar 9: a
    # short into f < -1 while flat -> 0
    np.testing.assert_array_equal(out[:, 0], [0, 0, NAN, 0, -0.5, NAN, 0, 0, NAN, 0])
    assert c.blocked == 4
    held = col(0.5, NAN, 0.5, NAN)
    out, _ = apply(held, [VETO], features={"f": col(0, 2, 2, 2)}, max_weight=1)
    np.testing.assert_array_equal(out[:, 0], [0.5, NAN, NAN, NAN])  # kept, not cut


def test_a_veto_without_a_print_blocks_nothing_a_regime_without_a_value_blocks():
    target = col(0.5, NAN, 0, -0.5)
    out, _ = apply(target, [VETO], features={"f": col(NAN, NAN, NAN, NAN)}, max_weight=1)
    np.testing.assert_array_equal(out, target)
    out, (c,) = apply(target, [REGIME], features={"z": col(NAN, 0, 0, 3)}, max_weight=1)
    np.testing.assert_array_equal(out[:, 0], [0, NAN, 0, 0])
    assert c.blocked == 2


def test_vol_target_sizes_each_entry_clipped_and_within_the_weight_cap():
    target = col(0.2, 0, -0.2, 0, 0.2, 0, 0.4, 0.2)
    rv = col(0.02, 1, 0.004, 1, NAN, 1, 0.001, 0.01)
    out, (c,) = apply(target, [VOLT], features={"rv": rv}, max_weight=0.5)
    # 0.01/0.02 = 0.5; 0.01/0.004 = 2.5 -> 2; unknown -> blocked; 10 -> 2, capped at 0.5
    np.testing.assert_allclose(out[:, 0], [0.1, 0, -0.4, 0, 0, 0, 0.5, 0.2])
    assert (c.blocked, c.resized) == (1, 3)


def test_brake_hysteresis_by_hand():
    eq = np.array([100, 110, 99.5, 98, 103, 104.6, 105, 90])
    # peak 110: dd 9.5 % (off), 10.9 % (on), 6.4 % (on), 4.9 % (off), ..., 18 % (on)
    np.testing.assert_array_equal(brake_state(eq, BRAKE, 100.0),
                                  [0, 0, 0, 1, 1, 0, 0, 1])
    # the starting cash is the first peak
    assert brake_state(np.array([89.0]), BRAKE, 100.0)[0]


def test_brake_blocks_entries_while_engaged_and_scales_with_a_nonzero_scale():
    target = col(0, 0.5, 0, 0.5, 0, 0.5)
    paper = np.array([100, 100, 85, 85, 99, 99.0])  # engaged at bars 2, 3
    out, (c,) = apply(target, [BRAKE], features={}, max_weight=1,
                      paper=lambda t: paper, init_cash=100.0)
    np.testing.assert_array_equal(out[:, 0], [0, 0.5, 0, 0, 0, 0.5])
    assert (c.blocked, c.braked_bars) == (1, 2)
    half = dataclasses.replace(BRAKE, scale=0.5)
    out, (c,) = apply(target, [half], features={}, max_weight=1,
                      paper=lambda t: paper, init_cash=100.0)
    np.testing.assert_array_equal(out[:, 0], [0, 0.5, 0, 0.25, 0, 0.5])
    with pytest.raises(ValueError, match=r"brake_v1.*paper"):
        apply(target, [BRAKE], features={}, max_weight=1)


@pytest.mark.parametrize("seed", range(25))
def test_no_overlay_opens_flips_enlarges_beyond_its_scale_or_touches_an_exit(seed):
    """Random sparse targets and heavy-tailed (Student t, df 2) features with gaps."""
    rng = np.random.default_rng(seed)
    t, s = 400, 3
    target = np.full((t, s), np.nan)
    orders = rng.random((t, s)) < 0.1
    target[orders] = rng.choice([-0.4, -0.2, 0.0, 0.2, 0.4], orders.sum())
    feats = {k: rng.standard_t(2, (t, s)) * scale for k, scale in
             (("f", 1.0), ("z", 1.5), ("rv", 0.01))}
    for v in feats.values():
        v[rng.random((t, s)) < 0.05] = np.nan
    feats["rv"] = np.abs(feats["rv"])
    paper = 100 * np.exp(np.cumsum(rng.standard_t(3, t) * 0.02))
    out, counts = apply(target, [VETO, REGIME, VOLT, BRAKE], features=feats, max_weight=0.6,
                        paper=lambda _: paper, init_cash=100.0)
    was, now = np.isfinite(target), np.isfinite(out)
    assert not (now & ~was).any(), "an overlay made an order where none was"
    np.testing.assert_array_equal(out[was & (target == 0)], 0.0)  # exits untouched
    entry = now & (out != 0)
    assert (np.sign(out[entry]) == np.sign(target[entry])).all()
    assert (np.abs(out[entry]) <= np.minimum(np.abs(target[entry]) * 2.0, 0.6) + 1e-12).all()
    assert sum(c.blocked for c in counts) >= 1


def test_brake_decisions_never_read_the_paper_equity_after_their_bar():
    """The equity after bar t changed arbitrarily: every decision up to t is the same."""
    rng = np.random.default_rng(7)
    target = np.where(rng.random((300, 2)) < 0.2, 0.3, np.nan)
    eq = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 300)))
    base, _ = apply(target, [BRAKE], features={}, max_weight=1, paper=lambda _: eq,
                    init_cash=100.0)
    for t in (50, 120, 250):
        other = eq.copy()
        other[t + 1:] *= rng.uniform(0.5, 1.5, 300 - t - 1)
        out, _ = apply(target, [BRAKE], features={}, max_weight=1, paper=lambda _, o=other: o,
                       init_cash=100.0)
        np.testing.assert_array_equal(out[:t + 1], base[:t + 1])


def _guarded(panel, **kw):
    bp = momentum(leverage=1.5, overlays=(
        OverlaySpec(name="fv_v1", kind="veto", rules=(
            VetoRule(side="long", feature="funding_rate", op="gt", threshold=1.2e-4),)),
        OverlaySpec(name="vt_v1", kind="vol_target", feature="rv", target=0.004,
                    min_scale=0.5, max_scale=1.5),
        dataclasses.replace(BRAKE, name="dd_v1", max_drawdown=0.004, resume_drawdown=0.001)),
        **kw)
    c = panel.close
    rv = np.full_like(c, np.nan)
    lr = np.diff(np.log(c), axis=0, prepend=np.nan)
    for k in range(12, len(c)):
        rv[k] = np.sqrt(np.nansum(lr[k - 11:k + 1] ** 2, axis=0))
    return bp, {"ret_12": ret_12(panel), "rv": rv}


def _funding_feature(panel, funding):
    """The last funding print known at each bar's close (as the funding_rate feature)."""
    rates = panel.funding(funding)
    out = np.full_like(rates, np.nan)
    for s in range(rates.shape[1]):
        last = np.nan
        for t in range(len(rates)):
            last = rates[t, s] if np.isfinite(rates[t, s]) else last
            out[t, s] = last
    return out


def test_a_backtest_with_overlays_is_point_in_time_and_names_their_versions():
    panel, funding = market(seed=3)
    bp, feats = _guarded(panel)
    feats["funding_rate"] = _funding_feature(panel, funding)
    insts = instruments_for(bp, VENUE)
    rates = panel.funding(funding)
    full, counts = edge_target(bp, panel, features=feats, events=None, rates=rates,
                               instruments=insts, init_cash=100_000.0)
    assert {c.name for c in counts} == {"fv_v1", "vt_v1", "dd_v1"}
    assert all(c.blocked + c.resized for c in counts), counts
    for n in (200, 401):  # the same bars of a shorter window: the same orders
        part = panel.rows(0, n)
        short, _ = edge_target(bp, part, features={k: v[:n] for k, v in feats.items()},
                               events=None, rates=rates[:n], instruments=insts,
                               init_cash=100_000.0)
        np.testing.assert_array_equal(short, full[:n])
    run = run_blueprint(bp, panel, features=feats, events=None, funding=funding,
                        venue=VENUE, init_cash=100_000.0)
    m = run.metrics.row(0, named=True)
    assert m["overlays"] == ",".join(f"{o.name}@{spec_hash(o)[:8]}" for o in bp.overlays)
    assert m["overlay_blocked"] == sum(c.blocked for c in counts)
    plain = run_blueprint(dataclasses.replace(bp, overlays=()), panel, features=feats,
                          events=None, funding=funding, venue=VENUE, init_cash=100_000.0)
    assert plain.metrics["overlays"][0] == ""
    assert run.trades.height < plain.trades.height


def test_walk_forward_windows_apply_the_same_overlays_as_a_backtest():
    panel, funding = market(seed=3)
    bp, feats = _guarded(panel)
    feats["funding_rate"] = _funding_feature(panel, funding)
    sim = Simulator(bp, Market(panel, feats, None, funding, VENUE, 100_000.0))
    own, _ = edge_target(bp, panel, features=feats, events=None,
                         rates=panel.funding(funding), instruments=instruments_for(bp, VENUE),
                         init_cash=100_000.0)
    np.testing.assert_array_equal(sim.target(0, 0, len(panel.ts)), own)


@pytest.fixture
def specs(tmp_path):
    shutil.copytree(default_specs_dir(), tmp_path / "specs")
    return tmp_path / "specs"


@pytest.mark.parametrize("file, old, new, field, words", [
    ("strategies/momentum_guarded_v1.yaml", "funding_veto_v1,", "funding_veto_v9,",
     "overlays[0]", "unknown overlay 'funding_veto_v9'"),
    ("strategies/momentum_guarded_v1.yaml", "[funding_veto_v1,", "[{kind: veto},",
     "overlays[0]", "not a mapping"),
    ("overlays/vol_regime_v1.yaml", "feature: rv_48_z", "feature: rv_49_z", "feature",
     "unknown feature 'rv_49_z'"),
    ("overlays/vol_regime_v1.yaml", "name: vol_regime_v1", "name: vol_regime", "name",
     "versioned"),
    ("overlays/vol_target_v1.yaml", "max_scale: 1.5", "max_scale: 1.5\nmax_drawdown: 0.1",
     "max_drawdown", "not read by an overlay of kind vol_target"),
    ("overlays/drawdown_brake_v1.yaml", "resume_drawdown: 0.01", "resume_drawdown: 0.05",
     "resume_drawdown", "not in [0, max_drawdown)"),
    ("overlays/funding_veto_v1.yaml", "name: funding_veto_v1", "name: funding_veto_v2",
     "name", "differs from the file's name"),
])
def test_the_linter_names_each_overlay_problem(specs, file, old, new, field, words):
    path = specs / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    found = [e for e in lint(specs) if e.file.endswith(path.name)]
    assert found, lint(specs)
    assert any(e.field == field and words in e.problem for e in found), found


def test_a_changed_overlay_changes_the_hash_of_each_blueprint_using_it(specs):
    before = load_registry(specs).hashes
    path = specs / "overlays/vol_target_v1.yaml"
    path.write_text(path.read_text().replace("target: 0.01", "target: 0.012"))
    from backtest_assets.specs.registry import SpecRegistry

    after = SpecRegistry.load(specs).hashes
    changed = {f for f in before if before[f] != after.get(f)}
    assert changed == {"overlays/vol_target_v1.yaml", "strategies/momentum_guarded_v1.yaml"}
