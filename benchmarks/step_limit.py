"""Would the step test make a better default than the fits alone, at LRs the scan did not choose?

Registered 2026-12-07 05:08 UTC, before the closed loop at lr*/2 and 2·lr* ran on seeds 20-21 (the
`lrs` stage of warmup_grid.py; only AdamW at 2·lr* on seed 20 had finished).

The fits alone (design 6, the `--pilot` default) miss Muon by about 4 σ: they decide at step 49 at the
earliest, after a slow start that Muon pays for. The step test (`--step-test`) decides before step 0
and says "no warm-up" for Muon on every seed, but also for normalised SGD, which needs a 25 % warm-up.
On the start readings of seeds 30-49 (benchmarks/results/start_tests.json) the median best LR along
the update over the 3 trial steps is, against lr*: Muon 2.9-4.7, Lion 0.54-0.97, normalised SGD
0.44-0.79, AdamW 0.17-0.25. A test at the best step itself (limit 1, not the stability limit 2)
passes Muon only. Both are candidates:

- **limit 2**: the present `--step-test`;
- **limit 1**: no warm-up iff the peak LR is at most the median best LR along the update of the 3
  trial steps, and every trial step curves upward (a curvature ≤ 0 gives no best step: on `markov`
  normalised SGD's trial steps all curved down, and the limit-2 test read that as "any LR").

A run whose test passes is the grid's no-warm-up run at that LR, and one whose test fails is the closed
loop's (both bitwise: the trial steps are undone; checked on the committed `closed_step` results), so
each candidate's score is read from the grid and closed-loop results and the trial readings alone
(`benchmarks/results/step_limit.json`; the trial steps take seconds).

**The rule** (fixed before the runs): a candidate replaces the fits alone as the `--pilot` default iff
for every optimizer and each LR in {lr*/2, lr*, 2·lr*}, its mean over seeds 20-21 is at most the fits
alone's mean there + σ (σ: the optimizer's σ in reports/warmup_grid_heldout.md), and at lr* it is
below the fits alone on Muon. **Predicted:** both fail at lr*/2 on normalised SGD, whose trial steps
read a best LR 1.4× the peak there (seed 20), so the test passes and the run is the no-warm-up run,
about 0.08 behind the 25 % warm-up at that LR.

**A third candidate, the window test** (registered 2026-12-07 05:20 UTC, after the first seed of the
`lrs` stage showed the fits alone stalling on Muon at lr*/2: peak LR 0.38× the given one, 2.048 against
1.695 with no warm-up; and before any run of it). The same reading, but on the pilot's own probed rows
instead of trial steps: at each refit inside the pilot's window where the fit says "not yet", no warm-up
iff the limit-1 test passes on the last 3 probed steps and the optimizer's step per unit LR has settled
(`decision.after_settling`). A step at the peak within the best step along the update, measured where
the run is, needs no further warm-up; inside the window only, since jumps later in a run (from a
practical LR of 0.17× the peak) cost normalised SGD 0.10-0.62 on `markov` (docs/design.md §5). Replayed
on the probed rows of the closed loops kept on this machine, it would pass at step 49 on Muon (lr*/2,
and lr* on seeds 20, 22, 23), Lion at lr*/2 and normalised SGD at lr*/2 (seed 20), and nowhere inside
the window on AdamW, Lion at lr* or 2·lr*, or normalised SGD at lr* and 2·lr*. Its runs are the
`closed_window` arm (`--window-test`); it is judged by the rule above, on seeds 20-21 at the three LRs.
**Predicted:** it passes (Muon decides at step 49 at every LR; elsewhere its runs are the fits alone's or
a jump at 49 where the fits jumped at 59-79).

**Outcome** (2026-12-07; the table: `python benchmarks/step_limit.py`). Limits 2 and 1 fail, as
predicted: at lr*/2 normalised SGD's no-warm-up run (1.972) is 0.049 behind the fits alone (1.923; σ
0.028). The window test passes the rule (Muon at lr*/2 1.716 against 2.023, at lr* 1.632 against 1.662;
nowhere worse by more than σ), but it did not become the default: at lr* on normalised SGD's dev seed 0,
outside the two seeds the rule read, it ended the warm-up at step 59 and lost 0.20 (2.036 against 1.838).
It stays opt-in (docs/design.md §5). Version 1's results are in git at commit f1f7966.

**The window test, version 2** (registered 2026-12-07 08:10 UTC, before any run of it). Version 1 read the
median best step of the last 3 probed steps, at up to 6 refits: one noisy high median ends a warm-up
(normalised SGD, dev seed 0: 1.25× the peak at step 59, where the window's lower quartile read 0.52×).
Version 2 reads the lower quartile of the best step over every probed step of the window so far
(`decision.WINDOW_QUANTILE`): no further warm-up iff a step at the peak is within the best step on three
quarters of them; the rest (the last 3 probed steps curve upward, a settled step size, inside the window)
is version 1's. It was chosen after reading the window's probed rows of seeds 0-2 and 20-23 (median of
the last 3 and of the last 10, median and lower quartile of all): those seeds are not held out for it.
Replayed on the rows kept on this machine, it passes at the same steps as version 1 wherever version 1
did on `lm` seeds 20-23 (step 49: Muon at lr*/2 and lr*, Lion and normalised SGD at lr*/2), and nowhere
inside the window on AdamW (the step size never settles there), Lion at lr*, normalised SGD at lr*, or any
optimizer at 2·lr*; on `markov` at step 79 on Muon (seeds 0 and 2, where version 1 passed at 49), at 49
on normalised SGD, and not on Lion by step 89 (version 1: 89-99). Runs the replay could not settle (rows
after version 1's step are another run's) are rerun: Lion at lr* on seeds 0-2, normalised SGD at lr* on
seed 0, and `markov` Lion seeds 0-1 and Muon seeds 0-2. **The rule** (fixed now): version 2 replaces the
fits alone as the `--pilot` default iff
(a) the rule above holds on seeds 20-21 (the same σ);
(b) on seeds 24-25, which no arm has run, at lr*: for every optimizer, its mean is at most the fits
    alone's + σ, and no run is behind the fits alone's on its seed by more than 2σ;
(c) at lr* on every seed both have run (0-2, 20-25), no run is behind the fits alone's by more than 2σ;
(d) on `markov` seeds 0-2 it is within the better end (benchmarks/second_task.py) on AdamW, Lion and
    Muon, where the fits alone are.
**Predicted:** it passes: (a) with version 1's numbers (the same runs); on Lion's dev seeds it gives back
version 1's gain (the fits alone's +1.8 σ) and on normalised SGD's seed 0 its loss.

**Outcome** (2026-12-07 08:34 UTC). It passes, as predicted, and is the `--pilot` default from now on
(`--no-window-test` gives the fits alone). (a) Version 1's numbers: every run on seeds 20-21 is the same
run. (b) Seeds 24-25: AdamW, Lion and normalised SGD ran exactly the fits alone's runs (no refit of the
window passed); Muon passed at step 49 on both, 0.007 and 0.072 ahead (mean −0.039, σ 0.0098). (c) No run
is behind the fits alone by more than 0.009 (Muon, dev seed 0: +0.0088, under 2σ = 0.0196); where both
took the same decisions the runs differ by up to 0.006 between this session's runs and earlier sessions'
(the same runs on one machine in one session are equal to the last digit). Lion's dev seeds and normalised
SGD's seed 0 are the fits alone's runs again (the replay's prediction held: no refit passed). (d) Within
on AdamW, Lion and Muon on `markov` (Muon passed at step 79 on all three seeds, +0.001 to +0.003 against
the better end; benchmarks/second_task.py). Not part of the rule, and a miss: on `markov` normalised SGD's
window test passes at step 49 on every seed, as version 1's did (0.05, 0.08, 0.21 behind 25 %; the fits
alone 0.03, 0.76, 0.07).
Later seeds (26-29, run after it became the default, outside the check): AdamW, Lion and normalised SGD
ran the fits alone's runs exactly; Muon was 0.016, 0.007, 0.004 and 0.020 ahead.

**The window test, version 3** (registered 2026-12-07 08:53 UTC, before any run of it). Version 2 reads at
the fits' refits, the first at step 49 (50 probed rows), so Muon still runs 49 steps at lr/10 (+1.2 σ held
out; no warm-up at all is 0.012 better). The window test needs no fit: version 3 reads also at every 10th
step from 20 probed rows (steps 19, 29, 39 of a window probing every step; 20 rows is the fewest on which
the step size's settling can be read, 2·SETTLE_ROWS), alone before the fits start and, from step 49, on a
fit's "not yet" as version 2 does. Replayed on every kept run (the rows of steps 0-49 are the practical
start's, the same in every arm), it passes at step 19 exactly where version 2 passed at step 49 on `lm`
(Muon at lr*/2 and lr*, Lion at lr*/2, normalised SGD at lr*/2: there also on seeds 22-23, where a fit drove
from step 49), and at 19-39 nowhere else; on `markov` at 19 on normalised SGD (version 2: 49) and not at
19-39 on Muon (version 2 passes there at 79, so its runs are version 2's). Version 3's results where it
does not pass before step 49 are version 2's (relabelled); the others are rerun. **The rule** (fixed now):
version 3 replaces version 2 as the `--pilot` default iff (a) version 2's rule (a)-(c) holds for it against
the fits alone, with seeds 26-27 (which no arm has run) in the place of 24-25 for (b), and (e) at lr* on
Muon its mean over every seed both ran is below version 2's. **Predicted:** Muon gains (+0.5 to +1 σ
held out: 30 fewer steps at lr/10); normalised SGD at lr*/2 loses against version 2, since it jumps 30 steps
sooner where a warm-up pays, and may fail (a) there (the fits alone's mean + σ is 1.951 on seeds 20-21; no
warm-up at all there is 1.972).

**Outcome** (2026-12-07 09:10 UTC). It fails (a), as it might: at lr*/2 normalised SGD's window test said
"no warm-up" at step 19 on seeds 20-21 and the runs ended at 2.091 and 2.019 (mean 2.055, against 1.951 for
the fits alone + σ; version 2 jumped at step 49 there: 1.907 over seeds 20-23). It is not the default, and
the rest of its check (seeds 26-27, markov) was not run. What it gained on Muon is small: at lr*, version 3
minus version 2 is −0.0047 on average over seeds 0-1 and 20-25 (−0.017 to +0.006 per seed); at lr*/2 it
ran 1.712 and 1.693 on seeds 20-21. Those runs' results are in git at commit 766b6d9, which records this
outcome; the default stays version 2 and its results are restored.

    python benchmarks/step_limit.py   # trial readings for the missing seeds, then the table
"""

