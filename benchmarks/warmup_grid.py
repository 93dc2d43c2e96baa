"""Where warm-up matters: an LR scan that finds lr* itself, a peak-LR × warm-up grid around it, and
the adaptive, fit-driven and parameter-free schedules against that grid.

Stages, each run only when the one before it has the results it needs (per optimizer):

1. **scan**: seed 0, warm-up {0, 10 %}, peak LR = guess · 2^k for k = −3 … 3, extended one factor
   of 2 at a time on the side where the best LR sits until the best is interior. lr* is the scan's
   best LR (either warm-up). The guesses are where earlier sessions looked; they only centre the
   scan.
2. **grid**: {lr*/2, lr*, 2·lr*} × linear warm-up (then cosine decay) {0, 2, 5, 10, 25 %} × seeds, plus a 5-step linear
   warm-up at lr* (a schedule that differs from "no warm-up" in five steps only: the spread between
   the two is the noise floor of one score).
3. **adaptive** (at lr*, every seed): the practical schedule (f* = auto), the closed loop (`--pilot
   0.1`: probes and refits decide warm-up / no warm-up / not yet), the closed loop with the step test
   first (`--step-test`: no warm-up when a step at lr* is within the stability limit along the update
   of 3 trial steps at lr/10 that are undone), the closed loop with the progress test first
   (`--progress-test`: no warm-up when 50 steps of the practical start, undone, lower the loss by
   less than 17.5 %; a threshold set on this benchmark's runs), the previous run's fit (`record` one run at lr* on seed
   100, fit it with f* as the pilot takes it: auto, or the losses' lower bound where the estimate
   drifts; then `train --fit` on each seed; a refused fit is a miss), and the closed loop with no LR given (`--own-peak`: the peak is
   the median best step along the update over the pilot's window). Parameter-free baselines, each at
   its documented defaults: Prodigy (lr 1, cosine), D-Adaptation Adam (lr 1, cosine), DoG (lr 1,
   constant), schedule-free AdamW (lr 0.0025, 5 % warm-up), and pytorch_warmup's untuned linear warm-up
   on the cosine at lr*.
4. **stress** (seed 0): 10·lr* with warm-up {0, 10 %}, practical and closed loop: the adaptive arms
   must not diverge where a warm-up converges.

Two more stages, not in the default plan, for a second task (`--task markov --stages scan,progress,loops`;
benchmarks/second_task.py judges them): **progress** (at lr*, every seed): the grid's two ends, warm-up
0 and 25 %, and the closed loop with the progress test: does the test's threshold, set on `lm`, pick
the better end on another task? **loops** (every seed): the closed loop at lr*, the closed loop with
no LR given (`--own-peak`) and the closed loop at lr* given the task's exact f* (`closed_exact`): do they
match the better of those two ends there? A third, **lrs** (every seed; `--stages lrs`): the closed loop at
lr*/2 and 2·lr*, where the grid has run every warm-up: does the default pick a good warm-up at an LR
the scan did not choose? With it runs the closed loop with the window test (`closed_window`) at those LRs,
and **window** (every seed) runs that arm and the fits alone at lr*: benchmarks/step_limit.py judges it against them.

Every arm has the same steps, batch, data and seeds; nothing but the scan's guess is set per
optimizer, and every arm records the largest LR it actually used. The score is the final
validation loss; a diverged run scores as diverged. The reference for every goal is the best point
of the grid {lr*/2, lr*, 2·lr*} × {0, 2, 5, 10, 25 %} (not the 5-step twin), ranked on the seeds
every point has run; σ is that point's seed σ, floored by the mean |w0 − w5-steps| spread, and open
until both are measured. Every verdict reads an arm's difference to the reference on the seeds both
ran (paired: same data, same initialisation); while an optimizer's scan is open, all of its are open.

Full size: tiny LLaMA on `lm`, 1,000 steps of 16×64 tokens, 3 seeds: 2-6 CPU-minutes a run (Muon
up to 15). Arms run `--jobs` at a time (one thread each) in subprocesses; each finished arm leaves
its result (`results_dir`) and is skipped on restart, so every session moves the benchmark forward:
rerun the same command. The results of the default run folders are committed
(benchmarks/results/warmup_grid*/): a new checkout keeps every finished arm, while the run folders
(steps, checkpoints) stay local. `--seeds 4 --seed-offset 20` evaluates held-out seeds (reports/warmup_grid_heldout.*).
On a GPU, `--device cuda` runs the same plan under bf16 autocast into its own folders and report
(runs/warmup_grid_cuda, benchmarks/results/warmup_grid_cuda, reports/warmup_grid_cuda*): bf16 scores are not fp32's, so a folder holds
one device's results and the benchmark refuses to mix them.

    python benchmarks/warmup_grid.py --jobs 2                 # everything, resumable
    python benchmarks/warmup_grid.py --stages scan,grid       # the reference only
    python benchmarks/warmup_grid.py --summary-only           # tables and heatmaps so far
    python benchmarks/warmup_grid.py --quick                  # 200 steps, AdamW and Lion: minutes
    python benchmarks/warmup_grid.py --device cuda --jobs 16  # a GPU: many arms at once
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GUESS = {"adamw": 3e-3, "lion": 1e-3, "muon": 0.02, "normsgd": 0.05}
"""Centre of each optimizer's LR scan (the peak LRs earlier sessions used); not the reference."""
SCAN_K = range(-3, 4)
SCAN_WARMUPS = (0.0, 0.10)
GRID_WARMUPS = (0.0, 0.02, 0.05, 0.10, 0.25)
TWIN = 5.0
"""A 5-step warm-up: 'no warm-up' but for five steps, the pair that measures the noise floor."""
PILOT = 0.1
FIT_SEED = 100
"""Seed of the recorded run whose fit drives the `fitted` arm (never an evaluated seed)."""
PARAM_FREE = ("prodigy", "dadapt", "dog", "schedulefree", "untuned")
TASKS = ("lm", "markov")
"""The task every arm trains on: lm (the published tables) or markov (the second task of the progress test
and the closed loops, its own run folder)."""
PROGRESS_WARMUPS = (0.0, 0.25)
"""The grid's warm-ups the progress stage runs at lr*: the two answers the progress test chooses between, and
the reference of the closed loops on a second task (benchmarks/second_task.py)."""
DEVICES = ("cpu", "cuda")
"""fp32 on the CPU, bf16 autocast on CUDA: one run folder holds one device's results."""
HELD_OUT = 20
"""The first held-out seed: no choice was made on seeds from here on (reports/warmup_grid_heldout.*), with one
exception: the progress test's threshold (`--progress-test`, the closed_progress arm) was read partly off the
first 50 steps of the closed loop on seeds 20 and 21, so for that arm only seeds 22 and up are held out.
Seeds 10–13 were the held-out seeds until design 5, which was chosen partly on seed 13 (and earlier
designs' restart and guard on seeds 10–12): they count as dev seeds now."""
TUNED_ON = {"closed_progress": (20, 21)}
"""Held-out seeds an arm's rule was read from: a held-out evaluation leaves that arm's runs on them out
(its verdicts, its line in the table and the decision count)."""


