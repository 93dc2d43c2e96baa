"""The one interface every probe implements, and the context it measures in (docs/design.md §2).

A probe is a class that describes itself: its registry `name`, the flags the Recorder schedules
by, its options (the keyword arguments of its constructor, with their defaults), the row columns
it writes and which of them the fit may take as K, and its part of the report's curvature figure
(`Panel`); `measure(context) -> ProbeResult` takes the measurement. The Recorder builds one
`ProbeContext` per probed step and hands it to every due probe in turn; it never names a probe.
The fit's columns, the report's panels, `ProbeConfig` and the CLI read the registry
(`smoothprobe.probes`), so a new probe is one new module.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    `keep_graph` it is computed with `create_graph`, and HVP probes reuse that backward (an oracle
    with `pieces` keeps no graph: its gradient is a plain one, and each HVP rebuilds its pieces').
    `update_hvp()` gives H·d (d the update); with `hvp_with_gradient` it comes from the
    gradient's own create_graph backward (`GradOracle.loss_grad_and_hvp`), which lets an oracle
    with `pieces` take both from one graph per piece without keeping one.
    `generator(name)` gives each probe fresh random vectors at every step, reproducibly.
    """

    oracle: GradOracle
    geometry: Geometry
    grad_before: Sequence[Tensor]
    update: Sequence[Tensor]
    step: int = 0
    seed: int = 0
    keep_graph: bool = False
    hvp_with_gradient: bool = False
    _gradient: tuple[float, list[Tensor]] | None = field(default=None, repr=False)
    _update_hvp: list[Tensor] | None = field(default=None, repr=False)

    def gradient(self) -> tuple[float, list[Tensor]]:
        """The batch loss and ∇f_B(x_{t+1}), evaluated once per context."""
        if self._gradient is None:
            if self.hvp_with_gradient:
                loss, grads, self._update_hvp = self.oracle.loss_grad_and_hvp(self.update)
                self._gradient = (loss, grads)
            else:
                self._gradient = self.oracle.loss_and_grad(create_graph=self.keep_graph)
        return self._gradient

    def update_hvp(self) -> list[Tensor]:
        """H·d at x_{t+1} for the update d: handed over (and no longer held) if the gradient's
        pass computed it, else computed now."""
        if self.hvp_with_gradient:
            self.gradient()
        hd, self._update_hvp = self._update_hvp, None
        return hd if hd is not None else self.oracle.hvp(self.update)

    def generator(self, name: str) -> torch.Generator:
        """A generator on the parameters' device seeded by (seed, step, name)."""
        key = hashlib.blake2b(f"{self.seed}/{self.step}/{name}".encode(), digest_size=8).digest()
        device = self.oracle.params[0].device
        return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") >> 1)


@dataclass(frozen=True)
class Line:
    """One column drawn in a curvature panel: a matplotlib line style ("." draws dots only), a
    standard-error column shaded ±2 around it (`band`), and whether the column on its own earns
    the figure (`alone`; False for a column the report shows elsewhere, drawn here to compare)."""

    column: str
    style: str = "-"
    band: str | None = None
    alone: bool = True


@dataclass(frozen=True)
class Panel:
    """A probe's part of one panel of the report's curvature figure (runs overlaid, over steps).

    Probes that name the same `title` share the panel. Panels are laid out left to right by the
    lowest `place` of their parts, and a panel's lines are drawn in the order of their parts'
    `place`.
    """

    title: str
    lines: tuple[Line, ...]
    place: float = 100.0


class Probe(ABC):
    """One measurement taken at a probed step, and what it says about itself.

    `name` is the registry key; `heavy` probes run only on every `heavy_every`-th probed step;
    `needs_hvp` probes use exact Hessian-vector products (double backward), which FSDP2 cannot
    give and compiled models give only when run eagerly; `hvp_of_update` probes read H·d for the
    update d (`ProbeContext.update_hvp`), which the gradient's pass can give along;
    `moves_parameters` probes perturb the parameters (which drops a kept HVP graph), so the
    registry runs them last. `columns` are the row columns it writes with its default options,
    `k_columns` those the fit may take as K, and `panel` its part of the report's curvature
    figure (None: it draws none).
    """

    name: ClassVar[str]
    heavy: ClassVar[bool] = False
    needs_hvp: ClassVar[bool] = False
    hvp_of_update: ClassVar[bool] = False
    moves_parameters: ClassVar[bool] = False
    columns: ClassVar[tuple[str, ...]] = ()
    k_columns: ClassVar[tuple[str, ...]] = ()
    panel: ClassVar[Panel | None] = None

    @classmethod
    def options(cls) -> dict[str, Any]:
        """The probe's options and their defaults: the keyword arguments of its constructor."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}

    @abstractmethod
    def measure(self, context: ProbeContext) -> ProbeResult:
        """Row columns (and per-tensor rows) for the step the context describes."""