from __future__ import annotations

import json
import math
import statistics

import warmup_grid
from warmup_grid import REPO

SEEDS = (20, 21)
FRESH = (24, 25)
"""Seeds no arm had run when the window test's version 2 was registered: its check (b)."""
PAIRED = (0, 1, 2, 20, 21, 22, 23, 24, 25)
"""Every seed at lr* that the window test's check (c) reads where both runs have finished."""
LATER = (26, 27, 28, 29)
"""Seeds run after version 2 became the default (2026-12-07 10:00 UTC): printed beside the check, outside it."""
HELD_OUT = (20, 21, 22, 23)
"""The held-out seeds every grid point ran (reports/warmup_grid_heldout.md): the grid's context beside lr*."""
LRS = (-1, 0, 1)
"""Exponents relative to lr*: lr*/2, lr*, 2·lr*."""
LIMITS = (2.0, 1.0)
RESULTS = REPO / "benchmarks" / "results" / "step_limit.json"
GRID = REPO / "runs" / warmup_grid.folder_name()
SIGMA = {"adamw": 0.0192, "lion": 0.0136, "muon": 0.0098, "normsgd": 0.0283}
"""Each optimizer's σ on the held-out seeds (reports/warmup_grid_heldout.md, 2026-12-07)."""


def trial(optimizer: str, k: int, seed: int) -> dict:
    """The step test's trial steps at peak LR guess·2^k: their rows (lr, slope, curvature)."""
    from smoothprobe.schedule.decision import STEP_TEST_ROWS

    arm = warmup_grid.Arm(optimizer, "closed_step", k, 0.0, seed)
    with warmup_grid.scratch_trainer(arm, why="the step test's trial steps only") as trainer:
        rows = trainer.trial_rows(STEP_TEST_ROWS)
    keep = ("step", "lr", "secant_slope", "secant_curv")
    return {"peak": trainer.config.lr, "rows": [{key: row.get(key) for key in keep} for row in rows]}


