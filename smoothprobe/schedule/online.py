"""Online sources for the adaptive schedule: f* from the loss curve so far, constants from the probes so far."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import fit_frame
from smoothprobe.fit.data import MIN_POINTS
from smoothprobe.fit.fstar import MIN_LOSS_POINTS, estimate_f_star
from smoothprobe.schedule.adaptive import AdaptiveWarmup


class OnlineFStar:
    """Every `every` steps, fit the saturating power law of `estimate_f_star` to the losses seen so
    far and hand the estimate to the scheduler. Until the first estimate f* is `initial` (0 for
    cross-entropy). An estimate whose interval reaches the first loss is ignored: the curve does not
    yet show where it saturates, and so is a degenerate one (`FStarEstimate.degenerate`: too few
    losses, f* above the recent loss, no saturation); `skipped` says why. With `bound_warmup`, each
    estimate also bounds the warm-up at the step where the fitted curve reaches f* + Δ'
    (`crossing_step`): the bound comes from the measured loss curve, not a hand-set fraction."""

    def __init__(self, scheduler: AdaptiveWarmup, every: int, initial: float = 0.0,
                 bound_warmup: bool = True) -> None:
        if every < 1:
            raise SmoothprobeError(f"f* refit interval must be >= 1, got {every}")
        self.scheduler, self.every, self.bound_warmup = scheduler, every, bound_warmup
        self.skipped: str | None = None
        self.steps: list[int] = []
        self.losses: list[float] = []
        scheduler.set_f_star(initial)

    def observe(self, step: int, loss: float) -> None:
        """Record the step's loss; refit on the cadence."""
        if math.isfinite(loss):
            self.steps.append(step)
            self.losses.append(loss)
        if (step + 1) % self.every or len(self.losses) < MIN_LOSS_POINTS:
            return
        try:
            estimate = estimate_f_star(np.array(self.steps), np.array(self.losses))
        except SmoothprobeError as exc:
            warnings.warn(f"f* refit at step {step} failed: {exc}", RuntimeWarning, stacklevel=2)
            return
        if estimate.interval[1] >= self.losses[0] or estimate.degenerate is not None:
            self.skipped = estimate.degenerate or "its interval reaches the first loss"
            return
        self.skipped = None
        try:
            self.scheduler.set_f_star(estimate.value)
        except SmoothprobeError as exc:
            warnings.warn(f"f* estimate {estimate.value:.4g} at step {step} not used: {exc}", RuntimeWarning,
                          stacklevel=2)
            return
        if self.bound_warmup and self.scheduler.constants is not None and self.scheduler.phase == "warmup":
            self.scheduler.max_warmup = crossing_step(estimate.a, estimate.b, estimate.t0, self.steps[0],
                                                      self.scheduler.last_record()["delta_peak"],
                                                      step + 1, self.scheduler.total_steps)


def crossing_step(a: float, b: float, t0: float, first_step: int, gap: float, now: int,
                  total_steps: int | None) -> int | None:
    """Step at which L(t) = f* + a·(t − first_step + t0)^(−b) reaches f* + `gap`, if after `now`
    and before `total_steps`; else None (no bound)."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (a, b, gap)):
        return None
    t = (a / gap) ** (1.0 / b) - t0 + first_step
    if not math.isfinite(t) or t < now or (total_steps is not None and t >= total_steps):
        return None
    return math.ceil(t)


class OnlineRefit:
    """Source (c) of the constants: every `every` steps, fit K(Δ) to the probe column recorded so far
    (no bootstrap) and adopt the fitted constants when the fit calls the model supported, scaled so
    η still peaks at the schedule's `lr`. Until then the schedule keeps its own constants."""

    def __init__(self, scheduler: AdaptiveWarmup, every: int, column: str = "secant_K") -> None:
        if every < 1:
            raise SmoothprobeError(f"refit interval must be >= 1, got {every}")
        self.scheduler, self.every, self.column = scheduler, every, column
        self.rows: list[dict] = []
        self.status = "waiting"

    def observe(self, step: int, row: dict) -> None:
        """Keep the step's probe value; refit on the cadence once enough probed steps exist."""
        value = row.get(self.column)
        if value is not None and math.isfinite(value):
            self.rows.append({"step": step, "loss": row["loss"], self.column: value})
        if (step + 1) % self.every or len(self.rows) < MIN_POINTS:
            return
        try:
            fit = fit_frame(pd.DataFrame(self.rows), f_star=self.scheduler.f_star, column=self.column,
                            bootstrap=0)
        except SmoothprobeError as exc:
            self.status = f"failed: {exc}"
            return
        if fit.status != "supported":
            self.status = fit.status
        elif fit.K0 > 0 and fit.K_rho > 0:
            scale = fit.eta_max / self.scheduler.lr
            self.scheduler.set_constants(fit.K0 * scale, fit.K1 * scale, fit.K_rho * scale, fit.rho)
            self.status = "adopted"
        else:
            self.status = "supported but without a warm-up peak (K0 or K_rho is 0): kept"

    def state_dict(self) -> dict:
        """The status for a checkpoint (the probe rows are refilled from steps.jsonl on resume)."""
        return {"status": self.status}

    def load_state_dict(self, state: dict) -> None:
        self.status = str(state["status"])