def evaluated_rows(results: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """The results of the evaluated `seeds`; where they are held out, without the runs of an arm on
    a seed its rule was tuned on (`TUNED_ON`)."""
    rows = results[results.seed.isin(seeds)]
    if min(seeds) < HELD_OUT:
        return rows
    tuned = np.array([seed in TUNED_ON.get(kind, ()) for kind, seed in zip(rows.kind, rows.seed)], dtype=bool)
    return rows[~tuned]


DESIGN = 6
"""Version of the closed loop's decision rule: arms it drives (closed, closed_step, closed_progress, own_peak, fitted)
rerun when it changes (2: Δ' interval against the gap; 3: also "little rise left", and a significant rise over a
narrow gap ratio decides; 4: a K that falls significantly as Δ grows means no warm-up; 5: 3 again, a
falling K is "not yet": as "no warm-up" it cost normSGD 0.13 on seed 13 and won Lion about 0.006; 6: the
fits' trend test discounts autocorrelation, `fit.compare.trend_test`). A larger p-value can only take a
decision away, never give one, so a run whose fits decided nothing, or whose deciding fit still decides
the same at the same step (replayed to that step: until a decision the run is the practical schedule and
the fits only read it), is the same run: those results were relabelled 6 (docs/design.md §5)."""
FIT_RULE = 2
"""Version of the fit the recorded run hands to the `fitted` arms (1: Spearman over independent rows;
2: discounted for autocorrelation); the record reruns when it changes, and its fitted arms with DESIGN."""
GUARD = 2
"""Version of the pilot's guards on a fit's decision (1: the step test at the peak on the last 3 probed
steps, `decision.within_stability`; 2: also held back while the optimizer's step per unit LR is still
falling, `decision.after_settling`); the pilot's arms (CLOSED) rerun when it changes. The second guard
cannot act on a run whose fits decided nothing, nor on one whose step scale had not fallen at its
decision: those version-1 results were relabelled 2 after a rerun of one (Lion's measured peak, seed 0)
gave the same validation loss to the last digit."""
RESTART = 2
"""Version of what a pilot's decision does to the optimizer's state (`Pilot._restart_on_jump`; 1: a
decision that raises the LR at once restarts the momentum, 2: only a momentum whose memory is longer
than the run so far); the pilot's arms (CLOSED) rerun when it changes."""
CADENCE = 2
"""Version of an undecided pilot's probes past its window (1: a 5 % time budget, so the refits' steps
followed the machine's load; 2: every `train.PILOT_EVERY`-th step); the pilot's arms (CLOSED) rerun when
it changes. Arms decided within the window never reach it: their version-1 results were relabelled 2
once a rerun of one (Lion, seed 10) gave the same validation loss to the last digit."""
PILOT_STATE = f"guard {GUARD}, restart {RESTART}, cadence {CADENCE}"
ARM_DESIGN = {"closed": PILOT_STATE, "own_peak": f"peak 4, {PILOT_STATE}", "closed_step": f"stability 5, {PILOT_STATE}",
              "closed_progress": f"progress 1, {PILOT_STATE}", "closed_exact": f"exact f* 2, {PILOT_STATE}",
              "closed_window": f"window 2, {PILOT_STATE}"}
"""Versions of what one kind of arm adds to the decision rule; its arms rerun when either changes.
own_peak: the median best step along the update over the pilot's window (not the fit's η_max).
closed_step: the closed loop with `--step-test`: once, before the first step, on 3 trial steps at the
lr/10 start that are undone, against the stability limit (twice the best step). Version 1 tested the
best step itself at every step of the start; 2 tested once at the first 3 probed steps of the start,
taken (Lion lost about 2.5 σ to those three slow steps); 3 ran the tested steps at the peak, where the
test passes at any LR (the step measures its own LR as the best one); 4 was 2 again.
closed_progress: the closed loop with `--progress-test`: once, before the first step, on 50 steps of the
practical start that are undone, against a relative loss drop of 17.5 % (`decision.progress_test`).
closed_exact: the closed loop with the task's exact f* instead of f* = auto (markov's entropy rate; a task with
none falls back to auto). Version 1 gave it to the schedule only, and the pilot's fits placed their own; 2 gives
it to the fits too (`schedule.online.fit_or_lower_bound`).
closed_window: the closed loop with `--window-test`: at each refit in the window where the fit says "not
yet", no warm-up once a step at the peak is within the best step along the update on a settled step size
(`decision.window_test`; benchmarks/step_limit.py judges it). Version 1 read the median of the last 3
probed steps, 2 the lower quartile over the window's probed steps; a version-1 result whose rows show
version 2 passing at the same refit, or at none where version 1 passed at none, is the same run and
was relabelled 2."""
CLOSED = ("closed", "closed_step", "closed_progress", "own_peak", "closed_exact", "closed_window")
"""The closed-loop arms (a pilot decides in the run)."""
DEFAULT_LOOP = "closed_window"
"""The arm that runs what `train --pilot` does by default: the fits and the window test (since version 2 passed
its registered check, benchmarks/step_limit.py); `closed` is the fits alone (`--no-window-test`)."""
DECIDED_BY_FIT = (*CLOSED, "fitted")
ADAPTIVE = ("practical", *DECIDED_BY_FIT)
"""The arms `AdaptiveWarmup` schedules."""
SCHEDULE = 2
"""Version of `AdaptiveWarmup` the ADAPTIVE arms run (1: a gap below Δ' in the warm-up ran η's falling
side until the crossing was confirmed, so an f* update far past Δ' dropped the LR about 8-fold for
4 steps: AdamW, normSGD; 2: such a gap runs at the peak). They rerun when it changes; arms whose warm-up
never had a gap at or below Δ' (steps.jsonl) cannot differ and were relabelled 2 after a rerun of
one (Lion practical, seed 0) gave the same validation loss to the last digit. Version 2 also covers
the fix of the online f*'s bound on the warm-up, which read Δ' for the previous f* (`OnlineFStar`): a
bound acts only on a run whose warm-up ended at it, and every adaptive warm-up of the committed runs
read so far ended by a crossing, a decision or the cool-down (docs/design.md §5; this session's
held-out runs checked from steps.jsonl: no f* was placed during their warm-ups)."""
AT_LR_STAR = ("fitted", "closed_step", "practical", "closed", "closed_progress")
"""The adaptive arms given lr* as their peak (own_peak takes none), in the order each seed's tier runs them; all
but `fitted` (its fit was recorded at lr*) also run at 10·lr* in the stress tier, with DEFAULT_LOOP."""
HEAD_TO_HEAD = (("grid", 0.0), ("grid", TWIN), *((kind, 0.0) for kind in AT_LR_STAR))
"""The arms at lr* run on a second seed right after the first seed's tier."""


@dataclass(frozen=True)
class Arm:
    """One run of the benchmark: a schedule at peak LR guess·2^k (`lr_factor` × that; k None: no LR
    given) for one seed."""

    optimizer: str
    kind: str  # grid, practical, a CLOSED kind, fitted, record, or one of PARAM_FREE
    k: int | None
    warmup: float
    seed: int
    lr_factor: float = 1.0  # 10 for the stress tier

    @property
    def lr(self) -> float | None:
        return None if self.k is None else GUESS[self.optimizer] * 2.0**self.k * self.lr_factor

    @property
    def name(self) -> str:
        lr = "none" if self.lr is None else f"{self.lr:.4g}"
        extra = f"-w{self.warmup:g}" if self.kind == "grid" else ""
        return f"{self.optimizer}/{self.kind}{extra}-lr{lr}/seed-{self.seed}"


def design_of(kind: str) -> int | str:
    """The design version an arm of this kind is run under (its result's `design`)."""
    if kind == "practical":
        return f"schedule {SCHEDULE}"
    if kind == "record":
        return f"fit {FIT_RULE}"
    if kind not in DECIDED_BY_FIT:
        return DESIGN
    return f"{DESIGN}, schedule {SCHEDULE}" + (f", {ARM_DESIGN[kind]}" if kind in ARM_DESIGN else "")


def current(result: dict) -> bool:
    """A result that still counts: any arm the adaptive schedule does not drive, or one run under
    its kind's present design (the recorded run: under the present fit rule, since the `fitted` arms read its fit)."""
    return result["kind"] not in (*ADAPTIVE, "record") or result.get("design") == design_of(result["kind"])


def results_dir(out: Path) -> Path:
    """Where the arms of run folder `out` keep their results: benchmarks/results/NAME for the
    repository's runs/NAME (committed: the run folders are not, and a new checkout starts without
    them), `out`/results for any other folder."""
    out = out.resolve()
    return REPO / "benchmarks" / "results" / out.name if out.parent == REPO / "runs" else out / "results"


def result_path(out: Path, arm: Arm) -> Path:
    """The arm's result file (val loss, status, peak LR, decision)."""
    return results_dir(out) / f"{arm.name}.json"


def fit_path(out: Path, arm: Arm) -> Path:
    """A recorded run's fit, kept beside its result (the `fitted` arms read it)."""
    return results_dir(out) / f"{arm.name}.fit.json"


def result_files(out: Path) -> list[Path]:
    """Every arm's result file under `out`'s results folder, sorted."""
    return sorted(p for p in results_dir(out).glob("*/*/*.json") if not p.name.endswith(".fit.json"))


class Readings:
    """Readings kept by key in a JSON file, each taken once: the scripts that read a few steps of an arm
    (start tests, trial steps, relative updates) resume where they stopped and print from the file alone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, take: Callable[..., dict | None], *args) -> dict | None:
        """The reading kept under `key`, else `take(*args)`'s, kept at once (a None is not kept: nothing to
        read yet)."""
        if key not in self.found and (reading := take(*args)) is not None:
            self.found[key] = reading
            self.path.write_text(json.dumps(self.found, indent=1) + "\n")
        return self.found.get(key)


def result_of(out: Path, arm: Arm) -> dict | None:
    """The arm's result (val loss, status, peak LR), or None if it has not finished."""
    marker = result_path(out, arm)
    if not marker.exists():
        return None
    result = json.loads(marker.read_text())
    return result if current(result) else None


