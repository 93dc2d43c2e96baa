"""Extreme eigenvalues (both ends) of a symmetric operator by Lanczos iteration (Lanczos 1950)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal
from torch import Tensor

from smoothprobe.linalg.operator import Operator, matvec_of


class Ritz(NamedTuple):
    """Ritz values at both ends (ascending: the k smallest, then the k largest; all of them when
    the run took at most 2k steps), their residual norms ‖Ay − θy‖, and the products taken."""

    values: Tensor
    residuals: Tensor
    matvecs: int


def lanczos(operator: Operator, start: Tensor | np.ndarray, k: int = 1, steps: int = 20,
            tol: float = 1e-6) -> Ritz:
    """The k largest and k smallest Ritz pairs of a symmetric A from one Lanczos run from `start`.

    Iterates in `start`'s dtype and device. Stops after `steps` products (at most the dimension),
    when the Krylov space is exhausted, or when every wanted pair at both ends has residual
    β_j·|s_j| ≤ tol·max|θ|. For k = 1 it keeps three vectors (the three-term recurrence, each new
    vector re-orthogonalised against the previous two): global orthogonality is lost in floating
    point and converged values may repeat, but the extreme Ritz values and their residual bounds
    stay valid (Paige 1980). For k > 1 a repeated value would pose as the second eigenvalue, so
    the whole basis is kept for full re-orthogonalisation ("twice is enough", Parlett 1998).
    A non-finite product gives NaN values instead of an eigensolver error.

    >>> import numpy as np
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> a = np.array([[4.0, 1.0, 0.0, 0.0], [1.0, -3.0, 2.0, 0.0], [0.0, 2.0, 1.0, 0.5], [0.0, 0.0, 0.5, 2.0]])
    >>> ritz = lanczos(aslinearoperator(a), np.ones(4), steps=4, tol=1e-12)
    >>> np.allclose(ritz.values.numpy()[[0, -1]], np.linalg.eigh(a)[0][[0, -1]]), ritz.matvecs
    (True, 4)
    """
    matvec = matvec_of(operator)
    start = torch.as_tensor(start)
    steps = min(steps, start.numel())
    window = steps if k > 1 else 2
    kept: list[Tensor] = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = matvec(kept[-1])
        alphas.append(torch.dot(kept[-1], w).item())
        for _ in range(2):
            for q in kept:
                w -= torch.dot(q, w) * q
        betas.append(w.norm().item())
        theta, residual = _ritz(alphas, betas, k)
        ends = torch.cat([residual[:k], residual[-k:]])
        done = j + 1 >= 2 * k and bool((ends <= tol * theta.abs().max()).all())
        if done or j + 1 == steps or betas[-1] == 0:
            break
        w /= betas[-1]
        kept = [*kept[1 - window:], w]
    return Ritz(theta, residual, len(alphas))


def _ritz(alphas: list[float], betas: list[float], k: int) -> tuple[Tensor, Tensor]:
    """Ritz values (ascending) at both ends of the tridiagonal T_j, the k smallest then the k
    largest (all of them when j ≤ 2k), and their residual norms β_j·|s_j|. O(j·k) per call."""
    d, e = np.asarray(alphas, dtype=np.float64), np.asarray(betas[:-1], dtype=np.float64)
    j = len(d)
    if not (np.isfinite(d).all() and np.isfinite(e).all()):  # a non-finite product: no Ritz value to trust
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
