"""The training loop: reproducibility, exact resume after SIGKILL, crash-safe store, NaN handling."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from smoothprobe import SmoothprobeError, TrainConfig, load_run, train
from smoothprobe.train import build

ROOT = Path(__file__).resolve().parents[1]
SMALL_MARKOV = ["--task", "markov", "--batch-size", "4", "--seq-len", "24", "--steps", "40",
                "--optimizer", "lion", "--lr", "1e-3", "--warmup", "0.2", "--eval-every", "20",
                "--checkpoint-every", "5", "--flush-every", "1", "--no-progress"]


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "train", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_quadratic_sgd_trajectory_matches_closed_form(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=0.5, steps=5, schedule="constant",
                      clip=0.0, task_options={"cond": 10.0})
    trainer = build(cfg, tmp_path / "run")
    x = trainer.model().detach().clone()
    a, x_star = trainer.task.hessian, trainer.task.x_star
    trainer.run(progress=False)
    run = load_run(tmp_path / "run")
    # SGD with momentum 0.9 (the factory default): m <- 0.9 m + g, x <- x - lr m.
    m = torch.zeros_like(x)
    for step in range(5):
        d = x - x_star
        assert run.steps.loss[step] == pytest.approx(0.5 * float(d @ a @ d), rel=1e-5)
        m = 0.9 * m + a @ d
        x = x - 0.5 * m
    assert run.info["task"]["f_star"] == 0.0 and run.info["status"] == "finished"


def test_same_seed_same_losses_and_seed_matters(tmp_path):
    base = {"task": "markov", "batch_size": 4, "seq_len": 16, "steps": 6, "optimizer": "lion", "lr": 1e-3}
    a = load_run(train(TrainConfig(**base), tmp_path / "a", progress=False)).steps.loss
    b = load_run(train(TrainConfig(**base), tmp_path / "b", progress=False)).steps.loss
    c = load_run(train(TrainConfig(**base, seed=1), tmp_path / "c", progress=False)).steps.loss
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_sigkill_leaves_readable_store_and_resume_matches_uninterrupted(tmp_path):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = cli(*SMALL_MARKOV, "--out", str(killed))
    steps_file = killed / "steps.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if steps_file.exists() and steps_file.read_text().count("\n") >= 13:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = load_run(killed)
    assert 13 <= len(partial.steps) < 40
    assert partial.info["status"] == "running" and partial.warnings
    refused = cli(*SMALL_MARKOV, "--out", str(killed))
    assert refused.wait() == 2 and "--resume" in refused.stderr.read()
    assert cli("--out", str(killed), "--resume", "--no-progress").wait() == 0
    assert cli(*SMALL_MARKOV, "--out", str(whole)).wait() == 0
    resumed, reference = load_run(killed), load_run(whole)
    assert resumed.steps.step.tolist() == list(range(40))
    np.testing.assert_array_equal(resumed.steps.loss, reference.steps.loss)
    np.testing.assert_array_equal(resumed.steps.lr, reference.steps.lr)
    np.testing.assert_array_equal(resumed.evals.val_loss, reference.evals.val_loss)


def test_nan_loss_stops_with_clear_error_and_keeps_rows(tmp_path):
    cfg = TrainConfig(task="quadratic", optimizer="sgd", lr=50.0, steps=500, clip=0.0,
                      schedule="constant", flush_every=1)
    with pytest.raises(SmoothprobeError, match="loss became"):
        train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.info["status"] == "diverged"
    assert not np.isfinite(run.steps.loss.iloc[-1])
    assert np.isfinite(run.steps.loss.iloc[:-1]).all() and len(run.steps) > 2


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = TrainConfig(task="markov", batch_size=8, seq_len=16, steps=1, clip=0.0)
    small = TrainConfig(task="markov", batch_size=4, seq_len=16, steps=1, clip=0.0, accum=2)
    t_big, t_small = build(big, tmp_path / "a"), build(small, tmp_path / "b")
    joined = torch.cat([t_small.task.train_batch(0, 0), t_small.task.train_batch(0, 1)])
    loss_small = t_small.accumulate([t_small.task.train_batch(0, m) for m in range(2)])
    loss_big = t_big.accumulate([joined])
    assert loss_small == pytest.approx(loss_big, rel=1e-5)
    for p, q in zip(t_small.model.parameters(), t_big.model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(SmoothprobeError, match="lr must be a finite number > 0"):
        train(TrainConfig(lr=-1.0), tmp_path / "x", progress=False)
    with pytest.raises(SmoothprobeError, match="unknown optimizer"):
        train(TrainConfig(optimizer="adam"), tmp_path / "x", progress=False)


def test_fit_driven_schedule_floors_at_min_lr_ratio_like_the_others(tmp_path):
    import json

    fit = {"constants": {"rho": 2.0, "K0": 2e-3, "K1": 0.7, "K_rho": 40.0}, "f_star": 1.25,
           "delta_range": [0.01, 3.0]}
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    cfg = TrainConfig(task="markov", batch_size=4, seq_len=16, steps=4, optimizer="lion", lr=2e-3,
                      min_lr_ratio=0.2, adaptive={"fit": str(tmp_path / "fit.json")})
    trainer = build(cfg, tmp_path / "run")
    assert trainer.scheduler.lr == 2e-3 and trainer.scheduler.min_lr == pytest.approx(4e-4, rel=1e-12)