def score(result: dict | None) -> float:
    """Final val loss; +inf for a diverged or failed run; NaN when not run."""
    if result is None:
        return math.nan
    return result["val_loss"] if result["status"] == "finished" and math.isfinite(result["val_loss"]) else math.inf


def scan_walk(scores_at: Callable[[int], list[float]]) -> tuple[list[int], int | None]:
    """The scan's exponents k so far and lr*'s (None while it is open), from `scores_at(k)` (a score
    per scan warm-up; NaN: not run): SCAN_K, extended one factor of 2 at a time on the side where the
    best sits until the best is interior (or the range spans 2^16: the edge)."""
    ks = list(SCAN_K)
    while True:
        runs = {k: scores_at(k) for k in ks}
        if any(math.isnan(s) for values in runs.values() for s in values):  # min() would skip a NaN
            return ks, None
        scores = {k: min(values) for k, values in runs.items()}
        best = min(ks, key=lambda k: scores[k])
        if best == ks[0]:
            ks.insert(0, ks[0] - 1)
        elif best == ks[-1]:
            ks.append(ks[-1] + 1)
        else:
            return ks, best
        if len(ks) > 16:
            return ks, best


def scan_state(out: Path, opt: str) -> tuple[list[Arm], int | None]:
    """The scan arms planned so far for `opt` (from its run folders) and lr*'s exponent (None while
    the scan is open)."""
    ks, best = scan_walk(lambda k: [score(result_of(out, Arm(opt, "grid", k, w, 0))) for w in SCAN_WARMUPS])
    return [Arm(opt, "grid", k, w, 0) for k in ks for w in SCAN_WARMUPS], best


def folder_name(task: str = "lm", quick: bool = False, device: str = "cpu") -> str:
    """The default run folder's name (under runs/) for a task, size and device."""
    return ("warmup_grid" + ("" if task == "lm" else f"_{task}") + ("_quick" if quick else "")
            + ("_cuda" if device == "cuda" else ""))


def scanned_exponent(opt: str, task: str = "lm") -> int:
    """lr*'s exponent k for `opt` on `task` from the repository's committed scan (lr* = GUESS·2^k), for
    the benchmarks that run at the grid's lr*; exits with a message while that scan is open."""
    k = scan_state(REPO / "runs" / folder_name(task), opt)[1]
    if k is None:
        raise SystemExit(f"the warm-up grid's LR scan of {opt} on {task} is still open: run "
                         f"`python benchmarks/warmup_grid.py --task {task} --stages scan` first")
    return k


def closed_arm(opt: str, kind: str, k: int, seed: int) -> Arm:
    """A closed loop's arm at lr* = guess·2^k (own_peak is given no LR, so its arm has none)."""
    return Arm(opt, kind, None if kind == "own_peak" else k, 0.0, seed)


def plan(out: Path, optimizers: list[str], seeds: list[int], stages: set[str]) -> list[Arm]:
    """Every arm that can be planned from the results so far, in priority order: each optimizer's
    scan, followed as soon as it has found lr* by that optimizer's first seed (adaptive arms, then
    the grid) and a second seed's head-to-head; then the stress tier (10·lr*, first seed); then the
    other seeds."""
    def tier(opt: str, k: int, seed: int) -> list[Arm]:
        arms = []
        if "adaptive" in stages:
            arms += [Arm(opt, kind, k, 0.0, seed) for kind in AT_LR_STAR]
            arms.append(closed_arm(opt, "own_peak", k, seed))
            if opt == "adamw":
                arms += [Arm(opt, kind, None if kind != "untuned" else k, 0.0, seed) for kind in PARAM_FREE]
        if "progress" in stages:
            arms += [Arm(opt, "grid", k, w, seed) for w in PROGRESS_WARMUPS] + [Arm(opt, "closed_progress", k, 0.0, seed)]
        if "loops" in stages:
            arms += [closed_arm(opt, kind, k, seed) for kind in ("closed", "own_peak", "closed_exact")]
        if "window" in stages:  # with the fits alone it would replace, paired
            arms += [Arm(opt, kind, k, 0.0, seed) for kind in ("closed", "closed_window")]
        if "lrs" in stages:
            arms += [Arm(opt, kind, k + d, 0.0, seed) for kind in ("closed", "closed_window") for d in (-1, 1)]
        if "grid" in stages:  # the twin first: every σ verdict needs its noise floor
            arms.append(Arm(opt, "grid", k, TWIN, seed))
            arms += [Arm(opt, "grid", k + d, w, seed) for d in (0, -1, 1) for w in GRID_WARMUPS]
        return arms

    order: list[Arm] = []
    stars = {}
    for opt in optimizers:
        arms, stars[opt] = scan_state(out, opt)
        order += arms
        if stars[opt] is not None:
            order += tier(opt, stars[opt], seeds[0])
            # a second seed of the head-to-head at lr* early: one seed's gaps are not evidence
            order += [Arm(opt, kind, stars[opt], w, seed) for seed in seeds[1:2] for kind, w in HEAD_TO_HEAD
                      if kind == "grid" and "grid" in stages or kind != "grid" and "adaptive" in stages]
    found = [opt for opt in optimizers if stars[opt] is not None]
    if "stress" in stages:  # one seed at 10·lr* before the other seeds: the goal "never diverges" needs it
        for opt in found:
            order += [Arm(opt, "grid", stars[opt], w, seeds[0], 10.0) for w in SCAN_WARMUPS]
            order += [Arm(opt, kind, stars[opt], 0.0, seeds[0], 10.0)
                      for kind in (*AT_LR_STAR, DEFAULT_LOOP) if kind != "fitted"]
    for seed in seeds[1:]:
        for opt in found:
            order += tier(opt, stars[opt], seed)
    return list(dict.fromkeys(order))


