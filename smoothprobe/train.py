"""The training loop: task → model → optimizer → schedule, streaming every step into a run directory.

`Trainer` is the loop (one step, evaluation, checkpoint); `build` sets a run up, `resume_from_checkpoint`
continues one, and `schedule_step`/`pilot_moved` are the adaptive schedule's policy between steps."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from smoothprobe import distributed
from smoothprobe.config import ProbeConfig, TrainConfig
from smoothprobe.errors import SmoothprobeError, one_line
from smoothprobe.optim import make_optimizer
from smoothprobe.probes.pieces import split_rows
from smoothprobe.probes.recorder import Cadence, Recorder, optimizer_geometry
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.schedule.baseline import WarmupDecay, warmup_steps
from smoothprobe.schedule.decision import PROGRESS_TEST, STEP_TEST
from smoothprobe.schedule.online import PILOT_MIN_ROWS, OnlineFStar, OnlineRefit, Pilot
from smoothprobe.smoothness import FStar
from smoothprobe.store import CHECKPOINT, RunStore, read_run_info, read_table
from smoothprobe.tasks import Task, make_task
from smoothprobe.writer import RunWriter, describe_run, refuse_resume_with_overwrite, sigterm_raises


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU (fp32 there, so CPU runs are bit-reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Diverged(SmoothprobeError):
    """The training loss became NaN or infinite; the rows before it are kept."""


CHECKPOINT_KEYS = ("step", "elapsed", "model", "optimizer", "scheduler", "rng_cpu")


@dataclass
class Trainer:
    """One run's live objects; `run()` executes the remaining steps."""

    config: TrainConfig
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    writer: RunWriter | None
    device: torch.device
    start_step: int = 0
    recorder: Recorder | None = None
    online: OnlineFStar | None = None
    refit: OnlineRefit | None = None
    pilot: Pilot | None = None
    pilot_recorder: bool = False  # the Recorder exists for the pilot only
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun (not with --fsdp)

    def accumulate(self, batches: list) -> float:
        """Forward and backward over this rank's micro-batches; p.grad holds the global mean gradient
        (DDP averages, FSDP2 reduce-scatters, over ranks at the last micro-batch). Returns the global
        mean loss."""
        total = 0.0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            if self.config.fsdp:
                self.model.set_requires_gradient_sync(last)
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            with sync:
                loss = self.micro_loss(self.ddp or self.model, [batch]) / len(batches)
                loss.backward()
            total += loss.item()
        return float(distributed.all_reduce_mean(torch.tensor(total, dtype=torch.float64)))

    def micro_loss(self, model: nn.Module, batches: list) -> Tensor:
        """Mean loss over micro-batches, under the run's autocast (the function the probes re-evaluate)."""
        with autocast(self.device):
            return sum(self.task.loss(model, b) for b in batches) / len(batches)

    def evaluate(self) -> float:
        """Mean loss over the task's fixed validation batches."""
        self.model.eval()
        with torch.no_grad(), autocast(self.device):
            losses = [self.task.loss(self.model, b).item() for b in self.task.val_batches()]
        self.model.train()
        return float(np.mean(losses))

    def checkpoint(self, next_step: int) -> None:
        """Save what a resume at `next_step` needs (model, optimizer, schedule, RNG, probe cadence)."""
        model_state, optimizer_state = distributed.state_dicts(self.model, self.optimizer)
        state = {
            "step": next_step,
            "elapsed": self.writer.elapsed,
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.recorder is not None:
            state["cadence"] = dataclasses.asdict(self.recorder.cadence)
        if self.refit is not None:
            state["refit"] = self.refit.state_dict()
        if self.pilot is not None:
            state["pilot"] = self.pilot.state_dict()
        self.writer.store.save_checkpoint(state)

    def gradient(self, step: int) -> tuple[list, float, dict[str, Tensor], float]:
        """Forward and backward on step `step`'s batches, p.grad clipped to `config.clip`: the batches,
        the global mean loss, the parameters that got a gradient (by name) and the norm before clipping."""
        cfg = self.config
        first = distributed.rank() * cfg.accum  # ranks take disjoint micro-batches of the global batch
        batches = [self.task.train_batch(step, first + micro) for micro in range(cfg.accum)]
        loss = self.accumulate(batches)
        named = {n: p for n, p in self.model.named_parameters() if p.grad is not None}
        max_norm = cfg.clip if cfg.clip > 0 else math.inf
        grad_norm = distributed.full(torch.nn.utils.clip_grad_norm_(list(named.values()), max_norm)).item()
        return batches, loss, named, grad_norm

    @contextlib.contextmanager
    def undone(self) -> Iterator[None]:
        """Whatever steps run inside are undone on leaving: parameters, buffers, optimizer and schedule
        state, RNG (the start's tests read trial steps without training on them)."""
        tensors = dict(self.model.named_parameters()) | {f"buffer:{n}": b for n, b in self.model.named_buffers()}
        start, optimizer_state = distributed.snapshot(tensors), copy.deepcopy(self.optimizer.state_dict())
        scheduler_state = copy.deepcopy(self.scheduler.state_dict())
        rng = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            yield
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, tensor in tensors.items():
                    tensor.copy_(start[name])
            self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))
            self.scheduler.load_state_dict(copy.deepcopy(scheduler_state))
            torch.set_rng_state(rng)
            if rng_cuda is not None:
                torch.cuda.set_rng_state(rng_cuda, self.device)

    def trial_rows(self, count: int) -> list[dict]:
        """The secant probe's rows of the next `count` steps, each taken from the current point at the LR
        in use and then undone: the step test reads small steps without training on them (docs/design.md §5)."""
        rows = []
        for step in range(self.start_step, self.start_step + count):
            with self.undone():
                # a Recorder per trial: it captures the RNG at construction, so the probe replays this trial's dropout
                recorder = Recorder(self.model, self.optimizer, loss_fn=self.micro_loss, seed=self.config.seed,
                                    probes=["secant"], every=1)
                batches, loss, named, grad_norm = self.gradient(step)
                lr = self.optimizer.param_groups[0]["lr"]
                recorder.before_step(step, batches, loss=loss, grad_norm=grad_norm, x_t=distributed.snapshot(named))
                self.optimizer.step()
                rows.append({"step": step, "loss": loss, "lr": lr, **recorder.after_step()})
        return rows

    def trial_start(self, count: int) -> list[dict]:
        """The rows (step, lr, loss) of the next `count` steps taken in a row under the schedule (and
        its online f*, as the run drives them), then all undone: the progress test reads the run's own
        start without training on it. Stops at a loss that is not finite. The pilot's fits are not
        taken: none can act within its first PILOT_MIN_ROWS steps."""
        online = None if self.online is None else (list(self.online.steps), list(self.online.losses),
                                                  self.online.skipped)
        rows = []
        with self.undone(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the run says the same of these steps again
            try:
                for step in range(self.start_step, self.start_step + count):
                    _, loss, _, _ = self.gradient(step)
                    rows.append({"step": step, "loss": loss, "lr": self.optimizer.param_groups[0]["lr"]})
                    if not math.isfinite(loss):
                        break
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    if self.online is not None:
                        self.online.observe(step, loss)
                    self.scheduler.step(loss)
            finally:
                if online is not None:
                    self.online.steps, self.online.losses, self.online.skipped = online
        return rows

    def step(self, step: int) -> dict:
        """One optimizer step, written to the run; returns its row (raises on a non-finite loss, after
        writing it)."""
        t0 = time.perf_counter()
        batches, loss, named, grad_norm = self.gradient(step)
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm}
        if not math.isfinite(loss):
            self.writer.write(row)
            raise Diverged(f"loss became {loss} at step {step}; stopped (steps before it are kept in {self.writer.path})")
        before = distributed.snapshot(named)  # x_t, for update_norm and the probes
        recorder, tensors = self.recorder, []
        if recorder is not None:
            recorder.before_step(step, batches, loss=loss, grad_norm=grad_norm, x_t=before)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if recorder is not None:
            row.update(recorder.after_step())
            tensors = recorder.tensor_rows
        if "update_norm" not in row:  # before the schedule: a pilot's guard reads it
            row["update_norm"] = distributed.update_norm(named, before)
        row.update(schedule_step(self, row))
        row["step_time_s"] = time.perf_counter() - t0
        if distributed.active():
            ranks = distributed.gather_floats([row["step_time_s"], lr])
            row["step_time_max_s"] = float(ranks[:, 0].max())
            row["lr_rank_spread"] = float(ranks[:, 1].max() - ranks[:, 1].min())
        return self.writer.write(row, tensors)

    def run(self, progress: bool = True) -> None:
        """Train from `start_step` to `config.steps`, flushing, evaluating and checkpointing on cadence.
        Any exception (Ctrl-C and SIGTERM included) closes the run with its status and reason, then
        propagates."""
        cfg = self.config
        bar = tqdm(range(self.start_step, cfg.steps), initial=self.start_step, total=cfg.steps,
                   disable=not progress or not distributed.is_main(), desc=cfg.task, unit="step", dynamic_ncols=True)
        with sigterm_raises():
            try:
                self.writer.update(status="running")
                if self.start_step == 0:
                    run_start_tests(self)
                for step in bar:
                    row = self.step(step)
                    done = step + 1
                    if done % cfg.eval_every == 0 or done == cfg.steps:
                        val = self.evaluate()
                        self.writer.append("evals", {"step": done, "val_loss": val, "time_s": self.writer.elapsed})
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", val=f"{val:.4f}")
                    elif done % 10 == 0:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                        self.checkpoint(done)
            except Diverged as exc:
                self.writer.close("diverged", str(exc))
                raise
            except BaseException as exc:
                self.writer.close_after(exc)
                raise
            finally:
                bar.close()
            self.writer.close("finished")


