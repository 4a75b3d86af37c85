"""What runs without anyone clicking: the daily ingest, the archive watcher, downstream layers,
new blueprint partitions, freshness and a record of failed runs.

- ``daily_ingest_schedule`` (03:00 UTC, after the archive publishes the day before): the
  market-data job for yesterday, every symbol trading that day, as one run over the range.
- ``binance_archive_sensor``: when the source is ``binance``, probes the archive for days
  published since its cursor and requests the date x symbol keys not yet ingested.
- ``downstream_automation``: declarative automation materializes bars, features, labels and
  events when their upstream partitions land (as single-run backfills over ranges), and the
  day's ``demo_days`` (the demo stage's paper trading) once the day's research layers have.
- ``symbol_listings_sensor``: symbols become partitions of the dynamic symbol dimension on
  their listing day (the schedule and the archive sensor ask for the days each trades).
- ``blueprint_partitions_sensor``: when Phase 2 produces new survivors, registers their
  blueprint partitions and re-catalogs ``strategy_blueprints``.
- ``yesterday_ingested`` checks on the ingest assets (yesterday's partitions by 06:00 UTC,
  evaluated hourly by ``freshness_schedule``; a warning in the UI when ingest is behind) and
  ``run_failure_recorder`` (every failed run, its partitions and error, and the partitions it
  left unmaterialized, marked failed (``backtest_assets.instance``), appended to
  ``<data root>/ops/run_failures.jsonl``).

Every one is idempotent: a repeated tick requests nothing new (cursors, run keys, and only
keys neither materialized nor in a queued or running run).
"""

import datetime as dt
import hashlib
import json
import logging

import dagster as dg

from backtest_assets.core.schedule import Rectangle, keys_of_tags, rectangles
from backtest_assets.defs.jobs import (
    FRESHNESS_CHECK,
    INGEST_ASSETS,
    blueprints_job,
    market_data_job,
)
from backtest_assets.defs.shared import root_cause
from backtest_assets.instance import mark_unmaterialized
from backtest_assets.partitions import (
    BLUEPRINT_PARTITIONS,
    STUDY_PARTITIONS,
    SYMBOL_PARTITIONS,
    UNIVERSE,
    last_partition_day,
    registered_symbols,
    study_event_type_partitions_def,
    symbols_to_register,
    universe_listings,
)
from backtest_assets.recovery import reclaim_dead_runs
from backtest_assets.resources import MarketSourceResource, SpecRegistryResource, WarehouseResource
from backtest_assets.strategies.catalog import blueprint_names

# data.binance.vision publishes a day's daily files in the first hours of the next UTC day.
INGEST_CRON = "0 3 * * *"
FRESHNESS_DEADLINE_HOUR = 6  # UTC
FRESHNESS_CRON = "15 * * * *"
# Without a cursor the archive sensor looks this far back (the rest is a backfill's job).
ARCHIVE_LOOKBACK_DAYS = 7
RUN_FAILURES_FILE = "ops/run_failures.jsonl"
_PENDING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
            dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def ingested_or_pending(instance: dg.DagsterInstance,
                        log: logging.Logger | None = None) -> set[tuple[dt.date, str]]:
    """Keys every ingest asset has materialized, plus keys of queued or running ingest runs.

    A run of this host whose process is gone (a CLI run killed with SIGKILL stays STARTED) is
    not pending: it is failed first and its pool slots freed (``reclaim_dead_runs``), so its
    keys are requested again and the new run is not blocked by its ``duckdb`` slot.
    """
    for dead in reclaim_dead_runs(instance):
        if log is not None:
            log.warning(dead.line())
    done: set[str] | None = None
    for name in INGEST_ASSETS:
        have = {str(k) for k in instance.get_materialized_partitions(dg.AssetKey(name))}
        done = have if done is None else done & have
    keys = set()
    for key in done or ():
        day, symbol = key.split("|", 1)
        keys.add((dt.date.fromisoformat(day), symbol))
    ingest = {dg.AssetKey(name) for name in INGEST_ASSETS}
    order = registered_symbols(instance)
    for run in instance.get_runs(dg.RunsFilter(statuses=_PENDING)):
        # the schedule's and sensor's runs, and UI backfills or materializations of ingest
        if run.job_name == market_data_job.name or ingest & set(run.asset_selection or ()):
            keys.update(keys_of_tags(dict(run.tags), order))
    return keys


def ingest_requests(instance: dg.DagsterInstance, wanted: list[tuple[dt.date, str]],
                    origin: str, log: logging.Logger | None = None) -> list[dg.RunRequest]:
    """Single runs over ranges for the keys of ``wanted`` not ingested (nor pending)."""
    order = registered_symbols(instance)
    missing = {k for k in set(wanted) - ingested_or_pending(instance, log) if k[1] in order}
    return [_ingest_request(r, origin) for r in rectangles(missing, order)]


def _ingest_request(rect: Rectangle, origin: str) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"ingest {rect.label}", job_name=market_data_job.name,
                         tags={**rect.tags, "backtest/origin": origin})


