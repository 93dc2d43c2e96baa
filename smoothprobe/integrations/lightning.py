"""Lightning: probes through a `Callback`, `AdaptiveWarmup` through a LightningModule mixin.

Lightning hands callbacks what the secant needs: the batch in `on_train_batch_start`, the
(accumulation-normalised) loss in `on_before_backward`, the gradients before clipping in
`on_before_optimizer_step` and x_{t+1} in `on_train_batch_end`. With gradient accumulation
the probe batch is the list of accumulated batches. Lightning steps step-interval schedulers
before `on_train_batch_end`, so the row's `lr` is read before the optimizer step::

    trainer = lightning.Trainer(callbacks=[SmoothprobeCallback("runs/pl", loss_fn=my_loss)])

`loss_fn(module, batch)` returns the mean loss `training_step` differentiates, without
logging (do not call `training_step` itself: its `self.log` calls would record probe passes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn

from smoothprobe.errors import SmoothprobeError
from smoothprobe.integrations.session import ProbeSession
from smoothprobe.probes.oracle import RngState, capture_rng_state, replay_rng
from smoothprobe.schedule.adaptive import AdaptiveWarmup


class SmoothprobeCallback(pl.Callback):
    """Runs the smoothprobe Recorder around each optimizer step of a Lightning Trainer.

    One `steps` row per optimizer step: `loss` (the summed normalised losses Lightning
    back-propagated), the `lr` the step used, probe columns on probed steps and, with an
    `AdaptiveWarmup` as first scheduler, its record. Automatic optimisation with one optimizer
    only; gradients are captured before Lightning clips them. Only global rank zero writes.
    `tensorboard` (a log directory), `mlflow` (a tracking URI) and `wandb` (a W&B project)
    mirror each row as the scalars `smoothprobe/<column>`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        loss_fn: Any,
        preset: str = "standard",
        every: int = 10,
        overhead: float | None = None,
        tensorboard: str | Path | None = None,
        mlflow: str | None = None,
        wandb: str | None = None,
        overwrite: bool = False,
        **recorder_options: Any,
    ) -> None:
        if not callable(loss_fn):
            raise SmoothprobeError(f"loss_fn must be callable (module, batch) -> loss, got {loss_fn!r}")
        self.run_dir, self.loss_fn, self.overwrite = run_dir, loss_fn, overwrite
        self.mirrors = {"tensorboard": tensorboard, "mlflow": mlflow, "wandb": wandb}
        self.options = {"preset": preset, "every": every, "overhead": overhead, **recorder_options}
        self.session: ProbeSession | None = None
        self._batches: list[Any] = []
        self._rng: RngState | None = None
        self._loss = 0.0
        self._forward_context: Any = None
        self._accumulate = 1

    def _probe_loss(self, module: nn.Module, batch: tuple[RngState, list[Any]]) -> Tensor:
        """The step's loss as Lightning differentiated it: each micro-batch's divided by
        accumulate_grad_batches, also in an epoch's last, shorter window."""
        rng, batches = batch
        with replay_rng(rng), self._forward_context():
            return sum(self.loss_fn(module, b) for b in batches) / self._accumulate

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization or len(trainer.optimizers) != 1:
            raise SmoothprobeError("SmoothprobeCallback supports automatic optimization with one "
                                   f"optimizer; got {len(trainer.optimizers)} optimizers")
        self._forward_context = trainer.precision_plugin.forward_context
        self._accumulate = trainer.accumulate_grad_batches
        config = {"steps": trainer.max_steps if trainer.max_steps > 0 else None,  # TrainConfig's names
                  "accum": trainer.accumulate_grad_batches, "clip": trainer.gradient_clip_val}
        self.session = ProbeSession(pl_module, trainer.optimizers[0], self.run_dir, self._probe_loss,
                                    config=config, source="lightning", write=trainer.is_global_zero,
                                    **self.mirrors, overwrite=self.overwrite,
                                    start_step=trainer.global_step, **self.options)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._batches:
            self._rng, self._loss = capture_rng_state(), 0.0
        self._batches.append(batch)

    def on_before_backward(self, trainer, pl_module, loss: Tensor) -> None:
        self._loss += loss.detach().item()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.session.before(trainer.global_step, (self._rng, list(self._batches)), self._loss, None)
        self._batches = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.session is None or not self.session.pending:
            return
        self.session.after()
        configs = trainer.lr_scheduler_configs
        self.session.write(configs[0].scheduler if configs else None)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Training stopped on `exception`: the rows so far are flushed and the run marked interrupted or crashed."""
        if self.session is not None:
            self.session.close_after(exception)
            self.session = None


class AdaptiveWarmupMixin:
    """LightningModule mixin: an `AdaptiveWarmup` scheduler gets each optimizer step's loss.

    Lightning calls `lr_scheduler_step(scheduler, metric)` with `metric=None` for step-interval
    schedulers; this mixin passes the summed, accumulation-normalised loss of the step instead.
    Return the scheduler from `configure_optimizers` with `"interval": "step"`.
    """

    _smoothprobe_loss: Tensor | None = None

    def on_before_backward(self, loss: Tensor) -> None:
        """Add the micro-batch's loss to the step's loss, then defer to the module's own hook."""
        value = loss.detach()
        self._smoothprobe_loss = value if self._smoothprobe_loss is None else self._smoothprobe_loss + value
        super().on_before_backward(loss)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step an AdaptiveWarmup with the step's loss; any other scheduler as Lightning would."""
        if not isinstance(scheduler, AdaptiveWarmup):
            super().lr_scheduler_step(scheduler, metric)
            return
        if self._smoothprobe_loss is None:
            raise SmoothprobeError("AdaptiveWarmup: no loss seen since the last scheduler step; "
                                   "use 'interval': 'step' with frequency 1")
        loss, self._smoothprobe_loss = self._smoothprobe_loss, None
        scheduler.step(loss)

