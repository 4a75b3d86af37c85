"""The HTML research report: sections, inline charts that decode, escaping, no external URLs."""

import base64
import dataclasses
import datetime as dt
import io
import json
import re

import numpy as np
import polars as pl
import pytest
from PIL import Image

from backtest_assets.reporting.event_study import EVENT_STUDY_SCHEMA, event_study
from backtest_assets.reporting.report import ReportInputs, render_report, summary_png

SECTIONS = ("summary", "blueprints", "equity", "walkforward", "events", "funnel", "survivors",
            "promotion", "portfolio", "alpha", "compare", "traceability")
CHARTS = {"oos-sharpe", "events", "funnel", *(f"bp-bp_{i}" for i in range(5))}
REASON = "oos_sharpe 0.41 < 0.5 & pbo 0.62 > 0.5"
DATASET_HASH = "d" * 64
T0 = dt.datetime(2024, 1, 1)


def _curve(rng: np.random.Generator, n: int, drift: float) -> tuple[np.ndarray, np.ndarray]:
    equity = 10_000 * np.exp(np.cumsum(rng.normal(drift, 0.004, n)))
    return equity, equity / np.maximum.accumulate(np.r_[10_000.0, equity])[1:] - 1


def synthetic_inputs(n_blueprints: int = 5, seed: int = 7) -> ReportInputs:
    """Small but realistic inputs: hourly curves, three folds, event curves from real bars."""
    rng = np.random.default_rng(seed)
    names = [f"bp_{i}" for i in range(n_blueprints)]
    hours = 24 * 60
    ts = [T0 + dt.timedelta(hours=h) for h in range(hours)]
    eq_rows, oos_rows, fold_rows = [], [], []
    for i, name in enumerate(names):
        equity, dd = _curve(rng, hours, 0.0002 * (i - 1))
        eq_rows.append(pl.DataFrame({"blueprint": name, "ts": ts, "equity": equity,
                                     "drawdown": dd}))
        equity, dd = _curve(rng, hours, 0.0001 * (i - 2))
        fold = np.repeat(np.arange(3), -(-hours // 3))[:hours]
        oos_rows.append(pl.DataFrame({"blueprint": name, "fold": fold, "ts": ts,
                                      "equity": equity, "drawdown": dd}))
        for f in range(3):
            fold_rows.append({
                "blueprint": name, "fold": f, "kind": "anchored",
                "start": T0 + dt.timedelta(days=20 * f), "end": T0 + dt.timedelta(days=20 * f + 20),
                "params": json.dumps({"hold_bars": 6 + f, "threshold": 1.5}),
                "is_sharpe": 1.2 - 0.1 * f, "sharpe": 0.3 * (i - 2) + 0.05 * f,
                "total_return": 0.01 * (i - 2), "max_drawdown": -0.02 - 0.01 * f,
                "trades": 10 + i + f})

    bar_ts = [T0 + dt.timedelta(minutes=5 * k) for k in range(2_000)]
    bars = pl.DataFrame({"symbol": "BTCUSDT", "ts_open": bar_ts,
                         "open": 100 * np.exp(np.cumsum(rng.normal(0, 0.002, 2_000)))})
    picks = rng.integers(30, 1_960, 300)
    events = pl.DataFrame({"event_type": rng.choice(["vol_spike", "funding_flip"], 300),
                           "symbol": "BTCUSDT", "ts": [bar_ts[k] for k in picks],
                           "direction": rng.choice([-1, 1], 300)})
    promotions = pl.DataFrame({
        "blueprint": names, "from_stage": "candidate",
        "to_stage": ["paper" if i % 2 else "archive" for i in range(n_blueprints)],
        "decision": ["promoted" if i % 2 else "archived" for i in range(n_blueprints)],
        "reasons": [REASON if i == 0 else "all gates passed" for i in range(n_blueprints)],
        "deflated_sharpe": np.linspace(0.2, 0.97, n_blueprints),
        "pbo": np.linspace(0.6, 0.05, n_blueprints),
        "oos_sharpe": [0.3 * (i - 2) for i in range(n_blueprints)],
        "oos_max_drawdown": [-0.05] * n_blueprints, "trades": [40 + i for i in range(n_blueprints)],
    })
    return ReportInputs(
        study="momentum_2024q1", window=(dt.date(2024, 1, 1), dt.date(2024, 2, 29)),
        spec_hashes={"events/vol_spike": "a" * 64, "study/momentum_2024q1": "b" * 64},
        dataset_hash=DATASET_HASH, code_commit="c" * 40,
        equity=pl.concat(eq_rows), oos_equity=pl.concat(oos_rows), folds=pl.DataFrame(fold_rows),
        event_curves=event_study(bars, events, before=12, after=24),
        funnel=pl.DataFrame({"stage": ["tested", "discovered", "economic", "stable",
                                       "survivors"],
                             "hypotheses": [4_800, 210, 64, 19, 5]}),
        promotions=promotions)


def empty_inputs() -> ReportInputs:
    full = synthetic_inputs()
    return dataclasses.replace(
        full, spec_hashes={}, equity=full.equity.clear(), oos_equity=full.oos_equity.clear(),
        folds=full.folds.clear(), event_curves=pl.DataFrame(schema=EVENT_STUDY_SCHEMA),
        funnel=full.funnel.clear(), promotions=full.promotions.clear())


def charts(page: str) -> dict[str, np.ndarray]:
    """data-chart name -> decoded RGB pixels of every inline chart."""
    found = re.findall(r'<img class="chart" data-chart="([^"]+)"[^>]*'
                       r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(found) == page.count('class="chart"')
    out = {}
    for name, data in found:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        out[name] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    return out


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, key
    return match.group(1)


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(synthetic_inputs())


def test_every_section_is_present_in_order_with_a_heading(page):
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    positions = [page.index(f'<section id="{key}">') for key in SECTIONS]
    assert positions == sorted(positions)
    for key in SECTIONS:
        assert "<h2>" in section(page, key)


def test_every_chart_is_a_png_that_is_not_blank(page):
    images = charts(page)
    assert set(images) == CHARTS
    for name, pixels in images.items():
        small = name.startswith("bp-")  # one small chart per blueprint
        assert pixels.shape[0] > 100 and pixels.shape[1] > (200 if small else 300), name
        assert pixels.std() > 10, name  # a blank (single colour) image has std 0
        assert (pixels.min(axis=2) < 200).mean() > 0.01, name  # some ink, not only white


def test_summary_counts(page):
    text = section(page, "summary")
    assert "momentum_2024q1" in text
    assert "2024-01-01 to 2024-02-29 (60 days)" in text
    for label, value in (("blueprints", 5), ("promoted", 2), ("archived", 3)):
        assert re.search(rf"<td>{label}</td><td class=num>{value}</td>", text), label


def test_tables_format_numbers_and_shorten_hashes(page):
    folds = section(page, "walkforward")
    assert folds.count("<tr>") == 5 * (1 + 3)  # per blueprint: header + a row per fold
    assert folds.count('<details class="folds"') == 5  # grouped by blueprint
    assert "<code>hold_bars=6, threshold=1.5</code>" in folds
    assert "2024 01-01 to 01-21" in folds  # compact: the year once, midnight as a date
    assert "<td class=num>-0.60</td>" in folds  # OOS Sharpe, 2 decimals
    assert "<td class=num>-2.00%</td>" in folds  # OOS return as %
    trace = section(page, "traceability")
    assert f'<code title="{"a" * 64}">{"a" * 12}</code>' in trace
    assert DATASET_HASH in trace and "c" * 40 in trace
    funnel = section(page, "funnel")
    assert "<td class=num>4,800</td>" in funnel and "<td class=num>26.32%</td>" in funnel


def test_text_is_escaped():
    inputs = synthetic_inputs()
    page = render_report(dataclasses.replace(
        inputs, study="<b>x</b>", spec_hashes={'"quoted" & <spec>': "e" * 64}))
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "oos_sharpe 0.41 &lt; 0.5 &amp; pbo 0.62 &gt; 0.5" in section(page, "promotion")
    assert REASON not in page
    assert "&quot;quoted&quot; &amp; &lt;spec&gt;" in section(page, "traceability")


def test_nothing_external(page):
    assert not re.search(r"https?:", page)
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', page)
    assert "<link" not in page
    assert page.count("<script") == 1 and "<script>" in page  # inline only, no src
    assert "<a " not in page.split("<main>")[1]  # no tear sheet to link to: no link


def test_load_script_reports_chart_counts(page):
    script = page[page.index("<script>"):page.index("</script>")]
    assert "dataset.chartsLoaded" in script and "dataset.chartsTotal" in script
    assert 'img.chart' in script and "naturalWidth" in script


def test_empty_frames_render_sentences_instead_of_charts():
    page = render_report(empty_inputs())
    assert charts(page) == {}
    for key, sentence in (("summary", "No out-of-sample results."),
                          ("equity", "No in-sample backtests."),
                          ("walkforward", "No out-of-sample folds."),
                          ("events", "No event curves."),
                          ("funnel", "No funnel stages."),
                          ("promotion", "No promotion decisions."),
                          ("traceability", "No spec hashes.")):
        assert sentence in section(page, key), key
    summary = section(page, "summary")
    assert re.search(r"<td>blueprints</td><td class=num>0</td>", summary)


def test_partial_inputs():
    full = synthetic_inputs()
    # folds without stitched equity, and stitched equity without folds
    page = render_report(dataclasses.replace(full, oos_equity=full.oos_equity.clear()))
    assert "No stitched out-of-sample equity." in section(page, "walkforward")
    page = render_report(dataclasses.replace(full, folds=full.folds.clear()))
    assert "No out-of-sample folds." in section(page, "walkforward")
    assert "bp-bp_0" in charts(page)  # the stitched curve is in each blueprint's chart
    # an event type with no values at all (n = 0 everywhere) still draws
    curves = full.event_curves.with_columns(
        pl.when(pl.col("event_type") == "vol_spike").then(None).otherwise(pl.col(c)).alias(c)
        for c in ("mean", "se", "lo", "hi"))
    assert "events" in charts(render_report(dataclasses.replace(full, event_curves=curves)))


def test_one_small_chart_per_blueprint_framed_in_its_decisions_colour(page):
    images = charts(page)
    green = np.array([0x55, 0xA8, 0x68], dtype=float)  # promoted (frame and in-sample line)
    for i in range(5):
        pixels = images[f"bp-bp_{i}"]
        near = (np.abs(pixels - green).max(axis=2) < 25).sum()
        # bp_1 and bp_3 are promoted, the others archived (grey)
        assert (near > 200) == (i % 2 == 1), (i, near)
    text = section(render_report(synthetic_inputs(n_blueprints=15)), "equity")
    assert text.count('<img class="chart" data-chart="bp-') == 15
    assert "#55a868" in render_report(synthetic_inputs())  # the legend's promoted colour


def test_blueprints_table_sorts_and_links_to_the_tear_sheets():
    inputs = dataclasses.replace(
        synthetic_inputs(),
        metrics=pl.DataFrame({"blueprint": ["bp_0", "bp_1"], "source": ["spec", "phase2"],
                              "total_return": [0.1778, -0.05], "sharpe": [9.94, None],
                              "max_drawdown": [-0.1059, -0.2], "trades": [130.0, 4.0],
                              "decision": ["promote", "archive"]}),
        sheets={"bp_0": "tear_sheets/bp_0.html", "portfolio:book_v1": "x/p.html"})
    page = render_report(inputs)
    table = section(page, "blueprints")
    assert 'class="sortable"' in table
    assert '<a class="sheet" href="tear_sheets/bp_0.html">bp_0</a>' in table
    assert '<td class=num data-sort="0.1778">17.78%</td>' in table
    assert '<td class=num data-sort="">\u2014</td>' in table  # a missing Sharpe sorts last
    assert 'badge promote' in table and 'badge archive' in table
    # the small chart and the folds link to it as well
    assert '<a class="sheet" href="tear_sheets/bp_0.html"><img' in section(page, "equity")
    assert 'href="tear_sheets/bp_0.html">bp_0</a>: 3 folds' in section(page, "walkforward")
    assert "table.sortable" in page[page.index("<script>"):]


def test_survivors_table():
    survivors = pl.DataFrame({"hypothesis_id": ["h_1"], "event_type": ["oi_flush"],
                              "rule_template": ["continuation"], "horizon": ["15m"],
                              "symbol": ["BTCUSDT"], "n": [31], "mean": [0.0034853],
                              "t": [7.65], "q": [0.0001418088062694873], "net_1x": [0.0023],
                              "net_2x": [0.0011]})
    text = section(render_report(dataclasses.replace(synthetic_inputs(),
                                                     survivors=survivors)), "survivors")
    assert 'data-key="q" data-value="0.0001418088062694873">0.0001418</span>' in text
    assert re.search(r"<td class=num data-sort=\"0.0034853\">34.9</td>", text)  # bps
    assert "No Phase-2 survivor" in section(render_report(synthetic_inputs()), "survivors")


def test_summary_png():
    for inputs in (synthetic_inputs(), empty_inputs(),
                   dataclasses.replace(synthetic_inputs(), promotions=empty_inputs().promotions)):
        png = summary_png(inputs)
        pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
        assert pixels.std() > 10


def test_rendering_is_deterministic(page):
    assert render_report(synthetic_inputs()) == page


def _edge_cases() -> dict[str, ReportInputs]:
    full = synthetic_inputs(n_blueprints=3)
    nan = float("nan")
    return {
        "nan and null metrics": dataclasses.replace(
            full, folds=full.folds.with_columns(is_sharpe=pl.lit(nan), sharpe=None),
            promotions=full.promotions.with_columns(oos_sharpe=pl.lit(nan), pbo=None,
                                                    reasons=pl.lit(None, pl.String))),
        "reasons as a list": dataclasses.replace(
            full, promotions=full.promotions.with_columns(
                reasons=pl.concat_list(pl.lit("a < b"), pl.lit("c & d")))),
        "one-point and flat curves": dataclasses.replace(
            full, equity=full.equity.group_by("blueprint", maintain_order=True).head(1),
            oos_equity=full.oos_equity.with_columns(equity=pl.lit(1.0), drawdown=pl.lit(0.0))),
        "funnel with zeros": dataclasses.replace(
            full, funnel=pl.DataFrame({"stage": ["tested", "kept", "none"],
                                       "hypotheses": [10_000, 5, 0]})),
        "offset 0 only, seven event types": dataclasses.replace(
            full, event_curves=pl.concat(
                full.event_curves.filter(pl.col("offset") == 0)
                .with_columns(event_type=pl.lit(f"type_{i}")) for i in range(7))),
    }


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_edge_cases_render_every_chart(case):
    # filterwarnings=error: a matplotlib warning (singular limits, empty legend) fails here
    page = render_report(_edge_cases()[case])
    assert set(charts(page)) == {"oos-sharpe", "events", "funnel",
                                 *(f"bp-bp_{i}" for i in range(3))}
    if case == "nan and null metrics":
        folds = section(page, "walkforward")
        folds = folds[folds.index("<table"):]  # not the base64 chart
        assert "<td class=num>\u2014</td>" in folds and "nan" not in folds.lower()
    if case == "reasons as a list":
        assert "a &lt; b; c &amp; d" in section(page, "promotion")


def test_summary_records_the_funding_gaps_run_over():
    funding = pl.DataFrame({"blueprint": ["bp_0", "bp_0", "bp_1"],
                            "run": ["backtest", "walk-forward", "backtest"],
                            "funding_missing": [3, 3, 0], "funding_constant_runs": [0, 0, 2]})
    text = section(render_report(dataclasses.replace(synthetic_inputs(), funding=funding)),
                   "summary")
    assert ("funding prints missing (run as no payment)</td><td class=num>6 in 2 of 3 runs"
            "</td>") in text
    assert "constant funding runs</td><td class=num>2 in 1 of 3 runs</td>" in text
    assert "allow_missing_funding" in text
    table = re.findall(r"<tr><td>(bp_\d)</td><td>([a-z-]+)</td><td class=num>(\d+)</td>"
                       r"<td class=num>(\d+)</td></tr>", text)
    assert table == [("bp_0", "backtest", "3", "0"), ("bp_0", "walk-forward", "3", "0"),
                     ("bp_1", "backtest", "0", "2")]
    clean = funding.with_columns(pl.lit(0).alias("funding_missing"),
                                 pl.lit(0).alias("funding_constant_runs"))
    text = section(render_report(dataclasses.replace(synthetic_inputs(), funding=clean)),
                   "summary")
    assert "No funding print was missing" in text
    # Reports of studies without the counts say nothing about funding.
    assert "funding" not in section(render_report(synthetic_inputs()), "summary")
