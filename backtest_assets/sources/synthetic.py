"""Seeded, offline generator of realistic crypto market data (no Dagster here).

:class:`SyntheticSource` answers the :class:`~backtest_assets.sources.base.MarketDataSource`
protocol with perp and spot 1-minute klines, perp mark price and premium index 1-minute
klines, 8-hourly funding rates and 5-minute open interest. The output for ``(seed, symbol,
day, dataset)`` is a pure function of those four values: it does not depend on what else was
generated before, in which order or by which instance, yet prices, basis, volatility state
and open interest are continuous across midnight.

Two layers
----------
*Daily anchors* (one sequence per ``(seed, symbol)``, drawn once from the fixed epoch
2017-01-01 and memoized per instance) give, for every day ``d`` at 00:00 UTC: the perp log
price ``a_d``, the log daily volatility ``v_d``, the slow and fast basis ``m_d``/``u_d``, the
intraday log-vol state ``h_d``, the log open-interest level ``o_d`` and deviation
``δ_d``, and a positioning sentiment ``s_d``. *Intraday paths* of day ``d`` come from an
RNG seeded by ``(seed, crc32(symbol), d)`` and are bridged from the anchors of ``d`` to
those of ``d + 1``, so the last close of a day is the first open of the next.

Days served: 2017-01-02 .. 2040-12-31 (the 00:00 funding rate and taker ratio of a day
need the previous day, so the epoch day itself is not served); other days are
``missing=True``.

Daily anchors (index ``d`` = days since 2017-01-01)
---------------------------------------------------
- ``v_d = log σ_sym + ψ_d``, ``ψ`` a stationary AR(1) with φ = 0.97 and sd 0.30 (daily
  volatility clustering); ``σ_sym`` is the symbol's typical daily volatility.
- ``a_{d+1} = a_d + exp((v_d + v_{d+1}) / 2) · Z``, ``Z ~ N(0, 1)`` (Gaussian on purpose:
  the intraday sum is near-Gaussian given its volatility path, and a fatter-tailed anchor
  would make the bridge below mean-reverting in rank; daily fat tails come from ``v``);
  ``a`` is pinned so that the price at 2024-01-01 00:00 is the symbol's base price.
- ``m_d = 2 bp + AR(1)(φ = 0.9, sd 3 bp, Student-t(4) innovations)``: slow basis level.
- ``u_d``, ``h_d``, ``δ_d``: independent draws from the stationary law of the intraday
  processes below (their intraday AR(1) forgets its start within hours).
- ``o_d = log(OI_sym / P_sym) + 0.08 · years since 2024 + AR(1)(φ = 0.97, sd 0.15)``.
- ``s_d = AR(1)(φ = 0.97, sd 0.12)``.

Intraday perp price (minute ``t = 0..1439``, ``N = 1440``, ``f_t = t / N``)
-------------------------------------------------------------------------
- Log-vol state ``H``: AR(1) ``H_{t+1} = 0.99 H_t + 0.45 √(1 − 0.99²) η_t + 0.5 · 1{jump at
  t}`` (jumps raise the volatility that follows), bridged exactly (Gaussian AR(1) bridge)
  from ``h_d`` to ``h_{d+1}``.
- Minute variance ``σ_t² = exp(2 ((1 − f_t) v_d + f_t v_{d+1})) / N · g_t² · exp(2 H_t −
  2 · 0.45²) · e^{λ ρ_t} / c_J``: ``g`` is the intraday seasonality (a cosine peaking at
  15:00 UTC, amplitude 0.25 in log, plus a US-open bump at 14:30 UTC, normalised to mean
  square 1); ``c_J = 1 + 4 · 2² · E[k²] / N`` (≈ 3.8) removes the expected variance of the
  jumps and their drift; ``ρ_t`` is a trapezoid (0 at midnight, 1 after two hours) and ``λ``
  is solved so that the day's total variance ``Σ σ_t² (1 + T_t² k_t²)`` equals the anchor
  variance ``exp(v_d + v_{d+1})``.
- Shocks ``x_t = σ_t (ε_t + k_t) + d_t``: ``ε`` unit-variance Student-t(5); jumps ``k_t``
  arrive Poisson(4 per day) at uniform minutes with random sign and size ``10 + Exp(5)``
  sigmas (~7.7 sigmas of the total minute volatility); ``d_t`` is the planted
  post-jump drift and ``T_t`` its multiplier (section "Planted effects" below).
- Bridge: ``r_t = x_t + (a_{d+1} − a_d − Σ x) · w_t / Σ w`` with ``w_t = Cov(x_t, Σ x)``
  (the signs of the jumps random): ``σ_t² (1 + T_t k_t²)`` at a jump minute, plus ``κ T_j
  σ_j² k_j² / H`` on each drift minute of a jump at ``j``. Because the anchor and intraday
  variances match and the weights are covariances, the bridge is the Gaussian conditional
  mean and the bridged returns keep the covariances of the free ones: the return so far
  does not linearly predict the rest of the day, except for the planted drift.
- ``L_0 = a_d``, ``L_{t+1} = L_t + r_t`` (``L_N = a_{d+1}``): open_t = exp(L_t),
  close_t = exp(L_{t+1}) (the perp open is exactly the previous close).

Basis and spot
--------------
``b_t = (1 − f_t) m_d + f_t m_{d+1} + u_t``, spot log price ``L_t − b_t``. The fast part is an
AR(1) ``u_{t+1} = 0.98 u_t + 0.5 bp · e_t + 0.05 r̃_t + D_t`` (the perp leads, spot follows;
``e`` Student-t(4); ``r̃_t = σ_t ε_t + σ_t² (a_{d+1} − a_d − Σ x) / Σ w`` is the perp's
diffusive return, without the jumps and their drift, which spot therefore shares in full),
with dislocations ``D``: Poisson(0.3 per day), random sign,
``6 + Exp(6)`` bp, decaying with the AR(1) (half-life ~34 min); bridged from ``u_d`` to
``u_{d+1}``.

Bars, volume and order flow (both markets)
------------------------------------------
- high = exp(max(L_t, L_{t+1}) + 0.4 σ_t E₁), low = exp(min(..) − 0.4 σ_t E₂), E ~ Exp(1).
- ``log V_t = log(Q_sym / P_day) − 0.36 · weekend + 0.8 log(σ_t √(N c_J) / σ_sym) + 0.6
  log(0.3 + |z_t|) + log(1 + |k_t|) + 0.6 ξ_t`` (``z_t = r_t / σ_t``, ``Q_sym`` the typical
  quote volume per minute, ``P_day`` the price at 00:00; a jump minute trades ``1 + |k|``
  times more, forced closes, so its volume grows like its move; jump minutes carry ~14 % of
  the volume). Spot: the same with ``log share_sym`` added, its own ``z``
  and noise ``0.4 ξ'_t``.
- taker_buy_volume = V · logistic(0.4 z_t + F_t + 0.35 ζ_t), ``F`` a persistent order-flow
  AR(1) (φ = 0.9, sd 0.25) shared by both markets, ``ζ`` per market: the buy share leans
  with the return and is always below 1.
- quote volumes use the bar's (o + h + l + c) / 4 as price; trade_count = V · close /
  (trade notional · lognormal(0.25)), at least 1.

Funding (00:00, 08:00, 16:00 UTC; funding_interval_hours = 8)
--------------------------------------------------------------
Binance's rule on the premium ``P`` = mean basis of the 8 hours before the fixing (known at
that time): ``F = I + sign(P − I) · max(|P − I| − 5 bp, 0)``, ``I = 1 bp`` (0.01 %), clipped
to ±0.0075. Most rates are exactly 0.0001; persistent basis regimes give runs away from it.
mark_price = the perp price at the fixing minute.

Mark price and premium index (perp, 1-minute klines as Binance's ``markPriceKlines`` and
``premiumIndexKlines``)
-------------------------------------------------------------------------------------------
- The mark is the last price without part of its minute-scale noise: ``log mark = L − e``,
  ``e`` (last over mark) a mean-reverting AR(1) (φ = 0.9 per minute, stationary sd 1 bp,
  Gaussian) bridged between midnight anchors drawn from the stationary law, so it is
  continuous across midnight. Its draws come from their own streams (seed, symbol, 3, day):
  the other datasets do not change with it. mark open/close = ``exp(L_t − e_t)``,
  ``exp(L_{t+1} − e_{t+1})``; its wicks are half the last price's (the mark is smoother):
  high = max(open, close) · (last high / max(last open, last close))^0.5, low alike. So the
  mark's bar extremes differ from last's in every bar, by a few bp at most.
- The premium index is ``(mark − index) / index`` with the spot path as the index: open and
  close ``exp(b_t − e_t) − 1`` (the basis ``b`` above less ``e``), high and low with the
  mark's (log) wicks: ``exp(max(x_o, x_c) + w↑) − 1``. A signed rate of a few bp.
- Volumes are 0 and ``trade_count`` is the number of index samples Binance counts (60 for
  the mark, 12 for the premium index), as in the archive files.

Open interest (5-minute stamps ``j = 0..287``)
-----------------------------------------------
``log OI_j = (1 − j/288) o_d + (j/288) o_{d+1} + D_j``, ``D`` an AR(1) (φ = 0.99 per
5 min, innovation sd 0.15 %) driven by a build-up drift (0.02 % per 5 min, the mean flush)
and flushes ``min(0.012 · (|z5| − 2.5)₊ · lognormal(0.3), 0.25)``, ``z5`` the perp return
of the 5 minutes before the stamp over its diffusive sd (large moves liquidate positions),
bridged from ``δ_d`` to ``δ_{d+1}``: OI builds slowly and drops sharply.
open_interest_value = OI × perp price at the stamp.
taker_ls_vol_ratio = taker buy / taker sell perp volume of the 5 minutes before the stamp;
toptrader_ls_ratio_count = exp(log 1.2 + S_j + 0.03 n), toptrader_ls_ratio_sum =
exp(log 1.5 + 1.5 S_j + 0.03 n), ls_ratio_count = exp(log 1.1 + 0.8 S_j + 0.03 n) with
``S_j`` the sentiment interpolated between ``s_d`` and ``s_{d+1}``. None is null.

Planted effects (synthetic truth)
---------------------------------
Exactly one predictable effect is planted, so that event studies have a known answer:

*Post-jump drift.* A jump of log size ``J_j = σ_j k_j`` at minute ``j`` is followed by a
drift in its direction: ``d_t = κ J_j / H`` on each minute ``t = j + 1 .. j + H``, with
**κ = 1** and **H = 60** (linear: over the next hour the price moves a further κ · J).
Jumps raise the volatility that follows too (above), so the drift is ~0.35 sd of the
next hour's move, per jump. The drift is day-local: minutes past midnight are dropped, so a
jump in the last hour keeps only ``reach_j = min(H, N − 1 − j) / H`` of it and its total
move is ``T_j J_j``, ``T_j = 1 + κ reach_j`` (a day generated alone equals the day among
others). The bridge cannot cancel it: its weights are covariances (above), so the jump and
its drift are shrunk alike. Over 2024 (3 symbols, seed 7) the jump minute's return is 0.83
J on average and the least-squares slope of the perp's move over the next 60 minutes on
that return is 1.01 ≈ κ. Spot drifts alike (the basis only follows diffusive returns) and a
jump minute trades heavy volume (above), so neither the basis nor illiquidity measures
see the jumps. Jumps are larger and more frequent than a realistic baseline would need
(4 a day of 10 + Exp(5) diffusive sigmas; jumps and drift carry ~74 % of the daily
variance, the jumps alone ~18 %) so that one month of three symbols detects the effect.

*Expected truth per event type* (specs/events; "continuation" = forward return signed with
the event's direction; 5m bars, labels ``ln(open[t+1+h] / open[t+1])``):

- ``volatility_shock`` (rv_12_z > 3, direction sign(ret_12)): most events (~60 %) fire
  within 45 minutes of a jump, their direction mostly the jump's: **continuation > 0**,
  growing with the horizon (60m ≈ 75-100 bp; 5m and 15m below 2× round-trip costs);
  mean_reversion < 0.
- ``vol_compression_breakout`` (|ret_1_z| > 3 after a calm bar, direction sign(ret_1)): the
  1-bar move is nearly always a jump: **continuation > 0** (60m ≈ 60-85 bp; few events).
- ``oi_flush`` (oi_change_z < −3, direction sign(ret_12)): flushes follow large 5-minute
  moves, i.e. jumps: **continuation > 0** (60m ≈ 70-105 bp).
- ``basis_dislocation``, ``funding_extreme`` (the basis ignores jumps) and
  ``liquidity_vacuum`` (a jump bar is not illiquid): **null** at every horizon.

Measured on the demo window (2024-01-01 .. 01-31, BTCUSDT/ETHUSDT/SOLUSDT, seed 7;
events per 10k bars, pooled 60m continuation mean and naive t; 26,784 bars):

=========================  ===  ========  =======  ======
event type                  n    per 10k   mean bp  t
=========================  ===  ========  =======  ======
volatility_shock            94   35.1      87.4     4.86
oi_flush                    93   34.7      104.0    7.28
vol_compression_breakout    23   8.6       64.7     3.41
basis_dislocation           78   29.1      9.5      0.74
funding_extreme             12   4.5       15.7     0.83
liquidity_vacuum            31   11.6      -2.7     -0.20
=========================  ===  ========  =======  ======

volatility_shock is positive in each of the 5 ISO weeks. Over full years (2024, seeds 7-21)
the three nulls stay within |t| < 2.2 (means within ±13 bp, liquidity_vacuum averaging
+3 bp: a jump bar can still sit in its 1-hour Amihud window) while volatility_shock has
t ≈ 15-19. tests/unit/test_synthetic_truth.py measures and asserts this table.

Extending
---------
:func:`_simulate_day` turns one day's anchors and :class:`_Shocks` (every random draw of
the day, as arrays) into all datasets; planted effects belong there or in the paths it
calls (the post-jump drift lives in :func:`_price_path`). Document each one above.

Raw file records
----------------
status "generated", path None, url ``synthetic://seed=7/perp/klines_1m/BTCUSDT/2024-01-01``;
sha256 and size are of the frame serialised as an uncompressed Arrow IPC file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.signal import lfilter

from backtest_assets.core.frames import (
    FUNDING_SCHEMA,
    KLINE_SCHEMA,
    OPEN_INTEREST_SCHEMA,
    conform,
    empty,
)
from backtest_assets.core.keys import validate_date, validate_symbol
from backtest_assets.sources.base import Market, RawFileRecord, SourceBatch

_EPOCH = dt.date(2017, 1, 1)
_FIRST_DAY = _EPOCH + dt.timedelta(days=1)
_LAST_DAY = dt.date(2040, 12, 31)
_PRICE_REFERENCE_DAY = dt.date(2024, 1, 1)

_N = 1440  # minutes per day
_OI_STEP = 5
_M = _N // _OI_STEP  # open-interest stamps per day
_FUNDING_HOURS = 8
_FUNDING_MINUTES = np.arange(0, _N, _FUNDING_HOURS * 60)

# Daily anchors
_DAILY_VOL_PHI, _DAILY_VOL_SD = 0.97, 0.30
_BASIS_MEAN, _BASIS_SLOW_PHI, _BASIS_SLOW_SD, _BASIS_SLOW_DOF = 2e-4, 0.9, 3e-4, 4.0
_OI_TREND_PER_YEAR, _OI_LEVEL_PHI, _OI_LEVEL_SD = 0.08, 0.97, 0.15
_SENTIMENT_PHI, _SENTIMENT_SD = 0.97, 0.12

# Intraday price and volatility
_RETURN_DOF = 5.0
_VOL_STATE_PHI, _VOL_STATE_SD, _JUMP_VOL_IMPULSE = 0.99, 0.45, 0.5
_JUMPS_PER_DAY, _JUMP_MIN_SIGMAS, _JUMP_EXTRA_SIGMAS = 4.0, 10.0, 5.0
# Planted effect (module docstring, "Planted effects"): after a jump of log size J the price
# drifts a further κ·J, evenly over the next _DRIFT_MINUTES minutes (truncated at midnight).
_JUMP_DRIFT_KAPPA, _DRIFT_MINUTES = 1.0, 60
# Expected variance of a jump and its drift, (1 + κ)² E[k²] with E[k²] = m² + 2mc + 2c² for
# k = m + Exp(c), relative to the diffusive variance: removed up front so that λ (below) is
# centred on 0.
_JUMP_VAR_SHARE = (
    _JUMPS_PER_DAY
    * (1 + _JUMP_DRIFT_KAPPA) ** 2
    * (_JUMP_MIN_SIGMAS**2 + 2 * _JUMP_MIN_SIGMAS * _JUMP_EXTRA_SIGMAS + 2 * _JUMP_EXTRA_SIGMAS**2)
    / _N
)
_RAMP_MINUTES = 120

# Basis (fast part)
_BASIS_PHI, _BASIS_NOISE, _BASIS_BETA, _BASIS_DOF = 0.98, 0.5e-4, 0.05, 4.0
_DISLOCATIONS_PER_DAY, _DISLOCATION_MIN, _DISLOCATION_EXTRA = 0.3, 6e-4, 6e-4

# Bars, volume and order flow
_WICK_SCALE = 0.4
_WEEKEND_LOG_VOLUME = np.log(0.7)
_VOLUME_VOL_ELASTICITY, _VOLUME_MOVE_ELASTICITY, _VOLUME_NOISE = 0.8, 0.6, 0.6
_SPOT_VOLUME_NOISE = 0.4
_JUMP_VOLUME_LOADING = 1.0  # a jump minute trades (1 + |k|) times more: forced closes
_FLOW_RETURN_LOADING, _FLOW_PHI, _FLOW_SD, _FLOW_NOISE = 0.4, 0.9, 0.25, 0.35
_TRADE_SIZE_NOISE = 0.25

# Funding
_FUNDING_INTEREST, _FUNDING_DEAD_ZONE, _FUNDING_CAP = 1e-4, 5e-4, 0.0075

# Open interest
_OI_PHI, _OI_NOISE, _OI_BUILD = 0.99, 0.0015, 0.0002
_FLUSH_THRESHOLD, _FLUSH_PER_SIGMA, _FLUSH_NOISE, _FLUSH_CAP = 2.5, 0.012, 0.3, 0.25
_RATIO_NOISE = 0.03

# Mark price and premium index
_MARK_DEV_PHI, _MARK_DEV_SD, _MARK_WICK_SHARE = 0.9, 1e-4, 0.5
_MARK_SAMPLES, _PREMIUM_SAMPLES = 60, 12  # Binance's count of index samples per 1m bar

_STREAM_ANCHORS, _STREAM_DAY, _STREAM_PROFILE, _STREAM_MARK = 0, 1, 2, 3
_DAY_CACHE_SIZE = 16


@dataclass(frozen=True)
class _Profile:
    """A symbol's scale: price at 2024-01-01, daily vol, quote volumes, trade sizes, OI."""

    price: float
    daily_vol: float
    perp_quote_per_minute: float
    spot_share: float
    perp_trade_notional: float
    spot_trade_notional: float
    oi_notional: float


