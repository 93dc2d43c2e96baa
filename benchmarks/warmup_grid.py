"""Where warm-up matters: a peak-LR × warm-up grid against the adaptive and fit-driven schedules.

For each optimizer (lr* = its tuned peak LR, below): peak LR {lr*/3, lr*, 3·lr*, 10·lr*} × cosine
warm-up {0, 2, 5, 10, 25 %}, and at each peak LR (a) the practical adaptive schedule with f* = auto,
(b) the fit-driven closed loop (`--pilot 0.1`: a probed pilot under the practical schedule, a fit,
then the fit drives the rest, f* from the fit); plus (c) the closed loop at the fit's own peak η_max
(no peak LR given). For AdamW also what a user would pick instead: pytorch_warmup's untuned linear
warm-up (τ = 2/(1−β2)) on the cosine schedule, and schedule-free AdamW (`schedulefree`, its
documented 5 % warm-up). Every arm has the same steps, batch, data and seeds; nothing but lr* is set
per optimizer. The score is the final validation loss; a diverged run scores as diverged.

Full size: tiny LLaMA on `lm`, 1,000 steps of 16×64 tokens, 3 seeds: about 6 CPU-minutes a run, 372
runs, i.e. about 40 hours on one core. Runs are done in priority tiers (seed 0 at lr* and 3·lr* first)
and each finished run is kept, so every session moves the grid forward: rerun the same command.
`--quick` (200 steps, AdamW and Lion at lr* only, 1 seed, warm-up {0, 10 %}, a 20 % pilot so that it
holds 40 probed steps: 12 runs) takes about 15 minutes on one core.

    python benchmarks/warmup_grid.py                   # the full grid, resumable
    python benchmarks/warmup_grid.py --quick           # a small version, minutes
    python benchmarks/warmup_grid.py --summary-only    # tables and heatmaps from what has finished
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from smoothprobe.errors import SmoothprobeError
from smoothprobe.store import load_run
from smoothprobe.train import TrainConfig, build

REPO = Path(__file__).resolve().parents[1]
LR_STAR = {"adamw": 3e-3, "lion": 1e-3, "muon": 0.02, "normsgd": 0.05}
"""Tuned peak LRs of the tiny LLaMA on `lm` at 1,000 steps (AdamW, Lion, Muon: best of a 3-point LR
scan; normSGD: the best of the earlier 300-step benchmark)."""
MULTIPLIERS = (1 / 3, 1.0, 3.0, 10.0)
WARMUPS = (0.0, 0.02, 0.05, 0.10, 0.25)
PILOT = 0.1


@dataclass(frozen=True)
class Arm:
    """One run of the benchmark: a schedule at a peak LR (None: the fit's own) for one seed."""

    optimizer: str
    kind: str  # grid, practical, closed, closed_own_peak, untuned, schedulefree
    multiplier: float | None
    warmup: float
    seed: int

    @property
    def name(self) -> str:
        lr = "own" if self.multiplier is None else f"x{self.multiplier:.3g}"
        extra = f"-w{self.warmup:g}" if self.kind == "grid" else ""
        return f"{self.optimizer}/{self.kind}{extra}-lr{lr}/seed-{self.seed}"


def plan(optimizers: list[str], multipliers: tuple[float, ...], warmups: tuple[float, ...],
         seeds: int) -> list[Arm]:
    """Every arm once, in priority tiers so that a partial run already answers something: seed 0 of
    every schedule at lr* and 3·lr* and at the fit's own peak; then the other seeds of every
    schedule at lr* (the seed σ and the main goal); then those at 3·lr*; then the other LRs."""
    def arms_at(opt: str, m: float, seed: int) -> list[Arm]:
        arms = [Arm(opt, "grid", m, w, seed) for w in warmups]
        arms += [Arm(opt, "practical", m, 0.0, seed), Arm(opt, "closed", m, 0.0, seed)]
        if opt == "adamw":
            arms += [Arm(opt, "untuned", m, 0.0, seed), Arm(opt, "schedulefree", m, 0.05, seed)]
        return arms

    first = tuple(m for m in (1.0, 3.0) if m in multipliers)
    rest = tuple(m for m in multipliers if m not in first)
    order = []
    for opt in optimizers:
        order += [a for m in first for a in arms_at(opt, m, 0)] + [Arm(opt, "closed_own_peak", None, 0.0, 0)]
    for m in first:
        for seed in range(1, seeds):
            for opt in optimizers:
                order += arms_at(opt, m, seed) + [Arm(opt, "closed_own_peak", None, 0.0, seed)]
    for seed in range(seeds):
        for opt in optimizers:
            order += [a for m in rest for a in arms_at(opt, m, seed)] + [Arm(opt, "closed_own_peak", None, 0.0, seed)]
    return list(dict.fromkeys(order))


def config_of(arm: Arm, base: TrainConfig, pilot: float = PILOT) -> TrainConfig:
    """The TrainConfig of an arm (schedule-free and untuned arms are finished in `run_arm`)."""
    lr = None if arm.multiplier is None else LR_STAR[arm.optimizer] * arm.multiplier
    cfg = dataclasses.replace(base, optimizer=arm.optimizer, lr=lr if lr is not None else LR_STAR[arm.optimizer],
                              seed=arm.seed, warmup=arm.warmup if arm.kind == "grid" else 0.0)
    if arm.kind == "practical":
        return dataclasses.replace(cfg, adaptive={"f_star": "auto"})
    if arm.kind in ("closed", "closed_own_peak"):
        return dataclasses.replace(cfg, adaptive={"pilot": pilot, "f_star": "auto",
                                                        "own_peak": arm.kind == "closed_own_peak"})
    return cfg


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


def run_arm(arm: Arm, cfg: TrainConfig, path: Path) -> None:
    """Train one arm into `path` (a diverged run is a result, not a failure)."""
    trainer = build(cfg, path, overwrite=True)
    if arm.kind == "untuned":
        import pytorch_warmup

        trainer.scheduler = Dampened(trainer.scheduler, pytorch_warmup.UntunedLinearWarmup(trainer.optimizer))
    elif arm.kind == "schedulefree":
        import schedulefree

        opt = schedulefree.AdamWScheduleFree(trainer.model.parameters(), lr=cfg.lr, betas=(0.9, 0.95),
                                             warmup_steps=round(arm.warmup * cfg.steps))
        opt.train()
        trainer.optimizer = opt
        trainer.scheduler = _Constant()
        evaluate = trainer.evaluate

        def evaluate_at_average() -> float:
            opt.eval()
            try:
                return evaluate()
            finally:
                opt.train()

        trainer.evaluate = evaluate_at_average
    try:
        trainer.run(progress=False)
    except SmoothprobeError as exc:
        print(f"  {arm.name}: {exc}", flush=True)


class _Constant:
    """No schedule on top of an optimizer that schedules itself."""

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def result_of(path: Path) -> dict | None:
    """Final val loss and status of a finished (or diverged) arm, or None if it has not finished."""
    marker = path / "bench.json"
    return json.loads(marker.read_text()) if marker.exists() else None


def execute(arms: list[Arm], base: TrainConfig, out: Path, budget_s: float | None, pilot: float) -> None:
    """Run every arm without a result, in order, until the time budget is spent."""
    start = time.time()
    todo = [a for a in arms if result_of(out / a.name) is None]
    print(f"{len(arms) - len(todo)} of {len(arms)} runs done; {len(todo)} to go", flush=True)
    for i, arm in enumerate(todo):
        if budget_s is not None and time.time() - start > budget_s:
            print(f"time budget spent; {len(todo) - i} runs left for the next session", flush=True)
            return
        path = out / arm.name
        t0 = time.time()
        run_arm(arm, config_of(arm, base, pilot), path)
        run = load_run(path)
        val = float(run.evals.val_loss.iloc[-1]) if run.info.get("status") == "finished" and len(run.evals) else math.nan
        peak = float(run.steps.lr.max()) if len(run.steps) else math.nan
        result = {**dataclasses.asdict(arm), "status": run.info.get("status"), "val_loss": val, "peak_lr": peak,
                  "seconds": time.time() - t0}
        (path / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"[{i + 1}/{len(todo)}] {arm.name}: {result['status']} val {val:.4f} peak lr {peak:.3g} "
              f"({result['seconds']:.0f} s)", flush=True)


def collect(arms: list[Arm], out: Path) -> pd.DataFrame:
    """One row per finished arm, with the closed loop's pilot outcome from its run.json."""
    rows = []
    for arm in arms:
        result = result_of(out / arm.name)
        if result is not None:
            pilot = (load_run(out / arm.name).info.get("pilot") or {}) if arm.kind.startswith("closed") else {}
            rows.append({**result, "pilot": pilot.get("status", "")})
    return pd.DataFrame.from_records(rows)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer and arm: mean/σ over seeds; the grid's best point and median; goals met or missed.

    σ is the pooled seed standard deviation of the optimizer's grid points (the noise of one score).
    """
    res = results.copy()
    res["label"] = [f"{k}" + (f" w{w:g}" if k == "grid" else "") for k, w in zip(res.kind, res.warmup)]
    res["lr_mult"] = res.multiplier.fillna(-1.0)
    table = res.groupby(["optimizer", "label", "lr_mult"], sort=False).agg(
        val_mean=("val_loss", "mean"), val_std=("val_loss", "std"), seeds=("val_loss", "size"),
        diverged=("status", lambda s: int((s != "finished").sum())), peak_lr=("peak_lr", "median")).reset_index()
    out = []
    for opt, part in table.groupby("optimizer", sort=False):
        grid = part[part.label.str.startswith("grid")]
        sigma = float(np.sqrt(np.nanmean(grid.val_std**2))) if (grid.seeds > 1).any() else math.nan
        best = grid.val_mean.min()
        median = grid.val_mean.median()
        part = part.assign(sigma=sigma, grid_best=best, grid_median=median,
                           minus_best_in_sigma=(part.val_mean - best) / sigma if sigma > 0 else math.nan)
        at_lr = grid.groupby("lr_mult").val_mean.min()
        part["best_warmup_at_lr"] = part.lr_mult.map(at_lr)
        out.append(part)
    return pd.concat(out, ignore_index=True)


def markdown(table: pd.DataFrame) -> list[str]:
    """A pipe table of `table` (numbers to 4 significant digits)."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    return ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
            *("| " + " | ".join(row) + " |" for row in cells)]


