"""Command line: ``python -m backtest_assets demo | run | quality | discover | backtest |
walkforward | report | summary``.

``run`` materializes the date x symbol layers (ingest, bars, features, labels, events) for a
date range as single runs over ranges (one run per contiguous block of symbols); ``quality``
runs Gate E-1 once per event type (``discover``: then Phase 2); ``backtest`` catalogs the
blueprints and backtests them in one run (``walkforward``: evaluates them out of sample);
``report`` decides promotions and writes the research report; ``demo`` does all of it on
synthetic data. Runs go
to the Dagster instance in ``$DAGSTER_HOME`` (default: the repository's ``dagster_home/``),
so they show in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from backtest_assets.console import error_location, exception_location, one_line, progress
from backtest_assets.core.tables import Col

if TYPE_CHECKING:
    from dagster import DagsterInstance

# The demo builds the default study window (specs/studies/default.yaml).
DEMO_START, DEMO_END = dt.date(2024, 1, 1), dt.date(2024, 1, 31)
REPO = Path(__file__).resolve().parents[1]
# Dagster's console logger repeats every failure with its traceback; the CLI prints one line
# per root cause instead, and the tracebacks with --verbose (or in the log it names).
_QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
_VERBOSE_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
UI_RUN_URL = "http://127.0.0.1:3000/runs/{run_id}"
# Tags every run the CLI's functions launch carries besides their own (:func:`tagged`).
_EXTRA_TAGS: ContextVar[Mapping[str, str]] = ContextVar("extra_run_tags",
                                                     default=MappingProxyType({}))


@contextmanager
def tagged(tags: Mapping[str, str]) -> Iterator[None]:
    """Within this block every run launched here also carries ``tags`` (e.g. the run of
    ``run_all_job`` that launched them)."""
    token = _EXTRA_TAGS.set({**_EXTRA_TAGS.get(), **tags})
    try:
        yield
    finally:
        _EXTRA_TAGS.reset(token)


def adjacent_blocks(items: Sequence[str], order: Sequence[str]) -> list[list[str]]:
    """``items`` (each in ``order``) split into runs adjacent in ``order``: a range run
    cannot skip a key in between."""
    index = {n: i for i, n in enumerate(order)}
    blocks: list[list[str]] = []
    for item in sorted(set(items), key=index.__getitem__):
        if blocks and index[blocks[-1][-1]] == index[item] - 1:
            blocks[-1].append(item)
        else:
            blocks.append([item])
    return blocks


def symbol_blocks(selected: Sequence[str], universe: Sequence[str]) -> list[list[str]]:
    """Split ``selected`` into blocks adjacent in ``universe`` (one range run each)."""
    unknown = sorted(set(selected) - set(universe))
    if unknown:
        raise SystemExit(f"unknown symbol(s) {unknown}: specs/universe.yaml has {list(universe)}")
    return adjacent_blocks(selected, universe)


# Checks whose failure is a research verdict (Gate E-1 closed for an event type): the report
# is stored and discovery of that type is blocked, but the run did what it should.
VERDICT_CHECKS = frozenset({"e1_gate"})


def _check_failure(event) -> bool:
    error = event.step_failure_data.error
    return error is not None and error.cls_name == "DagsterAssetCheckFailedError"


@dataclass
class Runner:
    """Executes jobs in process on one instance, tallying runs and check results.

    Each run is tagged with this host and pid; before each, runs of this host whose process
    is gone are failed and their pool slots freed (``backtest_assets.recovery``).
    """

    instance: DagsterInstance | None = None
    resources_config: dict | None = None
    quiet: bool = False
    verbose: bool = False
    ok: bool = True
    checks: Counter[tuple[str, str]] = field(default_factory=Counter)
    failed_runs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.instance is None:
            import dagster as dg

            os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
            self.instance = dg.DagsterInstance.get()
        from backtest_assets.instance import prepare

        prepare(self.instance)  # Postgres: run-creation settings and a pooled connection

    @property
    def source_kind(self) -> str:
        """The market source this runner's runs read (its resources config, else the env)."""
        from backtest_assets.resources.market_source import market_source_kind

        config = ((self.resources_config or {}).get("market_source") or {}).get("config", {})
        return market_source_kind(config.get("market_source"))

    def execute(self, job_name: str, label: str, *, tags: dict[str, str] | None = None,
                partition_key: str | None = None, assets: Sequence[str] | None = None) -> bool:
        import dagster as dg

        from backtest_assets.definitions import defs
        from backtest_assets.recovery import owner_tags, reclaim_dead_runs

        # A run of this host whose process was killed would keep the duckdb slot and block
        # this one forever: fail it first (and say so).
        for dead in reclaim_dead_runs(self.instance):
            print(dead.line(), file=sys.stderr if self.quiet else sys.stdout)
        run_config = dict(_VERBOSE_LOGS if self.verbose else _QUIET_LOGS)
        if self.resources_config:
            run_config["resources"] = self.resources_config
        t0 = time.perf_counter()
        run_id = str(uuid.uuid4())  # known before the run starts, for the progress listener
        with progress(self.instance, run_id, label, enabled=not self.quiet):
            job = defs.resolve_job_def(job_name)
            if assets:  # these assets and their own checks (not the job's other checks)
                keys = {dg.AssetKey(a) for a in assets}
                job = job.get_subset(asset_selection=keys, asset_check_selection={
                    c for k in keys for c in defs.resolve_assets_def(k).check_keys})
            result = job.execute_in_process(
                instance=self.instance,
                tags={**owner_tags(), **_EXTRA_TAGS.get(), **(tags or {})},
                partition_key=partition_key, raise_on_error=False, run_config=run_config,
                run_id=run_id)
        failed_checks = []
        for ev in result.get_asset_check_evaluations():
            status = "passed" if ev.passed else ev.severity.value.lower()
            self.checks[(ev.asset_check_key.name, status)] += 1
            if not ev.passed and ev.severity.value == "ERROR":
                failed_checks.append(f"{ev.asset_check_key.asset_key.to_user_string()}:"
                                     f"{ev.asset_check_key.name}")
        step_failures = [ev for ev in result.all_events if ev.is_step_failure]
        # A closed gate is a verdict (stored, and blocking what follows), not a broken run.
        verdict = (not result.success and failed_checks
                   and all(c.split(":")[1] in VERDICT_CHECKS for c in failed_checks)
                   and all(_check_failure(ev) for ev in step_failures))
        ok = result.success or bool(verdict)
        self.ok &= ok
        if not ok:
            self.failed_runs.append(result.run_id)
        if not self.quiet:
            state = "succeeded" if result.success else "gate closed" if verdict else "FAILED"
            blocked = f" (blocking checks failed: {', '.join(failed_checks)})" \
                if failed_checks else ""
            print(f"run {result.run_id[:8]} {label}: {state} in "
                  f"{time.perf_counter() - t0:.1f}s{blocked}")
            if not verdict and step_failures:
                self._report_failures(result.run_id, tags, partition_key, step_failures)
        return ok

    def _report_failures(self, run_id: str, tags: dict[str, str] | None,
                         partition_key: str | None, failures: list) -> None:
        """One line per failed step (asset, partitions, file:line, cause), then the log."""
        from backtest_assets.defs.shared import root_cause

        tags = tags or {}
        keys = partition_key or (
            f"{tags['dagster/asset_partition_range_start']}.."
            f"{tags['dagster/asset_partition_range_end']}"
            if "dagster/asset_partition_range_start" in tags else None)
        for ev in failures:
            where = error_location(ev.step_failure_data.error)
            print("  " + "; ".join(x for x in (
                ev.step_key, keys and f"partition {keys}", where,
                one_line(root_cause(ev.step_failure_data))) if x))
            if self.verbose and ev.step_failure_data.error is not None:
                print(ev.step_failure_data.error.to_string())
        from backtest_assets.instance import describe, mark_unmaterialized

        # Failed in the instance too (a range run planned in subsets is not marked by Dagster);
        # a range run's partitions named (a single partition's is on the lines above)
        missing = mark_unmaterialized(self.instance, run_id)
        for line in describe(missing) if partition_key is None else ():
            print(f"  {line}")
        print(f"  full log: {UI_RUN_URL.format(run_id=run_id)} (make ui), or "
              "--verbose for the tracebacks")

    def check_table(self) -> str:
        names = sorted({n for n, _ in self.checks})
        if not names:
            return "asset checks: none evaluated"
        lines = ["asset checks (evaluations per check):"]
        for n in names:
            parts = [f"{s} {self.checks[(n, s)]}" for s in ("passed", "warn", "error")
                     if self.checks[(n, s)]]
            lines.append(f"  {n:<24} {', '.join(parts)}")
        return "\n".join(lines)


