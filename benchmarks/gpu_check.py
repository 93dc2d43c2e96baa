"""GPU check: probe cost, memory and DDP on a 124M-parameter model under bf16 autocast, and a 200-step adaptive run.

The one script to run the first time a GPU is lent; it writes everything it measures to a JSON
summary (default reports/gpu_check.json). The model is the `124m` preset (GPT-2 small's body:
768 wide, 12 layers, 12 heads, context 512) with GPT-2's padded vocabulary of 50,304 tokens, which
brings it to 124M parameters; the tokens are the Python standard library's bytes written as a
uint16 .bin file, so the embedding and the 50,304-way softmax cost what they cost in GPT-2.
Sections, with the time each should take on one H100 (estimates: never run on CUDA so far):
  1. presets (~40 s): a bare step, then every preset of the probe registry (`PRESETS`: cheap,
     standard, full), each on a fresh trainer with every step probed, the heavy probes on the first
     step and once among the measured ones: per-probe time over one training forward+backward
     (medians over the measured steps), and torch.cuda.max_memory_allocated inside the Recorder's
     after_step, over the bare step's peak and in model sizes (total, so it includes the model,
     gradients and optimizer state), and its transient part (above what was allocated when
     after_step began) over the bare step's transient part;
  2. overhead (~90 s): the figures of issue 25's table, the way benchmarks/probe_overhead.py defines
     them (its VARIANTS and COMPARISONS, imported): the variants in lockstep, the cheap preset over
     a bare step in blocks of its interval, and each comparison's extra time per step over one
     forward+backward (median and standard deviation over the rounds);
  3. adaptive (~60 s): `train --adaptive --f-star auto` for 200 steps through the CLI in a
     subprocess (the command line is the stable interface), summarised from its run directory;
  4. ddp (~60 s with 2 or more GPUs): `record --preset standard --every 1` for 20 steps under
     `torchrun --standalone --nproc-per-node N` on every visible GPU: whether it finished, and its
     median step time (the slowest rank's); with one GPU, "skipped: 1 device".
A section that raises, or does not start before `--timeout` (360 s by default) has passed, is a
failed check and the next section still runs; the lockstep stops early at the deadline, and the
subprocesses are killed at it. Exits non-zero if any check fails: a probe column, a ratio or a
loss not finite, a run that did not finish. The goals of issue 25 are reported as met or not and
do not change the exit code. `--dry-run` runs the same code on CPU with the tiny model, a few steps,
lighter heavy probes and the DDP run on 2 gloo processes (tests/test_benchmarks.py).

Run from the repository root (on CUDA, within a hard limit):
  timeout 480 env PYTHONPATH=. python benchmarks/gpu_check.py [--dry-run] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from probe_overhead import (
    CHEAP_GOAL,
    COMPARISONS,
    VARIANTS,
    forward_backward,
    lockstep_figures,
    rotate,
)

from smoothprobe import load_run
from smoothprobe.probes import PRESETS, PROBES
from smoothprobe.tasks.lm import read_text_corpus, stdlib_files
from smoothprobe.train import TrainConfig, Trainer, build

ROOT = Path(__file__).resolve().parents[1]
MEMORY_GOAL = 2.0  # issue 25: the full preset's transient peak over a bare step's


@dataclass(frozen=True)
class Settings:
    model: str
    device: str
    vocab_size: int
    batch_size: int
    seq_len: int
    warmup: int  # steps before measuring a preset (the first probed step is a heavy one)
    measured: int  # steps measured per preset
    heavy_every: int  # heavy probes (Lanczos, trace, curv_dual) on every heavy_every-th probed step
    rounds: int  # lockstep rounds measured (the cheap preset is compared in blocks of its interval)
    round_warmup: int
    adaptive_steps: int
    ddp_steps: int
    timeout: float  # seconds for the whole script
    probe_options: dict = field(default_factory=dict)


GPU = Settings(model="124m", device="cuda", vocab_size=50304, batch_size=16, seq_len=512, warmup=1, measured=3,
               heavy_every=3, rounds=40, round_warmup=3, adaptive_steps=200, ddp_steps=20, timeout=360)
DRY = Settings(model="tiny", device="cpu", vocab_size=256, batch_size=4, seq_len=16, warmup=0, measured=2,
               heavy_every=2, rounds=10, round_warmup=0, adaptive_steps=2, ddp_steps=3, timeout=1800,
               probe_options={"top_eig": {"steps": 4}, "trace": {"hvps": 6},
                              "curv_dual": {"iterations": 2, "restarts": 1}})


class OutOfTime(Exception):
    """The script's deadline passed before a section could finish."""


