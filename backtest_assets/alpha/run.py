"""One alpha bundle of a study, as frames (pure; no Dagster): the ``alpha_bundle`` asset's
core.

From a :class:`~backtest_assets.alpha.panel.UniversePanel` of the study's symbols and window,
an :class:`~backtest_assets.specs.models.AlphaModelSpec` and its
:class:`~backtest_assets.specs.models.LiquidUniverseSpec`:

1. **universe** (:mod:`.universe`): each bar's point-in-time members;
2. **signals** (:mod:`.signals`): the spec's signals, each point in time; the model reads
   them at members only;
3. **regime** (:mod:`.regime`): the market symbol's volatility regime at each bar;
4. **model** (:mod:`.model`): the forward log return over the spec's horizon (the label of
   bar t reads the opens of t + 1 and t + 1 + h) on the orthogonalized signals, a ridge
   whose lambda a purged (h + 1 bars) and embargoed block CV chooses, refitted every
   ``refit_days`` after ``first_train_days``: scores out of sample only, then gated (NaN)
   at bars whose regime the spec does not allow;
5. **evidence**: the out-of-sample IC of the gated scores with its block-bootstrap interval
   (blocks of one day), and conditional expectancy and robustness
   (:mod:`.expectancy`) of every signal and of the score, in the spec's quantile buckets
   (one per member when the universe never has that many members).

Frames (one row per ...): ``snapshot`` (bar x symbol with a known ADV), ``signals`` (bar x
symbol with any signal known), ``regime`` (bar), ``model`` (refit), ``scores`` (bar x member
with a score), ``expectancy`` (signal x bucket), ``robustness`` (signal x dimension value).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.alpha import expectancy as ex
from backtest_assets.alpha.model import information_coefficient, walk_forward
from backtest_assets.alpha.panel import UniversePanel, forward_log_returns
from backtest_assets.alpha.regime import REGIME_NAMES, RegimeRule, gate, regime_series
from backtest_assets.alpha.signals import SIGNALS
from backtest_assets.alpha.universe import UniverseRule, snapshots_with_frame
from backtest_assets.specs.loader import spec_hash
from backtest_assets.specs.models import AlphaModelSpec, LiquidUniverseSpec, interval_minutes


@dataclass(frozen=True)
class BundleRun:
    snapshot: pl.DataFrame
    signals: pl.DataFrame
    regime: pl.DataFrame
    model: pl.DataFrame
    scores: pl.DataFrame
    expectancy: pl.DataFrame
    robustness: pl.DataFrame
    ic: Mapping[str, float]
    horizon_bars: int
    by_signal: Mapping[str, pl.DataFrame]  # the expectancy table of each signal and score
    robust: Mapping[str, pl.DataFrame]
    events: pl.DataFrame | None  # the expectancy of each event type

    def reports(self, hashes: Mapping[str, str]) -> dict[str, dict]:
        """The seeds' two report files: name -> JSON document."""
        return {"conditional_expectancy.json": ex.expectancy_json(
                    self.by_signal, self.events, horizon=self.horizon_bars, cost=0.0,
                    hashes=hashes),
                "conditional_expectancy_robustness.json": ex.robustness_json(
                    self.robust, horizon=self.horizon_bars, cost=0.0, hashes=hashes)}


def universe_rule(u: LiquidUniverseSpec) -> UniverseRule:
    return UniverseRule(name=u.name, adv_bars=u.adv_bars,
                        adv_interval_minutes=u.adv_interval_minutes,
                        min_adv_usd=u.min_adv_usd, top_n=u.top_n)


def regime_rule(spec: AlphaModelSpec) -> RegimeRule:
    r = spec.regime
    return RegimeRule(name=f"{spec.name}_regime", symbol=r.symbol, vol_window=r.vol_window,
                      z_window=r.z_window, calm_below=r.calm_below,
                      stormy_above=r.stormy_above)


def horizon_bars(spec: AlphaModelSpec, panel: UniversePanel) -> int:
    minutes = interval_minutes(spec.horizon)
    if minutes % panel.interval_minutes:
        raise ValueError(f"{spec.name}: horizon {spec.horizon} is not a multiple of the "
                         f"{panel.interval_minutes}-minute bars")
    return minutes // panel.interval_minutes