def running_elsewhere(out: Path, arm: Arm) -> bool:
    """Another process (say, a child of an earlier launcher) holds the arm's run directory's lock now."""
    path = out / arm.name
    if not path.is_dir():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def needs(arm: Arm) -> Arm | None:
    """The arm whose output this one reads (the `fitted` arm reads the recorded run's fit)."""
    if arm.kind == "fitted":
        return Arm(arm.optimizer, "record", arm.k, 0.0, FIT_SEED)
    return None


def base_config(quick: bool, device: str, task: str = "lm"):
    from smoothprobe.train import TrainConfig

    if quick:
        return TrainConfig(task=task, model="tiny", steps=200, batch_size=16, seq_len=64, eval_every=50,
                           checkpoint_every=10**6, device=device)
    return TrainConfig(task=task, model="tiny", steps=1000, batch_size=16, seq_len=64, eval_every=100,
                       checkpoint_every=250, device=device)


def config_of(arm: Arm, base, out: Path):
    """The TrainConfig of an arm (the parameter-free arms are finished in `run_arm`)."""
    lr = arm.lr if arm.lr is not None else GUESS[arm.optimizer]
    cfg = dataclasses.replace(base, optimizer=arm.optimizer, lr=lr, seed=arm.seed,
                              warmup=arm.warmup if arm.kind in ("grid", "record") else 0.0)
    if arm.kind == "grid" and arm.warmup == TWIN:
        return cfg
    if arm.kind == "record":
        return dataclasses.replace(cfg, warmup=0.10, probes={"preset": "standard", "every": 5})
    if arm.kind == "practical":
        return dataclasses.replace(cfg, adaptive={"f_star": "auto"})
    if arm.kind in CLOSED:
        return dataclasses.replace(cfg, lr=None if arm.kind == "own_peak" else lr,
                                   adaptive={"pilot": PILOT, "f_star": None if arm.kind == "closed_exact" else "auto",
                                             "own_peak": arm.kind == "own_peak",
                                             "step_test": arm.kind == "closed_step",
                                             "window_test": {"closed_window": True, "own_peak": None}.get(arm.kind, False),
                                             "progress_test": arm.kind == "closed_progress"})
    if arm.kind == "fitted":
        return dataclasses.replace(cfg, adaptive={"fit": str(fit_path(out, needs(arm)))})
    return cfg


@contextlib.contextmanager
def scratch_trainer(arm: Arm, task: str = "lm", why: str = "a reading of its first steps only"):
    """The arm's trainer (full size, CPU) in a temporary run folder, for readings that take a few steps of
    it (the start tests' trial steps): yields it, closes its run as interrupted for `why`, and removes it."""
    from smoothprobe.train import build

    with tempfile.TemporaryDirectory() as out:
        trainer = build(config_of(arm, base_config(False, "cpu", task), Path(out)), Path(out) / "run")
        try:
            yield trainer
        finally:
            trainer.writer.close("interrupted", why)


class _Constant:
    """No schedule on top of an optimizer that schedules itself."""

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Dampened:
    """A baseline scheduler times pytorch_warmup's warm-up factor (its documented usage)."""

    def __init__(self, scheduler, warmup) -> None:
        self.scheduler, self.warmup = scheduler, warmup

    def step(self) -> None:
        with self.warmup.dampening():
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "warmup": self.warmup.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.warmup.load_state_dict(state["warmup"])


def param_free(arm: Arm, trainer) -> None:
    """Swap in a parameter-free optimizer at its documented defaults (or pytorch_warmup's warm-up)."""
    from smoothprobe.schedule.baseline import WarmupDecay

    cfg, params = trainer.config, trainer.model.parameters()
    if arm.kind == "untuned":
        import pytorch_warmup

        trainer.scheduler = Dampened(trainer.scheduler, pytorch_warmup.UntunedLinearWarmup(trainer.optimizer))
        return
    if arm.kind == "schedulefree":
        import schedulefree

        opt = schedulefree.AdamWScheduleFree(params, lr=0.0025, warmup_steps=round(0.05 * cfg.steps))
        opt.train()
        evaluate = trainer.evaluate

        def evaluate_at_average() -> float:
            opt.eval()
            try:
                return evaluate()
            finally:
                opt.train()

        trainer.evaluate = evaluate_at_average
        trainer.optimizer, trainer.scheduler = opt, _Constant()
        return
    if arm.kind == "prodigy":
        import prodigyopt

        opt = prodigyopt.Prodigy(params, lr=1.0)
    elif arm.kind == "dadapt":
        import dadaptation

        opt = dadaptation.DAdaptAdam(params, lr=1.0)
    else:
        import dog

        opt = dog.DoG(params)
    trainer.optimizer = opt
    trainer.scheduler = LargestStep(_Constant() if arm.kind == "dog" else
                                    WarmupDecay(opt, cfg.steps, 0, decay="cosine", floor=cfg.min_lr_ratio), opt)


def effective_lr(optimizer) -> float | None:
    """The step size a parameter-free optimizer takes now: d·lr for Prodigy/D-Adaptation (d grows,
    the schedule's lr falls), DoG's η (largest over its groups); None for any other optimizer."""
    sizes = []
    for group in optimizer.param_groups:
        if "d" in group:
            sizes.append(float(group["d"]) * float(group["lr"]))
        elif "eta" in group:
            eta = group["eta"]
            sizes += [float(e) for e in (eta if isinstance(eta, (list, tuple)) else [eta])]
    return max(sizes) if sizes else None


class LargestStep:
    """A parameter-free optimizer's schedule that also keeps the largest step size the optimizer took
    (`largest`): the arm's max LR, as every other arm reports it. It reads `effective_lr` before the
    first step and after every schedule step, when the group holds the d (or η) and the lr of the step
    to come: Prodigy and D-Adaptation step with the d they held and store the next one."""

    def __init__(self, scheduler, optimizer) -> None:
        self.scheduler, self.optimizer, self.largest = scheduler, optimizer, None
        self._read()

    def _read(self) -> None:
        now = effective_lr(self.optimizer)
        if now is not None and math.isfinite(now):
            self.largest = now if self.largest is None else max(self.largest, now)

    def step(self) -> None:
        self.scheduler.step()
        self._read()

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "largest": self.largest}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.largest = state["largest"]


