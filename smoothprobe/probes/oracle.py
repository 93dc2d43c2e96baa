"""Gradients and exact Hessian-vector products of the loss on one fixed batch (docs/design.md §2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from smoothprobe.distributed import all_reduce_grads_, all_reduce_mean, is_sharded, reshard
from smoothprobe.errors import SmoothprobeError
from smoothprobe.probes.vec import flatten, unflatten


@dataclass(frozen=True)
class RngState:
    """torch's CPU generator state and, when CUDA is initialised, every CUDA device's state."""

    cpu: Tensor
    cuda: tuple[Tensor, ...]


def capture_rng_state() -> RngState:
    """The current torch RNG state: capture it before the training forward to replay it later."""
    cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else ()
    return RngState(torch.get_rng_state(), cuda)


@contextmanager
def replay_rng(state: RngState) -> Iterator[None]:
    """Run the block from `state`, then give the caller back the RNG stream it had before."""
    with torch.random.fork_rng(devices=list(range(len(state.cuda)))):
        torch.set_rng_state(state.cpu)
        if state.cuda:
            torch.cuda.set_rng_state_all(list(state.cuda))
        yield


HVP_MODES = ("exact", "fd", "forward")
"""How Hessian-vector products are taken: double backward, a central difference of gradients, or
forward-over-reverse (the JVP of the gradient; slower than double backward on the CPU here, see
benchmarks/probe_overhead.py)."""

class GradOracle:
    """Gradient and HVP of the loss on one fixed batch, at the model's current parameters.

    Every evaluation replays `rng_state` (default: the state at construction), so dropout and
    sampling repeat exactly, and leaves the caller's RNG stream, the model's buffers (BatchNorm
    running statistics) and `p.grad` untouched. HVPs keep one create_graph gradient and reuse
    it until a parameter changes in place (its version counter moves) or `release()` is called;
    `loss_and_grad(create_graph=True)` builds that graph, so a gradient the caller needs anyway
    pays for it. The graph is built eagerly (SDPA on the math kernel, torch.compile'd code run
    as plain Python), since neither flash attention nor compiled autograd has a double backward.
    The oracle serves one batch; make a new one for another batch.

    `pieces` (weights and loss functions with Σ wᵢ·lossᵢ = loss_fn(), e.g. from
    `smoothprobe.probes.pieces.split_rows`) make exact HVPs piece by piece: each builds one
    piece's graph, takes its double backward and frees it, so the transient memory is one piece's
    graph, and no graph is kept between calls (each HVP pays the forward and create_graph
    backward again: 1.6–1.8× the time of an HVP on a kept graph). `loss_grad_and_hvp` gives a
    direction known in advance (curv_hvp's update) its HVP from the same pieces as the gradient.
    Each piece replays the RNG state, so random layers (dropout) draw other masks than on the
    whole batch; the pieces' gradient and HVPs agree with each other.

    Under torch.distributed gradients are averaged over ranks (the global batch). Under FSDP2
    the parameters are DTensor shards and so is everything the oracle hands out: gradients come
    from a plain backward (FSDP reduce-scatters them into `.grad`), and exact HVPs are
    unavailable (double backward does not pass through FSDP's all-gather).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[], Tensor],
        params: Sequence[Tensor],
        rng_state: RngState | None = None,
        hvp: str = "exact",
        pieces: Sequence[tuple[float, Callable[[], Tensor]]] | None = None,
    ) -> None:
        if hvp not in HVP_MODES:
            raise SmoothprobeError(f"hvp must be one of {', '.join(HVP_MODES)}; got {hvp!r}")
        if not params:
            raise SmoothprobeError("params is empty")
        owned = {id(p) for p in model.parameters()}
        for i, p in enumerate(params):
            if id(p) not in owned:
                raise SmoothprobeError(f"params[{i}] is not a parameter of the model")
            if not p.requires_grad:
                raise SmoothprobeError(f"params[{i}] does not require grad")
        self.model = model
        self.loss_fn = loss_fn
        self.params = list(params)
        self.rng_state = rng_state if rng_state is not None else capture_rng_state()
        self.sharded = is_sharded(self.params)
        self.hvp_mode = hvp
        self.pieces = list(pieces) if pieces is not None and len(pieces) > 1 else None
        self._graph: tuple[float, list[Tensor]] | None = None
        self._versions: tuple[int, ...] = ()

    @contextmanager
    def _replay(self) -> Iterator[None]:
        """Replay the RNG state on private copies of the buffers (BatchNorm statistics).

        The forward may update the copies and the graph may save them; the model's own buffers
        are put back untouched afterwards.
        """
        named = list(self.model.named_buffers(remove_duplicate=False))
        copies = {id(b): b.detach().clone() for _, b in named}
        for name, b in named:
            _set_buffer(self.model, name, copies[id(b)])
        try:
            with replay_rng(self.rng_state):
                yield
        finally:
            for name, b in named:
                _set_buffer(self.model, name, b)

    def _grad(self, loss: Tensor, create_graph: bool) -> tuple[Tensor, ...]:
        return torch.autograd.grad(
            loss, self.params, create_graph=create_graph, allow_unused=True, materialize_grads=True
        )

    def loss_and_grad(self, create_graph: bool = False) -> tuple[float, list[Tensor]]:
        """The batch loss and its gradient for `params` (one forward+backward). With
        `create_graph` the gradient graph is kept (or reused, if still valid) for HVPs; with
        `pieces` there is no graph to keep, and the gradient is a plain one."""
        if create_graph and self.pieces is None:
            loss, graph = self._gradient_graph()
            grads = [g.detach().clone() for g in graph]  # the all-reduce must not write into the graph
            all_reduce_grads_(grads)
            return loss, grads
        with self._replay():
            if self.sharded:
                loss, grads = self._sharded_loss_and_grad()
            else:
                loss = self.loss_fn()
                grads = [g.detach() for g in self._grad(loss, create_graph=False)]
                all_reduce_grads_(grads)  # under torch.distributed: the global-batch gradient
        return float(all_reduce_mean(loss.detach())), grads

    def _sharded_loss_and_grad(self) -> tuple[Tensor, list[Tensor]]:
        """Loss and sharded gradients by a plain backward into `.grad` (FSDP2 reduce-scatters there).
        The training gradients in `.grad` are set aside and put back."""
        reshard(self.model)  # so that model.parameters() lists the shards that backward writes to
        everything = list(self.model.parameters())
        kept = [p.grad for p in everything]
        for p in everything:
            p.grad = None
        try:
            loss = self.loss_fn()
            loss.backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        finally:
            for p, g in zip(everything, kept):
                p.grad = g
        return loss, grads

    def point(self) -> list[Tensor]:
        """The current parameters, detached (views, not copies)."""
        return [p.detach() for p in self.params]

    def move_to(self, values: Sequence[Tensor]) -> None:
        """Set the parameters to `values` (laid out like them: shards under FSDP2)."""
        if self.sharded:  # a forward without backward leaves FSDP's gathered copies behind
            reshard(self.model)
        with torch.no_grad():
            for p, v in zip(self.params, values, strict=True):
                p.copy_(v)
        self._graph = None

    def snapshot(self) -> list[Tensor]:
        """Copies of the current parameters to `move_to` back later."""
        return [p.detach().clone() for p in self.params]

    def _gradient_graph(self) -> tuple[float, list[Tensor]]:
        """The loss and the create_graph gradient, rebuilt when a parameter changed in place."""
        versions = tuple(p._version for p in self.params)
        if self._graph is None or versions != self._versions:
            self._graph = None
            loss, grads = self._build_graph(self.loss_fn)
            self._graph = (float(all_reduce_mean(loss.detach())), grads)
            self._versions = versions
        return self._graph

    def _refuse_sharded(self) -> None:
        """Exact HVPs (double backward, forward-over-reverse) do not pass through FSDP2's all-gather."""
        if self.sharded:
            raise SmoothprobeError("exact Hessian-vector products are not available under FSDP2; "
                                   "use the norms, secant and curv_fd probes")

    def _build_graph(self, loss_fn: Callable[[], Tensor]) -> tuple[Tensor, list[Tensor]]:
        """One loss and its create_graph gradient, built eagerly on the math SDPA kernel."""
        self._refuse_sharded()
        with self._replay(), sdpa_kernel(SDPBackend.MATH), torch.compiler.set_stance("force_eager"):
            loss = loss_fn()
            return loss, list(self._grad(loss, create_graph=True))

    def _double_backward(self, grads: Sequence[Tensor], vectors: Sequence[Tensor], keep: bool) -> list[Tensor]:
        """The vector-Jacobian product of the create_graph gradient with v: H·v, as H is symmetric."""
        pairs = [(g, v.to(g.dtype)) for g, v in zip(grads, vectors, strict=True) if g.requires_grad]
        if not pairs:
            return [torch.zeros_like(p) for p in self.params]
        hv = torch.autograd.grad([g for g, _ in pairs], self.params, grad_outputs=[v for _, v in pairs],
                                 retain_graph=keep, allow_unused=True, materialize_grads=True)
        return [h.detach() for h in hv]

    def hvp(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """H·v by double backward through the kept gradient graph (built here if there is none),
        or piece by piece with `pieces`. With hvp="fd", a central difference of gradients instead
        (`fd_hvp`); with hvp="forward", forward-over-reverse (`forward_hvp`)."""
        if self.hvp_mode == "fd":
            return self.fd_hvp(vectors)
        if self.hvp_mode == "forward":
            return self.forward_hvp(vectors)
        if self.pieces is not None:
            return self._piecewise(vectors, with_grad=False)[2]
        hv = self._double_backward(self._gradient_graph()[1], vectors, keep=True)
        all_reduce_grads_(hv)
        return hv

    def loss_grad_and_hvp(self, vectors: Sequence[Tensor]) -> tuple[float, list[Tensor], list[Tensor]]:
        """The batch loss, its gradient and H·v for exact HVPs from one create_graph backward: on
        the kept graph (which stays for further HVPs), or piece by piece with `pieces` (each
        piece's graph serves its part of both, then is freed). Other modes take the gradient and
        then the HVP."""
        if self.hvp_mode != "exact":
            loss, grads = self.loss_and_grad()
            return loss, grads, self.hvp(vectors)
        if self.pieces is None:
            loss, grads = self.loss_and_grad(create_graph=True)
            return loss, grads, self.hvp(vectors)
        return self._piecewise(vectors, with_grad=True)

    def _piecewise(self, vectors: Sequence[Tensor], with_grad: bool) -> tuple[float, list[Tensor], list[Tensor]]:
        """Σ wᵢ over the pieces of their loss, gradient (if `with_grad`, else empty) and H·v, one
        piece's graph alive at a time."""
        loss = 0.0
        grads = [torch.zeros_like(p) for p in self.params] if with_grad else []
        hv = [torch.zeros_like(p) for p in self.params]
        for weight, loss_fn in self.pieces:
            piece_loss, piece_grads = self._build_graph(loss_fn)
            loss += weight * float(piece_loss.detach())
            if with_grad:
                torch._foreach_add_(grads, [g.detach() for g in piece_grads], alpha=weight)
            torch._foreach_add_(hv, self._double_backward(piece_grads, vectors, keep=False), alpha=weight)
            del piece_loss, piece_grads  # free this piece's graph before the next one is built
        all_reduce_grads_(grads)
        all_reduce_grads_(hv)
        return float(all_reduce_mean(torch.tensor(loss, dtype=torch.float64))), grads, hv

    def fd_hvp(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """H·v ≈ (g(x + s) − g(x − s)) / 2h with s = h·v as stored in the parameters' dtype, h
        giving ‖s‖ = u^(1/3)·max(‖x‖, 1) (u the dtype's epsilon): two forward+backward passes and
        the memory of one gradient, no double backward (so it also works under FSDP2). Its
        relative error is about u^(2/3) (1e-5 in fp32); low-precision losses make it noisy."""
        saved = self.snapshot()
        v_norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in vectors))
        if v_norm == 0:
            return [torch.zeros_like(p) for p in self.params]
        x_norm = math.sqrt(sum(float(x.double().pow(2).sum()) for x in saved))
        eps = max(torch.finfo(x.dtype).eps for x in saved)
        h = eps ** (1 / 3) * max(x_norm, 1.0) / v_norm
        try:
            self.move_to([torch.add(x, v.to(x.dtype), alpha=h) for x, v in zip(saved, vectors, strict=True)])
            plus = self.loss_and_grad()[1]
            self.move_to([torch.add(x, v.to(x.dtype), alpha=-h) for x, v in zip(saved, vectors, strict=True)])
            minus = self.loss_and_grad()[1]
        finally:
            self.move_to(saved)
        return [(a - b) / (2 * h) for a, b in zip(plus, minus, strict=True)]

    def forward_hvp(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """H·v by forward-over-reverse: `torch.func.jvp` of `torch.func.grad` of the loss along v
        (of each piece's loss, weighted, with `pieces`). Nothing is kept between calls (no
        create_graph gradient); not under FSDP2."""
        self._refuse_sharded()
        names = {id(p): n for n, p in self.model.named_parameters()}
        keys = [f"model.{names[id(p)]}" for p in self.params]
        primals = tuple(p.detach() for p in self.params)
        tangents = tuple(v.to(p.dtype) for p, v in zip(primals, vectors, strict=True))
        hv = [torch.zeros_like(p) for p in primals]
        for weight, loss_fn in self.pieces or [(1.0, self.loss_fn)]:
            holder = _LossHolder(self.model, loss_fn)

            def loss_at(values: tuple[Tensor, ...], holder: _LossHolder = holder) -> Tensor:
                return torch.func.functional_call(holder, dict(zip(keys, values, strict=True)), ())

            with (self._replay(), _batch_statistics_only(self.model), sdpa_kernel(SDPBackend.MATH),
                  torch.compiler.set_stance("force_eager")):
                _, piece = torch.func.jvp(torch.func.grad(loss_at), (primals,), (tangents,))
            torch._foreach_add_(hv, [h.detach() for h in piece], alpha=weight)
        all_reduce_grads_(hv)
        return hv

    def hvp_flat(self, vector: Tensor) -> Tensor:
        """H·v for a vector laid out like `flatten(params)`, returned flat in the vector's dtype
        (the form Lanczos and the trace estimators iterate in)."""
        return flatten(self.hvp(unflatten(vector, self.params)), vector.dtype)

    def release(self) -> None:
        """Free the kept gradient graph."""
        self._graph = None


@contextmanager
def _batch_statistics_only(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in train mode without their running statistics inside the block: they normalise
    by the batch's statistics as before, but update nothing in place, which the torch.func transforms of
    `forward_hvp` refuse (the statistics are the `_replay` copies, restored after it anyway)."""
    saved = [(m, m.running_mean, m.running_var, m.num_batches_tracked) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    for m, *_ in saved:
        m.running_mean = m.running_var = m.num_batches_tracked = None
    try:
        yield
    finally:
        for m, mean, var, count in saved:
            m.running_mean, m.running_var, m.num_batches_tracked = mean, var, count


class _LossHolder(nn.Module):
    """The model as a submodule and the batch loss as forward(): lets `functional_call` swap the
    model's parameters for a closure that calls the model itself."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[], Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self) -> Tensor:
        return self.loss_fn()


def _set_buffer(model: nn.Module, name: str, value: Tensor) -> None:
    """Rebind the registered buffer `name` (a dotted path) of `model` to `value`."""
    path, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(path), attribute, value)
