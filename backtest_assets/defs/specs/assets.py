"""The spec registry as an asset: its files' hashes in the warehouse, linted by a check."""

import dagster as dg
import polars as pl

from backtest_assets.resources import SpecRegistryResource
from backtest_assets.specs import lint


@dg.asset(
    group_name="specs",
    pool="duckdb",
    kinds={"duckdb", "yaml"},
    check_specs=[dg.AssetCheckSpec("spec_lint", asset="spec_registry", blocking=True,
                                   description="no unknown fields, dangling references, "
                                               "duplicate names or out-of-range thresholds")],
)
def spec_registry(context: dg.AssetExecutionContext, specs: SpecRegistryResource):
    """Every spec file under specs/ with the sha256 of its canonical JSON."""
    reg = specs.registry()
    errors = lint(reg.specs_dir)  # the files as they are now, not as they were loaded
    frame = pl.DataFrame({"file": list(reg.spec_hashes), "sha256": list(reg.spec_hashes.values())})
    yield dg.Output(frame, metadata={"files": frame.height, "specs_dir": str(reg.specs_dir),
                                     "features": len(reg.features), "events": len(reg.events)})
    yield dg.AssetCheckResult(
        check_name="spec_lint", passed=not errors,
        description="\n".join(str(e) for e in errors) or "clean",
        metadata={"problems": len(errors)})


defs = dg.Definitions(assets=[spec_registry])