def schedule_step(trainer: Trainer, row: dict) -> dict:
    """Advance the schedule after a step; loss-driven schedulers take the step's loss (and online
    sources its probes) and report their state as columns of the step's row."""
    if isinstance(trainer.scheduler, AdaptiveWarmup):
        if trainer.online is not None:
            trainer.online.observe(row["step"], row["loss"])
        extra = {}
        if trainer.refit is not None:
            trainer.refit.observe(row["step"], row)
            extra["refit_status"] = trainer.refit.status
        trainer.scheduler.step(row["loss"])
        columns = {**trainer.scheduler.step_columns(), **extra}
        pilot = trainer.pilot
        if pilot is not None and pilot.open:
            decisions = len(pilot.history)
            closed = pilot.observe(row["step"], row, trainer.scheduler)
            window_ended, refitted = row["step"] == pilot.steps - 1, len(pilot.history) > decisions
            if closed or window_ended:
                pilot_moved(trainer, closed)
            elif refitted:  # a refit said "not yet": run.json keeps it
                write_pilot(trainer)
            if closed or window_ended or refitted:
                columns["pilot_status"] = pilot.status
        return columns
    trainer.scheduler.step()
    return {}


def run_start_tests(trainer: Trainer) -> None:
    """A pilot's start tests before the first step, on trial steps that are undone: the step test
    (`decision.STEP_TEST` on steps at the start's LR, `Trainer.trial_rows`), then, unless it said "no
    warm-up", the progress test (`decision.PROGRESS_TEST` on steps of the practical start, `Trainer.trial_start`).
    run.json says what they decided."""
    pilot = trainer.pilot
    if pilot is None or not (pilot.step_test or pilot.progress_test) or pilot.step_tested:
        return
    tests = [(STEP_TEST, trainer.trial_rows)] if pilot.step_test else []
    if pilot.progress_test:
        tests.append((PROGRESS_TEST, trainer.trial_start))
    for test, trial in tests:
        if pilot.test(trial(test.steps), trainer.scheduler, test):
            pilot_moved(trainer, True)
            return
    write_pilot(trainer)


