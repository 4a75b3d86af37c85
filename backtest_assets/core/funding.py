"""Funding prints: each symbol's interval, the prints missing from it and the runs of one
repeated rate, and the strictness a perp backtest applies to them (pure; no Dagster).

Frame contract
--------------
``prints``: ``symbol`` (String) and ``ts`` (naive UTC Datetime: when the rate was fixed);
:func:`constant_runs` also reads ``funding_rate`` (Float64). Other columns are ignored and
rows may come in any order. A window is a ``(symbol, start, end)`` triple, ``start``
inclusive, ``end`` exclusive, naive UTC; a symbol may have several (the days of an ingest
run) and prints outside every window still inform its interval.

Rules
-----
Minutes. Each print's time is rounded to the nearest minute first: Binance fixes funding on
the hour but stamps some prints a few milliseconds late (``08:00:00.004``) or early. Two
prints in one minute count once.

Interval. Between two consecutive prints of a symbol lies a spacing. The interval in force
over a spacing is the modal spacing among it and the ``NEIGHBOURS`` (3) spacings either
side: the spacing itself when it is one of the modes (a regular spacing), otherwise the
smallest mode (the spacing is a gap spanning missing prints). A regime outvotes its
neighbour at its own edge, so the interval may change over time (8 h -> 4 h) as long as each
regime lasts more than ``NEIGHBOURS`` spacings. An interval that is not one of Binance's
(1, 2, 4 or 8 h: the ``funding_interval_hours`` the archive publishes) becomes the longest of
them that divides it, so 16 h spacings as the norm mean every other 8-hourly print is
missing; an interval none of them divides (say 90 minutes) is kept as it is.

Expected and missing times. Between two consecutive prints, the times one interval apart
after the first and before the next are expected. Before a symbol's first print and after
its last the grid extends through the window with the interval of the first (last)
spacing. A print is missing at an expected time inside a window that has no print.

Fewer than two prints. The data cannot tell the interval: Binance USD-M's usual 8 h
(``DEFAULT_INTERVAL``) is assumed, on the grid through the symbol's one print or, with none,
on 00:00, 08:00 and 16:00 UTC; every time of that grid inside the window is expected (so a
window without any print has every one of them missing).

What it cannot tell. A gap right where the interval changes reads as the change happening
at the other end of the gap; gaps in most of the spacings around one read as a longer
interval (at most 8 h, by the rule above).

Constant runs. Consecutive prints of a symbol inside its windows with exactly the same rate
form a run (a missing print does not end one: only prints are seen). Runs of more than
``max_prints`` prints are reported; real funding sits at exactly the base rate (0.01 %) for
long stretches, so such a run is a flag, refused only when the policy says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

BINANCE_INTERVALS = (60, 120, 240, 480)  # minutes: funding_interval_hours 1, 2, 4, 8
DEFAULT_INTERVAL = 480  # minutes: Binance USD-M's usual 8 h, when the prints cannot tell
NEIGHBOURS = 3  # spacings either side of a spacing that vote on its interval
MAX_CONSTANT_PRINTS = 21  # one week of 8-hourly prints
SHOWN = 3  # times named per symbol in a message

_MINUTE_US = 60_000_000
MISSING_SCHEMA = {"symbol": pl.String, "ts": pl.Datetime("us"), "interval_minutes": pl.Int64}
INTERVAL_SCHEMA = {"symbol": pl.String, "start": pl.Datetime("us"), "end": pl.Datetime("us"),
                   "interval_minutes": pl.Int64}
CONSTANT_SCHEMA = {"symbol": pl.String, "funding_rate": pl.Float64,
                   "first_ts": pl.Datetime("us"), "last_ts": pl.Datetime("us"),
                   "prints": pl.Int64}

Window = tuple[str, dt.datetime, dt.datetime]


@dataclass(frozen=True, kw_only=True)
class FundingPolicy:
    """What a perp backtest accepts of its funding prints.

    ``allow_missing``: run over missing prints (as no payment) instead of refusing;
    ``allow_constant``: run over a rate repeated for more than ``constant_max_prints``
    consecutive prints instead of refusing.
    """

    allow_missing: bool = False
    allow_constant: bool = True
    constant_max_prints: int = MAX_CONSTANT_PRINTS


# The default: no missing print, constant runs counted but not refused.
DEFAULT_POLICY = FundingPolicy()


@dataclass(frozen=True)
class FundingAudit:
    """The missing prints (``MISSING_SCHEMA``) and the constant runs longer than the
    policy's limit (``CONSTANT_SCHEMA``) of a backtest's funding."""

    missing: pl.DataFrame
    constant: pl.DataFrame

    @classmethod
    def empty(cls) -> FundingAudit:
        """Nothing expected and nothing found: a backtest without funding (spot)."""
        return cls(pl.DataFrame(schema=MISSING_SCHEMA), pl.DataFrame(schema=CONSTANT_SCHEMA))


def _epoch_minutes(d: dt.datetime) -> int:
    """Whole minutes since the epoch at or after ``d`` (naive UTC)."""
    us = (d - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    return -(-us // _MINUTE_US)


def _print_minutes(prints: pl.DataFrame) -> dict[str, np.ndarray]:
    """Each symbol's print times rounded to the minute, sorted and unique."""
    us = prints.select(pl.col("symbol").cast(pl.String),
                       pl.col("ts").cast(pl.Datetime("us")).dt.epoch("us").alias("us"))
    out = {}
    for (symbol,), rows in us.group_by("symbol"):
        out[symbol] = np.unique((rows["us"].to_numpy() + _MINUTE_US // 2) // _MINUTE_US)
    return out


def _snap(minutes: int) -> int:
    if minutes in BINANCE_INTERVALS:
        return minutes
    divisors = [i for i in BINANCE_INTERVALS if minutes % i == 0]
    return max(divisors) if divisors else minutes


def spacing_intervals(t: np.ndarray) -> np.ndarray:
    """The interval in force over each spacing of sorted, unique print minutes ``t``
    (module docstring): ``len(t) - 1`` values in minutes."""
    d = np.diff(t)
    out = np.empty(len(d), dtype=np.int64)
    for i in range(len(d)):
        values, counts = np.unique(d[max(0, i - NEIGHBOURS):i + NEIGHBOURS + 1],
                                   return_counts=True)
        modes = values[counts == counts.max()]
        out[i] = _snap(int(d[i] if d[i] in modes else modes.min()))
    return out


def _to_datetimes(minutes: np.ndarray) -> pl.Series:
    return pl.Series(np.asarray(minutes, dtype=np.int64) * _MINUTE_US).cast(pl.Datetime("us"))


def funding_intervals(prints: pl.DataFrame) -> pl.DataFrame:
    """Each symbol's intervals as the data shows them: one row per stretch of spacings with
    one interval (``INTERVAL_SCHEMA``: from the print that opens it to the print that ends
    it), in symbol and time order. A symbol with fewer than two prints has no row."""
    rows = []
    for symbol, t in sorted(_print_minutes(prints).items()):
        if len(t) < 2:
            continue
        iv = spacing_intervals(t)
        cut = np.flatnonzero(np.diff(iv)) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, len(iv)], strict=True):
            rows.append((symbol, int(t[a]), int(t[b]), int(iv[a])))
    if not rows:
        return pl.DataFrame(schema=INTERVAL_SCHEMA)
    symbols, starts, ends, ivs = zip(*rows, strict=True)
    return pl.DataFrame({"symbol": list(symbols), "start": _to_datetimes(np.array(starts)),
                         "end": _to_datetimes(np.array(ends)), "interval_minutes": list(ivs)},
                        schema=INTERVAL_SCHEMA)