# The date x symbol assets in dependency order, and the job each one runs in.
MARKET_ASSETS = ("raw_perp_klines_1m", "raw_spot_klines_1m", "raw_mark_price_klines_1m",
                 "raw_premium_index_klines_1m", "raw_funding_rates", "raw_open_interest",
                 "bars_1m", "bars_5m", "bars_15m")
RESEARCH_ASSETS = ("pit_features", "forward_labels", "event_table")


def _job_of(asset: str) -> str:
    return "market_data_job" if asset in MARKET_ASSETS else "research_job"


def run(start: dt.date, end: dt.date, symbols: Sequence[str] | None, *,
        resources_config: dict | None = None, quiet: bool = False,
        instance: DagsterInstance | None = None, research: bool = True,
        verbose: bool = False, rebuild: bool = False) -> bool:
    """Build what is missing or stale of [start, end] x symbols; True if every run passed.

    Events of a day read the features of the day before (cooldowns reach back a day), and
    features read warm-up days of bars before them and labels the day after; so features and
    labels are built from ``start - 1 day`` and market data (ingest, bars) from the warm-up
    before that to one day after ``end``, within the universe's partitions.
    ``research=False`` builds market data for exactly [start, end] and nothing else.

    Each asset's keys are built only when never built, stale (``core.lineage``: an input
    rebuilt with other rows, specs or source changed, source files missing then) or
    ``rebuild``; the keys an asset reads are built first. Assets with the same keys to build
    share a run (one per rectangle of days x symbols). Prints which keys were built and why.
    """
    from backtest_assets.partitions import (
        UNIVERSE,
        last_partition_day,
        register_listed_symbols,
        universe_listings,
    )
    from backtest_assets.sources.listings import trading_keys

    first, last = UNIVERSE.start_date, last_partition_day()
    if last is None or start < first or end > last:
        raise SystemExit(f"{start}..{end} is outside the partitions {first}..{last} (the "
                         "universe's start_date to yesterday UTC, or its end_date)")
    runner = Runner(instance, resources_config, quiet, verbose)
    calendar = universe_listings(runner.source_kind)
    served = [x.symbol for x in calendar]
    # default: the spec's listed symbols (the generated cross-section is asked for by name)
    chosen = list(symbols or [x.symbol for x in UNIVERSE.symbols])
    symbol_blocks(chosen, UNIVERSE.symbol_names)  # unknown symbols: a clear error
    if unserved := [s for s in chosen if s not in served]:
        raise SystemExit(f"{', '.join(unserved)}: not served by the {runner.source_kind} "
                         "source (specs/universe.yaml's generated symbols are synthetic only)")
    # the symbols listed by now become partitions of the dynamic symbol dimension (of the
    # generated cross-section, those asked for)
    register_listed_symbols(runner.instance, source=runner.source_kind, generated=chosen)
    # each symbol's keys within its listing: no day before it lists or after it delists
    windows = data_windows(start, end, research=research)
    requested = {a: trading_keys(calendar, lo, hi, chosen) for a, (lo, hi) in windows.items()}
    built = _build_stale(runner, requested, resources_config, rebuild)
    if not quiet:
        print(_built_table(built, sum(len(k) for k in requested.values()), rebuild))
        print(runner.check_table())
    return runner.ok


def data_windows(start: dt.date, end: dt.date, *, research: bool = True
                 ) -> dict[str, tuple[dt.date, dt.date]]:
    """The days (first, last) of each date x symbol asset that a study of [start, end] reads
    (:func:`run`), within the universe's partitions."""
    from backtest_assets.partitions import REGISTRY, UNIVERSE, last_partition_day

    first, last = UNIVERSE.start_date, last_partition_day()
    if not research:
        return dict.fromkeys(MARKET_ASSETS, (start, end))
    features_start = max(start - dt.timedelta(days=1), first)
    bars_start = max(features_start - dt.timedelta(days=REGISTRY.feature_warmup_days), first)
    bars_end = min(end + dt.timedelta(days=1), last)
    return {**dict.fromkeys(MARKET_ASSETS, (bars_start, bars_end)),
            "pit_features": (features_start, end), "forward_labels": (features_start, end),
            "event_table": (start, end)}


def _build_stale(runner: Runner, requested: dict[str, list], resources_config: dict | None,
                 rebuild: bool) -> list[tuple[str, str, list, str]]:
    """Run the assets of ``requested`` (dependency order) over their keys to build, planning
    again after each run (a rebuild that gives the same rows leaves what reads it fresh).

    Returns ``(asset, why, keys, outcome)`` rows, outcome ``built``, ``FAILED`` or ``not run``.
    """
    from backtest_assets.core.lineage import classify, plan, rectangles
    from backtest_assets.definitions import defs
    from backtest_assets.defs.shared import lineage_spec
    from backtest_assets.partitions import registered_symbols
    from backtest_assets.resources import MarketSourceResource, WarehouseResource
    from backtest_assets.specs import load_registry

    def config(resource: str) -> dict:
        return ((resources_config or {}).get(resource) or {}).get("config", {})

    source = MarketSourceResource(**config("market_source")).identity
    registry, warehouse = load_registry(), WarehouseResource(**config("warehouse")).warehouse()
    remaining = list(requested)
    out: list[tuple[str, str, list, str]] = []
    while remaining:
        specs = [lineage_spec(defs.resolve_assets_def(a), registry, source) for a in remaining]
        states = {sp.asset: classify(warehouse.lineage_status(sp, requested[sp.asset]),
                                     sp.version) for sp in specs}
        planned = plan(specs, requested, states, rebuild=rebuild)
        keys = set(planned[remaining[0]])
        group = [remaining[0]]
        for asset in remaining[1:]:
            if _job_of(asset) != _job_of(group[0]) or set(planned[asset]) != keys:
                break
            group.append(asset)
        del remaining[:len(group)]
        failed: set = set()
        for rect in rectangles(keys, registered_symbols(runner.instance)) if keys else []:
            if not runner.execute(_job_of(group[0]), f"{_assets_label(group)} {rect.label}",
                                  tags=rect.tags, assets=group):
                failed.update(rect.pairs())
        out += _outcomes(group, planned, lambda key, bad=failed: "FAILED" if key in bad
                         else "built")
        if failed:  # what reads these keys would read the previous rows: stop here
            out += _outcomes(remaining, planned, lambda key: "not run")
            break
    return out