_KNOWN_PROFILES = {
    "BTCUSDT": _Profile(40_000.0, 0.030, 10e6, 0.30, 3_500.0, 600.0, 4e9),
    "ETHUSDT": _Profile(2_300.0, 0.038, 5e6, 0.30, 2_000.0, 400.0, 2.5e9),
    "SOLUSDT": _Profile(100.0, 0.055, 1.5e6, 0.35, 1_200.0, 300.0, 6e8),
}


def _symbol_hash(symbol: str) -> int:
    # Python's hash() is salted per process; crc32 is stable everywhere.
    return zlib.crc32(symbol.encode("ascii"))


def _rng(*entropy: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(entropy))))


def _profile(symbol: str) -> _Profile:
    if symbol in _KNOWN_PROFILES:
        return _KNOWN_PROFILES[symbol]
    u = [float(x) for x in _rng(_symbol_hash(symbol), _STREAM_PROFILE).random(7)]
    return _Profile(
        price=10 ** (-1.5 + 4.5 * u[0]),
        daily_vol=0.04 + 0.04 * u[1],
        perp_quote_per_minute=10 ** (5 + 1.3 * u[2]),
        spot_share=0.2 + 0.3 * u[3],
        perp_trade_notional=300 + 1200 * u[4],
        spot_trade_notional=100 + 300 * u[5],
        oi_notional=10 ** (7.5 + 1.3 * u[6]),
    )


