"""Tear sheets: one self-contained, interactive HTML page per blueprint and per portfolio
(pure; no Dagster).

Frame contract
--------------
:class:`BlueprintInputs` carries one blueprint's rows of the warehouse tables (the ``study``
column may be there or not; any frame may be empty and its section then says so). Timestamps
are naive UTC ``Datetime("us")``; returns and drawdowns are fractions.

- ``catalog``: its ``strategy_blueprints`` row (``source``, ``hypothesis_id``, ``entry``,
  ``direction``, ``exits``, ``symbols``, ``spec_json``, ``spec_hash``);
- ``metrics``: its ``backtest_metrics`` row: every headline number is shown from here, as
  stored (the page equals the warehouse);
- ``equity``, ``trades``: its ``backtest_equity`` and ``backtest_trades`` rows;
- ``bars``: ``symbol``, ``ts_open``, ``open``, ``high``, ``low``, ``close`` of its symbols'
  perp bars over the study window;
- ``events``: ``event_type``, ``symbol``, ``ts``, ``direction`` of the event type its entry
  acts on (empty for an entry on a condition, code or alpha scores);
- ``folds``: its ``walkforward_results`` rows of sample ``test``; ``oos_equity`` its
  ``walkforward_equity``; ``summary`` its ``walkforward_summary`` row; ``decision`` its
  ``promotion_decisions`` row (None where not run);
- ``hypotheses``: the ``phase2_fdr`` rows behind it (its own hypothesis for a Phase-2
  blueprint; its event type's survivors for a spec blueprint entering on an event);
  ``event_curve``: the :func:`~backtest_assets.reporting.event_study.event_study` frame of
  its event type over its symbols.

:class:`PortfolioInputs`: one portfolio's ``portfolio_metrics`` (both books),
``portfolio_equity`` and ``portfolio_weights`` rows, and the perp closes of the study's
symbols (buy and hold beside the book).

Output
------
:func:`render_blueprint` and :func:`render_portfolio` return a :class:`TearSheet`: the HTML
(Bokeh's JavaScript inlined: no URL is fetched, a Content-Security-Policy forbids it), the
chart names in page order and the headline numbers. Each chart is a ``<figure
data-chart="NAME" data-trace="...">`` whose caption names the study, spec, data and code
hashes it was drawn from. On load, once Bokeh has rendered every chart, an inline script sets
``data-charts-rendered`` on ``<body>`` beside ``data-charts-total``. Numbers carry their exact
value in ``data-value`` (:func:`backtest_assets.reporting.html.num`). Long series are
downsampled for the overview (min/max per bucket: every peak and trough is kept); the price
chart keeps every bar and re-buckets its candles on zoom down to single bars
(:mod:`backtest_assets.reporting.sheet_charts` and ``tearsheet.js``).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from backtest_assets.reporting import html as H
from backtest_assets.reporting import performance as P
from backtest_assets.reporting import sheet_charts as C

OVERVIEW_POINTS = 1500  # buckets of a downsampled line (two points each at most)
MAX_CANDLES = 1200  # candles drawn at once on a price chart
# Bars a sheet keeps at full resolution over all its symbols (about 12 bytes a bar packed):
# a symbol-year of 5m bars fits; beyond, every price chart keeps candles of k bars, the
# smallest k that fits, and says so.
FULL_BARS_BUDGET = 120_000
VAR_LEVELS = (0.95, 0.99)


@dataclass(frozen=True)
class Provenance:
    """What every chart of a sheet was drawn from (the report's traceability fields)."""

    study: str
    spec_hashes: dict[str, str]  # the study's spec files -> sha256
    spec_hash: str  # the blueprint's (or portfolio's) own spec hash
    dataset_hash: str
    code_commit: str

    def line(self) -> str:
        return (f"study {self.study} \u00b7 spec {self.spec_hash[:12] or '?'} \u00b7 data "
                f"{self.dataset_hash[:12] or '?'} \u00b7 code {self.code_commit[:12] or '?'}")


@dataclass(frozen=True)
class BlueprintInputs:
    """One blueprint's frames (module docstring)."""

    blueprint: str
    window: tuple[dt.date, dt.date]
    interval_minutes: int
    init_cash: float
    trace: Provenance
    catalog: dict
    metrics: dict
    equity: pl.DataFrame
    trades: pl.DataFrame
    bars: pl.DataFrame
    events: pl.DataFrame = field(default_factory=pl.DataFrame)
    folds: pl.DataFrame = field(default_factory=pl.DataFrame)
    oos_equity: pl.DataFrame = field(default_factory=pl.DataFrame)
    summary: dict | None = None
    decision: dict | None = None
    hypotheses: pl.DataFrame = field(default_factory=pl.DataFrame)
    event_curve: pl.DataFrame = field(default_factory=pl.DataFrame)
    leverage: float | None = None


@dataclass(frozen=True)
class PortfolioInputs:
    """One portfolio's frames (module docstring)."""

    portfolio: str
    window: tuple[dt.date, dt.date]
    interval_minutes: int
    init_cash: float
    trace: Provenance
    metrics: pl.DataFrame
    equity: pl.DataFrame
    weights: pl.DataFrame
    closes: pl.DataFrame  # symbol, ts_open, close


@dataclass(frozen=True)
class TearSheet:
    """A rendered sheet: the page, its charts in page order and its headline numbers."""

    html: str
    charts: tuple[str, ...]
    headline: dict[str, float | None]


# ---- the page ---------------------------------------------------------------------------------

class _Page:
    """Collects sections and the charts they place; renders them into one document."""

    def __init__(self, trace: Provenance):
        self.trace = trace
        self.charts: dict[str, dict] = {}
        self.sections: list[str] = []
        self.nav: list[tuple[str, str]] = []

    def chart(self, spec: dict, caption: str = "") -> str:
        """The ``<figure>`` of chart ``spec`` (:mod:`.sheet_charts`), with its provenance;
        hidden (a toggle shows it) when the spec says so."""
        name = spec["name"]
        if name in self.charts:
            raise ValueError(f"two charts named {name!r}")
        self.charts[name] = spec
        trace = self.trace.line()
        text = f"{H.esc(caption)} \u00b7 " if caption else ""
        hidden = " hidden" if spec.get("hidden") else ""
        return (f'<figure class="chart" data-chart="{H.esc(name)}" data-trace="{H.esc(trace)}"'
                f"{hidden}>"
                f'<div data-root="{H.esc(name)}"></div><figcaption>{text}'
                f"<span class=trace>{H.esc(trace)}</span></figcaption></figure>")

    def add(self, key: str, title: str, *parts: str) -> None:
        self.nav.append((key, title))
        self.sections.append(H.section(key, title, *parts))

    def render(self, title: str, subtitle: str, head: str) -> str:
        packed, block = C.pack({"charts": list(self.charts.values())})
        # "</" cannot end the JSON's script element early
        data = json.dumps(packed, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        nav = " &middot; ".join(f'<a href="#{k}">{H.esc(t)}</a>' for k, t in self.nav)
        js = f"<script>{bokeh_js()}</script>" if self.charts else ""
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{H.esc(title)}</title>", f"<style>{H.CSS}{_CSS}</style>", js, "</head>",
            f'<body data-charts-total="{len(self.charts)}">',
            f"<header><h1>{H.esc(title)}</h1>", f'<p class="note">{subtitle}</p>', head,
            f"<nav>{nav}</nav></header>", "<main>", *self.sections, "</main>",
            f'<script type="application/json" id="sheet-data">{data}</script>',
            f'<script type="application/octet-stream" id="sheet-arrays">{block}</script>',
            f"<script>{C.SCRIPT.read_text()}</script>" if self.charts else
            '<script>document.body.dataset.chartsRendered = "0";</script>',
            f"<script>{H.SORT_SCRIPT}</script>", "</body>", "</html>", ""])


