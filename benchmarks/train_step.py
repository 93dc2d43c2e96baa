"""Training speed of the tiny preset and the share of run time spent writing the run store.

Each repetition trains the same short run twice, interleaved: once with the real RunStore, whose
writing methods (append, flush, save_checkpoint, write_info) are timed from inside, and once with
those methods replaced by no-ops. Goal (issue 3): writing the store takes at most 1 % of run time.

Run from the repository root: PYTHONPATH=. python benchmarks/train_step.py [--steps 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from smoothprobe.store import RunStore
from smoothprobe.train import TrainConfig, Trainer, build

WRITERS = ("append", "flush", "save_checkpoint", "write_info")
GOAL_SHARE = 0.01


def timed_writers(store: RunStore) -> dict[str, float]:
    """Wrap the store's writing methods so each call adds its wall time to the returned dict."""
    spent = dict.fromkeys(WRITERS, 0.0)

    def wrap(name: str, method: Callable) -> Callable:
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return call

    for name in WRITERS:
        setattr(store, name, wrap(name, getattr(store, name)))
    return spent


def silence_writers(store: RunStore) -> None:
    """Replace the store's writing methods by no-ops (the run directory stays as created)."""
    for name in WRITERS:
        setattr(store, name, lambda *args, **kwargs: None)


def one_run(config: TrainConfig, out: Path, real_store: bool) -> tuple[float, list[float], dict]:
    """Train `config` into `out`; returns run wall time, per-step times and store time by method."""
    trainer: Trainer = build(config, out, overwrite=True)
    spent = timed_writers(trainer.writer.store) if real_store else {}
    if not real_store:
        silence_writers(trainer.writer.store)
    step_times: list[float] = []
    original_step = trainer.step

    def step(index: int) -> dict:
        row = original_step(index)
        step_times.append(row["step_time_s"])
        return row

    trainer.step = step
    start = time.perf_counter()
    trainer.run(progress=False)
    return time.perf_counter() - start, step_times, spent


def bench_task(task: str, args: argparse.Namespace, root: Path) -> None:
    config = TrainConfig(task=task, model="tiny", steps=args.steps, eval_every=args.every,
                         checkpoint_every=args.every, flush_every=10, seed=0)
    warm = dataclasses.replace(config, steps=3)
    one_run(warm, root / f"{task}-warm", real_store=True)
    runs: dict[bool, list[float]] = {True: [], False: []}
    shares, steps_per_s = [], []
    by_method = dict.fromkeys(WRITERS, 0.0)
    for repeat in range(args.repeats):
        for real in (True, False) if repeat % 2 == 0 else (False, True):
            wall, step_times, spent = one_run(config, root / f"{task}-{int(real)}", real)
            runs[real].append(wall)
            if real:
                shares.append(sum(spent.values()) / wall)
                for name, seconds in spent.items():
                    by_method[name] += seconds / args.repeats
                steps_per_s.append(1.0 / statistics.median(step_times[1:]))
    share = statistics.median(shares)
    ab = statistics.median(runs[True]) / statistics.median(runs[False])
    print(f"[{task}] tiny, batch {config.batch_size} x seq {config.seq_len}, {args.steps} steps, "
          f"eval+checkpoint every {args.every}, flush every {config.flush_every}, {args.repeats} repeats")
    print(f"  steps/s (median step, real store)        {statistics.median(steps_per_s):8.2f}")
    print(f"  run wall, real store (median)            {statistics.median(runs[True]):8.3f} s")
    print(f"  store writing / run wall (timed inside)  {share:8.2%}   goal <= {GOAL_SHARE:.0%}: "
          f"{'ok' if share <= GOAL_SHARE else 'MISS'}")
    parts = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in by_method.items())
    print(f"  store time per run by method             {parts}")
    print(f"  run wall real / no-op store (A/B, noisy) {ab:8.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["lm", "markov"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=50, help="eval and checkpoint interval")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {load:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            bench_task(task, args, Path(tmp))


if __name__ == "__main__":
    main()
