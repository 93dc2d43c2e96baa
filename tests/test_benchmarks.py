"""The prepared GPU check runs its whole code path on CPU (`--dry-run`), so it does not rot."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_covers_both_presets_and_the_adaptive_run(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--dry-run", "--optimizer", "lion"]) == 0  # lion: cheap LMOs, the same code path
    out = capsys.readouterr().out
    for probe in ("time_secant", "time_curv_hvp", "time_top_eig", "time_trace", "time_curv_dual", "time_curv_fd"):
        assert f"{probe} " in out
    assert "adaptive run:" in out and "2 steps in" in out and out.rstrip().endswith("ok")


def load_warmup_grid(monkeypatch):
    path = SCRIPT.parent / "warmup_grid.py"
    spec = importlib.util.spec_from_file_location("warmup_grid", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "warmup_grid", module)
    spec.loader.exec_module(module)
    return module


def test_warmup_grid_plans_every_arm_once_with_seed_0_at_lr_star_and_3_lr_star_first(monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    arms = wg.plan(["adamw", "lion"], wg.MULTIPLIERS, wg.WARMUPS, 3)
    per_lr = {"adamw": 5 + 4, "lion": 5 + 2}  # grid + practical, closed (+ untuned, schedule-free)
    assert len(arms) == len(set(arms)) == sum(3 * (4 * n + 1) for n in per_lr.values())
    first = arms[:sum(2 * n + 1 for n in per_lr.values())]
    assert {a.seed for a in first} == {0} and {a.multiplier for a in first} == {1.0, 3.0, None}


def test_warmup_grid_goals_say_met_missed_or_open_in_seed_sigma(monkeypatch):
    import pandas as pd

    wg = load_warmup_grid(monkeypatch)
    def row(kind, warmup, seed, loss, pilot=""):
        return {"optimizer": "muon", "kind": kind, "multiplier": 1.0, "warmup": warmup, "seed": seed,
                "status": "finished", "val_loss": loss, "peak_lr": 0.02, "pilot": pilot}

    rows = [row("grid", w, seed, loss + noise)  # grid σ = 0.01 at every point
            for seed, noise in enumerate((0.0, 0.01, -0.01)) for w, loss in ((0.0, 2.00), (0.1, 1.90))]
    rows += [row("closed", 0.0, 0, 1.93, "fit-driven"), row("practical", 0.0, 0, 1.905)]
    results = pd.DataFrame(rows)
    lines = wg.goals(wg.summarise(results), results)
    assert "best closed loop 1.9300 (lr×1, 1 seed(s)) vs best grid point 1.9000: MISSED (+3.0 σ)" in lines[0]
    assert "fit-driven in 1" in lines[1] and "practical met (+0.5 σ)" in lines[1]
    assert "fit-driven at least as good as practical: MISSED (+2.5 σ)" in lines[1]
