"""Hessian trace by randomized estimators on exact Hessian-vector products."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.oracle import GRAPH_COST, HVP_COST, GradOracle
from smoothprobe.probes.result import ProbeResult
from smoothprobe.probes.vec import work_dtype

METHODS = ("hutchinson", "hutchpp")


class TraceProbe:
    """tr(H) by Hutchinson (1989) or Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021).

    Hutchinson averages zᵀHz over Rademacher z. Hutch++ spends a third of the `hvps` budget on
    a sketch Q = orth(H S), takes tr(QᵀHQ) exactly (a third) and runs Hutchinson on the
    deflated (I − QQᵀ)H(I − QQᵀ) with the rest; its standard error is that of the deflated
    part, conditional on Q. Vectors come from a torch.Generator seeded with `seed`.
    Row columns: trace, trace_se, trace_hvps.
    """

    def __init__(self, method: str = "hutchpp", hvps: int = 30, seed: int = 0) -> None:
        if method not in METHODS:
            raise SmoothprobeError(f"method must be one of {METHODS}; got {method!r}")
        least = 6 if method == "hutchpp" else 2
        if hvps < least:
            raise SmoothprobeError(f"hvps must be at least {least} for {method}; got {hvps}")
        self.method = method
        self.hvps = hvps
        self.seed = seed

    @property
    def cost(self) -> float:
        """Forward+backward units: the gradient graph plus `hvps` HVPs."""
        return GRAPH_COST + self.hvps * HVP_COST

    def measure(self, oracle: GradOracle) -> ProbeResult:
        """Estimate the trace of the Hessian at the oracle's parameters."""
        params = oracle.params
        dtype = work_dtype(params)
        device = params[0].device
        n = sum(p.numel() for p in params)
        generator = torch.Generator(device=device).manual_seed(self.seed)

        def rademacher(count: int) -> Tensor:
            signs = torch.randint(0, 2, (count, n), generator=generator, device=device)
            return (2 * signs - 1).to(dtype)

        def apply(vectors: Tensor) -> Tensor:
            return torch.stack([oracle.hvp_flat(v) for v in vectors])

        exact_part = 0.0
        probes = self.hvps
        projector = None
        if self.method == "hutchpp":
            sketch = self.hvps // 3
            projector = torch.linalg.qr(apply(rademacher(sketch)).T).Q
            exact_part = torch.trace(projector.T @ apply(projector.T).T).item()
            probes = self.hvps - 2 * sketch
        z = rademacher(probes)
        if projector is not None:
            z = z - (z @ projector) @ projector.T
        samples = (z * apply(z)).sum(dim=1)
        se = samples.std(unbiased=True).item() / math.sqrt(probes)
        row = {"trace": exact_part + samples.mean().item(), "trace_se": se}
        row["trace_hvps"] = float(self.hvps)
        return ProbeResult(row)