def _outcomes(assets: Sequence[str], planned: dict[str, dict], outcome
              ) -> list[tuple[str, str, list, str]]:
    """One row per asset, reason and ``outcome(key)``, with its keys."""
    rows = []
    for asset in assets:
        groups: dict[tuple[str, str], list] = {}
        for key, why in planned[asset].items():
            groups.setdefault((why, outcome(key)), []).append(key)
        rows += [(asset, why, keys, result) for (why, result), keys in sorted(groups.items())]
    return rows


def _assets_label(assets: Sequence[str]) -> str:
    if set(assets) == set(MARKET_ASSETS):
        return "ingest, bars"
    return ", ".join(assets) if len(assets) <= 3 else f"{assets[0]} .. {assets[-1]}"


def _built_table(built: list[tuple[str, str, list, str]], requested: int, rebuild: bool) -> str:
    """Which keys were built and why: one row per set of keys, reason and result, naming
    the assets it holds for."""
    import polars as pl

    from backtest_assets.core.lineage import describe_keys
    from backtest_assets.core.tables import render_table
    from backtest_assets.partitions import UNIVERSE

    if not built:
        return (f"nothing to build: all {requested} asset keys are up to date "
                "(--rebuild builds them again)")
    done = sum(len(k) for _, _, k, o in built if o == "built")
    rows: dict[tuple[str, str, str], list[str]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for asset, why, keys, outcome in built:
        which = describe_keys(keys, UNIVERSE.symbol_names)
        rows.setdefault((which, why, outcome), []).append(asset)
        counts[(which, why, outcome)] = len(keys)
    frame = pl.DataFrame({
        "assets": [", ".join(a) for a in rows.values()],
        "keys": [counts[k] * len(a) for k, a in rows.items()],
        "which": [k[0] for k in rows], "why": [k[1] for k in rows],
        "outcome": [k[2] for k in rows]})
    tried = sum(len(k) for _, _, k, _ in built)
    title = (f"built {done} of {requested} asset keys"
             + (f"; {tried - done} not built (failed runs)" if tried > done else "")
             + ("" if rebuild or requested == tried
                else f"; the other {requested - tried} were up to date") + ":")
    return f"{title}\n" + render_table(frame, [
        Col(name="assets", header="assets", kind="wrap"),
        Col(name="keys", header="keys", kind="int"),
        Col(name="which", header="days x symbols", kind="wrap"),
        Col(name="why", header="why", kind="wrap"), Col(name="outcome", header="result")])


def register_study(runner: Runner, study: str) -> bool:
    """Add ``study`` to the dynamic ``study`` partitions and materialize its record (refused,
    naming the files, when its specs changed since it was recorded)."""
    from backtest_assets.partitions import STUDY_PARTITIONS
    from backtest_assets.specs import load_registry

    known = load_registry().studies
    if study not in known:
        raise SystemExit(f"unknown study {study!r}; specs/studies has "
                         f"{', '.join(known)} (run-all --start/--end creates one)")
    if not runner.instance.has_dynamic_partition(STUDY_PARTITIONS, study):
        runner.instance.add_dynamic_partitions(STUDY_PARTITIONS, [study])
    import dagster as dg

    recorded = runner.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("study_record"), asset_partitions=[study]), limit=1).records
    # once recorded, every asset of the study checks its specs against the record itself
    return bool(recorded) or runner.execute("study_job", f"study_record {study}",
                                            partition_key=study)


def quality(event_types: Sequence[str] | None = None, *, resources_config: dict | None = None,
            quiet: bool = False, instance: DagsterInstance | None = None,
            discover: bool = True, verbose: bool = False, study: str = "default") -> bool:
    """Gate E-1 and then Phase 2 for each event type of ``study`` (one run each); True if
    all succeeded.

    An event type failing the gate is not a failed run: its blocking ``e1_gate`` check
    fails and keeps it out of discovery. ``discover=False`` runs Gate E-1 only.
    """
    from backtest_assets.partitions import study_event_type_key
    from backtest_assets.specs import load_registry

    runner = Runner(instance, resources_config, quiet, verbose)
    if not register_study(runner, study):
        return False
    job, what = ("discovery_job", "E-1 + Phase 2") if discover else ("event_quality_job", "E-1")
    reg = load_registry()
    types = event_types or reg.study_event_types(reg.studies[study])
    for event_type in types:
        runner.execute(job, f"{what} {study} {event_type}",
                       partition_key=str(study_event_type_key(study, event_type)))
    return runner.ok


def backtest(blueprints: Sequence[str] | None = None, *, resources_config: dict | None = None,
             quiet: bool = False, instance: DagsterInstance | None = None,
             job: str = "backtest_job", verbose: bool = False, study: str = "default") -> bool:
    """Catalog the blueprints of ``study`` (registering their partitions), then run ``job``
    (backtests, or ``walkforward_job``) for ``blueprints`` (default: every one of the
    study), one range run per block of them adjacent in the blueprint partitions; True if
    all succeeded."""
    from backtest_assets.partitions import BLUEPRINT_PARTITIONS, study_blueprint_key

    what = job.removesuffix("_job")
    runner = Runner(instance, resources_config, quiet, verbose)
    if not register_study(runner, study):
        return False
    if not runner.execute("blueprints_job", f"strategy_blueprints {study}",
                          partition_key=study):
        return False
    frame = _read("strategy_blueprints", resources_config)
    mine = [] if frame is None else \
        frame.filter(frame["study"] == study)["blueprint"].to_list()
    unknown = sorted(set(blueprints or ()) - set(mine))
    if unknown:
        raise SystemExit(f"blueprints {unknown} are not in study {study}'s catalog: "
                         f"{', '.join(mine)}")
    order = runner.instance.get_dynamic_partitions(BLUEPRINT_PARTITIONS)
    for block in adjacent_blocks(blueprints or mine, order):
        first, last = (str(study_blueprint_key(study, n)) for n in (block[0], block[-1]))
        label = f"{what} {study} {block[0]}" if len(block) == 1 else \
            f"{what} {study} {len(block)} blueprints"
        runner.execute(job, label, tags={"dagster/asset_partition_range_start": first,
                                         "dagster/asset_partition_range_end": last})
    if not quiet:
        print(backtest_table(study) if job == "backtest_job" else walkforward_table(study))
    return runner.ok


def report(*, resources_config: dict | None = None, quiet: bool = False,
           instance: DagsterInstance | None = None, verbose: bool = False,
           study: str = "default") -> bool:
    """Promotion decisions and the research report of ``study``."""
    runner = Runner(instance, resources_config, quiet, verbose)
    ok = register_study(runner, study) and runner.execute(
        "report_job", f"promotion decisions and research report {study}", partition_key=study)
    if not quiet:
        print(report_table(study))
    return ok and runner.ok


def portfolio(names: Sequence[str] | None = None, *, resources_config: dict | None = None,
              quiet: bool = False, instance: DagsterInstance | None = None,
              verbose: bool = False, study: str = "default") -> bool:
    """The study's portfolios (specs/portfolios; default every one), one run each: edge
    contracts, weights walked forward, the netted book and the equal-weight book."""
    from backtest_assets.partitions import study_portfolio_key
    from backtest_assets.specs import load_registry

    ok = _study_jobs("portfolio", "specs/portfolios", list(load_registry().portfolios),
                     names, study_portfolio_key, Runner(instance, resources_config, quiet,
                                                        verbose), study)
    if not quiet:
        print(portfolio_table(study))
    return ok


