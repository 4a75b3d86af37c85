"""Phase 2: every hypothesis about what follows an event type, tested and gated (no Dagster).

Frame contracts
---------------
- ``events``: ``event_table`` rows of ONE event type (``symbol, ts, direction`` used), the
  study's window and symbols; ``ts`` is the bar label, acted on at the next bar's open.
- ``labels``: ``forward_labels`` rows (``symbol, ts_open, fwd_ret_<h>``) of the same window:
  ``fwd_ret_h = ln(open[t+1+h] / open[t+1])`` (DESIGN.md, Labels and entries).
- ``regimes``: ``symbol, ts_open`` and the regime feature's column, same window.

Hypotheses
----------
One per (rule template, horizon, symbol) of the event type, plus the pooled symbol ``ALL``
(every symbol's events together) when the families spec says so. ``continuation`` trades with
the event's direction (signed return = direction x forward return), ``mean_reversion``
against it. A family is ``family_by`` (by default event type, template, horizon); q-values
are computed within it.

Statistics and gates
--------------------
- non-overlapping events: an event inside the horizon of an earlier tested event of the same
  hypothesis is marked ``overlapping`` in the sample and left out of the statistics and
  gates (``n`` counts the tested events, ``n_overlapping`` the others). A self-triggered
  event's direction is the sign of a return inside the earlier event's forward window, so
  with both in a sample the null t is off-centre (measured on self-triggered GARCH-t events
  at 60m: mean -0.30, sd 1.14, family FDR 0.064-0.085 at q = 0.05 whatever the variance
  estimator; see tests/unit/test_calibration.py). Which events are kept depends on event
  times only.
- clusters: events chained by gaps of at most ``cluster_lag_multiple`` x the horizon in bars
  (``cluster_lag``) form one cluster, so overlapping horizons and simultaneous events across
  symbols are never counted as independent; ``clusters`` is their number G.
- the test (``inference``, stats/inference.py). ``signflip``: the cluster sign-flip
  randomization test of a zero mean -- the two-sided p-value is the share of the 2^G sign
  patterns of the cluster sums whose |sum| reaches the observed one, enumerated for G <= 14,
  drawn above (at most 9,999, sequentially stopped) or bounded by Hoeffding where the draws
  could not resolve it; it cannot be below 1 / 2^(G - 1). ``cr2``: CR2 standard error, p
  from Student t with Bell-McCaffrey degrees of freedom (``df``, fractional).
  ``signflip+cr2`` (the default): p is the larger of the two, so both must reject; ``se``,
  ``t`` and ``df`` are then CR2's. The calibration behind the choice is in
  tests/unit/test_calibration.py.
- ``insufficient_sample``: fewer events than ``min_sample``. ``untestable``: every event in
  one cluster (no independent replication), or no variation left (standard error 0). Both
  are recorded, never dropped, with their reason, and counted in their family with p = 1 (so
  they cannot be discovered but still cost their family); neither is reported as tested.
- FDR: BH (or BY) q-values within each family; discovered when q <= ``fdr_q``.
- economic: mean - m x round-trip cost > 0 at every cost multiplier m.
- stability: the mean's sign holds in at least ``min_slice_share`` of time slices (weeks,
  months or quarters with at least ``min_events_per_slice`` events) and of the volatility
  regimes (high: the regime feature >= its median over the study's bars; low: below).
- survivor: tested, discovered, economic and stable. ``reasons`` says why each failed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from backtest_assets.specs.models import FamiliesSpec, FeesSpec, Phase2Gate
from backtest_assets.specs.models import interval_minutes as interval_minutes_of
from backtest_assets.stats.inference import (
    cluster_mean_test,
    cluster_signflip_test,
    cr2_mean_test,
    non_overlapping,
)
from backtest_assets.stats.multiplicity import qvalues

POOLED = "ALL"
TESTED, INSUFFICIENT, UNTESTABLE = "tested", "insufficient_sample", "untestable"
_TESTS = {"signflip+cr2": cluster_mean_test, "signflip": cluster_signflip_test,
          "cr2": cr2_mean_test}
_SLICE_EVERY = {"week": "1w", "month": "1mo", "quarter": "1q"}
_SIGN = {"continuation": 1, "mean_reversion": -1}

HYPOTHESIS_SCHEMA: dict[str, pl.DataType] = {
    "hypothesis_id": pl.String(), "event_type": pl.String(), "rule_template": pl.String(),
    "horizon": pl.String(), "symbol": pl.String(), "family": pl.String(),
}
SAMPLE_SCHEMA: dict[str, pl.DataType] = {
    **HYPOTHESIS_SCHEMA, "event_symbol": pl.String(), "ts": pl.Datetime("us"),
    "direction": pl.Int8(), "forward_return": pl.Float64(), "signed_return": pl.Float64(),
    "slice": pl.Date(), "regime": pl.String(), "overlapping": pl.Boolean(),
}

PVALS_SCHEMA: dict[str, pl.DataType] = {
    **HYPOTHESIS_SCHEMA, "n": pl.Int64(), "n_overlapping": pl.Int64(), "mean": pl.Float64(),
    "se": pl.Float64(), "t": pl.Float64(), "p": pl.Float64(), "clusters": pl.Int64(),
    "df": pl.Float64(), "cluster_lag": pl.Int64(), "inference": pl.String(),
    "status": pl.String(),
}


@dataclass(frozen=True, kw_only=True)
class Phase2Inputs:
    event_type: str
    symbols: Sequence[str]
    events: pl.DataFrame
    labels: pl.DataFrame
    regimes: pl.DataFrame
    regime_feature: str
    interval_minutes: int


def hypothesis_id(event_type: str, template: str, horizon: str, symbol: str) -> str:
    """A stable id: the same hypothesis has the same id in every run and every study."""
    key = f"{event_type}|{template}|{horizon}|{symbol}"
    return "h_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def hypotheses(event_type: str, symbols: Sequence[str], families: FamiliesSpec
               ) -> pl.DataFrame:
    """Every hypothesis of ``event_type`` (``HYPOTHESIS_SCHEMA``), in a stable order."""
    names = [*symbols, *([POOLED] if families.pooled else [])]
    rows = []
    for template in families.templates:
        for horizon in families.horizons:
            parts = {"event_type": event_type, "rule_template": template, "horizon": horizon}
            family = "|".join(parts[f] for f in families.family_by)
            rows += [{"hypothesis_id": hypothesis_id(event_type, template, horizon, s),
                      **parts, "symbol": s, "family": family} for s in names]
    return pl.DataFrame(rows, schema=HYPOTHESIS_SCHEMA)


def samples(inputs: Phase2Inputs, families: FamiliesSpec, gate: Phase2Gate) -> pl.DataFrame:
    """Every hypothesis's sample: one row per (hypothesis, event) (``SAMPLE_SCHEMA``).

    An event without a forward return (its label is null) is not in any sample: Gate E-1
    already measured how many fail to join. ``overlapping`` marks the events inside the
    horizon of an earlier tested event of the same hypothesis (:func:`mark_overlapping`):
    recorded, but left out of the statistics and gates.
    """
    hyps = hypotheses(inputs.event_type, inputs.symbols, families)
    every = _SLICE_EVERY[gate.stability.time_slice]
    threshold = inputs.regimes[inputs.regime_feature].median()  # None without any value
    value = pl.col("_regime_value")
    regime = pl.lit(None, pl.String) if threshold is None else (
        pl.when(value.is_null()).then(None).when(value >= threshold).then(pl.lit("high"))
        .otherwise(pl.lit("low")))
    events = (
        inputs.events.select("symbol", "ts", "direction")
        .join(inputs.labels.rename({"ts_open": "ts"}), on=["symbol", "ts"], how="left")
        .join(inputs.regimes.select("symbol", pl.col("ts_open").alias("ts"),
                                    pl.col(inputs.regime_feature).alias("_regime_value")),
              on=["symbol", "ts"], how="left")
        .with_columns(
            pl.col("ts").dt.truncate(every).dt.date().alias("slice"), regime.alias("regime"))
        .rename({"symbol": "event_symbol"})
    )
    parts = []
    for (template, horizon), group in hyps.group_by(["rule_template", "horizon"],
                                                    maintain_order=True):
        column = f"fwd_ret_{horizon}"
        picked = events.filter(pl.col(column).is_not_null()).with_columns(
            pl.col(column).alias("forward_return"),
            (_SIGN[template] * pl.col("direction").cast(pl.Float64) * pl.col(column))
            .alias("signed_return"))
        per_symbol = group.filter(pl.col("symbol") != POOLED).join(
            picked, left_on="symbol", right_on="event_symbol", how="inner"
        ).with_columns(pl.col("symbol").alias("event_symbol"))
        pooled = group.filter(pl.col("symbol") == POOLED).join(picked, how="cross")
        columns = [c for c in SAMPLE_SCHEMA if c != "overlapping"]
        parts += [per_symbol.select(columns), pooled.select(columns)]
    sample = pl.concat(parts).with_columns(pl.lit(False).alias("overlapping"))
    return mark_overlapping(sample.cast(SAMPLE_SCHEMA),  # type: ignore[arg-type]
                            inputs.interval_minutes)


def mark_overlapping(sample: pl.DataFrame, interval_minutes: int) -> pl.DataFrame:
    """The sample with ``overlapping`` set: True for an event inside the horizon of an
    earlier kept event of its hypothesis (stats.inference.non_overlapping; events at one bar
    are kept or left together). Sorted by (hypothesis, ts, event symbol) unless it already
    is by (hypothesis, ts)."""
    bar_us = interval_minutes * 60_000_000
    if not _grouped_in_time(sample):  # sorting millions of rows costs seconds: only if needed
        sample = sample.sort("hypothesis_id", "ts", "event_symbol")
    bars = {h: interval_minutes_of(h) // interval_minutes for h in sample["horizon"].unique()}
    keep = non_overlapping(
        sample["ts"].dt.epoch("us").to_numpy() // bar_us,
        sample["horizon"].replace_strict(bars, return_dtype=pl.Int64).to_numpy(),
        sample["hypothesis_id"].rle_id().to_numpy())
    return sample.with_columns(pl.Series("overlapping", ~keep))


def _grouped_in_time(sample: pl.DataFrame) -> bool:
    """Whether the hypotheses are sorted and each one's events are in time order."""
    if not sample["hypothesis_id"].is_sorted():
        return False
    ts = sample["ts"].dt.epoch("us").to_numpy()
    same = np.diff(sample["hypothesis_id"].rle_id().to_numpy()) == 0
    return not np.any(same & (np.diff(ts) < 0))


