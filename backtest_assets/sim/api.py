"""The strategy interface: what a strategy sees at a bar's close and the intents it returns.

A :class:`Strategy` is called by the event loop (:mod:`backtest_assets.sim.loop`) with
``on_start(ctx)`` once, ``on_bar(bar, account)`` at the close of every bar and
``on_fill(fill, account)`` after each of its fills; each may return intents (one, a list, or
None). Intents decided at a bar's close act from the next bar's open, like every order of
the platform (DESIGN.md, Labels and entries); intents returned by ``on_fill`` act from the
fill's own time on (a stop placed on a fill watches the rest of that bar).

Point in time by construction: :class:`BarView` holds the arrays of the whole run but only
answers for bars up to the current one; asking for a later bar raises :class:`LookAheadError`
(``bar.close[-1]`` is this bar's close, ``bar.close[-20:]`` the last 20; ``bar.at(k)`` is the
bar ``k`` bars ago). Features and events are offered the same way.

Intents
-------
- :class:`Target`: hold ``weight`` x equity of a symbol (the vectorized engine's target,
  with all its rules: sizing from the equity at the fill's open, lot, min notional, margin,
  brackets, the risk manager, limit orders if the run has ``LimitOrders``).
- :class:`Market`: buy (``qty`` > 0) or sell ``qty`` units at the next open.
- :class:`Limit`: buy or sell ``qty`` units at ``price`` or better, resting ``valid_bars``
  bars, filled when a bar trades through the price (strictly), at the price, maker fee.
- :class:`Stop` / :class:`TakeProfit`: a market order of ``qty`` units once a bar trades at
  or beyond ``trigger`` (a stop: at or below it for a sell, at or above for a buy; a take-
  profit the other way), filled at the trigger (or at the open when the bar opens beyond).
- ``reduce_only`` on any of the four: the order may only shrink the position toward zero
  (its quantity is cut to the position; nothing fills when flat or on the wrong side).
- :class:`Cancel`: withdraw an open order by the id its intent was given.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

_ids = itertools.count(1)


class LookAheadError(IndexError):
    """A strategy asked for a value after the current bar's close."""


class Target(NamedTuple):
    """Hold ``weight`` x equity of ``symbol`` (a tuple: strategies return one per bar, and
    the loop's check that it asks for nothing new must cost next to nothing)."""

    symbol: str
    weight: float


@dataclass(frozen=True, kw_only=True)
class _Order:
    symbol: str
    qty: float
    reduce_only: bool = False
    id: int = dataclasses.field(default_factory=lambda: next(_ids))


@dataclass(frozen=True, kw_only=True)
class Market(_Order):
    pass


@dataclass(frozen=True, kw_only=True)
class Limit(_Order):
    price: float
    valid_bars: int = 1


@dataclass(frozen=True, kw_only=True)
class Stop(_Order):
    trigger: float


@dataclass(frozen=True, kw_only=True)
class TakeProfit(_Order):
    trigger: float


@dataclass(frozen=True, kw_only=True)
class Cancel:
    id: int


Intent = Target | Market | Limit | Stop | TakeProfit | Cancel
ORDER_KINDS = (Market, Limit, Stop, TakeProfit)


@dataclass(frozen=True, kw_only=True)
class Fill:
    """One fill: the bar it happened in, symbol, signed quantity, price, fee, why (an
    ``EXIT_REASONS`` name, or ``market`` / ``limit`` / ``stop`` / ``take_profit`` for the
    strategy's own orders) and the id of the order (0 for targets and the engine's exits)."""

    bar: int
    symbol: str
    qty: float
    price: float
    fee: float
    reason: str
    order_id: int = 0


class Series:
    """One column of the run, readable up to the current bar only."""

    __slots__ = ("_a", "_items", "_view")

    def __init__(self, a: np.ndarray, view: BarView) -> None:
        self._a, self._view = a, view
        self._items = a.tolist()  # one value read per bar: a list is the cheapest to index

    def __getitem__(self, key: Any) -> Any:
        if key.__class__ is int:  # the common case, kept cheap
            end = self._view.t + 1
            if key < 0:
                if key >= -end:
                    return self._items[key + end]
            elif key < end:
                return self._items[key]
        end = self._view.t + 1
        if isinstance(key, slice):
            start, stop, step = key.indices(end)
            if key.stop is not None and key.stop > 0 and key.stop > end:
                raise LookAheadError(f"bar {key.stop - 1} is after the current bar {end - 1}")
            return self._a[start:stop:step]
        k = int(key)
        if k >= end:
            raise LookAheadError(f"bar {k} is after the current bar {end - 1}")
        if k < 0:
            k += end
            if k < 0:
                raise IndexError(f"{-int(key)} bars back is before the first bar")
        return self._a[k]

    def __len__(self) -> int:
        return self._view.t + 1

    def __array__(self, dtype=None, copy=None):  # numpy sees only the past
        return np.asarray(self._a[: self._view.t + 1], dtype=dtype)


