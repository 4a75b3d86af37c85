"""One blueprint's backtest as frames (pure; no Dagster): the ``backtest_*`` assets' core.

:func:`run_blueprint` takes a blueprint, its :class:`~backtest_assets.strategies.Panel`, the
features and events it reads, the funding rates of its symbols and its venue; it runs the
engine (refusing bad input before simulating) and returns three frames:

- trades: one row per trade, with the fill times (``entry_ts``/``exit_ts`` = the open of the
  fill bar; an exit inside a bar is stamped with that bar's open), side, quantity, prices,
  fees, funding, P&L, return on entry notional and exit reason;
- equity: one row per bar, at its close (``ts``): equity, cash, gross exposure, drawdown from
  the running peak (the starting cash is the first peak), and the fees, slippage and funding
  paid in the bar over all symbols;
- metrics: one row, every metric of :func:`backtest_assets.engine.metrics.metrics` (margin
  and liquidations included), the overlays applied (``overlays``: ``name@hash8`` each;
  ``overlay_blocked`` / ``overlay_resized``: entries they blocked or resized) plus the
  rejected orders per reason (``rejected_<reason>`` for each of ``REJECT_REASONS``,
  ``insufficient_margin`` among them), the limit orders' outcomes and the fills a
  participation cap cut (``ORDER_EVENTS``: ``limit_placed`` ... ``partial_fills``), the bars
  run on the last price for want of a mark (``mark_fallback_bars``), the blown bar, the run's
  size and the funding audit: ``funding_missing`` (prints missing at the times each symbol's
  interval expects, run as no payment) and ``funding_constant_runs`` (runs of one rate
  longer than the policy's limit), both 0 without funding.

A blueprint of kind ``code`` (``entry.code``) runs its strategy class on the event loop
(:mod:`backtest_assets.strategies.code`) instead of the engine on a target array; the frames
are the same.

The blueprint's ``leverage`` is each symbol's leverage setting (``Instrument.max_leverage``):
its isolated positions post ``notional / leverage`` (core.py, Isolated margin).

Funding strictness (:mod:`backtest_assets.core.funding`): a perp backtest (``funding`` given,
even empty) refuses, before simulating, missing prints unless its policy allows them, and a
constant run when the policy does not allow those; a backtest without funding (``None``:
spot) is not audited. :func:`funding_policy` combines the study's and the blueprint's
settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.core.funding import (
    DEFAULT_POLICY,
    FundingAudit,
    FundingPolicy,
    audit_funding,
    enforce,
)
from backtest_assets.engine import REJECT_REASONS, Instrument, backtest
from backtest_assets.engine.ledger import ledger_residual
from backtest_assets.engine.metrics import drawdown_path, metrics
from backtest_assets.engine.venue import RiskLimits
from backtest_assets.specs.models import StrategySpec, StudySpec, VenueSpec
from backtest_assets.strategies.blueprints import Panel, exit_rules, flat_start, targets
from backtest_assets.strategies.code import code_inputs, held_target, run_code
from backtest_assets.strategies.overlays import OverlayCounts, versions
from backtest_assets.strategies.overlays import apply as apply_overlays

MINUTES_PER_YEAR = 525_600  # DESIGN.md: crypto trades 24/7


@dataclass(frozen=True)
class BlueprintRun:
    """The frames of one blueprint's backtest (module docstring)."""

    trades: pl.DataFrame
    equity: pl.DataFrame
    metrics: pl.DataFrame


def instruments_for(bp: StrategySpec, venue: VenueSpec) -> list[Instrument]:
    """The blueprint's symbols on its venue, with the blueprint's leverage as the cap and
    the leverage setting its isolated positions post margin at.

    Raises ``ValueError`` when the blueprint asks for more leverage than the venue allows.
    """
    if bp.leverage > venue.max_leverage:
        raise ValueError(f"{bp.name}: leverage {bp.leverage:g} is above the venue's cap of "
                         f"{venue.max_leverage:g}")
    cap = bp.execution.participation if bp.execution is not None else None
    return [Instrument.from_venue(s, venue, max_leverage=max(1.0, bp.leverage),
                                  participation=cap) for s in bp.symbols]


def funding_policy(study: StudySpec, bp: StrategySpec) -> FundingPolicy:
    """The funding strictness of ``bp``'s runs in ``study``.

    Missing prints are allowed when either spec allows them (``allow_missing_funding``: the
    one that allows wins, neither can forbid what the other allows); the constant-rate rule
    (``allow_constant_funding``, ``constant_funding_max_prints``) is the study's alone.
    """
    return FundingPolicy(allow_missing=study.allow_missing_funding or bp.allow_missing_funding,
                         allow_constant=study.allow_constant_funding,
                         constant_max_prints=study.constant_funding_max_prints)