def _study_jobs(what: str, folder: str, known: Sequence[str], names: Sequence[str] | None,
                key, runner: Runner, study: str) -> bool:
    """One ``<what>_job`` run per name of ``study`` (default every one of ``known``),
    refusing a name the specs do not have."""
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise SystemExit(f"no {what} {unknown} in {folder} ({', '.join(known)})")
    if not register_study(runner, study):
        return False
    for name in names or known:
        runner.execute(f"{what}_job", f"{what} {name} {study}",
                       partition_key=str(key(study, name)))
    return runner.ok


def alpha(names: Sequence[str] | None = None, *, resources_config: dict | None = None,
          quiet: bool = False, instance: DagsterInstance | None = None,
          verbose: bool = False, study: str = "default") -> bool:
    """The study's alpha bundles (specs/alpha; default every one), one run each: universe,
    signals, regime, the model walked forward, out-of-sample scores, expectancy, export."""
    from backtest_assets.partitions import study_alpha_key
    from backtest_assets.specs import load_registry

    ok = _study_jobs("alpha", "specs/alpha", list(load_registry().alpha), names,
                     study_alpha_key, Runner(instance, resources_config, quiet, verbose),
                     study)
    if not quiet:
        print(alpha_table(study))
    return ok


def alpha_table(study: str = "default") -> str:
    """Each alpha model's out-of-sample evidence: the score's and each signal's spread."""
    table = _warehouse_table("expectancy_report", f"alpha bundles of study {study}: the "
                             "top-minus-bottom bucket spread of each signal and of the "
                             "out-of-sample score", [
        Col(name="alpha_model", header="model"), Col(name="signal", header="signal"),
        Col(name="bucket", header="spread"), Col(name="n_bars", header="bars", kind="int"),
        Col(name="mean", header="mean", kind="pct"),
        Col(name="t_hac", header="t (HAC)", kind="float")], "signal", study,
        where=lambda f: f.filter(f["bucket"].str.contains("-")))
    return (f"{table}\nmean: the forward log return over the model's horizon of a dollar "
            "long the top bucket and short the bottom one, per bar, before costs; the "
            "score's rows are out of sample only (the model refitted walk-forward)")


def ensure_study(name: str, *, start: dt.date | None = None, end: dt.date | None = None,
                 symbols: Sequence[str] | None = None, source: str | None = None,
                 compare_with: Sequence[str] | None = None):
    """The spec of study ``name``: the existing one (refused if the arguments given say
    otherwise), or a new ``specs/studies/<name>.yaml`` written from them."""
    from backtest_assets.specs import default_specs_dir, load_registry, reload_registries

    reg = load_registry()
    asked = {"start": start, "end": end, "symbols": tuple(symbols) if symbols else None,
             "source": source, "compare_with": tuple(compare_with) if compare_with else None}
    if name in reg.studies:
        st = reg.studies[name]
        differ = [f"{k} {v} (the study has {getattr(st, k)})" for k, v in asked.items()
                  if v is not None and v != getattr(st, k)]
        if differ:
            raise SystemExit(f"study {name!r} exists with another {'; '.join(differ)}: a "
                             "study never changes, give the new one another name")
        return st
    if start is None or end is None:
        raise SystemExit(f"no study {name!r} in specs/studies: give --start and --end (and "
                         "--symbols, --source) to create it")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,62}", name):
        raise SystemExit(f"study name {name!r}: lower-case letters, digits, - and _ only")
    path = default_specs_dir() / "studies" / f"{name}.yaml"
    # default: the spec's listed symbols (the generated cross-section is asked for by name)
    syms = list(symbols or [s.symbol for s in reg.universe.symbols])
    text = (f"# Created by `python -m backtest_assets run-all --study {name}` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.\nname: {name}\nstart: {start}\n"
            f"end: {end}\nsymbols: [{', '.join(syms)}]\n"
            + (f"source: {source}\n" if source else "")
            + (f"compare_with: [{', '.join(compare_with)}]\n" if compare_with else ""))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.replace(tmp, path)
        reload_registries()
        return load_registry().studies[name]  # checked like any spec file
    except Exception:
        path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        reload_registries()
        raise


def run_all(study: str, *, start: dt.date | None = None, end: dt.date | None = None,
            symbols: Sequence[str] | None = None, source: str | None = None,
            compare_with: Sequence[str] | None = None,
            resources_config: dict | None = None, instance: DagsterInstance | None = None,
            quiet: bool = False, verbose: bool = False) -> bool:
    """The whole pipeline for one study: its data days (warm-up and label look-ahead
    included), its record, Gate E-1 and Phase 2, blueprints, backtests, walk-forward,
    promotion and the report; what is up to date is not built again."""
    st = ensure_study(study, start=start, end=end, symbols=symbols, source=source,
                      compare_with=compare_with)
    config = dict(resources_config or {})
    _refuse_drift(study, config or None)
    if st.source:
        config["market_source"] = {"config": {
            **((config.get("market_source") or {}).get("config", {})),
            "market_source": st.source}}
    instance = instance or Runner(quiet=True).instance
    args = dict(resources_config=config or None, instance=instance, quiet=quiet,
                verbose=verbose)
    ok = run(st.start, st.end, list(st.symbols), **args)
    if not ok:
        return False
    layers = StudyLayers(instance, study, config or None)
    t = layers.data_built_at(st)
    todo = layers.stale_event_types(t)
    if todo:
        ok = quality(todo, study=study, **args)
    if not quiet:
        print(summary(st.start, st.end, study))
    t = max(t, layers.latest_of("phase2_report", "event_quality_report"))
    ran = bool(todo)
    # the alpha bundle reads the data, events and Phase 2's survivors; its scores are one
    # more blueprint of the catalog
    if _fits(_alpha_misfit(st), "alpha", quiet) and ok \
            and layers.stale(None, ["alpha_scores"], t):
        ok, ran = alpha(study=study, **args), True
    t = max(t, layers.latest_of("alpha_scores"))
    if ok and layers.stale("strategy_blueprints", ["backtest_metrics"], t):
        ok, ran = backtest(study=study, **args), True
    t = max(t, layers.latest_of("strategy_blueprints", "backtest_metrics"))
    # layers a short study cannot hold are skipped, saying why
    fits = {what: _fits(misfit(st), what, quiet) for what, misfit in (
        ("walk-forward", _walkforward_misfit), ("portfolios", _portfolio_misfit))}
    if ok and fits["walk-forward"] and layers.stale("strategy_blueprints",
                                                    ["walkforward_summary"], t):
        ok, ran = backtest(study=study, job="walkforward_job", **args), True
    t = max(t, layers.latest_of("walkforward_summary"))
    if ok and fits["portfolios"] and layers.stale(None, ["portfolio_metrics"], t):
        ok, ran = portfolio(study=study, **args), True
    t = max(t, layers.latest_of("portfolio_metrics"))
    for other in st.compare_with:  # the report's compare section reads their results too
        t = max(t, StudyLayers(instance, other, config or None).latest_of(*COMPARED))
    if ok and layers.stale(None, ["research_report"], t):
        ok, ran = report(study=study, **args), True
    if ok and not ran and not quiet:
        print(f"study {study}: nothing to do, every layer is up to date (its data days, "
              f"Gate E-1, Phase 2, blueprints, backtests, walk-forward, portfolios, alpha "
              f"and report)\n"
              f"{report_table(study)}")
    return ok


def _refuse_drift(study: str, resources_config: dict | None) -> None:
    """Refuse (naming each changed file and both hashes) a recorded study whose specs changed
    since: its layers may all look up to date, but they were computed from other specs."""
    from backtest_assets.core.studies import StudyDriftError, check_unchanged, record_of
    from backtest_assets.specs import load_registry

    stored = _read("study_record", resources_config, study=study)
    if stored is None or stored.is_empty():
        return
    try:
        check_unchanged(study, stored, record_of(load_registry(), study, source=""))
    except StudyDriftError as exc:
        raise SystemExit(str(exc)) from None


