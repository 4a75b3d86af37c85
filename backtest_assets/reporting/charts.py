"""Equity and drawdown charts as PNG bytes (matplotlib's Agg backend; no display needed)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # before pyplot: never look for a display

import matplotlib.pyplot as plt
import polars as pl


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