def run_arm(arm: Arm, out: Path, quick: bool, device: str, task: str = "lm") -> None:
    """Train one arm into its folder and write its result (a diverged run is a result)."""
    import torch

    from smoothprobe.errors import SmoothprobeError
    from smoothprobe.schedule.decision import PROGRESS_TEST, STEP_TEST
    from smoothprobe.schedule.online import fit_or_lower_bound
    from smoothprobe.store import load_run, replace_atomically
    from smoothprobe.train import build

    torch.set_num_threads(1)
    path = out / arm.name
    target, fit = result_path(out, arm), fit_path(out, arm)
    target.parent.mkdir(parents=True, exist_ok=True)  # the fit's folder too
    t0 = time.time()
    error, used = None, None
    try:  # takes the run directory's lock: a second launcher's copy of this arm stops here
        trainer = build(config_of(arm, base_config(quick, device, task), out), path, overwrite=True)
    except SmoothprobeError as exc:
        # a miss: the recorded run's fit refused by `train --fit`, or at the record (it wrote no fit file);
        # anything else (a lock, a config) is no result, and the arm runs again
        if arm.kind != "fitted" or not (str(exc).startswith("fit:") or not fit_path(out, needs(arm)).exists()):
            raise
        error = str(exc)
        trainer = None
    if trainer is not None and result_of(out, arm) is not None:
        return  # another launcher's copy finished it; the lock goes with this process
    target.unlink(missing_ok=True)  # an earlier design's result; only now that the lock is ours
    fit.unlink(missing_ok=True)  # a recorded run's earlier fit: the `fitted` arms must not read it
    if trainer is not None:
        if arm.kind in PARAM_FREE:
            param_free(arm, trainer)
        try:
            trainer.run(progress=False)
        except SmoothprobeError as exc:
            error = str(exc)
        used = getattr(trainer.scheduler, "largest", None)  # a parameter-free optimizer's own step size
    result = {**dataclasses.asdict(arm), "design": design_of(arm.kind), "lr": arm.lr, "name": arm.name, "status": "refused",
              "device": device, "task": task, "val_loss": math.nan,
              "peak_lr": math.nan, "seconds": time.time() - t0, "error": error, "decision": None}
    if trainer is not None:
        run = load_run(path)
        status = run.info.get("status")
        val = float(run.evals.val_loss.iloc[-1]) if status == "finished" and len(run.evals) else math.nan
        peak = float(run.steps.lr.max()) if len(run.steps) else math.nan
        if status not in ("finished", "diverged"):  # crashed or interrupted: no result, so the arm runs again
            raise SystemExit(f"{arm.name} ended {status} ({error}): not a result; it runs again")
        history = (run.info.get("pilot") or {}).get("history", [])
        result.update(status=status, val_loss=val, peak_lr=used if used is not None else peak,
                      decision=run.info.get("decision"), task_f_star=run.info["task"].get("f_star"),
                      start_tests=[shown(d) for d in history if d.get("by") in (STEP_TEST.name, PROGRESS_TEST.name)])
        if arm.kind == "record" and status == "finished":
            try:  # f* as the closed loop's pilot takes it: auto, or the losses' lower bound where it drifts
                replace_atomically(fit, fit_or_lower_bound(run.steps, 200).to_json)
            except SmoothprobeError as exc:  # the `fitted` arms then report the miss
                result["error"] = f"fit: {exc}"
    # whole or absent: other processes read results at any time
    replace_atomically(target, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))


def execute(out: Path, optimizers: list[str], seeds: list[int], stages: set[str], jobs: int, quick: bool,
            device: str, budget_s: float | None, task: str = "lm") -> None:
    """Run the plan `jobs` arms at a time in subprocesses, re-planning as results arrive, until done
    or the time budget is spent (then running arms finish; the rest wait for the next session)."""
    start, running, failures = time.time(), {}, {}
    while True:
        arms = plan(out, optimizers, seeds, stages)
        pending = [a for a in arms if result_of(out, a) is None]
        # an arm that reads another's output (the fitted arm, the recorded run) waits for it in its
        # place: the recorded run is started there, not after the whole plan
        ready = list(dict.fromkeys(a if needs(a) is None or result_of(out, needs(a)) is not None else needs(a)
                                   for a in pending))
        mine = {a.name for a in running.values()}
        elsewhere = {a.name for a in ready if a.name not in mine and running_elsewhere(out, a)}
        busy = mine | elsewhere
        todo = [a for a in ready if a.name not in busy and failures.get(a.name, 0) < 2]
        late = budget_s is not None and time.time() - start > budget_s
        while todo and len(running) + len(elsewhere) < jobs and not late:
            arm = todo.pop(0)
            cmd = [sys.executable, __file__, "--run-arm", json.dumps(dataclasses.asdict(arm)), "--out", str(out),
                   "--device", device, "--task", task]
            cmd += ["--quick"] if quick else []
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            logfile = out / "_logs" / f"{arm.name.replace('/', '__')}.log"
            logfile.parent.mkdir(parents=True, exist_ok=True)
            log = open(logfile, "w")  # noqa: SIM115 - the child process owns it
            running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)] = arm
            print(f"start {arm.name} (lr {arm.lr})", flush=True)
        if not running and not elsewhere:
            done = sum(result_of(out, a) is not None for a in arms)
            print(f"{done} of {len(arms)} planned arms done" + ("; time budget spent" if late else ""), flush=True)
            return
        time.sleep(2)
        for proc, arm in list(running.items()):
            if proc.poll() is None:
                continue
            del running[proc]
            result = result_of(out, arm)
            if result is None:
                failures[arm.name] = failures.get(arm.name, 0) + 1
                print(f"FAILED {arm.name} (exit {proc.returncode}; see {out / '_logs'})", flush=True)
            else:
                print(f"done {arm.name}: {result['status']} val {result['val_loss']:.4f} peak lr "
                      f"{result['peak_lr']:.3g} ({result['seconds']:.0f} s)", flush=True)


RECORDED = {"device": "cpu", "task": "lm"}
"""What a result records that one run folder must not mix (bf16 and fp32 scores, two tasks' losses),
and what a result that names none ran with."""


def recorded(out: Path, key: str) -> set[str]:
    """The values of `key` (a key of RECORDED) the results in `out` ran with."""
    return {json.loads(p.read_text()).get(key, RECORDED[key]) for p in result_files(out)}


def collect(out: Path) -> pd.DataFrame:
    """One row per finished arm (every result of `out`) of the present design."""
    rows = [json.loads(p.read_text()) for p in result_files(out)]
    rows = [r for r in rows if current(r)]
    frame = pd.DataFrame.from_records(rows)
    if frame.empty:
        return frame
    frame["score"] = [score(r) for r in rows]
    return frame


def lr_star(results: pd.DataFrame, opt: str) -> float | None:
    """The scan's best peak LR for `opt` from the results table (None while its scan is open)."""
    part = results[(results.optimizer == opt) & (results.kind == "grid") & (results.seed == 0)
                   & results.warmup.isin(SCAN_WARMUPS) & (results.lr_factor == 1.0)]

    def scores_at(k: int) -> list[float]:
        at = part[part.k == k]
        return [float(at[at.warmup == w].score.min()) if (at.warmup == w).any() else math.nan for w in SCAN_WARMUPS]

    k = scan_walk(scores_at)[1]
    return None if k is None else float(GUESS[opt] * 2.0**k)


