"""The golden certification batch: a fixed synthetic batch built in a fresh Dagster instance,
every asset check evaluated, and its artifacts compared with those pinned under ``golden/``.

``python -m backtest_assets certify`` materializes seeded synthetic data for 2024-01-01..07 x
BTCUSDT, ETHUSDT, SOLUSDT (ingest, bars, features, labels, events), runs Gate E-1 and Phase 2
for every event type and backtests every blueprint, all over the ``certify`` study
(``specs/studies/certify.yaml``, that week), in a new ``DAGSTER_HOME`` and data root. It
fails, listing them, if a run or an asset check failed, and if an artifact differs from its
pinned copy (a readable diff, floats to a stated tolerance). ``--write`` pins the fresh
artifacts instead (``make golden``).

Pinned artifacts (CSV, so a change reads as a diff in review):

- ``e1_report.csv``: Gate E-1 per event type and symbol (``event_quality_report``);
- ``phase2_fdr.csv``: every Phase-2 hypothesis with its q-value, gates and verdict;
- ``backtest_metrics.csv``: every blueprint's backtest metrics (without the code commit);
- ``check_results.csv``: how many evaluations of each asset check passed or failed.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "golden"
STUDY = "certify"  # specs/studies/certify.yaml: the batch's week and symbols


def _study():
    from backtest_assets.specs import load_registry

    return load_registry(REPO / "specs").studies[STUDY]


BATCH_START, BATCH_END, SYMBOLS = _study().start, _study().end, _study().symbols
SEED = 7
# Floats may differ in the last bits where a parallel sum changes its order; nothing else may.
REL_TOL, ABS_TOL = 1e-9, 1e-12
MAX_LINES = 40  # per artifact, in a diff


@dataclass(frozen=True)
class Artifact:
    """A pinned CSV: a warehouse table, sorted by ``keys``, without ``drop`` columns."""

    file: str
    table: str | None
    keys: tuple[str, ...]
    drop: tuple[str, ...] = ()


ARTIFACTS = (
    Artifact("e1_report.csv", "event_quality_report", ("event_type", "symbol")),
    Artifact("phase2_fdr.csv", "phase2_fdr", ("event_type", "hypothesis_id")),
    # the commit changes with every commit; spec and dataset hashes stay pinned
    Artifact("backtest_metrics.csv", "backtest_metrics", ("blueprint",), ("code_commit",)),
    Artifact("check_results.csv", None, ("asset", "check")),
)
MIN_SAMPLE_LINE, CERT_MIN_SAMPLE = "  min_sample: 30", 5


def prepare(workdir: Path) -> dict[str, str]:
    """A fresh Dagster home, data root and specs (the repository's, with Phase 2's minimum
    sample lowered to 5) under ``workdir``; returns the environment variables that select
    them."""
    workdir.mkdir(parents=True, exist_ok=True)
    for sub in ("dagster_home", "data", "specs"):
        if (workdir / sub).exists():
            raise SystemExit(f"{workdir / sub} exists: the batch needs a fresh directory")
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home)
    specs = workdir / "specs"
    shutil.copytree(REPO / "specs", specs)
    # A week holds 4-9 events per symbol and type: Phase 2 needs a smaller minimum sample to
    # test hypotheses (p, q, gates, survivors) rather than record them all as too small.
    gates = specs / "gates.yaml"
    text = gates.read_text()
    if text.count(MIN_SAMPLE_LINE) != 1:
        raise SystemExit(f"{gates}: expected one line {MIN_SAMPLE_LINE!r} to lower for the "
                         "certification batch")
    gates.write_text(text.replace(MIN_SAMPLE_LINE, f"  min_sample: {CERT_MIN_SAMPLE}  "
                                                   "# certification batch (one week)"))
    return {"DAGSTER_HOME": str(home), "BACKTEST_DATA_ROOT": str(workdir / "data"),
            "BACKTEST_SPECS_DIR": str(specs), "BACKTEST_MARKET_SOURCE": "synthetic"}


def materialize(out: Path) -> list[str]:
    """Build the batch in the instance of ``$DAGSTER_HOME``; write the artifacts to ``out``.

    Returns the problems: failed runs and failed asset checks (empty when all is well).
    """
    import dagster as dg

    from backtest_assets import cli

    instance = dg.DagsterInstance.get()
    config = {"market_source": {"config": {"market_source": "synthetic", "seed": SEED}}}
    ok = cli.run(BATCH_START, BATCH_END, list(SYMBOLS), resources_config=config,
                 instance=instance)
    ok &= cli.quality(instance=instance, study=STUDY)
    ok &= cli.backtest(instance=instance, study=STUDY)
    checks = check_results(instance)
    problems = ([] if ok else ["a run failed (see above)"]) + check_problems(checks)
    out.mkdir(parents=True, exist_ok=True)
    from backtest_assets.resources import WarehouseResource
    from backtest_assets.warehouse import PartitionLayout

    wh = WarehouseResource().warehouse()
    for art in ARTIFACTS:
        frame = checks if art.table is None else wh.read(art.table, PartitionLayout())
        frame.drop(art.drop).sort(art.keys).write_csv(out / art.file)
    return problems


def check_results(instance) -> pl.DataFrame:
    """Every asset check evaluation of every run in ``instance``, counted per check."""
    import dagster as dg

    counts: Counter[tuple[str, str, str, bool]] = Counter()
    for run in instance.get_runs():
        for entry in instance.all_logs(run.run_id,
                                       of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            ev = entry.dagster_event.event_specific_data
            counts[(ev.asset_key.to_user_string(), ev.check_name, ev.severity.value,
                    ev.passed)] += 1
    rows: dict[tuple[str, str], dict] = {}
    for (asset, check, severity, passed), n in counts.items():
        row = rows.setdefault((asset, check), {"asset": asset, "check": check,
                                               "severity": severity, "passed": 0, "failed": 0})
        row["passed" if passed else "failed"] += n
    return pl.DataFrame(list(rows.values()), schema={
        "asset": pl.String, "check": pl.String, "severity": pl.String, "passed": pl.Int64,
        "failed": pl.Int64}).sort("asset", "check")


def check_problems(checks: pl.DataFrame) -> list[str]:
    """One line per asset check with a failed evaluation (``check_results`` rows). A closed
    gate (``cli.VERDICT_CHECKS``) is a research verdict, pinned in check_results.csv and the
    E-1 report, not a failure."""
    from backtest_assets.cli import VERDICT_CHECKS

    failed = checks.filter((pl.col("failed") > 0) & ~pl.col("check").is_in(VERDICT_CHECKS))
    return [f"asset check {r['asset']}:{r['check']} failed {r['failed']} of "
            f"{r['passed'] + r['failed']} evaluations ({r['severity']})"
            for r in failed.iter_rows(named=True)]


def compare(pinned_dir: Path, fresh_dir: Path) -> list[str]:
    """Readable differences between the pinned artifacts and fresh ones (empty: identical,
    floats within ``REL_TOL``/``ABS_TOL``)."""
    out = []
    for art in ARTIFACTS:
        pinned, fresh = pinned_dir / art.file, fresh_dir / art.file
        if not pinned.is_file():
            out.append(f"{art.file}: not pinned in {pinned_dir} (run `make golden`)")
            continue
        lines = compare_csv(art, pinned, fresh)
        out += lines[:MAX_LINES]
        if len(lines) > MAX_LINES:
            out.append(f"{art.file}: ... and {len(lines) - MAX_LINES} more differences")
    return out


def compare_csv(art: Artifact, pinned_path: Path, fresh_path: Path) -> list[str]:
    """Differences of one artifact, row by row (by its key columns), cell by cell."""
    pinned = pl.read_csv(pinned_path, infer_schema=False)
    fresh = pl.read_csv(fresh_path, infer_schema=False)
    floats = {c for c, t in pl.read_csv(fresh_path).schema.items() if t.is_float()}
    name = art.file
    missing = [c for c in pinned.columns if c not in fresh.columns]
    extra = [c for c in fresh.columns if c not in pinned.columns]
    if missing or extra:
        return [f"{name}: columns differ: pinned only {missing}, fresh only {extra}"]
    key = list(art.keys)
    out = []
    p_rows = {tuple(r[k] for k in key): r for r in pinned.iter_rows(named=True)}
    f_rows = {tuple(r[k] for k in key): r for r in fresh.iter_rows(named=True)}
    for k in sorted(p_rows.keys() - f_rows.keys(), key=str):
        out.append(f"{name}: row {_key(key, k)} is pinned but not produced")
    for k in sorted(f_rows.keys() - p_rows.keys(), key=str):
        out.append(f"{name}: row {_key(key, k)} is produced but not pinned")
    for k in sorted(p_rows.keys() & f_rows.keys(), key=str):
        for col in pinned.columns:
            a, b = p_rows[k][col], f_rows[k][col]
            if a == b:
                continue
            if col in floats and _close(a, b):
                continue
            out.append(f"{name}: {_key(key, k)}: {col}: pinned {a} != fresh {b}")
    return out


def _key(cols: Sequence[str], values: tuple) -> str:
    return ", ".join(f"{c}={v}" for c, v in zip(cols, values, strict=True))


def _close(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def main(workdir: Path | None, golden: Path, write: bool) -> int:
    """Build the batch in ``workdir`` (default: a temporary one), then check or pin it."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="certify-")
        workdir = Path(tmp.name)
    try:
        os.environ.update(prepare(workdir))
        fresh = workdir / "artifacts"
        problems = materialize(fresh)
        if problems:
            print("certification FAILED:\n  " + "\n  ".join(problems))
            return 1
        if write:
            golden.mkdir(parents=True, exist_ok=True)
            for art in ARTIFACTS:
                shutil.copy(fresh / art.file, golden / art.file)
            print(f"pinned {len(ARTIFACTS)} artifacts in {golden}")
            return 0
        diff = compare(golden, fresh)
        if diff:
            print(f"certification FAILED: the batch differs from {golden} (floats compared to "
                  f"rel {REL_TOL:g}, abs {ABS_TOL:g}; `make golden` pins a deliberate "
                  "change):\n  " + "\n  ".join(diff))
            return 1
        print(f"certification passed: every run succeeded, every asset check passed (gate "
              f"verdicts aside, pinned in check_results.csv); {len(ARTIFACTS)} artifacts "
              f"match {golden}")
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
