"""A plain-text account of what the warehouse holds for a date window."""

from __future__ import annotations

import datetime as dt

import polars as pl

from backtest_assets.warehouse import Box, PartitionLayout, Warehouse

_TABLES = {  # table -> (time column, slot minutes or None for irregular rows)
    "raw_perp_klines_1m": ("ts_open", 1), "raw_spot_klines_1m": ("ts_open", 1),
    "raw_funding_rates": ("ts", None), "raw_open_interest": ("ts", 5),
    "bars_1m": ("ts_open", 1), "bars_5m": ("ts_open", 5), "bars_15m": ("ts_open", 15),
    "pit_features": ("ts_open", None), "forward_labels": ("ts_open", None),
    "event_table": ("ts", None),
}


def warehouse_summary(warehouse: Warehouse, start: dt.date, end: dt.date) -> str:
    """Rows, symbols, missing slots and partial bars per table, and quarantined rows."""
    lo = dt.datetime.combine(start, dt.time())
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
    have = warehouse.tables()
    lines = [f"warehouse: {warehouse.path}", f"window: {start}..{end} (UTC, inclusive)",
             f"{'table':<20} {'rows':>10} {'symbols':>8} {'missing':>9} {'partial':>8}"]
    for table, (tcol, slot) in _TABLES.items():
        if table not in have:
            lines.append(f"{table:<20} {'(not materialized)':>10}")
            continue
        frame = warehouse.read(table, PartitionLayout(time_col=tcol, time_dim="date"),
                               [Box(start=lo, end=hi)])
        groups = ["symbol", "market"] if "market" in frame.columns else ["symbol"]
        missing = partial = "-"
        if slot:
            days = (end - start).days + 1
            n_groups = frame.select(groups).unique().height
            missing = str(n_groups * days * 24 * 60 // slot - frame.height)
        if "n_source_bars" in frame.columns and slot and slot > 1:
            partial = str(int((frame["n_source_bars"] < slot).sum()))
        lines.append(f"{table:<20} {frame.height:>10,} {frame['symbol'].n_unique():>8} "
                     f"{missing:>9} {partial:>8}")
    if "event_table" in have:
        events = warehouse.read("event_table", PartitionLayout(time_col="ts", time_dim="date"),
                                [Box(start=lo, end=hi)])
        counts = events.group_by("event_type").len().sort("event_type").iter_rows()
        lines.append("events: " + ", ".join(f"{t} {n}" for t, n in counts))
    if "event_quality_report" in have:
        lines.append(_e1_table(warehouse))
    if "phase2_fdr" in have:
        lines.append(_phase2_table(warehouse))
    if "ingest_quarantine" in have:
        q = warehouse.read("ingest_quarantine", PartitionLayout()).filter(
            pl.col("date").is_between(start, end))
        lines.append(f"quarantined rows: {q.height}"
                     + "".join(f"\n  {r['asset']} {r['symbol']} {r['date']} line "
                               f"{r['line_no']}: {r['reason']}" for r in q.head(10).to_dicts()))
    return "\n".join(lines)


def _e1_table(warehouse: Warehouse) -> str:
    report = warehouse.read("event_quality_report", PartitionLayout()).filter(
        pl.col("symbol") == "ALL").sort("event_type")
    lines = ["Gate E-1 (pooled over the default study's symbols):",
             f"  {'event type':<26} {'events':>7} {'per 10k':>8} {'join':>7}  verdict"]
    for r in report.iter_rows(named=True):
        per10k = "-" if r["prevalence_per_10k"] is None else f"{r['prevalence_per_10k']:.1f}"
        join = "-" if r["join_rate"] is None else f"{r['join_rate']:.4f}"
        verdict = "pass" if r["passed"] else f"FAIL: {r['reasons']}"
        lines.append(f"  {r['event_type']:<26} {r['events']:>7} {per10k:>8} {join:>7}  {verdict}")
    return "\n".join(lines)


def _phase2_table(warehouse: Warehouse) -> str:
    fdr = warehouse.read("phase2_fdr", PartitionLayout())
    lines = ["Phase 2 (hypotheses, tested, untestable, discovered at the family's FDR, "
             "survivors of costs and stability):"]
    for (event_type,), t in sorted(fdr.group_by("event_type"), key=lambda g: g[0]):
        lines.append(f"  {event_type:<26} {t.height:>3} hypotheses, "
                     f"{int((t['status'] == 'tested').sum()):>3} tested, "
                     f"{int((t['status'] == 'untestable').sum()):>3} untestable, "
                     f"{int(t['discovered'].sum()):>3} discovered, "
                     f"{int(t['survivor'].sum()):>3} survivors")
        for r in t.filter(pl.col("survivor")).sort("horizon", "symbol").iter_rows(named=True):
            lines.append(f"      survivor: {r['rule_template']} {r['horizon']} {r['symbol']}: "
                         f"n {r['n']} in {r['clusters']} clusters, mean "
                         f"{1e4 * r['mean']:.1f} bps, t {r['t']:.1f}, q {r['q']:.2g}")
    return "\n".join(lines)
