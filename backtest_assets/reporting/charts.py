"""Equity and drawdown charts as PNG bytes (matplotlib's Agg backend; no display needed)."""

from __future__ import annotations

import base64
import io

import polars as pl

from backtest_assets.reporting.performance import downsample


class _Pyplot:
    """``matplotlib.pyplot`` on the Agg backend, imported at its first use (0.3 s that the
    code location's import, in every run worker, does not pay)."""

    def __getattr__(self, name: str):
        import matplotlib

        matplotlib.use("Agg")  # before pyplot: never look for a display
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()


def equity_drawdown_png(equity: pl.DataFrame, *, title: str = "", dpi: int = 100) -> bytes:
    """Equity (top) and drawdown (bottom, shaded) of one or more blueprints.

    Parameters
    ----------
    equity : polars.DataFrame
        Columns ``blueprint``, ``ts``, ``equity``, ``drawdown`` (the ``backtest_equity``
        frame); one line per blueprint.
    title : str
        Figure title.
    dpi : int
        Resolution (the figure is 9 x 5 inches).

    Returns
    -------
    bytes
        A PNG image.
    """
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.4]})
    try:
        for (name,), part in equity.sort("ts").group_by(["blueprint"], maintain_order=True):
            ts = part["ts"].to_numpy()
            top.plot(ts, part["equity"].to_numpy(), linewidth=1.2, label=name)
            dd = 100 * part["drawdown"].to_numpy()
            bottom.fill_between(ts, dd, 0, alpha=0.35, step="post")
            bottom.plot(ts, dd, linewidth=0.8)
        top.set_ylabel("equity")
        top.grid(alpha=0.3)
        if equity["blueprint"].n_unique() > 1:
            top.legend(fontsize=7, loc="upper left")
        bottom.set_ylabel("drawdown %")
        bottom.grid(alpha=0.3)
        top.set_title(title, fontsize=10)
        fig.autofmt_xdate()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown embedding ``png`` inline (a data URI): how the Dagster UI shows an image."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


# ---- research report charts ----------------------------------------------------------------

def _label(text: object) -> str:
    """``text`` safe as a matplotlib label: a ``$`` would start mathtext, a leading ``_``
    would hide the artist from the legend."""
    return str(text).replace("$", r"\$").lstrip("_") or "?"


def _png(fig, dpi: int, *, tight: bool = True) -> bytes:
    """Render and close ``fig`` (closing always: pyplot keeps every open figure alive);
    ``tight``: lay it out first (else its margins are the caller's)."""
    try:
        if tight:
            fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def event_curves_png(curves: pl.DataFrame, *, title: str = "", dpi: int = 100) -> bytes:
    """One subplot per event type: the mean signed path with its ``lo..hi`` band, in bps.

    Parameters
    ----------
    curves : polars.DataFrame
        The ``event_study`` frame: ``event_type``, ``offset``, ``mean``, ``lo``, ``hi``, ``n``
        (returns as log returns; drawn x 1e4). Must not be empty.
    title : str
        Figure title.
    dpi : int
        Resolution (each subplot is 4.2 x 3 inches, three per row).

    Returns
    -------
    bytes
        A PNG image.
    """
    types = curves["event_type"].unique(maintain_order=True).sort().to_list()
    ncols = min(3, len(types))
    nrows = -(-len(types) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows + 0.4),
                             squeeze=False)
    for ax, name in zip(axes.flat, types, strict=False):
        part = curves.filter(pl.col("event_type") == name).sort("offset")
        k = part["offset"].to_numpy()
        # nulls -> NaN: matplotlib leaves gaps there instead of failing
        mean, lo, hi = (1e4 * part[c].cast(pl.Float64).fill_null(float("nan")).to_numpy()
                        for c in ("mean", "lo", "hi"))
        ax.fill_between(k, lo, hi, alpha=0.25, linewidth=0, label="band")
        ax.plot(k, mean, linewidth=1.4, label="mean")
        ax.axvline(0, color="black", linestyle="--", linewidth=0.8)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_title(f"{_label(name)}  (n <= {part['n'].max() or 0})", fontsize=9)
        ax.set_xlabel("bars from entry (open of t+1)", fontsize=8)
        ax.set_ylabel("signed cum. log return (bps)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(types):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig, dpi)


def funnel_png(funnel: pl.DataFrame, *, title: str = "", dpi: int = 100) -> bytes:
    """Horizontal bars of the funnel stages, first stage on top, each labelled with its count.

    Parameters
    ----------
    funnel : polars.DataFrame
        ``stage`` (String), ``hypotheses`` (int), in funnel order. Must not be empty.
    title : str
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image. The x axis is logarithmic when the counts span more than two decades
        (a linear axis would draw the last stages as invisible slivers).
    """
    stages = [_label(s) for s in funnel["stage"].to_list()]
    counts = funnel["hypotheses"].cast(pl.Float64).fill_null(0.0).to_numpy()
    positive = counts[counts > 0]
    log = positive.size > 0 and positive.max() / positive.min() > 100
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(stages) + 1.2))
    y = list(range(len(stages)))
    # on a log axis a bar must start at a positive value; 0 counts then draw nothing
    left = 0.5 if log else 0.0
    ax.barh(y, [max(c - left, 0.0) for c in counts], left=left, color="#4c72b0")
    for i, c in enumerate(counts):
        ax.text(max(c, left), i, f" {int(c):,}", va="center", fontsize=8)
    ax.set_yticks(y, stages, fontsize=8)
    ax.invert_yaxis()  # funnel order reads top to bottom
    if log:
        ax.set_xscale("log")
    ax.set_xlim(left, max(counts.max(), 1.0) * (4 if log else 1.15))
    ax.set_xlabel("hypotheses" + (" (log scale)" if log else ""), fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig, dpi)


