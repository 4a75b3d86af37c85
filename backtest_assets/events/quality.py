"""Gate E-1, event quality: an event type enters discovery only if it fires at a sane rate
and its events join their features and labels (pure polars; no Dagster).

Input contracts: ``events`` in :data:`~backtest_assets.events.detect.EVENT_SCHEMA` (any event
types); ``bars`` the study window's base perp bars (at least ``symbol, ts_open``, one row per
bar); ``features`` with ``symbol, ts_open`` and the feature columns; ``labels`` with
``symbol, ts_open`` and the label columns. An event at ``(symbol, ts)`` joins when the
features row and the labels row with ``ts_open == ts`` exist and hold every requested column
non-null (a NaN counts as missing).

Output contract: :data:`REPORT_SCHEMA`, one row per requested symbol in the given order, then
the pooled row ``symbol == "ALL"``. Only the requested symbols are counted; the pooled row
decides the gate. ``prevalence_per_10k`` passes within ``[min, max]`` (both inclusive) and
``join_rate`` at or above ``join_rate_min``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from backtest_assets.specs.models import E1Gate

POOLED = "ALL"
REPORT_SCHEMA: dict[str, pl.DataType] = {
    "event_type": pl.String(),
    "symbol": pl.String(),
    "bars": pl.Int64(),
    "events": pl.Int64(),
    "prevalence_per_10k": pl.Float64(),
    "joined": pl.Int64(),
    "join_rate": pl.Float64(),
    "prevalence_pass": pl.Boolean(),
    "join_pass": pl.Boolean(),
    "passed": pl.Boolean(),
    "reasons": pl.String(),
}


def event_quality(*, event_type: str, events: pl.DataFrame, bars: pl.DataFrame,
                  features: pl.DataFrame, labels: pl.DataFrame, feature_cols: Sequence[str],
                  label_cols: Sequence[str], gate: E1Gate, symbols: Sequence[str]
                  ) -> pl.DataFrame:
    """Gate E-1 report of one event type, per symbol and pooled.

    Parameters
    ----------
    event_type
        The event type judged; other types in ``events`` are ignored.
    events
        Detected events (:data:`~backtest_assets.events.detect.EVENT_SCHEMA`).
    bars
        The study window's base perp bars: the denominator of the prevalence.
    features, labels
        Point-in-time features and forward labels keyed by ``(symbol, ts_open)``.
    feature_cols
        The features this event type reads (they must be columns of ``features``).
    label_cols
        Every label column (they must be columns of ``labels``).
    gate
        The E-1 thresholds.
    symbols
        The study's symbols: one report row each, and the pool of the ``"ALL"`` row.

    Returns
    -------
    pl.DataFrame
        Exactly :data:`REPORT_SCHEMA`; ``reasons`` is ``"; "``-joined and empty when passed.
    """
    wanted = pl.Series(list(symbols), dtype=pl.String).implode()
    ev = events.filter((pl.col("event_type") == event_type) & pl.col("symbol").is_in(wanted))
    ev = ev.with_columns(
        (_complete(ev, features, feature_cols) & _complete(ev, labels, label_cols)).alias("ok"))
    bar_counts = dict(bars.filter(pl.col("symbol").is_in(wanted))
                      .group_by("symbol").len().iter_rows())
    counts = {s: (n, ok) for s, n, ok in
              ev.group_by("symbol").agg(pl.len(), pl.col("ok").sum()).iter_rows()}
    rows = []
    for symbol in symbols:
        n_events, n_joined = counts.get(symbol, (0, 0))
        rows.append(_judge(event_type, symbol, bar_counts.get(symbol, 0), n_events, n_joined,
                           gate))
    rows.append(_judge(event_type, POOLED, sum(r["bars"] for r in rows),
                       sum(r["events"] for r in rows), sum(r["joined"] for r in rows), gate))
    return pl.DataFrame(rows, schema=REPORT_SCHEMA, orient="row")


def quality_json(report: pl.DataFrame, *, gate: E1Gate, spec_hashes: Mapping[str, str],
                 window: tuple[dt.date, dt.date]) -> dict[str, Any]:
    """The JSON-ready document of ``event_quality_report.json``.

    Parameters
    ----------
    report
        One or more :func:`event_quality` reports concatenated (any number of event types).
    gate
        The E-1 thresholds the report was judged with.
    spec_hashes
        sha256 of each spec file (DESIGN.md, Traceability).
    window
        The study window's first and last day.

    Returns
    -------
    dict
        ``{"gate", "window", "spec_hashes", "event_types": {name: {"passed", "reasons",
        "by_symbol"}}}``; the gate decision and reasons are the pooled row's, ``by_symbol``
        lists every row of the type (pooled last) with floats rounded to 6 decimals. Event
        types and hashes are in sorted order; dump with ``sort_keys=True`` for stable bytes.
    """
    event_types: dict[str, Any] = {}
    for name in sorted(report["event_type"].unique().to_list()):
        rows = report.filter(pl.col("event_type") == name).drop("event_type").to_dicts()
        pooled = [r for r in rows if r["symbol"] == POOLED]
        if len(pooled) != 1:
            raise ValueError(f"report: event type {name!r} needs exactly one {POOLED!r} row, "
                             f"has {len(pooled)}")
        event_types[name] = {
            "passed": pooled[0]["passed"],
            "reasons": pooled[0]["reasons"],
            "by_symbol": [{k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()}
                          for r in rows],
        }
    return {
        "gate": dataclasses.asdict(gate),
        "window": [window[0].isoformat(), window[1].isoformat()],
        "spec_hashes": dict(sorted(spec_hashes.items())),
        "event_types": event_types,
    }


def _complete(events: pl.DataFrame, table: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """Whether each event's (symbol, ts) has a row of ``table`` with ``columns`` all present."""
    present = (
        # The leading True keeps an empty ``columns`` meaning "the row exists".
        table.filter(pl.all_horizontal(
            pl.lit(True), *(pl.col(c).fill_nan(None).is_not_null() for c in columns)))
        .select("symbol", pl.col("ts_open").alias("ts"), pl.lit(True).alias("_present"))
        .unique(["symbol", "ts"])  # a duplicated row must not count an event twice
    )
    return (
        events.select("symbol", "ts")
        .join(present, on=["symbol", "ts"], how="left", maintain_order="left")
        ["_present"].fill_null(False)
    )