def _unit_t(rng: np.random.Generator, dof: float, size: int | tuple[int, ...]) -> np.ndarray:
    return rng.standard_t(dof, size) * np.sqrt((dof - 2) / dof)


def _stationary_ar1(z: np.ndarray, phi: float, sd: float) -> np.ndarray:
    """AR(1) with stationary sd ``sd`` from standard-normal-like innovations ``z``."""
    innov = sd * np.sqrt(1 - phi**2) * z
    innov[0] = sd * z[0]  # start in the stationary law
    return lfilter([1.0], [1.0, -phi], innov)


def _ar1_bridge(start: float, end: float, innov: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) path from ``start`` driven by ``innov``, conditioned to reach ``end``.

    Returns ``len(innov) + 1`` points. The correction is the Gaussian conditional mean given
    the endpoint, so it concentrates where the endpoint is informative (near the end when
    the process forgets fast).
    """
    n = innov.size
    steps = np.arange(n + 1)
    free = np.empty(n + 1)
    free[0] = start
    free[1:] = lfilter([1.0], [1.0, -phi], innov) + start * phi ** steps[1:]
    weight = phi ** (n - steps) * (1 - phi ** (2 * steps)) / (1 - phi ** (2 * n))
    path = free + weight * (end - free[-1])
    path[-1] = end  # bit-exact continuity with the next day's start
    return path


def _interpolate(first: float, last: float, frac: np.ndarray) -> np.ndarray:
    # This form returns ``last`` exactly at frac = 1 and ``first`` at 0.
    return first * (1 - frac) + last * frac


def _seasonality() -> np.ndarray:
    hours = (np.arange(_N) + 0.5) / 60
    log_g = 0.25 * np.cos(2 * np.pi * (hours - 15) / 24) + 0.3 * np.exp(
        -0.5 * ((hours - 14.5) / 0.75) ** 2
    )
    g = np.exp(log_g)
    return g / np.sqrt(np.mean(g**2))


_SEASON = _seasonality()
_RAMP = np.minimum(1.0, np.minimum(np.arange(_N) + 0.5, _N - np.arange(_N) - 0.5) / _RAMP_MINUTES)
_DAY_FRAC = np.arange(_N + 1) / _N
_OI_FRAC = np.arange(_M + 1) / _M
_MINUTE_OFFSETS = np.arange(_N) * np.timedelta64(1, "m")
_OI_OFFSETS = np.arange(_M) * np.timedelta64(_OI_STEP, "m")
_FUNDING_OFFSETS = _FUNDING_MINUTES * np.timedelta64(1, "m")


@dataclass(frozen=True)
class _Anchors:
    """Daily state at 00:00 UTC, indexed by days since the epoch (see module docstring)."""

    log_price: np.ndarray
    log_vol: np.ndarray
    basis_slow: np.ndarray
    basis_fast: np.ndarray
    vol_state: np.ndarray
    oi_level: np.ndarray
    oi_dev: np.ndarray
    sentiment: np.ndarray


def _build_anchors(seed: int, symbol: str, profile: _Profile) -> _Anchors:
    n = (_LAST_DAY - _EPOCH).days + 2  # every served day also needs the next midnight
    rng = _rng(seed, _symbol_hash(symbol), _STREAM_ANCHORS)
    days = np.arange(n)
    log_vol = np.log(profile.daily_vol) + _stationary_ar1(
        rng.standard_normal(n), _DAILY_VOL_PHI, _DAILY_VOL_SD
    )
    day_returns = np.exp((log_vol[:-1] + log_vol[1:]) / 2) * rng.standard_normal(n - 1)
    log_price = np.concatenate([[0.0], np.cumsum(day_returns)])
    log_price += np.log(profile.price) - log_price[(_PRICE_REFERENCE_DAY - _EPOCH).days]
    basis_slow = _BASIS_MEAN + _stationary_ar1(
        _unit_t(rng, _BASIS_SLOW_DOF, n), _BASIS_SLOW_PHI, _BASIS_SLOW_SD
    )
    minute_vol = profile.daily_vol / np.sqrt(_N)
    basis_fast_sd = np.sqrt(
        (_BASIS_NOISE**2 + (_BASIS_BETA * minute_vol) ** 2) / (1 - _BASIS_PHI**2)
    )
    basis_fast = basis_fast_sd * rng.standard_normal(n)
    vol_state = _VOL_STATE_SD * rng.standard_normal(n)
    years = (days - (_PRICE_REFERENCE_DAY - _EPOCH).days) / 365.25
    oi_level = (
        np.log(profile.oi_notional / profile.price)
        + _OI_TREND_PER_YEAR * years
        + _stationary_ar1(rng.standard_normal(n), _OI_LEVEL_PHI, _OI_LEVEL_SD)
    )
    oi_dev = _OI_NOISE / np.sqrt(1 - _OI_PHI**2) * rng.standard_normal(n)
    sentiment = _stationary_ar1(rng.standard_normal(n), _SENTIMENT_PHI, _SENTIMENT_SD)
    return _Anchors(
        log_price, log_vol, basis_slow, basis_fast, vol_state, oi_level, oi_dev, sentiment
    )


@dataclass(frozen=True)
class _Shocks:
    """Every random draw of one symbol-day, by role; the paths are functions of these."""

    eps: np.ndarray  # (N,) unit-variance Student-t return shocks
    vol_innov: np.ndarray  # (N,) N(0, 1) innovations of the log-vol state
    jump: np.ndarray  # (N,) signed jump sizes in minute sigmas, 0 where none
    basis_innov: np.ndarray  # (N,) unit-variance Student-t basis noise
    dislocation: np.ndarray  # (N,) signed basis jumps in log units, 0 where none
    wick: np.ndarray  # (4, N) Exp(1): perp up, perp down, spot up, spot down
    volume_noise: np.ndarray  # (2, N) N(0, 1): perp, spot
    flow_noise: np.ndarray  # (3, N) N(0, 1): persistent flow, perp, spot
    size_noise: np.ndarray  # (2, N) N(0, 1): perp, spot trade sizes
    oi_innov: np.ndarray  # (M,) N(0, 1)
    flush_noise: np.ndarray  # (M,) N(0, 1)
    ratio_noise: np.ndarray  # (3, M) N(0, 1)


def _sparse_jumps(
    rng: np.random.Generator, rate: float, minimum: float, extra: float
) -> np.ndarray:
    out = np.zeros(_N)
    count = rng.poisson(rate)
    minutes = rng.integers(0, _N, count)
    sizes = rng.choice([-1.0, 1.0], count) * (minimum + rng.exponential(extra, count))
    np.add.at(out, minutes, sizes)
    return out


def _draw_shocks(seed: int, symbol: str, day_index: int) -> _Shocks:
    rng = _rng(seed, _symbol_hash(symbol), _STREAM_DAY, day_index)
    return _Shocks(
        eps=_unit_t(rng, _RETURN_DOF, _N),
        vol_innov=rng.standard_normal(_N),
        jump=_sparse_jumps(rng, _JUMPS_PER_DAY, _JUMP_MIN_SIGMAS, _JUMP_EXTRA_SIGMAS),
        basis_innov=_unit_t(rng, _BASIS_DOF, _N),
        dislocation=_sparse_jumps(rng, _DISLOCATIONS_PER_DAY, _DISLOCATION_MIN, _DISLOCATION_EXTRA),
        wick=rng.standard_exponential((4, _N)),
        volume_noise=rng.standard_normal((2, _N)),
        flow_noise=rng.standard_normal((3, _N)),
        size_noise=rng.standard_normal((2, _N)),
        oi_innov=rng.standard_normal(_M),
        flush_noise=rng.standard_normal(_M),
        ratio_noise=rng.standard_normal((3, _M)),
    )


def _solve_ramp(var: np.ndarray, target: float) -> float:
    """λ such that ``Σ var · exp(λ ρ) = target`` (Newton on a convex increasing function)."""
    lam = 0.0
    log_target = np.log(target)
    for _ in range(50):
        w = var * np.exp(lam * _RAMP)
        total = w.sum()
        step = (np.log(total) - log_target) * total / (w @ _RAMP)
        lam -= step
        if abs(step) < 1e-10:
            break
    return lam


@dataclass(frozen=True)
class _PricePath:
    log_price: np.ndarray  # (N + 1,) perp log price at minute boundaries
    returns: np.ndarray  # (N,)
    sigma: np.ndarray  # (N,) diffusive minute volatility
    diffusive: np.ndarray  # (N,) diffusive shocks with their share of the bridge


def _drift_reach(jump: np.ndarray) -> np.ndarray:
    """Share of a jump's drift that falls before midnight, per minute (0 without a jump)."""
    left = _N - 1 - np.arange(_N)  # minutes after t within the day
    return (jump != 0) * np.minimum(left, _DRIFT_MINUTES) / _DRIFT_MINUTES


