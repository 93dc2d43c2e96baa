"""One probed run inside someone else's training loop: Recorder, run directory and sinks.

The framework callbacks only translate hooks into three calls: `before` (gradients ready,
before `optimizer.step()`), `after` (parameters at x_{t+1}) and `write` (the step's row, once
the framework's scheduler has moved on). The row's `lr` is the LR the step used, read in
`before`, because frameworks step their schedulers before the hooks that follow the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothprobe.probes.recorder import LossFn, Recorder
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.writer import RunWriter, describe_run


class ProbeSession:
    """A Recorder that writes one `steps` row per optimizer step into its own run directory.

    Only the process with `write=True` (rank 0) touches the disk; every process runs the probes
    so that extra forward/backward passes stay in step across ranks. `tensorboard` (a log
    directory), `mlflow` (a tracking URI) and `wandb` (a W&B project) mirror every numeric column
    as `smoothprobe/<column>`. `config` holds the TrainConfig fields the framework's settings
    give (steps, lr, ...).
    A framework that resumed from a checkpoint passes its step as `start_step`: an existing run
    directory is then reopened and cut back to the rows before that step, and the mirrors log
    each re-run step once.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        run_dir: str | Path,
        loss_fn: LossFn,
        *,
        config: Mapping[str, Any],
        source: str,
        write: bool = True,
        tensorboard: str | Path | None = None,
        mlflow: str | None = None,
        wandb: str | None = None,
        overwrite: bool = False,
        start_step: int = 0,
        **recorder_options: Any,
    ) -> None:
        self.recorder = Recorder(model, optimizer, loss_fn=loss_fn, **recorder_options)
        resume = write and start_step > 0 and (Path(run_dir) / "run.json").exists()
        self.run = RunWriter.start(run_dir, lambda: describe_run(
            model, optimizer, config={**config, "probes": self.recorder.config},
            probes=self.recorder.describe(), source=source), resume=resume, overwrite=overwrite, writer=write)
        if resume:
            self.run.resume_at(start_step)
        if start_step > 0:
            self.recorder.cadence.resume_at(start_step)
        self.optimizer = optimizer
        self.sinks: list[Any] = []
        if write and tensorboard is not None:
            from smoothprobe.integrations.tensorboard import TensorBoardSink

            self.sinks.append(TensorBoardSink(tensorboard, start_step=start_step))
        if write and mlflow is not None:
            from smoothprobe.integrations.mlflow import MlflowSink

            self.sinks.append(MlflowSink(mlflow, run_dir=run_dir))
        if write and wandb is not None:
            from smoothprobe.integrations.wandb import WandbSink

            self.sinks.append(WandbSink(wandb, run_dir=run_dir))
        self.run.update(probes=self.recorder.describe(), status="running")
        self._row: dict[str, Any] | None = None

    def before(self, step: int, batch: Any, loss: float | None, grad_norm: float | None) -> None:
        """Gradients of step `step` are final (after clipping); the optimizer has not stepped."""
        lr = self.optimizer.param_groups[0]["lr"]
        self.recorder.before_step(step, batch, loss=loss, grad_norm=grad_norm)
        # the norm the framework gave, else the one the Recorder measured on the gradients it found
        self._row = {"step": step, "loss": loss, "lr": float(lr), "grad_norm": self.recorder.grad_norm}

    def after(self) -> dict[str, Any]:
        """The optimizer has stepped: run the due probes at x_{t+1}; returns their columns."""
        if self._row is None:
            raise RuntimeError("after() called without before()")
        probes = self.recorder.after_step()
        self._row.update(probes)
        return probes

    @property
    def pending(self) -> bool:
        """True between `before` and `write`."""
        return self._row is not None

    def write(self, scheduler: Any = None) -> dict[str, Any]:
        """Write the step's row (adding an AdaptiveWarmup's record: delta, phase, ...); returns it."""
        if self._row is None:
            raise RuntimeError("write() called without before()")
        row, self._row = self._row, None
        if isinstance(scheduler, AdaptiveWarmup):
            row.update(scheduler.step_columns())
        self.run.write(row, self.recorder.tensor_rows)
        for sink in self.sinks:
            sink.write(row["step"], row)
        return row

    def close(self, status: str = "finished", reason: str | None = None) -> None:
        """Flush the run directory and mark it `status`; close the mirrors."""
        self.run.close(status, reason)
        for sink in self.sinks:
            sink.close()

    def close_after(self, exc: BaseException) -> None:
        """Training stopped on `exc`: flush the rows written so far and mark the run interrupted (Ctrl-C,
        SIGTERM) or crashed (anything else), as `RunWriter.close_after` does; close the mirrors."""
        self.run.close_after(exc)
        for sink in self.sinks:
            sink.close()
