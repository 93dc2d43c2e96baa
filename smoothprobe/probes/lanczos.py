"""Extreme Hessian eigenvalues (both ends) by Lanczos iteration on exact Hessian-vector products."""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.base import Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult
from smoothprobe.probes.vec import work_dtype

CONVERGED_TOL = 0.01
"""An end is converged when its Ritz residual is at most this fraction of |θ|."""


class LanczosProbe(Probe):
    """The k largest and k smallest (algebraic) Hessian eigenvalues from one Lanczos run.

    Lanczos (1950). Both ends come from the same tridiagonal T_j, so an indefinite Hessian
    reports its negative end too; hessian_norm = max(|top_eig|, |bottom_eig|) is ‖H‖₂ (the
    largest-magnitude eigenvalue may be the negative one). Stops after `steps` HVPs or when
    every wanted Ritz pair at both ends has residual ‖Hy − θy‖ = β_j·|s_j| ≤ tol·max|θ|.

    What a residual r certifies: θ lies within r of *some* eigenvalue of H, not necessarily
    the extreme one. `top_eig_converged` / `bottom_eig_converged` say r ≤ converged_tol·|θ| (1 %
    by default). An end that has not converged is only a bound (Cauchy interlacing):
    top_eig ≤ λ_max and bottom_eig ≥ λ_min; the bottom end of an ill-conditioned H converges
    last (on the built-in quadratic, spectrum [0.01, 1], it takes far more than 20 HVPs).

    Memory: for k = 1 the iteration keeps three vectors (the three-term recurrence, each new
    vector re-orthogonalised against the previous two); in floating point this loses global
    orthogonality and may repeat converged Ritz values, but the extreme Ritz values and their
    residual bounds stay valid (Paige 1980). For k > 1 a repeated value would pose as the second
    eigenvalue, so the basis (`steps` vectors in the working dtype) is kept for full
    re-orthogonalisation ("twice is enough", Parlett 1998). The start vector is Gaussian, fresh
    at every step from `context.generator`.
    Row columns: top_eig, top_eig_residual, top_eig_converged, bottom_eig, bottom_eig_residual,
    bottom_eig_converged, hessian_norm, top_eig_2, top_eig_2_residual, bottom_eig_2, ... (for
    k > 1), lanczos_hvps.

    Example on a planted indefinite spectrum:

    >>> import torch
    >>> from smoothprobe.geometry import Geometry
    >>> from smoothprobe.probes.oracle import GradOracle
    >>> x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    >>> model = torch.nn.ParameterList([x])
    >>> h = torch.diag(torch.tensor([3.0, -10.0, 1.0, 0.5], dtype=torch.float64))
    >>> oracle = GradOracle(model, lambda: 0.5 * x @ h @ x, [x])
    >>> zero = [torch.zeros_like(x)]
    >>> context = ProbeContext(oracle, Geometry("euclidean", ["0"]), zero, zero)
    >>> row = LanczosProbe(steps=4, tol=1e-10).measure(context).row
    >>> round(row["top_eig"], 6), round(row["bottom_eig"], 6), round(row["hessian_norm"], 6)
    (3.0, -10.0, 10.0)
    >>> row["top_eig_converged"], row["bottom_eig_converged"]
    (True, True)
    """

    name = "top_eig"
    heavy = True
    needs_hvp = True

    def __init__(self, k: int = 1, steps: int = 20, tol: float = 1e-6,
                 converged_tol: float = CONVERGED_TOL) -> None:
        if k < 1:
            raise SmoothprobeError(f"k must be at least 1; got {k}")
        if steps < 2 * k:
            raise SmoothprobeError(f"steps must be at least 2k={2 * k}; got {steps}")
        if not 0 < converged_tol < 1:
            raise SmoothprobeError(f"converged_tol must be in (0, 1); got {converged_tol}")
        self.k = k
        self.steps = steps
        self.tol = tol
        self.converged_tol = converged_tol

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Run Lanczos on the Hessian at x_{t+1}."""
        oracle = context.oracle
        params = oracle.params
        dtype = work_dtype(params)
        n = sum(p.numel() for p in params)
        steps = min(self.steps, n)
        window = steps if self.k > 1 else 2
        start = torch.randn(n, generator=context.generator(self.name), dtype=dtype, device=params[0].device)
        kept: list[Tensor] = [start / start.norm()]
        alphas: list[float] = []
        betas: list[float] = []
        for j in range(steps):
            w = oracle.hvp_flat(kept[-1])
            alphas.append(torch.dot(kept[-1], w).item())
            for _ in range(2):
                for q in kept:
                    w -= torch.dot(q, w) * q
            betas.append(w.norm().item())
            theta, residual = _ritz(alphas, betas, self.k)
            ends = torch.cat([residual[: self.k], residual[-self.k :]])
            done = j + 1 >= 2 * self.k and bool((ends <= self.tol * theta.abs().max()).all())
            if done or j + 1 == steps or betas[-1] == 0:
                break
            w /= betas[-1]
            kept = [*kept[1 - window :], w]
        row: dict[str, float] = {}
        for i in range(min(self.k, len(alphas))):
            suffix = "" if i == 0 else f"_{i + 1}"
            row[f"top_eig{suffix}"] = theta[-1 - i].item()
            row[f"top_eig{suffix}_residual"] = residual[-1 - i].item()
            row[f"bottom_eig{suffix}"] = theta[i].item()
            row[f"bottom_eig{suffix}_residual"] = residual[i].item()
        for end, i in (("top_eig", -1), ("bottom_eig", 0)):
            row[f"{end}_converged"] = bool(residual[i] <= self.converged_tol * theta[i].abs())
        row["hessian_norm"] = theta.abs().max().item()
        row["lanczos_hvps"] = float(len(alphas))
        return ProbeResult(row)


def _ritz(alphas: list[float], betas: list[float], k: int) -> tuple[Tensor, Tensor]:
    """Ritz values (ascending) at both ends of the tridiagonal T_j, the k smallest then the k
    largest (all of them when j ≤ 2k), and their residual norms β_j·|s_j|. O(j·k) per call."""
    d, e = np.asarray(alphas, dtype=np.float64), np.asarray(betas[:-1], dtype=np.float64)
    j = len(d)
    if not (np.isfinite(d).all() and np.isfinite(e).all()):  # a non-finite HVP: no Ritz value to trust
        nan = torch.full((min(j, 2 * k),), float("nan"), dtype=torch.float64)
        return nan, nan.clone()
    if j == 1:
        theta, last = d, np.ones(1)
    elif j <= 2 * k:
        theta, vectors = eigh_tridiagonal(d, e)
        last = vectors[-1]
    else:
        low, v_low = eigh_tridiagonal(d, e, select="i", select_range=(0, k - 1))
        high, v_high = eigh_tridiagonal(d, e, select="i", select_range=(j - k, j - 1))
        theta, last = np.concatenate([low, high]), np.concatenate([v_low[-1], v_high[-1]])
    return torch.from_numpy(theta), torch.from_numpy(betas[-1] * np.abs(last))
