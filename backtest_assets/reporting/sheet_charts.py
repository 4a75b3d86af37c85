"""The tear sheets' charts as data (pure; no Dagster): one JSON object per chart, which the
page's script (``tearsheet.js``, beside this module) draws with BokehJS's plotting API.

Why in the browser: Bokeh's Python object model costs about 1 ms per model to build and
serialize, and a tear sheet's 18 charts hold about 1,100 models (axes, tickers, tools,
glyphs): 1.5 s a sheet, minutes for a study's reports. Built here as arrays, a sheet takes
tens of milliseconds; BokehJS builds the same figures in the page.

Array contract: every builder takes 1-D numpy arrays; times are float64 milliseconds since
the epoch (:func:`ms`), NaN is a gap in a line. Numeric arrays travel as base64 of their
little-endian bytes, byte-shuffled and deflated together in one block (:func:`pack`);
strings as JSON lists. A chart's ``name`` is its ``data-chart`` on the page and its Bokeh
model's name (``Bokeh.documents[0].get_model_by_name(name)``); ``link`` names the x range
it shares.

The price chart keeps every bar of its symbol (times as int32 minutes from the first bar,
OHLC as float32: 20 bytes a bar) and draws candles of ``k`` bars each, ``k`` the smallest that
keeps the visible window under ``maxc`` candles: at the overview a candle spans many bars,
zoomed to a few hours each candle is one bar (``rebucket`` in tearsheet.js, run on every
change of the x range).
"""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

UP, DOWN = "#26a69a", "#ef5350"
BLUE, ORANGE, GREY, PURPLE = "#1f77b4", "#ff7f0e", "#8a8a8a", "#8e44ad"
MINUTE_MS = 60_000.0
# ColorBrewer RdYlGn (11), red for losses to green for gains
RED_GREEN = ["#a50026", "#d73027", "#f46d43", "#fdae61", "#fee08b", "#ffffbf", "#d9ef8b",
             "#a6d96a", "#66bd63", "#1a9850", "#006837"]
SCRIPT = Path(__file__).with_name("tearsheet.js")


def ms(ts: np.ndarray | pl.Series) -> np.ndarray:
    """Datetimes as float64 milliseconds since the epoch (what Bokeh's time axes read)."""
    if isinstance(ts, pl.Series):
        ts = ts.to_numpy()
    return np.asarray(ts, dtype="datetime64[us]").astype(np.int64) / 1000.0


DTYPES = {"f8": "<f8", "f4": "<f4", "i4": "<i4"}


def nd(values, dtype: str = "f8") -> dict:
    """A numeric array of a chart: ``{"nd": dtype, "array": ...}``; :func:`pack` moves the
    arrays of a page into one compressed block."""
    return {"nd": dtype, "array": np.ascontiguousarray(np.asarray(values,
                                                                   dtype=DTYPES[dtype]))}


def pack(spec):
    """``spec`` with every :func:`nd` array replaced by ``{"nd", "off", "n"}`` and the
    block holding them: each array byte-shuffled (its items' first bytes, then their
    second bytes, ...: the slowly varying bytes of floats side by side), identical arrays
    stored once, the whole deflated (zlib) and base64-encoded. A year of 5-minute OHLC packs
    to about half its size (float32 prices do not compress unshuffled)."""
    chunks: list[bytes] = []
    seen: dict[bytes, int] = {}
    size = 0

    def walk(v):
        nonlocal size
        if isinstance(v, dict) and "array" in v and "nd" in v:
            a = v["array"]
            raw = a.view(np.uint8).reshape(-1, a.itemsize).T.tobytes()
            key = hashlib.sha1(raw + v["nd"].encode()).digest()
            if key not in seen:
                seen[key] = size
                chunks.append(raw)
                size += len(raw)
            return {"nd": v["nd"], "off": seen[key], "n": int(a.size)}
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    packed = walk(spec)
    block = base64.b64encode(zlib.compress(b"".join(chunks), 6)).decode("ascii")
    return packed, block