def _expected_missing(t: np.ndarray, iv: np.ndarray, a: int, b: int
                      ) -> Iterable[tuple[np.ndarray, int]]:
    """(times, interval) expected in minutes [a, b) without a print, for prints ``t`` and
    their spacings' intervals ``iv``."""
    if not len(t):
        yield np.arange(-(-a // DEFAULT_INTERVAL) * DEFAULT_INTERVAL, b, DEFAULT_INTERVAL), \
            DEFAULT_INTERVAL
        return
    head = int(iv[0]) if len(iv) else DEFAULT_INTERVAL
    tail = int(iv[-1]) if len(iv) else DEFAULT_INTERVAL
    if a < min(b, t[0]):
        yield np.arange(t[0] - (t[0] - a) // head * head, min(b, t[0]), head), head
    steps = np.maximum((np.diff(t) - 1) // np.maximum(iv, 1), 0)
    for i in np.flatnonzero((steps > 0) & (t[:-1] < b) & (t[1:] > a)):
        times = t[i] + iv[i] * np.arange(1, steps[i] + 1)
        yield times[(times >= a) & (times < b)], int(iv[i])
    lo = max(a, t[-1] + 1)
    if lo < b:
        yield np.arange(t[-1] + -(-(lo - t[-1]) // tail) * tail, b, tail), tail


def missing_prints(prints: pl.DataFrame, windows: Sequence[Window]) -> pl.DataFrame:
    """The funding times expected inside ``windows`` that have no print (module docstring).

    Parameters
    ----------
    prints : pl.DataFrame
        ``symbol``, ``ts`` of every print known (prints outside the windows inform the
        interval only).
    windows : sequence of (symbol, start, end)
        Where prints are expected, ``end`` exclusive.

    Returns
    -------
    pl.DataFrame
        ``MISSING_SCHEMA``: symbol, the expected time (on the minute) and the interval it
        was expected at; sorted by symbol and time, each time once.
    """
    minutes = _print_minutes(prints)
    intervals = {s: spacing_intervals(t) for s, t in minutes.items()}
    empty = np.empty(0, dtype=np.int64)
    symbols, times, ivs = [], [], []
    for symbol, start, end in windows:
        t = minutes.get(symbol, empty)
        for found, iv in _expected_missing(t, intervals.get(symbol, empty),
                                           _epoch_minutes(start), _epoch_minutes(end)):
            symbols += [symbol] * len(found)
            times.append(found)
            ivs += [iv] * len(found)
    if not symbols:
        return pl.DataFrame(schema=MISSING_SCHEMA)
    return (pl.DataFrame({"symbol": symbols, "ts": _to_datetimes(np.concatenate(times)),
                          "interval_minutes": ivs}, schema=MISSING_SCHEMA)
            .unique(["symbol", "ts"]).sort("symbol", "ts"))


def _in_windows(prints: pl.DataFrame, windows: Sequence[Window]) -> pl.DataFrame:
    """The rows of ``prints`` inside a window of their symbol (each once)."""
    if not windows:
        return prints.clear()
    w = pl.DataFrame(list(windows), schema={"symbol": pl.String, "_start": pl.Datetime("us"),
                                            "_end": pl.Datetime("us")}, orient="row")
    f = prints.with_columns(pl.col("symbol").cast(pl.String),
                            pl.col("ts").cast(pl.Datetime("us"))).with_row_index("_row")
    inside = f.join(w, on="symbol").filter((pl.col("ts") >= pl.col("_start"))
                                           & (pl.col("ts") < pl.col("_end")))
    return f.filter(pl.col("_row").is_in(inside["_row"].implode())).drop("_row")


def constant_runs(prints: pl.DataFrame, windows: Sequence[Window], *, max_prints: int
                  ) -> pl.DataFrame:
    """Runs of more than ``max_prints`` consecutive prints of one symbol inside its windows
    with exactly the same ``funding_rate`` (``CONSTANT_SCHEMA``, by symbol and time)."""
    f = _in_windows(prints, windows).sort("symbol", "ts")
    new = ((pl.col("symbol") != pl.col("symbol").shift(1))
           | (pl.col("funding_rate") != pl.col("funding_rate").shift(1))).fill_null(True)
    runs = (f.with_columns(new.cum_sum().alias("_run"))
            .group_by("_run", maintain_order=True)
            .agg(pl.col("symbol").first(), pl.col("funding_rate").first(),
                 pl.col("ts").min().alias("first_ts"), pl.col("ts").max().alias("last_ts"),
                 pl.len().cast(pl.Int64).alias("prints")))
    return runs.filter(pl.col("prints") > max_prints).select(list(CONSTANT_SCHEMA)).cast(
        CONSTANT_SCHEMA)


def audit_funding(prints: pl.DataFrame, windows: Sequence[Window], *,
                  max_prints: int = MAX_CONSTANT_PRINTS) -> FundingAudit:
    """:func:`missing_prints` and :func:`constant_runs` of ``prints`` in ``windows``."""
    return FundingAudit(missing_prints(prints, windows),
                        constant_runs(prints, windows, max_prints=max_prints))


def _when(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def describe_missing(missing: pl.DataFrame, shown: int = SHOWN) -> str:
    """``SYMBOL n missing (first times, and k more)`` per symbol of a ``MISSING_SCHEMA``
    frame, joined by ``; ``."""
    parts = []
    for (symbol,), rows in missing.sort("symbol", "ts").group_by("symbol",
                                                                 maintain_order=True):
        times = ", ".join(_when(t) for t in rows["ts"].head(shown))
        more = f", and {rows.height - shown} more" if rows.height > shown else ""
        parts.append(f"{symbol} {rows.height} missing ({times}{more})")
    return "; ".join(parts)


def describe_constant(runs: pl.DataFrame, shown: int = SHOWN) -> str:
    """``SYMBOL at RATE for n prints from FIRST to LAST`` of the first ``shown`` runs."""
    text = "; ".join(f"{r['symbol']} at {r['funding_rate']:g} for {r['prints']} prints from "
                     f"{_when(r['first_ts'])} to {_when(r['last_ts'])}"
                     for r in runs.head(shown).iter_rows(named=True))
    return text + (f"; and {runs.height - shown} more run(s)" if runs.height > shown else "")


def enforce(audit: FundingAudit, policy: FundingPolicy) -> None:
    """Refuse what ``policy`` does not allow.

    Raises
    ------
    ValueError
        Missing prints without ``allow_missing`` (naming each symbol, its first missing
        times and their count), or a constant run without ``allow_constant`` (naming the
        symbol, the rate and the run's first and last time).
    """
    if audit.missing.height and not policy.allow_missing:
        raise ValueError(
            f"funding: {audit.missing.height} funding print(s) missing at the times each "
            f"symbol's funding interval (from its prints) expects: "
            f"{describe_missing(audit.missing)}. Set allow_missing_funding: true in the "
            "study or the blueprint spec to run with them as no payment")
    if audit.constant.height and not policy.allow_constant:
        raise ValueError(
            f"funding: {audit.constant.height} run(s) of one rate for more than "
            f"{policy.constant_max_prints} prints (constant_funding_max_prints), refused by "
            f"allow_constant_funding: false: {describe_constant(audit.constant)}")
