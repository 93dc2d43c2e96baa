"""torch.distributed in one place: start-up from torchrun's environment, FSDP2 sharding and the few
collectives we use."""

from __future__ import annotations

import atexit
import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

from smoothprobe.errors import SmoothprobeError


def active() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the only process that writes the run store."""
    return rank() == 0


def init_from_env(device: torch.device, *, shard: bool = False) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1, or any torchrun launch when the
    model is to be sharded); NCCL on CUDA, gloo on CPU. On CUDA each rank takes the GPU of its
    LOCAL_RANK. Returns the device this rank uses."""
    if active():
        return device
    if shard and "WORLD_SIZE" not in os.environ:
        raise SmoothprobeError("fsdp shards the model over torchrun's processes; launch with "
                               "`torchrun --nproc-per-node N -m smoothprobe.cli.main ...`")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not shard:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(_leave)
    return device


def _leave() -> None:
    """End the group init_from_env made while the interpreter is still whole: left to the interpreter's
    own teardown, gloo's worker threads now and then abort the process (SIGABRT/SIGSEGV) after its work."""
    if active():
        dist.destroy_process_group()


def _buffer(value: torch.Tensor) -> torch.Tensor:
    """A float64 copy on a device the backend can reduce (NCCL needs CUDA)."""
    buf = value.detach().to(torch.float64).reshape(-1).clone()
    if dist.get_backend() == "nccl" and buf.device.type != "cuda":
        buf = buf.cuda()
    return buf


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (float64, so every rank gets the same bits); identity alone."""
    if not active():
        return value
    buf = _buffer(value)
    dist.all_reduce(buf)
    return (buf / dist.get_world_size()).reshape(value.shape)


def all_reduce_grads_(grads: list[torch.Tensor]) -> None:
    """Average gradients over ranks in place (the probes' global-batch gradients)."""
    if not active():
        return
    for g in grads:
        dist.all_reduce(g)
        g.div_(dist.get_world_size())


def gather_floats(values: list[float]) -> torch.Tensor:
    """Every rank's `values` as a (world, len) float64 tensor on the CPU."""
    local = torch.tensor(values, dtype=torch.float64)
    if not active():
        return local[None]
    buf = _buffer(local)
    out = [torch.empty_like(buf) for _ in range(dist.get_world_size())]
    dist.all_gather(out, buf)
    return torch.stack(out).cpu()


def shard(model: nn.Module) -> None:
    """FSDP2 in place: every entry of each nn.ModuleList (the transformer blocks) is its own
    all-gather unit, the root holds the rest. Parameters become DTensors sharded on dim 0."""
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)


def is_sharded(tensors: Sequence[Tensor]) -> bool:
    """Whether any tensor is an FSDP2 shard (a DTensor)."""
    return any(isinstance(t, DTensor) for t in tensors)


def full(t: Tensor) -> Tensor:
    """The whole tensor on every rank: a sharded DTensor is all-gathered (a new tensor), a plain
    tensor is returned as is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def reshard(model: nn.Module) -> None:
    """Free FSDP2's gathered parameters (a forward without backward leaves the root's gathered), so
    the next forward gathers the shards again and sees what was written into them."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def global_norm(tensors: Sequence[Tensor]) -> float:
    """The joint ℓ2 norm of a list of tensors, sharded or not."""
    if not tensors:
        return 0.0
    if is_sharded(tensors):
        norms = [full(torch.linalg.vector_norm(t, dtype=torch.float32)) for t in tensors]
    else:
        norms = torch._foreach_norm(tensors)
    return torch.linalg.vector_norm(torch.stack(norms)).item()


def snapshot(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached copies of the parameters (x_t, kept across `optimizer.step()`)."""
    return {n: p.detach().clone() for n, p in params.items()}


def update_norm(params: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> float:
    """‖x_{t+1} − x_t‖₂ over the parameters in `before` (all ranks' shards together)."""
    names = [n for n in before if n in params]
    if not names:
        return math.nan
    return global_norm(torch._foreach_sub([params[n].detach() for n in names], [before[n] for n in names]))


def state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Model and optimizer state dicts with whole tensors: plain `state_dict()`, or under FSDP2 the
    gathered state (a collective: every rank must call it)."""
    if not is_sharded(list(model.parameters())):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))


def load_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                     optimizer_state: dict) -> None:
    """Load what `state_dicts` returned; under FSDP2 each rank keeps its shard of the whole tensors."""
    if not is_sharded(list(model.parameters())):
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True))