@functools.cache
def bokeh_js() -> str:
    """BokehJS and its plotting API, from the installed bokeh package (not imported: only
    its JavaScript is used)."""
    spec = importlib.util.find_spec("bokeh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the bokeh package is not installed (pyproject.toml lists it)")
    static = Path(spec.submodule_search_locations[0]) / "server" / "static" / "js"
    return "\n".join((static / f).read_text(encoding="utf-8")
                     for f in ("bokeh.min.js", "bokeh-api.min.js"))


# Nothing may be fetched: inline scripts and styles, data: and blob: images only.
_CSP = ("default-src 'none'; img-src data: blob:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")
_CSS = """
figure.chart { margin: 8px 0 20px; }
figure.chart figcaption { color: #666; font-size: 0.78em; margin-top: 2px; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 12px 0; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: 6px 12px; min-width: 110px; }
.card .label { color: #666; font-size: 0.8em; }
.card .value { font-size: 1.25em; font-variant-numeric: tabular-nums; }
.toggle button { margin-right: 6px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
"""


def _cards(items: Sequence[tuple[str, str, object, object]]) -> str:
    """Headline cards: (label, key, value, formatter)."""
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{H.esc(label)}</div>'
        f'<div class="value">{H.num(key, value, fmt)}</div></div>'
        for label, key, value, fmt in items) + "</div>"


def _finite(value: object) -> float | None:
    return None if H.missing(value) else float(value)


def _badge(decision: dict | None) -> str:
    if not decision:
        return '<span class="badge hold">no decision</span>'
    d = str(decision.get("decision") or "")
    return (f'<span class="badge {H.esc(d)}" data-key="decision">{H.esc(d)}</span> '
            f"{H.esc(decision.get('from_stage'))} \u2192 {H.esc(decision.get('to_stage'))}")


# ---- shared performance sections -------------------------------------------------------------

@dataclass(frozen=True)
class _Curve:
    """An equity curve and what the shared sections draw of it."""

    ts: np.ndarray  # datetime64[us], bar closes
    equity: np.ndarray
    init_cash: float
    interval_minutes: int
    window: tuple[dt.date, dt.date]

    @property
    def x(self) -> np.ndarray:
        return C.ms(self.ts)

    def keep(self) -> np.ndarray:
        return P.downsample(self.ts, self.equity, OVERVIEW_POINTS)


def _risk_numbers(curve: _Curve) -> dict[str, float | None]:
    daily = P.period_returns(curve.ts, curve.equity, curve.init_cash, "1d")["ret"].to_numpy()
    out: dict[str, float | None] = {"days": float(len(daily))}
    for level in VAR_LEVELS:
        var, cvar = P.var_cvar(daily, level)
        tag = f"{round(level * 100)}"
        out[f"var_{tag}"], out[f"cvar_{tag}"] = _finite(var), _finite(cvar)
    u = P.underwater(curve.ts, curve.equity, curve.init_cash)
    out["longest_underwater_days"] = u.longest.total_seconds() / 86_400
    out["longest_underwater_bars"] = float(u.longest_bars)
    return out


def _equity_section(page: _Page, curve: _Curve, others: dict[str, np.ndarray]) -> list[str]:
    """Equity (linear and log, one shown) against ``others``, drawdown, time under water,
    the deepest drawdowns."""
    keep = curve.keep()
    x = curve.x[keep]
    series = {"equity": curve.equity[keep], **{k: v[keep] for k, v in others.items()}}
    lin = C.lines("equity", "Equity", x, series, yfmt="0,0", height=300)
    positive = {k: np.where(v > 0, v, np.nan) for k, v in series.items()}
    log = C.lines("equity-log", "Equity (log scale)", x, positive, yfmt="0,0", log=True,
                  hidden=True, height=300)
    u = P.underwater(curve.ts, curve.equity, curve.init_cash)
    dd = C.area("drawdown", "Drawdown from the running peak", x, u.drawdown[keep],
                ylabel="drawdown")
    days = u.duration[keep].astype(np.int64) / 86_400e6
    water = C.area("underwater", "Time under water (days since the last peak)", x, days,
                   color="#9467bd", ylabel="days", yfmt="0.0", tipfmt="0.0")
    toggle = ('<p class="toggle">scale: <button type="button" data-show="equity">linear'
              '</button><button type="button" data-show="equity-log">log</button></p>')
    lin_fig = page.chart(lin, "equity at each bar's close (overview: min/max per bucket, "
                              "every peak and trough kept)")
    log_fig = page.chart(log, "the same curves on a log axis")
    parts = [toggle, lin_fig, log_fig, page.chart(dd), page.chart(water)]
    episodes = P.drawdown_episodes(curve.ts, curve.equity, curve.init_cash)
    if episodes.height:
        step = dt.timedelta(minutes=curve.interval_minutes)
        parts += ["<h3>Deepest drawdowns</h3>", H.table([
            ("peak", False, lambda r: H.when(r["peak"]) if r["peak"] else "start"),
            ("trough", False, lambda r: H.when(r["trough"])),
            ("recovered", False, lambda r: H.when(r["recovered"]) if r["recovered"]
             else "not yet"),
            ("depth", True, lambda r: H.pct(r["depth"])),
            ("under water", True, lambda r: _duration(r["bars"] * step))],
            episodes.to_dicts())]
    return parts