def pilot_moved(trainer: Trainer, closed: bool) -> None:
    """After the pilot's window or its decision: a fit's decision fixes f* (the fit's; a test's keeps
    the online estimate), and any decision stops the pilot-only probes; an open pilot past its window
    thins them to every PILOT_EVERY-th step (a window probed more sparsely keeps its interval). run.json's
    `pilot` and `decision` say where it stands; the last fit is kept in pilot_fit.json."""
    pilot, writer = trainer.pilot, trainer.writer
    if pilot.fixed_f_star:
        trainer.online = None
    if pilot.fit is not None and writer.store.writer:
        pilot.fit.to_json(writer.path / "pilot_fit.json")
    if trainer.pilot_recorder and closed:
        trainer.recorder = None
    elif trainer.pilot_recorder:
        trainer.recorder.cadence.every = max(PILOT_EVERY, trainer.recorder.cadence.every)
    write_pilot(trainer)


def write_pilot(trainer: Trainer) -> None:
    """run.json's `pilot` (its window, where it stands, every decision its refits took, the probe
    interval in steps now: None once probing stopped or where `record`'s time budget sets it, and
    with own_peak the peak LR it measured) and `decision` (the latest)."""
    pilot, recorder = trainer.pilot, trainer.recorder
    fixed = recorder is not None and recorder.cadence.overhead is None
    trainer.writer.update(pilot={"steps": pilot.steps, "status": pilot.status, "history": pilot.history,
                                 "probe_every": recorder.cadence.every if fixed else None,
                                 "peak_lr": pilot.peak}, decision=pilot.decision)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, model: nn.Module,
                    f_star: FStar | None) -> WarmupDecay | AdaptiveWarmup:
    """The baseline schedule, or AdaptiveWarmup from a fit.json or the practical parametrisation,
    with the run's f* (`run_f_star`; None: the fit's)."""
    if config.adaptive is None:
        return WarmupDecay(optimizer, config.steps, warmup_steps(config.warmup, config.steps),
                           decay=config.schedule, warmup_shape=config.warmup_shape, floor=config.min_lr_ratio)
    opts = config.adaptive
    common = {"total_steps": config.steps, "decay": opts.decay,
              "max_warmup": None if opts.max_warmup is None else warmup_steps(opts.max_warmup, config.steps),
              "cooldown": None if opts.cooldown is None else min(round(opts.cooldown * config.steps), config.steps - 1)}
    if opts.fit is not None:
        if f_star is not None:
            common["f_star"] = f_star.value
        return AdaptiveWarmup.from_fit(optimizer, opts.fit, lr=config.lr, min_lr_ratio=config.min_lr_ratio,
                                       allow_unsupported=opts.allow_unsupported, **common)
    geometry = optimizer_geometry(model, optimizer)
    kappa = geometry.kappa([dict(model.named_parameters())[n] for n in geometry.names])
    return AdaptiveWarmup.practical(optimizer, config.peak_lr, opts.div, 0.0 if f_star.auto else f_star.value,
                                    opts.delta_peak, kappa=kappa, min_lr=config.peak_lr * config.min_lr_ratio,
                                    **common)


