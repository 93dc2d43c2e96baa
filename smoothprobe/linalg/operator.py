"""The matrix–vector products the estimators accept: a callable on torch vectors, or a scipy
`LinearOperator` (applied to numpy copies of them)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor

Operator = Callable[[Tensor], Tensor] | LinearOperator
"""A callable v ↦ Av on 1-D torch vectors, or a scipy `LinearOperator` (anything with `matvec`)."""


def matvec_of(operator: Operator) -> Callable[[Tensor], Tensor]:
    """v ↦ Av on torch vectors: the callable itself, or the operator's `matvec` through numpy
    (the result in v's dtype and device).

    >>> import numpy as np
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> matvec_of(aslinearoperator(np.diag([2.0, 3.0])))(torch.ones(2, dtype=torch.float64))
    tensor([2., 3.], dtype=torch.float64)
    """
    if not hasattr(operator, "matvec"):
        return operator
    return lambda v: torch.as_tensor(operator.matvec(v.cpu().numpy())).reshape(-1).to(v.dtype).to(v.device)
