"""backtest_assets: a research and backtesting platform for crypto markets as a Dagster asset
graph (README.md).

Numba caches each compiled function on disk and invalidates it only when that function's
own source file changes; a kernel that calls a function of another module (the sweep runs
the engine's bar loop) would keep the old callee after an edit of that module. So the cache
lives in a directory named by a digest of every module that compiles with numba: any change
to any of them starts a fresh cache (unless ``NUMBA_CACHE_DIR`` is set by the user).
"""

import hashlib
import os
from pathlib import Path


def _numba_cache_dir() -> Path:
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        text = path.read_bytes()
        if b"numba" in text:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + text)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "backtest_assets" / "numba" / digest.hexdigest()[:16]


if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(_numba_cache_dir())