def summarise(results: pd.DataFrame, seeds: list[int]) -> tuple[pd.DataFrame, dict]:
    """Per optimizer, arm and LR: mean/σ over the evaluated seeds; and per optimizer the reference:
    the best point of the 2-D grid {lr*/2, lr*, 2·lr*} × GRID_WARMUPS (not the twin, a noise probe),
    ranked by its mean over the seeds every point has run (`shared`), so that a point is never chosen
    for a lucky seed the others lack; its σ (the seed σ floored by the w0/5-step spread, NaN until
    both are measured), its score on each seed, the grid median over the shared seeds, and the median
    seed σ over the grid's points (a best point whose own σ is far below it has two seeds that agree
    by chance, and its verdicts are stricter than the noise)."""
    res = evaluated_rows(results, seeds)
    res = res[res.kind != "record"].copy()
    res["label"] = [k + (f" w{w:g}" if k == "grid" else "") for k, w in zip(res.kind, res.warmup)]
    res["lr_x"] = pd.to_numeric(res.lr)
    table = res.groupby(["optimizer", "label", "lr_x", "lr_factor"], sort=False, dropna=False).agg(
        val_mean=("score", "mean"), val_std=("score", "std"), seeds=("score", "size"),
        diverged=("status", lambda s: int(((s != "finished") & (s != "refused")).sum())),
        refused=("status", lambda s: int((s == "refused").sum())), peak_lr=("peak_lr", "max")).reset_index()
    refs = {}
    for opt in dict.fromkeys(res.optimizer):
        mine = res[(res.optimizer == opt) & (res.lr_factor == 1.0)]
        grid = mine[(mine.kind == "grid") & mine.warmup.isin(GRID_WARMUPS)]
        star = lr_star(results, opt)
        if star is not None:  # the 2-D grid: lr*/2, lr*, 2·lr* (the scan's other LRs have one seed)
            grid = grid[np.isclose(grid.lr_x / star, 0.5) | np.isclose(grid.lr_x / star, 1.0)
                        | np.isclose(grid.lr_x / star, 2.0)]
        if grid.empty:
            refs[opt] = {"lr_star": star, "best_label": None}  # the reference is open: no grid point yet
            continue
        by_point = grid.pivot_table(index=["label", "lr_x"], columns="seed", values="score", aggfunc="first")
        shared = [seed for seed in by_point.columns if by_point[seed].notna().all()]
        points = 3 * len(GRID_WARMUPS)
        if not shared or (star is not None and len(by_point) < points):  # points ranked on seeds of their own
            refs[opt] = {"lr_star": star, "best_label": None,  # would pick a lucky one
                         "open": f"{len(by_point)} of {points} grid points ran, on {len(shared)} seed(s) all share"}
            continue
        means = by_point[shared].mean(axis=1)
        label, lr = means.idxmin()
        at_best = by_point.loc[(label, lr)].dropna()
        twins = mine[(mine.kind == "grid") & mine.warmup.isin((0.0, TWIN))]
        pairs = twins.pivot_table(index=["seed", "k"], columns="warmup", values="score").dropna()
        both = {0.0, TWIN} <= set(pairs.columns) and len(pairs)
        floor = float((pairs[0.0] - pairs[TWIN]).abs().mean()) if both else math.nan
        seed_sigma = float(at_best.std()) if len(at_best) > 1 else math.nan
        spread = by_point.std(axis=1).dropna()  # every point's seed σ: is the best point's typical?
        sigma = max(seed_sigma, floor) if math.isfinite(seed_sigma) and math.isfinite(floor) else math.nan
        refs[opt] = {"best": float(means.min()), "best_label": label, "best_lr": float(lr),
                     "best_seeds": len(at_best), "shared": [int(seed) for seed in shared],
                     "seed_sigma": seed_sigma, "twin_floor": floor, "sigma": sigma,
                     "grid_seed_sigma": float(spread.median()) if len(spread) else math.nan,
                     "grid_seed_points": len(spread),
                     "median": float(means.median()), "median_points": len(means), "lr_star": star,
                     "per_seed": {int(seed): float(v) for seed, v in at_best.items()}}
    return table, refs


def _verdict(diff: float, sigma: float, within: float = 1.0) -> str:
    """met / MISSED for a difference `diff` to the reference within `within`·σ; open while σ is not measured."""
    if math.isnan(diff):
        return "open"
    if diff == math.inf:
        return "MISSED (diverged)"
    if diff == -math.inf:
        return "met (the other diverged)"
    if not (math.isfinite(sigma) and sigma > 0):
        return f"open (σ not measured yet; difference {diff:+.4f})"
    return f"{'met' if diff <= within * sigma else 'MISSED'} ({diff / sigma:+.1f} σ)"


def shown(decision: dict) -> dict:
    """A run's decision as the report prints it: a progress test's trial rows as their count and the
    losses at each end (the rows themselves stay in the result and in run.json)."""
    from smoothprobe.schedule.decision import PROGRESS_TEST, progress_trial

    trial = decision.get("trial")
    if decision.get("by") != PROGRESS_TEST.name or not isinstance(trial, list):
        return decision
    return {**decision, "trial": progress_trial(trial)}


def decided(results: pd.DataFrame, stars: dict[str, float | None],
            kinds: tuple[str, ...] = CLOSED) -> tuple[int, dict[str, int], int]:
    """Closed-loop runs (of `kinds`) that decided (any branch but 'not yet'; a warm-up that ends first is
    recorded as 'not yet' by the pilot): how many, how many each decider took ('fit', 'step test',
    'progress test', 'window test'), and how many such runs there are, at each optimizer's lr* (`stars`;
    every LR while its scan is open) or with no LR given."""
    closed = results[results.kind.isin(kinds) & (results.lr_factor == 1.0)]  # the 10·lr* tier on its own
    closed = closed[np.array([pd.isna(lr) or stars.get(opt) is None or np.isclose(float(lr), stars[opt])
                              for opt, lr in zip(closed.optimizer, closed.lr)], dtype=bool)]  # the lrs tier on its own
    hits = [d for d in closed.decision if isinstance(d, dict) and d.get("branch") in ("no-warmup", "fit-driven")]
    by = Counter(d.get("by") or "fit" for d in hits)
    return len(hits), dict(by), len(closed)


def decision_count(results: pd.DataFrame, stars: dict[str, float | None]) -> str:
    """The decisions of every closed loop and of the default one, in words (the report's headline)."""
    hits, by, total = decided(results, stars)
    mine, mine_by, runs = decided(results, stars, (DEFAULT_LOOP,))
    def share(n: int, of: int, who: dict[str, int]) -> str:
        return f" ({100 * n / of:.0f} %: {deciders(who) or 'none'})" if of else ""

    return (f"in {hits} of {total} closed-loop runs{share(hits, total, by)}; the default loop ({DEFAULT_LOOP}) in "
            f"{mine} of {runs}{share(mine, runs, mine_by)}")


def deciders(by: dict[str, int]) -> str:
    """Who took a count of decisions, in words: "the fits' in 8, the step test's in 6, …"."""
    return ", ".join(("the fits'" if who == "fit" else f"the {who}'s") + f" in {n}" for who, n in sorted(by.items()))


