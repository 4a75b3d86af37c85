"""The code location: every layer's definitions merged, nothing else."""

import dagster as dg

from backtest_assets.defs import jobs
from backtest_assets.defs.bars import assets as bars
from backtest_assets.defs.ingest import assets as ingest

defs = dg.Definitions.merge(ingest.defs, bars.defs, jobs.defs)
