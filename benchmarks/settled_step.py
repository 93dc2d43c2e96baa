"""The settled step test, registered before it ran and measured on seeds nothing else used: after the
closed loop's first 50 steps, is the peak LR within the best step along the update?

The step test (`--step-test`) reads 3 trial steps before step 0 and calls Lion, Muon and normalised SGD
alike ("no warm-up"); normalised SGD needs a 25 % warm-up. Its best step falls over the lr/10 start
while Lion's grows (docs/design.md §5), so the rule written down before any run here was: no warm-up iff

  (a) the step test passes (the peak within twice the median best LR over the 3 trial steps),
  (b) the median best LR over steps 35-49 of the closed loop's own start (lr/10, secant on every step)
      is at least the peak, and
  (c) the optimizer's step per unit LR has settled over those 50 steps (`decision.after_settling`),

with the 50 steps to be undone when it passes. Right answers (the warm-up grid at lr*): Lion and Muon
need none, AdamW and normalised SGD do. It was to be kept if, on seeds 30-39 at the grid's lr*, no AdamW
or normalised SGD run were called "no warm-up" and at least 18 of the 20 Lion and Muon runs were.

What it printed: AdamW 10 of 10 right (it fails (a)), Muon 10 of 10, normalised SGD 9 of 10 (seed 34
read 1.04× the peak in (b): a "no warm-up" that costs it about 0.16), Lion 6 of 10 (its (b) reads
0.63-2.25× the peak from seed to seed). Not kept: docs/design.md §5, "The settled step test".

    python benchmarks/settled_step.py   # 40 runs of 53 steps, about 20 CPU-minutes; resumable;
                                        # the readings go to benchmarks/results/settled_step.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import warmup_grid
from warmup_grid import REPO

SEEDS = range(30, 40)
WINDOW = 50
LATE = (35, 49)
RESULTS = REPO / "benchmarks" / "results" / "settled_step.json"


def reading(optimizer: str, seed: int) -> dict:
    """The rule's three readings on one seed at the grid's lr*, and its verdict."""
    from smoothprobe.schedule.decision import (
        SETTLE_FALL,
        STABILITY_LIMIT,
        best_step_lr,
        step_scale_ratio,
    )
    from smoothprobe.train import build

    k = warmup_grid.scan_state(REPO / "runs" / "warmup_grid", optimizer)[1]
    if k is None:
        raise SystemExit(f"the warm-up grid's LR scan of {optimizer} is still open")
    arm = warmup_grid.Arm(optimizer, "closed", k, 0.0, seed)
    with tempfile.TemporaryDirectory() as out:
        config = warmup_grid.config_of(arm, warmup_grid.base_config(False, "cpu"), Path(out))
        trainer = build(config, Path(out) / "run")
        try:
            trial = trainer.trial_rows(3)
            rows = [trainer.step(step) for step in range(WINDOW)]
        finally:
            trainer.writer.close("interrupted", "the settled step test reads the start only")
    start, _ = best_step_lr(trial)
    late, _ = best_step_lr([r for r in rows if LATE[0] <= r["step"] <= LATE[1]])
    scale, _ = step_scale_ratio(rows)
    checks = {"a": config.lr <= STABILITY_LIMIT * start, "b": late >= config.lr,
              "c": not scale * (1.0 + SETTLE_FALL) < 1.0}
    return {"optimizer": optimizer, "seed": seed, "peak": config.lr, "start_best": start, "late_best": late,
            "scale_ratio": scale, **checks, "no_warmup": all(checks.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    import torch

    torch.set_num_threads(1)
    found = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for seed in SEEDS:
        for optimizer in warmup_grid.GUESS:
            key = f"{optimizer}-seed{seed}"
            if key not in found:
                found[key] = reading(optimizer, seed)
                RESULTS.write_text(json.dumps(found, indent=1) + "\n")
            r = found[key]
            print(f"{key:16s} (a) 2·best/peak {2 * r['start_best'] / r['peak']:.2f}  (b) best/peak "
                  f"{r['late_best'] / r['peak']:.2f}  (c) scale {r['scale_ratio']:.2f}  -> "
                  f"{'no warm-up' if r['no_warmup'] else 'warm-up'}", flush=True)
    for optimizer in warmup_grid.GUESS:
        calls = [r["no_warmup"] for r in found.values() if r["optimizer"] == optimizer]
        print(f"{optimizer}: 'no warm-up' in {sum(calls)} of {len(calls)} seeds")


if __name__ == "__main__":
    main()
