"""The research report in a real browser: headless Chromium paints it and decodes every chart."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backtest_assets.reporting.report import render_report
from tests.support.chromium import run_chromium as support_run
from tests.unit.test_report import synthetic_inputs

WIDTH, HEIGHT = 1280, 4000
HEADER_PX = 150  # title and nav links (blue) sit above this; charts start below it


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, int]:
    """The rendered report on disk and the number of chart bands it holds down the page:
    each chart, except the small per-blueprint charts, which sit in one grid (8 px apart:
    one band)."""
    page = render_report(synthetic_inputs())
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(page, encoding="utf-8")
    small = page.count('<img class="chart" data-chart="bp-')
    assert small == 5
    return path, page.count('<img class="chart"') - small + 1


def run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return support_run(chromium, tmp, *args, extra_flags=("--disable-quic",))


def coloured_bands(pixels: np.ndarray, *, min_share: float = 0.005, gap: int = 120) -> int:
    """Vertical bands of rows holding saturated colour (chart lines and bars; text is grey)."""
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    rows = np.flatnonzero(saturated.mean(axis=1) > min_share)
    # a new band starts after more than `gap` rows without colour (between two charts)
    return int(rows.size > 0) + int((np.diff(rows) > gap).sum())


def test_screenshot_is_painted_with_charts(chromium, report, tmp_path):
    path, n_bands = report
    shot = tmp_path / "shot.png"
    run_chromium(chromium, tmp_path, f"--window-size={WIDTH},{HEIGHT}",
                 f"--screenshot={shot}", path.as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert (pixels.min(axis=2) < 245).mean() > 0.02  # not a blank white page
    assert pixels.std() > 15
    # Text and tables are grey: saturated colour comes from the charts (measured: 2.5% of
    # the page with charts, 0.04% with the <img> elements removed).
    body = pixels[HEADER_PX:]
    assert ((body.max(axis=2) - body.min(axis=2)) > 60).mean() > 0.005
    assert coloured_bands(body) >= n_bands


def test_every_chart_decodes_in_the_browser(chromium, report, tmp_path):
    path, _ = report
    n_charts = path.read_text().count('<img class="chart"')
    # virtual time lets the load handler run before the DOM is dumped
    dom = run_chromium(chromium, tmp_path, "--virtual-time-budget=5000", "--dump-dom",
                       path.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:2000]
    attrs = dict(re.findall(r'data-charts-(loaded|total)="(\d+)"', body.group(0)))
    assert attrs.keys() == {"loaded", "total"}, body.group(0)
    assert int(attrs["total"]) == n_charts > 0
    assert int(attrs["loaded"]) == int(attrs["total"])