def passes(reading: dict, limit: float) -> bool:
    """The candidate's verdict on the trial rows: True for "no warm-up". Limit 2 is `decision.step_test`;
    limit 1 holds the peak to the median best step of the trial rows itself, each of them curving upward
    (a step that curves down has no best step)."""
    from smoothprobe.schedule.decision import STEP_TEST_ROWS, best_step_lr, step_test

    if limit == 2.0:
        return step_test(reading["rows"], reading["peak"]).decided
    median, read = best_step_lr(reading["rows"], STEP_TEST_ROWS)
    upward = all(row["secant_curv"] > 0 for row in reading["rows"][-STEP_TEST_ROWS:])
    return read == STEP_TEST_ROWS and upward and limit * median >= reading["peak"]


def fold(verdict: bool | None, ok: bool, still_open: bool) -> bool | None:
    """A verdict after one more condition: False once any condition failed; else None while one is open."""
    if still_open:
        return None if verdict is not False else False
    return verdict if ok else False


def score(optimizer: str, kind: str, k: int, seed: int, warmup: float = 0.0) -> float:
    """An arm's validation loss (NaN while it has not run)."""
    return warmup_grid.score(warmup_grid.result_of(GRID, warmup_grid.Arm(optimizer, kind, k, warmup, seed)))


