"""Point-in-time features from bars, funding prints and open-interest snapshots (pure polars).

Frame contract
--------------
Inputs (naive ``Datetime("us")`` UTC timestamps, see ``backtest_assets.core.frames``):

- ``perp``, ``spot``: rows of ``BAR_SCHEMA`` at the base interval, one or several symbols,
  unique ``(symbol, ts_open)``, ``ts_close = ts_open + interval``, possibly with gaps. ``spot``
  may be empty or lack a symbol (its spot inputs are then null).
- ``funding``: ``FUNDING_SCHEMA``, ``ts`` = publication time, unique ``(symbol, ts)``.
- ``oi``: ``OPEN_INTEREST_SCHEMA``, ``ts`` = publication time, unique ``(symbol, ts)``.
  Funding and OI rows whose value is null are not prints and are dropped.

Output: one row per input perp bar, sorted by ``(symbol, ts_open)``: ``FEATURE_KEYS`` then one
``Float64`` column per spec, named ``spec.name``, in spec order. Where a formula is undefined
(see below) the value is null; finite inputs never give NaN or inf.

Point in time
-------------
The value at bar t uses only perp/spot bars with ``ts_open <= t`` and funding/OI rows with
``ts < ts_close(t) = ts_open(t) + interval``: a print published exactly at ``ts_close(t)``
coincides with acting on bar t (at the next open), so it is used from bar t+1 on. Bar
features are computed per symbol on a regular time grid from the symbol's first to last
perp bar, a missing bar being a null row, so windows span time, not
rows. Every rolling window needs all of its values: a window touching a missing bar, a null
input or the start of the data is null. Print features (funding, OI) are computed on the
print series and joined as of ``ts < ts_close(t)`` per symbol. Window sums, means and
standard deviations are computed from each window's own values, so a value does not depend
on how much history precedes its window (see ``_window_stat``).

Formulas
--------
``t`` a grid bar, ``w = spec.window``, ``zw = spec.z_window``; ``c`` the spec's input column;
``r_t = ln(c_t / c_{t-1})`` (on ``perp.close`` for the bar families without inputs);
``ln(a / b)`` is null unless ``a > 0`` and ``b > 0``; every ratio is null when its
denominator is not positive; ``Z_w(x)_t = (x_t - mean(x_{t-w+1..t})) / std(x_{t-w+1..t},
ddof=1)``, null when the window is constant (std 0).

==================== =========================================================================
family               value at t
==================== =========================================================================
log_return           ``ln(c_t / c_{t-w})``
realized_vol         ``sqrt(sum_{i=0}^{w-1} r_{t-i}^2)``
zscore               ``Z_w(x)_t``, ``x`` any input (bar column, feature, as-of funding/OI)
volume_zscore        ``Z_w(ln volume)_t`` (volume <= 0 -> null)
range_atr            ``(high_t - low_t) / mean_{t-w+1..t}(TR)``,
                     ``TR_t = max(high_t, close_{t-1}) - min(low_t, close_{t-1})``
amihud               ``mean_{t-w+1..t}(|r| / quote_volume) * 1e6``
order_flow_imbalance ``sum_w(2 taker_buy_volume - volume) / sum_w(volume)``
vpin                 ``sum_w(|2 taker_buy_volume - volume|) / sum_w(volume)``
funding_rate         last ``funding_rate`` with ``ts < ts_close(t)`` (``window`` unused)
funding_zscore       ``Z_w`` over the last ``w`` prints ``f_k`` (fewer prints: null), as of t
funding_persistence  ``sign(f_k) * min(run_k, w)``, ``run_k`` the consecutive prints ending
                     at k with the sign of ``f_k`` (``f_k = 0`` gives 0), as of t
oi_change_zscore     ``Z_zw(d)`` over OI snapshots, ``d_k = ln(OI_k / OI_{k-w})``, as of t
basis                ``ln(a_t / b_t)`` of its two inputs (perp.close, spot.close) at the same
                     ``ts_open``; a missing spot bar gives null (``window`` unused)
==================== =========================================================================

Print windows count prints (rows of the symbol's series), not time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from backtest_assets.core.frames import TS
from backtest_assets.specs.models import (
    BAR_COLUMNS,
    FAMILY_INPUTS,
    PRINT_FAMILIES,
    FeatureSpec,
)

FEATURE_KEYS = ["symbol", "ts_open", "ts_close"]
# Marks grid rows that hold a real bar; the leading underscore keeps it apart from feature
# names, which start with a letter.
PRESENT = "_present"
_PRINT_VALUES = {"funding": "funding_rate", "oi": "open_interest"}


def regular_grid(bars: pl.DataFrame, *, interval: dt.timedelta,
                 columns: Sequence[str]) -> pl.DataFrame:
    """Bars on a regular per-symbol time grid, missing bars as null rows.

    Parameters
    ----------
    bars : pl.DataFrame
        ``symbol``, ``ts_open`` and ``columns``; unique ``(symbol, ts_open)`` on the grid of
        ``interval`` started by the symbol's first bar.
    interval : datetime.timedelta
        Grid step.
    columns : sequence of str
        Bar columns to carry over.

    Returns
    -------
    pl.DataFrame
        ``symbol``, ``ts_open``, ``columns``, ``_present`` (False on a missing bar): every step
        from each symbol's first to last bar, sorted by ``(symbol, ts_open)``.

    Raises
    ------
    ValueError
        On a duplicated ``(symbol, ts_open)`` or a bar off the grid.
    """
    keyed = bars.select("symbol", pl.col("ts_open").cast(TS), *columns)
    _check_unique(keyed, "ts_open", "bars")
    step = interval // dt.timedelta(microseconds=1)
    off_grid = keyed.filter(
        (pl.col("ts_open") - pl.col("ts_open").min().over("symbol")).dt.total_microseconds()
        % step != 0)
    if off_grid.height:
        row = off_grid.row(0, named=True)
        raise ValueError(f"bars: {row['symbol']} {row['ts_open']} is off the {interval} grid")
    spans = keyed.group_by("symbol").agg(
        pl.datetime_ranges(pl.col("ts_open").min(), pl.col("ts_open").max(), interval=interval)
        .first().alias("ts_open"))
    return (
        spans.explode("ts_open")
        .sort("symbol", "ts_open")
        .join(keyed.with_columns(pl.lit(True).alias(PRESENT)), on=["symbol", "ts_open"],
              how="left", maintain_order="left")
        .with_columns(pl.col(PRESENT).fill_null(False))
    )


def compute_features(perp: pl.DataFrame, spot: pl.DataFrame, funding: pl.DataFrame,
                     oi: pl.DataFrame, specs: Sequence[FeatureSpec], *,
                     interval_minutes: int) -> pl.DataFrame:
    """Point-in-time features of every perp bar (formulas in the module docstring).

    Parameters
    ----------
    perp, spot : pl.DataFrame
        ``BAR_SCHEMA`` bars of the base interval; ``spot`` may be empty.
    funding : pl.DataFrame
        ``FUNDING_SCHEMA`` prints, ``ts`` = publication time.
    oi : pl.DataFrame
        ``OPEN_INTEREST_SCHEMA`` snapshots, ``ts`` = publication time.
    specs : sequence of FeatureSpec
        In dependency order: a ``feature.<name>`` input comes before the spec reading it.
    interval_minutes : int
        The bars' interval.

    Returns
    -------
    pl.DataFrame
        ``FEATURE_KEYS`` then one Float64 column per spec (named ``spec.name``, spec order);
        one row per perp bar, sorted by ``(symbol, ts_open)``.

    Raises
    ------
    ValueError
        On an invalid spec (unknown family, bad inputs, a name used twice, a feature input
        not computed before), or perp bars that are duplicated, off the grid or whose
        ``ts_close`` is not ``ts_open + interval_minutes``.
    """
    specs = list(specs)
    for i, spec in enumerate(specs):
        _check_spec(spec, specs[:i])
    interval = dt.timedelta(minutes=interval_minutes)
    if not (perp["ts_close"] - perp["ts_open"] == interval).all():
        raise ValueError(f"perp: ts_close is not ts_open + {interval_minutes} minutes")
    grid = regular_grid(perp, interval=interval, columns=BAR_COLUMNS).rename(
        {c: f"perp.{c}" for c in BAR_COLUMNS})
    frame = grid.lazy().with_columns((pl.col("ts_open") + interval).alias("ts_close"))
    grid_refs = {ref for s in specs if s.family not in PRINT_FAMILIES for ref in s.inputs}
    spot_refs = sorted(r for r in grid_refs if r.startswith("spot."))
    if spot_refs:
        spot_cols = [r.removeprefix("spot.") for r in spot_refs]
        spot_bars = spot.select("symbol", pl.col("ts_open").cast(TS), *spot_cols)
        _check_unique(spot_bars, "ts_open", "spot")
        frame = frame.join(spot_bars.rename(dict(zip(spot_cols, spot_refs, strict=True))).lazy(),
                           on=["symbol", "ts_open"], how="left", maintain_order="left")
    for source, prints in (("funding", funding), ("oi", oi)):
        joined = _print_columns(source, prints, specs, raw=f"{source}.{_PRINT_VALUES[source]}"
                                in grid_refs)
        if joined is not None:
            # Strictly before the close: a print stamped exactly at ts_close(t) is simultaneous
            # with acting on bar t (the next open), so it counts from bar t+1. It also lives
            # in the next day's partition, which a day's features do not read.
            # Both sides are sorted by (symbol, time); polars cannot check that with `by`.
            frame = frame.join_asof(joined.lazy(), left_on="ts_close", right_on="ts",
                                    by="symbol", strategy="backward",
                                    allow_exact_matches=False,
                                    check_sortedness=False).drop("ts")
    # The joins keep the grid's (symbol, ts_open) order, which the per-symbol shifts and
    # rolling windows below rely on.
    for spec in specs:
        if spec.family not in PRINT_FAMILIES:
            frame = frame.with_columns(
                _BAR_FAMILIES[spec.family](spec).over("symbol").alias(spec.name))
    return (
        frame.filter(pl.col(PRESENT))
        .select(*FEATURE_KEYS, *[pl.col(s.name).cast(pl.Float64) for s in specs])
        .collect()
    )


def _check_spec(spec: FeatureSpec, before: list[FeatureSpec]) -> None:
    where = f"feature {spec.name!r}"
    if spec.family not in FAMILY_INPUTS:
        raise ValueError(f"{where}: unknown family {spec.family!r}")
    try:
        spec.validate()
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    names = {s.name for s in before}
    if spec.name in names or spec.name in FEATURE_KEYS:
        raise ValueError(f"{where}: the name is used twice or is a key column")
    kinds = FAMILY_INPUTS[spec.family]
    if kinds != ("bars",) and len(spec.inputs) != len(kinds):
        raise ValueError(f"{where}: family {spec.family} takes {len(kinds)} input(s)")
    for ref in spec.inputs:
        source, _, column = ref.partition(".")
        if source == "feature" and column not in names:
            raise ValueError(f"{where}: input {ref} is not computed before it")
    if spec.family in PRINT_FAMILIES:
        source = PRINT_FAMILIES[spec.family]
        if spec.inputs[0] != f"{source}.{_PRINT_VALUES[source]}":
            raise ValueError(f"{where}: family {spec.family} reads "
                             f"{source}.{_PRINT_VALUES[source]}")


def _check_unique(frame: pl.DataFrame, time_col: str, what: str) -> None:
    dupes = frame.filter(pl.struct("symbol", time_col).is_duplicated())
    if dupes.height:
        row = dupes.row(0, named=True)
        raise ValueError(f"{what}: duplicated row {row['symbol']} {row[time_col]}")


def _print_columns(source: str, prints: pl.DataFrame, specs: list[FeatureSpec], *,
                   raw: bool) -> pl.DataFrame | None:
    """``symbol``, ``ts`` and the print features of ``source`` (plus its raw value if ``raw``),
    sorted by ``(symbol, ts)`` for the as-of join; None when nothing reads ``source``."""
    ref = f"{source}.{_PRINT_VALUES[source]}"
    own = [s for s in specs if PRINT_FAMILIES.get(s.family) == source]
    if not own and not raw:
        return None
    series = (prints.select("symbol", pl.col("ts").cast(TS),
                            pl.col(_PRINT_VALUES[source]).cast(pl.Float64).alias(ref))
              .drop_nulls(ref))
    _check_unique(series, "ts", source)
    return (
        series.sort("symbol", "ts")
        .with_columns(_PRINT_FAMILIES[s.family](s).over("symbol").alias(s.name) for s in own)
        .select("symbol", "ts", *([ref] if raw else []), *[s.name for s in own])
    )


# ---- expressions (evaluated per symbol with .over("symbol")) ----------------------------

def _ref(ref: str) -> pl.Expr:
    """A spec input: grid columns are named by their reference, features by their name."""
    source, _, column = ref.partition(".")
    return pl.col(column if source == "feature" else ref)


def _ln_ratio(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when((a > 0) & (b > 0)).then((a / b).log())


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num / den)


def _returns(close: pl.Expr) -> pl.Expr:
    return _ln_ratio(close, close.shift(1))


def _window_stat(series: pl.Series, *, w: int, stat: str) -> pl.Series:
    """Sum, mean or sample std of each full window of ``w`` values ending at each row.

    Each window is reduced on its own values (two passes for the std), so a value depends on
    its window only, never on how much history came before it: polars' running sums carry
    rounding from the start of the series, which would make a day computed alone differ in
    the last bits from the same day computed inside a longer run. A window holding a null or
    NaN is null.
    """
    values = series.cast(pl.Float64).fill_null(np.nan).to_numpy()
    out = np.full(values.shape[0], np.nan)
    if values.shape[0] >= w:
        windows = sliding_window_view(values, w)
        for lo in range(0, windows.shape[0], _WINDOW_CHUNK):  # bounds the std's temporaries
            chunk = windows[lo:lo + _WINDOW_CHUNK]
            if stat == "sum":
                out[w - 1 + lo:w - 1 + lo + chunk.shape[0]] = chunk.sum(axis=1)
            elif stat == "mean":
                out[w - 1 + lo:w - 1 + lo + chunk.shape[0]] = chunk.mean(axis=1)
            else:
                out[w - 1 + lo:w - 1 + lo + chunk.shape[0]] = chunk.std(axis=1, ddof=1)
    return pl.Series(series.name, out).fill_nan(None)


_WINDOW_CHUNK = 8192


def _rolling(x: pl.Expr, w: int, stat: str) -> pl.Expr:
    return x.map_batches(partial(_window_stat, w=w, stat=stat), return_dtype=pl.Float64)


def _zscore(x: pl.Expr, w: int) -> pl.Expr:
    mean, std = _rolling(x, w, "mean"), _rolling(x, w, "std")
    # Rounding can leave ~1e-20 of variance on a constant window (e.g. funding stuck at
    # 0.01 %); max == min is the exact test for std == 0.
    flat = x.rolling_max(w, min_samples=w) == x.rolling_min(w, min_samples=w)
    return pl.when(~flat & (std > 0)).then((x - mean) / std)


def _sum(x: pl.Expr, w: int) -> pl.Expr:
    return _rolling(x, w, "sum")


def _log_return(s: FeatureSpec) -> pl.Expr:
    c = _ref(s.inputs[0])
    return _ln_ratio(c, c.shift(s.window))


def _realized_vol(s: FeatureSpec) -> pl.Expr:
    return _sum(_returns(_ref(s.inputs[0])) ** 2, s.window).sqrt()


def _zscore_family(s: FeatureSpec) -> pl.Expr:
    return _zscore(_ref(s.inputs[0]), s.window)


def _volume_zscore(s: FeatureSpec) -> pl.Expr:
    v = _ref(s.inputs[0])
    return _zscore(pl.when(v > 0).then(v.log()), s.window)


def _range_atr(s: FeatureSpec) -> pl.Expr:
    high, low, prev = pl.col("perp.high"), pl.col("perp.low"), pl.col("perp.close").shift(1)
    # max/min_horizontal skip nulls; the true range needs the previous close and both extremes.
    true_range = pl.when(high.is_not_null() & low.is_not_null() & prev.is_not_null()).then(
        pl.max_horizontal(high, prev) - pl.min_horizontal(low, prev))
    return _ratio(high - low, _rolling(true_range, s.window, "mean"))


def _amihud(s: FeatureSpec) -> pl.Expr:
    impact = _ratio(_returns(pl.col("perp.close")).abs(), pl.col("perp.quote_volume")) * 1e6
    return _rolling(impact, s.window, "mean")


def _signed_flow() -> pl.Expr:
    return 2 * pl.col("perp.taker_buy_volume") - pl.col("perp.volume")


def _order_flow_imbalance(s: FeatureSpec) -> pl.Expr:
    return _ratio(_sum(_signed_flow(), s.window), _sum(pl.col("perp.volume"), s.window))


def _vpin(s: FeatureSpec) -> pl.Expr:
    return _ratio(_sum(_signed_flow().abs(), s.window), _sum(pl.col("perp.volume"), s.window))


def _as_of_value(s: FeatureSpec) -> pl.Expr:
    return _ref(s.inputs[0])


def _basis(s: FeatureSpec) -> pl.Expr:
    return _ln_ratio(_ref(s.inputs[0]), _ref(s.inputs[1]))


def _persistence(s: FeatureSpec) -> pl.Expr:
    sign = _ref(s.inputs[0]).sign()
    # Run length = position - position of the run's first print (over one symbol's series).
    position = pl.int_range(pl.len())
    start = pl.when((sign != sign.shift(1)).fill_null(True)).then(position).forward_fill()
    return sign * (position - start + 1).clip(upper_bound=s.window)


def _oi_change_zscore(s: FeatureSpec) -> pl.Expr:
    oi = _ref(s.inputs[0])
    assert s.z_window is not None  # FeatureSpec.validate requires it for this family
    return _zscore(_ln_ratio(oi, oi.shift(s.window)), s.z_window)


_Builder = Callable[[FeatureSpec], pl.Expr]
# Families evaluated on the bar grid.
_BAR_FAMILIES: dict[str, _Builder] = {
    "log_return": _log_return,
    "realized_vol": _realized_vol,
    "zscore": _zscore_family,
    "volume_zscore": _volume_zscore,
    "range_atr": _range_atr,
    "amihud": _amihud,
    "order_flow_imbalance": _order_flow_imbalance,
    "vpin": _vpin,
    "funding_rate": _as_of_value,
    "basis": _basis,
}
# Families evaluated on the print series before the as-of join (PRINT_FAMILIES).
_PRINT_FAMILIES: dict[str, _Builder] = {
    "funding_zscore": _zscore_family,
    "funding_persistence": _persistence,
    "oi_change_zscore": _oi_change_zscore,
}
