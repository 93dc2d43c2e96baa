"""Ordinary schedules: optional warm-up, then constant, cosine, linear or warm-up-stable-decay."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from smoothprobe.errors import SmoothprobeError

DECAYS = ("constant", "cosine", "linear", "wsd")
WARMUP_SHAPES = ("linear", "cosine")


class WarmupDecay(LRScheduler):
    """Each group's lr = base lr × factor(step), a closed form of the step alone (exact resume).

    Step t (0-based) runs at factor(t). Warm-up: factor rises to 1 over `warmup_steps`, starting at
    1/warmup_steps (linear) so no step is wasted at lr 0. Decay runs from the end of warm-up to
    `total_steps`, ending at `floor` (a fraction of the base lr); `wsd` holds 1 and decays linearly
    over the last `decay_fraction` of the run (Hu et al., 2024, MiniCPM).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        decay: str = "cosine",
        warmup_shape: str = "linear",
        floor: float = 0.1,
        decay_fraction: float = 0.2,
        last_epoch: int = -1,
    ) -> None:
        if decay not in DECAYS:
            raise SmoothprobeError(f"decay must be one of {DECAYS}. Got {decay!r}.")
        if warmup_shape not in WARMUP_SHAPES:
            raise SmoothprobeError(f"warmup_shape must be one of {WARMUP_SHAPES}. Got {warmup_shape!r}.")
        if not 0 <= warmup_steps <= total_steps:
            raise SmoothprobeError(f"warmup_steps must lie in [0, total_steps]. Got {warmup_steps}.")
        if not 0 <= floor <= 1 or not 0 < decay_fraction <= 1:
            raise SmoothprobeError(f"floor and decay_fraction must lie in [0, 1]. Got {floor}, {decay_fraction}.")
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.decay, self.warmup_shape = decay, warmup_shape
        self.floor, self.decay_fraction = floor, decay_fraction
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base lr at 0-based step `step`."""
        w, total = self.warmup_steps, self.total_steps
        if step < w:
            frac = (step + 1) / w
            return frac if self.warmup_shape == "linear" else 0.5 * (1 - math.cos(math.pi * frac))
        if self.decay == "constant":
            return 1.0
        if self.decay == "wsd":
            decay_len = max(1, round(self.decay_fraction * (total - w)))
            progress = (step - (total - decay_len)) / decay_len
            if progress <= 0:
                return 1.0
            return 1 - (1 - self.floor) * min(progress, 1.0)
        progress = min(1.0, (step - w) / max(1, total - w))
        return self.floor + (1 - self.floor) * decay_shape(self.decay, progress)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def decay_shape(kind: str, progress: float) -> float:
    """Share of the decay left at `progress` (0 → 1): a half cosine for 'cosine', else linear."""
    return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress


def warmup_steps(warmup: float, total_steps: int) -> int:
    """Warm-up length in steps: values below 1 are a fraction of `total_steps`, others a count."""
    if warmup < 0:
        raise SmoothprobeError(f"warmup must be >= 0. Got {warmup}.")
    steps = round(warmup * total_steps) if warmup < 1 else int(warmup)
    return min(steps, total_steps)