PILOT_ROWS = 100
"""Probed rows a pilot aims for (every step of a pilot up to this long): ten above a 0.9 envelope."""
PILOT_EVERY = 25
"""Probe interval (steps) of a pilot still undecided after its window: the secant probe is one more
forward-backward on the step's batch, 1.2-1.5 training steps measured, so about 5 % of training time.
An interval in steps, not a time budget, keeps the run repeatable whatever the machine's load."""


def refuse_thin_pilot(recorder: Recorder, probes: ProbeConfig, pilot_steps: int) -> None:
    """A pilot on `record`'s probes fits the secant K of the probed steps of its window: refuse probes that
    cannot give it PILOT_MIN_ROWS of them there (no secant probe, or a fixed interval too long for the
    window), where its fits would never run."""
    rows = probes.rows_over(pilot_steps)
    if "secant" in recorder.probes and (rows is None or rows >= PILOT_MIN_ROWS):
        return
    said = "none (no secant probe)" if "secant" not in recorder.probes else f"{rows} (every {probes.every} steps)"
    raise SmoothprobeError(f"pilot: its fits need the secant probe on {PILOT_MIN_ROWS} steps of its {pilot_steps}-step "
                           f"window, and the probes give it {said}: probe the secant at least every "
                           f"{max(1, pilot_steps // PILOT_MIN_ROWS)} step(s), or use train --pilot, which probes the "
                           "window itself", params=["pilot", "every", "preset"])


def run_f_star(config: TrainConfig, task: Task) -> FStar | None:
    """The run's f*, resolved once: the given one, else (with a fit) the fit's (None), else the
    task's exact one, else "auto" under a pilot; None for a run without an adaptive schedule."""
    opts = config.adaptive
    if opts is None:
        return None
    given = FStar.parse(opts.f_star)
    if given is not None or opts.fit is not None:
        return given
    if task.f_star is not None:
        return FStar.parse(task.f_star, source="task")
    if opts.pilot is not None:
        return FStar(None, "auto")
    raise SmoothprobeError(f"task {config.task} has no known f*; pass f_star (a number or 'auto') or a fit",
                           params=["f_star", "fit"])