def run_bundle(spec: AlphaModelSpec, universe: LiquidUniverseSpec, panel: UniversePanel,
               events: pl.DataFrame | None = None) -> BundleRun:
    """The bundle of ``spec`` on ``panel`` (module docstring).

    Raises ``ValueError`` naming the problem: a panel without the regime's market symbol,
    a window too short for the first training period and one refit, a refit that cannot be
    fitted (too few members with every signal).
    """
    if spec.regime.symbol not in panel.symbols:
        raise ValueError(f"{spec.name}: the regime's market symbol {spec.regime.symbol} is not "
                         f"among the study's symbols {list(panel.symbols)}")
    h = horizon_bars(spec, panel)
    per_day = panel.bars_per_day
    first, every = spec.first_train_days * per_day, spec.refit_days * per_day
    if first + h + 1 >= len(panel.ts):
        raise ValueError(f"{spec.name}: {len(panel.ts) // per_day} days cannot hold "
                         f"{spec.first_train_days} days of training and a refit")
    member, snapshot = snapshots_with_frame(panel, universe_rule(universe))
    values = {n: SIGNALS[n](panel, member) for n in spec.signals}
    x = np.stack([np.where(member, values[n], np.nan) for n in spec.signals], axis=2)
    label = np.where(member, forward_log_returns(panel.open, h), np.nan)
    raw, fits = walk_forward(x, label, list(spec.lambdas), first_train_bars=first,
                             refit_every=every, purge=h + 1, embargo=spec.embargo_bars,
                             n_blocks=spec.cv_blocks, method=spec.method,
                             order=None if spec.order is None else list(spec.order),
                             scale=spec.scale)
    codes = regime_series(panel, regime_rule(spec))
    gated = gate(raw, codes, spec.regime.allowed)
    ic = information_coefficient(gated, label, block_bars=per_day)
    ts = panel.ts
    signal_frame = _long(ts, panel.symbols, values).filter(
        pl.any_horizontal(pl.col(list(spec.signals)).is_not_nan()))
    score_frame = _long(ts, panel.symbols, {"score": raw, "gated_score": gated}).with_columns(
        pl.Series("regime", np.repeat(_names(codes), len(panel.symbols)))).filter(
        pl.col("score").is_not_nan())
    # a universe smaller than the spec's buckets: one bucket per member (at least 2)
    buckets = max(2, min(spec.buckets, int(member.sum(axis=1).max())))
    by_signal, robust = {}, {}
    for name, sig in [*values.items(), ("score", gated)]:
        masked = np.where(member, sig, np.nan)
        by_signal[name] = ex.conditional_expectancy(masked, label, member,
                                                    buckets=buckets, horizon=h)
        robust[name] = ex.robustness(masked, label, member, horizon=h, regime=codes,
                                     cost_levels=spec.cost_levels, buckets=buckets,
                                     symbols=panel.symbols)
    events_table = ex.event_expectancy(events, panel, label, horizon=h) \
        if events is not None and events.height else None
    return BundleRun(
        snapshot=snapshot, signals=signal_frame,
        regime=pl.DataFrame({"ts": ts, "regime": _names(codes)}),
        model=_model_frame(spec, ts, fits), scores=score_frame,
        expectancy=pl.concat([f.select(pl.lit(n).alias("signal"), pl.all())
                              for n, f in by_signal.items()], how="diagonal_relaxed"),
        robustness=pl.concat([f.select(pl.lit(n).alias("signal"), pl.all())
                              for n, f in robust.items()], how="diagonal_relaxed"),
        ic={k: (float(v) if v is not None else math.nan) for k, v in ic.items()
            if k != "series"},
        horizon_bars=h, by_signal=by_signal, robust=robust, events=events_table)


def _names(codes: np.ndarray) -> list[str]:
    return [REGIME_NAMES.get(int(c), "unknown") for c in codes]


def _long(ts: np.ndarray, symbols: tuple[str, ...], arrays: Mapping[str, np.ndarray]
          ) -> pl.DataFrame:
    t, s = len(ts), len(symbols)
    return pl.DataFrame({"ts": np.repeat(ts, s), "symbol": np.tile(np.array(symbols), t),
                         **{k: np.asarray(v, float).ravel() for k, v in arrays.items()}})


def _model_frame(spec: AlphaModelSpec, ts: np.ndarray, fits) -> pl.DataFrame:
    rows = []
    for bar, f in fits:
        o = f.orthogonalization
        rows.append({
            "refit_ts": ts[bar].item(), "lambda": f.lam, "intercept": f.intercept,
            "coefficients": json.dumps(dict(zip(spec.signals, f.coef.tolist(), strict=True))),
            "lambda_path": json.dumps({str(lam): c.tolist()
                                       for lam, c in zip(f.lambdas, f.path, strict=True)}),
            "cv_ic": json.dumps(np.where(np.isfinite(f.cv_ic), f.cv_ic, None).tolist()),
            "cv_mse": json.dumps(np.where(np.isfinite(f.cv_mse), f.cv_mse, None).tolist()),
            "method": o.method, "scale": o.scale,
            "order": json.dumps([spec.signals[i] for i in (o.order or range(len(spec.signals)))]),
            "matrix": json.dumps(o.matrix.tolist()), "orthogonalization_hash": o.hash,
            "fit_hash": f.hash, "rows": f.n_rows, "spec_hash": spec_hash(spec)})
    return pl.DataFrame(rows, schema={
        "refit_ts": pl.Datetime("us"), "lambda": pl.Float64, "intercept": pl.Float64,
        "coefficients": pl.String, "lambda_path": pl.String, "cv_ic": pl.String,
        "cv_mse": pl.String, "method": pl.String, "scale": pl.String, "order": pl.String,
        "matrix": pl.String, "orthogonalization_hash": pl.String, "fit_hash": pl.String,
        "rows": pl.Int64, "spec_hash": pl.String})
