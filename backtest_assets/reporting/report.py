"""The research report: one self-contained HTML document per study (pure; no Dagster).

Frame contract
--------------
``ReportInputs`` carries the frames below; any of them may be empty (its section then says
there is nothing instead of drawing). Timestamps are naive UTC; returns and drawdowns are
fractions (``-0.1`` is -10%), drawdowns ``<= 0``.

- ``equity``: ``blueprint``, ``ts``, ``equity``, ``drawdown``: the in-sample backtest curves,
  one per blueprint (the ``backtest_equity`` frame).
- ``oos_equity``: ``blueprint``, ``fold``, ``ts``, ``equity``, ``drawdown``: the stitched
  out-of-sample curve of each blueprint (``fold`` is not used for drawing).
- ``folds``: ``blueprint``, ``fold``, ``kind``, ``start``, ``end``, ``params`` (JSON object as
  a string), ``is_sharpe`` (in-sample Sharpe of the chosen params), ``sharpe``,
  ``total_return``, ``max_drawdown``, ``trades`` (out-of-sample metrics of the fold).
- ``event_curves``: the :func:`backtest_assets.reporting.event_study.event_study` frame.
- ``funnel``: ``stage``, ``hypotheses``: the Phase-2 funnel, in funnel order.
- ``promotions``: ``blueprint``, ``from_stage``, ``to_stage``, ``decision``, ``reasons``
  (String, or a list of String), ``deflated_sharpe``, ``pbo``, ``oos_sharpe``,
  ``oos_max_drawdown``, ``trades``. A ``decision`` starting with ``promot`` counts as
  promoted, one starting with ``archiv`` as archived (case-insensitive).
- ``compare_with`` and ``comparisons`` (optional): the studies the report sets beside this
  one (the study spec's ``compare_with``) and, for each that has results, its
  :class:`backtest_assets.reporting.compare.Comparison` (this study as A): the ``compare``
  section.
- ``portfolio_metrics``, ``portfolio_equity``, ``portfolio_weights`` (optional): the study's
  portfolios (``portfolio_*`` tables): per portfolio and book (``book``, ``equal_weight``)
  the out-of-sample figures and the equity per bar, and the book's weights per rebalance and
  edge: the ``portfolio`` section.
- ``metrics`` (optional): one row per blueprint: ``blueprint``, ``source``, the backtest's
  ``total_return``, ``sharpe``, ``max_drawdown``, ``trades``, ``win_rate``, ``fee_drag``,
  the walk-forward's ``oos_sharpe``, ``deflated_sharpe``, ``pbo``, ``stress_sharpe`` and the
  ``decision`` (any may be missing): the sortable ``blueprints`` table.
- ``survivors`` (optional): the ``phase2_fdr`` rows with ``survivor`` true.
- ``sheets`` (optional): blueprint (or ``portfolio:NAME``) -> the path of its tear sheet
  relative to the report: every blueprint's name links to it.
- ``funding`` (optional): ``blueprint``, ``run`` (``backtest`` / ``walk-forward``),
  ``funding_missing`` (prints missing, run as no payment because allowed),
  ``funding_constant_runs`` (runs of one rate longer than the study's limit): shown in the
  summary.

Output
------
:func:`render_report` returns HTML with no external reference at all (no CDN, font or
script URL; a Content-Security-Policy forbids fetching anything but ``data:`` images), so the
file can be archived and opened offline (the tear sheets it links to are files beside it).
Charts are matplotlib PNGs inlined as base64 ``<img class="chart" data-chart="NAME">``: the
summary, one small chart per blueprint (``bp-NAME``: in-sample and stitched out-of-sample
equity, framed in its decision's colour), event curves and funnel. A small inline script
sorts the ``blueprints`` table on a header click. On ``load`` an inline script sets
``data-charts-loaded`` (charts decoded with a non-zero width) and ``data-charts-total`` on
``<body>``, so a headless browser's DOM dump tells whether every chart rendered. The output is
a function of the inputs only (no generation time), so a report can be diffed and rebuilt.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import polars as pl

from backtest_assets.reporting import html as H
from backtest_assets.reporting.charts import (
    equity_drawdown_png,
    event_curves_png,
    funnel_png,
    message_png,
    sharpe_bars_png,
    small_equity_png,
)
from backtest_assets.reporting.compare import BOTH, ONLY_A, ONLY_B, Comparison
from backtest_assets.reporting.html import NA, Column
from backtest_assets.reporting.html import esc as _esc
from backtest_assets.reporting.html import fixed as _fixed
from backtest_assets.reporting.html import integer as _int
from backtest_assets.reporting.html import missing as _missing
from backtest_assets.reporting.html import note as _note
from backtest_assets.reporting.html import nothing as _nothing
from backtest_assets.reporting.html import params as _params
from backtest_assets.reporting.html import pct as _pct
from backtest_assets.reporting.html import reasons as _reasons
from backtest_assets.reporting.html import section as _section
from backtest_assets.reporting.html import short_hash as _hash
from backtest_assets.reporting.html import table as _table
from backtest_assets.reporting.html import text as _text
from backtest_assets.reporting.html import when as _when

MAX_SHARPE_BARS = 40  # summary chart
# promotion decision -> colour (charts, badges) and what it means (the legend)
DECISION_COLOURS = {"promote": ("#55a868", "promoted: passed every gate, moved on a stage"),
                    "hold": ("#4c72b0", "held: no decision yet, or a gate not yet passable"),
                    "archive": ("#9a9a9a", "archived: a gate failed")}


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows (frame columns in the module docstring)."""

    study: str
    window: tuple[datetime.date, datetime.date]  # first and last day
    spec_hashes: dict[str, str]  # spec name -> sha256
    dataset_hash: str
    code_commit: str
    equity: pl.DataFrame
    oos_equity: pl.DataFrame
    folds: pl.DataFrame
    event_curves: pl.DataFrame
    funnel: pl.DataFrame
    promotions: pl.DataFrame
    funding: pl.DataFrame = field(default_factory=pl.DataFrame)
    compare_with: tuple[str, ...] = ()
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # by the other study
    portfolio_metrics: pl.DataFrame = field(default_factory=pl.DataFrame)
    portfolio_equity: pl.DataFrame = field(default_factory=pl.DataFrame)
    portfolio_weights: pl.DataFrame = field(default_factory=pl.DataFrame)
    alpha_model: pl.DataFrame = field(default_factory=pl.DataFrame)  # one row per refit
    alpha_expectancy: pl.DataFrame = field(default_factory=pl.DataFrame)  # signal x bucket
    metrics: pl.DataFrame = field(default_factory=pl.DataFrame)  # one row per blueprint
    survivors: pl.DataFrame = field(default_factory=pl.DataFrame)  # phase2_fdr survivors
    sheets: dict[str, str] = field(default_factory=dict)  # name -> tear sheet (relative)