def _fits(misfit: str | None, what: str, quiet: bool) -> bool:
    """True when a layer fits the study; else says why it is skipped (unless quiet)."""
    if misfit and not quiet:
        print(f"{what} skipped: {misfit}")
    return misfit is None


def _portfolio_misfit(st) -> str | None:
    """Why no portfolio of specs/portfolios fits study ``st`` (too few days), or None."""
    from backtest_assets.specs import load_registry

    specs = load_registry().portfolios
    days = (st.end - st.start).days + 1
    if not specs:
        return "specs/portfolios has none"
    need = min(p.lookback_days + p.rebalance_days for p in specs.values())
    if days < need:
        return (f"study {st.name} has {days} days; a portfolio needs its lookback and one "
                f"rebalance period ({need} days at the least)")
    return None


def _alpha_misfit(st) -> str | None:
    """Why no alpha model of specs/alpha fits study ``st``, or None: too few days for its
    first training period and a refit, or the regime's market symbol not in the study."""
    from backtest_assets.specs import load_registry

    specs = load_registry().alpha
    days = (st.end - st.start).days + 1
    if not specs:
        return "specs/alpha has none"
    if not any(a.regime.symbol in st.symbols for a in specs.values()):
        return (f"study {st.name} trades none of the alpha models' regime symbols "
                f"({', '.join(sorted({a.regime.symbol for a in specs.values()}))})")
    need = min(a.first_train_days + 1 for a in specs.values())
    if days < need:
        return (f"study {st.name} has {days} days; an alpha model needs its first training "
                f"period and a day out of sample ({need} days at the least)")
    return None


def _walkforward_misfit(st) -> str | None:
    """Why specs/walkforward.yaml cannot split study ``st`` (too few days), or None."""
    from backtest_assets.specs import load_registry
    from backtest_assets.walkforward.evaluate import windows

    reg = load_registry()
    n = ((st.end - st.start).days + 1) * reg.bars_per_day
    try:
        windows(n, reg.base_minutes, reg.walkforward, purge=0)
    except ValueError as exc:
        return (f"walkforward.yaml does not fit study {st.name} ({n} bars): {exc} "
                "(promotion then has no out-of-sample evidence)")
    return None


@dataclass
class StudyLayers:
    """When each layer of a study was last materialized, to run only what is stale: a layer
    is stale when a partition of it is missing or older than what it reads."""

    instance: DagsterInstance
    study: str
    resources_config: dict | None = None

    def _catalog(self) -> list[str]:
        frame = _read("strategy_blueprints", self.resources_config, study=self.study)
        return [] if frame is None else frame["blueprint"].to_list()

    def _partitions(self, asset: str) -> list[str]:
        from backtest_assets.partitions import study_blueprint_key, study_event_type_key
        from backtest_assets.specs import load_registry

        if asset in ("event_quality_report", "phase2_report"):
            reg = load_registry()
            return [str(study_event_type_key(self.study, e))
                    for e in reg.study_event_types(reg.studies[self.study])]
        if asset in ("study_record", "strategy_blueprints", "research_report",
                     "promotion_decisions", "tear_sheets"):
            return [self.study]
        if asset == "portfolio_metrics":
            from backtest_assets.partitions import study_portfolio_key

            return [str(study_portfolio_key(self.study, p)) for p in load_registry().portfolios]
        if asset == "alpha_scores":
            from backtest_assets.partitions import study_alpha_key

            return [str(study_alpha_key(self.study, a)) for a in load_registry().alpha]
        return [str(study_blueprint_key(self.study, n)) for n in self._catalog()]

    def _record(self, asset: str, partition: str):
        import dagster as dg

        found = self.instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
        return found[0] if found else None

    def _times(self, asset: str) -> list[float | None]:
        return [None if (r := self._record(asset, p)) is None else r.timestamp
                for p in self._partitions(asset)]

    def latest_of(self, *assets: str) -> float:
        return max([t for a in assets for t in self._times(a) if t is not None], default=0.0)

    def data_built_at(self, st) -> float:
        """When a key the study reads (each asset's days of :func:`data_windows`: warm-up
        and label look-ahead included) was last built, from the warehouse's lineage records
        (0 before any)."""
        import polars as pl

        from backtest_assets.core.lineage import LINEAGE_TABLE

        frame = _read(LINEAGE_TABLE, self.resources_config)
        if frame is None:
            return 0.0
        read = pl.lit(False)
        for asset, (lo, hi) in data_windows(st.start, st.end).items():
            read |= (pl.col("asset") == asset) & pl.col("date").is_between(lo, hi)
        mine = frame.filter(pl.col("symbol").is_in(list(st.symbols)) & read)
        last = mine["built_at"].max()
        return 0.0 if last is None else last.replace(tzinfo=dt.UTC).timestamp()

    def stale_event_types(self, after: float) -> list[str]:
        """Event types whose Gate E-1 (and, when it passed, Phase 2) is missing or older
        than ``after``."""
        todo = []
        for key in self._partitions("event_quality_report"):
            e1 = self._record("event_quality_report", key)
            if e1 is None or e1.timestamp < after:
                todo.append(key.split("|")[0])
                continue
            passed = e1.asset_materialization.metadata.get("passed")
            p2 = self._record("phase2_report", key)
            if passed is not None and passed.value and (p2 is None or p2.timestamp < e1.timestamp):
                todo.append(key.split("|")[0])
        return todo

    def stale(self, first: str | None, assets: Sequence[str], after: float) -> bool:
        """``first`` (one partition) or any partition of ``assets`` missing or older than
        ``after``."""
        times = [*(self._times(first) if first else []),
                 *[t for a in assets for t in self._times(a)]]
        return not times or any(t is None or t < after for t in times)


# The layers of another study that a report's compare section reads.
COMPARED = ("study_record", "event_quality_report", "phase2_report", "backtest_metrics",
            "walkforward_summary", "promotion_decisions")
# Every table holding a study's rows (a ``study`` column), from its record to its report.
STUDY_TABLES = ("study_record", "event_quality_report", "phase2_candidates_raw",
                "phase2_inputs", "phase2_pvals", "phase2_fdr", "strategy_blueprints",
                "backtest_trades", "backtest_equity", "backtest_metrics", "walkforward_folds",
                "walkforward_results", "walkforward_equity", "walkforward_summary",
                "edge_contracts", "portfolio_weights", "portfolio_equity", "portfolio_metrics",
                "universe_snapshot", "alpha_signals", "regime_series", "alpha_model",
                "alpha_scores", "expectancy_report", "expectancy_robustness",
                "edge_candidates", "promotion_decisions", "tear_sheets", "research_report")


def forget_study(study: str, *, instance: DagsterInstance | None = None,
                 resources_config: dict | None = None) -> dict[str, int]:
    """Delete study ``study``'s rows from every research table (one transaction) and its
    partition; other studies' rows and the market data are untouched, and its report files
    stay on disk. Returns the rows deleted per table."""
    from backtest_assets.partitions import STUDY_PARTITIONS
    from backtest_assets.resources import WarehouseResource

    config = ((resources_config or {}).get("warehouse") or {}).get("config", {})
    deleted = WarehouseResource(**config).warehouse().delete_rows(STUDY_TABLES, "study", study)
    instance = instance or Runner(quiet=True).instance
    if instance.has_dynamic_partition(STUDY_PARTITIONS, study):
        instance.delete_dynamic_partition(STUDY_PARTITIONS, study)
    return deleted


