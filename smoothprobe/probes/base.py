"""The one interface every probe implements, and the context it measures in (docs/design.md §2).

A probe is a class with a registry `name`, two flags the Recorder schedules by, and
`measure(context) -> ProbeResult`. The Recorder builds one `ProbeContext` per probed step and
hands it to every due probe in turn; it never names a probe. A new probe is one new module
plus one line in the registry (`smoothprobe.probes.PROBES`).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from smoothprobe.geometry import Geometry
from smoothprobe.probes.oracle import GradOracle
from smoothprobe.probes.result import ProbeResult


@dataclass
class ProbeContext:
    """What the probes of one step may read: everything at x_{t+1} on the step's batch.

    `oracle` evaluates the loss at x_{t+1} on the batch of step t with that step's RNG state;
    `grad_before` is g_t = ∇f_B(x_t), unclipped; `update` is x_{t+1} − x_t. `gradient()` is
    the one place g(x_{t+1}) is computed, so the secant and the FD probe share it; with
    `keep_graph` it is computed with `create_graph`, and HVP probes reuse that backward.
    `generator(name)` gives each probe fresh random vectors at every step, reproducibly.
    """

    oracle: GradOracle
    geometry: Geometry
    grad_before: Sequence[Tensor]
    update: Sequence[Tensor]
    step: int = 0
    seed: int = 0
    keep_graph: bool = False
    _gradient: tuple[float, list[Tensor]] | None = field(default=None, repr=False)

    def gradient(self) -> tuple[float, list[Tensor]]:
        """The batch loss and ∇f_B(x_{t+1}), evaluated once per context."""
        if self._gradient is None:
            self._gradient = self.oracle.loss_and_grad(create_graph=self.keep_graph)
        return self._gradient

    def generator(self, name: str) -> torch.Generator:
        """A generator on the parameters' device seeded by (seed, step, name)."""
        key = hashlib.blake2b(f"{self.seed}/{self.step}/{name}".encode(), digest_size=8).digest()
        device = self.oracle.params[0].device
        return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") >> 1)


class Probe(ABC):
    """One measurement taken at a probed step.

    `name` is the registry key; `heavy` probes run only on every `heavy_every`-th probed step;
    `needs_hvp` probes use exact Hessian-vector products (double backward), which FSDP2 cannot
    give and compiled models give only when run eagerly.
    """

    name: ClassVar[str]
    heavy: ClassVar[bool] = False
    needs_hvp: ClassVar[bool] = False

    @abstractmethod
    def measure(self, context: ProbeContext) -> ProbeResult:
        """Row columns (and per-tensor rows) for the step the context describes."""