# ---- building blocks ---------------------------------------------------------------------

def _img(png: bytes, name: str, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<img class="chart" data-chart="{_esc(name)}" alt="{_esc(alt)}" '
            f'src="data:image/png;base64,{data}">')


# ---- data helpers ------------------------------------------------------------------------

def _count_decisions(promotions: pl.DataFrame) -> dict[str, int]:
    if promotions.is_empty():
        return {"promoted": 0, "archived": 0}
    # a blueprint's last decision in the frame is its current one
    last = promotions.group_by("blueprint", maintain_order=True).last()
    decision = last["decision"].cast(pl.String).fill_null("").str.to_lowercase()
    return {"promoted": int(decision.str.starts_with("promot").sum()),
            "archived": int(decision.str.starts_with("archiv").sum())}


def _blueprints(inputs: ReportInputs) -> set[str]:
    frames = (inputs.equity, inputs.oos_equity, inputs.folds, inputs.promotions)
    return {b for f in frames if "blueprint" in f.columns for b in f["blueprint"].to_list()}


def _oos_sharpe(inputs: ReportInputs) -> tuple[pl.DataFrame, str] | None:
    """One out-of-sample Sharpe per blueprint and where it comes from, or None."""
    if not inputs.promotions.is_empty():
        last = inputs.promotions.group_by("blueprint", maintain_order=True).last()
        return (last.select("blueprint", "decision", sharpe="oos_sharpe"),
                "out-of-sample Sharpe (promotion decision)")
    if not inputs.folds.is_empty():
        return (inputs.folds.group_by("blueprint", maintain_order=True)
                .agg(pl.col("sharpe").mean()), "mean out-of-sample fold Sharpe")
    return None


# ---- public API --------------------------------------------------------------------------

def summary_png(inputs: ReportInputs, *, dpi: int = 100) -> bytes:
    """The study at a glance for the Dagster UI: out-of-sample Sharpe per blueprint.

    Parameters
    ----------
    inputs : ReportInputs
        The report inputs; the Sharpe comes from ``promotions.oos_sharpe`` (coloured by
        decision) or, without promotions, the mean ``folds.sharpe`` of each blueprint.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG of horizontal bars, best first, at most ``MAX_SHARPE_BARS`` of them; an image
        saying so when there is no out-of-sample result.
    """
    found = _oos_sharpe(inputs)
    if found is None:
        return message_png(f"{inputs.study}: no out-of-sample results", dpi=dpi)
    sharpe, what = found
    n = sharpe.height
    shown = (sharpe.with_columns(pl.col("sharpe").cast(pl.Float64).fill_nan(None))
             .sort("sharpe", descending=True, nulls_last=True).head(MAX_SHARPE_BARS))
    cap = f", best {MAX_SHARPE_BARS} of {n}" if n > MAX_SHARPE_BARS else ""
    return sharpe_bars_png(shown, title=f"{inputs.study}: {what}{cap}", dpi=dpi)


