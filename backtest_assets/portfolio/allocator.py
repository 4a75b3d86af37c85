"""The multi-edge allocator: from edges' in-sample return streams to capital weights.

No Dagster here. An *edge* is a strategy run on capital of its own; its weight ``w_i >= 0`` is
the fraction of the book's capital it trades with (its positions scale with it). Inputs, per
rebalance:

- ``returns``: T x n per-period returns of each edge on its own capital (in-sample only; the
  caller never passes later periods), T >= 2;
- ``exposure``: n x m, the largest absolute position of edge i in symbol j over the in-sample
  window, as a fraction of the edge's capital (``|pos|`` / equity); ``net_exposure``: n,
  the largest absolute net position of the edge (sum over symbols, signed) and
  ``gross_exposure``: n, its largest gross. Used by the exposure caps, which are therefore
  *worst-case* bounds: by the triangle inequality the book's gross on any bar is at most
  ``sum_i w_i gross_i`` (and likewise per symbol and net), so a book within these caps in-sample
  is within them on every in-sample bar, whatever the edges' timing.

Modes (:func:`allocate`):

- ``inverse_vol``: ``w_i ∝ 1/σ_i`` (the equal-risk weights of uncorrelated edges);
- ``equal_risk``: true equal risk contribution from the covariance (``w_i (Σw)_i`` equal for
  all i), by cyclical coordinate descent on Spinu's convex program
  ``min ½ yᵀΣy − Σ b_i ln y_i`` (``w = y / Σy``);
- ``score_weighted``: ``w ∝ max(score, 0)``, shrunk towards equal weights by ``shrink`` and
  capped;
- ``cluster``: hierarchical clusters of correlated edges (average linkage on the distance
  ``sqrt((1 − ρ)/2)``, cut at ``cluster_corr``), each cluster an equal share of risk
  (clusters weighted by inverse volatility of their own inverse-volatility portfolio);
- ``constrained_optimizer``: a linear program (HiGHS): maximize ``μᵀw − risk_aversion ·
  CVaR_α(w) + tilt·w`` subject to every cap below, CVaR as Rockafellar–Uryasev's LP
  (``ζ + Σ u_t / ((1 − α) T)``, ``u_t >= −r_tᵀw − ζ``, ``u_t >= 0``) and the max-drawdown proxy
  as the in-sample drawdown of the additive cumulative return (``peak_t >= c_t``, ``peak_t >=
  peak_{t−1}``, ``peak_t − c_t <= max_drawdown``, Chekhlov–Uryasev–Zabarankin's
  formulation with α → 1).

Caps (:class:`Limits`): the weights' sum (``budget``, exactly or at most), per-edge cap,
gross, net and per-symbol exposure, CVaR, max drawdown, turnover ``Σ|w − w_prev|``. The
heuristic modes meet the per-edge cap by water-filling (a capped edge's excess goes to the
others in proportion), the exposure caps by scaling the whole book down (cash is left
over) and the turnover budget by moving only part of the way from the current weights
(every cap holds between two allocations that meet it); CVaR and drawdown are the
optimizer's alone, and a heuristic mode given them refuses (``ValueError``). A limit that
cannot be met is reported naming it (:class:`Infeasible`), never relaxed: the optimizer's
infeasibility is diagnosed by an elastic copy of the program with one slack per limit,
minimized, and every limit whose slack is positive is named with the amount it is short.

Covariance: Ledoit–Wolf (2004) shrinkage of the sample covariance towards a scaled identity
(``μ I``, ``μ`` the mean variance), with their optimal intensity (:func:`shrunk_cov`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy  # its submodules load on first use: not when the code location is imported

MODES = ("inverse_vol", "equal_risk", "score_weighted", "cluster", "constrained_optimizer")
_TOL = 1e-9


class Infeasible(ValueError):
    """Limits no weights can meet; ``binding`` names each limit and how far it is short."""

    def __init__(self, binding: Mapping[str, float], detail: str = "") -> None:
        self.binding = dict(binding)
        named = ", ".join(f"{k} (short by {v:.4g})" for k, v in self.binding.items())
        super().__init__(f"infeasible limits: {named}" + (f"; {detail}" if detail else ""))


@dataclass(frozen=True)
class Limits:
    """What every allocation must meet (None: no such limit)."""

    budget: float = 1.0  # the weights' sum
    fully_invested: bool = True  # sum == budget (else <= budget)
    edge_max: float | None = None  # each weight <= edge_max
    gross_max: float | None = None  # Σ w_i gross_i <= gross_max
    net_max: float | None = None  # Σ w_i |net|_i <= net_max
    symbol_max: float | None = None  # Σ_i w_i exposure_ij <= symbol_max for every symbol j
    cvar_max: float | None = None  # CVaR_alpha of the per-period loss <= cvar_max
    cvar_alpha: float = 0.95
    max_drawdown: float | None = None  # in-sample additive drawdown <= max_drawdown
    turnover_max: float | None = None  # Σ |w - w_prev| <= turnover_max

    def __post_init__(self) -> None:
        for name in ("budget", "edge_max", "gross_max", "net_max", "symbol_max", "cvar_max",
                     "max_drawdown", "turnover_max"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: {v} is not a finite number >= 0")
        if not 0 < self.cvar_alpha < 1:
            raise ValueError(f"cvar_alpha: {self.cvar_alpha} is not in (0, 1)")


@dataclass(frozen=True)
class Edges:
    """The in-sample facts of n edges over m symbols (module docstring)."""

    names: tuple[str, ...]
    returns: np.ndarray  # T x n
    exposure: np.ndarray  # n x m, max |position| per symbol / edge capital
    gross: np.ndarray  # n
    net: np.ndarray  # n, max |net position|
    symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.names)
        r = np.asarray(self.returns, dtype=float)
        if r.ndim != 2 or r.shape[1] != n or r.shape[0] < 2:
            raise ValueError(f"returns: shape {r.shape}, expected (T >= 2, {n})")
        if not np.isfinite(r).all():
            raise ValueError("returns: not finite")
        ex = np.asarray(self.exposure, dtype=float).reshape(n, -1)
        if len(self.symbols) not in (0, ex.shape[1]):
            raise ValueError(f"exposure: {ex.shape[1]} symbols, {len(self.symbols)} named")
        for name, v in (("exposure", ex), ("gross", self.gross), ("net", self.net)):
            if np.any(~np.isfinite(np.asarray(v, float))) or np.any(np.asarray(v) < 0):
                raise ValueError(f"{name}: must be finite and >= 0")
        object.__setattr__(self, "returns", r)
        object.__setattr__(self, "exposure", ex)
        object.__setattr__(self, "gross", np.asarray(self.gross, float).reshape(n))
        object.__setattr__(self, "net", np.asarray(self.net, float).reshape(n))

    @property
    def n(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class Allocation:
    weights: np.ndarray
    mode: str
    risk_contributions: np.ndarray  # w_i (Σw)_i / wᵀΣw (sums to 1; zeros for a zero book)
    binding: tuple[str, ...] = ()  # limits at their bound
    detail: dict = field(default_factory=dict)


# ---- covariance ---------------------------------------------------------------------------

def shrunk_cov(returns: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit–Wolf (2004) covariance shrunk towards ``μ I``; (matrix, intensity in [0, 1])."""
    x = np.asarray(returns, float)
    t, n = x.shape
    x = x - x.mean(axis=0)
    sample = x.T @ x / t
    mu = np.trace(sample) / n
    target = mu * np.eye(n)
    d2 = np.sum((sample - target) ** 2)
    if d2 <= 0:
        return sample, 0.0
    b2 = sum(np.sum((np.outer(row, row) - sample) ** 2) for row in x) / t ** 2
    intensity = float(min(max(b2 / d2, 0.0), 1.0))
    return intensity * target + (1 - intensity) * sample, intensity


