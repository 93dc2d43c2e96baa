"""A second task: do the choices made on `lm` hold on `markov`? Each check was written down before its runs.

The reference is the warm-up grid's two ends at markov's own lr* (its scan): no warm-up and a 25 %
linear warm-up, seeds 0-2, the lm benchmark's model, steps and batch. The better end is the one with
the lower mean over the three seeds. An arm is within it if its mean is at most the better end's mean +
that end's seed σ (a diverged run is not).

- **The progress test** (registered 2026-12-06 15:44 UTC): the right answer is "warm-up" where 25 % beat
  no warm-up on every seed, "none" where no warm-up beat 25 % on every seed, else "either". The test
  transfers on an optimizer if its verdict is right on at least 2 of the 3 seeds and its closed loop is
  within the better end; it transfers if it does so on all four. It failed: every start fell 6.5-8.6 %,
  so it said "no warm-up" for all four, and a 25 % warm-up won on every seed for AdamW and normalised SGD
  (right on 0 of 3 each; normalised SGD's closed loop 0.18 behind). Lion and Muon passed.
- **The closed loops** (registered 2026-12-06 18:28 UTC, before any of their markov runs): the closed
  loop with no LR given (`--own-peak`, the `own_peak` arm) and the default closed loop at lr* (`closed`),
  each as the lm benchmark runs it. Each transfers on an optimizer if it is within the better end, and
  transfers if it does so on all four. If `own_peak` transfers, the README recommends it as the closed
  loop to run when no LR is known; otherwise its misses are written down where they are. Neither
  transfers. `own_peak` is within on Muon only; AdamW is behind by 0.026-0.035 on every seed, Lion by
  0.20 on seed 0 and normalised SGD by 0.80 and 0.68 on seeds 0 and 2. Its measured peaks were AdamW
  0.6×, Lion 0.25-0.38×, Muon 1.1-2× and normalised SGD 1.1-1.3× markov's lr*, but the practical
  warm-up under them never reached them: f* was never placed on this task, so the gap stayed measured
  from 0 and never crossed Δ', and on the 9 of 12 runs where no fit decided the LR sat at 0.1-0.3× the
  peak until the cool-down. `closed` is within on AdamW, Lion and Muon (its LR, for the same reason,
  peaked at 0.22-0.31× lr* on 6 of its 12 runs) and misses normalised SGD: its fits said "no warm-up" on all three seeds (0.03,
  0.59, 0.07 behind a 25 % warm-up).
- **The closed loop given the exact f*** (registered 2026-12-06 19:04 UTC, before any of its runs; the
  `closed_exact` arm: `closed` with the schedule's f* the chain's entropy rate instead of auto, the
  pilot's fits unchanged): is the unplaced f* what keeps the practical warm-up from rising? Predicted:
  every warm-up that no fit ends ends by crossing Δ' before the cool-down, and it is within on at least
  as many optimizers as `closed`. Judged as the closed loops above. Both held, and it transfers: within
  on all four (paired against the better end, seeds 0-2: AdamW +0.001, +0.002, +0.001; Lion −0.003,
  −0.003, −0.005; Muon −0.002, −0.001, +0.003; normalised SGD +0.029, +0.052, −0.006). Its practical
  warm-ups ended by crossing Δ' at steps 255-341 (AdamW, Lion, Muon: no fit decided there), and the
  LR reached lr* on every run. Normalised SGD's fits said "no warm-up" at steps 79-99 at gaps of
  0.0007-0.0024: the pilot's fits place their own f* (auto), and placed it at the loss of the moment.
- **The same, with the pilot's fits given the exact f* too** (registered 2026-12-06 19:34 UTC, before
  its runs: `closed_exact` version 2, after `schedule.online.fit_or_lower_bound` began to use a known f*
  as it is). Predicted: no fit decides at a gap below 0.01, and it stays within on all four. The first
  held, the second did not: AdamW, Lion and Muon ran as before (no fit decided), but normalised SGD's
  fits, now measuring Δ from the exact f*, said "no warm-up" at steps 325, 575 and 325 (Δ' intervals
  just above gaps of 0.91-0.98), the LR jumped about 6-fold from the practical warm-up's 0.17× lr*,
  and the runs lost 0.10, 0.62 and 0.37 to a 25 % warm-up. It does not transfer. Version 1's "no
  warm-up" at steps 79-99 cost less only because it came earlier, from an f* placed at the loss of the
  moment; the change is kept because a known f* must not be replaced by such an estimate, and the
  loss is the decision rule's: a mid-run jump to the peak on an interval barely above the gap.

    python benchmarks/warmup_grid.py --task markov --stages scan,progress,loops   # resumable
    python benchmarks/second_task.py                                                # the verdicts
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import warmup_grid

FOLDER = warmup_grid.REPO / "runs" / warmup_grid.folder_name("markov")
SEEDS = (0, 1, 2)
LOOPS = ("own_peak", "closed", "closed_exact")
"""The closed loops judged on the second task, each against the better end."""


def ends(optimizer: str) -> tuple[int, dict[int, float], dict[int, float]] | None:
    """lr*'s exponent and the two ends' scores per seed (no warm-up, 25 %; NaN: not run), or None
    while markov's scan is open."""
    k = warmup_grid.scan_state(FOLDER, optimizer)[1]
    if k is None:
        return None
    none, warm = ({s: warmup_grid.score(warmup_grid.result_of(FOLDER, warmup_grid.Arm(optimizer, "grid", k, w, s)))
                   for s in SEEDS} for w in warmup_grid.PROGRESS_WARMUPS)
    return k, none, warm


