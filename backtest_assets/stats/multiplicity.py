"""False discovery rate control within a family of hypotheses (pure numpy; no Dagster).

Array contract
--------------
p : (m,) float64 in [0, 1]
    The p-values of one family (DESIGN.md, Multiplicity: a family is ``(event_type,
    rule_template, horizon)``). NaN is refused with a ValueError naming its position: an
    untestable hypothesis must be given a p-value (or left out) by the caller, not dropped
    silently here, because m -- the number of hypotheses tested -- sets every threshold.
    An empty family gives an empty result.
q : (m,) float64 in [0, 1], in the order of ``p``
    Adjusted p-values: hypothesis i is a discovery at FDR level alpha iff ``q[i] <= alpha``,
    exactly the set the step-up procedure rejects at alpha.

Benjamini-Hochberg controls the FDR for independent or positively dependent (PRDS) p-values;
Benjamini-Yekutieli, at the price of a factor ``c(m) = sum_{i=1..m} 1/i``, for any
dependence. Results equal ``scipy.stats.false_discovery_control`` (method "bh" / "by").
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values.

    ``q_(i) = min(1, min_{k >= i} m * p_(k) / k)`` over the p-values sorted ascending, so
    q is monotone in p and equal p-values get equal q-values.

    Parameters
    ----------
    p : np.ndarray
        (m,) p-values in [0, 1], no NaN.

    Returns
    -------
    np.ndarray
        (m,) float64 q-values in the order of ``p``.

    Raises
    ------
    ValueError
        If ``p`` is not 1-D, holds a NaN, or a value outside [0, 1].
    """
    return _step_up(_checked(p), by=False)


def by_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini-Yekutieli adjusted p-values: BH times ``c(m) = sum_{i=1..m} 1/i``, capped at 1.

    Parameters
    ----------
    p : np.ndarray
        (m,) p-values in [0, 1], no NaN.

    Returns
    -------
    np.ndarray
        (m,) float64 q-values in the order of ``p``.

    Raises
    ------
    ValueError
        If ``p`` is not 1-D, holds a NaN, or a value outside [0, 1].
    """
    return _step_up(_checked(p), by=True)


def qvalues(p: np.ndarray, method: Literal["bh", "by"]) -> np.ndarray:
    """q-values by ``method`` (``FamiliesSpec.fdr_method``): "bh" or "by".

    Parameters
    ----------
    p : np.ndarray
        (m,) p-values in [0, 1], no NaN.
    method : {"bh", "by"}
        Benjamini-Hochberg or Benjamini-Yekutieli.

    Returns
    -------
    np.ndarray
        (m,) float64 q-values in the order of ``p``.

    Raises
    ------
    ValueError
        For an unknown method, or a ``p`` the chosen method refuses.
    """
    if method == "bh":
        return bh_qvalues(p)
    if method == "by":
        return by_qvalues(p)
    raise ValueError(f"unknown FDR method {method!r}: use 'bh' or 'by'")


def discoveries(q: np.ndarray, alpha: float) -> np.ndarray:
    """The discoveries at FDR level ``alpha``: ``q <= alpha``.

    Parameters
    ----------
    q : np.ndarray
        (m,) q-values, no NaN.
    alpha : float
        FDR level in (0, 1), e.g. ``FamiliesSpec.fdr_q``.

    Returns
    -------
    np.ndarray
        (m,) bool.

    Raises
    ------
    ValueError
        If ``alpha`` is outside (0, 1), or ``q`` is not 1-D, holds a NaN or a value
        outside [0, 1].
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha} is out of range (0, 1)")
    return _checked(q, "q-value") <= alpha


def _checked(p: np.ndarray, what: str = "p-value") -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what}s must be 1-D, got shape {arr.shape}")
    nan = np.flatnonzero(np.isnan(arr))
    if nan.size:
        raise ValueError(f"{what} at position {nan[0]} is NaN ({nan.size} NaN in all)")
    out = np.flatnonzero((arr < 0) | (arr > 1))
    if out.size:
        raise ValueError(f"{what} at position {out[0]} is {arr[out[0]]}, outside [0, 1]")
    return arr


def _step_up(p: np.ndarray, *, by: bool) -> np.ndarray:
    m = p.size
    if m == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    rank = np.arange(1, m + 1, dtype=np.float64)
    # Same arithmetic as scipy (p * (m / i), then * c(m)) so the two agree to the last bit.
    scaled = p[order] * (m / rank)
    if by:
        scaled *= (1.0 / rank).sum()
    # Step-up: hypothesis (i) is rejected whenever any (k) >= (i) is, hence the minimum
    # from the end.
    scaled = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m, dtype=np.float64)
    q[order] = np.minimum(scaled, 1.0)
    return q