def unpack(packed, block: str):
    """The inverse of :func:`pack` (tests read a page's charts back with it)."""
    data = zlib.decompress(base64.b64decode(block))

    def walk(v):
        if isinstance(v, dict) and "off" in v and "nd" in v:
            dtype = np.dtype(DTYPES[v["nd"]])
            k, n = dtype.itemsize, v["n"]
            raw = np.frombuffer(data, np.uint8, count=k * n, offset=v["off"])
            return raw.reshape(k, n).T.copy().view(dtype).ravel()
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(packed)


def lines(name: str, title: str, x: np.ndarray, series: dict[str, np.ndarray], *,
          link: str | None = "time", yfmt: str | None = None, tipfmt: str = "0,0.00",
          log: bool = False, hline: float | None = None, ylabel: str = "",
          shade: Sequence[tuple[float, float]] = (), height: int = 240,
          hidden: bool = False) -> dict:
    """One line per series over time (legend entries toggle them; hover shows them all).
    A log axis gets its range from the positive values (Bokeh cannot find it while the
    chart is hidden)."""
    yrange = None
    if log:
        pos = np.concatenate([np.asarray(v, dtype=np.float64) for v in series.values()]) \
            if series else np.empty(0)
        pos = pos[np.isfinite(pos) & (pos > 0)]
        yrange = [float(pos.min()) * 0.97, float(pos.max()) * 1.03] if pos.size else [0.1, 10.0]
    return {"yrange": yrange, "kind": "lines", "name": name, "title": title, "time": True,
            "link": link,
            "x": nd(x), "series": [{"label": k, "y": nd(v)} for k, v in series.items()],
            "yfmt": yfmt, "tipfmt": tipfmt, "log": log, "hidden": hidden,
            "hline": None if hline is None or not math.isfinite(hline) else hline,
            "ylabel": ylabel, "shade": [[float(a), float(b)] for a, b in shade],
            "height": height}


def area(name: str, title: str, x: np.ndarray, y: np.ndarray, *, color: str = DOWN,
         ylabel: str = "", yfmt: str = "0.0%", tipfmt: str = "0.00%",
         link: str | None = "time") -> dict:
    """A filled area from 0 to ``y`` (drawdown, time under water)."""
    return {"kind": "area", "name": name, "title": title, "time": True, "link": link,
            "x": nd(x), "y": nd(y), "color": color, "ylabel": ylabel, "yfmt": yfmt,
            "tipfmt": tipfmt, "height": 200}


def price(symbol: str, bars: pl.DataFrame, trades: pl.DataFrame, events: pl.DataFrame, *,
          step_ms: float, maxc: int, link: str = "price") -> dict:
    """Candles of ``symbol`` with its trades and the events its entries act on.

    ``bars``: ``ts_open``, ``open``, ``high``, ``low``, ``close``, in time order.
    ``trades``: its ``backtest_trades`` rows (entries at the fill: the open of the entry bar;
    exits at the exit bar's open, where the engine stamps them). ``events``: ``ts`` (the
    event bar's open), ``event_type``, ``direction``, ``high`` (the event bar's high: the
    marker's height) and ``triggered``; drawn on top of the event's bar.
    """
    ts = ms(bars["ts_open"]) if bars.height else np.empty(0)
    t0 = float(ts[0]) if ts.size else 0.0
    full = {"t": nd(np.rint((ts - t0) / MINUTE_MS), "i4"),
            **{k[0]: nd(bars[k].to_numpy() if bars.height else [], "f4")
               for k in ("open", "high", "low", "close")}}
    tr = trades.with_columns(pl.col("exit_ts").fill_null(pl.col("entry_ts"))) \
        if trades.height else trades
    spec = {"kind": "price", "name": f"price-{symbol}", "symbol": symbol,
            "title": f"{symbol}: price, trades and events", "time": True, "link": link,
            "t0": t0, "step": step_ms, "maxc": maxc, "full": full, "height": 380,
            "trades": {"entry": nd(ms(tr["entry_ts"]) if tr.height else []),
                       "exit": nd(ms(tr["exit_ts"]) if tr.height else []),
                       **{k: nd(tr[c].to_numpy() if tr.height else [])
                          for k, c in (("entry_price", "entry_price"),
                                       ("exit_price", "exit_price"), ("qty", "qty"),
                                       ("pnl", "pnl"), ("ret", "return"))},
                       "side": tr["side"].to_list() if tr.height else [],
                       "reason": tr["exit_reason"].to_list() if tr.height else []}}
    if events.height:
        spec["events"] = {"ts": nd(ms(events["ts"]) + step_ms / 2), "y": nd(events["high"]),
                          "known": nd(ms(events["ts"]) + step_ms),
                          "type": events["event_type"].to_list(),
                          "direction": events["direction"].cast(pl.Int64).to_list(),
                          "triggered": events["triggered"].to_list()}
    return spec


