"""The Dagster instance's side of real work: a Postgres instance tuned in the process that uses
it, and the partitions of a failed range run marked failed again.

``prepare(instance)`` sets the run-creation settings (``backtest_assets.deploy.settings``) in
this process and gives a Postgres instance a pooled connection: without it, each of a run's
thousands of events opens a connection of its own.

``mark_unmaterialized(instance, run_id)``: with one planned event per asset (the partition
subset of a range run), Dagster no longer marks a failed run's partitions as failed, so a
failed backfill's partitions would show as merely missing. For a failed run whose planned
events hold subsets, this stores one planned event per partition that the run did not
materialize, under the run's id, as Dagster does without the setting: its partition status then
says FAILED for exactly those. It returns them per asset; running it twice stores nothing more.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, DagsterEventType
from dagster._core.events.log import EventLogEntry

from backtest_assets.deploy.settings import POOL, RUN_CREATION_ENV


def is_postgres(instance: dg.DagsterInstance) -> bool:
    """Events in Postgres (dagster-postgres's storage, or ``deploy.pooled``'s subclass)."""
    return any(c.__module__.startswith("dagster_postgres")
               for c in type(instance.event_log_storage).__mro__)


def prepare(instance: dg.DagsterInstance) -> dict[str, str]:
    """Settings for this process's runs on ``instance``; the ones in force (none for SQLite)."""
    if not is_postgres(instance):
        return {}
    for key, value in RUN_CREATION_ENV.items():
        os.environ.setdefault(key, value)
    if not getattr(instance, _POOLED, False):  # once: a second pool would leave the first open
        instance.optimize_for_webserver(**POOL)
        setattr(instance, _POOLED, True)
    return {key: os.environ[key] for key in RUN_CREATION_ENV}


_POOLED = "_backtest_assets_pooled"


@dataclass
class _Plan:
    """What a run planned and did, from one read of its planned and materialization events."""

    planned: dict[dg.AssetKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    done: dict[dg.AssetKey, set[str]] = field(default_factory=lambda: defaultdict(set))
    subsets: dict[dg.AssetKey, EventLogEntry] = field(default_factory=dict)  # subset events
    singles: set[tuple[dg.AssetKey, str]] = field(default_factory=set)  # one-partition events

    @classmethod
    def of(cls, instance: dg.DagsterInstance, run_id: str) -> _Plan:
        plan = cls()
        for record in instance.get_records_for_run(
                run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                                 DagsterEventType.ASSET_MATERIALIZATION}).records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                mat = event.step_materialization_data.materialization
                if mat.partition is not None:
                    plan.done[mat.asset_key].add(mat.partition)
                continue
            data = event.asset_materialization_planned_data
            if data.partitions_subset is not None:
                plan.planned[data.asset_key].update(data.partitions_subset.get_partition_keys())
                plan.subsets[data.asset_key] = entry
            elif data.partition is not None:
                plan.planned[data.asset_key].add(data.partition)
                plan.singles.add((data.asset_key, data.partition))
        return plan

    def missing(self) -> dict[str, list[str]]:
        return {key.to_user_string(): sorted(keys - self.done[key])
                for key, keys in sorted(self.planned.items()) if keys - self.done[key]}


def unmaterialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Partitions the run planned for each asset and did not materialize (subset or single
    planned events alike), sorted; assets with none are left out."""
    return _Plan.of(instance, run_id).missing()


def mark_unmaterialized(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[str]]:
    """Mark the partitions a failed run planned in subsets and did not materialize as failed
    (one planned event each, under the run); every unmaterialized partition, per asset."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.FAILURE:
        return {}
    plan = _Plan.of(instance, run_id)
    missing = plan.missing()
    entries = []
    for key, planned in plan.subsets.items():
        for partition in missing.get(key.to_user_string(), []):
            if (key, partition) in plan.singles:
                continue  # marked before
            event = DagsterEvent.build_asset_materialization_planned_event(
                run.job_name, planned.step_key,
                AssetMaterializationPlannedData(key, partition=partition))
            entries.append(EventLogEntry(
                user_message="", level="INFO", job_name=run.job_name, run_id=run_id,
                error_info=None, timestamp=planned.timestamp, step_key=planned.step_key,
                dagster_event=event))
    if entries:
        instance.event_log_storage.store_event_batch(entries)
    return missing


def describe(missing: dict[str, list[str]], limit: int = 3) -> list[str]:
    """One line per asset: how many partitions were not materialized, and the first few."""
    lines = []
    for asset, keys in missing.items():
        shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)"
                                           if len(keys) > limit else "")
        lines.append(f"{asset}: {len(keys)} partition(s) not materialized: {shown}")
    return lines
