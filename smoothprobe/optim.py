"""Optimizers that smoothprobe trains with, behind one factory that the CLI names.

Every optimizer here steps ``x <- x*(1 - lr*wd) - lr*d`` with decoupled weight decay, where ``d``
is the optimizer's direction (sign, normalised or orthogonalised momentum; Adam's ratio for
AdamW).  Each param group carries ``"algo"`` (which update rule owns it) and ``"param_names"``
(torch's own key for named parameters), so the split can be reported and stored in run.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from smoothprobe.errors import SmoothprobeError

OPTIMIZERS: tuple[str, ...] = ("muon", "lion", "signum", "signsgd", "normsgd", "adamw", "sgd")

MUON_LR = 0.02
ADAMW_LR_RATIO = 0.05
DEFAULT_LRS: dict[str, float] = {
    "muon": MUON_LR, "lion": 3e-4, "signum": 3e-4, "signsgd": 3e-4, "normsgd": 0.1,
    "adamw": 1e-3, "sgd": 0.1,
}
HEAD_NAMES = frozenset({"lm_head", "head", "output"})
MOMENTUM_STATE = ("exp_avg", "momentum_buffer")
"""State keys that hold a running average of gradients (a first moment): Lion's and torch's Adam/AdamW
`exp_avg`, torch's SGD/Muon's and this module's `momentum_buffer`."""

Closure = Callable[[], Tensor] | None


