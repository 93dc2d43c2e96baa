"""GPU check: probe cost and memory on the 124m model under bf16 autocast, then a 200-step adaptive run.

On one CUDA device, in under 8 minutes:
  1. a bare step, then the `standard` and `full` probe presets (every step probed, the heavy
     probes on the first step and once among the measured ones), each on a fresh trainer: per-probe time over one training
     forward+backward (medians over the measured steps) and peak memory in model sizes
     (torch.cuda.max_memory_allocated over the parameters' bytes; total, so it includes the
     model, gradients and optimizer state);
  2. `smoothprobe train --adaptive --f-star auto` for 200 steps through the CLI, in a subprocess
     (the command line is the stable interface), summarised from its run directory.
`--dry-run` runs the same code on CPU with the tiny model and a few steps (tests/test_benchmarks.py).
Exits non-zero if a probe column or the adaptive run's loss is not finite.

Run from the repository root: PYTHONPATH=. python benchmarks/gpu_check.py [--dry-run]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from smoothprobe import load_run
from smoothprobe.probes import PROBES
from smoothprobe.train import TrainConfig, Trainer, build

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    model: str
    device: str
    batch_size: int
    seq_len: int
    warmup: int  # steps before measuring (the first probed step is a heavy one)
    measured: int  # steps measured per preset
    heavy_every: int  # heavy probes (Lanczos, trace, curv_dual) on every heavy_every-th probed step
    adaptive_steps: int


GPU = Settings(model="124m", device="cuda", batch_size=16, seq_len=512, warmup=1, measured=3, heavy_every=3,
               adaptive_steps=200)
DRY = Settings(model="tiny", device="cpu", batch_size=2, seq_len=16, warmup=0, measured=2, heavy_every=2,
               adaptive_steps=2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_trainer(s: Settings, optimizer: str, out: Path, probes: dict | None) -> Trainer:
    config = TrainConfig(task="lm", model=s.model, optimizer=optimizer, steps=10**6, batch_size=s.batch_size,
                         seq_len=s.seq_len, device=s.device, eval_every=10**6, checkpoint_every=10**6,
                         probes=probes)
    return build(config, out, overwrite=True)


def forward_backward(trainer: Trainer, step: int, device: str) -> float:
    """Wall time of one training forward+backward (the unit of cost), gradients cleared after."""
    batch = trainer.task.train_batch(step)
    sync(device)
    start = time.perf_counter()
    trainer.accumulate([batch])
    sync(device)
    elapsed = time.perf_counter() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return elapsed


class PeakMemory:
    """Peak CUDA memory over a block, in bytes (NaN on CPU, where it is not measured)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak = math.nan

    def __enter__(self) -> PeakMemory:  # noqa: PYI034 (a final class)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = float(torch.cuda.max_memory_allocated())


def probe_costs(s: Settings, optimizer: str, root: Path) -> bool:
    """Bare step, then each preset: per-probe time / forward+backward and peak memory. True if finite."""
    bare = make_trainer(s, optimizer, root / "bare", None)
    model_bytes = sum(p.numel() * p.element_size() for p in bare.model.parameters())
    for step in range(max(1, s.warmup)):
        bare.step(step)
    fb = statistics.median(forward_backward(bare, step, s.device) for step in range(s.measured))
    with PeakMemory(s.device) as bare_peak:
        bare_row = bare.step(max(1, s.warmup))
    print(f"model {s.model}: {model_bytes / 2**20:.1f} MiB of parameters, optimizer {optimizer}, "
          f"batch {s.batch_size} x {s.seq_len}, autocast {'bf16' if s.device.startswith('cuda') else 'off'}")
    print(f"  forward+backward {fb * 1e3:.1f} ms; bare step {bare_row['step_time_s'] * 1e3:.1f} ms; "
          f"bare step peak {bare_peak.peak / model_bytes:.2f} model sizes")
    del bare
    finite = True
    for preset in ("standard", "full"):
        probes = {"preset": preset, "every": 1, "heavy_every": s.heavy_every}
        trainer = make_trainer(s, optimizer, root / preset, probes)
        recorder = trainer.recorder
        after_step = recorder.after_step
        peaks: list[float] = []

        def measured(after_step=after_step, peaks=peaks) -> dict:
            with PeakMemory(s.device) as peak:
                row = after_step()
            peaks.append(peak.peak)
            return row

        recorder.after_step = measured
        rows = [trainer.step(step) for step in range(s.warmup + s.measured)][s.warmup:]
        names = [name for name in PROBES if name in recorder.probes]  # in the order they run
        print(f"  {preset}: probes {', '.join(names)}; peak in after_step "
              f"{max(peaks[s.warmup:]) / model_bytes:.2f} model sizes "
              f"({max(peaks[s.warmup:]) / bare_peak.peak:.2f}x the bare step's)")
        for name in ["probe_time", *(f"time_{n}" for n in names)]:
            times = [r[f"{name}_s"] for r in rows if f"{name}_s" in r]
            print(f"    {name:<16} / forward+backward  {statistics.median(times) / fb:8.2f}  (median of {len(times)})")
        columns = {k: v for r in rows for k, v in r.items() if not k.startswith("time")}
        bad = [k for k, v in columns.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            print(f"    NOT FINITE: {', '.join(bad)}")
            finite = False
        del trainer
    return finite


def adaptive_run(s: Settings, optimizer: str, root: Path) -> bool:
    """`smoothprobe train --adaptive --f-star auto` through the CLI; True if every loss is finite."""
    out = root / "adaptive"
    command = [sys.executable, "-m", "cli.main", "train", "--task", "lm", "--model", s.model, "--optimizer",
               optimizer, "--steps", str(s.adaptive_steps), "--batch-size", str(s.batch_size), "--seq-len",
               str(s.seq_len), "--device", s.device, "--adaptive", "--f-star", "auto", "--eval-every",
               str(min(50, s.adaptive_steps)), "--checkpoint-every", str(s.adaptive_steps), "--out", str(out),
               "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    print(f"adaptive run: {' '.join(command[1:])}")
    if done.returncode != 0:
        print(f"  FAILED (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return False
    steps = load_run(out).steps
    lr = steps["lr"]
    print(f"  {len(steps)} steps in {elapsed:.0f} s; loss {steps['loss'].iloc[0]:.4f} -> {steps['loss'].iloc[-1]:.4f}; "
          f"lr {lr.iloc[0]:.3g} at step 0, peak {lr.max():.3g} at step {int(steps['step'][lr.idxmax()])}, "
          f"{lr.iloc[-1]:.3g} at the end")
    return bool(steps["loss"].map(math.isfinite).all())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps: checks the code path.")
    parser.add_argument("--optimizer", default="muon", help="muon exercises the spectral geometry (default).")
    args = parser.parse_args(argv)
    settings = DRY if args.dry_run else GPU
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device; use --dry-run on CPU")
    device = torch.cuda.get_device_name() if settings.device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {device}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ok = probe_costs(settings, args.optimizer, Path(tmp))
        print(f"probe costs done at {time.perf_counter() - start:.0f} s")
        ok = adaptive_run(settings, args.optimizer, Path(tmp)) and ok
    print(f"total {time.perf_counter() - start:.0f} s: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
