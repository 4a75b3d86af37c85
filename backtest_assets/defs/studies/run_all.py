"""A whole study in one launch from the UI: ``run_all_job``, partitioned by study.

Its one op runs what ``python -m backtest_assets run-all --study NAME`` runs, in its run
worker and on the same instance: the study's data days (warm-up and label look-ahead
included), its record, Gate E-1 and Phase 2, blueprints, backtests, walk-forward, promotion
and the report, each layer a run of its own job (tagged with this run's id), and only what
is missing or stale. The rows are those of the CLI because the code is.

Why not a backfill of the study's assets: an asset backfill fixes its partitions at launch,
and the blueprint partitions of a study's Phase-2 survivors do not exist until its Phase 2
has run. A backfill of the study layers covers the blueprints already registered; this job
covers the whole study.
"""

import io
from contextlib import redirect_stdout

import dagster as dg

from backtest_assets.partitions import study_partitions_def

# The tag each run launched by a ``run_all_job`` run carries: that run's id.
RUN_ALL_TAG = "backtest_assets/run_all"


class _LogLines(io.TextIOBase):
    """A text stream that hands each block it is given to ``log`` (the run's event log),
    one message per print: a table stays one message."""

    def __init__(self, log) -> None:
        self._log = log
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        if self._buffer.endswith("\n"):
            self.flush()
        return len(text)

    def flush(self) -> None:
        block, self._buffer = self._buffer.rstrip("\n"), ""
        if block.strip():
            self._log.info(block)


@dg.op(out=dg.Out(dg.Nothing),
       description="Build every layer of the study (its data days, record, E-1, Phase 2, "
                   "blueprints, backtests, walk-forward, promotion and report): what is "
                   "missing or stale, each layer a run of its own job.")
def run_all_layers(context: dg.OpExecutionContext) -> dg.Output:
    from backtest_assets import cli

    study = context.partition_key
    lines = _LogLines(context.log)
    try:
        with cli.tagged({RUN_ALL_TAG: context.run_id}), redirect_stdout(lines):
            ok = cli.run_all(study, instance=context.instance)
    except SystemExit as exc:  # the CLI's one-line refusals (e.g. no such study spec)
        raise dg.Failure(description=f"run-all of study {study}: {exc}") from None
    finally:
        lines.flush()
    launched = context.instance.get_run_records(
        dg.RunsFilter(tags={RUN_ALL_TAG: context.run_id}))
    failed = [r.dagster_run.run_id for r in launched
              if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    if not ok:
        raise dg.Failure(description=(
            f"run-all of study {study} stopped: {len(failed)} of its {len(launched)} runs "
            f"did not succeed ({', '.join(r[:8] for r in failed)}); their errors are in this "
            "run's log above and in each run"),
            metadata={"failed_runs": ", ".join(failed)})
    report = cli.report_path(study)
    return dg.Output(None, metadata={
        "study": study, "runs_launched": len(launched),
        **({"report": dg.MetadataValue.path(report)} if report else {})})


@dg.job(partitions_def=study_partitions_def,
        description="Every layer of one study in one launch (what `python -m backtest_assets "
                    "run-all --study NAME` builds): pick the study's partition and launch. "
                    "Runs only what is missing or stale; each layer's run carries the tag "
                    f"{RUN_ALL_TAG} = this run's id.")
def run_all_job():
    run_all_layers()


defs = dg.Definitions(jobs=[run_all_job])