def _judge(event_type: str, symbol: str, bars: int, events: int, joined: int, gate: E1Gate
           ) -> dict[str, Any]:
    lo, hi = gate.prevalence_per_10k.min, gate.prevalence_per_10k.max
    prevalence = events * 10_000 / bars if bars else None
    join_rate = joined / events if events else None
    prevalence_fail: str | None = None
    if prevalence is None:
        prevalence_fail = "no bars"
    elif events == 0 and lo > 0:
        prevalence_fail = "no events"
    elif prevalence < lo:
        prevalence_fail = f"prevalence {_fmt(prevalence)} per 10k below {lo:g}"
    elif prevalence > hi:
        prevalence_fail = f"prevalence {_fmt(prevalence)} per 10k above {hi:g}"
    join_fail: str | None = None
    if join_rate is None:
        join_fail = "no events"
    elif join_rate < gate.join_rate_min:
        join_fail = (f"join rate {join_rate:.3f} below {gate.join_rate_min:g} "
                     f"({events - joined} of {events} events lack features or labels)")
    # dict.fromkeys: "no events" failing both checks is said once.
    reasons = dict.fromkeys(r for r in (prevalence_fail, join_fail) if r is not None)
    return {
        "event_type": event_type, "symbol": symbol, "bars": bars, "events": events,
        "prevalence_per_10k": prevalence, "joined": joined, "join_rate": join_rate,
        "prevalence_pass": prevalence_fail is None, "join_pass": join_fail is None,
        "passed": not reasons, "reasons": "; ".join(reasons),
    }


def _fmt(prevalence: float) -> str:
    """One decimal, but enough digits that a tiny non-zero rate does not print as 0.0."""
    return f"{prevalence:.1f}" if prevalence >= 0.1 else f"{prevalence:.2g}"
