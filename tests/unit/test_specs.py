"""The spec registry: typed loading, identity hashes, and errors naming file and field."""

import datetime as dt
import shutil
from pathlib import Path

import pytest

from backtest_assets.core.studies import study_files
from backtest_assets.specs import SpecError, SpecRegistry, default_specs_dir, spec_hash
from tests.support.specs import specs_with_universe

GOOD = """\
name: t
start_date: 2024-01-01
base_interval: 5m
bar_intervals: [1m, 5m]
symbols:
  - {symbol: BTCUSDT, markets: [perp, spot]}
  - {symbol: ADABTC, markets: [spot]}
"""


def write(folder: Path, text: str) -> Path:
    """The repository's specs with ``text`` as universe.yaml, studying BTCUSDT only."""
    return specs_with_universe(folder, text, ["BTCUSDT"])


def test_repository_specs_load_into_frozen_typed_objects():
    reg = SpecRegistry.load(default_specs_dir())
    u = reg.universe
    assert u.symbol_names[:3] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    # the generated cross-section after the listed symbols: S01USDT .. S23USDT, perp only
    assert u.symbol_names[3:] == [f"S{k:02d}USDT" for k in range(1, 24)]
    assert u.markets_of("S23USDT") == ("perp",)
    assert u.start_date == dt.date(2024, 1, 1)
    assert u.base_interval == "5m"
    assert u.markets_of("ETHUSDT") == ("perp", "spot")
    with pytest.raises(AttributeError):
        u.name = "x"  # type: ignore[misc]
    assert len(reg.spec_hashes["universe.yaml"]) == 64
    assert {"gates.yaml", "labels.yaml", "studies/default.yaml",
            "features/returns.yaml", "events/oi_flush.yaml"} <= set(reg.spec_hashes)


def test_hash_ignores_formatting_and_comments_but_not_values(tmp_path):
    a = SpecRegistry.load(write(tmp_path / "a", GOOD))
    reformatted = "# a comment\n" + GOOD.replace("[1m, 5m]", "\n  - 1m\n  - 5m")
    b = SpecRegistry.load(write(tmp_path / "b", reformatted))
    c = SpecRegistry.load(write(tmp_path / "c", GOOD.replace("name: t", "name: u")))
    assert spec_hash(a.universe) == spec_hash(b.universe)
    assert spec_hash(a.universe) != spec_hash(c.universe)
    assert a.spec_hashes == b.spec_hashes != c.spec_hashes


@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        (("name: t\n", "name: t\ncolour: red\n"), "colour", "unknown field"),
        (("base_interval: 5m\n", ""), "base_interval", "required field is missing"),
        (("start_date: 2024-01-01", "start_date: soon"), "start_date", "expected a date"),
        (("base_interval: 5m", "base_interval: 7m"), "base_interval", "must be one of"),
        (("{symbol: BTCUSDT", "{symbol: ../x"), "symbols[0].symbol", "invalid symbol"),
        (("{symbol: ADABTC", "{symbol: BTCUSDT"), "symbols", "duplicated symbol BTCUSDT"),
        (("markets: [spot]", "markets: [futures]"), "symbols[1].markets[0]", "must be one of"),
        (("bar_intervals: [1m, 5m]", "bar_intervals: [1m]"), "base_interval", "not in bar_"),
        (("name: t\n", "name: [t\n"), "line", "invalid YAML"),
    ],
)
def test_malformed_spec_names_file_and_field(tmp_path, edit, field, problem):
    old, new = edit
    assert old in GOOD
    specs = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as err:
        SpecRegistry.load(specs)
    msg = str(err.value)
    assert str(specs / "universe.yaml") in msg
    assert err.value.field.startswith(field), msg
    assert problem in msg


def test_missing_spec_file_is_named(tmp_path):
    shutil.copytree(default_specs_dir(), tmp_path / "s")
    (tmp_path / "s" / "universe.yaml").unlink()
    with pytest.raises(SpecError, match=r"universe\.yaml: <root>: file not found"):
        SpecRegistry.load(tmp_path / "s")