class Clock:
    """The script's deadline, from `timeout` seconds after it starts."""

    def __init__(self, timeout: float) -> None:
        self.start = time.perf_counter()
        self.timeout = timeout

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.timeout - self.elapsed()

    def check(self) -> None:
        if self.left() <= 0:
            raise OutOfTime(f"the --timeout of {self.timeout:.0f} s passed")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, job: Callable[[], object]) -> float:
    """Wall time of `job()` with the device's queue drained before and after (CUDA runs asynchronously)."""
    sync(device)
    start = time.perf_counter()
    job()
    sync(device)
    return time.perf_counter() - start


class PeakMemory:
    """Peak CUDA memory over a block and what was allocated when it began, in bytes (None on CPU,
    where torch does not count them)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.start: float | None = None
        self.peak: float | None = None

    def __enter__(self) -> PeakMemory:  # noqa: PYI034 (a final class)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = float(torch.cuda.memory_allocated())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = float(torch.cuda.max_memory_allocated())

    @property
    def transient(self) -> float | None:
        """Peak above what was allocated at the start: what the block itself added at most."""
        return None if self.peak is None else self.peak - self.start


def step_time(device: str, trainer: Trainer, step: int) -> float:
    """The step's own `step_time_s` (it ends on a host sync), with the queue drained before it."""
    sync(device)
    return trainer.step(step)["step_time_s"]


