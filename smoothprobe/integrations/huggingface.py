"""Hugging Face `transformers.Trainer`: probes through a callback, `AdaptiveWarmup` as scheduler.

Callbacks see neither the batch nor the loss, and the secant needs both (its second gradient
is taken on the same batch). `SmoothprobeTrainerMixin` therefore captures, per optimizer step,
what the Trainer differentiated: every micro-batch's prepared inputs with its
`num_items_in_batch`, the factor `training_step` scaled its loss by, the RNG state before the
first forward (dropout replays exactly), the summed step loss (what the Trainer logs) and the
gradient norm before clipping. The probes re-evaluate that loss with `Trainer.compute_loss`, so
custom losses, label smoothing and token-count normalisation are reproduced::

    class MyTrainer(SmoothprobeTrainerMixin, Trainer): ...   # or use SmoothprobeTrainer

    trainer = MyTrainer(model=model, args=args, train_dataset=ds,
                        callbacks=[SmoothprobeCallback(run_dir="runs/hf", every=10)])

Passing an `AdaptiveWarmup` in `optimizers=(opt, sched)` makes the mixin feed it each step's
loss (the Trainer itself calls `lr_scheduler.step()` without arguments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Trainer, TrainerCallback

from smoothprobe.errors import SmoothprobeError
from smoothprobe.integrations.session import ProbeSession
from smoothprobe.probes.oracle import RngState, capture_rng_state, replay_rng
from smoothprobe.schedule.adaptive import AdaptiveWarmup


@dataclass
class CapturedStep:
    """What the Trainer differentiated for optimizer step `step`: f_B = Σ scale_i · loss_i."""

    step: int
    compute_loss: Any
    context: Any
    rng: RngState
    micro: list[tuple[dict, Any, float]] = field(default_factory=list)
    loss: float = 0.0
    grad_norm: float | None = None

    def evaluate(self, model: nn.Module, loss_fn: Any = None) -> Tensor:
        """f_B at the model's current parameters, replaying the RNG state of the step's forward."""
        total = None
        with replay_rng(self.rng):
            for inputs, num_items, scale in self.micro:
                with self.context():
                    if loss_fn is None:
                        loss = self.compute_loss(model, dict(inputs), num_items_in_batch=num_items)
                    else:
                        loss = loss_fn(model, dict(inputs))
                term = loss * scale
                total = term if total is None else total + term
        return total


class LossFedScheduler:
    """Hands the Trainer's argument-less `lr_scheduler.step()` the loss a loss-driven scheduler needs."""

    def __init__(self, scheduler: AdaptiveWarmup) -> None:
        self.scheduler = scheduler
        self.loss: float | None = None

    def feed(self, loss: float) -> None:
        """The loss of the optimizer step about to be taken."""
        self.loss = loss

    def step(self) -> None:
        """Step the wrapped scheduler with the fed loss (once per optimizer step)."""
        if self.loss is None:
            raise SmoothprobeError("AdaptiveWarmup under Trainer: no loss was fed for this step; "
                                   "use a Trainer with SmoothprobeTrainerMixin")
        loss, self.loss = self.loss, None
        self.scheduler.step(loss)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)


def _scale(returned: float, unscaled: float, accumulation: int) -> float:
    """Factor `training_step` applied to `compute_loss`'s value: 1, or 1/accumulation steps.

    Read off the two values rather than re-deriving the Trainer's (version-dependent) rule.
    """
    return 1.0 if math.isclose(returned, unscaled, rel_tol=1e-3) else 1.0 / accumulation


class SmoothprobeTrainerMixin:
    """Trainer mixin that captures each optimizer step's batch and loss (see the module docstring)."""

    smoothprobe_step: CapturedStep | None = None
    _smoothprobe_last: tuple[dict, Any, float] | None = None

    def compute_loss(self, model: nn.Module, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        """Trainer.compute_loss, remembering the inputs and value of training forwards."""
        kept = dict(inputs)
        out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch)
        if model.training and torch.is_grad_enabled():
            loss = out[0] if return_outputs else out
            self._smoothprobe_last = (kept, num_items_in_batch, loss.detach().item())
        return out

    def training_step(self, model: nn.Module, inputs: dict, num_items_in_batch: Any = None) -> Tensor:
        """Trainer.training_step, adding the micro-batch to the current step's capture."""
        step = self.state.global_step
        if self.smoothprobe_step is None or self.smoothprobe_step.step != step:
            self.smoothprobe_step = CapturedStep(step, self.compute_loss,
                                                 self.compute_loss_context_manager,
                                                 capture_rng_state())
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, SmoothprobeCallback):
                    callback.capture = self.smoothprobe_step
        self._smoothprobe_last = None
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._smoothprobe_last is None:
            raise SmoothprobeError("SmoothprobeTrainerMixin: training_step never called compute_loss")
        kept, num_items, unscaled = self._smoothprobe_last
        returned = loss.detach().item()
        capture = self.smoothprobe_step
        capture.micro.append((kept, num_items,
                              _scale(returned, unscaled, self.current_gradient_accumulation_steps)))
        capture.loss += returned
        if self.accelerator.sync_gradients:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if self.args.max_grad_norm > 0 and grads:
                capture.grad_norm = float(torch.nn.utils.get_total_norm(grads))
            if isinstance(self.lr_scheduler, LossFedScheduler):
                self.lr_scheduler.feed(capture.loss)
        return loss

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer.train; if it stops on an exception (Ctrl-C included), each SmoothprobeCallback flushes its
        rows and marks its run interrupted or crashed before the exception goes on."""
        try:
            return super().train(*args, **kwargs)
        except BaseException as exc:
            for callback in self.callback_handler.callbacks:
                if isinstance(callback, SmoothprobeCallback):
                    callback.close_after(exc)
            raise

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        """Trainer.create_scheduler; an `AdaptiveWarmup` gets wrapped to receive each step's loss."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if isinstance(scheduler, AdaptiveWarmup):
            self.lr_scheduler = LossFedScheduler(scheduler)
        return self.lr_scheduler


