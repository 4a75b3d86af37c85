"""Adversarial null markets for calibrating Phase 2's tests (written for the tests, not the
synthetic market source).

Every generator returns a :class:`Market`: bar log returns of ``N_SYMBOLS`` correlated
symbols (zero mean: nothing follows any event) and the events of one event type. The
forward return of an event at bar t over h bars is the sum of the bar returns t+1..t+h
(DESIGN.md: an event at t is acted on at the next bar), and its signed return (the
``continuation`` template) is direction x forward return. The ``mean_reversion`` template is
its negative, with the same two-sided p-value, so it is left out.

Generators (each a null, each built to break one assumption of a naive test):

- ``garch_t``: GARCH(1,1) volatility (alpha 0.1, beta 0.89) with Student-t(4) innovations
  (unit variance) sharing a common factor (correlation ``RHO``); self-triggered events: a
  symbol's event fires when its bar return exceeds ``K_SIGMA`` times its point-in-time EWMA
  volatility (from the bars before it, slow to adapt), direction = the sign of that return.
- ``garch_gauss``: the same with Gaussian innovations.
- ``hawkes``: the ``garch_t`` market with event times from a self-exciting (Hawkes) process
  per symbol, independent of the returns (branching ratio 0.85, offspring ~ 8 bars after
  their parent); a child keeps its parent's direction with probability 0.8.
- ``simultaneous``: market-wide events: when the common factor's return exceeds its
  threshold every symbol has an event at that bar with the factor's sign, so the pooled
  hypothesis sees triples at one bar.
- ``regime``: Markov-switching volatility (a high state of 4x the low one, ~3,000 bars per
  spell), t(5) innovations, events on a fixed absolute threshold: nearly every event falls
  in the few high-volatility spells.

Each keeps events at most one per (symbol, bar) and only where every horizon fits in the
data, as Phase 2's labels do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import polars as pl

from backtest_assets.discovery import phase2
from backtest_assets.discovery.phase2 import Phase2Inputs
from backtest_assets.specs.models import FamiliesSpec, FeesSpec, Phase2Gate
from backtest_assets.stats import inference, multiplicity

N_SYMBOLS = 3
N_BARS = 20_000  # two weeks of 1-minute bars
HORIZONS = (5, 15, 60)  # families.yaml's 5m / 15m / 60m on 1-minute bars
LAG_MULTIPLE = 2  # families.yaml hac_lag_multiple
RHO = 0.6  # correlation of two symbols' innovations
BAR_SIGMA = 1e-3  # unconditional sd of a bar return
K_SIGMA = 2.5  # self-triggered threshold in point-in-time volatilities (t innovations)
K_SIGMA_GAUSS = 2.25  # the same for Gaussian innovations
EWMA_LAMBDA = 0.97  # the point-in-time volatility's decay
# The self-triggered markets: alpha 0.1, beta 0.89, a slow volatility estimate (lambda
# 0.999, ~1,000 bars): in a volatile spell the threshold lags, so hundreds of events fall in
# tens of clusters -- where the null t is off-centre and a HAC standard error too small.
DENSE_GARCH = (0.10, 0.89)
SLOW_LAMBDA = 0.999
MIN_SAMPLE = 30  # gates.yaml min_sample
GENERATORS = ("garch_t", "garch_gauss", "hawkes", "simultaneous", "regime")


@dataclass(frozen=True)
class Market:
    """Bar returns ``(N_SYMBOLS, N_BARS)`` and one event type's events (sorted by time)."""

    returns: np.ndarray
    times: np.ndarray  # int64 bars
    symbols: np.ndarray  # int64 in [0, N_SYMBOLS)
    directions: np.ndarray  # +-1.0


def innovations(rng: np.random.Generator, dist: str, n: int = N_BARS) -> np.ndarray:
    """(N_SYMBOLS, n) unit-variance innovations with a common factor (correlation RHO)."""
    def draw(shape: tuple[int, ...]) -> np.ndarray:
        if dist == "gauss":
            return rng.standard_normal(shape)
        df = int(dist[1:])  # "t4" -> Student t with 4 d.o.f., scaled to unit variance
        return rng.standard_t(df, shape) * math.sqrt((df - 2) / df)

    common = draw((n,))
    return math.sqrt(RHO) * common + math.sqrt(1 - RHO) * draw((N_SYMBOLS, n))


