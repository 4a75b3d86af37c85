"""Checks on the Phase-2 frames: every hypothesis recorded once, consistent statistics."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from backtest_assets.defs.shared import schema_result
from backtest_assets.schemas.research import (
    PHASE2_CANDIDATES,
    PHASE2_FDR,
    PHASE2_PVALS,
    PHASE2_REPORT,
    PHASE2_REPORT_SURVIVORS,
    phase2_report_frames,
)

_ASSETS = ("phase2_candidates_raw", "phase2_pvals", "phase2_fdr")


def _specs(asset: str, names: dict[str, str]) -> list[dg.AssetCheckSpec]:
    from backtest_assets.partitions import study_event_type_partitions_def

    return [dg.AssetCheckSpec(n, asset=asset, blocking=True, description=d,
                              partitions_def=study_event_type_partitions_def)
            for n, d in names.items()]


SAMPLE_CHECKS = _specs("phase2_candidates_raw", {
    "schema": "columns, dtypes and values of the candidates model (schemas/research.py)",
    "known_hypotheses": "every sample row belongs to a generated hypothesis",
    "signed_returns": "signed return = template sign x direction x forward return",
})
PVALS_CHECKS = _specs("phase2_pvals", {
    "schema": "columns, dtypes and values of the p-values model (schemas/research.py)",
    "all_hypotheses_recorded": "one row per generated hypothesis, none dropped",
    "p_in_unit_interval": "p-values of tested hypotheses lie in [0, 1]",
})
FDR_CHECKS = _specs("phase2_fdr", {
    "schema": "columns, dtypes and values of the FDR table's model (schemas/research.py)",
    "all_hypotheses_recorded": "one row per hypothesis of phase2_pvals, none dropped",
    "q_values_valid": "q in [0, 1], q >= p, survivors discovered, discovered within the q",
})

REPORT_CHECKS = _specs("phase2_report", {
    "schema": "report.json against the report's models (schemas/research.py): what was "
              "tested and how, one row per survivor",
    "survivors_match": "the report's survivors are exactly phase2_fdr's, with the same q",
})


def _result(name: str, ok: bool, detail: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=bool(ok),
                               description=detail if not ok else None)


def check_sample(sample: pl.DataFrame, hyps: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("phase2_candidates_raw", sample, PHASE2_CANDIDATES)
    unknown = sample.join(hyps, on="hypothesis_id", how="anti")
    yield _result("known_hypotheses", unknown.is_empty(),
                  f"{unknown.height} rows of unknown hypotheses")
    sign = pl.when(pl.col("rule_template") == "continuation").then(1).otherwise(-1)
    bad = sample.filter((sign * pl.col("direction") * pl.col("forward_return")
                         - pl.col("signed_return")).abs() > 0)
    yield _result("signed_returns", bad.is_empty(), f"{bad.height} inconsistent rows")


def _recorded(table: pl.DataFrame, ids: pl.Series) -> tuple[bool, str]:
    got = table["hypothesis_id"]
    ok = got.is_unique().all() and set(got) == set(ids)
    return ok, f"{table.height} rows for {ids.len()} hypotheses ({got.n_unique()} distinct)"


def check_pvals(table: pl.DataFrame, hyps: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("phase2_pvals", table, PHASE2_PVALS)
    yield _result("all_hypotheses_recorded", *_recorded(table, hyps["hypothesis_id"]))
    p = table["p"].drop_nulls()
    yield _result("p_in_unit_interval", bool(((p >= 0) & (p <= 1)).all()),
                  f"p outside [0, 1]: {p.filter((p < 0) | (p > 1)).head(3).to_list()}")


def check_fdr(table: pl.DataFrame, pvals: pl.DataFrame, fdr_q: float
              ) -> Iterator[dg.AssetCheckResult]:
    yield schema_result("phase2_fdr", table, PHASE2_FDR)
    yield _result("all_hypotheses_recorded", *_recorded(table, pvals["hypothesis_id"]))
    bad = table.filter(
        (pl.col("q") < 0) | (pl.col("q") > 1) | (pl.col("q") < pl.col("p").fill_null(1.0))
        | (pl.col("survivor") & ~pl.col("discovered"))
        | (pl.col("discovered") & (pl.col("q") > fdr_q)))
    yield _result("q_values_valid", bad.is_empty(),
                  f"{bad.height} rows break q-value rules, e.g. {bad.head(2).to_dicts()}")


def check_report(doc: dict, fdr: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
    """The report document against its models, and its survivors against the FDR table."""
    try:
        header, survivors = phase2_report_frames(doc)
    except (KeyError, IndexError, TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        yield _result("schema", False, f"report.json is malformed: {type(exc).__name__}: {exc}")
        yield _result("survivors_match", False, "not compared: report.json is malformed")
        return
    header_ok = schema_result("phase2_report", header, PHASE2_REPORT)
    # every survivor row carries its net_<m>x returns; no survivors, no rows to check
    results = [header_ok, *([schema_result("phase2_report", survivors, PHASE2_REPORT_SURVIVORS)]
                            if survivors.height else [])]
    yield _result("schema", all(r.passed for r in results),
                  "; ".join(r.description for r in results if not r.passed))
    want = fdr.filter(pl.col("survivor")).select("hypothesis_id", "q").sort("hypothesis_id")
    got = survivors.select("hypothesis_id", "q").sort("hypothesis_id") if survivors.height \
        else want.clear()
    same = want["hypothesis_id"].to_list() == got["hypothesis_id"].to_list() and bool(
        ((want["q"] - got["q"]).abs() <= 1e-8).all())
    yield _result("survivors_match", same,
                  f"report survivors {got['hypothesis_id'].to_list()[:5]} vs phase2_fdr's "
                  f"{want['hypothesis_id'].to_list()[:5]}")