def pvalues(sample: pl.DataFrame, hyps: pl.DataFrame, families: FamiliesSpec,
            gate: Phase2Gate, horizon_bars: dict[str, int], interval_minutes: int
            ) -> pl.DataFrame:
    """One row per hypothesis: n (tested events), n_overlapping, mean, cluster-robust se, t,
    p, clusters, df and status, over the sample's non-overlapping events."""
    bar_us = interval_minutes * 60_000_000
    test_mean = _TESTS[families.inference]
    overlapping = dict(sample.group_by("hypothesis_id").agg(pl.col("overlapping").sum())
                       .iter_rows())
    by_id = sample.filter(~pl.col("overlapping")).partition_by("hypothesis_id", as_dict=True)
    rows = []
    for h in hyps.iter_rows(named=True):
        part = by_id.get((h["hypothesis_id"],))
        n = 0 if part is None else part.height
        lag = math.ceil(families.cluster_lag_multiple * horizon_bars[f"fwd_ret_{h['horizon']}"])
        row = {**h, "n": n, "n_overlapping": overlapping.get(h["hypothesis_id"], 0),
               "mean": None, "se": None, "t": None, "p": None, "clusters": None, "df": None,
               "cluster_lag": lag, "inference": families.inference, "status": INSUFFICIENT}
        if part is not None and n >= gate.min_sample:
            values = part["signed_return"].to_numpy()
            times = part["ts"].dt.epoch("us").to_numpy() // bar_us
            test = test_mean(values, times, lag=lag)
            p = _finite(test.p)
            row.update(mean=test.mean, se=_finite(test.se), t=_finite(test.t), p=p,
                       clusters=test.clusters, df=float(test.df),
                       status=TESTED if p is not None else UNTESTABLE)
        elif part is not None and n:
            row["mean"] = float(part["signed_return"].mean())
        rows.append(row)
    return pl.DataFrame(rows, schema=PVALS_SCHEMA)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def fdr(pvals: pl.DataFrame, sample: pl.DataFrame, families: FamiliesSpec, gate: Phase2Gate,
        fees: FeesSpec) -> pl.DataFrame:
    """q-values within families, the economic and stability gates, survivors and reasons."""
    out = []
    for _, fam in pvals.group_by("family", maintain_order=True):
        # Insufficient and untestable hypotheses count in their family with p = 1: never
        # discovered, never free.
        p = fam["p"].fill_null(1.0).to_numpy()
        out.append(fam.with_columns(pl.Series("q", qvalues(p, families.fdr_method))))
    table = pl.concat(out) if out else pvals.with_columns(pl.lit(None, pl.Float64).alias("q"))
    cost = fees.round_trip()
    stats = _stability(sample, gate)
    table = table.join(stats, on="hypothesis_id", how="left").with_columns(
        pl.lit(families.fdr_method).alias("fdr_method"),
        ((pl.col("status") == TESTED) & (pl.col("q") <= families.fdr_q)).alias("discovered"),
        *[(pl.col("mean") - m * cost).alias(_net_column(m)) for m in fees.cost_multipliers],
    )
    nets = [_net_column(m) for m in fees.cost_multipliers]
    table = table.with_columns(
        pl.all_horizontal([pl.col(c) > 0 for c in nets]).fill_null(False).alias("economic"),
        ((pl.col("slice_share") >= gate.stability.min_slice_share)
         & (pl.col("regime_share") >= gate.stability.min_regime_share))
        .fill_null(False).alias("stable"),
    ).with_columns(
        (pl.col("discovered") & pl.col("economic") & pl.col("stable")).alias("survivor"))
    reasons = [_reasons(r, families, gate, fees, cost) for r in table.iter_rows(named=True)]
    return table.with_columns(pl.Series("reasons", reasons, pl.String))


