"""f* = auto during training: re-estimate f* from the loss curve so far and move the schedule."""

from __future__ import annotations

import math
import warnings

import numpy as np

from smoothprobe.errors import SmoothprobeError
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
