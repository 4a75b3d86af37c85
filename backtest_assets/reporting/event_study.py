"""Event study: the mean direction-signed return path around events (pure polars).

Frame contract
--------------
Inputs (naive ``Datetime("us")`` UTC timestamps):

- ``bars``: ``symbol`` (String), ``ts_open`` (Datetime), ``open`` (Float64), one row per bar
  of a regular grid per symbol, unique ``(symbol, ts_open)``; bars may be missing (gaps).
  Other columns (``close``, ...) are ignored.
- ``events``: ``event_type`` (String), ``symbol`` (String), ``ts`` (the event bar's
  ``ts_open``), ``direction`` (+1 long / -1 short). Other columns are ignored; events with a
  null or 0 direction are dropped (there is no side to sign their path with).

Output: one row per ``(event_type, offset)``, sorted by both, ``offset`` running from
``-before`` to ``after`` for every event type present:

========== ======= ===========================================================================
column     dtype   meaning
========== ======= ===========================================================================
event_type String  the event type
offset     Int64   k, in bars from the entry bar t+1
mean       Float64 mean over events of ``v_k`` (below); null when ``n`` is 0
se         Float64 ``std(v_k, ddof=1) / sqrt(n)``; null when ``n`` < 2
lo         Float64 ``mean - z * se``
hi         Float64 ``mean + z * se``
n          Int64   events with a value at this offset
========== ======= ===========================================================================

Formula (DESIGN.md, Labels and entries): an event at bar t is acted on at the open of bar
t+1, so the path of one event is ``v_k = direction * ln(open[t+1+k] / open[t+1])``:
``v_0 = 0`` by definition, ``k < 0`` is the run-up before the entry and ``k > 0`` the move
after it. Bars are looked up by exact time on the symbol's grid, ``ts_open(t+1+k) = ts +
(1 + k) * step``, ``step`` the symbol's modal bar spacing (the most frequent difference of
consecutive ``ts_open``; a tie takes the shorter). A missing bar is not skipped over: ``v_k``
is null for that event (and every ``v_k`` is null when bar t+1 is missing), as is any ``v_k``
whose opens are not positive.
"""

from __future__ import annotations

import polars as pl

from backtest_assets.core.frames import TS

EVENT_STUDY_SCHEMA: dict[str, pl.DataType] = {
    "event_type": pl.String(),
    "offset": pl.Int64(),
    "mean": pl.Float64(),
    "se": pl.Float64(),
    "lo": pl.Float64(),
    "hi": pl.Float64(),
    "n": pl.Int64(),
}


def _modal_step(bars: pl.LazyFrame) -> pl.LazyFrame:
    """``symbol``, ``step`` (Int64 microseconds): the most frequent positive bar spacing."""
    return (
        bars.sort("symbol", "t")
        .with_columns(step=pl.col("t").diff().over("symbol"))
        .filter(pl.col("step") > 0)
        .group_by("symbol", "step").len()
        # most frequent first; a tie takes the shorter spacing so the result is deterministic
        .sort("symbol", "len", "step", descending=[False, True, False])
        .group_by("symbol", maintain_order=True).first()
        .select("symbol", "step")
    )


def event_study(bars: pl.DataFrame, events: pl.DataFrame, *, before: int, after: int,
                z: float = 1.96) -> pl.DataFrame:
    """Mean signed cumulative log return at offsets ``-before..after`` around each event type.

    Parameters
    ----------
    bars : polars.DataFrame
        ``symbol``, ``ts_open``, ``open`` (module docstring); unique ``(symbol, ts_open)``.
    events : polars.DataFrame
        ``event_type``, ``symbol``, ``ts`` (event bar's ``ts_open``), ``direction`` (+1 / -1).
    before : int
        Bars before the entry to show (>= 0).
    after : int
        Bars after the entry to show (>= 0).
    z : float
        Normal quantile of the band ``mean +- z * se`` (1.96: a 95% interval).

    Returns
    -------
    polars.DataFrame
        ``EVENT_STUDY_SCHEMA`` rows, one per ``(event_type, offset)``, sorted by both; empty
        (with those columns) when there are no events.

    Raises
    ------
    ValueError
        On a negative ``before`` / ``after`` or duplicated ``(symbol, ts_open)`` bars.
    """
    if before < 0 or after < 0:
        raise ValueError(f"before ({before}) and after ({after}) must be >= 0")
    if bars.select(pl.struct("symbol", "ts_open").is_duplicated().any()).item():
        # a duplicated bar would join twice and count its event twice
        raise ValueError("bars: (symbol, ts_open) is not unique")
    ev = events.lazy().filter(pl.col("direction").is_not_null() & (pl.col("direction") != 0))
    if ev.select(pl.len()).collect().item() == 0:
        return pl.DataFrame(schema=EVENT_STUDY_SCHEMA)

    # Integer microseconds: exact equality joins, and offset * step is plain integer math.
    opens = bars.lazy().select("symbol", t=pl.col("ts_open").cast(TS).dt.epoch("us"),
                               open=pl.col("open").cast(pl.Float64))
    entries = (
        ev.select("event_type", "symbol", direction=pl.col("direction").cast(pl.Float64),
                  t=pl.col("ts").cast(TS).dt.epoch("us"))
        .join(_modal_step(opens), on="symbol", how="left")
        .with_columns(t=pl.col("t") + pl.col("step"))  # the entry bar t+1
        .join(opens.rename({"open": "entry_open"}), on=["symbol", "t"], how="left")
    )
    offsets = pl.LazyFrame({"offset": list(range(-before, after + 1))},
                           schema={"offset": pl.Int64()})
    entry, at_k = pl.col("entry_open"), pl.col("open")
    paths = (
        entries.join(offsets, how="cross")
        .with_columns(t=pl.col("t") + pl.col("offset") * pl.col("step"))
        .join(opens, on=["symbol", "t"], how="left")
        .select(
            "event_type", "offset",
            # k = 0 is exactly 0 (not log(x / x) rounding) whenever the entry bar exists
            v=pl.when((pl.col("offset") == 0) & (entry > 0)).then(pl.lit(0.0))
            .when((entry > 0) & (at_k > 0)).then(pl.col("direction") * (at_k / entry).log()),
        )
    )
    se = pl.col("std") / pl.col("n").sqrt()
    return (
        paths.group_by("event_type", "offset")
        .agg(mean=pl.col("v").mean(), std=pl.col("v").std(ddof=1),
             n=pl.col("v").count().cast(pl.Int64))
        .with_columns(se=se)
        .with_columns(lo=pl.col("mean") - z * pl.col("se"), hi=pl.col("mean") + z * pl.col("se"))
        .select(list(EVENT_STUDY_SCHEMA))
        .sort("event_type", "offset")
        .collect()
        .cast(EVENT_STUDY_SCHEMA)
    )