def _after_jumps(value: np.ndarray, kappa: float = _JUMP_DRIFT_KAPPA) -> np.ndarray:
    """κ · value_t / H on each of the minutes t + 1 .. t + H after a jump minute t."""
    rate = kappa * value / _DRIFT_MINUTES
    steps = np.zeros(_N + _DRIFT_MINUTES + 1)
    (at,) = np.nonzero(value)
    steps[at + 1] += rate[at]
    steps[at + 1 + _DRIFT_MINUTES] -= rate[at]
    return np.cumsum(steps[:_N])


def _price_path(anchors: _Anchors, i: int, shocks: _Shocks,
                kappa: float = _JUMP_DRIFT_KAPPA) -> _PricePath:
    impulse = (shocks.jump != 0) * _JUMP_VOL_IMPULSE  # a jump at t raises vol from t + 1
    vol_state = _ar1_bridge(
        anchors.vol_state[i],
        anchors.vol_state[i + 1],
        _VOL_STATE_SD * np.sqrt(1 - _VOL_STATE_PHI**2) * shocks.vol_innov + impulse,
        _VOL_STATE_PHI,
    )[:-1]
    log_vol = _interpolate(anchors.log_vol[i], anchors.log_vol[i + 1], _DAY_FRAC[:-1])
    base_var = (
        np.exp(2 * log_vol + 2 * vol_state - 2 * _VOL_STATE_SD**2)
        * _SEASON**2
        / (_N * (1 + _JUMP_VAR_SHARE))
    )
    # A jump J at t moves the price by T·J in all, T = 1 + κ·reach: J at t, then the drift.
    # λ matches the day's variance including T²·J²; the bridge weight of each minute is its
    # covariance with the day's sum (the jump minute T·J², each drift minute κ·T·J² / H), so
    # the bridged path keeps the covariance of the free one: jump and drift shrink alike.
    total = 1 + kappa * _drift_reach(shocks.jump)
    lam = _solve_ramp(
        base_var * (1 + (total * shocks.jump) ** 2),
        np.exp(anchors.log_vol[i] + anchors.log_vol[i + 1]),
    )
    var = base_var * np.exp(lam * _RAMP)
    sigma = np.sqrt(var)
    x = sigma * (shocks.eps + shocks.jump) + _after_jumps(sigma * shocks.jump, kappa)
    jump_cov = total * var * shocks.jump**2
    weight = var + jump_cov + _after_jumps(jump_cov, kappa)
    day_return = anchors.log_price[i + 1] - anchors.log_price[i]
    correction = (day_return - x.sum()) / weight.sum()
    returns = x + correction * weight
    log_price = np.empty(_N + 1)
    log_price[0] = anchors.log_price[i]
    log_price[1:] = anchors.log_price[i] + np.cumsum(returns)
    log_price[-1] = anchors.log_price[i + 1]
    diffusive = sigma * shocks.eps + correction * var
    return _PricePath(log_price, np.diff(log_price), sigma, diffusive)