def test_repo_specs_copy_loads_identically(tmp_path):
    shutil.copytree(default_specs_dir(), tmp_path / "specs")
    assert SpecRegistry.load(tmp_path / "specs").spec_hashes == \
        SpecRegistry.load(default_specs_dir()).spec_hashes


def test_phase2_spec_hashes_follow_its_own_files_only(tmp_path):
    base = SpecRegistry.load(default_specs_dir()).phase2().spec_hashes
    assert sorted(base) == ["fees.yaml", "gates.yaml", "multiplicity/families.yaml"]

    def variant(name: str, old: str, new: str) -> dict[str, str]:
        folder = tmp_path / name
        shutil.copytree(default_specs_dir(), folder)
        path = folder / name
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        return SpecRegistry.load(folder).phase2().spec_hashes

    fees = variant("fees.yaml", "taker_bps: 5.0", "taker_bps: 5.5")
    assert fees["fees.yaml"] != base["fees.yaml"]
    assert {k: v for k, v in fees.items() if k != "fees.yaml"} == \
        {k: v for k, v in base.items() if k != "fees.yaml"}
    assert variant("multiplicity/families.yaml", "fdr_q: 0.05", "fdr_q: 0.1") != base
    assert variant("gates.yaml", "min_sample: 30", "min_sample: 40") != base
    # Specs Phase 2 does not read leave its hashes alone (their effect reaches it as data).
    assert variant("events/oi_flush.yaml", "threshold: -3.0", "threshold: -3.5") == base
    assert variant("studies/default.yaml", "name: default", "name: default  # same") == base


def test_a_study_record_leaves_out_which_studies_its_report_compares(tmp_path):
    """compare_with changes what the report shows, not what the study reads: a recorded
    study gains a comparison without becoming another study; its window does not."""
    folder = tmp_path / "specs"
    shutil.copytree(default_specs_dir(), folder)
    study = folder / "studies" / "default.yaml"
    text = study.read_text()
    base = study_files(SpecRegistry.load(folder), "default")
    study.write_text(text + "compare_with: [certify]\n")
    reg = SpecRegistry.load(folder)
    assert reg.studies["default"].compare_with == ("certify",)
    assert study_files(reg, "default") == base
    study.write_text(text.replace("end: 2024-01-31", "end: 2024-01-30"))
    assert study_files(SpecRegistry.load(folder), "default") != base


def test_baseline_blueprints_load_typed():
    reg = SpecRegistry.load(default_specs_dir())
    assert sorted(reg.strategies) == ["momentum_guarded_v1", "momentum_v1", "reversion_v1",
                                      "sma_cross_code_v1", "vol_compression_momentum_v1",
                                      "vol_compression_reversion_v1", "vol_compression_v1"]
    code = reg.strategies["sma_cross_code_v1"].entry.code
    assert code.strategy == "backtest_assets.sim.examples:SmaCross"
    assert code.params == {"fast": 12.0, "slow": 48.0}
    vc = reg.strategies["vol_compression_v1"]
    assert vc.entry.event == "vol_compression_breakout" and vc.entry.condition is None
    assert vc.direction == "continuation" and vc.exits.time_stop_bars == 12
    rev = reg.strategies["reversion_v1"]
    assert rev.entry.condition.feature == "ret_1_z" and rev.entry.condition.op == "abs_gt"
    assert rev.direction == "mean_reversion"
    # the seeds' two volatility-compression baselines: one rides the breakout, one fades it
    mom, fade = (reg.strategies[f"vol_compression_{k}_v1"] for k in ("momentum", "reversion"))
    assert (mom.direction, fade.direction) == ("continuation", "mean_reversion")
    assert mom.entry.event == fade.entry.event == "vol_compression_breakout"
    assert "strategies/momentum_v1.yaml" in reg.spec_hashes
