"""Overlays on a blueprint's target (pure numpy; no Dagster).

An overlay (:class:`~backtest_assets.specs.models.OverlaySpec`, ``specs/overlays``) changes a
blueprint's *orders*, never its signal: it acts on the engine target (T x S, a fraction of
equity decided at the close of bar t, NaN = keep, :mod:`backtest_assets.strategies.blueprints`)
after the hold rule has shaped it, in the order the blueprint lists its overlays. An *entry*
is a finite non-zero target value; an exit (0) is never touched, so every overlay can only
reduce risk or resize it.

- ``veto`` / ``regime_filter`` **block** an entry when a rule holds at its bar (a veto rule
  on its side; the regime feature outside [min, max], or unknown). A blocked entry becomes
  0 (flat: a position of the other side is closed, none is opened), except when the position
  in force already has the entry's side: then it is kept (NaN), since the overlay blocks new
  risk, not a position taken before the condition held. A NaN veto feature blocks nothing
  (no print yet); a NaN regime feature blocks (the regime is unknown).
- ``vol_target`` **resizes** each entry by ``target / feature[t]`` clipped to
  [``min_scale``, ``max_scale``]; the size is fixed for the position (a later entry sizes
  itself); an unknown or zero volatility blocks the entry. The result is capped at
  ``max_weight`` per symbol (the blueprint's leverage over its symbols), so the engine's
  leverage check holds.
- ``drawdown_brake`` runs the target so far (the overlays before it) through the engine as
  the edge's *paper* equity; at a bar whose close leaves the paper equity ``max_drawdown``
  or more below its running peak (the starting cash is the first peak) the brake engages and
  stays engaged until the paper drawdown is back within ``resume_drawdown``. Entries decided
  while it is engaged are scaled by ``scale`` (0 blocks them as above); positions already
  open run their course (their exits are untouched). The paper equity at a bar's close is
  known at that close, when the bar's order is decided: no look-ahead.

Every feature value read at bar t is the one known at t's close (the features are point in
time); the target at t fills at the open of t + 1 as any other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from backtest_assets.specs.models import OverlaySpec, VetoRule

Paper = Callable[[np.ndarray], np.ndarray]  # target -> equity at each bar's close


@dataclass(frozen=True)
class OverlayCounts:
    """What one overlay did to a target: entries blocked, entries resized, bars braked."""

    name: str
    blocked: int = 0
    resized: int = 0
    braked_bars: int = 0


def features_read(overlays: Sequence[OverlaySpec]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for o in overlays for f in o.features))


def versions(overlays: Sequence[OverlaySpec]) -> str:
    """How results name a blueprint's overlays: ``name@hash8`` each, in order ('' without)."""
    from backtest_assets.specs.loader import spec_hash

    return ",".join(f"{o.name}@{spec_hash(o)[:8]}" for o in overlays)


