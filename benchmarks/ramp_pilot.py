"""The steep-ramp pilot (an LR range test), measured: does a short linear ramp give the fit what the
lr/10 start does not?

Each run is the pilot `train --pilot` would take in its place: 100 steps of a linear ramp from lr/100
to the peak (the warm-up grid's lr*, and 3·lr*), the secant probe on every step, on the warm-up grid's
data, model and batch (tiny LLaMA, `lm`, 16×64). K(Δ) is then fitted as the pilot fits it (f* = auto,
or the losses' lower bound where the loss curve cannot place it: `schedule.online.fit_or_lower_bound`)
and decided as `train --fit` decides at the start of a run (`schedule.decision.decide` at the largest
measured gap). A ramp would be run as trial steps and undone, so only its decision counts.

What it printed (docs/design.md §5, "The steep-ramp pilot"): a decision in 2 of 16 runs, both Muon's at
lr* and both "fit-driven" (a short warm-up, which Muon's grid at lr* scores like none); K rises with the
loss on every run (Spearman +0.25 to +0.81), which a ramp makes by itself: the step grows while the
loss falls, and K measured along a longer step is smaller.

    python benchmarks/ramp_pilot.py   # 16 runs of 100 steps, about 10 CPU-minutes; resumable;
                                      # the decisions go to benchmarks/results/ramp_pilot.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import warmup_grid
from warmup_grid import REPO

MULTIPLES = (1.0, 3.0)
STEPS = 100
RESULTS = REPO / "benchmarks" / "results" / "ramp_pilot.json"
"""The decisions of the default runs (both peaks, seeds 0 and 1), committed beside the grid's results."""


def lr_star(optimizer: str) -> float:
    """lr* of `optimizer`: the best LR of the warm-up grid's scan, read from its committed results."""
    return warmup_grid.Arm(optimizer, "grid", warmup_grid.scanned_exponent(optimizer), 0.0, 0).lr


def config_of(optimizer: str, multiple: float, seed: int):
    """The TrainConfig of one ramp: a linear warm-up over every step to `multiple`·lr*, no decay."""
    from smoothprobe.train import TrainConfig

    return TrainConfig(task="lm", model="tiny", optimizer=optimizer, lr=lr_star(optimizer) * multiple,
                       steps=STEPS, warmup=STEPS, schedule="constant", batch_size=16, seq_len=64, seed=seed,
                       eval_every=STEPS, checkpoint_every=10**6,
                       probes={"probes": ("norms", "secant"), "every": 1})


def run(out: Path, optimizer: str, multiple: float, seed: int) -> Path:
    """Train one ramp into its folder, unless it ended there before (finished or diverged) under the same
    steps and LR; anything else (stopped, killed, another size) runs again. The folder."""
    from smoothprobe.store import read_run_info
    from smoothprobe.train import Diverged, build

    config = config_of(optimizer, multiple, seed)
    path = out / f"{optimizer}-x{multiple:g}-seed{seed}"
    if (path / "run.json").is_file():
        stored = read_run_info(path)
        same = {k: stored.get("config", {}).get(k) for k in ("steps", "lr")} == {"steps": config.steps, "lr": config.lr}
        if same and stored.get("status") in ("finished", "diverged"):
            return path
    try:
        build(config, path, overwrite=True).run(progress=False)
    except Diverged:
        pass  # run.json says so; `decide_on` reports it
    return path


def decide_on(path: Path) -> dict:
    """The pilot's fit of a ramp's rows (with the pilot's bootstrap) and the decision `train --fit` would
    take from it; a diverged ramp decides nothing."""
    from scipy.stats import spearmanr

    from smoothprobe.schedule.decision import decide
    from smoothprobe.schedule.online import PILOT_BOOTSTRAP, fit_or_lower_bound
    from smoothprobe.store import load_run

    run = load_run(path)
    if run.info.get("status") != "finished":
        return {"run": path.name, "status": run.info.get("status"), "branch": "not yet",
                "reason": f"the ramp did not finish ({run.info.get('status')})"}
    rows = run.steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_or_lower_bound(rows, PILOT_BOOTSTRAP)
    probed = rows.dropna(subset=["secant_K"])
    decision = decide(fit, None)
    return {"run": path.name, "f_star": fit.f_star, "status": fit.status,
            "delta_peak": (fit.intervals or {}).get("delta_peak"), "delta_range": fit.delta_range,
            "spearman_K_loss": float(spearmanr(probed["secant_K"], probed["loss"]).statistic),
            "branch": decision.branch, "reason": decision.reason}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ramp_pilot")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    found = []
    for optimizer in warmup_grid.GUESS:
        for multiple in MULTIPLES:
            for seed in range(args.seeds):
                found.append(decide_on(run(args.out, optimizer, multiple, seed)))
                r = found[-1]
                trend = f"Spearman(K, loss) {r['spearman_K_loss']:+.2f}" if "spearman_K_loss" in r else ""
                print(f"{r['run']:18s} {r['status']:17s} {trend} -> {r['branch']}: {r['reason']}", flush=True)
    decided = sum(r["branch"] != "not yet" for r in found)
    print(f"decided in {decided} of {len(found)} runs")
    default = args.seeds == 2 and args.out.resolve() == (REPO / "runs" / "ramp_pilot").resolve()
    target = RESULTS if default else args.out / "decisions.json"  # only the default set replaces the committed one
    target.write_text(json.dumps(found, indent=1, default=float) + "\n")
    print(f"decisions: {target}")


if __name__ == "__main__":
    main()