def closure_loss(closure: Closure) -> Tensor | None:
    """Evaluate an optimizer closure with gradients enabled (torch's `step(closure)` convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _DecoupledOptimizer(Optimizer):
    """Shared step: ``x <- x*(1 - lr*wd) - lr*d`` with d from :meth:`_directions` (foreach ops)."""

    def _directions(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Tensor | None:
        """Take one step on every parameter that has a gradient; returns the closure's loss."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            directions = self._directions(group, params, grads)
            lr, wd = group["lr"], group["weight_decay"]
            if wd != 0:
                torch._foreach_mul_(params, 1.0 - lr * wd)
            torch._foreach_add_(params, directions, alpha=-lr)
        return loss

    def _ema_momentum(self, params: list[Tensor], grads: list[Tensor], beta: float) -> list[Tensor]:
        """m <- beta*m + (1-beta)*g in state "momentum_buffer"; the gradients themselves when beta is 0."""
        if beta == 0:
            return grads
        momenta = self._buffers(params, "momentum_buffer")
        torch._foreach_lerp_(momenta, grads, 1.0 - beta)
        return momenta

    def _buffers(self, params: list[Tensor], key: str) -> list[Tensor]:
        """The per-parameter state tensor ``key``, created as zeros on first use."""
        for p in params:
            if key not in self.state[p]:
                self.state[p][key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [self.state[p][key] for p in params]


def _check_beta(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise SmoothprobeError(f"{name} must be in [0, 1), got {value}")


class Lion(_DecoupledOptimizer):
    """Lion: d = sign(b1*m + (1-b1)*g), then m <- b2*m + (1-b2)*g.

    Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", arXiv 2302.06675.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0) -> None:
        _check_beta("betas[0]", betas[0])
        _check_beta("betas[1]", betas[1])
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    def _directions(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor]) -> list[Tensor]:
        beta1, beta2 = group["betas"]
        exp_avgs = self._buffers(params, "exp_avg")
        directions = torch._foreach_lerp(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_sign_(directions)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta2)
        return directions


class Signum(_DecoupledOptimizer):
    """Signum: m <- b*m + (1-b)*g, d = sign(m); momentum 0 is signSGD and keeps no state.

    Bernstein et al. 2018, "signSGD: Compressed Optimisation for Non-Convex Problems",
    arXiv 1802.04434.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        _check_beta("momentum", momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _directions(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor]) -> list[Tensor]:
        return torch._foreach_sign(self._ema_momentum(params, grads, group["momentum"]))


class NormSGD(_DecoupledOptimizer):
    """Per-tensor normalised SGD: m <- b*m + (1-b)*g, d = m/||m||_F, so each tensor moves by lr.

    The EMA form of momentum is a choice of scale only: heavy-ball m' = b*m' + g equals
    m/(1-b), and normalising removes the factor, so both give the same steps.  A zero
    momentum tensor gives a zero step.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        _check_beta("momentum", momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _directions(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor]) -> list[Tensor]:
        momenta = self._ema_momentum(params, grads, group["momentum"])
        norms = torch._foreach_norm(momenta, dtype=torch.float32)
        # out of place: under FSDP2 the norms are partial sums that an in-place clamp cannot keep
        norms = torch._foreach_clamp_min(norms, torch.finfo(torch.float32).tiny)
        return torch._foreach_div(momenta, norms)


class SGD(_DecoupledOptimizer):
    """SGD with heavy-ball momentum m <- b*m + g (torch's convention) and decoupled decay.

    Unlike ``torch.optim.SGD``, whose weight decay is an L2 term in the gradient, the decay
    here is decoupled like every other optimizer in this module.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        _check_beta("momentum", momentum)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _directions(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor]) -> list[Tensor]:
        if group["momentum"] == 0:
            return grads
        momenta = self._buffers(params, "momentum_buffer")
        torch._foreach_mul_(momenta, group["momentum"])
        torch._foreach_add_(momenta, grads)
        return momenta


class MuonWithAdamW(Optimizer):
    """``torch.optim.Muon`` on hidden weight matrices and ``torch.optim.AdamW`` on the rest, as one
    optimizer so that one LR scheduler drives both.

    Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"
    (kellerjordan.github.io/posts/muon).  The inner optimizers share this object's group dicts
    (routed by ``group["algo"]``) and its ``state``, so LR changes on ``param_groups`` reach them and
    ``state_dict()`` has torch's usual layout.  Muon keeps ``adjust_lr_fn=None`` (Keller Jordan's
    ``sqrt(max(1, rows/cols))`` scale, 1 for wide matrices) so that an orthogonal update moves a
    matrix by about ``lr`` in spectral norm, which is the step the smoothness probes measure.
    """

    def __init__(self, muon_params: Iterable[Any], adamw_params: Iterable[Any], *,
                 lr: float = MUON_LR, adamw_lr: float | None = None, weight_decay: float = 0.0,
                 momentum: float = 0.95, nesterov: bool = True,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        self._inner_defaults: dict[str, dict[str, Any]] = {
            "muon": {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                     "nesterov": nesterov, "adjust_lr_fn": None},
            "adamw": {"lr": lr * ADAMW_LR_RATIO if adamw_lr is None else adamw_lr,
                      "betas": betas, "eps": eps, "weight_decay": weight_decay},
        }
        self.inner: dict[str, Optimizer] = {}
        groups = [{**g, "algo": "muon"} for g in _as_groups(muon_params)]
        groups += [{**g, "algo": "adamw"} for g in _as_groups(adamw_params)]
        super().__init__(groups, {})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``"algo"`` must be ``"muon"`` or ``"adamw"``) here and to its inner optimizer."""
        algo = param_group.get("algo")
        if algo not in self._inner_defaults:
            raise SmoothprobeError(f"param group 'algo' must be 'muon' or 'adamw', got {algo!r}")
        inner = self.inner.get(algo)
        if inner is None:
            cls = torch.optim.Muon if algo == "muon" else torch.optim.AdamW
            inner = cls([param_group], **self._inner_defaults[algo])
            inner.state = self.state
            self.inner[algo] = inner
        else:
            inner.add_param_group(param_group)
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> Tensor | None:
        """Step Muon, then AdamW; returns the closure's loss."""
        loss = closure_loss(closure)
        for inner in self.inner.values():
            inner.step()
        return loss

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "inner": self.inner,
                "_inner_defaults": self._inner_defaults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore, then re-link the inner optimizers to the (possibly new) group dicts and state."""
        super().__setstate__(state)
        for algo, inner in self.inner.items():
            inner.param_groups = [g for g in self.param_groups if g["algo"] == algo]
            inner.state = self.state


def _as_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    """Param groups from an iterable of tensors, (name, tensor) pairs or group dicts."""
    items = list(params)
    if not items:
        return []
    if isinstance(items[0], dict):
        return items
    return [{"params": items}]


def muon_split(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters Muon steps, and of those AdamW steps.

    Muon gets every 2-D parameter except embeddings and the output head; AdamW gets those and
    all non-matrix tensors (norm gains, biases, scalars, conv kernels).  A parameter counts as an
    embedding when an ``nn.Embedding`` owns it (a head tied to an embedding shares its weight, so
    it is covered), and as the head when its owning module's name (or, for a parameter
    registered directly on a module, its own name) is ``lm_head``, ``head`` or ``output``.
    """
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, nn.Embedding)
                     for p in m.parameters(recurse=False)}
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        *owners, own_name = name.split(".")
        is_head = own_name in HEAD_NAMES or (owners and owners[-1] in HEAD_NAMES)
        is_matrix = p.ndim == 2 and id(p) not in embedding_ids and not is_head
        (muon if is_matrix else adamw).append(name)
    return muon, adamw


