"""The code location: every layer's definitions merged, nothing else."""

import dagster as dg

from backtest_assets.defs import automation, jobs
from backtest_assets.defs.alpha import assets as alpha
from backtest_assets.defs.backtest import assets as backtest
from backtest_assets.defs.bars import assets as bars
from backtest_assets.defs.discovery import assets as discovery
from backtest_assets.defs.events import assets as events
from backtest_assets.defs.features import assets as features
from backtest_assets.defs.ingest import assets as ingest
from backtest_assets.defs.lifecycle import assets as lifecycle
from backtest_assets.defs.portfolio import assets as portfolio
from backtest_assets.defs.quality import assets as quality
from backtest_assets.defs.report import assets as report
from backtest_assets.defs.specs import assets as specs
from backtest_assets.defs.studies import assets as studies
from backtest_assets.defs.studies import run_all
from backtest_assets.defs.walkforward import assets as walkforward

defs = dg.Definitions.merge(ingest.defs, bars.defs, features.defs, events.defs, quality.defs,
                            discovery.defs, backtest.defs, walkforward.defs, lifecycle.defs,
                            portfolio.defs,
                            alpha.defs, report.defs,
                            specs.defs, studies.defs, run_all.defs, jobs.defs, automation.defs)