def sharpe_bars_png(sharpe: pl.DataFrame, *, title: str = "", dpi: int = 100) -> bytes:
    """Horizontal bars of one Sharpe ratio per blueprint, best on top.

    Parameters
    ----------
    sharpe : polars.DataFrame
        ``blueprint``, ``sharpe`` and optionally ``decision`` (bars of a decision starting with
        ``promot`` are green, ``archiv`` grey, others blue). Must not be empty.
    title : str
        Figure title.
    dpi : int
        Resolution.

    Returns
    -------
    bytes
        A PNG image.
    """
    frame = sharpe.with_columns(pl.col("sharpe").cast(pl.Float64).fill_nan(None)).sort(
        "sharpe", descending=True, nulls_last=True)
    decisions = (frame["decision"].cast(pl.String).fill_null("").str.to_lowercase().to_list()
                 if "decision" in frame.columns else [""] * frame.height)
    colors = ["#55a868" if d.startswith("promot") else "#9a9a9a" if d.startswith("archiv")
              else "#4c72b0" for d in decisions]
    values = frame["sharpe"].fill_null(0.0).to_numpy()
    fig, ax = plt.subplots(figsize=(8, 0.28 * frame.height + 1.3))
    y = list(range(frame.height))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, [_label(b) for b in frame["blueprint"].to_list()], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("Sharpe ratio", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig, dpi)


def message_png(text: str, *, dpi: int = 100) -> bytes:
    """A small image carrying only ``text``: what to show where a chart has no data."""
    fig = plt.figure(figsize=(6, 1.5))
    fig.text(0.5, 0.5, _label(text), ha="center", va="center", fontsize=11)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def small_equity_png(curves: list[tuple[str, pl.DataFrame]], *, title: str, color: str,
                     dpi: int = 72) -> bytes:
    """A small chart of one blueprint: each ``(label, frame)`` curve (``ts``, ``equity``) as
    its return from its first point in %, the first solid, the others dashed; the frame's
    border in ``color`` (its promotion decision). Empty curves are skipped.

    At 3.4 x 1.8 inches: one per blueprint in a grid, instead of one chart crowded with all
    of them.
    """
    fig, ax = plt.subplots(figsize=(3.4, 1.8))
    drawn = 0
    for i, (label, frame) in enumerate(curves):
        if frame.is_empty():
            continue
        part = frame.sort("ts")
        eq, ts = part["equity"].to_numpy(), part["ts"].to_numpy()
        keep = downsample(ts, eq, 200)  # a 3-inch line needs no more; extremes kept
        base = eq[0] if eq[0] else 1.0
        ax.plot(ts[keep], 100 * (eq[keep] / base - 1), linewidth=1.0,
                color=color if i == 0 else "#333333", linestyle="-" if i == 0 else "--",
                label=_label(label))
        drawn += 1
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_title(_label(title), fontsize=8)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
    for side in ax.spines.values():
        side.set_edgecolor(color)
        side.set_linewidth(1.5)
    # no legend: the report's note says solid is in sample, dashed out of sample (a legend
    # costs a third of the chart's time, and hides the curve at this size)
    if drawn:
        import matplotlib.dates as mdates

        locator = mdates.AutoDateLocator(minticks=2, maxticks=4)
        ax.xaxis.set_major_locator(locator)
        concise = mdates.ConciseDateFormatter(locator)
        concise.offset_formats = [""] * 6  # no year/month line under a 3-inch chart
        ax.xaxis.set_major_formatter(concise)
    # fixed margins: tight_layout costs more than drawing the chart
    fig.subplots_adjust(left=0.13, right=0.97, top=0.86, bottom=0.14)
    return _png(fig, dpi, tight=False)