def _basis_path(anchors: _Anchors, i: int, shocks: _Shocks, path: _PricePath) -> np.ndarray:
    # The basis follows the perp's diffusive returns, not its jumps nor their drift: spot
    # jumps and drifts alike, so jumps do not dislocate the basis.
    fast = _ar1_bridge(
        anchors.basis_fast[i],
        anchors.basis_fast[i + 1],
        _BASIS_NOISE * shocks.basis_innov + _BASIS_BETA * path.diffusive + shocks.dislocation,
        _BASIS_PHI,
    )
    return _interpolate(anchors.basis_slow[i], anchors.basis_slow[i + 1], _DAY_FRAC) + fast


def _bars(
    log_price: np.ndarray,
    sigma: np.ndarray,
    shocks: _Shocks,
    k: int,
    base_log_volume: np.ndarray,
    volume_noise: float,
    flow: np.ndarray,
    trade_notional: float,
) -> dict[str, np.ndarray]:
    """Kline columns of market ``k`` (0 perp, 1 spot) from its log path and the day's drivers."""
    z = np.diff(log_price) / sigma
    open_ = np.exp(log_price[:-1])
    close = np.exp(log_price[1:])
    wick = _WICK_SCALE * sigma * shocks.wick[2 * k : 2 * k + 2]
    high = np.exp(np.maximum(log_price[:-1], log_price[1:]) + wick[0])
    low = np.exp(np.minimum(log_price[:-1], log_price[1:]) - wick[1])
    volume = np.exp(
        base_log_volume
        + _VOLUME_MOVE_ELASTICITY * np.log(0.3 + np.abs(z))
        + volume_noise * shocks.volume_noise[k]
    )
    flow_logit = _FLOW_RETURN_LOADING * z + flow + _FLOW_NOISE * shocks.flow_noise[1 + k]
    taker = volume / (1 + np.exp(-flow_logit))
    price = (open_ + high + low + close) / 4
    trade_size = trade_notional * np.exp(_TRADE_SIZE_NOISE * shocks.size_noise[k])
    count = np.maximum(1, np.rint(volume * close / trade_size)).astype(np.int64)
    return {
        "open": open_,
        "high": high,
        "low": low,
        "close": close,
        "volume": volume,
        "quote_volume": volume * price,
        "trade_count": count,
        "taker_buy_volume": taker,
        "taker_buy_quote_volume": taker * price,
    }


