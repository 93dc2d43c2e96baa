"""The one writer of a run directory's content, shared by `train`/`record`, the Recorder in a user's
own loop and the Hugging Face / Lightning adapters.

`describe_run` gives run.json the same keys whoever trains (config as far as it is known, task
facts, the optimizer's class and hyper-parameters, its parameter split, the probe geometry,
versions, status). `StepLog` appends one row per optimizer step with the columns every run has
(step, loss, lr, grad_norm, update_norm, step_time_s, time_s), flushes on a cadence, and closes the
run with a status (finished, diverged, crashed, interrupted) and its reason.
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smoothprobe import distributed
from smoothprobe.errors import Terminated, one_line
from smoothprobe.optim import describe_split
from smoothprobe.store import DISK_FULL, RunStore, disk_full

ALWAYS = ("step", "loss", "lr", "grad_norm", "update_norm", "step_time_s", "time_s")
"""Columns of every steps.jsonl row, whatever loop wrote it."""


def environment() -> dict:
    """Library and machine versions for run.json."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("smoothprobe")
    except PackageNotFoundError:
        own = "source"
    return {
        "smoothprobe": own,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _plain(value: Any) -> Any:
    """A JSON-able copy of an optimizer hyper-parameter, or None when it has no plain form."""
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return items if all(i is not None for i in items) else None
    return None


def describe_optimizer(optimizer: torch.optim.Optimizer, name: str | None = None) -> dict:
    """Class, hyper-parameters (first group's plain values) and, for smoothprobe's optimizers,
    which parameters each rule steps. Wrappers (accelerate's AcceleratedOptimizer, Lightning's)
    are described by the optimizer they wrap."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    group = optimizer.param_groups[0]
    hyper = {k: _plain(v) for k, v in group.items() if k not in ("params", "param_names")}
    named = all("algo" in g and "param_names" in g for g in optimizer.param_groups)
    return {"name": name or type(optimizer).__name__.lower(), "class": type(optimizer).__qualname__,
            "lr": _plain(group.get("initial_lr", group["lr"])),  # a scheduler's base LR, not its first step's
            "hyperparameters": {k: v for k, v in hyper.items() if v is not None},
            "split": describe_split(optimizer) if named else None}


def describe_run(model: nn.Module, optimizer: torch.optim.Optimizer, *, config: Mapping[str, Any],
                 task: Mapping[str, Any] | None = None, probes: Mapping[str, Any] | None = None,
                 optimizer_name: str | None = None, source: str = "train") -> dict:
    """run.json content, the same keys for every writer. `task` carries facts such as f* (None
    where unknown); `probes` is the Recorder's `describe()`; `source` says which loop wrote it."""
    first = next(model.parameters(), None)
    return {
        "source": source,
        "config": dict(config),
        "task": {"f_star": None, **(task or {})},
        "optimizer": describe_optimizer(optimizer, optimizer_name),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(first.device) if first is not None else "cpu",
        "environment": environment(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": distributed.world_size(),
        "probes": dict(probes) if probes is not None else None,
        "status": "created",
    }


def snapshot(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached copies of the parameters (x_t, kept across `optimizer.step()`)."""
    return {n: p.detach().clone() for n, p in params.items()}


def update_norm(params: Mapping[str, Tensor], before: Mapping[str, Tensor]) -> float:
    """‖x_{t+1} − x_t‖₂ over the parameters in `before` (all ranks' shards together)."""
    names = [n for n in before if n in params]
    if not names:
        return math.nan
    return distributed.global_norm(torch._foreach_sub([params[n].detach() for n in names],
                                                      [before[n] for n in names]))


class StepLog:
    """Appends the step rows of one run: fills the timing columns, flushes every `flush_every`
    rows, and closes the run with a status. `store=None` (ranks other than 0) keeps nothing.

    A row that already holds `step_time_s` (the built-in loop times its step itself) keeps it;
    otherwise the time since the previous row counts as the step's. `elapsed` continues a
    resumed run's clock.
    """

    def __init__(self, store: RunStore | None, flush_every: int = 10, elapsed: float = 0.0) -> None:
        self.store, self.flush_every, self.elapsed = store, flush_every, elapsed
        self._last = time.perf_counter()
        self._written = 0

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Complete `row` with the always-present columns and append it; returns it."""
        now = time.perf_counter()
        row.setdefault("step_time_s", now - self._last)
        self._last = now
        self.elapsed += row["step_time_s"]
        row["time_s"] = self.elapsed
        for column in ALWAYS:
            row.setdefault(column, None)
        if self.store is not None:
            self.store.append("steps", row)
            self._written += 1
            if self._written % self.flush_every == 0:
                self.store.flush()
        return row

    def close(self, status: str, reason: str | None = None) -> None:
        """Flush every buffered row, write the final status (and why) to run.json and release the
        run directory's lock. On a full disk the rows that do not fit are dropped, the status
        becomes `crashed` with reason "disk full" (written into the store's reserve) and the
        OSError propagates."""
        if self.store is None:
            return
        full = None
        try:
            try:
                self.store.flush()
            except OSError as exc:
                if not disk_full(exc):
                    raise
                full, status, reason = exc, "crashed", DISK_FULL
                self.store.discard()
            self.store.write_info(status=status, status_reason=reason,
                                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        finally:
            self.store.close()
        if full is not None:
            raise full

    def close_after(self, exc: BaseException) -> None:
        """Close a run that `exc` ended: interrupted (Ctrl-C, SIGTERM), crashed on a full disk
        ("disk full") or crashed with the reason. A second Ctrl-C or SIGTERM while closing is
        ignored, so the status still lands."""
        with signals_held():
            if isinstance(exc, (KeyboardInterrupt, Terminated)):
                self.close("interrupted", "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt")
            elif disk_full(exc):
                self.close("crashed", DISK_FULL)
            else:
                self.close("crashed", f"{type(exc).__name__}: {one_line(exc)}")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block (the main thread only; elsewhere a no-op) and
    restore the previous handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
