"""Hessian trace by randomized estimators on exact Hessian-vector products."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.base import Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult
from smoothprobe.probes.vec import work_dtype

METHODS = ("hutchinson", "hutchpp")


class TraceProbe(Probe):
    """tr(H) by Hutchinson (1989) or Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021).

    Hutchinson averages zᵀHz over Rademacher z. Hutch++ spends a third of the `hvps` budget on
    a sketch Q = orth(H S), takes tr(QᵀHQ) exactly (a third) and runs Hutchinson on the
    deflated (I − QQᵀ)H(I − QQᵀ) with the rest; its standard error is that of the deflated
    part, conditional on Q. The random vectors are fresh at every step (`context.generator`),
    so a constant Hessian gives independent estimates whose mean converges to its trace. HVPs
    are applied one vector at a time; memory is the sketch, `hvps // 3` vectors.
    Row columns: trace, trace_se, trace_hvps.
    """

    name = "trace"
    heavy = True
    needs_hvp = True

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
        oracle = context.oracle
        params = oracle.params
        dtype = work_dtype(params)
        device = params[0].device
        n = sum(p.numel() for p in params)
        generator = context.generator(self.name)

        def rademacher() -> Tensor:
            return (2 * torch.randint(0, 2, (n,), generator=generator, device=device) - 1).to(dtype)

        exact_part = 0.0
        probes = self.hvps
        basis = None
        if self.method == "hutchpp":
            sketch = self.hvps // 3
            basis = torch.empty(sketch, n, dtype=dtype, device=device)
            for row in basis:
                row.copy_(oracle.hvp_flat(rademacher()))
            _orthonormalise_rows(basis)
            exact_part = sum(torch.dot(q, oracle.hvp_flat(q)).item() for q in basis)
            probes = self.hvps - 2 * sketch
        samples = []
        for _ in range(probes):
            z = rademacher()
            if basis is not None:
                z -= basis.T @ (basis @ z)
            samples.append(torch.dot(z, oracle.hvp_flat(z)).item())
        values = torch.tensor(samples, dtype=torch.float64)
        se = values.std(unbiased=True).item() / math.sqrt(probes)
        row = {"trace": exact_part + values.mean().item(), "trace_se": se}
        row["trace_hvps"] = float(self.hvps)
        return ProbeResult(row)


def _orthonormalise_rows(rows: Tensor) -> None:
    """Gram–Schmidt, twice, in place: the rows become orthonormal, or zero where a row lies in
    the span of the earlier ones (to √ε of its length)."""
    floor = torch.finfo(rows.dtype).eps ** 0.5
    for i, row in enumerate(rows):
        length = row.norm()
        for _ in range(2):
            row -= rows[:i].T @ (rows[:i] @ row)
        left = row.norm()
        if left <= floor * length:
            row.zero_()
        else:
            row /= left