def start_run(out: str | Path, describe: Callable[[], dict], *, resume: bool, overwrite: bool,
              flush_every: int) -> RunWriter:
    """`RunWriter.start` with rank 0 as the writer; every rank raises if it failed there, so none
    waits forever."""
    failure, writer = None, None
    try:
        writer = RunWriter.start(out, describe, resume=resume, overwrite=overwrite, writer=distributed.is_main(),
                                 flush_every=flush_every)
    except SmoothprobeError as exc:
        failure = exc
    if distributed.gather_floats([float(failure is not None)]).any():
        if writer is not None:
            writer.store.close()
        raise failure or SmoothprobeError(f"rank 0 could not open the run directory {out}")
    return writer


def stored_config(out: str | Path) -> TrainConfig:
    """The config in run.json of the run directory `out` (one line naming the file if unusable)."""
    info = read_run_info(out)
    try:
        return TrainConfig.from_dict(info["config"])
    except SmoothprobeError as exc:
        raise SmoothprobeError(f"{Path(out) / 'run.json'}: {exc}") from None


def _setting(config: TrainConfig, path: str) -> Any:
    """The value at a dotted `path` of a config (a nested config that is set reads as True)."""
    value: Any = config
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return True if dataclasses.is_dataclass(value) else value


def _paths(*configs: TrainConfig) -> list[str]:
    """The dotted paths of every setting of `configs`: their fields, and the fields of a nested config."""
    paths = []
    for f in dataclasses.fields(TrainConfig):
        paths.append(f.name)
        nested = next((v for v in (getattr(c, f.name) for c in configs) if dataclasses.is_dataclass(v)), None)
        paths += [f"{f.name}.{g.name}" for g in dataclasses.fields(nested)] if nested is not None else []
    return paths


def resumed_config(out: str | Path, requested: TrainConfig | None = None,
                   given: Mapping[str, str] | None = None) -> TrainConfig:
    """The config a resumed run in `out` continues with: its stored one, with `requested.steps`
    when the caller set it (a resume extends a run, it does not shorten it). Any other setting the
    caller set must equal the stored one; a difference is refused, naming it.

    `given` maps the dotted paths of the settings the caller set ("lr", "adaptive.div"; a nested
    config's name asks only whether it is set) to the parameter names the message uses; None means
    every setting of `requested`.
    """
    stored = stored_config(out)
    if requested is None:
        return stored
    if requested.probes is not None and stored.probes is None:
        raise SmoothprobeError(f"{out} was trained without probes (by train): a resume cannot add them to it; record "
                               "a new run, or resume it without probes (train)", params=("resume", "out"))
    if given is None:
        given = {path: path for path in _paths(requested, stored)}
    changed = [name for path, name in given.items()
               if path != "steps" and _setting(requested, path) != _setting(stored, path)]
    if changed:
        raise SmoothprobeError(f"resume continues the run in {out} with its stored settings; {', '.join(changed)} "
                               "differ from them (only steps may change; start a new run with overwrite instead)",
                               params=(*changed, "resume", "steps", "overwrite"))
    if "steps" not in given:
        return stored
    if requested.steps < stored.steps:
        raise SmoothprobeError(f"steps must be at least the run's {stored.steps} when resuming (resume extends a "
                               f"run, it does not shorten it); got {requested.steps}", params=("steps",))
    return dataclasses.replace(stored, steps=requested.steps)