@dataclass(frozen=True)
class _Day:
    """Everything generated for one symbol-day; the public methods only format it."""

    log_price: np.ndarray  # (N + 1,) perp
    basis: np.ndarray  # (N + 1,)
    perp: dict[str, np.ndarray]
    spot: dict[str, np.ndarray]
    open_interest: np.ndarray  # (M,)
    ratios: np.ndarray  # (3, M): toptrader count, toptrader sum, long/short count


def _open_interest(
    anchors: _Anchors, i: int, shocks: _Shocks, path: _PricePath
) -> tuple[np.ndarray, np.ndarray]:
    moves = path.log_price[_OI_STEP::_OI_STEP] - path.log_price[:-1:_OI_STEP]
    move_sd = np.sqrt((path.sigma**2).reshape(_M, _OI_STEP).sum(axis=1))
    excess = np.maximum(np.abs(moves) / move_sd - _FLUSH_THRESHOLD, 0.0)
    flush = np.minimum(
        _FLUSH_PER_SIGMA * excess * np.exp(_FLUSH_NOISE * shocks.flush_noise), _FLUSH_CAP
    )
    deviation = _ar1_bridge(
        anchors.oi_dev[i],
        anchors.oi_dev[i + 1],
        _OI_NOISE * shocks.oi_innov + _OI_BUILD - flush,
        _OI_PHI,
    )
    level = _interpolate(anchors.oi_level[i], anchors.oi_level[i + 1], _OI_FRAC)
    open_interest = np.exp(level + deviation)[:_M]
    sentiment = _interpolate(anchors.sentiment[i], anchors.sentiment[i + 1], _OI_FRAC[:-1])
    ratios = np.exp(
        np.log([[1.2], [1.5], [1.1]])
        + np.array([[1.0], [1.5], [0.8]]) * sentiment
        + _RATIO_NOISE * shocks.ratio_noise
    )
    return open_interest, ratios


def _simulate_day(
    profile: _Profile, anchors: _Anchors, i: int, shocks: _Shocks, weekend: bool,
    kappa: float = _JUMP_DRIFT_KAPPA,
) -> _Day:
    """One symbol-day of every dataset from the anchors of ``i``, ``i + 1`` and the shocks."""
    path = _price_path(anchors, i, shocks, kappa)
    basis = _basis_path(anchors, i, shocks, path)
    base_log_volume = (
        np.log(profile.perp_quote_per_minute)
        - path.log_price[0]
        + _WEEKEND_LOG_VOLUME * weekend
        + _VOLUME_VOL_ELASTICITY
        * np.log(path.sigma * np.sqrt(_N * (1 + _JUMP_VAR_SHARE)) / profile.daily_vol)
        + _JUMP_VOLUME_LOADING * np.log1p(np.abs(shocks.jump))
    )
    flow = _stationary_ar1(shocks.flow_noise[0], _FLOW_PHI, _FLOW_SD)
    perp = _bars(
        path.log_price,
        path.sigma,
        shocks,
        0,
        base_log_volume,
        _VOLUME_NOISE,
        flow,
        profile.perp_trade_notional,
    )
    spot = _bars(
        path.log_price - basis,
        path.sigma,
        shocks,
        1,
        base_log_volume + np.log(profile.spot_share),
        _SPOT_VOLUME_NOISE,
        flow,
        profile.spot_trade_notional,
    )
    open_interest, ratios = _open_interest(anchors, i, shocks, path)
    return _Day(path.log_price, basis, perp, spot, open_interest, ratios)


