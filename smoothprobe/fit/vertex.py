"""Exact weighted quantile regression with few coefficients, by walking the vertices of its
objective from a nearby point: the simplex method in coefficient space.

For p coefficients the objective F(β) = Σ w_i ρ_τ(y_i − x_iβ) + c·β under Gβ ≥ h is convex and
piecewise linear; its minimum sits at a vertex where p rows fit exactly (y_i = x_iβ) or
constraints hold with equality (g_kβ = h_k). From a vertex, leaving one of those p "tight" items
moves β along an edge; along the edge F is piecewise linear in the step and its minimum is a
weighted-median search over the rows the edge crosses. Barrodale & Roberts (1973, SIAM J. Numer.
Anal. 10:839) walk these edges for least absolute deviations, Koenker & d'Orey (1987, Appl.
Statist. 36:383) for quantiles. Started at a neighbouring problem's answer (a bootstrap resample
of the same rows, a cross-validation fold) the walk takes a few edges, each a pass over the rows,
instead of a whole LP solve.

The answer is certified by the LP's own optimality condition: with every other row's multiplier
a_i at the bound its residual's sign gives (τw_i above the fit, −(1−τ)w_i below), the tight items'
multipliers μ solve V_Tᵀμ = c − Σ a_i x_i and must lie in [−(1−τ)w_i, τw_i] for rows, ≥ 0 for
constraints. `descend` returns None when it cannot certify (a degenerate vertex, a start outside
Gβ ≥ h, too many edges), and callers then solve the LP whole.

With only an intercept the fit is the τ-quantile: for y = 0, 1, …, 9 at τ = 0.75 the slope
−τ·(rows above) + (1 − τ)·(rows below) turns positive past y = 7.

>>> import numpy as np
>>> y = np.arange(10.0)
>>> descend(np.ones((10, 1)), y, np.ones(10), 0.75, np.zeros((0, 1)), np.zeros(0), np.zeros(1),
...         np.zeros(1)).tolist()
[7.0]
"""

from __future__ import annotations

import numpy as np

MAX_EDGES = 200
"""Edges walked before `descend` gives up (a warm start needs a few; cycling on a degenerate
vertex would need many)."""
TOLERANCE = 1e-9
"""Slack of the optimality check relative to the largest weight, and of the feasibility check
relative to each constraint's size (well inside HiGHS's 1e-7)."""
ROUNDING = 1e3 * np.finfo(float).eps
"""Rounding of a multiplier relative to the sums it is solved from (c and Σ w_i|x_i|)."""
FITTED = 1e-12
"""A start's residual below this share of |y| + 1 counts as a row the start fits (a vertex's own rows)."""


def _slope(r: np.ndarray, u: np.ndarray, w: np.ndarray, tau: float) -> float:
    """Right derivative at t = 0 of Σ w_i ρ_τ(r_i − t·u_i)."""
    up = (r > 0) | ((r == 0) & (u < 0))  # rows that lie (or move) above the fit
    return float(np.sum(np.where(up, -tau * w * u, (1.0 - tau) * w * u)))


def _line_search(r: np.ndarray, u: np.ndarray, w: np.ndarray, slack: np.ndarray, v: np.ndarray,
                 slope: float) -> tuple[float, int] | None:
    """Where a line search along a direction stops: (t, the item that becomes tight there; rows
    0..n-1, constraints n + k). Rows i cross the fit at t = r_i/u_i, raising the slope by
    w_i|u_i|; constraint k (slack s_k, rate v_k = g_k·d) blocks at s_k/(−v_k) when v_k < 0. A
    falling F (slope < 0) is followed to where it stops falling, a rising one only to the first
    crossing (a step to the nearest vertex). None when F falls without bound."""
    idx = np.flatnonzero(((r > 0) & (u > 0)) | ((r < 0) & (u < 0)))
    t_rows = r[idx] / u[idx]
    order = np.argsort(t_rows)
    stop = 0
    if slope < 0:
        rises = slope + np.cumsum(w[idx[order]] * np.abs(u[idx[order]]))
        stop = int(np.searchsorted(rises, 0.0, "left"))
    blocking = np.flatnonzero(v < 0)
    t_con = np.maximum(slack[blocking], 0.0) / -v[blocking]
    best_con = int(np.argmin(t_con)) if len(t_con) else -1
    if stop < len(order):
        t_row = float(t_rows[order[stop]])
        if best_con < 0 or t_row <= t_con[best_con]:
            return t_row, int(idx[order[stop]])
    if best_con >= 0:
        return float(t_con[best_con]), len(r) + int(blocking[best_con])
    return None


