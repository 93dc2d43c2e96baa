"""Weighted, linearly constrained quantile regression solved exactly as a linear program."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linprog

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.vertex import descend

DIRECT_MAX_ROWS = 4000
"""Problems with at most this many weighted rows go to HiGHS whole; larger ones are banded."""
SIMPLEX_MAX_ROWS = 1000
"""Dual simplex up to this many LP columns, interior point (faster here) above."""
MIN_BAND_ROWS = 500
"""Rows a band holds at least: fewer rarely place a 3-parameter quantile fit."""
SUBSET_SHARE = 0.04
"""Share of the rows whose fit starts a large problem (1M rows: 40k, which start from 4k)."""
SORTED_SHARE = 1 / 16
SORTED_MIN_ROWS = 16_000
"""`BandedQuantileLP` sorts by |reach| only the nearest rows, this share of them (at least this
many): side changes are looked for among them, and a bound beyond them scans every row."""
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
    changes side, so the result is the exact full-data solution. spread_i = √(x_i S x_iᵀ) says how
    far the fit may move at row i (`metric` S, default M⁻¹ with M = XᵀX/n); by Cauchy–Schwarz no
    row moves by more than √(δᵀS⁻¹δ)·spread_i for a shift δ of β, so only rows whose |reach|
    lies below that bound can change side, and checking them (a prefix of the rows sorted by
    |reach|) gives the exact least band that would have sufficed without touching every row.
    Residuals, and per band the rows inside and the prefix sums of the fixed rows' terms, are
    computed once, so many reweightings of the same rows (a bootstrap) cost little beyond their
    LPs, and each LP starts at `start`, a few edges from its answer (`smoothprobe.fit.vertex`).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, tau: float, g: np.ndarray, h: np.ndarray,
                 start: np.ndarray, metric: np.ndarray | None = None, cut: Cut | None = None
                 ) -> None:
        if metric is None:
            metric = np.linalg.pinv(x.T @ x / len(y))
        self.x, self.y, self.tau, self.g, self.h, self.cut = x, y, tau, g, h, cut
        self.start, self.inverse = start, np.linalg.pinv(metric)
        # x_i S x_iᵀ as S·Xᵀ: BLAS multiplies a tall n × p matrix by a p × p one far slower
        self.spread = np.sqrt(np.maximum(np.einsum("ji,ji->i", metric @ x.T, x.T), 1e-300))
        self.resid = y - x @ start
        self.reach = self.resid / self.spread
        size = np.abs(self.reach)
        count = min(len(y), max(SORTED_MIN_ROWS, round(SORTED_SHARE * len(y))))
        nearest = np.argpartition(size, count - 1)[:count] if count < len(y) else np.arange(len(y))
        self.order = nearest[np.argsort(size[nearest])]
        self.sorted_reach = size[self.order]
        self._sorted_x, self._sorted_resid = x[self.order], self.resid[self.order]
        self._layouts: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def bound(self, beta: np.ndarray) -> float:
        """√(δᵀS⁻¹δ) for δ = β − start: no row's fitted value moves by more than this many spreads."""
        shift = np.asarray(beta) - self.start
        return float(np.sqrt(max(shift @ self.inverse @ shift, 0.0)))

    def crossing(self, beta: np.ndarray) -> np.ndarray:
        """The rows on the other side of β's fit than of the start's (only rows with |reach|
        below `bound(β)` can be, so only those are looked at: a prefix of the sorted nearest
        rows, or a scan of all when the bound reaches past them)."""
        bound = self.bound(beta)
        last = int(np.searchsorted(self.sorted_reach, bound, "right"))
        if last < len(self.order):
            rows, x, resid = self.order[:last], self._sorted_x[:last], self._sorted_resid[:last]
        else:
            rows = np.flatnonzero(np.abs(self.reach) <= bound)
            x, resid = self.x[rows], self.resid[rows]
        shift = x @ (np.asarray(beta) - self.start)
        return rows[((resid > 0) & (resid < shift)) | ((resid < 0) & (resid > shift))]

    def least_band(self, beta: np.ndarray) -> float:
        """The least band at which no fixed row changes side for β (0 when none would)."""
        rows = self.crossing(beta)
        return float(np.max(np.abs(self.reach[rows]))) if len(rows) else 0.0

    def layout(self, band: float) -> tuple[np.ndarray, np.ndarray]:
        """The rows inside `band` (in order) and the prefix sums over rows of the fixed rows'
        terms (1−τ)·x_i below the band, −τ·x_i above it (shape (n + 1, p)); the last four kept."""
        if band not in self._layouts:
            above, below = self.reach > band, self.reach < -band
            prefix = np.zeros((len(self.y) + 1, self.x.shape[1]))
            np.cumsum(self.x * ((1.0 - self.tau) * below - self.tau * above)[:, None], axis=0,
                      out=prefix[1:])
            if len(self._layouts) >= 4:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[band] = (np.flatnonzero(~(above | below)), prefix)
        return self._layouts[band]

    def solve(self, weights: np.ndarray, band: float | None = None) -> tuple[np.ndarray, float]:
        """β for row weights `weights`, and the least band that would have sufficed
        (`least_band`), which callers reuse to size the band of similar problems. Cuts found on
        the way are kept for later solves."""
        if band is None:  # DIRECT_MAX_ROWS rows inside, as many live as the weights leave
            band = float(self.sorted_reach[min(len(self.sorted_reach), DIRECT_MAX_ROWS) - 1])
        return self.solve_resample(lambda rows: weights[rows],
                                   lambda prefix: weights @ np.diff(prefix, axis=0), band)

    def solve_resample(self, weigh: Callable[[np.ndarray], np.ndarray],
                       total: Callable[[np.ndarray], np.ndarray], band: float
                       ) -> tuple[np.ndarray, float]:
        """`solve` for weights known only through `weigh(rows)` (the weights of those rows) and
        `total(prefix)` (the weighted sum of the per-row terms whose prefix sums are given): a
        block bootstrap answers both from its blocks without a weight per row."""
        beta, self.g, self.h = cutting_planes(
            lambda g, h: self._banded(weigh, total, band, g, h), self.g, self.h, self.cut)
        return beta, self.least_band(beta)

    def _banded(self, weigh: Callable, total: Callable, band: float, g: np.ndarray,
                h: np.ndarray) -> np.ndarray:
        """The exact solution under Gβ ≥ h, doubling the band until no fixed row changes side (and
        starting wide enough for MIN_BAND_ROWS rows). Each band's LP is walked to from the start
        (or the narrower band's answer) by `descend`, and handed to HiGHS whole when the walk
        cannot certify its answer."""
        band = max(band, float(self.sorted_reach[min(len(self.y), MIN_BAND_ROWS) - 1]))
        near = self.start
        while True:
            inside, prefix = self.layout(band)
            w = weigh(inside)
            live = inside[w > 0]
            problem = (self.x[live], self.y[live], w[w > 0], self.tau, g, h, total(prefix))
            beta = descend(*problem, near)
            beta = _solve_dual(*problem) if beta is None else beta
            if beta is not None:
                near = beta
                flipped = self.crossing(beta)
                flipped = flipped[np.abs(self.reach[flipped]) > band]
                if not len(flipped) or not np.any(weigh(flipped) > 0):
                    return beta
            if len(inside) == len(self.y):
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
    (a nearby fit, if known) or the fit of a random SUBSET_SHARE of the rows (itself found the
    same way, so each stage starts within about 1/√(its rows) of its answer and its band stays
    narrow), and are finished by `BandedQuantileLP`.
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
        size = max(DIRECT_MAX_ROWS, round(SUBSET_SHARE * len(live)))
        sub = np.sort(np.random.default_rng(0).choice(live, size, replace=False))
        start = quantile_regression(x[sub], y[sub], tau, g=g, h=h, weights=w[sub], cut=cut)
    return BandedQuantileLP(x, y, tau, g, h, start, cut=cut).solve(w)[0]
