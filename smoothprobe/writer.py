"""The one writer of a run directory, shared by `train`/`record`, the Recorder in a user's own loop
and the Hugging Face / Lightning sessions.

`RunWriter` owns a run directory's lifecycle: create (or reopen to resume), lock, one row per
optimizer step with the columns every run has (step, loss, lr, grad_norm, update_norm,
step_time_s, time_s), flushes on a cadence, and the closing status (finished, diverged, crashed,
interrupted) with its reason. `describe_run` gives run.json the same keys whoever trains, and its
`config` block the fields of `TrainConfig` (as far as the writer knows them), task facts, the
optimizer's class and hyper-parameters, its parameter split, the probe geometry and versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn
from typing_extensions import Self

from smoothprobe import distributed
from smoothprobe.config import ProbeConfig, TrainConfig
from smoothprobe.errors import SmoothprobeError, Terminated, one_line
from smoothprobe.optim import describe_split
from smoothprobe.probes import recorder as probing
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


def _complete(cls: type, known: Mapping[str, Any]) -> dict:
    """The fields of config class `cls`, with the values in `known` and None for the others."""
    return {f.name: known.get(f.name) for f in dataclasses.fields(cls)}


def run_config(known: Mapping[str, Any]) -> dict:
    """run.json's `config` block: the fields of TrainConfig (and of ProbeConfig under `probes`)
    with the values the writer knows and None for the rest, so it has one shape whoever wrote it."""
    config = _complete(TrainConfig, known)
    if isinstance(config["probes"], Mapping):
        config["probes"] = _complete(ProbeConfig, config["probes"])
    return config


def describe_run(model: nn.Module, optimizer: torch.optim.Optimizer, *, config: Mapping[str, Any],
                 task: Mapping[str, Any] | None = None, probes: Mapping[str, Any] | None = None,
                 optimizer_name: str | None = None, source: str = "train") -> dict:
    """run.json content, the same keys for every writer. `config` holds the TrainConfig fields the
    writer knows (`run_config`); `task` carries facts such as f* (None where unknown); `probes` is
    the Recorder's `describe()`; `source` says which loop wrote it."""
    first = next(model.parameters(), None)
    return {
        "source": source,
        "config": run_config(config),
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


class RunWriter:
    """One run directory from start to close, for every loop that writes one (`train`, the Recorder
    in a user's loop, the Hugging Face / Lightning sessions).

    `start` creates the directory (or reopens it to resume) and takes its lock; `write` appends a
    step row with the columns every run has and flushes every `flush_every` rows; `update` merges
    fields into run.json; `close` flushes, writes the final status and reason and releases the lock.
    A store that is not the writer (ranks other than 0) keeps nothing and touches no file.

    A row that already holds `step_time_s` (the built-in loop times its step itself) keeps it;
    otherwise the time since the previous row counts as the step's. `elapsed` is the run's clock.
    """

    def __init__(self, store: RunStore, flush_every: int = 10) -> None:
        self.store, self.flush_every, self.elapsed = store, flush_every, 0.0
        self._last = time.perf_counter()
        self._written = 0

    @classmethod
    def start(cls, path: str | Path, describe: Callable[[], dict], *, resume: bool = False,
              overwrite: bool = False, writer: bool = True, flush_every: int = 10) -> RunWriter:
        """Create the run directory `path` with run.json from `describe()` (a directory that holds a
        run is refused unless `overwrite`), or with `resume` reopen the run there to append to it."""
        refuse_resume_with_overwrite(resume, overwrite)
        if resume:
            return cls(RunStore.open(path, writer=writer), flush_every)
        return cls(RunStore.create(path, describe(), overwrite=overwrite, writer=writer), flush_every)

    @property
    def path(self) -> Path:
        """The run directory."""
        return self.store.path

    def update(self, **fields: Any) -> None:
        """Merge `fields` into run.json."""
        self.store.write_info(**fields)

    def resume_at(self, step: int, elapsed: float | None = None) -> None:
        """Continue the run at `step`: drop the rows from `step` on, add `step` to run.json's
        `resumed_at`, and go on with the clock at `elapsed` (default: the last kept row's time_s)."""
        self.store.truncate(step)
        self.elapsed = self.store.last_time() if elapsed is None else elapsed
        self.store.write_info(resumed_at=[*self.store.info.get("resumed_at", []), step])

    def write(self, row: dict[str, Any], tensors: Sequence[dict] = ()) -> dict[str, Any]:
        """Complete the step row `row` with the always-present columns and append it, with the
        step's per-tensor rows `tensors`; returns it."""
        now = time.perf_counter()
        row.setdefault("step_time_s", now - self._last)
        self._last = now
        self.elapsed += row["step_time_s"]
        row["time_s"] = self.elapsed
        for column in ALWAYS:
            row.setdefault(column, None)
        for entry in tensors:
            self.store.append("tensors", {"step": row["step"], **entry})
        self.store.append("steps", row)
        self._written += 1
        if self._written % self.flush_every == 0:
            self.store.flush()
        return row

    def append(self, table: str, row: dict[str, Any]) -> None:
        """Buffer a row of another table (evals); it reaches disk with the next flush."""
        self.store.append(table, row)

    def close(self, status: str, reason: str | None = None) -> None:
        """Flush every buffered row, write the final status (and why) to run.json and release the
        run directory's lock. On a full disk the rows that do not fit are dropped, the status
        becomes `crashed` with reason "disk full" (written into the store's reserve) and the
        OSError propagates."""
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


def refuse_resume_with_overwrite(resume: bool, overwrite: bool) -> None:
    """resume (continue the run) and overwrite (replace it) exclude each other."""
    if resume and overwrite:
        raise SmoothprobeError("resume and overwrite exclude each other (resume continues the run in the run "
                               "directory; overwrite replaces it)", params=("resume", "overwrite"))


class Recorder(probing.Recorder):
    """The Recorder in a user's own loop: runs the probes around `optimizer.step()` (options as in
    `smoothprobe.probes.recorder.Recorder`) and writes one row per step into `run_dir`.

    An existing `run_dir` is refused unless `overwrite` (replace the run; a user's own files stay)
    or `resume` (append to it: the rows from the first step recorded again on are dropped, so a loop
    resumed from its own checkpoint continues the table), as the CLI's flags of the same names.
    Without `run_dir` nothing is written. As a context manager it closes the run with status
    finished, interrupted (Ctrl-C, SIGTERM) or crashed (any other exception).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: str | Path | None = None,
                 *, loss_fn: probing.LossFn, resume: bool = False, overwrite: bool = False,
                 **options: Any) -> None:
        refuse_resume_with_overwrite(resume, overwrite)
        super().__init__(model, optimizer, loss_fn=loss_fn, **options)
        self.run: RunWriter | None = None
        if run_dir is not None:
            self.run = RunWriter.start(run_dir, lambda: describe_run(
                model, optimizer, config={"seed": self.seed, "probes": self.config}, probes=self.describe(),
                source="recorder"), resume=resume, overwrite=overwrite)
            self.run.update(status="running")
        self._resume = resume
        self._row: dict[str, Any] = {}

    def before_step(self, step: int, batch: Any, *, loss: float | None = None, grad_norm: float | None = None,
                    x_t: Mapping[str, torch.Tensor] | None = None) -> None:
        if self._resume and self.run is not None:  # the rows from this step on are recorded again
            self.run.resume_at(step)
            self.cadence.resume_at(step)  # and probed on the first run's grid
        self._resume = False
        lr = self.optimizer.param_groups[0]["lr"]
        super().before_step(step, batch, loss=loss, grad_norm=grad_norm, x_t=x_t)
        self._row = {"step": step, "loss": loss, "lr": lr, "grad_norm": self.grad_norm}

    def after_step(self, skipped: bool = False) -> dict:
        row = super().after_step(skipped)
        if self.run is not None:
            self.run.write({**self._row, **row}, self.tensor_rows)
        return row

    def close(self, status: str = "finished", reason: str | None = None) -> None:
        """Flush the rows and mark the run `status` (nothing to do without a run directory)."""
        if self.run is not None:
            self.run.close(status, reason)
            self.run = None

    def __enter__(self) -> Self:
        """Inside the block SIGTERM raises `Terminated` (`sigterm_raises`), so the run closes as interrupted."""
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(sigterm_raises())
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Close with status finished, interrupted (Ctrl-C, SIGTERM) or crashed (any other exception)."""
        try:
            if exc is None or self.run is None:
                self.close()
            else:
                self.run.close_after(exc)
                self.run = None
        finally:
            self._signals.close()


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM")


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While training, SIGTERM raises Terminated, so the run closes (rows flushed, status
    interrupted) instead of dying mid-write; the previous handler is restored afterwards. Signal
    handlers live in the main thread only, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