@dg.schedule(
    cron_schedule=INGEST_CRON,
    execution_timezone="UTC",
    job=market_data_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday (UTC) for every symbol trading that day, ingest and bars, as one "
                "run over the range; keys already ingested or in a running ingest are left "
                "out.",
)
def daily_ingest_schedule(context: dg.ScheduleEvaluationContext):
    day = context.scheduled_execution_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    last = last_partition_day()
    if last is None or not UNIVERSE.start_date <= day <= last:
        return dg.SkipReason(f"{day} is outside the universe's partitions")
    trading = [(day, x.symbol) for x in universe_listings() if x.trades_on(day)]
    requests = ingest_requests(context.instance, trading, "schedule", context.log)
    return requests or dg.SkipReason(f"{day} is already ingested (or being ingested) for "
                                     "every symbol")


@dg.sensor(
    job=market_data_job,
    minimum_interval_seconds=15 * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="With the binance source: days the archive published since the last tick, "
                "requested for the symbols not yet ingested, as runs over ranges.",
)
def binance_archive_sensor(context: dg.SensorEvaluationContext,
                           market_source: MarketSourceResource, warehouse: WarehouseResource):
    if market_source.kind != "binance":
        return dg.SkipReason(f"the market source is {market_source.kind!r}: no archive to watch")
    source = market_source.source(warehouse.root)
    seen = json.loads(context.cursor) if context.cursor else {}
    last = last_partition_day()
    if last is None:
        return dg.SkipReason("the universe has no partitions yet")
    default_from = max(UNIVERSE.start_date, last - dt.timedelta(days=ARCHIVE_LOOKBACK_DAYS - 1))
    published = []
    for listing in universe_listings(market_source.kind):
        symbol = listing.symbol
        day = dt.date.fromisoformat(seen[symbol]) + dt.timedelta(days=1) \
            if symbol in seen else max(default_from, listing.first_day)
        while day <= min(last, listing.last_day or last):
            if source.published(symbol, day, listing.markets):
                published.append((day, symbol))
                seen[symbol] = day.isoformat()
            day += dt.timedelta(days=1)
    requests = ingest_requests(context.instance, published, "binance archive", context.log)
    cursor = json.dumps(seen, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"{len(published)} newly published key(s), none left to ingest"), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


AUTOMATED_GROUPS = ("bars", "features", "events", "demo")
downstream_automation = dg.AutomationConditionSensorDefinition(
    "downstream_automation",
    target=dg.AssetSelection.groups(*AUTOMATED_GROUPS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Bars, features, labels and events follow their upstream partitions "
                "(launched as backfills, so as single runs over ranges); a day's demo "
                "trading follows its research layers.",
)


@dg.sensor(
    job=blueprints_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When Phase 2 produces new survivors: registers their blueprint partitions "
                "and re-catalogs strategy_blueprints.",
)
def blueprint_partitions_sensor(context: dg.SensorEvaluationContext,
                                specs: SpecRegistryResource):
    after = int(context.cursor) if context.cursor else -1
    records = context.instance.fetch_materializations(dg.AssetKey("phase2_fdr"), limit=10_000,
                                                      ascending=False).records
    if not records or records[0].storage_id <= after:
        return dg.SkipReason("no new phase2_fdr materialization")
    cursor = str(records[0].storage_id)
    # The latest materialization of every study x event type decides the survivors.
    latest: dict[str, list[dict]] = {}
    for record in records:  # newest first
        mat = record.asset_materialization
        if mat.partition not in latest and "survivor_rows" in mat.metadata:
            latest[mat.partition] = mat.metadata["survivor_rows"].value
    reg = specs.registry()
    by_study: dict[str, list[dict]] = {}
    for part in sorted(latest):
        key = study_event_type_partitions_def.get_partition_key_from_str(part)
        by_study.setdefault(key.keys_by_dimension["study"], []).extend(latest[part])
    known = set(context.instance.get_dynamic_partitions(BLUEPRINT_PARTITIONS))
    added: list[str] = []
    requests = []
    for study, rows in sorted(by_study.items()):
        if study not in reg.studies:
            continue  # a study whose spec file is gone
        names = blueprint_names(reg, rows, reg.studies[study].symbols)
        new = [n for n in names if n not in known and n not in added]
        if not new:
            continue
        added += new
        digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]
        requests.append(dg.RunRequest(run_key=f"catalog {study} {digest}",
                                      job_name=blueprints_job.name, partition_key=study,
                                      tags={"backtest/origin": "phase2 survivors"}))
    if not added:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            "every survivor's blueprint is registered already"), cursor=cursor)
    return dg.SensorResult(
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(BLUEPRINT_PARTITIONS,
                                                                    added)],
        run_requests=requests, cursor=cursor)


