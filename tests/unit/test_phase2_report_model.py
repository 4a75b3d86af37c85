"""Phase 2's report.json against its pandera models, and its survivors against phase2_fdr."""

import copy

import polars as pl
import pytest

from backtest_assets.defs.discovery.checks import check_report

DOC = {
    "event_type": "oi_flush",
    "study": {"name": "default", "window": ["2024-01-01", "2024-01-31"],
              "symbols": ["BTCUSDT", "ETHUSDT"]},
    "fdr": {"method": "bh", "q": 0.1, "family_by": ["event_type", "horizon"]},
    "inference": {"test": "signflip+cr2", "cluster_lag_multiple": 2.0},
    "hypotheses": 24,
    "families": [{"family": "oi_flush|15m", "hypotheses": 12, "discovered": 1}],
    "survivors": [{"hypothesis_id": "oi_flush|continuation|15m|BTCUSDT",
                   "rule_template": "continuation", "horizon": "15m", "symbol": "BTCUSDT",
                   "n": 31, "clusters": 29, "mean": 0.0025, "t": 4.1, "p": 0.0004,
                   "q": 0.0048, "net_1x": 0.0019, "net_2x": 0.0013}],
    "spec_hashes": {"gates.yaml": "ab" * 32, "fees.yaml": "cd" * 32},
    "dataset_hash": "0123456789abcdef" * 4,
    "code_commit": "709c009",
}
FDR = pl.DataFrame({"hypothesis_id": ["oi_flush|continuation|15m|BTCUSDT",
                                      "oi_flush|reversal|15m|BTCUSDT"],
                    "q": [0.0048, 0.6], "survivor": [True, False]})


def results(doc, fdr=FDR):
    return {r.check_name: (r.passed, r.description) for r in check_report(doc, fdr)}


def edited(path, value):
    doc = copy.deepcopy(DOC)
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


def test_a_well_formed_report_passes_both_checks():
    assert results(DOC) == {"schema": (True, None), "survivors_match": (True, None)}


def test_a_report_without_survivors_passes_when_the_fdr_table_has_none():
    none = FDR.with_columns(survivor=pl.lit(False))
    assert results(edited(["survivors"], []), none) == {
        "schema": (True, None), "survivors_match": (True, None)}


@pytest.mark.parametrize(("path", "value", "why"), [
    (["fdr", "method"], "holm", "fdr_method"),
    (["fdr", "q"], 1.5, "fdr_q"),
    (["inference", "test"], "hac", "inference"),
    (["inference", "cluster_lag_multiple"], 0.0, "cluster_lag_multiple"),
    (["hypotheses"], 0, "more survivors than hypotheses"),
    (["dataset_hash"], "not-a-hash", "dataset_hash"),
    (["code_commit"], "", "code_commit"),
    (["survivors", 0, "q"], 1.2, "q"),
    (["survivors", 0, "n"], 0, "n"),
    (["survivors", 0], {k: v for k, v in DOC["survivors"][0].items()
                        if not k.startswith("net_")}, "net_"),
    (["spec_hashes"], {}, "spec_files"),
])
def test_a_report_breaking_its_model_fails_the_schema_check_naming_the_field(path, value, why):
    passed, detail = results(edited(path, value))["schema"]
    assert not passed and why in detail, detail


def test_a_report_missing_a_key_fails_and_names_it():
    got = results(edited(["study", "window"], KeyError))
    assert got["schema"][0] is False and "window" in got["schema"][1]
    assert got["survivors_match"][0] is False


def test_duplicate_survivors_fail_the_schema_check():
    doc = copy.deepcopy(DOC)
    doc["survivors"].append(dict(doc["survivors"][0]))
    passed, detail = results(doc)["schema"]
    assert not passed and "hypothesis_id" in detail, detail


@pytest.mark.parametrize("fdr", [
    FDR.with_columns(survivor=pl.lit(True)),  # the report lacks a survivor
    FDR.with_columns(q=pl.Series([0.0050, 0.6])),  # another q
])
def test_survivors_that_differ_from_phase2_fdr_fail(fdr):
    assert results(DOC, fdr)["survivors_match"][0] is False
