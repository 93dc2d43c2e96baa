"""Quadratic f(x) = ½ (x − x*)ᵀ A (x − x*) over matrix-shaped parameters: f* = 0 and ∇²f = A exactly."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from smoothprobe.errors import SmoothprobeError
from smoothprobe.tasks.base import Batch, Task, batch_rng, model_device

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = ((16, 16), (16, 8), (8, 8))


class QuadraticModel(nn.Module):
    """The parameters x, held as a few matrices so that matrix norms (spectral, nuclear) apply."""

    def __init__(self, shapes: tuple[tuple[int, int], ...], init: Tensor) -> None:
        super().__init__()
        offsets = np.cumsum([0] + [r * c for r, c in shapes])
        for i, (r, c) in enumerate(shapes):
            chunk = init[offsets[i] : offsets[i + 1]].reshape(r, c).clone()
            self.register_parameter(f"w{i}", nn.Parameter(chunk))

    def forward(self) -> Tensor:
        """All parameters as one vector, in registration order (the order A refers to). A forward,
        so that wrappers which gather parameters around it (FSDP2) see it."""
        return torch.cat([p.reshape(-1) for p in self.parameters()])


class QuadraticTask(Task):
    """Known-Hessian problem with optional mini-batch noise σ·ξᵀ(x − x*) (zero mean, same Hessian).

    The spectrum of A is log-spaced in [lam_max / cond, lam_max] and rotated by a seeded orthogonal
    matrix, so A is dense. The noise term leaves every batch's Hessian equal to A.
    """

    rows = False  # a batch is one noise vector ξ, not examples

    name = "quadratic"
    f_star = 0.0

    def __init__(
        self,
        shapes: tuple[tuple[int, int], ...] = DEFAULT_SHAPES,
        cond: float = 100.0,
        lam_max: float = 1.0,
        noise: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if cond < 1:
            raise SmoothprobeError(f"cond must be >= 1. Got {cond}.")
        self.shapes, self.cond, self.lam_max, self.noise = tuple(shapes), cond, lam_max, noise
        self.seed, self.dtype = seed, dtype
        self.dim = sum(r * c for r, c in self.shapes)
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=gen, dtype=torch.float64))
        self.eigenvalues = lam_max * torch.logspace(
            -math.log10(cond), 0.0, self.dim, dtype=torch.float64
        )
        self.hessian = ((q * self.eigenvalues) @ q.T).to(dtype)
        self.hessian = 0.5 * (self.hessian + self.hessian.T)
        self.x_star = torch.randn(self.dim, generator=gen, dtype=torch.float64).to(dtype)
        self._x0 = self.x_star + torch.randn(self.dim, generator=gen, dtype=torch.float64).to(dtype)

    def build_model(self) -> QuadraticModel:
        return QuadraticModel(self.shapes, self._x0)

    def train_batch(self, step: int, micro: int = 0) -> Batch:
        if self.noise == 0:
            return torch.zeros(0, dtype=self.dtype)
        xi = batch_rng(self.seed, step, micro).standard_normal(self.dim)
        return torch.as_tensor(xi, dtype=self.dtype)

    def val_batches(self) -> list[Batch]:
        return [torch.zeros(0, dtype=self.dtype)]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        device = model_device(model)
        a, x_star = self.hessian.to(device), self.x_star.to(device)
        d = model() - x_star
        value = 0.5 * d @ (a @ d)
        if batch.numel():
            value = value + self.noise * batch.to(device) @ d
        return value

    def value(self, x: Tensor) -> float:
        """Exact noise-free f at a flat parameter vector (for tests and f* checks)."""
        d = x.to(self.x_star) - self.x_star
        return float(0.5 * d @ (self.hessian @ d))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "f_star": self.f_star,
            "dim": self.dim,
            "shapes": [list(s) for s in self.shapes],
            "cond": self.cond,
            "lam_max": self.lam_max,
            "noise": self.noise,
            "trace": float(self.eigenvalues.sum()),
        }
