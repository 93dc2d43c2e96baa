"""The ρ-model as a constrained envelope LP and least squares, time-blocked CV, and ρ selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit.quantile import DIRECT_MAX_ROWS, pinball, quantile_regression

RHO_GRID = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0)
POSITIVITY_POINTS = 64
POSITIVITY_FLOOR = 1e-6
"""K(Δ) ≥ POSITIVITY_FLOOR · (K scale) on POSITIVITY_POINTS log-spaced gaps of the Δ range."""


@dataclass(frozen=True)
class RhoDesign:
    """The ρ-model in scaled units, K/s_K = b0 + b1·(Δ/s_Δ) + b2·(Δ/s_Δ)^ρ, with its constraints.

    Scaling keeps the LP well conditioned whatever the units of Δ and K; `g`, `h` hold the rows
    b0 ≥ 0, b2 ≥ 0 and K(Δ) > 0 on a grid spanning the observed Δ range.
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
    h = np.concatenate([np.zeros(2), np.full(POSITIVITY_POINTS, POSITIVITY_FLOOR)])
    return RhoDesign(rho, delta_scale, k_scale, _columns(delta / delta_scale, rho),
                     np.asarray(k, dtype=float) / k_scale, g, h)


def envelope(design: RhoDesign, tau: float) -> np.ndarray:
    """Upper-envelope constants (K0, K1, Kρ): the τ-quantile regression of the ρ-model."""
    return design.constants(quantile_regression(design.x, design.y, tau, g=design.g, h=design.h))


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
    x: np.ndarray, y: np.ndarray, tau: float, folds: np.ndarray,
    g: np.ndarray | None = None, h: np.ndarray | None = None,
) -> float:
    """Held-out pinball loss of the τ-quantile regression of y on x, pooled over folds.

    Large problems warm-start every fold at the all-rows fit, which is close to each of them.
    """
    total = 0.0
    whole = quantile_regression(x, y, tau, g=g, h=h) if len(y) > DIRECT_MAX_ROWS else None
    for fold in np.unique(folds):
        test = folds == fold
        beta = quantile_regression(x[~test], y[~test], tau, g=g, h=h, start=whole)
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
                                                          design.g, design.h)
    return min(profile, key=profile.get), profile
