"""The training loop: task → model → optimizer → schedule, streaming every step into a RunStore."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from smoothprobe import distributed
from smoothprobe.config import TrainConfig
from smoothprobe.errors import SmoothprobeError, Terminated, one_line
from smoothprobe.optim import make_optimizer
from smoothprobe.probes.recorder import Cadence, Recorder, optimizer_geometry
from smoothprobe.schedule.adaptive import AdaptiveWarmup
from smoothprobe.schedule.baseline import WarmupDecay, warmup_steps
from smoothprobe.schedule.online import OnlineFStar, OnlineRefit, Pilot
from smoothprobe.store import CHECKPOINT, RunStore, read_run_info, read_table
from smoothprobe.tasks import Task, make_task
from smoothprobe.writer import StepLog, describe_run, snapshot, update_norm


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


@dataclass
class Trainer:
    """One run's live objects; `run()` executes the remaining steps."""

    config: TrainConfig
    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    store: RunStore | None
    device: torch.device
    log: StepLog | None = None
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
        model_state, optimizer_state = distributed.state_dicts(self.model, self.optimizer)
        state = {
            "step": next_step,
            "elapsed": self.log.elapsed,
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
        self.store.save_checkpoint(state)

    def restore(self, state: Any) -> None:
        """Load a checkpoint's state; one SmoothprobeError line when it lacks keys or does not fit
        the run's model, optimizer or schedule."""
        path = self.store.path / CHECKPOINT
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
        if missing:
            raise SmoothprobeError(f"checkpoint {path} lacks {', '.join(missing)}; not a checkpoint of this run "
                                   "(start a new run with overwrite)")
        step, elapsed = state["step"], state["elapsed"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not (
                isinstance(elapsed, (int, float)) and math.isfinite(elapsed) and elapsed >= 0):
            raise SmoothprobeError(f"checkpoint {path}: step must be an integer >= 0 and elapsed a finite "
                                   f"number >= 0; got step {step!r}, elapsed {elapsed!r}")
        scheduler_mismatch(self.scheduler.state_dict(), state["scheduler"], f"checkpoint {path}")
        try:
            distributed.load_state_dicts(self.model, self.optimizer, state["model"], state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng_cpu"])
            if "rng_cuda" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
            if "cadence" in state and self.recorder is not None:
                self.recorder.cadence = Cadence(**state["cadence"])
            if "refit" in state and self.refit is not None:
                self.refit.load_state_dict(state["refit"])
            if "pilot" in state and self.pilot is not None:
                self.pilot.load_state_dict(state["pilot"])
            with warnings.catch_warnings():  # a dry run of the restored schedule: it must give finite LRs
                warnings.simplefilter("ignore")
                lrs = self.scheduler.get_lr()
            if not all(math.isfinite(float(lr)) for lr in lrs):
                raise ValueError(f"the restored schedule gives learning rates {lrs}")
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a state that does not fit
            raise SmoothprobeError(f"checkpoint {path} does not fit this run: {one_line(exc)}") from None
        self.start_step, self.log.elapsed = step, float(elapsed)

    def step(self, step: int) -> dict:
        """One optimizer step; returns its record (raises on a non-finite loss, after recording it)."""
        cfg = self.config
        t0 = time.perf_counter()
        first = distributed.rank() * cfg.accum  # ranks take disjoint micro-batches of the global batch
        batches = [self.task.train_batch(step, first + micro) for micro in range(cfg.accum)]
        loss = self.accumulate(batches)
        named = {n: p for n, p in self.model.named_parameters() if p.grad is not None}
        params = list(named.values())
        max_norm = cfg.clip if cfg.clip > 0 else math.inf
        grad_norm = distributed.full(torch.nn.utils.clip_grad_norm_(params, max_norm)).item()
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm}
        if not math.isfinite(loss):
            self.log.write(row)
            raise Diverged(f"loss became {loss} at step {step}; stopped (steps before it are kept in {self.store.path})")
        before = snapshot(named)  # x_t, for update_norm and the probes
        if self.recorder is not None:
            self.recorder.before_step(step, batches, loss=loss, grad_norm=grad_norm, x_t=before)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.recorder is not None:
            row.update(self.recorder.after_step())
        row.update(self.schedule_step(row))
        if "update_norm" not in row:
            row["update_norm"] = update_norm(named, before)
        row["step_time_s"] = time.perf_counter() - t0
        if distributed.active():
            ranks = distributed.gather_floats([row["step_time_s"], lr])
            row["step_time_max_s"] = float(ranks[:, 0].max())
            row["lr_rank_spread"] = float(ranks[:, 1].max() - ranks[:, 1].min())
        return row

    def schedule_step(self, row: dict) -> dict:
        """Advance the schedule; loss-driven schedulers take the step's loss (and online sources its
        probes) and report their state."""
        if isinstance(self.scheduler, AdaptiveWarmup):
            if self.online is not None:
                self.online.observe(row["step"], row["loss"])
            extra = {}
            if self.refit is not None:
                self.refit.observe(row["step"], row)
                extra["refit_status"] = self.refit.status
            self.scheduler.step(row["loss"])
            columns = {**self.scheduler.step_columns(), **extra}
            if self.pilot is not None and self.pilot.open:
                closed = self.pilot.observe(row["step"], row, self.scheduler)
                if closed or row["step"] == self.pilot.steps - 1:
                    self.pilot_moved(closed)
                    columns["pilot_status"] = self.pilot.status
            return columns
        self.scheduler.step()
        return {}

    def pilot_moved(self, closed: bool) -> None:
        """After the pilot's window or its decision: a decision fixes f* (the fit's) and stops the
        pilot-only probes; an open pilot past its window thins them to PILOT_OVERHEAD. run.json's
        `pilot` and `decision` say where it stands; the last fit is kept in pilot_fit.json."""
        if self.pilot.decision is not None and self.pilot.decision.get("branch") != "not yet":
            self.online = None  # the fit's constants are fitted to Δ from its own f*
        if self.pilot.fit is not None and self.store.writer:
            self.pilot.fit.to_json(self.store.path / "pilot_fit.json")
        if self.pilot_recorder and closed:
            self.recorder = None
        elif self.pilot_recorder:
            self.recorder.cadence.overhead = PILOT_OVERHEAD
        self.store.write_info(pilot={"steps": self.pilot.steps, "status": self.pilot.status},
                              decision=self.pilot.decision)

    def run(self, progress: bool = True) -> None:
        """Train from `start_step` to `config.steps`, flushing, evaluating and checkpointing on cadence.
        Any exception (Ctrl-C and SIGTERM included) closes the run with its status and reason, then
        propagates."""
        cfg = self.config
        bar = tqdm(range(self.start_step, cfg.steps), initial=self.start_step, total=cfg.steps,
                   disable=not progress or not distributed.is_main(), desc=cfg.task, unit="step", dynamic_ncols=True)
        with sigterm_raises():
            try:
                self.store.write_info(status="running")
                for step in bar:
                    row = self.log.write(self.step(step))
                    done = step + 1
                    if done % cfg.eval_every == 0 or done == cfg.steps:
                        val = self.evaluate()
                        self.store.append("evals", {"step": done, "val_loss": val, "time_s": self.log.elapsed})
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", val=f"{val:.4f}")
                    elif done % 10 == 0:
                        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                        self.checkpoint(done)
            except Diverged as exc:
                self.log.close("diverged", str(exc))
                raise
            except BaseException as exc:
                self.log.close_after(exc)
                raise
            finally:
                bar.close()
            self.log.close("finished")


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, model: nn.Module,
                    task: Task) -> WarmupDecay | AdaptiveWarmup:
    """The baseline schedule, or AdaptiveWarmup from a fit.json or the practical parametrisation."""
    if config.adaptive is None:
        return WarmupDecay(optimizer, config.steps, warmup_steps(config.warmup, config.steps),
                           decay=config.schedule, warmup_shape=config.warmup_shape, floor=config.min_lr_ratio)
    opts = config.adaptive
    common = {"total_steps": config.steps, "decay": opts.decay,
              "max_warmup": None if opts.max_warmup is None else warmup_steps(opts.max_warmup, config.steps),
              "cooldown": None if opts.cooldown is None else min(round(opts.cooldown * config.steps), config.steps - 1)}
    if opts.fit is not None:
        if isinstance(opts.f_star, float):
            common["f_star"] = opts.f_star
        return AdaptiveWarmup.from_fit(optimizer, opts.fit, lr=config.lr, min_lr_ratio=config.min_lr_ratio,
                                       allow_unsupported=opts.allow_unsupported, **common)
    f_star = effective_f_star(config, task)
    geometry = optimizer_geometry(model, optimizer)
    kappa = geometry.kappa([dict(model.named_parameters())[n] for n in geometry.names])
    return AdaptiveWarmup.practical(optimizer, config.peak_lr, opts.div, 0.0 if f_star == "auto" else float(f_star),
                                    opts.delta_peak, kappa=kappa, min_lr=config.peak_lr * config.min_lr_ratio,
                                    **common)


PILOT_ROWS = 100
"""Probed rows a pilot aims for (every step of a pilot up to this long): ten above a 0.9 envelope."""
PILOT_OVERHEAD = 0.05
"""Probe budget (fraction of train time) of a pilot still undecided after its window."""


def effective_f_star(config: TrainConfig, task: Task) -> float | str:
    """f* of a practical schedule: the given one, else the task's, else 'auto' under a pilot."""
    opts = config.adaptive
    f_star = task.f_star if opts.f_star is None else opts.f_star
    if f_star is None and opts.pilot is not None:
        return "auto"
    if f_star is None:
        raise SmoothprobeError(f"task {config.task} has no known f*; pass f_star (a number or 'auto') or a fit",
                               params=["f_star", "fit"])
    return f_star


def create_store(out: str | Path, writer: bool, overwrite: bool, info: dict) -> RunStore:
    """RunStore.create on rank 0; every rank raises if it failed there, so none waits forever."""
    failure = None
    try:
        store = RunStore.create(out, info, overwrite=overwrite, writer=writer)
    except SmoothprobeError as exc:
        failure = exc
    if distributed.gather_floats([float(failure is not None)]).any():
        raise failure or SmoothprobeError(f"rank 0 could not create the run directory {out}")
    return store


def stored_config(out: str | Path) -> TrainConfig:
    """The config in run.json of the run directory `out` (one line naming the file if unusable)."""
    info = read_run_info(out)
    try:
        return TrainConfig.from_dict(info["config"])
    except SmoothprobeError as exc:
        raise SmoothprobeError(f"{Path(out) / 'run.json'}: {exc}") from None


def resumed_config(stored: TrainConfig, requested: TrainConfig | None) -> TrainConfig:
    """The config a resumed run continues with: the stored one, with `requested.steps` when it
    extends the run. Any other difference from the stored config is refused, naming the fields."""
    if requested is None:
        return stored
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if f.name != "steps" and getattr(requested, f.name) != getattr(stored, f.name)]
    if changed:
        raise SmoothprobeError(f"resume continues the stored run, whose config differs in: {', '.join(changed)} "
                               "(only steps may change; start a new run with overwrite to change the others)")
    if requested.steps < stored.steps:
        raise SmoothprobeError(f"steps must be at least the run's {stored.steps} when resuming (resume extends a "
                               f"run, it does not shorten it); got {requested.steps}", params=["steps"])
    return dataclasses.replace(stored, steps=requested.steps)


