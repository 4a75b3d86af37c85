"""Tear sheets as pages (reporting/tearsheet.py): sections, the charts' data read back from
the page, headline numbers equal to the inputs, provenance on every chart, nothing external,
escaping, empty and one-trade inputs, the portfolio sheet."""

import dataclasses
import datetime as dt
import re

import numpy as np
import polars as pl
import pytest

from backtest_assets.reporting.tearsheet import (
    heatmap_cells,
    page_charts,
    page_values,
    render_blueprint,
    render_portfolio,
)
from tests.support.sheets import HASHES, synthetic_blueprint, synthetic_portfolio

SECTIONS = ("headline", "equity", "trades", "returns", "exposure", "walkforward", "evidence",
            "traceability")
CHARTS = ("equity", "equity-log", "drawdown", "underwater", "price-BTCUSDT", "price-ETHUSDT",
          "trade-returns", "holding-time", "returns-heatmap", "rolling-sharpe", "rolling-vol",
          "daily-returns", "exposure", "costs", "costs-cumulative", "folds-sharpe",
          "oos-equity", "event-study")


@pytest.fixture(scope="module")
def inputs():
    return synthetic_blueprint(n_bars=4_032)  # two weeks: room for the 7-day window


@pytest.fixture(scope="module")
def sheet(inputs):
    return render_blueprint(inputs)


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, key
    return match.group(1)


def test_sections_and_charts_in_page_order(sheet):
    page = sheet.html
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    positions = [page.index(f'<section id="{k}">') for k in SECTIONS]
    assert positions == sorted(positions)
    assert sheet.charts == CHARTS
    main = page[page.index("<main>"):page.index("</main>")]
    placed = re.findall(r'<figure class="chart" data-chart="([^"]+)"', main)
    assert tuple(placed) == CHARTS
    assert main.count("<div data-root=") == len(CHARTS)
    assert f'data-charts-total="{len(CHARTS)}"' in page


def test_headline_numbers_are_the_inputs_exactly(inputs, sheet):
    got = page_values(sheet.html)
    m = inputs.metrics
    for key in ("total_return", "sharpe", "max_drawdown", "trades", "win_rate",
                "max_drawdown_bars", "fee_drag"):
        assert float(got[key]) == m[key], key  # repr round-trips a float exactly
    assert got["sortino"] == ""  # NaN: shown as missing, no value
    assert sheet.headline["total_return"] == m["total_return"]
    headline = section(sheet.html, "headline")
    assert f">{100 * m['total_return']:.2f}%<" in headline
    assert f">{m['sharpe']:,.2f}<" in headline
    assert f">{int(m['trades']):,}<" in headline
    # the walk-forward's and Phase 2's numbers too
    assert float(got["deflated_sharpe"]) == inputs.summary["deflated_sharpe"]
    assert float(got["q"]) == inputs.hypotheses["q"][0]


def test_price_chart_holds_every_bar_trade_and_event(inputs, sheet):
    charts = page_charts(sheet.html)
    for sym in ("BTCUSDT", "ETHUSDT"):
        c = charts[f"price-{sym}"]
        bars = inputs.bars.filter(pl.col("symbol") == sym)
        assert c["full"]["t"].size == bars.height  # every bar, the gap left out
        np.testing.assert_allclose(c["full"]["c"], bars["close"].to_numpy(), rtol=1e-6)
        minutes = np.diff(c["full"]["t"])
        assert set(minutes.tolist()) == {5, 5 * 41}  # the 40 missing bars are a gap
        trades = inputs.trades.filter(pl.col("symbol") == sym)
        assert c["trades"]["entry"].size == trades.height
        assert sorted(c["trades"]["reason"]) == sorted(trades["exit_reason"].to_list())
        ev = inputs.events.filter(pl.col("symbol") == sym)
        assert len(c["events"]["type"]) == ev.height
        # an event before each entry: triggered; drawn on top of its bar, in its middle
        assert sum(c["events"]["triggered"]) == trades.height
        at = ev.join(bars.rename({"ts_open": "ts"}), on=["symbol", "ts"]).sort("ts")
        ms = at["ts"].dt.epoch("ms").to_numpy().astype(float)
        order = np.argsort(c["events"]["ts"], kind="stable")
        np.testing.assert_array_equal(c["events"]["ts"][order], ms + 150_000)
        np.testing.assert_array_equal(c["events"]["y"][order], at["high"].to_numpy())
    assert charts["equity"]["hidden"] is False and charts["equity-log"]["hidden"] is True


