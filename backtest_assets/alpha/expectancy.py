"""Conditional expectancy of signals and events, and its robustness (pure numpy/polars; no
Dagster).

Array contract
--------------
``signal`` and ``label`` are (T, S) float64 on a panel's bars and symbols (the
:mod:`backtest_assets.alpha.panel` contract), NaN where unknown; ``member`` is the (T, S)
bool universe (:func:`backtest_assets.alpha.universe.snapshots`). The signal at t is known
at t's close; the label of t is the forward log return ``ln(open[t + 1 + h] / open[t + 1])``
of :func:`~backtest_assets.alpha.panel.forward_log_returns`, ``h = horizon`` bars. A cell
is *valid* when it is a member with a finite signal and a finite label. Returns are log
returns (fractions for small moves); ``cost`` is a round-trip cost as a fraction of
notional (0.001 = 10 bps).

Buckets
-------
At each bar with ``n >= buckets`` valid cells, the valid cells are ranked by signal (average
ranks ``r`` in ``1 .. n``: a tie shares the mean of its ranks) and cell ``i`` goes to bucket
``ceil(buckets * r_i / n)`` -- bucket ``k`` holds the ranks in ``((k - 1) n / buckets, k n /
buckets]``; bucket 1 holds the lowest signals. Tied signals always share a bucket (the one
of their average rank), so buckets may be uneven, or empty at a bar, when there are ties;
without ties every bucket is non-empty. Bars with fewer than ``buckets`` valid cells have no
buckets.

Statistics
----------
For a bucket, the bar series is the mean label of its cells at each bar where it has cells;
``mean`` is the mean of that series over those ``n_bars`` bars (each bar weighs the same,
however many cells it has), ``n_cells`` the cells behind it. The spread ``q<B>-q1`` is the
series ``mean(top) - mean(bottom)`` over the bars where both have cells: the return of a
dollar long the top bucket and a dollar short the bottom one, market neutral. Standard
errors are Newey-West (Bartlett) with ``lag = LAG_MULTIPLE * horizon`` bars on the bar
series (:func:`backtest_assets.stats.inference.hac_mean_test` with the bar indices as times,
so skipped bars count as time passing): labels of bars less than a horizon apart overlap.
``t_hac = mean / se_hac``. The Bartlett weights ``1 - k / (lag + 1)`` shrink the overlap's
covariance: on pure overlap (``h``-bar sums of independent bar returns) ``lag = h`` would
understate the long-run variance by ``8.33 / 12`` at ``h = 12`` (``t_hac`` about 1.2 times
too large); ``lag = 2 h``, Phase 2's multiple (``hac_lag_multiple`` of
``specs/multiplicity/families.yaml``), leaves about 1.09 times.

Costs
-----
``net_mean`` is the expectancy of the position net of its round trips, one round trip per
label and leg: ``mean - cost`` for a bucket (a long in it), ``mean - 2 cost`` for the
spread (a long and a short leg), ``mean - cost`` for an event (one position in the event's
direction) and for one symbol's signed contribution. :func:`robustness` charges the costs
against the spread's full-sample direction (``mean + 2 cost`` for a negative spread, which
is traded short-top, long-bottom).

Events
------
:func:`event_expectancy` signs each event's label with its direction (+1 long, -1 short):
``direction x label`` at the event's bar and symbol. Every event counts (unlike Phase 2,
overlapping events are not left out); the standard error is cluster-robust
(:func:`~backtest_assets.stats.inference.cr2_mean_test`, events chained by gaps of at most
``horizon`` bars forming one cluster), because events at the same bar or within a horizon
share their returns.

Reports
-------
:func:`expectancy_json` and :func:`robustness_json` build the documents of
``conditional_expectancy.json`` and ``conditional_expectancy_robustness.json``: plain JSON
(dicts, lists, str, int, bool, None and floats rounded to 12 significant digits; NaN and
infinities become null), so ``json.dumps(doc, allow_nan=False)`` works and round-trips.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from backtest_assets.alpha.panel import UniversePanel
from backtest_assets.alpha.regime import KNOWN_REGIMES, REGIME_CODES, REGIME_NAMES
from backtest_assets.stats.inference import MeanTest, cr2_mean_test, hac_mean_test

SCHEMA_VERSION = 1
EXPECTANCY_FILE = "conditional_expectancy.json"
ROBUSTNESS_FILE = "conditional_expectancy_robustness.json"
COST_LEVELS = (0.0, 0.0005, 0.001, 0.002)
SIGNIFICANT_DIGITS = 12

BUCKET_SCHEMA: dict[str, pl.DataType] = {
    "bucket": pl.String(), "n_bars": pl.Int64(), "n_cells": pl.Int64(), "mean": pl.Float64(),
    "se_hac": pl.Float64(), "t_hac": pl.Float64(), "net_mean": pl.Float64(),
}
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_type": pl.String(), "n": pl.Int64(), "n_no_label": pl.Int64(),
    "clusters": pl.Int64(), "mean": pl.Float64(), "se": pl.Float64(), "t": pl.Float64(),
    "net_mean": pl.Float64(),
}
ROBUSTNESS_SCHEMA: dict[str, pl.DataType] = {
    "dimension": pl.String(), "value": pl.String(), "n_bars": pl.Int64(),
    "mean": pl.Float64(), "se_hac": pl.Float64(), "t_hac": pl.Float64(),
    "net_mean": pl.Float64(), "same_sign": pl.Boolean(),
}


# Newey-West lag per bar of horizon (module docstring): Phase 2's hac_lag_multiple.
LAG_MULTIPLE = 2

def bucket_assignment(signal: np.ndarray, label: np.ndarray, member: np.ndarray, *,
                      buckets: int = 5) -> np.ndarray:
    """(T, S) int8 bucket of every cell, 1 (lowest signals) .. ``buckets``; 0 where the cell
    is not valid or its bar has fewer than ``buckets`` valid cells (module docstring)."""
    s, _, valid = _checked(signal, label, member, "bucket_assignment")
    b = _check_int("bucket_assignment", "buckets", buckets, 2)
    return _buckets(s, valid, b)


def conditional_expectancy(signal: np.ndarray, label: np.ndarray, member: np.ndarray, *,
                           buckets: int = 5, horizon: int, cost: float = 0.0
                           ) -> pl.DataFrame:
    """Mean forward label of each cross-sectional signal bucket and of the top-minus-bottom
    spread (module docstring).

    Parameters
    ----------
    signal, label : (T, S) float
        Signal and forward label (``horizon`` bars), NaN where unknown.
    member : (T, S) bool
        The universe at each bar.
    buckets : int
        Number of quantile buckets, >= 2.
    horizon : int
        The label's horizon in bars, >= 1 (the HAC lag is ``LAG_MULTIPLE`` times it).
    cost : float
        Round-trip cost as a fraction of notional, >= 0.

    Returns
    -------
    pl.DataFrame
        :data:`BUCKET_SCHEMA`: one row per bucket ``q1`` .. ``q<B>`` then the spread
        ``q<B>-q1``; ``mean``, ``se_hac``, ``t_hac`` and ``net_mean`` null where undefined
        (no bar; ``se_hac`` and ``t_hac`` also with fewer than 2 bars or no variation).
    """
    s, y, valid = _checked(signal, label, member, "conditional_expectancy")
    b = _check_int("conditional_expectancy", "buckets", buckets, 2)
    lag = LAG_MULTIPLE * _check_int("conditional_expectancy", "horizon", horizon, 1)
    cost = _check_cost("conditional_expectancy", cost)
    bucket = _buckets(s, valid, b)
    means, counts = _bucket_means(y, bucket, b)
    rows = []
    for k in range(b):
        test = _bar_test(means[:, k], lag)
        rows.append(_row(f"q{k + 1}", test, int(counts[:, k].sum()), cost))
    spread, cells = _spread(means, counts)
    rows.append(_row(f"q{b}-q1", _bar_test(spread, lag), cells, 2.0 * cost))
    return pl.DataFrame(rows, schema=BUCKET_SCHEMA)


def event_expectancy(events: pl.DataFrame, panel: UniversePanel, label: np.ndarray, *,
                     horizon: int, cost: float = 0.0) -> pl.DataFrame:
    """Mean signed forward label of each event type (module docstring).

    Parameters
    ----------
    events : pl.DataFrame
        ``event_type`` (str), ``symbol`` (str), ``ts`` (the event's bar open time; a bar of
        ``panel``) and ``direction`` (+1 or -1).
    panel : UniversePanel
        The bars the label is on (its ``ts`` and ``symbols`` locate each event).
    label : (T, S) float
        Forward label of ``horizon`` bars on the panel, NaN where unknown.
    horizon : int
        The label's horizon in bars, >= 1: the clustering lag.
    cost : float
        Round-trip cost as a fraction of notional, >= 0.

    Returns
    -------
    pl.DataFrame
        :data:`EVENT_SCHEMA`, one row per event type (sorted by name): ``n`` events with a
        label, ``n_no_label`` without (left out), ``clusters``, ``mean`` signed label,
        cluster-robust (CR2) ``se`` and ``t``, ``net_mean = mean - cost``; nulls where
        undefined.

    Raises
    ------
    ValueError
        On a missing column or a null in one, a direction other than +1 or -1, a symbol not
        in the panel or a ``ts`` that is not one of its bars, or a label not on the panel's
        shape.
    """
    lag = _check_int("event_expectancy", "horizon", horizon, 1)
    cost = _check_cost("event_expectancy", cost)
    y = np.asarray(label, dtype=np.float64)
    if y.shape != panel.close.shape:
        raise ValueError(f"event_expectancy: label has shape {y.shape}, the panel "
                         f"{panel.close.shape}")
    bar, col, direction, types = _locate(events, panel)
    value = direction * y[bar, col] if bar.size else np.empty(0)
    has = np.isfinite(value)
    rows = []
    for name in sorted(set(types.tolist())):
        mine = types == name
        keep = mine & has
        n = int(keep.sum())
        test = cr2_mean_test(value[keep], bar[keep], lag=lag) if n else None
        rows.append({"event_type": name, "n": n, "n_no_label": int((mine & ~has).sum()),
                     "clusters": test.clusters if test else 0,
                     "mean": _finite(test.mean) if test else None,
                     "se": _finite(test.se) if test else None,
                     "t": _finite(test.t) if test else None,
                     "net_mean": _finite(test.mean - cost) if test else None})
    return pl.DataFrame(rows, schema=EVENT_SCHEMA)


def robustness(signal: np.ndarray, label: np.ndarray, member: np.ndarray, *, horizon: int,
               regime: np.ndarray | None = None, cost_levels: Sequence[float] = COST_LEVELS,
               n_periods: int = 4, buckets: int = 5, cost: float = 0.0,
               symbols: Sequence[str] | None = None) -> pl.DataFrame:
    """The spread's expectancy across sub-periods, symbols, regimes and cost levels.

    Rows (``dimension``, ``value``):

    - ``period``, ``"k/n"``: the spread series of bars ``k``-th of ``n_periods`` equal
      slices of the T bars (``numpy.array_split`` of the bar indices).
    - ``symbol``, its name: the symbol's signed contribution at the bars where it is in the
      top bucket (``+1``) or the bottom one (``-1``): ``sign x (label - the bar's mean label
      over its bucketed cells)``. The bar mean cancels in the spread, so the spread is the
      mean of the top's contributions plus the mean of the bottom's; demeaning keeps each
      symbol's number market neutral. ``net_mean = mean - cost`` (one leg).
    - ``regime``, ``calm`` / ``normal`` / ``stormy``: the spread series at the bars of that
      regime (:func:`backtest_assets.alpha.regime.regime_series`; unknown bars are in no
      row; a regime without bars has no row). Only with ``regime``.
    - ``cost``, the cost level (``f"{c:g}"``): the full-sample spread net of ``c`` per
      round trip and leg; here ``t_hac = net_mean / se_hac``, the t of the net expectancy.

    Costs work against the direction the spread would be traded in, its full-sample sign
    ``d`` (+1: long the top bucket and short the bottom one; -1: the reverse; +1 when the
    full-sample mean is 0 or undefined): ``net_mean = mean - 2 c d`` for the period, regime
    and cost rows, ``mean - c d`` for a symbol (one leg), with ``c = cost`` except in the
    cost rows. So costs always push ``net_mean`` against the full-sample direction: a
    negative spread is not made "more robust" by them.

    ``same_sign``: the row's ``mean`` has the sign ``d`` of the full-sample mean (for
    ``cost`` rows: its ``net_mean`` has it, i.e. the spread survives that cost); False when
    either is 0 or undefined. Every standard error is HAC with ``lag = LAG_MULTIPLE *
    horizon`` on the row's bar series.

    Parameters
    ----------
    signal, label, member, horizon, buckets
        As :func:`conditional_expectancy`.
    regime : (T,) int, optional
        Regime codes on the same bars.
    cost_levels : sequence of float
        Round-trip costs (fractions) of the ``cost`` rows, each >= 0.
    n_periods : int
        Number of sub-periods, >= 1.
    cost : float
        Round-trip cost of the ``net_mean`` of the period, symbol and regime rows.
    symbols : sequence of str, optional
        The S symbol names (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    pl.DataFrame
        :data:`ROBUSTNESS_SCHEMA`, in the order period, symbol, regime, cost.
    """
    s, y, valid = _checked(signal, label, member, "robustness")
    b = _check_int("robustness", "buckets", buckets, 2)
    lag = LAG_MULTIPLE * _check_int("robustness", "horizon", horizon, 1)
    periods = _check_int("robustness", "n_periods", n_periods, 1)
    cost = _check_cost("robustness", cost)
    levels = [_check_cost("robustness", c) for c in cost_levels]
    names = _symbol_names(symbols, s.shape[1])
    bucket = _buckets(s, valid, b)
    means, counts = _bucket_means(y, bucket, b)
    spread, _ = _spread(means, counts)
    full = _bar_test(spread, lag)
    sign = np.sign(full.mean) if np.isfinite(full.mean) else 0.0
    against = sign or 1.0  # costs work against the direction the spread is traded in
    rows = []

    def add(dimension: str, value: str, test: MeanTest, net: float, same: float) -> None:
        rows.append({"dimension": dimension, "value": value, "n_bars": test.n,
                     "mean": _finite(test.mean), "se_hac": _finite(test.se),
                     "t_hac": _finite(test.t), "net_mean": _finite(net),
                     "same_sign": bool(sign != 0 and np.sign(same) == sign)})

    for k, bars in enumerate(np.array_split(np.arange(s.shape[0]), periods)):
        test = _bar_test(_only(spread, bars), lag)
        add("period", f"{k + 1}/{periods}", test, test.mean - 2 * cost * against,
            test.mean)
    for j, contribution in enumerate(_contributions(y, bucket, b).T):
        test = _bar_test(contribution, lag)
        add("symbol", names[j], test, test.mean - cost * against, test.mean)
    if regime is not None:
        for name, bars in _regime_bars(regime, s.shape[0]):
            test = _bar_test(_only(spread, bars), lag)
            add("regime", name, test, test.mean - 2 * cost * against, test.mean)
    for c in levels:
        net = full.mean - 2 * c * against
        add("cost", f"{c:g}", full, net, net)
        if full.se > 0 and np.isfinite(full.se):
            rows[-1]["t_hac"] = _finite(net / full.se)
    return pl.DataFrame(rows, schema=ROBUSTNESS_SCHEMA)


def records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """``frame``'s rows as plain dicts: floats rounded to 12 significant digits, NaN and
    infinities as None, datetimes and dates as ISO strings."""
    return [{k: plain(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


def plain(value: Any) -> Any:
    """A JSON-safe copy of ``value`` (dicts, lists, tuples, numpy scalars, floats)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}") + 0.0 if math.isfinite(value) else None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"plain: cannot put a {type(value).__name__} in a JSON report")