def _keep_all(ts: np.ndarray, series) -> np.ndarray:
    """The union of each series' min/max downsampling (a chart of several series keeps the
    peaks and troughs of every one)."""
    keep = [P.downsample(ts, np.asarray(v, dtype=np.float64), OVERVIEW_POINTS) for v in series]
    return np.unique(np.concatenate(keep)) if keep else np.arange(len(ts))


def _duration(value: dt.timedelta) -> str:
    hours = value.total_seconds() / 3600
    return f"{hours / 24:,.1f} days" if hours >= 48 else f"{hours:,.1f} h"


def _returns_section(page: _Page, curve: _Curve) -> list[str]:
    """Period-returns heatmap, rolling Sharpe and volatility, daily return distribution."""
    parts = [_heatmap(page, curve)]
    per_year = P.bars_per_year(curve.interval_minutes)
    days = 7 if P.heatmap_period(*curve.window) == "1w" else 30
    window = max(2, round(days * 1440 / curve.interval_minutes))
    r = P.returns(curve.equity, curve.init_cash)
    sharpe, vol = P.rolling_sharpe_vol(r, window, per_year)
    if np.isfinite(vol).any():
        keep = _keep_all(curve.ts, (np.nan_to_num(sharpe), np.nan_to_num(vol)))
        if np.isfinite(sharpe).any():
            parts.append(page.chart(C.lines(
                "rolling-sharpe", f"Rolling Sharpe ({days} days, annualized)", curve.x[keep],
                {"Sharpe": sharpe[keep]}, hline=0.0),
                f"window {window:,} bars; empty until the first window is full, and where "
                "the window is flat"))
        else:
            parts.append(H.nothing("No rolling Sharpe: every window is flat."))
        parts.append(page.chart(C.lines(
            "rolling-vol", f"Rolling volatility ({days} days, annualized)", curve.x[keep],
            {"volatility": vol[keep]}, yfmt="0%", tipfmt="0.00%")))
    else:
        parts.append(H.nothing(f"No rolling Sharpe or volatility: the run is shorter than "
                               f"one {days}-day window ({window:,} bars)."))
    daily = P.period_returns(curve.ts, curve.equity, curve.init_cash, "1d")["ret"].to_numpy()
    edges, counts = P.histogram(daily, bins=30)
    risk = {level: P.var_cvar(daily, level) for level in VAR_LEVELS}
    spans = {f"VaR {round(lv * 100)}%": -v for lv, (v, _) in risk.items()}
    spans |= {f"CVaR {round(lv * 100)}%": -c for lv, (_, c) in risk.items()}
    if counts.size:
        parts.append(page.chart(C.hist(
            "daily-returns", "Daily returns", edges, counts, xlabel="daily return",
            spans=spans), f"{daily.size} UTC days; historical VaR and CVaR (losses drawn "
                          "as negative returns)"))
    else:
        parts.append(H.nothing("No daily return (no bar)."))
    parts.append(H.table([("level", False, H.text("level")),
                          ("VaR (daily)", True, lambda row: H.pct(row["var"])),
                          ("CVaR (daily)", True, lambda row: H.pct(row["cvar"]))],
                         [{"level": f"{round(lv * 100)}%", "var": v, "cvar": c}
                          for lv, (v, c) in risk.items()]))
    return parts


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def heatmap_cells(ts: np.ndarray, equity: np.ndarray, init_cash: float, every: str
                  ) -> tuple[pl.DataFrame, list[str], list[str]]:
    """The cells of the returns heatmap: ``row``, ``col``, ``ret`` and the column and row
    labels. ``every="1mo"``: a row per year, a column per month and the year's return;
    ``"1w"``: a row per week (from Monday), a column per day and the week's return. A
    row's total compounds its cells (the change from the last close before the row)."""
    cells = P.period_returns(ts, equity, init_cash, "1mo" if every == "1mo" else "1d")
    if cells.is_empty():
        return pl.DataFrame(schema={"row": pl.String, "col": pl.String, "ret": pl.Float64}), [], []
    if every == "1mo":
        keyed = cells.with_columns(row=pl.col("period").dt.year().cast(pl.String),
                                   col=pl.col("period").dt.month().map_elements(
                                       lambda m: _MONTHS[m - 1], return_dtype=pl.String))
        columns = [*_MONTHS, "year"]
    else:
        keyed = cells.with_columns(row=pl.col("period").dt.truncate("1w").dt.strftime(
            "week of %Y-%m-%d"), col=pl.col("period").dt.weekday().map_elements(
            lambda d: _WEEKDAYS[d - 1], return_dtype=pl.String))
        columns = [*_WEEKDAYS, "week"]
    total = keyed.group_by("row", maintain_order=True).agg(
        ret=(pl.col("ret") + 1).product() - 1).with_columns(col=pl.lit(columns[-1]))
    out = pl.concat([keyed.select("row", "col", "ret"), total.select("row", "col", "ret")])
    rows = keyed["row"].unique(maintain_order=True).to_list()
    return out, columns, rows