@dg.sensor(
    minimum_interval_seconds=5 * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Symbols become partitions of the dynamic symbol dimension on their listing "
                "day (specs/universe.yaml; its generated cross-section only with "
                "BACKTEST_GENERATED_SYMBOLS=1); delisted ones stay, with their history.",
)
def symbol_listings_sensor(context: dg.SensorEvaluationContext,
                           market_source: MarketSourceResource):
    new = symbols_to_register(context.instance, source=market_source.kind,
                              generated=market_source.registers_generated)
    if not new:
        return dg.SkipReason(f"every listed symbol is a partition "
                             f"({len(registered_symbols(context.instance))})")
    return dg.SensorResult(dynamic_partitions_requests=[
        dg.AddDynamicPartitionsRequest(SYMBOL_PARTITIONS, new)])


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every study of specs/studies becomes a partition of the dynamic study "
                "partitions, so the UI can materialize it (its record, then its layers).",
)
def study_partitions_sensor(context: dg.SensorEvaluationContext, specs: SpecRegistryResource):
    known = set(context.instance.get_dynamic_partitions(STUDY_PARTITIONS))
    new = [name for name in specs.registry().studies if name not in known]
    if not new:
        return dg.SkipReason(f"every study of specs/studies is a partition ({len(known)})")
    return dg.SensorResult(dynamic_partitions_requests=[
        dg.AddDynamicPartitionsRequest(STUDY_PARTITIONS, new)])


def freshness_expectation(now: dt.datetime) -> dt.date:
    """The latest day whose partitions must be ingested at ``now``: yesterday once today's
    deadline (06:00 UTC) has passed, the day before until then."""
    now = now.astimezone(dt.UTC)
    deadline = now.replace(hour=FRESHNESS_DEADLINE_HOUR, minute=0, second=0, microsecond=0)
    return now.date() - dt.timedelta(days=1 if now >= deadline else 2)


def _freshness_check(asset: str) -> dg.AssetChecksDefinition:
    # Dagster's own time-partition freshness checks accept a plain daily partitioning only
    # (not date x symbol), and FreshnessPolicy times the last materialization of any
    # partition: a catch-up of old days would pass it while yesterday is still missing.
    @dg.asset_check(asset=asset, name=FRESHNESS_CHECK, blocking=False,
                    description=f"yesterday's partitions (UTC) of every symbol are present by "
                                f"{FRESHNESS_DEADLINE_HOUR:02d}:00 UTC")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        day = freshness_expectation(dt.datetime.now(dt.UTC))
        if day < UNIVERSE.start_date or (UNIVERSE.end_date and day > UNIVERSE.end_date):
            return dg.AssetCheckResult(passed=True, metadata={"expected_day": str(day)},
                                       description="no partition is due")
        have = {str(k) for k in context.instance.get_materialized_partitions(
            dg.AssetKey(asset))}
        missing = [x.symbol for x in universe_listings()
                   if x.trades_on(day) and f"{day}|{x.symbol}" not in have]
        return dg.AssetCheckResult(
            passed=not missing, severity=dg.AssetCheckSeverity.WARN,
            description=f"{asset}: {day} missing for {', '.join(missing)}" if missing
            else None,
            metadata={"expected_day": str(day), "missing_symbols": ", ".join(missing)})

    return _check


freshness_checks = [_freshness_check(name) for name in INGEST_ASSETS]
freshness_job = dg.define_asset_job(
    "freshness_job", selection=dg.AssetSelection.checks(*freshness_checks),
    description="The ingest freshness checks alone.")
freshness_schedule = dg.ScheduleDefinition(
    name="freshness_schedule", job=freshness_job, cron_schedule=FRESHNESS_CRON,
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: are yesterday's ingest partitions present (from 06:00 UTC)?")


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Appends every failed run (job, partitions, failed steps and their error) to "
                f"<data root>/{RUN_FAILURES_FILE}.",
)
def run_failure_recorder(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    record = failure_record(context)
    # The partitions it left unmaterialized, marked failed (Dagster does not when the run
    # planned them as one subset: DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS)
    record["not_materialized"] = mark_unmaterialized(context.instance, record["run_id"])
    path = warehouse.root / RUN_FAILURES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:  # one line per run, written at once
        out.write(json.dumps(record, sort_keys=True) + "\n")
    context.log.info(f"recorded failed run {record['run_id']} in {path}")


def failure_record(context: dg.RunFailureSensorContext) -> dict:
    """A failed run as one JSON-ready dict: ids, job, partitions, steps and root errors."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        steps.append({"step": event.step_key, "error": root_cause(data)})
    tags = dict(run.tags)
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "failed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "partition": tags.get("dagster/partition"),
        "partition_range": [tags[k] for k in ("dagster/asset_partition_range_start",
                                              "dagster/asset_partition_range_end") if k in tags]
        or None,
        "backfill": tags.get("dagster/backfill"),
        "message": context.failure_event.message,
        "steps": steps,
    }


defs = dg.Definitions(
    jobs=[freshness_job],
    schedules=[daily_ingest_schedule, freshness_schedule],
    sensors=[binance_archive_sensor, downstream_automation, blueprint_partitions_sensor,
             study_partitions_sensor, symbol_listings_sensor, run_failure_recorder],
    asset_checks=freshness_checks,
)