def within_better_end(scores: dict[int, float], none: dict[int, float], warm: dict[int, float]) -> bool | None:
    """Whether the mean of `scores` is at most the better end's mean + that end's seed σ (no allowance
    where that end diverged on a seed); None until every score is in."""
    if any(math.isnan(v) for v in (*scores.values(), *none.values(), *warm.values())) or len(scores) < len(SEEDS):
        return None
    best = min((list(none.values()), list(warm.values())), key=np.mean)
    sigma = float(np.std(best, ddof=1))
    return bool(np.mean(list(scores.values())) <= np.mean(best) + (sigma if math.isfinite(sigma) else 0.0))


def progress_transfer(optimizer: str) -> dict | None:
    """The progress test on markov, judged as registered (module docstring). None while the scan is open;
    a verdict stays None until every arm it reads has finished (a closed loop whose result predates the
    start tests' record is "unread"). `gap_drops` (the drop over the known gap, first − f*) are read
    for exploration only."""
    from smoothprobe.schedule.decision import PROGRESS_TEST, ends_drop

    found = ends(optimizer)
    if found is None:
        return None
    k, none, warm = found
    runs = {s: warmup_grid.result_of(FOLDER, warmup_grid.Arm(optimizer, "closed_progress", k, 0.0, s)) for s in SEEDS}
    calls, drops, gap_drops = {}, {}, {}
    for seed, run in runs.items():
        if run is None:
            continue
        test = next((t for t in run.get("start_tests", []) if t.get("by") == PROGRESS_TEST.name), None)
        if test is None:
            calls[seed] = "unread"
            continue
        drops[seed], first, last = ends_drop(test["trial"]["first"], test["trial"]["last"])
        calls[seed] = "none" if test["branch"] == "no-warmup" else "warm-up"
        f_star = run.get("task_f_star")
        gap_drops[seed] = (first - last) / (first - f_star) if f_star is not None and first > f_star else math.nan
    answer = None
    if not any(math.isnan(v) for v in (*none.values(), *warm.values())):  # +inf (diverged) compares as a loss
        answer = ("warm-up" if all(warm[s] < none[s] for s in SEEDS) else
                  "none" if all(none[s] < warm[s] for s in SEEDS) else "either")
    read = answer is not None and len(calls) == len(SEEDS) and "unread" not in calls.values()
    right = sum(answer == "either" or calls[s] == answer for s in SEEDS) if read else None
    closed = {s: warmup_grid.score(r) for s, r in runs.items()}
    within = within_better_end(closed, none, warm) if read else None
    return {"lr_star": warmup_grid.Arm(optimizer, "grid", k, 0.0, 0).lr, "none": none, "warm": warm,
            "closed": closed, "answer": answer, "calls": calls, "drops": drops, "gap_drops": gap_drops,
            "right": right, "within": within, "transfers": None if within is None else right >= 2 and within}


def loop_transfer(optimizer: str, kind: str) -> dict | None:
    """A closed loop (`kind` in LOOPS) on markov, judged as registered (module docstring): its scores,
    the largest LR each run used and its decision's branch per seed, and whether it is within the
    better end (None until every run it reads has finished; None for the whole while the scan is open)."""
    found = ends(optimizer)
    if found is None:
        return None
    k, none, warm = found
    runs = {s: warmup_grid.result_of(FOLDER, warmup_grid.Arm(optimizer, kind, None if kind == "own_peak" else k, 0.0, s))
            for s in SEEDS}
    scores = {s: warmup_grid.score(r) for s, r in runs.items()}
    better = min((none, warm), key=lambda end: np.mean(list(end.values())))
    return {"scores": scores, "paired": {s: scores[s] - better[s] for s in SEEDS},
            "peak_lr": {s: r["peak_lr"] for s, r in runs.items() if r is not None},
            "branch": {s: (r.get("decision") or {}).get("branch", "none taken") for s, r in runs.items() if r is not None},
            "better": "w0" if better is none else "w25", "within": within_better_end(scores, none, warm)}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    for optimizer in warmup_grid.GUESS:
        found = ends(optimizer)
        if found is None:
            print(f"{optimizer}: markov's LR scan is still open")
            continue
        k, none, warm = found
        print(f"{optimizer} at lr* {warmup_grid.Arm(optimizer, 'grid', k, 0.0, 0).lr:.4g}: "
              + ", ".join(f"s{s} w0 {none[s]:.4f} w25 {warm[s]:.4f}" for s in SEEDS))
        t = progress_transfer(optimizer)
        seeds = ", ".join(f"s{s} closed {t['closed'][s]:.4f} drop {t['drops'].get(s, math.nan):.3f} (of the gap "
                          f"{t['gap_drops'].get(s, math.nan):.3f}) -> {t['calls'].get(s, 'not run')}" for s in SEEDS)
        print(f"  progress test: right answer {t['answer'] or 'open'}; {seeds}; right on {t['right']} seeds, "
              f"within the better end: {t['within']}; transfers: {t['transfers']}")
        for kind in LOOPS:
            t = loop_transfer(optimizer, kind)
            seeds = ", ".join(f"s{s} {t['scores'][s]:.4f} ({t['paired'][s]:+.4f}; max lr "
                              f"{t['peak_lr'].get(s, math.nan):.3g}; {t['branch'].get(s, 'not run')})" for s in SEEDS)
            print(f"  {kind}: {seeds}; vs the better end ({t['better']}) within: {t['within']}")
    for kind in LOOPS:
        verdicts = [(loop_transfer(o, kind) or {}).get("within") for o in warmup_grid.GUESS]
        print(f"{kind} transfers on all four: {None if None in verdicts else all(verdicts)}")


if __name__ == "__main__":
    main()
