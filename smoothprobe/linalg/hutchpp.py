"""Trace of a symmetric operator by Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021), or by
Hutchinson (1989) without the sketch."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from smoothprobe.linalg.operator import Operator, matvec_of


class TraceEstimate(NamedTuple):
    """The estimate of tr(A), its standard error and the products taken."""

    trace: float
    se: float
    matvecs: int


def hutchpp(operator: Operator, n: int, matvecs: int, sketch: int | None = None, *,
            generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
            device: torch.device | str | None = None) -> TraceEstimate:
    """tr(A) for an n×n symmetric A from `matvecs` products with Rademacher vectors.

    Hutch++ spends `sketch` products (default a third) on Q = orth(A S), takes tr(QᵀAQ) exactly
    (`sketch` more) and runs Hutchinson on the deflated (I − QQᵀ)A(I − QQᵀ) with the rest; the
    standard error is that of the deflated part, conditional on Q. `sketch=0` is plain Hutchinson
    (the mean of zᵀAz). Vectors are applied one at a time; memory is the sketch.

    A sketch at least as wide as A's rank captures A, so the estimate is exact:

    >>> import numpy as np
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> b = np.random.default_rng(0).standard_normal((30, 3))
    >>> a = b @ b.T
    >>> estimate = hutchpp(aslinearoperator(a), 30, 12, generator=torch.Generator().manual_seed(0))
    >>> round(estimate.trace, 6), round(float(np.trace(a)), 6)
    (84.679392, 84.679392)
    """
    sketch = matvecs // 3 if sketch is None else sketch
    samples = matvecs - 2 * sketch
    if sketch < 0 or samples < 2:
        raise ValueError(f"matvecs must leave at least 2 samples after 2·sketch; got matvecs={matvecs}, "
                         f"sketch={sketch}")
    matvec = matvec_of(operator)

    def rademacher() -> Tensor:
        return (2 * torch.randint(0, 2, (n,), generator=generator, device=device) - 1).to(dtype)

    exact_part = 0.0
    basis = None
    if sketch:
        basis = torch.empty(sketch, n, dtype=dtype, device=device)
        for row in basis:
            row.copy_(matvec(rademacher()))
        _orthonormalise_rows(basis)
        exact_part = sum(torch.dot(q, matvec(q)).item() for q in basis)
    values = []
    for _ in range(samples):
        z = rademacher()
        if basis is not None:
            z -= basis.T @ (basis @ z)
        values.append(torch.dot(z, matvec(z)).item())
    found = torch.tensor(values, dtype=torch.float64)
    se = found.std(unbiased=True).item() / math.sqrt(samples)
    return TraceEstimate(exact_part + found.mean().item(), se, matvecs)


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
