"""Estimate the optimal loss f* from a loss curve by a saturating power law."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import norm

from smoothprobe.errors import SmoothprobeError

MIN_LOSS_POINTS = 20


@dataclass(frozen=True)
class FStarEstimate:
    """f* with a normal-theory interval, and the fitted curve L(t) = f* + a·(t + t0)^(−b)."""

    value: float
    interval: tuple[float, float]
    a: float
    b: float
    t0: float
    bins: int

    def curve(self, t: np.ndarray) -> np.ndarray:
        """The fitted loss at steps counted from the first recorded step."""
        return self.value + self.a * (np.asarray(t, dtype=float) + self.t0) ** (-self.b)


def _binned(step: np.ndarray, loss: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of step and loss over `bins` groups of consecutive steps (smooths batch noise)."""
    order = np.argsort(step)
    groups = np.array_split(np.arange(len(step)), min(bins, len(step)))
    t = np.array([step[order[g]].mean() for g in groups])
    return t - step.min(), np.array([loss[order[g]].mean() for g in groups])


def estimate_f_star(
    step: np.ndarray, loss: np.ndarray, *, bins: int = 200, level: float = 0.95,
) -> FStarEstimate:
    """Fit L(t) = f* + a·(t + t0)^(−b), a, b > 0, t0 ≥ 0, to the binned loss curve.

    A grid over (b, t0) with (f*, a) solved by linear least squares gives the start; nonlinear
    least squares refines all four, and the interval is f* ± z·se from its Jacobian. f* is kept
    below the smallest binned loss and, when no loss is negative, at or above 0.
    """
    step, loss = np.asarray(step, dtype=float), np.asarray(loss, dtype=float)
    ok = np.isfinite(step) & np.isfinite(loss)
    if ok.sum() < MIN_LOSS_POINTS:
        raise SmoothprobeError(f"f_star='auto' needs at least {MIN_LOSS_POINTS} finite losses; "
                               f"got {int(ok.sum())}")
    t, y = _binned(step[ok], loss[ok], bins)
    lower = 0.0 if loss[ok].min() >= 0 else -np.inf
    upper = float(y.min())
    span = max(float(t.max()), 1.0)
    best = (np.inf, None)
    for b in np.geomspace(0.05, 5.0, 40):
        for t0 in np.geomspace(1e-3 * span, span, 30):
            z = (t + t0) ** (-b)
            (f, a), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(z), z]), y, rcond=None)
            sse = float(np.sum((y - f - a * z) ** 2))
            if a > 0 and lower <= f <= upper and sse < best[0]:
                best = (sse, np.array([f, np.log(a), np.log(b), np.log(t0)]))
    if best[1] is None:
        raise SmoothprobeError("f_star='auto' failed: the loss curve does not decrease like "
                               "f* + a·(t + t0)^(-b); pass f_star explicitly")

    def resid(p: np.ndarray) -> np.ndarray:
        return p[0] + np.exp(p[1]) * (t + np.exp(p[3])) ** (-np.exp(p[2])) - y

    start = np.clip(best[1], [lower, -np.inf, np.log(0.01), np.log(1e-6 * span)],
                    [upper, np.inf, np.log(20.0), np.log(10 * span)])
    fit = least_squares(resid, start, bounds=([lower, -np.inf, np.log(0.01), np.log(1e-6 * span)],
                                              [upper, np.inf, np.log(20.0), np.log(10 * span)]))
    dof = max(len(y) - 4, 1)
    cov = np.linalg.pinv(fit.jac.T @ fit.jac) * float(np.sum(fit.fun**2)) / dof
    half = float(norm.ppf(0.5 + level / 2) * np.sqrt(max(cov[0, 0], 0.0)))
    f_star = float(fit.x[0])
    return FStarEstimate(f_star, (max(f_star - half, lower), min(f_star + half, upper)),
                         float(np.exp(fit.x[1])), float(np.exp(fit.x[2])),
                         float(np.exp(fit.x[3])), len(y))