def expectancy_json(buckets: Mapping[str, pl.DataFrame], events: pl.DataFrame | None = None,
                    *, horizon: int, cost: float, hashes: Mapping[str, Any]
                    ) -> dict[str, Any]:
    """The document of ``conditional_expectancy.json``.

    Parameters
    ----------
    buckets : mapping of str to pl.DataFrame
        Per signal name, its :func:`conditional_expectancy` table.
    events : pl.DataFrame, optional
        The :func:`event_expectancy` table (one row per event type).
    horizon : int
        The label horizon in bars the tables were computed with.
    cost : float
        Their round-trip cost.
    hashes : mapping
        Traceability stamps from the caller (e.g. ``spec_hashes``, ``dataset_hash``,
        ``code_commit``), written as given under ``"hashes"``.

    Returns
    -------
    dict
        ``schema_version``, ``report`` ("conditional_expectancy"), ``horizon_bars``,
        ``cost``, ``hashes``, ``signals`` (``{name: {"buckets": [rows]}}``, names sorted) and
        ``event_types`` (rows; empty without events).
    """
    _check_frames(buckets, BUCKET_SCHEMA, "expectancy_json")
    if events is not None:
        _check_frames({"events": events}, EVENT_SCHEMA, "expectancy_json")
    return plain({
        **_header("conditional_expectancy", horizon, cost, hashes),
        "signals": {name: {"buckets": records(buckets[name])} for name in sorted(buckets)},
        "event_types": [] if events is None else records(events),
    })