def _net_column(multiplier: float) -> str:
    return f"net_{multiplier:g}x".replace(".", "_")


def _stability(sample: pl.DataFrame, gate: Phase2Gate) -> pl.DataFrame:
    """Per hypothesis: share of eligible slices and regimes whose mean has the overall sign
    (over the tested, non-overlapping events)."""
    k = gate.stability.min_events_per_slice
    sample = sample.filter(~pl.col("overlapping"))
    overall = sample.group_by("hypothesis_id").agg(pl.col("signed_return").mean().sign()
                                                   .alias("_sign"))

    def share(by: str, name: str) -> pl.DataFrame:
        groups = (sample.filter(pl.col(by).is_not_null())
                  .group_by("hypothesis_id", by).agg(pl.col("signed_return").mean().alias("m"),
                                                     pl.len().alias("n"))
                  .filter(pl.col("n") >= k).join(overall, on="hypothesis_id"))
        return groups.group_by("hypothesis_id").agg(
            (pl.col("m").sign() == pl.col("_sign")).mean().alias(f"{name}_share"),
            pl.len().alias(f"{name}s"))

    return overall.select("hypothesis_id").join(
        share("slice", "slice"), on="hypothesis_id", how="left").join(
        share("regime", "regime"), on="hypothesis_id", how="left")


