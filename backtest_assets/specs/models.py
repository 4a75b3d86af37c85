"""Frozen, keyword-only spec objects. Each ``validate`` raises ``ValueError('field: problem')``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Literal

from backtest_assets.core.funding import MAX_CONSTANT_PRINTS
from backtest_assets.core.keys import InvalidKeyError, validate_symbol

Interval = Literal["1m", "5m", "15m", "30m", "60m", "1h"]
INTERVALS: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "30m": 30, "60m": 60, "1h": 60}


def interval_minutes(interval: str) -> int:
    """Minutes in a bar interval such as ``"5m"``."""
    try:
        return INTERVALS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r} (known: {list(INTERVALS)})") from None


@dataclass(frozen=True, kw_only=True)
class SymbolSpec:
    symbol: str
    markets: tuple[Literal["perp", "spot"], ...]
    # The symbol's span: its first UTC day with data (None: it trades from the universe's
    # start_date) and its last (None: still trading). A symbol becomes a partition of the
    # dynamic symbol dimension once its first day has come; a delisted one stays, with its
    # history. Left out of the hash while unset.
    listed: dt.date | None = dataclasses.field(default=None, metadata={"omit_if_default": True})
    delisted: dt.date | None = dataclasses.field(default=None,
                                                 metadata={"omit_if_default": True})

    def validate(self) -> None:
        try:
            validate_symbol(self.symbol)
        except InvalidKeyError as exc:
            raise ValueError(f"symbol: {exc}") from None
        if not self.markets:
            raise ValueError("markets: at least one of perp, spot")
        if len(set(self.markets)) != len(self.markets):
            raise ValueError(f"markets: duplicated market in {list(self.markets)}")
        if self.listed and self.delisted and self.delisted < self.listed:
            raise ValueError(f"delisted: {self.delisted} is before listed ({self.listed})")


@dataclass(frozen=True, kw_only=True)
class GeneratedSymbolsSpec:
    """A synthetic cross-section the ``synthetic`` source serves beside the listed symbols
    (backtest_assets/sources/synthetic_universe.py, drawn at 1m from the universe's
    start_date): ``symbols`` perp symbols ``S01USDT``, ``S02USDT``, ... with listings,
    delistings, gaps, liquidity that changes over time and the planted cross-sectional
    one-day reversal of size ``xs_effect`` (0: none). The other sources have none of them."""

    symbols: int = 23
    days: int = 120
    seed: int = 0
    xs_effect: float = 0.01

    def validate(self) -> None:
        if not 1 <= self.symbols <= 999:
            raise ValueError(f"generated.symbols: {self.symbols} is out of range [1, 999]")
        if not 2 <= self.days <= 1000:
            raise ValueError(f"generated.days: {self.days} is out of range [2, 1000]")
        if self.seed < 0:
            raise ValueError(f"generated.seed: {self.seed} is negative")
        if not (math.isfinite(self.xs_effect) and abs(self.xs_effect) <= 1):
            raise ValueError(f"generated.xs_effect: {self.xs_effect} is out of range [-1, 1]")

    @property
    def names(self) -> tuple[str, ...]:
        """The served symbols (the generator's market symbol, its index 0, is not served)."""
        width = max(2, len(str(self.symbols)))
        return tuple(f"S{k:0{width}d}USDT" for k in range(1, self.symbols + 1))


@dataclass(frozen=True, kw_only=True)
class UniverseSpec:
    name: str
    start_date: dt.date
    end_date: dt.date | None = None
    base_interval: Interval
    bar_intervals: tuple[Interval, ...]
    symbols: tuple[SymbolSpec, ...]
    generated: GeneratedSymbolsSpec | None = dataclasses.field(
        default=None, metadata={"omit_if_default": True})

    def validate(self) -> None:
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is required")
        names = self.symbol_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"symbols: duplicated symbol {dupes[0]}")
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date: before start_date")
        if "1m" not in self.bar_intervals:
            raise ValueError("bar_intervals: must include 1m (every bar is built from 1m klines)")
        if self.base_interval not in self.bar_intervals:
            raise ValueError(f"base_interval: {self.base_interval} is not in bar_intervals")

    @property
    def symbol_names(self) -> list[str]:
        """Every symbol the universe can hold: the listed ones, then the generated ones."""
        return [s.symbol for s in self.symbols] + list(self.generated_names)

    @property
    def generated_names(self) -> tuple[str, ...]:
        return self.generated.names if self.generated else ()

    def markets_of(self, symbol: str) -> tuple[str, ...]:
        for s in self.symbols:
            if s.symbol == symbol:
                return s.markets
        if symbol in self.generated_names:
            return ("perp",)
        raise KeyError(symbol)

    def offers(self, symbol: str, market: str, dataset: str) -> bool:
        """Whether ``symbol`` has ``dataset`` (``klines``, ``funding``, ``open_interest``) on
        ``market``: the listed symbols on each of their markets; the generated ones have
        perp klines and funding, no open interest (their generator draws none)."""
        if market not in self.markets_of(symbol):
            return False
        return not (dataset == "open_interest" and symbol in self.generated_names)


# ---- features ----------------------------------------------------------------------------

FeatureFamily = Literal[
    "log_return", "realized_vol", "zscore", "volume_zscore", "range_atr", "amihud",
    "order_flow_imbalance", "vpin", "funding_rate", "funding_zscore", "funding_persistence",
    "oi_change_zscore", "basis",
]
# What each family reads: one kind per input, in order. "price" is a perp/spot price column,
# "any" a bar column or a feature; "bars" means the family reads the perp OHLCV bar itself.
FAMILY_INPUTS: dict[str, tuple[str, ...]] = {
    "log_return": ("price",),
    "realized_vol": ("price",),
    "zscore": ("any",),
    "volume_zscore": ("perp.volume",),
    "range_atr": ("bars",),
    "amihud": ("bars",),
    "order_flow_imbalance": ("bars",),
    "vpin": ("bars",),
    "funding_rate": ("funding.funding_rate",),
    "funding_zscore": ("funding.funding_rate",),
    "funding_persistence": ("funding.funding_rate",),
    "oi_change_zscore": ("oi.open_interest",),
    "basis": ("perp.close", "spot.close"),
}
# Families computed on the published series (funding prints, OI snapshots) before the as-of
# join: their windows count prints, not bars.
PRINT_FAMILIES = {"funding_zscore": "funding", "funding_persistence": "funding",
                  "oi_change_zscore": "oi"}
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "taker_buy_volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
SOURCE_COLUMNS = {"perp": BAR_COLUMNS, "spot": BAR_COLUMNS, "funding": ("funding_rate",),
                  "oi": ("open_interest",)}