def render_report(inputs: ReportInputs) -> str:
    """The research report of one study as a complete, self-contained HTML document.

    Parameters
    ----------
    inputs : ReportInputs
        Frames and provenance (module docstring); empty frames are allowed.

    Returns
    -------
    str
        An HTML5 document with sections ``summary``, ``blueprints``, ``equity``,
        ``walkforward``, ``events``, ``funnel``, ``survivors``, ``promotion``,
        ``portfolio``, ``alpha``, ``compare`` and ``traceability``.
    """
    sections = [_summary(inputs), _blueprints_table(inputs), _equity(inputs),
                _walkforward(inputs), _events(inputs), _funnel(inputs), _survivors(inputs),
                _promotion(inputs), _portfolio(inputs), _alpha(inputs), _compare(inputs),
                _traceability(inputs)]
    title = f"Research report: {inputs.study}"
    first, last = inputs.window
    nav = " &middot; ".join(f'<a href="#{key}">{_esc(label)}</a>' for key, label in _NAV)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{H.CSS}{_CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="note">{_when(first)} to {_when(last)}</p>',
        f"<nav>{nav}</nav></header>",
        "<main>",
        *sections,
        "</main>",
        f"<script>{_SCRIPT}{H.SORT_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])


# ---- sections ----------------------------------------------------------------------------

def _summary(inputs: ReportInputs) -> str:
    first, last = inputs.window
    days = (last - first).days + 1
    counts = _count_decisions(inputs.promotions)
    event_types = (inputs.event_curves["event_type"].n_unique()
                   if not inputs.event_curves.is_empty() else 0)
    rows = [("study", _esc(inputs.study)),
            ("window", f"{_when(first)} to {_when(last)} ({days:,} days)"),
            ("blueprints", _int(len(_blueprints(inputs)))),
            ("promoted", _int(counts["promoted"])),
            ("archived", _int(counts["archived"])),
            ("out-of-sample folds", _int(inputs.folds.height)),
            ("event types studied", _int(event_types))]
    funding = inputs.funding
    if not funding.is_empty():
        rows += [(label, f"{_int(funding[col].sum())} in {_int((funding[col] > 0).sum())} of "
                         f"{_int(funding.height)} runs")
                 for label, col in (("funding prints missing (run as no payment)",
                                     "funding_missing"),
                                    ("constant funding runs", "funding_constant_runs"))]
    table = _table([("", False, lambda r: _esc(r[0])), ("", True, lambda r: r[1])],
                   [dict(enumerate(r)) for r in rows], css="keyvalue")
    chart = (_img(summary_png(inputs), "oos-sharpe", "out-of-sample Sharpe per blueprint")
             if _oos_sharpe(inputs) is not None else _nothing("No out-of-sample results."))
    return _section("summary", "Summary", table, *_funding(funding), _legend(), chart)


def _decision_key(decision: object) -> str:
    """``promote``, ``archive`` or ``hold`` (anything else) of a decision's text."""
    d = str(decision or "").lower()
    return "promote" if d.startswith("promot") else "archive" if d.startswith("archiv") \
        else "hold"


def _legend() -> str:
    """What the promotion colours of the charts and badges mean."""
    items = "".join(f'<span><span class="swatch" style="background:{colour}"></span>'
                    f"{_esc(text)}</span>" for colour, text in DECISION_COLOURS.values())
    return f'<p class="legend">promotion colours: {items}</p>'


def _link(inputs: ReportInputs, name: str, key: str | None = None) -> str:
    """``name``, linked to its tear sheet when there is one."""
    href = inputs.sheets.get(key or name)
    return (f'<a class="sheet" href="{_esc(href)}">{_esc(name)}</a>' if href
            else _esc(name))


def _blueprints_table(inputs: ReportInputs) -> str:
    m = inputs.metrics
    title = "Blueprints"
    if m.is_empty():
        return _section("blueprints", title, _nothing("No blueprint."))

    def col(header: str, name: str, fmt) -> tuple[Column, object]:
        return (header, True, lambda r: fmt(r.get(name))), lambda r: r.get(name)

    cols = [(("blueprint", False, lambda r: _link(inputs, r["blueprint"])),
             lambda r: r["blueprint"]),
            (("source", False, _text("source")), lambda r: r.get("source")),
            (("decision", False, lambda r: _badge(r.get("decision"))),
             lambda r: r.get("decision"))]
    cols += [col(h, n, f) for h, n, f in (
        ("return", "total_return", _pct), ("Sharpe", "sharpe", _fixed),
        ("max DD", "max_drawdown", _pct), ("trades", "trades", _int),
        ("win rate", "win_rate", _pct), ("fees", "fee_drag", _pct),
        ("OOS Sharpe", "oos_sharpe", _fixed),
        ("deflated Sharpe", "deflated_sharpe", lambda v: _fixed(v, 3)),
        ("PBO", "pbo", lambda v: _fixed(v, 3)),
        ("stressed OOS Sharpe", "stress_sharpe", _fixed)) if n in m.columns]
    rows = m.sort("blueprint").to_dicts()
    table = _table([c for c, _ in cols], rows, sort_keys=[k for _, k in cols])
    return _section("blueprints", title, _note(
        "Every blueprint: the in-sample backtest (return, Sharpe, max drawdown, closed "
        "trades, win rate, fees as a share of capital), the walk-forward (out-of-sample "
        "Sharpe, deflated Sharpe, PBO, out-of-sample Sharpe at stressed costs) and the "
        "promotion decision. Click a header to sort; a name opens the blueprint's tear "
        "sheet."), table)


def _badge(decision: object) -> str:
    if decision is None:
        return NA
    return f'<span class="badge {_decision_key(decision)}">{_esc(decision)}</span>'


def _funding(funding: pl.DataFrame) -> list[str]:
    """The runs whose funding prints were missing or stuck at one rate, if any."""
    if funding.is_empty():
        return []
    flagged = funding.filter((pl.col("funding_missing") > 0)
                             | (pl.col("funding_constant_runs") > 0))
    if flagged.is_empty():
        return [_note("No funding print was missing and no rate stuck beyond the study's "
                      "limit in any backtest or walk-forward.")]
    note = _note("Funding data: prints missing at the times each symbol's funding interval "
                 "expects were run as no payment (allow_missing_funding); a constant run "
                 "is one rate repeated for more than constant_funding_max_prints prints.")
    return [note, _table([
        ("blueprint", False, _text("blueprint")),
        ("run", False, _text("run")),
        ("funding prints missing", True, lambda r: _int(r.get("funding_missing"))),
        ("constant funding runs", True, lambda r: _int(r.get("funding_constant_runs"))),
    ], flagged.sort("blueprint", "run").to_dicts())]


def _equity(inputs: ReportInputs) -> str:
    title = "Equity per blueprint"
    names = sorted({*(inputs.equity["blueprint"] if inputs.equity.height else []),
                    *(inputs.oos_equity["blueprint"] if inputs.oos_equity.height else [])})
    if not names:
        return _section("equity", title, _nothing("No in-sample backtests."))
    decisions = ({} if inputs.promotions.is_empty() else dict(
        inputs.promotions.group_by("blueprint", maintain_order=True).last()
        .select("blueprint", "decision").iter_rows()))
    cells = []
    for name in names:
        colour = DECISION_COLOURS[_decision_key(decisions.get(name))][0]
        curves = [(label, frame.filter(pl.col("blueprint") == name)
                   if frame.height else frame)
                  for label, frame in (("in sample", inputs.equity),
                                       ("out of sample", inputs.oos_equity))]
        png = small_equity_png(curves, title=name, color=colour)
        img = _img(png, f"bp-{name}", f"{name}: equity in and out of sample")
        href = inputs.sheets.get(name)
        link = f'<a class="sheet" href="{_esc(href)}">{img}</a>' if href else img
        cells.append(f'<div class="cell">{link}</div>')
    return _section("equity", title, _note(
        "One chart per blueprint: the in-sample backtest (solid, framed in the colour of its "
        "promotion decision) and the stitched out-of-sample walk-forward (dashed), each as "
        "its return from its own start. A chart opens the blueprint's tear sheet."),
        '<div class="multiples">' + "".join(cells) + "</div>")


_FOLD_COLUMNS: list[Column] = [
    ("fold", True, _text("fold")),
    ("kind", False, _text("kind")),
    ("test window", False, lambda r: H.span(r.get("start"), r.get("end"))),
    ("params", False, lambda r: _params(r.get("params"))),
    ("IS Sharpe", True, lambda r: _fixed(r.get("is_sharpe"))),
    ("OOS Sharpe", True, lambda r: _fixed(r.get("sharpe"))),
    ("OOS return", True, lambda r: _pct(r.get("total_return"))),
    ("OOS max DD", True, lambda r: _pct(r.get("max_drawdown"))),
    ("trades", True, lambda r: _int(r.get("trades"))),
]


def _walkforward(inputs: ReportInputs) -> str:
    title = "Walk-forward (out of sample)"
    if inputs.oos_equity.is_empty() and inputs.folds.is_empty():
        return _section("walkforward", title, _nothing("No out-of-sample folds."))
    parts = [_note("Each blueprint's test folds (the stitched out-of-sample equity is in its "
                   "chart above and in its tear sheet): the parameters chosen in sample, "
                   "their in-sample Sharpe and the fold's out-of-sample figures.")]
    if inputs.oos_equity.is_empty():
        parts.append(_nothing("No stitched out-of-sample equity."))
    if inputs.folds.is_empty():
        parts.append(_nothing("No out-of-sample folds."))
    else:
        for (name,), folds in inputs.folds.sort("blueprint", "fold").group_by(
                ["blueprint"], maintain_order=True):
            sharpe = folds["sharpe"].cast(pl.Float64).fill_nan(None).mean()
            parts.append(
                f'<details class="folds" data-blueprint="{_esc(name)}"><summary>'
                f"{_link(inputs, str(name))}: {folds.height} folds, mean OOS Sharpe "
                f"{_fixed(sharpe)}, {_int(folds['trades'].sum())} trades</summary>"
                f"{_table(_FOLD_COLUMNS, folds.to_dicts())}</details>")
    return _section("walkforward", title, *parts)


def _survivors(inputs: ReportInputs) -> str:
    title = "Phase-2 survivors"
    s = inputs.survivors
    if s.is_empty():
        return _section("survivors", title, _nothing(
            "No Phase-2 survivor: no hypothesis passed the FDR, costs and stability."))
    table = _table([
        ("hypothesis", False, lambda r: f"<code>{_esc(r['hypothesis_id'])}</code>"),
        ("event type", False, _text("event_type")), ("rule", False, _text("rule_template")),
        ("horizon", False, _text("horizon")), ("symbol", False, _text("symbol")),
        ("n", True, lambda r: _int(r.get("n"))),
        ("mean (bps)", True, lambda r: H.bps(r.get("mean"))),
        ("t", True, lambda r: _fixed(r.get("t"))),
        ("q", True, lambda r: H.num("q", r.get("q"), lambda v: f"{float(v):.4g}")),
        ("net 1x / 2x costs (bps)", True,
         lambda r: f"{H.bps(r.get('net_1x'))} / {H.bps(r.get('net_2x'))}")],
        s.to_dicts(), sort_keys=[
            lambda r: r["hypothesis_id"], lambda r: r.get("event_type"),
            lambda r: r.get("rule_template"), lambda r: r.get("horizon"),
            lambda r: r.get("symbol"), lambda r: r.get("n"), lambda r: r.get("mean"),
            lambda r: r.get("t"), lambda r: r.get("q"), lambda r: r.get("net_1x")])
    return _section("survivors", title, _note(
        "The hypotheses that survived the family's FDR (q), the costs (net of 1x and 2x the "
        "round-trip cost) and the stability checks; each is a blueprint of the catalog."),
        table)


def _events(inputs: ReportInputs) -> str:
    curves = inputs.event_curves
    if curves.is_empty():
        return _section("events", "Event study", _nothing("No event curves."))
    png = event_curves_png(curves, title=f"{inputs.study}: mean signed path around events")
    # the last offset of each type: where the path ends, in numbers
    ends = (curves.sort("event_type", "offset").group_by("event_type", maintain_order=True)
            .agg(pl.col("n").max().alias("events"), pl.col("offset").min().alias("first"),
                 pl.all().last()))
    bps = 1e4
    table = _table([
        ("event type", False, _text("event_type")),
        ("events", True, lambda r: _int(r["events"])),
        ("offsets", True, lambda r: f"{r['first']} to {r['offset']}"),
        ("mean at last offset (bps)", True,
         lambda r: _fixed(None if r["mean"] is None else bps * r["mean"], 1)),
        ("band (bps)", True, lambda r: NA if r["lo"] is None or r["hi"] is None
         else f"{_fixed(bps * r['lo'], 1)} to {_fixed(bps * r['hi'], 1)}"),
    ], ends.to_dicts())
    note = _note("Offset k is in bars from the entry at the open of bar t+1 after the event "
                 "bar t; the value is the direction-signed cumulative log return "
                 "ln(open[t+1+k] / open[t+1]), so k = 0 is 0 and k < 0 shows the run-up. "
                 "The band is mean \u00b1 z standard errors.")
    return _section("events", "Event study", note,
                    _img(png, "events", "mean signed path around events"), table)


def _funnel(inputs: ReportInputs) -> str:
    funnel = inputs.funnel
    if funnel.is_empty():
        return _section("funnel", "Discovery funnel", _nothing("No funnel stages."))
    counts = funnel["hypotheses"].to_list()
    first = counts[0]
    rows = [{"stage": s, "n": c, "of_first": None if not first or c is None else c / first,
             "of_prev": None if i == 0 or not counts[i - 1] or c is None
             else c / counts[i - 1]}
            for i, (s, c) in enumerate(zip(funnel["stage"].to_list(), counts, strict=True))]
    table = _table([("stage", False, _text("stage")),
                    ("hypotheses", True, lambda r: _int(r["n"])),
                    ("% of first stage", True, lambda r: _pct(r["of_first"])),
                    ("% of previous stage", True, lambda r: _pct(r["of_prev"]))], rows)
    png = funnel_png(funnel, title=f"{inputs.study}: Phase-2 funnel")
    return _section("funnel", "Discovery funnel", _img(png, "funnel", "Phase-2 funnel"), table)


def _promotion(inputs: ReportInputs) -> str:
    if inputs.promotions.is_empty():
        return _section("promotion", "Promotion", _nothing("No promotion decisions."))
    table = _table([
        ("blueprint", False, _text("blueprint")),
        ("from", False, _text("from_stage")),
        ("to", False, _text("to_stage")),
        ("decision", False, lambda r: f'<span class="decision">{_esc(r["decision"])}</span>'),
        ("deflated Sharpe", True, lambda r: _fixed(r.get("deflated_sharpe"), 3)),
        ("PBO", True, lambda r: _fixed(r.get("pbo"), 3)),
        ("OOS Sharpe", True, lambda r: _fixed(r.get("oos_sharpe"))),
        ("OOS max DD", True, lambda r: _pct(r.get("oos_max_drawdown"))),
        ("trades", True, lambda r: _int(r.get("trades"))),
        ("reasons", False, lambda r: _reasons(r.get("reasons"))),
    ], inputs.promotions.to_dicts())
    return _section("promotion", "Promotion", table)


def _portfolio(inputs: ReportInputs) -> str:
    metrics = inputs.portfolio_metrics
    if metrics.is_empty():
        return _section("portfolio", "Portfolios", _nothing(
            "No portfolio of this study (python -m backtest_assets portfolio, after the "
            "walk-forward; specs/portfolios)."))
    parts = [_note("Each portfolio's book (its edges, weighted by the allocator on each "
                   "lookback and netted per symbol) beside the equal-weight book of every "
                   "blueprint and each of its edges alone, out of sample from the first "
                   "rebalance (every curve starts there at the study's capital).")]
    for name in sorted(metrics["portfolio"].unique()):
        rows = metrics.filter(pl.col("portfolio") == name).sort("book").to_dicts()
        parts.append(f"<h3>{_link(inputs, name, f'portfolio:{name}')}</h3>")
        parts.append(_note(
            "Edges enter on contracts reviewed on the walk-forward evidence of the bars "
            "before each review only (selection as of each review)."
            if rows[0].get("selection", "as_of") == "as_of" else
            "Edges enter on contracts decided on the study's whole walk-forward evidence: "
            "the selection is in sample, so these out-of-sample figures are biased upwards."))
        parts.append(_table([
            ("book", False, _text("book")), ("edges", True, lambda r: _int(r["edges"])),
            ("return", True, lambda r: _pct(r["total_return"])),
            ("Sharpe", True, lambda r: _fixed(r["sharpe"])),
            ("max DD", True, lambda r: _pct(r["max_drawdown"])),
            ("fees", True, lambda r: _fixed(r["fees"], 0)),
            ("largest target gross", True, lambda r: _fixed(r["max_target_gross"])),
            ("largest gross held", True, lambda r: _fixed(r["max_gross"]))], rows))
        eq = inputs.portfolio_equity.filter(pl.col("portfolio") == name) \
            if not inputs.portfolio_equity.is_empty() else pl.DataFrame()
        w = inputs.portfolio_weights.filter(pl.col("portfolio") == name) \
            if not inputs.portfolio_weights.is_empty() else pl.DataFrame()
        if not eq.is_empty():
            held = sorted(set(w.filter(pl.col("weight") > 0)["edge"])) if w.height else []
            curves = book_curves(eq, inputs.equity, held, rows[0]["oos_start"])
            png = equity_drawdown_png(curves, title=f"{name}: the book, the equal-weight "
                                                    "book and each edge alone, out of sample")
            parts.append(_img(png, f"portfolio-{name}", f"{name} equity and drawdown"))
        if not w.is_empty():
            wide = w.with_columns(cell=pl.struct("weight", "risk_contribution")).pivot(
                on="edge", index="rebalance_ts", values="cell").sort("rebalance_ts")
            edges = [c for c in wide.columns if c != "rebalance_ts"]
            parts.append("<h4>Weights and risk contributions per rebalance</h4>")
            parts.append(_note("Each cell: the edge's weight, then its share of the book's "
                               "variance on that lookback (w_i (Σw)_i / w'Σw, Ledoit-Wolf "
                               "covariance of daily returns); — an edge not eligible then."))
            parts.append(_table([("rebalance", False, lambda r: _when(r["rebalance_ts"])),
                                 *[(e, True, lambda r, e=e: _weight_cell(r[e]))
                                   for e in edges]], wide.to_dicts()))
    return _section("portfolio", "Portfolios", *parts)


def _alpha(inputs: ReportInputs) -> str:
    models, spreads = inputs.alpha_model, inputs.alpha_expectancy
    if models.is_empty():
        return _section("alpha", "Alpha", _nothing(
            "No alpha bundle of this study (python -m backtest_assets alpha, after Phase 2; "
            "specs/alpha)."))
    parts = [_note("Each alpha model's refits (lambda chosen by purged block CV, the "
                   "coefficient of each orthogonalized signal) and the top-minus-bottom "
                   "bucket spread of each signal and of the out-of-sample, regime-gated "
                   "score: the forward log return over the model's horizon, per bar, before "
                   "costs, with its Newey-West t.")]
    for name in sorted(models["alpha_model"].unique()):
        refits = models.filter(pl.col("alpha_model") == name).sort("refit_ts").to_dicts()
        coefs = [json.loads(r["coefficients"]) for r in refits]
        signals = list(coefs[0]) if coefs else []
        parts.append(f"<h3>{_esc(name)}</h3>")
        parts.append(_table([
            ("refit", False, lambda r: _when(r["refit_ts"])),
            ("lambda", True, lambda r: _fixed(r["lambda"], 3)),
            ("rows", True, lambda r: _int(r["rows"])),
            *[(s, True, lambda r, s=s: _fixed(json.loads(r["coefficients"])[s], 5))
              for s in signals]], refits))
        own = spreads.filter((pl.col("alpha_model") == name)
                             & pl.col("bucket").str.contains("-", literal=True)) \
            if not spreads.is_empty() else pl.DataFrame()
        if not own.is_empty():
            parts.append(_table([
                ("signal", False, _text("signal")), ("spread", False, _text("bucket")),
                ("bars", True, lambda r: _int(r["n_bars"])),
                ("mean (bps)", True, lambda r: _bps(r["mean"])),
                ("t (HAC)", True, lambda r: _fixed(r["t_hac"]))],
                own.sort("signal").to_dicts()))
    return _section("alpha", "Alpha", *parts)


def _weight_cell(cell: dict | None) -> str:
    if not cell or _missing(cell.get("weight")) or not cell["weight"]:
        return NA
    return f"{_pct(cell['weight'])} ({_pct(cell['risk_contribution'])})"


def book_curves(book: pl.DataFrame, edges_alone: pl.DataFrame, edges: Sequence[str],
                start: datetime.datetime) -> pl.DataFrame:
    """The book, the equal-weight book and each edge's own run (``backtest_equity``) from
    ``start`` (the first rebalance), each rescaled to start at the book's equity there, the
    drawdown from that start: (blueprint, ts, equity, drawdown)."""
    parts = [book.rename({"book": "blueprint"}).select("blueprint", "ts", "equity")]
    if edges and not edges_alone.is_empty():
        parts.append(edges_alone.filter(pl.col("blueprint").is_in(list(edges))).select(
            (pl.lit("alone: ") + pl.col("blueprint")).alias("blueprint"), "ts", "equity"))
    frame = pl.concat(parts).filter(pl.col("ts") >= start).sort("blueprint", "ts")
    base = book.filter(pl.col("ts") >= start).sort("ts")["equity"][0] if book.height else 1.0
    scaled = pl.col("equity") / pl.col("equity").first().over("blueprint") * base
    return frame.with_columns(scaled.alias("equity")).with_columns(
        (pl.col("equity") / pl.col("equity").cum_max().over("blueprint") - 1)
        .alias("drawdown"))


def _bps(value: object) -> str:
    return NA if _missing(value) else f"{1e4 * float(value):,.1f}"


def _ab(name: str, header: str, fmt: Callable[[object], str]) -> list[Column]:
    """The A and B columns of ``name`` in a comparison frame."""
    return [(f"{header} A", True, lambda r, k=f"a_{name}": fmt(r.get(k))),
            (f"{header} B", True, lambda r, k=f"b_{name}": fmt(r.get(k)))]


def _yes_no(value: object) -> str:
    return NA if value is None else ("pass" if value else "fail")


def _compare_block(c: Comparison) -> list[str]:
    """One comparison's tables, from its frames (an empty frame says so)."""
    def block(title: str, frame: pl.DataFrame, columns: Sequence[Column]) -> str:
        body = (_table(columns, frame.to_dicts()) if not frame.is_empty()
                else _nothing(f"No {title.lower()} in either study."))
        return f"<h4>{_esc(title)}</h4>\n{body}"

    where = {BOTH: "both", ONLY_A: f"only {c.a}", ONLY_B: f"only {c.b}"}
    text = _text
    return [
        f"<h3>{_esc(c.a)} (A) and {_esc(c.b)} (B)</h3>",
        block("Studies", c.studies, [
            ("study", False, text("study")), ("start", False, lambda r: _when(r["start"])),
            ("end", False, lambda r: _when(r["end"])), ("symbols", False, text("symbols")),
            ("source", False, text("source")),
            ("specs hash", False, lambda r: _hash(r["study_hash"]))]),
        block("Gate E-1 (pooled)", c.e1, [
            ("event type", False, text("event_type")), *_ab("events", "events", _int),
            *_ab("prevalence_per_10k", "per 10k bars", lambda v: _fixed(v, 1)),
            *_ab("passed", "gate", _yes_no)]),
        block("Phase-2 survivors", c.survivors, [
            ("event type", False, text("event_type")), ("rule", False, text("rule_template")),
            ("horizon", False, text("horizon")), ("symbol", False, text("symbol")),
            ("survives in", False, lambda r: _esc(where.get(r["where"], r["where"]))),
            *_ab("n", "n", _int), *_ab("q", "q", lambda v: _fixed(v, 4)),
            ("q moved", True, lambda r: _fixed(r.get("q_moved"), 4)),
            *_ab("mean", "mean (bps)", _bps),
            ("mean moved (bps)", True, lambda r: _bps(r.get("mean_moved")))]),
        block("Backtests", c.backtests, [
            ("blueprint", False, text("blueprint")), *_ab("total_return", "return", _pct),
            *_ab("sharpe", "Sharpe", _fixed), *_ab("max_drawdown", "max DD", _pct),
            *_ab("trades", "trades", _int)]),
        block("Walk-forward (out of sample)", c.walkforward, [
            ("blueprint", False, text("blueprint")),
            *_ab("deflated_sharpe", "deflated Sharpe", lambda v: _fixed(v, 3)),
            *_ab("pbo", "PBO", lambda v: _fixed(v, 3)), *_ab("oos_sharpe", "OOS Sharpe", _fixed),
            *_ab("oos_total_return", "OOS return", _pct)]),
        block("Promotions", c.promotions, [
            ("blueprint", False, text("blueprint")), *_ab("to_stage", "stage", _esc)]),
    ]


def _compare(inputs: ReportInputs) -> str:
    if not inputs.compare_with:
        return _section("compare", "Compared with other studies", _nothing(
            "Compared with no other study: list studies under compare_with in "
            f"specs/studies/{inputs.study}.yaml, or run python -m backtest_assets compare "
            f"{inputs.study} OTHER."))
    parts = [_note("This study (A) beside each study its spec names under compare_with (B): "
                   "Gate E-1 verdicts, Phase-2 survivors (which survive in one and not the "
                   "other, and how q and the mean moved, B - A), backtest and out-of-sample "
                   "metrics, promotions; each study's specs hash.")]
    for other in inputs.compare_with:
        if other in inputs.comparisons:
            parts += _compare_block(inputs.comparisons[other])
        else:
            parts += [f"<h3>{_esc(inputs.study)} (A) and {_esc(other)} (B)</h3>",
                      _nothing(f"Study {other} has no results yet: run python -m "
                               f"backtest_assets run-all --study {other}, then this report "
                               "again.")]
    return _section("compare", "Compared with other studies", *parts)


def _traceability(inputs: ReportInputs) -> str:
    specs = (_table([("spec", False, _text("spec")), ("sha256", False, lambda r: _hash(r["h"]))],
                    [{"spec": k, "h": v} for k, v in sorted(inputs.spec_hashes.items())])
             if inputs.spec_hashes else _nothing("No spec hashes."))
    ids = (f'<dl><dt>dataset hash</dt><dd><code>{_esc(inputs.dataset_hash or NA)}</code></dd>'
           f'<dt>code commit</dt><dd><code>{_esc(inputs.code_commit or NA)}</code></dd></dl>')
    return _section("traceability", "Traceability", ids, specs)


_NAV = (("summary", "Summary"), ("blueprints", "Blueprints"), ("equity", "Equity"),
        ("walkforward", "Walk-forward"), ("events", "Events"), ("funnel", "Funnel"),
        ("survivors", "Survivors"), ("promotion", "Promotion"),
        ("portfolio", "Portfolios"), ("alpha", "Alpha"), ("compare", "Compare"),
        ("traceability", "Traceability"))

# Nothing may be fetched: only inline styles, the inline script and data: images.
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")

_CSS = """
.multiples { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
             gap: 8px; }
.multiples img.chart { margin: 0; width: 100%; }
.swatch { display: inline-block; width: 12px; height: 12px; margin: 0 4px -1px 0;
          border-radius: 2px; }
.badge.promote { background: #55a868; } .badge.hold { background: #4c72b0; }
.badge.archive { background: #9a9a9a; }
details.folds { margin: 4px 0; }
details.folds summary { cursor: pointer; }
"""

# Counts the charts the browser decoded: a headless DOM dump reads the two attributes.
_SCRIPT = """
window.addEventListener("load", function () {
  var charts = document.querySelectorAll("img.chart");
  var loaded = 0;
  charts.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded++; } });
  document.body.dataset.chartsLoaded = String(loaded);
  document.body.dataset.chartsTotal = String(charts.length);
});
"""