def robustness_json(rows: Mapping[str, pl.DataFrame], *, horizon: int, cost: float,
                    hashes: Mapping[str, Any]) -> dict[str, Any]:
    """The document of ``conditional_expectancy_robustness.json``: the header of
    :func:`expectancy_json` (``report`` "conditional_expectancy_robustness") and ``signals``
    (``{name: {"rows": [rows]}}``, each signal's :func:`robustness` table)."""
    _check_frames(rows, ROBUSTNESS_SCHEMA, "robustness_json")
    return plain({
        **_header("conditional_expectancy_robustness", horizon, cost, hashes),
        "signals": {name: {"rows": records(rows[name])} for name in sorted(rows)},
    })


def _header(report: str, horizon: int, cost: float, hashes: Mapping[str, Any]
            ) -> dict[str, Any]:
    _check_int(report, "horizon", horizon, 1)
    if not isinstance(hashes, Mapping):
        raise ValueError(f"{report}: hashes must be a mapping, got {type(hashes).__name__}")
    return {"schema_version": SCHEMA_VERSION, "report": report, "horizon_bars": horizon,
            "cost": _check_cost(report, cost), "hashes": dict(hashes)}


def _check_frames(frames: Mapping[str, pl.DataFrame], schema: dict[str, pl.DataType],
                  who: str) -> None:
    for name, frame in frames.items():
        if dict(frame.schema) != schema:
            raise ValueError(f"{who}: {name!r} has columns {dict(frame.schema)}, expected "
                             f"{schema}")