def _reasons(r: dict, families: FamiliesSpec, gate: Phase2Gate, fees: FeesSpec,
             cost: float) -> str:
    if r["status"] == INSUFFICIENT:
        left_out = (f", {r['n_overlapping']} overlapping left out" if r["n_overlapping"]
                    else "")
        return f"insufficient_sample ({r['n']} < {gate.min_sample} events{left_out})"
    if r["status"] == UNTESTABLE:
        if r["clusters"] == 1:
            return (f"untestable (all {r['n']} events in one cluster: gaps <= "
                    f"{r['cluster_lag']} bars, no independent replication)")
        return f"untestable (no variation left in {r['n']} events: standard error 0)"
    out = []
    if not r["discovered"]:
        q = "n/a" if r["q"] is None else f"{r['q']:.3g}"
        out.append(f"q {q} > {families.fdr_q}")
    for m in fees.cost_multipliers:
        net = r[_net_column(m)]
        if net is None or net <= 0:
            out.append(f"mean {1e4 * r['mean']:.1f} bps after {m:g}x costs "
                       f"({1e4 * m * cost:.1f} bps) is not positive")
            break
    st = gate.stability
    if r["slice_share"] is None or r["slice_share"] < st.min_slice_share:
        got = "no slice" if r["slice_share"] is None else \
            f"{r['slice_share']:.0%} of {r['slices']} {st.time_slice}s"
        out.append(f"sign holds in {got} with >= {st.min_events_per_slice} events "
                   f"(< {st.min_slice_share:.0%})")
    if r["regime_share"] is None or r["regime_share"] < st.min_regime_share:
        got = "no regime" if r["regime_share"] is None else \
            f"{r['regime_share']:.0%} of {r['regimes']} volatility regimes"
        out.append(f"sign holds in {got} (< {st.min_regime_share:.0%})")
    return "; ".join(out)


