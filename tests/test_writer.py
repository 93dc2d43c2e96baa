"""One run writer: train, the Recorder in a user's loop and the adapters leave the same run.json keys
and the same always-present step columns, and every exit leaves a status."""

import math

import pytest
import torch

from smoothprobe import Recorder, TrainConfig, load_run, train
from smoothprobe.distributed import update_norm
from smoothprobe.tasks.quadratic import QuadraticTask
from smoothprobe.writer import ALWAYS, describe_optimizer

RUN_KEYS = {"source", "config", "task", "optimizer", "parameters", "device", "environment", "created",
            "world_size", "probes", "status", "status_reason", "finished", "schema_version"}


def own_loop(path, steps=4, fail_at=None):
    task = QuadraticTask(dtype=torch.float64, cond=10.0)
    model = task.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    with Recorder(model, opt, path, loss_fn=task.loss, every=2) as rec:
        for step in range(steps):
            if step == fail_at:
                raise RuntimeError("boom")
            batch = task.train_batch(step)
            loss = task.loss(model, batch)
            loss.backward()
            rec.before_step(step, batch, loss=loss.item())
            opt.step()
            opt.zero_grad()
            rec.after_step()
    return load_run(path)


def test_train_and_own_loop_write_the_same_run_json_keys_and_columns(tmp_path):
    built = load_run(train(TrainConfig(task="quadratic", steps=4, probes={"every": 2}), tmp_path / "t",
                           progress=False))
    mine = own_loop(tmp_path / "r")
    assert set(built.info) == set(mine.info) == RUN_KEYS
    for run in (built, mine):
        assert set(ALWAYS) <= set(run.steps.columns)
        assert run.steps[list(ALWAYS)].notna().all().all()
        assert run.info["status"] == "finished"
        assert run.info["probes"]["family"] and run.info["optimizer"]["class"]
    assert mine.info["source"] == "recorder" and mine.info["optimizer"]["hyperparameters"]["momentum"] == 0.9
    assert mine.steps.time_s.is_monotonic_increasing


def test_own_loop_crash_keeps_rows_and_says_crashed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        own_loop(tmp_path / "r", steps=6, fail_at=3)
    run = load_run(tmp_path / "r")
    assert run.steps.step.tolist() == [0, 1, 2]
    assert run.info["status"] == "crashed" and "boom" in run.info["status_reason"]


def test_update_norm_is_the_euclidean_step_length():
    params = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    before = {"a": torch.zeros(2), "b": torch.zeros(1, 1)}
    assert update_norm(params, before) == pytest.approx(5.0)
    assert math.isnan(update_norm(params, {}))


def test_describe_optimizer_keeps_plain_hyperparameters():
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=3e-4, betas=(0.9, 0.95))
    d = describe_optimizer(opt)
    assert d["name"] == "adamw" and d["lr"] == 3e-4 and d["hyperparameters"]["betas"] == [0.9, 0.95]
    assert d["split"] is None


def test_own_loop_sigterm_flushes_the_rows_and_says_interrupted(tmp_path):
    """SIGTERM inside `with Recorder(...)` (a scheduler ending the job) raises Terminated there: the rows so
    far are on disk and the run is interrupted, not left running with its buffer lost."""
    import subprocess
    import sys

    script = (
        "import os, signal, torch\n"
        "from smoothprobe import Recorder\n"
        "from smoothprobe.tasks.quadratic import QuadraticTask\n"
        "task = QuadraticTask(dtype=torch.float64, cond=10.0)\n"
        "model = task.build_model()\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.2)\n"
        f"with Recorder(model, opt, {str(tmp_path / 'r')!r}, loss_fn=task.loss, every=2) as rec:\n"
        "    for step in range(50):\n"
        "        batch = task.train_batch(step)\n"
        "        loss = task.loss(model, batch)\n"
        "        loss.backward()\n"
        "        rec.before_step(step, batch, loss=loss.item())\n"
        "        opt.step()\n"
        "        opt.zero_grad()\n"
        "        rec.after_step()\n"
        "        if step == 6:\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0 and "Terminated" in done.stderr
    run = load_run(tmp_path / "r")
    assert run.steps.step.tolist() == list(range(7)) and run.info["status"] == "interrupted"


def test_own_loop_resumed_probes_on_the_first_runs_grid(tmp_path):
    """every=10, a first loop of steps 0-24, resumed at step 15: the rows from 15 on are recorded again and the
    probed steps stay the multiples of 10 (not 15, 25, ...)."""
    task = QuadraticTask(dtype=torch.float64, cond=10.0)
    for first, last, resume in ((0, 25, False), (15, 40, True)):
        model = task.build_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with Recorder(model, opt, tmp_path / "r", loss_fn=task.loss, probes=["secant"], every=10,
                      resume=resume) as rec:
            for step in range(first, last):
                batch = task.train_batch(step)
                task.loss(model, batch).backward()
                rec.before_step(step, batch)
                opt.step()
                opt.zero_grad()
                rec.after_step()
    steps = load_run(tmp_path / "r").steps
    assert steps.step.tolist() == list(range(40))
    assert steps.dropna(subset=["secant_K"]).step.tolist() == [0, 10, 20, 30]
