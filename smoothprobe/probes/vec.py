"""Lists of tensors as one vector: inner products, flattening and the probes' working dtype."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from smoothprobe.distributed import full


def work_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: accurate reductions for bf16/fp16 too."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Σ_i ⟨a_i, b_i⟩ as a 0-d tensor in the working dtype (summed over ranks for FSDP2 shards)."""
    dtype = work_dtype(a)
    return sum(full((x.to(dtype) * y.to(dtype)).sum()) for x, y in zip(a, b, strict=True))


def sub(a: Sequence[Tensor], b: Sequence[Tensor]) -> list[Tensor]:
    """a_i − b_i, computed in the working dtype so bf16 differences do not round twice."""
    dtype = work_dtype(a)
    return [x.detach().to(dtype) - y.detach().to(dtype) for x, y in zip(a, b, strict=True)]


def flatten(tensors: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """One 1-D vector of all entries in `dtype`."""
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector back into tensors with the shapes and dtypes of `like`."""
    pieces = torch.split(vector, [t.numel() for t in like])
    return [p.reshape(t.shape).to(t.dtype) for p, t in zip(pieces, like)]