def family_counts(table: pl.DataFrame) -> pl.DataFrame:
    """Per family: hypotheses, tested, insufficient, untestable, discovered, survivors."""
    return table.group_by("family", maintain_order=True).agg(
        pl.len().alias("hypotheses"),
        (pl.col("status") == TESTED).sum().alias("tested"),
        (pl.col("status") == INSUFFICIENT).sum().alias("insufficient_sample"),
        (pl.col("status") == UNTESTABLE).sum().alias("untestable"),
        pl.col("discovered").sum().alias("discovered"),
        pl.col("survivor").sum().alias("survivors"),
    ).sort("family")


HASH_SIG_FIGS = 12


def frame_hash(frames: dict[str, pl.DataFrame]) -> str:
    """sha256 over frames' content, independent of row order and memory layout.

    Each frame is sorted by all its columns; each column contributes its name, dtype, null
    mask and values (strings as UTF-8 with lengths), so equal content gives equal hashes.
    Floats count to ``HASH_SIG_FIGS`` significant digits: the same data computed on another
    CPU (numpy and polars pick SIMD kernels by CPU) differs in its last bits, and is the same
    dataset.
    """
    digest = hashlib.sha256()
    for name in sorted(frames):
        frame = frames[name]
        floats = [c for c, t in frame.schema.items() if t.is_float()]
        if floats:
            frame = frame.with_columns(pl.col(floats).round_sig_figs(HASH_SIG_FIGS))
        frame = frame.sort(frame.columns) if frame.height else frame
        digest.update(f"{name}:{frame.height}".encode())
        for col in frame.columns:
            s = frame[col]
            digest.update(f"|{col}:{s.dtype}".encode())
            digest.update(s.is_null().to_numpy().tobytes())
            if s.dtype == pl.String:
                for v in s.fill_null("").to_list():
                    digest.update(len(v).to_bytes(8, "little") + v.encode())
            else:
                values = s.to_physical().fill_null(0).to_numpy()
                digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