def compare_studies(a: str, b: str, resources_config: dict | None = None) -> str:
    """Studies ``a`` and ``b`` side by side (``reporting.compare``), as tables."""
    from backtest_assets.core.tables import render_table
    from backtest_assets.reporting.compare import compare_from

    records = _read("study_record", resources_config)
    if records is None or not {a, b} <= set(records["study"]):
        have = [] if records is None else sorted(records["study"].unique())
        raise SystemExit(f"compare needs two recorded studies; the warehouse has "
                         f"{', '.join(have) or 'none'} (python -m backtest_assets run-all "
                         "--study NAME)")
    c = compare_from(a, b, lambda table: _read(table, resources_config))

    def block(title: str, frame, cols: list[Col]) -> str:
        if frame.is_empty():
            return f"{title}: none in either study"
        return f"{title}:\n" + render_table(frame, [col for col in cols
                                                     if col.name in frame.columns])

    def ab(name: str, header: str, kind: str = "float", **kw) -> list[Col]:
        return [Col(name=f"a_{name}", header=f"A {header}", kind=kind, **kw),
                Col(name=f"b_{name}", header=f"B {header}", kind=kind, **kw)]

    return "\n".join([
        f"A = {a}, B = {b}",
        block("studies", c.studies, [Col(name="study", header="study"),
                                     Col(name="start", header="start"),
                                     Col(name="end", header="end"),
                                     Col(name="symbols", header="symbols", kind="wrap"),
                                     Col(name="source", header="source"),
                                     Col(name="study_hash", header="specs hash")]),
        block("Gate E-1 (pooled)", c.e1, [Col(name="event_type", header="event type"),
                                          *ab("events", "events", "int"),
                                          *ab("prevalence_per_10k", "per 10k", digits=1),
                                          *ab("passed", "pass", "text")]),
        block("Phase-2 survivors", c.survivors, [
            Col(name="event_type", header="event type"),
            Col(name="rule_template", header="rule"), Col(name="horizon", header="h"),
            Col(name="symbol", header="symbol"), Col(name="where", header="where"),
            *ab("q", "q", "prob"), Col(name="q_moved", header="q moved", kind="float", digits=3),
            *ab("mean", "mean", "bps"), Col(name="mean_moved", header="moved", kind="bps")]),
        block("backtests", c.backtests, [Col(name="blueprint", header="blueprint"),
                                         *ab("total_return", "return", "pct"),
                                         *ab("sharpe", "SR"), *ab("trades", "trades", "int")]),
        block("walk-forward", c.walkforward, [Col(name="blueprint", header="blueprint"),
                                              *ab("deflated_sharpe", "DSR", "prob"),
                                              *ab("pbo", "PBO", "prob"),
                                              *ab("oos_sharpe", "OOS SR")]),
        block("promotions", c.promotions, [Col(name="blueprint", header="blueprint"),
                                           *ab("to_stage", "stage", "text")]),
    ])


def _read(table: str, resources_config: dict | None = None, study: str | None = None):
    """A warehouse table (``study``'s rows), or None when it has not been materialized yet."""
    from backtest_assets.resources import WarehouseResource

    config = ((resources_config or {}).get("warehouse") or {}).get("config", {})
    wh = WarehouseResource(**config).warehouse()
    return wh.study_rows(table) if study is None else wh.study_rows(table, study)


def _warehouse_table(table: str, title: str, columns: list[Col], sort: str,
                     study: str, where=None) -> str:
    """``columns`` of ``study``'s rows of a warehouse table (``where``: a filter of them),
    for a 120-column terminal."""
    from backtest_assets.core.tables import render_table

    frame = _read(table, study=study)
    if frame is not None and where is not None:
        frame = where(frame)
    if frame is None or frame.is_empty():
        return f"no {table} of study {study} yet"
    return f"{title}:\n{render_table(frame.sort(sort), columns)}"


def walkforward_table(study: str = "default") -> str:
    """Out-of-sample figures and overfitting statistics of every evaluated blueprint."""
    table = _warehouse_table("walkforward_summary", f"walk-forward over study {study}", [
        Col(name="blueprint", header="blueprint"),
        Col(name="trials", header="trials", kind="int", optional=True),
        Col(name="is_sharpe", header="IS SR", kind="float", optional=True),
        Col(name="deflated_sharpe", header="DSR", kind="prob"),
        Col(name="pbo", header="PBO", kind="prob"),
        Col(name="oos_sharpe", header="OOS SR", kind="float"),
        Col(name="oos_total_return", header="OOS ret", kind="pct"),
        Col(name="oos_max_drawdown", header="OOS max dd", kind="pct"),
        Col(name="oos_trades", header="OOS trades", kind="int"),
        Col(name="stress_sharpe", header="2x-cost SR", kind="float")], "blueprint", study)
    return (f"{table}\nSR: annualized Sharpe; DSR: deflated Sharpe (the probability that the "
            "true Sharpe is above 0\nafter the trials); PBO: probability of backtest overfitting")


def portfolio_table(study: str = "default") -> str:
    """Each portfolio's book and equal-weight book out of sample."""
    table = _warehouse_table("portfolio_metrics", f"portfolios of study {study} (out of "
                             "sample, from the first rebalance)", [
        Col(name="portfolio", header="portfolio"), Col(name="book", header="book"),
        Col(name="edges", header="edges", kind="int"),
        Col(name="total_return", header="return", kind="pct"),
        Col(name="sharpe", header="SR", kind="float"),
        Col(name="max_drawdown", header="max dd", kind="pct"),
        Col(name="fees", header="fees", kind="float", digits=0),
        Col(name="max_target_gross", header="target gross", kind="float"),
        Col(name="max_gross", header="gross", kind="float"),
        Col(name="selection", header="selection")], "portfolio", study)
    return (f"{table}\nbook: the portfolio's edges, weighted and netted; equal_weight: every "
            "blueprint of the study, equal weights, same rebalances;\nedges: those ever in "
            "the book; selection as_of: contracts reviewed on the walk-forward of the bars "
            "before each review only (study: on the whole study, in sample);\ntarget gross: "
            "the "
            "largest gross the book asked for (within the spec's cap); gross: the largest "
            "it held (prices drift between orders)")


def report_path(study: str = "default") -> str | None:
    """The full path of the study's latest research report, or None before the first."""
    frame = _read("research_report", study=study)
    return None if frame is None or frame.is_empty() else str(frame.sort("path")["path"][-1])


def report_table(study: str = "default") -> str:
    """The promotion decisions (reasons wrapped, never cut) and the research report's path."""
    decisions = _warehouse_table("promotion_decisions", f"promotion decisions of study {study}",
                                 [Col(name="blueprint", header="blueprint"),
                                  Col(name="from_stage", header="from"),
                                  Col(name="to_stage", header="to"),
                                  Col(name="reasons", header="reasons", kind="wrap")],
                                 "blueprint", study)
    # printed whole on its own line, so it can be copied (a table cell would wrap it)
    return f"{decisions}\nresearch report: {report_path(study) or 'not written yet'}"


def backtest_table(study: str = "default") -> str:
    """Headline metrics of every backtested blueprint of ``study``."""
    return _warehouse_table("backtest_metrics", f"backtests over study {study}", [
        Col(name="blueprint", header="blueprint"),
        Col(name="total_return", header="return", kind="pct"),
        Col(name="sharpe", header="sharpe", kind="float"),
        Col(name="max_drawdown", header="max dd", kind="pct"),
        Col(name="trades", header="trades", kind="int"),
        Col(name="win_rate", header="win", kind="pct", digits=1),
        Col(name="fee_drag", header="fees", kind="pct"),
        Col(name="margin_usage_max", header="margin", kind="pct", digits=0, optional=True),
        Col(name="liquidations", header="liq.", kind="int"),
        Col(name="rejected_insufficient_margin", header="no margin", kind="int")],
        "blueprint", study)