def apply(target: np.ndarray, overlays: Sequence[OverlaySpec], *,
          features: Mapping[str, np.ndarray], max_weight: float,
          paper: Paper | None = None, init_cash: float = 1.0
          ) -> tuple[np.ndarray, list[OverlayCounts]]:
    """``target`` after each overlay in turn (module docstring) and what each did.

    Parameters
    ----------
    target : (T, S) array
        The blueprint's target (NaN = keep); not modified.
    overlays : sequence of OverlaySpec
        In the blueprint's order.
    features : mapping of str to (T, S) arrays
        Every feature the overlays read, on the target's bars.
    max_weight : float
        The largest |target| of one symbol a resize may reach.
    paper : callable, optional
        Target -> equity at each close (the engine on the same bars, instruments, funding
        and exits); needed by a drawdown brake.
    init_cash : float
        The paper run's starting cash (its first peak).

    Raises
    ------
    ValueError
        A feature missing or of another shape, a brake without ``paper``.
    """
    out = np.array(target, dtype=np.float64, copy=True)
    counts = []
    for o in overlays:
        for name in o.features:
            if name not in features or np.shape(features[name]) != out.shape:
                raise ValueError(f"overlay {o.name}: feature {name!r} is missing or not of "
                                 f"shape {out.shape}")
        if o.kind == "veto":
            blocked = np.zeros(out.shape, bool)
            for rule in o.rules:
                blocked |= _rule_holds(rule, features[rule.feature], out)
            out, n = _block(out, blocked)
            counts.append(OverlayCounts(o.name, blocked=n))
        elif o.kind == "regime_filter":
            v = np.asarray(features[o.feature], float)
            inside = np.isfinite(v)
            if o.min is not None:
                inside &= v >= o.min
            if o.max is not None:
                inside &= v <= o.max
            out, n = _block(out, ~inside)
            counts.append(OverlayCounts(o.name, blocked=n))
        elif o.kind == "vol_target":
            out, blocked, resized = _vol_target(out, o, features[o.feature], max_weight)
            counts.append(OverlayCounts(o.name, blocked=blocked, resized=resized))
        else:
            if paper is None:
                raise ValueError(f"overlay {o.name}: a drawdown brake needs the paper run")
            engaged = brake_state(paper(out), o, init_cash)
            hit = engaged[:, None] & _entries(out)
            if o.scale:
                out, n, resized = np.where(hit, out * o.scale, out), 0, int(hit.sum())
            else:
                (out, n), resized = _block(out, hit), 0
            counts.append(OverlayCounts(o.name, blocked=n, resized=resized,
                                        braked_bars=int(engaged.sum())))
    return out, counts


def brake_state(equity: np.ndarray, o: OverlaySpec, init_cash: float) -> np.ndarray:
    """(T,) bool: the brake engaged at each bar's close (hysteresis, module docstring)."""
    eq = np.asarray(equity, float)
    peak = np.maximum.accumulate(np.maximum(eq, init_cash))
    dd = 1.0 - eq / peak
    state = np.empty(len(eq), bool)
    on = False
    for t, d in enumerate(dd):  # a two-state machine: one pass
        if not on and d >= o.max_drawdown:
            on = True
        elif on and d <= o.resume_drawdown:
            on = False
        state[t] = on
    return state


def _entries(target: np.ndarray) -> np.ndarray:
    return np.isfinite(target) & (target != 0)


def _rule_holds(rule: VetoRule, feature: np.ndarray, target: np.ndarray) -> np.ndarray:
    v = np.asarray(feature, float)
    with np.errstate(invalid="ignore"):
        hit = (v > rule.threshold if rule.op == "gt" else v < rule.threshold
               if rule.op == "lt" else np.abs(v) > rule.threshold)
    hit &= np.isfinite(v)
    side = {"long": target > 0, "short": target < 0, "both": target != 0}[rule.side]
    return hit & side


def _block(target: np.ndarray, blocked: np.ndarray) -> tuple[np.ndarray, int]:
    """Blocked entries made flat, or kept (NaN) where the position in force already has
    their side (module docstring); returns the target and the entries blocked."""
    hit = blocked & _entries(target)
    out = target.copy()
    for s in np.flatnonzero(hit.any(axis=0)):
        col = out[:, s]
        held = 0.0
        for t in np.flatnonzero(np.isfinite(col)):  # the orders of this symbol, in time
            if hit[t, s]:
                col[t] = np.nan if np.sign(held) == np.sign(col[t]) else 0.0
            if np.isfinite(col[t]):
                held = col[t]
    return out, int(hit.sum())


def _vol_target(target: np.ndarray, o: OverlaySpec, vol: np.ndarray, max_weight: float
                ) -> tuple[np.ndarray, int, int]:
    v = np.asarray(vol, float)
    entries = _entries(target)
    known = np.isfinite(v) & (v > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.clip(o.target / np.where(known, v, np.nan), o.min_scale, o.max_scale)
    sizable = entries & known & (scale > 0)
    sized = np.where(sizable, np.clip(target * scale, -max_weight, max_weight), target)
    out, blocked = _block(sized, entries & ~sizable)
    return out, blocked, int((sizable & (sized != target)).sum())
