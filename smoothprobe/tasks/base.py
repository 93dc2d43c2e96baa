"""What every built-in task provides: a model, deterministic batches, a loss and (maybe) f*."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

Batch = Any


def batch_rng(seed: int, step: int, micro: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, step, micro): batches repeat exactly on resume."""
    return np.random.default_rng(np.random.SeedSequence([seed, step + 2**31, micro]))


class Task(ABC):
    """A training problem. Batches are pure functions of (seed, step), so a run has no loader state."""

    name: str
    f_star: float | None = None
    rows: bool = True
    """Batches hold examples along dim 0 and the loss is their mean, so exact HVPs may be taken over
    row pieces (`hvp_chunks`); False where a batch is one draw (the quadratic task's noise vector)."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (seed torch before calling for reproducible weights)."""

    @abstractmethod
    def train_batch(self, step: int, micro: int = 0) -> Batch:
        """Micro-batch `micro` of training step `step`, on the CPU."""

    @abstractmethod
    def val_batches(self) -> list[Batch]:
        """The fixed validation batches, identical at every evaluation."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Mean loss of `model` on `batch` (moved to the model's device here)."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-ready facts about the task for run.json (f*, sizes, data source)."""


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device