def hist(name: str, title: str, edges: np.ndarray, counts: np.ndarray, *, xlabel: str,
         xfmt: str = "0.00%", colors: Sequence[str] | None = None,
         spans: dict[str, float] | None = None) -> dict:
    """Bars of a histogram; ``colors`` one per bin; ``spans`` label -> x of a dashed line
    (VaR, CVaR), in the legend."""
    return {"kind": "hist", "name": name, "title": title, "time": False, "link": None,
            "left": nd(edges[:-1]), "right": nd(edges[1:]), "top": nd(counts),
            "colors": list(colors) if colors is not None else None, "xfmt": xfmt,
            "xlabel": xlabel, "height": 240,
            "spans": [{"label": k, "x": float(v)} for k, v in (spans or {}).items()
                      if math.isfinite(v)]}


def heatmap(name: str, title: str, cells: pl.DataFrame, *, columns: Sequence[str],
            rows: Sequence[str]) -> dict:
    """Cells ``row``, ``col``, ``ret`` coloured red (loss) to green (gain), symmetric around
    0, each labelled with its return; rows top to bottom in ``rows`` order."""
    ret = cells["ret"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return {"kind": "heatmap", "name": name, "title": title, "columns": list(columns),
            "rows": list(rows), "palette": RED_GREEN,
            "cells": {"row": cells["row"].to_list(), "col": cells["col"].to_list(),
                      "ret": nd(ret), "label": ["" if not math.isfinite(v) else
                                                f"{100 * v:.1f}%" for v in ret]}}


def bars(name: str, title: str, labels: Sequence[str], values: Sequence[float], *,
         yfmt: str = "0,0", colors: Sequence[str] | None = None) -> dict:
    """One vertical bar per label."""
    return {"kind": "bars", "name": name, "title": title, "labels": list(labels),
            "values": nd(values), "yfmt": yfmt,
            "colors": list(colors) if colors else [BLUE] * len(labels)}


def grouped(name: str, title: str, groups: Sequence[str], series: dict[str, Sequence],
            *, ylabel: str = "") -> dict:
    """Bars per group side by side, one colour per series (IS vs OOS per fold)."""
    return {"kind": "grouped", "name": name, "title": title, "groups": list(groups),
            "ylabel": ylabel,
            "series": [{"label": k, "values": [None if v is None or not math.isfinite(v)
                                               else float(v) for v in vals]}
                       for k, vals in series.items()]}


def band(name: str, title: str, x: np.ndarray, mean: np.ndarray, lo: np.ndarray,
         hi: np.ndarray, *, xlabel: str, ylabel: str) -> dict:
    """A mean line in its ``lo..hi`` band, a dashed vertical line at x = 0 (event studies)."""
    return {"kind": "band", "name": name, "title": title, "time": False, "link": None,
            "x": nd(x), "mean": nd(mean), "lo": nd(lo), "hi": nd(hi), "xlabel": xlabel,
            "ylabel": ylabel, "height": 260}
