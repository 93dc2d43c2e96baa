"""Per-tensor gradient and update norms in every family's norms, from tensors at hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from smoothprobe.geometry import FAMILIES, Geometry, check_family, eligible, tensor_norms
from smoothprobe.probes.base import Probe, ProbeContext
from smoothprobe.probes.result import ProbeResult


class NormsProbe(Probe):
    """Gradient and update norms per tensor and per family, with whole-model summaries.

    No extra pass: it reads the gradient g_t and the update x_{t+1} − x_t the loop already has,
    over the run geometry's tensors. Spectral rows cover matrices only; spectral norms use the
    geometry's `nuclear` method. Per-tensor rows: tensor, family, grad_primal, grad_dual,
    update_primal, update_dual. Row columns per family F: grad_primal_F, grad_dual_F,
    update_primal_F, update_dual_F (whole model: max of primals, sum of duals; ℓ2 for
    euclidean), and grad_norm_dual, the gradient's dual norm in the run's own family.
    """

    name = "norms"
    columns = (*(f"{kind}_{side}_{family}" for family in FAMILIES for kind in ("grad", "update")
                 for side in ("primal", "dual")), "grad_norm_dual")

    def __init__(self, families: Sequence[str] = FAMILIES) -> None:
        for family in families:
            check_family(family)
        self.families = tuple(families)

    def measure(self, context: ProbeContext) -> ProbeResult:
        """Norms of g_t and of the update, aligned with the geometry's names."""
        names, nuclear = context.geometry.names, context.geometry.nuclear
        grads, updates = context.grad_before, context.update
        kinds = {"grad": grads, "update": updates}
        row: dict[str, float] = {}
        per_tensor: list[dict[str, float | str]] = []
        for family in self.families:
            keep = [i for i, g in enumerate(grads) if eligible(g, family)]
            if not keep:
                continue
            geometry = Geometry(family, [names[i] for i in keep], nuclear)
            columns: dict[str, list[float]] = {}
            for kind, tensors in kinds.items():
                norms = [tensor_norms(tensors[i], family, nuclear) for i in keep]
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
        row["grad_norm_dual"] = row.get(f"grad_dual_{context.geometry.family}", math.nan)
        return ProbeResult(row, per_tensor)
