"""A tear sheet and the research report in a real browser, with the network cut: every chart
drawn (not blank, as many as the page declares), zoom on a price chart down to single bars
with the trades' markers apart, the log-scale toggle, the report's sortable table and links,
no console message, nothing fetched. Screenshots stay in tests/e2e/artifacts/."""

import dataclasses
import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from backtest_assets.reporting.report import render_report
from backtest_assets.reporting.tearsheet import page_charts, render_blueprint
from tests.support.cdp import Browser
from tests.support.sheets import synthetic_blueprint
from tests.unit.test_report import synthetic_inputs

ARTIFACTS = Path(__file__).parent / "artifacts"
RENDERED = "document.body.dataset.chartsRendered !== undefined"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A tear sheet (two symbols, two weeks of 5m bars with a gap, 40 trades) and a report
    linking to it, as files side by side."""
    root = tmp_path_factory.mktemp("pages")
    sheet = render_blueprint(synthetic_blueprint(n_bars=4_032, name="bp_1"))
    (root / "tear_sheets").mkdir()
    sheet_path = root / "tear_sheets" / "bp_1.html"
    sheet_path.write_text(sheet.html, encoding="utf-8")
    metrics = pl.DataFrame({"blueprint": [f"bp_{i}" for i in range(5)],
                            "source": "spec", "sharpe": [0.5, 3.0, -1.0, None, 2.0],
                            "total_return": [0.01, 0.2, -0.1, 0.0, 0.05]})
    report = render_report(dataclasses.replace(synthetic_inputs(), metrics=metrics,
                                               sheets={"bp_1": "tear_sheets/bp_1.html"}))
    report_path = root / "research_report.html"
    report_path.write_text(report, encoding="utf-8")
    return sheet, sheet_path, report_path


@pytest.fixture(scope="module")
def browser(chromium, tmp_path_factory):
    with Browser(chromium, tmp_path_factory.mktemp("chromium"), offline=True) as b:
        yield b


@pytest.fixture(scope="module")
def sheet_page(browser, pages):
    """The tear sheet opened once (drawing it takes seconds); the tests below look at it in
    turn, each leaving it as it found it."""
    sheet, path, _ = pages
    visit(browser, path)
    browser.wait_for(RENDERED, timeout=60)
    return sheet, path


def visit(browser: Browser, path: Path) -> None:
    browser.console.clear()
    browser.requests.clear()
    browser.open(path.as_uri())


def assert_quiet_and_offline(browser: Browser, path: Path) -> None:
    browser.pump(0.3)  # late console messages
    assert browser.console == []
    # the page itself, then only inline data (Bokeh's icons are data: URIs)
    assert browser.requests[0] == path.as_uri()
    assert all(u.startswith(("data:", "blob:")) for u in browser.requests[1:]), \
        [u[:80] for u in browser.requests]


def shot(browser: Browser, name: str) -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    path = browser.screenshot(ARTIFACTS / name)
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"), dtype=float)


def test_every_chart_of_the_tear_sheet_is_drawn_offline(browser, sheet_page):
    sheet, path = sheet_page
    body = browser.eval("({...document.body.dataset})")
    assert int(body["chartsTotal"]) == int(body["chartsRendered"]) == len(sheet.charts)
    assert "chartsError" not in body
    names = browser.eval("Bokeh.documents[0].roots().map(r => r.name)")
    assert names == list(sheet.charts)
    rects = browser.eval("""Array.from(document.querySelectorAll('figure.chart')).map(f => {
        const r = f.querySelector('[data-root]').getBoundingClientRect();
        return [f.dataset.chart, f.hidden, r.x + window.scrollX, r.y + window.scrollY,
                r.width, r.height]; })""")
    pixels = shot(browser, "tearsheet.png")
    drawn = 0
    for name, hidden, x, y, w, h in rects:
        if hidden:  # the log-scale chart waits for its toggle
            assert name == "equity-log" and h == 0
            continue
        assert w > 300 and h > 100, name
        crop = pixels[int(y):int(y + h), int(x):int(x + w)]
        ink = (crop.min(axis=2) < 200).mean()  # lines, bars, text: not a blank canvas
        colour = ((crop.max(axis=2) - crop.min(axis=2)) > 60).mean()
        assert crop.std() > 10 and ink > 0.01 and colour > 0.002, (name, ink, colour)
        drawn += 1
    assert drawn == len(sheet.charts) - 1
    assert_quiet_and_offline(browser, path)


def test_zoom_on_the_price_chart_shows_single_bars_and_each_trade(browser, sheet_page):
    sheet, path = sheet_page
    doc = "Bokeh.documents[0]"
    candles = f"{doc}.get_model_by_name('candles-BTCUSDT').data"
    overview = browser.eval(f"Array.from({candles}.k)")
    assert max(overview) > 1  # 4,032 bars in view: candles of several bars
    # the first trade's entry, from the page's own trade source
    entry = browser.eval(f"{doc}.get_model_by_name('trades-BTCUSDT').data.entry[0]")
    y_range = f"{doc}.get_model_by_name('price-BTCUSDT').y_range"
    before = browser.eval(f"[{y_range}.start, {y_range}.end]")
    trade = page_charts(sheet.html)["price-BTCUSDT"]["trades"]
    step = 5 * 60_000
    browser.eval(f"""(() => {{ const r = {doc}.get_model_by_name('price-BTCUSDT').x_range;
        r.setv({{start: {entry - 30 * step}, end: {entry + 30 * step}}}); return 0; }})()""")
    browser.wait_for(f"Math.max(...{candles}.k) === 1", timeout=10)
    view = browser.eval(f"({{x: Array.from({candles}.x), open: Array.from({candles}.open),"
                        f" k: Array.from({candles}.k)}})")
    assert set(view["k"]) == {1} and 55 <= len(view["x"]) <= 64  # one candle a bar
    at = view["x"].index(entry + step / 2)  # the entry bar, centred on its interval
    assert view["open"][at] == pytest.approx(trade["entry_price"][0], rel=1e-6)
    # the entry marker is in view, and markers a bar apart are drawn apart
    markers = browser.eval(f"""(() => {{
        const m = ['long', 'short'].map(s => {doc}.get_model_by_name('entries-' + s +
            '-BTCUSDT')).filter(Boolean);
        return m.flatMap(s => Array.from(s.data.entry)); }})()""")
    assert entry in markers
    # the price axis follows the bars in view: narrower, and the entry inside it
    after = browser.eval(f"[{y_range}.start, {y_range}.end]")
    assert after[1] - after[0] < (before[1] - before[0]) / 2
    assert after[0] < trade["entry_price"][0] < after[1]
    width = browser.eval("document.querySelector('figure[data-chart=\"price-BTCUSDT\"] "
                         "[data-root]').getBoundingClientRect().width")
    assert width / 61 > 10  # pixels per bar above the marker's size (10 px)
    shot(browser, "tearsheet-zoomed.png")
    # back to the overview: candles of several bars again
    browser.eval(f"{doc}.get_model_by_name('price-BTCUSDT').x_range.reset() || 0")
    browser.wait_for(f"Math.max(...{candles}.k) > 1", timeout=10)
    assert_quiet_and_offline(browser, path)


def test_log_scale_toggle(browser, sheet_page):
    _, path = sheet_page
    browser.eval("document.querySelector('button[data-show=\"equity-log\"]').click() || 0")
    state = browser.eval("""['equity', 'equity-log'].map(n => [
        document.querySelector('figure[data-chart="' + n + '"]').hidden,
        Bokeh.documents[0].get_model_by_name(n).visible])""")
    assert state == [[True, False], [False, True]]
    browser.wait_for("document.querySelector('figure[data-chart=\"equity-log\"] "
                     "[data-root]').getBoundingClientRect().height > 150", timeout=10)
    browser.eval("document.querySelector('button[data-show=\"equity\"]').click() || 0")
    assert_quiet_and_offline(browser, path)


def test_report_draws_every_chart_sorts_and_links(browser, pages):
    _, sheet_path, path = pages
    visit(browser, path)
    browser.wait_for("document.body.dataset.chartsLoaded !== undefined", timeout=30)
    body = browser.eval("({...document.body.dataset})")
    assert int(body["chartsLoaded"]) == int(body["chartsTotal"]) >= 5 + 3
    shot(browser, "report.png")
    order = """Array.from(document.querySelectorAll('#blueprints tbody tr'))
        .map(r => r.cells[0].textContent)"""
    assert browser.eval(order) == [f"bp_{i}" for i in range(5)]
    sharpe = browser.eval("""Array.from(document.querySelectorAll('#blueprints th'))
        .findIndex(h => h.textContent === 'Sharpe')""")
    browser.eval(f"document.querySelectorAll('#blueprints th')[{sharpe}].click() || 0")
    assert browser.eval(order) == ["bp_2", "bp_0", "bp_4", "bp_1", "bp_3"]  # missing last
    browser.eval(f"document.querySelectorAll('#blueprints th')[{sharpe}].click() || 0")
    assert browser.eval(order)[:2] == ["bp_1", "bp_4"]
    href = browser.eval("document.querySelector('#blueprints a.sheet').href")
    assert href == sheet_path.as_uri()
    assert_quiet_and_offline(browser, path)


def test_the_monitor_sees_a_fetch_and_an_error(browser, tmp_path):
    """The checks below could fail: a page asking the network for an image is seen asking,
    and its failure is logged (the network is cut)."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("boom")</script>')
    visit(browser, page)
    browser.pump(0.5)
    assert "http://127.0.0.1:9/x.png" in browser.requests
    assert ("console.error", "boom") in browser.console
