"""Estimate the optimal loss f* from a loss curve by a saturating power law."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import chi2, norm

from smoothprobe.errors import SmoothprobeError

MIN_LOSS_POINTS = 20
FEW_LOSS_POINTS = 50
"""Below this many losses an estimate is made but marked degenerate: a noisy 4-parameter curve
cannot tell saturation from a slow decline (25 points of 2 + 3(t + 5)^-0.5 give f* = 2.55 with
an interval [2.31, 2.60])."""
CAP_BLOCKS = 10  # the "smoothed loss" that caps f*: means over tenths of the curve
B_GRID = np.geomspace(0.02, 20.0, 60)  # exponents; b large with t0 ≈ b·τ mimics exp(−t/τ)
T0_GRID = np.geomspace(1e-4, 10.0, 40)  # offsets, as fractions of the step span
F_POINTS = 1000  # resolution of the f* profile
DRIFT_TOLERANCE = 0.01
"""A move of f* by under this fraction of the curve's drop between its first half and the whole is
no drift: it changes Δ0 by about as little, which no schedule can tell (the profile interval of a
near-noiseless curve can be narrower than that)."""


@dataclass(frozen=True)
class FStarEstimate:
    """f* with a profile-likelihood interval, and the fitted curve L(t) = f* + a·(t + t0)^(−b).

    `degenerate` says in one line why the curve does not pin f* down (None when it does); such an
    f* must not define Δ for a schedule.
    """

    value: float
    interval: tuple[float, float]
    a: float
    b: float
    t0: float
    bins: int
    degenerate: str | None = None

    def curve(self, t: np.ndarray) -> np.ndarray:
        """The fitted loss at steps counted from the first recorded step."""
        return self.value + self.a * (np.asarray(t, dtype=float) + self.t0) ** (-self.b)


def _binned(step: np.ndarray, loss: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of step and loss over `bins` groups of consecutive steps (smooths batch noise)."""
    order = np.argsort(step, kind="stable")
    step, loss = step[order], loss[order]
    starts = np.array([g[0] for g in np.array_split(np.arange(len(step)), min(bins, len(step)))])
    counts = np.diff(np.append(starts, len(step)))
    t = np.add.reduceat(step, starts) / counts
    return t - step[0], np.add.reduceat(loss, starts) / counts