def check_funding(panel: Panel, funding: pl.DataFrame | None, policy: FundingPolicy
                  ) -> FundingAudit:
    """The audit of the funding of a backtest on ``panel``, refusing what ``policy`` does
    not allow.

    Prints are expected, at each symbol's interval, from the open of its first bar with a
    price to the close of its last (:meth:`Panel.priced_spans`). ``funding`` None: a
    backtest without funding (spot), nothing expected (an empty audit).

    Raises
    ------
    ValueError
        Naming the symbols and the missing times (first few and the count), or the symbol,
        rate and first and last time of a constant run (:func:`core.funding.enforce`).
    """
    if funding is None:
        return FundingAudit.empty()
    own = funding.filter(pl.col("symbol").cast(pl.String).is_in(panel.symbols))
    audit = audit_funding(own, panel.priced_spans(), max_prints=policy.constant_max_prints)
    enforce(audit, policy)
    return audit


def run_blueprint(bp: StrategySpec, panel: Panel, *, features: Mapping[str, np.ndarray],
                  events: pl.DataFrame | None, funding: pl.DataFrame | None,
                  venue: VenueSpec, init_cash: float,
                  funding_policy: FundingPolicy = DEFAULT_POLICY) -> BlueprintRun:
    """Backtest ``bp`` on ``panel`` and return its trades, equity and metrics frames.

    Parameters
    ----------
    bp : StrategySpec
        The blueprint; ``panel.symbols`` must be its symbols.
    panel : Panel
        Perp bars of the study window.
    features : mapping of str to (T, S) arrays
        The features the blueprint's entry reads, aligned with the panel.
    events : polars.DataFrame or None
        Events (event_type, symbol, ts, direction) for an event entry.
    funding : polars.DataFrame or None
        Funding rates (symbol, ts, funding_rate) of the traded symbols only; None for a
        backtest without funding (spot).
    venue : VenueSpec
        Fees, slippage, margin rules and order filters.
    init_cash : float
        Starting cash.
    funding_policy : FundingPolicy
        What the run accepts of its funding prints (default: no missing print; constant
        runs counted, not refused); :func:`funding_policy` of the study and blueprint.

    Raises
    ------
    ValueError
        Before any simulation: bad bars, an unknown feature, funding for a symbol not traded,
        funding prints missing or constant beyond what ``funding_policy`` allows, leverage
        above the venue's cap (each message names what and where).
    """
    insts = instruments_for(bp, venue)
    rates = panel.funding(funding) if funding is not None and funding.height else None
    audit = check_funding(panel, funding, funding_policy)
    if bp.entry.code is not None:  # the strategy class decides, on the event loop
        counts: list[OverlayCounts] = []
        res = run_code(bp, panel, code_inputs(bp, panel, features, events),
                       bars=_engine_bars(panel, rates, init_cash, bp), instruments=insts)
    else:
        target, counts = edge_target(bp, panel, features=features, events=events,
                                     rates=rates, instruments=insts, init_cash=init_cash)
        res = backtest(**_engine_bars(panel, rates, init_cash, bp), target=target,
                       instruments=insts, exits=exit_rules(bp))
    bars_per_year = MINUTES_PER_YEAR / panel.interval_minutes
    m = metrics(res, panel.close, init_cash=init_cash, bars_per_year=bars_per_year,
                instruments=insts)

    step = np.timedelta64(panel.interval_minutes, "m")
    tr = res.trades
    exit_bar = tr["exit_bar"].to_numpy(allow_copy=True)
    closed = ~np.isnan(exit_bar.astype(np.float64))
    exit_ts = np.full(tr.height, np.datetime64("NaT"), dtype=panel.ts.dtype)
    exit_ts[closed] = panel.ts[exit_bar[closed].astype(np.int64)]
    trades = tr.with_columns(
        pl.lit(bp.name).alias("blueprint"),
        pl.Series("entry_ts", panel.ts[tr["entry_bar"].to_numpy()]),
        pl.Series("exit_ts", exit_ts),
        (pl.col("pnl") / (pl.col("qty") * pl.col("entry_price"))).alias("return"),
    ).select("blueprint", "symbol", "entry_ts", "exit_ts", "entry_bar", "exit_bar", "side",
             "qty", "entry_price", "exit_price", "fees", "funding", "pnl", "return",
             "exit_reason")
    equity = pl.DataFrame({
        "blueprint": bp.name,
        "ts": panel.ts + step,
        "equity": res.equity, "cash": res.cash, "exposure": res.exposure,
        "drawdown": drawdown_path(res.equity, init_cash),
        "fees": res.fees.sum(axis=1), "slippage": res.slippage.sum(axis=1),
        "funding": res.funding.sum(axis=1),
    })
    row = {"blueprint": bp.name, "init_cash": init_cash, "bars": len(res.equity),
           "window_start": _datetime(panel.ts[0]), "window_end": _datetime(panel.ts[-1] + step),
           **m, "funding_missing": audit.missing.height,
           "funding_constant_runs": audit.constant.height,
           **{f"rejected_{k}": res.rejected[k] for k in REJECT_REASONS},
           **res.orders, "mark_fallback_bars": panel.mark_fallback,
           "blown_bar": -1 if res.blown_bar is None else res.blown_bar, "engine_path": res.path,
           # the futures ledger rebuilt from the trades and flows, against the equity
           "ledger_residual": ledger_residual(res, panel.close, insts, init_cash),
           "overlays": versions(bp.overlays),
           "overlay_blocked": sum(c.blocked for c in counts),
           "overlay_resized": sum(c.resized for c in counts)}
    return BlueprintRun(trades=trades, equity=equity, metrics=pl.DataFrame([row]))