def _named_groups(named: list[tuple[str, Tensor]], weight_decay: float,
                  no_decay_1d: bool) -> list[dict[str, Any]]:
    """One group with weight decay and, if ``no_decay_1d``, one without for tensors below 2-D."""
    decay = [(n, p) for n, p in named if not (no_decay_1d and p.ndim < 2)]
    plain = [(n, p) for n, p in named if no_decay_1d and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _check_options(name: str, lr: float, weight_decay: float, momentum: float | None,
                   betas: tuple[float, float] | None, adamw_lr: float | None) -> None:
    """Raise SmoothprobeError for an unknown name, a bad value, or an option the name ignores."""
    if name not in OPTIMIZERS:
        raise SmoothprobeError(f"optimizer: unknown name {name!r}; choose one of "
                               f"{', '.join(OPTIMIZERS)}")
    for arg, value in (("lr", lr), ("weight_decay", weight_decay), ("adamw_lr", adamw_lr)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise SmoothprobeError(f"{arg}: must be a finite number >= 0, got {value}")
    uses_betas = name in ("muon", "lion", "adamw")
    uses_momentum = name in ("muon", "signum", "signsgd", "normsgd", "sgd")
    if betas is not None:
        if not uses_betas:
            raise SmoothprobeError(f"betas: not used by {name}, got {betas}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise SmoothprobeError(f"betas: need two values in [0, 1), got {betas}")
    if momentum is not None:
        if not uses_momentum:
            raise SmoothprobeError(f"momentum: not used by {name}, got {momentum}")
        if not 0 <= momentum < 1:
            raise SmoothprobeError(f"momentum: must be in [0, 1), got {momentum}")
        if name == "signsgd" and momentum != 0:
            raise SmoothprobeError(f"momentum: signsgd has none (use signum), got {momentum}")
    if adamw_lr is not None and name != "muon":
        raise SmoothprobeError(f"adamw_lr: only used by muon, got {adamw_lr} for {name}")


def default_lr(name: str) -> float:
    """Peak LR used when the caller gives none: a safe starting point for small LLaMA models."""
    if name not in DEFAULT_LRS:
        raise SmoothprobeError(f"optimizer: unknown name {name!r}; choose one of "
                               f"{', '.join(OPTIMIZERS)}")
    return DEFAULT_LRS[name]


def make_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float = 0.0,
                   momentum: float | None = None, betas: tuple[float, float] | None = None,
                   adamw_lr: float | None = None, no_decay_1d: bool = True) -> Optimizer:
    """Build optimizer ``name`` (one of OPTIMIZERS) over ``model``'s trainable parameters.

    Defaults: lion betas (0.9, 0.99); signum, normsgd, sgd momentum 0.9; adamw betas
    (0.9, 0.95); muon momentum 0.95 (Nesterov), its AdamW side betas (0.9, 0.95) and
    ``adamw_lr = ADAMW_LR_RATIO * lr`` (1e-3 at Muon's usual 0.02), so one ``lr`` scales the
    whole model.  Weight decay is decoupled; ``no_decay_1d`` exempts tensors below 2-D.
    """
    _check_options(name, lr, weight_decay, momentum, betas, adamw_lr)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise SmoothprobeError(f"model: has no trainable parameters ({type(model).__name__})")
    if name == "muon":
        muon_names, _ = muon_split(model)
        in_muon = set(muon_names)
        return MuonWithAdamW(
            _named_groups([(n, p) for n, p in named if n in in_muon], weight_decay, no_decay_1d),
            _named_groups([(n, p) for n, p in named if n not in in_muon], weight_decay,
                          no_decay_1d),
            lr=lr, adamw_lr=adamw_lr, weight_decay=weight_decay,
            momentum=0.95 if momentum is None else momentum,
            betas=(0.9, 0.95) if betas is None else betas)
    groups = [{**g, "algo": name} for g in _named_groups(named, weight_decay, no_decay_1d)]
    if name == "lion":
        return Lion(groups, lr=lr, betas=(0.9, 0.99) if betas is None else betas)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95) if betas is None else betas)
    momentum_default = 0.0 if name == "signsgd" else 0.9
    cls = {"signum": Signum, "signsgd": Signum, "normsgd": NormSGD, "sgd": SGD}[name]
    return cls(groups, lr=lr, momentum=momentum_default if momentum is None else momentum)