def grid_means(optimizer: str, k: int, seeds) -> dict[float, float]:
    """The grid at peak LR guess·2^k: each warm-up's mean over `seeds` (NaN while a run is missing)."""
    return {w: statistics.fmean(score(optimizer, "grid", k, seed, w) for seed in seeds) for w in warmup_grid.GRID_WARMUPS}


def grid_cells(optimizer: str, k: int, seeds: tuple[int, ...]) -> str:
    """The grid at peak LR guess·2^k, as two table cells: its no-warm-up mean over `seeds` and its best
    warm-up's (NaN while a run is missing)."""
    grid = grid_means(optimizer, k, seeds)
    best_w = min(grid, key=grid.get)
    return f"{grid[0.0]:.4f} | {grid[best_w]:.4f} (w{best_w:g})"


def judge() -> tuple[list[str], dict[str, bool | None]]:
    """The table's rows (markdown) and each candidate's verdict (True: replaces the fits alone; None:
    open), taking the trial readings that are missing first."""
    trials = warmup_grid.Readings(RESULTS)
    names = [f"limit {limit:g}" for limit in LIMITS] + ["window"]
    rows, replaces = [], dict.fromkeys(names, True)
    for optimizer in warmup_grid.GUESS:
        star = warmup_grid.scanned_exponent(optimizer)
        for d in LRS:
            k = star + d
            per = {name: [] for name in ["fits", *names]}
            calls = dict.fromkeys(LIMITS, 0)
            for seed in SEEDS:
                reading = trials.get(f"{optimizer}-k{k}-seed{seed}", trial, optimizer, k, seed)
                fits, none = score(optimizer, "closed", k, seed), score(optimizer, "grid", k, seed)
                per["fits"].append(fits)
                for limit in LIMITS:
                    ok = passes(reading, limit)
                    calls[limit] += ok
                    per[f"limit {limit:g}"].append(none if ok else fits)
                per["window"].append(score(optimizer, "closed_window", k, seed))
            mean = {name: statistics.fmean(v) for name, v in per.items()}
            for name in names:
                worse = mean[name] - mean["fits"]
                ok = worse <= SIGMA[optimizer] and not (d == 0 and optimizer == "muon" and not worse < 0)
                replaces[name] = fold(replaces[name], ok, math.isnan(worse))
            said = {f"limit {limit:g}": f" ({calls[limit]}/{len(SEEDS)} none)" for limit in LIMITS}
            rows.append(f"| {optimizer} | lr*·2^{d:+d} | {mean['fits']:.4f} | "
                        + " | ".join(f"{mean[name]:.4f}{said.get(name, '')}" for name in names)
                        + f" | {grid_cells(optimizer, k, SEEDS)} |")
    return rows, replaces