def descend(x: np.ndarray, y: np.ndarray, w: np.ndarray, tau: float, g: np.ndarray, h: np.ndarray,
            c: np.ndarray, start: np.ndarray) -> np.ndarray | None:
    """β minimising Σ w_i ρ_τ(y_i − x_iβ) + c·β subject to Gβ ≥ h, walked to from `start`.

    Weights must be positive. Rows that `start` already fits (to rounding: a neighbouring
    problem's vertex) are tight from the outset; line searches along directions that keep the
    tight items tight add the rest until p are (a vertex). Then edges are walked, leaving the
    tight item whose multiplier is most out of bounds per unit length of its edge (steepest
    edge), until the certificate holds. None when the start violates Gβ ≥ h, a vertex turns out
    degenerate, or MAX_EDGES is reached.
    """
    n, p = x.shape
    beta = np.array(start, dtype=float)
    size_g = np.abs(g).sum(axis=1) * (np.abs(beta).max() + 1.0) + np.abs(h)
    if np.any(g @ beta - h < -TOLERANCE * size_g):
        return None
    items = np.vstack([x, g])   # rows 0..n-1, then the constraints
    targets = np.concatenate([y, h])
    scale = float(np.abs(c).sum() + np.sum(w * np.abs(x).sum(axis=1)))  # of the sums behind μ
    w_max = float(w.max()) if len(w) else 1.0  # the tolerance scales with the weights, below 1 too
    tight = _fitted(x, y - x @ beta, y, p)
    if len(tight) == p:
        beta = np.linalg.solve(items[tight], targets[tight])
    for _ in range(MAX_EDGES):
        rows = [i for i in tight if i < n]
        cons = [i - n for i in tight if i >= n]
        r = y - x @ beta
        r[rows] = 0.0
        if len(tight) < p:
            d = _null_direction(items[tight], p)
            u = x @ d
            u[rows] = 0.0
            up, down = c @ d + _slope(r, u, w, tau), -c @ d + _slope(r, -u, w, tau)
            if down < up:
                d, u, up = -d, -u, down
        else:
            basis = items[tight]
            a = np.where(r > 0, tau * w, -(1.0 - tau) * w)
            a[rows] = 0.0
            mu = np.linalg.solve(basis.T, c - a @ x)
            edges = np.linalg.inv(basis)  # column j: the direction leaving item j at unit rate
            lengths = np.linalg.norm(edges, axis=0)
            excess, sign = np.empty(p), np.ones(p)
            for j, i in enumerate(tight):
                if i < n:
                    high, low = mu[j] - tau * w[i], -(1.0 - tau) * w[i] - mu[j]
                    excess[j], sign[j] = (high, -1.0) if high > low else (low, 1.0)
                else:
                    excess[j] = -mu[j]
            excess -= TOLERANCE * w_max + ROUNDING * scale * lengths
            if np.all(excess <= 0):
                return beta
            worst = int(np.argmax(excess / lengths))
            d = sign[worst] * edges[:, worst]
            tight.pop(worst)   # it moves off its bound (r = 0, u = ±1) and never crosses back
            u = x @ d
            u[[i for i in tight if i < n]] = 0.0
            up = c @ d + _slope(r, u, w, tau)
            if up >= 0:
                return None  # the multipliers say descent, the slope does not: degenerate
        v = g @ d
        v[cons] = 0.0
        found = _line_search(r, u, w, g @ beta - h, v, up)
        if found is None:
            return None
        step, index = found
        tight.append(index)
        if len(tight) == p:
            beta = np.linalg.solve(items[tight], targets[tight])
        else:
            beta = beta + step * d
    return None


def _fitted(x: np.ndarray, r: np.ndarray, y: np.ndarray, p: int) -> list[int]:
    """Up to p rows with linearly independent x_i that lie on the fit to rounding (|r_i| within
    FITTED of |y_i|), the smallest residuals first."""
    near = np.flatnonzero(np.abs(r) <= FITTED * (np.abs(y) + 1.0))
    chosen: list[int] = []
    for i in near[np.argsort(np.abs(r[near]))]:
        if np.linalg.matrix_rank(x[chosen + [int(i)]]) > len(chosen):
            chosen.append(int(i))
            if len(chosen) == p:
                break
    return chosen


def _null_direction(tight: np.ndarray, p: int) -> np.ndarray:
    """A unit direction along which every tight item (a row of `tight`) stays tight."""
    if not len(tight):
        return np.eye(p)[0]
    return np.linalg.svd(tight)[2][len(tight)]
