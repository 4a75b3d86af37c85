"""The combined model of an alpha bundle: orthogonalized signals, a ridge fit whose lambda is
chosen by purged block cross-validation, walk-forward out-of-sample scores and their
information coefficient (pure numpy + scipy; no Dagster).

Array contract
--------------
X : (T, S, K) float64
    K signals of S symbols at T bars; NaN where a signal is unknown or the symbol is not a
    member of the universe at that bar. A signal at bar t is known at the close of t.
y : (T, S) float64
    The label of bar t, e.g. the forward return of
    :func:`backtest_assets.alpha.panel.forward_log_returns` over h bars, which reads the
    open of bar t + 1 + h; NaN where unknown.
rows
    The pooled regression runs on the (t, s) cells where all K signals and y are finite
    (inf counts as unknown), in row-major order (by bar, then symbol); ``times`` is the bar
    t of each row, an integer array.
scores : (T, S) float64
    Predictions; NaN where any signal is NaN, and, from :func:`walk_forward_scores`, on the
    bars before the first refit.

Orthogonalization (:func:`orthogonalize`)
-----------------------------------------
The K signals are standardized, then become K centered, mutually uncorrelated columns
``Z = (X - mean) @ matrix`` on the rows the orthogonalization is fitted on (variances with
ddof 0). The default is ``"residual"``, Gram-Schmidt in a stated order: column k is the part
of signal ``order[k]`` that the signals earlier in the order do not explain. It is the
default because every column keeps a meaning -- the new information of a signal beyond the
ones before it -- so a coefficient is an attribution, and the research choice (which signal
comes first) is explicit, recorded in the result and hashed. ``"lowdin"`` (symmetric
orthogonalization, the orthonormal set closest to the standardized signals) treats the
signals alike but every column mixes all of them; ``"pca"`` columns are variance-ranked
mixtures without a signal meaning. All three work on the standardized signals, so they do
not depend on the signals' units.

By default (``scale="kept"``) a column keeps the variance it carries: a residual its share
of its signal's variance (small when the signal is mostly explained by earlier ones), a
principal component its eigenvalue. This is what makes lambda matter. A ridge on columns of
variances ``d_k`` shrinks column k by ``d_k / (d_k + lambda)``: the redundant directions (a
correlated signal's small residual, a small component) are shrunk most, so lambda changes
how the symbols rank and the rank-based CV score can choose it. With ``scale="unit"`` (and
always with ``"lowdin"``) the columns are white, the ridge is a uniform shrinkage
``coef(lambda) = coef(0) / (1 + lambda)``, its predictions are the OLS predictions on the
raw signals shrunk towards the mean label whatever the method and order, every lambda scores
the same IC in a fold and the tie rule picks the largest (``score="mse"`` still chooses a
shrinkage).

Lambda scaling (:func:`ridge`)
------------------------------
``coef = (Zc'Zc + lambda * N * I)^-1 Zc'yc`` on data centered on the fitted rows, intercept
unpenalized: lambda is a penalty per observation, so a grid means the same at any sample
size; on unit-variance columns it is in units of a signal's variance (lambda = 1 halves the
coefficients of white columns).

Cross-validation (:func:`cv_blocks`, :func:`fit`)
-------------------------------------------------
The distinct bars are split into ``n_blocks`` contiguous blocks of (nearly) equal numbers of
bars. For the test block ``[start, end]`` the training rows are those whose bar lies outside
``[start - purge, end + embargo]``: the purge drops the bars just before the test block,
whose labels reach into it (a label of bar t reads up to bar t + 1 + h, so purge >= h + 1),
and the embargo the bars just after it, whose signals are built from bars of the test
block. Inside each fold the orthogonalization and the ridge are fitted on the training rows
only, and applied to the test rows. The lambda with the best mean score over the folds
wins (scores within ``TIE_TOL`` of the best tie, and the larger lambda wins a tie), and the
model is refitted on all rows with it.

Walk-forward (:func:`walk_forward_scores`)
------------------------------------------
At refit bars ``r = first_train_bars, first_train_bars + refit_every, ...`` the model is fit
on the bars ``t < r - purge`` and scores the bars ``r .. r + refit_every - 1``: the scores of
those bars depend only on X at those bars and on X, y at bars before ``r - purge``.

Information coefficient (:func:`information_coefficient`)
---------------------------------------------------------
The IC of a bar is the Spearman rank correlation (average ranks for ties) between the scores
and the labels over the symbols where both are finite; bars with fewer than 3 such cells, or
with constant scores or labels, have no IC and are skipped. The 95% interval of the mean IC
is a percentile moving-block bootstrap over the bars that have an IC, in time order (blocks
of ``block_bars`` bars, ``BOOTSTRAP_DRAWS`` resamples, a fixed seed), so that the ICs of
bars whose labels overlap (block_bars >= horizon) stay together.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy  # its submodules load on first use: not when the code location is imported

METHODS = ("residual", "lowdin", "pca")
SCALES = ("kept", "unit")
SCORES = ("ic", "mse")
TIE_TOL = 1e-12  # mean CV scores within this of the best are ties (the larger lambda wins)
BOOTSTRAP_DRAWS = 2000
MIN_IC_CELLS = 3  # a bar needs this many symbols with a finite score and label for an IC
_CONSTANT_TOL = 1e-12  # sd below this fraction of a column's largest |value|: constant
_COLLINEAR_TOL = 1e-6  # sqrt(1 - R^2) of a column on the earlier ones below this: collinear
_DECIMALS = 12  # hashes see the numbers rounded to this many decimals


def _digest(*parts: object) -> str:
    """sha256 over strings and arrays; arrays rounded to ``_DECIMALS`` with -0.0 and the NaN
    bit patterns normalized, so equal results hash equal."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str | tuple | type(None)):
            h.update(repr(part).encode())
        else:
            arr = np.round(np.asarray(part, dtype=np.float64), _DECIMALS) + 0.0
            arr = np.where(np.isnan(arr), np.nan, arr)
            h.update(repr(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _readonly(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Orthogonalization:
    """A fitted orthogonalization: ``Z = (X - mean) @ matrix``.

    Attributes
    ----------
    method : str
        "residual", "lowdin" or "pca".
    order : tuple[int, ...] or None
        The Gram-Schmidt order of the signals (column indices) for "residual"; None otherwise.
    mean : np.ndarray
        (K,) column means of the rows it was fitted on.
    matrix : np.ndarray
        (K, K); column j of Z is ``(X - mean) @ matrix[:, j]``.
    hash : str
        sha256 of the method, the order, and the matrix and mean rounded to 12 decimals.
    """

    method: str
    order: tuple[int, ...] | None
    mean: np.ndarray
    matrix: np.ndarray
    scale: str = "kept"
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        mean, matrix = _readonly(self.mean), _readonly(self.matrix)
        if mean.ndim != 1 or matrix.shape != (mean.size, mean.size):
            raise ValueError(f"Orthogonalization: mean {mean.shape} and matrix "
                             f"{matrix.shape} must be (K,) and (K, K)")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "hash", _digest(self.method, self.order, self.scale, matrix,
                                                 mean))

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The columns Z of new rows, with the stored mean and matrix (no re-fitting).

        Parameters
        ----------
        X : np.ndarray
            (..., K) signals, e.g. (N, K) rows or a (T, S, K) stack; NaN propagates.

        Returns
        -------
        np.ndarray
            Same shape as ``X``.
        """
        x = np.asarray(X, dtype=np.float64)
        if x.ndim < 1 or x.shape[-1] != self.mean.size:
            raise ValueError(f"Orthogonalization.apply: X has shape {x.shape}, expected "
                             f"{self.mean.size} signals in the last axis")
        return (x - self.mean) @ self.matrix


def orthogonalize(X2d: np.ndarray, method: str = "residual",
                  order: list[int] | tuple[int, ...] | None = None,
                  scale: str = "kept") -> Orthogonalization:
    """Fit an orthogonalization of pooled signal rows.

    Parameters
    ----------
    X2d : np.ndarray
        (N, K) finite signal rows, N > K.
    method : str
        "residual" (the default): Gram-Schmidt in ``order``, column k the standardized
        residual of signal ``order[k]`` on the earlier ones; "lowdin": ``Xs @ C^-1/2``
        with Xs the standardized signals and C their correlation matrix; "pca": principal
        components of C, largest first, each standardized, the sign making its largest
        loading positive.
    order : sequence of int, optional
        "residual" only: a permutation of ``0 .. K-1``; default ``0 .. K-1``.
    scale : str
        "kept" (the default): each column keeps the variance it carries out of the
        standardized signals -- the residual's share of its signal's variance
        ("residual"), the component's eigenvalue ("pca"); "unit": every column
        standardized. "lowdin" columns are unit-variance either way (the orthonormal set
        closest to the standardized signals).

    Returns
    -------
    Orthogonalization
        Its ``apply(X2d)`` is centered and uncorrelated (ddof 0) in the columns, of the
        variances ``scale`` says, and spans the same space as the centered ``X2d``.

    Raises
    ------
    ValueError
        If ``X2d`` is not 2-D and finite with N > K, the method is unknown, the order is
        not a permutation (or given for another method), or a column is constant or
        collinear with the others (the message names the column).
    """
    x = np.asarray(X2d, dtype=np.float64)
    if x.ndim != 2 or not x.shape[1] or x.shape[0] <= x.shape[1]:
        raise ValueError(f"orthogonalize: X2d must be (N, K) with N > K >= 1, got {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=0))
        raise ValueError(f"orthogonalize: columns {bad.tolist()} have non-finite values")
    if method not in METHODS:
        raise ValueError(f"orthogonalize: method {method!r} is not one of {METHODS}")
    if scale not in SCALES:
        raise ValueError(f"orthogonalize: scale {scale!r} is not one of {SCALES}")
    k = x.shape[1]
    if method != "residual" and order is not None:
        raise ValueError(f"orthogonalize: order applies to method 'residual', not {method!r}")
    seq = _check_order(order, k)
    mean = x.mean(axis=0)
    xc = x - mean
    sd = np.sqrt((xc * xc).mean(axis=0))
    constant = np.flatnonzero(sd <= _CONSTANT_TOL * np.abs(x).max(axis=0))
    if constant.size:
        raise ValueError(f"orthogonalize: column {int(constant[0])} is constant")
    xs = xc / sd
    r = _positive_r(xs[:, list(seq)] / np.sqrt(x.shape[0]), seq)
    if method == "residual":
        # unit columns: Z = Xs R^-1; kept: column j times R[j, j], the residual's sd
        keep = np.diag(r) if scale == "kept" else np.ones(k)
        matrix = np.empty((k, k))
        matrix[list(seq)] = scipy.linalg.solve_triangular(r, np.eye(k)) * keep / sd[list(seq), None]
        return Orthogonalization("residual", seq, mean, matrix, scale)
    corr = xs.T @ xs / x.shape[0]
    w, v = np.linalg.eigh((corr + corr.T) / 2)
    if method == "lowdin":
        return Orthogonalization("lowdin", None, mean, (v / np.sqrt(w)) @ v.T / sd[:, None],
                                 scale)
    v, w = v[:, ::-1], w[::-1]
    sign = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(k)])
    keep = np.sqrt(w) if scale == "kept" else np.ones(k)
    return Orthogonalization("pca", None, mean, v * sign * keep / np.sqrt(w) / sd[:, None],
                             scale)


def fitted_orthogonalization(x: np.ndarray, method: str, order, scale: str
                             ) -> Orthogonalization:
    """:func:`orthogonalize` of the columns that vary on these rows; a column constant on
    them (e.g. a funding carry that sits at 0 for weeks) carries nothing here: its Z column
    is 0 (its row and column of the matrix are 0), so its coefficient is 0 in this fit."""
    sd = x.std(axis=0)
    active = np.flatnonzero(sd > _CONSTANT_TOL * np.maximum(np.abs(x).max(axis=0), 1e-300))
    k = x.shape[1]
    if active.size == k:
        return orthogonalize(x, method, order, scale)
    if not active.size:
        raise ValueError("orthogonalize: every signal is constant on the rows")
    seq = _check_order(order, k)
    sub_order = [int(np.flatnonzero(active == i)[0]) for i in seq if i in set(active)]
    inner = orthogonalize(x[:, active], method,
                          sub_order if method == "residual" else None, scale)
    matrix = np.zeros((k, k))
    matrix[np.ix_(active, active)] = inner.matrix
    mean = x.mean(axis=0)
    return Orthogonalization(method, seq if method == "residual" else None, mean, matrix,
                             scale)


def _check_order(order, k: int) -> tuple[int, ...]:
    if order is None:
        return tuple(range(k))
    seq = tuple(int(i) for i in order)
    if sorted(seq) != list(range(k)):
        raise ValueError(f"orthogonalize: order {list(order)} is not a permutation of "
                         f"0..{k - 1}")
    return seq


def _positive_r(a: np.ndarray, seq: tuple[int, ...]) -> np.ndarray:
    """R of ``a = QR`` with a positive diagonal; ``a`` has unit-norm columns, so ``R[j, j]``
    is ``sqrt(1 - R^2)`` of column j on the columns before it."""
    r = np.linalg.qr(a, mode="r")
    diag = np.abs(np.diag(r))
    for j, d in enumerate(diag):
        if d < _COLLINEAR_TOL:
            raise ValueError(f"orthogonalize: column {seq[j]} is collinear with columns "
                             f"{list(seq[:j])} (its residual on them keeps {d:.1e} of its "
                             "standard deviation)")
    return r * np.sign(np.diag(r))[:, None]


def ridge(Z: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """Ridge regression in closed form, intercept unpenalized.

    ``coef = (Zc'Zc + lam * N * I)^-1 Zc'yc`` with ``Zc, yc`` centered on their means and
    ``intercept = ybar - zbar @ coef``: ``lam`` is a penalty per observation. ``lam = 0``
    is OLS with an intercept.

    Parameters
    ----------
    Z : np.ndarray
        (N, K) finite regressors.
    y : np.ndarray
        (N,) finite labels.
    lam : float
        Penalty per observation, >= 0.

    Returns
    -------
    tuple[float, np.ndarray]
        The intercept and the (K,) coefficients.

    Raises
    ------
    ValueError
        On shapes, non-finite values, a negative or non-finite ``lam``, or a singular
        ``Zc'Zc`` with ``lam = 0``.
    """
    if not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"ridge: lam must be finite and >= 0, got {lam}")
    intercepts, coefs = ridge_path(Z, y, np.array([float(lam)]))
    return float(intercepts[0]), coefs[0]


def ridge_path(Z: np.ndarray, y: np.ndarray, lambdas: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ridge` for every lambda of a grid, the moments computed once: (L,) intercepts
    and (L, K) coefficients."""
    z = np.asarray(Z, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    if z.ndim != 2 or v.shape != (z.shape[0],) or not z.shape[0]:
        raise ValueError(f"ridge: Z must be (N, K) and y (N,), got {z.shape} and {v.shape}")
    if not (np.isfinite(z).all() and np.isfinite(v).all()):
        raise ValueError("ridge: Z and y must be finite")
    zbar, ybar = z.mean(axis=0), v.mean()
    zc = z - zbar
    # a column that is exactly 0 (a signal constant on the rows) gets coefficient 0
    on = np.flatnonzero(np.any(zc != 0, axis=0))
    gram, moment = zc[:, on].T @ zc[:, on], zc[:, on].T @ (v - ybar)
    coefs = np.zeros((len(lambdas), z.shape[1]))
    for i, lam in enumerate(lambdas):
        try:
            coefs[i, on] = np.linalg.solve(gram + lam * z.shape[0] * np.eye(on.size), moment)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"ridge: Zc'Zc + lam*N*I is singular (lam={lam})") from exc
    return ybar - coefs @ zbar, coefs


def _check_int(who: str, name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{who}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{who}: {name} must be >= {minimum}, got {value}")
    return int(value)


def cv_blocks(times: np.ndarray, n_blocks: int = 6, purge: int = 0,
              embargo: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Purged and embargoed contiguous-block cross-validation folds over bars.

    Parameters
    ----------
    times : np.ndarray
        (N,) integer bar index of each pooled row; any order, repeats allowed.
    n_blocks : int
        Number of folds, >= 2: the sorted distinct bars are split into this many contiguous
        blocks of (nearly) equal numbers of bars.
    purge : int
        Bars before a test block dropped from its training rows, >= 0.
    embargo : int
        Bars after a test block dropped from its training rows, >= 0.

    Returns
    -------
    list[tuple[np.ndarray, np.ndarray]]
        ``(train_idx, test_idx)`` per block in time order, ascending int64 row indices: the
        test rows are those with a bar in the block ``[start, end]``, the training rows
        those with a bar outside ``[start - purge, end + embargo]``. The test rows of the
        folds partition the rows.

    Raises
    ------
    ValueError
        If there are fewer distinct bars than blocks, or a fold has no training rows.
    """
    t = np.asarray(times)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"cv_blocks: times must be a 1-D integer array, got {t.dtype} "
                        f"of shape {t.shape}")
    n_blocks = _check_int("cv_blocks", "n_blocks", n_blocks, 2)
    purge = _check_int("cv_blocks", "purge", purge, 0)
    embargo = _check_int("cv_blocks", "embargo", embargo, 0)
    bars = np.unique(t)
    if bars.size < n_blocks:
        raise ValueError(f"cv_blocks: {bars.size} distinct bars cannot make {n_blocks} blocks")
    folds = []
    for b, block in enumerate(np.array_split(bars, n_blocks)):
        start, end = int(block[0]), int(block[-1])
        test = np.flatnonzero((t >= start) & (t <= end))
        train = np.flatnonzero((t < start - purge) | (t > end + embargo))
        if not train.size:
            raise ValueError(f"cv_blocks: fold {b} (bars {start}..{end}) has no training "
                             f"rows with purge={purge} and embargo={embargo}")
        folds.append((train, test))
    return folds


def _bar_ic(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) Spearman correlation across the columns of each row of two (B, S) arrays, over
    the cells where both are finite; NaN with fewer than ``MIN_IC_CELLS`` such cells or a
    constant side."""
    valid = np.isfinite(scores) & np.isfinite(labels)
    n = valid.sum(axis=1)
    ranked = []
    for a in (scores, labels):
        r = scipy.stats.rankdata(np.where(valid, a, np.nan), axis=1, nan_policy="omit")
        r = np.where(valid, r, 0.0)
        ranked.append(np.where(valid, r - r.sum(axis=1, keepdims=True) / np.maximum(n, 1)[:, None],
                               0.0))
    rs, ry = ranked
    cov, vs, vy = (rs * ry).sum(axis=1), (rs * rs).sum(axis=1), (ry * ry).sum(axis=1)
    ok = (n >= MIN_IC_CELLS) & (vs > 0) & (vy > 0)
    out = np.full(n.shape, np.nan)
    out[ok] = cov[ok] / np.sqrt(vs[ok] * vy[ok])
    return out


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the finite values along ``axis``; NaN where there are none (no warning)."""
    finite = np.isfinite(a)
    count = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class _Rows(NamedTuple):
    t: np.ndarray  # (N,) bar
    s: np.ndarray  # (N,) symbol
    x: np.ndarray  # (N, K)
    y: np.ndarray  # (N,)
    n_symbols: int


def _check_panel(who: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(X, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or not x.shape[2]:
        raise ValueError(f"{who}: X must be (T, S, K) with K >= 1, got shape {x.shape}")
    if v.shape != x.shape[:2]:
        raise ValueError(f"{who}: y has shape {v.shape}, expected (T, S) = {x.shape[:2]}")
    return x, v


def _pooled(x: np.ndarray, v: np.ndarray) -> _Rows:
    t, s = np.nonzero(np.isfinite(x).all(axis=2) & np.isfinite(v))
    return _Rows(t, s, x[t, s], v[t, s], x.shape[1])


def _check_lambdas(lambdas) -> np.ndarray:
    grid = np.asarray(lambdas, dtype=np.float64)
    if grid.ndim != 1 or not grid.size:
        raise ValueError(f"fit: lambdas must be a non-empty 1-D grid, got shape {grid.shape}")
    if not (np.isfinite(grid).all() and (grid >= 0).all()):
        raise ValueError(f"fit: lambdas must be finite and >= 0, got {grid.tolist()}")
    if np.unique(grid).size != grid.size:
        raise ValueError(f"fit: lambdas has repeated values: {grid.tolist()}")
    return np.sort(grid)


def _score_fold(rows: _Rows, train: np.ndarray, test: np.ndarray, grid: np.ndarray,
                method: str, order, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """(L,) mean test IC and (L,) test MSE of each lambda, everything fitted on ``train``."""
    orth = fitted_orthogonalization(rows.x[train], method, order, scale)
    z_train, z_test = orth.apply(rows.x[train]), orth.apply(rows.x[test])
    bars, at = np.unique(rows.t[test], return_inverse=True)
    labels = np.full((bars.size, rows.n_symbols), np.nan)
    labels[at, rows.s[test]] = rows.y[test]
    ic, mse = np.empty(grid.size), np.empty(grid.size)
    intercepts, coefs = ridge_path(z_train, rows.y[train], grid)
    for i, (intercept, coef) in enumerate(zip(intercepts, coefs, strict=True)):
        pred = intercept + z_test @ coef
        dense = np.full(labels.shape, np.nan)
        dense[at, rows.s[test]] = pred
        ic[i] = _nanmean(_bar_ic(dense, labels), axis=0)
        mse[i] = np.mean((pred - rows.y[test]) ** 2)
    return ic, mse


def _choose(grid: np.ndarray, cv: np.ndarray, higher_is_better: bool) -> int:
    """Index of the lambda with the best mean score over folds; ties: the larger lambda."""
    mean = _nanmean(cv if higher_is_better else -cv, axis=1)
    if not np.isfinite(mean).any():
        raise ValueError("fit: no lambda has a cross-validation score (no test bar had "
                         f"{MIN_IC_CELLS} symbols with a prediction and a label)")
    tied = np.flatnonzero(mean >= np.nanmax(mean) - TIE_TOL)
    return int(tied[np.argmax(grid[tied])])


@dataclass(frozen=True, eq=False)
class ModelFit:
    """A combined model, fitted by :func:`fit`.

    Attributes
    ----------
    orthogonalization : Orthogonalization
        Fitted on all rows (the final model).
    lambdas : np.ndarray
        (L,) the lambda grid, ascending.
    lam : float
        The chosen lambda.
    path : np.ndarray
        (L, K) ridge coefficients of each lambda on all rows.
    path_intercept : np.ndarray
        (L,) their intercepts.
    cv_ic : np.ndarray
        (L, n_blocks) mean test-bar IC of each lambda and fold (NaN: no scorable bar).
    cv_mse : np.ndarray
        (L, n_blocks) test mean squared error of each lambda and fold.
    intercept : float
        Intercept at the chosen lambda.
    coef : np.ndarray
        (K,) coefficients on the orthogonalized columns at the chosen lambda.
    score : str
        The CV criterion, "ic" (higher is better) or "mse" (lower is better).
    n_rows : int
        Pooled rows of the final fit.
    purge, embargo : int
        The CV purge and embargo in bars.
    hash : str
        sha256 over all of the above (numbers rounded to 12 decimals).
    """

    orthogonalization: Orthogonalization
    lambdas: np.ndarray
    lam: float
    path: np.ndarray
    path_intercept: np.ndarray
    cv_ic: np.ndarray
    cv_mse: np.ndarray
    intercept: float
    coef: np.ndarray
    score: str
    n_rows: int
    purge: int
    embargo: int
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        arrays = ("lambdas", "path", "path_intercept", "cv_ic", "cv_mse", "coef")
        for name in arrays:
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        numbers = [getattr(self, name) for name in arrays]
        object.__setattr__(self, "hash", _digest(
            self.orthogonalization.hash, self.score,
            (self.n_rows, self.purge, self.embargo), self.lam, self.intercept, *numbers))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(T, S) scores of a (T, S, K) stack; NaN where any signal is not finite."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 3 or x.shape[2] != self.coef.size:
            raise ValueError(f"ModelFit.predict: X has shape {x.shape}, expected "
                             f"(T, S, {self.coef.size})")
        known = np.isfinite(x).all(axis=2)
        out = np.full(x.shape[:2], np.nan)
        out[known] = self.intercept + self.orthogonalization.apply(x[known]) @ self.coef
        return out


def fit(X: np.ndarray, y: np.ndarray, lambdas, *, n_blocks: int = 6, purge: int,
        embargo: int, method: str = "residual", order: list[int] | None = None,
        scale: str = "kept", score: str = "ic") -> ModelFit:
    """Fit the combined model: orthogonalize, ridge, lambda by purged block CV, refit.

    Parameters
    ----------
    X : np.ndarray
        (T, S, K) signals, NaN where unknown.
    y : np.ndarray
        (T, S) labels, NaN where unknown.
    lambdas : array_like
        Lambda grid (per observation, see :func:`ridge`): finite, >= 0, distinct; stored
        ascending.
    n_blocks, purge, embargo : int
        The folds of :func:`cv_blocks` over the bars of the pooled rows.
    method, order, scale : str, sequence of int, str
        The orthogonalization (:func:`orthogonalize`), fitted on each fold's training rows
        and finally on all rows.
    score : str
        "ic": the mean over test bars of the cross-sectional Spearman IC (higher is
        better); "mse": the test mean squared error (lower is better).

    Returns
    -------
    ModelFit

    Raises
    ------
    ValueError
        On shapes, the grid, the score name, or a fold that cannot be fitted (the message
        names the fold).
    """
    x, v = _check_panel("fit", X, y)
    grid = _check_lambdas(lambdas)
    if score not in SCORES:
        raise ValueError(f"fit: score {score!r} is not one of {SCORES}")
    rows = _pooled(x, v)
    if not rows.y.size:
        raise ValueError("fit: no cell has all signals and the label finite")
    folds = cv_blocks(rows.t, n_blocks, purge, embargo)
    cv_ic = np.full((grid.size, n_blocks), np.nan)
    cv_mse = np.full((grid.size, n_blocks), np.nan)
    for b, (train, test) in enumerate(folds):
        try:
            cv_ic[:, b], cv_mse[:, b] = _score_fold(rows, train, test, grid, method, order,
                                                    scale)
        except ValueError as exc:
            raise ValueError(f"fit: fold {b} (bars {rows.t[test[0]]}..{rows.t[test[-1]]}): "
                             f"{exc}") from exc
    chosen = _choose(grid, cv_ic if score == "ic" else cv_mse, higher_is_better=score == "ic")
    orth = fitted_orthogonalization(rows.x, method, order, scale)
    z = orth.apply(rows.x)
    intercepts, coefs = ridge_path(z, rows.y, grid)
    return ModelFit(orth, grid, float(grid[chosen]), coefs, intercepts, cv_ic, cv_mse,
                    float(intercepts[chosen]), coefs[chosen], score, int(rows.y.size),
                    purge, embargo)


def walk_forward_scores(X: np.ndarray, y: np.ndarray, lambdas, *, first_train_bars: int,
                        refit_every: int, purge: int, embargo: int, n_blocks: int = 6,
                        **fit_kw) -> np.ndarray:
    """Out-of-sample scores from a model refitted every ``refit_every`` bars.

    At each refit bar ``r = first_train_bars + i * refit_every`` (``r < T``) the model is
    :func:`fit` on bars ``0 .. r - purge - 1`` and scores bars ``r .. r + refit_every - 1``.
    A label of bar t reads bars up to t + 1 + h, so pass ``purge >= h + 1``; ``purge`` is
    also the purge of the CV inside each fit.

    Parameters
    ----------
    X, y : np.ndarray
        (T, S, K) signals and (T, S) labels.
    lambdas : array_like
        The lambda grid of every fit.
    first_train_bars : int
        The first refit bar, > ``purge``.
    refit_every : int
        Bars between refits, >= 1.
    purge, embargo, n_blocks : int
        As in :func:`fit`.
    **fit_kw
        ``method``, ``order``, ``score`` of :func:`fit`.

    Returns
    -------
    np.ndarray
        (T, S) scores, NaN before ``first_train_bars`` and where a signal is NaN.

    Raises
    ------
    ValueError
        On the arguments, or a refit that fails (the message names the refit bar).
    """
    return walk_forward(X, y, lambdas, first_train_bars=first_train_bars,
                        refit_every=refit_every, purge=purge, embargo=embargo,
                        n_blocks=n_blocks, **fit_kw)[0]


def walk_forward(X: np.ndarray, y: np.ndarray, lambdas, *, first_train_bars: int,
                 refit_every: int, purge: int, embargo: int, n_blocks: int = 6, **fit_kw
                 ) -> tuple[np.ndarray, list[tuple[int, ModelFit]]]:
    """:func:`walk_forward_scores` and each refit: (scores, [(refit bar, its ModelFit)])."""
    x, v = _check_panel("walk_forward_scores", X, y)
    purge = _check_int("walk_forward_scores", "purge", purge, 0)
    first = _check_int("walk_forward_scores", "first_train_bars", first_train_bars, purge + 1)
    step = _check_int("walk_forward_scores", "refit_every", refit_every, 1)
    out = np.full(v.shape, np.nan)
    fits = []
    for r in range(first, x.shape[0], step):
        end = r - purge
        try:
            model = fit(x[:end], v[:end], lambdas, n_blocks=n_blocks, purge=purge,
                        embargo=embargo, **fit_kw)
        except ValueError as exc:
            raise ValueError(f"walk_forward_scores: refit at bar {r} (training bars "
                             f"0..{end - 1}): {exc}") from exc
        out[r:r + step] = model.predict(x[r:r + step])
        fits.append((r, model))
    return out, fits


def _block_bootstrap_means(a: np.ndarray, block: int, draws: int, seed: int) -> np.ndarray:
    """(draws,) means of moving-block bootstrap resamples of ``a``: ``ceil(n / block)``
    blocks with uniform starts, concatenated and cut to n."""
    n = a.size
    n_blocks = -(-n // block)
    last = n - (n_blocks - 1) * block  # length of the final, cut block
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(draws, n_blocks))
    cs = np.concatenate(([0.0], np.cumsum(a)))
    full = (cs[starts[:, :-1] + block] - cs[starts[:, :-1]]).sum(axis=1)
    return (full + cs[starts[:, -1] + last] - cs[starts[:, -1]]) / n


def information_coefficient(scores: np.ndarray, y: np.ndarray, *, block_bars: int,
                            seed: int = 0) -> dict:
    """Mean cross-sectional Spearman IC with a moving-block bootstrap 95% interval.

    Parameters
    ----------
    scores, y : np.ndarray
        (T, S) scores and labels, NaN where unknown.
    block_bars : int
        Bootstrap block length in bars, >= 1; at least the label horizon.
    seed : int
        Seed of the bootstrap resampling.

    Returns
    -------
    dict
        ``ic`` the mean IC over the bars that have one, ``lo`` and ``hi`` the 2.5% and
        97.5% percentiles of ``BOOTSTRAP_DRAWS`` block-bootstrap means, ``t`` the mean IC
        over the bootstrap standard deviation, ``bars`` the number of bars with an IC, and
        ``series`` the (T,) IC of every bar (NaN where skipped). ``lo``, ``hi`` and ``t``
        are NaN with fewer than ``2 * block_bars`` bars, ``ic`` with none.
    """
    s = np.asarray(scores, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    if s.ndim != 2 or s.shape != v.shape:
        raise ValueError(f"information_coefficient: scores {s.shape} and y {v.shape} must "
                         "be the same (T, S)")
    block = _check_int("information_coefficient", "block_bars", block_bars, 1)
    series = _bar_ic(s, v)
    ic = series[np.isfinite(series)]
    out = {"ic": float(ic.mean()) if ic.size else np.nan, "lo": np.nan, "hi": np.nan,
           "bars": int(ic.size), "t": np.nan, "series": series}
    if ic.size < 2 * block:
        return out
    means = _block_bootstrap_means(ic, block, BOOTSTRAP_DRAWS, seed)
    lo, hi = np.quantile(means, [0.025, 0.975])
    sd = float(means.std(ddof=1))
    out.update(lo=float(lo), hi=float(hi), t=out["ic"] / sd if sd > 0 else np.nan)
    return out