def _verdict(diff: float, sigma: float) -> str:
    """'met' when `diff` (a loss difference, lower is better for the first arm) is at most one σ."""
    if not math.isfinite(diff) or not (math.isfinite(sigma) and sigma > 0):
        return "open"
    return f"{'met' if diff <= sigma else 'MISSED'} ({diff / sigma:+.1f} σ)"


def goals(summary: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """The issue's goals per optimizer, each met, MISSED (by how much, in seed-σ) or open (σ or a
    comparison arm not measured yet). Differences are of seed means; σ is the grid's pooled seed σ."""
    lines = []
    for opt, part in summary.groupby("optimizer", sort=False):
        rows = {(r.label, r.lr_mult): r for r in part.itertuples()}
        sigma, best, median = part.sigma.iloc[0], part.grid_best.iloc[0], part.grid_median.iloc[0]
        verdict = functools.partial(_verdict, sigma=sigma)

        closed = part[part.label == "closed"]
        if closed.empty:
            lines.append(f"- {opt}: no closed-loop run finished yet")
            continue
        top = closed.loc[closed.val_mean.idxmin()]
        lines.append(f"- {opt} (σ = {sigma:.4f}): best closed loop {top.val_mean:.4f} (lr×{top.lr_mult:g}, "
                     f"{top.seeds} seed(s)) vs best grid point {best:.4f}: {verdict(top.val_mean - best)}; "
                     f"below the grid median {median:.4f}: {'yes' if top.val_mean < median else 'NO'}")
        for m in sorted(part.lr_mult.unique()):
            if m < 0 or ("closed", m) not in rows:
                continue
            c, p = rows[("closed", m)], rows.get(("practical", m))
            at_lr = c.best_warmup_at_lr
            prac = p.val_mean if p is not None else math.nan
            grid_ok = part[(part.lr_mult == m) & part.label.str.startswith("grid") & (part.diverged == 0)]
            diverged = ("; diverged where a warm-up converged" if c.diverged and not grid_ok.empty else "")
            pilots = results[(results.optimizer == opt) & (results.kind == "closed") & (results.multiplier == m)]
            driven = int(pilots.pilot.str.startswith("fit-driven").sum())
            lines.append(f"  - lr×{m:g}: closed {c.val_mean:.4f} ({c.seeds} seed(s), fit-driven in {driven}), "
                         f"practical {prac:.4f}, best "
                         f"warm-up {at_lr:.4f}; vs the best warm-up at this LR: closed {verdict(c.val_mean - at_lr)}, "
                         f"practical {verdict(prac - at_lr)}; "
                         f"fit-driven at least as good as practical: {verdict(c.val_mean - prac)}{diverged}")
        for other in ("untuned", "schedulefree"):
            if (other, 1.0) in rows and ("closed", 1.0) in rows:
                diff = rows[("closed", 1.0)].val_mean - rows[(other, 1.0)].val_mean
                lines.append(f"  - closed vs {other} at lr*: {diff:+.4f} ({'beats it' if diff < 0 else 'does not'})")
    return lines


def write_outputs(summary: pd.DataFrame, results: pd.DataFrame, name: str) -> None:
    """reports/<name>.md (goals and table), reports/<name>_<optimizer>.png (LR × warm-up heatmaps,
    adaptive schedules beside the grid) and reports/<name>.html (the same as one page)."""
    import base64

    from smoothprobe.report.grid import heatmap, write_grid_report

    reports = REPO / "reports"
    cols = ["optimizer", "label", "lr_mult", "val_mean", "val_std", "seeds", "diverged", "peak_lr",
            "best_warmup_at_lr", "minus_best_in_sigma"]
    intro = (f"{len(results)} runs finished (of the plan in benchmarks/warmup_grid.py). Val loss at the "
             "last step; mean over seeds; σ = pooled seed std of the grid points; lr_mult -1 = the fit's "
             "own peak.")
    pilots = results[results.kind.str.startswith("closed")]
    lines = [f"# {name}", "", intro, "", "## Goals", "", *goals(summary, results), "", "## Table", "",
             *markdown(summary[cols]), "", "## What each pilot's fit decided", "",
             *(f"- {r.optimizer} {r.kind} lr×{r.multiplier if r.multiplier == r.multiplier else 'own'} "
               f"seed {r.seed}: {r.pilot}" for r in pilots.itertuples()), ""]
    for opt in dict.fromkeys(results.optimizer):
        png = reports / f"{name}_{opt}.png"
        png.write_bytes(base64.b64decode(heatmap(results, opt).split(",", 1)[1]))
        lines.append(f"![{opt}]({png.name})")
    (reports / f"{name}.md").write_text("\n".join(lines) + "\n")
    write_grid_report(results, summary[cols], reports / f"{name}.html", f"smoothprobe benchmark: {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="markov, 150 steps, 1 seed: minutes")
    parser.add_argument("--optimizers", default=None, help="comma-separated [full: all four; quick: adamw,lion]")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--out", default=None, help="run folder [default: runs/warmup_grid(_quick)]")
    parser.add_argument("--budget-min", type=float, default=None, help="stop starting runs after this long")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    name = "warmup_grid_quick" if args.quick else "warmup_grid"
    out = Path(args.out or REPO / "runs" / name)
    if args.quick:
        base = TrainConfig(task="lm", model="tiny", steps=200, batch_size=16, seq_len=64, eval_every=50,
                           checkpoint_every=10**6)
        arms = plan((args.optimizers or "adamw,lion").split(","), (1.0,), (0.0, 0.10), args.seeds or 1)
    else:
        base = TrainConfig(task="lm", model="tiny", steps=1000, batch_size=16, seq_len=64, eval_every=100,
                           checkpoint_every=250)
        arms = plan((args.optimizers or "adamw,lion,muon,normsgd").split(","), MULTIPLIERS, WARMUPS,
                    args.seeds or 3)
    if not args.summary_only:
        execute(arms, base, out, None if args.budget_min is None else 60 * args.budget_min,
                0.2 if args.quick else PILOT)
    results = collect(arms, out)
    if results.empty:
        print("no finished runs yet")
        return
    summary = summarise(results)
    write_outputs(summary, results, name)
    print(summary.to_string(index=False))


if __name__ == "__main__":
    main()