class BarView:
    """The run as known at the close of bar ``t`` (module docstring): ``open``, ``high``,
    ``low``, ``close``, ``volume`` of one symbol (or ``bar[symbol].close`` ...), and the
    ``features`` by name, each a :class:`Series` ending at this bar."""

    def __init__(self, ts: np.ndarray, symbols: Sequence[str], columns: Mapping[str, np.ndarray],
                 features: Mapping[str, np.ndarray] | None = None) -> None:
        self.t = -1
        self._ts = ts
        self.symbols = tuple(symbols)
        self._cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
        self._feats = {k: np.asarray(v, dtype=np.float64) for k, v in (features or {}).items()}
        self._one = len(self.symbols) == 1
        self._series: dict[tuple[str, int | None], Series] = {}

    @property
    def index(self) -> int:
        """The current bar's index."""
        return self.t

    @property
    def ts(self) -> np.datetime64:
        """The current bar's open time."""
        return self._ts[self.t]

    def _get(self, name: str, source: Mapping[str, np.ndarray], col: int | None) -> Series:
        key = (name, col)
        s = self._series.get(key)
        if s is None:
            a = source[name]
            if a.ndim == 2:
                a = a[:, 0 if col is None else col]
            s = self._series[key] = Series(np.ascontiguousarray(a), self)
        return s

    def __getattr__(self, name: str) -> Series:
        cols = self.__dict__.get("_cols", {})
        if name in cols:
            if not self._one:
                raise AttributeError(f"{name}: several symbols: use bar[symbol].{name}")
            return self._get(name, cols, None)
        raise AttributeError(name)

    def feature(self, name: str, symbol: str | None = None) -> Series:
        """Feature ``name`` (of ``symbol``, or the only one) up to this bar."""
        if name not in self._feats:
            raise KeyError(f"feature {name!r} was not given to the run "
                           f"(have {sorted(self._feats)})")
        return self._get(name, self._feats, self._col(symbol))

    def _col(self, symbol: str | None) -> int | None:
        if symbol is None:
            return None
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise KeyError(f"symbol {symbol!r} is not in the run {self.symbols}") from None

    def __getitem__(self, symbol: str) -> _SymbolView:
        return _SymbolView(self, self._col(symbol))


class _SymbolView:
    __slots__ = ("_col", "_view")

    def __init__(self, view: BarView, col: int | None) -> None:
        self._view, self._col = view, col

    def __getattr__(self, name: str) -> Series:
        return self._view._get(name, self._view._cols, self._col)


@dataclass(frozen=True, kw_only=True)
class Account:
    """The account at the moment the strategy is called: cash, equity (cash plus positions
    at their last price), per-symbol signed position, its entry price and the ids of the
    open orders."""

    cash: float
    equity: float
    position: Mapping[str, float]
    entry_price: Mapping[str, float]
    open_orders: tuple[int, ...]


class Strategy:
    """Subclass and override what you need; ``params`` come from the spec (or keywords).

    A parameter declared on the class with a type (``fast: int = 10``) is converted to it,
    so a spec's number reaches the strategy as the type it declares (``10.0`` as ``10``; a
    fraction for an ``int`` is an error); others are set as given. A code blueprint also
    passes ``weight`` (its ``target_weight``) and ``direction``.
    """

    def __init__(self, **params: Any) -> None:
        declared = _declared(type(self))
        for k, v in params.items():
            tp = declared.get(k)
            if tp in ("int", int) and isinstance(v, float):
                if not v.is_integer():
                    raise ValueError(f"{type(self).__name__}: parameter {k} is declared int, "
                                     f"got {v!r}")
                v = int(v)
            elif tp in ("float", float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            params[k] = v
            setattr(self, k, v)
        self.params = params

    def on_start(self, symbols: Sequence[str]) -> Iterable[Intent] | Intent | None:
        return None

    def on_bar(self, bar: BarView, account: Account) -> Iterable[Intent] | Intent | None:
        return None

    def on_fill(self, fill: Fill, account: Account) -> Iterable[Intent] | Intent | None:
        return None


def _declared(cls: type) -> dict[str, Any]:
    """The annotated class attributes of ``cls`` and its bases (a subclass's win)."""
    out: dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        out.update(inspect.get_annotations(c))
    return out


def as_intents(out: Iterable[Intent] | Intent | None) -> list[Intent]:
    """A strategy's return value as a list of intents (None: none)."""
    if out is None:
        return []
    if isinstance(out, (Target, Cancel, *ORDER_KINDS)):
        return [out]
    got = list(out)
    for x in got:
        if not isinstance(x, (Target, Cancel, *ORDER_KINDS)):
            raise TypeError(f"a strategy returned {x!r}, not an intent (Target, Market, "
                            "Limit, Stop, TakeProfit or Cancel)")
    return got