def summary(start: dt.date, end: dt.date, study: str = "default") -> str:
    """What the warehouse holds for [start, end]: rows, gaps, quarantine, events; Gate E-1
    and Phase 2 of ``study``."""
    from backtest_assets.core.summary import warehouse_summary
    from backtest_assets.resources import WarehouseResource

    return warehouse_summary(WarehouseResource().warehouse(), start, end, study)


def postgres(action: str, directory: Path, port: int, lake: bool = False) -> bool:
    """Start, stop or show the local cluster of the Postgres instance; ``up`` prints the
    environment that points the CLI, the webserver and the daemon at it (``lake``: and at a
    DuckLake warehouse whose catalog is the cluster's database ``lake``)."""
    from backtest_assets.deploy.postgres import LocalPostgres
    from backtest_assets.deploy.settings import PG_URL_ENV, RUN_CREATION_ENV

    cluster = LocalPostgres(directory, port=port)
    if action == "down":
        cluster.stop()
        print(f"postgres in {cluster.data}: stopped")
        return True
    if action == "status":
        state = "running" if cluster.running() else "stopped"
        print(f"postgres in {cluster.data}: {state} ({cluster.url()})")
        return True
    cluster.start()
    print(f"postgres in {cluster.data}: running on 127.0.0.1:{port} (log {cluster.log})")
    print("point the CLI, `make ui` and the daemon at it with:")
    env = {"DAGSTER_HOME": REPO / "dagster_home" / ("lake" if lake else "postgres"),
           PG_URL_ENV: cluster.url(), **RUN_CREATION_ENV}
    if lake:
        from backtest_assets.resources.warehouse import LAKE_CATALOG_ENV
        from backtest_assets.warehouse import BACKEND_ENV

        cluster.create_database("lake")
        env |= {BACKEND_ENV: "ducklake", LAKE_CATALOG_ENV: f"'{cluster.lake_catalog()}'"}
    for key, value in env.items():
        print(f"  export {key}={value}")
    return True


def celery(action: str, directory: Path, port: int, workers: int) -> bool:
    """Start, stop or show a local Redis broker and ``workers`` Celery workers for the
    executor ``celery``; ``up`` prints the environment that selects it. The workers take the
    environment of this command: run it with the instance's and the lake's set."""
    from backtest_assets.deploy.celery import BROKER_ENV, EXECUTOR_ENV, LocalRedis, Workers

    redis = LocalRedis(directory / "redis", port=port)
    pool = Workers(directory / "workers", redis.url(0), redis.url(1), count=workers,
                   env={EXECUTOR_ENV: "celery", BROKER_ENV: redis.url(0)})
    if action == "down":
        pool.stop()
        redis.stop()
        print(f"celery in {directory}: workers and broker stopped")
        return True
    if action == "status":
        state = "running" if redis.running() else "stopped"
        alive = pool.alive()
        print(f"broker {redis.url(0)}: {state}; workers running: "
              f"{', '.join(alive) or 'none'} of {len(pool.names)} (logs in {pool.directory})")
        return True
    redis.start()
    pool.start()
    print(f"broker {redis.url(0)} and workers {', '.join(pool.names)} running "
          f"(logs in {pool.directory})")
    print("run the jobs' steps on them (the webserver, the daemon, dagster job execute) with:")
    for key, value in {EXECUTOR_ENV: "celery", BROKER_ENV: redis.url(0)}.items():
        print(f"  export {key}={value}")
    return True


def _service(sub, name: str, about: str, directory: str, port: int
             ) -> argparse.ArgumentParser:
    """A local service's command: ``up|down|status``, its directory and its port."""
    parser = sub.add_parser(name, help=about)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=REPO / directory,
                        help=f"its files (default: {directory})")
    parser.add_argument("--port", type=int, default=port)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backtest_assets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help=f"synthetic data, 3 symbols, {DEMO_START}..{DEMO_END}: "
                                "run-all of the default study")
    ra = sub.add_parser("run-all", help="one study end to end: its data days, Gate E-1, "
                                        "Phase 2, blueprints, backtests, walk-forward, "
                                        "promotion and the report (only what is missing or "
                                        "stale)")
    ra.add_argument("--study", required=True, help="the study's name (specs/studies); a new "
                                                   "one is created from --start/--end/...")
    ra.add_argument("--start", type=dt.date.fromisoformat)
    ra.add_argument("--end", type=dt.date.fromisoformat, help="last day included")
    ra.add_argument("--symbols", help="comma-separated (default: the universe's listed "
                    "symbols, not its generated ones)")
    ra.add_argument("--source", choices=["synthetic", "binance"])
    ra.add_argument("--compare-with", help="comma-separated studies its report sets beside "
                                           "it (the report's compare section)")
    forget = sub.add_parser("forget-study", help="delete a study's results (every research "
                                                 "table's rows of it) and its partition")
    forget.add_argument("name")
    cmp = sub.add_parser("compare", help="two studies side by side: E-1 verdicts, Phase-2 "
                                         "survivors, backtests, walk-forward, promotions")
    cmp.add_argument("a", help="study A")
    cmp.add_argument("b", help="study B")
    studied = {
        "quality": sub.add_parser("quality", help="Gate E-1 for every event type of a study"),
        "discover": sub.add_parser("discover", help="Gate E-1 and Phase 2 for every event "
                                                    "type of a study"),
        "backtest": sub.add_parser("backtest", help="catalog a study's blueprints and "
                                                    "backtest them"),
        "walkforward": sub.add_parser("walkforward", help="walk-forward evaluation of a "
                                                          "study's blueprints (grid sweeps, out "
                                                          "of sample, deflated Sharpe, PBO)"),
        "portfolio": sub.add_parser("portfolio", help="a study's portfolios: edge contracts, "
                                                      "weights walked forward, the netted "
                                                      "book beside the equal-weight book"),
        "alpha": sub.add_parser("alpha", help="a study's alpha bundles: liquid universe, "
                                              "signals, the combined model walked forward, "
                                              "expectancy and the edge-candidate export"),
        "report": sub.add_parser("report", help="promotion decisions and the HTML research "
                                                "report of a study"),
    }
    for name in ("backtest", "walkforward"):
        studied[name].add_argument("--blueprints",
                                   help="comma-separated (default: every blueprint)")
    studied["portfolio"].add_argument("--portfolios",
                                      help="comma-separated (default: every one of "
                                           "specs/portfolios)")
    studied["alpha"].add_argument("--models", help="comma-separated (default: every one of "
                                                   "specs/alpha)")
    cert = sub.add_parser("certify", help="the golden certification batch in a fresh "
                                          "instance: every check must pass and the artifacts "
                                          "match golden/")
    cert.add_argument("--workdir", type=Path, help="where to build it (default: a temporary "
                                                   "directory, removed afterwards)")
    cert.add_argument("--golden", type=Path, default=REPO / "golden")
    cert.add_argument("--write", action="store_true", help="pin the fresh artifacts")
    pg = _service(sub, "postgres", "a PostgreSQL cluster on 127.0.0.1 for the Dagster "
                  "instance of real work (dagster_home/postgres)", ".postgres", 5433)
    pg.add_argument("--lake", action="store_true",
                    help="also the catalog database of a DuckLake warehouse (dagster_home/lake)")
    cel = _service(sub, "celery", "a Redis broker and Celery workers on this machine for the "
                   "celery executor (on the lake instance)", ".celery", 6390)
    cel.add_argument("--workers", type=int, default=2)
    for name in ("run", "summary"):
        p = sub.add_parser(name)
        if name == "summary":
            studied["summary"] = p
        p.add_argument("--start", type=dt.date.fromisoformat, required=True)
        p.add_argument("--end", type=dt.date.fromisoformat, required=True,
                       help="last day included")
        if name == "run":
            p.add_argument("--symbols", help="comma-separated (default: the universe's listed "
                           "symbols, not its generated ones)")
            p.add_argument("--source", choices=["synthetic", "binance"])
            p.add_argument("--base-url", help="Binance archive base URL")
            p.add_argument("--market-data-only", action="store_true",
                           help="ingest and bars for exactly [start, end], no features")
            p.add_argument("--rebuild", action="store_true",
                           help="build every key again, even those up to date")
    for p in studied.values():
        p.add_argument("--study", default="default", help="the study (default: default)")
    for p in sub.choices.values():
        p.add_argument("--verbose", action="store_true",
                       help="print tracebacks and Dagster's own log lines")
    return parser


