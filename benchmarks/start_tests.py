"""Start tests, each written down before the seeds that judged it ran: can the closed loop's first 50
steps tell an optimizer that needs a warm-up from one that does not?

The step test (`--step-test`) reads 3 trial steps before step 0 and calls Lion, Muon and normalised SGD
alike ("no warm-up"); normalised SGD needs a 25 % warm-up. Right answers (the warm-up grid at lr*):
Lion and Muon need none, AdamW and normalised SGD do. Each rule was to be kept if, on its fresh seeds
at the grid's lr*, no AdamW or normalised SGD run were called "no warm-up" and at least 18 (settled)
or 19 (progress) of the 20 Lion and Muon runs were.

- **settled** (registered before seeds 30-39): no warm-up iff (a) the step test passes (the peak within
  twice the median best LR over its 3 trial steps), (b) the median best LR over steps 35-49 of the
  closed loop's own start (lr/10, secant on every step) is at least the peak, and (c) the step per unit
  LR has settled over those 50 steps (the ratio `decision.after_settling` reads). On seeds 30-39 it called AdamW
  right 10 of 10 (it fails (a)), Muon 10 of 10, normalised SGD 9 of 10 (seed 34 read 1.04× the peak in
  (b): a "no warm-up", which cost it about 0.16 on seeds 0-2) and Lion 6 of 10 ((b) reads 0.63-2.25×
  the peak from seed to seed). Not kept.
- **progress** (seen on the dev and held-out runs and seeds 30-39, registered before seeds 40-49):
  no warm-up iff the loss falls by less than 17.5 % over those 50 steps (`decision.progress_test`).
  On seeds 40-49 all 40 starts fell on the side of their optimizer's dev grid (no grid ran on those
  seeds); the closest was normalised SGD's seed 48 at 17.6 %. Kept, opt-in (`--progress-test`): the
  threshold is this benchmark's.
- **progress on a second task** (registered 2026-12-06 15:44 UTC, before the runs that judge it): the
  same test, threshold unchanged, on `markov` (f* = the chain's entropy rate; the lm benchmark's model,
  steps and batch) at that task's own lr* (the warm-up grid's scan), seeds 0-2 (`second_task.progress_transfer`). The right
  answer is "warm-up" where 25 % beat no warm-up on every seed, "none" where no warm-up beat 25 % on
  every seed, else "either". The test transfers on an optimizer if its verdict is right on at least 2
  of the 3 seeds and its closed loop's mean is within the better end's mean + that end's seed σ; it
  transfers if it does so on all four, and stays opt-in otherwise. It failed: every start fell
  6.5-8.6 %, so it said "no warm-up" for all four; a 25 % warm-up won on every seed for AdamW and
  normalised SGD (AdamW right on 0 of 3, normalised SGD right on 0 of 3, its closed loop 0.18 behind),
  while Lion (right on 3 of 3) and Muon (right on 3 of 3, its two ends split) passed. Stays opt-in.

docs/design.md §5 has all three. Every seed's readings are in benchmarks/results/start_tests.json;
the second task's runs in benchmarks/results/warmup_grid_markov, judged by benchmarks/second_task.py.

    python benchmarks/start_tests.py   # 80 runs of 53 steps, about 40 CPU-minutes; resumable
"""

from __future__ import annotations

import argparse

import second_task
import warmup_grid
from warmup_grid import REPO

SEEDS = range(30, 50)
WINDOW = 50
LATE = (35, 49)
RESULTS = REPO / "benchmarks" / "results" / "start_tests.json"
RULES = {"settled": range(30, 40), "progress": range(40, 50)}
"""Each rule and the seeds that judged it (registered before they ran)."""


def reading(optimizer: str, seed: int, task: str = "lm") -> dict:
    """Both rules' readings on one seed at the grid's lr* on `task`, and their verdicts ("no warm-up": True)."""
    from smoothprobe.schedule.decision import (
        best_step_lr,
        progress_drop,
        progress_test,
        step_scale_ratio,
        step_test,
        still_falling,
    )

    arm = warmup_grid.Arm(optimizer, "closed", warmup_grid.scanned_exponent(optimizer, task), 0.0, seed)
    with warmup_grid.scratch_trainer(arm, task, "the start tests read the start only") as trainer:
        config = trainer.config
        trial = trainer.trial_rows(3)
        rows = [trainer.step(step) for step in range(WINDOW)]
    start, _ = best_step_lr(trial)
    late, _ = best_step_lr([r for r in rows if LATE[0] <= r["step"] <= LATE[1]])
    scale, _ = step_scale_ratio(rows)
    drop = progress_drop(rows)[0]
    checks = {"a": step_test(trial, config.lr).decided, "b": late >= config.lr,
              "c": not still_falling(scale)}
    return {"task": task, "optimizer": optimizer, "seed": seed, "peak": config.lr, "start_best": start, "late_best": late,
            "scale_ratio": scale, **checks, "settled": all(checks.values()), "drop": drop,
            "progress": progress_test(rows).decided}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    import torch

    torch.set_num_threads(1)
    readings = warmup_grid.Readings(RESULTS)
    # the lm seeds, then the second task's seeds once its scan has found lr*
    wanted = [(f"{opt}-seed{seed}", opt, seed, "lm") for seed in SEEDS for opt in warmup_grid.GUESS]
    scanned = [opt for opt in warmup_grid.GUESS if warmup_grid.scan_state(second_task.FOLDER, opt)[1] is not None]
    wanted += [(f"markov/{opt}-seed{seed}", opt, seed, "markov") for seed in second_task.SEEDS for opt in scanned]
    for key, optimizer, seed, task in wanted:
        r = readings.get(key, reading, optimizer, seed, task)
        print(f"{key:22s} (a) 2·best/peak {2 * r['start_best'] / r['peak']:.2f}  (b) best/peak "
              f"{r['late_best'] / r['peak']:.2f}  (c) scale {r['scale_ratio']:.2f}  drop {r['drop']:.3f}  "
              f"-> settled: {'none' if r['settled'] else 'warm-up'}, progress: "
              f"{'none' if r['progress'] else 'warm-up'}", flush=True)
    for rule, seeds in RULES.items():
        for optimizer in warmup_grid.GUESS:
            calls = [readings.found[key][rule] for s in seeds if (key := f"{optimizer}-seed{s}") in readings.found]
            print(f"{rule} on seeds {seeds.start}-{seeds.stop - 1}, {optimizer}: 'no warm-up' in {sum(calls)} of "
                  f"{len(calls)}")
    print("the progress test on a second task (markov): `python benchmarks/second_task.py` judges it")

if __name__ == "__main__":
    main()
