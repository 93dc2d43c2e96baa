"""Curvature in the optimizer's own norm: a certified lower bound on ‖H‖ from primal to dual."""

from __future__ import annotations

import itertools

import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.linalg.dual_power import dual_power
from smoothprobe.probes.base import Line, Panel, Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult


class CurvDualProbe(Probe):
    """sup_v ‖Hv‖_* / ‖v‖ in the run's geometry, from below, by the mixed-norm power method
    (`smoothprobe.linalg.dual_power`).

    The smoothness constant a method with this geometry's LMO feels: ℓ∞ → ℓ1 for sign methods,
    spectral → nuclear (per tensor, combined by max/sum) for Muon, ‖H‖₂ for Frobenius on one
    tensor. The step v ← argmax_{‖u‖ ≤ 1} ⟨Hv, u⟩ is the negated LMO of −Hv; every ratio is
    attained by an actual v, so the best one is a lower bound on the operator norm. Computing the
    exact value is NP-hard for ℓ∞ → ℓ1, so it restarts: first from the update x_{t+1} − x_t (so
    on a quadratic secant_K ≤ curv_dual), then from `restarts` Gaussian vectors drawn fresh per
    (seed, step). Each start runs at most `iterations` HVPs and stops early once the ratio gains
    less than `tol` (relative). Row columns: curv_dual, curv_dual_hvps.

    Example: on one vector with the Frobenius (here ℓ2) norm the bound is the spectral norm.

    >>> import torch
    >>> from smoothprobe.geometry import Geometry
    >>> from smoothprobe.probes.oracle import GradOracle
    >>> x = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    >>> h = torch.tensor([[2.0, 1.0, 0.0], [1.0, -4.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    >>> oracle = GradOracle(torch.nn.ParameterList([x]), lambda: 0.5 * x @ h @ x, [x])
    >>> zero = [torch.zeros_like(x)]
    >>> context = ProbeContext(oracle, Geometry("frobenius", ["x"]), zero, zero)
    >>> row = CurvDualProbe(iterations=50, tol=0.0).measure(context).row
    >>> round(row["curv_dual"], 6), round(torch.linalg.eigvalsh(h).abs().max().item(), 6)
    (4.162278, 4.162278)
    """

    name = "curv_dual"
    heavy = True
    needs_hvp = True
    columns = ("curv_dual", "curv_dual_hvps")
    k_columns = ("curv_dual",)
    panel = Panel("optimizer's norm: secant_K • ≤ curv_dual —",
                  (Line("secant_K", ".", alone=False), Line("curv_dual")), place=4)

    def __init__(self, iterations: int = 6, restarts: int = 2, tol: float = 1e-4) -> None:
        if iterations < 1:
            raise SmoothprobeError(f"iterations must be at least 1; got {iterations}")
        if restarts < 0:
            raise SmoothprobeError(f"restarts must be at least 0; got {restarts}")
        if not 0 <= tol < 1:  # nan fails too
            raise SmoothprobeError(f"tol must be in [0, 1) (0: run every iteration); got {tol}")
        self.iterations = iterations
        self.restarts = restarts
        self.tol = tol

    def measure(self, context: ProbeContext) -> ProbeResult:
        """The best ratio ‖Hv‖_* / ‖v‖ found at x_{t+1}."""
        geometry, oracle = context.geometry, context.oracle
        generator = context.generator(self.name)
        gaussians = ([torch.randn(p.shape, generator=generator, device=p.device).to(p.dtype) for p in oracle.params]
                     for _ in range(self.restarts))
        found = dual_power(oracle.hvp, itertools.chain([context.update], gaussians), geometry.primal_above,
                           geometry.dual_below, lambda hv: [-u for u in geometry.lmo(hv)], self.iterations, self.tol)
        return ProbeResult({"curv_dual": found.bound, "curv_dual_hvps": float(found.matvecs)})