def _funding_rates(premium: np.ndarray) -> np.ndarray:
    excess = premium - _FUNDING_INTEREST
    dead_zoned = np.sign(excess) * np.maximum(np.abs(excess) - _FUNDING_DEAD_ZONE, 0.0)
    return np.clip(_FUNDING_INTEREST + dead_zoned, -_FUNDING_CAP, _FUNDING_CAP)


def _taker_ratio(bars: dict[str, np.ndarray]) -> np.ndarray:
    """Taker buy / sell volume of each 5-minute window of the day."""
    buy = bars["taker_buy_volume"].reshape(_M, _OI_STEP).sum(axis=1)
    sell = bars["volume"].reshape(_M, _OI_STEP).sum(axis=1) - buy
    return buy / sell


def mark_deviation(seed: int, symbol: str, day: dt.date) -> np.ndarray:
    """``e`` = log(last / mark) at the ``N + 1`` minute boundaries of ``day`` (module
    docstring, "Mark price and premium index"): a pure function of its arguments."""
    h, i = _symbol_hash(symbol), (day - _EPOCH).days
    start, end = (_MARK_DEV_SD * _rng(seed, h, _STREAM_MARK, d, 0).standard_normal()
                  for d in (i, i + 1))
    innov = _rng(seed, h, _STREAM_MARK, i, 1).standard_normal(_N)
    return _ar1_bridge(start, end, _MARK_DEV_SD * np.sqrt(1 - _MARK_DEV_PHI**2) * innov,
                       _MARK_DEV_PHI)


def mark_and_premium(
    last: dict[str, np.ndarray],
    deviation: tuple[np.ndarray, np.ndarray],
    index: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mark price and premium index kline columns of the bars ``last`` (open, high, low,
    close), given ``e`` at each bar's open and close (``deviation``) and the index price
    at each bar's open and close (``index``); module docstring for the model."""
    lo, lc = np.log(last["open"]), np.log(last["close"])
    up = _MARK_WICK_SHARE * np.maximum(np.log(last["high"]) - np.maximum(lo, lc), 0.0)
    down = _MARK_WICK_SHARE * np.maximum(np.minimum(lo, lc) - np.log(last["low"]), 0.0)
    mo, mc = lo - deviation[0], lc - deviation[1]
    xo, xc = mo - np.log(index[0]), mc - np.log(index[1])
    mark = _sampled_bars(np.exp(mo), np.exp(np.maximum(mo, mc) + up),
                         np.exp(np.minimum(mo, mc) - down), np.exp(mc), _MARK_SAMPLES)
    premium = _sampled_bars(np.expm1(xo), np.expm1(np.maximum(xo, xc) + up),
                            np.expm1(np.minimum(xo, xc) - down), np.expm1(xc), _PREMIUM_SAMPLES)
    return mark, premium


def _sampled_bars(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
                  samples: int) -> dict[str, np.ndarray]:
    """Kline columns of an index-like series: no volume, ``samples`` per bar."""
    zero = np.zeros(open_.size)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": zero,
            "quote_volume": zero, "trade_count": np.full(open_.size, samples, np.int64),
            "taker_buy_volume": zero, "taker_buy_quote_volume": zero}


