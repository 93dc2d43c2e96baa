"""torch.distributed in one place: start-up from torchrun's environment and the few collectives we use."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU. On CUDA
    each rank takes the GPU of its LOCAL_RANK. Returns the device this rank uses."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


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
