"""The spec linter: one broken copy of the repository's specs per kind of error."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backtest_assets.specs import default_specs_dir, lint
from tests.conftest import REPO


@pytest.fixture
def specs(tmp_path) -> Path:
    shutil.copytree(default_specs_dir(), tmp_path / "specs")
    return tmp_path / "specs"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


CASES = {
    # kind: (file, old, new, field in the error, words in the error)
    "unknown-field": ("events/oi_flush.yaml", "cooldown_bars: 12", "cooldown_bars: 12\ncolor: 1",
                      "color", "unknown field"),
    "unknown-feature-field": ("features/flow.yaml", "window: 12,", "window: 12, colour: red,",
                              "features[0].colour", "unknown field"),
    "dangling-event-feature": ("events/oi_flush.yaml", "feature: oi_change_z",
                               "feature: oi_change_zz", "conditions[0].feature",
                               "unknown feature 'oi_change_zz'"),
    "dangling-feature-input": ("features/basis.yaml", "inputs: [feature.basis]",
                               "inputs: [feature.basis_x]", "features[1].inputs[0]",
                               "unknown feature 'basis_x'"),
    "dangling-study-event": ("studies/default.yaml", "event_types: []",
                             "event_types: [moon_landing]", "event_types[0]",
                             "unknown event type"),
    "study-unknown-symbol": ("studies/default.yaml", "[BTCUSDT, ETHUSDT, SOLUSDT]",
                             "[BTCUSDT, DOGEUSDT]", "symbols[1]", "not in universe.yaml"),
    "duplicate-feature": ("features/flow.yaml", "name: vpin_48", "name: ofi_12",
                          "features[1].name", "duplicate feature 'ofi_12'"),
    "duplicate-event": ("events/oi_flush.yaml", "name: oi_flush", "name: basis_dislocation",
                        "name", "duplicate event 'basis_dislocation'"),
    "z-threshold-out-of-range": ("events/basis_dislocation.yaml", "threshold: 3.0",
                                 "threshold: 30.0", "conditions[0].threshold",
                                 "out of range for a z-score"),
    "negative-abs-threshold": ("events/basis_dislocation.yaml", "threshold: 3.0",
                               "threshold: -3.0", "conditions[0].threshold", "< 0"),
    "cooldown-out-of-range": ("events/oi_flush.yaml", "cooldown_bars: 12", "cooldown_bars: 0",
                              "cooldown_bars", "out of range"),
    "cooldown-beyond-a-day": ("events/oi_flush.yaml", "cooldown_bars: 12",
                              "cooldown_bars: 500", "cooldown_bars", "exceeds one day"),
    "gate-out-of-range": ("gates.yaml", "join_rate_min: 0.99", "join_rate_min: 1.5",
                          "e1.join_rate_min", "out of range"),
    "warmup-too-small": ("features/volatility.yaml", "window: 288, warmup_bars: 300",
                         "window: 288, warmup_bars: 100", "features[2].warmup_bars",
                         "less than the 300 bars"),
    "wrong-family-input": ("features/returns.yaml", "inputs: [perp.close], window: 3",
                           "inputs: [perp.volume], window: 3", "features[1].inputs[0]",
                           "needs a perp/spot price column"),
    "wrong-arity": ("features/basis.yaml", "inputs: [perp.close, spot.close]",
                    "inputs: [perp.close]", "features[0].inputs", "takes 2 input(s)"),
    "bad-input-reference": ("features/returns.yaml", "inputs: [perp.close], window: 12",
                            "inputs: [bitmex.close], window: 12", "features[2].inputs[0]",
                            "not <source>.<column>"),
    "self-reference": ("features/basis.yaml", "inputs: [feature.basis]",
                       "inputs: [feature.basis_z]", "features[1].inputs",
                       "depends on itself"),
    "bad-type": ("events/oi_flush.yaml", "threshold: -3.0", "threshold: lots",
                 "conditions[0].threshold", "expected a number"),
    "blueprint-unknown-event": ("strategies/vol_compression_v1.yaml",
                                "event: vol_compression_breakout", "event: moonshot",
                                "entry.event", "unknown event type 'moonshot'"),
    "blueprint-unknown-feature": ("strategies/momentum_v1.yaml", "feature: ret_48",
                                  "feature: ret_480", "entry.condition.feature",
                                  "unknown feature 'ret_480'"),
    "blueprint-unknown-symbol": ("strategies/momentum_v1.yaml", "[BTCUSDT, ETHUSDT, SOLUSDT]",
                                 "[BTCUSDT, XRPUSDT]", "symbols[1]", "not in universe.yaml"),
    "blueprint-leverage-above-venue-cap": ("strategies/reversion_v1.yaml", "leverage: 1.0",
                                           "leverage: 50.0", "leverage",
                                           "above binance_usdm_vip0's cap of 20"),
    "blueprint-unknown-venue": ("strategies/reversion_v1.yaml", "leverage: 1.0",
                                "leverage: 1.0\nvenue: ftx", "venue", "unknown venue 'ftx'"),
    "blueprint-two-entries": ("strategies/vol_compression_v1.yaml",
                              "entry: {event: vol_compression_breakout}",
                              "entry: {event: vol_compression_breakout, condition: "
                              "{feature: ret_1, op: gt, threshold: 0.0}}",
                              "entry.event", "exactly one of event, condition, alpha and code"),
    "blueprint-duplicate": ("strategies/reversion_v1.yaml", "name: reversion_v1",
                            "name: momentum_v1", "name", "duplicate strategy 'momentum_v1'"),
    "blueprint-overweight": ("strategies/vol_compression_v1.yaml", "target_weight: 0.3",
                             "target_weight: 0.5", "target_weight", "exceeds the leverage"),
    "study-allow-missing-funding-not-bool": ("studies/default.yaml",
                                             "allow_missing_funding: false",
                                             "allow_missing_funding: sometimes",
                                             "allow_missing_funding", "expected bool"),
    "study-allow-constant-funding-not-bool": ("studies/default.yaml",
                                              "allow_constant_funding: true",
                                              "allow_constant_funding: 1",
                                              "allow_constant_funding", "expected bool"),
    "study-constant-funding-prints-out-of-range": ("studies/default.yaml",
                                                   "constant_funding_max_prints: 21",
                                                   "constant_funding_max_prints: 0",
                                                   "constant_funding_max_prints",
                                                   "out of range [1, 100000]"),
    "study-compare-with-unknown": ("studies/default.yaml", "allow_missing_funding: false",
                                   "allow_missing_funding: false\ncompare_with: [nope]",
                                   "compare_with[0]", "no study 'nope'"),
    "study-compared-with-itself": ("studies/default.yaml", "allow_missing_funding: false",
                                   "allow_missing_funding: false\ncompare_with: [default]",
                                   "compare_with", "not compared with itself"),
    "blueprint-allow-missing-funding-not-bool": ("strategies/momentum_v1.yaml",
                                                 "leverage: 1.0",
                                                 "leverage: 1.0\nallow_missing_funding: yes "
                                                 "please", "allow_missing_funding",
                                                 "expected bool"),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_of_broken_spec_is_reported_with_file_and_field(specs, kind):
    file, old, new, field, words = CASES[kind]
    edit(specs / file, old, new)
    errors = lint(specs)
    assert errors, "the linter found nothing"
    match = [e for e in errors if e.file == str(specs / file) and e.field == field]
    assert match, [str(e) for e in errors]
    assert words in match[0].problem, str(match[0])
    assert str(match[0]).startswith(f"{specs / file}: {field}: ")


def test_clean_specs_lint_clean():
    assert lint(default_specs_dir()) == []


def test_lint_command_exit_codes(specs):
    ok = subprocess.run([sys.executable, "-m", "backtest_assets.specs", "lint", str(specs)],
                        cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0 and "clean" in ok.stdout
    edit(specs / "events/oi_flush.yaml", "feature: oi_change_z", "feature: nope")
    edit(specs / "gates.yaml", "join_rate_min: 0.99", "join_rate_min: 2")
    bad = subprocess.run([sys.executable, "-m", "backtest_assets.specs", "lint", str(specs)],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1
    assert re.search(r"oi_flush\.yaml: conditions\[0\]\.feature: unknown feature 'nope'",
                     bad.stdout)
    assert re.search(r"gates\.yaml: e1\.join_rate_min: ", bad.stdout)
    assert "2 problem(s)" in bad.stderr


def test_funding_strictness_fields_load(specs):
    """The study's and the blueprint's funding fields: defaults, and the YAML values."""
    from backtest_assets.specs.registry import SpecRegistry

    reg = SpecRegistry.load(specs)
    study = reg.default_study
    assert (study.allow_missing_funding, study.allow_constant_funding,
            study.constant_funding_max_prints) == (False, True, 21)
    assert not reg.strategies["momentum_v1"].allow_missing_funding
    edit(specs / "studies/default.yaml", "allow_constant_funding: true",
         "allow_constant_funding: false")
    edit(specs / "studies/default.yaml", "constant_funding_max_prints: 21",
         "constant_funding_max_prints: 42")
    edit(specs / "strategies/momentum_v1.yaml", "leverage: 1.0",
         "leverage: 1.0\nallow_missing_funding: true")
    reg = SpecRegistry.load(specs)
    study = reg.default_study
    assert (study.allow_constant_funding, study.constant_funding_max_prints) == (False, 42)
    assert reg.strategies["momentum_v1"].allow_missing_funding
    assert lint(specs) == []