def check_first_gap(trainer: Trainer, resolved: FStar | None) -> None:
    """The practical adaptive rule needs f* and Δ' below the first loss: check them on step 0's
    first micro-batch before the run directory exists, instead of failing at the first step."""
    opts = trainer.config.adaptive
    if opts is None or (resolved is not None and resolved.auto):
        return
    # with a fit, the fit's f* (or the one given) must pass the same check as --f-star
    f_star = trainer.scheduler.f_star if resolved is None else resolved.value
    with torch.no_grad():
        first = trainer.micro_loss(trainer.model, [trainer.task.train_batch(0, 0)]).item()
    if not first - f_star > 0:
        raise SmoothprobeError(f"f_star must lie below the first training loss {first:.6g}; got {f_star:g}",
                               params=["f_star"])
    if opts.fit is None and opts.delta_peak is not None and not opts.delta_peak < first - f_star:
        raise SmoothprobeError(f"delta_peak must lie below the first loss gap (loss - f*) {first - f_star:.6g}; "
                               f"got {opts.delta_peak:g}", params=["delta_peak"])


def check_pieces(trainer: Trainer) -> None:
    """`hvp_chunks` > 1 needs batches of examples with at least that many rows: check step 0's batch
    before the run directory exists, instead of at the first probed step."""
    probes, task = trainer.config.probes, trainer.task
    if probes is None or probes.hvp_chunks <= 1:
        return
    if not task.rows:
        raise SmoothprobeError(f"hvp_chunks={probes.hvp_chunks} splits a batch into row pieces, but a {task.name} "
                               "batch is one draw, not rows of examples: take HVPs whole (one piece)", params=["hvp_chunks"])
    split_rows([task.train_batch(0, micro) for micro in range(trainer.config.accum)], probes.hvp_chunks)


BUDGET_FIELDS = ("total_steps", "warmup_steps", "cooldown", "max_warmup")
"""A schedule's settings that follow the run's length (`--steps`, and the warm-up and cool-down given as
fractions of it)."""


def budget_fields(fresh: dict, loaded: dict) -> dict:
    """The BUDGET_FIELDS of a scheduler built for this run (`fresh`), to load over a checkpoint's state: a
    resume that extends the run continues under the longer run's schedule, not the checkpoint's (whose
    decay would end at the old last step and hold min_lr after it; the first step after the resume still
    runs at the LR the checkpoint set). A checkpoint of `AdaptiveWarmup` from before `warmup_bound` kept a
    bound estimated in the run in `max_warmup`: that one stays."""
    keep = ("max_warmup",) if "_delta_peak" in loaded and "warmup_bound" not in loaded else ()
    return {k: fresh[k] for k in BUDGET_FIELDS if k in fresh and k not in keep}


def scheduler_mismatch(fresh: dict, loaded: Any, where: str) -> None:
    """Refuse a checkpoint's scheduler state whose values have other types than this run's
    scheduler keeps (e.g. {"last_epoch": "x"}), before anything is loaded or written."""
    def kind(value: Any) -> str | None:
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, (int, float)):
            return "number"
        if isinstance(value, (str, list, tuple, dict)):
            return {str: "str", list: "list", tuple: "list", dict: "dict"}[type(value)]
        return None

    if not isinstance(loaded, dict):
        raise SmoothprobeError(f"{where}: the scheduler state must be an object; got {type(loaded).__name__} "
                               "(start a new run with overwrite)")
    strict = ("last_epoch", "_step_count", "base_lrs", "_last_lr")
    for key, value in fresh.items():
        if key not in loaded or kind(value) is None or (loaded[key] is None and key not in strict):
            continue
        if kind(loaded[key]) != kind(value):
            raise SmoothprobeError(f"{where}: scheduler field {key!r} must be a {kind(value)}; got "
                                   f"{loaded[key]!r:.40} (not a checkpoint of this run; start a new run with overwrite)")


def refuse_without_checkpoint(store: RunStore) -> None:
    """Resume without a usable checkpoint: refused in one line saying what was found, unless the
    run holds no rows a restart from step 0 would discard (then checkpoints/ is made)."""
    folder = store.path / CHECKPOINT.parent
    found = ("checkpoints is not a directory" if folder.exists() and not folder.is_dir()
             else f"no {CHECKPOINT}" if folder.is_dir() else "no checkpoints directory")
    rows = {table: len(read_table(store.path / f"{table}.jsonl")[0]) for table in ("steps", "evals", "tensors")}
    if any(rows.values()) or folder.exists() and not folder.is_dir():
        held = ", ".join(f"{n} {table} rows" for table, n in rows.items() if n) or "no rows"
        raise SmoothprobeError(f"cannot resume {store.path}: found {found} (the run holds {held}); resuming would "
                               "discard what it cannot rebuild, so nothing was changed (only overwrite (a new run) "
                               "discards it)", params=["overwrite"])
    if store.writer:
        folder.mkdir(exist_ok=True)


