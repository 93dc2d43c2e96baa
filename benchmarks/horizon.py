"""When does a run without warm-up fall behind one with it? The horizon any test of the start must see.

Every start test in docs/design.md §5 reads the first 50-100 steps. This reads, on the grid's own runs,
how long the cost of skipping a warm-up takes to show in the training loss: for each optimizer at lr*/2,
lr* and 2·lr*, the no-warm-up run's training loss minus the 25 % warm-up's on the same seed (same
initial point, same batches), averaged over blocks of 50 steps, and the final validation loss's
difference. The runs are the warm-up grid's (`warmup_grid.py`), read from the run folders kept on this
machine (held-out seeds 22-23; AdamW 23 only) and stored in `benchmarks/results/horizon.json`.

**Outcome** (2026-12-07, the 21 pairs kept whole): over steps 50-99 the run without warm-up is ahead by
0.30-1.45 in every cell but AdamW at 2·lr* (0.032 behind), also in the cells where it ends behind (AdamW at
lr*/2 and lr*, normalised SGD at every LR: 0.014-0.29 behind at the end; AdamW's lr*/2 is one seed and
under its σ). At lr* it falls behind for good from step 350 on AdamW and 300 on normalised SGD; at lr*/2
from 750 and 450; normalised SGD at 2·lr* from 100. So, against a 25 % linear warm-up, a comparison of
training losses over the first 100 steps favours no warm-up in five of the six cells where the warm-up
wins in the end: what the warm-up buys shows up hundreds of steps later. Only that pair of schedules was
read; a trial window set against the practical start was not.

    python benchmarks/horizon.py   # reads the kept run folders; prints the committed readings without them
"""

from __future__ import annotations

import math
import statistics

import step_limit
import warmup_grid
from warmup_grid import REPO

BLOCK = 50
SHOWN = (50, 100, 200, 300, 400)
"""The first step of each block the table shows."""
WARM = warmup_grid.PROGRESS_WARMUPS[1]
"""The warm-up set against none: the grid's 25 % end."""
RESULTS = REPO / "benchmarks" / "results" / "horizon.json"


def blocks(run) -> list[float]:
    """A run's mean training loss per block of BLOCK steps."""
    loss = run.steps.set_index("step").loss
    return [float(loss.loc[start:start + BLOCK - 1].mean()) for start in range(0, int(loss.index.max()) + 1, BLOCK)]


def reading(optimizer: str, k: int, seed: int) -> dict | None:
    """No warm-up minus WARM on one seed at peak LR guess·2^k: per block of training loss and at the end
    (the grid's validation results); None where either run's folder is not kept whole."""
    from smoothprobe.store import load_run

    paths = [step_limit.GRID / warmup_grid.Arm(optimizer, "grid", k, w, seed).name for w in (0.0, WARM)]
    if not all((path / "run.json").exists() for path in paths):
        return None
    none, warm = (load_run(path) for path in paths)
    if any(run.info.get("status") != "finished" for run in (none, warm)):
        return None  # a rerun stopped part-way: not the run the grid's result came from
    return {"blocks": [a - b for a, b in zip(blocks(none), blocks(warm))],
            "final": step_limit.score(optimizer, "grid", k, seed) - step_limit.score(optimizer, "grid", k, seed, WARM)}


def behind_from(diffs: list[float]) -> float:
    """The first step of the first block from which the no-warm-up run stays behind (NaN: never)."""
    for i in range(len(diffs)):
        if all(d > 0 for d in diffs[i:]):
            return float(i * BLOCK)
    return math.nan


def table() -> list[str]:
    """The table's rows (markdown, means over the seeds read), taking the readings that are missing first."""
    readings = warmup_grid.Readings(RESULTS)
    rows = []
    for optimizer in warmup_grid.GUESS:
        star = warmup_grid.scanned_exponent(optimizer)
        for d in step_limit.LRS:
            runs = [run for seed in step_limit.HELD_OUT
                    if (run := readings.get(f"{optimizer}-k{star + d}-seed{seed}", reading, optimizer, star + d, seed))]
            if not runs:
                continue
            diffs = [statistics.fmean(run["blocks"][i] for run in runs) for i in range(len(runs[0]["blocks"]))]
            final = statistics.fmean(run["final"] for run in runs)
            cells = " | ".join(f"{diffs[start // BLOCK]:+.3f}" for start in SHOWN)
            rows.append(f"| {optimizer} | lr*·2^{d:+d} | {len(runs)} | {cells} | {final:+.4f} | {behind_from(diffs):g} |")
    return rows


def main() -> None:
    print(f"No warm-up minus a {WARM:.0%} warm-up (the grid's runs, same seed): mean training loss per block of "
          f"{BLOCK} steps, and the final validation loss.\n")
    print("| optimizer | LR | seeds | " + " | ".join(f"steps {s}-{s + BLOCK - 1}" for s in SHOWN)
          + " | final (val) | behind from step |")
    print("|---|---|---|" + "---|" * (len(SHOWN) + 2))
    print("\n".join(table()))


if __name__ == "__main__":
    main()
