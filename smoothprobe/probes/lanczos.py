"""Top Hessian eigenvalues by Lanczos iteration on exact Hessian-vector products."""

from __future__ import annotations

import torch

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.oracle import GRAPH_COST, HVP_COST, GradOracle
from smoothprobe.probes.result import ProbeResult
from smoothprobe.probes.vec import work_dtype


class LanczosProbe:
    """Largest (algebraic) k Hessian eigenvalues by Lanczos with full re-orthogonalisation.

    Lanczos (1950); full re-orthogonalisation ("twice is enough", Parlett 1998) keeps the basis
    orthogonal so Ritz values converge without ghosts. Stops after `steps` HVPs or when every
    wanted Ritz pair has residual ‖Hy − θy‖ = β_j·|s_j| ≤ tol·max|θ|. The start vector is
    Gaussian from a torch.Generator seeded with `seed`. Memory: `steps` parameter-sized vectors.
    Row columns: top_eig, top_eig_residual, top_eig_2, top_eig_2_residual, ... (for k > 1),
    lanczos_hvps.
    """

    def __init__(self, k: int = 1, steps: int = 20, tol: float = 1e-6, seed: int = 0) -> None:
        if k < 1:
            raise SmoothprobeError(f"k must be at least 1; got {k}")
        if steps < k:
            raise SmoothprobeError(f"steps must be at least k={k}; got {steps}")
        self.k = k
        self.steps = steps
        self.tol = tol
        self.seed = seed

    @property
    def cost(self) -> float:
        """Forward+backward units at most: the gradient graph plus `steps` HVPs."""
        return GRAPH_COST + self.steps * HVP_COST

    def measure(self, oracle: GradOracle) -> ProbeResult:
        """Run Lanczos on the Hessian at the oracle's parameters."""
        params = oracle.params
        dtype = work_dtype(params)
        device = params[0].device
        n = sum(p.numel() for p in params)
        steps = min(self.steps, n)
        generator = torch.Generator(device=device).manual_seed(self.seed)
        basis = torch.zeros(steps, n, dtype=dtype, device=device)
        start = torch.randn(n, generator=generator, dtype=dtype, device=device)
        basis[0] = start / start.norm()
        alphas: list[float] = []
        betas: list[float] = []
        for j in range(steps):
            w = oracle.hvp_flat(basis[j])
            alphas.append(torch.dot(basis[j], w).item())
            q = basis[: j + 1]
            for _ in range(2):
                w = w - q.T @ (q @ w)
            betas.append(w.norm().item())
            theta, residual = self._ritz(alphas, betas)
            wanted = min(self.k, j + 1)
            done = bool((residual[-wanted:] <= self.tol * theta.abs().max()).all())
            if (done and j + 1 >= self.k) or j + 1 == steps or betas[-1] == 0:
                break
            basis[j + 1] = w / betas[-1]
        row: dict[str, float] = {}
        for i in range(min(self.k, len(alphas))):
            suffix = "" if i == 0 else f"_{i + 1}"
            row[f"top_eig{suffix}"] = theta[-1 - i].item()
            row[f"top_eig{suffix}_residual"] = residual[-1 - i].item()
        row["lanczos_hvps"] = float(len(alphas))
        return ProbeResult(row)

    @staticmethod
    def _ritz(alphas: list[float], betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz values (ascending) of the tridiagonal T_j and their residual norms β_j·|s_j|."""
        off = torch.tensor(betas[:-1], dtype=torch.float64)
        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        tri += torch.diag(off, 1) + torch.diag(off, -1)
        theta, vectors = torch.linalg.eigh(tri)
        return theta, betas[-1] * vectors[-1].abs()