class SmoothprobeTrainer(SmoothprobeTrainerMixin, Trainer):
    """`transformers.Trainer` with the smoothprobe capture mixed in."""


class SmoothprobeCallback(TrainerCallback):
    """Runs the smoothprobe Recorder around each `optimizer.step()` of a Hugging Face Trainer.

    Needs a Trainer with `SmoothprobeTrainerMixin`. `loss_fn(model, inputs)`, if given, must
    return what `Trainer.compute_loss` returns for one micro-batch; by default the Trainer's own
    `compute_loss` is used. The steps table gets one row per optimizer step: the logged `loss`,
    the `lr` the step used, the pre-clip `grad_norm`, probe columns on probed steps and, with an
    `AdaptiveWarmup`, its record. Only the world-process-zero writes `run_dir`.
    `tensorboard` (a log directory), `mlflow` (a tracking URI) and `wandb` (a W&B project)
    mirror each row as the scalars `smoothprobe/<column>`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        loss_fn: Any = None,
        preset: str = "standard",
        every: int = 10,
        overhead: float | None = None,
        tensorboard: str | Path | None = None,
        mlflow: str | None = None,
        wandb: str | None = None,
        overwrite: bool = False,
        **recorder_options: Any,
    ) -> None:
        if recorder_options.get("hvp_chunks", 1) != 1:
            raise SmoothprobeError("hvp_chunks must be 1 under the Hugging Face callback: a Trainer's micro-batches "
                                   "reach the probes whole, not as rows to split (take HVPs whole, or record "
                                   "with the Recorder in your own loop)", params=["hvp_chunks"])
        self.run_dir, self.loss_fn, self.overwrite = run_dir, loss_fn, overwrite
        self.mirrors = {"tensorboard": tensorboard, "mlflow": mlflow, "wandb": wandb}
        self.options = {"preset": preset, "every": every, "overhead": overhead, **recorder_options}
        self.session: ProbeSession | None = None
        self.capture: CapturedStep | None = None

    def _loss(self, model: nn.Module, capture: CapturedStep) -> Tensor:
        return capture.evaluate(model, self.loss_fn)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            raise SmoothprobeError("SmoothprobeCallback: the Trainer passed no model or optimizer")
        config = {"steps": state.max_steps, "lr": args.learning_rate, "clip": args.max_grad_norm,
                  "accum": args.gradient_accumulation_steps, "batch_size": args.per_device_train_batch_size,
                  "seed": args.seed}  # TrainConfig's names; run.json's world_size says how many devices
        self.session = ProbeSession(model, optimizer, self.run_dir, self._loss, config=config,
                                    source="transformers",
                                    write=state.is_world_process_zero, **self.mirrors,
                                    overwrite=self.overwrite, start_step=state.global_step, **self.options)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        capture = self.capture
        if capture is None or capture.step != state.global_step:
            raise SmoothprobeError("SmoothprobeCallback needs a Trainer with SmoothprobeTrainerMixin "
                                   "(e.g. smoothprobe.integrations.huggingface.SmoothprobeTrainer)")
        self.session.before(state.global_step, capture, capture.loss, capture.grad_norm)

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.session.after()

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        if self.session is not None and self.session.pending:
            self.session.write(getattr(lr_scheduler, "scheduler", lr_scheduler))

    def on_train_end(self, args, state, control, **kwargs):
        if self.session is not None:
            self.session.close()
            self.session = None

    def close_after(self, exc: BaseException) -> None:
        """Training stopped on `exc` (`SmoothprobeTrainerMixin.train`): flush the rows, mark the run interrupted
        or crashed."""
        if self.session is not None:
            self.session.close_after(exc)
            self.session = None