def restore(trainer: Trainer, state: Any) -> float:
    """Load a checkpoint's state into the trainer and return the run's clock at it; one
    SmoothprobeError line when it lacks keys or does not fit the run's model, optimizer or schedule."""
    path = trainer.writer.path / CHECKPOINT
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise SmoothprobeError(f"checkpoint {path} lacks {', '.join(missing)}; not a checkpoint of this run "
                               "(start a new run with overwrite)")
    step, elapsed = state["step"], state["elapsed"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not (
            isinstance(elapsed, (int, float)) and math.isfinite(elapsed) and elapsed >= 0):
        raise SmoothprobeError(f"checkpoint {path}: step must be an integer >= 0 and elapsed a finite "
                               f"number >= 0; got step {step!r}, elapsed {elapsed!r}")
    fresh = trainer.scheduler.state_dict()
    scheduler_mismatch(fresh, state["scheduler"], f"checkpoint {path}")
    try:
        distributed.load_state_dicts(trainer.model, trainer.optimizer, state["model"], state["optimizer"])
        trainer.scheduler.load_state_dict({**state["scheduler"], **budget_fields(fresh, state["scheduler"])})
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and trainer.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], trainer.device)
        if "cadence" in state and trainer.recorder is not None:
            trainer.recorder.cadence = Cadence(**state["cadence"])
        if "refit" in state and trainer.refit is not None:
            trainer.refit.load_state_dict(state["refit"])
        if "pilot" in state and trainer.pilot is not None:
            trainer.pilot.load_state_dict(state["pilot"])
        with warnings.catch_warnings():  # a dry run of the restored schedule: it must give finite LRs
            warnings.simplefilter("ignore")
            lrs = trainer.scheduler.get_lr()
        if not all(math.isfinite(float(lr)) for lr in lrs):
            raise ValueError(f"the restored schedule gives learning rates {lrs}")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a state that does not fit
        raise SmoothprobeError(f"checkpoint {path} does not fit this run: {one_line(exc)}") from None
    trainer.start_step = step
    return float(elapsed)


def resume_from_checkpoint(trainer: Trainer) -> None:
    """Restore the last checkpoint (a run without one is refused if it holds rows), refuse a store
    that lacks rows before it, drop the rows after it, set a fit.json aside (it describes fewer
    rows than the run will hold: RUN/fit.stale.json), store the (possibly extended) config and
    refill the online sources' history."""
    writer = trainer.writer
    state = writer.store.load_checkpoint()
    elapsed = None
    if state is not None:
        elapsed = restore(trainer, state)
    else:  # every rank reads the same files, so every rank refuses alike
        refuse_without_checkpoint(writer.store)
    start = trainer.start_step
    steps_file = writer.path / "steps.jsonl"
    rows = [row for row in read_table(steps_file)[0] if row["step"] < start]
    missing = start - len({row["step"] for row in rows})
    if missing:
        raise SmoothprobeError(f"{steps_file} lacks {missing} of the {start} rows before the checkpoint at step "
                               f"{start}; resuming would leave them out (start a new run with overwrite)")
    writer.resume_at(start, elapsed)
    fit = writer.path / "fit.json"
    if writer.store.writer and start < trainer.config.steps and fit.is_file():
        fit.replace(writer.path / "fit.stale.json")
    writer.update(config=dataclasses.asdict(trainer.config))
    if trainer.pilot is not None:
        trainer.pilot.rows = [dict(row) for row in rows]
        if not trainer.pilot.open:  # closed before the checkpoint: its probes are done
            if trainer.pilot.fixed_f_star:
                trainer.online = None
            if trainer.pilot_recorder:
                trainer.recorder = None
    for row in rows:  # the online sources' history
        if trainer.online is not None:
            trainer.online.steps.append(row["step"])
            trainer.online.losses.append(row["loss"])
        if trainer.refit is not None and math.isfinite(row.get("secant_K") or math.nan):
            trainer.refit.rows.append({"step": row["step"], "loss": row["loss"], "secant_K": row["secant_K"]})


