"""The code version stamped on reports."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

CODE_COMMIT_ENV = "BACKTEST_CODE_COMMIT"
_REPO = Path(__file__).resolve().parents[2]


@functools.cache
def code_commit() -> str:
    """``git rev-parse HEAD`` of this checkout (``-dirty`` with uncommitted changes), else
    ``$BACKTEST_CODE_COMMIT``, else ``unknown`` (e.g. an installed wheel)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=_REPO, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(CODE_COMMIT_ENV, "unknown")
    return head + ("-dirty" if dirty else "")
