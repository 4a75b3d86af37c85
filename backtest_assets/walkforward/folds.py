"""Train/test splits of a bar grid that never leak (pure; no Dagster).

Index contract
--------------
Bars are the rows ``0 .. n_bars - 1`` of a regular grid (a
:class:`~backtest_assets.strategies.Panel`). A split's ``train`` and ``test`` are tuples of
half-open ``[start, end)`` row ranges, sorted and disjoint.

Schemes
-------
Walk-forward (``rolling`` / ``anchored``): ``folds`` consecutive test windows follow a first
train window of ``train_bars`` and a purge gap; fold i's train window ends ``purge`` bars
before its test window starts and is the ``train_bars`` before that (rolling) or everything
before that (anchored). Test windows are ``test_bars`` long, or, without ``test_bars``, the
rest of the grid split evenly (the last one takes the remainder).

Combinatorially purged cross-validation (López de Prado, *Advances in Financial Machine
Learning*, ch. 7 and 12): the grid is cut into ``groups`` contiguous groups; every choice of
``test_groups`` of them is a split whose test set is those groups and whose train set is the
rest minus the ``purge`` bars before each test range (a label or a held position starting
there would reach into the test range) and the ``embargo`` bars after it (serial correlation
carries information from the test range into the bars right after it).

No leak (what :func:`leaks` verifies and the tests assert for every scheme): no test bar is a
train bar; no train bar lies within ``purge`` bars before a test range or within ``embargo``
bars after one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Split:
    """One train/test split: ``kind`` (rolling, anchored or cpcv) and its number."""

    kind: str
    fold: int
    train: Ranges
    test: Ranges

    @property
    def train_bars(self) -> int:
        return sum(b - a for a, b in self.train)

    @property
    def test_bars(self) -> int:
        return sum(b - a for a, b in self.test)


def walk_forward(n_bars: int, *, scheme: str, folds: int, train_bars: int,
                 test_bars: int | None = None, purge: int = 0) -> list[Split]:
    """Rolling or anchored walk-forward splits (module docstring).

    Raises
    ------
    ValueError
        An unknown scheme, or a grid too short for the windows asked for (naming both).
    """
    if scheme not in ("rolling", "anchored"):
        raise ValueError(f"scheme: {scheme!r} is not rolling or anchored")
    if folds < 1 or train_bars < 1 or purge < 0:
        raise ValueError(f"folds {folds}, train_bars {train_bars}, purge {purge}: need folds "
                         ">= 1, train_bars >= 1, purge >= 0")
    first = train_bars + purge
    size = test_bars if test_bars is not None else (n_bars - first) // folds
    if size < 1 or first + folds * size > n_bars:
        raise ValueError(f"{n_bars} bars cannot hold a train window of {train_bars} bars, a "
                         f"purge of {purge} and {folds} test windows of "
                         f"{test_bars or 'at least 1'} bars")
    out = []
    for i in range(folds):
        start = first + i * size
        end = n_bars if test_bars is None and i == folds - 1 else start + size
        train_end = start - purge
        train_start = max(0, train_end - train_bars) if scheme == "rolling" else 0
        out.append(Split(scheme, i, ((train_start, train_end),), ((start, end),)))
    return out


def cpcv(n_bars: int, *, groups: int, test_groups: int, purge: int = 0,
         embargo: int = 0) -> list[Split]:
    """Combinatorially purged cross-validation splits: C(groups, test_groups) of them."""
    if not 1 <= test_groups < groups <= n_bars:
        raise ValueError(f"cpcv: need 1 <= test_groups ({test_groups}) < groups ({groups}) "
                         f"<= bars ({n_bars})")
    bounds = group_bounds(n_bars, groups)
    out = []
    for i, chosen in enumerate(itertools.combinations(range(groups), test_groups)):
        test = _merge([(int(bounds[g]), int(bounds[g + 1])) for g in chosen])
        banned = _merge([(max(0, a - purge), min(n_bars, b + embargo)) for a, b in test])
        out.append(Split("cpcv", i, _complement(banned, n_bars), test))
    return out


def group_bounds(n_bars: int, groups: int) -> np.ndarray:
    """The ``groups + 1`` boundaries of ``groups`` contiguous groups as equal as possible."""
    return np.array([0, *np.cumsum([len(a) for a in np.array_split(np.arange(n_bars),
                                                                   groups)])])


def leaks(split: Split, *, purge: int, embargo: int) -> list[str]:
    """Every way ``split`` leaks (empty when it does not): module docstring's rules."""
    problems = []
    for a, b in split.train:
        for c, d in split.test:
            if a < d and c < b:
                problems.append(f"{split.kind} {split.fold}: train [{a}, {b}) overlaps test "
                                f"[{c}, {d})")
            elif b <= c and c - b < purge:
                problems.append(f"{split.kind} {split.fold}: train ends {c - b} bars before "
                                f"test [{c}, {d}) (purge {purge})")
            elif a >= d and a - d < embargo:
                problems.append(f"{split.kind} {split.fold}: train starts {a - d} bars after "
                                f"test [{c}, {d}) (embargo {embargo})")
    return problems


def boundaries(splits: Sequence[Split], n_bars: int, *extra: np.ndarray) -> np.ndarray:
    """Sorted unique range ends of ``splits`` (and of ``extra`` boundary arrays), 0 and
    ``n_bars`` included: blocks between them are either wholly in or wholly out of every
    split's train and test sets."""
    ends = [0, n_bars, *(e for s in splits for r in (*s.train, *s.test) for e in r)]
    return np.unique(np.concatenate([np.asarray(ends, dtype=np.int64),
                                     *(np.asarray(e, dtype=np.int64) for e in extra)]))


def block_mask(ranges: Ranges, bounds: np.ndarray) -> np.ndarray:
    """(B,) bool: which blocks ``[bounds[b], bounds[b + 1])`` lie inside ``ranges``."""
    lo, hi = bounds[:-1], bounds[1:]
    inside = np.zeros(len(lo), dtype=bool)
    for a, b in ranges:
        inside |= (lo >= a) & (hi <= b)
    return inside


def splits_frame(splits: Sequence[Split], ts: np.ndarray, step: np.timedelta64) -> pl.DataFrame:
    """One row per range of every split: kind, fold, role (train/test), bars and times.

    ``start`` is the first bar's open, ``end`` the last bar's close (``ts`` are bar opens).
    """
    rows = [{"kind": s.kind, "fold": s.fold, "role": role, "segment": j,
             "start_bar": a, "end_bar": b,
             "start": ts[a].astype("datetime64[us]").item(),
             "end": (ts[b - 1] + step).astype("datetime64[us]").item()}
            for s in splits for role, ranges in (("train", s.train), ("test", s.test))
            for j, (a, b) in enumerate(ranges)]
    return pl.DataFrame(rows, schema={"kind": pl.String, "fold": pl.Int64, "role": pl.String,
                                      "segment": pl.Int64, "start_bar": pl.Int64,
                                      "end_bar": pl.Int64, "start": pl.Datetime("us"),
                                      "end": pl.Datetime("us")})


def _merge(ranges: list[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def _complement(ranges: Ranges, n_bars: int) -> Ranges:
    out, at = [], 0
    for a, b in ranges:
        if a > at:
            out.append((at, a))
        at = b
    if at < n_bars:
        out.append((at, n_bars))
    return tuple(out)