def window_checks(rule_a: bool | None) -> tuple[list[str], bool | None]:
    """Version 2 of the window test against its registered rule (the docstring's (a)-(d); `rule_a`: the
    rule on seeds 20-21, `judge`'s "window"): the table's rows, each run's difference to the fits alone
    on its seed at lr* (the LATER seeds' too, outside the check), and the verdict (None while a run it
    reads is missing)."""
    import second_task

    rows, verdict = [], rule_a
    for optimizer in warmup_grid.GUESS:
        k, sigma = warmup_grid.scanned_exponent(optimizer), SIGMA[optimizer]
        diff = {seed: score(optimizer, "closed_window", k, seed) - score(optimizer, "closed", k, seed)
                for seed in PAIRED + LATER}
        fresh = [diff[seed] for seed in FRESH]
        ok_b = statistics.fmean(fresh) <= sigma and all(d <= 2 * sigma for d in fresh)
        ok_c = all(diff[seed] <= 2 * sigma for seed in PAIRED if not math.isnan(diff[seed]))
        markov = (second_task.loop_transfer(optimizer, "closed_window") or {}).get("within")
        ok_d = markov if optimizer != "normsgd" else True
        for ok, still_open in ((ok_b, any(math.isnan(d) for d in fresh)), (ok_c, False), (ok_d, ok_d is None)):
            verdict = fold(verdict, ok, still_open)
        rows.append(f"| {optimizer} | " + " | ".join(f"{diff[seed]:+.4f}" for seed in PAIRED)
                    + f" | {statistics.fmean(fresh):+.4f} ({sigma:g}) | {markov} | "
                    + " | ".join(f"{diff[seed]:+.4f}" for seed in LATER) + " |")
    return rows, verdict


def beside_lr_star() -> list[str]:
    """Version 2 beside lr* (lr*/2, 2·lr*) on the FRESH seeds, run after it became the default (outside its
    check): per optimizer and LR, its difference to the fits alone on each seed, both means, and the grid's
    no-warm-up and best warm-up at that LR on the held-out seeds 20-23 (other seeds: context, not paired)."""
    rows = []
    for optimizer in warmup_grid.GUESS:
        star = warmup_grid.scanned_exponent(optimizer)
        for d in (-1, 1):
            k = star + d
            window = {seed: score(optimizer, "closed_window", k, seed) for seed in FRESH}
            fits = {seed: score(optimizer, "closed", k, seed) for seed in FRESH}
            rows.append(f"| {optimizer} | lr*·2^{d:+d} | " + " | ".join(f"{window[s] - fits[s]:+.4f}" for s in FRESH)
                        + f" | {statistics.fmean(window.values()):.4f} | {statistics.fmean(fits.values()):.4f} | "
                        f"{grid_cells(optimizer, k, HELD_OUT)} |")
    return rows