def scores_of(results: pd.DataFrame, opt: str, kind: str, lr: float) -> dict[int, float]:
    """`kind`'s score per seed at peak LR `lr` (NaN: its own LR, the parameter-free arms), at lr*."""
    arm = results[(results.optimizer == opt) & (results.kind == kind) & (results.lr_factor == 1.0)
                  & (np.isclose(pd.to_numeric(results.lr), lr) | (math.isnan(lr) & results.lr.isna()))]
    return {int(seed): float(score) for seed, score in zip(arm.seed, arm.score)}


def paired(mine: dict[int, float], other: dict[int, float]) -> tuple[float, str]:
    """The mean over the seeds both ran of `mine` − `other` (per-seed scores: same data, same init),
    and the per-seed differences in words: what the means hide when one schedule is ahead on every
    seed by less than the seed σ, and the only fair difference where the two ran different seeds.
    inf where `mine` diverged on a seed `other` finished; NaN where they share no finished seed."""
    both = sorted(seed for seed in mine if seed in other)
    if not both:
        return math.nan, "paired: no seed in common"
    diffs = {seed: mine[seed] - other[seed] for seed in both if math.isfinite(mine[seed]) or math.isfinite(other[seed])}
    words = {math.inf: "this arm diverged", -math.inf: "the other diverged"}
    each = ", ".join(f"s{seed} {words.get(diffs[seed], f'{diffs[seed]:+.4f}')}" if seed in diffs
                     else f"s{seed} both diverged" for seed in both)
    lost, won = math.inf in diffs.values(), -math.inf in diffs.values()
    mean = (math.nan if not diffs or (lost and won) else math.inf if lost else -math.inf if won
            else float(np.mean(list(diffs.values()))))
    return mean, f"paired {'undecided' if math.isnan(mean) else f'{mean:+.4f}'} ({each})"


def goals(table: pd.DataFrame, refs: dict, results: pd.DataFrame) -> list[str]:
    """The issue's goals per optimizer: met, MISSED (by how much, in σ) or open; `results` are the
    evaluated seeds' (the decisions counted are theirs). Every verdict reads the paired difference
    to the reference on the seeds both ran; all are open while the optimizer's scan is."""
    lines = []
    lines.append("- A decision (no warm-up or fit-driven, not 'not yet') "
                 + decision_count(results, {opt: ref["lr_star"] for opt, ref in refs.items()})
                 + "; the goal is ≥ 80 % of closed-loop runs")
    for opt, ref in refs.items():
        part = table[table.optimizer == opt]
        star = ref["lr_star"]
        if ref["best_label"] is None:
            lines.append(f"- **{opt}**: reference open ({ref.get('open', 'no grid point on these seeds yet')}), "
                         "every verdict open")
            continue
        sigma = ref["sigma"]
        lines.append((f"- **{opt}**: lr* = {star:.4g}" if star else f"- **{opt}**: scan open, every verdict open") + (
            f"; reference = {ref['best_label']} at lr {ref['best_lr']:.4g}: {ref['best']:.4f} (mean over seeds "
            f"{ref['shared']}, which every grid point ran; {ref['best_seeds']} seed(s) in all), σ = {sigma:.4f} "
            f"(seed σ {ref['seed_sigma']:.4f}, twin floor {ref['twin_floor']:.4f}; the grid's points have a median "
            f"seed σ of {ref['grid_seed_sigma']:.4f} over {ref['grid_seed_points']} point(s) with 2 seeds or more); "
            f"grid median {ref['median']:.4f} over {ref['median_points']} point(s)"))
        # at lr* (or no LR given); while the scan is open, every LR an arm ran, each on its own line
        at = part[(part.lr_factor == 1.0) & (part.lr_x.isna() | (np.isclose(part.lr_x, star) if star else True))]
        for label, within in (("closed", 1.0), ("closed_step", 1.0), ("closed_progress", 1.0), ("closed_window", 1.0),
                              ("fitted", 1.0), ("own_peak", 2.0), ("practical", 1.0)):
            if not (at.label == label).any():
                lines.append(f"  - {label}: open (not run on these seeds yet)")
            for r in at[at.label == label].itertuples():
                if r.refused:
                    lines.append(f"  - {label}: {'MISSED' if star else 'open (scan open)'} (refused on {r.refused} "
                                 f"of {r.seeds} seed(s): the schedule would not run, see the decisions below)")
                    continue
                mine = scores_of(results, opt, label, r.lr_x)
                diff, said = paired(mine, ref["per_seed"])
                shared = [mine[seed] for seed in ref["shared"] if seed in mine]
                below = ("open" if not ref["shared"] or len(shared) < len(ref["shared"]) else
                         "yes" if np.mean(shared) < ref["median"] else "NO")
                verdict = _verdict(diff, sigma, within) if star else "open (scan open)"
                both = sorted(seed for seed in mine if seed in ref["per_seed"])
                over = (f"{np.mean([mine[seed] for seed in both]):.4f} over seeds {both} against the reference's "
                        f"{np.mean([ref['per_seed'][seed] for seed in both]):.4f}" if both else "no seed in common")
                lines.append(f"  - {label}: {over} ({r.seeds} seed(s) in all, mean {r.val_mean:.4f}; max lr "
                             f"{r.peak_lr:.3g}) vs reference within {within:g} σ: {verdict}; {said}; below the grid "
                             f"median: {below}")
        rows = {label: r for label, r in zip(at.label, at.itertuples())}
        for loop in (DEFAULT_LOOP, "closed"):
            if star and loop in rows and "practical" in rows:
                diff, said = paired(scores_of(results, opt, loop, rows[loop].lr_x),
                                    scores_of(results, opt, "practical", rows["practical"].lr_x))
                lines.append(f"  - closed loop ({loop}) within 1 σ of practical or better: {_verdict(diff, sigma)}; "
                             f"{said}")
        for other in PARAM_FREE:
            if star and other in rows and "own_peak" in rows:
                diff, said = paired(scores_of(results, opt, "own_peak", math.nan),
                                    scores_of(results, opt, other, rows[other].lr_x))
                lines.append(f"  - own-peak vs {other} ({rows[other].val_mean:.4f}, max lr {rows[other].peak_lr:.3g}): "
                             f"{said} ({'ahead' if diff < 0 else 'behind' if diff >= 0 else 'open'})")
        lines += off_lr_lines(results, opt, star, sigma)
        stress = part[part.lr_factor == 10.0]
        if not stress.empty:
            converged_grid = stress[stress.label.str.startswith("grid") & (stress.diverged == 0)]
            best = None if converged_grid.empty else converged_grid.loc[converged_grid.val_mean.idxmin()]
            against = "" if best is None else f" (the grid's best there: {best.label} {best.val_mean:.4f})"
            for r in stress[~stress.label.str.startswith("grid")].itertuples():
                bad = r.diverged and best is not None
                lines.append(f"  - 10·lr*: {r.label} {r.val_mean:.4f}{against}"
                             + (" DIVERGED where a warm-up converged" if bad else ""))
    return lines


