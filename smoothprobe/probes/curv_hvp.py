"""Directional curvature along the update by one exact Hessian-vector product."""

from __future__ import annotations

from smoothprobe.probes.base import Line, Panel, Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult, ratio
from smoothprobe.probes.vec import dot

UPDATE_PANEL = "dᵀHd/‖d‖² on the update: FD —, HVP --"
"""The report panel curv_hvp shares with curv_fd."""


class CurvHVPProbe(Probe):
    """dᵀHd/‖d‖² at x_{t+1} for the update d, from H·d by double backward (SDPA on the math
    kernel). Under the Recorder H·d comes from the create_graph backward of the gradient the
    secant probe reads (`ProbeContext.update_hvp`), so the probe's own cost is one double
    backward. Row column: curv_hvp (NaN for a zero update).
    """

    name = "curv_hvp"
    needs_hvp = True
    hvp_of_update = True
    columns = ("curv_hvp",)
    k_columns = ("curv_hvp",)
    panel = Panel(UPDATE_PANEL, (Line("curv_hvp", "--"),), place=3.1)

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Curvature along the update at the oracle's parameters."""
        direction = context.update
        hd = context.update_hvp()
        curv = ratio(dot(hd, direction).item(), dot(direction, direction).item())
        return ProbeResult({"curv_hvp": curv})
