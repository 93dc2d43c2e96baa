"""`smoothprobe demo`: record, fit, train adaptively, report — the whole pipeline on built-in data."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from smoothprobe.errors import SmoothprobeError
from smoothprobe.fit import SmoothnessFit, fit_run
from smoothprobe.fit.data import VERDICT_ROWS
from smoothprobe.schedule.decision import Decision, decide
from smoothprobe.store import load_run
from smoothprobe.train import TrainConfig, train

DEMO_BASE = {"task": "markov", "optimizer": "lion", "lr": 2e-3, "batch_size": 16, "seq_len": 64,
             "eval_every": 25, "probes": {"preset": "standard", "every": 2}}
MIN_STEPS = VERDICT_ROWS * DEMO_BASE["probes"]["every"]
"""The shortest demo whose recorded run has the probed rows a fit's verdict needs (VERDICT_ROWS)."""


def adaptive_schedule(fit: SmoothnessFit, fit_path: str | Path) -> tuple[dict, Decision]:
    """The adaptive options a recorded fit leads to, and the decision behind them: the fit itself
    where it decides (`train --fit` decides at its largest measured gap), else the paper's practical
    parametrisation (div 10, f* the task's)."""
    decision = decide(fit, None)
    return ({"fit": str(fit_path)} if decision.decided else {"div": 10.0}), decision


def demo(out: str | Path, steps: int = 300, progress: bool = True) -> Path:
    """Record a baseline run (cosine, 5 % warm-up) with probes on the Markov task, fit the smoothness
    model with the task's exact f*, train the adaptive schedule on the same budget and seed (from
    the fit where it may drive one, else the practical rule), and write `out/report.html`
    comparing them. Returns the report's path."""
    from smoothprobe.report import write_report

    if steps < MIN_STEPS:
        raise SmoothprobeError(f"steps must be at least {MIN_STEPS}: a shorter record has too few probed rows for "
                               f"the fit's verdict, got {steps}", params=["steps"])
    out = Path(out)
    if (out / "run.json").exists():
        raise SmoothprobeError(f"{out} is a run directory, and the demo would write its own runs into it: give the "
                               "demo a folder of its own", params=["out"])
    say = tqdm.write if progress else (lambda _msg: None)
    baseline = TrainConfig(**DEMO_BASE, steps=steps, warmup=0.05)
    say(f"1/4 recording {steps} steps of a tiny LLaMA on a Markov chain (lion, cosine with 5% warm-up)")
    train(baseline, out / "baseline", overwrite=True, progress=progress)
    say("2/4 fitting K(Delta) = K0 + K1 Delta + K_rho Delta^rho to the secant smoothness")
    fit = fit_run(load_run(out / "baseline"), bootstrap=100, n_jobs=1)
    fit.to_json(out / "baseline" / "fit.json")
    say(f"    {fit.verdict}")
    schedule, decision = adaptive_schedule(fit, out / "baseline" / "fit.json")
    if decision.branch == "fit-driven":
        say("3/4 fit-driven: training with eta(Delta) of the fit (peak rescaled to the baseline's lr)")
    elif decision.branch == "no-warmup":
        say(f"3/4 no-warmup, the fit says ({decision.reason}): training at the baseline's lr from "
            "step 0, then the decay")
    else:
        say(f"3/4 not yet: the fit cannot drive a schedule ({decision.reason}); training with the paper's practical "
            "eta(Delta) instead (f* = the chain's entropy rate)")
    train(TrainConfig(**DEMO_BASE, steps=steps, adaptive=schedule), out / "adaptive", overwrite=True,
          progress=progress)
    say("4/4 writing the report")
    return write_report([out / "baseline", out / "adaptive"], out / "report.html", fits=[fit],
                        title="smoothprobe demo: Markov chain, lion")
