"""Gate E-1 on constructed cases: counts, rates, pass/fail and the reason text."""

import datetime as dt
import json

import polars as pl
import pytest

from backtest_assets.events import EVENT_SCHEMA, REPORT_SCHEMA, event_quality, quality_json
from backtest_assets.schemas.research import E1_REPORT
from backtest_assets.specs import load_registry
from backtest_assets.specs.models import E1Gate, Range

T0 = dt.datetime(2024, 1, 1)
FIVE = dt.timedelta(minutes=5)
GATE = E1Gate(prevalence_per_10k=Range(min=1, max=500), join_rate_min=0.99)
FEATURES = ["f1", "f2"]
LABELS = ["fwd_ret_5m", "fwd_ret_15m", "fwd_ret_60m"]


def bars(**n_by_symbol: int) -> pl.DataFrame:
    return pl.concat([
        pl.DataFrame({"symbol": symbol, "ts_open": pl.datetime_range(
            T0, T0 + FIVE * (n - 1), "5m", time_unit="us", eager=True)})
        for symbol, n in n_by_symbol.items()])


def complete(b: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    """A features or labels frame with every column present on every bar."""
    return b.with_columns(pl.lit(0.1).alias(c) for c in cols)


def events(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    """rows: (event_type, symbol, bar index)."""
    return pl.DataFrame(
        [(e, s, T0 + FIVE * i, T0 + FIVE * (i + 1), 3.0, 1) for e, s, i in rows],
        schema=EVENT_SCHEMA, orient="row")


def judge(ev: pl.DataFrame, b: pl.DataFrame, *, features=None, labels=None,
          symbols=("BTCUSDT",), event_type="ev") -> pl.DataFrame:
    out = event_quality(
        event_type=event_type, events=ev, bars=b,
        features=complete(b, FEATURES) if features is None else features,
        labels=complete(b, LABELS) if labels is None else labels,
        feature_cols=FEATURES, label_cols=LABELS, gate=GATE, symbols=list(symbols))
    assert list(out.schema.items()) == list(REPORT_SCHEMA.items())
    assert out["symbol"].to_list() == [*symbols, "ALL"]
    # the model the asset's blocking schema check applies (the asset adds the study)
    E1_REPORT.validate(out.with_columns(study=pl.lit("default")))
    return out


def pooled(report: pl.DataFrame) -> dict:
    return report.filter(pl.col("symbol") == "ALL").row(0, named=True)


def test_too_rare_fails_prevalence():
    # 1 event in 20,000 bars: 0.5 per 10k, below the minimum of 1.
    row = pooled(judge(events([("ev", "BTCUSDT", 7)]), bars(BTCUSDT=20_000)))
    assert (row["bars"], row["events"], row["joined"]) == (20_000, 1, 1)
    assert row["prevalence_per_10k"] == pytest.approx(0.5)
    assert (row["prevalence_pass"], row["join_pass"], row["passed"]) == (False, True, False)
    assert row["reasons"] == "prevalence 0.5 per 10k below 1"


def test_too_often_fails_prevalence():
    # 60 events in 1,000 bars: 600 per 10k, above the maximum of 500.
    row = pooled(judge(events([("ev", "BTCUSDT", i) for i in range(0, 600, 10)]),
                       bars(BTCUSDT=1_000)))
    assert row["prevalence_per_10k"] == pytest.approx(600.0)
    assert (row["prevalence_pass"], row["passed"]) == (False, False)
    assert row["reasons"] == "prevalence 600.0 per 10k above 500"


def test_a_tiny_prevalence_is_not_printed_as_zero():
    row = pooled(judge(events([("ev", "BTCUSDT", 7)]), bars(BTCUSDT=500_000)))
    assert row["reasons"] == "prevalence 0.02 per 10k below 1"


def test_events_without_features_or_labels_fail_the_join():
    b = bars(BTCUSDT=1_000)
    ev = events([("ev", "BTCUSDT", i) for i in range(0, 100, 10)])  # 10 events: 100 per 10k
    features = complete(b, FEATURES).filter(pl.col("ts_open") != T0 + FIVE * 10).with_columns(
        # bar 10 has no features row; bar 20 a null feature; bar 25 (no event) a null too
        f2=pl.when(pl.col("ts_open").is_in([T0 + FIVE * 20, T0 + FIVE * 25]))
        .then(None).otherwise("f2"))
    labels = complete(b, LABELS).with_columns(  # bar 30: a null label (the last horizon)
        fwd_ret_60m=pl.when(pl.col("ts_open") == T0 + FIVE * 30).then(None)
        .otherwise("fwd_ret_60m"))
    row = pooled(judge(ev, b, features=features, labels=labels))
    assert (row["events"], row["joined"]) == (10, 7)
    assert row["join_rate"] == pytest.approx(0.7)
    assert (row["prevalence_pass"], row["join_pass"], row["passed"]) == (True, False, False)
    assert row["reasons"] == "join rate 0.700 below 0.99 (3 of 10 events lack features or labels)"


def test_a_nan_feature_does_not_join_and_a_duplicated_row_counts_once():
    b = bars(BTCUSDT=1_000)
    ev = events([("ev", "BTCUSDT", 10), ("ev", "BTCUSDT", 20)])
    features = complete(b, FEATURES).with_columns(
        f1=pl.when(pl.col("ts_open") == T0 + FIVE * 10).then(float("nan")).otherwise("f1"))
    labels = pl.concat([complete(b, LABELS), complete(b, LABELS).slice(20, 1)])
    row = pooled(judge(ev, b, features=features, labels=labels))
    assert (row["events"], row["joined"], row["join_rate"]) == (2, 1, 0.5)


def test_a_passing_event_type_has_no_reasons():
    row = pooled(judge(events([("ev", "BTCUSDT", i) for i in range(0, 1_000, 100)]),
                       bars(BTCUSDT=1_000)))
    assert row == {"event_type": "ev", "symbol": "ALL", "bars": 1_000, "events": 10,
                   "prevalence_per_10k": 100.0, "joined": 10, "join_rate": 1.0,
                   "prevalence_pass": True, "join_pass": True, "passed": True, "reasons": ""}


def test_boundaries_are_inclusive():
    # 1 event in 10,000 bars is exactly the minimum; 99 of 100 joined exactly the join rate.
    assert pooled(judge(events([("ev", "BTCUSDT", 3)]), bars(BTCUSDT=10_000)))["passed"]
    b = bars(BTCUSDT=2_000)
    ev = events([("ev", "BTCUSDT", i) for i in range(100)])  # 500 per 10k: the maximum
    features = complete(b, FEATURES).filter(pl.col("ts_open") != T0)
    row = pooled(judge(ev, b, features=features))
    assert (row["prevalence_per_10k"], row["join_rate"], row["passed"]) == (500.0, 0.99, True)


def test_no_events_at_all():
    row = pooled(judge(events([]), bars(BTCUSDT=1_000)))
    assert (row["events"], row["prevalence_per_10k"], row["joined"], row["join_rate"]) == \
        (0, 0.0, 0, None)
    assert (row["prevalence_pass"], row["join_pass"], row["passed"]) == (False, False, False)
    assert row["reasons"] == "no events"


def test_no_events_with_a_zero_minimum_passes_prevalence_but_not_the_join():
    gate = E1Gate(prevalence_per_10k=Range(min=0, max=500), join_rate_min=0.99)
    b = bars(BTCUSDT=100)
    row = event_quality(event_type="ev", events=events([]), bars=b,
                        features=complete(b, FEATURES), labels=complete(b, LABELS),
                        feature_cols=FEATURES, label_cols=LABELS, gate=gate,
                        symbols=["BTCUSDT"]).row(-1, named=True)
    assert (row["prevalence_pass"], row["join_pass"], row["reasons"]) == \
        (True, False, "no events")


def test_per_symbol_rows_inform_and_the_pooled_row_decides():
    b = bars(BTCUSDT=1_000, ETHUSDT=1_000, SOLUSDT=1_000)
    ev = events(
        [("ev", "BTCUSDT", i) for i in range(60)]     # 600 per 10k: too often alone
        + [("other", "ETHUSDT", i) for i in range(5)]  # another event type: ignored
        + [("ev", "SOLUSDT", i) for i in range(50)]    # SOL is not in the study: ignored
    )
    report = judge(ev, b, symbols=("BTCUSDT", "ETHUSDT"))
    rows = {r["symbol"]: r for r in report.iter_rows(named=True)}
    assert (rows["BTCUSDT"]["passed"], rows["BTCUSDT"]["reasons"]) == \
        (False, "prevalence 600.0 per 10k above 500")
    assert (rows["ETHUSDT"]["events"], rows["ETHUSDT"]["passed"],
            rows["ETHUSDT"]["reasons"]) == (0, False, "no events")
    assert (rows["ALL"]["bars"], rows["ALL"]["events"], rows["ALL"]["joined"]) == \
        (2_000, 60, 60)
    assert (rows["ALL"]["prevalence_per_10k"], rows["ALL"]["passed"]) == (300.0, True)


def test_a_study_symbol_without_bars_has_no_prevalence():
    report = judge(events([("ev", "BTCUSDT", 1)]), bars(BTCUSDT=1_000),
                   symbols=("BTCUSDT", "ETHUSDT"))
    eth = report.row(1, named=True)
    assert (eth["bars"], eth["prevalence_per_10k"], eth["prevalence_pass"]) == (0, None, False)
    assert eth["reasons"] == "no bars; no events"


def test_quality_json_round_trips_and_carries_the_hashes():
    b = bars(BTCUSDT=3_000)
    features = complete(b, FEATURES).filter(pl.col("ts_open") != T0)
    good = judge(events([("good", "BTCUSDT", i) for i in range(1, 4)]), b,
                 features=features, event_type="good")
    bad = judge(events([("bad", "BTCUSDT", i) for i in range(3)]), b,
                features=features, event_type="bad")
    hashes = load_registry().spec_hashes
    doc = quality_json(pl.concat([good, bad]), gate=GATE, spec_hashes=hashes,
                       window=(dt.date(2024, 1, 1), dt.date(2024, 1, 31)))
    assert json.loads(json.dumps(doc, sort_keys=True)) == doc
    assert doc["spec_hashes"] == hashes and "events/oi_flush.yaml" in doc["spec_hashes"]
    assert doc["window"] == ["2024-01-01", "2024-01-31"]
    assert doc["gate"] == {"prevalence_per_10k": {"min": 1, "max": 500}, "join_rate_min": 0.99}
    assert list(doc["event_types"]) == ["bad", "good"]
    assert doc["event_types"]["good"]["passed"] is True
    assert doc["event_types"]["bad"]["passed"] is False
    assert doc["event_types"]["bad"]["reasons"] == \
        "join rate 0.667 below 0.99 (1 of 3 events lack features or labels)"
    by_symbol = doc["event_types"]["bad"]["by_symbol"]
    assert [r["symbol"] for r in by_symbol] == ["BTCUSDT", "ALL"]
    assert by_symbol[-1]["join_rate"] == 0.666667
    assert by_symbol[-1]["prevalence_per_10k"] == 10.0


def test_quality_json_needs_a_pooled_row():
    report = judge(events([("ev", "BTCUSDT", 1)]), bars(BTCUSDT=1_000))
    with pytest.raises(ValueError, match="exactly one 'ALL' row"):
        quality_json(report.head(1), gate=GATE, spec_hashes={},
                     window=(dt.date(2024, 1, 1), dt.date(2024, 1, 1)))