def restart_momentum(optimizer: Optimizer) -> int:
    """Zero the optimizer's first-moment buffers (MOMENTUM_STATE) in place; returns how many. Second
    moments, step counts and all else stay. After the LR jumps, momentum averaged over the short
    steps before it would steer the long ones by gradients from where the run was (docs/design.md §5).

    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.AdamW([p], lr=0.1)
    >>> p.grad = torch.ones(2); opt.step()
    >>> restart_momentum(opt), opt.state[p]["exp_avg"].tolist(), opt.state[p]["exp_avg_sq"].tolist()
    (1, [0.0, 0.0], [0.0010000000474974513, 0.0010000000474974513])
    """
    zeroed = 0
    for state in optimizer.state.values():
        for key in MOMENTUM_STATE:
            buffer = state.get(key)
            if isinstance(buffer, Tensor):
                buffer.zero_()
                zeroed += 1
    return zeroed


def momentum_memory(optimizer: Optimizer) -> float:
    """Steps over which the first param group's first moment averages its gradients, 1/(1 − β): β is
    Lion's β2 (its buffer's rate), Adam's β1, `momentum` elsewhere (Muon, SGD, normSGD, Signum); 1 where
    there is none.

    >>> x = [torch.nn.Parameter(torch.ones(1))]
    >>> round(momentum_memory(Lion(x))), round(momentum_memory(NormSGD(x))), round(momentum_memory(torch.optim.AdamW(x)))
    (100, 10, 10)
    """
    group = optimizer.param_groups[0]
    if isinstance(optimizer, Lion):
        beta = group["betas"][1]
    elif "momentum" in group:
        beta = group["momentum"]
    elif "betas" in group:
        beta = group["betas"][0]
    else:
        beta = 0.0
    return 1.0 / (1.0 - float(beta))


def describe_split(optimizer: Optimizer) -> dict[str, list[str]]:
    """Map each group's ``"algo"`` to the names of the parameters it steps (for run.json)."""
    split: dict[str, list[str]] = {}
    for group in optimizer.param_groups:
        if "algo" not in group or "param_names" not in group:
            raise SmoothprobeError("describe_split needs groups with 'algo' and 'param_names' keys "
                             "(an optimizer from make_optimizer)")
        split.setdefault(group["algo"], []).extend(group["param_names"])
    return split
