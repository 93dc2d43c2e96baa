"""Secant smoothness along the step actually taken, on the same batch (docs/design.md §2)."""

from __future__ import annotations

from smoothprobe.geometry import Geometry
from smoothprobe.probes.base import Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult, ratio
from smoothprobe.probes.vec import dot, sub


class SecantProbe(Probe):
    """K_t = ‖∇f_B(x_{t+1}) − ∇f_B(x_t)‖_* / ‖x_{t+1} − x_t‖ in the run's geometry and in ℓ2.

    The measured quantity of Riabinin et al. 2026, "Where Does Warm-Up Come From?"
    (arXiv 2602.05813). Reads g_t (unclipped, on batch B) and the update from the context and
    evaluates the gradient at x_{t+1} on the same batch with the same RNG state: one
    forward+backward, shared with the other probes through `context.gradient()`.
    Row columns: secant_K, secant_dg_dual, secant_dx_primal, secant_K_euclid, secant_dg_euclid,
    secant_dx_euclid, loss_after, and the batch loss's slope −⟨g_t, Δx⟩ and curvature ⟨Δg, Δx⟩ along
    the step (secant_slope, secant_curv: f(x_t + τΔx) ≈ f − τ·slope + τ²·curv/2, which the closed
    loop's step test reads). Per-tensor rows: tensor, family, secant_K, secant_dg_dual,
    secant_dx_primal, secant_K_euclid. A zero step gives NaN ratios.
    """

    name = "secant"
    columns = ("secant_K", "secant_dg_dual", "secant_dx_primal", "secant_K_euclid", "secant_dg_euclid",
               "secant_dx_euclid", "loss_after", "secant_slope", "secant_curv")
    k_columns = ("secant_K", "secant_K_euclid")

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Form the secants from g_t, ∇f_B(x_{t+1}) and the update."""
        geometry = context.geometry
        loss_after, grad_after = context.gradient()
        dg = sub(grad_after, context.grad_before)
        dx = context.update
        dg_dual = geometry.dual_per_tensor(dg)
        dx_primal = geometry.primal_per_tensor(dx)
        euclid = Geometry("euclidean", geometry.names)
        dg_euclid = euclid.dual_per_tensor(dg)
        dx_euclid = euclid.primal_per_tensor(dx)
        row = {
            "secant_dg_dual": geometry.combine_dual(dg_dual),
            "secant_dx_primal": geometry.combine_primal(dx_primal),
            "secant_dg_euclid": euclid.combine_dual(dg_euclid),
            "secant_dx_euclid": euclid.combine_primal(dx_euclid),
            "loss_after": loss_after,
            "secant_slope": -float(dot(context.grad_before, dx)),
            "secant_curv": float(dot(dg, dx)),
        }
        row["secant_K"] = ratio(row["secant_dg_dual"], row["secant_dx_primal"])
        row["secant_K_euclid"] = ratio(row["secant_dg_euclid"], row["secant_dx_euclid"])
        per_tensor: list[dict[str, float | str]] = [
            {
                "tensor": name,
                "family": geometry.family,
                "secant_K": ratio(gd, xp),
                "secant_dg_dual": gd,
                "secant_dx_primal": xp,
                "secant_K_euclid": ratio(ge, xe),
            }
            for name, gd, xp, ge, xe in zip(geometry.names, dg_dual, dx_primal, dg_euclid, dx_euclid)
        ]
        return ProbeResult(row, per_tensor)
