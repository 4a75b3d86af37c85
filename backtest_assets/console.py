"""What the CLI shows in a terminal besides tables: a run's progress, errors on one line each.

Progress is a transient rich status line updated from the run's events (an instance event
listener), drawn only when stdout is a terminal, so piped output and tests see none of it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagster import DagsterInstance

REPO = Path(__file__).resolve().parents[1]
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_YAML_IN = re.compile(r'\s+in "[^"]+",')


def one_line(text: str) -> str:
    """``text`` on one line: whitespace runs collapsed, YAML's repeated file names dropped."""
    return " ".join(_YAML_IN.sub(",", text).split())


def _short(path: str) -> str:
    p = Path(path)
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else path


def error_location(error: Any) -> str | None:
    """``file:line`` of the innermost frame in this project of a Dagster error chain
    (``SerializableErrorInfo``: ``stack`` of formatted frames, ``cause``), or None."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause or getattr(error, "context", None)
    for err in reversed(chain):  # innermost first
        frames = [m for line in err.stack for m in _FRAME.finditer(line)
                  if "site-packages" not in m.group(1) and "<frozen" not in m.group(1)]
        if frames:
            return f"{_short(frames[-1].group(1))}:{frames[-1].group(2)}"
    return None


def exception_location(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame in this project of a Python exception."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "site-packages" not in name and Path(name).is_relative_to(REPO):
            found = f"{_short(name)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


@contextlib.contextmanager
def progress(instance: DagsterInstance, run_id: str, label: str, *,
             enabled: bool = True) -> Iterator[None]:
    """A status line for run ``run_id`` while it executes: the step running, steps done and
    asset partitions materialized so far (nothing when stdout is not a terminal)."""
    from rich.console import Console

    console = Console(highlight=False, markup=False)
    if not enabled or not console.is_terminal:
        yield
        return
    state = {"step": "starting", "steps": 0, "keys": 0}

    with console.status(f"{label}: starting") as status:
        def on_event(entry: Any) -> None:
            event = entry.dagster_event
            if event is None:
                return
            kind = event.event_type_value
            if kind == "STEP_START":
                state["step"] = event.step_key
            elif kind == "STEP_SUCCESS":
                state["steps"] += 1
            elif kind == "ASSET_MATERIALIZATION":
                state["keys"] += 1
            else:
                return
            status.update(f"{label} | {state['step']} | {state['steps']} steps done, "
                          f"{state['keys']:,} partitions materialized")

        instance.add_event_listener(run_id, on_event)
        yield
