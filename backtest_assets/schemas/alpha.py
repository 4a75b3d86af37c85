"""Pandera models of the alpha tables (one study x alpha_model partition each)."""

import pandera.polars as pa
import polars as pl

from backtest_assets.schemas.research import STUDY_COLUMN
from backtest_assets.specs.models import ALPHA_SIGNALS

_KEY = {**STUDY_COLUMN, "alpha_model": pa.Column(pl.String)}
_REGIMES = ["calm", "normal", "stormy", "unknown"]

UNIVERSE_SNAPSHOT = pa.DataFrameSchema({
    **_KEY, "ts": pa.Column(pl.Datetime("us")), "symbol": pa.Column(pl.String),
    "adv_usd": pa.Column(pl.Float64, pa.Check.ge(0)), "eligible": pa.Column(pl.Boolean),
    "member": pa.Column(pl.Boolean), "rank": pa.Column(pl.Int64, nullable=True)},
    strict=True, unique=["study", "alpha_model", "ts", "symbol"], name="universe_snapshot")

ALPHA_SIGNALS_MODEL = pa.DataFrameSchema({
    **_KEY, "ts": pa.Column(pl.Datetime("us")), "symbol": pa.Column(pl.String),
    **{s: pa.Column(pl.Float64, required=False, nullable=True) for s in ALPHA_SIGNALS}},
    strict=True, unique=["study", "alpha_model", "ts", "symbol"], name="alpha_signals")

REGIME_SERIES = pa.DataFrameSchema({
    **_KEY, "ts": pa.Column(pl.Datetime("us")),
    "regime": pa.Column(pl.String, pa.Check.isin(_REGIMES))},
    strict=True, unique=["study", "alpha_model", "ts"], name="regime_series")

ALPHA_MODEL = pa.DataFrameSchema({
    **_KEY, "refit_ts": pa.Column(pl.Datetime("us")), "lambda": pa.Column(pl.Float64,
                                                                         pa.Check.ge(0)),
    "intercept": pa.Column(pl.Float64), "coefficients": pa.Column(pl.String),
    "lambda_path": pa.Column(pl.String), "cv_ic": pa.Column(pl.String),
    "cv_mse": pa.Column(pl.String), "method": pa.Column(pl.String),
    "scale": pa.Column(pl.String), "order": pa.Column(pl.String),
    "matrix": pa.Column(pl.String), "orthogonalization_hash": pa.Column(pl.String),
    "fit_hash": pa.Column(pl.String), "rows": pa.Column(pl.Int64, pa.Check.gt(0)),
    "spec_hash": pa.Column(pl.String)},
    strict=True, unique=["study", "alpha_model", "refit_ts"], name="alpha_model")

ALPHA_SCORES = pa.DataFrameSchema({
    **_KEY, "ts": pa.Column(pl.Datetime("us")), "symbol": pa.Column(pl.String),
    "score": pa.Column(pl.Float64), "gated_score": pa.Column(pl.Float64, nullable=True),
    "regime": pa.Column(pl.String, pa.Check.isin(_REGIMES))},
    strict=True, unique=["study", "alpha_model", "ts", "symbol"], name="alpha_scores")