@numba.njit(cache=True)
def _garch(z: np.ndarray, omega: float, alpha: float, beta: float) -> np.ndarray:
    s_n, n = z.shape
    out = np.empty_like(z)
    for s in range(s_n):
        var = omega / (1.0 - alpha - beta)
        for t in range(n):
            out[s, t] = math.sqrt(var) * z[s, t]
            var = omega + alpha * out[s, t] ** 2 + beta * var
    return out


def garch_returns(rng: np.random.Generator, dist: str, alpha: float = 0.08,
                  beta: float = 0.90) -> np.ndarray:
    burn = 2_000
    z = innovations(rng, dist, N_BARS + burn)
    omega = BAR_SIGMA**2 * (1 - alpha - beta)
    return _garch(z, omega, alpha, beta)[:, burn:]


def pit_volatility(returns: np.ndarray, lam: float = EWMA_LAMBDA) -> np.ndarray:
    """EWMA volatility from the returns before each bar (what is known before its close)."""
    var = np.empty_like(returns)
    var[:, 0] = BAR_SIGMA**2
    for t in range(1, returns.shape[1]):  # 20k steps over 3 symbols: fast enough in numpy
        var[:, t] = lam * var[:, t - 1] + (1 - lam) * returns[:, t - 1] ** 2
    return np.sqrt(var)


def _keep(times: np.ndarray, symbols: np.ndarray, directions: np.ndarray,
          returns: np.ndarray) -> Market:
    """One event per (symbol, bar), every horizon inside the data, sorted by time."""
    fits = (times >= 0) & (times + max(HORIZONS) + 1 < N_BARS)
    times, symbols, directions = times[fits], symbols[fits], directions[fits]
    _, first = np.unique(symbols * N_BARS + times, return_index=True)
    order = first[np.argsort(times[first], kind="stable")]
    return Market(returns, times[order].astype(np.int64), symbols[order].astype(np.int64),
                  directions[order].astype(np.float64))


def self_triggered(returns: np.ndarray, threshold: np.ndarray | float) -> Market:
    big = np.abs(returns) > threshold
    symbols, times = np.nonzero(big)
    return _keep(times, symbols, np.sign(returns[symbols, times]), returns)


def garch_t(rng: np.random.Generator) -> Market:
    r = garch_returns(rng, "t4", *DENSE_GARCH)
    return self_triggered(r, K_SIGMA * pit_volatility(r, SLOW_LAMBDA))


def garch_gauss(rng: np.random.Generator) -> Market:
    r = garch_returns(rng, "gauss", *DENSE_GARCH)
    return self_triggered(r, K_SIGMA_GAUSS * pit_volatility(r, SLOW_LAMBDA))


