"""A certified lower bound on a symmetric operator's norm from a primal to a dual norm, by
Boyd's (1974) power method for mixed norms."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from smoothprobe.linalg.operator import Operator


class PowerBound(NamedTuple):
    """The best ratio ‖Av‖_* / ‖v‖ found (NaN when every start was zero) and the products taken."""

    bound: float
    matvecs: int


def dual_power(operator: Operator, starts: Iterable[Any], primal: Callable[[Any], float],
               dual: Callable[[Any], float], ascent: Callable[[Any], Any], iterations: int = 6,
               tol: float = 1e-4) -> PowerBound:
    """sup_v ‖Av‖_* / ‖v‖ from below: from each start, v ← ascent(Av), with `ascent(w)` =
    argmax_{‖u‖ ≤ 1} ⟨w, u⟩ (the primal unit vector that w pairs best with).

    ‖Av‖_* never decreases along the iteration, and every ratio evaluated is attained by an actual
    v, so the best one is a lower bound on the operator norm, never an overshoot. Each start runs
    at most `iterations` products and stops once the ratio gains less than `tol` (relative); a
    zero vector ends its start. Vectors may be anything the callables accept (numpy arrays, lists
    of tensors); a `LinearOperator` is applied through its `matvec`.

    With ℓ2 on both sides the bound is the spectral norm, max |λ|:

    >>> import numpy as np
    >>> from scipy.sparse.linalg import aslinearoperator
    >>> a = np.array([[2.0, 1.0, 0.0], [1.0, -4.0, 0.0], [0.0, 0.0, 1.0]])
    >>> found = dual_power(aslinearoperator(a), [np.ones(3)], np.linalg.norm, np.linalg.norm,
    ...                    lambda w: w / np.linalg.norm(w), iterations=50, tol=0.0)
    >>> round(found.bound, 6), round(float(np.abs(np.linalg.eigh(a)[0]).max()), 6)
    (4.162278, 4.162278)
    """
    matvec = getattr(operator, "matvec", operator)
    best, matvecs = math.nan, 0
    for v in starts:
        previous = 0.0
        for _ in range(iterations):
            norm = primal(v)
            if norm == 0:
                break
            av = matvec(v)
            matvecs += 1
            value = float(dual(av) / norm)
            best = value if math.isnan(best) else max(best, value)
            if value <= previous * (1 + tol):
                break
            previous = value
            v = ascent(av)
    return PowerBound(best, matvecs)