def readings(step: int = 49) -> list[str]:
    """What the window test reads at its first refit (`step`), per optimizer and LR: its reading
    (`decision.window_reading`) over the peak, on every seed of 20-29 whose fits alone's run (`closed`, whose rows
    to that step are the practical start's) is kept on this machine, and on how many of them the step
    per unit LR was still falling there (`decision.still_falling`)."""
    from itertools import islice

    from smoothprobe.schedule.decision import step_scale_ratio, still_falling, window_reading

    lines = []
    for optimizer in warmup_grid.GUESS:
        k = warmup_grid.scanned_exponent(optimizer)
        for d in LRS:
            arm = warmup_grid.Arm(optimizer, "closed", k + d, 0.0, 0)
            found, falling = {}, 0
            for folder in sorted((GRID / arm.name).parent.glob("seed-*"), key=lambda p: int(p.name[5:])):
                if int(folder.name[5:]) not in (*HELD_OUT, *FRESH, *LATER) or not (folder / "steps.jsonl").is_file():
                    continue
                with open(folder / "steps.jsonl") as lines_of:
                    rows = [json.loads(line) for line in islice(lines_of, step + 1)]
                quartile, read = window_reading(rows)
                if len(rows) <= step or not read:
                    continue
                found[int(folder.name[5:])] = quartile / arm.lr
                falling += still_falling(step_scale_ratio(rows)[0])
            if found:
                lines.append(f"| {optimizer} | {arm.lr:g} (lr*·{2.0 ** d:g}) | {min(found.values()):.2f}–"
                             f"{max(found.values()):.2f} | {', '.join(map(str, found))} | {falling} |")
    return lines


def main() -> None:
    import torch

    torch.set_num_threads(1)
    rows, replaces = judge()
    names = list(replaces)
    print(f"Seeds {', '.join(map(str, SEEDS))}; NaN: not run yet.\n")
    print("| optimizer | LR | fits alone | " + " | ".join(names) + " | no warm-up | best warm-up at this LR |")
    print("|---|---|---|" + "---|" * len(names) + "---|---|")
    print("\n".join(rows))
    said = {True: "replaces the fits alone", False: "does not replace the fits alone", None: "open (runs missing)"}
    for name, verdict in replaces.items():
        print(f"{name}: {said[verdict]}")
    window, verdict = window_checks(replaces["window"])
    print("\nThe window test (version 2) minus the fits alone at lr*, per seed; NaN: not run yet.\n")
    print("| optimizer | " + " | ".join(f"seed {seed}" for seed in PAIRED)
          + " | mean of seeds " + ", ".join(map(str, FRESH)) + " (σ) | within on markov | "
          + " | ".join(f"later: seed {seed}" for seed in LATER) + " |")
    print("|---|" + "---|" * (len(PAIRED) + 2 + len(LATER)))
    print("\n".join(window))
    print(f"window, version 2, by (a)-(d): {said[verdict]}")
    print(f"\nVersion 2 beside lr* on seeds {', '.join(map(str, FRESH))} (run after it became the default, outside its "
          "check); the grid at that LR on seeds 20-23 for context.\n")
    print("| optimizer | LR | " + " | ".join(f"seed {seed}: window − fits alone" for seed in FRESH)
          + " | window | fits alone | grid, no warm-up | grid, best warm-up |\n|---|---|" + "---|" * (len(FRESH) + 4))
    print("\n".join(beside_lr_star()))
    print("\nThe window test's reading at step 49 (lower quartile of the best LR along the update over the peak; the "
          "fits alone's rows kept on this machine; docs/design.md §5).\n")
    print("| optimizer | LR | quartile / peak | seeds | still settling |\n|---|---|---|---|---|")
    print("\n".join(readings()))


if __name__ == "__main__":
    main()
