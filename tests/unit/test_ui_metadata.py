"""What the UI shows of a materialization: formatted Markdown tables, the survivors table,
Dagster's standard table metadata."""

import polars as pl

from backtest_assets.defs.backtest.assets import HEADLINE_FORMATS
from backtest_assets.defs.discovery.assets import survivors_markdown
from backtest_assets.defs.shared import markdown_table, table_metadata


def test_markdown_cells_are_formatted_by_column():
    frame = pl.DataFrame({"blueprint": ["a"], "total_return": [0.01234], "sharpe": [1.98765],
                          "max_drawdown": [-1.999e-13], "trades": [130.0], "other": [None]},
                         schema_overrides={"other": pl.Float64})
    table = markdown_table(frame, HEADLINE_FORMATS)
    assert table.splitlines()[2] == "| a | 1.23% | 1.99 | 0.00% | 130 |  |"
    assert "e-" not in table and "130.000" not in table
    assert markdown_table(pl.DataFrame({"x": [-2e-13, 0.123456]})).splitlines()[2:] == \
        ["| 0 |", "| 0.1235 |"]


def test_survivors_are_a_table_with_their_evidence():
    fdr = pl.DataFrame({
        "rule_template": ["continuation", "continuation"], "horizon": ["60m", "15m"],
        "symbol": ["ALL", "BTCUSDT"], "n": [84, 7], "clusters": [74, 7],
        "mean": [0.0106, 0.0025], "t": [7.4, 4.04], "p": [1e-4, 0.015625],
        "q": [2.3e-6, 0.0426], "survivor": [True, False]})
    lines = survivors_markdown(fdr).splitlines()
    assert lines[0] == "| rule_template | horizon | symbol | n | clusters | mean_bps | t | p | q |"
    assert lines[2] == "| continuation | 60m | ALL | 84 | 74 | 106.0 | 7.40 | 0.0001 | 2.3e-06 |"
    assert len(lines) == 3
    assert survivors_markdown(fdr.with_columns(survivor=False)) == "no survivor"


def test_table_metadata_names_rows_columns_and_nulls():
    frame = pl.DataFrame({"symbol": ["A", "B"], "v": [1.0, None],
                          "ts": pl.Series([0, 1]).cast(pl.Datetime("us"))})
    meta = table_metadata(frame)
    assert meta["dagster/row_count"] == 2
    cols = meta["dagster/column_schema"].value.columns
    assert [(c.name, c.type, c.constraints.nullable) for c in cols] == \
        [("symbol", "String", False), ("v", "Float64", True), ("ts", "Datetime[us]", False)]
    assert meta["preview"].value.splitlines()[0] == "| symbol | v | ts |"
