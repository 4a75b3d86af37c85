"""Terminal tables of polars frames, rendered with rich: one format per column kind.

A :class:`Col` names a frame column, its header and its kind; :func:`render_table` returns
the table as plain text no wider than ``width`` (default 120). Long text columns
(``"wrap"``) are wrapped over lines, never cut with an ellipsis; numbers are right-aligned;
a null or NaN prints as ``-``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

Kind = Literal["text", "wrap", "int", "float", "pct", "bps", "prob"]
WIDTH = 120
WRAP_MIN = 24  # narrowest a wrapped column gets
# no frame and no column rules: a space between columns and a rule under the header
_BOX = box.Box("    \n    \n ── \n    \n    \n    \n    \n    \n", ascii=False)


@dataclass(frozen=True, kw_only=True)
class Col:
    """One column: ``name`` in the frame, ``header`` printed, ``kind`` its format.

    ``int``: thousands separators; ``float``: ``digits`` decimals; ``pct``: a fraction as a
    percentage; ``bps``: a fraction in basis points; ``prob``: a probability to 3 decimals;
    ``text`` is never wrapped or cut (names), ``wrap`` is wrapped to fit (reasons).
    ``optional`` columns are the ones dropped when the table cannot fit otherwise.
    """

    name: str
    header: str
    kind: Kind = "text"
    digits: int = 2
    optional: bool = False


def fmt(value: object, col: Col) -> str:
    """``value`` formatted as ``col``'s kind; ``-`` for null or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if col.kind in ("text", "wrap"):
        return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    x = float(value)  # type: ignore[arg-type]
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if col.kind == "int":
        return f"{round(x):,}"
    if col.kind == "pct":
        return f"{100 * x:.{col.digits}f}%"
    if col.kind == "bps":
        return f"{1e4 * x:,.1f}"
    if col.kind == "prob":
        return f"{x:.3f}"
    return f"{x:,.{col.digits}f}"


def _widths(cells: list[list[str]], columns: list[Col]) -> list[int]:
    """Each column's width: its widest cell or header (a wrapped one's, at most WRAP_MIN)."""
    out = []
    for i, c in enumerate(columns):
        widest = max([len(c.header), *(len(r[i]) for r in cells)])
        out.append(min(widest, WRAP_MIN) if c.kind == "wrap" else widest)
    return out


def _table(frame: pl.DataFrame, columns: list[Col]) -> tuple[Table, int]:
    """The rich table of ``columns`` and the narrowest it can be without cutting a cell."""
    cells = [[fmt(v, c) for v, c in zip(row, columns, strict=True)]
             for row in frame.select([c.name for c in columns]).iter_rows()]
    widths = _widths(cells, columns)
    # a space between columns, a rule under the header, no frame
    table = Table(box=_BOX, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False,
                  expand=False)
    for c, w in zip(columns, widths, strict=True):
        numeric = c.kind not in ("text", "wrap")
        # a wrapped column may shrink to WRAP_MIN; no other is ever cut
        table.add_column(c.header, justify="right" if numeric else "left",
                         no_wrap=c.kind != "wrap", overflow="fold", min_width=w)
    for r in cells:
        table.add_row(*r)
    return table, sum(widths) + 2 * (len(widths) - 1)  # a pad and a divider between columns


def render_table(frame: pl.DataFrame, columns: list[Col], *, width: int = WIDTH) -> str:
    """``columns`` of ``frame`` as aligned text at most ``width`` characters wide.

    Only ``wrap`` columns shrink (their text wrapped over lines). When the rest is still too
    wide, the ``optional`` columns are dropped, rightmost first, and a last line names them.
    """
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False,
                      emoji=False, markup=False)
    kept, dropped = list(columns), []
    table, narrowest = _table(frame, kept)
    while narrowest > width and any(c.optional for c in kept):
        victim = next(c for c in reversed(kept) if c.optional)
        kept.remove(victim)
        dropped.insert(0, victim.header)
        table, narrowest = _table(frame, kept)
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    if dropped:
        lines.append(f"(not shown, to fit {width} columns: {', '.join(dropped)})")
    return "\n".join(lines)
