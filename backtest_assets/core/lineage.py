"""Per-key lineage of the date x symbol tables: what each partition was built from, and which
partitions are stale now.

No Dagster here. Every write of a date x symbol table records, in the same transaction as its
rows (``Warehouse.replace(..., lineage=...)``), one row per partition key in
``LINEAGE_TABLE``: the hash of the rows written for that key (its *data version*), the
versions of the upstream keys it read (``inputs``: ``asset@day=hash`` for each upstream key of
its partition mapping, ``-`` where the upstream key had no record), the version of what else
it depends on (spec hashes, the market source) and whether the source had every file.

A key is **stale** when what it would be built from now differs from what it was built from:
an upstream key was rebuilt with other rows, appeared or vanished, the specs or the source
changed, or its source was incomplete then. A rebuild that yields identical rows keeps its
data version, so nothing below it goes stale (content hashes, not timestamps).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from backtest_assets.core.schedule import rectangles

LINEAGE_TABLE = "lineage"
NO_RECORD = "-"  # an upstream key with no lineage record (never built, or built before)

Key = tuple[dt.date, str]  # (day, symbol)


@dataclass(frozen=True)
class Dep:
    """Key ``(d, s)`` reads upstream ``asset`` at days ``d + start_offset .. d + end_offset``
    of the same symbol (warm-up: negative start; look-ahead: positive end)."""

    asset: str
    start_offset: int = 0
    end_offset: int = 0


@dataclass(frozen=True)
class LineageSpec:
    """How one date x symbol asset's keys depend on other keys and on anything else.

    ``first_day``/``last_day`` bound the upstream days that exist (the daily partitions):
    the label of the last day has no next day yet, and is stale once that day exists.
    """

    asset: str
    time_col: str
    deps: tuple[Dep, ...] = ()
    version: str = ""
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    symbol_col: str = "symbol"

    def needs(self, keys: Iterable[Key]) -> pl.DataFrame:
        """One row per (key, upstream key): ``date, symbol, up_asset, up_date``."""
        rows: dict[str, list] = {"date": [], "symbol": [], "up_asset": [], "up_date": []}
        for day, symbol in keys:
            for dep in self.deps:
                for off in range(dep.start_offset, dep.end_offset + 1):
                    up = day + dt.timedelta(days=off)
                    if (self.first_day and up < self.first_day) or \
                            (self.last_day and up > self.last_day):
                        continue
                    rows["date"].append(day)
                    rows["symbol"].append(symbol)
                    rows["up_asset"].append(dep.asset)
                    rows["up_date"].append(up)
        return pl.DataFrame(rows, schema=NEEDS_SCHEMA)


NEEDS_SCHEMA = {"date": pl.Date, "symbol": pl.String, "up_asset": pl.String,
                "up_date": pl.Date}
LINEAGE_SCHEMA = {"asset": pl.String, "date": pl.Date, "symbol": pl.String, "rows": pl.Int64,
                  "data_hash": pl.String, "inputs": pl.String, "version": pl.String,
                  "complete": pl.Boolean, "run_id": pl.String,
                  "built_at": pl.Datetime("us")}


@dataclass(frozen=True)
class LineageWrite:
    """The lineage rows a write records: ``keys`` built by ``run_id``; ``incomplete`` keys
    lacked source files (they are rebuilt by the next run that plans them)."""

    spec: LineageSpec
    keys: tuple[Key, ...]
    run_id: str
    incomplete: frozenset[Key] = field(default_factory=frozenset)


def version_of(parts: Mapping[str, str]) -> str:
    """A short, readable version: ``name=hash8`` per part (sorted), ``;``-separated."""
    return ";".join(f"{k}={v}" for k, v in sorted(parts.items()))


def digest(text: str, n: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


# ---- staleness ------------------------------------------------------------------------------

FRESH, MISSING, STALE = "fresh", "missing", "stale"
# No lineage record: never built, or built by a version that did not record lineage yet.
NEVER_BUILT = "not built yet"


def _parse_inputs(inputs: str | None) -> dict[str, str]:
    """``asset@day=hash,...`` -> {``asset@day``: hash}."""
    if not inputs:
        return {}
    return dict(item.rsplit("=", 1) for item in inputs.split(","))


def _input_change(old: str | None, new: str | None) -> str:
    """Which upstream assets differ, and how: ``bars_1m rebuilt``, ``raw_funding_rates
    appeared`` (no record then, one now), ``gone``, ``bars_5m window moved`` (an upstream day
    came into range, e.g. the day after a label's day once it exists)."""
    before, after = _parse_inputs(old), _parse_inputs(new)
    causes = set()
    for item in set(before) | set(after):
        was, now = before.get(item), after.get(item)
        if was == now:
            continue
        asset = item.split("@")[0]
        if was is None or now is None:
            causes.add(f"{asset} window moved")
        elif was == NO_RECORD:
            causes.add(f"{asset} appeared")
        elif now == NO_RECORD:
            causes.add(f"{asset} gone")
        else:
            causes.add(f"{asset} rebuilt")
    return ", ".join(sorted(causes))


def day_span(days: Sequence[dt.date]) -> str:
    """``2024-01-02`` or ``2024-01-02..2024-01-05`` (first..last, with the count if holes)."""
    days = sorted(days)
    if len(days) == 1:
        return days[0].isoformat()
    holes = (days[-1] - days[0]).days + 1 != len(days)
    return f"{days[0]}..{days[-1]}" + (f" ({len(days)} days)" if holes else "")


def classify(status: pl.DataFrame, version: str) -> pl.DataFrame:
    """State and reason per key from ``Warehouse.lineage_status``'s frame (``date, symbol,
    stored_inputs, current_inputs, stored_version, complete, recorded``).

    Returns ``date, symbol, state, reason`` with state ``fresh``, ``missing`` (never built)
    or ``stale`` (built from something else than it would be now), and why, in words that
    group keys (no dates: :func:`describe_keys` says which keys).
    """
    states, reasons = [], []
    for row in status.iter_rows(named=True):
        if not row["recorded"]:
            state, reason = MISSING, NEVER_BUILT
        elif row["stored_version"] != version:
            change = _version_change(row["stored_version"], version)
            state, reason = STALE, f"version changed: {change}"
        elif not row["complete"]:
            state, reason = STALE, "source files were missing when built (retried)"
        elif row["stored_inputs"] != row["current_inputs"]:
            state, reason = STALE, _input_change(row["stored_inputs"], row["current_inputs"])
        else:
            state, reason = FRESH, ""
        states.append(state)
        reasons.append(reason)
    return status.select("date", "symbol").with_columns(
        state=pl.Series(states, dtype=pl.String), reason=pl.Series(reasons, dtype=pl.String))


def _version_change(old: str | None, new: str) -> str:
    before = dict(p.split("=", 1) for p in (old or "").split(";") if p)
    after = dict(p.split("=", 1) for p in new.split(";") if p)
    names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    return ", ".join(f"{n} {before.get(n, 'none')} -> {after.get(n, 'none')}" for n in names)


# ---- planning -------------------------------------------------------------------------------

def describe_keys(keys: Iterable[Key], universe: Sequence[str]) -> str:
    """``2024-01-01..2024-01-31 x BTCUSDT,ETHUSDT; 2024-01-05 x SOLUSDT``."""
    return "; ".join(r.label for r in rectangles(keys, universe))


def plan(specs: Sequence[LineageSpec], requested: Mapping[str, Iterable[Key]],
         states: Mapping[str, pl.DataFrame], *, rebuild: bool = False
         ) -> dict[str, dict[Key, str]]:
    """The keys to build of each asset (``specs`` in dependency order), with why.

    A requested key is built when it is not fresh (``states``: :func:`classify`'s frames),
    when ``rebuild``, or when a key it reads is built before it in this plan (its rows may
    change). Keys not requested are never built.
    """
    planned: dict[str, dict[Key, str]] = {}
    for spec in specs:
        keys = sorted(set(requested.get(spec.asset, ())), key=lambda k: (k[1], k[0]))
        state = {(r["date"], r["symbol"]): (r["state"], r["reason"])
                 for r in states[spec.asset].iter_rows(named=True)} if keys else {}
        out: dict[Key, str] = {}
        needs = spec.needs(keys)
        upstream_built = {(r["date"], r["symbol"]): r["up_asset"]
                          for r in needs.iter_rows(named=True)
                          if (r["up_date"], r["symbol"]) in planned.get(r["up_asset"], {})}
        for key in keys:
            st, reason = state.get(key, (MISSING, NEVER_BUILT))
            if rebuild:
                out[key] = "--rebuild"
            elif st != FRESH:
                out[key] = reason
            elif key in upstream_built:
                out[key] = f"{upstream_built[key]} rebuilt in this run"
        planned[spec.asset] = out
    return planned