def _next_step(cmd: str, ok: bool, args: argparse.Namespace) -> str:
    """The last line of a command: what to open or run next."""
    me = "python -m backtest_assets"
    if not ok:
        return ("next: read the causes above; rerun with --verbose for the tracebacks, or "
                "'make ui' for the runs' logs")
    if cmd in ("demo", "report", "run-all"):
        path = report_path(getattr(args, "study", None) or "default")
        # the path last and whole, so a double click copies it
        return f"open the research report: {path}" if path else f"next: {me} report"
    window = f"--start {getattr(args, 'start', DEMO_START)} --end {getattr(args, 'end', DEMO_END)}"
    return {
        "run": f"next: {me} discover (Gate E-1 and Phase 2), or 'make ui' to browse the runs"
        if not getattr(args, "market_data_only", False) else f"next: {me} run {window}",
        "summary": f"next: {me} discover, or 'make ui' to browse the assets",
        "quality": f"next: {me} summary {window} (the verdicts), or {me} discover",
        "discover": f"next: {me} summary {window} (the verdicts and survivors), then "
                    f"{me} backtest",
        "backtest": f"next: {me} walkforward (out of sample, deflated Sharpe, PBO)",
        "walkforward": f"next: {me} portfolio (the approved edges as one book)",
        "portfolio": f"next: {me} report (promotion decisions and the HTML report)",
        "alpha": f"next: {me} report, or the edge candidates under data/exports/",
        "postgres": "next: the exports above, then make ui or python -m backtest_assets run"
        if getattr(args, "action", "") == "up" else "next: make ui",
        "celery": "next: the exports above, then make ui INSTANCE=lake"
        if getattr(args, "action", "") == "up" else "next: make ui",
        "certify": "next: git diff golden/ (the re-pinned artifacts)"
        if getattr(args, "write", False) else "next: make test",
    }.get(cmd, "next: 'make ui' to browse the runs")


def _spec_problems(exc: Exception) -> list[str]:
    """Every problem of the specs directory (the first error stops the loader), one each."""
    from backtest_assets.specs import default_specs_dir
    from backtest_assets.specs.registry import lint

    try:
        problems = lint(default_specs_dir()) or [exc]
    except Exception:  # the error being reported is the one to show
        problems = [exc]
    return [f"spec error: {one_line(str(p))}" for p in problems]


def _report_error(exc: Exception, verbose: bool) -> None:
    """One line per root cause, then where the traceback is (printed with --verbose)."""
    import traceback

    from backtest_assets.specs.loader import SpecError

    if isinstance(exc, SpecError):
        lines = _spec_problems(exc)
    else:
        where = exception_location(exc)
        lines = [f"error: {type(exc).__name__}: {one_line(str(exc))}"
                 + (f" ({where})" if where else "")]
    text = "".join(traceback.format_exception(exc))
    if verbose:
        print(text, file=sys.stderr)
    else:
        log = Path(os.environ.get("DAGSTER_HOME", REPO / "dagster_home")) / "logs" / \
            f"cli-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text, encoding="utf-8")
        lines.append(f"traceback: {log} (or rerun with --verbose)")
    print("\n".join(lines), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        ok = _main(parser, args)
    except Exception as exc:  # one line per cause; the traceback in a log or --verbose
        _report_error(exc, args.verbose)
        return 2
    print(_next_step(args.cmd, ok, args))
    return 0 if ok else 1


def _tooling(args: argparse.Namespace) -> bool:
    """The commands about the platform itself: the local Postgres, the local broker and
    workers, the golden batch."""
    if args.cmd == "postgres":
        return postgres(args.action, args.dir, args.port, args.lake)
    if args.cmd == "celery":
        return celery(args.action, args.dir, args.port, args.workers)
    from backtest_assets import certify

    return certify.main(args.workdir, args.golden, args.write) == 0


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """Run ``args.cmd``; True if every run succeeded."""
    verbose = args.verbose
    study = getattr(args, "study", "default")
    if args.cmd == "summary":
        print(summary(args.start, args.end, study))
        return True
    if args.cmd == "compare":
        print(compare_studies(args.a, args.b))
        return True
    if args.cmd == "forget-study":
        deleted = forget_study(args.name)
        print(f"study {args.name} forgotten: {sum(deleted.values()):,} rows deleted from "
              f"{sum(1 for n in deleted.values() if n)} tables; its report files are kept; "
              f"specs/studies/{args.name}.yaml stays (edit or delete it yourself)")
        return True
    if args.cmd in ("quality", "discover"):
        return quality(discover=args.cmd == "discover", verbose=verbose, study=study)
    if args.cmd in ("backtest", "walkforward"):
        names = args.blueprints.split(",") if args.blueprints else None
        return backtest(names, job=f"{args.cmd}_job", verbose=verbose, study=study)
    if args.cmd == "report":
        return report(verbose=verbose, study=study)
    if args.cmd == "portfolio":
        names = args.portfolios.split(",") if args.portfolios else None
        return portfolio(names, verbose=verbose, study=study)
    if args.cmd == "alpha":
        names = args.models.split(",") if args.models else None
        return alpha(names, verbose=verbose, study=study)
    if args.cmd in ("postgres", "celery", "certify"):
        return _tooling(args)
    t0 = time.perf_counter()
    if args.cmd in ("demo", "run-all"):
        demo = args.cmd == "demo"
        ok = run_all("default" if demo else args.study,
                     start=None if demo else args.start, end=None if demo else args.end,
                     symbols=None if demo or not args.symbols else args.symbols.split(","),
                     source=None if demo else args.source,
                     compare_with=None if demo or not args.compare_with
                     else args.compare_with.split(","),
                     resources_config={"market_source": {"config": {
                         "market_source": "synthetic"}}} if demo else None, verbose=verbose)
        print(f"done in {time.perf_counter() - t0:.1f}s: "
              f"{'all runs succeeded' if ok else 'FAILED'}")
        return ok
    if args.end < args.start:
        parser.error("--end is before --start")
    config = {k: v for k, v in (("market_source", args.source), ("base_url", args.base_url)) if v}
    ok = run(args.start, args.end, args.symbols.split(",") if args.symbols else None,
             resources_config={"market_source": {"config": config}} if config else None,
             research=not getattr(args, "market_data_only", False), verbose=verbose,
             rebuild=getattr(args, "rebuild", False))
    print(summary(args.start, args.end))
    print(f"done in {time.perf_counter() - t0:.1f}s: {'all runs succeeded' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    sys.exit(main())
