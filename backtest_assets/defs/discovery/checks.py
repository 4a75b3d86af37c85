"""Checks on the Phase-2 frames: every hypothesis recorded once, consistent statistics."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from backtest_assets.defs.shared import schema_result
from backtest_assets.schemas.research import PHASE2_CANDIDATES, PHASE2_FDR, PHASE2_PVALS

_ASSETS = ("phase2_candidates_raw", "phase2_pvals", "phase2_fdr")


def _specs(asset: str, names: dict[str, str]) -> list[dg.AssetCheckSpec]:
    from backtest_assets.partitions import event_type_partitions_def

    return [dg.AssetCheckSpec(n, asset=asset, blocking=True, description=d,
                              partitions_def=event_type_partitions_def)
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
