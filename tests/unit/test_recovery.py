"""Which runs' processes are gone, judged from the tags the CLI puts on its runs."""

import datetime as dt
import os
import socket
import subprocess

import pytest

from backtest_assets.recovery import (
    HOST_TAG,
    PID_START_TAG,
    PID_TAG,
    Reclaimed,
    owner_tags,
    process_gone,
)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


HOST = socket.gethostname()


@pytest.mark.parametrize(("tags", "gone"), [
    # this process, as it tags its runs: alive
    (owner_tags(), False),
    # an ended process of this host: gone
    ({HOST_TAG: HOST, PID_TAG: str(dead_pid())}, True),
    # this pid, but started at another time: the pid was reused, the run's process is gone
    ({**owner_tags(), PID_START_TAG: "1"}, True),
    # a live pid without a start time: alive (cannot tell reuse)
    ({HOST_TAG: HOST, PID_TAG: str(os.getpid())}, False),
    # another host, or no pid (a daemon or UI run): cannot be checked from here
    ({HOST_TAG: "another-host", PID_TAG: str(dead_pid())}, False),
    ({HOST_TAG: HOST}, False),
    ({}, False),
])
def test_process_gone(tags, gone):
    assert process_gone(tags) is gone


def test_owner_tags_name_this_process():
    tags = owner_tags()
    assert tags[HOST_TAG] == HOST and tags[PID_TAG] == str(os.getpid())
    assert tags[PID_START_TAG].isdigit()


def test_reclaimed_line():
    started = dt.datetime(2024, 5, 1, 12, 0, 3, tzinfo=dt.UTC)
    line = Reclaimed("1a2b3c4d-0000", "x", 1234, started, ("duckdb",)).line()
    assert line == ("run 1a2b3c4d (pid 1234 on host x, started 2024-05-01 12:00:03 UTC) is "
                    "gone: marked failed, its duckdb slot freed")
    assert Reclaimed("1a2b3c4d-0000", "x", 1, None, ()).line().endswith(
        "(pid 1 on host x) is gone: marked failed, it held no pool slot")
