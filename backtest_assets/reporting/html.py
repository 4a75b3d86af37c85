"""HTML building blocks of the research report and the tear sheets (pure; no Dagster).

Every function returns HTML-safe text: values are escaped, a missing value (None, NaN,
inf) prints as an em dash. Numbers shown with :func:`num` also carry their exact value in
``data-value`` (``repr`` of the float), so a test can compare a page with the warehouse
without parsing rounded text.
"""

from __future__ import annotations

import datetime
import html
import json
import math
from collections.abc import Callable, Sequence

import polars as pl

NA = "\u2014"  # em dash: a missing value


def esc(value: object) -> str:
    return NA if value is None else html.escape(str(value), quote=True)


def missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fixed(value: object, digits: int = 2) -> str:
    return NA if missing(value) else f"{float(value):,.{digits}f}"


def pct(value: object, digits: int = 2) -> str:
    return NA if missing(value) else f"{100 * float(value):.{digits}f}%"


def integer(value: object) -> str:
    return NA if missing(value) else f"{int(value):,}"


def bps(value: object) -> str:
    return NA if missing(value) else f"{1e4 * float(value):,.1f}"


def short_hash(value: object) -> str:
    """A hash shortened to 12 characters, the full value in the tooltip."""
    if not value:
        return NA
    full = esc(value)
    return f'<code title="{full}">{esc(str(value)[:12])}</code>'


def when(value: object) -> str:
    if isinstance(value, datetime.datetime):
        fmt = "%Y-%m-%d" if value.time() == datetime.time() else "%Y-%m-%d %H:%M"
        return esc(value.strftime(fmt))
    if isinstance(value, datetime.date):
        return esc(value.isoformat())
    return esc(value)


def span(start: object, end: object) -> str:
    """A compact range: ``01-14 08:05 to 01-17 06:40`` within one year, the year once."""
    if isinstance(start, datetime.datetime) and isinstance(end, datetime.datetime):
        def fmt(v: datetime.datetime) -> str:
            return "%m-%d" if v.time() == datetime.time() else "%m-%d %H:%M"
        if start.year == end.year:
            return esc(f"{start.year} {start.strftime(fmt(start))} to {end.strftime(fmt(end))}")
    return f"{when(start)} to {when(end)}"


def params(value: object) -> str:
    """A JSON object of parameters as ``k=v, ...``; anything else verbatim."""
    if value is None:
        return NA
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return f"<code>{esc(value)}</code>"
    if isinstance(parsed, dict):
        text = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                         for k, v in parsed.items())
        return f"<code>{esc(text)}</code>"
    return f"<code>{esc(json.dumps(parsed))}</code>"


def reasons(value: object) -> str:
    if isinstance(value, pl.Series):
        value = value.to_list()
    if isinstance(value, list | tuple):
        value = "; ".join(str(v) for v in value if v is not None)
    return esc(value) if value else NA


def num(key: str, value: object, fmt: Callable[[object], str]) -> str:
    """``fmt(value)`` in a ``<span>`` carrying ``data-key`` and the exact ``data-value``."""
    exact = "" if missing(value) else repr(float(value))
    return f'<span data-key="{esc(key)}" data-value="{exact}">{fmt(value)}</span>'


def nothing(sentence: str) -> str:
    return f'<p class="nothing">{esc(sentence)}</p>'


def note(sentence: str) -> str:
    return f'<p class="note">{esc(sentence)}</p>'


def section(key: str, title: str, *parts: str) -> str:
    body = "\n".join(parts)
    return f'<section id="{key}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


# A column: header, right-aligned?, cell formatter of the row dict (returns HTML).
Column = tuple[str, bool, Callable[[dict], str]]


def table(columns: Sequence[Column], rows: Sequence[dict], *, css: str = "",
          sort_keys: Sequence[Callable[[dict], object]] | None = None) -> str:
    """A table; with ``sort_keys`` (one per column) each cell carries ``data-sort`` (its
    raw value) and the table the class ``sortable`` (the page's script sorts on a header
    click)."""
    head = "".join(f'<th{" class=num" if n else ""}>{esc(h)}</th>' for h, n, _ in columns)

    def cell(i: int, n: bool, fmt: Callable[[dict], str], row: dict) -> str:
        attrs = " class=num" if n else ""
        if sort_keys is not None:
            raw = sort_keys[i](row)
            attrs += f' data-sort="{"" if missing(raw) else esc(raw)}"'
        return f"<td{attrs}>{fmt(row)}</td>"

    body = "\n".join(
        "<tr>" + "".join(cell(i, n, fmt, row) for i, (_, n, fmt) in enumerate(columns))
        + "</tr>" for row in rows)
    classes = " ".join(c for c in (css, "sortable" if sort_keys is not None else "") if c)
    cls = f' class="{classes}"' if classes else ""
    return (f'<div class="scroll"><table{cls}>\n<thead><tr>{head}</tr></thead>\n'
            f'<tbody>\n{body}\n</tbody>\n</table></div>')


def text(name: str) -> Callable[[dict], str]:
    return lambda row: esc(row.get(name))


def keyvalue(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of label and (already formatted) value."""
    return table([("", False, lambda r: esc(r["k"])), ("", True, lambda r: r["v"])],
                 [{"k": k, "v": v} for k, v in rows], css="keyvalue")


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
       color: #222; background: #fff; margin: 0 auto; max-width: 1200px; padding: 0 24px 48px;
       line-height: 1.4; font-size: 15px; }
h1 { font-size: 1.6em; margin: 24px 0 4px; }
h3 { font-size: 1.1em; margin: 20px 0 4px; }
h4 { font-size: 0.95em; margin: 12px 0 2px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ccc; }
nav a { color: #2a5db0; text-decoration: none; }
a { color: #2a5db0; }
.note { color: #555; font-size: 0.9em; margin: 4px 0 8px; }
.nothing { color: #777; font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.keyvalue thead { display: none; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-dir="asc"]::after { content: " \\25B2"; font-size: 0.7em; }
table.sortable th[data-dir="desc"]::after { content: " \\25BC"; font-size: 0.7em; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.92em; }
img.chart { display: block; max-width: 100%; height: auto; margin: 8px 0 16px; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; color: #fff;
         font-size: 0.85em; }
.promote { background: #2e8b57; } .hold { background: #4c72b0; } .archive { background: #8a8a8a; }
.legend span { margin-right: 12px; }
"""

# Sorts a table.sortable on a header click by its cells' data-sort (numbers as numbers).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var dir = th.dataset.dir === "asc" ? "desc" : "asc";
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var v = row.cells[col].dataset.sort;
        var n = Number(v);
        return v === "" ? null : (isNaN(n) ? v : n);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) { return 0; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        var c = (typeof x === "number" && typeof y === "number") ? x - y
          : String(x).localeCompare(String(y));
        return dir === "asc" ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