def check_first_gap(trainer: Trainer) -> None:
    """The practical adaptive rule needs f* and Δ' below the first loss: check them on step 0's
    first micro-batch before the run directory exists, instead of failing at the first step."""
    opts = trainer.config.adaptive
    if opts is None or opts.f_star == "auto":
        return
    if opts.fit is not None:  # the fit's f* (or the one given) must pass the same check as --f-star
        f_star = getattr(trainer.scheduler, "f_star", None)
    else:
        f_star = effective_f_star(trainer.config, trainer.task)
    if not isinstance(f_star, (int, float)) or isinstance(f_star, bool):
        return
    with torch.no_grad():
        first = trainer.micro_loss(trainer.model, [trainer.task.train_batch(0, 0)]).item()
    if not first - f_star > 0:
        raise SmoothprobeError(f"f_star must lie below the first training loss {first:.6g}; got {f_star:g}",
                               params=["f_star"])
    if opts.fit is None and opts.delta_peak is not None and not opts.delta_peak < first - f_star:
        raise SmoothprobeError(f"delta_peak must lie below the first loss gap (loss - f*) {first - f_star:.6g}; "
                               f"got {opts.delta_peak:g}", params=["delta_peak"])


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


def resume_from_checkpoint(trainer: Trainer) -> None:
    """Restore the last checkpoint (a run without one is refused if it holds rows), refuse a store
    that lacks rows before it, drop the rows after it, set a fit.json aside (it describes fewer
    rows than the run will hold: RUN/fit.stale.json), store the (possibly extended) config and
    refill the online sources' history."""
    store = trainer.store
    state = store.load_checkpoint()
    if state is not None:
        trainer.restore(state)
    else:  # every rank reads the same files, so every rank refuses alike
        refuse_without_checkpoint(store)
    start = trainer.start_step
    steps_file = store.path / "steps.jsonl"
    rows = [row for row in read_table(steps_file)[0] if row["step"] < start]
    missing = start - len({row["step"] for row in rows})
    if missing:
        raise SmoothprobeError(f"{steps_file} lacks {missing} of the {start} rows before the checkpoint at step "
                               f"{start}; resuming would leave them out (start a new run with overwrite)")
    store.truncate(start)
    fit = store.path / "fit.json"
    if store.writer and start < trainer.config.steps and fit.is_file():
        fit.replace(store.path / "fit.stale.json")
    store.write_info(config=dataclasses.asdict(trainer.config))
    if trainer.pilot is not None:
        trainer.pilot.rows = [dict(row) for row in rows]
        if not trainer.pilot.open:  # decided before the checkpoint: f* is the fit's, its probes are done
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
    if resume and overwrite:
        raise SmoothprobeError("resume and overwrite exclude each other (resume continues the run in out; "
                               "overwrite replaces it)", params=["resume", "overwrite"])
    if resume:
        config = resumed_config(stored_config(out), config)
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
    scheduler = build_scheduler(config, optimizer, model, task)
    trainer = Trainer(config, task, model, optimizer, scheduler, None, device)
    if config.probes is not None:
        trainer.recorder = Recorder(model, optimizer, loss_fn=trainer.micro_loss, seed=config.seed,
                                    **dataclasses.asdict(config.probes))
    adaptive = config.adaptive
    pilot_steps = None if adaptive is None else adaptive.pilot_steps(config.steps)
    if pilot_steps is not None:
        trainer.pilot = Pilot(pilot_steps, own_peak=adaptive.own_peak, total_steps=config.steps,
                              allow_unsupported=adaptive.allow_unsupported)
        if trainer.recorder is None:
            trainer.recorder = Recorder(model, optimizer, loss_fn=trainer.micro_loss, seed=config.seed,
                                        preset="standard", every=max(1, pilot_steps // PILOT_ROWS))
            trainer.pilot_recorder = True
    if adaptive is not None and adaptive.fit is None and effective_f_star(config, task) == "auto":
        trainer.online = OnlineFStar(scheduler, adaptive.f_star_every or max(10, config.steps // 20))
    if adaptive is not None and adaptive.refit_every is not None:
        if trainer.recorder is None or trainer.pilot_recorder or "secant" not in trainer.recorder.probes:
            raise SmoothprobeError("refitting the constants online (refit_every) needs the secant probe: "
                                   "record the run with probes", params=["refit_every"])
        trainer.refit = OnlineRefit(scheduler, adaptive.refit_every)
    if resume:
        store = RunStore.open(out, writer=distributed.is_main())
    else:
        check_first_gap(trainer)
        store = create_store(out, distributed.is_main(), overwrite, info=describe_run(
            model, optimizer, config=dataclasses.asdict(config), task=task.describe(),
            probes=trainer.recorder.describe() if trainer.recorder else None, optimizer_name=config.optimizer))
    try:
        trainer.store = store
        trainer.log = StepLog(store if store.writer else None, flush_every=config.flush_every)
        if trainer.recorder is not None:
            trainer.recorder.store = store
        if distributed.active() and not config.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            trainer.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if resume:
            resume_from_checkpoint(trainer)
        elif getattr(scheduler, "decision", None) is not None:  # a fit.json decided at the start
            store.write_info(decision={**scheduler.decision, "step": 0})
    except BaseException:
        store.close()
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
    return trainer.store.path