def _checked(signal: np.ndarray, label: np.ndarray, member: np.ndarray, who: str
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(signal, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64)
    m = np.asarray(member)
    if s.ndim != 2 or y.shape != s.shape or m.shape != s.shape or m.dtype != bool:
        raise ValueError(f"{who}: needs signal and label (T, S) and a bool member of the same "
                         f"shape, got signal {s.shape}, label {y.shape}, member {m.dtype} "
                         f"{m.shape}")
    return s, y, m & np.isfinite(s) & np.isfinite(y)


def _check_int(who: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_cost(who: str, cost: object) -> float:
    if isinstance(cost, bool) or not isinstance(cost, int | float | np.floating) \
            or not np.isfinite(cost) or cost < 0:
        raise ValueError(f"{who}: cost must be a finite fraction >= 0, got {cost!r}")
    return float(cost)


def _buckets(s: np.ndarray, valid: np.ndarray, b: int) -> np.ndarray:
    n = valid.sum(axis=1, keepdims=True)
    # Invalid cells rank after every valid one (+inf), so the valid cells' average ranks
    # are their ranks among the valid cells alone; twice an average rank is an integer.
    from scipy.stats import rankdata  # here: 0.4 s to import, not at the code location's

    twice = np.rint(2.0 * rankdata(np.where(valid, s, np.inf), method="average", axis=1))
    twice = twice.astype(np.int64)
    bucket = (b * twice + 2 * n - 1) // np.maximum(2 * n, 1)  # ceil(b r / n), exactly
    return np.where(valid & (n >= b), bucket, 0).astype(np.int8)


def _bucket_means(y: np.ndarray, bucket: np.ndarray, b: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(T, B) mean label of each bucket at each bar (NaN where empty) and (T, B) counts."""
    means = np.full((y.shape[0], b), np.nan)
    counts = np.zeros((y.shape[0], b), dtype=np.int64)
    for k in range(b):
        cells = bucket == k + 1
        counts[:, k] = cells.sum(axis=1)
        total = np.where(cells, y, 0.0).sum(axis=1)
        has = counts[:, k] > 0
        means[has, k] = total[has] / counts[has, k]
    return means, counts


def _spread(means: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, int]:
    """(T,) top-minus-bottom series (NaN where either is empty) and the cells behind it."""
    spread = means[:, -1] - means[:, 0]
    both = np.isfinite(spread)
    return spread, int((counts[both, -1] + counts[both, 0]).sum())


def _contributions(y: np.ndarray, bucket: np.ndarray, b: int) -> np.ndarray:
    """(T, S) signed, bar-demeaned label of the cells in the top (+) or bottom (-) bucket."""
    cells = bucket > 0
    n = cells.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        bar_mean = np.where(cells, y, 0.0).sum(axis=1, keepdims=True) / n
    sign = np.where(bucket == b, 1.0, np.where(bucket == 1, -1.0, np.nan))
    return sign * (y - bar_mean)


def _bar_test(series: np.ndarray, lag: int) -> MeanTest:
    """HAC test of the mean of a (T,) bar series over its finite values, times = bars."""
    bars = np.flatnonzero(np.isfinite(series))
    return hac_mean_test(series[bars], bars, lag=lag)


def _only(series: np.ndarray, bars: np.ndarray) -> np.ndarray:
    out = np.full(series.shape, np.nan)
    out[bars] = series[bars]
    return out


def _regime_bars(regime: np.ndarray, t: int) -> list[tuple[str, np.ndarray]]:
    r = np.asarray(regime)
    if r.shape != (t,):
        raise ValueError(f"robustness: regime has shape {r.shape}, expected ({t},)")
    codes = set(np.unique(r).tolist())
    if not codes <= set(REGIME_NAMES):
        raise ValueError(f"robustness: regime holds codes {sorted(codes - set(REGIME_NAMES))}"
                         f" that are not regimes {sorted(REGIME_NAMES)}")
    out = []
    for name in KNOWN_REGIMES:
        bars = np.flatnonzero(r == REGIME_CODES[name])
        if bars.size:
            out.append((name, bars))
    return out


def _symbol_names(symbols: Sequence[str] | None, s: int) -> list[str]:
    if symbols is None:
        return [str(j) for j in range(s)]
    names = [str(x) for x in symbols]
    if len(names) != s:
        raise ValueError(f"robustness: {len(names)} symbols for {s} columns")
    return names


def _row(name: str, test: MeanTest, cells: int, cost: float) -> dict[str, Any]:
    return {"bucket": name, "n_bars": test.n, "n_cells": cells, "mean": _finite(test.mean),
            "se_hac": _finite(test.se), "t_hac": _finite(test.t),
            "net_mean": _finite(test.mean - cost)}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _locate(events: pl.DataFrame, panel: UniversePanel
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bar index, symbol column, direction (float) and event type of every event."""
    missing = [c for c in ("event_type", "symbol", "ts", "direction") if c not in events.columns]
    if missing:
        raise ValueError(f"event_expectancy: events lack column(s) {missing}")
    nulls = [c for c in ("event_type", "symbol", "ts", "direction") if events[c].null_count()]
    if nulls:
        raise ValueError(f"event_expectancy: events hold nulls in column(s) {nulls}")
    direction = events["direction"].cast(pl.Float64).to_numpy()
    bad = ~np.isin(direction, [-1.0, 1.0])
    if bad.any():
        raise ValueError(f"event_expectancy: direction must be +1 or -1, got "
                         f"{events['direction'][int(np.argmax(bad))]!r}")
    column = {name: j for j, name in enumerate(panel.symbols)}
    symbols = events["symbol"].to_list()
    unknown = sorted({str(x) for x in symbols if x not in column})
    if unknown:
        raise ValueError(f"event_expectancy: symbol(s) {unknown} are not in the panel")
    ts = events["ts"]
    if isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    stamps = ts.cast(pl.Datetime("us")).to_numpy().astype("datetime64[us]")
    grid = np.asarray(panel.ts, dtype="datetime64[us]")
    bar = np.clip(np.searchsorted(grid, stamps), 0, grid.size - 1)
    off = grid[bar] != stamps
    if off.any():
        raise ValueError(f"event_expectancy: event ts {stamps[int(np.argmax(off))]} is not a "
                         "bar of the panel")
    col = np.array([column[x] for x in symbols], dtype=np.int64)
    types = np.array(events["event_type"].cast(pl.String).to_list(), dtype=object)
    return bar.astype(np.int64), col, direction, types
