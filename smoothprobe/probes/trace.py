"""Hessian trace by randomized estimators on exact Hessian-vector products."""

from __future__ import annotations

from smoothprobe.errors import SmoothprobeError
from smoothprobe.linalg.hutchpp import hutchpp
from smoothprobe.probes.base import Line, Panel, Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult
from smoothprobe.probes.vec import work_dtype

METHODS = ("hutchinson", "hutchpp")


class TraceProbe(Probe):
    """tr(H) by Hutch++ or Hutchinson (`smoothprobe.linalg.hutchpp`) with `hvps` products.

    Hutch++ spends a third of the budget on a sketch of H, a third on its exact part and the
    rest on Hutchinson over the deflated Hessian; Hutchinson averages zᵀHz over Rademacher z.
    The random vectors are fresh at every step (`context.generator`), so a constant Hessian gives
    independent estimates whose mean converges to its trace. Row columns: trace, trace_se,
    trace_hvps.
    """

    name = "trace"
    heavy = True
    needs_hvp = True
    columns = ("trace", "trace_se", "trace_hvps")
    k_columns = ("trace",)
    panel = Panel("trace (Hutch++ ± 2 s.e.)", (Line("trace", band="trace_se"),), place=2)

    def __init__(self, method: str = "hutchpp", hvps: int = 30) -> None:
        if method not in METHODS:
            raise SmoothprobeError(f"method must be one of {METHODS}; got {method!r}")
        least = 6 if method == "hutchpp" else 2
        if hvps < least:
            raise SmoothprobeError(f"hvps must be at least {least} for {method}; got {hvps}")
        self.method = method
        self.hvps = hvps

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Estimate the trace of the Hessian at x_{t+1}."""
        params = context.oracle.params
        estimate = hutchpp(context.oracle.hvp_flat, sum(p.numel() for p in params), self.hvps,
                           None if self.method == "hutchpp" else 0, generator=context.generator(self.name),
                           dtype=work_dtype(params), device=params[0].device)
        return ProbeResult({"trace": estimate.trace, "trace_se": estimate.se, "trace_hvps": float(self.hvps)})
