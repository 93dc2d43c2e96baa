"""Per-tensor gradient and update norms in every family's norms, from tensors at hand."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from smoothprobe.geometry import (
    FAMILIES,
    Geometry,
    check_family,
    check_nuclear,
    eligible,
    tensor_norms,
)
from smoothprobe.probes.result import ProbeResult


class NormsProbe:
    """Gradient and update norms per tensor and per family, with whole-model summaries.

    No extra pass: it reads the gradient g_t and the update x_{t+1} − x_t the loop already has.
    Spectral rows cover matrices only. Per-tensor rows: tensor, family, grad_primal, grad_dual,
    update_primal, update_dual. Row columns per family F: grad_primal_F, grad_dual_F,
    update_primal_F, update_dual_F (whole model: max of primals, sum of duals; ℓ2 for
    euclidean). Update columns appear only when updates are given. Spectral norms use
    `nuclear` ("estimate" by default: Gram eigenvalues, no SVD).
    """

    cost = 0.0

    def __init__(self, families: Sequence[str] = FAMILIES, nuclear: str = "estimate") -> None:
        for family in families:
            check_family(family)
        check_nuclear(nuclear)
        self.families = tuple(families)
        self.nuclear = nuclear

    def measure(
        self,
        names: Sequence[str],
        grads: Sequence[Tensor],
        updates: Sequence[Tensor] | None = None,
    ) -> ProbeResult:
        """Norms of `grads` (and `updates`), aligned with `names`."""
        kinds = {"grad": grads} if updates is None else {"grad": grads, "update": updates}
        row: dict[str, float] = {}
        per_tensor: list[dict[str, float | str]] = []
        for family in self.families:
            keep = [i for i, g in enumerate(grads) if eligible(g, family)]
            if not keep:
                continue
            geometry = Geometry(family, [names[i] for i in keep], self.nuclear)
            columns: dict[str, list[float]] = {}
            for kind, tensors in kinds.items():
                norms = [tensor_norms(tensors[i], family, self.nuclear) for i in keep]
                primal = torch.stack([p for p, _ in norms]).tolist()
                dual = torch.stack([d for _, d in norms]).tolist()
                row[f"{kind}_primal_{family}"] = geometry.combine_primal(primal)
                row[f"{kind}_dual_{family}"] = geometry.combine_dual(dual)
                columns[f"{kind}_primal"] = primal
                columns[f"{kind}_dual"] = dual
            for j, name in enumerate(geometry.names):
                entry: dict[str, float | str] = {"tensor": name, "family": family}
                entry.update({column: values[j] for column, values in columns.items()})
                per_tensor.append(entry)
        return ProbeResult(row, per_tensor)
