"""Strategies shipped as examples, and named by the code blueprints in specs/strategies.

Each reads nothing but what ``on_bar`` is handed, so the point-in-time rule holds by
construction; parameters declared on the class with a type are converted from the spec's
numbers (``fast: int``).
"""

from __future__ import annotations

import math

from backtest_assets.sim.api import Cancel, Stop, Strategy, Target

# The side held above (fast SMA over slow) and below, by the blueprint's direction.
_SIDES = {"long": (1.0, 0.0), "short": (0.0, -1.0), "continuation": (1.0, -1.0),
          "mean_reversion": (-1.0, 1.0)}


class SmaCross(Strategy):
    """Each symbol: while the mean of its last ``fast`` closes is above the mean of its last
    ``slow``, hold ``weight`` of equity on the side the direction gives for "above" (long:
    long; short: flat; continuation: long; mean_reversion: short), else the side for
    "below". Flat until ``slow`` closes are known; a symbol without a close at a bar keeps
    its target. The means are kept as running sums (one read per bar and symbol)."""

    fast: int = 10
    slow: int = 30
    weight: float = 1.0
    direction: str = "long"

    def on_start(self, symbols):
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"SmaCross: need 1 <= fast < slow, got {self.fast}, {self.slow}")
        self.symbols = tuple(symbols)
        self.closes = {s: [] for s in symbols}
        self.sums = {s: [0.0, 0.0] for s in symbols}
        self.above, self.below = (self.weight * x for x in _SIDES[self.direction])

    def on_bar(self, bar, account):
        out = []
        for s in self.symbols:
            c = bar[s].close[-1] if len(self.symbols) > 1 else bar.close[-1]
            if math.isnan(c):
                continue
            closes, sums = self.closes[s], self.sums[s]
            closes.append(c)
            n = len(closes)
            sums[0] += c - (closes[n - 1 - self.fast] if n > self.fast else 0.0)
            sums[1] += c - (closes[n - 1 - self.slow] if n > self.slow else 0.0)
            if n < self.slow:
                continue
            up = sums[0] / self.fast > sums[1] / self.slow
            out.append(Target(s, self.above if up else self.below))
        return out


class TrailingBreakout(Strategy):
    """Each symbol: buy ``weight`` of equity when the close makes a ``lookback``-bar high;
    on the fill place a reduce-only stop ``trail`` below the fill, and at each close move
    it up to ``trail`` below the highest close since the entry (cancel and replace). Path
    dependent: what a target array cannot say."""

    lookback: int = 48
    trail: float = 0.02
    weight: float = 0.3
    direction: str = "long"

    def on_start(self, symbols):
        self.symbols = tuple(symbols)
        self.stops: dict[str, Stop] = {}
        self.peak: dict[str, float] = {}

    def on_bar(self, bar, account):
        out = []
        for s in self.symbols:
            closes = bar[s].close
            if len(closes) <= self.lookback or math.isnan(closes[-1]):
                continue
            c, held = closes[-1], account.position[s]
            if held == 0:
                self.stops.pop(s, None)
                if c >= max(closes[-self.lookback - 1:-1]):
                    out.append(Target(s, self.weight))
                continue
            self.peak[s] = max(self.peak.get(s, c), c)
            old = self.stops.get(s)
            level = self.peak[s] * (1 - self.trail)
            if old is not None and level > old.trigger:
                self.stops[s] = Stop(symbol=s, qty=-held, trigger=level, reduce_only=True)
                out += [Cancel(id=old.id), self.stops[s]]
        return out

    def on_fill(self, fill, account):
        s = fill.symbol
        if fill.reason == "signal" and account.position[s] > 0:
            self.peak[s] = fill.price
            self.stops[s] = Stop(symbol=s, qty=-account.position[s],
                                 trigger=fill.price * (1 - self.trail), reduce_only=True)
            return self.stops[s]
        if account.position[s] == 0:  # the stop (or an exit rule) closed it
            self.stops.pop(s, None)
            self.peak.pop(s, None)
            return Target(s, 0.0)  # the next breakout is a change of target again
        return None