def _engine_bars(panel: Panel, rates: np.ndarray | None, init_cash: float,
                 bp: StrategySpec | None = None) -> dict:
    return {"open_": panel.open, "high": panel.high, "low": panel.low, "close": panel.close,
            "funding": rates, "init_cash": init_cash, **venue_inputs(bp, panel)}


def venue_inputs(bp: StrategySpec | None, panel: Panel, rows: slice = slice(None)) -> dict:
    """The engine's venue inputs for ``bp`` on ``panel``'s ``rows``: its risk manager
    (:func:`risk_inputs`), the mark prices and volume where the bars carry them (the marks
    completed by the study's policy: ``Panel.with_mark_policy``), and its limit orders."""
    out = risk_inputs(bp, panel.ts[rows])
    if panel.mark_open is not None:
        out.update(mark_open=panel.mark_open[rows], mark_high=panel.mark_high[rows],
                   mark_low=panel.mark_low[rows])
    if panel.volume is not None:
        out["volume"] = panel.volume[rows]
    limits = bp.execution.limits() if bp is not None and bp.execution is not None else None
    if limits is not None:
        out["limits"] = limits
    return out


def risk_inputs(bp: StrategySpec | None, ts: np.ndarray) -> dict:
    """The engine's ``risk`` and ``day`` (each bar's UTC day) for ``bp``'s risk manager;
    nothing when it has none."""
    if bp is None or bp.risk is None:
        return {}
    return {"risk": RiskLimits(**dataclasses.asdict(bp.risk)),
            "day": np.asarray(ts).astype("datetime64[D]").astype(np.int64)}


def edge_target(bp: StrategySpec, panel: Panel, *, features: Mapping[str, np.ndarray],
                events: pl.DataFrame | None, rates: np.ndarray | None,
                instruments: Sequence[Instrument], init_cash: float
                ) -> tuple[np.ndarray, list[OverlayCounts]]:
    """The engine target ``bp`` trades on ``panel``: its signal shaped by the hold rule,
    flat at the first bar, its overlays applied (``rates``: funding placed on the panel,
    for a drawdown brake's paper run); and what each overlay did."""
    if bp.entry.code is not None:  # the targets its run acted on (code.held_target)
        res = run_code(bp, panel, code_inputs(bp, panel, features, events),
                       bars=_engine_bars(panel, rates, init_cash, bp), instruments=instruments)
        return held_target(res, panel.close, panel.symbols), []
    raw = flat_start(targets(bp, panel, features, events))
    return overlaid(bp, raw, features, bars=_engine_bars(panel, rates, init_cash, bp),
                    instruments=instruments)


def largest_weight(bp: StrategySpec) -> float:
    """The largest |target| ``bp`` can take on one symbol: its target weight, times a
    volatility target's largest scale, within its leverage over its symbols."""
    w = bp.target_weight
    for o in bp.overlays:
        if o.kind == "vol_target":
            w *= o.max_scale
    return min(w, bp.leverage / len(bp.symbols))


def overlaid(bp: StrategySpec, target: np.ndarray, features: Mapping[str, np.ndarray], *,
             bars: Mapping, instruments: Sequence[Instrument]
             ) -> tuple[np.ndarray, list[OverlayCounts]]:
    """``target`` with ``bp``'s overlays applied (:mod:`.overlays`): features on the same
    bars, a drawdown brake's paper run on ``bars`` (the engine's keyword inputs: open_,
    high, low, close, funding, init_cash) with the blueprint's exits. Sizes are capped at the
    blueprint's leverage over its symbols."""
    if not bp.overlays:
        return target, []

    def paper(t: np.ndarray) -> np.ndarray:
        return backtest(**bars, target=t, instruments=instruments, exits=exit_rules(bp)).equity

    return apply_overlays(target, bp.overlays, features=features,
                          max_weight=bp.leverage / len(bp.symbols), paper=paper,
                          init_cash=bars["init_cash"])


def _datetime(t: np.datetime64) -> dt.datetime:
    return t.astype("datetime64[us]").item()