def off_lr_lines(results: pd.DataFrame, opt: str, star: float | None, sigma: float) -> list[str]:
    """The lrs tier: each closed loop (the `--pilot` default and the fits alone) at lr*/2 and 2·lr* against
    the best grid warm-up at the same LR (ranked on the seeds that loop ran) and against no warm-up there,
    paired (benchmarks/step_limit.py judges the two against each other)."""
    lines = []
    if not star:
        return lines
    for loop, lr in itertools.product((DEFAULT_LOOP, "closed"), (star / 2, 2 * star)):
        mine = scores_of(results, opt, loop, lr)
        if not mine:
            continue
        grid = {w: scores_of(results[results.warmup == w], opt, "grid", lr) for w in GRID_WARMUPS}
        ranked = {w: np.mean([v[seed] for seed in mine]) for w, v in grid.items() if set(mine) <= set(v)}
        if not ranked:
            lines.append(f"  - {loop} at {lr:.4g} (lr*·{lr / star:g}): open (the grid has not run its seeds)")
            continue
        best = min(ranked, key=ranked.get)
        diff, said = paired(mine, grid[best])
        lines.append(f"  - {loop} at {lr:.4g} (lr*·{lr / star:g}): {np.mean(list(mine.values())):.4f} over seeds "
                     f"{sorted(mine)}; vs this LR's best warm-up (w{best:g}, {ranked[best]:.4f}) within 1 σ: "
                     f"{_verdict(diff, sigma)}; {said}; no warm-up here: {ranked.get(0.0, math.nan):.4f}")
    return lines


def markdown(table: pd.DataFrame) -> list[str]:
    """A pipe table of `table` (numbers to 4 significant digits)."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    return ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
            *("| " + " | ".join(row) + " |" for row in cells)]


def write_outputs(table: pd.DataFrame, refs: dict, results: pd.DataFrame, name: str, seeds: list[int]) -> list[str]:
    """reports/<name>.md (goals, LR scan, table, decisions), reports/<name>_<optimizer>.png (LR ×
    warm-up heatmaps) and reports/<name>.html (the same as one page), all on the evaluated seeds but
    the scan (seed 0); returns the goal lines."""
    import base64

    from smoothprobe.report.grid import heatmap, write_grid_report

    reports = REPO / "reports"
    evaluated = evaluated_rows(results, seeds)
    scan = results[(results.kind == "grid") & (results.seed == 0) & results.warmup.isin(SCAN_WARMUPS)
                   & (results.lr_factor == 1.0)]
    scan_table = scan.pivot_table(index=["optimizer", "lr"], columns="warmup", values="score").reset_index()
    scan_table.columns = [f"w{c:g}" if isinstance(c, float) else c for c in scan_table.columns]
    decisions = evaluated[evaluated.kind.isin(DECIDED_BY_FIT)]
    counts = evaluated.status.value_counts()
    tuned = "" if min(seeds) < HELD_OUT else "".join(
        f" {kind} leaves out seeds {list(tuned_on)} (its rule was read from them)." for kind, tuned_on in TUNED_ON.items())
    headline = (f"{len(evaluated)} runs on the evaluated seeds {seeds}: {counts.get('finished', 0)} finished, "
                f"{counts.get('diverged', 0)} diverged, {counts.get('refused', 0)} refused (never trained).{tuned} Score = validation loss at the last step, "
                f"mean over seeds (inf = diverged). A decision was taken "
                f"{decision_count(evaluated, {opt: ref['lr_star'] for opt, ref in refs.items()})}. Tiers still open are labelled open; misses are misses.")
    goal_lines = goals(table, refs, evaluated)
    lines = [f"# {name}", "", headline, "",
             "## Goals", "", *goal_lines, "", "## LR scan (seed 0)", "", *markdown(scan_table), "",
             "## All arms", "", *markdown(table), "", "## What each adaptive run decided", "",
             *(f"- {r.name}: {json.dumps(shown(r.decision)) if isinstance(r.decision, dict) else r.error or 'no decision'}"
               for r in decisions.itertuples()), ""]
    grid_like = evaluated[evaluated.kind != "record"]
    for opt in dict.fromkeys(grid_like.optimizer):
        png = reports / f"{name}_{opt}.png"
        png.write_bytes(base64.b64decode(heatmap(grid_like, opt).split(",", 1)[1]))
        lines.append(f"![{opt}]({png.name})")
    (reports / f"{name}.md").write_text("\n".join(lines) + "\n")
    write_grid_report(grid_like, table, reports / f"{name}.html", f"smoothprobe benchmark: {name}",
                      notes=[f"- {headline}", *goal_lines])
    return goal_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 steps, AdamW and Lion, 1 seed: minutes")
    parser.add_argument("--optimizers", default=None, help="comma-separated [full: all four; quick: adamw,lion]")
    parser.add_argument("--seeds", type=int, default=None, help="evaluated seeds [3; quick: 1]")
    parser.add_argument("--seed-offset", type=int, default=0, help=f"first evaluated seed (held-out: {HELD_OUT})")
    parser.add_argument("--stages", default="scan,grid,adaptive,stress")
    parser.add_argument("--jobs", type=int, default=2, help="arms run at once, one thread each")
    parser.add_argument("--device", default="cpu", choices=DEVICES,
                        help="cpu (fp32: the published tables) or cuda (bf16 autocast; its own run folder and "
                             "report, never mixed with CPU scores; many arms fit at once: --jobs 16)")
    parser.add_argument("--task", default="lm", choices=TASKS,
                        help="lm (the published tables) or markov (the second task of the progress test and the "
                             "closed loops: its own run folder; second_task.py judges it)")
    parser.add_argument("--out", default=None, help="run folder [default: runs/warmup_grid(_markov)(_quick)(_cuda)]")
    parser.add_argument("--budget-min", type=float, default=None, help="stop starting runs after this long")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--run-arm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    name = folder_name(args.task, args.quick, args.device)
    out = Path(args.out or REPO / "runs" / name)
    for key in RECORDED if args.run_arm is None else ():  # --run-arm: checked by its parent
        given = getattr(args, key)
        others = recorded(out, key) - {given}
        if others:  # bf16 on CUDA and fp32 on CPU, or two tasks: scores that must not meet in one table
            parser.error(f"{out} holds results run on {', '.join(sorted(others))}; give --{key} {given} "
                         "its own --out folder")
    if args.run_arm is not None:
        run_arm(Arm(**json.loads(args.run_arm)), out, args.quick, args.device, args.task)
        return
    optimizers = (args.optimizers or ("adamw,lion" if args.quick else "adamw,lion,muon,normsgd")).split(",")
    seeds = list(range(args.seed_offset, args.seed_offset + (args.seeds or (1 if args.quick else 3))))
    if 0 not in seeds and args.seed_offset == 0:
        seeds = [0, *seeds]
    if not args.summary_only:
        execute(out, optimizers, seeds, set(args.stages.split(",")), args.jobs, args.quick, args.device,
                None if args.budget_min is None else 60 * args.budget_min, args.task)
    if args.task != "lm":  # the tables and goals are the lm benchmark's; another task checks their transfer
        print(f"{args.task}'s runs are in {results_dir(out)}: `python benchmarks/second_task.py` judges them")
        return
    results = collect(out)
    if results.empty:
        print("no finished runs yet")
        return
    table, refs = summarise(results, seeds)
    print("\n".join(write_outputs(table, refs, results, name + ("_heldout" if min(seeds) >= HELD_OUT else ""),
                                  seeds)))


if __name__ == "__main__":
    main()