def _heatmap(page: _Page, curve: _Curve) -> str:
    every = P.heatmap_period(*curve.window)
    cells, columns, rows = heatmap_cells(curve.ts, curve.equity, curve.init_cash, every)
    if cells.is_empty():
        return H.nothing("No period returns (no bar).")
    title = "Monthly returns" if every == "1mo" else "Daily and weekly returns"
    why = ("" if every == "1mo" else "weekly: the study is shorter than three months; ")
    return page.chart(C.heatmap("returns-heatmap", title, cells, columns=columns, rows=rows),
                      f"{why}each cell compounds the bars closing in it (UTC)")


# ---- the blueprint sheet -----------------------------------------------------------------------

HEADLINE_KEYS = ("total_return", "annualized_return", "sharpe", "sortino", "calmar",
                 "max_drawdown", "volatility", "trades", "win_rate", "profit_factor",
                 "expectancy", "avg_holding_bars", "exposure", "time_in_market",
                 "turnover_per_year", "fee_drag", "slippage_drag", "funding_pnl",
                 "liquidations", "max_drawdown_bars")


def render_blueprint(inputs: BlueprintInputs) -> TearSheet:
    """The tear sheet of one blueprint (module docstring)."""
    page = _Page(inputs.trace)
    eq = inputs.equity.sort("ts")
    curve = _Curve(ts=eq["ts"].to_numpy() if eq.height else np.empty(0, "datetime64[us]"),
                   equity=eq["equity"].to_numpy() if eq.height else np.empty(0),
                   init_cash=inputs.init_cash, interval_minutes=inputs.interval_minutes,
                   window=inputs.window)
    m = inputs.metrics
    risk = _risk_numbers(curve)
    headline = {k: _finite(m.get(k)) for k in HEADLINE_KEYS} | risk
    _headline_section(page, inputs, headline)
    if eq.height:
        closes, _ = _close_matrix(inputs.bars, eq["ts"], inputs.interval_minutes)
        bh = P.buy_and_hold(closes, inputs.init_cash) if closes.size else None
        parts = _equity_section(page, curve, {"buy and hold": bh} if bh is not None else {})
        page.add("equity", "Equity and drawdown", H.note(
            "Buy and hold: the starting cash split equally over the blueprint's symbols at "
            "their first close, held; no costs."), *parts)
    else:
        page.add("equity", "Equity and drawdown", H.nothing("No backtest equity."))
    _trades_section(page, inputs)
    if eq.height:
        page.add("returns", "Returns", *_returns_section(page, curve))
        page.add("exposure", "Exposure and costs", *_exposure_parts(page, inputs, curve))
    _walkforward_section(page, inputs)
    _evidence_section(page, inputs)
    _trace_section(page, inputs.trace)
    title = f"Tear sheet: {inputs.blueprint}"
    first, last = inputs.window
    cat = inputs.catalog
    subtitle = (f"study {H.esc(inputs.trace.study)}, {H.when(first)} to {H.when(last)} "
                f"\u00b7 {H.esc(cat.get('source'))} blueprint \u00b7 entry "
                f"<code>{H.esc(cat.get('entry'))}</code>, {H.esc(cat.get('direction'))}, "
                f"exits <code>{H.esc(cat.get('exits'))}</code> \u00b7 symbols "
                f"{H.esc(cat.get('symbols'))}")
    head = f"<p>{_badge(inputs.decision)}</p>"
    return TearSheet(html=page.render(title, subtitle, head), charts=tuple(page.charts),
                     headline=headline)


def _headline_section(page: _Page, inputs: BlueprintInputs, h: dict) -> None:
    m = inputs.metrics
    step = dt.timedelta(minutes=inputs.interval_minutes)
    mdd_bars = m.get("max_drawdown_bars")
    cards = _cards([
        ("total return", "total_return", m.get("total_return"), H.pct),
        ("Sharpe", "sharpe", m.get("sharpe"), H.fixed),
        ("max drawdown", "max_drawdown", m.get("max_drawdown"), H.pct),
        ("trades", "trades", m.get("trades"), H.integer),
        ("win rate", "win_rate", m.get("win_rate"), lambda v: H.pct(v, 1)),
        ("profit factor", "profit_factor", m.get("profit_factor"), H.fixed),
        ("daily VaR 95%", "var_95", h["var_95"], H.pct),
        ("daily CVaR 95%", "cvar_95", h["cvar_95"], H.pct)])
    rows = [
        ("annualized return", H.num("annualized_return", m.get("annualized_return"), H.pct)),
        ("volatility (annualized)", H.num("volatility", m.get("volatility"), H.pct)),
        ("Sortino", H.num("sortino", m.get("sortino"), H.fixed)),
        ("Calmar", H.num("calmar", m.get("calmar"), H.fixed)),
        ("longest drawdown", H.num("max_drawdown_bars", mdd_bars, H.integer) + " bars"
         + ("" if H.missing(mdd_bars) else f" ({_duration(int(mdd_bars) * step)})")),
        ("expectancy per trade (cash)", H.num("expectancy", m.get("expectancy"), H.fixed)),
        ("average holding (bars)", H.num("avg_holding_bars", m.get("avg_holding_bars"),
                                         lambda v: H.fixed(v, 1))),
        ("mean gross exposure (x equity)", H.num("exposure", m.get("exposure"), H.fixed)),
        ("time in market", H.num("time_in_market", m.get("time_in_market"), H.pct)),
        ("turnover per year (x equity)", H.num("turnover_per_year",
                                               m.get("turnover_per_year"), H.fixed)),
        ("fees (of capital)", H.num("fee_drag", m.get("fee_drag"), H.pct)),
        ("slippage (of capital)", H.num("slippage_drag", m.get("slippage_drag"), H.pct)),
        ("funding P&L (of capital)", H.num("funding_pnl", m.get("funding_pnl"), H.pct)),
        ("liquidations", H.num("liquidations", m.get("liquidations"), H.integer)),
        ("daily VaR / CVaR 99%", H.num("var_99", h["var_99"], H.pct) + " / "
         + H.num("cvar_99", h["cvar_99"], H.pct)),
        ("starting cash", H.num("init_cash", inputs.init_cash, lambda v: H.fixed(v, 0)))]
    page.add("headline", "Headline", H.note(
        "The backtest's metrics as the warehouse holds them (backtest_metrics; Sharpe "
        "annualized from bar returns, no risk-free rate); VaR and CVaR from the UTC days of "
        "its equity."), cards, H.keyvalue(rows))


