"""The spec registry: every spec file loaded once, typed, frozen and hashed."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from backtest_assets.specs.loader import build, read_yaml, spec_hash
from backtest_assets.specs.models import UniverseSpec

SPECS_DIR_ENV = "BACKTEST_SPECS_DIR"


def default_specs_dir() -> Path:
    """``$BACKTEST_SPECS_DIR``, else the repository's ``specs/``."""
    env = os.environ.get(SPECS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "specs"


@dataclass(frozen=True, kw_only=True)
class SpecRegistry:
    specs_dir: Path
    universe: UniverseSpec

    @property
    def spec_hashes(self) -> dict[str, str]:
        """sha256 of each spec's canonical JSON, keyed by its path under ``specs/``."""
        return {"universe.yaml": spec_hash(self.universe)}

    @classmethod
    def load(cls, specs_dir: Path) -> SpecRegistry:
        path = specs_dir / "universe.yaml"
        universe = build(UniverseSpec, read_yaml(path), file=path)
        return cls(specs_dir=specs_dir, universe=universe)


@functools.cache
def _load_cached(specs_dir: Path) -> SpecRegistry:
    return SpecRegistry.load(specs_dir)


def load_registry(specs_dir: Path | str | None = None) -> SpecRegistry:
    """The registry for ``specs_dir`` (default: :func:`default_specs_dir`), loaded once."""
    return _load_cached(Path(specs_dir or default_specs_dir()).resolve())