def test_every_chart_carries_its_provenance(sheet):
    figures = re.findall(r'<figure class="chart" data-chart="[^"]+" data-trace="([^"]+)"',
                         sheet.html)
    assert len(figures) == len(CHARTS)
    for trace in figures:
        assert HASHES["spec"][:12] in trace and HASHES["data"][:12] in trace
        assert HASHES["code"][:12] in trace and "study synthetic" in trace
    trace = section(sheet.html, "traceability")
    assert HASHES["spec"] in trace and HASHES["data"] in trace


def test_nothing_external(sheet):
    page = sheet.html
    assert "<link" not in page
    assert not re.search(r'<(script|img|iframe)[^>]+src=', page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count('<script type="application/json" id="sheet-data">') == 1


def test_walkforward_evidence_and_decision(inputs, sheet):
    wf = section(sheet.html, "walkforward")
    assert wf.count("<tr>") >= 1 + 6
    assert "2024 01-" in wf  # compact dates
    assert "PBO 0.12 &lt;= 0.3" in wf and 'badge promote' in wf
    ev = section(sheet.html, "evidence")
    assert "h_0123456789ab" in ev and "101.0" in ev  # 0.0101 in bps
    charts = page_charts(sheet.html)
    assert charts["folds-sharpe"]["groups"] == [f"rolling {f}" for f in range(6)]
    curve = charts["event-study"]
    assert curve["x"][0] == -12 and curve["x"][-1] == 24


def test_text_is_escaped(inputs):
    bad = dataclasses.replace(
        inputs, blueprint="<b>x</b>",
        catalog={**inputs.catalog, "entry": "<script>alert(1)</script>"},
        decision={**inputs.decision, "reasons": "a < b & c"})
    page = render_blueprint(bad).html
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>alert(1)</script>" not in page
    assert "a &lt; b &amp; c" in page


def test_no_trades_no_walkforward_no_events():
    base = synthetic_blueprint(n_trades=0, walkforward=False)
    sheet = render_blueprint(dataclasses.replace(
        base, events=pl.DataFrame(), event_curve=pl.DataFrame(), hypotheses=pl.DataFrame(),
        catalog={**base.catalog, "source": "spec", "hypothesis_id": None}))
    page = sheet.html
    assert "No closed trade." in section(page, "trades")
    assert "No walk-forward of this blueprint" in section(page, "walkforward")
    assert "No Phase-2 evidence" in section(page, "evidence")
    assert {"trade-returns", "folds-sharpe", "event-study", "rolling-sharpe"}.isdisjoint(
        sheet.charts)  # one week: no 7-day rolling window either
    assert "No rolling Sharpe or volatility" in section(page, "returns")
    assert "price-BTCUSDT" in sheet.charts
    assert page_charts(page)["price-BTCUSDT"]["trades"]["entry"].size == 0


def test_a_single_trade_and_no_equity():
    one = synthetic_blueprint(n_trades=1, symbols=("BTCUSDT",))
    sheet = render_blueprint(one)
    assert sheet.headline["trades"] == 0.0  # the only trade is still open
    assert "No closed trade." in section(sheet.html, "trades")
    empty = render_blueprint(dataclasses.replace(one, equity=one.equity.clear()))
    assert "No backtest equity." in section(empty.html, "equity")
    assert "equity" not in empty.charts


def test_flat_equity():
    flat = synthetic_blueprint(n_bars=4_032, n_trades=0, walkforward=False)
    flat = dataclasses.replace(flat, equity=flat.equity.with_columns(
        equity=pl.lit(flat.init_cash), drawdown=pl.lit(0.0)))
    sheet = render_blueprint(flat)  # json.dumps(allow_nan=False): no NaN reaches the page
    assert sheet.headline["var_95"] == 0.0 and sheet.headline["longest_underwater_bars"] == 0
    assert "rolling-sharpe" not in sheet.charts  # every window flat: no Sharpe to draw
    assert not page_charts(sheet.html)["drawdown"]["y"].any()


def test_heatmap_cells_compound_to_the_row_total():
    ts = np.arange(np.datetime64("2024-01-01T00:05"), np.datetime64("2024-05-01"),
                   np.timedelta64(1, "h")).astype("datetime64[us]")
    eq = 100 * np.exp(np.linspace(0, 0.3, ts.size))
    cells, cols, rows = heatmap_cells(ts, eq, 100.0, "1mo")
    assert rows == ["2024"] and cols[-1] == "year" and cols[0] == "Jan"
    year = cells.filter(pl.col("col") == "year")["ret"][0]
    assert year == pytest.approx(eq[-1] / 100 - 1)
    weekly, cols, rows = heatmap_cells(ts, eq, 100.0, "1w")
    assert cols[-1] == "week" and rows[0] == "week of 2024-01-01"
    weeks = weekly.filter(pl.col("col") == "week")["ret"]
    assert ((weeks + 1).product() - 1) == pytest.approx(eq[-1] / 100 - 1)


def test_portfolio_sheet():
    inputs = synthetic_portfolio()
    sheet = render_portfolio(inputs)
    book = inputs.metrics.filter(pl.col("book") == "book").row(0, named=True)
    got = page_values(sheet.html)
    for key in ("total_return", "sharpe", "max_drawdown", "trades"):
        assert float(got[key]) == book[key], key
    assert "weights" in sheet.charts and "equity" in sheet.charts
    charts = page_charts(sheet.html)
    labels = [s["label"] for s in charts["equity"]["series"]]
    assert labels == ["equity", "equal-weight book", "buy and hold"]
    assert [s["label"] for s in charts["weights"]["series"]] == ["a", "b"]


def test_window_dates(inputs):
    assert inputs.window == (dt.date(2024, 1, 1), dt.date(2024, 1, 14))


def test_exposure_overview_keeps_every_series_extremes(inputs, sheet):
    from backtest_assets.reporting import performance as P
    from backtest_assets.reporting.tearsheet import _close_matrix

    chart = page_charts(sheet.html)["exposure"]
    assert chart["x"].size < inputs.equity.height  # downsampled...
    series = {s["label"]: s["y"] for s in chart["series"]}
    closes, symbols = _close_matrix(inputs.bars, inputs.equity["ts"], 5)
    _, net = P.net_exposure(inputs.trades, closes, symbols,
                            inputs.equity["equity"].to_numpy())
    # ...but the net exposure's deepest short and largest long are both there
    assert np.nanmin(series["net (from the trades)"]) == np.nanmin(net) < 0
    assert np.nanmax(series["net (from the trades)"]) == np.nanmax(net) > 0
    assert set(series["leverage cap"]) == {1.0}


def test_a_symbol_without_bars_is_named(inputs):
    only_btc = dataclasses.replace(inputs, bars=inputs.bars.filter(pl.col("symbol") == "BTCUSDT"))
    sheet = render_blueprint(only_btc)
    assert "No bars of ETHUSDT." in section(sheet.html, "trades")
    assert "price-BTCUSDT" in sheet.charts and "price-ETHUSDT" not in sheet.charts
    none = render_blueprint(dataclasses.replace(inputs, bars=inputs.bars.clear()))
    assert "No bars of BTCUSDT." in section(none.html, "trades")


def test_bars_over_the_budget_are_kept_as_coarser_candles(inputs, monkeypatch):
    from backtest_assets.reporting import tearsheet

    monkeypatch.setattr(tearsheet, "FULL_BARS_BUDGET", 1_000)
    total = inputs.bars.height  # two symbols, 3,992 bars each (a 40-bar gap)
    k = -(-total // 1_000)
    sheet = render_blueprint(inputs)
    c = page_charts(sheet.html)["price-BTCUSDT"]
    bars = inputs.bars.filter(pl.col("symbol") == "BTCUSDT")
    assert c["full"]["t"].size == -(-bars.height // k) and c["step"] == k * 300_000
    assert c["full"]["h"].max() == pytest.approx(bars["high"].max(), rel=1e-6)
    assert f"candles of {k} bars ({5 * k} minutes)" in section(sheet.html, "trades")
    assert c["trades"]["entry"].size == inputs.trades.filter(
        pl.col("symbol") == "BTCUSDT").height  # every trade still at its own time
