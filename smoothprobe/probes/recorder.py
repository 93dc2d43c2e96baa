"""The Recorder: runs the probes around `optimizer.step()` on a cadence or an overhead budget.

Two calls fit any PyTorch loop (the points of HF `on_pre_optimizer_step` / `on_optimizer_step`);
probes run at x_{t+1} on step t's batch, so the secant compares gradients on the same data. The
Recorder produces each step's row; `smoothprobe.Recorder` writes the rows into a run directory
through a RunWriter:

>>> import torch, smoothprobe
>>> model = torch.nn.Linear(4, 1)
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(20)]
>>> loss_of = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
>>> run_dir = getfixture("tmp_path") / "run"
>>> with smoothprobe.Recorder(model, opt, run_dir, loss_fn=loss_of, every=2) as rec:
...     for step, batch in enumerate(data):
...         loss = loss_of(model, batch)
...         loss.backward()
...         rec.before_step(step, batch, loss=loss.item())
...         opt.step()
...         opt.zero_grad()
...         _ = rec.after_step()
>>> run = smoothprobe.load_run(run_dir)
>>> len(run.steps), int(run.steps.secant_K.notna().sum()), run.info["status"]
(20, 10, 'finished')
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from smoothprobe.distributed import global_norm, is_sharded, snapshot, update_norm
from smoothprobe.errors import SmoothprobeError
from smoothprobe.geometry import Geometry, default_names, family_for_optimizer
from smoothprobe.probes import PRESETS, PROBES, build
from smoothprobe.probes.base import ProbeContext
from smoothprobe.probes.oracle import HVP_MODES, GradOracle, capture_rng_state
from smoothprobe.probes.pieces import piece_losses
from smoothprobe.probes.vec import sub

LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass
class Cadence:
    """When to probe: every `every` steps, or adaptively so probes cost `overhead` of train time.

    Heavy probes (`Probe.heavy`: Lanczos, trace, curv_dual) run on every `heavy_every`-th probed
    step. With a budget the interval is the measured probe cost over (overhead × measured step
    cost), smoothed by an EMA.
    """

    every: int = 10
    overhead: float | None = None
    heavy_every: int = 10
    next_step: int = 0
    probed: int = 0
    probe_cost: float = 0.0
    step_cost: float = 0.0

    def resume_at(self, step: int) -> None:
        """Continue a run at `step` without a saved cadence: a fixed interval stays on the
        multiples of `every` the first run probed; a budget starts probing at once."""
        if self.overhead is None:
            self.next_step = -(-step // self.every) * self.every
            self.probed = self.next_step // self.every
        else:
            self.next_step = step

    def due(self, step: int) -> bool:
        return step >= self.next_step

    def heavy_due(self) -> bool:
        return self.probed % self.heavy_every == 0

    def update(self, step: int, probe_seconds: float | None, step_seconds: float) -> None:
        """Fold in measured costs; set the next probed step."""
        self.step_cost = step_seconds if self.step_cost == 0 else 0.9 * self.step_cost + 0.1 * step_seconds
        if probe_seconds is None:
            return
        self.probed += 1
        self.probe_cost = probe_seconds if self.probe_cost == 0 else 0.7 * self.probe_cost + 0.3 * probe_seconds
        interval = self.every
        if self.overhead is not None and self.step_cost > 0:
            interval = max(1, math.ceil(self.probe_cost / (self.overhead * self.step_cost)))
        self.next_step = step + interval


class Recorder:
    """Measures curvature along the trajectory: the probes' columns of each optimizer step.

    `loss_fn(model, batch)` must return the mean loss the training step differentiated (the probes
    re-evaluate it on the same batch). Pass `grad_norm` (what `clip_grad_norm_` returned) so the
    probes can undo clipping: secants use the true gradient. The geometry defaults to the
    optimizer's family over the tensors the norm-constrained optimizer owns (for Muon: its
    matrices). The torch RNG state is captured at construction and after each step, so dropout
    replays exactly provided nothing draws from torch's RNG between `after_step` and the next
    forward. `probes` names entries of `smoothprobe.probes.PROBES` (`preset` picks a list) and
    `options` gives probes their options by name ({"top_eig": {"steps": 40}}); each
    probed step builds one `ProbeContext` and runs the due probes on it in registry order.
    `hvp` = "exact" takes Hessian-vector products by double backward (its graph is built
    eagerly, so torch.compile'd models work; FSDP2 refuses it), "fd" by central differences of
    gradients (the memory of one gradient; works under FSDP2; noisy below fp32). `hvp_chunks` > 1
    takes exact HVPs piece by piece over that many row pieces of the batch
    (`smoothprobe.probes.pieces.split_rows`): about 1/hvp_chunks of the transient memory of a
    whole-batch graph; curv_hvp takes H·d from the secant's pieces (about 0.3 gradients more with
    4 pieces: the same flops in more, smaller operations), Lanczos and trace 1.6–1.8× the time
    (no graph is kept between their HVPs). It needs a loss that is the mean of per-row terms drawn
    alike in every piece: models with BatchNorm (the statistics are per piece) or dropout modules
    (other masks than the training step's) are refused; functional dropout (SDPA's `dropout_p`)
    cannot be seen from the modules, so take HVPs whole for such models.
    `after_step` returns the step's columns and leaves its per-tensor rows in `tensor_rows`; the
    run directory's writer (RunWriter) writes them. `config` holds the options as
    run.json's `config.probes` keeps them.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        loss_fn: LossFn,
        preset: str = "standard",
        probes: Sequence[str] | None = None,
        every: int = 10,
        overhead: float | None = None,
        heavy_every: int = 10,
        family: str | None = None,
        tensors: Sequence[str] | None = None,
        nuclear: str = "estimate",
        hvp: str = "exact",
        hvp_chunks: int = 1,
        seed: int = 0,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if preset not in PRESETS:
            raise SmoothprobeError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        chosen = tuple(probes) if probes is not None else PRESETS[preset]
        unknown = [p for p in chosen if p not in PROBES]
        if unknown:
            raise SmoothprobeError(f"unknown probe {unknown[0]!r}; choose from {', '.join(PROBES)}")
        if every < 1:
            raise SmoothprobeError(f"every must be >= 1, got {every}")
        if overhead is not None and not 0 < overhead < 1:
            raise SmoothprobeError(f"overhead must lie in (0, 1), got {overhead}")
        if isinstance(hvp_chunks, bool) or not isinstance(hvp_chunks, int) or hvp_chunks < 1:
            raise SmoothprobeError(f"hvp_chunks must be an integer >= 1, got {hvp_chunks!r}")
        if hvp_chunks > 1:
            refuse_pieces(model, hvp, hvp_chunks)
        self.model, self.optimizer, self.loss_fn, self.probes = model, optimizer, loss_fn, chosen
        self.config = {"preset": preset, "probes": None if probes is None else list(probes), "every": every,
                       "overhead": overhead, "heavy_every": heavy_every, "family": family,
                       "tensors": None if tensors is None else list(tensors), "nuclear": nuclear, "hvp": hvp,
                       "hvp_chunks": hvp_chunks,
                       "options": {name: dict(values) for name, values in (options or {}).items()}}
        self.cadence = Cadence(every=every, overhead=overhead, heavy_every=heavy_every)
        self.geometry = optimizer_geometry(model, optimizer, family, tensors, nuclear)
        self.family, self.names = self.geometry.family, self.geometry.names
        self.seed = seed
        named = dict(model.named_parameters())
        self.params = [named[n] for n in self.names]
        self._probes = build(chosen, options)
        if hvp not in HVP_MODES:
            raise SmoothprobeError(f"hvp must be one of {', '.join(HVP_MODES)}; got {hvp!r}")
        self.hvp, self.hvp_chunks = hvp, hvp_chunks
        exact = [p.name for p in self._probes if p.needs_hvp] if hvp == "exact" else []
        if is_sharded(self.params) and exact:
            raise SmoothprobeError(f"probes {', '.join(exact)} need exact Hessian-vector "
                                   "products, which FSDP2 cannot give; choose probes among norms, secant, curv_fd, "
                                   "or hvp fd", params=["probes", "hvp"])
        self.tensor_rows: list[dict] = []
        self._rng = capture_rng_state()
        self._pending: dict | None = None
        self._last_end = time.perf_counter()

    def describe(self) -> dict:
        """The probe set-up for run.json."""
        return {
            "probes": list(self.probes),
            "family": self.family,
            "tensors": self.names,
            "kappa": self.geometry.kappa(self.params),
            "every": self.cadence.every,
            "overhead": self.cadence.overhead,
            "heavy_every": self.cadence.heavy_every,
            "hvp": self.hvp,
            "hvp_chunks": self.hvp_chunks,
        }

    @property
    def grad_norm(self) -> float | None:
        """The pre-clip gradient norm of the step between `before_step` and `after_step`: the one the
        loop gave, else the norm of the gradients `before_step` found (None outside a step)."""
        return None if self._pending is None else self._pending["grad_norm"]

    def before_step(self, step: int, batch: Any, *, loss: float | None = None, grad_norm: float | None = None,
                    x_t: Mapping[str, Tensor] | None = None) -> None:
        """Call after backward (and clipping), before `optimizer.step()`: captures x_t and g_t.

        A loop that already keeps copies of the parameters before the step passes them as `x_t`
        (by parameter name), and the Recorder uses those instead of making its own.
        """
        if x_t is None:
            x_t = snapshot(dict(self.model.named_parameters()))
        if grad_norm is None:  # the loop did not say: the norm of the gradients as they are now
            grad_norm = global_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        self._pending = {"step": step, "grad_norm": grad_norm, "probe": self.cadence.due(step), "x_t": x_t}
        if not self._pending["probe"]:
            return
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        scale = unclip_factor(self.model, grad_norm)
        if scale != 1.0:
            torch._foreach_mul_(grads, scale)
        self._pending.update(batch=batch, grads=grads, params=[
            x_t[n] if x_t is not None and n in x_t else p.detach().clone() for n, p in zip(self.names, self.params)
        ])

    def after_step(self, skipped: bool = False) -> dict:
        """Call after `optimizer.step()`: runs the due probes at x_{t+1}; returns the row's columns
        (update_norm and the probes') and keeps the probes' per-tensor rows in `tensor_rows`.

        `skipped=True` marks a step the optimizer did not take (a GradScaler skip on inf/NaN
        gradients): the row says `skipped` and holds no curvature; a due probe moves to the next
        step. Non-finite gradients skip the probes the same way, and a probe that fails on
        non-finite curvature leaves `<probe>_error` instead of its columns; training goes on."""
        if self._pending is None:
            raise RuntimeError("after_step() called without before_step()")
        pending, self._pending = self._pending, None
        moved = update_norm(dict(self.model.named_parameters()), pending["x_t"])
        row: dict[str, Any] = {"skipped": True} if skipped else {}
        probe_seconds = None
        self.tensor_rows = []
        if pending["probe"] and not skipped and not all(torch.isfinite(g).all() for g in pending["grads"]):
            row["probe_note"] = "non-finite gradient: probes skipped"
        elif pending["probe"] and not skipped:
            start = time.perf_counter()
            row, self.tensor_rows = self._measure(pending)
            probe_seconds = time.perf_counter() - start
            row["probe_time_s"] = probe_seconds
        now = time.perf_counter()
        self.cadence.update(pending["step"], probe_seconds, now - self._last_end - (probe_seconds or 0.0))
        self._last_end = now
        self._rng = capture_rng_state()
        return {"update_norm": moved, **row}

    def _measure(self, pending: dict) -> tuple[dict, list[dict]]:
        """Run every due probe once on one shared context; returns the row columns and per-tensor rows."""
        pieces = None
        if self.hvp_chunks > 1:
            pieces = piece_losses(partial(self.loss_fn, self.model), pending["batch"], self.hvp_chunks)
        oracle = GradOracle(self.model, lambda: self.loss_fn(self.model, pending["batch"]), self.params, self._rng,
                            hvp=self.hvp, pieces=pieces)
        due = [p for p in self._probes if not p.heavy or self.cadence.heavy_due()]
        exact = self.hvp == "exact" and any(p.needs_hvp for p in due)
        context = ProbeContext(oracle, self.geometry, pending["grads"], sub(oracle.point(), pending["params"]),
                               step=pending["step"], seed=self.seed, keep_graph=exact,
                               hvp_with_gradient=exact and pieces is not None and any(p.hvp_of_update for p in due))
        row: dict[str, float] = {}
        tensor_rows: list[dict] = []
        timings: dict[str, float] = {}
        for probe in due:
            start = time.perf_counter()
            try:
                result = probe.measure(context)
            except (RuntimeError, ArithmeticError) as exc:  # e.g. an eigensolver on inf curvature
                row[f"{probe.name}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                continue
            finally:
                timings[f"time_{probe.name}_s"] = time.perf_counter() - start
            row.update(result.row)
            tensor_rows += result.per_tensor
        oracle.release()
        row.update(timings)
        return row, tensor_rows


def optimizer_geometry(model: nn.Module, optimizer: torch.optim.Optimizer, family: str | None = None,
                       tensors: Sequence[str] | None = None, nuclear: str = "estimate") -> Geometry:
    """The optimizer's geometry: its family over the tensors its norm-constrained part steps."""
    family = family or optimizer_family(optimizer)
    named = dict(model.named_parameters())
    names = list(tensors) if tensors is not None else default_names(owned_parameters(optimizer, named), family)
    missing = [n for n in names if n not in named]
    if missing or not names:
        raise SmoothprobeError(f"geometry tensors not found in the model: {missing or 'none selected'}")
    return Geometry(family, names, nuclear)


def optimizer_family(optimizer: torch.optim.Optimizer) -> str:
    """Geometry family of an optimizer: by its groups' `algo` (`optim.make_optimizer`'s), else by its
    class (smoothprobe's Lion, Signum, NormSGD; torch's Muon, AdamW, SGD; through a wrapper that keeps
    it as `.optimizer`, as accelerate's does), else Euclidean.

    >>> from smoothprobe.optim import Lion
    >>> optimizer_family(Lion(torch.nn.Linear(2, 2).parameters())), optimizer_family(torch.optim.Muon([torch.ones(2, 2)]))
    ('sign', 'spectral')
    """
    algos = {g.get("algo") for g in optimizer.param_groups}
    if "muon" in algos:
        return family_for_optimizer("muon")
    algo = next(iter(algos))
    if len(algos) == 1 and algo is not None:
        return family_for_optimizer(algo)
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    try:
        return family_for_optimizer(type(optimizer).__name__)
    except SmoothprobeError:
        return "euclidean"


def owned_parameters(optimizer: torch.optim.Optimizer, named: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    """(name, tensor) pairs the norm-constrained part of the optimizer steps (all for one-rule optimizers),
    frozen tensors (requires_grad False) left out: they get no gradient to probe."""
    groups = [g for g in optimizer.param_groups if g.get("algo") != "adamw"] or optimizer.param_groups
    ids = {id(p) for g in groups for p in g["params"]}
    return [(n, p) for n, p in named.items() if id(p) in ids and p.requires_grad]


def unclip_factor(model: nn.Module, grad_norm: float | None) -> float:
    """Factor that undoes gradient clipping: the pre-clip norm over the current .grad norm."""
    if grad_norm is None or not math.isfinite(grad_norm):
        return 1.0
    current = global_norm([p.grad for p in model.parameters() if p.grad is not None])
    return grad_norm / current if 0 < current < grad_norm * (1 - 1e-6) else 1.0


def refuse_pieces(model: nn.Module, hvp: str, pieces: int) -> None:
    """Raise where HVPs over `pieces` row pieces would not be the whole batch's: `hvp` = "fd" (no
    graph to split), BatchNorm (its statistics would be each piece's) or dropout with p > 0 (each
    piece would draw other masks than the training step did)."""
    if hvp == "fd":
        raise SmoothprobeError(f"hvp_chunks={pieces} splits exact HVPs; hvp='fd' keeps no graph to split "
                               "(take HVPs whole: one piece)", params=["hvp_chunks", "hvp"])
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            why = "its statistics would be each piece's, not the batch's"
        elif isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            why = f"dropout (p = {module.p:g}) would draw other masks in each piece than in the training step"
        else:
            continue
        raise SmoothprobeError(f"hvp_chunks={pieces} needs a loss that is a mean over rows, alike in every "
                               f"piece; module {name!r} is {type(module).__name__}: {why} (take HVPs whole, in one piece, "
                               "or by hvp='fd' for the memory of one gradient)", params=["hvp_chunks"])
