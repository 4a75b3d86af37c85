"""Studies side by side: two studies with different windows and symbols keep their own rows
through every layer, a rerun does nothing, changed specs are refused, and compare shows a
survivor of one that the other lacks.

The specs are the certification batch's (Phase 2's minimum sample 5, so a week tests
hypotheses); A is its week over three symbols, B a shifted week over two of them.
"""

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest

from backtest_assets import cli
from backtest_assets.certify import prepare
from backtest_assets.resources import WarehouseResource
from backtest_assets.specs import reload_registries

A, B = "week_all", "week_eth_sol"
SYMBOLS = {A: ["BTCUSDT", "ETHUSDT", "SOLUSDT"], B: ["ETHUSDT", "SOLUSDT"]}
WINDOWS = {A: (dt.date(2024, 1, 1), dt.date(2024, 1, 7)),
           B: (dt.date(2024, 1, 3), dt.date(2024, 1, 9))}
RESEARCH_TABLES = ("study_record", "event_quality_report", "phase2_candidates_raw",
                   "phase2_pvals", "phase2_fdr", "strategy_blueprints", "backtest_trades",
                   "backtest_equity", "backtest_metrics", "promotion_decisions",
                   "research_report")
# (a week is too short for specs/walkforward.yaml: run-all skips walk-forward, saying so;
# the research pipeline's month runs it)
CONFIG = {"market_source": {"config": {"market_source": "synthetic"}}}


def rows(table: str, study: str) -> pl.DataFrame:
    wh = WarehouseResource().warehouse()
    with wh.connect(read_only=True) as conn:
        return conn.sql(f"SELECT * FROM {table} WHERE study = ? ORDER BY ALL",  # noqa: S608
                        params=[study]).pl()


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """Both studies run end to end in one instance and warehouse (module-scoped: ~1 min)."""
    import dagster as dg

    mp = pytest.MonkeyPatch()
    env = prepare(tmp_path_factory.mktemp("studies") / "batch")
    for k, v in env.items():
        mp.setenv(k, v)
    specs = Path(env["BACKTEST_SPECS_DIR"])
    for name in (A, B):
        start, end = WINDOWS[name]
        (specs / "studies" / f"{name}.yaml").write_text(
            f"name: {name}\nstart: {start}\nend: {end}\n"
            f"symbols: [{', '.join(SYMBOLS[name])}]\nsource: synthetic\n"
            + (f"compare_with: [{B}]\n" if name == A else ""))
    reload_registries()
    with dg.DagsterInstance.get() as instance:
        for name in (A, B):
            assert cli.run_all(name, instance=instance, quiet=True, resources_config=CONFIG)
        yield instance, specs
    mp.undo()
    reload_registries()


def test_each_study_holds_its_own_rows_in_every_layer(two_studies):
    for name in (A, B):
        record = rows("study_record", name)
        assert record["symbols"].to_list() == [SYMBOLS[name]]
        assert (record["start"][0], record["end"][0]) == WINDOWS[name]
        e1 = rows("event_quality_report", name)
        for _, per_type in e1.group_by("event_type"):
            assert sorted(per_type["symbol"]) == sorted([*SYMBOLS[name], "ALL"])
        fdr = rows("phase2_fdr", name)
        assert set(fdr["symbol"]) <= {*SYMBOLS[name], "ALL"} and fdr.height
        trades = rows("backtest_trades", name)
        assert set(trades["symbol"]) <= set(SYMBOLS[name])
        equity = rows("backtest_equity", name)
        start, end = WINDOWS[name]
        # stamped at bar close: the first bar of the first day to the last of the last
        assert equity["ts"].min() == dt.datetime.combine(start, dt.time(0, 5))
        assert equity["ts"].max() == dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
        report = rows("research_report", name)
        assert report.height == 1 and f"/reports/{name}/" in report["path"][0]
    # a blueprint name means the same in both studies, and B's catalog lacks A's BTC ones
    a_bp, b_bp = (set(rows("strategy_blueprints", n)["blueprint"]) for n in (A, B))
    assert any("btcusdt" in n for n in a_bp) and not any("btcusdt" in n for n in b_bp)


def compare_section(study: str) -> str:
    html = Path(rows("research_report", study)["path"][0]).read_text()
    return re.search(r'<section id="compare">(.*?)</section>', html, re.S).group(1)


