"""Does the size of an update relative to its weights tell which runs need a warm-up?

Kosson et al. ("Analyzing & Reducing the Need for Learning Rate Warmup in GPT Training", 2024) tie the
need for a warm-up to early updates that are large against the weights they change: ‖ΔW‖/‖W‖ per
layer. docs/design.md §5 already reads the update's size per unit LR for the whole model (it explains
AdamW and nothing else); this reads it per weight matrix, where a normalised-SGD step that lands on a
few layers would show. The reading is the grid's no-warm-up run itself: steps 0-9 at the peak, each
matrix's ‖ΔW‖_F/‖W‖_F before the step; the table gives, at step 0 and averaged over steps 0-9, the
largest over matrices and the median.

The answer it is read against is the warm-up grid's at the same LR on the held-out seeds 20-23
(`reports/warmup_grid_heldout.md`): "warm-up" where the best warm-up beats none by more than the
optimizer's σ, "none" where no warm-up is within σ of the best. A reading decides if one threshold puts
every "warm-up" cell above every "none" cell; the script says for each reading whether one exists.

**Outcome** (2026-12-07, seeds 20-23, lm): no reading separates them. At step 0 the matrix that moves most
moves by 0.028 of its norm for normalised SGD at lr*/2 (needs a 25 % warm-up there), against 0.035-0.14
for Lion and Muon (need none at lr*/2, lr* and 2·lr*); no threshold separates them on the median over
matrices either, nor on either reading averaged over steps 0-9. At each LR normalised SGD takes the
smallest steps against its weights of the four, and beside AdamW (whose first steps are the largest, and
which fits the reading) it is the one that needs a warm-up at every LR. The warm-up that normalised SGD
needs is not paid for by large early updates.

    python benchmarks/relative_update.py   # 48 readings of 10 steps each, a few CPU-minutes; resumable
"""

from __future__ import annotations

import math
import statistics

import step_limit
import warmup_grid
from warmup_grid import REPO

SEEDS = step_limit.HELD_OUT
STEPS = 10
RESULTS = REPO / "benchmarks" / "results" / "relative_update.json"
READINGS = ("max at step 0", "median at step 0", "max, mean of steps 0-9", "median, mean of steps 0-9")


def relative_updates(optimizer: str, k: int, seed: int) -> list[dict[str, float]]:
    """Each of the first STEPS steps of the grid's no-warm-up run at peak LR guess·2^k: every weight
    matrix's ‖ΔW‖/‖W‖ (by name)."""
    import torch

    arm = warmup_grid.Arm(optimizer, "grid", k, 0.0, seed)
    steps = []
    with warmup_grid.scratch_trainer(arm, why="the relative size of its first updates only") as trainer:
        matrices = {name: p for name, p in trainer.model.named_parameters() if p.ndim >= 2}
        for step in range(STEPS):
            before = {name: p.detach().clone() for name, p in matrices.items()}
            trainer.step(step)
            with torch.no_grad():
                steps.append({name: float((p - before[name]).norm() / before[name].norm()) for name, p in matrices.items()})
    return steps


def reading(optimizer: str, k: int, seed: int) -> dict[str, float]:
    """The four readings of the relative updates of one run (`relative_updates`)."""
    steps = relative_updates(optimizer, k, seed)
    largest = [max(step.values()) for step in steps]
    middle = [statistics.median(step.values()) for step in steps]
    return dict(zip(READINGS, (largest[0], middle[0], statistics.fmean(largest), statistics.fmean(middle))))


def answer(optimizer: str, k: int) -> str:
    """The grid's answer at peak LR guess·2^k over the SEEDS on which every warm-up ran: "warm-up", "none",
    "either", or "open" while no seed has them all."""
    complete = [seed for seed in SEEDS
                if not any(math.isnan(step_limit.score(optimizer, "grid", k, seed, w)) for w in warmup_grid.GRID_WARMUPS)]
    if not complete:
        return "open"
    means = step_limit.grid_means(optimizer, k, complete)
    sigma, best = step_limit.SIGMA[optimizer], min(means.values())
    if means[0.0] <= best + sigma:
        return "none"
    return "warm-up" if min(v for w, v in means.items() if w > 0) < means[0.0] - sigma else "either"


def separates(cells: list[tuple[str, float]]) -> bool:
    """Whether one threshold puts every "warm-up" cell's reading above every "none" cell's."""
    warm = [value for said, value in cells if said == "warm-up"]
    none = [value for said, value in cells if said == "none"]
    return not warm or not none or min(warm) > max(none)


def table() -> tuple[list[str], dict[str, bool]]:
    """The table's rows (markdown, means over SEEDS) and, per reading, whether a threshold separates the
    grid's "warm-up" cells from its "none" cells; takes the readings that are missing first."""
    readings = warmup_grid.Readings(RESULTS)
    rows, cells = [], {name: [] for name in READINGS}
    for optimizer in warmup_grid.GUESS:
        star = warmup_grid.scanned_exponent(optimizer)
        for d in step_limit.LRS:
            said = answer(optimizer, star + d)
            per_seed = [readings.get(f"{optimizer}-k{star + d}-seed{seed}", reading, optimizer, star + d, seed)
                        for seed in SEEDS]
            means = {name: statistics.fmean(run[name] for run in per_seed) for name in READINGS}
            for name in READINGS:
                cells[name].append((said, means[name]))
            rows.append(f"| {optimizer} | lr*·2^{d:+d} | {said} | " + " | ".join(f"{means[name]:.4f}" for name in READINGS) + " |")
    return rows, {name: separates(cells[name]) for name in READINGS}


def main() -> None:
    rows, verdicts = table()
    print(f"Relative update ‖ΔW‖/‖W‖ of the grid's no-warm-up run, mean over seeds {', '.join(map(str, SEEDS))}; "
          "the answer is the grid's at that LR.\n")
    print("| optimizer | LR | grid says | " + " | ".join(READINGS) + " |")
    print("|---|---|---|" + "---|" * len(READINGS))
    print("\n".join(rows))
    for name, apart in verdicts.items():
        print(f"{name}: {'a threshold separates' if apart else 'no threshold separates'} the warm-up cells from the none cells")


if __name__ == "__main__":
    main()