_NAME = r"[a-z][a-z0-9_]{0,47}"


@dataclass(frozen=True, kw_only=True)
class FeatureSpec:
    """One point-in-time feature: ``family`` applied to ``inputs`` over ``window``.

    ``inputs`` are ``<source>.<column>`` (sources perp, spot, funding, oi) or
    ``feature.<name>``; ``z_window`` is the second window of two-window families
    (``oi_change_zscore``: change over ``window`` prints, z-scored over ``z_window``);
    ``warmup_bars`` is the history (in base bars) needed before the first valid value.
    """

    name: str
    family: FeatureFamily
    inputs: tuple[str, ...] = ()
    window: int
    z_window: int | None = None
    warmup_bars: int
    description: str = ""

    def validate(self) -> None:
        if not re.fullmatch(_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a lower_snake_case name")
        if not 1 <= self.window <= 100_000:
            raise ValueError(f"window: {self.window} is out of range [1, 100000]")
        if self.z_window is not None and not 2 <= self.z_window <= 100_000:
            raise ValueError(f"z_window: {self.z_window} is out of range [2, 100000]")
        if self.family == "oi_change_zscore" and self.z_window is None:
            raise ValueError("z_window: oi_change_zscore needs a z_window")
        if self.warmup_bars < 0:
            raise ValueError(f"warmup_bars: {self.warmup_bars} is negative")
        for i, ref in enumerate(self.inputs):
            source, _, column = ref.partition(".")
            if source == "feature":
                if not re.fullmatch(_NAME, column):
                    raise ValueError(f"inputs[{i}]: {ref!r} does not name a feature")
            elif source not in SOURCE_COLUMNS or column not in SOURCE_COLUMNS[source]:
                raise ValueError(
                    f"inputs[{i}]: {ref!r} is not <source>.<column> with a source in "
                    f"{sorted(SOURCE_COLUMNS)} or feature.<name>")


@dataclass(frozen=True, kw_only=True)
class FeatureFile:
    features: tuple[FeatureSpec, ...]


# ---- events ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Condition:
    """``feature`` (as of ``lag`` bars ago) compared with ``threshold`` by ``op``."""

    feature: str
    op: Literal["gt", "lt", "abs_gt", "abs_lt"]
    threshold: float
    lag: int = 0

    def validate(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold: {self.threshold} is not finite")
        if self.op.startswith("abs") and self.threshold < 0:
            raise ValueError(f"threshold: {self.threshold} < 0 with op {self.op}")
        if not 0 <= self.lag <= 288:
            raise ValueError(f"lag: {self.lag} is out of range [0, 288]")


@dataclass(frozen=True, kw_only=True)
class Direction:
    """The event's direction: the sign of a feature, or a fixed +1 / -1."""

    sign_of: str | None = None
    fixed: Literal[1, -1] | None = None

    def validate(self) -> None:
        if (self.sign_of is None) == (self.fixed is None):
            raise ValueError("sign_of: give exactly one of sign_of and fixed")


@dataclass(frozen=True, kw_only=True)
class EventSpec:
    """A market event detected on point-in-time features.

    ``detector``: ``all_of`` fires when every condition holds at bar t, ``any_of`` when one
    does. ``cooldown_bars``: after firing at t, the event cannot fire again for the symbol at
    t+1 .. t+cooldown_bars. ``severity_of``: the event's severity is |that feature| at t.
    """

    name: str
    description: str = ""
    detector: Literal["all_of", "any_of"]
    conditions: tuple[Condition, ...]
    direction: Direction
    severity_of: str
    cooldown_bars: int

    def validate(self) -> None:
        if not re.fullmatch(_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a lower_snake_case name")
        if not self.conditions:
            raise ValueError("conditions: at least one condition")
        if not 1 <= self.cooldown_bars <= 2_000:
            raise ValueError(f"cooldown_bars: {self.cooldown_bars} is out of range [1, 2000]")

    def features(self) -> list[tuple[str, str]]:
        """(field path, feature name) of every feature this event reads."""
        refs = [(f"conditions[{i}].feature", c.feature) for i, c in enumerate(self.conditions)]
        refs.append(("severity_of", self.severity_of))
        if self.direction.sign_of is not None:
            refs.append(("direction.sign_of", self.direction.sign_of))
        return refs

    @property
    def lookback_bars(self) -> int:
        """Bars before t whose features can decide the event at t (lags and cooldown)."""
        return max(c.lag for c in self.conditions) + self.cooldown_bars


# ---- gates, labels, studies --------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Range:
    min: float
    max: float

    def validate(self) -> None:
        if not self.min <= self.max:
            raise ValueError(f"min: {self.min} is above max {self.max}")


@dataclass(frozen=True, kw_only=True)
class E1Gate:
    """Gate E-1: an event type enters discovery only if it fires at a sane rate and joins."""

    prevalence_per_10k: Range
    join_rate_min: float

    def validate(self) -> None:
        if not 0 <= self.prevalence_per_10k.min <= self.prevalence_per_10k.max <= 10_000:
            raise ValueError("prevalence_per_10k: must lie within [0, 10000]")
        if not 0 < self.join_rate_min <= 1:
            raise ValueError(f"join_rate_min: {self.join_rate_min} is out of range (0, 1]")




@dataclass(frozen=True, kw_only=True)
class LabelsSpec:
    """Forward-return horizons; a label at t is log(open[t+1+h] / open[t+1])."""

    horizons: tuple[Interval, ...]

    def validate(self) -> None:
        if not self.horizons or len(set(self.horizons)) != len(self.horizons):
            raise ValueError("horizons: give distinct horizons")


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    """A research window: dates (inclusive), symbols and event types to study."""

    name: str
    start: dt.date
    end: dt.date
    symbols: tuple[str, ...]
    event_types: tuple[str, ...] = ()  # empty: every event type in specs/events
    capital: float = 100_000.0  # starting cash of every backtest of the study (USDT)
    # Funding strictness of the study's perp backtests and walk-forwards
    # (backtest_assets.core.funding): missing prints refuse a run unless allowed here or in
    # the blueprint; a rate repeated for more than constant_funding_max_prints prints is
    # counted, and refused when allow_constant_funding is false.
    allow_missing_funding: bool = False
    allow_constant_funding: bool = True
    constant_funding_max_prints: int = MAX_CONSTANT_PRINTS  # a week of 8-hourly prints
    # The market source its data come from (``synthetic`` or ``binance``); None: whatever
    # the run's market_source resource says. Recorded with the study.
    source: str | None = None
    # Studies the research report sets beside this one (its "compare" section). What the
    # report shows, not what the study reads: left out of the study's record hash.
    compare_with: tuple[str, ...] = ()
    # Perp bars without a mark price (backtest_assets.engine.core, Mark prices): "refuse"
    # the run (naming the symbol and first bar), or fall back to the last price for those
    # bars, counted in the metrics' mark_fallback_bars. Left out of the hash at the default.
    missing_marks: Literal["refuse", "last"] = dataclasses.field(
        default="refuse", metadata={"omit_if_default": True})

    def validate(self) -> None:
        if self.missing_marks not in ("refuse", "last"):
            raise ValueError(f"missing_marks: {self.missing_marks!r} is not 'refuse' or "
                             "'last'")
        if self.name in self.compare_with:
            raise ValueError(f"compare_with: a study is not compared with itself ({self.name})")
        if self.source not in (None, "synthetic", "binance"):
            raise ValueError(f"source: {self.source!r} is not synthetic or binance")
        if self.end < self.start:
            raise ValueError("end: before start")
        if not self.symbols:
            raise ValueError("symbols: at least one symbol")
        if not (math.isfinite(self.capital) and self.capital > 0):
            raise ValueError(f"capital: {self.capital} is not a finite number > 0")
        if not 1 <= self.constant_funding_max_prints <= 100_000:
            raise ValueError(f"constant_funding_max_prints: {self.constant_funding_max_prints} "
                             "is out of range [1, 100000]")


# ---- phase 2: multiplicity families, fees, gates -----------------------------------------

@dataclass(frozen=True, kw_only=True)
class FamiliesSpec:
    """What Phase 2 tests and how multiplicity is controlled.

    One hypothesis per (event type, template, horizon, symbol), plus a pooled symbol
    ``ALL`` when ``pooled``; a family is ``family_by`` (q-values are computed within it).
    Events chained by gaps of at most ``cluster_lag_multiple`` x the horizon (in bars) form
    one cluster, the independent unit of the test ``inference`` (stats/inference.py):
    ``signflip`` (the cluster sign-flip randomization test), ``cr2`` (CR2 variance with
    Bell-McCaffrey degrees of freedom) or ``signflip+cr2`` (both must reject: the default).
    """

    templates: tuple[Literal["mean_reversion", "continuation"], ...]
    horizons: tuple[Interval, ...]
    pooled: bool = True
    family_by: tuple[Literal["event_type", "rule_template", "horizon"], ...]
    fdr_method: Literal["bh", "by"] = "bh"
    fdr_q: float
    cluster_lag_multiple: float = 2.0  # cluster lag = this x the horizon in bars (>= 1x)
    inference: Literal["signflip+cr2", "signflip", "cr2"] = "signflip+cr2"

    def validate(self) -> None:
        if not self.templates or len(set(self.templates)) != len(self.templates):
            raise ValueError("templates: give distinct templates")
        if not self.horizons or len(set(self.horizons)) != len(self.horizons):
            raise ValueError("horizons: give distinct horizons")
        if not 0 < self.fdr_q < 1:
            raise ValueError(f"fdr_q: {self.fdr_q} is out of range (0, 1)")
        if self.cluster_lag_multiple < 1:
            raise ValueError(f"cluster_lag_multiple: {self.cluster_lag_multiple} is below 1 "
                             "(the lag must cover at least the horizon)")


@dataclass(frozen=True, kw_only=True)
class SymbolRules:
    """A symbol's order filters on a venue: quantity step, price step, minimum notional."""

    lot_size: float = 0.0
    tick_size: float = 0.0
    min_notional: float = 0.0
    # Margin tiers by notional, [cap, max_leverage, maintenance margin rate, maintenance
    # amount] each, by increasing cap (backtest_assets.engine.venue.Bracket); empty: the
    # venue's single maintenance_margin_rate. Left out of the hash while empty.
    brackets: tuple[tuple[float, float, float, float], ...] = dataclasses.field(
        default=(), metadata={"omit_if_default": True})
    # Hours between funding prints as the venue publishes them for the symbol (Bybit's
    # instruments-info fundingInterval, in minutes there); None: not stated. Informational:
    # the funding audit takes the interval from the prints. Left out of the hash while None.
    funding_interval_hours: float | None = dataclasses.field(
        default=None, metadata={"omit_if_default": True})

    def validate(self) -> None:
        for name in ("lot_size", "tick_size", "min_notional"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: {value} is not a finite number >= 0")
        hours = self.funding_interval_hours
        if hours is not None and not (math.isfinite(hours) and 0 < hours <= 24):
            raise ValueError(f"funding_interval_hours: {hours} is out of range (0, 24]")
        from backtest_assets.engine.venue import Bracket, Instrument

        if self.brackets:  # the engine's rules: increasing caps, continuous maintenance
            b = tuple(Bracket(cap=c, max_leverage=lev, mmr=m, maint_amount=a)
                      for c, lev, m, a in self.brackets)
            Instrument(symbol="brackets", maintenance_margin_rate=b[0].mmr,
                       max_leverage=1.0, brackets=b).validate()


@dataclass(frozen=True, kw_only=True)
class VenueSpec:
    """Fees in bps of notional per side, the slippage assumed per side, the leverage cap,
    isolated-margin rules (None: no liquidation, as on spot) and per-symbol order filters."""

    maker_bps: float
    taker_bps: float
    slippage_bps: float
    max_leverage: float = 1.0
    maintenance_margin_rate: float | None = None
    liquidation_fee_rate: float = 0.0
    symbols: dict[str, SymbolRules] | None = None
    # Square-root impact: a market fill of q units in a bar of volume V slips by
    # slippage + impact_coef * sqrt(q / V) (engine docstring, Liquidity); 0: fixed slippage.
    impact_coef: float = dataclasses.field(default=0.0, metadata={"omit_if_default": True})
    # Where the maintenance margin is valued: "level" (Binance: the notional at the
    # liquidation price) or "entry" (Bybit: the position value at the entry price).
    maintenance_at: str = dataclasses.field(default="level",
                                            metadata={"omit_if_default": True})

    def validate(self) -> None:
        for name in ("maker_bps", "taker_bps", "slippage_bps"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name}: {getattr(self, name)} is out of range [0, 100]")
        if not 1 <= self.max_leverage <= 125:
            raise ValueError(f"max_leverage: {self.max_leverage} is out of range [1, 125]")
        mmr = self.maintenance_margin_rate
        if mmr is not None and not 0 <= mmr < 0.5:
            raise ValueError(f"maintenance_margin_rate: {mmr} is out of range [0, 0.5)")
        if mmr is not None and mmr * self.max_leverage >= 1:
            raise ValueError(f"maintenance_margin_rate: {mmr} is not below 1 / max_leverage "
                             f"({self.max_leverage}): a position at the cap would be "
                             "liquidated at entry")
        if not 0 <= self.impact_coef <= 1:
            raise ValueError(f"impact_coef: {self.impact_coef} is out of range [0, 1]")
        if self.maintenance_at not in ("level", "entry"):
            raise ValueError(f"maintenance_at: {self.maintenance_at!r} is not 'level' or "
                             "'entry'")
        if not 0 <= self.liquidation_fee_rate < 0.1:
            raise ValueError(f"liquidation_fee_rate: {self.liquidation_fee_rate} is out of "
                             "range [0, 0.1)")
        for symbol, rules in (self.symbols or {}).items():
            try:
                rules.validate()
            except ValueError as exc:
                raise ValueError(f"symbols.{symbol}.{exc}") from None

    def rules(self, symbol: str) -> SymbolRules:
        """The symbol's order filters (none: continuous quantities and prices)."""
        return (self.symbols or {}).get(symbol, SymbolRules())


@dataclass(frozen=True, kw_only=True)
class FeesSpec:
    """Venues and the cost multipliers the economic gate re-tests at."""

    default_venue: str
    venues: dict[str, VenueSpec]
    cost_multipliers: tuple[float, ...]

    def validate(self) -> None:
        if self.default_venue not in self.venues:
            raise ValueError(f"default_venue: {self.default_venue!r} is not in venues")
        if not self.cost_multipliers or any(m < 1 for m in self.cost_multipliers):
            raise ValueError("cost_multipliers: give multipliers of at least 1")

    def round_trip(self, venue: str | None = None) -> float:
        """Round-trip cost as a return: 2 x (taker fee + slippage) (market orders)."""
        v = self.venues[venue or self.default_venue]
        return 2 * (v.taker_bps + v.slippage_bps) / 1e4


@dataclass(frozen=True, kw_only=True)
class StabilityGate:
    """Same sign as the overall mean in at least these shares of slices and regimes."""

    time_slice: Literal["week", "month", "quarter"]
    min_slice_share: float
    min_events_per_slice: int = 1
    regime_feature: str
    min_regime_share: float

    def validate(self) -> None:
        for name in ("min_slice_share", "min_regime_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}: {getattr(self, name)} is out of range (0, 1]")


@dataclass(frozen=True, kw_only=True)
class Phase2Gate:
    min_sample: int
    stability: StabilityGate

    def validate(self) -> None:
        if self.min_sample < 2:
            raise ValueError(f"min_sample: {self.min_sample} is below 2")


@dataclass(frozen=True, kw_only=True)
class CostStress:
    """Out-of-sample results re-run with every cost (fees and slippage) times ``multiplier``."""

    multiplier: float = 2.0
    min_sharpe: float = 0.0

    def validate(self) -> None:
        if not 1 <= self.multiplier <= 10:
            raise ValueError(f"multiplier: {self.multiplier} is out of range [1, 10]")


@dataclass(frozen=True, kw_only=True)
class PromotionGate:
    """What a blueprint's walk-forward evidence must show to leave ``backtest`` for ``demo``.

    Sharpe ratios are annualized; drawdown is a positive fraction (0.2 = a 20 % fall).
    """

    min_deflated_sharpe: float
    max_pbo: float
    min_oos_sharpe: float
    max_oos_drawdown: float
    min_oos_trades: int
    cost_stress: CostStress = CostStress()
    min_demo_days: int = 30  # demo -> live needs this many days of demo (paper) trading
    # The demo's consistency test: archived when its mean daily return is below the
    # backtest's by more than z_(1 - demo_alpha) standard errors (lifecycle/demo.py)
    demo_alpha: float = dataclasses.field(default=0.05, metadata={"omit_if_default": True})

    def validate(self) -> None:
        if not 0 < self.demo_alpha < 0.5:
            raise ValueError(f"demo_alpha: {self.demo_alpha} is out of range (0, 0.5)")
        for name in ("min_deflated_sharpe", "max_pbo", "max_oos_drawdown"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: {getattr(self, name)} is out of range [0, 1]")
        if self.min_oos_trades < 0 or self.min_demo_days < 0:
            raise ValueError("min_oos_trades: must be >= 0")


@dataclass(frozen=True, kw_only=True)
class GatesSpec:
    e1: E1Gate
    phase2: Phase2Gate
    promotion: PromotionGate


# ---- walk-forward evaluation -------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class WalkForwardSpec:
    """How every blueprint is evaluated out of sample (``backtest_assets.walkforward``).

    ``folds`` test windows follow the first ``train_days`` of the study; each is
    ``test_days`` long, or, without ``test_days``, the rest of the study split evenly.
    ``rolling`` trains on the ``train_days`` before each test window, ``anchored`` on
    everything before it. ``purge_bars`` base bars between a train window and the test
    window after it are dropped from training (at least the longest label horizon and the
    blueprint's longest hold, which are enforced), and ``embargo_bars`` after a test window
    before any later training (combinatorial splits). The grid's best combination by
    ``objective`` on a train window (among those with ``min_trades`` trades) is run on the
    test window. ``cpcv_groups`` / ``cpcv_test_groups`` define the combinatorially purged
    cross-validation splits and ``cscv_groups`` the probability of backtest overfitting.
    """

    scheme: Literal["rolling", "anchored"]
    folds: int
    train_days: float
    test_days: float | None = None
    purge_bars: int
    embargo_bars: int = 0
    objective: Literal["sharpe", "sortino", "total_return"] = "sharpe"
    min_trades: int = 1
    cpcv_groups: int = 6
    cpcv_test_groups: int = 2
    cscv_groups: int = 16

    def validate(self) -> None:
        if not 1 <= self.folds <= 100:
            raise ValueError(f"folds: {self.folds} is out of range [1, 100]")
        if self.train_days <= 0 or (self.test_days is not None and self.test_days <= 0):
            raise ValueError("train_days: train and test windows must be longer than 0 days")
        if self.purge_bars < 0 or self.embargo_bars < 0:
            raise ValueError("purge_bars: purge and embargo cannot be negative")
        if not 1 <= self.cpcv_test_groups < self.cpcv_groups <= 32:
            raise ValueError(f"cpcv_test_groups: need 1 <= {self.cpcv_test_groups} < "
                             f"cpcv_groups {self.cpcv_groups} <= 32")
        if self.cscv_groups < 2 or self.cscv_groups % 2 or self.cscv_groups > 24:
            raise ValueError(f"cscv_groups: {self.cscv_groups} must be even, in [2, 24]")


# ---- strategies (blueprints) -------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class AlphaEntry:
    """Trade an alpha model's out-of-sample, regime-gated scores (specs/alpha): at each
    rebalance (every ``rebalance_bars`` bars), ``quantile``: long the top ``quantile`` of the
    scored symbols and short the bottom (at least one each), ``proportional``: weights in
    proportion to the score's distance from the bar's mean, the largest at full weight;
    held until the next rebalance. No score at a rebalance: flat until the next."""

    model: str
    mode: Literal["quantile", "proportional"] = "quantile"
    quantile: float = 0.2
    # sides decided every rebalance_bars bars (from the panel's first bar) and held between
    rebalance_bars: int = 1

    def validate(self) -> None:
        if not 0 < self.quantile <= 0.5:
            raise ValueError(f"quantile: {self.quantile} is out of range (0, 0.5]")
        if not 1 <= self.rebalance_bars <= 100_000:
            raise ValueError(f"rebalance_bars: {self.rebalance_bars} is out of range")


_STRATEGY_PATH = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True, kw_only=True)
class CodeEntry:
    """A blueprint of kind ``code``: the :class:`backtest_assets.sim.Strategy` subclass
    ``strategy`` (``package.module:Class``) decides, bar by bar on the event loop, built with
    ``params`` (its grid varies them: ``entry.code.params.<name>``) plus the blueprint's
    ``target_weight`` as ``weight`` and its ``direction``. It may read the ``features``
    named here and the ``events`` of the types named here (``bar.feature("event:<type>")``:
    the event's direction at the bars where one fired, NaN elsewhere), each known at the
    bar's close."""

    strategy: str
    params: dict[str, float] | None = None
    features: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    def __hash__(self) -> int:  # params is a dict: hash its items
        return hash((self.strategy, tuple(sorted((self.params or {}).items())),
                     self.features, self.events))

    def validate(self) -> None:
        if not re.fullmatch(_STRATEGY_PATH, self.strategy):
            raise ValueError(f"strategy: {self.strategy!r} is not package.module:Class")
        for name, value in (self.params or {}).items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"params: {name!r} is not a Python name")
            if not math.isfinite(value):
                raise ValueError(f"params: {name} is {value}, not a finite number")
            if name in ("weight", "direction"):
                raise ValueError(f"params: {name} comes from the blueprint's "
                                 f"{'target_weight' if name == 'weight' else name}")


@dataclass(frozen=True, kw_only=True)
class Entry:
    """Enter on an event type, when a feature condition holds, on an alpha model's scores,
    or as a strategy class decides (exactly one)."""

    event: str | None = None
    condition: Condition | None = None
    alpha: AlphaEntry | None = dataclasses.field(default=None,
                                                 metadata={"omit_if_default": True})
    code: CodeEntry | None = dataclasses.field(default=None,
                                               metadata={"omit_if_default": True})

    def validate(self) -> None:
        if sum(x is not None for x in (self.event, self.condition, self.alpha,
                                       self.code)) != 1:
            raise ValueError("event: give exactly one of event, condition, alpha and code")


@dataclass(frozen=True, kw_only=True)
class Exits:
    stop_loss: float | None = None
    take_profit: float | None = None
    time_stop_bars: int | None = None

    def validate(self) -> None:
        for name in ("stop_loss", "take_profit"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"{name}: {value} is out of range (0, 1)")
        if self.time_stop_bars is not None and not 1 <= self.time_stop_bars <= 100_000:
            raise ValueError(f"time_stop_bars: {self.time_stop_bars} is out of range")


@dataclass(frozen=True, kw_only=True)
class VetoRule:
    """Block entries on ``side`` while ``feature`` (known at the bar's close) ``op``
    ``threshold`` holds (``gt`` v > thr, ``lt`` v < thr, ``abs_gt`` |v| > thr)."""

    side: Literal["long", "short", "both"]
    feature: str
    op: Literal["gt", "lt", "abs_gt"]
    threshold: float

    def validate(self) -> None:
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold: {self.threshold} is not finite")
        if self.op == "abs_gt" and self.threshold < 0:
            raise ValueError(f"threshold: {self.threshold} < 0 with op abs_gt")


OVERLAY_KINDS = ("veto", "regime_filter", "vol_target", "drawdown_brake")
# The fields each kind reads (the others must be left out: a spec says what it means).
_OVERLAY_FIELDS = {"veto": {"rules"}, "regime_filter": {"feature", "min", "max"},
                   "vol_target": {"feature", "target", "min_scale", "max_scale"},
                   "drawdown_brake": {"max_drawdown", "resume_drawdown", "scale"}}
_OVERLAY_NAME = r"[a-z][a-z0-9_]{0,40}_v[0-9]+"


@dataclass(frozen=True, kw_only=True)
class OverlaySpec:
    """A condition applied on top of a blueprint's entries or sizes
    (``specs/overlays/<name>.yaml``; :mod:`backtest_assets.strategies.overlays`).

    ``veto``: ``rules`` block entries of a side while a feature condition holds (e.g. no
    longs when funding is extreme). ``regime_filter``: entries only while ``feature`` is in
    [``min``, ``max``] (either bound may be left out). ``vol_target``: each entry's size
    times ``target / feature`` (a realized volatility), clipped to [``min_scale``,
    ``max_scale``]. ``drawdown_brake``: while the edge's paper equity (its run without the
    brake) is ``max_drawdown`` or more below its peak, entries are scaled by ``scale``
    (0 blocks them) until the drawdown is back within ``resume_drawdown``.
    The name carries the version (``_v<N>``); a changed overlay is a new version.
    """

    name: str
    description: str = ""
    kind: Literal["veto", "regime_filter", "vol_target", "drawdown_brake"]
    rules: tuple[VetoRule, ...] = ()
    feature: str | None = None
    min: float | None = None
    max: float | None = None
    target: float | None = None
    min_scale: float = 0.0
    max_scale: float = 1.0
    max_drawdown: float | None = None
    resume_drawdown: float | None = None
    scale: float = 0.0

    def validate(self) -> None:  # noqa: C901
        if not re.fullmatch(_OVERLAY_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a versioned lower_snake_case name "
                             "(e.g. funding_veto_v1)")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for field in set().union(*_OVERLAY_FIELDS.values()) - _OVERLAY_FIELDS[self.kind]:
            if getattr(self, field) != defaults[field]:
                raise ValueError(f"{field}: not read by an overlay of kind {self.kind}")
        if self.kind == "veto" and not self.rules:
            raise ValueError("rules: a veto needs at least one rule")
        if self.kind in ("regime_filter", "vol_target") and self.feature is None:
            raise ValueError(f"feature: required by kind {self.kind}")
        if self.kind == "regime_filter":
            if self.min is None and self.max is None:
                raise ValueError("min: give min, max or both")
            if self.min is not None and self.max is not None and not self.min < self.max:
                raise ValueError(f"min: {self.min} is not below max {self.max}")
        if self.kind == "vol_target":
            if self.target is None or not self.target > 0:
                raise ValueError(f"target: {self.target} is not a volatility > 0")
            if not 0 <= self.min_scale <= self.max_scale <= 10:
                raise ValueError(f"min_scale: need 0 <= min_scale <= max_scale <= 10, got "
                                 f"{self.min_scale}, {self.max_scale}")
        if self.kind == "drawdown_brake":
            if self.max_drawdown is None or not 0 < self.max_drawdown < 1:
                raise ValueError(f"max_drawdown: {self.max_drawdown} is out of range (0, 1)")
            resume = self.resume_drawdown
            if resume is None or not 0 <= resume < self.max_drawdown:
                raise ValueError(f"resume_drawdown: {resume} is not in [0, max_drawdown)")
            if not 0 <= self.scale < 1:
                raise ValueError(f"scale: {self.scale} is out of range [0, 1)")

    @property
    def features(self) -> tuple[str, ...]:
        """The features it reads (known at each bar's close)."""
        return tuple(dict.fromkeys([*(r.feature for r in self.rules),
                                    *([self.feature] if self.feature else [])]))


@dataclass(frozen=True, kw_only=True)
class RiskSpec:
    """A blueprint's pre-trade limits: a daily loss cap (a fraction of the equity at the
    UTC day's first open: no new risk until the next day once lost), the largest position
    notional per symbol and in total (USDT), the largest total notional over the equity.
    Unset: no limit. Orders that only reduce a position always pass."""

    daily_loss_cap: float | None = None
    max_position_notional: float | None = None
    max_total_notional: float | None = None
    max_leverage: float | None = None

    def validate(self) -> None:
        from backtest_assets.engine.venue import RiskLimits

        RiskLimits(**dataclasses.asdict(self)).validate()


@dataclass(frozen=True, kw_only=True)
class ExecutionSpec:
    """How a blueprint's signal orders reach the venue. ``orders: limit`` rests them as limit
    orders ``limit_offset_bps`` from the decision bar's close on the passive side, for
    ``limit_valid_bars`` bars, filled only when a bar trades through, at the limit, paying
    the maker fee (``limit_entries`` / ``limit_exits``: which orders; the others, and every
    stop, stay market orders). ``participation``: the largest share of a bar's volume a
    fill may take; the rest works over the next bars (backtest_assets.engine.core,
    Liquidity). Unset: market orders, no cap."""

    orders: Literal["market", "limit"] = "market"
    limit_offset_bps: float = 0.0
    limit_valid_bars: int = 1
    limit_entries: bool = True
    limit_exits: bool = True
    participation: float | None = None

    def limits(self):
        """The engine's ``LimitOrders`` (None for market orders)."""
        from backtest_assets.engine.venue import LimitOrders

        if self.orders != "limit":
            return None
        return LimitOrders(offset_bps=self.limit_offset_bps, valid_bars=self.limit_valid_bars,
                           entries=self.limit_entries, exits=self.limit_exits)

    def validate(self) -> None:
        if self.orders not in ("market", "limit"):
            raise ValueError(f"orders: {self.orders!r} is not 'market' or 'limit'")
        limits = self.limits()
        if limits is not None:
            limits.validate()
        p = self.participation
        if p is not None and not (math.isfinite(p) and 0 < p <= 1):
            raise ValueError(f"participation: {p} is out of range (0, 1]")


@dataclass(frozen=True, kw_only=True)
class StrategySpec:
    """A blueprint: when to enter, which way, how much, how to exit, where.

    ``direction``: ``continuation`` / ``mean_reversion`` follow / fade the event's direction
    (or the sign of the entry condition's feature), ``long`` / ``short`` are fixed.
    ``target_weight``: the position per symbol as a fraction of equity; ``leverage`` caps
    the gross exposure over all symbols, must be within the venue's cap, and is each
    symbol's leverage setting: an isolated position posts ``notional / leverage`` of margin,
    so a gross weight equal to it leaves no room for slippage and fees (the engine rejects
    such entries: insufficient_margin).
    """

    name: str
    description: str = ""
    symbols: tuple[str, ...]
    entry: Entry
    direction: Literal["continuation", "mean_reversion", "long", "short"]
    target_weight: float
    exits: Exits = Exits()
    venue: str | None = None  # default: fees.yaml's default venue
    leverage: float = 1.0
    # Parameter path -> values tried by the walk-forward sweep (GRID_PARAMS); None: only
    # the blueprint as written.
    grid: dict[str, tuple[float, ...]] | None = None
    # Run over missing funding prints (as no payment) even when the study does not allow
    # them (StudySpec.allow_missing_funding: either one allowing is enough).
    allow_missing_funding: bool = False
    # Applied in order on top of the entries and sizes (specs/overlays; a spec file names
    # them, the registry resolves each name to its spec, so the blueprint's hash covers
    # them). Left out of the canonical JSON when empty: a blueprint without overlays keeps
    # its hash.
    overlays: tuple[OverlaySpec, ...] = dataclasses.field(
        default=(), metadata={"omit_if_default": True})
    # The pre-trade risk manager of its runs (backtest_assets.engine.venue.RiskLimits);
    # left out of the hash while unset.
    risk: RiskSpec | None = dataclasses.field(default=None,
                                              metadata={"omit_if_default": True})
    # Limit orders and a participation cap for its signal orders; left out of the hash
    # while unset (market orders, no cap).
    execution: ExecutionSpec | None = dataclasses.field(default=None,
                                                        metadata={"omit_if_default": True})

    def validate(self) -> None:  # noqa: C901
        if not re.fullmatch(_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a lower_snake_case name")
        names = [o.name for o in self.overlays]
        if len(set(names)) != len(names):
            raise ValueError(f"overlays: an overlay is listed twice in {names}")
        if not self.symbols:
            raise ValueError("symbols: at least one symbol")
        if not 0 < self.target_weight <= 10:
            raise ValueError(f"target_weight: {self.target_weight} is out of range (0, 10]")
        if not 0 < self.leverage <= 125:
            raise ValueError(f"leverage: {self.leverage} is out of range (0, 125]")
        if self.target_weight * len(self.symbols) > self.leverage:
            raise ValueError(f"target_weight: {self.target_weight} x {len(self.symbols)} "
                             f"symbols exceeds the leverage {self.leverage}")
        if self.entry.code is not None and self.overlays:
            raise ValueError("overlays: a code blueprint's strategy sizes its own positions "
                             "(overlays act on a target array)")
        for key, values in (self.grid or {}).items():
            if key.startswith(CODE_PARAM):
                name = key[len(CODE_PARAM):]
                if self.entry.code is None or name not in (self.entry.code.params or {}):
                    raise ValueError(f"grid.{key}: the entry has no code parameter {name!r}")
            elif key not in GRID_PARAMS:
                raise ValueError(f"grid.{key}: not a tunable parameter (one of "
                                 f"{sorted(GRID_PARAMS)} or {CODE_PARAM}<name>)")
            if key.startswith("entry.condition") and self.entry.condition is None:
                raise ValueError(f"grid.{key}: the entry has no condition")
            if key.startswith("entry.alpha") and self.entry.alpha is None:
                raise ValueError(f"grid.{key}: the entry has no alpha model")
            if not values or len(set(values)) != len(values):
                raise ValueError(f"grid.{key}: give distinct values")
            if GRID_PARAMS.get(key) is int and any(v != int(v) for v in values):
                raise ValueError(f"grid.{key}: values must be whole numbers")
        if math.prod(len(v) for v in (self.grid or {}).values()) > 100_000:
            raise ValueError("grid: more than 100,000 combinations")


# A code blueprint's grid varies its strategy's parameters under this prefix (the strategy
# converts each to the type it declares).
CODE_PARAM = "entry.code.params."
# Parameters a blueprint's grid may vary, with their type.
GRID_PARAMS: dict[str, type] = {
    "entry.condition.threshold": float, "entry.condition.lag": int,
    "entry.alpha.quantile": float, "entry.alpha.rebalance_bars": int,
    "exits.stop_loss": float, "exits.take_profit": float, "exits.time_stop_bars": int,
    "target_weight": float,
}


# ---- portfolios ---------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class PortfolioLimits:
    """What every allocation of the book must meet (``portfolio.allocator.Limits``)."""

    budget: float = 1.0
    fully_invested: bool = True
    edge_max: float | None = None
    gross_max: float | None = None
    net_max: float | None = None
    symbol_max: float | None = None
    cvar_max: float | None = None
    cvar_alpha: float = 0.95
    max_drawdown: float | None = None
    turnover_max: float | None = None


# Walk-forward summary columns a score_weighted book may weight by (higher is better).
PORTFOLIO_SCORES = ("deflated_sharpe", "oos_sharpe", "stress_sharpe")


@dataclass(frozen=True, kw_only=True)
class PortfolioSpec:
    """A book of edges: which enter, how they are weighted, under which limits, how often
    rebalanced (``specs/portfolios/<name>.yaml``)."""

    name: str
    mode: Literal["inverse_vol", "equal_risk", "score_weighted", "cluster",
                  "constrained_optimizer"]
    # "approved": edges whose contract is APPROVED; "all": every blueprint of the study
    edges: Literal["approved", "all"] = "approved"
    score: str = "deflated_sharpe"  # score_weighted: a walk-forward summary column
    shrink: float = 0.0  # score_weighted: towards equal weights
    cluster_corr: float = 0.5
    risk_aversion: float = 0.0  # constrained_optimizer: weight of CVaR in the objective
    rebalance_days: int = 7
    lookback_days: int = 14
    # Which evidence approves an edge: "as_of" (default), at each review the walk-forward of
    # the study's bars before it only, so a rebalance weights edges approved on what was
    # known then; "study", the study's whole walk-forward (selection in sample: the book's
    # out-of-sample figures are then biased upwards, and say so).
    selection: Literal["as_of", "study"] = "as_of"
    review_days: int | None = None  # as_of: days between reviews (default: every rebalance)
    limits: PortfolioLimits = PortfolioLimits()

    def validate(self) -> None:  # noqa: C901
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"name: {self.name!r} is not a lower_snake_case name")
        if self.score not in PORTFOLIO_SCORES:
            raise ValueError(f"score: {self.score!r} is not one of {list(PORTFOLIO_SCORES)}")
        if not 0 <= self.shrink <= 1:
            raise ValueError(f"shrink: {self.shrink} is out of range [0, 1]")
        if not -1 < self.cluster_corr < 1:
            raise ValueError(f"cluster_corr: {self.cluster_corr} is out of range (-1, 1)")
        if not (math.isfinite(self.risk_aversion) and self.risk_aversion >= 0):
            raise ValueError(f"risk_aversion: {self.risk_aversion} is not a number >= 0")
        if self.rebalance_days < 1:
            raise ValueError(f"rebalance_days: {self.rebalance_days} is not >= 1")
        if self.review_days is not None and (
                self.review_days < self.rebalance_days
                or self.review_days % self.rebalance_days):
            raise ValueError(f"review_days: {self.review_days} is not a multiple of "
                             f"rebalance_days ({self.rebalance_days})")
        if self.lookback_days < 2:
            raise ValueError(f"lookback_days: {self.lookback_days} is not >= 2 (daily "
                             "scenarios)")
        if self.mode != "constrained_optimizer":
            for name in ("cvar_max", "max_drawdown"):
                if getattr(self.limits, name) is not None:
                    raise ValueError(f"limits.{name}: held by mode constrained_optimizer "
                                     f"only, not {self.mode}")
        from backtest_assets.portfolio.allocator import Limits

        try:
            Limits(**dataclasses.asdict(self.limits))
        except ValueError as exc:
            raise ValueError(f"limits.{exc}") from None


@dataclass(frozen=True, kw_only=True)
class LiquidUniverseSpec:
    """A point-in-time liquid universe (``specs/universes/<name>.yaml``;
    :mod:`backtest_assets.alpha.universe`): members at each bar are the symbols whose
    quote volume over the trailing ``adv_bars`` bars of ``adv_interval_minutes`` (a full
    window), per day, is at least ``min_adv_usd``, the ``top_n`` largest (all when None)."""

    name: str
    description: str = ""
    adv_bars: int = 96
    adv_interval_minutes: int = 15
    min_adv_usd: float = 1e6
    top_n: int | None = None

    def validate(self) -> None:
        if not re.fullmatch(_OVERLAY_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a versioned lower_snake_case name")
        if self.adv_bars < 1 or self.adv_interval_minutes < 1:
            raise ValueError("adv_bars: the window needs at least one bar of a minute")
        if not (math.isfinite(self.min_adv_usd) and self.min_adv_usd >= 0):
            raise ValueError(f"min_adv_usd: {self.min_adv_usd} is not a number >= 0")
        if self.top_n is not None and self.top_n < 2:
            raise ValueError(f"top_n: {self.top_n} leaves no cross-section (< 2)")


ALPHA_SIGNALS = ("ts_momentum_multi", "mean_reversion_state", "funding_carry_adjusted",
                 "orderflow_imbalance", "xs_momentum")
REGIMES = ("calm", "normal", "stormy")


@dataclass(frozen=True, kw_only=True)
class RegimeSpec:
    """The volatility regime of a market symbol that gates the scores
    (:mod:`backtest_assets.alpha.regime`)."""

    symbol: str = "BTCUSDT"
    vol_window: int = 288
    z_window: int = 2016
    calm_below: float = -0.5
    stormy_above: float = 1.5
    allowed: tuple[Literal["calm", "normal", "stormy"], ...] = ("calm", "normal")

    def validate(self) -> None:
        if self.vol_window < 2 or self.z_window < 2:
            raise ValueError("vol_window: windows need at least 2 bars")
        if not self.calm_below < self.stormy_above:
            raise ValueError(f"calm_below: {self.calm_below} is not below stormy_above "
                             f"{self.stormy_above}")
        if not self.allowed:
            raise ValueError("allowed: at least one regime")


@dataclass(frozen=True, kw_only=True)
class AlphaModelSpec:
    """The combined model of a study's universe (``specs/alpha/<name>.yaml``;
    :mod:`backtest_assets.alpha.model`): signals orthogonalized (``method`` in ``order``,
    columns keeping their variance or unit), a pooled ridge on the forward log return over
    ``horizon`` with lambda chosen by a ``cv_blocks``-block purged (horizon + 1 bars) and
    embargoed CV, refitted every ``refit_days`` after ``first_train_days`` (scores out of
    sample only), gated by the regime."""

    name: str
    description: str = ""
    universe: str
    signals: tuple[str, ...] = ALPHA_SIGNALS
    method: Literal["residual", "lowdin", "pca"] = "residual"
    order: tuple[int, ...] | None = None
    scale: Literal["kept", "unit"] = "kept"
    lambdas: tuple[float, ...] = (0.0, 0.1, 1.0, 10.0, 100.0)
    cv_blocks: int = 6
    horizon: Interval = "60m"
    embargo_bars: int = 12
    first_train_days: int = 14
    refit_days: int = 7
    regime: RegimeSpec = RegimeSpec()
    buckets: int = 5
    cost_levels: tuple[float, ...] = (0.0, 0.0005, 0.001, 0.002)

    def validate(self) -> None:
        if not re.fullmatch(_OVERLAY_NAME, self.name):
            raise ValueError(f"name: {self.name!r} is not a versioned lower_snake_case name")
        unknown = [x for x in self.signals if x not in ALPHA_SIGNALS]
        if unknown or not self.signals or len(set(self.signals)) != len(self.signals):
            raise ValueError(f"signals: give distinct names of {list(ALPHA_SIGNALS)}, got "
                             f"{list(self.signals)}")
        if self.order is not None and sorted(self.order) != list(range(len(self.signals))):
            raise ValueError(f"order: {list(self.order)} is not a permutation of the "
                             f"{len(self.signals)} signals' positions")
        if self.order is not None and self.method != "residual":
            raise ValueError(f"order: only the residual method has an order, not {self.method}")
        if not self.lambdas or any(not (math.isfinite(x) and x >= 0) for x in self.lambdas) \
                or len(set(self.lambdas)) != len(self.lambdas):
            raise ValueError(f"lambdas: distinct numbers >= 0, got {list(self.lambdas)}")
        if self.cv_blocks < 2:
            raise ValueError(f"cv_blocks: {self.cv_blocks} < 2")
        if self.embargo_bars < 0:
            raise ValueError(f"embargo_bars: {self.embargo_bars} < 0")
        if self.first_train_days < 1 or self.refit_days < 1:
            raise ValueError("first_train_days: training and refit periods are >= 1 day")
        if self.buckets < 2:
            raise ValueError(f"buckets: {self.buckets} < 2")
        if any(not (math.isfinite(c) and 0 <= c < 0.1) for c in self.cost_levels):
            raise ValueError(f"cost_levels: fractions in [0, 0.1), got {list(self.cost_levels)}")