def hawkes_times(rng: np.random.Generator, rate: float, branching: float, mean_delay: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Event times of a Hawkes process by its cluster representation, and each event's
    direction (a child keeps its parent's with probability 0.8)."""
    times = rng.uniform(0, N_BARS, rng.poisson(rate * N_BARS))
    signs = rng.choice([-1.0, 1.0], times.size)
    all_t, all_s = [times], [signs]
    while times.size:
        kids = rng.poisson(branching, times.size)
        parent = np.repeat(np.arange(times.size), kids)
        times = times[parent] + rng.exponential(mean_delay, parent.size)
        keep = rng.random(parent.size) < 0.8
        signs = np.where(keep, signs[parent], rng.choice([-1.0, 1.0], parent.size))
        inside = times < N_BARS
        times, signs = times[inside], signs[inside]
        all_t.append(times)
        all_s.append(signs)
    return np.floor(np.concatenate(all_t)).astype(np.int64), np.concatenate(all_s)


def hawkes(rng: np.random.Generator) -> Market:
    r = garch_returns(rng, "t4")
    parts = [hawkes_times(rng, rate=0.0012, branching=0.85, mean_delay=8.0)
             for _ in range(N_SYMBOLS)]
    times = np.concatenate([t for t, _ in parts])
    symbols = np.concatenate([np.full(t.size, s) for s, (t, _) in enumerate(parts)])
    return _keep(times, symbols, np.concatenate([d for _, d in parts]), r)


def simultaneous(rng: np.random.Generator) -> Market:
    r = garch_returns(rng, "t4")
    market = r.mean(axis=0, keepdims=True)
    big = np.flatnonzero(np.abs(market[0]) > 3.0 * pit_volatility(market)[0])
    times = np.repeat(big, N_SYMBOLS)
    symbols = np.tile(np.arange(N_SYMBOLS), big.size)
    return _keep(times, symbols, np.repeat(np.sign(market[0, big]), N_SYMBOLS), r)


def regime(rng: np.random.Generator) -> Market:
    stay = 1 - 1 / 3_000
    switches = rng.random(N_BARS) > stay
    state = np.cumsum(switches) % 2  # 0 low, 1 high; starts low
    if rng.random() < 0.5:
        state = 1 - state
    vol = np.where(state == 1, 4.0, 1.0)
    vol = vol / math.sqrt(np.mean(vol**2))
    r = BAR_SIGMA * vol * innovations(rng, "t5")
    return self_triggered(r, 3.2 * BAR_SIGMA)


MAKERS = {"garch_t": garch_t, "garch_gauss": garch_gauss, "hawkes": hawkes,
          "simultaneous": simultaneous, "regime": regime}


def signed_returns(market: Market, h: int, effect: float = 0.0,
                   planted: np.ndarray | None = None) -> np.ndarray:
    """Direction x forward return over bars t+1..t+h of every event; ``effect`` (in sd of
    the h-bar return) is added to the events of the ``planted`` symbols."""
    cum = np.concatenate([np.zeros((N_SYMBOLS, 1)), np.cumsum(market.returns, axis=1)],
                         axis=1)
    t, s = market.times, market.symbols
    signed = market.directions * (cum[s, t + h + 1] - cum[s, t + 1])
    if planted is not None and effect:
        signed = signed + np.isin(s, planted) * effect * BAR_SIGMA * math.sqrt(h)
    return signed


# ---- the tests under comparison ------------------------------------------------------------
# Each takes one hypothesis's signed returns, event times (bars) and horizon (bars) and
# returns a two-sided p-value (NaN when there is no test). "+thin" leaves out the events
# inside the horizon of an earlier kept event (stats.inference.non_overlapping), as Phase 2
# does; the cluster lag is LAG_MULTIPLE x the horizon throughout.
def thinned(x: np.ndarray, t: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The events Phase 2 tests: sorted by time, none inside an earlier kept horizon."""
    order = np.argsort(t, kind="stable")
    x, t = x[order], t[order]
    keep = inference.non_overlapping(t, np.full(t.size, h), np.zeros(t.size, dtype=np.int64))
    return x[keep], t[keep]


def _method(test, thin: bool):
    def p_value(x: np.ndarray, t: np.ndarray, h: int) -> float:
        if thin:
            x, t = thinned(x, t, h)
        if x.size < MIN_SAMPLE:
            return 1.0
        return test(x, t, lag=LAG_MULTIPLE * h).p
    return p_value


METHODS = {
    "hac": _method(inference.hac_mean_test, thin=False),
    "cr2": _method(inference.cr2_mean_test, thin=False),
    "signflip": _method(inference.cluster_signflip_test, thin=False),
    "hac+thin": _method(inference.hac_mean_test, thin=True),
    "cr2+thin": _method(inference.cr2_mean_test, thin=True),
    "signflip+thin": _method(inference.cluster_signflip_test, thin=True),
    "signflip+cr2+thin": _method(inference.cluster_mean_test, thin=True),
}


def family_pvalues(market: Market, h: int, method: str, *, effect: float = 0.0,
                   planted: np.ndarray | None = None) -> np.ndarray:
    """p-values of the family (one event type, the continuation template, horizon h): one
    hypothesis per symbol and the pooled ALL; fewer than MIN_SAMPLE events (after thinning,
    for the thinned methods) or no test (one cluster) count as p = 1, as in Phase 2."""
    signed = signed_returns(market, h, effect, planted)
    masks = [market.symbols == s for s in range(N_SYMBOLS)] + [np.ones(signed.size, bool)]
    test = METHODS[method]
    p = np.array([test(signed[m], market.times[m], h) if m.sum() >= MIN_SAMPLE else 1.0
                  for m in masks])
    return np.where(np.isfinite(p), p, 1.0)


def dataset(generator: str, k: int, stream: int | None = None) -> Market:
    """Dataset ``k`` of a generator, seeded by ([stream,] generator, k): reproducible alone."""
    key = [GENERATORS.index(generator), k]
    return MAKERS[generator](np.random.default_rng(key if stream is None else [stream, *key]))


def family_discoveries(market: Market, methods: list[str], q: float, *, effect: float = 0.0,
                       planted: np.ndarray | None = None) -> np.ndarray:
    """(methods, horizons) bool: BH at ``q`` found something in the family (with
    ``planted``: found the first planted symbol)."""
    out = np.zeros((len(methods), len(HORIZONS)), dtype=bool)
    for j, method in enumerate(methods):
        for c, h in enumerate(HORIZONS):
            found = multiplicity.discoveries(multiplicity.bh_qvalues(
                family_pvalues(market, h, method, effect=effect, planted=planted)), q)
            out[j, c] = found.any() if planted is None else found[planted[0]]
    return out


def wilson_ci(k: int, n: int) -> tuple[float, float, float]:
    """Share k/n and its Wilson 95% interval."""
    z = 1.96
    share = k / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return share, centre - half, centre + half


# ---- the same market through Phase 2's own code ----------------------------------------------
SYMBOL_NAMES = tuple(f"S{s}USDT" for s in range(N_SYMBOLS))
T0_US = 1_704_067_200_000_000  # 2024-01-01 00:00 UTC in microseconds


def phase2_inputs(market: Market, effect: float = 0.0, planted: np.ndarray | None = None
                  ) -> Phase2Inputs:
    """The market as Phase 2 reads it from the warehouse: 1-minute bars, the event table
    (symbol, ts, direction), forward labels at the event bars, a regime feature."""
    ts = pl.Series(T0_US + market.times * 60_000_000).cast(pl.Datetime("us"))
    symbols = pl.Series([SYMBOL_NAMES[s] for s in market.symbols], dtype=pl.String)
    events = pl.DataFrame({"symbol": symbols, "ts": ts,
                           "direction": market.directions.astype(np.int8)})
    fwd = {f"fwd_ret_{h}m": market.directions * signed_returns(market, h, effect, planted)
           for h in HORIZONS}  # the label is the unsigned forward return
    labels = pl.DataFrame({"symbol": symbols, "ts_open": ts, **fwd})
    regimes = pl.DataFrame({"symbol": symbols, "ts_open": ts,
                            "rv_48_z": np.abs(fwd[f"fwd_ret_{HORIZONS[0]}m"])})
    return Phase2Inputs(event_type="synthetic_null", symbols=SYMBOL_NAMES, events=events,
                        labels=labels, regimes=regimes, regime_feature="rv_48_z",
                        interval_minutes=1)


def phase2_discoveries(market: Market, families: FamiliesSpec, gate: Phase2Gate,
                       fees: FeesSpec, effect: float = 0.0,
                       planted: np.ndarray | None = None) -> pl.DataFrame:
    """Phase 2 (samples, non-overlapping events, p-values, BH q-values within families) on
    the market: one row per hypothesis with horizon, symbol, status, p, q, discovered."""
    inputs = phase2_inputs(market, effect, planted)
    sample = phase2.samples(inputs, families, gate)
    hyps = phase2.hypotheses(inputs.event_type, inputs.symbols, families)
    bars = {f"fwd_ret_{h}m": h for h in HORIZONS}
    pvals = phase2.pvalues(sample, hyps, families, gate, bars, 1)
    return phase2.fdr(pvals, sample, families, gate, fees).select(
        "rule_template", "horizon", "symbol", "family", "n", "clusters", "status", "t", "p",
        "q", "discovered")