def _profile(t: np.ndarray, y: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least SSE of f + a·(t + t0)^(−b), a ≥ 0, over the (b, t0) grid for each f; and the
    grid index attaining it. With (b, t0, f) fixed the best a ≥ 0 is closed-form."""
    span = max(float(t.max()), 1.0)
    log_z = -np.outer(B_GRID, np.log(t[None, :] + T0_GRID[:, None] * span)).reshape(-1, len(t))
    z = np.exp(log_z - log_z.max(axis=1, keepdims=True))  # scale is free: a absorbs it
    zz, zy, z1 = np.einsum("gi,gi->g", z, z), z @ y, z.sum(axis=1)
    rr = (y @ y) - 2 * f * y.sum() + f**2 * len(y)
    zr = np.maximum(zy[None, :] - f[:, None] * z1[None, :], 0.0)
    sse = rr[:, None] - zr**2 / zz[None, :]
    best = sse.argmin(axis=1)
    return sse[np.arange(len(f)), best], best


def _lag1(r: np.ndarray) -> float:
    """Lag-1 autocorrelation of residuals, clipped to [0, 0.95]."""
    r = r - r.mean()
    denom = float(r @ r)
    return 0.0 if denom == 0 else float(np.clip((r[1:] @ r[:-1]) / denom, 0.0, 0.95))


class _Curve:
    """The binned curve with the power law's residuals in (f*, log a, log b, log t0)."""

    def __init__(self, t: np.ndarray, y: np.ndarray, lower: float) -> None:
        self.t, self.y, self.span = t, y, max(float(t.max()), 1.0)
        self.lo = np.array([lower, -np.inf, np.log(B_GRID[0] / 2),
                            np.log(T0_GRID[0] * self.span / 10)])
        self.hi = np.array([float(y.max()), np.inf, np.log(B_GRID[-1] * 2),
                            np.log(T0_GRID[-1] * self.span * 10)])

    def resid(self, p: np.ndarray, f: float | None = None) -> np.ndarray:
        """Fitted minus observed; with `f` given, p holds only (log a, log b, log t0)."""
        p = p if f is None else np.concatenate([[f], p])
        return p[0] + np.exp(p[1]) * (self.t + np.exp(p[3])) ** (-np.exp(p[2])) - self.y

    def start(self, f: float, index: int) -> np.ndarray:
        """Parameters at grid cell `index` with the best a for this f (a floored above 0)."""
        b, t0 = B_GRID[index // len(T0_GRID)], T0_GRID[index % len(T0_GRID)] * self.span
        z = (self.t + t0) ** (-b)
        a = max(float(z @ (self.y - f)) / float(z @ z), 1e-12 * float(np.ptp(self.y)))
        return np.clip([f, np.log(a), np.log(b), np.log(t0)], self.lo, self.hi)

    def refine(self, p: np.ndarray, fixed_f: bool) -> tuple[np.ndarray, float]:
        """Least-squares refinement from p (f held fixed when `fixed_f`); parameters and SSE."""
        if fixed_f:
            fit = least_squares(self.resid, p[1:], args=(p[0],), bounds=(self.lo[1:], self.hi[1:]),
                                x_scale="jac")
            return np.concatenate([[p[0]], fit.x]), 2 * fit.cost
        fit = least_squares(self.resid, p, bounds=(self.lo, self.hi), x_scale="jac")
        return fit.x, 2 * fit.cost


def _edge(curve: _Curve, f_grid: np.ndarray, where: np.ndarray, inside: int, outside: int,
          limit: float) -> float:
    """The f where the refined profile SSE crosses `limit`, searched between grid index `inside`
    (known below) and `outside` (the grid end), by doubling steps then bisection."""
    def profile(k: float) -> float:
        j = int(np.clip(round(k), 0, len(f_grid) - 1))
        f = float(np.interp(k, np.arange(len(f_grid)), f_grid))
        return curve.refine(curve.start(f, where[j]), fixed_f=True)[1]

    step = 1 if outside > inside else -1
    good, k = float(inside), 1
    while True:
        probe = inside + step * k
        if (probe - outside) * step >= 0:
            if profile(outside) <= limit:
                return float(f_grid[outside])
            bad = float(outside)
            break
        if profile(probe) > limit:
            bad = float(probe)
            break
        good, k = float(probe), 2 * k
    for _ in range(12):
        mid = (good + bad) / 2
        good, bad = (mid, bad) if profile(mid) <= limit else (good, mid)
    return float(np.interp(good, np.arange(len(f_grid)), f_grid))


def _degeneracy(curve: _Curve, params: np.ndarray, f_floor: float, last: float,
                interval: tuple[float, float], level: float, n: int, few: int) -> str | None:
    """Why the fitted power law does not identify f*, or None: f* at its least value or above
    `last` (the last tenth's smoothed loss), fewer than `few` losses, b at its least or
    t0 at its largest value (a curve too straight to extrapolate), or an interval down to the
    least f*. A large b with a huge a is the exponential limit the grid is built for, not a
    degeneracy."""
    at_lo = np.isclose(params, curve.lo, rtol=0, atol=1e-3)  # log-parameters: 0.1% of the bound
    at_hi = np.isclose(params, curve.hi, rtol=0, atol=1e-3)
    if params[0] <= f_floor:
        return (f"the power law runs into f* = {curve.lo[0]:g}, the least value allowed: the loss "
                "curve shows no saturation")
    if params[0] > last:
        return (f"the power law's f* = {params[0]:.4g} lies above the smoothed loss of the last "
                f"tenth of the curve ({last:.4g})")
    if n < few:
        return f"only {n} losses (fewer than {few}): too few to tell saturation from a slow decline"
    if at_lo[2] or at_hi[3] or not np.all(np.isfinite(params)):
        return (f"the power law is degenerate (a = {np.exp(params[1]):.3g}, b = "
                f"{np.exp(params[2]):.3g}, t0 = {np.exp(params[3]):.3g}: b at its least or t0 at "
                "its largest value, a curve too straight to extrapolate)")
    if interval[0] <= curve.lo[0]:
        return (f"its {100 * level:g}% interval reaches {curve.lo[0]:g}: the curve does not bound "
                "f* from below")
    return None


def _drift(step: np.ndarray, loss: np.ndarray, value: float, interval: tuple[float, float],
           drop: float, bins: int, level: float) -> str | None:
    """Why the estimate is not stable, or None: the curve's first half (by step) must pin f* down
    itself, inside the whole curve's interval or within DRIFT_TOLERANCE of the curve's `drop`."""
    order = np.argsort(step, kind="stable")[: len(step) // 2]
    try:
        first = estimate_f_star(step[order], loss[order], bins=bins, level=level, drift=False,
                                few=MIN_LOSS_POINTS)
    except SmoothprobeError:
        return "the first half of the curve cannot be fitted: the estimate rests on its second half alone"
    if first.degenerate is not None:
        return f"the first half of the curve does not pin f* down ({first.degenerate}): the estimate rests on its second half alone"
    half = first.value
    if interval[0] <= half <= interval[1] or abs(half - value) <= DRIFT_TOLERANCE * drop:
        return None
    return (f"f* drifts: the first half of the curve gives {half:.4g}, outside this estimate's "
            f"interval [{interval[0]:.4g}, {interval[1]:.4g}]; the curve does not yet show where it "
            "saturates")


def estimate_f_star(
    step: np.ndarray, loss: np.ndarray, *, bins: int = 200, level: float = 0.95, drift: bool = True,
    few: int = FEW_LOSS_POINTS,
) -> FStarEstimate:
    """Fit L(t) = f* + a·(t + t0)^(−b), a, b > 0, t0 ≥ 0, to the binned loss curve.

    f* is profiled over a dense grid (a solved in closed form, (b, t0) on a grid, large b
    covering near-exponential saturation), then all four are refined by least squares. The
    interval is the profile-likelihood set SSE(f*) − SSE_min ≤ χ²₁(level)·σ²·(1 + r)/(1 − r),
    r the lag-1 autocorrelation of the residuals, with edges refined off the grid; a flat plateau
    that cannot fix the exponent gives a wide interval instead of a falsely narrow one. Since f*
    cannot exceed the expected loss, the interval stops at the smallest upper confidence bound of
    the loss means over tenths of the curve; a fit that runs into the lower bound (no saturation
    seen) reports that whole range. The value is kept at or below the smallest tenth mean (so Δ
    stays positive on the smoothed loss; when that cap binds, the interval also spans that mean's
    own confidence interval) and, when no loss is negative, at or above 0. When the curve does not
    identify f* (see `_degeneracy`) the estimate says why in `degenerate` (callers warn: an online
    re-estimate early in training is degenerate by nature). With `drift`, an estimate is also
    degenerate when the curve's first half does not pin f* down itself (judged with `few` =
    MIN_LOSS_POINTS) or gives an f* farther than its interval and DRIFT_TOLERANCE from this one:
    an asymptote that moves by more than its own uncertainty when the data double is not yet seen
    (docs/design.md §4). `few`: below this many losses the estimate is marked degenerate.
    """
    if not 0 < level < 1:
        raise SmoothprobeError(f"level must lie in (0, 1); got {level}")
    step, loss = np.asarray(step, dtype=float), np.asarray(loss, dtype=float)
    ok = np.isfinite(step) & np.isfinite(loss)
    if ok.sum() < MIN_LOSS_POINTS:
        raise SmoothprobeError(f"f_star='auto' needs at least {MIN_LOSS_POINTS} finite losses; "
                               f"got {int(ok.sum())}")
    step, loss = step[ok], loss[ok]
    t, y = _binned(step, loss, bins)
    tenths = np.array_split(loss[np.argsort(step, kind="stable")], CAP_BLOCKS)
    means = np.array([b.mean() for b in tenths])
    se = np.array([b.std(ddof=1) / np.sqrt(len(b)) if len(b) > 1 else np.inf for b in tenths])
    bound = float(np.min(means + norm.ppf(level) * se))
    spread = float(np.ptp(y))
    failed = SmoothprobeError("f_star='auto' failed: the loss curve does not decrease like "
                              "f* + a·(t + t0)^(-b); pass f_star explicitly")
    if spread == 0:
        raise failed
    lower = 0.0 if loss.min() >= 0 else float(y.min()) - 2 * spread
    f_grid = np.linspace(lower, float(y.max()), F_POINTS)
    sse, where = _profile(t, y, f_grid)
    i = int(sse.argmin())
    curve = _Curve(t, y, lower)
    start = curve.start(f_grid[i], where[i])
    if not float(np.sum(curve.resid(start) ** 2)) < float(np.sum((y - y.mean()) ** 2)):
        raise failed
    params, best = curve.refine(start, fixed_f=False)
    if best > sse[i]:
        params, best = start, float(sse[i])

    residuals = curve.resid(params)
    r = _lag1(residuals)
    limit = best + chi2.ppf(level, 1) * best / max(len(y) - 4, 1) * (1 + r) / (1 - r)
    inside = np.flatnonzero(sse <= limit)
    if inside.size == 0:  # only the refined fit is within the limit: search out from it
        inside = np.array([int(np.abs(f_grid - params[0]).argmin())])
    value = float(np.clip(params[0], lower, means.min()))
    if inside[0] == 0 or params[0] <= f_grid[1]:
        interval = (lower, bound)
    else:
        low = _edge(curve, f_grid, where, int(inside[0]), 0, limit)
        high = _edge(curve, f_grid, where, int(inside[-1]), F_POINTS - 1, limit)
        interval = (low, min(high, bound))
    if params[0] > value:  # capped: the value is a tenth mean, so carry that mean's own error
        low_cap = value - norm.ppf(0.5 + level / 2) * float(se[means.argmin()])
        interval = (max(min(interval[0], low_cap), lower), interval[1])
    interval = (min(interval[0], value), max(interval[1], value))
    last = float(means[-1] + norm.ppf(level) * se[-1])
    degenerate = _degeneracy(curve, params, float(f_grid[1]), last, interval, level, len(loss), few)
    if degenerate is None and drift:
        degenerate = _drift(step, loss, value, interval, spread, bins, level)
    return FStarEstimate(value, interval, float(np.exp(params[1])), float(np.exp(params[2])),
                         float(np.exp(params[3])), len(y), degenerate)
