"""The published verdicts on two seeds no arm had run: does the default loop hold where the README says it does?

Registered 2026-12-07 13:10 UTC, before any of these runs had finished (the first two, AdamW's default loop
and no-warm-up run on seed 50, had started). Seeds 50-51 were never run by any arm of the warm-up grid, the
LR scan or the start tests (which read seeds 30-49). At each optimizer's lr*, the runs are those of
`warmup_grid.py --stages window,progress --seeds 2 --seed-offset 50`: the grid's two ends (no warm-up and
25 %), the default loop (`closed_window`), the fits alone (`closed`) and the progress test
(`closed_progress`), with every setting as published.

**The check** (fixed now). For each optimizer, the default loop's mean over seeds 50-51 against the better
end's mean (`second_task.better_end`), with σ the optimizer's held-out seed σ (`step_limit.SIGMA`):
"within" if at most the better end + σ. **Predicted** from the held-out table (reports/warmup_grid_heldout.md):
within on AdamW and normalised SGD (the practical warm-up runs to its end, as the 25 % end does), within
on Lion (the fits alone's runs there, about the no-warm-up end), and a miss on Muon of about 1 σ (the window
test ends the warm-up at step 49, after 49 steps at lr/10; on seeds 20-21 that was 0.012 behind no warm-up
at lr*). The default loop's decisions: Muon's window test on both seeds, no decision on AdamW or normalised
SGD. The other two loops are printed beside it, not judged.

    python benchmarks/warmup_grid.py --stages window,progress --seeds 2 --seed-offset 50   # 40 runs, resumable
    python benchmarks/fresh_seeds.py                                                       # the verdicts
"""

from __future__ import annotations

import math
import statistics

import second_task
import step_limit
import warmup_grid

SEEDS = (50, 51)
LOOPS = (warmup_grid.DEFAULT_LOOP, "closed", "closed_progress")


def verdict(optimizer: str) -> tuple[str, bool | None, dict[str, float]]:
    """One optimizer's table row (markdown), the default loop's verdict (None while a run is missing) and
    how many of its runs decided (a branch other than "not yet")."""
    k = warmup_grid.scanned_exponent(optimizer)
    none, warm = ({seed: step_limit.score(optimizer, "grid", k, seed, w) for seed in SEEDS}
                  for w in warmup_grid.PROGRESS_WARMUPS)
    loops = {kind: {seed: step_limit.score(optimizer, kind, k, seed) for seed in SEEDS} for kind in LOOPS}
    mean = {kind: statistics.fmean(scores.values()) for kind, scores in loops.items()}
    results = [warmup_grid.result_of(step_limit.GRID, warmup_grid.Arm(optimizer, warmup_grid.DEFAULT_LOOP, k, 0.0, seed))
               for seed in SEEDS]
    decided = sum(bool(r and r.get("decision") and r["decision"].get("branch") != "not yet") for r in results)
    better = second_task.better_end(none, warm)
    sigma = step_limit.SIGMA[optimizer]
    if better is None or any(math.isnan(v) for v in mean.values()):
        within = None
    else:
        best = statistics.fmean((none if better == "w0" else warm).values())
        within = mean[warmup_grid.DEFAULT_LOOP] <= best + sigma
    ends = f"{statistics.fmean(none.values()):.4f} | {statistics.fmean(warm.values()):.4f}"
    row = (f"| {optimizer} | {ends} | " + " | ".join(f"{mean[kind]:.4f}" for kind in LOOPS)
           + f" | {decided} of {len(SEEDS)} | {sigma} | {within} |")
    return row, within, decided


def main() -> None:
    print(f"At lr*, mean over seeds {', '.join(map(str, SEEDS))} (registered before they ran); NaN: not run yet.\n")
    print("| optimizer | no warm-up | 25 % | " + " | ".join(LOOPS) + " | default loop decided | σ | within |")
    print("|---|---|---|" + "---|" * (len(LOOPS) + 3))
    for optimizer in warmup_grid.GUESS:
        print(verdict(optimizer)[0])


if __name__ == "__main__":
    main()
