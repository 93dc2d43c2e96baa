"""A batch split into row pieces whose weighted losses add up to the batch loss (docs/design.md §2).

A Hessian-vector product is linear in the loss, so for a loss that is the mean of per-row terms
H·v on the batch is Σ_i (n_i / n)·H_i·v over pieces of n_i rows. Taking it piece by piece keeps
one piece's double-backward graph alive instead of the whole batch's: the transient memory of an
exact HVP falls by about the number of pieces, at the same flops for each product.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_unflatten

from smoothprobe.errors import SmoothprobeError


def split_rows(batch: Any, pieces: int) -> list[tuple[float, Any]]:
    """`batch` cut into `pieces` near-equal parts along dim 0 of every tensor it holds (lists,
    tuples and dicts are walked; other values are shared by every part), each with its share of
    the rows as weight. The tensors must agree on their number of rows, at least `pieces` (≥ 1).

    >>> parts = split_rows([torch.arange(10).reshape(5, 2), "note"], 2)
    >>> [(w, part[0].tolist(), part[1]) for w, part in parts]
    [(0.6, [[0, 1], [2, 3], [4, 5]], 'note'), (0.4, [[6, 7], [8, 9]], 'note')]
    """
    leaves, spec = tree_flatten(batch)
    rows = {leaf.shape[0] for leaf in leaves if isinstance(leaf, torch.Tensor) and leaf.dim() > 0}
    if len(rows) != 1:
        found = ", ".join(map(str, sorted(rows))) or "none"
        raise SmoothprobeError(f"hvp_chunks={pieces} needs the batch's tensors to share one number of rows "
                               f"(dim 0); found {found}", params=["hvp_chunks"])
    total = rows.pop()
    if total < pieces:
        raise SmoothprobeError(f"hvp_chunks={pieces} exceeds the batch's {total} rows", params=["hvp_chunks"])
    cut = [torch.tensor_split(leaf, pieces) if isinstance(leaf, torch.Tensor) and leaf.dim() > 0 else None
           for leaf in leaves]
    parts = []
    for i in range(pieces):
        part = [leaf if split is None else split[i] for leaf, split in zip(leaves, cut)]
        size = next(split[i].shape[0] for split in cut if split is not None)
        parts.append((size / total, tree_unflatten(part, spec)))
    return parts


def piece_losses(loss_of: Callable[[Any], Tensor], batch: Any, pieces: int) -> list[tuple[float, Callable[[], Tensor]]]:
    """The (weight, loss) pairs `GradOracle(pieces=...)` takes: `loss_of` on each part of
    `split_rows(batch, pieces)`, with the part's share of the rows as weight.

    >>> [(w, loss()) for w, loss in piece_losses(len, torch.zeros(3, 2), 2)]
    [(0.6666666666666666, 2), (0.3333333333333333, 1)]
    """
    return [(weight, partial(loss_of, part)) for weight, part in split_rows(batch, pieces)]