def build(config: TrainConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False) -> Trainer:
    """Set up a run: new, or resumed from its last checkpoint with the stored config (`config` may
    then be None, or the stored config with more steps). Everything is validated before the run
    directory is written; a second writer of `out` is refused."""
    refuse_resume_with_overwrite(resume, overwrite)
    if resume:
        config = resumed_config(out, config)
    config.validate()
    device = distributed.init_from_env(resolve_device(config.device), shard=config.fsdp)
    torch.manual_seed(config.seed)
    task = make_task(config.task, model=config.model, batch_size=config.batch_size, seq_len=config.seq_len,
                     seed=config.seed, data=config.data, vocab_size=config.vocab_size,
                     options=config.task_options)
    model = task.build_model().to(device)
    if config.fsdp:
        distributed.shard(model)
    optimizer = make_optimizer(config.optimizer, model, lr=config.peak_lr, weight_decay=config.weight_decay)
    f_star = run_f_star(config, task)
    scheduler = build_scheduler(config, optimizer, model, f_star)
    trainer = Trainer(config, task, model, optimizer, scheduler, None, device)
    if config.probes is not None:
        trainer.recorder = Recorder(model, optimizer, loss_fn=trainer.micro_loss, seed=config.seed,
                                    **dataclasses.asdict(config.probes))
    adaptive = config.adaptive
    pilot_steps = None if adaptive is None else adaptive.pilot_steps(config.steps)
    if pilot_steps is not None:
        trainer.pilot = Pilot(pilot_steps, own_peak=adaptive.own_peak, total_steps=config.steps,
                              allow_unsupported=adaptive.allow_unsupported, step_test=adaptive.step_test,
                              progress_test=adaptive.progress_test, window_test=adaptive.window_tested,
                              f_star=f_star)
        if trainer.recorder is None:
            trainer.recorder = Recorder(model, optimizer, loss_fn=trainer.micro_loss, seed=config.seed,
                                        preset="standard", every=max(1, pilot_steps // PILOT_ROWS))
            trainer.pilot_recorder = True
        else:  # record's own probes feed the pilot at their cadence: they must give its fits their rows
            refuse_thin_pilot(trainer.recorder, config.probes, pilot_steps)
    if f_star is not None and f_star.auto and adaptive.fit is None:
        trainer.online = OnlineFStar(scheduler, adaptive.f_star_every or max(10, config.steps // 20))
    if adaptive is not None and adaptive.refit_every is not None:
        if trainer.recorder is None or trainer.pilot_recorder or "secant" not in trainer.recorder.probes:
            raise SmoothprobeError("refitting the constants online (refit_every) needs the secant probe: "
                                   "record the run with probes", params=["refit_every"])
        trainer.refit = OnlineRefit(scheduler, adaptive.refit_every)
    if not resume:
        check_first_gap(trainer, f_star)
    check_pieces(trainer)
    writer = start_run(out, lambda: describe_run(
        model, optimizer, config=dataclasses.asdict(config), task=task.describe(),
        probes=trainer.recorder.describe() if trainer.recorder else None, optimizer_name=config.optimizer),
        resume=resume, overwrite=overwrite, flush_every=config.flush_every)
    try:
        trainer.writer = writer
        if distributed.active() and not config.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            trainer.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if resume:
            resume_from_checkpoint(trainer)
        elif getattr(scheduler, "decision", None) is not None:  # a fit.json decided at the start
            writer.update(decision={**scheduler.decision, "step": 0})
    except BaseException:
        writer.store.close()
        raise
    return trainer


def train(config: TrainConfig | None, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> Path:
    """Train one run into directory `out` and return its path.

    On the quadratic task (f* = 0, exact Hessian) a few steps with the secant probe:

    >>> from smoothprobe import load_run
    >>> cfg = TrainConfig(task="quadratic", optimizer="normsgd", steps=4, probes={"every": 2})
    >>> run = load_run(train(cfg, getfixture("tmp_path") / "run", progress=False))
    >>> run.info["status"], run.steps.step.tolist(), int(run.steps.secant_K.notna().sum())
    ('finished', [0, 1, 2, 3], 2)
    """
    trainer = build(config, out, resume=resume, overwrite=overwrite)
    trainer.run(progress=progress)
    return trainer.writer.path
