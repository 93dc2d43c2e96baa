"""The ρ-model as a constrained envelope LP and least squares, time-blocked CV, and ρ selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.quantile import (
    DIRECT_MAX_ROWS,
    BandedQuantileLP,
    Cut,
    pinball,
    quantile_regression,
)
from smoothprobe.smoothness import k_argmin, min_k

RHO_GRID = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)
POSITIVITY_POINTS = 64
POSITIVITY_FLOOR = 1e-4
"""K(Δ) ≥ this share of the K scale (median |K|) for every Δ ≥ 0, and Kρ·Δ_max^ρ too: K stays
positive down to Δ = 0, so Δ' and η_max are finite (a floor well above the LP's 1e-7
feasibility tolerance, far below any K a run measures)."""
CUT_ACCEPT = 0.5
"""A fit is accepted once min K ≥ CUT_ACCEPT · floor: strictly positive, with room for the LP's
tolerance."""


@dataclass(frozen=True)
class RhoDesign:
    """The ρ-model in scaled units, K/s_K = b0 + b1·(Δ/s_Δ) + b2·(Δ/s_Δ)^ρ, with its constraints.

    Scaling keeps the LP well conditioned whatever the units of Δ and K. The model is physical
    when min over Δ ≥ 0 of K(Δ) ≥ POSITIVITY_FLOOR (scaled) and b2 ≥ POSITIVITY_FLOOR: a convex
    but not polyhedral set, imposed exactly by `cut`. `g`, `h` hold the linear rows known in
    advance: b0 ≥ floor, b2 ≥ floor and K ≥ floor on a grid over the observed Δ range (cuts the
    solution would otherwise need first).
    """

    rho: float
    delta_scale: float
    k_scale: float
    x: np.ndarray
    y: np.ndarray
    g: np.ndarray
    h: np.ndarray

    def constants(self, beta: np.ndarray) -> np.ndarray:
        """(K0, K1, Kρ) in data units from scaled coefficients (last axis of length 3)."""
        factors = self.k_scale / np.array([1.0, self.delta_scale, self.delta_scale**self.rho])
        return np.asarray(beta) * factors

    def cut(self, beta: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The tangent plane K(Δ*) ≥ floor at the minimiser Δ* of β's K on Δ ≥ 0, when β's
        least K is below CUT_ACCEPT · floor; None when β is physical. (Kρ ≥ floor is a row of
        `g`, so Δ* is finite.) The row is scaled to unit length, which leaves it the same cut."""
        if min_k(*beta, self.rho) >= CUT_ACCEPT * POSITIVITY_FLOOR:
            return None
        row = _columns(np.array([float(k_argmin(*beta, self.rho))]), self.rho)[0]
        size = float(np.linalg.norm(row))  # unit rows keep the LP well conditioned
        return row / size, POSITIVITY_FLOOR / size


def _columns(delta: np.ndarray, rho: float) -> np.ndarray:
    return np.column_stack([np.ones_like(delta), delta, delta**rho])


def rho_design(delta: np.ndarray, k: np.ndarray, rho: float) -> RhoDesign:
    """Scaled design matrix and constraints of the ρ-model for gaps `delta` > 0 and values `k`."""
    if rho <= 1:
        raise SmoothprobeError(f"rho must be > 1. Got {rho}.")
    delta_scale = float(np.max(delta))
    k_scale = float(np.median(np.abs(k))) or 1.0
    grid = np.geomspace(np.min(delta), delta_scale, POSITIVITY_POINTS) / delta_scale
    g = np.vstack([np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), _columns(grid, rho)])
    h = np.full(len(g), POSITIVITY_FLOOR)
    return RhoDesign(rho, delta_scale, k_scale, _columns(delta / delta_scale, rho),
                     np.asarray(k, dtype=float) / k_scale, g, h)


def envelope(design: RhoDesign, tau: float, near: np.ndarray | None = None) -> np.ndarray:
    """Upper-envelope constants (K0, K1, Kρ): the τ-quantile regression of the ρ-model, physical
    (K > 0 on every Δ ≥ 0). `near`: constants close to the answer (a fit of nearly the same
    data), which large problems start from; the answer is the exact optimum either way."""
    start = None if near is None else np.asarray(near) / design.constants(np.ones(3))
    return design.constants(quantile_regression(design.x, design.y, tau, g=design.g, h=design.h,
                                                start=start, cut=design.cut))


def least_squares(design: RhoDesign) -> tuple[np.ndarray, float]:
    """Least-squares constants (K0, Kρ ≥ 0, as in the envelope) and their R² on the same rows."""
    sol = lsq_linear(design.x, design.y, bounds=([0, -np.inf, 0], [np.inf, np.inf, np.inf]))
    resid = design.y - design.x @ sol.x
    total = np.sum((design.y - design.y.mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid**2) / total) if total > 0 else float("nan")
    return design.constants(sol.x), r2


def time_folds(n: int, block: int, n_folds: int = 5) -> np.ndarray:
    """Fold id per row: consecutive blocks of `block` rows dealt to folds in turn.

    Held-out rows then come in whole blocks (so autocorrelation does not leak across the split)
    yet every fold spans the whole run, so CV tests the shape rather than extrapolation.
    """
    return (np.arange(n) // max(1, block)) % n_folds


def cv_pinball(
    x: np.ndarray, y: np.ndarray, tau: float, folds: np.ndarray, g: np.ndarray, h: np.ndarray,
    cut: Cut | None = None, whole: np.ndarray | None = None,
) -> float:
    """Held-out pinball loss of the τ-quantile regression of y on x (under Gβ ≥ h and `cut`),
    pooled over folds.

    A fold with more than DIRECT_MAX_ROWS training rows is solved as a reweighting of all rows
    (held-out rows weigh 0) by one `BandedQuantileLP` started at the all-rows fit `whole`
    (fitted here when not given), which is close to every fold's: the rows are ordered and
    their residuals found once for all folds.
    """
    total, solver = 0.0, None
    for fold in np.unique(folds):
        test = folds == fold
        if np.count_nonzero(~test) > DIRECT_MAX_ROWS:
            if solver is None:
                whole = quantile_regression(x, y, tau, g=g, h=h, cut=cut) if whole is None else whole
                solver = BandedQuantileLP(x, y, tau, g, h, whole, cut=cut)
            beta = solver.solve((~test).astype(float))[0]
        else:
            beta = quantile_regression(x[~test], y[~test], tau, g=g, h=h, cut=cut)
        total += pinball(y[test] - x[test] @ beta, tau) * test.sum()
    return total / len(y)


def select_rho(
    delta: np.ndarray, k: np.ndarray, tau: float, grid: tuple[float, ...], folds: np.ndarray,
) -> tuple[float, dict[float, float]]:
    """ρ on `grid` with the least held-out pinball loss (in K units), and the whole profile."""
    profile = {}
    for rho in grid:
        design = rho_design(delta, k, rho)
        profile[float(rho)] = design.k_scale * cv_pinball(design.x, design.y, tau, folds,
                                                          design.g, design.h, design.cut)
    return min(profile, key=profile.get), profile
