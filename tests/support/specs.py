"""Copies of the repository's specs narrowed to another universe, for tests."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from backtest_assets.specs import default_specs_dir

_SYMBOL_LIST = re.compile(r"^symbols: \[.*\]$", re.MULTILINE)


def specs_with_universe(folder: Path, universe_yaml: str, symbols: list[str],
                        study: str | None = None) -> Path:
    """The repository's specs in ``folder`` with ``universe_yaml``; studies and strategies
    trade only ``symbols`` (``study`` replaces studies/default.yaml when given)."""
    shutil.copytree(default_specs_dir(), folder, dirs_exist_ok=True)
    (folder / "universe.yaml").write_text(universe_yaml)
    listed = f"symbols: [{', '.join(symbols)}]"
    for path in [*(folder / "studies").glob("*.yaml"), *(folder / "strategies").glob("*.yaml")]:
        path.write_text(_SYMBOL_LIST.sub(listed, path.read_text()))
    if study is not None:
        (folder / "studies" / "default.yaml").write_text(study)
    return folder
