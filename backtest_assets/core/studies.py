"""Study records: what a study's results are computed from, kept once and checked ever after.

No Dagster here. A study (``specs/studies/<name>.yaml``) names a window, symbols, event
types, capital and source; its results also depend on every other spec file but the other
studies' (features, events, labels, gates, fees, families, strategies, walk-forward,
universe). The record holds the hash of each, taken when the study first runs. Afterwards a
result of the study is computed only while the specs are the recorded ones: a changed file
refuses the study, naming the file and both hashes (a changed study gets a new name).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from backtest_assets.specs.loader import spec_hash, to_plain

RECORDS_TABLE = "study_record"  # the study_record asset's table
RECORD_SCHEMA = {"study": pl.String, "start": pl.Date, "end": pl.Date,
                 "symbols": pl.List(pl.String), "event_types": pl.List(pl.String),
                 "capital": pl.Float64, "source": pl.String, "spec_hashes": pl.String,
                 "study_hash": pl.String, "code_commit": pl.String,
                 "recorded_at": pl.Datetime("us"),
                 # the lake snapshot the study reads (a DuckDB file keeps none: null)
                 "lake_snapshot": pl.Int64}


class StudyDriftError(RuntimeError):
    """A study's specs differ from the ones its record holds."""


def study_files(registry, name: str) -> dict[str, str]:
    """Spec file -> sha256 of what study ``name`` reads: every spec file but the studies',
    the portfolios', the alpha models' and the universes', and the study itself
    (``studies/<name>``, the hash of its parsed spec)."""
    if name not in registry.studies:
        raise KeyError(f"no study {name!r} in {registry.specs_dir / 'studies'} (studies: "
                       f"{', '.join(registry.studies)})")
    # a portfolio or an alpha model is its own partition (study x portfolio, study x model)
    # and its rows carry its spec hashes
    files = {f: h for f, h in registry.hashes.items()
             if not f.startswith(("studies/", "portfolios/", "alpha/", "universes/"))}
    # what the study reads: which studies its report compares it with is not part of it
    files[f"studies/{name}"] = spec_hash({k: v for k, v in to_plain(registry.studies[name])
                                         .items() if k != "compare_with"})
    return dict(sorted(files.items()))


@dataclass(frozen=True)
class StudyRecord:
    study: str
    start: dt.date
    end: dt.date
    symbols: tuple[str, ...]
    event_types: tuple[str, ...]
    capital: float
    source: str
    spec_hashes: Mapping[str, str]

    @property
    def study_hash(self) -> str:
        return spec_hash(dict(self.spec_hashes))[:16]

    def frame(self, code_commit: str, now: dt.datetime, lake_snapshot: int | None = None
              ) -> pl.DataFrame:
        return pl.DataFrame([{
            "study": self.study, "start": self.start, "end": self.end,
            "symbols": list(self.symbols), "event_types": list(self.event_types),
            "capital": float(self.capital), "source": self.source,
            "spec_hashes": json.dumps(dict(self.spec_hashes), sort_keys=True),
            "study_hash": self.study_hash, "code_commit": code_commit, "recorded_at": now,
            "lake_snapshot": lake_snapshot}],
            schema=RECORD_SCHEMA)


def record_of(registry, name: str, source: str) -> StudyRecord:
    """The record study ``name`` would get now (``source``: the market source it reads)."""
    files = study_files(registry, name)
    st = registry.studies[name]
    return StudyRecord(study=name, start=st.start, end=st.end, symbols=tuple(st.symbols),
                       event_types=tuple(registry.study_event_types(st)),
                       capital=st.capital, source=st.source or source, spec_hashes=files)


def drift(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """One line per spec file whose hash differs (or that appeared or vanished)."""
    out = []
    for f in sorted(set(recorded) | set(now)):
        was, is_ = recorded.get(f), now.get(f)
        if was != is_:
            out.append(f"{f}: recorded {was[:12] if was else 'absent'}, "
                       f"now {is_[:12] if is_ else 'absent'}")
    return out


def check_unchanged(name: str, stored: pl.DataFrame | None, current: StudyRecord) -> None:
    """Raise ``StudyDriftError`` unless study ``name`` has a record (``stored``: the rows of
    ``RECORDS_TABLE`` for it) made from the specs it reads now."""
    if stored is None or stored.is_empty():
        raise StudyDriftError(
            f"study {name!r} has no record yet: materialize study_record for it first "
            f"(python -m backtest_assets run-all --study {name})")
    recorded = json.loads(stored["spec_hashes"][0])
    changed = drift(recorded, current.spec_hashes)
    if changed:
        raise StudyDriftError(
            f"study {name!r} was recorded from other specs than today's: {'; '.join(changed)}. "
            f"A result is only computed from the specs its study records: give the changed "
            f"study a new name (a new specs/studies/*.yaml), or drop study {name!r}'s results "
            f"(python -m backtest_assets forget-study {name})")
