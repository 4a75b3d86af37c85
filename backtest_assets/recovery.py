"""Runs whose process is gone: found, failed with a reason, their pool slots freed.

A run executed in process by the CLI (``execute_in_process``) and killed with SIGKILL (an OOM
kill, a container stop, a power loss) stays STARTED in the instance and keeps its ``duckdb``
pool slot: every later run of the instance then waits forever ("Step still blocked by limit
for pool duckdb"), and the schedule and archive sensor count its keys as pending. No daemon
watches such a run (run monitoring covers daemon-launched runs only), so the CLI tags each run
with its host, pid and the pid's start time (``owner_tags``), and before each run, like the
schedule and sensor before they count pending keys, ``reclaim_dead_runs`` fails the runs of
this host whose process no longer exists and frees their slots. It also frees the slots of
runs that have ended but still hold them (a daemon-launched run failed by its code server when
its worker died keeps its slot until the monitoring daemon frees it; without a daemon, never).

A run of another host is never failed from here: its process cannot be checked.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

HOST_TAG = "backtest/host"
PID_TAG = "backtest/pid"
# The pid's start time (clock ticks since boot, /proc/<pid>/stat): a pid reused by another
# process (a container restarted, the CLI again pid 1) does not pass for the run's.
PID_START_TAG = "backtest/pid_start"
# The statuses of a run that has not ended. QUEUED runs wait for the daemon, not a CLI.
_NOT_ENDED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
_ENDED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
          dg.DagsterRunStatus.CANCELED]


def process_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot), None if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; starttime is field 22
    return stat[stat.rindex(")") + 2:].split()[19]


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the one that executes a run."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    start = process_start(pid)
    if start is not None:
        tags[PID_START_TAG] = start
    return tags


def process_gone(tags: dict[str, str], host: str | None = None) -> bool:
    """True if the run with these tags was executed on ``host`` (default: this one) by a
    process that no longer exists; False when it lives or cannot be checked from here."""
    host = host or socket.gethostname()
    if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
        return False
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    start = tags.get(PID_START_TAG)
    now = process_start(pid)
    return start is not None and now is not None and now != start


@dataclass(frozen=True)
class Reclaimed:
    """A run of a dead process, marked failed, and the pool slots it held; or (``pid`` None)
    a run that had ended already but still held slots."""

    run_id: str
    host: str | None
    pid: int | None
    started: dt.datetime | None
    pools: tuple[str, ...]
    status: str = "FAILURE"

    def line(self) -> str:
        slots = f"{', '.join(self.pools)} slot{'s' if len(self.pools) > 1 else ''}"
        if self.pid is None:
            return f"run {self.run_id[:8]} ended ({self.status}) holding its {slots}: freed"
        when = f", started {self.started:%Y-%m-%d %H:%M:%S} UTC" if self.started else ""
        freed = f"its {slots} freed" if self.pools else "it held no pool slot"
        return (f"run {self.run_id[:8]} (pid {self.pid} on host {self.host}{when}) is gone: "
                f"marked failed, {freed}")


def _claimed_pools(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    storage = instance.event_log_storage
    pools = []
    for key in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(key)
        pools += [key] * sum(1 for slot in info.claimed_slots if slot.run_id == run_id)
    return tuple(pools)


def reclaim_dead_runs(instance: dg.DagsterInstance) -> list[Reclaimed]:
    """Fail every not-ended run of this host whose process is gone, with the reason, and free
    its pool slots (and drop its pending steps); then free the slots still held by runs of
    any host that have ended. The runs reclaimed, oldest first."""
    return [*_fail_dead_runs(instance), *_free_slots_of_ended_runs(instance)]


def _free_slots_of_ended_runs(instance: dg.DagsterInstance) -> list[Reclaimed]:
    # A run failed from outside its process (by the code server when its worker died, or in
    # the UI) keeps its slots until the monitoring daemon frees them: with no daemon running,
    # never. An ended run claims nothing more, so freeing its slots races with nothing.
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holding = {s.run_id for key in storage.get_concurrency_keys()
               for s in storage.get_concurrency_info(key).claimed_slots}
    if not holding:
        return []
    out = []
    records = instance.get_run_records(dg.RunsFilter(run_ids=sorted(holding),
                                                     statuses=_ENDED))
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        pools = _claimed_pools(instance, run.run_id)
        storage.free_concurrency_slots_for_run(run.run_id)
        out.append(Reclaimed(run.run_id, None, None, None, pools, run.status.value))
    return out


def _fail_dead_runs(instance: dg.DagsterInstance) -> list[Reclaimed]:
    host = socket.gethostname()
    records = instance.get_run_records(dg.RunsFilter(statuses=_NOT_ENDED,
                                                     tags={HOST_TAG: host}))
    out = []
    for record in sorted(records, key=lambda r: r.create_timestamp):
        run = record.dagster_run
        tags = dict(run.tags)
        if not process_gone(tags, host):
            continue
        pid = int(tags[PID_TAG])
        instance.report_run_failed(run, (
            f"The process that executed this run (pid {pid} on host {host}) is gone (killed: "
            f"OOM, container stop, power loss?). Marked failed by pid {os.getpid()}, which "
            "freed its pool slots."))
        pools: tuple[str, ...] = ()
        if instance.event_log_storage.supports_global_concurrency_limits:
            pools = _claimed_pools(instance, run.run_id)
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        started = record.start_time or record.create_timestamp.timestamp()
        out.append(Reclaimed(run.run_id, host, pid,
                             dt.datetime.fromtimestamp(started, dt.UTC) if started else None,
                             pools))
    return out