PILOT_BOOTSTRAP = 50
"""Bootstrap resamples of the pilot's fit (its verdict needs the interval of K's rise)."""


class Pilot:
    """The closed loop in one run: probe the first `steps` steps under the practical schedule, fit
    K(Δ) with f* = auto to them, and hand the rest of the run to the fit.

    f* is estimated from the pilot's losses, or set to their lower bound where the pilot is too
    short to place it (`fit_pilot`). The fit must pass `SmoothnessFit.schedule_problem` (a supported
    verdict, physical constants, a sound f*, a peak Δ' the data locate); otherwise the practical schedule keeps going and `status` says why (unless
    `allow_unsupported`). The fit's peak is rescaled to `lr`, or kept (its own η_max) when `lr` is
    None. The warm-up is bounded by the measurements only: the step at which the pilot's fitted
    loss curve L(t) = f* + a·(t + t0)^(−b) is predicted to reach f* + Δ'.
    """

    def __init__(self, steps: int, *, lr: float | None, min_lr_ratio: float, total_steps: int,
                 decay: str = "cosine", allow_unsupported: bool = False) -> None:
        if steps < 1 or steps >= total_steps:
            raise SmoothprobeError(f"pilot must be between 1 and total_steps - 1 steps, got {steps}")
        self.steps, self.lr, self.min_lr_ratio = steps, lr, min_lr_ratio
        self.total_steps, self.decay, self.allow_unsupported = total_steps, decay, allow_unsupported
        self.rows: list[dict] = []
        self.status = "probing"
        self.fit = None

    @staticmethod
    def fit_pilot(rows: pd.DataFrame):
        """K(Δ) fitted to the pilot with f* = auto; where a pilot this short cannot place f* (the
        estimate is degenerate), with f* = the losses' lower bound min(0, least loss) instead,
        which only overstates Δ; a fit-driven schedule keeps that f* for the rest of the run."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fit = fit_frame(rows, f_star="auto", bootstrap=PILOT_BOOTSTRAP)
        if (fit.f_star_fit or {}).get("degenerate"):
            fit = fit_frame(rows, f_star=min(0.0, float(rows["loss"].min())), bootstrap=PILOT_BOOTSTRAP)
            fit.f_star_source = "lower bound (the pilot's loss curve cannot place f*)"
        return fit

    def observe(self, step: int, row: dict, scheduler: AdaptiveWarmup) -> AdaptiveWarmup | None:
        """Keep the step's row; at the pilot's last step fit and return the fit-driven scheduler
        (or None: keep the current one)."""
        self.rows.append({k: v for k, v in row.items() if isinstance(v, (int, float)) or v is None})
        if step != self.steps - 1:
            return None
        try:
            self.fit = self.fit_pilot(pd.DataFrame(self.rows))
        except SmoothprobeError as exc:
            self.status = f"kept the practical schedule: the pilot's fit failed ({exc})"
            return None
        problem = self.fit.schedule_problem()
        if problem is not None and not self.allow_unsupported:
            self.status = f"kept the practical schedule: {problem}"
            return None
        smoothed = scheduler.last_record().get("loss_smoothed") or row["loss"]
        peak = self.lr if self.lr is not None else self.fit.eta_max
        scale = peak / self.fit.eta_max
        gap = smoothed - self.fit.f_star
        start = float(self.fit.eta(gap)) * scale if gap > 0 else peak * self.min_lr_ratio
        curve = self.fit.f_star_fit or {}
        bound = crossing_step(curve.get("a"), curve.get("b"), curve.get("t0"), self.rows[0]["step"],
                              self.fit.delta_peak, step + 1, self.total_steps)
        new = AdaptiveWarmup.from_fit(
            scheduler.optimizer, self.fit, lr=self.lr, min_lr_ratio=self.min_lr_ratio,
            allow_unsupported=self.allow_unsupported, total_steps=self.total_steps, decay=self.decay,
            initial_lr=min(max(start, peak * self.min_lr_ratio), peak), reduce=scheduler._reduce,
            max_warmup=bound, cooldown=scheduler.cooldown)
        new.last_epoch = scheduler.last_epoch  # continue the run's step count (the decay ends at total_steps)
        self.status = "fit-driven" + ("" if bound is None else f" (warm-up bounded at step {bound})")
        return new
