"""The edge-candidate export: the schema, deterministic unique ids, a literal Phase 2 survivor
and an alpha signal mapped to their rows, CSV and parquet round trips, refused frames naming
the column, and atomic writes that leave nothing half written."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import polars as pl
import pytest

from backtest_assets.alpha.expectancy import conditional_expectancy
from backtest_assets.alpha.export import (
    CSV_NAME,
    EDGE_CANDIDATE_COLUMNS,
    NULLABLE,
    PARQUET_NAME,
    candidate_id,
    evidence_hash,
    from_alpha,
    from_phase2,
    normalize,
    read,
    validate,
    write,
)
from tests.unit.test_alpha_expectancy import SPREAD, hand

SPEC, DATA = "ab" * 32, "cd" * 32
NAN_ = float("nan")
CREATED = dt.datetime(2024, 5, 1, 14, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
CREATED_UTC = dt.datetime(2024, 5, 1, 12, 30, 0, 123456)

# One phase2_fdr row (the columns of discovery.phase2.fdr, as the asset stores them).
SURVIVOR = {
    "study": "s1", "hypothesis_id": "h_0123456789ab", "event_type": "volatility_shock",
    "rule_template": "mean_reversion", "horizon": "60m", "symbol": "BTCUSDT",
    "family": "volatility_shock|mean_reversion|60m", "n": 42, "n_overlapping": 3,
    "mean": 0.0031, "se": 0.001, "t": 3.1, "p": 0.002, "clusters": 30, "df": 29.0,
    "cluster_lag": 24, "inference": "signflip+cr2", "status": "tested", "q": 0.01,
    "slice_share": 0.8, "slices": 5, "regime_share": 1.0, "regimes": 2, "fdr_method": "bh",
    "discovered": True, "net_1x": 0.0017, "net_1_5x": 0.001, "net_2x": 0.0003,
    "economic": True, "stable": True, "survivor": True, "reasons": "",
}


def phase2_table() -> pl.DataFrame:
    failed = {**SURVIVOR, "hypothesis_id": "h_ffffffffffff", "q": 0.4, "discovered": False,
              "survivor": False, "reasons": "q 0.4 > 0.05"}
    pooled = {**SURVIVOR, "hypothesis_id": "h_aaaaaaaaaaaa", "symbol": "ALL", "n": 90,
              "mean": 0.0024, "t": 4.2, "q": 0.002, "net_1x": 0.001}
    return pl.DataFrame([SURVIVOR, failed, pooled])


def phase2(study: str = "s1", table: pl.DataFrame | None = None) -> pl.DataFrame:
    return from_phase2(phase2_table() if table is None else table, study=study, spec_hash=SPEC,
                       dataset_hash=DATA, created_at=CREATED)


def alpha() -> pl.DataFrame:
    tables = {"reversal": conditional_expectancy(*hand(), buckets=2, horizon=1, cost=0.001),
              "carry": conditional_expectancy(*hand(), buckets=2, horizon=1)}
    ic = {"reversal": {"ic": 0.031, "lo": 0.012, "hi": 0.05, "t": 3.3, "bars": 3,
                       "series": np.array([0.1, NAN_, 0.0])},
          "carry": {"ic": NAN_, "lo": NAN_, "hi": NAN_, "t": NAN_, "bars": 0}}
    return from_alpha(tables, ic, study="s1", horizon="60m", spec_hash=SPEC, dataset_hash=None,
                      created_at=CREATED_UTC)


def test_the_schema_is_exact():
    assert list(EDGE_CANDIDATE_COLUMNS.items()) == [
        ("candidate_id", pl.String()), ("study", pl.String()), ("kind", pl.String()),
        ("name", pl.String()), ("event_type", pl.String()), ("signal", pl.String()),
        ("rule_template", pl.String()), ("horizon", pl.String()), ("symbol", pl.String()),
        ("n", pl.Int64()), ("mean", pl.Float64()), ("net_mean", pl.Float64()),
        ("t_stat", pl.Float64()), ("q_value", pl.Float64()), ("ic", pl.Float64()),
        ("ic_lo", pl.Float64()), ("ic_hi", pl.Float64()), ("evidence_hash", pl.String()),
        ("spec_hash", pl.String()), ("dataset_hash", pl.String()),
        ("created_at", pl.Datetime("us", None)),
    ]
    assert set(NULLABLE) == {"event_type", "signal", "rule_template", "net_mean", "t_stat",
                             "q_value", "ic", "ic_lo", "ic_hi", "dataset_hash"}
    assert dict(phase2().schema) == dict(alpha().schema) == EDGE_CANDIDATE_COLUMNS


def test_ids_are_deterministic_and_unique():
    expected = hashlib.sha256(b"phase2_survivor|h_0123456789ab|s1").hexdigest()[:16]
    assert candidate_id("phase2_survivor", "h_0123456789ab", "s1") == expected
    first, again = phase2(), phase2()
    assert first["candidate_id"].to_list() == again["candidate_id"].to_list()
    assert first["candidate_id"][0] == expected
    other_study = phase2("s2", phase2_table().with_columns(pl.lit("s2").alias("study")))
    assert not set(first["candidate_id"]) & set(other_study["candidate_id"])
    every = normalize([first, alpha(), other_study])
    assert every["candidate_id"].n_unique() == every.height == 6
    alpha_ids = alpha()["candidate_id"].to_list()
    assert alpha_ids == [candidate_id("alpha_signal", f"{s}|q2-q1|60m", "s1")
                         for s in ("carry", "reversal")]


def test_a_phase2_survivor_maps_to_its_normalized_row():
    out = phase2()
    assert out.height == 2  # the failed hypothesis is not a candidate
    assert out.row(0, named=True) == {
        "candidate_id": candidate_id("phase2_survivor", "h_0123456789ab", "s1"),
        "study": "s1", "kind": "phase2_survivor",
        "name": "volatility_shock/mean_reversion/60m/BTCUSDT",
        "event_type": "volatility_shock", "signal": None, "rule_template": "mean_reversion",
        "horizon": "60m", "symbol": "BTCUSDT", "n": 42, "mean": 0.0031, "net_mean": 0.0017,
        "t_stat": 3.1, "q_value": 0.01, "ic": None, "ic_lo": None, "ic_hi": None,
        "evidence_hash": evidence_hash(SURVIVOR), "spec_hash": SPEC, "dataset_hash": DATA,
        "created_at": CREATED_UTC,  # 14:30 at +02:00, as naive UTC
    }
    assert out["symbol"][1] == "ALL"


def test_the_evidence_hash_follows_the_source_row():
    assert len(evidence_hash(SURVIVOR)) == 64
    assert evidence_hash(SURVIVOR) == evidence_hash(dict(reversed(SURVIVOR.items())))
    assert evidence_hash(SURVIVOR) != evidence_hash({**SURVIVOR, "mean": 0.0032})
    assert evidence_hash({**SURVIVOR, "se": NAN_}) == evidence_hash({**SURVIVOR, "se": None})


def test_phase2_without_optional_columns_and_refusals():
    bare = phase2_table().select("hypothesis_id", "event_type", "rule_template", "horizon",
                                 "symbol", "n", "mean")
    out = phase2(table=bare)
    assert out.height == 3  # no survivor column: every row is taken
    assert out["net_mean"].null_count() == out["t_stat"].null_count() == 3
    with pytest.raises(ValueError, match="mean"):
        phase2(table=bare.drop("mean"))
    with pytest.raises(ValueError, match="study"):
        phase2("s2")  # the rows are study s1's
    with pytest.raises(ValueError, match="column n "):
        phase2(table=bare.with_columns(pl.lit(0).alias("n")))


def test_an_alpha_signal_maps_its_spread_and_ic():
    out = alpha()
    assert out["name"].to_list() == ["carry/60m", "reversal/60m"]
    row = out.row(1, named=True)
    spread = np.mean(SPREAD)
    assert {k: row[k] for k in ("kind", "event_type", "signal", "rule_template", "horizon",
                                "symbol", "n", "q_value", "ic", "ic_lo", "ic_hi",
                                "dataset_hash")} == {
        "kind": "alpha_signal", "event_type": None, "signal": "reversal",
        "rule_template": "q2-q1", "horizon": "60m", "symbol": "ALL", "n": 3,
        "q_value": None, "ic": 0.031, "ic_lo": 0.012, "ic_hi": 0.05, "dataset_hash": None}
    assert row["mean"] == pytest.approx(spread, rel=1e-12)
    assert row["net_mean"] == pytest.approx(spread - 0.002, rel=1e-12)
    assert row["t_stat"] is not None and row["t_stat"] > 0
    assert row["created_at"] == CREATED_UTC
    carry = out.row(0, named=True)
    assert carry["ic"] is carry["ic_lo"] is carry["ic_hi"] is None  # NaN IC: none
    assert carry["net_mean"] == pytest.approx(spread, rel=1e-12)  # computed without cost
    tables = {"reversal": conditional_expectancy(*hand(), buckets=2, horizon=1)}
    with pytest.raises(ValueError, match="ghost"):
        from_alpha(tables, {"ghost": {"ic": 0.1}}, study="s1", horizon="60m",
                   spec_hash=SPEC, dataset_hash=None, created_at=CREATED_UTC)
    with pytest.raises(ValueError, match="horizon"):
        from_alpha(tables, study="s1", horizon="1 hour", spec_hash=SPEC, dataset_hash=None,
                   created_at=CREATED_UTC)


def test_normalize_sorts_by_kind_then_name_and_casts():
    p2 = phase2().with_columns(pl.col("n").cast(pl.Int32))
    out = normalize([p2, alpha()])
    assert dict(out.schema) == EDGE_CANDIDATE_COLUMNS
    assert list(zip(out["kind"], out["name"], strict=True)) == [
        ("alpha_signal", "carry/60m"), ("alpha_signal", "reversal/60m"),
        ("phase2_survivor", "volatility_shock/mean_reversion/60m/ALL"),
        ("phase2_survivor", "volatility_shock/mean_reversion/60m/BTCUSDT")]
    assert normalize([]).height == 0
    with pytest.raises(ValueError, match="spec_hash"):
        normalize([alpha().drop("spec_hash")])
    with pytest.raises(ValueError, match="column n "):
        normalize([alpha().with_columns(pl.lit("many").alias("n"))])


def test_csv_and_parquet_round_trip(tmp_path):
    frame = normalize([phase2(), alpha()]).with_columns(
        pl.when(pl.col("name") == "carry/60m").then(pl.lit(1 / 3))
        .otherwise(pl.col("mean")).alias("mean"),
        pl.when(pl.col("name") == "carry/60m").then(pl.lit(-2.5e-17))
        .otherwise(pl.col("t_stat")).alias("t_stat"))
    csv, parquet = write(frame, tmp_path / "out")
    assert (csv.name, parquet.name) == (CSV_NAME, PARQUET_NAME)
    for path in (csv, parquet):
        back = read(path)
        assert back.equals(frame), path.name
    assert read(csv)["created_at"][0] == CREATED_UTC  # microseconds kept
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [CSV_NAME, PARQUET_NAME]


@pytest.mark.parametrize(("change", "column"), [
    (lambda f: f.drop("q_value"), "q_value"),
    (lambda f: f.with_columns(pl.lit(1).alias("extra")), "extra"),
    (lambda f: f.select(["study", *[c for c in f.columns if c != "study"]]), "order"),
    (lambda f: f.with_columns(pl.col("n").cast(pl.Int32)), "column n "),
    (lambda f: f.with_columns(pl.col("created_at").dt.replace_time_zone("UTC")),
     "created_at"),
    (lambda f: f.with_columns(pl.lit(None, pl.String).alias("spec_hash")), "spec_hash"),
    (lambda f: f.with_columns(pl.lit("aaaaaaaaaaaaaaaa").alias("candidate_id")),
     "candidate_id"),
    (lambda f: f.with_columns(pl.lit("XYZ").alias("candidate_id")), "candidate_id"),
    (lambda f: f.with_columns(pl.lit("edge").alias("kind")), "kind"),
    (lambda f: f.with_columns(pl.lit("60").alias("horizon")), "horizon"),
    (lambda f: f.with_columns(pl.lit("short").alias("evidence_hash")), "evidence_hash"),
    (lambda f: f.with_columns(pl.lit(None, pl.String).alias("event_type")), "event_type"),
    (lambda f: f.with_columns(pl.lit(None, pl.String).alias("signal")), "signal"),
])
def test_a_bad_frame_is_refused_naming_the_column(tmp_path, change, column):
    frame = change(normalize([phase2(), alpha()]))
    with pytest.raises(ValueError, match=column):
        validate(frame)
    with pytest.raises(ValueError, match=column):
        write(frame, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("method", ["write_parquet", "write_csv"])
def test_a_failed_write_leaves_the_old_files_and_no_partial_one(tmp_path, monkeypatch,
                                                                 method):
    old = normalize([phase2()])
    csv, parquet = write(old, tmp_path)
    before = (csv.read_bytes(), parquet.read_bytes())

    def broken(self, file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, method, broken)
    with pytest.raises(OSError, match="disk full"):
        write(normalize([phase2(), alpha()]), tmp_path)
    assert (csv.read_bytes(), parquet.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CSV_NAME, PARQUET_NAME]
    monkeypatch.undo()
    assert read(parquet).equals(old)


def test_a_failed_first_write_leaves_no_file_at_all(tmp_path, monkeypatch):
    def broken(self, file, *args, **kwargs):
        with open(file, "w") as handle:
            handle.write("candidate_id,stu")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write(normalize([phase2()]), tmp_path / "new")
    assert list((tmp_path / "new").iterdir()) == []


def test_a_signal_without_any_spread_bar_is_no_candidate():
    """Fewer members than buckets at every bar (e.g. a 3-symbol study, 5 buckets): no
    evidence, so no row, and the other signals still export."""
    rng = np.random.default_rng(3)
    member = np.ones((40, 3), bool)
    label = rng.normal(size=(40, 3))
    empty = conditional_expectancy(rng.normal(size=(40, 3)), label, member, buckets=5,
                                   horizon=1)
    full = conditional_expectancy(rng.normal(size=(40, 3)), label, member, buckets=2,
                                  horizon=1)
    out = from_alpha({"few": empty, "two": full}, study="s", horizon="5m", spec_hash="h",
                     dataset_hash=None, created_at=dt.datetime(2024, 1, 1))
    assert out["signal"].to_list() == ["two"]
