"""Weighted, linearly constrained quantile regression solved exactly as a linear program."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linprog

from smoothprobe.errors import SmoothprobeError

DIRECT_MAX_ROWS = 4000
"""Problems with at most this many weighted rows go to HiGHS whole; larger ones are banded."""
SIMPLEX_MAX_ROWS = 1000
"""Dual simplex up to this many LP columns, interior point (faster here) above."""
MAX_CUTS = 200
"""Cutting-plane rounds before a convex constraint is declared unreachable."""

Cut = Callable[[np.ndarray], "tuple[np.ndarray, float] | None"]
"""β ↦ a violated linear constraint (row g, bound h: g·β ≥ h) of a convex set, or None when β is
inside it (to the cut's own tolerance)."""


def cutting_planes(
    solve: Callable[[np.ndarray, np.ndarray], np.ndarray], g: np.ndarray, h: np.ndarray,
    cut: Cut | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kelley's cutting planes: β = solve(G, h), add the violated cut, re-solve, until `cut`
    accepts β. Returns β and the constraints with every cut added (valid for later solves).

    Each cut holds on the whole convex set, so the LP only ever grows tighter around it and the
    accepted β is the optimum over that set, up to the cut's tolerance.
    """
    for _ in range(MAX_CUTS):
        beta = solve(g, h)
        found = None if cut is None else cut(beta)
        if found is None:
            return beta, g, h
        g, h = np.vstack([g, found[0]]), np.append(h, found[1])
    raise SmoothprobeError(f"quantile regression: the constraint was still violated after "
                           f"{MAX_CUTS} cutting planes; report this run")


def pinball(residual: np.ndarray, tau: float, weights: np.ndarray | None = None) -> float:
    """Mean check loss ρ_τ(r) = max(τr, (τ−1)r) of residuals y − ŷ (weighted if given)."""
    loss = np.maximum(tau * residual, (tau - 1.0) * residual)
    return float(np.average(loss, weights=weights))


def _solve_dual(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, tau: float, g: np.ndarray, h: np.ndarray,
    rhs: np.ndarray,
) -> np.ndarray | None:
    """Solve the LP dual max y'a + h'λ s.t. X'a + G'λ = rhs, −(1−τ)w ≤ a ≤ τw, λ ≥ 0.

    Three equality rows whatever the number of observations, so HiGHS stays fast; the
    coefficients are the (negated) multipliers of the equality rows. None when infeasible (or
    when neither the dual simplex nor the interior point method succeeds).
    """
    a_eq = np.hstack([x.T, g.T])
    cost = -np.concatenate([y, h])
    lower = np.concatenate([-(1.0 - tau) * w, np.zeros(len(h))])
    upper = np.concatenate([tau * w, np.full(len(h), np.inf)])
    methods = ("highs-ds", "highs-ipm") if len(y) <= SIMPLEX_MAX_ROWS else ("highs-ipm",)
    for method in methods:  # the simplex can stall on nearly collinear columns; IPM does not
        res = linprog(cost, A_eq=a_eq, b_eq=rhs, bounds=np.column_stack([lower, upper]),
                      method=method, options={"presolve": False})
        if res.status == 0:
            return -np.asarray(res.eqlin.marginals, dtype=float)
        if res.status == 2:
            return None
    return None


class BandedQuantileLP:
    """Exact weighted τ-quantile regression warm-started near a known fit `start`.

    Preprocessing of Portnoy & Koenker (1997, "The Gaussian hare and the Laplacian tortoise"):
    a row with |y_i − x_i·start| > band·spread_i is fixed on its side of the fit and enters the
    LP through one linear term; the answer is checked and the band doubled until no fixed row
    changes side, so the result is the exact full-data solution. `spread` (default: leverage
    √(x_i M⁻¹ x_iᵀ), M = XᵀX/n) says how far the fit may move at each row. Residuals are
    computed once, so solving many reweightings of the same rows (a bootstrap) is cheap.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, tau: float, g: np.ndarray, h: np.ndarray,
                 start: np.ndarray, spread: np.ndarray | None = None, cut: Cut | None = None
                 ) -> None:
        if spread is None:
            spread = np.sqrt(np.einsum("ij,ij->i", x @ np.linalg.pinv(x.T @ x / len(y)), x))
        self.x, self.y, self.tau, self.g, self.h, self.cut = x, y, tau, g, h, cut
        self.start, self.spread = start, spread
        self.resid = y - x @ start
        self.reach = self.resid / spread

    def solve(self, weights: np.ndarray, band: float | None = None) -> tuple[np.ndarray, float]:
        """β for row weights `weights`, and max_i |x_i(β − start)|/spread_i: the least band
        that would have sufficed, which callers reuse to size the band of similar problems.
        Cuts found on the way are kept for later solves."""
        if band is None:
            band = float(np.quantile(np.abs(self.reach[weights > 0]),
                                     min(1.0, DIRECT_MAX_ROWS / len(weights))))
        beta, self.g, self.h = cutting_planes(
            lambda g, h: self._banded(weights, band, g, h), self.g, self.h, self.cut)
        return beta, float(np.max(np.abs(self.x @ (beta - self.start)) / self.spread))

    def _banded(self, w: np.ndarray, band: float, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The exact solution under Gβ ≥ h, doubling the band until no fixed row changes side."""
        x, tau = self.x, self.tau
        while True:
            above, below = self.reach > band, self.reach < -band
            inside = ~(above | below) & (w > 0)
            rhs = (1.0 - tau) * (x.T @ (w * below)) - tau * (x.T @ (w * above))
            beta = _solve_dual(x[inside], self.y[inside], w[inside], tau, g, h, rhs)
            if beta is not None:
                shift = x @ (beta - self.start)
                flipped = (above & (self.resid < shift)) | (below & (self.resid > shift))
                if not np.any(flipped & (w > 0)):
                    return beta
            if not (above | below).any():
                raise SmoothprobeError("quantile regression LP failed on the full problem")
            band *= 2.0


def quantile_regression(
    x: np.ndarray,
    y: np.ndarray,
    tau: float,
    *,
    g: np.ndarray | None = None,
    h: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    start: np.ndarray | None = None,
    cut: Cut | None = None,
) -> np.ndarray:
    """β minimising Σ w_i ρ_τ(y_i − x_iβ) subject to Gβ ≥ h (and the convex set behind `cut`,
    by `cutting_planes`), the exact LP solution.

    Up to DIRECT_MAX_ROWS weighted rows go to HiGHS whole; larger problems start from `start`
    (a nearby fit, if known) or a fit on a random subset of that size, and are finished by
    `BandedQuantileLP`.
    """
    n, p = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    g = np.zeros((0, p)) if g is None else g
    h = np.zeros(0) if h is None else h
    live = np.flatnonzero(w > 0)
    if len(live) <= DIRECT_MAX_ROWS:
        def direct(g: np.ndarray, h: np.ndarray) -> np.ndarray:
            beta = _solve_dual(x[live], y[live], w[live], tau, g, h, np.zeros(p))
            if beta is None:
                raise SmoothprobeError("quantile regression LP is infeasible: check the "
                                       "constraints G, h")
            return beta
        return cutting_planes(direct, g, h, cut)[0]
    if start is None:
        sub = np.random.default_rng(0).choice(live, DIRECT_MAX_ROWS, replace=False)
        start = quantile_regression(x[sub], y[sub], tau, g=g, h=h, weights=w[sub], cut=cut)
    return BandedQuantileLP(x, y, tau, g, h, start, cut=cut).solve(w)[0]
