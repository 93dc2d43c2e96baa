"""Secant smoothness along the step actually taken, on the same batch (DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from smoothprobe.geometry import Geometry
from smoothprobe.probes.oracle import GradOracle
from smoothprobe.probes.result import ProbeResult, ratio
from smoothprobe.probes.vec import sub


class SecantProbe:
    """K_t = ‖∇f_B(x_{t+1}) − ∇f_B(x_t)‖_* / ‖x_{t+1} − x_t‖ in the run's geometry and in ℓ2.

    The measured quantity of Riabinin et al. 2026, "Where Does Warm-Up Come From?"
    (arXiv 2602.05813). The caller supplies g_t (unclipped, on batch B) and x_t; the oracle
    sits at x_{t+1} on the same batch with the same RNG state. Costs one forward+backward.
    Row columns: secant_K, secant_dg_dual, secant_dx_primal, secant_K_euclid, secant_dg_euclid,
    secant_dx_euclid, loss_after. Per-tensor rows: tensor, secant_K, secant_dg_dual,
    secant_dx_primal, secant_K_euclid. A zero step gives NaN ratios.
    """

    cost = 1.0

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry

    def measure(
        self, grad_before: Sequence[Tensor], params_before: Sequence[Tensor], oracle: GradOracle
    ) -> ProbeResult:
        """Evaluate the gradient at the oracle's (post-step) parameters and form the secants."""
        loss_after, grad_after = oracle.loss_and_grad()
        dg = sub(grad_after, grad_before)
        dx = sub(oracle.point(), params_before)
        dg_dual = self.geometry.dual_per_tensor(dg)
        dx_primal = self.geometry.primal_per_tensor(dx)
        euclid = Geometry("euclidean", self.geometry.names)
        dg_euclid = euclid.dual_per_tensor(dg)
        dx_euclid = euclid.primal_per_tensor(dx)
        row = {
            "secant_dg_dual": self.geometry.combine_dual(dg_dual),
            "secant_dx_primal": self.geometry.combine_primal(dx_primal),
            "secant_dg_euclid": euclid.combine_dual(dg_euclid),
            "secant_dx_euclid": euclid.combine_primal(dx_euclid),
            "loss_after": loss_after,
        }
        row["secant_K"] = ratio(row["secant_dg_dual"], row["secant_dx_primal"])
        row["secant_K_euclid"] = ratio(row["secant_dg_euclid"], row["secant_dx_euclid"])
        per_tensor: list[dict[str, float | str]] = [
            {
                "tensor": name,
                "secant_K": ratio(gd, xp),
                "secant_dg_dual": gd,
                "secant_dx_primal": xp,
                "secant_K_euclid": ratio(ge, xe),
            }
            for name, gd, xp, ge, xe in zip(
                self.geometry.names, dg_dual, dx_primal, dg_euclid, dx_euclid
            )
        ]
        return ProbeResult(row, per_tensor)