def risk_contributions(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    var = float(w @ cov @ w)
    return np.zeros_like(w) if var <= 0 else w * (cov @ w) / var


# ---- heuristic modes ----------------------------------------------------------------------

def _water_fill(raw: np.ndarray, total: float, cap: float | None) -> np.ndarray:
    """``raw`` scaled to sum ``total``, no entry above ``cap``: a capped entry's excess goes to
    the uncapped in proportion to ``raw`` (raises Infeasible when n * cap < total)."""
    raw = np.clip(np.asarray(raw, float), 0, None)
    n = raw.size
    if raw.sum() <= 0:
        raw = np.ones(n)
    if cap is None:
        return total * raw / raw.sum()
    if cap * n < total - _TOL:
        raise Infeasible({"edge_max": total - cap * n},
                         f"{n} edges capped at {cap} cannot hold a budget of {total}")
    w = np.zeros(n)
    free = np.ones(n, bool)
    left = total
    while True:
        share = left * raw * free / raw[free].sum() if raw[free].sum() > 0 else \
            left * free / free.sum()
        over = free & (share > cap + _TOL)
        if not over.any():
            w[free] = share[free]
            return w
        w[over] = cap
        free &= ~over
        left = total - w[~free].sum()
        if not free.any():
            return w


def _scale_to_exposure(w: np.ndarray, edges: Edges, limits: Limits) -> tuple[np.ndarray, list]:
    """Scale the whole book down until every exposure cap holds (proportions kept)."""
    over = {}  # limit -> (book exposure, cap)
    for name, cap, use in (("gross_max", limits.gross_max, edges.gross),
                           ("net_max", limits.net_max, edges.net)):
        if cap is not None and w @ use > cap:
            over[name] = (float(w @ use), cap)
    if limits.symbol_max is not None:
        per = w @ edges.exposure
        if per.max(initial=0.0) > limits.symbol_max:
            over["symbol_max"] = (float(per.max()), limits.symbol_max)
    if not over:
        return w, []
    ratio = min(cap / used for used, cap in over.values())
    if limits.fully_invested:
        raise Infeasible({k: used - cap for k, (used, cap) in over.items()},
                         f"the exposure caps need {1 - ratio:.1%} of the book in cash, and "
                         "the budget is fully invested")
    return w * ratio, sorted(over)


def _heuristic(raw: np.ndarray, edges: Edges, limits: Limits, mode: str, cov: np.ndarray,
               detail: dict, prev: np.ndarray | None = None) -> Allocation:
    if limits.cvar_max is not None or limits.max_drawdown is not None:
        raise ValueError(f"{mode}: cvar_max and max_drawdown are limits of the "
                         "constrained_optimizer mode only (no heuristic can hold them)")
    total = limits.budget
    if not limits.fully_invested and limits.edge_max is not None:
        total = min(total, limits.edge_max * raw.size)  # the rest stays in cash
    w = _water_fill(raw, total, limits.edge_max)
    binding = ["edge_max"] if limits.edge_max is not None and \
        np.any(np.isclose(w, limits.edge_max)) else []
    w, scaled = _scale_to_exposure(w, edges, limits)
    if limits.turnover_max is not None and prev is not None:
        move = np.abs(w - prev).sum()
        if move > limits.turnover_max + _TOL:
            w = _part_way(prev, w, limits.turnover_max / move, edges, limits)
            scaled = [*scaled, "turnover_max"]
    return Allocation(w, mode, risk_contributions(w, cov), tuple(binding + scaled), detail)


def _part_way(prev: np.ndarray, w: np.ndarray, step: float, edges: Edges, limits: Limits
              ) -> np.ndarray:
    """``prev + step (w - prev)``: the turnover budget's share of the way to ``w``. Every cap
    is linear, so a point between two allocations that meet it meets it too; current
    weights that break a cap need a step at least long enough to get back within it, and
    when the budget does not allow that the limits are refused, naming turnover_max and
    the cap."""
    d = w - prev
    rows = [(np.ones_like(w), limits.budget, "budget")]
    if limits.edge_max is not None:
        rows += [(np.eye(len(w))[i], limits.edge_max, "edge_max") for i in range(len(w))]
    for cap, a in ((limits.gross_max, edges.gross), (limits.net_max, edges.net)):
        if cap is not None:
            rows.append((a, cap, "gross_max" if a is edges.gross else "net_max"))
    if limits.symbol_max is not None:
        rows += [(edges.exposure[:, j], limits.symbol_max, "symbol_max")
                 for j in range(edges.exposure.shape[1])]
    need, broken = 0.0, {}
    for a, b, name in rows:
        over, slope = float(a @ prev - b), float(a @ d)
        if over > _TOL:  # a cap the current weights break: only moving reduces it
            least = over / -slope if slope < 0 else math.inf
            if least > need:
                need, broken = least, {name: over}
    if limits.fully_invested and abs(prev.sum() - limits.budget) > _TOL:
        need, broken = 1.0, {"budget": abs(prev.sum() - limits.budget)}
    if need > step + _TOL:
        shortfall = (min(need, 1.0) - step) * float(np.abs(d).sum())
        raise Infeasible({"turnover_max": shortfall, **broken},
                         "the current weights break a cap the turnover budget cannot "
                         "bring them back within")
    return prev + step * d


def inverse_vol(cov: np.ndarray) -> np.ndarray:
    vol = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return (1 / vol) / (1 / vol).sum()


def equal_risk_contribution(cov: np.ndarray, budgets: np.ndarray | None = None, *,
                            tol: float = 1e-12, max_iter: int = 10_000) -> np.ndarray:
    """Weights whose risk contributions ``w_i (Σw)_i`` are proportional to ``budgets``
    (default equal), by cyclical coordinate descent on Spinu's convex program."""
    n = cov.shape[0]
    b = np.full(n, 1 / n) if budgets is None else np.asarray(budgets, float) / np.sum(budgets)
    y = 1 / np.sqrt(np.diag(cov))
    for _ in range(max_iter):
        prev = y.copy()
        for i in range(n):
            c = cov[i] @ y - cov[i, i] * y[i]
            y[i] = (-c + math.sqrt(c * c + 4 * cov[i, i] * b[i])) / (2 * cov[i, i])
        if np.max(np.abs(y - prev)) <= tol * np.max(np.abs(y)):
            break
    return y / y.sum()


def clusters(returns: np.ndarray, corr_threshold: float) -> np.ndarray:
    """Cluster label of each edge: average linkage on ``sqrt((1 - ρ)/2)``, cut where the
    average correlation within falls below ``corr_threshold``."""
    n = returns.shape[1]
    if n == 1:
        return np.zeros(1, int)
    sd = returns.std(axis=0)
    corr = np.corrcoef(returns, rowvar=False) if np.all(sd > 0) else np.eye(n)
    dist = np.sqrt(np.clip((1 - corr) / 2, 0, None))
    np.fill_diagonal(dist, 0)
    hierarchy = scipy.cluster.hierarchy
    tree = hierarchy.linkage(scipy.spatial.distance.squareform(dist, checks=False),
                             method="average")
    return hierarchy.fcluster(tree, t=math.sqrt((1 - corr_threshold) / 2),
                              criterion="distance") - 1


def cluster_weights(cov: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Inverse volatility within each cluster; clusters by the inverse volatility of their
    own portfolio (each cluster one equal share of risk when clusters are uncorrelated)."""
    w = np.zeros(cov.shape[0])
    inner, vols = {}, {}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        sub = inverse_vol(cov[np.ix_(idx, idx)])
        inner[c] = (idx, sub)
        vols[c] = math.sqrt(max(sub @ cov[np.ix_(idx, idx)] @ sub, 1e-300))
    total = sum(1 / v for v in vols.values())
    for c, (idx, sub) in inner.items():
        w[idx] = sub * (1 / vols[c]) / total
    return w


# ---- the optimizer ------------------------------------------------------------------------

@dataclass
class _Program:
    """A linear program ``min cᵀx`` (weights first in ``x``), its rows in blocks, each tagged
    with the limit it states (``*_def`` blocks define auxiliary variables)."""

    c: np.ndarray
    bounds: list
    blocks: list = field(default_factory=list)  # (sparse rows, rhs, tag, "ub" | "eq")
    index: dict = field(default_factory=dict)  # variable group -> first column

    @property
    def n_vars(self) -> int:
        return self.c.size

    def new_vars(self, name: str, count: int, bounds: tuple) -> int:
        first = self.c.size
        self.c = np.concatenate([self.c, np.zeros(count)])
        self.bounds += [bounds] * count
        self.index[name] = first
        return first

    def add(self, rows, rhs, tag: str, kind: str = "ub") -> None:
        self.blocks.append((scipy.sparse.csr_matrix(rows), np.atleast_1d(np.asarray(rhs, float)),
                            tag, kind))

    def matrices(self, slacks: Mapping[str, int] | None = None):
        """(A_ub, b_ub, A_eq, b_eq, tag of each ub row); with ``slacks`` (tag -> index), one
        extra column per tag lets that limit give (elastic program)."""
        extra = len(slacks) if slacks else 0
        out = []
        for kind in ("ub", "eq"):
            mats, rhs, tags = [], [], []
            for rows, b, tag, k in self.blocks:
                if k != kind:
                    continue
                rows = scipy.sparse.hstack([rows, scipy.sparse.csr_matrix(
                    (rows.shape[0], self.n_vars - rows.shape[1]))])
                if extra:
                    col = scipy.sparse.csr_matrix((rows.shape[0], extra))
                    if tag in slacks:
                        col = scipy.sparse.lil_matrix((rows.shape[0], extra))
                        col[:, slacks[tag]] = -1.0 if kind == "ub" else 1.0
                    rows = scipy.sparse.hstack([rows, col])
                mats.append(rows)
                rhs.append(b)
                tags += [tag] * rows.shape[0]
            out.append((scipy.sparse.vstack(mats).tocsr(), np.concatenate(rhs), tags) if mats
                       else (None, None, []))
        (a_ub, b_ub, ub_tags), (a_eq, b_eq, _) = out
        return a_ub, b_ub, a_eq, b_eq, ub_tags


def _weights_rows(coef, p: _Program, *extra: tuple[int, object]) -> scipy.sparse.csr_matrix:
    """Rows with ``coef`` (rows x n, dense or sparse) on the weights and each ``extra``
    (first column, rows x k block) further right."""
    pieces = [(0, scipy.sparse.coo_matrix(coef)),
              *((f, scipy.sparse.coo_matrix(b)) for f, b in extra)]
    return scipy.sparse.csr_matrix(
        (np.concatenate([m.data for _, m in pieces]),
         (np.concatenate([m.row for _, m in pieces]),
          np.concatenate([m.col + f for f, m in pieces]))),
        shape=(coef.shape[0], p.n_vars))


def _add_cvar(p: _Program, r: np.ndarray, limits: Limits, risk_aversion: float) -> None:
    t, _ = r.shape
    z0 = p.new_vars("zeta", 1, (None, None))
    u0 = p.new_vars("u", t, (0, None))
    scale = 1 / ((1 - limits.cvar_alpha) * t)
    # u_k >= -r_k.w - zeta  <=>  -r_k.w - zeta - u_k <= 0
    p.add(_weights_rows(-r, p, (z0, -np.ones((t, 1))), (u0, -scipy.sparse.eye(t))),
          np.zeros(t), "cvar_def")
    cvar_row = np.zeros((1, p.n_vars))
    cvar_row[0, z0], cvar_row[0, u0:u0 + t] = 1.0, scale
    if limits.cvar_max is not None:
        p.add(cvar_row, limits.cvar_max, "cvar_max")
    p.c = p.c + risk_aversion * cvar_row[0]


def _add_drawdown(p: _Program, r: np.ndarray, limit: float) -> None:
    t, _ = r.shape
    cum = np.cumsum(r, axis=0)
    q0 = p.new_vars("peak", t, (0, None))  # peak >= 0: the book starts at 0
    eye = scipy.sparse.eye(t, format="csr")
    p.add(_weights_rows(cum, p, (q0, -eye)), np.zeros(t), "drawdown_def")
    if t > 1:  # peak_k >= peak_{k-1}
        step = scipy.sparse.eye(t - 1, t, k=0) - scipy.sparse.eye(t - 1, t, k=1)
        p.add(_weights_rows(np.zeros((t - 1, r.shape[1])), p, (q0, step)),
              np.zeros(t - 1), "drawdown_def")
    p.add(_weights_rows(-cum, p, (q0, eye)), np.full(t, limit), "max_drawdown")


def _add_turnover(p: _Program, n: int, prev: np.ndarray | None, limit: float) -> None:
    w0 = np.zeros(n) if prev is None else np.asarray(prev, float)
    d0 = p.new_vars("d", n, (0, None))
    eye = np.eye(n)
    p.add(_weights_rows(eye, p, (d0, -eye)), w0, "turnover_def")  # d >= w - w0
    p.add(_weights_rows(-eye, p, (d0, -eye)), -w0, "turnover_def")  # d >= w0 - w
    row = np.zeros((1, p.n_vars))
    row[0, d0:d0 + n] = 1.0
    p.add(row, limit, "turnover_max")


def _optimizer_program(edges: Edges, limits: Limits, mu: np.ndarray, *, risk_aversion: float,
                       tilt: np.ndarray | None, prev: np.ndarray | None) -> _Program:
    n = edges.n
    p = _Program(c=-(mu + (tilt if tilt is not None else 0)),
                 bounds=[(0, limits.edge_max)] * n)
    if limits.cvar_max is not None or risk_aversion > 0:
        _add_cvar(p, edges.returns, limits, risk_aversion)
    if limits.max_drawdown is not None:
        _add_drawdown(p, edges.returns, limits.max_drawdown)
    if limits.turnover_max is not None:
        _add_turnover(p, n, prev, limits.turnover_max)
    p.add(np.ones((1, n)), limits.budget, "budget", "eq" if limits.fully_invested else "ub")
    for tag, cap, coef in (("gross_max", limits.gross_max, edges.gross[None, :]),
                           ("net_max", limits.net_max, edges.net[None, :]),
                           ("symbol_max", limits.symbol_max, edges.exposure.T)):
        if cap is not None:
            p.add(coef, np.full(coef.shape[0], cap), tag)
    return p


def _diagnose(p: _Program, limits: Limits, n: int) -> Infeasible:
    """An elastic copy: one slack per limit (the per-edge cap as rows), minimized."""
    bounds = list(p.bounds)
    if limits.edge_max is not None:
        p = _Program(c=p.c, bounds=[(0, None)] * n + bounds[n:], blocks=list(p.blocks),
                     index=p.index)
        p.add(np.eye(n), np.full(n, limits.edge_max), "edge_max")
    tags = sorted({b[2] for b in p.blocks if not b[2].endswith("_def")})
    slacks = {tag: k for k, tag in enumerate(tags)}
    a_ub, b_ub, a_eq, b_eq, _ = p.matrices(slacks)
    c = np.concatenate([np.zeros(p.n_vars), np.ones(len(tags))])
    res = scipy.optimize.linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                           bounds=list(p.bounds) + [(0, None)] * len(tags), method="highs")
    if res.status != 0:
        return Infeasible({}, f"the elastic program failed too: {res.message}")
    return Infeasible({tag: float(res.x[p.n_vars + k]) for tag, k in slacks.items()
                       if res.x[p.n_vars + k] > 1e-9})


def _optimize(edges: Edges, limits: Limits, mu: np.ndarray, cov: np.ndarray, *,
              risk_aversion: float, tilt: np.ndarray | None, prev: np.ndarray | None
              ) -> Allocation:
    p = _optimizer_program(edges, limits, mu, risk_aversion=risk_aversion, tilt=tilt,
                           prev=prev)
    a_ub, b_ub, a_eq, b_eq, ub_tags = p.matrices()
    res = scipy.optimize.linprog(p.c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                           bounds=p.bounds, method="highs")
    if res.status == 2:
        raise _diagnose(p, limits, edges.n)
    if res.status != 0:
        raise RuntimeError(f"constrained_optimizer: HiGHS says {res.message}")
    w = np.clip(res.x[:edges.n], 0, None)
    slack = (b_ub - a_ub @ res.x) if a_ub is not None else np.array([])
    binding = {tag for tag, s in zip(ub_tags, slack, strict=True)
               if s <= 1e-9 and not tag.endswith("_def")}
    if limits.edge_max is not None and np.any(w >= limits.edge_max - 1e-9):
        binding.add("edge_max")
    if limits.fully_invested:
        binding.add("budget")
    pnl = edges.returns @ w
    detail = {"objective": float(-res.fun), "expected_return": float(mu @ w),
              "cvar": cvar(pnl, limits.cvar_alpha), "max_drawdown": additive_drawdown(pnl),
              "duals": res.ineqlin.marginals if a_ub is not None else np.array([])}
    return Allocation(w, "constrained_optimizer", risk_contributions(w, cov),
                      tuple(sorted(binding)), detail)


# ---- measures, for checks and tests -------------------------------------------------------

def cvar(pnl: np.ndarray, alpha: float) -> float:
    """CVaR_alpha of the loss ``-pnl`` of a finite, equally likely sample (Rockafellar–Uryasev:
    ``min_ζ ζ + E[(L − ζ)+]/(1 − α)``, computed exactly from the sorted losses)."""
    loss = np.sort(-np.asarray(pnl, float))[::-1]
    t = loss.size
    mass = (1 - alpha) * t  # scenarios in the tail, fractional
    whole = math.floor(mass + 1e-12)
    total = loss[:whole].sum() + (mass - whole) * (loss[whole] if whole < t else 0.0)
    return float(total / mass)


def additive_drawdown(pnl: np.ndarray) -> float:
    """Largest fall of the additive cumulative return from its running peak (start at 0)."""
    cum = np.concatenate([[0.0], np.cumsum(pnl)])
    return float(np.max(np.maximum.accumulate(cum) - cum))


# ---- the entry point ----------------------------------------------------------------------

def allocate(edges: Edges, limits: Limits, mode: str, *, scores: Sequence[float] | None = None,
             shrink: float = 0.0, cluster_corr: float = 0.5, risk_aversion: float = 0.0,
             tilt: Sequence[float] | None = None, prev: Sequence[float] | None = None,
             shrinkage: str = "ledoit_wolf") -> Allocation:
    """Weights of ``edges`` under ``limits`` in ``mode`` (module docstring).

    ``scores``: the score of each edge (``score_weighted``; e.g. deflated Sharpe); ``shrink``
    in [0, 1] pulls them towards equal weights. ``risk_aversion`` and ``tilt`` (added to the
    expected returns) shape the optimizer's objective; ``prev`` are the current weights the
    turnover budget is measured against (none: from cash). ``shrinkage``: ``ledoit_wolf``
    (default) or ``none`` (the sample covariance).
    Raises :class:`Infeasible` naming the limits that cannot all hold.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    if shrinkage == "ledoit_wolf":
        cov, intensity = shrunk_cov(edges.returns)
    elif shrinkage == "none":
        cov, intensity = np.cov(edges.returns, rowvar=False, bias=True).reshape(
            edges.n, edges.n), 0.0
    else:
        raise ValueError(f"shrinkage {shrinkage!r}: ledoit_wolf or none")
    detail = {"shrinkage": intensity}
    prev_w = None if prev is None else np.asarray(prev, float)
    if mode == "inverse_vol":
        return _heuristic(inverse_vol(cov), edges, limits, mode, cov, detail, prev_w)
    if mode == "equal_risk":
        return _heuristic(equal_risk_contribution(cov), edges, limits, mode, cov, detail,
                          prev_w)
    if mode == "score_weighted":
        if scores is None or len(scores) != edges.n:
            raise ValueError(f"score_weighted needs one score per edge ({edges.n})")
        if not 0 <= shrink <= 1:
            raise ValueError(f"shrink: {shrink} is not in [0, 1]")
        s = np.clip(np.nan_to_num(np.asarray(scores, float), nan=0.0), 0, None)
        base = s / s.sum() if s.sum() > 0 else np.full(edges.n, 1 / edges.n)
        raw = (1 - shrink) * base + shrink / edges.n
        return _heuristic(raw, edges, limits, mode, cov, detail, prev_w)
    if mode == "cluster":
        labels = clusters(edges.returns, cluster_corr)
        return _heuristic(cluster_weights(cov, labels), edges, limits, mode, cov,
                          detail | {"clusters": labels}, prev_w)
    mu = edges.returns.mean(axis=0)
    return _optimize(edges, limits, mu, cov, risk_aversion=risk_aversion,
                     tilt=None if tilt is None else np.asarray(tilt, float),
                     prev=None if prev is None else np.asarray(prev, float))
