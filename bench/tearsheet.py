"""Tear sheet of one blueprint over a symbol-year of 5m bars with 2,000 trades: the time to
generate it (render + write) and the file's size; targets (issue 21) 5 s and 5 MB.

Inputs are synthetic (tests/support/sheets.py): 105,120 bars of one symbol, 2,000 trades,
an event before each entry, six walk-forward folds, a Phase-2 hypothesis. The time is the
best and the median of ``--repeat`` runs in this process, after one warm-up run (imports);
the size is split into BokehJS (the same in every sheet) and the page's own data. With
``--browser`` (Debian's chromium), the time until the page has drawn every chart, from a
cold browser, offline. The load average before and after is printed: compare runs only on
a quiet machine.

    .venv/bin/python bench/tearsheet.py [--bars 105120] [--trades 2000] [--repeat 5]
        [--symbols 1] [--browser] [--keep PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backtest_assets.reporting.tearsheet import bokeh_js, render_blueprint  # noqa: E402
from tests.support.sheets import synthetic_blueprint  # noqa: E402


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() \
        else "?"


def _browser_seconds(path: Path) -> float:
    from tests.support.cdp import Browser

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--browser: chromium is not installed")
    with tempfile.TemporaryDirectory() as tmp, Browser(chromium, Path(tmp)) as b:
        t0 = time.perf_counter()
        b.open(path.as_uri())
        b.wait_for("document.body.dataset.chartsRendered !== undefined", timeout=120)
        seconds = time.perf_counter() - t0
        assert not b.console, b.console
        return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=105_120)
    ap.add_argument("--trades", type=int, default=2_000)
    ap.add_argument("--symbols", type=int, default=1, help="symbols, each --bars long")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--keep", type=Path, help="write the sheet here too")
    args = ap.parse_args()
    print(f"load average before: {_load()} ({os.cpu_count()} cores)")
    t0 = time.perf_counter()
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")[:args.symbols]
    inputs = synthetic_blueprint(args.bars, args.trades, symbols, gap=None,
                                 name="bench_blueprint")
    print(f"inputs: {inputs.bars.height:,} bars, {inputs.trades.height:,} trades, "
          f"{inputs.events.height:,} events (built in {time.perf_counter() - t0:.2f} s, "
          "not timed)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench_blueprint.html"
        times = []
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            sheet = render_blueprint(inputs)
            path.write_text(sheet.html, encoding="utf-8")
            if i:  # the first run pays the imports
                times.append(time.perf_counter() - t0)
        size = path.stat().st_size
        js = len(bokeh_js().encode()) + len((REPO / "backtest_assets" / "reporting" /
                                            "tearsheet.js").read_bytes())
        print(f"generation (render + write): best {min(times):.3f} s, median "
              f"{statistics.median(times):.3f} s over {len(times)} runs (target <= 5 s)")
        print(f"file: {size / 1e6:.2f} MB (target <= 5 MB): JavaScript {js / 1e6:.2f} MB "
              f"(BokehJS and its plotting API, tearsheet.js), the rest {(size - js) / 1e6:.2f}"
              f" MB (data and HTML); {len(sheet.charts)} charts")
        if args.browser:
            print(f"chromium, offline, until every chart is drawn: "
                  f"{_browser_seconds(path):.2f} s")
        if args.keep:
            shutil.copy(path, args.keep)
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
