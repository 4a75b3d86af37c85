"""What the CLI prints: formatted tables that fit 120 columns, one line per error, a next step."""

import math
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from backtest_assets import cli
from backtest_assets.console import error_location, one_line
from backtest_assets.core.tables import Col, render_table
from backtest_assets.specs import default_specs_dir
from tests.conftest import REPO, subprocess_env

LONG_REASON = ("deflated Sharpe 0.41 below 0.95; PBO 0.62 above 0.50; out-of-sample trades 12 "
               "below 30; stressed Sharpe at twice the costs -0.8 below 0; the final words END")


def test_a_table_formats_by_kind_fits_120_columns_and_wraps_reasons():
    frame = pl.DataFrame({
        "blueprint": ["p2_volatility_shock_continuation_60m_btcusdt", "momentum_v1"],
        "trades": [130.0, 1234567.0], "total_return": [0.1781, -0.0523],
        "cost": [0.00125, None], "sharpe": [9.93612, math.nan], "reasons": [LONG_REASON, "ok"]})
    text = render_table(frame, [
        Col(name="blueprint", header="blueprint"), Col(name="trades", header="trades", kind="int"),
        Col(name="total_return", header="return", kind="pct"),
        Col(name="cost", header="cost bps", kind="bps"),
        Col(name="sharpe", header="sharpe", kind="float"),
        Col(name="reasons", header="reasons", kind="wrap")])
    lines = text.splitlines()
    assert max(map(len, lines)) <= 120, text
    assert "130.000" not in text and not re.search(r"\b(str|f64|i64)\b", text), text
    assert lines[2].split()[:2] == ["p2_volatility_shock_continuation_60m_btcusdt", "130"], text
    assert "1,234,567" in text, text
    assert "17.81%" in text and "-5.23%" in text and "12.5" in text and "9.94" in text, text
    assert "…" not in text and "..." not in text, text
    words = " ".join(text.split())  # the wrapped reason, every word of it, in order
    assert all(w in words for w in LONG_REASON.split()), text
    (momentum,) = [x for x in lines if x.startswith("momentum_v1")]
    assert momentum.split()[-3:] == ["-", "-", "ok"], text  # null and NaN


def test_optional_columns_are_dropped_to_fit_and_named():
    frame = pl.DataFrame({"name": ["x" * 70], "a": [1.5], "b": [2.5], "c": [3.5]})
    cols = [Col(name="name", header="name"), Col(name="a", header="a" * 20, kind="float"),
            Col(name="b", header="b" * 20, kind="float", optional=True),
            Col(name="c", header="c" * 20, kind="float")]
    text = render_table(frame, cols)
    assert max(map(len, text.splitlines())) <= 120, text
    assert "b" * 20 not in text.splitlines()[0] and "c" * 20 in text, text
    assert text.splitlines()[-1] == f"(not shown, to fit 120 columns: {'b' * 20})"


def test_report_table_prints_the_full_report_path(monkeypatch):
    path = "/a/very/long/" + "folder/" * 20 + "report.html"
    monkeypatch.setattr(cli, "_warehouse_table", lambda *a, **k: "promotion decisions:")
    monkeypatch.setattr(cli, "report_path", lambda study="default": path)
    assert f"research report: {path}" in cli.report_table().splitlines()


@pytest.mark.parametrize(("cmd", "expected"), [
    ("report", "open the research report: /x/report.html"),
    ("demo", "open the research report: /x/report.html"),
    ("backtest", "python -m backtest_assets walkforward"),
    ("walkforward", "python -m backtest_assets portfolio"),
    ("portfolio", "python -m backtest_assets report"),
    ("alpha", "python -m backtest_assets report")])
def test_the_last_line_names_what_to_open_or_run_next(monkeypatch, cmd, expected):
    monkeypatch.setattr(cli, "report_path", lambda study="default": "/x/report.html")
    assert expected in cli._next_step(cmd, True, cli._parser().parse_args([cmd]))


def test_summary_ends_with_the_next_step(data_root, capsys):
    assert cli.main(["summary", "--start", "2024-01-01", "--end", "2024-01-01"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("next: python -m backtest_assets discover"), last


def run_cli(tmp_path, specs, *args):
    env = subprocess_env(BACKTEST_SPECS_DIR=str(specs), BACKTEST_DATA_ROOT=str(tmp_path / "data"),
                         DAGSTER_HOME=str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "backtest_assets", "run", "--start", "2024-01-01", "--end",
         "2024-01-01", "--market-data-only", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def bad_specs(tmp_path):
    import shutil

    specs = shutil.copytree(default_specs_dir(), tmp_path / "specs")
    (specs / "fees.yaml").write_text((specs / "fees.yaml").read_text() + "name: [unclosed\n")
    return specs


def test_a_bad_spec_prints_one_line_per_problem_and_where_the_traceback_is(tmp_path, bad_specs):
    proc = run_cli(tmp_path, bad_specs)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) <= 4, out
    assert lines[0].startswith(f"spec error: {bad_specs / 'fees.yaml'}: line "), out
    assert "invalid YAML" in lines[0], out
    log = lines[-1].removeprefix("traceback: ").split(" (or rerun")[0]
    assert "Traceback" in Path(log).read_text(), out


def test_verbose_prints_the_traceback_of_a_bad_spec(tmp_path, bad_specs):
    proc = run_cli(tmp_path, bad_specs, "--verbose")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr
    assert "spec error: " in proc.stderr


def test_one_line_and_error_location_of_a_dagster_error_chain():
    from dagster._utils.error import serializable_error_info_from_exc_info

    def fail():
        raise ValueError("boom\n  second line")

    try:
        fail()
    except ValueError:
        info = serializable_error_info_from_exc_info(sys.exc_info())
    where = error_location(info)
    assert where is not None and where.startswith("tests/unit/test_cli_output.py:"), where
    assert one_line(info.message) == "ValueError: boom second line"