def _close_matrix(bars: pl.DataFrame, ts: pl.Series, interval_minutes: int
                  ) -> tuple[np.ndarray, list[str]]:
    """(T, S) closes of each symbol at the equity's bar closes (``ts`` = open + interval),
    and the symbols of its columns (sorted)."""
    if bars.is_empty() or ts.is_empty():
        return np.empty((0, 0)), []
    step = pl.duration(minutes=interval_minutes)
    wide = (bars.select("symbol", (pl.col("ts_open") + step).alias("ts"), "close")
            .pivot(on="symbol", index="ts", values="close"))
    symbols = sorted(c for c in wide.columns if c != "ts")
    frame = pl.DataFrame({"ts": ts}).join(wide, on="ts", how="left")
    return frame.select(symbols).to_numpy().astype(np.float64), symbols


def _trades_section(page: _Page, inputs: BlueprintInputs) -> None:
    trades = inputs.trades
    parts: list[str] = []
    symbols = [s for s in str(inputs.catalog.get("symbols") or "").split(",") if s] or (
        sorted(inputs.bars["symbol"].unique()) if inputs.bars.height else [])
    step = dt.timedelta(minutes=inputs.interval_minutes)
    events = _events_with_triggers(inputs, step)
    total = inputs.bars.filter(pl.col("symbol").is_in(symbols)).height \
        if inputs.bars.height else 0
    k = max(1, -(-total // FULL_BARS_BUDGET))
    step_ms = k * inputs.interval_minutes * 60_000.0
    finest = ("single bars" if k == 1 else
              f"candles of {k} bars ({k * inputs.interval_minutes} minutes): {total:,} bars "
              f"are over the page's budget of {FULL_BARS_BUDGET:,} at full resolution")
    for sym in symbols:
        own = inputs.bars.filter(pl.col("symbol") == sym).sort("ts_open") \
            if inputs.bars.height else pl.DataFrame()
        if own.is_empty():
            parts.append(H.nothing(f"No bars of {sym}."))
            continue
        tr = trades.filter(pl.col("symbol") == sym) if trades.height else trades
        ev = events.filter(pl.col("symbol") == sym) if events.height else events
        # the symbols' charts share one x range: they zoom together
        spec = C.price(sym, P.coarsen_bars(own, k), tr, ev, step_ms=step_ms,
                       maxc=MAX_CANDLES)
        parts.append(page.chart(spec, f"{own.height:,} bars, {tr.height:,} trades; a candle "
                                      "spans the bars its width covers; zoomed in to "
                                      f"{MAX_CANDLES:,} candles or fewer it shows {finest}"))
    closed = P.trade_summary(trades, inputs.interval_minutes)
    if closed.height:
        parts.append(_by_reason(closed))
        grid = []
        edges, counts = P.histogram(closed["return"].to_numpy(), bins=40)
        mids = (edges[:-1] + edges[1:]) / 2 if edges.size else edges
        grid.append(page.chart(C.hist(
            "trade-returns", "Trade returns (on entry notional)", edges, counts,
            xlabel="return", colors=[C.UP if v >= 0 else C.DOWN for v in mids]),
            f"{closed.height:,} closed trades"))
        edges, counts = P.histogram(closed["holding_hours"].to_numpy(), bins=30)
        grid.append(page.chart(C.hist(
            "holding-time", "Holding time", edges, counts, xlabel="hours", xfmt="0.0"),
            "from the entry fill to the exit fill"))
        parts.append('<div class="grid2">' + "".join(grid) + "</div>")
    else:
        parts.append(H.nothing("No closed trade."))
    page.add("trades", "Trades", H.note(
        "Entries at the fill (the open of the bar after the signal); exits by the engine's "
        "reason; events on top of their bar (known at its close), filled when an entry "
        "followed at the next open. Drag to pan, scroll to zoom (the price axis follows the "
        "bars in view), click a legend entry to hide it."), *parts)


def _events_with_triggers(inputs: BlueprintInputs, step: dt.timedelta) -> pl.DataFrame:
    """The entry's events with ``high`` (their bar's high: the marker sits on top of the
    bar) and ``triggered`` (an entry of the blueprint at the open of the next bar, on the
    same symbol)."""
    ev = inputs.events
    if ev.is_empty() or inputs.bars.is_empty():
        return pl.DataFrame()
    closes = inputs.bars.select("symbol", pl.col("ts_open").alias("ts"), "high")
    entries = (inputs.trades.select("symbol", (pl.col("entry_ts") - step).alias("ts"))
               .unique().with_columns(triggered=pl.lit(True))
               if inputs.trades.height else pl.DataFrame(
                   schema={"symbol": pl.String, "ts": pl.Datetime("us"),
                           "triggered": pl.Boolean}))
    return (ev.join(closes, on=["symbol", "ts"], how="inner")
            .join(entries, on=["symbol", "ts"], how="left")
            .with_columns(pl.col("triggered").fill_null(False)).sort("ts"))


def _by_reason(closed: pl.DataFrame) -> str:
    rows = (closed.group_by("exit_reason").agg(
        trades=pl.len(), wins=(pl.col("pnl") > 0).sum(), pnl=pl.col("pnl").sum(),
        mean_return=pl.col("return").mean(), hours=pl.col("holding_hours").mean())
        .sort("trades", descending=True).to_dicts())
    return "<h3>Trades by exit reason</h3>" + H.table([
        ("exit reason", False, H.text("exit_reason")),
        ("trades", True, lambda r: H.integer(r["trades"])),
        ("win rate", True, lambda r: H.pct(r["wins"] / r["trades"], 1)),
        ("P&L (cash)", True, lambda r: H.fixed(r["pnl"])),
        ("mean return", True, lambda r: H.pct(r["mean_return"])),
        ("mean holding (h)", True, lambda r: H.fixed(r["hours"], 1))], rows)


def _exposure_parts(page: _Page, inputs: BlueprintInputs, curve: _Curve) -> list[str]:
    eq = inputs.equity.sort("ts")
    keep = curve.keep()
    closes, order = _close_matrix(inputs.bars, eq["ts"], inputs.interval_minutes)
    full = {"gross (engine)": eq["exposure"].to_numpy()}
    traded = inputs.trades.filter(pl.col("symbol").is_in(order)) if inputs.trades.height \
        else inputs.trades
    if closes.size and traded.height and traded.height == inputs.trades.height:
        # (a symbol without bars: no net exposure, the gross is still the engine's)
        full["net (from the trades)"] = P.net_exposure(traded, closes, order, curve.equity)[1]
    # each series' own peaks and troughs (the equity's would miss short positions)
    own = _keep_all(curve.ts, full.values())
    series = {k: v[own] for k, v in full.items()}
    if inputs.leverage is not None:
        series["leverage cap"] = np.full(own.size, inputs.leverage)
    parts = [page.chart(C.lines("exposure", "Exposure (notional / equity)", curve.x[own],
                                series, yfmt="0.00", hline=0.0),
                        "gross: the engine's; net: long minus short notional rebuilt from "
                        "the trades; the blueprint's leverage cap")]
    costs = P.cost_attribution(eq, inputs.metrics, inputs.init_cash)
    shown = costs.filter(~pl.col("cost").str.starts_with("of which"))
    parts.append('<div class="grid2">' + page.chart(C.bars(
        "costs", "Costs paid (cash)", shown["cost"].to_list(), shown["cash"].to_list(),
        colors=[C.ORANGE, C.PURPLE, C.BLUE, "#000000"]),
        "funding: paid minus received; liquidation forfeits: margin lost to the insurance "
        "fund") + page.chart(C.lines(
            "costs-cumulative", "Costs over time (cash)", curve.x[keep],
            {k: v.to_numpy()[keep] for k, v in P.cumulative_costs(eq).drop("ts")
             .to_dict().items()}, yfmt="0,0")) + "</div>")
    parts.append(H.table([("cost", False, H.text("cost")),
                          ("cash", True, lambda r: H.fixed(r["cash"])),
                          ("of starting cash", True, lambda r: H.pct(r["of_capital"], 3))],
                         costs.to_dicts()))
    return parts


def _walkforward_section(page: _Page, inputs: BlueprintInputs) -> None:
    s, folds = inputs.summary, inputs.folds
    if s is None and folds.is_empty():
        page.add("walkforward", "Walk-forward and promotion", H.nothing(
            "No walk-forward of this blueprint (the study is too short, or it was not run)."),
            _decision(inputs.decision))
        return
    parts = []
    if folds.height:
        f = folds.sort("kind", "fold")
        groups = [f"{k} {n}" for k, n in zip(f["kind"], f["fold"], strict=True)]
        series = {"in sample": f["is_sharpe"].to_list(), "out of sample": f["sharpe"].to_list()}
        if "stress_sharpe" in f.columns:
            mult = (s or {}).get("stress_multiplier")
            series[f"OOS at {H.fixed(mult, 1) if mult else 'stressed'}x costs"] = \
                f["stress_sharpe"].to_list()
        parts.append(page.chart(C.grouped(
            "folds-sharpe", "Sharpe in sample (chosen params) vs out of sample, per fold",
            groups, series, ylabel="Sharpe (annualized)")))
        parts.append(H.table([
            ("fold", False, lambda r: f"{H.esc(r['kind'])} {r['fold']}"),
            ("test window", False, lambda r: H.span(r["start"], r["end"])),
            ("params", False, lambda r: H.params(r.get("params"))),
            ("IS Sharpe", True, lambda r: H.fixed(r.get("is_sharpe"))),
            ("OOS Sharpe", True, lambda r: H.fixed(r.get("sharpe"))),
            ("OOS return", True, lambda r: H.pct(r.get("total_return"))),
            ("OOS max DD", True, lambda r: H.pct(r.get("max_drawdown"))),
            ("trades", True, lambda r: H.integer(r.get("trades"))),
            ("stressed Sharpe", True, lambda r: H.fixed(r.get("stress_sharpe"))),
            ("stressed return", True, lambda r: H.pct(r.get("stress_total_return")))],
            f.to_dicts()))
    oos = inputs.oos_equity
    if oos.height:
        o = oos.sort("ts")
        x = C.ms(o["ts"])
        keep = P.downsample(o["ts"].to_numpy(), o["equity"].to_numpy(), OVERVIEW_POINTS)
        spans = o.group_by("fold", maintain_order=True).agg(pl.col("ts").min().alias("a"),
                                                           pl.col("ts").max().alias("b"))
        fig = C.lines("oos-equity", "Stitched out-of-sample equity", x[keep],
                      {"OOS equity": o["equity"].to_numpy()[keep]}, yfmt="0,0", link="oos",
                      shade=list(zip(C.ms(spans["a"]), C.ms(spans["b"]), strict=True)))
        parts.append(page.chart(fig, "each test window starts from the equity the previous "
                                     "one ended with; shaded: the folds"))
    if s is not None:
        parts += _overfitting(s)
    parts.append(_decision(inputs.decision))
    page.add("walkforward", "Walk-forward and promotion", *parts)


def _overfitting(s: dict) -> list[str]:
    def k(label: str, key: str, fmt) -> tuple[str, str]:
        return label, H.num(key, s.get(key), fmt)

    dsr = H.keyvalue([
        k("deflated Sharpe (probability the true Sharpe > 0)", "deflated_sharpe",
          lambda v: H.fixed(v, 4)),
        k("trials (grid combinations + Phase-2 hypotheses)", "trials", H.integer),
        k("grid combinations", "combinations", H.integer),
        k("Phase-2 hypotheses before it", "trials_phase2", H.integer),
        k("best in-sample Sharpe (annualized)", "is_sharpe", H.fixed),
        k("bar returns (n)", "n_obs", H.integer),
        k("skewness", "skew", lambda v: H.fixed(v, 3)),
        k("kurtosis", "kurtosis", lambda v: H.fixed(v, 3)),
        k("variance of the trials' Sharpe (per bar)", "var_sharpe", lambda v: f"{v:.3g}"
          if not H.missing(v) else H.NA),
        k("expected max Sharpe of the trials (SR0, annualized)", "sr0", H.fixed)])
    pbo = H.keyvalue([
        k("probability of backtest overfitting", "pbo", lambda v: H.fixed(v, 4)),
        k("CSCV splits", "pbo_splits", H.integer),
        k("degradation slope (OOS on IS Sharpe)", "degradation_slope", H.fixed),
        k("probability of an OOS loss", "prob_oos_loss", lambda v: H.fixed(v, 4)),
        k("walk-forward folds", "folds", H.integer),
        k("purge / embargo bars", "purge_bars", H.integer)])
    stress = H.table([
        ("run", False, H.text("run")), ("Sharpe", True, lambda r: r["sharpe"]),
        ("return", True, lambda r: r["ret"]), ("max DD", True, lambda r: r["dd"]),
        ("PSR", True, lambda r: r["psr"])],
        [{"run": "out of sample", "sharpe": H.num("oos_sharpe", s.get("oos_sharpe"), H.fixed),
          "ret": H.num("oos_total_return", s.get("oos_total_return"), H.pct),
          "dd": H.num("oos_max_drawdown", s.get("oos_max_drawdown"), H.pct),
          "psr": H.num("oos_psr", s.get("oos_psr"), lambda v: H.fixed(v, 3))},
         {"run": f"out of sample, costs x{H.fixed(s.get('stress_multiplier'), 1)}",
          "sharpe": H.num("stress_sharpe", s.get("stress_sharpe"), H.fixed),
          "ret": H.num("stress_total_return", s.get("stress_total_return"), H.pct),
          "dd": H.num("stress_max_drawdown", s.get("stress_max_drawdown"), H.pct),
          "psr": H.num("stress_psr", s.get("stress_psr"), lambda v: H.fixed(v, 3))}])
    return ["<h3>Deflated Sharpe and its inputs</h3>", dsr,
            "<h3>Probability of backtest overfitting</h3>", pbo,
            "<h3>Cost stress (out of sample)</h3>", stress]


def _decision(d: dict | None) -> str:
    if not d:
        return "<h3>Promotion</h3>" + H.nothing("No promotion decision.")
    items = [r for r in str(d.get("reasons") or "").split("; ") if r]
    reasons = "<ul>" + "".join(f"<li>{H.esc(r)}</li>" for r in items) + "</ul>" if items \
        else H.nothing("No reason recorded.")
    return (f"<h3>Promotion</h3><p>{_badge(d)}</p>" + reasons)


def _evidence_section(page: _Page, inputs: BlueprintInputs) -> None:
    hyp = inputs.hypotheses
    cat = inputs.catalog
    parts = []
    if cat.get("source") == "phase2":
        parts.append(H.note(f"This blueprint trades Phase-2 hypothesis "
                            f"{cat.get('hypothesis_id')}."))
    elif hyp.height:
        parts.append(H.note("A spec blueprint entering on an event: the Phase-2 survivors of "
                            "its event type, for context (it was not built from them)."))
    if hyp.height:
        parts.append(H.table([
            ("hypothesis", False, lambda r: f"<code>{H.esc(r['hypothesis_id'])}</code>"),
            ("event type", False, H.text("event_type")), ("rule", False, H.text("rule_template")),
            ("horizon", False, H.text("horizon")), ("symbol", False, H.text("symbol")),
            ("n", True, lambda r: H.num("n", r.get("n"), H.integer)),
            ("effect (mean, bps)", True, lambda r: H.num("mean", r.get("mean"), H.bps)),
            ("t", True, lambda r: H.fixed(r.get("t"))),
            ("q", True, lambda r: H.num("q", r.get("q"), lambda v: f"{float(v):.4g}")),
            ("net at 1x / 2x costs (bps)", True,
             lambda r: f"{H.bps(r.get('net_1x'))} / {H.bps(r.get('net_2x'))}"),
            ("survivor", False, lambda r: "yes" if r.get("survivor") else "no")],
            hyp.to_dicts()))
    curve = inputs.event_curve
    if curve.height:
        sign = -1.0 if cat.get("direction") == "mean_reversion" else 1.0
        c = curve.sort("offset")
        vals = {k: sign * 1e4 * c[k].cast(pl.Float64).fill_null(float("nan")).to_numpy()
                for k in ("mean", "lo", "hi")}
        if sign < 0:
            vals["lo"], vals["hi"] = vals["hi"], vals["lo"]
        parts.append(page.chart(C.band(
            "event-study", f"Event study: {c['event_type'][0]} over the blueprint's symbols",
            c["offset"].to_numpy().astype(np.float64), vals["mean"], vals["lo"], vals["hi"],
            xlabel="bars from the entry (the open after the event bar)",
            ylabel="signed cumulative log return (bps)"),
            f"up to {int(c['n'].max() or 0):,} events; signed by the event's direction"
            + (" and flipped: the blueprint fades it" if sign < 0 else "")))
    if not parts:
        parts.append(H.nothing("No Phase-2 evidence: the entry is a feature condition, "
                               "a strategy's code or alpha scores, not an event."))
    page.add("evidence", "Phase-2 evidence", *parts)


def _trace_section(page: _Page, t: Provenance) -> None:
    specs = (H.table([("spec", False, H.text("spec")),
                      ("sha256", False, lambda r: H.short_hash(r["h"]))],
                     [{"spec": k, "h": v} for k, v in sorted(t.spec_hashes.items())])
             if t.spec_hashes else H.nothing("No spec hashes."))
    ids = (f"<dl><dt>study</dt><dd>{H.esc(t.study)}</dd>"
           f"<dt>spec hash</dt><dd><code data-key=spec_hash>{H.esc(t.spec_hash or H.NA)}"
           "</code></dd>"
           f"<dt>dataset hash</dt><dd><code data-key=dataset_hash>"
           f"{H.esc(t.dataset_hash or H.NA)}</code></dd>"
           f"<dt>code commit</dt><dd><code>{H.esc(t.code_commit or H.NA)}</code></dd></dl>")
    page.add("traceability", "Traceability", H.note(
        "Every chart's caption names these: the blueprint's spec hash, the hash of the bars "
        "and events read, and the code commit."), ids, specs)


# ---- the portfolio sheet -----------------------------------------------------------------------

def render_portfolio(inputs: PortfolioInputs) -> TearSheet:
    """The tear sheet of one portfolio: its book beside the equal-weight book and buy and
    hold, out of sample from the first rebalance."""
    page = _Page(inputs.trace)
    book = inputs.equity.filter(pl.col("book") == "book").sort("ts") \
        if inputs.equity.height else pl.DataFrame()
    metrics = {r["book"]: r for r in inputs.metrics.iter_rows(named=True)} \
        if inputs.metrics.height else {}
    m = metrics.get("book", {})
    curve = _Curve(ts=book["ts"].to_numpy() if book.height else np.empty(0, "datetime64[us]"),
                   equity=book["equity"].to_numpy() if book.height else np.empty(0),
                   init_cash=inputs.init_cash, interval_minutes=inputs.interval_minutes,
                   window=inputs.window)
    risk = _risk_numbers(curve)
    headline = {k: _finite(m.get(k)) for k in ("total_return", "sharpe", "max_drawdown",
                                              "trades", "fees")} | risk
    page.add("headline", "Headline", H.note(
        "The book's out-of-sample figures as the warehouse holds them (portfolio_metrics), "
        "from the first rebalance."), _cards([
            ("total return", "total_return", m.get("total_return"), H.pct),
            ("Sharpe", "sharpe", m.get("sharpe"), H.fixed),
            ("max drawdown", "max_drawdown", m.get("max_drawdown"), H.pct),
            ("trades", "trades", m.get("trades"), H.integer),
            ("fees (cash)", "fees", m.get("fees"), lambda v: H.fixed(v, 0)),
            ("daily VaR 95%", "var_95", risk["var_95"], H.pct),
            ("daily CVaR 95%", "cvar_95", risk["cvar_95"], H.pct)]),
        H.table([("book", False, H.text("book")), ("edges", True, lambda r: H.integer(r["edges"])),
                 ("return", True, lambda r: H.pct(r["total_return"])),
                 ("Sharpe", True, lambda r: H.fixed(r["sharpe"])),
                 ("max DD", True, lambda r: H.pct(r["max_drawdown"])),
                 ("largest gross held", True, lambda r: H.fixed(r["max_gross"])),
                 ("largest net held", True, lambda r: H.fixed(r["max_net"]))],
                list(metrics.values())))
    if book.height:
        others = {}
        ew = inputs.equity.filter(pl.col("book") == "equal_weight").sort("ts")
        if ew.height:
            others["equal-weight book"] = pl.DataFrame({"ts": book["ts"]}).join(
                ew.select("ts", "equity"), on="ts", how="left")["equity"].to_numpy()
        closes, _ = _close_matrix(inputs.closes, book["ts"], inputs.interval_minutes)
        if closes.size:
            others["buy and hold"] = P.buy_and_hold(closes, inputs.init_cash)
        page.add("equity", "Equity and drawdown", *_equity_section(page, curve, others))
        page.add("returns", "Returns", *_returns_section(page, curve))
        page.add("exposure", "Exposure and weights", *_portfolio_exposure(page, inputs, book,
                                                                         curve))
    else:
        page.add("equity", "Equity and drawdown", H.nothing("No portfolio equity."))
    _trace_section(page, inputs.trace)
    first, last = inputs.window
    subtitle = (f"study {H.esc(inputs.trace.study)}, {H.when(first)} to {H.when(last)} "
                "\u00b7 portfolio book, out of sample from its first rebalance")
    return TearSheet(html=page.render(f"Tear sheet: portfolio {inputs.portfolio}", subtitle,
                                      ""), charts=tuple(page.charts), headline=headline)


def _portfolio_exposure(page: _Page, inputs: PortfolioInputs, book: pl.DataFrame,
                        curve: _Curve) -> list[str]:
    keep = _keep_all(curve.ts, (book["gross"].to_numpy(), book["net"].to_numpy()))
    parts = [page.chart(C.lines("exposure", "Gross and net exposure (notional / equity)",
                                curve.x[keep], {"gross": book["gross"].to_numpy()[keep],
                                                "net": book["net"].to_numpy()[keep]},
                                yfmt="0.00"))]
    w = inputs.weights
    if w.height:
        wide = w.pivot(on="edge", index="rebalance_ts", values="weight").sort("rebalance_ts")
        edges = [c for c in wide.columns if c != "rebalance_ts"]
        parts.append(page.chart(C.lines(
            "weights", "Weight of each edge per rebalance", C.ms(wide["rebalance_ts"]),
            {e: wide[e].fill_null(0.0).to_numpy() for e in edges}, yfmt="0%",
            tipfmt="0.0%"), "weights set at each rebalance (click a legend entry to hide "
                            "an edge)"))
        parts.append(H.table([("rebalance", False, lambda r: H.when(r["rebalance_ts"])),
                              ("edge", False, H.text("edge")),
                              ("eligible", False, lambda r: "yes" if r["eligible"] else "no"),
                              ("weight", True, lambda r: H.pct(r["weight"])),
                              ("risk contribution", True, lambda r: H.pct(r["risk_contribution"])),
                              ("binding", False, H.text("binding"))],
                             w.sort("rebalance_ts", "edge").to_dicts()))
    return parts


def page_charts(html: str) -> dict[str, dict]:
    """The charts of a rendered sheet by name, arrays decoded (what its script draws)."""
    data = re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>',
                     html, re.S)
    block = re.search(r'<script type="application/octet-stream" id="sheet-arrays">(.*?)'
                      "</script>", html, re.S)
    if data is None or block is None:
        return {}
    spec = C.unpack(json.loads(data.group(1).replace("<\\/", "</")), block.group(1))
    return {c["name"]: c for c in spec["charts"]}


def page_values(html: str) -> dict[str, str]:
    """``data-key`` -> ``data-value`` of every number on a rendered page (the first of each
    key): the exact values it shows (:func:`backtest_assets.reporting.html.num`)."""
    out: dict[str, str] = {}
    for k, v in re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', html):
        out.setdefault(k, v)
    return out
