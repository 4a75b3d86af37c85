"""The LIVE stage's interface: a venue adapter that receives the same intents a strategy
returns in a backtest, and the driver that runs a strategy against any adapter (pure).

No exchange connection is built here. :class:`VenueAdapter` is what one must implement:
hand over each closed bar, take the intents decided at its close (they act from the next
open), report every fill as it happens (the strategy's ``on_fill`` answers at once, as an
exchange's user-data stream would call back) and publish the account. :func:`drive` is the
whole of the strategy's side: ``on_start``, then ``on_bar`` at every close, intents passed on
unchanged. :class:`SimAdapter` implements the interface on the event loop, so a strategy
driven through it gives exactly :func:`~backtest_assets.sim.run_strategy`'s run
(tests/unit/test_live_adapter.py): what the strategy sees and sends live is what it saw and
sent in its backtest and demo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np

from backtest_assets.engine.core import Result
from backtest_assets.sim.api import Account, BarView, Fill, Intent, Strategy, as_intents
from backtest_assets.sim.loop import Run, _StrategyLoop, prepare

FillHandler = Callable[[Fill, Account], Iterable[Intent] | Intent | None]


class VenueAdapter(Protocol):
    """A venue connection as the LIVE stage sees it (module docstring)."""

    symbols: tuple[str, ...]

    def connect(self, on_fill: FillHandler) -> None:
        """Call ``on_fill(fill, account)`` for every fill of the account, as it happens,
        and act on the intents it returns at once."""

    def submit(self, intents: Sequence[Intent]) -> None:
        """Intents decided at the last bar's close (or at the start): they act from the
        next open."""

    def next_bar(self) -> BarView | None:
        """Wait for the next bar to close and return the view of the market at its close
        (None when the session ends)."""

    def account(self) -> Account:
        """The account now: cash, equity, positions, entry prices, open orders."""


def drive(strategy: Strategy, adapter: VenueAdapter) -> None:
    """Run ``strategy`` against ``adapter`` until the adapter ends the session."""
    adapter.connect(strategy.on_fill)
    adapter.submit(as_intents(strategy.on_start(adapter.symbols)))
    while (bar := adapter.next_bar()) is not None:
        adapter.submit(as_intents(strategy.on_bar(bar, adapter.account())))


class _Relay(Strategy):
    """The event loop's strategy seat, kept by the adapter: the driver's intents come in
    through ``submit``, fills go out to the handler ``connect`` gave."""

    def __init__(self) -> None:
        super().__init__()
        self.handler: FillHandler | None = None

    def on_fill(self, fill, account):
        return None if self.handler is None else self.handler(fill, account)


class _Stepped(_StrategyLoop):
    """The strategy loop one bar at a time: the close hands the decision to the driver."""

    def decide(self, t: int) -> None:
        self.at_close(t)  # on_bar is the driver's: it submits what the strategy returns


class SimAdapter:
    """:class:`VenueAdapter` on the event loop: the platform's venue rules, bar by bar.

    Takes the arguments of :func:`~backtest_assets.sim.run_strategy` (no strategy, no
    ``skip_quiet``: every bar is stepped, as a live session sees every bar).
    """

    def __init__(self, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                 close: np.ndarray, instruments, **kwargs) -> None:
        self._relay = _Relay()
        inp, view, history = prepare(open_, high, low, close, instruments, **kwargs)
        self._loop = _Stepped(inp, self._relay, view, history)
        self.symbols = tuple(self._loop.symbols)
        self._t = 0
        self._rows: dict[str, list] = {k: [] for k in (
            "equity", "cash", "position", "exposure", "fees", "slippage", "funding",
            "liquidation_fees", "insurance")}

    def connect(self, on_fill: FillHandler) -> None:
        self._relay.handler = on_fill

    def submit(self, intents: Sequence[Intent]) -> None:
        self._loop.apply(list(intents), self._t)

    def next_bar(self) -> BarView | None:
        if self._t >= self._loop.T:
            return None
        for k, v in self._loop.step(self._t).items():
            self._rows[k].append(v)
        self._t += 1
        return self._loop.view

    def account(self) -> Account:
        return self._loop.account()

    def run(self) -> Run:
        """The session's record so far, as ``run_strategy`` returns it."""
        arrays = {k: np.array(v, dtype=np.float64) for k, v in self._rows.items()}
        result: Result = self._loop.result(arrays)
        return Run(result=result, fills=tuple(self._loop.fills))