def test_the_report_sets_the_studies_it_names_beside_its_own(two_studies):
    """A's report names B (compare_with), which ran after it: the report says B has no
    results; run-all of A then finds its report stale and rebuilds only that."""
    instance, _ = two_studies
    assert f"Study {B} has no results yet" in compare_section(A)
    n_runs = len(instance.get_runs(limit=10_000))
    assert cli.run_all(A, instance=instance, quiet=True, resources_config=CONFIG)
    new = instance.get_runs(limit=len(instance.get_runs(limit=10_000)) - n_runs)
    assert [r.job_name for r in new] == ["report_job"], [r.job_name for r in new]
    section = compare_section(A)
    assert f"<h3>{A} (A) and {B} (B)</h3>" in section and "no results yet" not in section
    # the planted oi_flush continuation on BTCUSDT survives in A; B does not trade BTCUSDT
    row = next(r for r in re.findall(r"<tr>.*?</tr>", section)
               if "oi_flush" in r and "BTCUSDT" in r and f"only {A}" in r)
    assert row.count("\u2014") >= 2, row  # B's q and mean are missing, not zero
    hashes = rows("study_record", A)["study_hash"][0], rows("study_record", B)["study_hash"][0]
    assert all(f'title="{h}"' in section for h in hashes)
    # B names nothing to compare with: its report says how
    assert "Compared with no other study" in compare_section(B)


@pytest.mark.slow  # 32 s of CI time; `make test-all` runs it
def test_rerunning_one_study_leaves_the_other_byte_identical(two_studies):
    instance, _ = two_studies
    before = {t: rows(t, B) for t in RESEARCH_TABLES}
    # A's layers again, forced (not through run-all, which would find them up to date)
    assert cli.quality(study=A, instance=instance, quiet=True)
    assert cli.backtest(study=A, instance=instance, quiet=True)
    assert cli.report(study=A, instance=instance, quiet=True)
    for t in RESEARCH_TABLES:
        assert rows(t, B).equals(before[t]), t


def test_run_all_again_materializes_nothing_and_says_so(two_studies, capsys):
    instance, _ = two_studies
    n_runs = len(instance.get_runs(limit=10_000))
    assert cli.run_all(B, instance=instance, resources_config=CONFIG)
    out = capsys.readouterr().out
    assert "nothing to build: all" in out
    assert f"study {B}: nothing to do, every layer is up to date" in out
    assert len(instance.get_runs(limit=10_000)) == n_runs  # not a single run launched


def test_compare_shows_a_survivor_of_one_study_that_the_other_lacks(two_studies):
    out = cli.compare_studies(A, B)
    assert f"A = {A}, B = {B}" in out
    survivors = out.split("Phase-2 survivors:")[1].split("backtests:")[0]
    # the planted oi_flush continuation on BTCUSDT: B does not trade BTCUSDT
    line = next(s for s in survivors.splitlines() if "oi_flush" in s and "BTCUSDT" in s)
    assert "only A" in line, survivors
    assert "specs hash" in out and A in out and B in out


def test_a_study_whose_specs_changed_is_refused_naming_the_file_and_hashes(two_studies,
                                                                        capsys):
    instance, specs = two_studies
    gates = specs / "gates.yaml"
    original = gates.read_text()
    recorded = json.loads(rows("study_record", A)["spec_hashes"][0])["gates.yaml"]
    try:
        gates.write_text(original.replace("min_sample: 5", "min_sample: 6"))
        reload_registries()
        assert not cli.quality(["oi_flush"], study=A, instance=instance)
        out = capsys.readouterr().out
        assert f"study '{A}' was recorded from other specs than today's" in out, out
        assert f"gates.yaml: recorded {recorded[:12]}, now " in out, out
        assert "give the changed study a new name" in out
        # the record itself is not re-made from the changed specs either
        assert not cli.Runner(instance, quiet=True).execute("study_job", "again",
                                                            partition_key=A)
        assert json.loads(rows("study_record", A)["spec_hashes"][0])["gates.yaml"] == recorded
        # nor does run-all call it up to date: every layer is, but from other specs
        with pytest.raises(SystemExit, match=f"study '{A}' was recorded from other specs"):
            cli.run_all(A, instance=instance, quiet=True, resources_config=CONFIG)
    finally:
        gates.write_text(original)
        reload_registries()
    assert cli.quality(["oi_flush"], study=A, instance=instance, quiet=True)


def test_forgetting_a_study_deletes_its_rows_only(two_studies):
    """Runs last: A is gone afterwards."""
    instance, _ = two_studies
    before = {t: rows(t, B) for t in RESEARCH_TABLES}
    deleted = cli.forget_study(A, instance=instance)
    assert deleted["study_record"] == 1 and deleted["phase2_fdr"] > 0
    assert deleted["backtest_equity"] > 0 and set(deleted) >= set(RESEARCH_TABLES)
    for t in RESEARCH_TABLES:
        assert rows(t, A).is_empty(), t
        assert rows(t, B).equals(before[t]), t
    assert A not in instance.get_dynamic_partitions("study")
    assert B in instance.get_dynamic_partitions("study")
