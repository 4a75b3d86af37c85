"""Blueprints of kind ``code`` (pure; no Dagster): a :class:`~backtest_assets.sim.Strategy`
class named by the blueprint's ``entry.code``, run on the event loop
(:func:`backtest_assets.sim.run_strategy`) with the blueprint's venue, exits, leverage, risk
manager and execution, in place of the target array a rule blueprint's entry makes.

What the strategy reads: the panel's bars, the features ``entry.code.features`` names and,
for each event type of ``entry.code.events``, a feature ``event:<type>`` holding the event's
direction (+1 / -1) at the bars where one fired and NaN elsewhere; all of it known at each
bar's close, so the point-in-time rule holds by construction. A window of the panel (a
walk-forward fold) runs on its own bars and cash but reads the bars before it as history,
as a live strategy would.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from backtest_assets.engine import Instrument
from backtest_assets.engine.core import Result
from backtest_assets.sim import Strategy, run_strategy
from backtest_assets.specs.models import CodeEntry, StrategySpec
from backtest_assets.strategies.blueprints import Panel, exit_rules


def event_feature(event_type: str) -> str:
    """The feature under which a code strategy reads the events of ``event_type``."""
    return f"event:{event_type}"


def strategy_class(path: str) -> type[Strategy]:
    """The class ``package.module:Class``.

    Raises
    ------
    ValueError
        The module does not import, has no such attribute, or it is not a ``Strategy``
        subclass (naming the path).
    """
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ValueError(f"strategy {path!r}: module {module!r} does not import: {exc}"
                         ) from None
    except AttributeError:
        raise ValueError(f"strategy {path!r}: module {module!r} has no {name!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"strategy {path!r}: not a backtest_assets.sim.Strategy subclass")
    return cls


def build_strategy(bp: StrategySpec) -> Strategy:
    """A fresh instance of ``bp``'s strategy class with its params, ``weight`` and
    ``direction`` (a run's strategy holds state: never share one between runs)."""
    code = _code(bp)
    try:
        return strategy_class(code.strategy)(**(code.params or {}), weight=bp.target_weight,
                                             direction=bp.direction)
    except TypeError as exc:
        raise ValueError(f"{bp.name}: {code.strategy} does not take its params: {exc}"
                         ) from None


def code_inputs(bp: StrategySpec, panel: Panel, features: Mapping[str, np.ndarray],
                events: pl.DataFrame | None) -> dict[str, np.ndarray]:
    """The (T, S) arrays ``bp``'s strategy may read: its features, and its event types as
    directions (module docstring).

    Raises ``ValueError`` for a feature not among ``features`` or events asked for without
    an events table.
    """
    code = _code(bp)
    out = {}
    for f in code.features:
        if f not in features:
            raise ValueError(f"{bp.name}: entry.code reads feature {f!r}, not among the "
                             f"features read ({sorted(features)})")
        out[f] = np.asarray(features[f], dtype=np.float64)
    if code.events and events is None:
        raise ValueError(f"{bp.name}: entry.code reads events {list(code.events)}, got no "
                         "events table")
    for e in code.events:
        mine = events.filter(pl.col("event_type") == e)
        out[event_feature(e)] = panel._pivot(mine, "direction", f"{bp.name}: events", "ts")
    return out


def run_code(bp: StrategySpec, panel: Panel, inputs: Mapping[str, np.ndarray], *,
             bars: Mapping, instruments: Sequence[Instrument], a: int = 0,
             b: int | None = None) -> Result:
    """``bp``'s strategy on bars ``[a, b)`` of ``panel`` (reading the bars before ``a`` as
    history): the engine's :class:`Result` of that window.

    ``bars`` holds the engine's keyword inputs of the window (open_, high, low, close,
    funding, init_cash and the venue inputs of ``strategies.run.venue_inputs``) and
    ``inputs`` the strategy's arrays over the whole panel (:func:`code_inputs`).
    """
    if tuple(bp.symbols) != tuple(panel.symbols):
        raise ValueError(f"{bp.name}: symbols {list(bp.symbols)} differ from the panel's "
                         f"{list(panel.symbols)}")
    b = len(panel.ts) if b is None else b
    full = {"open_": panel.open, "high": panel.high, "low": panel.low, "close": panel.close,
            "volume": panel.volume, "mark_open": panel.mark_open,
            "mark_high": panel.mark_high, "mark_low": panel.mark_low}
    kw = dict(bars)
    for k, v in kw.items():  # per-bar inputs of the window get the history in front
        if k in full and full[k] is not None:
            kw[k] = full[k][:b]
        elif k in ("funding", "day") and v is not None:
            past = np.full((a, *np.shape(v)[1:]), np.nan if k == "funding" else v[0])
            kw[k] = np.concatenate([past.astype(np.asarray(v).dtype), v])
    run = run_strategy(build_strategy(bp), instruments=instruments, exits=exit_rules(bp),
                       ts=panel.ts[:b], features={k: v[:b] for k, v in inputs.items()},
                       history=a, **kw)
    return run.result


def held_target(result: Result, close: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
    """The target array a code strategy's run acted on, for the portfolio book (which nets
    edges' targets). At each bar t where the run's orders filled (a trade entered, or one
    closed by a signal), the target decided at the close of t - 1 is the position those
    orders left (the position held into t, plus what entered, less what the signal closed)
    valued at that close, over the equity then; NaN elsewhere, 0 at the first bar. A rule
    exit (stop, take-profit, time stop, liquidation) is not a decision of the strategy: the
    book replays it from the trades (``portfolio.book.effective_position``). An
    approximation where the strategy sizes in units: the book holds the run's weight as of
    each change."""
    pos = np.asarray(result.position, dtype=np.float64).reshape(len(result.equity), -1)
    c = np.nan_to_num(np.asarray(close, dtype=np.float64).reshape(pos.shape))
    eq = np.asarray(result.equity, dtype=np.float64)
    t_n, s_n = pos.shape
    cols = {s: k for k, s in enumerate(symbols)}
    tr = result.trades.with_columns(
        pl.col("symbol").replace_strict(cols, return_dtype=pl.Int64).alias("col"),
        pl.when(pl.col("side") == "long").then(pl.col("qty")).otherwise(-pl.col("qty"))
        .alias("signed"))
    moved = np.zeros((t_n, s_n))  # what the orders of bar t's open changed
    acted = np.zeros((t_n, s_n), dtype=bool)
    entered = tr.filter(pl.col("entry_bar") > 0)
    np.add.at(moved, (entered["entry_bar"].to_numpy(), entered["col"].to_numpy()),
              entered["signed"].to_numpy())
    acted[entered["entry_bar"].to_numpy(), entered["col"].to_numpy()] = True
    closed = tr.filter((pl.col("exit_reason") == "signal") & pl.col("exit_bar").is_not_null())
    np.add.at(moved, (closed["exit_bar"].to_numpy(), closed["col"].to_numpy()),
              -closed["signed"].to_numpy())
    acted[closed["exit_bar"].to_numpy(), closed["col"].to_numpy()] = True
    out = np.full((t_n, s_n), np.nan)
    out[0] = 0.0
    t_idx, s_idx = np.nonzero(acted)
    left = pos[t_idx - 1, s_idx] + moved[t_idx, s_idx]
    e = eq[t_idx - 1]
    out[t_idx - 1, s_idx] = np.where(e > 0, left * c[t_idx - 1, s_idx]
                                     / np.where(e > 0, e, 1.0), 0.0)
    return out


def _code(bp: StrategySpec) -> CodeEntry:
    if bp.entry.code is None:
        raise ValueError(f"{bp.name}: not a code blueprint")
    return bp.entry.code
