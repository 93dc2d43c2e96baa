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
    yet show where it saturates."""

    def __init__(self, scheduler: AdaptiveWarmup, every: int, initial: float = 0.0) -> None:
        if every < 1:
            raise SmoothprobeError(f"f* refit interval must be >= 1, got {every}")
        self.scheduler, self.every = scheduler, every
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
        if estimate.interval[1] >= self.losses[0]:
            return
        try:
            self.scheduler.set_f_star(estimate.value)
        except SmoothprobeError as exc:
            warnings.warn(f"f* estimate {estimate.value:.4g} at step {step} not used: {exc}", RuntimeWarning,
                          stacklevel=2)


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