def _serialized(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.rechunk().write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


class SyntheticSource:
    """Seeded, offline, deterministic market data with realistic stylized facts.

    Parameters
    ----------
    seed : int
        Non-negative seed. The output for ``(seed, symbol, day, dataset)`` never depends on
        the order of calls or on the instance. Days outside 2017-01-02 .. 2040-12-31 are
        returned as ``missing``.
    effect_until : datetime.date, optional
        The planted effect (the post-jump drift, κ) is switched off on the days after it:
        κ = 0 there, every draw unchanged (a decaying edge, for the demo stage's tests).

    Notes
    -----
    The model, its equations and parameters are in the module docstring. An instance
    memoizes each symbol's daily anchors (~8,800 days: ~0.6 MB, ~1.5 ms to draw) and the
    last 16 simulated symbol-days, so the four datasets of a day (and the next day's
    funding and first taker ratio, which need the previous day) are simulated once.
    """

    def __init__(self, *, seed: int = 7, effect_until: dt.date | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        # the planted post-jump drift stops after this day (None: never); every other draw
        # is unchanged, so a day up to it equals the default source's
        self.effect_until = effect_until
        self._anchors: dict[str, tuple[_Profile, _Anchors]] = {}
        self._days: OrderedDict[tuple[str, int], _Day] = OrderedDict()
        self._lock = threading.Lock()  # the memo is shared if Dagster calls from threads

    def klines_1m(self, market: Market, symbol: str, day: dt.date) -> SourceBatch:
        """1-minute klines of ``day`` (UTC) for ``market``.

        Parameters
        ----------
        market : {"perp", "spot"}
        symbol : str
            Upper-case ticker, e.g. ``"BTCUSDT"``.
        day : datetime.date
            UTC day (an ISO string is accepted too).

        Returns
        -------
        SourceBatch
            1440 rows in :data:`KLINE_SCHEMA`, ``ts_open`` = day 00:00 + k minutes.
        """
        if market not in ("perp", "spot"):
            raise ValueError(f"market must be 'perp' or 'spot', got {market!r}")
        symbol, day = validate_symbol(symbol), validate_date(day)
        url = self._url(market, "klines_1m", symbol, day)
        if not _FIRST_DAY <= day <= _LAST_DAY:
            return self._missing(url, KLINE_SCHEMA)
        sim = self._day(symbol, day)
        bars = sim.perp if market == "perp" else sim.spot
        frame = pl.DataFrame({"ts_open": _midnight(day) + _MINUTE_OFFSETS, **bars})
        return self._batch(url, frame, symbol, KLINE_SCHEMA)

    def mark_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """Perp 1-minute mark price klines of ``day``: 1440 rows in :data:`KLINE_SCHEMA`,
        volumes 0 (module docstring, "Mark price and premium index")."""
        return self._index_klines("mark_klines_1m", symbol, day)

    def premium_klines_1m(self, symbol: str, day: dt.date) -> SourceBatch:
        """Perp 1-minute premium index klines of ``day``, (mark − spot) / spot: 1440 rows in
        :data:`KLINE_SCHEMA`, volumes 0 (module docstring, "Mark price and premium index")."""
        return self._index_klines("premium_klines_1m", symbol, day)

    def _index_klines(self, dataset: str, symbol: str, day: dt.date) -> SourceBatch:
        symbol, day = validate_symbol(symbol), validate_date(day)
        url = self._url("perp", dataset, symbol, day)
        if not _FIRST_DAY <= day <= _LAST_DAY:
            return self._missing(url, KLINE_SCHEMA)
        sim = self._day(symbol, day)
        e = mark_deviation(self.seed, symbol, day)
        mark, premium = mark_and_premium(sim.perp, (e[:-1], e[1:]),
                                         (sim.spot["open"], sim.spot["close"]))
        bars = mark if dataset == "mark_klines_1m" else premium
        frame = pl.DataFrame({"ts_open": _midnight(day) + _MINUTE_OFFSETS, **bars})
        return self._batch(url, frame, symbol, KLINE_SCHEMA)

    def funding_rates(self, symbol: str, day: dt.date) -> SourceBatch:
        """Perp funding rates fixed at 00:00, 08:00 and 16:00 UTC of ``day``.

        Parameters
        ----------
        symbol : str
            Upper-case ticker.
        day : datetime.date
            UTC day.

        Returns
        -------
        SourceBatch
            3 rows in :data:`FUNDING_SCHEMA`; each rate uses only the basis of the 8 hours
            before its fixing, ``mark_price`` is the perp price at the fixing.
        """
        symbol, day = validate_symbol(symbol), validate_date(day)
        url = self._url("perp", "funding_rates", symbol, day)
        if not _FIRST_DAY <= day <= _LAST_DAY:
            return self._missing(url, FUNDING_SCHEMA)
        sim = self._day(symbol, day)
        previous = self._day(symbol, day - dt.timedelta(days=1))
        window = _FUNDING_HOURS * 60
        # basis at each minute's open, from 16:00 yesterday: windows end at 00:00, 08:00, 16:00
        basis = np.concatenate([previous.basis[_N - window : _N], sim.basis[:-1]])
        premium = basis[:_N].reshape(-1, window).mean(axis=1)
        frame = pl.DataFrame(
            {
                "ts": _midnight(day) + _FUNDING_OFFSETS,
                "funding_interval_hours": np.full(_FUNDING_MINUTES.size, _FUNDING_HOURS),
                "funding_rate": _funding_rates(premium),
                "mark_price": np.exp(sim.log_price[_FUNDING_MINUTES]),
            }
        )
        return self._batch(url, frame, symbol, FUNDING_SCHEMA)

    def open_interest(self, symbol: str, day: dt.date) -> SourceBatch:
        """5-minute open interest and long/short ratios of ``day``.

        Parameters
        ----------
        symbol : str
            Upper-case ticker.
        day : datetime.date
            UTC day.

        Returns
        -------
        SourceBatch
            288 rows in :data:`OPEN_INTEREST_SCHEMA` at day 00:00 + 5k minutes; no nulls.
        """
        symbol, day = validate_symbol(symbol), validate_date(day)
        url = self._url("perp", "open_interest", symbol, day)
        if not _FIRST_DAY <= day <= _LAST_DAY:
            return self._missing(url, OPEN_INTEREST_SCHEMA)
        sim = self._day(symbol, day)
        previous = self._day(symbol, day - dt.timedelta(days=1))
        # The stamp's taker ratio covers the 5 minutes before it (the first one: yesterday's).
        taker_ratio = np.concatenate(
            [_taker_ratio(previous.perp)[-1:], _taker_ratio(sim.perp)[:-1]]
        )
        frame = pl.DataFrame(
            {
                "ts": _midnight(day) + _OI_OFFSETS,
                "open_interest": sim.open_interest,
                "open_interest_value": sim.open_interest * np.exp(sim.log_price[:_N:_OI_STEP]),
                "toptrader_ls_ratio_count": sim.ratios[0],
                "toptrader_ls_ratio_sum": sim.ratios[1],
                "ls_ratio_count": sim.ratios[2],
                "taker_ls_vol_ratio": taker_ratio,
            }
        )
        return self._batch(url, frame, symbol, OPEN_INTEREST_SCHEMA)

    def _day(self, symbol: str, day: dt.date) -> _Day:
        with self._lock:
            return self._day_unlocked(symbol, day)

    def _day_unlocked(self, symbol: str, day: dt.date) -> _Day:
        key = (symbol, (day - _EPOCH).days)
        cached = self._days.get(key)
        if cached is not None:
            self._days.move_to_end(key)
            return cached
        if symbol not in self._anchors:
            profile = _profile(symbol)
            self._anchors[symbol] = (profile, _build_anchors(self.seed, symbol, profile))
        profile, anchors = self._anchors[symbol]
        shocks = _draw_shocks(self.seed, symbol, key[1])
        kappa = _JUMP_DRIFT_KAPPA if self.effect_until is None or day <= self.effect_until \
            else 0.0
        sim = _simulate_day(profile, anchors, key[1], shocks, day.weekday() >= 5, kappa)
        self._days[key] = sim
        if len(self._days) > _DAY_CACHE_SIZE:
            self._days.popitem(last=False)
        return sim

    def _url(self, market: str, dataset: str, symbol: str, day: dt.date) -> str:
        off = "" if self.effect_until is None or day <= self.effect_until else ",no-effect"
        return (f"synthetic://seed={self.seed}{off}/{market}/{dataset}/{symbol}/"
                f"{day.isoformat()}")

    def _batch(
        self, url: str, frame: pl.DataFrame, symbol: str, schema: dict[str, pl.DataType]
    ) -> SourceBatch:
        return generated_batch(url, frame, symbol, schema)

    def _missing(self, url: str, schema: dict[str, pl.DataType]) -> SourceBatch:
        return missing_batch(url, schema)


def generated_batch(url: str, frame: pl.DataFrame, symbol: str,
                    schema: dict[str, pl.DataType]) -> SourceBatch:
    """A generated day: ``frame`` with its symbol, conformed to ``schema``, and the record of
    its bytes (sha256 of the frame's IPC serialization)."""
    frame = conform(frame.with_columns(pl.lit(symbol).alias("symbol")), schema)
    data = _serialized(frame)
    record = RawFileRecord(url=url, path=None, sha256=hashlib.sha256(data).hexdigest(),
                           size=len(data), status="generated")
    return SourceBatch(frame=frame, files=[record])


def missing_batch(url: str, schema: dict[str, pl.DataType]) -> SourceBatch:
    """A day the source does not have (like a 404 on the archive)."""
    record = RawFileRecord(url=url, path=None, sha256=None, size=None, status="missing")
    return SourceBatch(frame=empty(schema), files=[record], missing=True)


def _midnight(day: dt.date) -> np.datetime64:
    return np.datetime64(day.isoformat(), "us")
