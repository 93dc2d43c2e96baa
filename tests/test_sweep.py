"""The warm-up sweep: every configuration and seed runs, the summary is arithmetic on final losses."""

import dataclasses
import math

import pandas as pd
import pytest

from smoothprobe import SmoothprobeError, TrainConfig, load_run
from smoothprobe.sweep import summarise, sweep


def test_summary_statistics_and_sigma_units():
    results = pd.DataFrame({
        "config": ["warmup-0"] * 2 + ["warmup-0.1"] * 2 + ["adaptive"] * 2,
        "seed": [0, 1] * 3,
        "val_loss": [2.0, 2.2, 1.9, 2.1, 1.7, 1.9],
    })
    table = summarise(results).set_index("config")
    assert table.loc["warmup-0.1", "best_grid"] and not table.loc["warmup-0", "best_grid"]
    sigma = math.sqrt(0.02)  # every configuration has sample std sqrt(0.02)
    assert table.loc["adaptive", "minus_best_in_sigma"] == pytest.approx((1.8 - 2.0) / sigma)
    assert table.loc["adaptive", "grid_median"] == pytest.approx(2.05)


def test_sweep_runs_grid_and_adaptive_with_same_budget_and_resumes(tmp_path):
    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=30, eval_every=30)
    table = sweep(base, tmp_path, [0.0, 0.2], seeds=2, adaptive={"div": 10.0}, progress=False)
    assert table.config.tolist() == ["warmup-0", "warmup-0.2", "adaptive"]
    assert (table.seeds == 2).all()
    run = load_run(tmp_path / "warmup-0.2" / "seed-1")
    assert run.config["seed"] == 1 and run.config["warmup"] == 0.2 and len(run.steps) == 30
    adaptive = load_run(tmp_path / "adaptive" / "seed-0")
    assert adaptive.steps.lr.iloc[0] == pytest.approx(0.05 / 10)  # the first step runs at lr/div
    assert table.loc[table.config == "warmup-0.2", "val_loss_mean"].item() == pytest.approx(
        (run.evals.val_loss.iloc[-1] + load_run(tmp_path / "warmup-0.2" / "seed-0").evals.val_loss.iloc[-1]) / 2)
    mtime = (tmp_path / "warmup-0" / "seed-0" / "steps.jsonl").stat().st_mtime_ns
    again = sweep(base, tmp_path, [0.0, 0.2], seeds=2, adaptive={"div": 10.0}, progress=False)
    assert (tmp_path / "warmup-0" / "seed-0" / "steps.jsonl").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(again, table)


def test_sweep_reuses_only_runs_with_the_same_config(tmp_path):
    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=5, eval_every=5)
    sweep(base, tmp_path, [0.0], seeds=1, progress=False)
    steps = tmp_path / "warmup-0" / "seed-0" / "steps.jsonl"
    before = steps.read_text()
    other = dataclasses.replace(base, lr=0.01)
    with pytest.raises(SmoothprobeError, match="holds a run with another config than this sweep's; pass overwrite"):
        sweep(other, tmp_path, [0.0], seeds=1, progress=False)
    assert steps.read_text() == before
    sweep(other, tmp_path, [0.0], seeds=1, progress=False, overwrite=True)
    assert load_run(tmp_path / "warmup-0" / "seed-0").config["lr"] == 0.01


def test_a_run_that_asked_for_the_default_window_test_is_the_same_config_as_one_that_left_it_to_the_default(tmp_path):
    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=60, eval_every=60)
    sweep(base, tmp_path, [0.0], seeds=1, adaptive={"pilot": 50, "window_test": True}, progress=False)
    steps = tmp_path / "adaptive" / "seed-0" / "steps.jsonl"
    before = steps.stat().st_mtime_ns
    sweep(base, tmp_path, [0.0], seeds=1, adaptive={"pilot": 50}, progress=False)  # reused, not refused nor rerun
    assert steps.stat().st_mtime_ns == before
    with pytest.raises(SmoothprobeError, match="holds a run with another config"):
        sweep(base, tmp_path, [0.0], seeds=1, adaptive={"pilot": 50, "window_test": False}, progress=False)


def test_a_warm_up_given_twice_or_an_arm_that_cannot_run_is_refused_before_any_training(tmp_path):
    base = TrainConfig(task="quadratic", steps=20)
    with pytest.raises(SmoothprobeError, match="warm-ups must differ: warmup-0 given more than once"):
        sweep(base, tmp_path / "a", [0.0, 0.0], seeds=2, progress=False)
    with pytest.raises(SmoothprobeError, match="warm-ups must differ: 0.1 and 2 give the same 2 steps of the run's 20"):
        sweep(base, tmp_path / "a", [0.0, 0.1, 2.0], seeds=1, progress=False)  # 10 % of 20 steps is 2 steps
    with pytest.raises(SmoothprobeError, match="pilot must be at least"):
        sweep(base, tmp_path / "b", [0.0], seeds=1, adaptive={"pilot": 0.5}, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_grids_shape_goes_to_the_grid_and_the_adaptive_arm_keeps_its_own(tmp_path):
    """sweep --adaptive --schedule linear: the schedule shapes the grid's runs; the adaptive arm, which has no
    use for it, was refused with it ("drop them") before any run trained."""
    base = TrainConfig(task="quadratic", optimizer="normsgd", lr=0.05, steps=20, eval_every=20, schedule="linear",
                       warmup_shape="cosine")
    sweep(base, tmp_path, [0.2], seeds=1, adaptive={"div": 10.0}, progress=False)
    grid, adaptive = (load_run(tmp_path / label / "seed-0").config for label in ("warmup-0.2", "adaptive"))
    assert (grid["schedule"], grid["warmup_shape"]) == ("linear", "cosine")
    assert (adaptive["schedule"], adaptive["warmup_shape"]) == ("cosine", "linear") and adaptive["adaptive"]