def over(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either was not measured."""
    return None if a is None or b is None else a / b


def shown(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.2f}"


def write_tokens(path: Path) -> Path:
    """The standard library's bytes as a uint16 .bin token file (ids below 256 whatever the vocabulary)."""
    read_text_corpus(stdlib_files()).astype("uint16").tofile(path)
    return path


def make_trainer(s: Settings, optimizer: str, data: Path, out: Path, probes: dict | None) -> Trainer:
    config = TrainConfig(task="lm", model=s.model, optimizer=optimizer, steps=10**6, batch_size=s.batch_size,
                         seq_len=s.seq_len, device=s.device, eval_every=10**6, checkpoint_every=10**6,
                         data=str(data), vocab_size=s.vocab_size, probes=probes)
    return build(config, out, overwrite=True)


def free(device: str) -> None:
    """Collect the trainers just dropped (their closures form cycles) and return their CUDA memory, so
    that the next peak counts only what is alive then."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def bare_costs(s: Settings, optimizer: str, data: Path, root: Path) -> dict:
    """One forward+backward (median) and a bare step's time and peak memory, the units of the presets."""
    bare = make_trainer(s, optimizer, data, root / "bare", None)
    model_bytes = sum(p.numel() * p.element_size() for p in bare.model.parameters())
    warm = max(1, s.warmup)
    for step in range(warm):
        bare.step(step)
    fb = statistics.median(timed(s.device, lambda step=step: forward_backward(bare, step))
                           for step in range(s.measured))
    with PeakMemory(s.device) as peak:
        step_time = bare.step(warm)["step_time_s"]
    return {"parameters": sum(p.numel() for p in bare.model.parameters()), "model_bytes": model_bytes,
            "forward_backward_s": fb, "bare_step_s": step_time, "bare_peak_bytes": peak.peak,
            "bare_transient_bytes": peak.transient, "bare_peak_model_sizes": over(peak.peak, model_bytes)}


def preset_costs(s: Settings, optimizer: str, data: Path, root: Path, clock: Clock,
                 preset: str) -> tuple[list[str], list[dict], list[PeakMemory]]:
    """A fresh trainer probing every step with `preset`: the probes in the order they run, and the
    measured steps' rows and peak memory inside the Recorder's after_step."""
    paced = any(PROBES[name].heavy for name in PRESETS[preset])  # heavy_every is refused where it paces nothing
    probes = {"preset": preset, "every": 1, **({"heavy_every": s.heavy_every} if paced else {}),
              "options": {k: v for k, v in s.probe_options.items() if k in PRESETS[preset]}}
    trainer = make_trainer(s, optimizer, data, root / preset, probes)
    recorder = trainer.recorder
    after_step = recorder.after_step
    peaks: list[PeakMemory] = []

    def measured() -> dict:
        with PeakMemory(s.device) as peak:
            row = after_step()
        peaks.append(peak)
        return row

    recorder.after_step = measured
    rows = []
    for step in range(s.warmup + s.measured):
        clock.check()
        rows.append(trainer.step(step))
    return [name for name in PROBES if name in recorder.probes], rows[s.warmup:], peaks[s.warmup:]


def presets(s: Settings, optimizer: str, data: Path, root: Path, clock: Clock) -> dict:
    """Bare step, then each preset: per-probe time / forward+backward and peak memory."""
    result = bare_costs(s, optimizer, data, root)
    free(s.device)
    fb, model_bytes = result["forward_backward_s"], result["model_bytes"]
    print(f"model {s.model}: {result['parameters'] / 1e6:.1f}M parameters ({model_bytes / 2**20:.0f} MiB), "
          f"vocabulary {s.vocab_size}, optimizer {optimizer}, batch {s.batch_size} x {s.seq_len}, "
          f"autocast {'bf16' if s.device.startswith('cuda') else 'off'}")
    print(f"  forward+backward {fb * 1e3:.1f} ms; bare step {result['bare_step_s'] * 1e3:.1f} ms; bare step peak "
          f"{shown(result['bare_peak_model_sizes'])} model sizes")
    bad: list[str] = []
    for preset in PRESETS:
        names, rows, peaks = preset_costs(s, optimizer, data, root, clock, preset)
        free(s.device)
        peak = None if peaks[0].peak is None else max(p.peak for p in peaks)
        transient = None if peaks[0].peak is None else max(p.transient for p in peaks)
        times = {key: statistics.median(r[f"{key}_s"] for r in rows if f"{key}_s" in r) / fb
                 for key in ["probe_time", *(f"time_{n}" for n in names)]}
        columns = {k: v for r in rows for k, v in r.items() if not k.startswith("time")}
        not_finite = sorted(k for k, v in columns.items() if isinstance(v, float) and not math.isfinite(v))
        not_finite += [key for key, ratio in times.items() if not math.isfinite(ratio)]
        bad += [f"{preset}.{k}" for k in not_finite]
        result[preset] = figures = {
            "probes": names, "time_over_forward_backward": times, "peak_model_sizes": over(peak, model_bytes),
            "peak_over_bare": over(peak, result["bare_peak_bytes"]), "transient_model_sizes": over(transient, model_bytes),
            "transient_over_bare": over(transient, result["bare_transient_bytes"]), "not_finite": not_finite}
        print(f"  {preset}: probes {', '.join(names)}; peak in after_step {shown(figures['peak_model_sizes'])} model "
              f"sizes ({shown(figures['peak_over_bare'])}x the bare step's); its transient part "
              f"{shown(figures['transient_over_bare'])}x the bare step's")
        for key, ratio in times.items():
            print(f"    {key:<16} / forward+backward  {ratio:8.2f}")
        if not_finite:
            print(f"    NOT FINITE: {', '.join(not_finite)}")
    full = result["full"]["transient_over_bare"]
    result["goals"] = {"full transient / bare transient": {
        "value": full, "goal": MEMORY_GOAL, "met": None if full is None else full <= MEMORY_GOAL}}
    result["check"] = f"fail: not finite: {', '.join(bad)}" if bad else "pass"
    return result


def overhead(s: Settings, optimizer: str, data: Path, root: Path, clock: Clock) -> dict:
    """probe_overhead.py's lockstep figures on this model: the variants one step each per round, the
    order rotated so that anything else on the machine hits them alike."""
    trainers = {name: make_trainer(s, optimizer, data, root / "lockstep" / str(i), probes)
                for i, (name, probes) in enumerate(VARIANTS.items())}
    jobs: list[tuple[str, Callable[[int], float]]] = [
        (name, lambda step, t=trainer: step_time(s.device, t, step)) for name, trainer in trainers.items()]
    jobs.append(("fb", lambda step, t=trainers["bare"]: timed(s.device, lambda: forward_backward(t, step))))
    times = rotate(jobs, s.round_warmup, s.rounds, stop=lambda: clock.left() <= 0)
    if len(times["fb"]) < s.rounds:
        print(f"  stopped at the deadline after {len(times['fb'])} measured rounds")
    if not times["fb"]:
        raise OutOfTime("the deadline passed before the first measured round")
    fb, blocks, extra = lockstep_figures(times)
    every, bare = VARIANTS["cheap"]["every"], times["bare"]
    cheap = statistics.median(blocks) if blocks else math.nan
    figures = {"cheap / bare step": {"value": cheap, "goal": CHEAP_GOAL, "met": cheap <= CHEAP_GOAL,
                                     "blocks": len(blocks)}}
    print(f"  {len(bare)} rounds; median bare step {statistics.median(bare) * 1e3:.1f} ms, forward+backward "
          f"{fb * 1e3:.1f} ms")
    print(f"  cheap preset (every {every}) / bare step  {cheap:7.3f}  (goal <= {CHEAP_GOAL}x, median of "
          f"{len(blocks)} blocks)")
    for name, base, goal, unit in COMPARISONS:
        ratio, sigma = extra[name]
        figures[f"{name} minus {base} / {unit}"] = {"value": ratio, "sigma": sigma, "goal": goal,
                                                    "met": None if goal is None else ratio <= goal}
        print(f"  {name:<17} minus {base:<6} / one {unit:<16} {ratio:7.3f} +- {sigma:.3f}"
              + (f"  (goal <= {goal}x)" if goal is not None else ""))
    bad = [key for key, figure in figures.items() if not math.isfinite(figure["value"])]
    return {"rounds": len(bare), "forward_backward_s": fb, "bare_step_s": statistics.median(bare),
            "figures": figures, "check": f"fail: not finite: {', '.join(bad)}" if bad else "pass"}


def cli_run(s: Settings, optimizer: str, data: Path, steps: int, out: Path) -> list[str]:
    """The CLI arguments both subprocess runs share: this model, data and batch for `steps` steps into `out`."""
    return ["--task", "lm", "--model", s.model, "--data", str(data), "--vocab-size", str(s.vocab_size),
            "--optimizer", optimizer, "--steps", str(steps), "--batch-size", str(s.batch_size), "--seq-len",
            str(s.seq_len), "--device", s.device, "--eval-every", str(min(50, steps)), "--checkpoint-every",
            str(steps), "--out", str(out), "--no-progress"]


def launch(command: list[str], clock: Clock) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` from the repository root in its own process group, killed whole at the deadline
    (torchrun's ranks with it); returns the finished process and its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"  {' '.join(command[1:])}")
    clock.check()
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=clock.left())
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise OutOfTime(f"killed at the deadline after {time.perf_counter() - start:.0f} s") from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        print(stderr[-4000:])
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), elapsed


def adaptive(s: Settings, optimizer: str, data: Path, root: Path, clock: Clock) -> dict:
    """`smoothprobe train --adaptive --f-star auto` through the CLI; passes if every loss is finite."""
    out = root / "adaptive"
    command = [sys.executable, "-m", "cli.main", "train", *cli_run(s, optimizer, data, s.adaptive_steps, out),
               "--adaptive", "--f-star", "auto"]
    done, elapsed = launch(command, clock)
    if done.returncode != 0:
        return {"check": f"fail: exit {done.returncode}", "seconds_run": elapsed}
    steps = load_run(out).steps
    lr, loss = steps["lr"], steps["loss"]
    finite = bool(loss.map(math.isfinite).all())
    print(f"adaptive run: {len(steps)} steps in {elapsed:.0f} s; loss {loss.iloc[0]:.4f} -> {loss.iloc[-1]:.4f}; "
          f"lr {lr.iloc[0]:.3g} at step 0, peak {lr.max():.3g} at step {int(steps['step'][lr.idxmax()])}, "
          f"{lr.iloc[-1]:.3g} at the end")
    return {"steps": len(steps), "seconds_run": elapsed, "loss_first": float(loss.iloc[0]),
            "loss_last": float(loss.iloc[-1]), "lr_peak": float(lr.max()),
            "lr_peak_step": int(steps["step"][lr.idxmax()]),
            "check": "pass" if finite and len(steps) == s.adaptive_steps else "fail: a loss not finite or steps missing"}


def ddp(s: Settings, optimizer: str, data: Path, root: Path, clock: Clock) -> dict:
    """`record` under torchrun on every visible GPU (on CPU in the dry run: 2 gloo processes, as
    tests/test_distributed.py runs them); passes if it finished on every rank with finite losses."""
    nproc = torch.cuda.device_count() if s.device.startswith("cuda") else 2
    if nproc < 2:
        print("  skipped: 1 device")
        return {"nproc": nproc, "check": "skipped: 1 device"}
    out = root / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "cli.main", "record", *cli_run(s, optimizer, data, s.ddp_steps, out), "--preset", "standard",
               "--every", "1"]
    done, elapsed = launch(command, clock)
    if done.returncode != 0:
        return {"nproc": nproc, "seconds_run": elapsed, "check": f"fail: exit {done.returncode}"}
    run = load_run(out)
    steps = run.steps
    step_time = statistics.median(steps["step_time_max_s"].iloc[1:])  # the first step warms up
    finite = bool(steps["loss"].map(math.isfinite).all() and steps["secant_K"].notna().any())
    finished = run.info["status"] == "finished" and run.info["world_size"] == nproc
    print(f"ddp: {nproc} processes, {len(steps)} steps in {elapsed:.0f} s, status {run.info['status']}; median step "
          f"{step_time * 1e3:.1f} ms (slowest rank)")
    return {"nproc": nproc, "seconds_run": elapsed, "status": run.info["status"], "steps": len(steps),
            "step_time_s": step_time, "loss_last": float(steps["loss"].iloc[-1]),
            "check": "pass" if finished and finite else "fail: not finished on every rank, or not finite"}


SECTIONS = {"presets": presets, "overhead": overhead, "adaptive": adaptive, "ddp": ddp}


def run_section(name: str, job: Callable[[], dict], s: Settings, clock: Clock) -> dict:
    """One section, timed; an exception or the deadline makes it a failed check, and the script goes on."""
    print(f"[{name}]")
    start = time.perf_counter()
    try:
        clock.check()
        result = job()
    except Exception as exc:  # noqa: BLE001 - a first run on new hardware: report it and run the rest
        traceback.print_exc()
        result = {"check": f"fail: {type(exc).__name__}: {exc}"}
    free(s.device)
    result["seconds"] = time.perf_counter() - start
    print(f"[{name}] {result['check']} in {result['seconds']:.0f} s ({clock.elapsed():.0f} s so far)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps: checks the code path.")
    parser.add_argument("--optimizer", default="muon", help="muon exercises the spectral geometry (default).")
    parser.add_argument("--json", type=Path, default=None,
                        help="summary path (default reports/gpu_check.json on CUDA, a temporary file in the dry run)")
    parser.add_argument("--timeout", type=float, default=None,
                        help=f"seconds for the whole script (default {GPU.timeout:.0f}; {DRY.timeout:.0f} dry)")
    args = parser.parse_args(argv)
    settings = DRY if args.dry_run else GPU
    if args.timeout is not None:
        settings = dataclasses.replace(settings, timeout=args.timeout)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device; use --dry-run on CPU")
    path = args.json
    if path is None:
        path = Path(tempfile.mkstemp(prefix="gpu_check-", suffix=".json")[1]) if args.dry_run else (
            ROOT / "reports" / "gpu_check.json")
    device = torch.cuda.get_device_name() if settings.device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {device}; deadline {settings.timeout:.0f} s")
    clock = Clock(settings.timeout)
    summary: dict = {"device": device, "devices": torch.cuda.device_count(), "torch": torch.__version__,
                     "cuda": torch.version.cuda, "dry_run": args.dry_run, "optimizer": args.optimizer,
                     "settings": dataclasses.asdict(settings)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_tokens(root / "stdlib.bin")
        for name, section in SECTIONS.items():
            summary[name] = run_section(name, lambda section=section: section(settings, args.optimizer, data, root,
                                                                                clock), settings, clock)
    summary["checks"] = {name: summary[name]["check"] for name in SECTIONS}
    summary["ok"] = not any(check.startswith("fail") for check in summary["checks"].values())
    summary["seconds"] = clock.elapsed()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary written to {path}")
    print(f"total {summary['seconds']:.0f} s: {'ok' if summary['ok'] else 'FAILED'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
