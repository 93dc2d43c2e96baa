"""Directional curvature along a direction from a difference of gradients (docs/design.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.base import Line, Panel, Probe, ProbeContext
from smoothprobe.probes.curv_hvp import UPDATE_PANEL
from smoothprobe.probes.oracle import GradOracle
from smoothprobe.probes.result import ProbeResult, ratio
from smoothprobe.probes.vec import dot, sub

MAX_SCALE = 1000.0
"""Largest multiple of the rounding-optimal step: beyond it the difference measures far from x."""


class CurvFDProbe(Probe):
    """dᵀHd/‖d‖² ≈ ⟨g(x + s₊) − g(x − s₋), s⟩/‖s‖², s = s₊ + s₋, without double backward.

    d is the update x_{t+1} − x_t and x = x_{t+1}.
    The step is h·d with ‖h·d‖ = scale · u^(1/2) (forward) or u^(1/3) (central) · max(‖x‖, 1),
    u the machine epsilon of the coarsest parameter dtype (the usual truncation/rounding
    balance). s is the perturbation actually stored after rounding to the parameter dtype, so
    bf16 parameters measure the curvature along the representable step. Parameters are saved
    and copied back, bit for bit (which invalidates a kept HVP graph: `moves_parameters`, so the
    registry runs this probe last). Forward difference costs one forward+backward on top of `context.gradient()`,
    which the secant probe shares; central differences cost two.
    Row columns: curv_fd, curv_fd_step (‖s‖, Euclidean).
    """

    name = "curv_fd"
    moves_parameters = True
    columns = ("curv_fd", "curv_fd_step")
    k_columns = ("curv_fd",)
    panel = Panel(UPDATE_PANEL, (Line("curv_fd"),), place=3)

    def __init__(self, central: bool = False, scale: float = 1.0) -> None:
        if not 0 < scale <= MAX_SCALE:  # nan fails too
            raise SmoothprobeError(f"scale must be in (0, {MAX_SCALE:g}] (a multiple of the rounding-optimal "
                                   f"step); got {scale}")
        self.central = central
        self.scale = scale

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Curvature along the update at x_{t+1}."""
        oracle, direction = context.oracle, context.update
        d_norm = dot(direction, direction).sqrt().item()
        if d_norm == 0:
            return ProbeResult({"curv_fd": float("nan"), "curv_fd_step": 0.0})
        saved = oracle.snapshot()
        eps = max(torch.finfo(x.dtype).eps for x in saved)
        x_norm = dot(saved, saved).sqrt().item()
        h = self.scale * eps ** (1 / 3 if self.central else 1 / 2) * max(x_norm, 1.0) / d_norm
        if not self.central:  # g(x) before the parameters move: the context may hold it already
            g_minus = context.gradient()[1]
        try:
            g_plus, s_plus = self._gradient_at(oracle, direction, h, saved)
            if self.central:
                g_minus, s_minus = self._gradient_at(oracle, direction, -h, saved)
            else:
                s_minus = [torch.zeros_like(s) for s in s_plus]
        finally:
            oracle.move_to(saved)
        step = sub(s_plus, s_minus)
        curv = ratio(dot(sub(g_plus, g_minus), step).item(), dot(step, step).item())
        return ProbeResult({"curv_fd": curv, "curv_fd_step": dot(step, step).sqrt().item()})

    @staticmethod
    def _gradient_at(
        oracle: GradOracle, direction: Sequence[Tensor], h: float, saved: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Gradient at x + h·d (as stored in the parameters' dtype) and that stored perturbation."""
        moved = [torch.add(x, d.to(x.dtype), alpha=h) for x, d in zip(saved, direction, strict=True)]
        oracle.move_to(moved)
        return oracle.loss_and_grad()[1], sub(moved, saved)
