"""Directional curvature along a direction by one exact Hessian-vector product."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from smoothprobe.probes.oracle import GRAPH_COST, HVP_COST, GradOracle
from smoothprobe.probes.result import ProbeResult, ratio
from smoothprobe.probes.vec import dot


class HVPCurvatureProbe:
    """dᵀHd/‖d‖² from H·d by double backward (SDPA on the math kernel). Row column: curv_hvp."""

    cost = GRAPH_COST + HVP_COST

    def measure(self, oracle: GradOracle, direction: Sequence[Tensor]) -> ProbeResult:
        """Curvature along `direction` at the oracle's parameters (NaN for a zero direction)."""
        hd = oracle.hvp(direction)
        curv = ratio(dot(hd, direction).item(), dot(direction, direction).item())
        return ProbeResult({"curv_hvp": curv})
